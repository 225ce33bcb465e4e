//! One peer's address allocator: the pure state machine the daemon drives.
//!
//! It holds this peer's view of the mesh's IPAM gossip (`Gossip`: the ring,
//! the consensus claims, and one `Record` per peer) and its own allocations.
//! The daemon feeds it requests (`allocate`, `claim`, `release`), gossip
//! from peers (`merge`), and a periodic `think` with the set of reachable
//! peers; it sends `gossip()` to its neighbours whenever `think` or `merge`
//! says it changed. No I/O and no clock: time comes in as milliseconds.
//!
//! Safety rests on three rules:
//! - a peer allocates only in ranges the ring says it owns, and only the
//!   owner changes a range (donations, free counts);
//! - space is asked for through a `Want` in the asker's record, and given
//!   by one donor through the ring, so nothing but the ring moves space;
//! - ranges taken from a dead peer (`rmpeer`) stay unused until every other
//!   owner and every reachable peer publishes the same owners (their
//!   record's digest), so of two peers taking over at once only the winner
//!   of the merge ever allocates there.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnetwork::IpNetwork;

mod answers;
mod restore;

use super::consensus::{Paxos, Proposal};
use super::ring::{Ring, RingError};
use super::space::{Space, Span};
use super::Offsets;
use crate::core::PeerName;

/// Records kept, one per peer; more are ignored.
pub const MAX_RECORDS: usize = 512;
/// Requests for space one peer may have open at once.
pub const MAX_WANTS: usize = 8;
/// Refusals of claims one peer publishes (the latest are kept).
pub const MAX_DENIED: usize = 16;
/// A proposal with no progress for this long is replaced by a new one.
const PROPOSAL_RETRY_MS: u64 = 2_000;
/// A request for space not met by the chosen donor within this long is
/// met by any peer with free space there (free counts are per range, so
/// the choice can miss).
const DONATION_FALLBACK_MS: u64 = 1_500;

/// A request for space: `span` is one address for a claim.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Want {
    pub id: u64,
    pub span: Span,
}

/// What one peer publishes about itself.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Record {
    /// Bumped by the peer at every change; the greater wins a merge.
    pub seq: u64,
    /// `Ring::ownership_digest` of the peer's ring.
    pub digest: u64,
    pub wants: Vec<Want>,
    /// Claims refused: (asker, want id).
    pub denied: Vec<(PeerName, u64)>,
}

/// The IPAM state a peer gossips.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gossip {
    pub range: IpNetwork,
    pub ring: Ring,
    pub paxos: Paxos,
    pub records: BTreeMap<PeerName, Record>,
}

/// How the first ring comes about (`--ipalloc-init`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Start {
    /// Agree with `quorum` peers when the first address is needed.
    Consensus { quorum: usize },
    /// The ring is split between these peers, with no talking.
    Seed(Vec<PeerName>),
    /// Own nothing at first; take the ring from peers, ask for space.
    Observer,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IpamError {
    #[error("{0} is not within the allocation range {1} (--ipalloc-range)")]
    OutsideRange(IpNetwork, IpNetwork),
    #[error("{0} is not within the allocation range {1} (--ipalloc-range)")]
    AddrOutsideRange(IpAddr, IpNetwork),
    #[error("no free address left in {0}: every address of it is allocated")]
    Full(IpNetwork),
    #[error("{0} is already allocated to {1}")]
    Taken(IpAddr, String),
    #[error("{0} is in use on peer {1}")]
    TakenElsewhere(IpAddr, PeerName),
    #[error("peer {0} uses another allocation range ({1}, ours {2}): set the same --ipalloc-range on every peer")]
    OtherRange(PeerName, IpNetwork, IpNetwork),
    #[error("peer {0} belongs to another IPAM cluster: {1}")]
    OtherCluster(PeerName, RingError),
    #[error("cannot remove {0}: it is this peer")]
    RemoveSelf(PeerName),
}

/// Why a request cannot be answered yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Waiting {
    /// No ring yet: consensus (or, for an observer, a ring from peers).
    Ring,
    /// No free space here; a donation was asked for.
    Space(Span),
    /// The address (`Span::one`) belongs to a peer, asked to give it (or,
    /// when it is us, it is in space taken over and not yet settled).
    Claim(PeerName, Span),
}

