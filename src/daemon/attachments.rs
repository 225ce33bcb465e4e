//! What `attach` put where: the registry of attachments, kept in the state
//! dir so a restarted router knows them, and the Docker side of their life:
//! a container that restarts gets its ethwe back, a removed one is forgotten.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};
use tracing::{debug, info, warn};

use super::{dns, ipam, Shared};
use crate::core::cidr;
use crate::core::ipam::spec::AddrSpec;
use crate::docker;
use crate::net::netns::NetnsTarget;
use crate::net::CONTAINER_IFNAME;

/// Where `weave-rs run` keeps each container's waiter and command.
pub const RUN_DIR: &str = "/var/lib/weave-rs/run";
/// Label `weave-rs run` puts on its containers: their run dir.
pub const RUN_DIR_LABEL: &str = "weave-rs.run-dir";

/// One attached namespace or container.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Attachment {
    /// As shown: the container's name, or the target as given.
    pub label: String,
    /// For a container: its full ID (the registry key then).
    pub container_id: Option<String>,
    /// For a namespace path or pid: the target as given.
    pub target: Option<String>,
    pub cidrs: Vec<String>,
    pub host_veth: String,
    pub mac: String,
    /// A CNI runtime's attachment: its key (`core::cni::key`), which is
    /// then the registry key and the IPAM id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cni_key: Option<String>,
    /// The interface in the namespace (None: `ethwe`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ifname: Option<String>,
    /// Names given with it (CNI), registered again after a restart.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
    /// The interface's MTU when not the overlay's (CNI's `mtu`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
}

impl Attachment {
    pub fn key(&self) -> String {
        self.cni_key
            .clone()
            .or_else(|| self.container_id.clone())
            .or_else(|| self.target.clone())
            .unwrap_or_default()
    }
}

/// A target resolved to a namespace, and how to record it.
pub struct Resolved {
    pub ns: NetnsTarget,
    pub label: String,
    pub container_id: Option<String>,
    pub target: Option<String>,
    /// A container's hostname (named in DNS when it lies in the domain).
    pub hostname: Option<String>,
    /// The interface to make (`ethwe` unless a CNI runtime asks).
    pub ifname: String,
    pub mtu: Option<u32>,
    /// A CNI attachment's key and names.
    pub cni_key: Option<String>,
    pub names: Vec<String>,
}

impl Resolved {
    /// `ns`, shown as `label`, given `ethwe`; nothing else known.
    pub fn namespace(ns: NetnsTarget, label: String) -> Resolved {
        Resolved {
            ns,
            label,
            container_id: None,
            target: None,
            hostname: None,
            ifname: CONTAINER_IFNAME.to_string(),
            mtu: None,
            cni_key: None,
            names: Vec::new(),
        }
    }
}

/// A network-namespace path, `pid:N`, or a Docker container's name or ID.
async fn resolve(target: &str) -> Result<Resolved, String> {
    match target.parse::<NetnsTarget>() {
        Ok(ns) => Ok(Resolved {
            target: Some(target.to_string()),
            ..Resolved::namespace(ns, target.to_string())
        }),
        Err(_) if docker::looks_like_container(target) => {
            let c = docker::container(target).await.map_err(|e| e.to_string())?;
            Ok(Resolved {
                container_id: Some(c.id),
                hostname: c.hostname,
                ..Resolved::namespace(NetnsTarget::Pid(c.pid), c.name)
            })
        }
        Err(e) => Err(e.to_string()),
    }
}

fn file(shared: &Shared) -> PathBuf {
    shared.config.state_dir.join("attached.json")
}

/// Write the registry to the state dir. Saves from concurrent tasks are
/// serialised, each taking its snapshot under the lock, so the last file
/// written is the latest state; each write is atomic and durable.
pub(super) fn save(shared: &Shared) {
    static SAVING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = SAVING.lock().unwrap_or_else(|e| e.into_inner());
    let list: Vec<Attachment> = shared.state().attached.values().cloned().collect();
    let path = file(shared);
    if let Err(e) = save_list(&path, &list) {
        warn!("saving attachments to {}: {e}", path.display());
    }
}

fn save_list(path: &Path, list: &[Attachment]) -> std::io::Result<()> {
    let bytes = serde_json::to_vec_pretty(list).map_err(std::io::Error::other)?;
    crate::files::write_atomic(path, &bytes, 0o600, None)
}

