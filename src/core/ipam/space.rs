//! The addresses one peer may hand out: the spans the ring gives it, and
//! which of their addresses are free. Addresses are offsets into the mesh's
//! allocation range (`u128` holds any IPv6 range), so nothing here knows
//! about address families; `super::Offsets` converts.
//!
//! Kept as two interval maps, owned and free (both coalesced), so that
//! allocating, claiming and freeing cost a B-tree lookup whatever the
//! number of allocations, and the free count of a span (what the ring
//! gossips) is a walk over its free intervals.

use std::collections::BTreeMap;
use std::ops::Bound;

/// The offsets `start..end`, never empty.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Span {
    start: u128,
    end: u128,
}

impl Span {
    /// `start..end`, or `None` when it would be empty.
    pub fn new(start: u128, end: u128) -> Option<Span> {
        (start < end).then_some(Span { start, end })
    }

    /// The single offset `a`.
    pub fn one(a: u128) -> Option<Span> {
        Span::new(a, a.checked_add(1)?)
    }

    pub fn start(&self) -> u128 {
        self.start
    }

    pub fn end(&self) -> u128 {
        self.end
    }

    pub fn size(&self) -> u128 {
        self.end - self.start
    }

    pub fn contains(&self, a: u128) -> bool {
        (self.start..self.end).contains(&a)
    }

    pub fn intersect(&self, other: Span) -> Option<Span> {
        Span::new(self.start.max(other.start), self.end.min(other.end))
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpaceError {
    #[error("address {0} is not in a range this peer owns")]
    NotOwned(u128),
    #[error("address {0} is already allocated")]
    Taken(u128),
    #[error("address {0} is not allocated")]
    NotAllocated(u128),
    #[error("the span {0}..{1} is not all owned and free here")]
    NotFree(u128, u128),
}

/// Disjoint, non-adjacent intervals `start -> end`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Intervals(BTreeMap<u128, u128>);

impl Intervals {
    /// The interval holding `a`.
    fn find(&self, a: u128) -> Option<Span> {
        let (&s, &e) = self.0.range(..=a).next_back()?;
        (a < e).then_some(Span { start: s, end: e })
    }

    /// Does one interval hold all of `span`?
    fn covers(&self, span: Span) -> bool {
        self.find(span.start).is_some_and(|i| span.end <= i.end)
    }

    /// Adds `span`, merging with what it overlaps or touches.
    fn insert(&mut self, span: Span) {
        let (mut start, mut end) = (span.start, span.end);
        if let Some((&s, &e)) = self.0.range(..=start).next_back() {
            if e >= start {
                start = s;
                end = end.max(e);
            }
        }
        let later: Vec<(u128, u128)> = self
            .0
            .range((Bound::Included(start), Bound::Included(end)))
            .map(|(&s, &e)| (s, e))
            .collect();
        for (s, e) in later {
            self.0.remove(&s);
            end = end.max(e);
        }
        self.0.insert(start, end);
    }

    /// Takes `span` out; it must lie within one interval (`covers`).
    fn cut(&mut self, span: Span) {
        let Some(i) = self.find(span.start) else {
            return;
        };
        self.0.remove(&i.start);
        if i.start < span.start {
            self.0.insert(i.start, span.start);
        }
        if span.end < i.end {
            self.0.insert(span.end, i.end);
        }
    }

    /// The first interval that overlaps `within`, cut to it.
    fn first_in(&self, within: Span) -> Option<Span> {
        if let Some(i) = self.find(within.start) {
            return i.intersect(within);
        }
        let (&s, &e) = self.0.range(within.start..within.end).next()?;
        Span { start: s, end: e }.intersect(within)
    }

    /// How many offsets of `within` the intervals hold.
    fn count_in(&self, within: Span) -> u128 {
        let first = self.find(within.start).map(|i| i.start);
        let from = first.unwrap_or(within.start);
        self.0
            .range(from..within.end)
            .filter_map(|(&s, &e)| Span { start: s, end: e }.intersect(within))
            .map(|i| i.size())
            .sum()
    }

    fn total(&self) -> u128 {
        self.0.iter().map(|(&s, &e)| e - s).sum()
    }

    fn iter(&self) -> impl Iterator<Item = Span> + '_ {
        self.0.iter().map(|(&s, &e)| Span { start: s, end: e })
    }
}

/// What one peer owns and what of it is allocated.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Space {
    owned: Intervals,
    free: Intervals,
}

impl Space {
    pub fn new() -> Space {
        Space::default()
    }

