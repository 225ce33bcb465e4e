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
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipnetwork::IpNetwork;
use tracing::{debug, info, warn};

mod report;
mod state_file;

pub use report::report;
pub use state_file::load;

use self::report::{explain, MeshView};
use self::state_file::save;
use super::Shared;
use crate::core::ipam::allocator::{Ipam, Outcome, Start, Waiting};
use crate::core::ipam::config::Init;
use crate::core::ipam::spec::AddrSpec;
use crate::core::wire::{control, ipam as wire};
use crate::core::PeerName;

/// The id of the address `expose` gives the host.
pub const EXPOSE_ID: &str = "weave:expose";
/// How often our IPAM gossip goes to every neighbour even unchanged.
const RESEND_INTERVAL: Duration = Duration::from_secs(5);
/// How often a waiting request looks again without news.
const POLL: Duration = Duration::from_millis(200);

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

fn now_ms(shared: &Shared) -> u64 {
    shared.started.elapsed().as_millis() as u64
}

/// Peers we can reach now (not us).
fn reachable(shared: &Shared) -> BTreeSet<PeerName> {
    mesh(shared).0
}

/// Peers we can reach now, and every peer the topology knows (us too).
fn mesh(shared: &Shared) -> (BTreeSet<PeerName>, BTreeSet<PeerName>) {
    let st = shared.state();
    let unreachable: BTreeSet<PeerName> = st.topology.unreachable().into_iter().collect();
    let known: BTreeSet<PeerName> = st.topology.entries().map(|e| e.name).collect();
    let reach = known
        .iter()
        .copied()
        .filter(|p| *p != shared.config.name && !unreachable.contains(p))
        .collect();
    (reach, known)
}

/// One step of the allocator; sends our gossip if it changed (or is due),
/// saves, wakes waiting requests, and repairs allocations lost to others.
pub fn step(shared: &Arc<Shared>, force_send: bool) {
    let (reach, known) = mesh(shared);
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

/// Ok once addresses can be given out (the ring exists), working towards
/// it for up to `patience`; else why not.
pub async fn ready(shared: &Arc<Shared>, patience: Duration) -> Result<(), String> {
    let deadline = Instant::now() + patience;
    loop {
        let notified = shared.ipam_changed.notified();
        if shared.ipam().core.want_ring() {
            return Ok(());
        }
        step(shared, false);
        if Instant::now() >= deadline {
            let view = MeshView::now(shared);
            return Err(explain(&view, &shared.ipam(), &Waiting::Ring));
        }
        let _ = tokio::time::timeout(POLL, notified).await;
    }
}

/// Why an allocation failed: it cannot be done, or it waited in vain (no
/// ring, no space from peers yet; a caller may ask again later).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocError {
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    GaveUp(String),
}

impl From<AllocError> for String {
    fn from(e: AllocError) -> String {
        e.to_string()
    }
}

/// Polls `attempt` until it answers or `patience` has passed.
async fn wait_for(
    shared: &Arc<Shared>,
    what: &str,
    patience: Duration,
    mut attempt: impl FnMut(&mut IpamShell) -> Outcome,
) -> Result<IpAddr, AllocError> {
    let deadline = Instant::now() + patience;
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
                return Err(AllocError::Refused(e.to_string()));
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
                    return Err(AllocError::GaveUp(format!(
                        "{what}: gave up after {}s: {why}",
                        patience.as_secs_f64()
                    )));
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
) -> Result<IpNetwork, AllocError> {
    allocate_within(shared, id, subnet, shared.config.ipam_timeout).await
}

async fn allocate_within(
    shared: &Arc<Shared>,
    id: &str,
    subnet: Option<IpNetwork>,
    patience: Duration,
) -> Result<IpNetwork, AllocError> {
    let prefix = subnet
        .unwrap_or_else(|| shared.ipam().core.default_subnet())
        .prefix();
    let what = format!(
        "allocate for {id} in {}",
        subnet.map_or("the default subnet".to_string(), |s| s.to_string())
    );
    let addr = wait_for(shared, &what, patience, |s| s.core.allocate(id, subnet)).await?;
    let mut s = shared.ipam();
    s.prefixes.entry(addr).or_insert(prefix);
    Ok(s.cidr(addr))
}

/// `cidr`'s address for `id`, exactly.
pub async fn claim(
    shared: &Arc<Shared>,
    id: &str,
    cidr: IpNetwork,
) -> Result<IpNetwork, AllocError> {
    claim_within(shared, id, cidr, shared.config.ipam_timeout).await
}

async fn claim_within(
    shared: &Arc<Shared>,
    id: &str,
    cidr: IpNetwork,
    patience: Duration,
) -> Result<IpNetwork, AllocError> {
    let what = format!("claim {cidr} for {id}");
    let addr = wait_for(shared, &what, patience, |s| s.core.claim(id, cidr.ip())).await?;
    shared.ipam().prefixes.insert(addr, cidr.prefix());
    Ok(cidr)
}

/// The addresses `specs` stand for (none: one from the default subnet),
/// allocated or claimed for `key`; literal ones outside the range as given.
pub async fn addresses(
    shared: &Arc<Shared>,
    key: &str,
    specs: &[AddrSpec],
) -> Result<Vec<IpNetwork>, AllocError> {
    addresses_within(shared, key, specs, shared.config.ipam_timeout).await
}

/// As `addresses`, giving up on each after `patience` (a CNI runtime
/// wants "try again later" soon, not a hang).
pub async fn addresses_within(
    shared: &Arc<Shared>,
    key: &str,
    specs: &[AddrSpec],
    patience: Duration,
) -> Result<Vec<IpNetwork>, AllocError> {
    let default = [AddrSpec::NetDefault];
    let specs = if specs.is_empty() {
        &default[..]
    } else {
        specs
    };
    let mut nets = Vec::new();
    for spec in specs {
        let net = match *spec {
            AddrSpec::Cidr(n) if !in_range(shared, n.ip()) => n,
            AddrSpec::Cidr(n) | AddrSpec::Ip(n) => claim_within(shared, key, n, patience).await?,
            AddrSpec::Net(subnet) => allocate_within(shared, key, Some(subnet), patience).await?,
            AddrSpec::NetDefault => allocate_within(shared, key, None, patience).await?,
        };
        if !nets.contains(&net) {
            nets.push(net);
        }
    }
    Ok(nets)
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
