//! A Printernizer stand-in: a real HTTP server on 127.0.0.1 that serves the responses recorded
//! from a real Printernizer 2.42 (`crates/test-support/fixtures/printernizer-api/`, copied from
//! `shared/reference/printernizer-api/`), changes them as a scenario runs, and can fail the way
//! the real one does (refused connections, 429 with `Retry-After`, 500, an HTML page, invalid
//! JSON, a slow answer). It counts the requests per path.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, Response, StatusCode, header};

/// The recorded scenario's steps, in order.
pub const STEPS: &[&str] = &[
    "00-fresh-start",
    "01-stats-opt-in",
    "02-stats-opt-out",
    "03-add-prusa-printer",
    "04-print-started",
    "05-print-finished",
    "06-manual-job-completed",
    "07-manual-job-failed",
    "08-job-cancelled",
    "09-file-upload",
    "10-printer-files-sync",
    "11-download-from-printer",
    "12-printer-503",
    "13-printer-recovered",
    "14-api-disconnect",
    "15-api-connect",
    "16-add-octoprint-printer",
    "17-octoprint-print",
    "18-rate-limit-429",
    "19-sigterm",
    "20-restart",
];

/// Every personal or secret value the recording's README marks (sentinels).
pub const SECRETS: &[&str] = &[
    "PRUSA-SECRET-API-KEY-0001",
    "OCTO-SECRET-API-KEY-0002",
    "127.0.0.1:18081",
    "127.0.0.1:18082",
    "SN-PRUSA-CZPX0001",
    "Werkstatt MK4 Erika",
    "OctoPi Garage Max",
    "Musterstrasse",
    "Garage Max Mustermann",
    "Erika Mustermanns",
    "Ender 3 behind OctoPrint",
    "Halterung fuer Max Mustermann",
    "Vase Erika privat",
    "Auftrag 4711 Schmidt GmbH",
    "Mustermann_Halterung",
    "erika_vase",
    "schmidt_4711",
    "cube.gcode",
    "benchy",
    "Max Mustermann",
    "Schmidt GmbH",
    "max.mustermann@example.org",
    "Kunde_Mustermann",
    "/data/printernizer",
    // Printernizer's own installation id (in the export's `settings`).
    "8b4f3b55-f3f6-413c-bb48-d12c2c177e28",
    // Printer and job ids (not personal, but never stored as they are).
    "2eb88686-621b-4787-8cea-06aa00ff0a88",
    "29531b60-9621-475f-88bf-7ecdab6ee534",
    "22b35567-21d0-4c3f-afac-0f27b423ab67",
    "6eebbf05-3922-405f-bcb8-1d0a2ef248cb",
    "f95662fa-f1a4-495f-a999-7bea5e0bede3",
];

/// The endpoints served, by the recording's slug.
pub const SLUGS: &[(&str, &str)] = &[
    ("/api/v1/health", "health"),
    ("/api/v1/usage-stats/status", "usage-stats-status"),
    ("/api/v1/usage-stats/export", "usage-stats-export"),
    ("/api/v1/printers", "printers"),
    ("/api/v1/jobs", "jobs"),
];

/// How the stand-in answers.
#[derive(Debug, Clone, PartialEq)]
pub enum Mode {
    /// The recorded answers.
    Normal,
    /// This status with Printernizer's JSON error body.
    Status(u16),
    /// 429 with `Retry-After: N` (only `/health` is exempt, as in Printernizer).
    RateLimited(u64),
    /// 200 with an HTML page.
    Html,
    /// 200, `application/json`, not JSON.
    InvalidJson,
    /// The recorded answers, each after this delay.
    Slow(Duration),
}

#[derive(Debug, Clone)]
struct Recorded {
    status: u16,
    content_type: String,
    body: Arc<Vec<u8>>,
}

struct State {
    bodies: HashMap<String, Recorded>,
    mode: Mode,
    hits: HashMap<String, u64>,
}

/// The stand-in; stops when dropped.
pub struct Standin {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    up: tokio::sync::watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// `crates/test-support/fixtures/printernizer-api/<step>/<slug>.http`.
pub fn fixture(step: &str, slug: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/printernizer-api")
        .join(step)
        .join(format!("{slug}.http"))
}

/// Splits a recorded raw response into status, content type and body.
fn parse_http(raw: &[u8]) -> Recorded {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, i + 4))
        .or_else(|| {
            raw.windows(2)
                .position(|w| w == b"\n\n")
                .map(|i| (i, i + 2))
        })
        .expect("a recorded response has a blank line");
    let head = String::from_utf8_lossy(&raw[..split.0]);
    let status = head
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let content_type = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-type:")
                .map(|v| v.trim().to_owned())
        })
        .unwrap_or_else(|| "application/json".into());
    Recorded {
        status,
        content_type,
        body: Arc::new(raw[split.1..].to_vec()),
    }
}

/// The recorded body of `slug` after `step`, as JSON.
pub fn recorded_json(step: &str, slug: &str) -> serde_json::Value {
    let raw = std::fs::read(fixture(step, slug)).expect("fixture");
    serde_json::from_slice(&parse_http(&raw).body).expect("recorded JSON")
}

