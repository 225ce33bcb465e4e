//! The daemon's side of IPAM: it carries gossip between the allocator
//! (`core::ipam::allocator`) and the control connections, keeps the state
//! file, and answers requests with a deadline and a reason when it passes.
//!
//! Requests (`allocate`, `claim`) poll the allocator: each attempt that has
//! to wait publishes what it waits for (a proposal, a want), steps the
//! allocator and sends its gossip, then sleeps until gossip arrives or
//! 200 ms pass. At the deadline the want is dropped and the error says why
//! in words a user can act on.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};
use tracing::{debug, info, warn};

use super::Shared;
use crate::api::protocol::{
    ConsensusReport, IpamAllocationReport, IpamOwnerReport, IpamRefusedReport, IpamReport,
    IpamWantReport,
};
use crate::core::ipam::allocator::{Ipam, Outcome, Start, Waiting};
use crate::core::ipam::config::Init;
use crate::core::ipam::ring::{Entry, Ring};
use crate::core::ipam::space::Span;
use crate::core::wire::{control, ipam as wire};
use crate::core::PeerName;

/// The id of the address `expose` gives the host.
pub const EXPOSE_ID: &str = "weave:expose";
/// How often our IPAM gossip goes to every neighbour even unchanged.
const RESEND_INTERVAL: Duration = Duration::from_secs(5);
/// How often a waiting request looks again without news.
const POLL: Duration = Duration::from_millis(200);
/// State saved at least this often while anything changes.
const SAVE_INTERVAL: Duration = Duration::from_secs(10);

/// The allocator and what the daemon keeps beside it.
pub struct IpamShell {
    pub core: Ipam,
    /// The prefix each allocated address was given with.
    prefixes: BTreeMap<IpAddr, u8>,
    /// Peers whose IPAM gossip we refuse, and why (shown in `status`).
    pub refused: BTreeMap<PeerName, String>,
    /// When a request first waited for consensus (for status).
    pub waiting_since: Option<Instant>,
    /// Requests waiting now: what for.
    pub pending: Vec<String>,
    last_sent: Option<Instant>,
    /// What we last sent: sent again only when it differs, or when due.
    sent: Vec<u8>,
    saved: Option<Vec<u8>>,
    saved_at: Option<Instant>,
    must_save: bool,
    /// Startup's reclaim is done: lost addresses may be repaired (before,
    /// the attachments they belong to are not all known yet).
    pub started: bool,
    /// Lost addresses being repaired now (one task each).
    repairing: BTreeSet<(String, IpAddr)>,
}

impl IpamShell {
    pub fn new(config: &super::Config) -> IpamShell {
        let c = &config.ipam;
        let start = match &c.init {
            Init::Consensus(_) => Start::Consensus {
                quorum: config.ipam_quorum.unwrap_or(1).max(1) as usize,
            },
            Init::Seed(peers) => Start::Seed(peers.clone()),
            Init::Observer => Start::Observer,
        };
        IpamShell {
            core: Ipam::new(config.name, c.range, c.default_subnet, start),
            prefixes: BTreeMap::new(),
            refused: BTreeMap::new(),
            waiting_since: None,
            pending: Vec::new(),
            last_sent: None,
            sent: Vec::new(),
            saved: None,
            saved_at: None,
            must_save: false,
            started: false,
            repairing: BTreeSet::new(),
        }
    }

    /// The address as a CIDR, with the prefix it was allocated with.
    pub fn cidr(&self, addr: IpAddr) -> IpNetwork {
        let prefix = self
            .prefixes
            .get(&addr)
            .copied()
            .unwrap_or_else(|| self.core.default_subnet().prefix());
        IpNetwork::new(addr, prefix).unwrap_or_else(|_| self.core.range())
    }

    /// Every allocation of `id`, as CIDRs.
    pub fn lookup(&self, id: &str) -> Vec<IpNetwork> {
        self.core
            .lookup(id)
            .into_iter()
            .map(|a| self.cidr(a))
            .collect()
    }

    fn forget_prefixes(&mut self, addrs: &[IpAddr]) {
        for a in addrs {
            self.prefixes.remove(a);
        }
    }
}

/// What the state file holds.
#[derive(Serialize, Deserialize)]
struct Saved {
    range: String,
    cluster: String,
    ring: Vec<SavedEntry>,
    quarantine: Vec<(String, String)>,
    allocations: Vec<SavedAllocation>,
}

