//! MQTT: ingest of Printernizer's events and Home Assistant discovery (rumqttc, MQTT 3.1.1).
//!
//! Tasks (all on the tokio runtime):
//! * [`connection`] drives rumqttc's event loop and nothing else — it never awaits a publish
//!   (that can deadlock rumqttc's bounded request channel). It reconnects with capped,
//!   jittered exponential backoff and gets past oversized ("poison") messages.
//!   It waits for the router when the router is behind (TCP then holds the broker back).
//! * [`handler`]: a router sends events, sanitized, to the store and Home Assistant's commands
//!   to a command task; the broker is acknowledged (manual acks, in arrival order) only after
//!   the row is committed. A publisher resubscribes and republishes availability, discovery
//!   and state on every ConnAck, and sends the retained `<base>/state` JSON on change
//!   (debounced to 1 s) and every 5 minutes (rolling windows move). Which task may wait for
//!   which is what keeps this free of deadlocks: see [`connection`].
//!
//! The session is persistent (`clean_session = false`, stable client id), so QoS 1 events
//! published while the service is down are delivered when it comes back — up to the broker's
//! queue limit (mosquitto: `max_queued_messages`, default 1000). See `docs/mqtt.md`.

mod connection;
pub mod discovery;
mod handler;
pub mod ingest;
pub mod state;
pub mod supervisor;
pub mod topics;

use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, LastWill, MqttOptions, QoS, TlsConfiguration, Transport};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::{MqttSettings, Settings};
use crate::i18n::Catalog;
use crate::service::StatsService;
use crate::{Error, Result};
pub use topics::Topics;

/// Largest packet we accept normally. Event payloads over 64 KiB are rejected anyway; this
/// leaves room for retained discovery payloads and for wrapping.
pub const MAX_PACKET_BYTES: usize = 256 * 1024;
/// The most we will raise the limit to, once, to read and reject an oversized message.
pub const MAX_POISON_BYTES: usize = 256 * 1024 * 1024;
/// The system CA bundle used for TLS when `mqtt.ca_file` is not set.
pub const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Where and how to connect.
#[derive(Clone)]
pub struct BrokerConfig {
    /// Host.
    pub host: String,
    /// Port.
    pub port: u16,
    /// User name and password.
    pub credentials: Option<(String, String)>,
    /// PEM CA bundle when TLS is on.
    pub tls_ca: Option<Vec<u8>>,
    /// Stable client id.
    pub client_id: String,
}

impl std::fmt::Debug for BrokerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.credentials.as_ref().map(|c| &c.0))
            .field("tls", &self.tls_ca.is_some())
            .field("client_id", &self.client_id)
            .finish()
    }
}

/// Resolves the broker: explicit `mqtt.host`, else (add-on mode) the Supervisor's MQTT service,
/// else `127.0.0.1`.
pub async fn resolve_broker(
    mqtt: &MqttSettings,
    supervisor: Option<&crate::deployment::Supervisor>,
    default_client_id: String,
) -> Result<BrokerConfig> {
    let mut host = mqtt.host.clone().filter(|h| !h.trim().is_empty());
    let mut port = mqtt.port;
    let mut tls = mqtt.tls;
    let mut credentials = mqtt.username.clone().filter(|u| !u.is_empty()).map(|u| {
        let password = mqtt.password.as_ref().map(|p| p.expose().to_owned());
        (u, password.unwrap_or_default())
    });
    if host.is_none()
        && let Some(sv) = supervisor
    {
        let service = supervisor::wait_for(&sv.url, &sv.token).await;
        tracing::info!(host = %service.host, port = service.port, "using the MQTT broker from the Supervisor");
        host = Some(service.host);
        port = port.or(Some(service.port));
        tls = tls || service.ssl;
        if credentials.is_none() {
            credentials = service
                .username
                .map(|u| (u, service.password.unwrap_or_default()));
        }
    }
    let tls_ca = if tls {
        let path = mqtt
            .ca_file
            .clone()
            .unwrap_or_else(|| SYSTEM_CA_BUNDLE.into());
        Some(std::fs::read(&path).map_err(|e| {
            Error::Config(format!(
                "`mqtt.ca_file`: cannot read {} ({e}); set mqtt.ca_file or install ca-certificates",
                path.display()
            ))
        })?)
    } else {
        None
    };
    Ok(BrokerConfig {
        host: host.unwrap_or_else(|| "127.0.0.1".into()),
        port: port.unwrap_or(if tls { 8883 } else { 1883 }),
        credentials,
        tls_ca,
        client_id: mqtt
            .client_id
            .clone()
            .filter(|c| !c.is_empty())
            .unwrap_or(default_client_id),
    })
}

/// rumqttc options for our persistent, manually acknowledged session.
pub fn mqtt_options(broker: &BrokerConfig, topics: &Topics) -> MqttOptions {
    let mut opts = MqttOptions::new(&broker.client_id, &broker.host, broker.port);
    opts.set_keep_alive(Duration::from_secs(30))
        .set_clean_session(false)
        .set_manual_acks(true)
        .set_max_packet_size(MAX_PACKET_BYTES, MAX_PACKET_BYTES)
        .set_request_channel_capacity(1024)
        .set_last_will(LastWill::new(
            topics.availability(),
            "offline",
            QoS::AtLeastOnce,
            true,
        ));
    if let Some((user, password)) = &broker.credentials {
        opts.set_credentials(user, password);
    }
    if let Some(ca) = &broker.tls_ca {
        opts.set_transport(Transport::tls_with_config(TlsConfiguration::Simple {
            ca: ca.clone(),
            alpn: None,
            client_auth: None,
        }));
    }
    opts
}

/// A running MQTT side.
#[derive(Debug)]
pub struct MqttHandle {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl MqttHandle {
    /// Publishes `offline`, disconnects cleanly and waits (at most a few seconds) for the tasks.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            if tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .is_err()
            {
                tracing::warn!("an MQTT task did not stop in time");
            }
        }
    }
}

/// Starts the MQTT tasks.
pub fn spawn(
    service: StatsService,
    settings: &Settings,
    broker: &BrokerConfig,
    submitter: Option<crate::submission::Submitter>,
    configuration_url: Option<String>,
) -> MqttHandle {
    let topics = Topics::new(&settings.mqtt);
    let opts = mqtt_options(broker, &topics);
    let (client, eventloop) = AsyncClient::new(opts, 1024);
    let (stop, stop_rx) = watch::channel(false);
    let (inbound_tx, inbound_rx) = tokio::sync::mpsc::channel(connection::INBOUND_CAPACITY);
    let (reconnect_tx, reconnect_rx) = tokio::sync::mpsc::unbounded_channel();
    tracing::info!(broker = %format!("{}:{}", broker.host, broker.port), client_id = %broker.client_id, "connecting to MQTT");
    let mut shared = handler::Shared::new(
        service,
        client,
        topics,
        Catalog::new(settings.language),
        settings.mqtt.birth_delay_max(),
        submitter,
        reconnect_tx,
    );
    shared.configuration_url = configuration_url;
    let shared = Arc::new(shared);
    let conn = tokio::spawn(connection::run(
        eventloop,
        inbound_tx,
        shared.connected.clone(),
        stop_rx.clone(),
        reconnect_rx,
    ));
    let tasks = handler::spawn(shared, inbound_rx, stop_rx);
    let mut all = vec![conn];
    all.extend(tasks);
    MqttHandle { stop, tasks: all }
}