    /// The ring gave us `span` (all of it free); what we already owned of
    /// it keeps its allocations.
    pub fn add(&mut self, span: Span) {
        // Free = the new offsets not owned before, plus what was free.
        let mut gaps = Vec::new();
        let mut at = span.start;
        for o in self.owned.iter().filter_map(|o| o.intersect(span)) {
            if let Some(g) = Span::new(at, o.start) {
                gaps.push(g);
            }
            at = o.end;
        }
        if let Some(g) = Span::new(at, span.end) {
            gaps.push(g);
        }
        self.owned.insert(span);
        for g in gaps {
            self.free.insert(g);
        }
    }

    /// Gives `span` away (a donation, or the ring moved it): refused unless
    /// every offset of it is owned and free.
    pub fn remove(&mut self, span: Span) -> Result<(), SpaceError> {
        if !self.free.covers(span) {
            return Err(SpaceError::NotFree(span.start, span.end));
        }
        self.free.cut(span);
        self.owned.cut(span);
        Ok(())
    }

    /// Allocates the lowest free offset in `within`.
    pub fn allocate(&mut self, within: Span) -> Option<u128> {
        let a = self.free.first_in(within)?.start;
        self.free.cut(Span::one(a)?);
        Some(a)
    }

    /// Allocates `a` itself.
    pub fn claim(&mut self, a: u128) -> Result<(), SpaceError> {
        if self.owned.find(a).is_none() {
            return Err(SpaceError::NotOwned(a));
        }
        let Some(one) = Span::one(a).filter(|s| self.free.covers(*s)) else {
            return Err(SpaceError::Taken(a));
        };
        self.free.cut(one);
        Ok(())
    }

    /// Frees `a`.
    pub fn release(&mut self, a: u128) -> Result<(), SpaceError> {
        if self.owned.find(a).is_none() {
            return Err(SpaceError::NotOwned(a));
        }
        match Span::one(a) {
            Some(one) if self.free.find(a).is_none() => {
                self.free.insert(one);
                Ok(())
            }
            _ => Err(SpaceError::NotAllocated(a)),
        }
    }

    pub fn owns(&self, a: u128) -> bool {
        self.owned.find(a).is_some()
    }

    pub fn is_allocated(&self, a: u128) -> bool {
        self.owns(a) && self.free.find(a).is_none()
    }

    /// Free offsets in `within` (what the ring reports per range).
    pub fn free_in(&self, within: Span) -> u128 {
        self.free.count_in(within)
    }

    pub fn owned_len(&self) -> u128 {
        self.owned.total()
    }

    pub fn free_len(&self) -> u128 {
        self.free.total()
    }