/// The answer to `allocate` or `claim`.
pub type Outcome = Result<Result<IpAddr, Waiting>, IpamError>;

/// One peer's allocator.
#[derive(Clone, Debug)]
pub struct Ipam {
    me: PeerName,
    offsets: Offsets,
    size: u128,
    default_subnet: IpNetwork,
    start: Start,
    g: Gossip,
    space: Space,
    /// Offset -> the id it is allocated to.
    allocs: BTreeMap<u128, String>,
    by_id: BTreeMap<String, BTreeSet<u128>>,
    /// Ranges taken over, not used until acknowledged.
    quarantine: Vec<Span>,
    /// Wants of others already answered: (asker, want id).
    answered: BTreeSet<(PeerName, u64)>,
    /// Allocations lost to another owner: (id, address); for the daemon.
    conflicts: Vec<(String, IpAddr)>,
    /// Offsets lost so, with the peer that refused them: never restored
    /// again while that peer owns them (an attachment may still show them).
    lost: BTreeMap<u128, PeerName>,
    /// An address is wanted while the ring is empty: consensus is on.
    needed: bool,
    /// When consensus last moved (ms), to retry a stalled proposal.
    paxos_moved: u64,
    next_want: u64,
    /// When each open want of another peer was first seen (ms).
    seen_wants: BTreeMap<(PeerName, u64), u64>,
    /// The peers reachable at the last `think`.
    reachable: BTreeSet<PeerName>,
}

impl Ipam {
    /// `default_subnet` must lie within `range` (the CLI checks it).
    pub fn new(me: PeerName, range: IpNetwork, default_subnet: IpNetwork, start: Start) -> Ipam {
        let offsets = Offsets::new(range);
        let size = offsets.all().map_or(1, |s| s.size());
        let ring = match &start {
            Start::Seed(peers) => Ring::seeded(seed_cluster(range, peers), size, peers),
            _ => Ring::new(0, size),
        };
        let mut ipam = Ipam {
            me,
            offsets,
            size,
            default_subnet,
            start,
            g: Gossip {
                range: offsets.range(),
                ring,
                paxos: Paxos::new(),
                records: BTreeMap::new(),
            },
            space: Space::new(),
            allocs: BTreeMap::new(),
            by_id: BTreeMap::new(),
            quarantine: Vec::new(),
            answered: BTreeSet::new(),
            conflicts: Vec::new(),
            lost: BTreeMap::new(),
            needed: false,
            paxos_moved: 0,
            next_want: 1,
            seen_wants: BTreeMap::new(),
            reachable: BTreeSet::new(),
        };
        ipam.rebuild();
        ipam.publish();
        ipam
    }

    pub fn me(&self) -> PeerName {
        self.me
    }

    /// Numbers this incarnation's wants from `base` (the daemon gives a
    /// random one), so that answers to a past life's wants never match.
    pub fn number_wants_from(&mut self, base: u64) {
        self.next_want = self.next_want.max(base.max(1));
    }

    pub fn range(&self) -> IpNetwork {
        self.offsets.range()
    }

    pub fn default_subnet(&self) -> IpNetwork {
        self.default_subnet
    }

    pub fn start(&self) -> &Start {
        &self.start
    }

    pub fn ring(&self) -> &Ring {
        &self.g.ring
    }

    pub fn paxos(&self) -> &Paxos {
        &self.g.paxos
    }

    pub fn records(&self) -> &BTreeMap<PeerName, Record> {
        &self.g.records
    }

    pub fn space(&self) -> &Space {
        &self.space
    }

    pub fn quarantined(&self) -> &[Span] {
        &self.quarantine
    }

    /// What to gossip.
    pub fn gossip(&self) -> &Gossip {
        &self.g
    }

    pub fn offsets(&self) -> Offsets {
        self.offsets
    }