#[derive(Serialize, Deserialize)]
struct SavedEntry {
    token: String,
    version: u64,
    owner: String,
    free: String,
}

#[derive(Serialize, Deserialize)]
struct SavedAllocation {
    id: String,
    cidr: String,
}

fn file(shared: &Shared) -> PathBuf {
    shared.config.state_dir.join("ipam.json")
}

fn snapshot(s: &IpamShell) -> Vec<u8> {
    let ring = s.core.ring();
    let saved = Saved {
        range: s.core.range().to_string(),
        cluster: format!("{:016x}", ring.cluster()),
        ring: ring
            .entries()
            .map(|(t, e)| SavedEntry {
                token: t.to_string(),
                version: e.version,
                owner: e.owner.to_string(),
                free: e.free.to_string(),
            })
            .collect(),
        quarantine: s
            .core
            .quarantined()
            .iter()
            .map(|q| (q.start().to_string(), q.end().to_string()))
            .collect(),
        allocations: s
            .core
            .allocations()
            .map(|(id, a)| SavedAllocation {
                id: id.to_string(),
                cidr: s.cidr(a).to_string(),
            })
            .collect(),
    };
    serde_json::to_vec_pretty(&saved).unwrap_or_default()
}

/// Reads the state file into a fresh allocator: the ring (if it is for our
/// range), take-overs still unsettled, and the allocations.
pub fn load(shared: &Shared) {
    let path = file(shared);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
        Err(e) => {
            warn!("IPAM state {}: {e}", path.display());
            return;
        }
    };
    let saved: Saved = match serde_json::from_slice(&bytes) {
        Ok(s) => s,
        Err(e) => {
            warn!("ignoring IPAM state {}: {e}", path.display());
            return;
        }
    };
    let mut s = shared.ipam();
    if saved.range != s.core.range().to_string() {
        warn!(
            "IPAM state {} is for range {}, not {}: starting afresh",
            path.display(),
            saved.range,
            s.core.range()
        );
        return;
    }
    match restore_ring(&saved, s.core.ring().size()) {
        Ok(Some(ring)) => {
            if let Err(e) = s.core.restore_ring(ring) {
                warn!("IPAM state: ring not restored: {e}");
            }
        }
        Ok(None) => {}
        Err(e) => warn!("IPAM state: ring not restored: {e}"),
    }
    let quarantine: Vec<Span> = saved
        .quarantine
        .iter()
        .filter_map(|(a, b)| Span::new(a.parse().ok()?, b.parse().ok()?))
        .collect();
    s.core.restore_quarantine(&quarantine);
    for a in &saved.allocations {
        let Ok(net) = a.cidr.parse::<IpNetwork>() else {
            warn!("IPAM state: bad address {:?} for {}", a.cidr, a.id);
            continue;
        };
        match s.core.restore(&a.id, net.ip()) {
            Ok(()) => {
                s.prefixes.insert(net.ip(), net.prefix());
            }
            Err(e) => warn!("IPAM state: {}: {e}", a.id),
        }
    }
    s.saved = Some(bytes);
    info!(
        "IPAM state restored: {} allocations, ring of {} ranges",
        saved.allocations.len(),
        s.core.ring().tokens()
    );
}

fn restore_ring(saved: &Saved, size: u128) -> Result<Option<Ring>, String> {
    if saved.ring.is_empty() {
        return Ok(None);
    }
    let cluster = u64::from_str_radix(&saved.cluster, 16).map_err(|e| e.to_string())?;
    let mut entries = Vec::new();
    for e in &saved.ring {
        let token: u128 = e.token.parse().map_err(|_| "bad token".to_string())?;
        let free: u128 = e.free.parse().map_err(|_| "bad free count".to_string())?;
        let owner: PeerName = e.owner.parse().map_err(|e| format!("{e}"))?;
        entries.push((
            token,
            Entry {
                version: e.version,
                owner,
                free,
            },
        ));
    }
    Ring::from_entries(cluster, size, entries)
        .map(Some)
        .map_err(|e| e.to_string())
}

