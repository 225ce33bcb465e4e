//! Reconnect delays: exponential (x2 per attempt), capped, then jittered by
//! a factor in [0.75, 1.25] so peers that lost each other at once do not
//! redial in lock-step. The randomness comes from the caller.

use std::time::Duration;

/// Default `(initial, max)` delays.
pub const DEFAULT: (Duration, Duration) = (Duration::from_millis(500), Duration::from_secs(10));

/// The delay schedule for redialling one peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    attempts: u32,
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff::new(DEFAULT.0, DEFAULT.1)
    }
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff {
            initial,
            max,
            attempts: 0,
        }
    }

    /// The delay before the next attempt, counting it. `jitter` is a random
    /// number in [0, 1) (out-of-range or NaN input is clamped; NaN means no
    /// jitter) mapped to a factor in [0.75, 1.25].
    pub fn next_delay(&mut self, jitter: f64) -> Duration {
        let base = 2u32
            .checked_pow(self.attempts)
            .and_then(|m| self.initial.checked_mul(m))
            .map_or(self.max, |d| d.min(self.max));
        self.attempts = self.attempts.saturating_add(1);
        let j = if jitter.is_nan() {
            0.5
        } else {
            jitter.clamp(0.0, 1.0)
        };
        let factor = 0.75 + 0.5 * j;
        Duration::try_from_secs_f64(base.as_secs_f64() * factor).unwrap_or(Duration::MAX)
    }

    /// Back to the initial delay (after a connection succeeded).
    pub fn reset(&mut self) {
        self.attempts = 0;
    }

    /// Attempts counted since the last reset.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn doubles_up_to_the_cap() {
        let mut b = Backoff::new(DEFAULT.0, DEFAULT.1);
        let got: Vec<Duration> = (0..8).map(|_| b.next_delay(0.5)).collect();
        assert_eq!(
            got,
            vec![
                ms(500),
                ms(1000),
                ms(2000),
                ms(4000),
                ms(8000),
                ms(10_000),
                ms(10_000),
                ms(10_000)
            ]
        );
        assert_eq!(b.attempts(), 8);
    }

    #[test]
    fn jitter_spans_three_quarters_to_five_quarters() {
        let mut b = Backoff::new(ms(1000), ms(10_000));
        assert_eq!(b.next_delay(0.0), ms(750));
        b.reset();
        assert_eq!(b.next_delay(1.0), ms(1250));
        b.reset();
        let d = b.next_delay(0.999);
        assert!(d > ms(1240) && d < ms(1250), "{d:?}");
    }

    #[test]
    fn out_of_range_jitter_is_clamped() {
        let mut b = Backoff::new(ms(1000), ms(10_000));
        assert_eq!(b.next_delay(-3.0), ms(750));
        b.reset();
        assert_eq!(b.next_delay(7.0), ms(1250));
        b.reset();
        assert_eq!(b.next_delay(f64::NAN), ms(1000));
        b.reset();
        assert_eq!(b.next_delay(f64::INFINITY), ms(1250));
        b.reset();
        assert_eq!(b.next_delay(f64::NEG_INFINITY), ms(750));
    }

    #[test]
    fn reset_starts_over() {
        let mut b = Backoff::default();
        b.next_delay(0.5);
        b.next_delay(0.5);
        b.reset();
        assert_eq!(b.attempts(), 0);
        assert_eq!(b.next_delay(0.5), DEFAULT.0);
    }

    #[test]
    fn many_attempts_never_overflow() {
        let mut b = Backoff::new(Duration::MAX, Duration::MAX);
        for _ in 0..100 {
            assert!(b.next_delay(1.0) >= Duration::from_secs(1));
        }
        let mut b = Backoff::new(ms(1), ms(5000));
        for _ in 0..200 {
            b.next_delay(0.5);
        }
        assert_eq!(b.next_delay(0.5), ms(5000));
        // An initial delay above the cap is capped too.
        let mut b = Backoff::new(ms(50_000), ms(5000));
        assert_eq!(b.next_delay(0.5), ms(5000));
    }
}
