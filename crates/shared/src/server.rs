//! The accept loop of both HTTP servers (the add-on's local page and API, the aggregation
//! server), in place of `axum::serve`, which sets no timeout and no limit: measured from
//! outside, 2,000 idle keep-alive and 200 header-trickling connections stayed open forever
//! (the aggregator's RSS 13 → 45 MiB, and it stayed there), and 1,100 silent connections with
//! the fd limit at 1,024 made every legitimate request time out, without a log line.
//!
//! * **Header-read timeout** ([`Limits::header_read`]): a connection must send a request's
//!   headers within it — also between two requests on a keep-alive connection, so it is the
//!   idle timeout too (hyper starts the timer whenever it waits for a request head).
//! * **Request timeout** ([`Limits::request`]): a handler that takes longer is answered 408
//!   (the response head; a streamed body, such as an export, may take longer).
//! * **Connection cap** ([`Limits::max_connections`], well under the usual fd limit of 1,024):
//!   at the cap, a new connection takes the place of the oldest connection that has not sent
//!   a request yet (a silent or trickling one): the server keeps answering health checks and
//!   submissions however many silent connections somebody opens. When every connection is
//!   busy with a request, the new one waits for a place. Reaching the cap logs one line,
//!   leaving it (a tenth of the places free again) one line with the count of connections
//!   closed to make room.
//! * Accept errors (out of file descriptors …) log once per condition and are retried.
//!
//! Shutdown: stops accepting, lets requests in flight finish (connections close after their
//! response), and returns once every connection is closed.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore};

/// The limits of one server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Time to send a request's headers (also the idle time allowed between requests).
    pub header_read: Duration,
    /// Time for a handler to produce its response head.
    pub request: Duration,
    /// Open connections at most.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_read: Duration::from_secs(10),
            request: Duration::from_secs(30),
            max_connections: 512,
        }
    }
}

/// One open connection, as the cap sees it.
struct Open {
    /// Set once the connection has sent a request head.
    spoke: Arc<AtomicBool>,
    /// Notified to close it.
    close: Arc<Notify>,
}

/// The open connections, oldest first.
#[derive(Default)]
struct Registry {
    next: AtomicU64,
    open: Mutex<BTreeMap<u64, Open>>,
}

impl Registry {
    fn add(&self, spoke: Arc<AtomicBool>, close: Arc<Notify>) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(id, Open { spoke, close });
        id
    }

    fn remove(&self, id: u64) {
        self.lock().remove(&id);
    }

    /// Closes the oldest connection that never sent a request; whether there was one.
    fn evict_silent(&self) -> bool {
        let mut open = self.lock();
        let victim = open
            .iter()
            .find(|(_, o)| !o.spoke.load(Ordering::Relaxed))
            .map(|(id, _)| *id);
        match victim.and_then(|id| open.remove(&id)) {
            Some(o) => {
                o.close.notify_one();
                true
            }
            None => false,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Open>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Serves `router` on `listener` with `limits` until `shutdown` resolves. Handlers can read
/// the peer's address with `ConnectInfo<SocketAddr>`. `name` prefixes the log lines.
pub async fn serve(
    name: &'static str,
    listener: TcpListener,
    router: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let router = router.layer(tower_http::timeout::TimeoutLayer::with_status_code(
        axum::http::StatusCode::REQUEST_TIMEOUT,
        limits.request,
    ));
    // HTTP/1.1 only: hyper's protocol detection for HTTP/2 reads the first bytes without any
    // timeout, so a silent connection would never be closed.
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read)
        .keep_alive(true);
    let places = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let registry = Arc::new(Registry::default());
    let graceful = GracefulShutdown::new();
    // Connections closed to make room while at the cap (`None`: below it).
    let mut at_cap: Option<u64> = None;
    let relief = (limits.max_connections / 10).max(1);
    let mut accept_failing = false;
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let (stream, peer) = match accepted {
            Ok(a) => {
                if std::mem::take(&mut accept_failing) {
                    tracing::info!("{name}: accepting connections again");
                }
                a
            }
            Err(e) => {
                if !std::mem::replace(&mut accept_failing, true) {
                    tracing::error!("{name}: cannot accept connections: {e}; retrying");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let permit = match places.clone().try_acquire_owned() {
            Ok(p) => {
                // Left only with a tenth of the places free again, so that a server hovering at
                // the cap does not log a line per connection.
                if at_cap.is_some() && places.available_permits() >= relief {
                    let closed = at_cap.take().unwrap_or(0);
                    tracing::info!(
                        "{name}: below the connection limit again; {closed} silent \
                         connection(s) were closed to make room"
                    );
                }
                p
            }
            Err(_) => {
                if at_cap.is_none() {
                    tracing::warn!(
                        "{name}: {} connections are open (the limit): new ones take the place \
                         of connections that have not sent a request",
                        limits.max_connections
                    );
                }
                let closed = at_cap.get_or_insert(0);
                if registry.evict_silent() {
                    *closed += 1;
                }
                // The evicted connection gives its place back as it closes; or a busy one
                // finishes. Wait for that, but not forever.
                match tokio::time::timeout(limits.header_read, places.clone().acquire_owned()).await
                {
                    Ok(Ok(p)) => p,
                    _ => continue,
                }
            }
        };
        let spoke = Arc::new(AtomicBool::new(false));
        let close = Arc::new(Notify::new());
        let id = registry.add(spoke.clone(), close.clone());
        let service = {
            let router = router.clone();
            let spoke = spoke.clone();
            tower::ServiceExt::map_request(
                router,
                move |req: hyper::Request<hyper::body::Incoming>| {
                    spoke.store(true, Ordering::Relaxed);
                    let mut req = req.map(axum::body::Body::new);
                    req.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
                    req
                },
            )
        };
        let conn =
            builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
        let conn = graceful.watch(conn);
        let registry = registry.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = conn => {}
                () = close.notified() => {}
            }
            registry.remove(id);
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}
