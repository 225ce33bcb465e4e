//! The router daemon: the tokio shell around the pure core.
//!
//! Tasks: the TCP listener and one task per control connection
//! (`connection`), one dialler per target (`targets`), the UDP and TAP
//! pumps (`dataplane`), the local API (`crate::api::server`) and a periodic
//! tick. Control state lives in one mutex (`state::State`), the forwarding
//! state in another (`dataplane::DataPlane`); neither is held across an await.

pub mod attachments;
pub mod connection;
pub mod dataplane;
pub mod secure;
pub mod state;
pub mod targets;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::core::router::Router;
use crate::core::routes::Routes;
use crate::core::topology::PeerEntry;
use crate::core::PeerName;
use crate::net;

use self::dataplane::DataPlane;
use self::state::State;

pub const DEFAULT_PORT: u16 = 6783;
pub const DEFAULT_MTU: u16 = 1376;
pub const DEFAULT_CONN_LIMIT: usize = 200;
pub const BRIDGE: &str = "weave";
pub const TAP: &str = "weave-tap";
/// How often heartbeats go out on each connection (TCP and UDP).
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);
/// Silence after which a connection, or its UDP path, is considered dead.
pub const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a peer may stay unreachable before it is forgotten.
pub const GC_GRACE: Duration = Duration::from_secs(5);
/// Full topology gossip to every neighbour, to repair anything lost.
pub const FULL_GOSSIP_INTERVAL: Duration = Duration::from_secs(15);

#[derive(Debug, Clone)]
pub struct Config {
    pub name: PeerName,
    pub nickname: String,
    pub port: u16,
    pub mtu: u16,
    pub conn_limit: usize,
    pub discovery: bool,
    pub peers: Vec<String>,
    pub bridge: String,
    pub tap: String,
    pub state_dir: PathBuf,
    /// Read-only HTTP status and metrics (`crate::api::http`); None: off.
    pub http_addr: Option<SocketAddr>,
    /// `--mesh-name`: salts the password (so only meaningful with one).
    pub mesh_name: String,
    /// `--password` and friends; None: nothing is encrypted.
    pub crypto: Option<Arc<secure::CryptoConfig>>,
}

/// What every task shares.
pub struct Shared {
    pub config: Config,
    pub uid: u64,
    pub started: Instant,
    state: Mutex<State>,
    data: Mutex<DataPlane>,
    pub udp: UdpSocket,
    /// GSO/GRO batching state of `udp` (quinn-udp).
    pub udp_state: quinn_udp::UdpSocketState,
    pub tap: tun_rs::AsyncDevice,
    pub netlink: net::netlink::Netlink,
    shutdown: watch::Sender<bool>,
}

impl Shared {
    pub fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock is a bug; the state is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn data(&self) -> MutexGuard<'_, DataPlane> {
        self.data.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn ourself(&self) -> PeerName {
        self.config.name
    }

    pub fn shutdown(&self) {
        let _ = self.shutdown.send(true);
    }

    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// After any change to connections or topology: republish our entry,
    /// recompute routes, drop unreachable peers, dial discovered ones.
    pub fn topology_changed(self: &Arc<Self>, our_entry_changed: bool) {
        let (routes, wanted) = {
            let mut st = self.state();
            let changed = st.sync_our_entry() || our_entry_changed;
            if changed {
                for f in st.our_gossip() {
                    st.send_all(&f, None);
                }
            }
            (st.routes_now(), self.wanted(&st))
        };
        self.install_routes(routes, &[]);
        targets::discovered(self, wanted);
    }

    fn wanted(&self, st: &State) -> Vec<(PeerName, SocketAddr)> {
        if self.config.discovery {
            st.discovery_wanted()
        } else {
            Vec::new()
        }
    }

    /// Drop peers that stayed unreachable for `GC_GRACE`.
    fn collect_garbage(self: &Arc<Self>, now: Instant) {
        let (routes, removed, wanted) = {
            let mut st = self.state();
            let removed = st.topology.gc_after(now, GC_GRACE);
            if removed.is_empty() {
                return;
            }
            (st.routes_now(), removed, self.wanted(&st))
        };
        info!("peers gone from the mesh: {removed:?}");
        self.install_routes(routes, &removed);
        targets::discovered(self, wanted);
    }

