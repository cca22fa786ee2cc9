//! Routing of incoming messages, acknowledgements after commit, and everything we publish.
//!
//! Four tasks, split by what they may wait for (the connection loop's module docs say why):
//! * the **router** takes incoming messages in order: events go to the store's writer,
//!   Printernizer's status to the service, Home Assistant's commands to the command task. It
//!   never sends an MQTT request, so the connection loop can safely wait for it.
//! * the **command task** runs the opt-in switch and the submit button (database writes, HTTP
//!   to the aggregation server) one at a time, so a slow server never holds up events.
//! * the **acknowledger** acknowledges in arrival order, an event only after its row is
//!   committed.
//! * the **publisher** sends everything else: subscriptions and discovery after each ConnAck,
//!   the switch's state, the state JSON on change (debounced) and every 5 minutes, and
//!   `offline` when stopping.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use rumqttc::{AsyncClient, Publish, QoS, SubscribeFilter};
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;

use super::discovery::{self, Context};
use super::ingest::{Mapped, map_event};
use super::state::StatePayload;
use super::topics::Topics;
use crate::Error;
use crate::backoff::Backoff;
use crate::i18n::Catalog;
use crate::metrics::Metrics;
use crate::service::StatsService;
use crate::store::{Inserted, PendingInsert, settings};
use crate::submission::Submitter;

/// How often the state is republished without a change (rolling windows move).
pub(crate) const STATE_REFRESH: Duration = Duration::from_secs(300);
/// Debounce of state publishing after a change.
pub(crate) const STATE_DEBOUNCE: Duration = Duration::from_secs(1);

/// State shared by the MQTT tasks.
pub(crate) struct Shared {
    service: StatsService,
    client: AsyncClient,
    topics: Topics,
    catalog: Catalog,
    birth_delay_max: Duration,
    state_changed: Notify,
    /// A ConnAck arrived (notified by the connection loop): resubscribe and republish.
    pub(crate) connected: Arc<Notify>,
    /// A command from the switch was handled: echo the switch's state.
    opt_in_handled: Notify,
    /// A republish after Home Assistant's birth message is scheduled.
    birth_pending: std::sync::atomic::AtomicBool,
    submitter: Option<Submitter>,
    /// Asks the connection task for a new connection (the broker then redelivers what was not
    /// acknowledged).
    reconnect: tokio::sync::mpsc::UnboundedSender<()>,
    /// A redelivery is already scheduled.
    redelivery_pending: std::sync::atomic::AtomicBool,
    /// Delay before the next redelivery while writes keep failing.
    redelivery_backoff: Mutex<Duration>,
    /// The device's `configuration_url`.
    pub(crate) configuration_url: Option<String>,
    /// The service is stopping: a publish that no longer reaches the closed connection is
    /// expected, not a problem.
    stopping: std::sync::atomic::AtomicBool,
}

impl Shared {
    pub(crate) fn new(
        service: StatsService,
        client: AsyncClient,
        topics: Topics,
        catalog: Catalog,
        birth_delay_max: Duration,
        submitter: Option<Submitter>,
        reconnect: tokio::sync::mpsc::UnboundedSender<()>,
    ) -> Self {
        Self {
            service,
            client,
            topics,
            catalog,
            birth_delay_max,
            state_changed: Notify::new(),
            connected: Arc::new(Notify::new()),
            opt_in_handled: Notify::new(),
            birth_pending: std::sync::atomic::AtomicBool::new(false),
            submitter,
            reconnect,
            redelivery_pending: std::sync::atomic::AtomicBool::new(false),
            redelivery_backoff: Mutex::new(REDELIVERY.start),
            stopping: std::sync::atomic::AtomicBool::new(false),
            configuration_url: None,
        }
    }

    fn online(&self) -> Option<bool> {
        self.service.printernizer_online()
    }

    async fn publish(&self, topic: String, retain: bool, payload: impl Into<Vec<u8>>) {
        if let Err(e) = self
            .client
            .publish(topic.clone(), QoS::AtLeastOnce, retain, payload)
            .await
        {
            if self.stopping.load(Ordering::Relaxed) {
                tracing::debug!(%topic, error = %e, "MQTT publish dropped while stopping");
            } else {
                tracing::warn!(%topic, error = %e, "cannot queue MQTT publish");
            }
        }
    }

