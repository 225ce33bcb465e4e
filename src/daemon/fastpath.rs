//! The kernel fast path's shell (issue 15): the VXLAN device, heartbeats
//! over it, and the kernel's forwarding entries.
//!
//! One task owns it all. Twice per `core::fastpath::Timing::interval` it
//! looks at the neighbours the data plane has and keeps one
//! `core::fastpath::Link` per neighbour; once per interval it sends each
//! probing link a heartbeat through the device at the overlay MTU. Heartbeats that arrive move links to the fast
//! path; silence moves them back. A link's switch is told to the forwarding
//! core (`Router::set_fast`), whose decisions come back as `SteerOp`s: the
//! task writes them as entries of the device's table (MAC to the peer's
//! underlay address) and of the bridge's (MAC to the device). A link that
//! falls back or goes has every entry to its peer removed.
//!
//! Broadcasts never take the fast path (the device has no flood list): the
//! sleeve's broadcast trees carry them, so relays keep working and every
//! host gets each broadcast once.
//!
//! Without the device (`--no-fastdp`, or a kernel or underlay without
//! VXLAN) every link says why it is on the sleeve, and that is all.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::Shared;
use crate::core::fastpath::{Ineligible, Link, Path, Switch, Timing};
use crate::core::steering::SteerOp;
use crate::core::wire::fastpath::{payload_len, Heartbeat};
use crate::core::PeerName;
use crate::net::heartbeat::HeartbeatSocket;
use crate::net::netlink::{Netlink, VxlanSpec};

/// The device's name.
pub const DEVICE: &str = "weave-vxlan";
/// Steering requests queued from the data plane; more are counted and
/// dropped (a frame that still reaches the router asks again).
pub const STEER_QUEUE: usize = 8192;
/// What a peer's device MAC is derived for (`PeerName::derived_mac`).
const MAC_PURPOSE: &str = "vxlan";
/// Jumbo frames: an underlay above this MTU raises the default overlay MTU.
const STANDARD_MTU: u32 = 1500;
/// Outer IPv4, UDP and VXLAN headers and the inner Ethernet header.
pub const VXLAN_OVERHEAD: u32 = 50;

/// The device, once made.
#[derive(Debug, Clone, Copy)]
pub struct Device {
    pub index: u32,
    pub mac: [u8; 6],
}

/// What `status` and `report` show of one neighbour's carrier.
#[derive(Debug, Clone)]
pub struct LinkStatus {
    pub fast: bool,
    pub describe: String,
}

/// What the task publishes for reports.
#[derive(Debug, Default)]
pub struct Published {
    pub links: HashMap<PeerName, LinkStatus>,
}

/// The fast path's UDP port: the sleeve's plus one.
pub fn udp_port(config: &super::Config) -> u16 {
    config.port.wrapping_add(1)
}

