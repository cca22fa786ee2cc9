//! The HTTP side of the bridge: Printernizer's REST API, typed, with errors that say what
//! happened.
//!
//! Only the fields the bridge uses are declared; serde skips everything else while parsing,
//! so names, addresses, API keys, access codes, serials and file names in `/printers` and
//! `/jobs` are read over and never held in any of our values.
//!
//! Every request has a timeout (`printernizer.timeout_s`). The export has no total timeout
//! (it can be tens of MB on a slow link): there the timeout bounds each silence while reading.
//! A body other than the export is read at most [`MAX_BODY_BYTES`].

use std::time::Duration;

use reqwest::StatusCode;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use thiserror::Error;

/// Largest body read for the small endpoints (`/health`, `/status`, `/printers`, a `/jobs` page).
pub(crate) const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;
/// Jobs asked for per `/jobs` page.
pub(crate) const JOBS_PAGE_SIZE: u32 = 100;
/// Most `/jobs` pages read in one sweep (10 000 jobs); a longer listing is read in part and
/// then counts as incomplete (no job is taken to have vanished).
pub(crate) const MAX_JOB_PAGES: u32 = 100;
/// Longest `Retry-After` honoured (a larger one is capped: the bridge never sleeps for hours).
const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);

/// Why a request to Printernizer did not give a usable answer.
#[derive(Debug, Error)]
pub enum FetchError {
    /// Nothing answered (connection refused, no route, DNS).
    #[error("cannot reach Printernizer at {url}: {source}")]
    Unreachable {
        /// The request URL.
        url: String,
        /// The transport error.
        #[source]
        source: reqwest::Error,
    },
    /// Connected, but no (complete) answer in time.
    #[error("Printernizer at {url} did not answer within {secs} s")]
    Timeout {
        /// The request URL.
        url: String,
        /// The timeout.
        secs: u64,
    },
    /// 429: Printernizer's rate limiter.
    #[error("Printernizer's rate limit answered {url} with 429; waiting {} s as it asks", retry_after.as_secs())]
    RateLimited {
        /// The request URL.
        url: String,
        /// What `Retry-After` asked for (at least 1 s).
        retry_after: Duration,
    },
    /// Another non-2xx status.
    #[error("Printernizer answered {url} with HTTP {status}")]
    Status {
        /// The request URL.
        url: String,
        /// The status code.
        status: u16,
    },
    /// A 2xx answer that is not JSON (an HTML page: a proxy, a login page, not Printernizer).
    #[error(
        "{url} answered `{content_type}` instead of JSON; is printernizer.url Printernizer's address?"
    )]
    NotJson {
        /// The request URL.
        url: String,
        /// The content type received.
        content_type: String,
    },
    /// JSON that does not have the expected shape, or a body over the size limit.
    #[error("{url} answered something that is not Printernizer's API: {detail}")]
    Invalid {
        /// The request URL.
        url: String,
        /// What did not fit.
        detail: String,
    },
    /// Reading the body failed half-way.
    #[error("reading the answer of {url} failed: {source}")]
    Body {
        /// The request URL.
        url: String,
        /// The transport error.
        #[source]
        source: reqwest::Error,
    },
}

impl FetchError {
    /// A short name of the condition, to log once per change of condition.
    pub(crate) fn condition(&self) -> String {
        match self {
            FetchError::Unreachable { .. } => "unreachable".into(),
            FetchError::Timeout { .. } => "timeout".into(),
            FetchError::RateLimited { .. } => "rate limited".into(),
            FetchError::Status { status, .. } => format!("HTTP {status}"),
            FetchError::NotJson { .. } => "not JSON".into(),
            FetchError::Invalid { .. } => "invalid answer".into(),
            FetchError::Body { .. } => "body failed".into(),
        }
    }

    /// How long the server asked us to wait, for a 429.
    pub(crate) fn retry_after(&self) -> Option<Duration> {
        match self {
            FetchError::RateLimited { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }

    fn from_transport(url: &str, e: reqwest::Error, timeout: Duration) -> Self {
        if e.is_timeout() {
            FetchError::Timeout {
                url: url.to_owned(),
                secs: timeout.as_secs(),
            }
        } else {
            FetchError::Unreachable {
                url: url.to_owned(),
                source: e,
            }
        }
    }
}

/// `GET /api/v1/health` (only `status` is read).
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Health {
    /// `healthy` while it runs.
    #[serde(default)]
    pub(crate) status: Option<String>,
}

/// `GET /api/v1/usage-stats/status`.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct UsageStatus {
    /// Whether Printernizer itself shares its statistics.
    #[serde(default)]
    pub(crate) opted_in: bool,
    /// Events in its log.
    pub(crate) total_events: u64,
}

/// An id that Printernizer may send as a string or a number.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(crate) enum Id {
    /// A string id (UUIDs).
    Text(String),
    /// A numeric id.
    Number(i64),
}

