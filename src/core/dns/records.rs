//! The name records of the mesh: a CRDT merged per record.
//!
//! Every record is owned by the peer that made it (its origin) and by that
//! peer's incarnation (the uid it drew at launch). Only the origin writes
//! its records, each change with the next number of the origin's own
//! counter, so per record the greater version wins; a removal is a
//! tombstone with its own version. Merging is per-record max (ties: the
//! tombstone, then the greater container): idempotent, commutative and
//! associative, so gossip may be split, repeated, reordered or relayed.
//!
//! No clock is compared between hosts:
//! - each holder forgets a tombstone `TOMBSTONE_TTL_MS` after it learned
//!   it, by its own clock;
//! - should a stale live record come back after that (from a peer that was
//!   cut off for longer), its origin answers with a fresh tombstone: an
//!   origin never lets the mesh hold, about itself, a record it does not;
//! - a previous incarnation's records are dropped as soon as the topology
//!   names the origin's current uid (`retain`), and refused after.
//!
//! Bounded: `MAX_ORIGINS` incarnations, `MAX_PER_ORIGIN` records each
//! (tombstones give way first).

use std::collections::BTreeMap;
use std::net::IpAddr;

use crate::core::PeerName;

/// Records (live and tombstones) one incarnation may hold.
pub const MAX_PER_ORIGIN: usize = 4096;
/// Incarnations held at once (a peer and its restarts, before the
/// topology tells which is current).
pub const MAX_ORIGINS: usize = 512;
/// How long a holder keeps a tombstone after learning it.
pub const TOMBSTONE_TTL_MS: u64 = 10 * 60 * 1000;
/// Versions beyond this are refused: origins count up from 1 by one per
/// change, so only a forgery gets there, and an origin can always outrank
/// a forged record about itself.
pub const MAX_VERSION: u64 = 1 << 48;
/// A container ID, as Docker writes it (64 hex digits) or shorter.
pub const MAX_CONTAINER_LEN: usize = 64;

/// What a record names: a fully qualified lower-case name and an address.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    pub name: String,
    pub addr: IpAddr,
}

/// One record as it travels: whose, which, and its state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub origin: PeerName,
    pub uid: u64,
    pub key: Key,
    pub version: u64,
    /// False: a tombstone.
    pub alive: bool,
    /// The container the name belongs to ("" for a name added by hand).
    pub container: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Held {
    version: u64,
    alive: bool,
    container: String,
    /// When this holder learned it (its own clock, ms): tombstones expire.
    learned_ms: u64,
}

impl Held {
    /// The merge order: version, then the tombstone, then the container.
    fn rank(&self) -> (u64, bool, &str) {
        (self.version, !self.alive, &self.container)
    }
}

/// Why a gossiped record was not merged (counted by the daemon).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Dropped {
    /// Of an incarnation the topology says is over.
    pub stale: usize,
    /// Past a cap (origins, records per origin) or a version out of range.
    pub over_cap: usize,
}

impl Dropped {
    pub fn total(&self) -> usize {
        self.stale + self.over_cap
    }
}

/// What a merge changed.
#[derive(Debug, Default)]
pub struct Merged {
    /// Records new to us: to pass on to our other neighbours.
    pub new: Vec<Record>,
    /// Our own records re-issued with a higher version, because someone
    /// held a version of ours that we do not: to send to everyone.
    pub reissued: Vec<Record>,
    pub dropped: Dropped,
}

/// Every record this peer holds, its own and the mesh's.
#[derive(Debug)]
pub struct Records {
    me: PeerName,
    uid: u64,
    /// Our counter: the version of our latest change.
    clock: u64,
    origins: BTreeMap<(PeerName, u64), BTreeMap<Key, Held>>,
}

impl Records {
    pub fn new(me: PeerName, uid: u64) -> Records {
        Records {
            me,
            uid,
            clock: 0,
            origins: BTreeMap::new(),
        }
    }

    fn ours(&mut self) -> &mut BTreeMap<Key, Held> {
        self.origins.entry((self.me, self.uid)).or_default()
    }

    fn record(&self, origin: (PeerName, u64), key: &Key, h: &Held) -> Record {
        Record {
            origin: origin.0,
            uid: origin.1,
            key: key.clone(),
            version: h.version,
            alive: h.alive,
            container: h.container.clone(),
        }
    }

    /// Our change to `key`: the record to gossip.
    fn write(&mut self, key: Key, alive: bool, container: String, now_ms: u64) -> Record {
        self.clock += 1;
        let h = Held {
            version: self.clock,
            alive,
            container,
            learned_ms: now_ms,
        };
        let rec = self.record((self.me, self.uid), &key, &h);
        self.ours().insert(key, h);
        rec
    }