/// The device's VNI: from the mesh name, so two meshes on one underlay
/// do not take each other's frames (never 0).
pub fn vni(mesh_name: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in mesh_name.bytes() {
        h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    (h & 0x00ff_ffff).max(1)
}

/// The overlay MTU when `--mtu` is not given: the default, or on a
/// jumbo-frame underlay with the fast path, all that VXLAN leaves of it.
pub async fn default_mtu(config: &super::Config, netlink: &Netlink) -> u16 {
    if config.mtu_explicit || !config.fastdp {
        return config.mtu;
    }
    let ours = [config.bridge.as_str(), config.tap.as_str(), DEVICE];
    match netlink.underlay_mtu(&ours).await {
        Ok(Some(u)) if u > STANDARD_MTU => {
            let mtu = u16::try_from(u - VXLAN_OVERHEAD)
                .unwrap_or(u16::MAX)
                .min(65_000);
            info!("underlay MTU {u}: overlay MTU {mtu}");
            mtu
        }
        Ok(_) => config.mtu,
        Err(e) => {
            warn!("underlay MTU unknown ({e}); overlay MTU {}", config.mtu);
            config.mtu
        }
    }
}

/// Makes the device afresh (a dead router's entries must not linger), or
/// says why there is none. Never fails the launch: without the device
/// every link stays on the sleeve, and one line in the log says why.
pub async fn setup(config: &super::Config, netlink: &Netlink) -> Result<Device, Ineligible> {
    if !config.fastdp {
        info!("fast path off (--no-fastdp): the sleeve carries everything");
        return Err(Ineligible::Disabled { here: true });
    }
    let spec = VxlanSpec {
        name: DEVICE.into(),
        vni: vni(&config.mesh_name),
        port: udp_port(config),
        local: None,
        underlay: None,
        mac: config.name.derived_mac(MAC_PURPOSE),
        mtu: Some(u32::from(config.mtu)),
        bridge: config.bridge.clone(),
    };
    let made = async {
        netlink.delete_link(DEVICE).await?;
        netlink.ensure_vxlan(&spec).await
    };
    match made.await {
        Ok(index) => {
            info!(
                "fast path: VXLAN device {DEVICE} (vni {}, udp {})",
                spec.vni, spec.port
            );
            Ok(Device {
                index,
                mac: spec.mac,
            })
        }
        Err(e) => {
            warn!("fast path unavailable, the sleeve carries everything: {e}");
            let _ = netlink.delete_link(DEVICE).await;
            Err(Ineligible::Unavailable(e.to_string()))
        }
    }
}

/// Removes the device at shutdown.
pub async fn teardown(shared: &Shared) {
    if shared.fast_device.is_ok() {
        if let Err(e) = shared.netlink.delete_link(DEVICE).await {
            warn!("removing {DEVICE}: {e}");
        }
    }
}

/// Whether a neighbour's data may take the fast path, and to which
/// underlay address. A kernel with an encrypted carrier (ESP, WireGuard)
/// would add a second kind of fast path here, for sealed links; this
/// kernel has none, so sealed links stay on the sleeve.
fn eligibility(
    device: &Result<Device, Ineligible>,
    peer_fastdp: bool,
    addr: SocketAddr,
    plain: bool,
) -> Result<Ipv4Addr, Ineligible> {
    if let Err(why) = device {
        return Err(why.clone());
    }
    if !peer_fastdp {
        return Err(Ineligible::Disabled { here: false });
    }
    if !plain {
        return Err(Ineligible::Encrypted);
    }
    match addr.ip().to_canonical() {
        std::net::IpAddr::V4(ip) => Ok(ip),
        std::net::IpAddr::V6(_) => Err(Ineligible::Unavailable(
            "the peer's underlay address is IPv6".into(),
        )),
    }
}

/// One neighbour, as the task sees it.
struct Neighbour {
    addr: SocketAddr,
    /// Its underlay address if the fast path may be tried, else why not.
    eligible: Result<Ipv4Addr, Ineligible>,
    link: Link,
    heard_ms: Option<u64>,
}

impl Neighbour {
    /// Its underlay address, if the fast path may be tried.
    fn ip(&self) -> Option<Ipv4Addr> {
        self.eligible.as_ref().ok().copied()
    }
}

struct Task {
    shared: Arc<Shared>,
    device: Option<Device>,
    timing: Timing,
    neighbours: HashMap<PeerName, Neighbour>,
    seq: u64,
    ticks: u64,
}

/// The fast path's task: runs for the router's life.
pub async fn run(shared: Arc<Shared>, mut ops: mpsc::Receiver<SteerOp>) -> anyhow::Result<()> {
    let device = shared.fast_device.as_ref().ok().copied();
    let socket = match device {
        Some(_) => match HeartbeatSocket::open(DEVICE, &shared.config.bridge).and_then(register) {
            Ok(s) => Some(s),
            Err(e) => {
                warn!("fast path: no heartbeat socket on {DEVICE}, staying on the sleeve: {e}");
                None
            }
        },
        None => None,
    };
    let timing = Timing {
        port: udp_port(&shared.config),
        ..Timing::default()
    };
    let mut task = Task {
        shared,
        device: device.filter(|_| socket.is_some()),
        timing,
        neighbours: HashMap::new(),
        seq: 0,
        ticks: 0,
    };
    // Links are judged twice per heartbeat interval: a dead path is seen
    // within `dead_after` and half an interval.
    let mut tick = tokio::time::interval(Duration::from_millis(task.timing.interval_ms / 2));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut buf = vec![0u8; 1 << 16];
    let socket = socket.as_ref();
    loop {
        tokio::select! {
            _ = tick.tick() => task.tick(socket.map(AsyncFd::get_ref)).await,
            Some(op) = ops.recv() => task.apply(op).await,
            r = readable(socket) => {
                if let Some(mut guard) = r {
                    // Cleared first: a frame that comes while the socket
                    // is drained wakes us again.
                    guard.clear_ready();
                    task.receive(guard.get_inner(), &mut buf);
                }
            }
        }
    }
}

fn register(s: HeartbeatSocket) -> std::io::Result<AsyncFd<HeartbeatSocket>> {
    // SAFETY: the socket owns its descriptor (an OwnedFd) and returns the
    // same one for as long as it lives, which is as long as the AsyncFd.
    unsafe { AsyncFd::register_with_interest(s, tokio::io::Interest::READABLE) }
        .map_err(|e| std::io::Error::other(e.to_string()))
}

/// Waits until the socket has frames; never, without one.
async fn readable(
    socket: Option<&AsyncFd<HeartbeatSocket>>,
) -> Option<tokio::io::unix::AsyncFdReadyGuard<'_, HeartbeatSocket>> {
    match socket {
        Some(s) => s.readable().await.ok(),
        None => std::future::pending().await,
    }
}

