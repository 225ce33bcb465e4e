//! The daemon's side of DNS: it registers names for what gets attached,
//! carries the records' gossip between the CRDT (`core::dns::records`) and
//! the control connections, and keeps the zone the server answers from
//! (`server`) in step with the records and with which peers are reachable.
//!
//! Lock rule, as for IPAM: never hold `state` and `dns` together; read
//! what the topology says first, then take the records.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

mod report;
mod server;
pub mod upstream;

pub use report::report;
pub use server::{serve, QueryStats};

use super::Shared;
use crate::core::dns::deaths::Deaths;
use crate::core::dns::records::{Key, Record, Records};
use crate::core::dns::zone::Zone;
use crate::core::dns::{qualify, NameError};
use crate::core::wire::{control, dns as wire};
use crate::core::PeerName;

/// How often our own records go to every neighbour even unchanged (so a
/// change lost with a full send queue still arrives).
const RESEND_INTERVAL: Duration = Duration::from_secs(30);

/// `launch`'s DNS settings.
#[derive(Debug, Clone)]
pub struct DnsConfig {
    /// Where the server listens (on the bridge), port 53.
    pub address: Ipv4Addr,
    /// Normalized, e.g. `weave.local.`.
    pub domain: String,
    pub ttl: u32,
    /// Where the upstream resolvers are read from.
    pub resolv_conf: PathBuf,
}

/// The records and what the daemon keeps beside them.
pub struct DnsShell {
    pub records: Records,
    /// Containers that died lately.
    deaths: Deaths,
    /// The incarnations whose records the zone holds now.
    visible: BTreeSet<(PeerName, u64)>,
    serial: u32,
    last_sent: Option<Instant>,
}

impl DnsShell {
    pub fn new(name: PeerName, uid: u64) -> DnsShell {
        DnsShell {
            records: Records::new(name, uid),
            deaths: Deaths::default(),
            visible: BTreeSet::new(),
            serial: 0,
            last_sent: None,
        }
    }
}

/// What the server reads for every query (the zone, swapped whole), and
/// what it tells the report.
#[derive(Default)]
pub struct Served {
    zone: RwLock<Arc<Zone>>,
    pub stats: QueryStats,
    /// The upstream servers once listening, or why it is not.
    listening: std::sync::Mutex<Option<Result<Vec<SocketAddr>, String>>>,
}

impl Served {
    fn listening(&self, l: Result<Vec<SocketAddr>, String>) {
        *self.listening.lock().unwrap_or_else(|e| e.into_inner()) = Some(l);
    }

