//! Finding Printernizer inside Home Assistant when `printernizer.url` is not set.
//!
//! The Printernizer add-on (repository `https://github.com/schmacka/printernizer-ha`, so the
//! installed slug is `6f840855_printernizer`; a local copy is `local_printernizer`) runs with
//! `host_network: true` on port 8000, which from our add-on's network is the host's address on
//! the Supervisor network, `172.30.32.1`. With `hassio_api: true` and the default role,
//! `GET /addons/<slug>/info` tells whether it is installed and started.

use std::time::Duration;

use serde::Deserialize;

/// The slugs tried, in order.
pub const ADDON_SLUGS: &[&str] = &["6f840855_printernizer", "local_printernizer"];
/// Printernizer's port.
pub const PRINTERNIZER_PORT: u16 = 8000;
/// The host, seen from an add-on, for an add-on with host networking.
pub const HOST_ADDRESS: &str = "172.30.32.1";

#[derive(Debug, Deserialize)]
struct Envelope {
    #[serde(default)]
    data: Option<Info>,
}

#[derive(Debug, Deserialize)]
struct Info {
    #[serde(default)]
    state: Option<String>,
    #[serde(default = "yes")]
    host_network: bool,
    #[serde(default)]
    hostname: Option<String>,
}

fn yes() -> bool {
    true
}

/// The default URL when nothing better is known.
pub fn default_url() -> String {
    format!("http://{HOST_ADDRESS}:{PRINTERNIZER_PORT}")
}

/// Asks the Supervisor for the Printernizer add-on; returns its URL and a sentence for the log.
pub async fn printernizer_url(supervisor_url: &str, token: &str) -> (String, String) {
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
    {
        Ok(c) => c,
        Err(e) => return (default_url(), format!("no HTTP client ({e})")),
    };
    for slug in ADDON_SLUGS {
        let url = format!(
            "{}/addons/{slug}/info",
            supervisor_url.trim_end_matches('/')
        );
        let answer = client.get(&url).bearer_auth(token).send().await;
        let info = match answer {
            Ok(r) if r.status().is_success() => {
                r.json::<Envelope>().await.ok().and_then(|e| e.data)
            }
            Ok(r) => {
                tracing::debug!(%slug, status = r.status().as_u16(), "Printernizer add-on not found under this slug");
                continue;
            }
            Err(e) => {
                tracing::debug!(%slug, error = %e, "cannot ask the Supervisor for the Printernizer add-on");
                continue;
            }
        };
        // An add-on's info always has its state; anything else is not an add-on's answer.
        let Some((info, state)) = info.and_then(|i| i.state.clone().map(|s| (i, s))) else {
            continue;
        };
        let host = if info.host_network {
            HOST_ADDRESS.to_owned()
        } else {
            info.hostname
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| slug.replace('_', "-"))
        };
        return (
            format!("http://{host}:{PRINTERNIZER_PORT}"),
            format!("the Printernizer add-on `{slug}` ({state})"),
        );
    }
    (
        default_url(),
        "no Printernizer add-on found through the Supervisor; trying the host's port 8000".into(),
    )
}