    /// Names `key.addr` `key.name` here, for `container` ("" for none).
    /// None when it already is (nothing to gossip); Err when this peer
    /// holds as many records as it may.
    pub fn add(&mut self, key: Key, container: &str, now_ms: u64) -> Result<Option<Record>, Full> {
        let ours = self.ours();
        let held = ours.get(&key).map(|h| h.alive && h.container == container);
        match held {
            Some(true) => return Ok(None),
            None if ours.len() >= MAX_PER_ORIGIN && !evict_tombstone(ours) => return Err(Full),
            _ => {}
        }
        Ok(Some(self.write(key, true, container.to_string(), now_ms)))
    }

    /// Removes our record `key`; the tombstone to gossip, if it was there.
    pub fn remove(&mut self, key: &Key, now_ms: u64) -> Option<Record> {
        let h = self.ours().get(key)?;
        if !h.alive {
            return None;
        }
        let container = h.container.clone();
        Some(self.write(key.clone(), false, container, now_ms))
    }

    /// Removes our records that match; the tombstones to gossip.
    pub fn remove_where(
        &mut self,
        now_ms: u64,
        mut matches: impl FnMut(&Key, &str) -> bool,
    ) -> Vec<Record> {
        let keys: Vec<Key> = self
            .ours()
            .iter()
            .filter(|(k, h)| h.alive && matches(k, &h.container))
            .map(|(k, _)| k.clone())
            .collect();
        keys.iter().filter_map(|k| self.remove(k, now_ms)).collect()
    }

    /// Merges gossiped records. `current_uid` is the topology's incarnation
    /// of a peer, when it knows the peer.
    pub fn merge(
        &mut self,
        incoming: Vec<Record>,
        current_uid: impl Fn(PeerName) -> Option<u64>,
        now_ms: u64,
    ) -> Merged {
        let mut out = Merged::default();
        for r in incoming {
            if r.version == 0 || r.version > MAX_VERSION {
                out.dropped.over_cap += 1;
                continue;
            }
            if r.origin == self.me {
                if r.uid != self.uid {
                    out.dropped.stale += 1;
                } else if let Some(re) = self.answer_claim(&r, now_ms) {
                    out.reissued.push(re);
                }
                continue;
            }
            if current_uid(r.origin).is_some_and(|u| u != r.uid) {
                out.dropped.stale += 1;
                continue;
            }
            let origin = (r.origin, r.uid);
            if !self.origins.contains_key(&origin) && self.origins.len() >= MAX_ORIGINS {
                out.dropped.over_cap += 1;
                continue;
            }
            let held = self.origins.entry(origin).or_default();
            let incoming = Held {
                version: r.version,
                alive: r.alive,
                container: r.container.clone(),
                learned_ms: now_ms,
            };
            let newer = held.get(&r.key).map(|h| h.rank() < incoming.rank());
            match newer {
                Some(false) => continue,
                None if held.len() >= MAX_PER_ORIGIN && !evict_tombstone(held) => {
                    out.dropped.over_cap += 1;
                    continue;
                }
                _ => {}
            }
            held.insert(r.key.clone(), incoming);
            out.new.push(r);
        }
        out
    }

    /// A record about us, of this incarnation: if it is newer than what we
    /// hold (we never wrote it, or wrote it and forgot the tombstone), our
    /// own state of that key goes out again with a version above it.
    fn answer_claim(&mut self, r: &Record, now_ms: u64) -> Option<Record> {
        let ours = self.ours();
        let (alive, container) = match ours.get(&r.key) {
            Some(h) if h.version >= r.version => return None,
            Some(h) => (h.alive, h.container.clone()),
            None => (false, r.container.clone()),
        };
        self.clock = self.clock.max(r.version);
        Some(self.write(r.key.clone(), alive, container, now_ms))
    }

    /// Forgets tombstones learned more than `TOMBSTONE_TTL_MS` ago.
    pub fn expire(&mut self, now_ms: u64) {
        for held in self.origins.values_mut() {
            held.retain(|_, h| h.alive || now_ms.saturating_sub(h.learned_ms) < TOMBSTONE_TTL_MS);
        }
        let me = (self.me, self.uid);
        self.origins.retain(|o, held| *o == me || !held.is_empty());
    }

    /// Keeps the incarnations `keep` says yes to (ours always): the daemon
    /// drops those the topology says are over, and peers it forgot.
    pub fn retain(&mut self, mut keep: impl FnMut(PeerName, u64) -> bool) {
        let me = (self.me, self.uid);
        self.origins.retain(|o, _| *o == me || keep(o.0, o.1));
    }

