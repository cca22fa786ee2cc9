//! A real headless Chromium (Debian's `chromium` + `chromium-driver`, installed by `.ci/run`),
//! driven over WebDriver with fantoccini: [`Browser::start`] runs chromedriver on a free port
//! and opens a session.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder};
use serde_json::{Value, json};

use crate::child::free_port;

/// The first of `names` found where Debian installs browsers.
pub fn find_bin(names: &[&str]) -> PathBuf {
    for n in names {
        for dir in ["/usr/bin", "/usr/local/bin", "/usr/lib/chromium"] {
            let p = Path::new(dir).join(n);
            if p.exists() {
                return p;
            }
        }
    }
    panic!("{names:?} not found: install Debian's chromium and chromium-driver (.ci/run does)");
}

/// chromedriver as a child process; killed on drop.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    fn start() -> Self {
        let port = free_port();
        let child = Command::new(find_bin(&["chromedriver"]))
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A headless Chromium session.
pub struct Browser {
    /// The WebDriver client.
    pub client: Client,
    _driver: Driver,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium whose downloads go to `downloads`, with a
    /// window of `width`×`height`.
    pub async fn start(downloads: &Path, width: u32, height: u32) -> Self {
        let driver = Driver::start();
        let caps: serde_json::Map<String, Value> = serde_json::from_value(json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": find_bin(&["chromium", "chromium-browser"]),
                "args": ["--headless", "--no-sandbox", "--disable-gpu",
                         "--disable-background-networking", "--disable-component-update",
                         "--disable-sync", "--no-first-run",
                         format!("--window-size={width},{height}")],
                "prefs": {
                    "download.default_directory": downloads,
                    "download.prompt_for_download": false
                }
            }
        }))
        .expect("caps");
        let client = ClientBuilder::rustls()
            .expect("connector")
            .capabilities(caps)
            .connect(&driver.url)
            .await
            .expect("WebDriver session");
        Self {
            client,
            _driver: driver,
        }
    }

    /// Saves a screenshot as `<target>/browser/<name>.png` (beside `CARGO_TARGET_TMPDIR`).
    pub async fn screenshot(&self, target_tmp: &str, name: &str) {
        let png = self.client.screenshot().await.expect("screenshot");
        let shots = Path::new(target_tmp).join("../browser");
        std::fs::create_dir_all(&shots).expect("dir");
        std::fs::write(shots.join(format!("{name}.png")), &png).expect("write screenshot");
    }
}
