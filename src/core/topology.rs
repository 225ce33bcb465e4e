//! The mesh's shared picture: every peer's own entry (name, incarnation,
//! version, its established connections), merged from gossip.
//!
//! Merging keeps, per peer name, the entry with the greater
//! `(version, uid)`; so it is idempotent, commutative and associative, and
//! gossip may be repeated, reordered or lost.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::PeerName;

/// Caps on what gossip from outside may make us hold.
pub const MAX_PEERS: usize = 1024;
pub const MAX_CONNECTIONS_PER_PEER: usize = 1024;
pub const MAX_NICKNAME_LEN: usize = 64;

/// One established connection, as its owner reports it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ConnectionInfo {
    pub peer: PeerName,
    /// Where `peer` listens (its IP as seen by the owner, its advertised
    /// port): what discovery dials.
    pub addr: SocketAddr,
    /// True when the owner dialled the connection.
    pub outbound: bool,
}

/// A peer's own account of itself.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PeerEntry {
    pub name: PeerName,
    pub nickname: String,
    /// Random per incarnation (router process start).
    pub uid: u64,
    /// Grows with every change the owner makes; starts from the wall clock
    /// in milliseconds at launch so a restarted router outranks its past.
    pub version: u64,
    pub connections: Vec<ConnectionInfo>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TopologyError {
    #[error("gossip names {0} peers, more than the limit of {MAX_PEERS}")]
    TooManyPeers(usize),
    #[error("peer {0} lists {1} connections, more than the limit of {MAX_CONNECTIONS_PER_PEER}")]
    TooManyConnections(PeerName, usize),
    #[error("peer {0} has a nickname longer than {MAX_NICKNAME_LEN} bytes")]
    NicknameTooLong(PeerName),
    #[error("gossip carries the reserved all-zero peer name")]
    ReservedName,
}

/// The merged topology as seen from `ourself`.
#[derive(Clone, Debug)]
pub struct Topology {
    ourself: PeerName,
    peers: BTreeMap<PeerName, PeerEntry>,
    /// When each currently unreachable peer was first seen unreachable.
    unreachable_since: BTreeMap<PeerName, Instant>,
}

impl Topology {
    /// A topology holding only our own entry.
    pub fn new(ours: PeerEntry) -> Topology {
        let ourself = ours.name;
        let mut peers = BTreeMap::new();
        peers.insert(ourself, ours);
        Topology {
            ourself,
            peers,
            unreachable_since: BTreeMap::new(),
        }
    }

    pub fn ourself(&self) -> PeerName {
        self.ourself
    }

    pub fn our_entry(&self) -> &PeerEntry {
        &self.peers[&self.ourself]
    }

    pub fn get(&self, name: &PeerName) -> Option<&PeerEntry> {
        self.peers.get(name)
    }

    pub fn entries(&self) -> impl Iterator<Item = &PeerEntry> {
        self.peers.values()
    }

