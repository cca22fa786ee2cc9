//! A real SMTP server for tests: Debian's aiosmtpd (`python3-aiosmtpd`, installed by
//! `.ci/run`) on a free port of 127.0.0.1, with a handler that decodes every message it
//! accepts (with Python's `email` package) into one JSON file: envelope, subject, content type
//! and the text and HTML parts.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

use crate::child::free_port;

const SINK: &str = r#"
import asyncio, email, email.policy, json, os, sys
from aiosmtpd.controller import Controller

out, port = sys.argv[1], int(sys.argv[2])

class Sink:
    async def handle_DATA(self, server, session, envelope):
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        parts = {}
        for p in msg.walk():
            if not p.is_multipart():
                parts[p.get_content_type()] = p.get_content()
        record = {"mail_from": envelope.mail_from, "rcpt_tos": envelope.rcpt_tos,
                  "subject": str(msg["subject"]), "from": str(msg["from"]),
                  "to": str(msg["to"]), "content_type": msg.get_content_type(),
                  "text": parts.get("text/plain"), "html": parts.get("text/html")}
        n = len([f for f in os.listdir(out) if f.endswith(".json")])
        tmp = os.path.join(out, "%04d.tmp" % n)
        with open(tmp, "w") as f:
            json.dump(record, f)
        os.rename(tmp, os.path.join(out, "%04d.json" % n))
        return "250 Message accepted for delivery"

controller = Controller(Sink(), hostname="127.0.0.1", port=port)
controller.start()
asyncio.get_event_loop().run_forever()
"#;

/// The Python with aiosmtpd: Debian's, where `python3-aiosmtpd` installs it.
fn python() -> PathBuf {
    for p in ["/usr/bin/python3", "/usr/local/bin/python3"] {
        let ok = Command::new(p)
            .args(["-c", "import aiosmtpd"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return PathBuf::from(p);
        }
    }
    panic!("no python3 with aiosmtpd: install Debian's python3-aiosmtpd (.ci/run does)");
}

/// The SMTP server; killed on drop.
pub struct SmtpSink {
    child: Child,
    port: u16,
    dir: TempDir,
}

impl SmtpSink {
    /// Starts the server and waits until it accepts connections.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let child = Command::new(python())
            .args(["-c", SINK])
            .arg(dir.path())
            .arg(port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("aiosmtpd starts");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the SMTP sink did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { child, port, dir }
    }

    /// `smtp://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    fn read(dir: &Path) -> Vec<Value> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .expect("read the sink")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        files.sort();
        files
            .iter()
            .map(|f| serde_json::from_slice(&std::fs::read(f).expect("read")).expect("json"))
            .collect()
    }

    /// Every message received so far, oldest first.
    pub fn messages(&self) -> Vec<Value> {
        Self::read(self.dir.path())
    }

    /// Waits until `n` messages have arrived; returns them.
    pub fn wait_for(&self, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let got = self.messages();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {n} messages arrived",
                got.len()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
