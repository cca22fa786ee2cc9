//! The application `printernizer-stats run` is: the composition root that wires the sources,
//! the store and the consumers together, and owns every task's lifetime.
//!
//! [`run`] starts, in this order, and each only when configured:
//! 1. daily retention pruning;
//! 2. the submission scheduler (`submission.endpoint` set; it sends nothing before opt-in);
//! 3. the local API and web page (`http.enabled`) — a port that is taken only logs: collecting
//!    events matters more than the page;
//! 4. the Printernizer bridge (`printernizer.url`, or in the add-on through the Supervisor);
//! 5. MQTT ingest and Home Assistant discovery (`mqtt.enabled`).
//!
//! A database file deleted, replaced or emptied under `run` (see `store::writer`) stops it the
//! same way, with [`crate::Error::FileLost`]: the binary then sets the remains aside and starts
//! over (`instance::start_over`).
//!
//! Shutdown is passed in as a [`CancellationToken`] (the binary cancels it on SIGTERM/Ctrl-C).
//! Every task is spawned on one [`TaskTracker`] and awaited before `run` returns — MQTT first,
//! so that `offline` is published and every acknowledged event is committed — with a bound of
//! [`STOP_TIMEOUT`] for the rest, after which a line names what did not stop.

use std::net::SocketAddr;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::Result;
use crate::config::Settings;
use crate::deployment::Deployment;
use crate::mqtt::{self, supervisor};
use crate::service::StatsService;
use crate::submission::{self, Submitter};
use crate::{bridge, http};

/// How long the tasks other than MQTT get to stop after shutdown.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// How often raw events past `retention.days` are pruned.
pub const PRUNE_EVERY: Duration = Duration::from_secs(24 * 3600);

/// The broker from the configuration or, in the add-on, from the Supervisor (waiting for it).
pub async fn broker(
    settings: &Settings,
    deployment: &Deployment,
    client_id: String,
) -> Result<mqtt::BrokerConfig> {
    mqtt::resolve_broker(&settings.mqtt, deployment.supervisor(), client_id).await
}

/// In the add-on, reads Home Assistant's country for reports (a failure only logs: the
/// configured `installation.country_code`, else `XX`, is used).
pub async fn apply_home_assistant_country(service: &StatsService, deployment: &Deployment) {
    let Some(sv) = deployment.supervisor() else {
        return;
    };
    match supervisor::home_assistant_country(&sv.url, &sv.token).await {
        Ok(country) => service.set_home_assistant_country(country),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read Home Assistant's country; using installation.country_code")
        }
    }
}

/// Runs the service until `shutdown` is cancelled, then stops every task it started.
pub async fn run(
    service: &StatsService,
    deployment: &Deployment,
    shutdown: CancellationToken,
) -> Result<()> {
    let status = service.status().await?;
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        database = %status.database,
        opt_in = %status.opt_in_status,
        events = status.events_total,
        "printernizer-stats started"
    );
    let settings = service.settings().clone();
    let http_addr = if settings.http.enabled {
        Some(http::check(&settings, deployment.is_addon())?)
    } else {
        None
    };
    let tasks = TaskTracker::new();
    // The tasks' own token: cancelled by `shutdown`, and by us when start-up fails half-way.
    let stop = shutdown.child_token();
    let started = start(service, deployment, &settings, http_addr, &tasks, &stop).await;
    let mqtt = match started {
        Ok(mqtt) => mqtt,
        Err(e) => {
            stop.cancel();
            finish(tasks).await;
            return Err(e);
        }
    };
    let mut lost = service.store().file_lost();
    let loss = tokio::select! {
        () = stop.cancelled() => None,
        loss = lost.wait_for(Option::is_some) => loss.ok().and_then(|l| *l),
    };
    match loss {
        None => tracing::info!("shutting down"),
        Some(_) => tracing::warn!(
            "stopping to start over with a new database file; the MQTT session is kept, so \
             the broker delivers every event that was not acknowledged"
        ),
    }
    stop.cancel();
    if let Some(mqtt) = mqtt {
        mqtt.shutdown().await;
    }
    finish(tasks).await;
    match loss {
        None => Ok(()),
        Some(loss) => Err(crate::Error::FileLost {
            loss,
            message: format!(
                "the database file {} {} while running",
                service.store().path().display(),
                loss.describe()
            ),
        }),
    }
}