    pub fn len(&self) -> usize {
        self.peers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    /// Replaces our own connection list (kept sorted by peer name). When it
    /// changes, our version grows by one so the new entry outranks the old
    /// one everywhere; returns whether it changed.
    pub fn set_our_connections(&mut self, mut conns: Vec<ConnectionInfo>) -> bool {
        conns.sort_by(cmp_connection);
        let Some(ours) = self.peers.get_mut(&self.ourself) else {
            return false;
        };
        if ours.connections == conns {
            return false;
        }
        ours.connections = conns;
        ours.version = ours.version.saturating_add(1);
        true
    }

    /// Merges gossiped entries into the table and returns those that were
    /// new or newer than what we held (what to pass on to other neighbours),
    /// in name order.
    ///
    /// The whole message is validated first; an error leaves the table
    /// untouched. Per name the entry with the greater `(version, uid)` wins
    /// (ties broken on the rest of the entry, so the outcome never depends on
    /// arrival order). Entries naming ourselves never replace ours: one from
    /// another incarnation (a different uid) with a version at least ours
    /// makes us bump our version past it, and our bumped entry is returned.
    pub fn merge(&mut self, entries: Vec<PeerEntry>) -> Result<Vec<PeerEntry>, TopologyError> {
        if entries.len() > MAX_PEERS {
            return Err(TopologyError::TooManyPeers(entries.len()));
        }
        for e in &entries {
            validate_entry(e)?;
        }

        // Reduce the message to one entry per name (the greatest), so the
        // result holds each name at most once.
        let mut best: BTreeMap<PeerName, PeerEntry> = BTreeMap::new();
        let mut past_self_version: Option<u64> = None;
        let our_uid = self.our_entry().uid;
        for e in entries {
            if e.name == self.ourself {
                // Entries of this incarnation are ours to author: whatever a
                // neighbour echoes back, we hold something at least as new.
                if e.uid != our_uid {
                    past_self_version = past_self_version.max(Some(e.version));
                }
                continue;
            }
            match best.get_mut(&e.name) {
                Some(held) => {
                    if cmp_entry(&e, held).is_gt() {
                        *held = e;
                    }
                }
                None => {
                    best.insert(e.name, e);
                }
            }
        }

        let new_names = best.keys().filter(|n| !self.peers.contains_key(n)).count();
        let resulting = self.peers.len().saturating_add(new_names);
        if resulting > MAX_PEERS {
            return Err(TopologyError::TooManyPeers(resulting));
        }

        let mut changed = Vec::new();
        for (name, e) in best {
            match self.peers.get_mut(&name) {
                Some(held) => {
                    if cmp_entry(&e, held).is_gt() {
                        *held = e.clone();
                        changed.push(e);
                    }
                }
                None => {
                    self.peers.insert(name, e.clone());
                    changed.push(e);
                }
            }
        }

        if let Some(theirs) = past_self_version {
            if let Some(ours) = self.peers.get_mut(&self.ourself) {
                if theirs >= ours.version {
                    ours.version = theirs.saturating_add(1);
                    changed.push(ours.clone());
                }
            }
        }
        Ok(changed)
    }

    /// True when `a` lists `b` and `b` lists `a`: only edges both ends
    /// report count, so a half-torn-down connection routes nothing.
    pub fn connected(&self, a: PeerName, b: PeerName) -> bool {
        a != b && self.lists(a, b) && self.lists(b, a)
    }

    fn lists(&self, a: PeerName, b: PeerName) -> bool {
        self.peers
            .get(&a)
            .is_some_and(|e| e.connections.iter().any(|c| c.peer == b))
    }

    /// Removes every peer we cannot reach over symmetric edges; returns the
    /// removed names in order.
    pub fn gc(&mut self) -> Vec<PeerName> {
        let removed = self.unreachable();
        for n in &removed {
            self.peers.remove(n);
        }
        removed
    }

    /// Like `gc`, but a peer is removed only once it has been unreachable
    /// for `grace`: gossip about a distant peer often arrives before the
    /// entries that make it reachable, and dropping it at once would lose
    /// it until the next full gossip.
    pub fn gc_after(&mut self, now: Instant, grace: Duration) -> Vec<PeerName> {
        let unreachable = self.unreachable();
        self.unreachable_since
            .retain(|n, _| unreachable.contains(n));
        let mut removed = Vec::new();
        for n in unreachable {
            let since = *self.unreachable_since.entry(n).or_insert(now);
            if now.saturating_duration_since(since) >= grace {
                self.peers.remove(&n);
                self.unreachable_since.remove(&n);
                removed.push(n);
            }
        }
        removed
    }

    /// Peers not reachable from ourselves over symmetric edges, in name order.
    pub fn unreachable(&self) -> Vec<PeerName> {
        let mut reached = BTreeSet::new();
        reached.insert(self.ourself);
        let mut queue = VecDeque::from([self.ourself]);
        while let Some(p) = queue.pop_front() {
            let Some(entry) = self.peers.get(&p) else {
                continue;
            };
            for c in &entry.connections {
                if !reached.contains(&c.peer) && self.lists(c.peer, p) {
                    reached.insert(c.peer);
                    queue.push_back(c.peer);
                }
            }
        }
        self.peers
            .keys()
            .filter(|n| !reached.contains(n))
            .copied()
            .collect()
    }

    /// Where others report each peer (but ourselves) listens: the `addr` of
    /// every connection naming it, deduplicated, sorted. Discovery dials
    /// these; the caller skips peers it is already connected to.
    pub fn discovery_addresses(&self) -> Vec<(PeerName, SocketAddr)> {
        let found: BTreeSet<(PeerName, SocketAddr)> = self
            .peers
            .values()
            .flat_map(|e| {
                e.connections
                    .iter()
                    .filter(move |c| c.peer != e.name)
                    .map(|c| (c.peer, c.addr))
            })
            .filter(|(p, _)| *p != self.ourself)
            .collect();
        found.into_iter().collect()
    }

    /// Every entry we hold, ours included, in name order: a full gossip.
    pub fn entries_vec(&self) -> Vec<PeerEntry> {
        self.peers.values().cloned().collect()
    }
}

fn validate_entry(e: &PeerEntry) -> Result<(), TopologyError> {
    if e.name == PeerName::NONE || e.connections.iter().any(|c| c.peer == PeerName::NONE) {
        return Err(TopologyError::ReservedName);
    }
    if e.connections.len() > MAX_CONNECTIONS_PER_PEER {
        return Err(TopologyError::TooManyConnections(
            e.name,
            e.connections.len(),
        ));
    }
    if e.nickname.len() > MAX_NICKNAME_LEN {
        return Err(TopologyError::NicknameTooLong(e.name));
    }
    Ok(())
}

fn cmp_connection(a: &ConnectionInfo, b: &ConnectionInfo) -> Ordering {
    (a.peer, a.addr, a.outbound).cmp(&(b.peer, b.addr, b.outbound))
}

/// A total order on entries of one name: `(version, uid)` first, then the
/// rest, so that even two different entries claiming the same version and
/// uid (a buggy or hostile peer) merge to the same winner in any order.
fn cmp_entry(a: &PeerEntry, b: &PeerEntry) -> Ordering {
    (a.version, a.uid)
        .cmp(&(b.version, b.uid))
        .then_with(|| a.nickname.cmp(&b.nickname))
        .then_with(|| {
            a.connections
                .iter()
                .map(|c| (c.peer, c.addr, c.outbound))
                .cmp(b.connections.iter().map(|c| (c.peer, c.addr, c.outbound)))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::{IpAddr, Ipv4Addr};

    fn name(i: u8) -> PeerName {
        PeerName([0x02, 0, 0, 0, 0, i])
    }

    fn addr(i: u8) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, i)), 6783)
    }

    fn conn(i: u8) -> ConnectionInfo {
        ConnectionInfo {
            peer: name(i),
            addr: addr(i),
            outbound: false,
        }
    }

    fn entry(i: u8, version: u64, conns: &[u8]) -> PeerEntry {
        PeerEntry {
            name: name(i),
            nickname: format!("host{i}"),
            uid: u64::from(i) * 1000,
            version,
            connections: conns.iter().map(|&c| conn(c)).collect(),
        }
    }

    fn table(t: &Topology) -> Vec<PeerEntry> {
        t.entries_vec()
    }

    #[test]
    fn set_our_connections_bumps_only_on_change() {
        let mut t = Topology::new(entry(1, 10, &[]));
        assert!(t.set_our_connections(vec![conn(3), conn(2)]));
        assert_eq!(t.our_entry().version, 11);
        let peers: Vec<_> = t.our_entry().connections.iter().map(|c| c.peer).collect();
        assert_eq!(peers, vec![name(2), name(3)]);
        assert!(!t.set_our_connections(vec![conn(2), conn(3)]));
        assert_eq!(t.our_entry().version, 11);
        assert!(t.set_our_connections(vec![]));
        assert_eq!(t.our_entry().version, 12);
    }

    #[test]
    fn merge_keeps_newer_and_reports_changes() {
        let mut t = Topology::new(entry(1, 10, &[2]));
        let got = t.merge(vec![entry(2, 5, &[1])]).unwrap();
        assert_eq!(got, vec![entry(2, 5, &[1])]);
        assert_eq!(t.len(), 2);
        // Older: ignored, nothing to pass on.
        assert_eq!(t.merge(vec![entry(2, 4, &[])]).unwrap(), vec![]);
        assert_eq!(t.get(&name(2)), Some(&entry(2, 5, &[1])));
        // Same again: idempotent.
        assert_eq!(t.merge(vec![entry(2, 5, &[1])]).unwrap(), vec![]);
        // Newer: replaces.
        let got = t.merge(vec![entry(2, 6, &[1, 3])]).unwrap();
        assert_eq!(got, vec![entry(2, 6, &[1, 3])]);
        assert_eq!(t.get(&name(2)), Some(&entry(2, 6, &[1, 3])));
    }

    #[test]
    fn merge_equal_version_prefers_greater_uid() {
        let mut t = Topology::new(entry(1, 10, &[]));
        let mut a = entry(2, 5, &[]);
        a.uid = 1;
        let mut b = entry(2, 5, &[1]);
        b.uid = 2;
        t.merge(vec![b.clone()]).unwrap();
        assert_eq!(t.merge(vec![a.clone()]).unwrap(), vec![]);
        assert_eq!(t.get(&name(2)), Some(&b));
        // Within one message too, and only the winner is reported.
        let mut t = Topology::new(entry(1, 10, &[]));
        assert_eq!(t.merge(vec![b.clone(), a]).unwrap(), vec![b]);
    }

    #[test]
    fn our_own_echo_changes_nothing() {
        let mut t = Topology::new(entry(1, 10, &[2]));
        let ours = t.our_entry().clone();
        assert_eq!(t.merge(vec![ours.clone()]).unwrap(), vec![]);
        // Even a same-incarnation entry claiming a higher version.
        let mut odd = ours.clone();
        odd.version = 99;
        odd.connections.clear();
        assert_eq!(t.merge(vec![odd]).unwrap(), vec![]);
        assert_eq!(t.our_entry(), &ours);
    }

    #[test]
    fn past_incarnation_makes_us_outrank_it() {
        let mut t = Topology::new(entry(1, 10, &[2]));
        let mut past = entry(1, 50, &[3]);
        past.uid = 7;
        let got = t.merge(vec![past.clone()]).unwrap();
        assert_eq!(t.our_entry().version, 51);
        assert_eq!(t.our_entry().connections, vec![conn(2)]);
        assert_eq!(got, vec![t.our_entry().clone()]);
        // An older past incarnation: nothing to do.
        past.version = 20;
        assert_eq!(t.merge(vec![past]).unwrap(), vec![]);
        assert_eq!(t.our_entry().version, 51);
    }

    #[test]
    fn past_incarnation_with_equal_version_also_bumps() {
        let mut t = Topology::new(entry(1, 10, &[]));
        let mut past = entry(1, 10, &[]);
        past.uid = u64::MAX;
        assert_eq!(t.merge(vec![past]).unwrap().len(), 1);
        assert_eq!(t.our_entry().version, 11);
    }

    #[test]
    fn hostile_messages_are_rejected_whole() {
        let mut t = Topology::new(entry(1, 10, &[2]));
        t.merge(vec![entry(2, 1, &[1])]).unwrap();
        let before = table(&t);

        let mut zero = entry(3, 1, &[]);
        zero.name = PeerName::NONE;
        let err = t.merge(vec![entry(4, 1, &[]), zero]).unwrap_err();
        assert_eq!(err, TopologyError::ReservedName);

        let mut zero_conn = entry(3, 1, &[]);
        zero_conn.connections.push(ConnectionInfo {
            peer: PeerName::NONE,
            addr: addr(0),
            outbound: true,
        });
        assert_eq!(
            t.merge(vec![zero_conn]).unwrap_err(),
            TopologyError::ReservedName
        );

        let mut long_nick = entry(3, 1, &[]);
        long_nick.nickname = "x".repeat(MAX_NICKNAME_LEN + 1);
        assert_eq!(
            t.merge(vec![entry(4, 1, &[]), long_nick]).unwrap_err(),
            TopologyError::NicknameTooLong(name(3))
        );

        let mut many_conns = entry(3, 1, &[]);
        many_conns.connections = vec![conn(9); MAX_CONNECTIONS_PER_PEER + 1];
        assert_eq!(
            t.merge(vec![many_conns]).unwrap_err(),
            TopologyError::TooManyConnections(name(3), MAX_CONNECTIONS_PER_PEER + 1)
        );

        let too_many: Vec<PeerEntry> = (0..=MAX_PEERS as u32)
            .map(|i| {
                let b = i.to_be_bytes();
                PeerEntry {
                    name: PeerName([0x06, 0, b[0], b[1], b[2], b[3]]),
                    ..entry(0, 1, &[])
                }
            })
            .collect();
        assert!(matches!(
            t.merge(too_many).unwrap_err(),
            TopologyError::TooManyPeers(_)
        ));

        assert_eq!(table(&t), before);
    }

    #[test]
    fn table_size_cap_counts_what_we_hold() {
        let mut t = Topology::new(entry(1, 10, &[]));
        let fill = |from: u32, to: u32| -> Vec<PeerEntry> {
            (from..to)
                .map(|i| {
                    let b = i.to_be_bytes();
                    PeerEntry {
                        name: PeerName([0x06, 0, b[0], b[1], b[2], b[3]]),
                        ..entry(0, 1, &[])
                    }
                })
                .collect()
        };
        // We already hold one (ourselves): MAX_PEERS - 1 more fit.
        t.merge(fill(0, MAX_PEERS as u32 - 1)).unwrap();
        assert_eq!(t.len(), MAX_PEERS);
        let before = table(&t);
        assert_eq!(
            t.merge(fill(5000, 5001)).unwrap_err(),
            TopologyError::TooManyPeers(MAX_PEERS + 1)
        );
        assert_eq!(table(&t), before);
        // Updates of peers we hold still merge.
        let mut update = fill(0, 1);
        update[0].version = 2;
        assert_eq!(t.merge(update).unwrap().len(), 1);
    }

    #[test]
    fn connected_needs_both_ends() {
        let mut t = Topology::new(entry(1, 10, &[2, 3]));
        t.merge(vec![entry(2, 1, &[1]), entry(3, 1, &[])]).unwrap();
        assert!(t.connected(name(1), name(2)));
        assert!(t.connected(name(2), name(1)));
        assert!(!t.connected(name(1), name(3)));
        assert!(!t.connected(name(3), name(1)));
        assert!(!t.connected(name(1), name(1)));
        assert!(!t.connected(name(1), name(9)));
    }

    #[test]
    fn gc_removes_unreachable_peers() {
        // 1 - 2 - 3 symmetric; 4 only claims 3; 5 and 6 are an island.
        let mut t = Topology::new(entry(1, 10, &[2]));
        t.merge(vec![
            entry(2, 1, &[1, 3]),
            entry(3, 1, &[2]),
            entry(4, 1, &[3]),
            entry(5, 1, &[6]),
            entry(6, 1, &[5]),
        ])
        .unwrap();
        assert_eq!(t.gc(), vec![name(4), name(5), name(6)]);
        let left: Vec<_> = t.entries().map(|e| e.name).collect();
        assert_eq!(left, vec![name(1), name(2), name(3)]);
        assert_eq!(t.gc(), vec![]);
        // Losing our only link drops everyone else, never ourselves.
        t.set_our_connections(vec![]);
        assert_eq!(t.gc(), vec![name(2), name(3)]);
        assert_eq!(t.len(), 1);
        assert_eq!(t.our_entry().name, name(1));
    }

    #[test]
    fn discovery_addresses_are_what_others_report() {
        let mut t = Topology::new(entry(1, 10, &[2]));
        let mut e2 = entry(2, 1, &[1, 3]);
        e2.connections.push(conn(3)); // duplicate report
        let mut e3 = entry(3, 1, &[2, 4]);
        e3.connections.push(ConnectionInfo {
            peer: name(4),
            addr: addr(44),
            outbound: true,
        });
        e3.connections.push(conn(3)); // a self-report is not evidence
        t.merge(vec![e2, e3]).unwrap();
        assert_eq!(
            t.discovery_addresses(),
            vec![
                (name(2), addr(2)),
                (name(3), addr(3)),
                (name(4), addr(4)),
                (name(4), addr(44)),
            ]
        );
    }

    // ---- properties ----

    fn arb_entry() -> impl Strategy<Value = PeerEntry> {
        (
            1u8..8,
            0u64..4,
            0u64..3,
            proptest::collection::vec((1u8..8, any::<bool>()), 0..4),
            "[a-c]{0,2}",
        )
            .prop_map(|(n, version, uid, conns, nickname)| PeerEntry {
                name: name(n),
                nickname,
                uid,
                version,
                connections: conns
                    .into_iter()
                    .map(|(c, outbound)| ConnectionInfo {
                        peer: name(c),
                        addr: addr(c),
                        outbound,
                    })
                    .collect(),
            })
    }

    fn arb_messages() -> impl Strategy<Value = Vec<Vec<PeerEntry>>> {
        proptest::collection::vec(proptest::collection::vec(arb_entry(), 0..5), 0..6)
    }

    fn base() -> Topology {
        let mut ours = entry(1, 2, &[2, 3]);
        ours.uid = 1;
        Topology::new(ours)
    }

    proptest! {
        #[test]
        fn merge_is_idempotent(msgs in arb_messages()) {
            let mut t = base();
            for m in &msgs {
                t.merge(m.clone()).unwrap();
            }
            let once = table(&t);
            for m in &msgs {
                prop_assert_eq!(t.merge(m.clone()).unwrap(), vec![]);
            }
            prop_assert_eq!(table(&t), once);
        }

        #[test]
        fn merge_is_commutative(
            msgs in arb_messages(),
            seed in any::<u64>(),
        ) {
            let mut a = base();
            for m in &msgs {
                a.merge(m.clone()).unwrap();
            }
            // The same entries in another order and grouping.
            let mut all: Vec<PeerEntry> = msgs.into_iter().flatten().collect();
            let mut s = seed | 1;
            for i in (1..all.len()).rev() {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                all.swap(i, (s % (i as u64 + 1)) as usize);
            }
            let mut b = base();
            for chunk in all.chunks(2) {
                b.merge(chunk.to_vec()).unwrap();
            }
            let mut c = base();
            c.merge(all.into_iter().rev().collect()).unwrap();
            prop_assert_eq!(table(&a), table(&b));
            prop_assert_eq!(table(&a), table(&c));
        }

        #[test]
        fn merge_reports_exactly_what_changed(msgs in arb_messages()) {
            let mut t = base();
            for m in msgs {
                let before = table(&t);
                let changed = t.merge(m).unwrap();
                for e in &changed {
                    prop_assert_eq!(t.get(&e.name), Some(e));
                    prop_assert!(!before.contains(e));
                }
                for e in table(&t) {
                    prop_assert!(before.contains(&e) || changed.contains(&e));
                }
            }
        }

        #[test]
        fn hostile_merge_leaves_table_unchanged(
            msgs in arb_messages(),
            good in proptest::collection::vec(arb_entry(), 0..4),
            bad in 0usize..5,
            at in any::<proptest::sample::Index>(),
        ) {
            let mut t = base();
            for m in msgs {
                t.merge(m).unwrap();
            }
            let before = table(&t);
            let ours = t.our_entry().clone();
            let mut m = good;
            let mut hostile = entry(5, 9, &[]);
            let pushed = match bad {
                0 => { hostile.name = PeerName::NONE; vec![hostile] }
                1 => {
                    hostile.connections.push(ConnectionInfo {
                        peer: PeerName::NONE, addr: addr(0), outbound: false,
                    });
                    vec![hostile]
                }
                2 => { hostile.nickname = "n".repeat(MAX_NICKNAME_LEN + 1); vec![hostile] }
                3 => {
                    hostile.connections = vec![conn(2); MAX_CONNECTIONS_PER_PEER + 1];
                    vec![hostile]
                }
                _ => (0..MAX_PEERS as u16)
                    .map(|i| {
                        let b = i.to_be_bytes();
                        PeerEntry { name: PeerName([0x0a, 0, 0, 0, b[0], b[1]]), ..entry(0, 1, &[]) }
                    })
                    .collect(),
            };
            for (k, h) in pushed.into_iter().enumerate() {
                let pos = if k == 0 { at.index(m.len() + 1) } else { m.len() };
                m.insert(pos, h);
            }
            prop_assert!(t.merge(m).is_err());
            prop_assert_eq!(table(&t), before);
            prop_assert_eq!(t.our_entry(), &ours);
        }
    }

    #[test]
    fn gc_after_waits_for_the_grace_period() {
        let mut t = Topology::new(entry(1, 1, &[]));
        t.merge(vec![entry(2, 1, &[3]), entry(3, 1, &[2])]).unwrap();
        let t0 = Instant::now();
        let grace = Duration::from_secs(5);
        assert!(t.gc_after(t0, grace).is_empty());
        assert!(t.gc_after(t0 + Duration::from_secs(4), grace).is_empty());
        assert_eq!(t.len(), 3);
        assert_eq!(t.gc_after(t0 + grace, grace), vec![name(2), name(3)]);
        assert_eq!(t.len(), 1);
    }
}