    /// Every allocation: id and address.
    pub fn allocations(&self) -> impl Iterator<Item = (&str, IpAddr)> + '_ {
        self.allocs
            .iter()
            .filter_map(|(&o, id)| Some((id.as_str(), self.offsets.addr(o)?)))
    }

    /// The addresses allocated to `id`.
    pub fn lookup(&self, id: &str) -> Vec<IpAddr> {
        self.by_id
            .get(id)
            .into_iter()
            .flatten()
            .filter_map(|&o| self.offsets.addr(o))
            .collect()
    }

    /// Who holds `addr` here, if anyone.
    pub fn holder(&self, addr: IpAddr) -> Option<&str> {
        let o = self.offsets.offset(addr)?;
        self.allocs.get(&o).map(String::as_str)
    }

    /// Allocations lost because another peer owns their address now and
    /// refused to give it back; the daemon must stop using them.
    pub fn take_conflicts(&mut self) -> Vec<(String, IpAddr)> {
        std::mem::take(&mut self.conflicts)
    }

    /// An address for `id` in `subnet` (None: the default subnet). The
    /// same id asking again gets the same address.
    pub fn allocate(&mut self, id: &str, subnet: Option<IpNetwork>) -> Outcome {
        let subnet = subnet.unwrap_or(self.default_subnet);
        let span = self
            .offsets
            .hosts_of(subnet)
            .ok_or(IpamError::OutsideRange(subnet, self.range()))?;
        if let Some(&o) = self
            .by_id
            .get(id)
            .and_then(|os| os.iter().find(|&&o| span.contains(o)))
        {
            return Ok(Ok(self.addr(o)));
        }
        if self.g.ring.is_empty() {
            self.needed = true;
            return Ok(Err(Waiting::Ring));
        }
        if let Some(o) = self.space.allocate(span) {
            self.record(id, o);
            return Ok(Ok(self.addr(o)));
        }
        if self.full(span) {
            return Err(IpamError::Full(subnet));
        }
        self.want(span);
        Ok(Err(Waiting::Space(span)))
    }

    /// `addr` for `id`, exactly: refused if another id or peer holds it.
    pub fn claim(&mut self, id: &str, addr: IpAddr) -> Outcome {
        let o = self
            .offsets
            .offset(addr)
            .ok_or(IpamError::AddrOutsideRange(addr, self.range()))?;
        match self.allocs.get(&o) {
            Some(holder) if holder == id => return Ok(Ok(addr)),
            Some(holder) => return Err(IpamError::Taken(addr, holder.clone())),
            None => {}
        }
        if self.g.ring.is_empty() {
            self.needed = true;
            return Ok(Err(Waiting::Ring));
        }
        if self.space.claim(o).is_ok() {
            self.record(id, o);
            self.drop_want(Span::one(o));
            return Ok(Ok(addr));
        }
        let Some(one) = Span::one(o) else {
            return Err(IpamError::AddrOutsideRange(addr, self.range()));
        };
        let owner = self.g.ring.owner(o).unwrap_or(self.me);
        if owner == self.me {
            // Ours but quarantined: wait until the take-over is settled.
            return Ok(Err(Waiting::Claim(owner, one)));
        }
        if let Some(w) = self.my_wants().iter().find(|w| w.span == one).copied() {
            if self.denied(owner, w.id) {
                self.drop_want(Some(one));
                return Err(IpamError::TakenElsewhere(addr, owner));
            }
        } else {
            self.want(one);
        }
        Ok(Err(Waiting::Claim(owner, one)))
    }

    /// Frees every address of `id`; returns them.
    pub fn release(&mut self, id: &str) -> Vec<IpAddr> {
        let Some(os) = self.by_id.remove(id) else {
            return Vec::new();
        };
        let mut freed = Vec::new();
        for o in os {
            self.allocs.remove(&o);
            // Not owned (an orphan): nothing to free here.
            let _ = self.space.release(o);
            self.drop_want(Span::one(o));
            freed.push(self.addr(o));
        }
        freed
    }

    /// Frees one address of `id`.
    pub fn release_addr(&mut self, id: &str, addr: IpAddr) -> bool {
        let Some(o) = self.offsets.offset(addr) else {
            return false;
        };
        if self.allocs.get(&o).map(String::as_str) != Some(id) {
            return false;
        }
        self.allocs.remove(&o);
        if let Some(os) = self.by_id.get_mut(id) {
            os.remove(&o);
            if os.is_empty() {
                self.by_id.remove(id);
            }
        }
        let _ = self.space.release(o);
        true
    }

    /// Whether the ring exists; if not, the next `think` works towards it
    /// as if an address were wanted (a runtime asking if we are ready).
    pub fn want_ring(&mut self) -> bool {
        if self.g.ring.is_empty() {
            self.needed = true;
            return false;
        }
        true
    }

    /// The daemon gave up waiting for space in `span`, or for a claim.
    pub fn abandon(&mut self, waiting: &Waiting) {
        match waiting {
            Waiting::Space(span) | Waiting::Claim(_, span) => self.drop_want(Some(*span)),
            Waiting::Ring => {}
        }
    }

    /// rmpeer: takes over every range of `dead`; returns how many
    /// addresses. They are used once every other peer agrees (see above).
    pub fn remove_peer(&mut self, dead: PeerName) -> Result<u128, IpamError> {
        if dead == self.me {
            return Err(IpamError::RemoveSelf(dead));
        }
        let taken = self.g.ring.take_over(self.me, dead);
        self.g.records.remove(&dead);
        let n = taken.iter().map(Span::size).sum();
        self.quarantine.extend(taken);
        self.rebuild();
        self.publish();
        Ok(n)
    }

    /// Merges a peer's gossip; true if ours changed (send it on).
    pub fn merge(&mut self, from: PeerName, theirs: &Gossip) -> Result<bool, IpamError> {
        if theirs.range != self.range() {
            return Err(IpamError::OtherRange(from, theirs.range, self.range()));
        }
        let mut ring_changed = false;
        if !theirs.ring.is_empty() {
            if self.g.ring.is_empty() {
                let mut adopted = Ring::new(theirs.ring.cluster(), self.size);
                adopted
                    .merge(&theirs.ring)
                    .map_err(|e| IpamError::OtherCluster(from, e))?;
                self.g.ring = adopted;
                ring_changed = true;
            } else {
                ring_changed = self
                    .g
                    .ring
                    .merge(&theirs.ring)
                    .map_err(|e| IpamError::OtherCluster(from, e))?;
            }
        }
        let mut changed = ring_changed;
        if self.g.ring.is_empty() && self.g.paxos.merge(&theirs.paxos) {
            changed = true;
        }
        for (&p, r) in &theirs.records {
            // Want ids of a past life of ours must not be reused: answers
            // to them may still be around.
            let past = r
                .denied
                .iter()
                .filter(|(asker, _)| *asker == self.me)
                .map(|(_, id)| *id)
                .chain(r.wants.iter().filter(|_| p == self.me).map(|w| w.id))
                .max();
            if let Some(id) = past {
                self.next_want = self.next_want.max(id.saturating_add(1));
            }
            changed |= self.merge_record(p, r);
        }
        if ring_changed {
            self.rebuild();
            self.publish();
        }
        Ok(changed)
    }

    fn merge_record(&mut self, p: PeerName, r: &Record) -> bool {
        if p != self.me && self.g.records.get(&p).is_some_and(|ours| ours.seq >= r.seq) {
            return false;
        }
        let mut r = r.clone();
        r.wants.truncate(MAX_WANTS);
        r.denied.truncate(MAX_DENIED);
        if p == self.me {
            // Our own record from a past life: outrank it.
            let mine = self.g.records.entry(p).or_default();
            if r.seq > mine.seq || (r.seq == mine.seq && r != *mine) {
                mine.seq = r.seq.saturating_add(1);
                return true;
            }
            return false;
        }
        let room = self.g.records.len() < MAX_RECORDS;
        match self.g.records.get_mut(&p) {
            Some(ours) if r.seq > ours.seq => {
                *ours = r;
                true
            }
            Some(_) => false,
            None if room => {
                self.g.records.insert(p, r);
                true
            }
            None => false,
        }
    }

    /// Forgets the records of peers for which `keep` is false (gone from
    /// the mesh), except owners of ranges. True if any went.
    pub fn retain_records(&mut self, keep: impl Fn(PeerName) -> bool) -> bool {
        let owners: BTreeSet<PeerName> = self.g.ring.ranges().map(|(_, e)| e.owner).collect();
        let me = self.me;
        let before = self.g.records.len();
        self.g
            .records
            .retain(|&p, _| p == me || keep(p) || owners.contains(&p));
        self.answered.retain(|&(p, _)| keep(p));
        before != self.g.records.len()
    }

    /// One step: consensus, donations and refusals, take-overs settling,
    /// free counts. `reachable` are the peers we can talk to now (without
    /// us). True if our gossip changed.
    pub fn think(&mut self, reachable: &BTreeSet<PeerName>, now_ms: u64) -> bool {
        self.reachable.clone_from(reachable);
        let seq = self.my_seq();
        let mut changed = false;
        if self.g.ring.is_empty() {
            changed |= self.consensus(now_ms);
        }
        if !self.g.ring.is_empty() {
            // The ring exists: consensus has nothing left to say.
            if !self.g.paxos.nodes().is_empty() {
                self.g.paxos = Paxos::new();
                changed = true;
            }
            self.settle_quarantine(reachable);
            changed |= self.answer_wants(reachable, now_ms);
            self.reclaim_orphans();
            self.forget_met_wants();
            changed |= self.report_free();
        }
        self.publish();
        changed || self.my_seq() != seq
    }

    fn my_seq(&self) -> u64 {
        self.g.records.get(&self.me).map_or(0, |r| r.seq)
    }

    /// True if the paxos claims or the ring changed.
    fn consensus(&mut self, now_ms: u64) -> bool {
        let Start::Consensus { quorum } = self.start else {
            return false;
        };
        let before = self.g.paxos.nodes().get(&self.me).cloned();
        if self.needed {
            let highest = self.g.paxos.highest();
            let stalled =
                now_ms.saturating_sub(self.paxos_moved) >= PROPOSAL_RETRY_MS + self.jitter();
            if highest.is_none() || (stalled && self.g.paxos.decided(quorum).is_none()) {
                self.g.paxos.propose(self.me);
                self.paxos_moved = now_ms;
            }
        }
        if self.g.paxos.think(self.me, quorum) {
            self.paxos_moved = now_ms;
        }
        if let Some((p, value)) = self.g.paxos.decided(quorum) {
            let cluster = consensus_cluster(self.range(), p, &value);
            self.g.ring = Ring::seeded(cluster, self.size, &value);
            self.rebuild();
            return true;
        }
        self.g.paxos.nodes().get(&self.me) != before.as_ref()
    }

    /// A delay of 0..1 s of our own, so competing proposers do not retry
    /// in step.
    fn jitter(&self) -> u64 {
        let b = self.me.0;
        u64::from(u16::from_be_bytes([b[4], b[5]])) % 1000
    }

    /// Our ranges' free counts, where they changed.
    fn report_free(&mut self) -> bool {
        let mine: Vec<(Span, u128)> = self
            .g
            .ring
            .ranges()
            .filter(|(_, e)| e.owner == self.me)
            .map(|(r, e)| (r, e.free))
            .collect();
        let hosts = self.default_hosts();
        let mut changed = false;
        for (r, reported) in mine {
            // Free hosts of the default subnet: what most requests want.
            let free = hosts
                .and_then(|h| r.intersect(h))
                .map_or(0, |c| self.space.free_in(c));
            if free != reported {
                changed |= self
                    .g
                    .ring
                    .report_free(self.me, r.start(), free)
                    .unwrap_or(false);
            }
        }
        changed
    }

    /// Our record: its digest follows the ring; any change bumps its seq.
    fn publish(&mut self) {
        let digest = self.g.ring.ownership_digest();
        let mine = self.g.records.entry(self.me).or_default();
        if mine.digest != digest || mine.seq == 0 {
            mine.digest = digest;
            mine.seq = mine.seq.saturating_add(1);
        }
    }

    fn my_wants(&self) -> &[Want] {
        self.g
            .records
            .get(&self.me)
            .map_or(&[], |r| r.wants.as_slice())
    }

    fn want(&mut self, span: Span) {
        let id = self.next_want;
        let mine = self.g.records.entry(self.me).or_default();
        if mine.wants.iter().any(|w| w.span == span) {
            return;
        }
        self.next_want += 1;
        if mine.wants.len() >= MAX_WANTS {
            mine.wants.remove(0);
        }
        mine.wants.push(Want { id, span });
        mine.seq = mine.seq.saturating_add(1);
    }

    fn drop_want(&mut self, span: Option<Span>) {
        let Some(span) = span else { return };
        if let Some(mine) = self.g.records.get_mut(&self.me) {
            let before = mine.wants.len();
            mine.wants.retain(|w| w.span != span);
            if mine.wants.len() != before {
                mine.seq = mine.seq.saturating_add(1);
            }
        }
    }

    fn denied(&self, owner: PeerName, want: u64) -> bool {
        self.g
            .records
            .get(&owner)
            .is_some_and(|r| r.denied.contains(&(self.me, want)))
    }

    fn in_quarantine(&self, o: u128) -> bool {
        self.quarantine.iter().any(|s| s.contains(o))
    }

    /// Certainly no free address in `span`: none here, none taken over
    /// and unsettled, and no other owner's report leaves room for one.
    fn full(&self, span: Span) -> bool {
        self.space.free_in(span) == 0
            && !self.quarantine.iter().any(|q| q.intersect(span).is_some())
            && self
                .g
                .ring
                .ranges()
                .filter(|(r, e)| e.owner != self.me && r.intersect(span).is_some())
                .all(|(r, e)| self.free_bounds(r, &e, span).1 == 0)
    }

    fn record(&mut self, id: &str, o: u128) {
        self.allocs.insert(o, id.to_string());
        self.by_id.entry(id.to_string()).or_default().insert(o);
    }

    fn addr(&self, o: u128) -> IpAddr {
        self.offsets
            .addr(o)
            .unwrap_or_else(|| self.offsets.range().network())
    }

    /// Our space from the ring: owned ranges but quarantined ones, with our
    /// allocations taken out.
    fn rebuild(&mut self) {
        let mut space = Space::new();
        for span in self.g.ring.owned_by(self.me) {
            for piece in subtract(span, &self.quarantine) {
                space.add(piece);
            }
        }
        for &o in self.allocs.keys() {
            let _ = space.claim(o);
        }
        self.space = space;
    }
}