/// Attach `target` with addresses as `specs` say (none: one from the
/// default subnet); returns the ethwe MAC and the addresses. Literal
/// addresses within the allocation range are claimed; addresses allocated
/// here are released again if the attach fails.
pub async fn attach(
    shared: &Arc<Shared>,
    target: &str,
    specs: &[AddrSpec],
) -> Result<(String, Vec<IpNetwork>), String> {
    let r = resolve(target).await?;
    let key = r
        .container_id
        .clone()
        .or(r.target.clone())
        .unwrap_or_default();
    let before = shared.ipam().lookup(&key);
    let nets = match ipam::addresses(shared, &key, specs).await {
        Ok(n) => n,
        Err(e) => {
            undo_allocations(shared, &key, &before);
            return Err(e.into());
        }
    };
    match attach_resolved(shared, r, &nets).await {
        Ok(a) => Ok((a.mac, nets)),
        Err(e) => {
            undo_allocations(shared, &key, &before);
            Err(e)
        }
    }
}

/// Releases what `key` holds now but did not hold `before`.
pub(super) fn undo_allocations(shared: &Arc<Shared>, key: &str, before: &[IpNetwork]) {
    let new: Vec<std::net::IpAddr> = shared
        .ipam()
        .lookup(key)
        .iter()
        .filter(|n| !before.contains(n))
        .map(|n| n.ip())
        .collect();
    if !new.is_empty() {
        ipam::release_addrs(shared, key, &new);
    }
}

/// Attach a resolved target with `nets` (allocated already); the entry
/// recorded.
pub(super) async fn attach_resolved(
    shared: &Arc<Shared>,
    r: Resolved,
    nets: &[IpNetwork],
) -> Result<Attachment, String> {
    if nets.is_empty() {
        return Err("attach needs at least one address".into());
    }
    let c = &shared.config;
    let mtu = r.mtu.unwrap_or(u32::from(c.mtu));
    let a = shared
        .netlink
        .attach(&c.bridge, &r.ns, &r.ifname, nets, mtu)
        .await
        .map_err(|e| e.to_string())?;
    let mac = crate::core::PeerName(a.mac).to_string();
    name_in_dns(shared, &r, nets).await;
    let entry = Attachment {
        cni_key: r.cni_key,
        ifname: (r.ifname != CONTAINER_IFNAME).then_some(r.ifname),
        names: r.names,
        mtu: r.mtu,
        label: r.label,
        container_id: r.container_id,
        target: r.target,
        cidrs: a.addrs.iter().map(|n| n.to_string()).collect(),
        host_veth: a.host_veth,
        mac,
    };
    shared.state().attached.insert(entry.key(), entry.clone());
    save(shared);
    Ok(entry)
}

/// The DNS side of an attach: the route to the DNS server over ethwe, and
/// a container's names. Neither failing fails the attach (logged).
async fn name_in_dns(shared: &Arc<Shared>, r: &Resolved, nets: &[IpNetwork]) {
    let Some(cfg) = &shared.config.dns else {
        return;
    };
    if let Err(e) = shared
        .netlink
        .route_dns_over(&r.ns, &r.ifname, cfg.address)
        .await
    {
        warn!("{}: no route to the DNS server: {e}", r.label);
    }
    let (id, names) = match (&r.cni_key, &r.container_id) {
        (Some(key), _) => (
            &crate::core::cni::dns_owner(key),
            r.names
                .iter()
                .filter_map(|n| crate::core::dns::qualify(n, &cfg.domain).ok())
                .collect(),
        ),
        (None, Some(id)) => (
            id,
            dns::container_names(&cfg.domain, &r.label, r.hostname.as_deref()),
        ),
        (None, None) => return,
    };
    let addrs: Vec<std::net::IpAddr> = nets.iter().map(|n| n.ip()).collect();
    if let Err(e) = dns::register(shared, id, &names, &addrs) {
        warn!("{}: not named in DNS: {e}", r.label);
    }
}

