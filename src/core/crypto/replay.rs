//! A sliding anti-replay window over 64-bit packet counters (the bitmap
//! scheme of RFC 6479). Datagrams may arrive out of order; each counter is
//! accepted once, and counters too far behind the highest seen are refused.
//!
//! `check` and `commit` are separate so that a datagram is marked seen only
//! after its authentication tag has verified: a forged datagram must not be
//! able to burn a counter the real sender will use.

const WORDS: usize = 32;
const BITS: u64 = 64;
/// How far behind the highest accepted counter a datagram may arrive.
pub const WINDOW: u64 = (WORDS as u64 - 1) * BITS;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    #[error("counter already seen")]
    Replayed,
    #[error("counter behind the replay window")]
    TooOld,
}

#[derive(Debug, Clone)]
pub struct ReplayWindow {
    /// The highest counter accepted so far.
    top: Option<u64>,
    /// Ring of bits; counter c lives in word (c / 64) % WORDS.
    bits: [u64; WORDS],
}

impl Default for ReplayWindow {
    fn default() -> Self {
        ReplayWindow::new()
    }
}

impl ReplayWindow {
    pub const fn new() -> ReplayWindow {
        ReplayWindow {
            top: None,
            bits: [0; WORDS],
        }
    }

    /// Would `counter` be accepted? Does not change the window.
    pub fn check(&self, counter: u64) -> Result<(), ReplayError> {
        let Some(top) = self.top else { return Ok(()) };
        if counter > top {
            return Ok(());
        }
        if top - counter >= WINDOW {
            return Err(ReplayError::TooOld);
        }
        let (word, bit) = slot(counter);
        if self.bits[word] & (1 << bit) != 0 {
            return Err(ReplayError::Replayed);
        }
        Ok(())
    }

    /// Mark `counter` seen; call only after `check` passed and the datagram
    /// authenticated.
    pub fn commit(&mut self, counter: u64) {
        match self.top {
            None => {
                self.bits = [0; WORDS];
                self.top = Some(counter);
            }
            Some(top) if counter > top => {
                // Clear the words the window slides over.
                let (from, to) = (top / BITS + 1, counter / BITS);
                let n = (to + 1).saturating_sub(from).min(WORDS as u64);
                for i in 0..n {
                    self.bits[((from + i) % WORDS as u64) as usize] = 0;
                }
                self.top = Some(counter);
            }
            Some(_) => {}
        }
        let (word, bit) = slot(counter);
        self.bits[word] |= 1 << bit;
    }

    /// `check` then `commit`, for callers with nothing to verify between.
    pub fn accept(&mut self, counter: u64) -> Result<(), ReplayError> {
        self.check(counter)?;
        self.commit(counter);
        Ok(())
    }
}

fn slot(counter: u64) -> (usize, u64) {
    (((counter / BITS) % WORDS as u64) as usize, counter % BITS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    #[test]
    fn in_order_out_of_order_and_replays() {
        let mut w = ReplayWindow::new();
        assert_eq!(w.accept(0), Ok(()));
        assert_eq!(w.accept(2), Ok(()));
        assert_eq!(w.accept(1), Ok(()));
        assert_eq!(w.accept(1), Err(ReplayError::Replayed));
        assert_eq!(w.accept(2), Err(ReplayError::Replayed));
        assert_eq!(w.accept(5000), Ok(()));
        assert_eq!(w.accept(3), Err(ReplayError::TooOld));
        assert_eq!(w.accept(5000 - WINDOW + 1), Ok(()));
        assert_eq!(w.accept(5000 - WINDOW), Err(ReplayError::TooOld));
    }

    #[test]
    fn check_alone_does_not_mark() {
        let mut w = ReplayWindow::new();
        assert_eq!(w.check(7), Ok(()));
        assert_eq!(w.check(7), Ok(()));
        w.commit(7);
        assert_eq!(w.check(7), Err(ReplayError::Replayed));
    }

    #[test]
    fn a_big_jump_clears_the_whole_ring() {
        let mut w = ReplayWindow::new();
        for c in 0..100 {
            w.accept(c).unwrap();
        }
        let far = 100 + 10 * WINDOW;
        w.accept(far).unwrap();
        // Counters that alias old bits in the ring must not look seen.
        for c in far - 100..far {
            assert_eq!(w.check(c), Ok(()), "counter {c}");
        }
    }

    proptest! {
        /// Against a model: a counter is accepted iff it is new and within
        /// the window of the highest accepted so far.
        #[test]
        fn matches_model(counters in proptest::collection::vec(0u64..6000, 1..400)) {
            let mut w = ReplayWindow::new();
            let mut seen = BTreeSet::new();
            let mut top: Option<u64> = None;
            for c in counters {
                let fresh = !seen.contains(&c);
                let in_window = top.is_none_or(|t| c > t || t - c < WINDOW);
                let expect = fresh && in_window;
                prop_assert_eq!(w.accept(c).is_ok(), expect, "counter {}", c);
                if expect {
                    seen.insert(c);
                    top = Some(top.map_or(c, |t| t.max(c)));
                }
            }
        }
    }
}
