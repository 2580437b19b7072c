//! Reconnect delays: exponential, capped, with jitter so that a fleet of agents does
//! not reconnect to a restarted Kahuna in lockstep.

use std::time::Duration;

/// Delays `min, 2·min, 4·min, ... max`, each drawn uniformly from `[d/2, d]`.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Self {
        let min = min.max(Duration::from_millis(1));
        let max = max.max(min);
        Self {
            min,
            max,
            next: min,
        }
    }

    /// The delay before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        let half = d / 2;
        let spread = u64::try_from((d - half).as_micros()).unwrap_or(u64::MAX);
        half + Duration::from_micros(fastrand::u64(0..=spread))
    }

    /// Back to the shortest delay (after a connection that held).
    pub fn reset(&mut self) {
        self.next = self.min;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_caps_jitters_and_resets() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
        let bounds = [1u64, 2, 4, 8, 16, 30, 30];
        for hi in bounds {
            let d = b.next_delay();
            let hi = Duration::from_secs(hi);
            assert!(
                d >= hi / 2 && d <= hi,
                "{d:?} not in [{:?}, {hi:?}]",
                hi / 2
            );
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_secs(1));
        // Jitter: 50 draws of the same step are not all equal.
        let draws: std::collections::HashSet<_> = (0..50)
            .map(|_| {
                let mut b = Backoff::new(Duration::from_secs(8), Duration::from_secs(8));
                b.next_delay()
            })
            .collect();
        assert!(draws.len() > 1);
    }
}
