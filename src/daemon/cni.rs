//! The CNI front door, router side: `weave-rs-cni` (`crate::cni`) turns a
//! runtime's call into one of these requests. An attachment is keyed by
//! (container ID, interface name) in IPAM, DNS and the attachment
//! registry, so ADD and DEL are idempotent and GC can tell what to keep.
//!
//! A DEL while the router is down is left by the plugin as a file in
//! `cni-released/` of the state dir; the router replays those at start and
//! every few seconds after.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ipnetwork::IpNetwork;
use tracing::{info, warn};

use super::attachments::{self, Resolved};
use super::{dns, ipam, Shared};
use crate::api::protocol::{CniAdd, CniAttached};
use crate::core::cni::{self, conf::valid_ifname};
use crate::core::ipam::spec::AddrSpec;
use crate::net::NetnsTarget;

/// Where the plugin leaves DELs the router was not there to take.
pub const RELEASED_DIR: &str = "cni-released";
/// How long STATUS may work towards an allocation ring before it says
/// "not ready".
const STATUS_PATIENCE: Duration = Duration::from_secs(2);
/// How often that directory is looked at.
const REPLAY_EVERY: Duration = Duration::from_secs(5);

/// ADD: the interface, its addresses and names.
pub async fn add(shared: &Arc<Shared>, req: CniAdd) -> Result<CniAttached, String> {
    check_ids(&req.container_id, &req.ifname)?;
    if req.names.len() > cni::MAX_NAMES {
        return Err(format!(
            "{} names: at most {}",
            req.names.len(),
            cni::MAX_NAMES
        ));
    }
    let c = &shared.config;
    if let Some(b) = req.bridge.as_deref().filter(|b| *b != c.bridge) {
        return Err(format!(
            "the network config names bridge {b:?}, but this router's bridge is {:?}",
            c.bridge
        ));
    }
    let mtu = match req.mtu {
        Some(m) if m > u32::from(c.mtu) => {
            return Err(format!(
                "the network config's mtu {m} is above the overlay's ({}): frames that big would not cross",
                c.mtu
            ))
        }
        Some(m) => m,
        None => u32::from(c.mtu),
    };
    let ns: NetnsTarget = req.netns.parse().map_err(|e| format!("CNI_NETNS: {e}"))?;
    let specs = req
        .addrs
        .iter()
        .map(|a| a.parse::<AddrSpec>().map_err(|e| e.to_string()))
        .collect::<Result<Vec<_>, _>>()?;
    let specs = if req.claims.is_empty() {
        specs
    } else {
        claims(shared, &specs, &req.claims)?
    };
    let key = cni::key(&req.container_id, &req.ifname);
    let before = shared.ipam().lookup(&key);
    let patience = Duration::from_millis(req.patience_ms.clamp(100, 60_000));
    let nets = match ipam::addresses_within(shared, &key, &specs, patience).await {
        Ok(n) => n,
        Err(e) => {
            attachments::undo_allocations(shared, &key, &before);
            return Err(match e {
                ipam::AllocError::GaveUp(why) => format!("{}{why}", cni::TRY_AGAIN),
                ipam::AllocError::Refused(why) => why,
            });
        }
    };
    let label = req
        .names
        .first()
        .cloned()
        .unwrap_or_else(|| short(&req.container_id).to_string());
    let r = Resolved {
        target: Some(req.netns.clone()),
        ifname: req.ifname.clone(),
        mtu: Some(mtu),
        cni_key: Some(key.clone()),
        names: req.names.clone(),
        ..Resolved::namespace(ns, label)
    };
    let entry = match attachments::attach_resolved(shared, r, &nets).await {
        Ok(a) => a,
        Err(e) => {
            attachments::undo_allocations(shared, &key, &before);
            return Err(e);
        }
    };
    if let Err(e) = shared
        .netlink
        .set_hairpin(&entry.host_veth, req.hairpin)
        .await
    {
        warn!("{}: hairpin mode: {e}", entry.label);
    }
    let gateway = match req.gateway {
        true => gateway(shared, &entry, &nets).await,
        false => None,
    };
    if let Err(e) = routes(shared, &entry, &req.routes).await {
        // The IPAM plugin's routes are part of the result: without them
        // the ADD has not done what it says.
        forget(shared, &key).await;
        return Err(e);
    }
    info!(
        "CNI attachment {key}: {} in {} as {}, names {:?}",
        entry.cidrs.join(" "),
        req.netns,
        req.ifname,
        req.names
    );
    Ok(CniAttached {
        mac: entry.mac,
        addrs: nets.iter().map(IpNetwork::to_string).collect(),
        mtu,
        dns: c
            .dns
            .as_ref()
            .map(|d| (d.address.to_string(), d.domain.clone())),
        gateway,
    })
}