    /// Every record held, for a peer that just connected.
    pub fn all(&self) -> Vec<Record> {
        self.origins
            .iter()
            .flat_map(|(o, held)| held.iter().map(|(k, h)| self.record(*o, k, h)))
            .collect()
    }

    /// Our own records (live and tombstones).
    pub fn own(&self) -> Vec<Record> {
        let me = (self.me, self.uid);
        self.origins
            .get(&me)
            .map(|held| held.iter().map(|(k, h)| self.record(me, k, h)).collect())
            .unwrap_or_default()
    }

    /// Live records of the incarnations `visible` says yes to.
    pub fn live<'a>(
        &'a self,
        mut visible: impl FnMut(PeerName, u64) -> bool + 'a,
    ) -> impl Iterator<Item = (PeerName, &'a Key, &'a str)> + 'a {
        self.origins
            .iter()
            .filter(move |(o, _)| visible(o.0, o.1))
            .flat_map(|(o, held)| {
                held.iter()
                    .filter(|(_, h)| h.alive)
                    .map(move |(k, h)| (o.0, k, h.container.as_str()))
            })
    }

    /// How many records are held, live and tombstones.
    pub fn len(&self) -> usize {
        self.origins.values().map(BTreeMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// This peer holds as many records as it may.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("this router holds {MAX_PER_ORIGIN} DNS records already")]
pub struct Full;

/// Makes room by dropping the oldest tombstone; false if there is none.
fn evict_tombstone(held: &mut BTreeMap<Key, Held>) -> bool {
    let oldest = held
        .iter()
        .filter(|(_, h)| !h.alive)
        .min_by_key(|(_, h)| h.learned_ms)
        .map(|(k, _)| k.clone());
    match oldest {
        Some(k) => held.remove(&k).is_some(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const A: PeerName = PeerName([0, 0, 0, 0, 0, 1]);
    const B: PeerName = PeerName([0, 0, 0, 0, 0, 2]);

    fn key(name: &str, last: u8) -> Key {
        Key {
            name: name.to_string(),
            addr: IpAddr::from([10, 0, 0, last]),
        }
    }

    fn unknown(_: PeerName) -> Option<u64> {
        None
    }

    fn live_names(r: &Records) -> Vec<(PeerName, String, IpAddr)> {
        let mut v: Vec<_> = r
            .live(|_, _| true)
            .map(|(o, k, _)| (o, k.name.clone(), k.addr))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn an_added_name_reaches_another_peer_and_its_removal_too() {
        let mut a = Records::new(A, 1);
        let mut b = Records::new(B, 2);
        let add = a.add(key("db.", 1), "c1", 0).unwrap().unwrap();
        assert_eq!(a.add(key("db.", 1), "c1", 0), Ok(None), "already there");
        let m = b.merge(vec![add.clone()], unknown, 0);
        assert_eq!(m.new, vec![add.clone()]);
        assert_eq!(live_names(&b), vec![(A, "db.".into(), key("db.", 1).addr)]);
        let gone = a.remove_where(5, |_, c| c == "c1");
        assert_eq!(gone.len(), 1);
        b.merge(gone, unknown, 5);
        assert!(live_names(&b).is_empty());
        // The add arriving again, late, changes nothing.
        assert!(b.merge(vec![add], unknown, 6).new.is_empty());
        assert!(live_names(&b).is_empty());
    }

    #[test]
    fn tombstones_expire_and_a_stale_record_is_answered_by_its_origin() {
        let mut a = Records::new(A, 1);
        let mut b = Records::new(B, 2);
        let add = a.add(key("db.", 1), "", 0).unwrap().unwrap();
        b.merge(vec![add.clone()], unknown, 0);
        let rm = a.remove(&key("db.", 1), 1).unwrap();
        a.expire(TOMBSTONE_TTL_MS + 2);
        assert!(a.own().is_empty(), "the tombstone expired");
        // B was cut off and never saw the removal: its live record comes
        // back to A, which answers with a tombstone above it.
        let m = a.merge(b.all(), unknown, TOMBSTONE_TTL_MS + 3);
        assert_eq!(m.reissued.len(), 1);
        let re = &m.reissued[0];
        assert!(!re.alive && re.version > add.version && re.version > rm.version);
        b.merge(m.reissued, unknown, TOMBSTONE_TTL_MS + 3);
        assert!(live_names(&b).is_empty());
    }

    #[test]
    fn a_forged_record_about_us_is_overruled() {
        let mut a = Records::new(A, 1);
        let forged = Record {
            origin: A,
            uid: 1,
            key: key("evil.", 9),
            version: 1000,
            alive: true,
            container: String::new(),
        };
        let m = a.merge(vec![forged.clone()], unknown, 0);
        assert_eq!(m.reissued.len(), 1);
        assert!(!m.reissued[0].alive && m.reissued[0].version == 1001);
        assert!(live_names(&a).is_empty());
        // Beyond MAX_VERSION: refused, so the counter can always outrank.
        let m = a.merge(
            vec![Record {
                version: u64::MAX,
                ..forged
            }],
            unknown,
            0,
        );
        assert_eq!(m.dropped.over_cap, 1);
    }

    #[test]
    fn a_previous_incarnation_is_refused_once_the_topology_knows() {
        let mut b = Records::new(B, 2);
        let mut old = Records::new(A, 1);
        let mut new = Records::new(A, 7);
        let r_old = old.add(key("old.", 1), "", 0).unwrap().unwrap();
        let r_new = new.add(key("new.", 2), "", 0).unwrap().unwrap();
        b.merge(vec![r_old.clone(), r_new], unknown, 0);
        assert_eq!(live_names(&b).len(), 2, "which is current is not known yet");
        b.retain(|p, u| p != A || u == 7);
        assert_eq!(
            live_names(&b),
            vec![(A, "new.".into(), key("new.", 2).addr)]
        );
        let m = b.merge(vec![r_old], |p| (p == A).then_some(7), 0);
        assert_eq!(m.dropped.stale, 1);
        assert_eq!(live_names(&b).len(), 1);
        // Our own past incarnation's records are refused too.
        let mut a = Records::new(A, 7);
        assert_eq!(
            a.merge(old.all(), unknown, 0).dropped.stale,
            1,
            "a record of our previous life"
        );
    }

    #[test]
    fn caps_hold_and_tombstones_give_way_first() {
        let mut a = Records::new(A, 1);
        for i in 0..MAX_PER_ORIGIN {
            let k = key(&format!("n{i}."), 1);
            a.add(k, "", i as u64).unwrap();
        }
        assert_eq!(a.add(key("more.", 1), "", 0), Err(Full));
        a.remove(&key("n5.", 1), 0).unwrap();
        assert!(a.add(key("more.", 1), "", 0).unwrap().is_some());
        assert_eq!(a.len(), MAX_PER_ORIGIN);

        let mut b = Records::new(B, 2);
        let m = b.merge(a.all(), unknown, 0);
        assert_eq!(m.new.len(), MAX_PER_ORIGIN);
        let extra = Record {
            origin: A,
            uid: 1,
            key: key("extra.", 3),
            version: 99_999,
            alive: true,
            container: String::new(),
        };
        assert_eq!(b.merge(vec![extra.clone()], unknown, 0).dropped.over_cap, 1);
        let others: Vec<Record> = (0..MAX_ORIGINS as u64 + 5)
            .map(|u| Record {
                uid: 100 + u,
                ..extra.clone()
            })
            .collect();
        let m = b.merge(others, unknown, 0);
        assert!(m.dropped.over_cap >= 5);
        assert!(b.origins.len() <= MAX_ORIGINS);
    }

    fn arb_record() -> impl Strategy<Value = Record> {
        (0u8..3, 1u64..3, 0u8..4, 1u64..6, any::<bool>(), 0u8..2).prop_map(
            |(o, uid, n, version, alive, c)| Record {
                origin: PeerName([0, 0, 0, 0, 1, o]),
                uid,
                key: key(&format!("n{n}."), n),
                version,
                alive,
                container: format!("c{c}"),
            },
        )
    }

    fn state(r: &Records) -> Vec<Record> {
        let mut v = r.all();
        v.sort_by(|a, b| (a.origin, a.uid, &a.key).cmp(&(b.origin, b.uid, &b.key)));
        v
    }

    proptest! {
        /// Any split, order or repetition of the same gossip ends in the
        /// same state.
        #[test]
        fn merge_is_order_independent(
            recs in proptest::collection::vec(arb_record(), 0..40),
            split in 0usize..40,
        ) {
            let mut one = Records::new(B, 9);
            one.merge(recs.clone(), unknown, 0);
            let mut two = Records::new(B, 9);
            let at = split.min(recs.len());
            let mut rev = recs.clone();
            rev.reverse();
            two.merge(rev[at..].to_vec(), unknown, 0);
            two.merge(rev[..at].to_vec(), unknown, 0);
            two.merge(recs.clone(), unknown, 0);
            prop_assert_eq!(state(&one), state(&two));
        }
    }
}