    /// Availability, discovery, the switch state and the sensor state.
    async fn publish_all(&self) {
        self.publish(self.topics.availability(), true, "online")
            .await;
        let ctx = Context {
            topics: &self.topics,
            catalog: &self.catalog,
            configuration_url: self.configuration_url.as_deref(),
        };
        for message in discovery::all(ctx) {
            self.publish(message.topic, true, message.payload).await;
        }
        self.publish_opt_in_state().await;
        self.publish_state().await;
    }

    async fn publish_opt_in_state(&self) {
        let (on, status) = match (
            self.service.sharing_active().await,
            self.service.status().await,
        ) {
            (Ok(on), Ok(status)) => (on, status),
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(error = %e, "cannot read the opt-in state");
                return;
            }
        };
        self.publish(
            self.topics.opt_in_state(),
            true,
            if on { "ON" } else { "OFF" },
        )
        .await;
        let attributes = serde_json::json!({ "reason": status.reason });
        self.publish(
            self.topics.opt_in_attributes(),
            true,
            attributes.to_string(),
        )
        .await;
    }

    async fn publish_state(&self) {
        if let Err(e) = self.service.persist_counters().await {
            tracing::debug!(error = %e, "cannot save the rejected-messages counter");
        }
        match self.service.local_stats().await {
            Ok(local) => {
                let (problem, next) = match &self.submitter {
                    Some(s) => (
                        s.has_problem().await.unwrap_or(false),
                        s.next_due().await.ok().flatten(),
                    ),
                    // Opted in without an aggregation server: nothing can ever be sent.
                    None => (self.service.sharing_active().await.unwrap_or(false), None),
                };
                let last_bridge = match self.service.status().await {
                    Ok(status) => status.bridge_last_success,
                    Err(_) => None,
                };
                let state = StatePayload::new(
                    &local,
                    self.service.metrics(),
                    self.online(),
                    problem,
                    next,
                    &self.service.sources(),
                    last_bridge,
                );
                match serde_json::to_vec(&state) {
                    Ok(json) => self.publish(self.topics.state(), true, json).await,
                    Err(e) => tracing::warn!(error = %e, "cannot serialize the state"),
                }
                for (key, value) in [
                    ("last_submission", state.last_submission),
                    ("next_submission", state.next_submission),
                ] {
                    self.publish_timestamp(key, value).await;
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot compute the local statistics"),
        }
    }

    /// A timestamp sensor's own topic: the timestamp whenever there is one (retained; a valid
    /// timestamp never makes Home Assistant warn), and `None` only when it replaces a
    /// timestamp this topic carried — remembered in `usage_settings` across restarts — so a
    /// sensor that never had a value is never sent `None`, which Home Assistant before 2024.10
    /// logs as an invalid state.
    async fn publish_timestamp(&self, key: &'static str, value: Option<String>) {
        let record = format!("{}{key}", settings::HA_SENT_PREFIX);
        let sent = {
            let record = record.clone();
            self.service
                .store()
                .read(move |c| settings::get(c, &record))
                .await
        };
        let sent = match sent {
            Ok(sent) => sent.filter(|s| !s.is_empty()),
            Err(e) => {
                tracing::debug!(error = %e, "cannot read which timestamps Home Assistant has");
                return;
            }
        };
        let payload = match &value {
            Some(t) => t.clone(),
            None if sent.is_some() => "None".to_owned(),
            None => return,
        };
        self.publish(self.topics.timestamp_state(key), true, payload)
            .await;
        if sent != value {
            let now_sent = value.unwrap_or_default();
            let written = self
                .service
                .store()
                .write(move |tx, now| settings::set(tx, &record, &now_sent, now))
                .await;
            if let Err(e) = written {
                tracing::debug!(error = %e, "cannot remember the published timestamp");
            }
        }
    }

    async fn subscribe(&self) {
        let filters = [
            self.topics.events_filter(),
            self.topics.printernizer_status(),
            self.topics.ha_status(),
            self.topics.opt_in_set(),
            self.topics.submit_now(),
        ]
        .into_iter()
        .map(|path| SubscribeFilter::new(path, QoS::AtLeastOnce));
        if let Err(e) = self.client.subscribe_many(filters).await {
            tracing::warn!(error = %e, "cannot queue MQTT subscriptions");
        }
    }
}

/// An acknowledgement, sent in arrival order.
struct Ack {
    /// The message without its payload (only the topic, QoS and packet id are needed).
    publish: Publish,
    after: Option<PendingInsert>,
}

/// A command from Home Assistant, run by the command task.
#[derive(Debug, Clone, Copy)]
enum Command {
    /// The opt-in switch: `ON` or `OFF`.
    OptIn(bool),
    /// The "Submit statistics now" button.
    SubmitNow,
}

/// Commands waiting for the command task; the router waits when it is full.
const COMMAND_CAPACITY: usize = 16;

/// Starts the router, the command task, the acknowledger and the publisher.
pub(crate) fn spawn(
    shared: Arc<Shared>,
    mut inbound: mpsc::Receiver<Publish>,
    mut stop: watch::Receiver<bool>,
) -> Vec<JoinHandle<()>> {
    // Unbounded on purpose: the acknowledger waits on rumqttc's request channel, which only
    // the connection loop drains, which may be waiting for the router; a bounded channel here
    // would let the router wait for the acknowledger and close that circle. Its length is
    // bounded anyway: an entry is either an event waiting for its commit (as many as the
    // writer's channel holds) or a QoS 1 message (as many as the broker's in-flight window);
    // a QoS 0 message without a row to wait for is never queued (`route`).
    let (ack_tx, ack_rx) = mpsc::unbounded_channel::<Ack>();
    let (command_tx, command_rx) = mpsc::channel::<Command>(COMMAND_CAPACITY);
    let acker = tokio::spawn(acknowledge(shared.clone(), ack_rx));
    let commands = tokio::spawn(run_commands(shared.clone(), command_rx));
    let publisher = tokio::spawn(publisher(shared.clone(), stop.clone()));
    let router = tokio::spawn(async move {
        loop {
            tokio::select! {
                message = inbound.recv() => match message {
                    Some(publish) => route(&shared, publish, &ack_tx, &command_tx).await,
                    None => break,
                },
                // The publisher sends `offline` and disconnects.
                _ = stop.changed() => break,
            }
        }
    });
    vec![router, commands, acker, publisher]
}

/// Runs Home Assistant's commands in arrival order. Never sends an MQTT request itself (the
/// router waits for this task when its queue is full): it tells the publisher what to send.
async fn run_commands(shared: Arc<Shared>, mut rx: mpsc::Receiver<Command>) {
    while let Some(command) = rx.recv().await {
        match command {
            Command::OptIn(true) => {
                if let Err(e) = shared.service.opt_in().await {
                    tracing::warn!(error = %e, "opt-in from Home Assistant refused");
                }
                shared.opt_in_handled.notify_one();
            }
            Command::OptIn(false) => {
                let result =
                    crate::submission::opt_out(&shared.service, shared.submitter.as_ref()).await;
                if let Err(e) = result {
                    tracing::warn!(error = %e, "opt-out from Home Assistant failed");
                }
                shared.opt_in_handled.notify_one();
            }
            Command::SubmitNow => match &shared.submitter {
                Some(s) => match s.submit_now().await {
                    Ok(outcome) => tracing::info!(?outcome, "\"Submit statistics now\" pressed"),
                    Err(e) => tracing::warn!(error = %e, "\"Submit statistics now\" failed"),
                },
                None => tracing::info!(
                    "\"Submit statistics now\" pressed, but submission is not configured (set submission.endpoint)"
                ),
            },
        }
        shared.state_changed.notify_one();
    }
}

/// Acknowledges messages in arrival order; an event only after its row is committed.
async fn acknowledge(shared: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<Ack>) {
    while let Some(Ack { publish, after }) = rx.recv().await {
        if let Some(pending) = after {
            match pending.committed().await {
                Ok(Inserted::New) => {
                    Metrics::incr(&shared.service.metrics().events_stored);
                    shared.state_changed.notify_one();
                }
                Ok(Inserted::Duplicate) => {
                    Metrics::incr(&shared.service.metrics().events_duplicate);
                }
                Err(e) => {
                    // Not acknowledged: the broker keeps it and redelivers it after a reconnect.
                    storage_failed(&shared, &e, &publish.topic);
                    continue;
                }
            }
            storage_works(&shared);
        }
        if let Err(e) = shared.client.ack(&publish).await {
            tracing::debug!(error = %e, "MQTT ack not queued");
        }
    }
}

/// Delays before asking the broker to redeliver after a failed write: 5 s, doubling while
/// writes keep failing, at most 5 min.
const REDELIVERY: Backoff = Backoff::new(Duration::from_secs(5), Duration::from_secs(300));

/// A write failed (disk full, I/O error): the event stays unacknowledged, so the broker keeps
/// it. Report the problem once, and schedule a reconnect — the broker redelivers unacknowledged
/// messages only on a new connection — with a growing delay while the store keeps failing.
fn storage_failed(shared: &Arc<Shared>, e: &Error, topic: &str) {
    let metrics = shared.service.metrics();
    Metrics::incr(&metrics.write_failures);
    if !metrics.storage_failing.swap(true, Ordering::Relaxed) {
        tracing::error!(error = %e, %topic, "cannot store events (is the disk full?); they stay with the MQTT broker and are fetched again once storing works");
        shared.state_changed.notify_one();
    } else {
        tracing::debug!(error = %e, %topic, "event not stored; left unacknowledged");
    }
    if shared.redelivery_pending.swap(true, Ordering::Relaxed) {
        return;
    }
    let delay = {
        let mut backoff = shared
            .redelivery_backoff
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let now = *backoff;
        *backoff = REDELIVERY.after(now);
        now
    };
    let shared = shared.clone();
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        shared.redelivery_pending.store(false, Ordering::Relaxed);
        let _ = shared.reconnect.send(());
    });
}

