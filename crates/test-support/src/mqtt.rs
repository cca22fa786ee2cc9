//! Real parts for MQTT tests: a private mosquitto on a free port, the `run` binary as a child
//! process, and a recording MQTT client.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS};
use tempfile::TempDir;

use crate::child::{LoggedChild, free_port, poll_until};

fn mosquitto_bin() -> PathBuf {
    for p in [
        "/usr/sbin/mosquitto",
        "/usr/local/sbin/mosquitto",
        "/usr/bin/mosquitto",
    ] {
        if Path::new(p).exists() {
            return p.into();
        }
    }
    "mosquitto".into()
}

/// A private mosquitto (persistence on, queue unlimited, so nothing is dropped silently).
pub struct Broker {
    pub port: u16,
    dir: TempDir,
    child: Option<Child>,
}

impl Broker {
    pub fn start() -> Self {
        Self::start_with_users(&[])
    }

    /// A broker that admits only these users (anonymous access off when the list is not empty).
    pub fn start_with_users(users: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        // mosquitto started as root drops to the `mosquitto` user: without write access to
        // its directory it silently never saves its persistence file, and a restart loses
        // every session and queued message.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777))
            .expect("chmod");
        let port = free_port();
        let conf = dir.path().join("mosquitto.conf");
        let mut auth = "allow_anonymous true\n".to_owned();
        if !users.is_empty() {
            let file = dir.path().join("passwords");
            std::fs::write(&file, "").expect("password file");
            for (user, pass) in users {
                let ok = Command::new("mosquitto_passwd")
                    .args(["-b"])
                    .arg(&file)
                    .args([user, pass])
                    .status()
                    .expect("mosquitto_passwd runs");
                assert!(ok.success(), "mosquitto_passwd failed");
            }
            auth = format!("allow_anonymous false\npassword_file {}\n", file.display());
        }
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\n{auth}persistence true\npersistence_location {}/\nmax_queued_messages 0\nmax_inflight_messages 20\nlog_dest none\n",
                dir.path().display()
            ),
        )
        .expect("write conf");
        let mut broker = Self {
            port,
            dir,
            child: None,
        };
        broker.spawn();
        broker
    }

    fn spawn(&mut self) {
        let child = Command::new(mosquitto_bin())
            .arg("-c")
            .arg(self.dir.path().join("mosquitto.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto starts (apt-get install mosquitto)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "mosquitto did not listen on {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the broker (SIGTERM: it saves its persistence file) and starts it again.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// SIGKILL (no chance to save anything) and start again.
    pub fn kill_and_restart(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.spawn();
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `run` on the broker at `port`, once it has announced itself online, and the client that
/// saw it (subscribed to the availability topic).
pub async fn start_online(dir: &Path, port: u16, env: &[(&str, &str)]) -> (App, Client) {
    let app = App::start(dir, port, env);
    let client = Client::connect(port, &["printernizer_stats/availability"]).await;
    client
        .wait_for(
            "printernizer_stats/availability",
            Duration::from_secs(30),
            |m| m.text() == "online",
        )
        .await;
    (app, client)
}

/// `printernizer-stats run` against a broker, with its stderr collected.
pub struct App {
    child: LoggedChild,
    pub db: PathBuf,
}

impl App {
    pub fn start(dir: &Path, port: u16, env: &[(&str, &str)]) -> Self {
        Self::spawn(dir, Some(port), env)
    }

    /// `run` with no broker configured (add-on mode finds it through the Supervisor).
    pub fn spawn(dir: &Path, port: Option<u16>, env: &[(&str, &str)]) -> Self {
        let db = dir.join("stats.db");
        let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("printernizer-stats"));
        cmd.arg("run")
            .current_dir(dir)
            .env("PRINTERNIZER_STATS__DATABASE__PATH", &db)
            .env("PRINTERNIZER_STATS_OPTIONS", dir.join("no-options.json"))
            .env("PRINTERNIZER_STATS__MQTT__BIRTH_DELAY_MAX_S", "1")
            // Parallel tests: each web page on its own free port (see `http_base`).
            .env("PRINTERNIZER_STATS__HTTP__BIND", "127.0.0.1:0")
            .env("PRINTERNIZER_STATS__LOG_LEVEL", "debug")
            // No bridge unless a test asks for one: in add-on mode it would look for Printernizer
            // at the host's address on the Supervisor network, which is not ours to reach.
            .env("PRINTERNIZER_STATS__PRINTERNIZER__ENABLED", "false")
            .env_remove("SUPERVISOR_TOKEN")
            .env_remove("DO_NOT_TRACK")
            .env_remove("RUST_LOG");
        if let Some(port) = port {
            cmd.env("PRINTERNIZER_STATS__MQTT__HOST", "127.0.0.1")
                .env("PRINTERNIZER_STATS__MQTT__PORT", port.to_string());
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        Self {
            child: LoggedChild::spawn(&mut cmd, "run"),
            db,
        }
    }

    /// The web page's base URL (`http://127.0.0.1:PORT/`), from the start-up log line.
    pub fn http_base(&self) -> String {
        let needle = "web page and API on ";
        self.wait_log(needle, 1, Duration::from_secs(30));
        let log = self.log();
        let at = log.find(needle).expect("logged") + needle.len();
        log[at..]
            .split_whitespace()
            .next()
            .expect("url")
            .trim_end_matches('"')
            .to_owned()
    }

    pub fn log(&self) -> String {
        self.child.log()
    }

    /// Waits until the log contains `needle` `count` times.
    pub fn wait_log(&self, needle: &str, count: usize, timeout: Duration) {
        poll_until(
            timeout,
            Duration::from_millis(20),
            || self.log().matches(needle).count() >= count,
            || format!("log never said {needle:?} x{count}:\n{}", self.log()),
        );
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.pid()
    }

    pub fn is_running(&mut self) -> bool {
        self.child.is_running()
    }

    /// SIGTERM and wait; returns whether it exited 0.
    pub fn stop(&mut self) -> bool {
        self.child.stop()
    }

    /// Waits up to `timeout` for `run` to exit by itself; its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        self.child.wait_exit(timeout)
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        self.child.kill();
    }

    /// Runs a read-only query on the database.
    pub fn query<T>(&self, sql: &str, f: impl FnOnce(&rusqlite::Connection, &str) -> T) -> T {
        let conn = rusqlite::Connection::open_with_flags(
            &self.db,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .expect("db opens");
        conn.busy_timeout(Duration::from_secs(5))
            .expect("busy timeout");
        f(&conn, sql)
    }

    pub fn count(&self, sql: &str) -> i64 {
        self.query(sql, |c, sql| {
            c.query_row(sql, [], |r| r.get(0)).unwrap_or(-1)
        })
    }

    /// Waits until `sql` (a count) returns `want`.
    pub fn wait_count(&self, sql: &str, want: i64, timeout: Duration) {
        poll_until(
            timeout,
            Duration::from_millis(50),
            || self.count(sql) == want,
            || format!("{sql} = {}, wanted {want}\n{}", self.count(sql), self.log()),
        );
    }
}

/// One received message.
#[derive(Debug, Clone)]
pub struct Msg {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
}

impl Msg {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.payload).into_owned()
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.payload).expect("JSON payload")
    }
}

/// A test client that records everything it receives on its subscriptions.
pub struct Client {
    pub client: AsyncClient,
    pub received: Arc<Mutex<Vec<Msg>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Client {
    pub async fn connect(port: u16, subscriptions: &[&str]) -> Self {
        Self::connect_as(port, subscriptions, None).await
    }

    pub async fn connect_as(
        port: u16,
        subscriptions: &[&str],
        credentials: Option<(&str, &str)>,
    ) -> Self {
        let id = format!("test-{}", uuid::Uuid::new_v4().simple());
        let mut opts = MqttOptions::new(id, "127.0.0.1", port);
        if let Some((user, pass)) = credentials {
            opts.set_credentials(user, pass);
        }
        opts.set_max_packet_size(8 << 20, 8 << 20);
        opts.set_keep_alive(Duration::from_secs(30));
        let (client, mut eventloop) = AsyncClient::new(opts, 10_000);
        let received = Arc::new(Mutex::new(Vec::new()));
        let sink = received.clone();
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Incoming::Publish(p))) => {
                        sink.lock().expect("lock").push(Msg {
                            topic: p.topic.clone(),
                            payload: p.payload.to_vec(),
                            retain: p.retain,
                        })
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        for s in subscriptions {
            client
                .subscribe(*s, QoS::AtLeastOnce)
                .await
                .expect("subscribe");
        }
        Self {
            client,
            received,
            task,
        }
    }

    pub async fn publish(&self, topic: &str, payload: impl Into<Vec<u8>>) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .await
            .expect("publish queued");
    }

    /// Publishes with QoS 0 (fire and forget: nothing confirms it reached anybody).
    pub async fn publish_at_most_once(&self, topic: &str, payload: impl Into<Vec<u8>>) {
        self.client
            .publish(topic, QoS::AtMostOnce, false, payload)
            .await
            .expect("publish queued");
    }

    pub fn messages(&self, topic_prefix: &str) -> Vec<Msg> {
        self.received
            .lock()
            .expect("lock")
            .iter()
            .filter(|m| m.topic.starts_with(topic_prefix))
            .cloned()
            .collect()
    }

    /// Waits for the latest message on `topic` to satisfy `pred`.
    pub async fn wait_for(
        &self,
        topic: &str,
        timeout: Duration,
        pred: impl Fn(&Msg) -> bool,
    ) -> Msg {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(m) = self
                .messages(topic)
                .into_iter()
                .rev()
                .find(|m| m.topic == topic)
                && pred(&m)
            {
                return m;
            }
            assert!(
                Instant::now() < deadline,
                "no matching message on {topic}: {:?}",
                self.messages(topic).last().map(Msg::text)
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.task.abort();
    }
}
