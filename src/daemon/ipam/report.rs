//! What IPAM shows: the report's `ipam` section, and why a request waits,
//! in words a user can act on.

use std::collections::{BTreeMap, BTreeSet};

use super::{reachable, IpamShell};
use crate::api::protocol::{
    ConsensusReport, IpamAllocationReport, IpamOwnerReport, IpamRefusedReport, IpamReport,
    IpamWantReport,
};
use crate::core::ipam::allocator::{Start, Waiting};
use crate::core::ipam::space::Span;
use crate::core::PeerName;
use crate::daemon::Shared;

/// What `explain` needs from the control state, read before the IPAM
/// lock is taken (the two locks are never held together).
pub(super) struct MeshView {
    reach: BTreeSet<PeerName>,
    nicknames: BTreeMap<PeerName, String>,
    /// Peers given at launch or found, not connected: "addr: state".
    missing: Vec<String>,
}

impl MeshView {
    pub(super) fn now(shared: &Shared) -> MeshView {
        let reach = reachable(shared);
        let st = shared.state();
        MeshView {
            reach,
            nicknames: st
                .topology
                .entries()
                .map(|e| (e.name, e.nickname.clone()))
                .collect(),
            missing: st
                .targets
                .iter()
                .filter(|(_, t)| {
                    !matches!(
                        t.status,
                        crate::daemon::state::TargetStatus::Connected { .. }
                    )
                })
                .map(|(key, t)| format!("{key}: {}", t.status.word()))
                .collect(),
        }
    }

    fn name(&self, p: PeerName) -> String {
        match self.nicknames.get(&p) {
            Some(n) if !n.is_empty() => format!("{p}({n})"),
            _ => p.to_string(),
        }
    }
}

/// The `ipam` section of the report.
pub fn report(shared: &Shared) -> IpamReport {
    let view = MeshView::now(shared);
    let guard = shared.ipam();
    let s: &IpamShell = &guard;
    let c = &s.core;
    let ring = c.ring();
    let mut owners: BTreeMap<PeerName, IpamOwnerReport> = BTreeMap::new();
    for (r, e) in ring.ranges() {
        let o = owners.entry(e.owner).or_insert_with(|| IpamOwnerReport {
            peer: e.owner,
            nickname: view.nicknames.get(&e.owner).cloned().unwrap_or_default(),
            reachable: e.owner == c.me() || view.reach.contains(&e.owner),
            ranges: 0,
            addresses: 0,
            free: 0,
        });
        o.ranges += 1;
        o.addresses = o
            .addresses
            .saturating_add(u64::try_from(r.size()).unwrap_or(u64::MAX));
        let free = if e.owner == c.me() {
            c.space().free_in(r)
        } else {
            e.free
        };
        o.free = o
            .free
            .saturating_add(u64::try_from(free).unwrap_or(u64::MAX));
    }
    let consensus = match c.start() {
        Start::Consensus { quorum } if ring.is_empty() => Some(ConsensusReport {
            quorum: *quorum,
            heard: c.paxos().heard(),
            waiting_secs: s.waiting_since.map(|t| t.elapsed().as_secs()),
        }),
        _ => None,
    };
    let init = match c.start() {
        Start::Consensus { quorum } => format!("consensus (quorum {quorum})"),
        Start::Seed(p) => format!(
            "seed {}",
            p.iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join(",")
        ),
        Start::Observer => "observer".to_string(),
    };
    IpamReport {
        range: c.range().to_string(),
        default_subnet: c.default_subnet().to_string(),
        init,
        ready: !ring.is_empty(),
        cluster: if ring.is_empty() {
            String::new()
        } else {
            format!("{:016x}", ring.cluster())
        },
        consensus,
        owners: owners.into_values().collect(),
        allocations: c
            .allocations()
            .map(|(id, a)| IpamAllocationReport {
                id: id.to_string(),
                cidr: s.cidr(a).to_string(),
            })
            .collect(),
        pending: s.pending.clone(),
        wants: c
            .records()
            .iter()
            .flat_map(|(&p, r)| {
                r.wants.iter().map(move |w| IpamWantReport {
                    peer: p,
                    what: if w.span.size() == 1 {
                        format!("the address {}", span_text(s, w.span))
                    } else {
                        format!("space in {}", span_text(s, w.span))
                    },
                })
            })
            .collect(),
        quarantined: c
            .quarantined()
            .iter()
            .map(|q| u64::try_from(q.size()).unwrap_or(u64::MAX))
            .fold(0u64, u64::saturating_add),
        refused: s
            .refused
            .iter()
            .map(|(&peer, reason)| IpamRefusedReport {
                peer,
                reason: reason.clone(),
            })
            .collect(),
    }
}

/// Why a waiting request has not been answered, in a user's words.
pub(super) fn explain(view: &MeshView, s: &IpamShell, w: &Waiting) -> String {
    let reach = &view.reach;
    let name = |p: PeerName| view.name(p);
    match w {
        Waiting::Ring => match s.core.start() {
            Start::Consensus { quorum } => {
                let heard = s.core.paxos().heard();
                let n = heard.len().max(1);
                let missing = &view.missing;
                let detail = if missing.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", missing.join(", "))
                };
                format!(
                    "waiting for IP allocation consensus: heard from {n} of {quorum} peers{detail}"
                )
            }
            Start::Observer => "waiting for the IP allocation ring: this peer is an observer \
                                (--ipalloc-init observer) and no reachable peer has a ring yet"
                .to_string(),
            Start::Seed(_) => "the IP allocation ring is not ready".to_string(),
        },
        Waiting::Space(span) => {
            let ring = s.core.ring();
            let mut unreachable: BTreeMap<PeerName, u128> = BTreeMap::new();
            let mut reachable_free = 0u128;
            for (r, e) in ring.ranges() {
                if e.owner == s.core.me() || r.intersect(*span).is_none() {
                    continue;
                }
                if reach.contains(&e.owner) {
                    reachable_free += e.free;
                } else if e.free > 0 {
                    *unreachable.entry(e.owner).or_default() += e.free;
                }
            }
            let where_ = span_text(s, *span);
            if reachable_free == 0 && !unreachable.is_empty() {
                let names: Vec<String> = unreachable.keys().map(|p| name(*p)).collect();
                let first = unreachable.keys().next().map(|p| p.to_string()).unwrap_or_default();
                format!(
                    "all free space in {where_} is owned by unreachable peers {}; if they are gone for good, run weave-rs rmpeer {first}",
                    names.join(", ")
                )
            } else {
                format!("no free address in {where_} here, and no peer donated space in time")
            }
        }
        Waiting::Claim(owner, _) if *owner == s.core.me() => {
            "the address is in space taken over with rmpeer, which not every peer has acknowledged yet".to_string()
        }
        Waiting::Claim(owner, _) if !reach.contains(owner) => format!(
            "the address belongs to peer {}, which is unreachable; if it is gone for good, run weave-rs rmpeer {owner}",
            name(*owner)
        ),
        Waiting::Claim(owner, _) => format!(
            "the address belongs to peer {}, which did not hand it over in time",
            name(*owner)
        ),
    }
}

fn span_text(s: &IpamShell, span: Span) -> String {
    let o = s.core.offsets();
    match (o.addr(span.start()), o.addr(span.end().saturating_sub(1))) {
        (Some(a), Some(b)) if a == b => a.to_string(),
        (Some(a), Some(b)) => format!("{a}-{b}"),
        _ => "the range".to_string(),
    }
}
