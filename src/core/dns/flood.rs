//! Who loses when the DNS server cannot keep up. Only then: the kernel
//! has begun to drop queries at the socket (the server tells `overflowed`).
//! From then until `CALM_MS` pass without a drop, a source gets at most
//! `BUDGET` queries answered per `WINDOW_MS`; the rest are dropped here,
//! which costs far less than answering them, so the socket drains and the
//! queries of everyone else get in again. One client alone (a benchmark)
//! that never overflows the socket is never limited.

use std::collections::HashMap;
use std::net::IpAddr;

/// Queries per window one source may have answered while shedding
/// (1,000 a second).
pub const BUDGET: u32 = 100;
pub const WINDOW_MS: u64 = 100;
/// Shedding ends this long after the last drop the kernel reported.
pub const CALM_MS: u64 = 5_000;
/// Sources counted per window; past that, new sources are not limited
/// (a spoofed flood of many sources is each under budget anyway).
const MAX_SOURCES: usize = 4096;

#[derive(Debug, Default)]
pub struct Shedder {
    /// The last time the kernel dropped queries.
    overflow_ms: Option<u64>,
    window_start: u64,
    counts: HashMap<IpAddr, u32>,
}

impl Shedder {
    /// The socket dropped queries (its drop counter rose) at `now_ms`.
    pub fn overflowed(&mut self, now_ms: u64) {
        self.overflow_ms = Some(now_ms);
    }

    pub fn shedding(&self, now_ms: u64) -> bool {
        self.overflow_ms
            .is_some_and(|t| now_ms.saturating_sub(t) < CALM_MS)
    }

    /// Should the query from `src` at `now_ms` be answered?
    pub fn admit(&mut self, src: IpAddr, now_ms: u64) -> bool {
        if !self.shedding(now_ms) {
            return true;
        }
        if now_ms.saturating_sub(self.window_start) >= WINDOW_MS {
            self.window_start = now_ms;
            self.counts.clear();
        }
        if !self.counts.contains_key(&src) && self.counts.len() >= MAX_SOURCES {
            return true;
        }
        let n = self.counts.entry(src).or_insert(0);
        *n = n.saturating_add(1);
        *n <= BUDGET
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn nobody_is_limited_until_the_socket_overflows() {
        let mut s = Shedder::default();
        assert!((0..10_000).all(|_| s.admit(ip(1), 0)));
    }

    #[test]
    fn after_an_overflow_a_flooder_gets_its_budget_and_others_get_in() {
        let mut s = Shedder::default();
        s.overflowed(1000);
        let flood: Vec<bool> = (0..2000).map(|_| s.admit(ip(1), 1010)).collect();
        assert_eq!(flood.iter().filter(|a| **a).count(), BUDGET as usize);
        assert!(s.admit(ip(2), 1020), "a quiet client is answered");
        // A new window: the flooder's budget again.
        assert!(s.admit(ip(1), 1010 + WINDOW_MS));
        // Calm again: nobody is limited.
        let later = 1000 + CALM_MS;
        assert!(!s.shedding(later));
        assert!((0..2000).all(|_| s.admit(ip(1), later)));
    }

    #[test]
    fn the_table_of_sources_is_capped() {
        let mut s = Shedder::default();
        s.overflowed(0);
        for i in 0..(MAX_SOURCES as u32 + 100) {
            assert!(s.admit(IpAddr::from(i.to_be_bytes()), 1));
        }
        assert_eq!(s.counts.len(), MAX_SOURCES);
    }
}