/// Remove `nets` (all, if empty) from `target`.
pub async fn detach(shared: &Arc<Shared>, target: &str, nets: &[IpNetwork]) -> Result<(), String> {
    let r = resolve(target).await?;
    let left = shared
        .netlink
        .detach(&r.ns, CONTAINER_IFNAME, nets)
        .await
        .map_err(|e| e.to_string())?;
    let key = r.container_id.or(r.target).unwrap_or_default();
    {
        let mut st = shared.state();
        if left.is_empty() {
            st.attached.remove(&key);
        } else if let Some(a) = st.attached.get_mut(&key) {
            a.cidrs = left.iter().map(|n| n.to_string()).collect();
        }
    }
    save(shared);
    if left.is_empty() {
        ipam::release(shared, &key);
        dns::unregister(shared, |_, c| c == key);
    } else {
        let gone: Vec<std::net::IpAddr> = nets.iter().map(|n| n.ip()).collect();
        ipam::release_addrs(shared, &key, &gone);
        dns::unregister(shared, |k, c| c == key && gone.contains(&k.addr));
    }
    Ok(())
}

/// At start, before anything else asks for addresses: the addresses our
/// attachments and the bridge hold within the range are ours again, even
/// if the IPAM state file was lost.
pub async fn reclaim_addresses(shared: &Arc<Shared>) {
    let held: Vec<(String, Vec<String>)> = shared
        .state()
        .attached
        .values()
        .map(|a| (a.key(), a.cidrs.clone()))
        .collect();
    for (key, cidrs) in held {
        for n in cidrs.iter().filter_map(|c| c.parse::<IpNetwork>().ok()) {
            ipam::restore(shared, &key, n);
        }
    }
    if let Ok(addrs) = shared.netlink.bridge_addrs(&shared.config.bridge).await {
        for n in addrs {
            ipam::restore(shared, ipam::EXPOSE_ID, n);
        }
    }
}

/// `addr` of `id` was lost to another peer (it took the range over while
/// we were away, and uses the address): take it off the interface, and
/// give the attachment another address in the same subnet.
pub async fn drop_lost_address(shared: &Arc<Shared>, id: &str, addr: std::net::IpAddr) {
    if id == ipam::EXPOSE_ID {
        let held = shared
            .netlink
            .bridge_addrs(&shared.config.bridge)
            .await
            .unwrap_or_default();
        let lost: Vec<IpNetwork> = held.into_iter().filter(|n| n.ip() == addr).collect();
        if let Err(e) = shared.netlink.hide(&shared.config.bridge, &lost).await {
            warn!("removing lost address {addr} from the bridge: {e}");
        }
        return;
    }
    let Some(a) = shared.state().attached.get(id).cloned() else {
        return;
    };
    let Some(lost) = a
        .cidrs
        .iter()
        .filter_map(|c| c.parse::<IpNetwork>().ok())
        .find(|n| n.ip() == addr)
    else {
        return;
    };
    // A new address first, then the lost one goes: the attachment never
    // looks gone meanwhile (startup would release what it holds).
    let subnet = IpNetwork::new(lost.network(), lost.prefix()).ok();
    let spec = match subnet {
        Some(s) if ipam::in_range(shared, s.network()) => AddrSpec::Net(s),
        _ => AddrSpec::NetDefault,
    };
    match attach(shared, &a.key(), &[spec]).await {
        Ok((_, nets)) => info!(
            "{} lost {addr} to another peer; it now has {}",
            a.label,
            nets.iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>()
                .join(" ")
        ),
        Err(e) => warn!(
            "{} lost {addr} to another peer and got no other: {e}",
            a.label
        ),
    }
    if let Err(e) = detach(shared, &a.key(), &[lost]).await {
        warn!("removing lost address {lost} from {}: {e}", a.label);
    }
}

/// Attachments as `ps` shows them: those whose host veth exists now. A
/// namespace path or pid whose veth vanished is gone for good and is
/// forgotten; a container's entry stays until Docker removes it (it may be
/// restarting).
pub async fn present(shared: &Arc<Shared>) -> Vec<Attachment> {
    let all: Vec<Attachment> = shared.state().attached.values().cloned().collect();
    let mut out = Vec::new();
    let mut changed = false;
    for a in all {
        match shared.netlink.link_index(&a.host_veth).await {
            Ok(Some(_)) => out.push(a),
            Ok(None) if a.container_id.is_none() => {
                shared.state().attached.remove(&a.key());
                changed = true;
            }
            _ => {}
        }
    }
    if changed {
        save(shared);
    }
    out
}