impl Task {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.shared.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Neighbours come and go; links age; heartbeats go out.
    async fn tick(&mut self, socket: Option<&HeartbeatSocket>) {
        let now = self.now_ms();
        let fastdp: HashMap<PeerName, bool> = {
            let st = self.shared.state();
            st.conns.values().map(|c| (c.peer, c.fastdp)).collect()
        };
        let current = self.shared.data().neighbours();
        let gone: Vec<PeerName> = self
            .neighbours
            .iter()
            .filter(|(p, n)| !current.iter().any(|(q, a, _)| q == *p && *a == n.addr))
            .map(|(p, _)| *p)
            .collect();
        for p in gone {
            if let Some(n) = self.neighbours.remove(&p) {
                self.leave_fast_path(p, n.ip(), "the connection went").await;
            }
        }
        let mtu = usize::from(self.shared.config.mtu);
        let device = self.shared.fast_device.clone().and_then(|d| {
            self.device.ok_or_else(|| {
                Ineligible::Unavailable(format!("no heartbeat socket on {DEVICE}"))
            })?;
            Ok(d)
        });
        for (peer, addr, plain) in current {
            let peer_fastdp = fastdp.get(&peer).copied().unwrap_or(false);
            let eligible = eligibility(&device, peer_fastdp, addr, plain);
            match self.neighbours.get(&peer) {
                Some(n) if n.eligible == eligible => continue,
                // A replacing connection with other terms (a password, a
                // peer's fast path): start that link over.
                Some(n) => {
                    let ip = n.ip();
                    self.leave_fast_path(peer, ip, "the connection changed")
                        .await;
                }
                None => {}
            }
            let ip = eligible.as_ref().ok().copied();
            self.heartbeat_entry(peer, ip).await;
            let link = Link::new(eligible.clone().map(|_| ()), mtu, now, self.timing);
            self.neighbours.insert(
                peer,
                Neighbour {
                    addr,
                    eligible,
                    link,
                    heard_ms: None,
                },
            );
        }
        let mut fell = Vec::new();
        for (p, n) in &mut self.neighbours {
            if n.link.tick(now) == Some(Switch::ToSleeve) {
                fell.push((*p, n.ip(), n.link.describe(now)));
            }
        }
        for (p, ip, why) in fell {
            self.leave_fast_path(p, ip, &why).await;
            self.heartbeat_entry(p, ip).await;
        }
        self.ticks = self.ticks.wrapping_add(1);
        if self.ticks % 2 == 0 {
            self.send_heartbeats(socket, now);
        }
        self.publish(now);
    }

