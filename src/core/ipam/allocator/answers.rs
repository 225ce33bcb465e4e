//! What a peer does for others and for space it is unsure of: settling
//! take-overs (rmpeer), answering wants (donations and claims), asking
//! back orphaned allocations, forgetting wants that were met.

use std::collections::{BTreeMap, BTreeSet};

use super::{Ipam, Want, DONATION_FALLBACK_MS, MAX_DENIED};
use crate::core::ipam::ring::Entry;
use crate::core::ipam::space::Span;
use crate::core::PeerName;

impl Ipam {
    pub(super) fn settle_quarantine(&mut self, reachable: &BTreeSet<PeerName>) {
        if self.quarantine.is_empty() {
            return;
        }
        let ring = &self.g.ring;
        let me = self.me;
        // Lost to a concurrent take-over: never ours to use.
        let before = self.quarantine.len();
        self.quarantine
            .retain(|s| ring.range_of(s.start()).is_some_and(|(_, e)| e.owner == me));
        let digest = ring.ownership_digest();
        let mut peers: BTreeSet<PeerName> = ring.ranges().map(|(_, e)| e.owner).collect();
        peers.extend(reachable);
        peers.remove(&me);
        let agreed = peers
            .iter()
            .all(|p| self.g.records.get(p).is_some_and(|r| r.digest == digest));
        if agreed {
            self.quarantine.clear();
        }
        if agreed || self.quarantine.len() != before {
            self.rebuild();
        }
    }

    /// Donate to peers that asked, and refuse claims of addresses in use.
    pub(super) fn answer_wants(&mut self, reachable: &BTreeSet<PeerName>, now_ms: u64) -> bool {
        let asks: Vec<(PeerName, Want)> = self
            .g
            .records
            .iter()
            .filter(|(&p, _)| p != self.me && reachable.contains(&p))
            .flat_map(|(&p, r)| r.wants.iter().map(move |w| (p, *w)))
            .filter(|(p, w)| !self.answered.contains(&(*p, w.id)))
            .collect();
        // Answers to wants since withdrawn are no longer needed.
        let records = &self.g.records;
        let open = |(p, id): &(PeerName, u64)| {
            records
                .get(p)
                .is_some_and(|r| r.wants.iter().any(|w| w.id == *id))
        };
        self.answered.retain(open);
        self.seen_wants.retain(|k, _| open(k));
        let mut changed = false;
        for (asker, w) in asks {
            if w.span.size() == 1 {
                changed |= self.answer_claim(asker, w);
                continue;
            }
            let first_seen = *self.seen_wants.entry((asker, w.id)).or_insert(now_ms);
            let overdue = now_ms.saturating_sub(first_seen) >= DONATION_FALLBACK_MS;
            if !overdue && self.best_donor(w.span, asker, reachable) != Some(self.me) {
                continue;
            }
            let free = self.space.free_in(w.span);
            if let Some(gift) = self.space.donation(w.span, free.div_ceil(2)) {
                if self.give(gift, asker) {
                    self.answered.insert((asker, w.id));
                    changed = true;
                }
            }
        }
        changed
    }

    /// Free addresses of range `r` (entry `e`) within `span`, as far as
    /// its owner's report tells: at least, and at most. Reports count free
    /// hosts of the default subnet; of the rest of `span` nothing is known
    /// (any of it may be free).
    pub(super) fn free_bounds(&self, r: Span, e: &Entry, span: Span) -> (u128, u128) {
        let counted = self.default_hosts().and_then(|h| r.intersect(h));
        let part = counted
            .and_then(|c| c.intersect(span))
            .map_or(0, |p| p.size());
        let outside = counted.map_or(0, |c| c.size()) - part;
        let uncounted = r.intersect(span).map_or(0, |t| t.size()) - part;
        (
            e.free.saturating_sub(outside),
            e.free.min(part).saturating_add(uncounted),
        )
    }

    pub(super) fn default_hosts(&self) -> Option<Span> {
        self.offsets.hosts_of(self.default_subnet)
    }

