//! Exponential backoff: the one rule every retry loop of the service follows — a start delay
//! that doubles per failure up to a cap, optionally with jitter (a random 50–100 % of it) so
//! that a fleet of installations does not retry in step.
//!
//! | who | start → cap | jitter |
//! |---|---|---|
//! | report delivery (`submission`) | 1 min → 6 h | yes |
//! | MQTT reconnect (`mqtt::connection`) | 0.5 s → 60 s | yes |
//! | redelivery after a failed store (`mqtt::handler`) | 5 s → 5 min | no |
//! | the Supervisor's broker lookup (`mqtt::supervisor`) | 1 s → 60 s | no |
//! | the Printernizer bridge's polls (`bridge`) | poll interval → 5 min | no |

use std::time::Duration;

use rand::Rng;

/// `start`, doubling per failure, at most `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The first delay.
    pub start: Duration,
    /// The longest delay.
    pub max: Duration,
}

impl Backoff {
    /// A backoff from `start` to `max`.
    pub const fn new(start: Duration, max: Duration) -> Self {
        Self { start, max }
    }

    /// The delay before retry number `retry` (0 → `start`, 1 → twice that …), at most `max`.
    pub fn delay(&self, retry: u32) -> Duration {
        let factor = 1u32 << retry.min(31);
        self.start
            .checked_mul(factor)
            .unwrap_or(self.max)
            .min(self.max)
    }

    /// The delay after `current`: twice it, at most `max`.
    pub fn after(&self, current: Duration) -> Duration {
        current.saturating_mul(2).min(self.max)
    }

    /// `delay` with jitter: a random 50–100 % of it.
    pub fn jittered(&self, retry: u32) -> Duration {
        jitter(self.delay(retry))
    }
}

/// A random 50–100 % of `d` (at least 1 ms).
pub fn jitter(d: Duration) -> Duration {
    let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1);
    Duration::from_millis(rand::rng().random_range(ms / 2..=ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap() {
        let b = Backoff::new(Duration::from_secs(60), Duration::from_secs(6 * 3600));
        let mins: Vec<u64> = (0..11).map(|n| b.delay(n).as_secs() / 60).collect();
        assert_eq!(mins, [1, 2, 4, 8, 16, 32, 64, 128, 256, 360, 360]);
        assert_eq!(b.delay(u32::MAX), b.max);
        assert_eq!(b.after(Duration::from_secs(200 * 60)), b.max);
        assert_eq!(b.after(Duration::from_secs(60)), Duration::from_secs(120));
        for n in 0..20 {
            let j = b.jittered(n);
            assert!(j <= b.delay(n) && j >= b.delay(n) / 2, "{n}: {j:?}");
        }
    }
}