    pub fn owned(&self) -> impl Iterator<Item = Span> + '_ {
        self.owned.iter()
    }

    /// What to donate to a peer that asked for space in `within`: the upper
    /// half of the largest free interval there (all of it when it is one
    /// address), at most `max` offsets. Not taken out yet: `remove` it once
    /// the ring says so.
    pub fn donation(&self, within: Span, max: u128) -> Option<Span> {
        let largest = self
            .free
            .iter()
            .filter_map(|s| s.intersect(within))
            .max_by_key(|s| (s.size(), u128::MAX - s.start))?;
        let give = largest.size().div_ceil(2).min(max.max(1));
        Span::new(largest.end - give, largest.end)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

    fn span(s: u128, e: u128) -> Span {
        Span::new(s, e).unwrap()
    }

    #[test]
    fn allocates_lowest_free_and_reuses_released() {
        let mut sp = Space::new();
        sp.add(span(10, 20));
        assert_eq!(sp.allocate(span(0, 100)), Some(10));
        assert_eq!(sp.allocate(span(0, 100)), Some(11));
        assert_eq!(sp.allocate(span(15, 17)), Some(15));
        sp.release(10).unwrap();
        assert_eq!(sp.allocate(span(0, 100)), Some(10));
        assert_eq!(sp.release(12), Err(SpaceError::NotAllocated(12)));
        assert_eq!(sp.release(30), Err(SpaceError::NotOwned(30)));
        assert_eq!(sp.allocate(span(20, 30)), None);
        assert_eq!(sp.free_in(span(0, 100)), 7);
    }

    #[test]
    fn claims_and_refuses_what_is_taken_or_not_ours() {
        let mut sp = Space::new();
        sp.add(span(0, 8));
        sp.claim(5).unwrap();
        assert_eq!(sp.claim(5), Err(SpaceError::Taken(5)));
        assert_eq!(sp.claim(8), Err(SpaceError::NotOwned(8)));
        assert!(sp.is_allocated(5));
        assert_eq!(sp.allocate(span(4, 8)), Some(4));
        assert_eq!(sp.allocate(span(5, 8)), Some(6));
    }

    #[test]
    fn gives_away_only_free_space() {
        let mut sp = Space::new();
        sp.add(span(0, 16));
        sp.claim(3).unwrap();
        assert_eq!(sp.remove(span(0, 8)), Err(SpaceError::NotFree(0, 8)));
        let d = sp.donation(span(0, u128::MAX), u128::MAX).unwrap();
        assert_eq!(d, span(10, 16));
        sp.remove(d).unwrap();
        assert_eq!(sp.owned().collect::<Vec<_>>(), vec![span(0, 10)]);
        assert_eq!(sp.donation(span(0, 100), 2), Some(span(8, 10)));
        // Space handed back keeps what was allocated before.
        sp.add(span(0, 16));
        assert!(sp.is_allocated(3));
        assert_eq!(sp.free_len(), 15);
    }

    #[test]
    fn the_top_of_the_u128_range_is_usable() {
        let mut sp = Space::new();
        sp.add(span(u128::MAX - 2, u128::MAX));
        assert_eq!(sp.allocate(span(0, u128::MAX)), Some(u128::MAX - 2));
        assert_eq!(sp.allocate(span(0, u128::MAX)), Some(u128::MAX - 1));
        assert_eq!(sp.allocate(span(0, u128::MAX)), None);
    }

    #[derive(Clone, Debug)]
    enum Op {
        Add(u8, u8),
        Remove(u8, u8),
        Allocate(u8, u8),
        Claim(u8),
        Release(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        let pair = || (0u8..64, 1u8..16);
        prop_oneof![
            pair().prop_map(|(s, l)| Op::Add(s, l)),
            pair().prop_map(|(s, l)| Op::Remove(s, l)),
            pair().prop_map(|(s, l)| Op::Allocate(s, l)),
            (0u8..80).prop_map(Op::Claim),
            (0u8..80).prop_map(Op::Release),
        ]
    }

    proptest! {
        /// Against a model of plain sets of offsets: same answers, and the
        /// intervals stay coalesced.
        #[test]
        fn behaves_like_sets_of_offsets(ops in prop::collection::vec(op(), 1..120)) {
            let mut sp = Space::new();
            let mut owned: BTreeSet<u128> = BTreeSet::new();
            let mut taken: BTreeSet<u128> = BTreeSet::new();
            for op in ops {
                match op {
                    Op::Add(s, l) => {
                        let sp_ = span(s.into(), u128::from(s) + u128::from(l));
                        sp.add(sp_);
                        owned.extend(sp_.start()..sp_.end());
                    }
                    Op::Remove(s, l) => {
                        let r = span(s.into(), u128::from(s) + u128::from(l));
                        let ok = (r.start()..r.end()).all(|a| owned.contains(&a) && !taken.contains(&a));
                        prop_assert_eq!(sp.remove(r).is_ok(), ok);
                        if ok {
                            for a in r.start()..r.end() {
                                owned.remove(&a);
                            }
                        }
                    }
                    Op::Allocate(s, l) => {
                        let w = span(s.into(), u128::from(s) + u128::from(l));
                        let want = (w.start()..w.end()).find(|a| owned.contains(a) && !taken.contains(a));
                        prop_assert_eq!(sp.allocate(w), want);
                        if let Some(a) = want {
                            taken.insert(a);
                        }
                    }
                    Op::Claim(a) => {
                        let a = u128::from(a);
                        let want = if !owned.contains(&a) {
                            Err(SpaceError::NotOwned(a))
                        } else if taken.contains(&a) {
                            Err(SpaceError::Taken(a))
                        } else {
                            taken.insert(a);
                            Ok(())
                        };
                        prop_assert_eq!(sp.claim(a), want);
                    }
                    Op::Release(a) => {
                        let a = u128::from(a);
                        let want = if !owned.contains(&a) {
                            Err(SpaceError::NotOwned(a))
                        } else if !taken.remove(&a) {
                            Err(SpaceError::NotAllocated(a))
                        } else {
                            Ok(())
                        };
                        prop_assert_eq!(sp.release(a), want);
                    }
                }
                prop_assert_eq!(sp.owned_len(), owned.len() as u128);
                prop_assert_eq!(sp.free_len(), (owned.len() - taken.len()) as u128);
                let w = span(8, 40);
                let free_model = (8..40).filter(|a| owned.contains(a) && !taken.contains(a)).count();
                prop_assert_eq!(sp.free_in(w), free_model as u128);
                for iv in [&sp.owned, &sp.free] {
                    let v: Vec<Span> = iv.iter().collect();
                    prop_assert!(v.windows(2).all(|p| p[0].end() < p[1].start()), "not coalesced: {:?}", v);
                }
            }
        }
    }
}