/// Writes the state file if it changed: at once when allocations or
/// ownership changed (`must_save`), otherwise at most every 10 s.
fn save(shared: &Shared, s: &mut IpamShell) {
    let now = Instant::now();
    let due = s.must_save
        || s.saved_at
            .is_none_or(|t| now.duration_since(t) >= SAVE_INTERVAL);
    if !due {
        return;
    }
    let bytes = snapshot(s);
    if s.saved.as_deref() == Some(bytes.as_slice()) {
        s.must_save = false;
        return;
    }
    let path = file(shared);
    match crate::files::write_atomic(&path, &bytes, 0o600, None) {
        Ok(()) => {
            s.saved = Some(bytes);
            s.saved_at = Some(now);
            s.must_save = false;
        }
        Err(e) => warn!("saving IPAM state to {}: {e}", path.display()),
    }
}

fn now_ms(shared: &Shared) -> u64 {
    shared.started.elapsed().as_millis() as u64
}

/// Peers we can reach now (not us).
fn reachable(shared: &Shared) -> BTreeSet<PeerName> {
    let st = shared.state();
    let unreachable: BTreeSet<PeerName> = st.topology.unreachable().into_iter().collect();
    st.topology
        .entries()
        .map(|e| e.name)
        .filter(|p| *p != shared.config.name && !unreachable.contains(p))
        .collect()
}

/// One step of the allocator; sends our gossip if it changed (or is due),
/// saves, wakes waiting requests, and repairs allocations lost to others.
pub fn step(shared: &Arc<Shared>, force_send: bool) {
    let reach = reachable(shared);
    let known: BTreeSet<PeerName> = shared.state().topology.entries().map(|e| e.name).collect();
    let (frame, conflicts) = {
        let mut s = shared.ipam();
        let digest = s.core.ring().ownership_digest();
        s.core.think(&reach, now_ms(shared));
        s.core.retain_records(|p| known.contains(&p));
        if s.core.ring().ownership_digest() != digest {
            s.must_save = true;
        }
        let conflicts: Vec<(String, IpAddr)> = if s.started {
            let found = s.core.take_conflicts();
            found
                .into_iter()
                .filter(|c| s.repairing.insert(c.clone()))
                .collect()
        } else {
            Vec::new()
        };
        if !conflicts.is_empty() {
            s.must_save = true;
        }
        let due = s.last_sent.is_none_or(|t| t.elapsed() >= RESEND_INTERVAL);
        // Requests change the gossip between steps too (a want, a
        // release): compare what we would send with what we sent.
        let body = wire::emit(s.core.gossip());
        let frame = (body != s.sent || force_send || due).then(|| {
            s.last_sent = Some(Instant::now());
            let f = control::emit(control::Kind::Ipam, &body);
            s.sent = body;
            f
        });
        save(shared, &mut s);
        (frame, conflicts)
    };
    if let Some(f) = frame {
        shared.state().send_all(&f, None);
        shared.ipam_changed.notify_waiters();
    }
    for (id, addr) in conflicts {
        warn!("{addr} of {id} now belongs to another peer, which uses it: removing it here");
        let shared = shared.clone();
        shared.clone().spawn(async move {
            super::attachments::drop_lost_address(&shared, &id, addr).await;
            shared.ipam().repairing.remove(&(id, addr));
        });
    }
}

/// Our IPAM gossip, for a peer that just connected.
pub fn gossip_frame(shared: &Shared) -> Vec<u8> {
    control::emit(
        control::Kind::Ipam,
        &wire::emit(shared.ipam().core.gossip()),
    )
}

/// IPAM gossip from `from`. A malformed message or another cluster's ring
/// is counted, logged and shown; the connection stays.
pub fn on_gossip(shared: &Arc<Shared>, from: PeerName, body: &[u8]) {
    let g = match wire::parse(body) {
        Ok(g) => g,
        Err(e) => {
            debug!(peer = %from, "IPAM gossip dropped: {e}");
            shared.data().router.stats.dropped_ipam_gossip += 1;
            return;
        }
    };
    let merged = {
        let mut s = shared.ipam();
        let r = s.core.merge(from, &g);
        match &r {
            Err(e) => {
                let why = e.to_string();
                if s.refused.get(&from) != Some(&why) {
                    warn!(peer = %from, "IPAM gossip refused: {why}");
                    s.refused.insert(from, why);
                }
            }
            Ok(_) => {
                s.refused.remove(&from);
            }
        }
        r
    };
    match merged {
        Err(_) => shared.data().router.stats.refused_ipam_gossip += 1,
        Ok(true) => step(shared, true),
        Ok(false) => {}
    }
}