/// `span` without the parts in `cuts`.
fn subtract(span: Span, cuts: &[Span]) -> Vec<Span> {
    let mut pieces = vec![span];
    for c in cuts {
        pieces = pieces
            .into_iter()
            .flat_map(|p| {
                if p.intersect(*c).is_none() {
                    return vec![p];
                }
                [Span::new(p.start(), c.start()), Span::new(c.end(), p.end())]
                    .into_iter()
                    .flatten()
                    .filter_map(|s| s.intersect(p))
                    .collect()
            })
            .collect();
    }
    pieces
}

/// A cluster id from its parts (length-prefixed); never 0, which means
/// "no ring yet".
fn digest64(parts: &[&[u8]]) -> u64 {
    super::digest_u64(|h| {
        for p in parts {
            h.update(&(p.len() as u64).to_be_bytes());
            h.update(p);
        }
    })
    .max(1)
}

/// The cluster of a seeded ring: its range and peers.
pub fn seed_cluster(range: IpNetwork, peers: &[PeerName]) -> u64 {
    let mut peers = peers.to_vec();
    peers.sort();
    peers.dedup();
    let names: Vec<u8> = peers.iter().flat_map(|p| p.0).collect();
    digest64(&[b"seed", range.to_string().as_bytes(), &names])
}

/// The cluster of a ring made by consensus: its range and the decision.
pub fn consensus_cluster(range: IpNetwork, p: Proposal, peers: &[PeerName]) -> u64 {
    let names: Vec<u8> = peers.iter().flat_map(|p| p.0).collect();
    digest64(&[
        b"consensus",
        range.to_string().as_bytes(),
        &p.round.to_be_bytes(),
        &p.proposer.0,
        &names,
    ])
}