    /// Install routes computed under the state lock. Two tasks may race
    /// between computing and installing: the epoch keeps an older
    /// computation from overwriting a newer one.
    fn install_routes(&self, (epoch, routes): (u64, Routes), removed: &[PeerName]) {
        let mut data = self.data();
        for p in removed {
            data.router.forget_peer(*p);
        }
        data.set_routes(epoch, routes);
    }
}

fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(1)
}

/// Run a router until it is told to stop or gets SIGTERM/SIGINT.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let uid: u64 = rand::random();
    let released = net::netns::release_inherited_netns_mounts();
    if released > 0 {
        info!("released {released} inherited network-namespace mounts");
    }
    let netlink = net::netlink::Netlink::connect().context("netlink")?;
    netlink
        .ensure_bridge(
            &config.bridge,
            u32::from(config.mtu),
            config.name.derived_mac("bridge"),
        )
        .await
        .with_context(|| format!("bridge {}", config.bridge))?;
    // A TAP left by a dead router (only possible if it was made persistent)
    // is replaced.
    if netlink.link_index(&config.tap).await?.is_some() {
        netlink.delete_link(&config.tap).await.ok();
    }
    // The pumps share a thread of their own, with a single-threaded runtime
    // whose reactor owns the TAP and the UDP socket: an event wakes the
    // thread that handles it, and the control plane cannot delay it (see
    // docs/DESIGN.md).
    let pumps = Pumps::new()?;
    let tap = {
        let _in = pumps.enter();
        net::tap::open_tap(&config.tap, config.mtu).context("TAP device")?
    };
    netlink
        .enslave(&config.tap, &config.bridge, u32::from(config.mtu))
        .await
        .with_context(|| format!("TAP {} on bridge {}", config.tap, config.bridge))?;
    for (family, result) in net::iptables::ensure_forward_accept(&config.bridge) {
        if let Err(e) = result {
            warn!(
                "{} FORWARD rule for bridge {} not installed: {e}",
                family.program(),
                config.bridge
            );
        }
    }

    let listen: SocketAddr = (std::net::Ipv6Addr::UNSPECIFIED, config.port).into();
    let (tcp, udp) = match (
        TcpListener::bind(listen).await,
        std::net::UdpSocket::bind(listen),
    ) {
        (Ok(t), Ok(u)) => (t, u),
        _ => {
            let v4: SocketAddr = (std::net::Ipv4Addr::UNSPECIFIED, config.port).into();
            let t = TcpListener::bind(v4)
                .await
                .with_context(|| format!("listen on TCP port {}", config.port))?;
            let u = std::net::UdpSocket::bind(v4)
                .with_context(|| format!("listen on UDP port {}", config.port))?;
            (t, u)
        }
    };
    udp.set_nonblocking(true)?;
    let udp = {
        let _in = pumps.enter();
        UdpSocket::from_std(udp)?
    };
    dataplane::tune_udp_socket(&udp);
    let udp_state = dataplane::udp_state(&udp).context("UDP socket options")?;

    let ours = PeerEntry {
        name: config.name,
        nickname: config.nickname.clone(),
        uid,
        version: now_millis(),
        connections: Vec::new(),
    };
    let (shutdown, _) = watch::channel(false);
    let routes = Routes::compute(&crate::core::topology::Topology::new(ours.clone()));
    let shared = Arc::new(Shared {
        uid,
        started: Instant::now(),
        state: Mutex::new(State::new(ours)),
        data: Mutex::new(DataPlane::new(
            Router::new(config.name, routes),
            config.crypto.is_some(),
        )),
        udp,
        udp_state,
        tap,
        netlink,
        shutdown,
        config,
    });

    let api = crate::api::server::bind().context("control socket")?;
    info!(
        name = %shared.config.name,
        nickname = %shared.config.nickname,
        port = shared.config.port,
        mtu = shared.config.mtu,
        encryption = shared.config.crypto.is_some(),
        mesh_name = %shared.config.mesh_name,
        "router started"
    );
    for p in shared.config.peers.clone() {
        targets::add_user_target(&shared, p);
    }

    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(connection::accept_loop(shared.clone(), tcp));
    let (pump_failed, mut pump_failure) = tokio::sync::mpsc::channel(2);
    pumps.start(&shared, pump_failed)?;
    tasks.spawn(tick_loop(shared.clone()));
    tasks.spawn(crate::api::server::serve(shared.clone(), api));
    {
        let shared = shared.clone();
        tasks.spawn(async move {
            attachments::restore(&shared).await;
            attachments::watch_docker(shared).await
        });
    }
    if let Some(http) = crate::api::http::bind(shared.config.http_addr).await {
        tasks.spawn(crate::api::http::serve(shared.clone(), http));
    }

    let mut stop = shared.shutdown_signal();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = stop.wait_for(|s| *s) => info!("stop requested"),
        _ = term.recv() => info!("SIGTERM: stopping"),
        _ = tokio::signal::ctrl_c() => info!("SIGINT: stopping"),
        Some(e) = pump_failure.recv() => return Err(e),
        Some(r) = tasks.join_next() => {
            // These tasks run forever; one ending is a fault worth dying for.
            match r {
                Ok(Err(e)) => return Err(e),
                Ok(Ok(())) => anyhow::bail!("a router task ended unexpectedly"),
                Err(e) => anyhow::bail!("a router task failed: {e}"),
            }
        }
    }
    // Say goodbye so peers notice at once rather than by heartbeat timeout.
    {
        let st = shared.state();
        for c in st.conns.values() {
            let _ =
                c.tx.try_send(state::ConnCmd::Close("peer is shutting down".into()));
        }
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    tasks.shutdown().await;
    Ok(())
}