    /// `peer` is off the fast path: the core forgets its steering, and
    /// every kernel entry sending to it goes.
    async fn leave_fast_path(&self, peer: PeerName, ip: Option<Ipv4Addr>, why: &str) {
        let was_fast = {
            let mut data = self.shared.data();
            let was = data.router.is_fast(peer);
            data.router.set_fast(peer, false);
            if was {
                data.router.stats.fastpath_switches_to_sleeve += 1;
            }
            was
        };
        if was_fast {
            warn!("fast path to {peer} off: {why}");
        }
        if let (Some(d), Some(ip)) = (self.device, ip) {
            match self.shared.netlink.fdb_flush_peer(d.index, ip).await {
                Ok(k) => debug!("fast path to {peer}: {k} entries removed"),
                Err(e) => {
                    warn!("fast path to {peer}: removing entries: {e}");
                    self.shared.data().router.stats.fastpath_entry_failures += 1;
                }
            }
        }
    }

    /// The device's entry for `peer`'s device MAC, which heartbeats take.
    async fn heartbeat_entry(&self, peer: PeerName, ip: Option<Ipv4Addr>) {
        if let (Some(d), Some(ip)) = (self.device, ip) {
            let mac = peer.derived_mac(MAC_PURPOSE);
            if let Err(e) = self.shared.netlink.fdb_set(d.index, mac, ip).await {
                warn!("fast path to {peer}: {e}");
                self.shared.data().router.stats.fastpath_entry_failures += 1;
            }
        }
    }

    fn send_heartbeats(&mut self, socket: Option<&HeartbeatSocket>, now: u64) {
        let (Some(d), Some(socket)) = (self.device, socket) else {
            return;
        };
        let ourself = self.shared.ourself();
        let mtu = usize::from(self.shared.config.mtu);
        let dead_after = self.timing.dead_after_ms;
        let mut sent = 0u64;
        for (peer, n) in &self.neighbours {
            if !n.link.probing() {
                continue;
            }
            self.seq = self.seq.wrapping_add(1);
            let hb = Heartbeat {
                from: ourself,
                seq: self.seq,
                hears_you: n
                    .heard_ms
                    .is_some_and(|t| now.saturating_sub(t) <= dead_after),
            };
            let frame = hb.frame(peer.derived_mac(MAC_PURPOSE), d.mac, mtu);
            match socket.send(&frame) {
                Ok(()) => sent += 1,
                Err(e) => debug!("fast-path heartbeat to {peer}: {e}"),
            }
        }
        self.shared.data().router.stats.fastpath_heartbeats_sent += sent;
    }