/// A write succeeded: clear the problem.
fn storage_works(shared: &Shared) {
    let metrics = shared.service.metrics();
    if metrics.storage_failing.swap(false, Ordering::Relaxed) {
        tracing::info!("storing events works again");
        *shared
            .redelivery_backoff
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = REDELIVERY.start;
        shared.state_changed.notify_one();
    }
}

/// Sends everything we publish (the only task besides the acknowledger that waits on rumqttc's
/// request channel; see the module docs).
async fn publisher(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut refresh = tokio::time::interval(STATE_REFRESH);
    refresh.tick().await;
    // Opt-in, opt-out and delete-all from elsewhere (the web page) show up in Home Assistant.
    let mut service_changes = shared.service.changes();
    // New data from the Printernizer bridge.
    let mut activity = shared.service.activity();
    loop {
        // Whether to wait a moment before publishing the state, so that changes close
        // together are published together.
        let debounce = tokio::select! {
            () = shared.connected.notified() => {
                shared.subscribe().await;
                shared.publish_all().await;
                continue;
            }
            () = shared.opt_in_handled.notified() => {
                // Home Assistant shows what the switch is now, even if nothing changed.
                shared.publish_opt_in_state().await;
                continue;
            }
            changed = activity.changed() => {
                if changed.is_err() {
                    break;
                }
                true
            }
            () = shared.state_changed.notified() => true,
            changed = service_changes.changed() => {
                if changed.is_err() {
                    break;
                }
                shared.publish_opt_in_state().await;
                false
            }
            _ = refresh.tick() => false,
            _ = stop.changed() => break,
        };
        if debounce {
            tokio::select! {
                () = tokio::time::sleep(STATE_DEBOUNCE) => {}
                _ = stop.changed() => break,
            }
        }
        shared.publish_state().await;
    }
    shared.stopping.store(true, Ordering::Relaxed);
    shared
        .publish(shared.topics.availability(), true, "offline")
        .await;
    if let Err(e) = shared.client.disconnect().await {
        tracing::debug!(error = %e, "MQTT disconnect not queued");
    }
}

