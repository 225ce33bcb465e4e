//! Where each MAC address lives: on our side of the bridge (`Local`) or
//! behind a peer. Learned from the source of every frame, so it is on the
//! per-frame hot path; capped (a flood of random source MACs must not grow
//! it without bound) and expiring (a container that moved or left is
//! forgotten).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::PeerName;

/// Where frames for a MAC address go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MacLocation {
    /// Behind our own TAP: a container on this host.
    Local,
    /// Behind this peer.
    Peer(PeerName),
}

/// What `learn` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Learned {
    /// A MAC we did not know (or had expired).
    New,
    /// Known at the same place; its age was reset.
    Refreshed,
    /// Known elsewhere until now.
    Moved { from: MacLocation },
    /// The table is full of live entries; nothing was learned.
    Full,
}

#[derive(Clone, Copy, Debug)]
struct Slot {
    loc: MacLocation,
    last_seen: Instant,
}

/// A capped, expiring MAC address table.
#[derive(Clone, Debug)]
pub struct MacTable {
    map: HashMap<[u8; 6], Slot>,
    capacity: usize,
    ttl: Duration,
    /// No entry was seen before this (a lower bound, exact after a sweep):
    /// lets a full table refuse a new MAC without scanning when nothing can
    /// have expired yet.
    oldest: Option<Instant>,
}

/// How many slots to reserve up front, so learning rarely reallocates, while
/// a huge configured capacity does not reserve memory it may never use.
const MAX_PREALLOC: usize = 4096;

impl MacTable {
    pub fn new(capacity: usize, ttl: Duration) -> MacTable {
        MacTable {
            map: HashMap::with_capacity(capacity.min(MAX_PREALLOC)),
            capacity,
            ttl,
            oldest: None,
        }
    }

    fn expired(&self, slot: &Slot, now: Instant) -> bool {
        now.saturating_duration_since(slot.last_seen) >= self.ttl
    }

    /// Records that `mac` was seen at `loc`. A full table first drops
    /// expired entries; if it is still full the MAC is not learned.
    pub fn learn(&mut self, mac: [u8; 6], loc: MacLocation, now: Instant) -> Learned {
        let ttl = self.ttl;
        if let Some(slot) = self.map.get_mut(&mac) {
            let was_live = now.saturating_duration_since(slot.last_seen) < ttl;
            let from = slot.loc;
            slot.loc = loc;
            slot.last_seen = now;
            self.oldest = self.oldest.map(|o| o.min(now));
            return if !was_live {
                Learned::New
            } else if from == loc {
                Learned::Refreshed
            } else {
                Learned::Moved { from }
            };
        }
        if self.map.len() >= self.capacity {
            let may_have_expired = self
                .oldest
                .is_none_or(|o| now.saturating_duration_since(o) >= ttl);
            if may_have_expired {
                self.expire(now);
            }
            if self.map.len() >= self.capacity {
                return Learned::Full;
            }
        }
        self.map.insert(
            mac,
            Slot {
                loc,
                last_seen: now,
            },
        );
        self.oldest = Some(self.oldest.map_or(now, |o| o.min(now)));
        Learned::New
    }

    /// Where `mac` is, unless unknown or expired.
    pub fn lookup(&self, mac: &[u8; 6], now: Instant) -> Option<MacLocation> {
        self.map
            .get(mac)
            .filter(|slot| !self.expired(slot, now))
            .map(|slot| slot.loc)
    }

    /// Drops expired entries; returns how many.
    pub fn expire(&mut self, now: Instant) -> usize {
        let before = self.map.len();
        let ttl = self.ttl;
        let mut oldest: Option<Instant> = None;
        self.map.retain(|_, slot| {
            let live = now.saturating_duration_since(slot.last_seen) < ttl;
            if live {
                oldest = Some(oldest.map_or(slot.last_seen, |o| o.min(slot.last_seen)));
            }
            live
        });
        self.oldest = oldest;
        before - self.map.len()
    }

    /// Drops every entry behind `peer` (it went away); returns how many.
    pub fn forget_peer(&mut self, peer: PeerName) -> usize {
        let before = self.map.len();
        self.map
            .retain(|_, slot| slot.loc != MacLocation::Peer(peer));
        before - self.map.len()
    }

    /// Entries held, expired ones included until the next sweep.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Every entry held (expired ones included until the next sweep), in no
    /// particular order.
    pub fn entries(&self) -> impl Iterator<Item = ([u8; 6], MacLocation)> + '_ {
        self.map.iter().map(|(mac, slot)| (*mac, slot.loc))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(300);

    fn mac(i: u8) -> [u8; 6] {
        [0x02, 0, 0, 0, 0, i]
    }

    fn peer(i: u8) -> MacLocation {
        MacLocation::Peer(PeerName([0x0a, 0, 0, 0, 0, i]))
    }

