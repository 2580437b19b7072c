//! Retry delays: a capped exponential back-off, spread by jitter so that a fleet of
//! agents does not retry (or poll) in lockstep.
//!
//! - [`Exponential`]: the delay after `n` consecutive failures, before jitter:
//!   `min, 2·min, 4·min, ...` capped at `max`.
//! - [`Jitter`]: how a delay is spread by a random unit in `[0, 1)`.
//! - [`Backoff`]: both, with the failure count, for a retry loop (the RPC's reconnect).
//!
//! Every random draw goes through a `*_with(unit)` function, so tests pass their own
//! unit and assert exact delays; the other functions draw the unit with [`unit`].

use std::time::Duration;

/// A random unit in `[0, 1)`, for [`Jitter::apply`].
pub fn unit() -> f64 {
    fastrand::f64()
}

/// Capped exponential growth: `min` after the first failure, doubled by each further
/// failure, never above `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exponential {
    min: Duration,
    max: Duration,
}

impl Exponential {
    /// `min` is at least 1 ms, `max` at least `min`.
    pub fn new(min: Duration, max: Duration) -> Self {
        let min = min.max(Duration::from_millis(1));
        Self {
            min,
            max: max.max(min),
        }
    }

    pub fn min(&self) -> Duration {
        self.min
    }

    pub fn max(&self) -> Duration {
        self.max
    }

    /// The delay after `failures` consecutive failures (`0` counts as the first):
    /// `min · 2^(failures-1)`, at most `max`. Saturates instead of overflowing.
    pub fn delay(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(31);
        self.min.saturating_mul(1u32 << doublings).min(self.max)
    }
}

/// How a delay `d` is spread by a unit `u` in `[0, 1)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Jitter {
    /// No spread: `d`.
    None,
    /// `d` spread by up to this fraction either way, keeping the mean:
    /// `d · (1 + f·(2u - 1))`, in `[d·(1-f), d·(1+f))`. For a poll interval.
    Spread(f64),
    /// "Equal jitter": `d/2 + u · d/2`, in `[d/2, d)`. Never longer than `d`, never
    /// shorter than half of it. For reconnects.
    Equal,
}

impl Jitter {
    /// The jittered delay. A unit outside `[0, 1]` is clamped into it; the result is
    /// never negative.
    pub fn apply(self, d: Duration, unit: f64) -> Duration {
        let u = if unit.is_nan() {
            0.0
        } else {
            unit.clamp(0.0, 1.0)
        };
        match self {
            Self::None => d,
            Self::Spread(fraction) => {
                let fraction = if fraction.is_nan() {
                    0.0
                } else {
                    fraction.clamp(0.0, 1.0)
                };
                d.mul_f64(1.0 + fraction * (2.0 * u - 1.0))
            }
            Self::Equal => {
                let half = d / 2;
                half + (d - half).mul_f64(u)
            }
        }
    }
}

/// A retry loop's back-off: counts failures, grows [`Exponential`]ly, jittered.
#[derive(Debug, Clone, PartialEq)]
pub struct Backoff {
    growth: Exponential,
    jitter: Jitter,
    failures: u32,
}

impl Backoff {
    /// Delays `min, 2·min, 4·min, ... max`, each drawn from `[d/2, d)` ([`Jitter::Equal`]).
    pub fn new(min: Duration, max: Duration) -> Self {
        Self {
            growth: Exponential::new(min, max),
            jitter: Jitter::Equal,
            failures: 0,
        }
    }

    /// The same growth with another jitter.
    pub fn with_jitter(mut self, jitter: Jitter) -> Self {
        self.jitter = jitter;
        self
    }

    /// The same growth, spread by up to `fraction` either way ([`Jitter::Spread`]).
    pub fn with_spread(self, fraction: f64) -> Self {
        self.with_jitter(Jitter::Spread(fraction))
    }

    /// The delay after `failures` consecutive failures, before jitter (stateless; see
    /// [`Exponential::delay`]).
    pub fn base_delay(&self, failures: u32) -> Duration {
        self.growth.delay(failures)
    }

    /// `d` spread by this back-off's jitter, with `unit` in `[0, 1)` (stateless).
    pub fn jittered(&self, d: Duration, unit: f64) -> Duration {
        self.jitter.apply(d, unit)
    }

    /// A random unit in `[0, 1)` (the same as [`unit`], for users of this type alone).
    pub fn random_unit() -> f64 {
        unit()
    }

    /// The delay before the next attempt, with a random jitter; counts one failure.
    pub fn next_delay(&mut self) -> Duration {
        self.next_delay_with(unit())
    }

