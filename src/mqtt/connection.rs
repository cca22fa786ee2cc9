//! The task that drives rumqttc's event loop.
//!
//! It only polls and forwards: incoming publishes go to the handler's router over a bounded
//! channel ([`INBOUND_CAPACITY`]), and each ConnAck wakes the publisher (resubscribe,
//! republish). It never publishes itself.
//!
//! **Backpressure.** When the router falls behind (the writer is busy), this loop waits for
//! room instead of buffering: it stops reading the socket, and TCP holds the broker back. QoS 1
//! traffic was bounded anyway by the broker's in-flight window, since we acknowledge only after
//! commit; a QoS 0 flood was not — 1M messages grew `run` from 14 to 272 MiB (≈ 260 B per
//! queued message) while this channel was unbounded.
//!
//! **No deadlock.** While this loop waits, nobody drains rumqttc's request channel, so every
//! task that sends a request (the acknowledger, the publisher) may wait on this loop. The
//! router — the only task this loop waits for — therefore never sends a request and never
//! waits for a task that does: it waits only for the store's writer and for the command task,
//! and neither of those touches MQTT (see `handler`). A first version let the router publish
//! (the opt-in echo, the republish after a ConnAck) and hung `run` once in CI.
//! While this loop waits it also sends no keep-alive; a router stalled for longer than the
//! keep-alive (30 s; the writer's busy timeout is 5 s) costs a reconnect, and the broker
//! redelivers what was not acknowledged.

use std::time::Duration;

use std::sync::Arc;

use rumqttc::{
    ConnectionError, Event, EventLoop, Incoming, Outgoing, Publish, StateError, mqttbytes,
};
use tokio::sync::{Notify, mpsc, watch};

use super::{MAX_PACKET_BYTES, MAX_POISON_BYTES};
use crate::backoff::{Backoff, jitter};

/// Messages between this loop and the router.
pub(crate) const INBOUND_CAPACITY: usize = 256;

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

/// Whether a change seen on `stop` means: stop.
fn stop_requested(
    changed: Result<(), watch::error::RecvError>,
    stop: &watch::Receiver<bool>,
) -> bool {
    changed.is_err() || *stop.borrow()
}

/// Drives the event loop until stopped. `connected` is notified on every ConnAck.
pub(crate) async fn run(
    mut eventloop: EventLoop,
    tx: mpsc::Sender<Publish>,
    connected: Arc<Notify>,
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
                if stop_requested(changed, &stop) {
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
                connected.notify_one();
            }
            Ok(Event::Incoming(Incoming::Publish(publish))) => {
                if stopping {
                    // Not acknowledged: the broker keeps it (QoS 1) for the next start.
                    continue;
                }
                // Waits while the router is behind (see the module docs).
                let permit = loop {
                    tokio::select! {
                        // An error means the router has stopped; it only does when stopping.
                        permit = tx.reserve() => break permit.ok(),
                        changed = stop.changed() => {
                            if stop_requested(changed, &stop) {
                                stopping = true;
                                deadline = tokio::time::Instant::now() + Duration::from_secs(3);
                                break None;
                            }
                        }
                    }
                };
                if let Some(permit) = permit {
                    permit.send(publish);
                }
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