    #[test]
    fn learn_new_refresh_move() {
        let t0 = Instant::now();
        let mut t = MacTable::new(10, TTL);
        assert!(t.is_empty());
        assert_eq!(t.learn(mac(1), MacLocation::Local, t0), Learned::New);
        assert_eq!(t.learn(mac(1), MacLocation::Local, t0), Learned::Refreshed);
        assert_eq!(
            t.learn(mac(1), peer(1), t0),
            Learned::Moved {
                from: MacLocation::Local
            }
        );
        assert_eq!(t.lookup(&mac(1), t0), Some(peer(1)));
        assert_eq!(t.lookup(&mac(2), t0), None);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn entries_expire() {
        let t0 = Instant::now();
        let mut t = MacTable::new(10, TTL);
        t.learn(mac(1), MacLocation::Local, t0);
        t.learn(mac(2), peer(1), t0 + Duration::from_secs(100));
        let later = t0 + TTL;
        assert_eq!(
            t.lookup(&mac(1), later - Duration::from_secs(1)),
            Some(MacLocation::Local)
        );
        assert_eq!(t.lookup(&mac(1), later), None);
        assert_eq!(t.lookup(&mac(2), later), Some(peer(1)));
        // Seen again after expiry: new, even somewhere else.
        assert_eq!(t.learn(mac(1), peer(2), later), Learned::New);
        assert_eq!(t.expire(later), 0);
        assert_eq!(t.expire(later + Duration::from_secs(100)), 1);
        assert_eq!(t.lookup(&mac(1), later), Some(peer(2)));
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn refresh_keeps_an_entry_alive() {
        let t0 = Instant::now();
        let mut t = MacTable::new(10, TTL);
        t.learn(mac(1), MacLocation::Local, t0);
        let t1 = t0 + Duration::from_secs(200);
        assert_eq!(t.learn(mac(1), MacLocation::Local, t1), Learned::Refreshed);
        assert_eq!(t.lookup(&mac(1), t0 + TTL), Some(MacLocation::Local));
        assert_eq!(t.expire(t0 + TTL), 0);
        assert_eq!(t.expire(t1 + TTL), 1);
    }

    #[test]
    fn full_table_drops_expired_first_then_refuses() {
        let t0 = Instant::now();
        let mut t = MacTable::new(2, TTL);
        assert_eq!(t.learn(mac(1), MacLocation::Local, t0), Learned::New);
        let t1 = t0 + Duration::from_secs(10);
        assert_eq!(t.learn(mac(2), peer(1), t1), Learned::New);
        assert_eq!(t.learn(mac(3), peer(1), t1), Learned::Full);
        assert_eq!(t.lookup(&mac(3), t1), None);
        // Known MACs still refresh and move when full.
        assert_eq!(t.learn(mac(2), peer(1), t1), Learned::Refreshed);
        assert_eq!(
            t.learn(mac(2), peer(2), t1),
            Learned::Moved { from: peer(1) }
        );
        // Once mac 1 expires, a new MAC takes its place.
        let t2 = t0 + TTL;
        assert_eq!(t.learn(mac(3), peer(1), t2), Learned::New);
        assert_eq!(t.lookup(&mac(1), t2), None);
        assert_eq!(t.len(), 2);
        assert_eq!(t.learn(mac(4), peer(1), t2), Learned::Full);
    }

    #[test]
    fn zero_capacity_learns_nothing() {
        let mut t = MacTable::new(0, TTL);
        assert_eq!(
            t.learn(mac(1), MacLocation::Local, Instant::now()),
            Learned::Full
        );
        assert!(t.is_empty());
    }

    #[test]
    fn forget_peer_drops_only_its_entries() {
        let t0 = Instant::now();
        let mut t = MacTable::new(10, TTL);
        t.learn(mac(1), MacLocation::Local, t0);
        t.learn(mac(2), peer(1), t0);
        t.learn(mac(3), peer(1), t0);
        t.learn(mac(4), peer(2), t0);
        let MacLocation::Peer(p1) = peer(1) else {
            unreachable!()
        };
        assert_eq!(t.forget_peer(p1), 2);
        assert_eq!(t.forget_peer(p1), 0);
        let mut left: Vec<_> = t.entries().collect();
        left.sort_by_key(|(m, _)| *m);
        assert_eq!(left, vec![(mac(1), MacLocation::Local), (mac(4), peer(2))]);
    }

    #[test]
    fn refresh_does_not_grow_the_map() {
        let t0 = Instant::now();
        let mut t = MacTable::new(8, TTL);
        for i in 0..8 {
            t.learn(mac(i), MacLocation::Local, t0);
        }
        let cap = t.map.capacity();
        for n in 0..1000u64 {
            let now = t0 + Duration::from_millis(n);
            assert_eq!(
                t.learn(mac((n % 8) as u8), MacLocation::Local, now),
                Learned::Refreshed
            );
        }
        assert_eq!(t.map.capacity(), cap);
    }
}
