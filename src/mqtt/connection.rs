//! The task that drives rumqttc's event loop.
//!
//! It only polls and forwards: incoming publishes and connection changes go to the handler over
//! an unbounded channel (QoS 1 traffic is bounded by the broker's in-flight window, since we
//! acknowledge only after commit). It never publishes itself.

use std::time::Duration;

use rumqttc::{
    ConnectionError, Event, EventLoop, Incoming, Outgoing, Publish, StateError, mqttbytes,
};
use tokio::sync::{mpsc, watch};

use super::{MAX_PACKET_BYTES, MAX_POISON_BYTES};
use crate::backoff::{Backoff, jitter};

/// What the connection tells the handler.
#[derive(Debug)]
pub(crate) enum Inbound {
    /// A ConnAck arrived: (re)subscribe and republish.
    Connected,
    /// A message arrived.
    Publish(Publish),
}

/// Reconnect delays: 0.5 s doubling to 60 s, each with jitter.
const BACKOFF: Backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(60));

/// The size of an incoming packet that exceeded our limit, if that is what `e` is.
fn oversized(e: &ConnectionError) -> Option<usize> {
    match e {
        ConnectionError::MqttState(StateError::Deserialization(
            mqttbytes::Error::PayloadSizeLimitExceeded(size),
        )) => Some(*size),
        _ => None,
    }
}

pub(crate) async fn run(
    mut eventloop: EventLoop,
    tx: mpsc::UnboundedSender<Inbound>,
    mut stop: watch::Receiver<bool>,
    mut reconnect: mpsc::UnboundedReceiver<()>,
) {
    let mut backoff = BACKOFF.start;
    let mut raised = false;
    let mut stopping = false;
    let mut deadline = tokio::time::Instant::now() + Duration::from_secs(3600 * 24 * 365);
    loop {
        let event = tokio::select! {
            event = eventloop.poll() => event,
            Some(()) = reconnect.recv(), if !stopping => {
                // The broker resends unacknowledged messages only on a new connection.
                tracing::warn!("reconnecting to MQTT so the broker redelivers events that could not be stored");
                eventloop.clean();
                continue;
            }
            changed = stop.changed(), if !stopping => {
                if changed.is_err() || *stop.borrow() {
                    // Keep polling so that the handler's `offline` and DISCONNECT go out.
                    stopping = true;
                    deadline = tokio::time::Instant::now() + Duration::from_secs(3);
                }
                continue;
            }
            () = tokio::time::sleep_until(deadline), if stopping => {
                tracing::debug!("MQTT disconnect did not complete in time");
                return;
            }
        };
        match event {
            Ok(Event::Incoming(Incoming::ConnAck(ack))) => {
                backoff = BACKOFF.start;
                tracing::info!(
                    session_present = ack.session_present,
                    "connected to MQTT broker"
                );
                let _ = tx.send(Inbound::Connected);
            }
            Ok(Event::Incoming(Incoming::Publish(publish))) => {
                let _ = tx.send(Inbound::Publish(publish));
            }
            Ok(Event::Outgoing(Outgoing::Disconnect)) if stopping => {
                tracing::debug!("MQTT disconnected cleanly");
                return;
            }
            Ok(_) => {}
            Err(e) if stopping => {
                tracing::debug!(error = %e, "MQTT connection closed while stopping");
                return;
            }
            Err(e) => {
                if let Some(size) = oversized(&e).filter(|s| *s <= MAX_POISON_BYTES) {
                    // A persistent session would redeliver this message forever and every
                    // delivery would break the connection. Read it once with a raised limit;
                    // the handler rejects it (too large) and acknowledges it.
                    tracing::warn!(
                        bytes = size,
                        limit = MAX_PACKET_BYTES,
                        "an MQTT message exceeds the packet limit; reconnecting once with a raised limit to reject it"
                    );
                    eventloop
                        .mqtt_options
                        .set_max_packet_size(size + 1024, MAX_PACKET_BYTES);
                    raised = true;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                if raised {
                    eventloop
                        .mqtt_options
                        .set_max_packet_size(MAX_PACKET_BYTES, MAX_PACKET_BYTES);
                    raised = false;
                }
                let delay = jitter(backoff);
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "MQTT connection lost; reconnecting");
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    _ = stop.changed() => {
                        return;
                    }
                }
                backoff = BACKOFF.after(backoff);
            }
        }
    }
}