/// At start: load the registry and attach the namespaces again (attach is
/// idempotent; entries whose namespace is gone are dropped). Containers are
/// `watch_docker`'s: it re-attaches them once it follows the engine.
pub async fn restore(shared: &Arc<Shared>) {
    let path = file(shared);
    let list: Vec<Attachment> = match std::fs::read(&path) {
        Ok(bytes) => match serde_json::from_slice(&bytes) {
            Ok(l) => l,
            Err(e) => {
                warn!("ignoring {}: {e}", path.display());
                return;
            }
        },
        Err(_) => return,
    };
    for a in list {
        shared.state().attached.insert(a.key(), a.clone());
        if a.container_id.is_none() {
            reattach(shared, &a).await;
        }
    }
    save(shared);
}

async fn reattach(shared: &Arc<Shared>, a: &Attachment) {
    let nets = match cidr::parse_all(&a.cidrs) {
        Ok(n) => n,
        Err(e) => {
            warn!("attachment {}: {e}", a.label);
            shared.state().attached.remove(&a.key());
            return;
        }
    };
    for n in &nets {
        ipam::restore(shared, &a.key(), *n);
    }
    let resolved = match &a.cni_key {
        Some(key) => a
            .target
            .as_deref()
            .unwrap_or_default()
            .parse::<NetnsTarget>()
            .map(|ns| Resolved {
                target: a.target.clone(),
                ifname: a.ifname.clone().unwrap_or_else(|| CONTAINER_IFNAME.into()),
                cni_key: Some(key.clone()),
                names: a.names.clone(),
                mtu: a.mtu,
                ..Resolved::namespace(ns, a.label.clone())
            })
            .map_err(|e| e.to_string()),
        None => resolve(&a.key()).await,
    };
    let attached = match resolved {
        Ok(r) => attach_resolved(shared, r, &nets).await.map(|_| ()),
        Err(e) => Err(e),
    };
    match attached {
        Ok(_) => info!("re-attached {} ({})", a.label, a.cidrs.join(" ")),
        Err(e) => {
            let gone = match &a.container_id {
                Some(id) => matches!(
                    docker::container(id).await,
                    Err(docker::DockerError::NoSuchContainer(_))
                ),
                None => true,
            };
            if gone {
                info!("forgetting attachment {}: {e}", a.label);
                shared.state().attached.remove(&a.key());
                save(shared);
                ipam::release(shared, &a.key());
            } else {
                debug!("attachment {} not restored now: {e}", a.label);
            }
        }
    }
}