    /// Takes every heartbeat waiting on the socket.
    fn receive(&mut self, socket: &HeartbeatSocket, buf: &mut [u8]) {
        let mut heard = Vec::new();
        let mut dropped = 0u64;
        {
            loop {
                match socket.recv(buf) {
                    Ok(Some(n)) => {
                        let frame = buf.get(..n).unwrap_or_default();
                        match Heartbeat::parse(frame) {
                            Some(hb)
                                if frame.get(6..12)
                                    == Some(&hb.from.derived_mac(MAC_PURPOSE)[..]) =>
                            {
                                heard.push((hb, payload_len(n)));
                            }
                            _ => dropped += 1,
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        debug!("fast-path heartbeat socket: {e}");
                        break;
                    }
                }
            }
        }
        let now = self.now_ms();
        let mut to_fast = Vec::new();
        let mut received = 0u64;
        let switched;
        for (hb, size) in heard {
            let Some(n) = self.neighbours.get_mut(&hb.from) else {
                dropped += 1;
                continue;
            };
            received += 1;
            n.heard_ms = Some(now);
            if n.link.heard(now, size, hb.hears_you) == Some(Switch::ToFast) {
                to_fast.push(hb.from);
            }
        }
        {
            let mut data = self.shared.data();
            let stats = &mut data.router.stats;
            stats.fastpath_heartbeats_received += received;
            stats.fastpath_heartbeats_dropped += dropped;
            stats.fastpath_switches_to_fast += to_fast.len() as u64;
            switched = !to_fast.is_empty();
            for p in &to_fast {
                data.router.set_fast(*p, true);
            }
        }
        for p in to_fast {
            info!("fast path to {p} on (mtu {})", self.shared.config.mtu);
        }
        if switched {
            self.publish(now);
        }
    }

    /// Writes what the core decided into the kernel's tables.
    async fn apply(&mut self, op: SteerOp) {
        let Some(d) = self.device else { return };
        let nl = &self.shared.netlink;
        let (ok, steered) = match op {
            SteerOp::Steer { mac, peer } => {
                let Some(ip) = self
                    .neighbours
                    .get(&peer)
                    .filter(|n| n.link.path() == Path::Fast)
                    .and_then(Neighbour::ip)
                else {
                    // It fell back meanwhile.
                    return;
                };
                // The device's entry first: the bridge must never send to
                // the device a MAC it has no destination for.
                let r = match nl.fdb_set(d.index, mac, ip).await {
                    Ok(()) => nl.bridge_fdb_set(d.index, mac).await,
                    Err(e) => Err(e),
                };
                (r, true)
            }
            SteerOp::Unsteer { mac, peer } => {
                let r = match nl.bridge_fdb_del(d.index, mac).await {
                    Ok(()) => match self.neighbours.get(&peer).and_then(Neighbour::ip) {
                        Some(ip) => nl.fdb_del(d.index, mac, ip).await,
                        None => Ok(()),
                    },
                    Err(e) => Err(e),
                };
                (r, false)
            }
        };
        let mut data = self.shared.data();
        let stats = &mut data.router.stats;
        match ok {
            Ok(()) if steered => stats.fastpath_macs_steered += 1,
            Ok(()) => stats.fastpath_macs_unsteered += 1,
            Err(e) => {
                debug!("fast path: {op:?}: {e}");
                stats.fastpath_entry_failures += 1;
            }
        }
    }

    /// What reports show, refreshed.
    fn publish(&self, now: u64) {
        let links = self
            .neighbours
            .iter()
            .map(|(p, n)| {
                (
                    *p,
                    LinkStatus {
                        fast: n.link.path() == Path::Fast,
                        describe: n.link.describe(now),
                    },
                )
            })
            .collect();
        self.shared.fast_published().links = links;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_vni_comes_from_the_mesh_name_and_is_never_zero() {
        assert_eq!(vni("weave"), vni("weave"));
        assert_ne!(vni("weave"), vni("other"));
        for name in ["", "a", "weave", "x".repeat(300).as_str()] {
            assert!((1..1 << 24).contains(&vni(name)), "{name}");
        }
    }

    #[test]
    fn sealed_links_and_ipv6_peers_stay_on_the_sleeve_and_say_why() {
        let dev = Ok(Device {
            index: 9,
            mac: [2, 0, 0, 0, 0, 1],
        });
        let v4: SocketAddr = "10.0.0.2:6783".parse().unwrap();
        let mapped: SocketAddr = "[::ffff:10.0.0.2]:6783".parse().unwrap();
        let v6: SocketAddr = "[fd00::2]:6783".parse().unwrap();
        let ip = Ipv4Addr::new(10, 0, 0, 2);
        assert_eq!(eligibility(&dev, true, v4, true), Ok(ip));
        assert_eq!(eligibility(&dev, true, mapped, true), Ok(ip));
        assert_eq!(
            eligibility(&dev, false, v4, true),
            Err(Ineligible::Disabled { here: false }),
            "the peer runs none"
        );
        assert_eq!(
            eligibility(&dev, true, v4, false),
            Err(Ineligible::Encrypted),
            "a sealed link: no kernel encryption here"
        );
        assert!(matches!(
            eligibility(&dev, true, v6, true),
            Err(Ineligible::Unavailable(why)) if why.contains("IPv6")
        ));
        let off = Err(Ineligible::Disabled { here: true });
        assert_eq!(
            eligibility(&off, true, v4, true),
            Err(Ineligible::Disabled { here: true })
        );
    }
}