/// Starts everything; returns the MQTT handle (stopped first, in order) once connected.
async fn start(
    service: &StatsService,
    deployment: &Deployment,
    settings: &Settings,
    http_addr: Option<SocketAddr>,
    tasks: &TaskTracker,
    stop: &CancellationToken,
) -> Result<Option<mqtt::MqttHandle>> {
    tasks.spawn(prune_daily(service.clone(), stop.clone()));
    tasks.spawn(crate::service::external::watch(
        service.clone(),
        stop.clone(),
    ));
    let submitter = Submitter::configured(service)?;
    match (&submitter, settings.submission_endpoint()) {
        (Some(s), Some(endpoint)) => {
            tracing::info!(%endpoint, "submission configured (only ever used after opt-in)");
            tasks.spawn(submission::run_scheduler(s.clone(), stop.clone()));
        }
        _ => tracing::info!("submission disabled: submission.endpoint is not set"),
    }
    let page_addr = match http_addr {
        Some(addr) => {
            serve_page(service, deployment, settings, addr, &submitter, tasks, stop).await
        }
        None => None,
    };
    match bridge::resolve_url(service, deployment.supervisor()).await {
        Some(url) => {
            let handle = bridge::spawn(service.clone(), &url, stop.clone())?;
            tasks.spawn(async move {
                let _ = handle.await;
            });
        }
        None if settings.printernizer.enabled => tracing::info!(
            "Printernizer bridge off: printernizer.url is not set (events come only from MQTT)"
        ),
        None => tracing::info!("Printernizer bridge off (printernizer.enabled = false)"),
    }
    if !settings.mqtt.enabled {
        tracing::info!("MQTT disabled (mqtt.enabled = false)");
        return Ok(None);
    }
    // Recorded beside the database, so that a replaced database file resumes the session.
    let client_id = crate::instance::mqtt_client_id(
        service.store().path(),
        format!(
            "printernizer-stats-{}",
            service.stable_tag("mqtt-client-id")
        ),
    );
    let broker = tokio::select! {
        broker = broker(settings, deployment, client_id) => broker?,
        () = stop.cancelled() => return Ok(None),
    };
    // The device's "Visit" link: the ingress panel in the add-on, the local page otherwise.
    let configuration_url = match deployment.supervisor() {
        Some(sv) => supervisor::ingress_page_url(&sv.url, &sv.token)
            .await
            .unwrap_or_else(|e| {
                tracing::debug!(error = %e, "no ingress page URL from the Supervisor");
                None
            }),
        None => page_addr
            .filter(|a| !a.ip().is_unspecified())
            .map(|a| format!("http://{a}/")),
    };
    Ok(Some(mqtt::spawn(
        service.clone(),
        settings,
        &broker,
        submitter,
        configuration_url,
    )))
}

/// Serves the local API and page on `addr`; returns the address it listens on.
async fn serve_page(
    service: &StatsService,
    deployment: &Deployment,
    settings: &Settings,
    addr: SocketAddr,
    submitter: &Option<Submitter>,
    tasks: &TaskTracker,
    stop: &CancellationToken,
) -> Option<SocketAddr> {
    let state = http::HttpState {
        service: service.clone(),
        submitter: submitter.clone(),
        access: http::access::Policy::new(deployment.is_addon(), settings.http.token()),
    };
    match tokio::net::TcpListener::bind(addr).await {
        Ok(listener) => {
            let shown = listener.local_addr().unwrap_or(addr);
            tracing::info!("web page and API on http://{shown}/");
            let stopped = stop.clone().cancelled_owned();
            tasks.spawn(async move {
                if let Err(e) = http::serve(state, listener, stopped).await {
                    tracing::error!(error = %e, "the web page stopped");
                }
            });
            Some(shown)
        }
        // Collecting events matters more than the page: keep running without it.
        Err(e) => {
            tracing::error!(
                "cannot listen on {addr} for the web page ({e}); running without it — set http.bind to a free address"
            );
            None
        }
    }
}

/// Prunes raw events past retention now and every [`PRUNE_EVERY`] until `stop`.
async fn prune_daily(service: StatsService, stop: CancellationToken) {
    let mut tick = tokio::time::interval(PRUNE_EVERY);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => return,
        }
        if let Err(e) = service.prune_expired().await {
            tracing::warn!(error = %e, "retention pruning failed; will retry tomorrow");
        }
    }
}

/// Waits up to [`STOP_TIMEOUT`] for the tracked tasks.
async fn finish(tasks: TaskTracker) {
    tasks.close();
    if tokio::time::timeout(STOP_TIMEOUT, tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            "{} task(s) did not stop within {} s (the Printernizer bridge or a request in flight)",
            tasks.len(),
            STOP_TIMEOUT.as_secs()
        );
    }
}
