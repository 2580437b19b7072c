//! Reconnect delays: the agents' one back-off (`kowabunga-backoff`), exponential from
//! `Options::backoff_min` to `backoff_max` with equal jitter (each delay drawn from
//! `[d/2, d)`), so that a fleet of agents does not reconnect to a restarted Kahuna in
//! lockstep. Re-exported as `kowabunga_rpc::Backoff`.

pub use kowabunga_backoff::Backoff;

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn reconnect_delays_grow_cap_jitter_and_reset() {
        let s = Duration::from_secs;
        let mut b = Backoff::new(s(1), s(30));
        let lows: Vec<Duration> = (0..7).map(|_| b.next_delay_with(0.0)).collect();
        let halves = [500, 1000, 2000, 4000, 8000, 15_000, 15_000].map(Duration::from_millis);
        assert_eq!(lows, halves);
        b.reset();
        let first = b.next_delay_with(0.999);
        assert!(
            first > Duration::from_millis(990) && first < s(1),
            "{first:?}"
        );
    }
}