/// The pod's default route via the host's address in the subnet of its
/// first IPv4 address, exposing the host there first if need be (so the
/// host reaches its pods, as kubelet's probes and portmap need). A
/// failure leaves the pod without it, logged.
async fn gateway(
    shared: &Arc<Shared>,
    entry: &attachments::Attachment,
    nets: &[IpNetwork],
) -> Option<std::net::IpAddr> {
    let first = nets.iter().find(|n| n.is_ipv4())?;
    let subnet = IpNetwork::new(first.network(), first.prefix()).ok()?;
    let bridge = &shared.config.bridge;
    let held = shared
        .netlink
        .bridge_addrs(bridge)
        .await
        .unwrap_or_default();
    let host = match held
        .iter()
        .find(|a| subnet.contains(a.ip()) && a.prefix() == subnet.prefix())
    {
        Some(a) => *a,
        None => {
            let spec = if subnet == shared.ipam().core.default_subnet() {
                AddrSpec::NetDefault
            } else {
                AddrSpec::Net(subnet)
            };
            let got = ipam::addresses(shared, ipam::EXPOSE_ID, &[spec]).await;
            let Some(a) = got
                .ok()
                .and_then(|n| n.into_iter().find(|a| subnet.contains(a.ip())))
            else {
                warn!(
                    "{}: no host address in {subnet} to route through",
                    entry.label
                );
                return None;
            };
            if let Err(e) = shared.netlink.expose(bridge, a).await {
                warn!("{}: exposing the host at {a}: {e}", entry.label);
                return None;
            }
            info!("host exposed at {a} as the gateway of CNI attachments in {subnet}");
            a
        }
    };
    let default = IpNetwork::new(std::net::Ipv4Addr::UNSPECIFIED.into(), 0).ok()?;
    match routes(shared, entry, &[(default, Some(host.ip()))]).await {
        Ok(()) => Some(host.ip()),
        Err(e) => {
            warn!("{}: {e}", entry.label);
            None
        }
    }
}