/// What `explain` needs from the control state, read before the IPAM
/// lock is taken (the two locks are never held together).
struct MeshView {
    reach: BTreeSet<PeerName>,
    nicknames: BTreeMap<PeerName, String>,
    /// Peers given at launch or found, not connected: "addr: state".
    missing: Vec<String>,
}

impl MeshView {
    fn now(shared: &Shared) -> MeshView {
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
                .filter(|(_, t)| !matches!(t.status, super::state::TargetStatus::Connected { .. }))
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
fn explain(view: &MeshView, s: &IpamShell, w: &Waiting) -> String {
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

/// Polls `attempt` until it answers or the deadline passes.
async fn wait_for(
    shared: &Arc<Shared>,
    what: &str,
    mut attempt: impl FnMut(&mut IpamShell) -> Outcome,
) -> Result<IpAddr, String> {
    let deadline = Instant::now() + shared.config.ipam_timeout;
    let mut first_wait = true;
    loop {
        let notified = shared.ipam_changed.notified();
        let outcome = attempt(&mut shared.ipam());
        match outcome {
            Ok(Ok(addr)) => {
                {
                    let mut s = shared.ipam();
                    s.must_save = true;
                    s.pending.retain(|p| p != what);
                }
                step(shared, false);
                return Ok(addr);
            }
            Err(e) => {
                shared.ipam().pending.retain(|p| p != what);
                return Err(e.to_string());
            }
            Ok(Err(w)) => {
                if first_wait {
                    first_wait = false;
                    let mut s = shared.ipam();
                    s.pending.push(what.to_string());
                    if w == Waiting::Ring && s.waiting_since.is_none() {
                        s.waiting_since = Some(Instant::now());
                    }
                }
                step(shared, false);
                if Instant::now() >= deadline {
                    let view = MeshView::now(shared);
                    let mut s = shared.ipam();
                    s.core.abandon(&w);
                    s.pending.retain(|p| p != what);
                    let why = explain(&view, &s, &w);
                    return Err(format!(
                        "{what}: gave up after {}s: {why}",
                        shared.config.ipam_timeout.as_secs()
                    ));
                }
                let _ = tokio::time::timeout(POLL, notified).await;
            }
        }
    }
}

/// An address for `id` in `subnet` (None: the default subnet), as a CIDR
/// with the subnet's prefix. Idempotent per id and subnet.
pub async fn allocate(
    shared: &Arc<Shared>,
    id: &str,
    subnet: Option<IpNetwork>,
) -> Result<IpNetwork, String> {
    let prefix = subnet
        .unwrap_or_else(|| shared.ipam().core.default_subnet())
        .prefix();
    let what = format!(
        "allocate for {id} in {}",
        subnet.map_or("the default subnet".to_string(), |s| s.to_string())
    );
    let addr = wait_for(shared, &what, |s| s.core.allocate(id, subnet)).await?;
    let mut s = shared.ipam();
    s.prefixes.entry(addr).or_insert(prefix);
    Ok(s.cidr(addr))
}

/// `cidr`'s address for `id`, exactly.
pub async fn claim(shared: &Arc<Shared>, id: &str, cidr: IpNetwork) -> Result<IpNetwork, String> {
    let what = format!("claim {cidr} for {id}");
    let addr = wait_for(shared, &what, |s| s.core.claim(id, cidr.ip())).await?;
    shared.ipam().prefixes.insert(addr, cidr.prefix());
    Ok(cidr)
}

/// Records that `id` holds `cidr` (found on an interface, or re-attached)
/// without asking anyone; outside the range, nothing to do.
pub fn restore(shared: &Shared, id: &str, cidr: IpNetwork) {
    let mut s = shared.ipam();
    if !s.core.range().contains(cidr.ip()) {
        return;
    }
    match s.core.restore(id, cidr.ip()) {
        Ok(()) => {
            s.prefixes.insert(cidr.ip(), cidr.prefix());
            s.must_save = true;
        }
        Err(e) => warn!("{id} has {cidr}, but {e}"),
    }
}

/// Frees every address of `id`.
pub fn release(shared: &Arc<Shared>, id: &str) -> Vec<IpNetwork> {
    let freed = {
        let mut s = shared.ipam();
        let cidrs = s.lookup(id);
        let freed = s.core.release(id);
        s.forget_prefixes(&freed);
        if !freed.is_empty() {
            s.must_save = true;
        }
        cidrs
    };
    if !freed.is_empty() {
        debug!("released {freed:?} of {id}");
        step(shared, false);
    }
    freed
}

/// Frees these addresses of `id` (the others stay).
pub fn release_addrs(shared: &Arc<Shared>, id: &str, addrs: &[IpAddr]) {
    let any = {
        let mut s = shared.ipam();
        let mut any = false;
        for a in addrs {
            if s.core.release_addr(id, *a) {
                s.prefixes.remove(a);
                any = true;
            }
        }
        s.must_save |= any;
        any
    };
    if any {
        step(shared, false);
    }
}

/// Whether `addr` lies in the allocation range (such literal addresses
/// are claimed, so that nobody else is given them).
pub fn in_range(shared: &Shared, addr: IpAddr) -> bool {
    shared.ipam().core.range().contains(addr)
}

/// rmpeer: take over the ranges of `peer` (a name or nickname), which must
/// not be reachable.
pub fn remove_peer(shared: &Arc<Shared>, peer: &str) -> Result<String, String> {
    let name = resolve_peer(shared, peer)?;
    if reachable(shared).contains(&name) {
        return Err(format!(
            "peer {peer} is still reachable: stop it (weave-rs stop or reset on its host) before removing it"
        ));
    }
    let n = {
        let mut s = shared.ipam();
        let n = s.core.remove_peer(name).map_err(|e| e.to_string())?;
        s.must_save = true;
        n
    };
    step(shared, true);
    info!("rmpeer {name}: took over {n} addresses");
    Ok(if n == 0 {
        format!("{name} owned no addresses")
    } else {
        format!(
            "took over {n} addresses from {name}; they are used once every peer has seen the take-over"
        )
    })
}

fn resolve_peer(shared: &Shared, peer: &str) -> Result<PeerName, String> {
    if let Ok(p) = peer.parse::<PeerName>() {
        return Ok(p);
    }
    let matches: Vec<PeerName> = shared
        .state()
        .topology
        .entries()
        .filter(|e| e.nickname == peer)
        .map(|e| e.name)
        .collect();
    match matches.as_slice() {
        [p] => Ok(*p),
        [] => {
            // Owners of ranges are known by name only once gone from the
            // topology: say how to name them.
            let owners: BTreeSet<String> = shared
                .ipam()
                .core
                .ring()
                .ranges()
                .map(|(_, e)| e.owner.to_string())
                .collect();
            Err(format!(
                "no peer called {peer}; give its name (owners of ranges: {})",
                owners.into_iter().collect::<Vec<_>>().join(", ")
            ))
        }
        _ => Err(format!("several peers are called {peer}: give the name")),
    }
}

/// `reset`: free everything and hand our space to a reachable peer.
pub fn leave(shared: &Arc<Shared>) -> String {
    let reach = reachable(shared);
    let to = {
        let mut s = shared.ipam();
        let to = s.core.leave(&reach);
        s.prefixes.clear();
        s.must_save = true;
        to
    };
    step(shared, true);
    match to {
        Some(p) => format!("handed this peer's addresses to {p}"),
        None => "no reachable peer to take this peer's addresses".to_string(),
    }
}

/// Allocations whose owner is gone, released at startup: containers,
/// namespaces and the host's exposed address no longer present. Ids of
/// other clients (the plugins) are theirs to release.
pub async fn release_orphans(shared: &Arc<Shared>) {
    let ids: BTreeSet<String> = shared
        .ipam()
        .core
        .allocations()
        .map(|(id, _)| id.to_string())
        .collect();
    let attached: BTreeSet<String> = shared.state().attached.keys().cloned().collect();
    let bridge: BTreeSet<IpAddr> = shared
        .netlink
        .bridge_addrs(&shared.config.bridge)
        .await
        .unwrap_or_default()
        .iter()
        .map(|n| n.ip())
        .collect();
    for id in ids {
        let gone = if id == EXPOSE_ID {
            let addrs = shared.ipam().core.lookup(&id);
            let stale: Vec<IpAddr> = addrs.into_iter().filter(|a| !bridge.contains(a)).collect();
            if !stale.is_empty() {
                info!("releasing {stale:?}: no longer on the bridge");
                release_addrs(shared, &id, &stale);
            }
            false
        } else {
            let ours = crate::docker::looks_like_container_id(&id)
                || id.starts_with('/')
                || id.starts_with("pid:");
            ours && !attached.contains(&id)
        };
        if gone {
            let freed = release(shared, &id);
            info!("released {freed:?}: {id} is gone");
        }
    }
}
