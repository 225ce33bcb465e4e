//! Who owns which part of the allocation range: a ring of tokens (offsets),
//! each owning the offsets from itself up to the next token (the last one up
//! to the end of the range). Every offset therefore has exactly one owner
//! in any ring, whatever was merged into it.
//!
//! The merge is a union of tokens where, at each token, the entry that is
//! greatest in a total order (version, then owner, then free count) wins:
//! a join, so commutative, associative and idempotent by construction.
//! Tokens are never removed. Only the owner of a range changes the entries
//! inside it (a split when it donates, a new free count), and each change
//! bumps the version above the one it replaces; `take_over` (rmpeer) is the
//! exception, and two peers taking over the same dead peer at once settle on
//! the greater name. What keeps such a loser from allocating in between is
//! the daemon's business (it waits until the take-over is acknowledged).

use std::collections::BTreeMap;

use super::space::Span;
use crate::core::PeerName;

/// At most this many tokens: a ring of 1,000 peers that each split their
/// share a few times stays below it, and a whole ring fits one control
/// frame (46 bytes a token); gossip beyond it is refused.
pub const MAX_TOKENS: usize = 1 << 13;

/// How far a take-over raises a token's version (see `Ring::take_over`).
pub const TAKE_OVER_LEAP: u64 = 1 << 32;

/// One token's claim.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Entry {
    /// Compared first: the newer claim wins.
    pub version: u64,
    pub owner: PeerName,
    /// Free addresses in the range, as last reported by its owner.
    pub free: u128,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RingError {
    #[error("another cluster: its allocation range or initial peers differ (cluster {theirs:016x}, ours {ours:016x})")]
    OtherCluster { ours: u64, theirs: u64 },
    #[error("a range of {theirs} addresses where ours has {ours}")]
    OtherSize { ours: u128, theirs: u128 },
    #[error("token {0} is outside the range")]
    OutOfRange(u128),
    #[error("the ring would hold more than {MAX_TOKENS} tokens")]
    TooManyTokens,
    #[error("{0}..{1} is not within one range owned here")]
    NotOwned(u128, u128),
    #[error("the ring is not initialised yet")]
    Empty,
}

/// The ring of one cluster: which peer owns which offsets of `0..size`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ring {
    /// Derived from the range and the way the ring was first made, so that
    /// rings of different meshes are never merged.
    cluster: u64,
    size: u128,
    entries: BTreeMap<u128, Entry>,
}

impl Ring {
    /// An empty ring (nobody owns anything yet) for `0..size`.
    pub fn new(cluster: u64, size: u128) -> Ring {
        Ring {
            cluster,
            size: size.max(1),
            entries: BTreeMap::new(),
        }
    }

    /// The ring split evenly between `peers` (sorted, duplicates dropped):
    /// every peer that builds it from the same peers builds the same ring.
    pub fn seeded(cluster: u64, size: u128, peers: &[PeerName]) -> Ring {
        let mut ring = Ring::new(cluster, size);
        let mut peers = peers.to_vec();
        peers.sort();
        peers.dedup();
        let n = peers.len().min(MAX_TOKENS) as u128;
        if n == 0 {
            return ring;
        }
        let share = (ring.size / n).max(1);
        for (i, p) in peers.iter().enumerate() {
            let token = share * i as u128;
            if token >= ring.size {
                break;
            }
            let end = if i as u128 + 1 == n {
                ring.size
            } else {
                (token + share).min(ring.size)
            };
            ring.entries.insert(
                token,
                Entry {
                    version: 1,
                    owner: *p,
                    free: end - token,
                },
            );
        }
        ring
    }

    /// A ring as read from the wire or a file: refused, like a merge, if a
    /// token lies outside `0..size` or there are too many.
    pub fn from_entries(
        cluster: u64,
        size: u128,
        entries: impl IntoIterator<Item = (u128, Entry)>,
    ) -> Result<Ring, RingError> {
        let mut ring = Ring::new(cluster, size);
        for (token, e) in entries {
            if token >= ring.size {
                return Err(RingError::OutOfRange(token));
            }
            if ring.entries.len() >= MAX_TOKENS && !ring.entries.contains_key(&token) {
                return Err(RingError::TooManyTokens);
            }
            let ours = ring.entries.entry(token).or_insert(e);
            *ours = (*ours).max(e);
        }
        Ok(ring)
    }

