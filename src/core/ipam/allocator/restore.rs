//! Starting again and leaving: allocations and the ring from the state
//! file or from interfaces, unsettled take-overs, and `reset` handing our
//! space on.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use super::{Ipam, IpamError};
use crate::core::ipam::ring::{Ring, RingError};
use crate::core::ipam::space::Span;
use crate::core::PeerName;

impl Ipam {
    /// Restores allocations (from the state file, or found on interfaces at
    /// startup) without asking anyone: those outside our space are orphans,
    /// reclaimed from their owners by `think`.
    pub fn restore(&mut self, id: &str, addr: IpAddr) -> Result<(), IpamError> {
        let o = self
            .offsets
            .offset(addr)
            .ok_or(IpamError::AddrOutsideRange(addr, self.range()))?;
        match self.allocs.get(&o) {
            Some(holder) if holder != id => return Err(IpamError::Taken(addr, holder.clone())),
            Some(_) => return Ok(()),
            None => {}
        }
        if let Some(&owner) = self.lost.get(&o) {
            if self.g.ring.owner(o) == Some(owner) {
                return Err(IpamError::TakenElsewhere(addr, owner));
            }
            self.lost.remove(&o);
        }
        let _ = self.space.claim(o);
        self.record(id, o);
        Ok(())
    }

    /// Take-overs not yet settled when the state was saved.
    pub fn restore_quarantine(&mut self, spans: &[Span]) {
        self.quarantine.extend_from_slice(spans);
        self.rebuild();
    }

    /// `reset`: releases everything, and gives every range we own to the
    /// reachable peer that owns the most (then the smallest name), so the
    /// space is not lost. Returns who took it.
    pub fn leave(&mut self, reachable: &BTreeSet<PeerName>) -> Option<PeerName> {
        let ids: Vec<String> = self.by_id.keys().cloned().collect();
        for id in ids {
            self.release(&id);
        }
        let mut owned: BTreeMap<PeerName, u128> = BTreeMap::new();
        for (r, e) in self.g.ring.ranges() {
            if reachable.contains(&e.owner) {
                *owned.entry(e.owner).or_default() += r.size();
            }
        }
        let heir = owned
            .into_iter()
            .max_by_key(|&(p, n)| (n, std::cmp::Reverse(p)))
            .map(|(p, _)| p)
            .or_else(|| reachable.iter().next().copied())?;
        self.quarantine.clear();
        for r in self.g.ring.owned_by(self.me) {
            let _ = self.g.ring.give(self.me, r, heir);
        }
        self.rebuild();
        self.publish();
        Some(heir)
    }

    /// Replaces an empty ring with one read from the state file.
    pub fn restore_ring(&mut self, ring: Ring) -> Result<(), RingError> {
        if ring.size() != self.size {
            return Err(RingError::OtherSize {
                ours: self.size,
                theirs: ring.size(),
            });
        }
        if self.g.ring.is_empty() {
            self.g.ring = ring;
        } else {
            self.g.ring.merge(&ring)?;
        }
        self.rebuild();
        self.publish();
        Ok(())
    }
}
