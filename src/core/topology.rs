//! The mesh's shared picture: every peer's own entry (name, incarnation,
//! version, its established connections), merged from gossip.
//!
//! Merging keeps, per peer name, the entry with the greater
//! `(version, uid)` (ties broken on the rest of the entry); so it is
//! idempotent, commutative and associative, and gossip may be repeated,
//! reordered or lost.
//!
//! Gossip comes from outside, so every entry is checked before it merges,
//! and what breaks a rule is dropped or cut and counted (`GossipDrops`),
//! never an error that would close the connection carrying it:
//! - the reserved all-zero name: the entry is dropped;
//! - connections naming the reserved peer, connections past
//!   `MAX_CONNECTIONS_PER_PEER`, a nickname over `MAX_NICKNAME_LEN` bytes:
//!   cut from the entry, which merges;
//! - a version more than `MAX_VERSION_AHEAD_MS` ahead of our wall clock:
//!   dropped. Routers start their version at the wall clock in ms and add
//!   one per change, so only a forgery gets there; and since no version we
//!   hold is anywhere near `u64::MAX`, an owner can always outrank a forged
//!   entry for its name (it bumps past any entry for its name that it does
//!   not hold);
//! - new peers past `MAX_PEERS`: dropped (updates of peers we hold merge).

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::wire::handshake::truncate_utf8;
use super::PeerName;

/// Caps on what gossip from outside may make us hold.
pub const MAX_PEERS: usize = 1024;
pub const MAX_CONNECTIONS_PER_PEER: usize = 1024;
pub const MAX_NICKNAME_LEN: usize = 64;
/// How far ahead of our wall clock (in ms) a gossiped version may be:
/// 2^50 ms, some 35,000 years, so clocks that are merely wrong pass. The
/// owner of a name applies the same limit before it bumps past an entry for
/// it: were it to bump further, its entries would be out of everyone's
/// reach. Between routers whose clocks are `d` apart, a forgery placed at
/// the limit can thus hold an owner's updates back at some of them for `d`
/// (and until the next full gossip).
pub const MAX_VERSION_AHEAD_MS: u64 = 1 << 50;

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

/// Gossiped entries a merge dropped or cut, by reason. Each is a counter in
/// `report` (`core::router::Stats`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GossipDrops {
    /// Entries for new peers past `MAX_PEERS`.
    pub over_peer_cap: u64,
    /// Entries whose version is implausibly far ahead of our clock.
    pub future_version: u64,
    /// Entries under the reserved all-zero name.
    pub reserved_name: u64,
    /// Entries merged with part cut: connections naming the reserved peer
    /// or past `MAX_CONNECTIONS_PER_PEER`, a nickname past
    /// `MAX_NICKNAME_LEN`.
    pub trimmed: u64,
}

impl GossipDrops {
    pub fn is_empty(&self) -> bool {
        *self == GossipDrops::default()
    }
}