impl Id {
    pub(crate) fn into_string(self) -> String {
        match self {
            Id::Text(s) => s,
            Id::Number(n) => n.to_string(),
        }
    }
}

/// One printer of `GET /api/v1/printers`: id, type and status, nothing else.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Printer {
    /// Printernizer's printer id.
    pub(crate) id: Id,
    /// `bambu_lab`, `prusa_core` …
    #[serde(default)]
    pub(crate) printer_type: Option<String>,
    /// `online`, `offline`, `printing`, `paused`, `error`, `unknown`.
    #[serde(default)]
    pub(crate) status: Option<String>,
}

#[derive(Debug, Deserialize)]
struct PrintersPage {
    #[serde(default)]
    printers: Vec<serde_json::Value>,
}

/// One job of `GET /api/v1/jobs`: ids, status and times, nothing else.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Job {
    /// Printernizer's job id.
    pub(crate) id: Id,
    /// Its printer.
    #[serde(default)]
    pub(crate) printer_id: Option<Id>,
    /// The printer type as the job says it (manual jobs say `unknown`).
    #[serde(default)]
    pub(crate) printer_type: Option<String>,
    /// `pending`, `running`, `completed`, `failed`, `cancelled`.
    #[serde(default)]
    pub(crate) status: Option<String>,
    /// Start (naive UTC).
    #[serde(default)]
    pub(crate) start_time: Option<String>,
    /// End (naive UTC).
    #[serde(default)]
    pub(crate) end_time: Option<String>,
    /// Seconds, when Printernizer knows them.
    #[serde(default)]
    pub(crate) actual_duration: Option<f64>,
    /// Percent.
    #[serde(default)]
    pub(crate) progress: Option<f64>,
    /// When the job was created.
    #[serde(default)]
    pub(crate) created_at: Option<String>,
    /// The last change (progress updates move it).
    #[serde(default)]
    pub(crate) updated_at: Option<String>,
}

#[derive(Debug, Deserialize)]
struct JobsPage {
    #[serde(default)]
    jobs: Vec<serde_json::Value>,
    #[serde(default)]
    pagination: Option<Pagination>,
}

#[derive(Debug, Deserialize)]
struct Pagination {
    #[serde(default)]
    total_pages: Option<u32>,
}

/// A list read from Printernizer, with the entries that did not fit skipped and counted.
#[derive(Debug, Clone)]
pub(crate) struct Listing<T> {
    /// The entries.
    pub(crate) items: Vec<T>,
    /// Entries without the expected shape (skipped).
    pub(crate) skipped: usize,
    /// Whether every page was read.
    pub(crate) complete: bool,
}

fn lenient<T: DeserializeOwned>(values: Vec<serde_json::Value>) -> (Vec<T>, usize) {
    let total = values.len();
    let items: Vec<T> = values
        .into_iter()
        .filter_map(|v| serde_json::from_value(v).ok())
        .collect();
    let skipped = total - items.len();
    (items, skipped)
}

/// A client for one Printernizer.
#[derive(Debug, Clone)]
pub(crate) struct Client {
    http: reqwest::Client,
    base: String,
    timeout: Duration,
}