    pub fn status(&self) -> Option<Result<Vec<SocketAddr>, String>> {
        self.listening
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn zone(&self) -> Arc<Zone> {
        self.zone.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set(&self, z: Zone) {
        *self.zone.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(z);
    }
}

fn now_ms(shared: &Shared) -> u64 {
    shared.started.elapsed().as_millis() as u64
}

/// The topology's incarnation of each peer it knows, and which of those
/// are visible (us, and the peers we can reach).
fn incarnations(shared: &Shared) -> (BTreeMap<PeerName, u64>, BTreeSet<(PeerName, u64)>) {
    let st = shared.state();
    let unreachable: BTreeSet<PeerName> = st.topology.unreachable().into_iter().collect();
    let uids: BTreeMap<PeerName, u64> = st.topology.entries().map(|e| (e.name, e.uid)).collect();
    let mut visible: BTreeSet<(PeerName, u64)> = uids
        .iter()
        .filter(|(p, _)| !unreachable.contains(p))
        .map(|(p, u)| (*p, *u))
        .collect();
    visible.insert((shared.config.name, shared.uid));
    (uids, visible)
}

/// Frames carrying `records`.
fn frames(records: &[Record]) -> Vec<Vec<u8>> {
    wire::emit(records)
        .iter()
        .map(|b| control::emit(control::Kind::Dns, b))
        .collect()
}

fn send(shared: &Shared, records: &[Record], except: Option<PeerName>) {
    if records.is_empty() {
        return;
    }
    let st = shared.state();
    for f in frames(records) {
        st.send_all(&f, except);
    }
}

/// Rebuilds the zone from the records of the visible incarnations.
fn rebuild(shared: &Shared, s: &mut DnsShell, visible: BTreeSet<(PeerName, u64)>) {
    let Some(cfg) = &shared.config.dns else {
        return;
    };
    s.serial = s.serial.wrapping_add(1);
    let zone = Zone::build(
        &cfg.domain,
        cfg.ttl,
        s.serial,
        s.records
            .live(|p, u| visible.contains(&(p, u)))
            .map(|(_, k, _)| (k.name.as_str(), k.addr)),
    );
    s.visible = visible;
    shared.dns_served.set(zone);
}

/// After our own change: gossip it and rebuild the zone.
fn changed(shared: &Shared, mut s: std::sync::MutexGuard<'_, DnsShell>, deltas: Vec<Record>) {
    if deltas.is_empty() {
        return;
    }
    let mut visible = s.visible.clone();
    visible.insert((shared.config.name, shared.uid));
    rebuild(shared, &mut s, visible);
    drop(s);
    send(shared, &deltas, None);
}

/// Names `addrs` as each of `names` (already qualified) for `container`
/// ("" for a name added by hand). A container that died meanwhile gets
/// nothing.
pub fn register(
    shared: &Shared,
    container: &str,
    names: &[String],
    addrs: &[IpAddr],
) -> Result<(), String> {
    let now = now_ms(shared);
    let mut s = shared.dns();
    if !container.is_empty() && s.deaths.is_dead(container, now) {
        debug!("not naming {container}: it died before its names were registered");
        return Ok(());
    }
    let mut deltas = Vec::new();
    let mut full = None;
    for name in names {
        for addr in addrs {
            let key = Key {
                name: name.clone(),
                addr: *addr,
            };
            match s.records.add(key, container, now) {
                Ok(Some(r)) => deltas.push(r),
                Ok(None) => {}
                Err(e) => full = Some(e),
            }
        }
    }
    changed(shared, s, deltas);
    match full {
        Some(e) => Err(e.to_string()),
        None => Ok(()),
    }
}

/// The names a container gets: its Docker name in the domain, and its
/// hostname when that lies in the domain.
pub fn container_names(domain: &str, name: &str, hostname: Option<&str>) -> Vec<String> {
    let mut names: Vec<String> = qualify(name, domain).into_iter().collect();
    let host = hostname.and_then(|h| crate::core::dns::normalize(h).ok());
    if let Some(h) = host.filter(|h| crate::core::dns::in_domain(h, domain)) {
        if !names.contains(&h) {
            names.push(h);
        }
    }
    names
}

/// Removes our records that `matches` selects.
pub fn unregister(shared: &Shared, matches: impl FnMut(&Key, &str) -> bool) -> usize {
    let now = now_ms(shared);
    let mut s = shared.dns();
    let deltas = s.records.remove_where(now, matches);
    let n = deltas.len();
    changed(shared, s, deltas);
    n
}

/// A container stopped or was removed: its names go, and a registration
/// still under way for it will not bring them back.
pub fn container_died(shared: &Shared, id: &str) {
    {
        let mut s = shared.dns();
        let now = now_ms(shared);
        s.deaths.died(id, now);
    }
    let n = unregister(shared, |_, c| c == id);
    if n > 0 {
        info!("removed {n} DNS records of container {}", short(id));
    }
}

/// A container (re)started: it may be named again.
pub fn container_started(shared: &Shared, id: &str) {
    shared.dns().deaths.started(id);
}

fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

/// DNS gossip from `from`: merged; what was new goes on to our other
/// neighbours, our own records that someone held stale go to everyone.
pub fn on_gossip(shared: &Arc<Shared>, from: PeerName, body: &[u8]) {
    let recs = match wire::parse(body) {
        Ok(r) => r,
        Err(e) => {
            debug!(peer = %from, "DNS gossip dropped: {e}");
            shared.data().router.stats.dropped_dns_gossip += 1;
            return;
        }
    };
    let (uids, visible) = incarnations(shared);
    let merged = {
        let mut s = shared.dns();
        let m = s
            .records
            .merge(recs, |p| uids.get(&p).copied(), now_ms(shared));
        if !m.new.is_empty() || !m.reissued.is_empty() {
            rebuild(shared, &mut s, visible);
        }
        m
    };
    if merged.dropped.total() > 0 {
        debug!(peer = %from, "DNS records dropped: {:?}", merged.dropped);
        shared.data().router.stats.dns_records_dropped += merged.dropped.total() as u64;
    }
    send(shared, &merged.new, Some(from));
    send(shared, &merged.reissued, None);
}

/// Every record we can vouch for, for a peer that just connected: ours and
/// those of the peers we can reach.
pub fn full_frames(shared: &Shared) -> Vec<Vec<u8>> {
    let (_, visible) = incarnations(shared);
    let all: Vec<Record> = shared
        .dns()
        .records
        .all()
        .into_iter()
        .filter(|r| visible.contains(&(r.origin, r.uid)))
        .collect();
    frames(&all)
}

/// Follows the topology: records of incarnations that are over go, the
/// zone shows only peers we can reach; tombstones expire; our records go
/// out again when due.
pub fn step(shared: &Shared) {
    if shared.config.dns.is_none() {
        return;
    }
    let (uids, visible) = incarnations(shared);
    let resend = {
        let mut s = shared.dns();
        s.records.expire(now_ms(shared));
        s.records
            .retain(|p, u| uids.get(&p).is_none_or(|cur| *cur == u));
        if s.visible != visible {
            rebuild(shared, &mut s, visible);
        }
        let due = s.last_sent.is_none_or(|t| t.elapsed() >= RESEND_INTERVAL);
        s.deaths.expire(now_ms(shared));
        due.then(|| {
            s.last_sent = Some(Instant::now());
            s.records.own()
        })
    };
    if let Some(own) = resend {
        send(shared, &own, None);
    }
}

/// `dns-add`/`dns-remove`'s NAME or CONTAINER: a name has a dot in it.
pub enum Owner {
    Name(String),
    Container(String),
}

impl Owner {
    pub fn parse(arg: &str, domain: &str) -> Result<Owner, NameError> {
        if arg.contains('.') {
            qualify(arg, domain).map(Owner::Name)
        } else {
            Ok(Owner::Container(arg.to_string()))
        }
    }
}

/// `dns-add ADDR... NAME|CONTAINER`: for a container, its names and (when
/// no address is given) the addresses it is attached with.
pub async fn add(shared: &Arc<Shared>, addrs: &[IpAddr], owner: &str) -> Result<String, String> {
    let domain = domain(shared)?;
    match Owner::parse(owner, &domain).map_err(|e| e.to_string())? {
        Owner::Name(name) => {
            if addrs.is_empty() {
                return Err(format!("dns-add {owner}: give at least one address"));
            }
            register(shared, "", std::slice::from_ref(&name), addrs)?;
            Ok(format!("{name} -> {}", join(addrs)))
        }
        Owner::Container(c) => {
            let info = crate::docker::container(&c)
                .await
                .map_err(|e| not_a_container(&c, e))?;
            let addrs = if addrs.is_empty() {
                attached_addrs(shared, &info.id)
            } else {
                addrs.to_vec()
            };
            if addrs.is_empty() {
                return Err(format!(
                    "{c} has no overlay address: give one, or attach it first"
                ));
            }
            let names = container_names(&domain, &info.name, info.hostname.as_deref());
            if names.is_empty() {
                return Err(format!("{c}: its name is not a valid DNS name"));
            }
            register(shared, &info.id, &names, &addrs)?;
            Ok(format!("{} -> {}", names.join(" "), join(&addrs)))
        }
    }
}

/// `dns-remove ADDR... NAME|CONTAINER` (no address: all of them).
pub async fn remove(shared: &Arc<Shared>, addrs: &[IpAddr], owner: &str) -> Result<String, String> {
    let domain = domain(shared)?;
    let hit = |k: &Key| addrs.is_empty() || addrs.contains(&k.addr);
    let n = match Owner::parse(owner, &domain).map_err(|e| e.to_string())? {
        Owner::Name(name) => unregister(shared, |k, _| k.name == name && hit(k)),
        Owner::Container(c) => {
            let id = match crate::docker::container(&c).await {
                Ok(info) => info.id,
                Err(_) if crate::docker::looks_like_container_id(&c) => c.clone(),
                Err(e) => return Err(not_a_container(&c, e)),
            };
            unregister(shared, |k, cid| cid == id && hit(k))
        }
    };
    if n == 0 {
        return Err(format!(
            "no DNS record of {owner} here{}",
            match addrs {
                [] => String::new(),
                a => format!(" with {}", join(a)),
            }
        ));
    }
    Ok(format!("removed {n}"))
}

/// `dns-lookup NAME`: the addresses this host would answer.
pub fn lookup(shared: &Shared, name: &str) -> Result<Vec<IpAddr>, String> {
    let domain = domain(shared)?;
    let name = qualify(name, &domain).map_err(|e| e.to_string())?;
    Ok(shared
        .dns_served
        .zone()
        .lookup(&name)
        .map(<[IpAddr]>::to_vec)
        .unwrap_or_default())
}

/// A container lookup failed: say so, and that a name needs a dot.
fn not_a_container(arg: &str, e: crate::docker::DockerError) -> String {
    format!("{e} (a NAME needs a dot, e.g. {arg}.weave.local; without one, {arg} is taken as a container)")
}

fn domain(shared: &Shared) -> Result<String, String> {
    shared
        .config
        .dns
        .as_ref()
        .map(|c| c.domain.clone())
        .ok_or_else(|| "DNS is off on this router (launched with --no-dns)".to_string())
}

fn attached_addrs(shared: &Shared, id: &str) -> Vec<IpAddr> {
    shared
        .state()
        .attached
        .get(id)
        .map(|a| {
            a.cidrs
                .iter()
                .filter_map(|c| c.parse::<ipnetwork::IpNetwork>().ok())
                .map(|n| n.ip())
                .collect()
        })
        .unwrap_or_default()
}

fn join(addrs: &[IpAddr]) -> String {
    addrs
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(" ")
}

/// At start: the DNS address on the bridge (the server binds it).
pub async fn prepare(shared: &Shared) {
    if let Some(cfg) = &shared.config.dns {
        if let Err(e) = shared
            .netlink
            .ensure_dns_address(&shared.config.bridge, cfg.address)
            .await
        {
            warn!("DNS: cannot put {} on the bridge: {e}", cfg.address);
        }
        // Replies leave by the bridge without rules now (`server::send`);
        // an older router's rules would slow every route lookup.
        if let Err(e) = shared.netlink.remove_dns_rules().await {
            warn!("DNS: cannot remove an older router's policy-routing rules: {e}");
        }
        shared.data().router.set_host_only(Some(cfg.address));
        if shared.config.plugin_socket.is_some() {
            let (bridge, addr) = (shared.config.bridge.clone(), cfg.address);
            let redirected = tokio::task::spawn_blocking(move || {
                crate::net::iptables::Iptables::default().ensure_dns_redirect(&bridge, addr)
            })
            .await;
            match redirected {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    warn!("DNS: containers of Docker networks will not reach weave-rs DNS: {e}")
                }
                Err(e) => warn!("DNS: {e}"),
            }
        }
    }
}

/// The upstream resolvers from `resolv.conf`, without our own address.
pub fn upstream_servers(cfg: &DnsConfig) -> Vec<SocketAddr> {
    let text = std::fs::read_to_string(&cfg.resolv_conf).unwrap_or_else(|e| {
        warn!(
            "DNS: cannot read {}: {e}; names outside the domain will fail",
            cfg.resolv_conf.display()
        );
        String::new()
    });
    crate::core::dns::resolv_conf::nameservers(&text)
        .into_iter()
        .filter(|s| s.ip() != IpAddr::V4(cfg.address))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_container_is_named_by_its_name_and_its_hostname_in_the_domain() {
        let d = "weave.local.";
        assert_eq!(container_names(d, "db", None), ["db.weave.local."]);
        assert_eq!(
            container_names(d, "db", Some("store.weave.local")),
            ["db.weave.local.", "store.weave.local."]
        );
        // A bare hostname (Docker's default: the short ID) is not a name.
        assert_eq!(
            container_names(d, "db", Some("4f2a9c1d")),
            ["db.weave.local."]
        );
        assert_eq!(
            container_names(d, "db", Some("db.example.com")),
            ["db.weave.local."]
        );
        assert_eq!(container_names(d, "Web_1", None), ["web_1.weave.local."]);
    }
}