impl Standin {
    /// Serves the snapshot of `step`.
    pub fn start(step: &str) -> Self {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = std_listener.local_addr().expect("addr");
        drop(std_listener);
        let state = Arc::new(Mutex::new(State {
            bodies: HashMap::new(),
            mode: Mode::Normal,
            hits: HashMap::new(),
        }));
        let (up, up_rx) = tokio::sync::watch::channel(true);
        let shared = state.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(serve(addr, shared, up_rx));
        });
        let standin = Self {
            addr,
            state,
            up,
            thread: Some(thread),
        };
        standin.load_step(step);
        standin.wait_reachable(true);
        standin
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Serves the recorded snapshot of `step` (`19-sigterm`: refuses connections).
    pub fn load_step(&self, step: &str) {
        if step == "19-sigterm" {
            self.down();
            return;
        }
        {
            let mut s = self.state.lock().expect("lock");
            for (_, slug) in SLUGS {
                let raw = std::fs::read(fixture(step, slug)).expect("fixture");
                s.bodies.insert((*slug).to_owned(), parse_http(&raw));
            }
        }
        self.up();
    }

    /// Replaces one endpoint's JSON body.
    pub fn set_json(&self, slug: &str, body: Vec<u8>) {
        self.state.lock().expect("lock").bodies.insert(
            slug.to_owned(),
            Recorded {
                status: 200,
                content_type: "application/json".into(),
                body: Arc::new(body),
            },
        );
    }

    /// The JSON body currently served for `slug`.
    pub fn json(&self, slug: &str) -> serde_json::Value {
        let s = self.state.lock().expect("lock");
        serde_json::from_slice(&s.bodies[slug].body).expect("JSON")
    }

    pub fn set_mode(&self, mode: Mode) {
        self.state.lock().expect("lock").mode = mode;
    }

    /// Requests to `path` (`/api/v1/health` …) so far.
    pub fn hits(&self, path: &str) -> u64 {
        self.state
            .lock()
            .expect("lock")
            .hits
            .get(path)
            .copied()
            .unwrap_or(0)
    }

    /// Stops listening: connections are refused.
    pub fn down(&self) {
        let _ = self.up.send(false);
        self.wait_reachable(false);
    }

    /// Listens again on the same port.
    pub fn up(&self) {
        let _ = self.up.send(true);
        self.wait_reachable(true);
    }

    fn wait_reachable(&self, want: bool) {
        for _ in 0..500 {
            if std::net::TcpStream::connect_timeout(&self.addr, Duration::from_millis(100)).is_ok()
                == want
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("stand-in never became reachable={want}");
    }

    /// Waits until `path` was requested `n` more times than `since`.
    pub fn wait_hits(&self, path: &str, since: u64, n: u64, timeout: Duration) {
        crate::child::poll_until(
            timeout,
            Duration::from_millis(20),
            || self.hits(path) >= since + n,
            || format!("{path}: {} requests, wanted {}", self.hits(path), since + n),
        );
    }
}

impl Drop for Standin {
    fn drop(&mut self) {
        let _ = self.up.send(false);
        // Wake the server loop for good.
        drop(std::mem::replace(
            &mut self.up,
            tokio::sync::watch::channel(false).0,
        ));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn serve(
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    mut up: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        if up.wait_for(|u| *u).await.is_err() {
            return;
        }
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.set_reuseaddr(true).expect("reuseaddr");
        socket.bind(addr).expect("rebind the stand-in's port");
        let listener = socket.listen(128).expect("listen");
        let shared = state.clone();
        let app = axum::Router::new().fallback(move |req: Request<Body>| {
            let shared = shared.clone();
            async move { answer(&shared, req).await }
        });
        let mut down = up.clone();
        let stopped = async move {
            let _ = down.wait_for(|u| !*u).await;
        };
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(stopped)
            .await;
        if up.has_changed().is_err() {
            return;
        }
    }
}

async fn answer(state: &Mutex<State>, req: Request<Body>) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let (mode, recorded) = {
        let mut s = state.lock().expect("lock");
        *s.hits.entry(path.clone()).or_default() += 1;
        let slug = SLUGS.iter().find(|(p, _)| *p == path).map(|(_, s)| *s);
        (
            s.mode.clone(),
            slug.and_then(|slug| s.bodies.get(slug).cloned()),
        )
    };
    let json = |status: u16, body: &str| {
        Response::builder()
            .status(status)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_owned()))
            .expect("response")
    };
    match mode {
        Mode::Status(code) => {
            return json(
                code,
                r#"{"status":"error","message":"Internal server error"}"#,
            );
        }
        Mode::RateLimited(secs) if path != "/api/v1/health" => {
            let mut r = json(
                429,
                r#"{"status":"error","message":"Too many requests. Please try again later.","error_code":"RATE_LIMIT_EXCEEDED"}"#,
            );
            r.headers_mut()
                .insert("retry-after", secs.to_string().parse().expect("header"));
            return r;
        }
        Mode::Html => {
            return Response::builder()
                .status(StatusCode::OK)
                .header(header::CONTENT_TYPE, "text/html; charset=utf-8")
                .body(Body::from("<!DOCTYPE html><html><body>Login</body></html>"))
                .expect("response");
        }
        Mode::InvalidJson => return json(200, "{\"events\": [ {\"id\": "),
        Mode::Slow(d) => tokio::time::sleep(d).await,
        Mode::Normal | Mode::RateLimited(_) => {}
    }
    match recorded {
        Some(r) => Response::builder()
            .status(r.status)
            .header(header::CONTENT_TYPE, r.content_type)
            .body(Body::from(r.body.as_ref().clone()))
            .expect("response"),
        None => json(404, r#"{"detail":"Not Found"}"#),
    }
}