/// Adds `routes` (destination, gateway) in the attachment's namespace.
async fn routes(
    shared: &Shared,
    entry: &attachments::Attachment,
    routes: &[(IpNetwork, Option<std::net::IpAddr>)],
) -> Result<(), String> {
    let ns: NetnsTarget = entry
        .target
        .as_deref()
        .unwrap_or_default()
        .parse()
        .map_err(|e| format!("{e}"))?;
    let ifname = entry
        .ifname
        .as_deref()
        .unwrap_or(crate::net::CONTAINER_IFNAME);
    for (dst, gw) in routes {
        shared
            .netlink
            .route_in(&ns, ifname, *dst, *gw)
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// The addresses a runtime asked for, each with the prefix of the subnet
/// the config allocates from (none named: the default subnet).
fn claims(
    shared: &Shared,
    specs: &[AddrSpec],
    ips: &[std::net::IpAddr],
) -> Result<Vec<AddrSpec>, String> {
    let subnet = specs
        .iter()
        .find_map(|s| match s {
            AddrSpec::Net(n) => Some(*n),
            _ => None,
        })
        .unwrap_or_else(|| shared.ipam().core.default_subnet());
    ips.iter()
        .map(|ip| {
            if !subnet.contains(*ip) {
                return Err(format!("IP {ip} is not in the network's subnet {subnet}"));
            }
            IpNetwork::new(*ip, subnet.prefix())
                .map(AddrSpec::Ip)
                .map_err(|e| e.to_string())
        })
        .collect()
}

/// DEL: whatever of the attachment is left goes. Never fails for what is
/// already gone.
pub async fn del(shared: &Arc<Shared>, container_id: &str, ifname: &str) -> Result<(), String> {
    check_ids(container_id, ifname)?;
    forget(shared, &cni::key(container_id, ifname)).await;
    Ok(())
}

/// Takes down the attachment `key`: interface, names, addresses, entry.
async fn forget(shared: &Arc<Shared>, key: &str) {
    let entry = shared.state().attached.remove(key);
    if let Some(a) = &entry {
        let ifname = a.ifname.as_deref().unwrap_or(crate::net::CONTAINER_IFNAME);
        let ns = a.target.as_deref().map(str::parse::<NetnsTarget>);
        if let Some(Ok(ns)) = ns {
            // The namespace may be gone already (and the veth with it).
            let _ = shared.netlink.detach(&ns, ifname, &[]).await;
        }
        let _ = shared.netlink.delete_link(&a.host_veth).await;
        attachments::save(shared);
    }
    let owner = cni::dns_owner(key);
    let named = dns::unregister(shared, |_, c| c == owner);
    let freed = ipam::release(shared, key);
    if entry.is_some() || named > 0 || !freed.is_empty() {
        info!("CNI attachment {key} removed (freed {freed:?})");
    }
}

/// CHECK: the interface is in the namespace with `addrs`, and the router
/// holds them for this attachment.
pub async fn check(
    shared: &Arc<Shared>,
    container_id: &str,
    ifname: &str,
    netns: &str,
    addrs: &[String],
) -> Result<(), String> {
    check_ids(container_id, ifname)?;
    let key = cni::key(container_id, ifname);
    let want: Vec<IpNetwork> = crate::core::cidr::parse_all(addrs).map_err(|e| e.to_string())?;
    let held = shared.ipam().lookup(&key);
    let ns: NetnsTarget = netns.parse().map_err(|e| format!("CNI_NETNS: {e}"))?;
    let have = shared
        .netlink
        .addrs_in(&ns, ifname)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("{ifname} is missing in {netns}"))?;
    for n in &want {
        if !have.contains(n) {
            return Err(format!("{ifname} in {netns} lacks {n}"));
        }
        if in_range(shared, n) && !held.iter().any(|h| h.ip() == n.ip()) {
            return Err(format!("{n} is not allocated to this attachment"));
        }
    }
    Ok(())
}

fn in_range(shared: &Shared, n: &IpNetwork) -> bool {
    ipam::in_range(shared, n.ip())
}

/// GC: every CNI attachment not in `keep` goes; how many.
pub async fn gc(shared: &Arc<Shared>, keep: &[(String, String)]) -> usize {
    let held: Vec<String> = {
        let ipam = shared.ipam();
        let mut ids: Vec<String> = ipam
            .core
            .allocations()
            .map(|(id, _)| id.to_string())
            .collect();
        ids.extend(shared.state().attached.keys().cloned());
        ids
    };
    let victims = cni::gc_victims(held.iter().map(String::as_str), keep);
    for key in &victims {
        forget(shared, key).await;
    }
    victims.len()
}

/// STATUS: the router takes ADDs once it has restored its state and can
/// give out addresses (working towards that for a moment if it cannot).
pub async fn status(shared: &Arc<Shared>) -> Result<(), String> {
    if !shared.ipam().started {
        return Err("the router is starting (restoring its attachments)".into());
    }
    ipam::ready(shared, STATUS_PATIENCE).await
}

fn check_ids(container_id: &str, ifname: &str) -> Result<(), String> {
    if !cni::valid_container_id(container_id) {
        return Err(format!(
            "container ID {:?}: letters, digits, '_', '.' and '-', 1 to 256 of them",
            crate::core::text::sanitize(container_id, 64)
        ));
    }
    if !valid_ifname(ifname) {
        return Err(format!(
            "interface name {:?}: 1 to 15 bytes, no '/', ':' or spaces",
            crate::core::text::sanitize(ifname, 64)
        ));
    }
    Ok(())
}

fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

fn released_dir(shared: &Shared) -> PathBuf {
    shared.config.state_dir.join(RELEASED_DIR)
}

/// Replays the DELs the plugin recorded while the router was away, now and
/// every few seconds (one may land just as the router starts).
pub async fn replay_released(shared: Arc<Shared>) -> anyhow::Result<()> {
    // Not before the registry is restored: it would bring back what a
    // replayed DEL took away.
    while !shared.ipam().started {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    loop {
        let dir = released_dir(&shared);
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for e in entries.flatten() {
                let path = e.path();
                // A key is short; anything else is not the plugin's.
                let key = std::fs::File::open(&path)
                    .and_then(|f| {
                        let mut s = String::new();
                        std::io::Read::read_to_string(&mut std::io::Read::take(f, 1024), &mut s)
                            .map(|_| s)
                    })
                    .unwrap_or_default();
                match cni::parse_key(key.trim()) {
                    Some(_) => forget(&shared, key.trim()).await,
                    None => warn!("{}: not a CNI attachment; removing it", path.display()),
                }
                let _ = std::fs::remove_file(&path);
            }
        }
        tokio::time::sleep(REPLAY_EVERY).await;
    }
}