    /// Every token and its entry, in order.
    pub fn entries(&self) -> impl Iterator<Item = (u128, Entry)> + '_ {
        self.entries.iter().map(|(&t, &e)| (t, e))
    }

    /// A digest of who owns what (tokens and owners, not versions or free
    /// counts): two peers with the same digest agree on every owner.
    pub fn ownership_digest(&self) -> u64 {
        super::digest_u64(|h| {
            h.update(&self.cluster.to_be_bytes());
            for (t, e) in &self.entries {
                h.update(&t.to_be_bytes());
                h.update(&e.owner.0);
            }
        })
    }

    pub fn cluster(&self) -> u64 {
        self.cluster
    }

    pub fn size(&self) -> u128 {
        self.size
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn tokens(&self) -> usize {
        self.entries.len()
    }

    /// Every range: its offsets and entry, in order.
    pub fn ranges(&self) -> impl Iterator<Item = (Span, Entry)> + '_ {
        let mut it = self.entries.iter().peekable();
        std::iter::from_fn(move || {
            let (&start, &e) = it.next()?;
            let end = it.peek().map_or(self.size, |(&t, _)| t);
            Some((Span::new(start, end)?, e))
        })
    }

    /// The range holding `offset`, and its entry. Offsets below the first
    /// token belong to nobody until the ring is initialised.
    pub fn range_of(&self, offset: u128) -> Option<(Span, Entry)> {
        if offset >= self.size {
            return None;
        }
        let (&start, &e) = self.entries.range(..=offset).next_back()?;
        let end = self
            .entries
            .range(offset + 1..)
            .next()
            .map_or(self.size, |(&t, _)| t);
        Some((Span::new(start, end)?, e))
    }

    pub fn owner(&self, offset: u128) -> Option<PeerName> {
        self.range_of(offset).map(|(_, e)| e.owner)
    }

    /// The ranges `peer` owns.
    pub fn owned_by(&self, peer: PeerName) -> Vec<Span> {
        self.ranges()
            .filter(|(_, e)| e.owner == peer)
            .map(|(s, _)| s)
            .collect()
    }

    /// Merges `other` into this ring; true if anything changed.
    pub fn merge(&mut self, other: &Ring) -> Result<bool, RingError> {
        if other.cluster != self.cluster {
            return Err(RingError::OtherCluster {
                ours: self.cluster,
                theirs: other.cluster,
            });
        }
        if other.size != self.size {
            return Err(RingError::OtherSize {
                ours: self.size,
                theirs: other.size,
            });
        }
        if let Some(&t) = other.entries.keys().find(|&&t| t >= self.size) {
            return Err(RingError::OutOfRange(t));
        }
        let new_tokens = other
            .entries
            .keys()
            .filter(|t| !self.entries.contains_key(t))
            .count();
        if self.entries.len() + new_tokens > MAX_TOKENS {
            return Err(RingError::TooManyTokens);
        }
        let mut changed = new_tokens > 0;
        for (&t, &theirs) in &other.entries {
            let ours = self.entries.entry(t).or_insert(theirs);
            if theirs > *ours {
                *ours = theirs;
                changed = true;
            }
        }
        Ok(changed)
    }

    /// `me` gives `span` (within one range it owns) to `to`: the range is
    /// split at the span's ends, each new or changed entry one version above
    /// the range's.
    pub fn give(&mut self, me: PeerName, span: Span, to: PeerName) -> Result<(), RingError> {
        let (range, e) = self
            .range_of(span.start())
            .filter(|(r, e)| e.owner == me && span.end() <= r.end())
            .ok_or(RingError::NotOwned(span.start(), span.end()))?;
        let added =
            usize::from(span.start() > range.start()) + usize::from(span.end() < range.end());
        if self.entries.len() + added > MAX_TOKENS {
            return Err(RingError::TooManyTokens);
        }
        let version = e.version.saturating_add(1);
        if span.end() < range.end() {
            let rest = Entry {
                version,
                owner: me,
                free: e.free.min(range.end() - span.end()),
            };
            self.entries.insert(span.end(), rest);
        }
        let given = Entry {
            version,
            owner: to,
            free: span.size(),
        };
        self.entries.insert(span.start(), given);
        if span.start() > range.start() {
            let head = Entry {
                version,
                owner: me,
                free: e.free.min(span.start() - range.start()),
            };
            self.entries.insert(range.start(), head);
        }
        Ok(())
    }

    /// `me` reports `free` addresses in its range starting at `token`.
    pub fn report_free(
        &mut self,
        me: PeerName,
        token: u128,
        free: u128,
    ) -> Result<bool, RingError> {
        let e = self
            .entries
            .get_mut(&token)
            .filter(|e| e.owner == me)
            .ok_or(RingError::NotOwned(token, token))?;
        if e.free == free {
            return Ok(false);
        }
        e.version = e.version.saturating_add(1);
        e.free = free;
        Ok(true)
    }

    /// rmpeer: `me` takes every range of `dead`; returns them. The version
    /// leaps by `TAKE_OVER_LEAP`, so that changes the dead peer made but
    /// never gossiped (free counts) cannot outrank the take-over.
    pub fn take_over(&mut self, me: PeerName, dead: PeerName) -> Vec<Span> {
        let taken: Vec<Span> = self
            .ranges()
            .filter(|(_, e)| e.owner == dead)
            .map(|(s, _)| s)
            .collect();
        for s in &taken {
            if let Some(e) = self.entries.get_mut(&s.start()) {
                e.version = e.version.saturating_add(TAKE_OVER_LEAP);
                e.owner = me;
            }
        }
        taken
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn p(n: u8) -> PeerName {
        PeerName([0, 0, 0, 0, 0, n])
    }

    fn span(s: u128, e: u128) -> Span {
        Span::new(s, e).unwrap()
    }

    #[test]
    fn seeded_rings_split_evenly_and_agree() {
        let a = Ring::seeded(7, 1000, &[p(3), p(1), p(2)]);
        let b = Ring::seeded(7, 1000, &[p(2), p(3), p(1), p(1)]);
        assert_eq!(a, b);
        assert_eq!(a.owned_by(p(1)), vec![span(0, 333)]);
        assert_eq!(a.owned_by(p(3)), vec![span(666, 1000)]);
        assert_eq!(a.owner(999), Some(p(3)));
        assert_eq!(a.owner(1000), None);
    }

    #[test]
    fn a_donation_splits_the_range_and_travels_by_merge() {
        let mut a = Ring::seeded(7, 100, &[p(1)]);
        let mut b = a.clone();
        a.give(p(1), span(40, 60), p(2)).unwrap();
        assert_eq!(a.owned_by(p(1)), vec![span(0, 40), span(60, 100)]);
        assert_eq!(a.owned_by(p(2)), vec![span(40, 60)]);
        assert_eq!(
            a.give(p(1), span(30, 50), p(3)),
            Err(RingError::NotOwned(30, 50)),
            "crosses into p2's range"
        );
        assert!(b.merge(&a).unwrap());
        assert_eq!(b, a);
        assert!(!b.merge(&a).unwrap());
    }

    #[test]
    fn other_clusters_are_not_merged() {
        let mut a = Ring::seeded(7, 100, &[p(1)]);
        let b = Ring::seeded(8, 100, &[p(2)]);
        assert!(matches!(a.merge(&b), Err(RingError::OtherCluster { .. })));
        let c = Ring::seeded(7, 200, &[p(2)]);
        assert!(matches!(a.merge(&c), Err(RingError::OtherSize { .. })));
        assert_eq!(a.owned_by(p(1)), vec![span(0, 100)]);
    }

    #[test]
    fn concurrent_take_overs_settle_on_one_owner() {
        let base = Ring::seeded(7, 90, &[p(1), p(2), p(3)]);
        let (mut on1, mut on2) = (base.clone(), base.clone());
        assert_eq!(on1.take_over(p(1), p(3)), vec![span(60, 90)]);
        on2.take_over(p(2), p(3));
        let mut x = on1.clone();
        x.merge(&on2).unwrap();
        on2.merge(&on1).unwrap();
        assert_eq!(x, on2);
        assert_eq!(x.owned_by(p(2)), vec![span(30, 60), span(60, 90)]);
    }

    /// A ring after a random history: seeded, then donations, free reports
    /// and take-overs by random peers on their own copies.
    fn history() -> impl Strategy<Value = Vec<(u8, u8, u8, u8)>> {
        prop::collection::vec((0u8..4, 1u8..6, 0u8..200, 1u8..40), 0..25)
    }

    fn replay(steps: &[(u8, u8, u8, u8)]) -> Ring {
        let mut r = Ring::seeded(7, 256, &[p(1), p(2), p(3)]);
        for &(kind, peer, at, n) in steps {
            let (at, n) = (u128::from(at), u128::from(n));
            match kind {
                0 => {
                    let _ = r.give(p(peer), span(at, at + n), p(peer % 5 + 1));
                }
                1 => {
                    let _ = r.report_free(p(peer), at, n);
                }
                2 => {
                    r.take_over(p(peer), p(peer % 5 + 1));
                }
                _ => {
                    if let Some((s, e)) = r.range_of(at) {
                        let _ = r.give(e.owner, s, p(peer));
                    }
                }
            }
        }
        r
    }

    fn merged(a: &Ring, b: &Ring) -> Ring {
        let mut m = a.clone();
        m.merge(b).unwrap();
        m
    }

    /// Whatever a peer sends: any tokens (some beyond the range), owners,
    /// versions and free counts.
    fn any_ring() -> impl Strategy<Value = Ring> {
        // Few versions, so that equal versions (ties) are common.
        let version = prop_oneof![0u64..4, Just(u64::MAX)];
        let entry = (version, 1u8..6, any::<u128>()).prop_map(|(version, o, free)| Entry {
            version,
            owner: p(o),
            free,
        });
        prop::collection::btree_map(0u128..300, entry, 0..20).prop_map(|entries| Ring {
            cluster: 7,
            size: 256,
            entries,
        })
    }

    proptest! {
        #[test]
        fn hostile_rings_are_refused_or_merged_lawfully(a in any_ring(), b in any_ring(), c in any_ring()) {
            let valid = |r: &Ring| r.entries.keys().all(|&t| t < r.size);
            let mut m = Ring::new(7, 256);
            let before = m.clone();
            let res = m.merge(&a);
            prop_assert_eq!(res.is_ok(), valid(&a));
            if res.is_err() {
                prop_assert_eq!(&m, &before, "a refused ring changed nothing");
            }
            if valid(&a) && valid(&b) && valid(&c) {
                prop_assert_eq!(merged(&a, &b), merged(&b, &a));
                prop_assert_eq!(merged(&merged(&a, &b), &c), merged(&a, &merged(&b, &c)));
                prop_assert_eq!(merged(&a, &a), a.clone());
            }
        }

        #[test]
        fn merge_is_commutative_associative_idempotent(
            ha in history(), hb in history(), hc in history()
        ) {
            let (a, b, c) = (replay(&ha), replay(&hb), replay(&hc));
            prop_assert_eq!(merged(&a, &b), merged(&b, &a));
            prop_assert_eq!(merged(&merged(&a, &b), &c), merged(&a, &merged(&b, &c)));
            prop_assert_eq!(merged(&a, &a), a.clone());
            // Every offset has one owner, and the ranges tile 0..size.
            let m = merged(&merged(&a, &b), &c);
            let mut at = 0;
            for (s, _) in m.ranges() {
                prop_assert_eq!(s.start(), at);
                at = s.end();
            }
            prop_assert_eq!(at, m.size());
        }
    }
}
