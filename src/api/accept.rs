//! What a listener does when `accept` fails: log (not too often), wait a
//! little, and keep accepting. Running out of file descriptors (EMFILE,
//! ENFILE) or memory is temporary and must not end the router.

use std::time::{Duration, Instant};

use tracing::{debug, warn};

const FIRST_DELAY: Duration = Duration::from_millis(10);
const MAX_DELAY: Duration = Duration::from_secs(1);
/// At most one warning per listener this often.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// Per-listener backoff state.
#[derive(Debug)]
pub struct AcceptBackoff {
    what: &'static str,
    delay: Duration,
    last_warning: Option<Instant>,
    failures: u64,
}

impl AcceptBackoff {
    pub fn new(what: &'static str) -> AcceptBackoff {
        AcceptBackoff {
            what,
            delay: FIRST_DELAY,
            last_warning: None,
            failures: 0,
        }
    }

    /// A connection was accepted: start again from the shortest delay.
    pub fn reset(&mut self) {
        self.delay = FIRST_DELAY;
        self.failures = 0;
    }

    /// Log `e` (rate-limited) and return how long to wait before the next
    /// `accept`.
    pub fn next_delay(&mut self, e: &std::io::Error, now: Instant) -> Duration {
        self.failures += 1;
        let due = self
            .last_warning
            .is_none_or(|t| now.duration_since(t) >= WARN_EVERY);
        if due {
            self.last_warning = Some(now);
            let hint = if is_resource_exhaustion(e) {
                " (out of file descriptors or memory; backing off)"
            } else {
                ""
            };
            warn!(
                "{}: accept failed {} time(s): {e}{hint}",
                self.what, self.failures
            );
        } else {
            debug!("{}: accept failed: {e}", self.what);
        }
        let d = self.delay;
        self.delay = (self.delay * 2).min(MAX_DELAY);
        d
    }

    /// Log `e` and sleep before the next `accept`.
    pub async fn after_error(&mut self, e: &std::io::Error) {
        let d = self.next_delay(e, Instant::now());
        tokio::time::sleep(d).await;
    }

    /// What an `accept` gave: the connection (and the pause is reset), or
    /// `None` after logging the error and pausing.
    pub async fn accepted<T>(&mut self, r: std::io::Result<T>) -> Option<T> {
        match r {
            Ok(t) => {
                self.reset();
                Some(t)
            }
            Err(e) => {
                self.after_error(&e).await;
                None
            }
        }
    }
}

fn is_resource_exhaustion(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backs_off_to_a_cap_and_resets() {
        let mut b = AcceptBackoff::new("test");
        let e = std::io::Error::from_raw_os_error(libc::EMFILE);
        let now = Instant::now();
        let delays: Vec<Duration> = (0..12).map(|_| b.next_delay(&e, now)).collect();
        assert_eq!(delays[0], FIRST_DELAY);
        assert_eq!(delays[1], FIRST_DELAY * 2);
        assert!(delays.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(*delays.last().unwrap(), MAX_DELAY);
        assert_eq!(b.failures, 12);
        b.reset();
        assert_eq!(b.next_delay(&e, now), FIRST_DELAY);
        assert!(is_resource_exhaustion(&e));
        assert!(!is_resource_exhaustion(&std::io::Error::from_raw_os_error(
            libc::ECONNABORTED
        )));
    }
}