    /// [`Self::next_delay`] with the jitter drawn from `unit` in `[0, 1)`.
    pub fn next_delay_with(&mut self, unit: f64) -> Duration {
        self.failures = self.failures.saturating_add(1);
        self.jitter.apply(self.growth.delay(self.failures), unit)
    }

    /// Failures counted since the last [`Self::reset`].
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Back to the shortest delay (after an attempt that succeeded, or a connection that
    /// held).
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn exponential_doubles_up_to_the_cap() {
        let e = Exponential::new(S(5), S(300));
        let secs: Vec<u64> = (0..9).map(|f| e.delay(f).as_secs()).collect();
        assert_eq!(secs, [5, 5, 10, 20, 40, 80, 160, 300, 300]);
        assert_eq!(e.delay(u32::MAX), S(300));
        // Saturates rather than overflowing, even with a huge cap.
        let huge = Exponential::new(S(1), Duration::MAX);
        assert_eq!(huge.delay(40), S(1 << 31));
    }

    #[test]
    fn exponential_bounds_are_sane() {
        let e = Exponential::new(Duration::ZERO, Duration::ZERO);
        assert_eq!(
            (e.min(), e.max()),
            (Duration::from_millis(1), Duration::from_millis(1))
        );
        let e = Exponential::new(S(10), S(1));
        assert_eq!((e.min(), e.max()), (S(10), S(10)));
    }

    #[test]
    fn spread_jitter_keeps_the_mean_within_its_fraction() {
        let j = Jitter::Spread(0.1);
        assert_eq!(j.apply(S(100), 0.0), S(90));
        assert_eq!(j.apply(S(100), 0.5), S(100));
        assert_eq!(j.apply(S(100), 0.75), S(105));
        assert!(j.apply(S(100), 0.999_999) < S(110));
        assert_eq!(Jitter::Spread(2.0).apply(S(100), 0.0), Duration::ZERO);
    }

    #[test]
    fn equal_jitter_stays_in_the_upper_half() {
        assert_eq!(Jitter::Equal.apply(S(8), 0.0), S(4));
        assert_eq!(Jitter::Equal.apply(S(8), 0.5), S(6));
        assert!(Jitter::Equal.apply(S(8), 0.999_999) < S(8));
        assert_eq!(Jitter::None.apply(S(8), 0.3), S(8));
    }

    #[test]
    fn units_outside_zero_one_are_clamped() {
        assert_eq!(Jitter::Equal.apply(S(8), -1.0), S(4));
        assert_eq!(Jitter::Equal.apply(S(8), 7.0), S(8));
        assert_eq!(Jitter::Equal.apply(S(8), f64::NAN), S(4));
        assert_eq!(Jitter::Spread(0.1).apply(S(100), 2.0), S(110));
    }

    #[test]
    fn backoff_grows_caps_and_resets() {
        let mut b = Backoff::new(S(1), S(30));
        // The top of each step (unit → 1) and the bottom (unit 0).
        let tops: Vec<Duration> = (0..7).map(|_| b.next_delay_with(1.0)).collect();
        assert_eq!(tops, [S(1), S(2), S(4), S(8), S(16), S(30), S(30)]);
        assert_eq!(b.failures(), 7);
        b.reset();
        assert_eq!(b.failures(), 0);
        assert_eq!(b.next_delay_with(0.0), Duration::from_millis(500));
        assert_eq!(b.next_delay_with(0.0), S(1));
    }

    #[test]
    fn stateless_parts_match_the_stateful_loop() {
        let b = Backoff::new(S(5), S(300)).with_spread(0.1);
        assert_eq!(b.base_delay(3), S(20));
        assert_eq!(b.jittered(S(100), 0.0), S(90));
        let mut looping = b.clone();
        looping.next_delay_with(0.3);
        looping.next_delay_with(0.3);
        assert_eq!(
            looping.next_delay_with(0.3),
            b.jittered(b.base_delay(3), 0.3)
        );
        assert!((0.0..1.0).contains(&Backoff::random_unit()));
    }

    #[test]
    fn backoff_jitter_is_configurable() {
        let mut b = Backoff::new(S(10), S(10)).with_jitter(Jitter::None);
        assert_eq!(b.next_delay_with(0.0), S(10));
        let mut b = Backoff::new(S(10), S(10)).with_jitter(Jitter::Spread(0.5));
        assert_eq!(b.next_delay_with(0.0), S(5));
    }

    #[test]
    fn random_units_are_in_range() {
        for _ in 0..1000 {
            let u = unit();
            assert!((0.0..1.0).contains(&u), "{u}");
        }
        let mut b = Backoff::new(S(8), S(8));
        for _ in 0..100 {
            let d = b.next_delay();
            assert!(d >= S(4) && d <= S(8), "{d:?}");
        }
    }
}