    fn answer_claim(&mut self, asker: PeerName, w: Want) -> bool {
        let a = w.span.start();
        if self.g.ring.owner(a) != Some(self.me) || self.in_quarantine(a) {
            return false;
        }
        if self.allocs.contains_key(&a) {
            let mine = self.g.records.entry(self.me).or_default();
            mine.denied.push((asker, w.id));
            if mine.denied.len() > MAX_DENIED {
                mine.denied.remove(0);
            }
            mine.seq = mine.seq.saturating_add(1);
            self.answered.insert((asker, w.id));
            true
        } else if self.give(w.span, asker) {
            self.answered.insert((asker, w.id));
            true
        } else {
            false
        }
    }

    /// Moves `span` (owned, free) to `to` in the ring.
    fn give(&mut self, span: Span, to: PeerName) -> bool {
        if self.space.remove(span).is_err() {
            return false;
        }
        // A span may cross ranges of ours: give each piece.
        let pieces: Vec<Span> = self
            .g
            .ring
            .ranges()
            .filter(|(_, e)| e.owner == self.me)
            .filter_map(|(r, _)| r.intersect(span))
            .collect();
        for piece in pieces {
            let _ = self.g.ring.give(self.me, piece, to);
        }
        self.rebuild();
        true
    }

    /// Which reachable peer should donate for `span`: the one reporting the
    /// most free addresses there (our own count is exact), then the
    /// smallest name. Everyone computes the same from the same ring.
    fn best_donor(
        &self,
        span: Span,
        asker: PeerName,
        reachable: &BTreeSet<PeerName>,
    ) -> Option<PeerName> {
        // From the reports alone, ours included, so every peer that sees
        // the same ring picks the same donor.
        let mut free: BTreeMap<PeerName, (u128, u128)> = BTreeMap::new();
        for (r, e) in self.g.ring.ranges() {
            let candidate = e.owner == self.me || reachable.contains(&e.owner);
            if e.owner == asker || !candidate || r.intersect(span).is_none() {
                continue;
            }
            let (lo, hi) = self.free_bounds(r, &e, span);
            let f = free.entry(e.owner).or_default();
            f.0 += lo;
            f.1 += hi;
        }
        free.into_iter()
            .filter(|(_, (_, hi))| *hi > 0)
            .max_by_key(|&(p, bounds)| (bounds, std::cmp::Reverse(p)))
            .map(|(p, _)| p)
    }

    /// Allocations outside our space (lost in a take-over, or restored
    /// before the ring said so): ask their owner for them; drop those it
    /// refuses.
    pub(super) fn reclaim_orphans(&mut self) {
        let orphans: Vec<u128> = self
            .allocs
            .keys()
            .copied()
            .filter(|&o| !self.space.owns(o) && !self.in_quarantine(o))
            .collect();
        for o in orphans {
            let Some(one) = Span::one(o) else { continue };
            let owner = self.g.ring.owner(o).unwrap_or(self.me);
            match self.my_wants().iter().find(|w| w.span == one).copied() {
                Some(w) if self.denied(owner, w.id) => {
                    if let Some(id) = self.allocs.remove(&o) {
                        if let Some(os) = self.by_id.get_mut(&id) {
                            os.remove(&o);
                            if os.is_empty() {
                                self.by_id.remove(&id);
                            }
                        }
                        let addr = self.addr(o);
                        self.conflicts.push((id, addr));
                        self.lost.insert(o, owner);
                    }
                    self.drop_want(Some(one));
                }
                Some(_) => {}
                None => self.want(one),
            }
        }
    }

    /// Wants met since: claimed addresses now ours, space now free here.
    pub(super) fn forget_met_wants(&mut self) {
        let space = &self.space;
        if let Some(mine) = self.g.records.get_mut(&self.me) {
            let before = mine.wants.len();
            mine.wants.retain(|w| {
                if w.span.size() == 1 {
                    !space.owns(w.span.start())
                } else {
                    space.free_in(w.span) == 0
                }
            });
            if mine.wants.len() != before {
                mine.seq = mine.seq.saturating_add(1);
            }
        }
    }
}