/// What a merge did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Merged {
    /// Entries that were new or newer than what we held, in name order,
    /// our own (bumped) entry last if we had to outrank an entry for our
    /// name: what to pass on.
    pub changed: Vec<PeerEntry>,
    pub dropped: GossipDrops,
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

    /// Replaces our own connection list (kept sorted by peer name, at most
    /// `MAX_CONNECTIONS_PER_PEER`: more could not be peers of a mesh within
    /// `MAX_PEERS`). When it changes, our version grows by one so the new
    /// entry outranks the old one everywhere; returns whether it changed.
    pub fn set_our_connections(&mut self, mut conns: Vec<ConnectionInfo>) -> bool {
        conns.sort_by(cmp_connection);
        conns.truncate(MAX_CONNECTIONS_PER_PEER);
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

    /// Merges gossiped entries, received when our wall clock read `now_ms`,
    /// into the table (see the module doc for what is dropped or cut).
    ///
    /// Per name the entry with the greater `(version, uid)` wins (ties
    /// broken on the rest of the entry, so the outcome never depends on
    /// arrival order). Entries naming ourselves never replace ours: one we
    /// do not hold whose version is at least ours (a past incarnation, or a
    /// forgery) makes us bump our version past it.
    pub fn merge(&mut self, entries: Vec<PeerEntry>, now_ms: u64) -> Merged {
        let mut dropped = GossipDrops::default();
        let limit = now_ms.saturating_add(MAX_VERSION_AHEAD_MS);

        // Reduce the message to one entry per name (the greatest), so the
        // result holds each name at most once.
        let mut best: BTreeMap<PeerName, PeerEntry> = BTreeMap::new();
        let mut outrank: Option<u64> = None;
        for mut e in entries {
            if e.name == PeerName::NONE {
                dropped.reserved_name += 1;
                continue;
            }
            if trim(&mut e) {
                dropped.trimmed += 1;
            }
            if e.version > limit {
                dropped.future_version += 1;
                continue;
            }
            if e.name == self.ourself {
                if &e != self.our_entry() {
                    outrank = outrank.max(Some(e.version));
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

        let mut room = MAX_PEERS.saturating_sub(self.peers.len());
        let mut changed = Vec::new();
        for (name, e) in best {
            match self.peers.get_mut(&name) {
                Some(held) => {
                    if cmp_entry(&e, held).is_gt() {
                        *held = e.clone();
                        changed.push(e);
                    }
                }
                None if room > 0 => {
                    room -= 1;
                    self.peers.insert(name, e.clone());
                    changed.push(e);
                }
                None => dropped.over_peer_cap += 1,
            }
        }

        if let Some(theirs) = outrank {
            if let Some(ours) = self.peers.get_mut(&self.ourself) {
                if theirs >= ours.version {
                    // At most now_ms + 2^50 + 1: far from saturating.
                    ours.version = theirs.saturating_add(1);
                    changed.push(ours.clone());
                }
            }
        }
        Merged { changed, dropped }
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

/// Cuts from `e` what it may not carry (see the module doc); returns
/// whether anything was cut.
fn trim(e: &mut PeerEntry) -> bool {
    let before = (e.connections.len(), e.nickname.len());
    e.connections.retain(|c| c.peer != PeerName::NONE);
    e.connections.truncate(MAX_CONNECTIONS_PER_PEER);
    let nick = truncate_utf8(&e.nickname, MAX_NICKNAME_LEN).len();
    e.nickname.truncate(nick);
    before != (e.connections.len(), e.nickname.len())
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

    /// Our wall clock in the tests (ms).
    const NOW: u64 = 1_700_000_000_000;

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
        let got = t.merge(vec![entry(2, 5, &[1])], NOW).changed;
        assert_eq!(got, vec![entry(2, 5, &[1])]);
        assert_eq!(t.len(), 2);
        // Older: ignored, nothing to pass on.
        assert_eq!(t.merge(vec![entry(2, 4, &[])], NOW).changed, vec![]);
        assert_eq!(t.get(&name(2)), Some(&entry(2, 5, &[1])));
        // Same again: idempotent.
        assert_eq!(t.merge(vec![entry(2, 5, &[1])], NOW).changed, vec![]);
        // Newer: replaces.
        let got = t.merge(vec![entry(2, 6, &[1, 3])], NOW).changed;
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
        t.merge(vec![b.clone()], NOW);
        assert_eq!(t.merge(vec![a.clone()], NOW).changed, vec![]);
        assert_eq!(t.get(&name(2)), Some(&b));
        // Within one message too, and only the winner is reported.
        let mut t = Topology::new(entry(1, 10, &[]));
        assert_eq!(t.merge(vec![b.clone(), a], NOW).changed, vec![b]);
    }

    #[test]
    fn our_own_echo_changes_nothing() {
        let mut t = Topology::new(entry(1, 10, &[2]));
        let ours = t.our_entry().clone();
        assert_eq!(t.merge(vec![ours.clone()], NOW), Merged::default());
        // Nor does an older entry of ours.
        let mut old = ours.clone();
        old.version = 9;
        old.connections.clear();
        assert_eq!(t.merge(vec![old], NOW), Merged::default());
        assert_eq!(t.our_entry(), &ours);
    }

    #[test]
    fn an_entry_for_our_name_we_do_not_hold_is_outranked() {
        let mut t = Topology::new(entry(1, 10, &[2]));
        let ours = t.our_entry().clone();
        // Our incarnation, a higher version: forged.
        let mut forged = ours.clone();
        forged.version = 99;
        forged.connections.clear();
        let got = t.merge(vec![forged], NOW).changed;
        assert_eq!(t.our_entry().version, 100);
        assert_eq!(t.our_entry().connections, ours.connections);
        assert_eq!(got, vec![t.our_entry().clone()]);
        // Our incarnation and version, other content: forged too.
        let mut forged = t.our_entry().clone();
        forged.nickname = "zzz".into();
        assert_eq!(t.merge(vec![forged], NOW).changed.len(), 1);
        assert_eq!(t.our_entry().version, 101);
        assert_eq!(t.our_entry().nickname, ours.nickname);
    }

    #[test]
    fn past_incarnation_makes_us_outrank_it() {
        let mut t = Topology::new(entry(1, 10, &[2]));
        let mut past = entry(1, 50, &[3]);
        past.uid = 7;
        let got = t.merge(vec![past.clone()], NOW).changed;
        assert_eq!(t.our_entry().version, 51);
        assert_eq!(t.our_entry().connections, vec![conn(2)]);
        assert_eq!(got, vec![t.our_entry().clone()]);
        // An older past incarnation: nothing to do.
        past.version = 20;
        assert_eq!(t.merge(vec![past], NOW).changed, vec![]);
        assert_eq!(t.our_entry().version, 51);
    }

    #[test]
    fn past_incarnation_with_equal_version_also_bumps() {
        let mut t = Topology::new(entry(1, 10, &[]));
        let mut past = entry(1, 10, &[]);
        past.uid = u64::MAX;
        assert_eq!(t.merge(vec![past], NOW).changed.len(), 1);
        assert_eq!(t.our_entry().version, 11);
    }

    #[test]
    fn hostile_entries_are_dropped_or_cut_and_counted() {
        let mut t = Topology::new(entry(1, 10, &[2]));
        t.merge(vec![entry(2, 1, &[1])], NOW);

        let mut zero = entry(3, 1, &[]);
        zero.name = PeerName::NONE;
        let mut zero_conn = entry(4, 1, &[2]);
        zero_conn.connections.push(ConnectionInfo {
            peer: PeerName::NONE,
            addr: addr(0),
            outbound: true,
        });
        let mut long_nick = entry(5, 1, &[]);
        long_nick.nickname = "é".repeat(MAX_NICKNAME_LEN); // twice the bytes
        let mut many_conns = entry(6, 1, &[]);
        many_conns.connections = vec![conn(9); MAX_CONNECTIONS_PER_PEER + 1];
        let future = entry(7, NOW + MAX_VERSION_AHEAD_MS + 1, &[]);
        let at_limit = entry(8, NOW + MAX_VERSION_AHEAD_MS, &[]);
        let saturated = entry(9, u64::MAX, &[]);

        let got = t.merge(
            vec![
                zero,
                zero_conn,
                long_nick,
                many_conns,
                future,
                at_limit.clone(),
                saturated,
            ],
            NOW,
        );
        assert_eq!(
            got.dropped,
            GossipDrops {
                over_peer_cap: 0,
                future_version: 2,
                reserved_name: 1,
                trimmed: 3,
            }
        );
        let mut want_4 = entry(4, 1, &[2]);
        want_4.connections.truncate(1);
        let mut want_5 = entry(5, 1, &[]);
        want_5.nickname = "é".repeat(MAX_NICKNAME_LEN / 2);
        let mut want_6 = entry(6, 1, &[]);
        want_6.connections = vec![conn(9); MAX_CONNECTIONS_PER_PEER];
        assert_eq!(got.changed, vec![want_4, want_5, want_6, at_limit]);
        let names: Vec<_> = t.entries().map(|e| e.name).collect();
        assert_eq!(
            names,
            vec![name(1), name(2), name(4), name(5), name(6), name(8)]
        );
        // What was cut merges as it is now: nothing new the second time.
        assert_eq!(t.merge(got.changed, NOW).changed, vec![]);
    }

    #[test]
    fn new_peers_past_the_cap_are_dropped_and_counted() {
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
        // We already hold one (ourselves): MAX_PEERS - 1 more fit, taken in
        // name order from a message naming more.
        let got = t.merge(fill(0, MAX_PEERS as u32 + 99), NOW);
        assert_eq!(t.len(), MAX_PEERS);
        assert_eq!(got.changed.len(), MAX_PEERS - 1);
        assert_eq!(got.dropped.over_peer_cap, 100);
        assert_eq!(got.changed, fill(0, MAX_PEERS as u32 - 1));
        let before = table(&t);
        let got = t.merge(fill(5000, 5001), NOW);
        assert_eq!(got.dropped.over_peer_cap, 1);
        assert_eq!(table(&t), before);
        // Updates of peers we hold still merge, beside a new name dropped.
        let mut update = fill(0, 1);
        update[0].version = 2;
        update.extend(fill(6000, 6001));
        let got = t.merge(update, NOW);
        assert_eq!(got.changed.len(), 1);
        assert_eq!(got.dropped.over_peer_cap, 1);
        assert_eq!(t.len(), MAX_PEERS);
    }

    #[test]
    fn our_own_connections_are_capped() {
        let mut t = Topology::new(entry(1, 10, &[]));
        let many: Vec<ConnectionInfo> = (0..2000u32)
            .map(|i| {
                let b = i.to_be_bytes();
                ConnectionInfo {
                    peer: PeerName([0x06, 0, b[0], b[1], b[2], b[3]]),
                    addr: addr(1),
                    outbound: false,
                }
            })
            .collect();
        assert!(t.set_our_connections(many.clone()));
        assert_eq!(
            t.our_entry().connections,
            many[..MAX_CONNECTIONS_PER_PEER].to_vec()
        );
    }

    #[test]
    fn versions_far_ahead_of_our_clock_are_dropped() {
        let mut t = Topology::new(entry(1, 10, &[]));
        for v in [NOW + MAX_VERSION_AHEAD_MS + 1, u64::MAX] {
            let got = t.merge(vec![entry(2, v, &[])], NOW);
            assert_eq!(got.changed, vec![]);
            assert_eq!(got.dropped.future_version, 1, "version {v}");
        }
        // A clock that is merely wrong passes: a year ahead, or at the limit.
        let year = 365 * 24 * 3600 * 1000;
        assert_eq!(
            t.merge(vec![entry(2, NOW + year, &[])], NOW).changed.len(),
            1
        );
        let at_limit = entry(2, NOW + MAX_VERSION_AHEAD_MS, &[]);
        assert_eq!(t.merge(vec![at_limit.clone()], NOW).changed, vec![at_limit]);
        // Entries for our own name too: we do not bump past them.
        let mut past = entry(1, u64::MAX, &[]);
        past.uid = 7;
        let got = t.merge(vec![past], NOW);
        assert_eq!((got.changed, got.dropped.future_version), (vec![], 1));
        assert_eq!(t.our_entry().version, 10);
    }

    // ---- forged entries against their owner ----

    /// Routers 1 - 2 - 3 in a line (1 is the owner under attack), each
    /// knowing the others, with wall clocks `skew[i]` ms apart from `NOW`.
    struct Line {
        nodes: Vec<Topology>,
        skew: [i64; 3],
        /// Milliseconds since `NOW`: one passes per delivery.
        elapsed: u64,
    }

    impl Line {
        fn new(skew: [i64; 3]) -> Line {
            let entries = [
                entry(1, NOW - 3000, &[2]),
                entry(2, NOW - 2000, &[1, 3]),
                entry(3, NOW - 1000, &[2]),
            ];
            let nodes = entries
                .iter()
                .map(|ours| {
                    let mut t = Topology::new(ours.clone());
                    let others = entries.iter().filter(|e| e.name != ours.name);
                    t.merge(others.cloned().collect(), NOW);
                    t
                })
                .collect();
            Line {
                nodes,
                skew,
                elapsed: 0,
            }
        }

        fn clock(&self, i: usize) -> u64 {
            NOW.saturating_add_signed(self.skew[i]) + self.elapsed
        }

        /// Delivers `msg` to node `to` and gossips on what changed, as the
        /// daemon does, until the line is quiet; returns what was dropped.
        fn deliver(&mut self, to: usize, msg: Vec<PeerEntry>) -> GossipDrops {
            let mut dropped = GossipDrops::default();
            let mut queue = VecDeque::from([(to, msg)]);
            while let Some((to, msg)) = queue.pop_front() {
                self.elapsed += 1;
                let now = self.clock(to);
                let got = self.nodes[to].merge(msg, now);
                dropped.future_version += got.dropped.future_version;
                if !got.changed.is_empty() {
                    for n in [to.wrapping_sub(1), to + 1] {
                        if n < self.nodes.len() {
                            queue.push_back((n, got.changed.clone()));
                        }
                    }
                }
            }
            dropped
        }

        /// The owner's entry, as the others hold it.
        fn views_of_owner(&self) -> Vec<Option<PeerEntry>> {
            self.nodes
                .iter()
                .map(|t| t.get(&name(1)).cloned())
                .collect()
        }

        /// The owner changes its connections and gossips its entry.
        fn owner_changes(&mut self, connections: &[u8]) {
            let conns = connections.iter().map(|&c| conn(c)).collect();
            assert!(self.nodes[0].set_our_connections(conns));
            let ours = self.nodes[0].our_entry().clone();
            self.deliver(1, vec![ours]);
        }

        fn assert_owner_wins(&self) {
            let ours = Some(self.nodes[0].our_entry().clone());
            for (i, view) in self.views_of_owner().iter().enumerate() {
                assert_eq!(view, &ours, "node {} holds a stale entry", i + 1);
            }
        }
    }

    fn forged(version: u64, uid: u64) -> PeerEntry {
        PeerEntry {
            nickname: "forged".into(),
            uid,
            version,
            ..entry(1, 0, &[3])
        }
    }

    #[test]
    fn a_saturated_forgery_is_dropped_everywhere() {
        let mut line = Line::new([0; 3]);
        let dropped = line.deliver(2, vec![forged(u64::MAX, u64::MAX)]);
        assert_eq!(dropped.future_version, 1);
        line.assert_owner_wins();
    }

    #[test]
    fn a_forgery_at_the_limit_is_beaten_by_its_owner_at_once() {
        let mut line = Line::new([0; 3]);
        let v = line.clock(2) + 1 + MAX_VERSION_AHEAD_MS;
        line.deliver(2, vec![forged(v, u64::MAX)]);
        assert_eq!(line.nodes[0].our_entry().version, v + 1);
        line.assert_owner_wins();
        line.owner_changes(&[2, 3]);
        line.assert_owner_wins();
    }

    #[test]
    fn a_receiver_whose_clock_lags_catches_up_with_its_clock() {
        // Node 3's clock is 10 s behind: it refuses the forgery the others
        // took, and then, for those 10 s, the owner's entries that outrank
        // it; it keeps the owner's entry from before the forgery meanwhile.
        let lag = 10_000;
        let mut line = Line::new([0, 0, -lag]);
        let before = line.nodes[0].our_entry().clone();
        let v = line.clock(1) + 1 + MAX_VERSION_AHEAD_MS;
        line.deliver(1, vec![forged(v, u64::MAX)]);
        let views = line.views_of_owner();
        assert_eq!(views[1].as_ref(), Some(line.nodes[0].our_entry()));
        assert_eq!(views[2].as_ref(), Some(&before));
        // Once its clock has moved on by the lag, the owner's next gossip
        // (its periodic full gossip, or a change) wins there too.
        line.elapsed += lag as u64;
        line.owner_changes(&[2, 3]);
        line.assert_owner_wins();
    }

    #[test]
    fn an_owner_whose_clock_lags_wins_once_it_has_caught_up() {
        // The owner's clock is an hour behind: it refuses the forgery the
        // others took (bumping past it would put its own entries out of
        // their reach), until its clock has moved on by the lag; the next
        // full gossip then shows it the forgery again.
        let lag = 3_600_000;
        let mut line = Line::new([-lag, 0, 0]);
        let v = line.clock(2) + 1 + MAX_VERSION_AHEAD_MS;
        let dropped = line.deliver(2, vec![forged(v, u64::MAX)]);
        assert_eq!(dropped.future_version, 1);
        assert_eq!(
            line.views_of_owner()[1].as_ref().map(|e| e.version),
            Some(v)
        );
        line.elapsed += lag as u64;
        let full = line.nodes[1].entries_vec();
        line.deliver(0, full);
        line.assert_owner_wins();
    }

    #[test]
    fn a_forgery_sent_to_the_owner_past_the_limit_is_dropped() {
        let mut line = Line::new([0; 3]);
        let before = line.nodes[0].our_entry().clone();
        let v = line.clock(0) + 2 + MAX_VERSION_AHEAD_MS;
        assert_eq!(line.deliver(0, vec![forged(v, 1)]).future_version, 1);
        assert_eq!(line.nodes[0].our_entry(), &before);
        line.owner_changes(&[2, 3]);
        line.assert_owner_wins();
    }

    // ---- properties ----

    /// Versions as gossip may carry them: ordinary small ones (so entries
    /// collide), and the edges of what a receiver accepts.
    fn arb_version() -> impl Strategy<Value = u64> {
        prop_oneof![
            8 => 0u64..4,
            1 => Just(NOW + MAX_VERSION_AHEAD_MS),
            1 => Just(NOW + MAX_VERSION_AHEAD_MS + 1),
            1 => Just(NOW + 2 * MAX_VERSION_AHEAD_MS),
            1 => Just(u64::MAX),
        ]
    }

    fn arb_entry() -> impl Strategy<Value = PeerEntry> {
        (
            0u8..8,
            arb_version(),
            0u64..3,
            proptest::collection::vec((0u8..8, any::<bool>()), 0..4),
            "[a-c]{0,2}",
        )
            .prop_map(|(n, version, uid, conns, nickname)| {
                // Name 0 stands for the reserved all-zero name.
                let named = |i: u8| if i == 0 { PeerName::NONE } else { name(i) };
                PeerEntry {
                    name: named(n),
                    nickname,
                    uid,
                    version,
                    connections: conns
                        .into_iter()
                        .map(|(c, outbound)| ConnectionInfo {
                            peer: named(c),
                            addr: addr(c),
                            outbound,
                        })
                        .collect(),
                }
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
                t.merge(m.clone(), NOW);
            }
            let once = table(&t);
            for m in &msgs {
                prop_assert_eq!(t.merge(m.clone(), NOW).changed, vec![]);
            }
            prop_assert_eq!(table(&t), once);
        }

        #[test]
        fn merge_is_commutative_and_associative(
            msgs in arb_messages(),
            seed in any::<u64>(),
        ) {
            let mut a = base();
            for m in &msgs {
                a.merge(m.clone(), NOW);
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
                b.merge(chunk.to_vec(), NOW);
            }
            let mut c = base();
            c.merge(all.into_iter().rev().collect(), NOW);
            prop_assert_eq!(table(&a), table(&b));
            prop_assert_eq!(table(&a), table(&c));
        }

        #[test]
        fn merge_reports_exactly_what_changed(msgs in arb_messages()) {
            let mut t = base();
            for m in msgs {
                let before = table(&t);
                let changed = t.merge(m, NOW).changed;
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
        fn nothing_held_is_ever_out_of_bounds(msgs in arb_messages()) {
            let mut t = base();
            for m in msgs {
                t.merge(m, NOW);
            }
            for e in t.entries() {
                prop_assert!(e.name != PeerName::NONE);
                prop_assert!(e.connections.iter().all(|c| c.peer != PeerName::NONE));
                prop_assert!(e.nickname.len() <= MAX_NICKNAME_LEN);
                prop_assert!(e.connections.len() <= MAX_CONNECTIONS_PER_PEER);
                // Ours may be one past the limit (we bumped past an entry
                // at it); anything else is within it.
                prop_assert!(e.version <= NOW + MAX_VERSION_AHEAD_MS + 1);
            }
            prop_assert!(t.len() <= MAX_PEERS);
        }

        #[test]
        fn hostile_entries_merge_as_their_checked_form(
            msgs in arb_messages(),
            good in proptest::collection::vec(arb_entry(), 0..4),
            bad in 0usize..6,
            at in any::<proptest::sample::Index>(),
        ) {
            let mut t = base();
            for m in msgs {
                t.merge(m, NOW);
            }
            let mut u = t.clone();
            let mut hostile = entry(5, 9, &[2]);
            let mut checked = Some(hostile.clone());
            let mut want_dropped = GossipDrops::default();
            match bad {
                0 => {
                    hostile.name = PeerName::NONE;
                    checked = None;
                    want_dropped.reserved_name = 1;
                }
                1 => {
                    hostile.connections.push(ConnectionInfo {
                        peer: PeerName::NONE, addr: addr(0), outbound: false,
                    });
                    want_dropped.trimmed = 1;
                }
                2 => {
                    hostile.nickname = "n".repeat(MAX_NICKNAME_LEN + 100);
                    checked = checked.map(|c| PeerEntry { nickname: "n".repeat(MAX_NICKNAME_LEN), ..c });
                    want_dropped.trimmed = 1;
                }
                3 => {
                    hostile.connections = vec![conn(2); MAX_CONNECTIONS_PER_PEER + 1];
                    checked = checked.map(|c| PeerEntry {
                        connections: vec![conn(2); MAX_CONNECTIONS_PER_PEER], ..c
                    });
                    want_dropped.trimmed = 1;
                }
                4 => {
                    hostile.version = NOW + MAX_VERSION_AHEAD_MS + 1;
                    checked = None;
                    want_dropped.future_version = 1;
                }
                _ => {
                    hostile.version = u64::MAX;
                    checked = None;
                    want_dropped.future_version = 1;
                }
            }
            let pos = at.index(good.len() + 1);
            let mut m = good.clone();
            m.insert(pos, hostile);
            let got = t.merge(m, NOW);
            let mut m = good;
            if let Some(c) = checked {
                m.insert(pos, c);
            }
            let want = u.merge(m, NOW);
            prop_assert_eq!(table(&t), table(&u));
            prop_assert_eq!(got.changed, want.changed);
            let d = want.dropped;
            prop_assert_eq!(got.dropped, GossipDrops {
                over_peer_cap: d.over_peer_cap + want_dropped.over_peer_cap,
                future_version: d.future_version + want_dropped.future_version,
                reserved_name: d.reserved_name + want_dropped.reserved_name,
                trimmed: d.trimmed + want_dropped.trimmed,
            });
        }

        /// Whatever a forger sends in the owner's name, wherever in the
        /// line, the owner's entry is what everyone holds once gossip
        /// settles, and the owner's later entry wins everywhere after one
        /// round.
        #[test]
        fn no_forgery_freezes_its_owner(
            version in prop_oneof![
                any::<u64>(),
                Just(u64::MAX),
                (0u64..1 << 20).prop_map(|d| NOW + MAX_VERSION_AHEAD_MS - d),
                (0u64..1 << 20).prop_map(|d| NOW + MAX_VERSION_AHEAD_MS + d),
                (0u64..10_000).prop_map(|d| NOW - 5000 + d),
            ],
            // Any, the greatest, or the owner's own incarnation.
            uid in prop_oneof![any::<u64>(), Just(u64::MAX), Just(1000u64)],
            same_content in any::<bool>(),
            at in 0usize..3,
        ) {
            let mut line = Line::new([0; 3]);
            let mut f = forged(version, uid);
            if same_content {
                f.connections = line.nodes[0].our_entry().connections.clone();
                f.nickname = line.nodes[0].our_entry().nickname.clone();
            }
            line.deliver(at, vec![f]);
            line.assert_owner_wins();
            line.owner_changes(&[2, 3]);
            line.assert_owner_wins();
        }
    }

    #[test]
    fn gc_after_waits_for_the_grace_period() {
        let mut t = Topology::new(entry(1, 1, &[]));
        t.merge(vec![entry(2, 1, &[3]), entry(3, 1, &[2])], NOW);
        let t0 = Instant::now();
        let grace = Duration::from_secs(5);
        assert!(t.gc_after(t0, grace).is_empty());
        assert!(t.gc_after(t0 + Duration::from_secs(4), grace).is_empty());
        assert_eq!(t.len(), 3);
        assert_eq!(t.gc_after(t0 + grace, grace), vec![name(2), name(3)]);
        assert_eq!(t.len(), 1);
    }
}