/// The data plane's thread and its runtime.
struct Pumps {
    rt: Option<tokio::runtime::Runtime>,
}

/// A runtime may not be dropped from async code: a router that fails to
/// start lets go of an unstarted one this way.
impl Drop for Pumps {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl Pumps {
    fn new() -> anyhow::Result<Pumps> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("data-plane runtime")?;
        Ok(Pumps { rt: Some(rt) })
    }

    /// Register I/O made while the guard lives with the data plane's reactor.
    fn enter(&self) -> Option<tokio::runtime::EnterGuard<'_>> {
        self.rt.as_ref().map(|rt| rt.enter())
    }

    /// Run `tap_loop` and `udp_loop` on the data-plane thread; an error
    /// (they never end otherwise) is reported on `failed`.
    fn start(
        mut self,
        shared: &Arc<Shared>,
        failed: tokio::sync::mpsc::Sender<anyhow::Error>,
    ) -> anyhow::Result<()> {
        let Some(rt) = self.rt.take() else {
            anyhow::bail!("data plane already started");
        };
        let shared = shared.clone();
        std::thread::Builder::new()
            .name("weave-rs-data".into())
            .spawn(move || {
                let e = rt.block_on(async {
                    tokio::select! {
                        r = dataplane::tap_loop(shared.clone()) => r.context("TAP pump"),
                        r = dataplane::udp_loop(shared.clone()) => r.context("UDP pump"),
                    }
                });
                let e = e
                    .err()
                    .unwrap_or_else(|| anyhow::anyhow!("a data-plane pump ended"));
                let _ = failed.blocking_send(e);
            })
            .map(drop)
            .context("start the data-plane thread")
    }
}

/// Periodic housekeeping: MAC expiry, full gossip.
async fn tick_loop(shared: Arc<Shared>) -> anyhow::Result<()> {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut last_full = Instant::now();
    loop {
        tick.tick().await;
        let now = Instant::now();
        shared.data().router.expire(now);
        shared.collect_garbage(now);
        if now.duration_since(last_full) >= FULL_GOSSIP_INTERVAL {
            last_full = now;
            let st = shared.state();
            for f in st.full_gossip() {
                st.send_all(&f, None);
            }
        }
    }
}
