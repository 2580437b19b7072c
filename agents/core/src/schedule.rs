//! When to poll next: the configured interval with jitter, or an exponential back-off
//! after failures, so that a fleet does not poll in lockstep nor hammer a sick endpoint.
//!
//! The arithmetic is the agents' one back-off (`kowabunga-backoff`):
//! this module only adds the steady interval.

use std::time::Duration;

use kowabunga_backoff::Backoff;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    /// Time between two polls when all is well.
    pub interval: Duration,
    /// First delay after a failure; doubled by each further failure.
    pub backoff_min: Duration,
    /// Longest delay after failures.
    pub backoff_max: Duration,
    /// Each delay is spread by up to this fraction either way (0.1 = ±10 %).
    pub jitter: f64,
}

impl Schedule {
    /// Poll every `interval`; after failures back off from 5 s up to `interval` (at
    /// least 5 min); ±10 % jitter.
    pub fn with_interval(interval: Duration) -> Self {
        Self {
            interval,
            backoff_min: Duration::from_secs(5),
            backoff_max: interval.max(Duration::from_secs(300)),
            jitter: 0.1,
        }
    }

    fn backoff(&self) -> Backoff {
        Backoff::new(self.backoff_min, self.backoff_max).with_spread(self.jitter)
    }

    /// The delay before the next poll after `failures` consecutive failures, before
    /// jitter.
    pub fn base_delay(&self, failures: u32) -> Duration {
        if failures == 0 {
            return self.interval;
        }
        self.backoff().base_delay(failures)
    }

    /// The delay before the next poll, with jitter drawn from `unit` in [0, 1).
    pub fn delay(&self, failures: u32, unit: f64) -> Duration {
        self.backoff().jittered(self.base_delay(failures), unit)
    }

    /// [`Self::delay`] with a random jitter.
    pub fn next_delay(&self, failures: u32) -> Duration {
        self.delay(failures, Backoff::random_unit())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let s = Schedule::with_interval(Duration::from_secs(60));
        let secs: Vec<u64> = (0..9).map(|f| s.base_delay(f).as_secs()).collect();
        assert_eq!(secs, [60, 5, 10, 20, 40, 80, 160, 300, 300]);
        assert_eq!(s.base_delay(u32::MAX), Duration::from_secs(300));
        // A long interval caps the back-off too.
        let daily = Schedule::with_interval(Duration::from_secs(86_400));
        assert_eq!(daily.base_delay(30), Duration::from_secs(86_400));
    }

    #[test]
    fn jitter_stays_within_its_fraction() {
        let s = Schedule::with_interval(Duration::from_secs(100));
        assert_eq!(s.delay(0, 0.0), Duration::from_secs(90));
        assert_eq!(s.delay(0, 0.5), Duration::from_secs(100));
        assert!(s.delay(0, 0.999_999) < Duration::from_secs(110));
        assert_eq!(s.delay(2, 0.0), Duration::from_secs(9));
        assert_eq!(s.delay(2, 0.75), Duration::from_millis(10_500));
    }

    #[test]
    fn random_delays_use_the_same_bounds() {
        let s = Schedule::with_interval(Duration::from_secs(100));
        for _ in 0..1000 {
            let d = s.next_delay(0).as_secs_f64();
            assert!((90.0..110.0).contains(&d), "{d}");
        }
    }
}