/// Follow Docker's events: re-attach a registered container when it
/// (re)starts, forget it and its run dir when it is removed. Reconnects
/// when the engine goes away; silent where there is no Docker at all.
pub async fn watch_docker(shared: Arc<Shared>) -> anyhow::Result<()> {
    loop {
        match docker::events().await {
            Ok(mut events) => {
                // Anything that started while we were not listening.
                let registered: Vec<Attachment> = shared
                    .state()
                    .attached
                    .values()
                    .filter(|a| a.container_id.is_some())
                    .cloned()
                    .collect();
                for a in &registered {
                    reattach(&shared, a).await;
                }
                // Names of containers on the plugin's networks; the
                // plugin's side of a (re)started engine.
                if !shared.plugin().endpoints.is_empty() {
                    for id in docker::running().await.unwrap_or_default() {
                        super::plugin::name_endpoints(&shared, &id).await;
                    }
                }
                if shared.config.plugin_socket.is_some() {
                    let shared = shared.clone();
                    shared
                        .clone()
                        .spawn(async move { super::plugin::on_engine(&shared).await });
                }
                while let Some(ev) = events.next().await {
                    match ev {
                        Ok(docker::Event::Start(id)) => {
                            dns::container_started(&shared, &id);
                            let a = shared.state().attached.get(&id).cloned();
                            if let Some(a) = a {
                                reattach(&shared, &a).await;
                            }
                        }
                        Ok(docker::Event::Die(id)) => dns::container_died(&shared, &id),
                        Ok(docker::Event::Connected { container }) => {
                            super::plugin::name_endpoints(&shared, &container).await
                        }
                        Ok(docker::Event::Destroy { id, run_dir }) => {
                            dns::container_died(&shared, &id);
                            let removed = shared.state().attached.remove(&id);
                            if removed.is_some() {
                                save(&shared);
                            }
                            ipam::release(&shared, &id);
                            if let Some(dir) = run_dir {
                                remove_run_dir(&dir);
                            }
                        }
                        Err(e) => {
                            debug!("Docker events: {e}");
                            break;
                        }
                    }
                }
            }
            Err(e) => debug!("Docker events unavailable: {e}"),
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// Remove a run dir named by a container's label, but only one of ours:
/// the label comes from Docker, where anyone who can start a container can
/// write anything.
pub fn remove_run_dir(dir: &str) {
    match remove_run_dir_in(Path::new(RUN_DIR), dir) {
        Ok(()) => {}
        Err(e) => warn!("not removing run dir {dir:?}: {e}"),
    }
}

/// Remove `dir` if, with symlinks and `..` resolved, it is a directory
/// directly inside `base`. A dir already gone is fine.
fn remove_run_dir_in(base: &Path, dir: &str) -> Result<(), String> {
    if !Path::new(dir).is_absolute() {
        return Err("not an absolute path".into());
    }
    let base = base
        .canonicalize()
        .map_err(|e| format!("{}: {e}", base.display()))?;
    let p = match Path::new(dir).canonicalize() {
        Ok(p) => p,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e.to_string()),
    };
    if p.parent() != Some(base.as_path()) || !p.is_dir() {
        return Err(format!("outside {}", base.display()));
    }
    std::fs::remove_dir_all(&p).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn attachment(i: usize) -> Attachment {
        Attachment {
            label: format!("c{i}"),
            container_id: None,
            target: Some(format!("/var/run/netns/c{i}")),
            cidrs: vec![format!("10.2.1.{i}/24")],
            host_veth: format!("vethwr{i:08x}"),
            mac: "02:00:00:00:00:01".into(),
            cni_key: None,
            ifname: None,
            names: Vec::new(),
            mtu: None,
        }
    }

    #[test]
    fn run_dirs_outside_the_base_are_refused() {
        let root = tempfile::tempdir().unwrap();
        let base = root.path().join("run");
        let ours = base.join("0123456789abcdef");
        fs::create_dir_all(&ours).unwrap();
        fs::write(ours.join("argv"), "x").unwrap();
        let precious = root.path().join("netns-1");
        fs::create_dir_all(&precious).unwrap();
        fs::write(precious.join("noise-key"), "secret").unwrap();
        fs::create_dir_all(base.join("sub/deeper")).unwrap();
        std::os::unix::fs::symlink(&precious, base.join("link")).unwrap();

        let s = |p: PathBuf| p.to_string_lossy().into_owned();
        for crafted in [
            s(base.join("..")),
            s(base.join("../netns-1")),
            s(base.join("0123456789abcdef/../../netns-1")),
            s(base.join("link")),
            s(base.clone()),
            s(base.join("sub/deeper")),
            s(base.join("0123456789abcdef/argv")),
            "/".to_string(),
            "relative/../..".to_string(),
        ] {
            let e = remove_run_dir_in(&base, &crafted);
            assert!(e.is_err(), "{crafted} was accepted");
            assert!(precious.join("noise-key").exists(), "{crafted} deleted it");
        }
        assert!(base.join("sub/deeper").exists());
        assert!(ours.join("argv").exists());

        remove_run_dir_in(&base, &s(ours.clone())).unwrap();
        assert!(!ours.exists());
        // Gone already: nothing to do.
        remove_run_dir_in(&base, &s(ours)).unwrap();
    }

    #[test]
    fn concurrent_saves_always_leave_a_whole_registry() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("attached.json");
        std::thread::scope(|s| {
            for t in 1..=8 {
                let path = &path;
                s.spawn(move || {
                    for _ in 0..25 {
                        let list: Vec<Attachment> = (0..t * 10).map(attachment).collect();
                        save_list(path, &list).unwrap();
                        let read: Vec<Attachment> =
                            serde_json::from_slice(&fs::read(path).unwrap()).unwrap();
                        assert!(!read.is_empty() && read.len() % 10 == 0);
                    }
                });
            }
        });
        let left: Vec<_> = fs::read_dir(d.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "temporary files left behind");
    }
}