fn reject(shared: &Shared, topic: &str, reason: &dyn std::fmt::Display) {
    Metrics::incr(&shared.service.metrics().rejected_messages);
    tracing::warn!(%topic, %reason, "MQTT message rejected");
    shared.state_changed.notify_one();
}

/// Handles one incoming message. Waits only for the store's writer and the command task —
/// never for rumqttc (see the module docs).
async fn route(
    shared: &Arc<Shared>,
    mut publish: Publish,
    acks: &mpsc::UnboundedSender<Ack>,
    commands: &mpsc::Sender<Command>,
) {
    let topic = publish.topic.clone();
    let mut after = None;
    if let Some(name) = topic.strip_prefix(&shared.topics.events_prefix()) {
        match map_event(name, &publish.payload) {
            Ok(Mapped::Event(raw)) => match shared.service.enqueue(&raw).await {
                Ok((_, pending)) => after = Some(pending),
                Err(Error::Rejected(reason)) => {
                    // The service already counted it.
                    tracing::warn!(%topic, %reason, "MQTT event rejected");
                    shared.state_changed.notify_one();
                }
                Err(e) => {
                    tracing::error!(error = %e, %topic, "cannot queue the event; leaving it unacknowledged");
                    return;
                }
            },
            Ok(Mapped::Ignored) => {
                Metrics::incr(&shared.service.metrics().ignored_messages);
                tracing::debug!(%topic, "event name not recorded; ignored");
            }
            Err(reason) => reject(shared, &topic, &reason),
        }
    } else if topic == shared.topics.printernizer_status() {
        printernizer_status(shared, &publish.payload).await;
    } else if topic == shared.topics.ha_status() {
        // One republish at a time, however many `online`s arrive meanwhile.
        if publish.payload.as_ref() == b"online"
            && !shared.birth_pending.swap(true, Ordering::Relaxed)
        {
            let shared = shared.clone();
            let max_ms = shared.birth_delay_max.as_millis().max(1000) as u64;
            let delay = Duration::from_millis(rand::rng().random_range(1000..=max_ms));
            tracing::info!(
                delay_ms = delay.as_millis() as u64,
                "Home Assistant came online; republishing discovery"
            );
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                shared.birth_pending.store(false, Ordering::Relaxed);
                // Not after the publisher's `offline`: the broker would keep `online`.
                if !shared.stopping.load(Ordering::Relaxed) {
                    shared.publish_all().await;
                }
            });
        }
    } else if topic == shared.topics.opt_in_set() {
        match publish.payload.as_ref() {
            b"ON" => command(shared, commands, Command::OptIn(true)).await,
            b"OFF" => command(shared, commands, Command::OptIn(false)).await,
            _ => {
                reject(shared, &topic, &"expected ON or OFF");
                shared.opt_in_handled.notify_one();
            }
        }
    } else if topic == shared.topics.submit_now() {
        command(shared, commands, Command::SubmitNow).await;
    }
    // Acknowledged once queued (events: once committed, by the acknowledger). Home Assistant
    // sends commands with QoS 0, so a command is never more durable than this anyway.
    if publish.qos == QoS::AtMostOnce && after.is_none() {
        // Nothing to acknowledge and nothing to count: queueing it would only let a flood of
        // ignored or rejected QoS 0 messages pile up behind an event waiting for its commit.
        return;
    }
    publish.payload = Default::default();
    let _ = acks.send(Ack { publish, after });
}

/// Queues a command for the command task (waits while it has [`COMMAND_CAPACITY`] queued).
async fn command(shared: &Shared, commands: &mpsc::Sender<Command>, command: Command) {
    if commands.send(command).await.is_err() && !shared.stopping.load(Ordering::Relaxed) {
        tracing::warn!(?command, "the command task has stopped; command dropped");
    }
}

async fn printernizer_status(shared: &Shared, payload: &[u8]) {
    let online = match payload.trim_ascii() {
        b"online" => true,
        b"offline" => false,
        _ => {
            reject(
                shared,
                &shared.topics.printernizer_status(),
                &"expected online or offline",
            );
            return;
        }
    };
    if let Err(e) = shared.service.printernizer_availability(online, None).await {
        tracing::warn!(error = %e, "cannot record Printernizer's availability");
    }
    shared.state_changed.notify_one();
}