impl Client {
    /// A client for `base` (`http://host:8000`).
    pub(crate) fn new(base: &str, timeout: Duration) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .connect_timeout(timeout)
            .read_timeout(timeout)
            .user_agent(concat!("printernizer-stats/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            timeout,
        })
    }

    /// The base URL.
    pub(crate) fn base(&self) -> &str {
        &self.base
    }

    fn url(&self, path: &str) -> String {
        format!("{}/api/v1/{path}", self.base)
    }

    /// Sends a GET and checks status and content type; the body is left unread.
    async fn send(&self, url: &str, total_timeout: bool) -> Result<reqwest::Response, FetchError> {
        let mut request = self
            .http
            .get(url)
            .header(reqwest::header::ACCEPT, "application/json");
        if total_timeout {
            request = request.timeout(self.timeout);
        }
        let response = request
            .send()
            .await
            .map_err(|e| FetchError::from_transport(url, e, self.timeout))?;
        let status = response.status();
        if status == StatusCode::TOO_MANY_REQUESTS {
            let retry_after = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<f64>().ok())
                .filter(|s| s.is_finite() && *s >= 0.0)
                .map_or(Duration::from_secs(60), |s| {
                    Duration::from_secs_f64(s.ceil().max(1.0))
                })
                .min(MAX_RETRY_AFTER);
            return Err(FetchError::RateLimited {
                url: url.to_owned(),
                retry_after,
            });
        }
        if !status.is_success() {
            return Err(FetchError::Status {
                url: url.to_owned(),
                status: status.as_u16(),
            });
        }
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        if !content_type.contains("json") {
            return Err(FetchError::NotJson {
                url: url.to_owned(),
                content_type: if content_type.is_empty() {
                    "no content type".into()
                } else {
                    content_type
                },
            });
        }
        Ok(response)
    }

    /// GET `path` as JSON of type `T`.
    async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, FetchError> {
        let url = self.url(path);
        let mut response = self.send(&url, true).await?;
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| {
            if e.is_timeout() {
                FetchError::Timeout {
                    url: url.clone(),
                    secs: self.timeout.as_secs(),
                }
            } else {
                FetchError::Body {
                    url: url.clone(),
                    source: e,
                }
            }
        })? {
            if body.len() + chunk.len() > MAX_BODY_BYTES {
                return Err(FetchError::Invalid {
                    url,
                    detail: format!("the answer is larger than {MAX_BODY_BYTES} bytes"),
                });
            }
            body.extend_from_slice(&chunk);
        }
        serde_json::from_slice(&body).map_err(|e| FetchError::Invalid {
            url,
            detail: e.to_string(),
        })
    }

    /// `GET /api/v1/health`: `Ok` while Printernizer runs.
    pub(crate) async fn health(&self) -> Result<Health, FetchError> {
        self.get_json("health").await
    }

    /// `GET /api/v1/usage-stats/status`.
    pub(crate) async fn usage_status(&self) -> Result<UsageStatus, FetchError> {
        self.get_json("usage-stats/status").await
    }

    /// `GET /api/v1/printers`.
    pub(crate) async fn printers(&self) -> Result<Listing<Printer>, FetchError> {
        let page: PrintersPage = self.get_json("printers").await?;
        let (items, skipped) = lenient(page.printers);
        Ok(Listing {
            items,
            skipped,
            complete: true,
        })
    }

    /// Every page of `GET /api/v1/jobs` (at most [`MAX_JOB_PAGES`]).
    pub(crate) async fn jobs(&self) -> Result<Listing<Job>, FetchError> {
        let mut all = Vec::new();
        let mut skipped = 0;
        let mut page = 1;
        loop {
            let answer: JobsPage = self
                .get_json(&format!("jobs?limit={JOBS_PAGE_SIZE}&page={page}"))
                .await?;
            let count = answer.jobs.len();
            let (items, bad) = lenient::<Job>(answer.jobs);
            all.extend(items);
            skipped += bad;
            let pages = answer.pagination.and_then(|p| p.total_pages);
            let last = match pages {
                Some(total) => page >= total,
                None => count < JOBS_PAGE_SIZE as usize,
            };
            if last || count == 0 {
                return Ok(Listing {
                    items: all,
                    skipped,
                    complete: true,
                });
            }
            if page >= MAX_JOB_PAGES {
                return Ok(Listing {
                    items: all,
                    skipped,
                    complete: false,
                });
            }
            page += 1;
        }
    }

    /// `GET /api/v1/usage-stats/export`, status and content type checked, body unread.
    pub(crate) async fn export(&self) -> Result<(String, reqwest::Response), FetchError> {
        let url = self.url("usage-stats/export");
        let response = self.send(&url, false).await?;
        Ok((url, response))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_declared_fields_are_kept() {
        let printer: Printer = serde_json::from_value(serde_json::json!({
            "id": "2eb8", "name": "Werkstatt MK4 Erika", "printer_type": "prusa_core",
            "status": "online", "ip_address": "127.0.0.1:18081",
            "connection_config": {"api_key": "PRUSA-SECRET-API-KEY-0001"}
        }))
        .expect("parses");
        let shown = format!("{printer:?}");
        assert!(!shown.contains("Erika") && !shown.contains("SECRET") && !shown.contains("18081"));
        let (jobs, skipped) = lenient::<Job>(vec![
            serde_json::json!({"id": "j1", "status": "running", "job_name": "Vase Erika privat"}),
            serde_json::json!({"id": null}),
        ]);
        assert_eq!((jobs.len(), skipped), (1, 1));
        assert!(!format!("{jobs:?}").contains("Erika"));
    }
}
