//! The router daemon: the tokio shell around the pure core.
//!
//! Tasks: the TCP listener and one task per control connection
//! (`connection`), one dialler per target (`targets`), the UDP and TAP
//! pumps (`dataplane`), the local API (`crate::api::server`) and a periodic
//! tick. Control state lives in one mutex (`state::State`), the forwarding
//! state in another (`dataplane::DataPlane`); neither is held across an await.
//!
//! Two runtimes: the pumps have a thread of their own, and everything else
//! (connections, dialling, handshakes, routes) runs on the control runtime.
//! The pumps hand control work over (`Shared::heartbeats`) rather than do it;
//! every task is spawned through `Shared::spawn`, so shutdown cancels and
//! joins them all.

pub mod attachments;
pub mod cni;
pub mod connection;
pub mod dataplane;
pub mod dns;
pub mod fastpath;
pub mod firewall;
pub mod ipam;
pub mod known_peers;
pub mod plugin;
pub mod secure;
pub mod state;
pub mod targets;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

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
/// UDP heartbeats queued from the data plane to the control plane; more
/// are dropped (they repeat every second).
const HEARTBEAT_QUEUE: usize = 1024;
/// How long shutdown waits for the router's tasks to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// A UDP heartbeat the data plane received: (peer, its incarnation, from).
pub type UdpHeartbeat = (PeerName, u64, SocketAddr);

#[derive(Debug, Clone)]
pub struct Config {
    pub name: PeerName,
    pub nickname: String,
    pub port: u16,
    pub mtu: u16,
    /// `--mtu` was given (else a jumbo-frame underlay may raise it).
    pub mtu_explicit: bool,
    /// The kernel fast path may be used (not `--no-fastdp`).
    pub fastdp: bool,
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
    /// `--ipalloc-range`, `--ipalloc-default-subnet`, `--ipalloc-init`.
    pub ipam: crate::core::ipam::config::IpamConfig,
    /// Peers that must take part in the first ring's consensus
    /// (`crate::core::ipam::config::quorum`); None: no consensus is held
    /// (`seed` or `observer`).
    pub ipam_quorum: Option<u32>,
    /// `--ipalloc-timeout`: how long an allocation request may wait.
    pub ipam_timeout: Duration,
    /// `--dns-*`; None: `--no-dns`.
    pub dns: Option<dns::DnsConfig>,
    /// `--plugin-socket`: where the Docker plugin listens; None: off.
    pub plugin_socket: Option<PathBuf>,
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
    /// The control-plane runtime: every task but the pumps runs there.
    control: tokio::runtime::Handle,
    tasks: TaskTracker,
    cancel: CancellationToken,
    /// UDP heartbeats, from the data plane to the control plane.
    pub heartbeats: mpsc::Sender<UdpHeartbeat>,
    /// The allocator (`ipam`); never locked while `state` is.
    ipam: Mutex<ipam::IpamShell>,
    /// Woken whenever IPAM gossip went out (waiting requests look again).
    pub ipam_changed: tokio::sync::Notify,
    /// The name records (`dns`); never locked while `state` is.
    dns: Mutex<dns::DnsShell>,
    /// What the DNS server answers from.
    pub dns_served: dns::Served,
    /// The Docker plugin's networks and endpoints.
    plugin: Mutex<plugin::PluginState>,
    /// The fast path's VXLAN device, or why there is none.
    pub fast_device: Result<fastpath::Device, crate::core::fastpath::Ineligible>,
    /// Each neighbour's carrier, as the fast path's task last saw it.
    fast_published: Mutex<fastpath::Published>,
    /// MACs to steer to the fast path or back, from the data plane.
    pub steer: mpsc::Sender<crate::core::steering::SteerOp>,
}

impl Shared {
    pub fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock is a bug; the state is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn data(&self) -> MutexGuard<'_, DataPlane> {
        self.data.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn ipam(&self) -> MutexGuard<'_, ipam::IpamShell> {
        self.ipam.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn dns(&self) -> MutexGuard<'_, dns::DnsShell> {
        self.dns.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn plugin(&self) -> MutexGuard<'_, plugin::PluginState> {
        self.plugin.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn fast_published(&self) -> MutexGuard<'_, fastpath::Published> {
        self.fast_published
            .lock()
            .unwrap_or_else(|e| e.into_inner())
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

    /// Whether shutdown has begun (tasks are being cancelled).
    pub fn stopping(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Run `fut` on the control-plane runtime, whichever thread calls this.
    /// The router owns the task: shutdown cancels it (the result is then
    /// `None`) and waits for it to end.
    pub fn spawn<F>(&self, fut: F) -> tokio::task::JoinHandle<Option<F::Output>>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let cancel = self.cancel.clone();
        self.tasks.spawn_on(
            async move { cancel.run_until_cancelled(fut).await },
            &self.control,
        )
    }

    /// After any change to connections or topology: republish our entry,
    /// recompute routes, drop unreachable peers, dial discovered ones.
    pub fn topology_changed(self: &Arc<Self>, our_entry_changed: bool) {
        let (routes, wanted, connected) = {
            let mut st = self.state();
            let changed = st.sync_our_entry() || our_entry_changed;
            if changed {
                for f in st.our_gossip() {
                    st.send_all(&f, None);
                }
            }
            let connected: Vec<(PeerName, SocketAddr)> = st
                .conns
                .values()
                .filter(|c| c.udp_ok)
                .map(|c| (c.peer, c.listen_addr))
                .collect();
            (st.routes_now(), self.wanted(&st), connected)
        };
        known_peers::record(self, connected);
        self.install_routes(routes, &[]);
        targets::discovered(self, wanted);
        dns::step(self);
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
        dns::step(self);
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
pub async fn run(mut config: Config) -> anyhow::Result<()> {
    log_panics();
    let uid: u64 = rand::random();
    let released = net::netns::release_inherited_netns_mounts();
    if released > 0 {
        info!("released {released} inherited network-namespace mounts");
    }
    let netlink = net::netlink::Netlink::connect().context("netlink")?;
    config.mtu = fastpath::default_mtu(&config, &netlink).await;
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
    let fast_device = fastpath::setup(&config, &netlink).await;
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
    let (heartbeats, heartbeats_rx) = mpsc::channel(HEARTBEAT_QUEUE);
    let (steer, steer_rx) = mpsc::channel(fastpath::STEER_QUEUE);
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
        control: tokio::runtime::Handle::current(),
        tasks: TaskTracker::new(),
        cancel: CancellationToken::new(),
        heartbeats,
        ipam: Mutex::new(ipam::IpamShell::new(&config)),
        ipam_changed: tokio::sync::Notify::new(),
        dns: Mutex::new(dns::DnsShell::new(config.name, uid)),
        dns_served: dns::Served::default(),
        plugin: Mutex::new(plugin::PluginState::default()),
        fast_device,
        fast_published: Mutex::new(fastpath::Published::default()),
        steer,
        config,
    });
    // Want ids of this life start where no past life's answers can match.
    shared.ipam().core.number_wants_from(uid >> 16);
    ipam::load(&shared);
    dns::prepare(&shared).await;
    plugin::load(&shared);
    if shared.config.plugin_socket.is_some() {
        plugin::sweep(&shared, true);
    }

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
    // Remembered peers are a kind of discovery.
    if shared.config.discovery {
        for (peer, addr) in known_peers::load(&shared) {
            targets::add_remembered(&shared, peer, addr);
        }
    }

    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(connection::accept_loop(shared.clone(), tcp));
    let (pump_failed, mut pump_failure) = mpsc::channel(2);
    let pumps = pumps.start(&shared, pump_failed)?;
    tasks.spawn(tick_loop(shared.clone()));
    tasks.spawn(connection::heartbeat_loop(shared.clone(), heartbeats_rx));
    tasks.spawn(crate::api::server::serve(shared.clone(), api));
    tasks.spawn(dns::serve(shared.clone()));
    tasks.spawn(plugin::serve(shared.clone()));
    tasks.spawn(cni::replay_released(shared.clone()));
    tasks.spawn(fastpath::run(shared.clone(), steer_rx));
    tasks.spawn(firewall::keep_forward_accept(shared.clone()));
    {
        let shared = shared.clone();
        tasks.spawn(async move {
            attachments::restore(&shared).await;
            attachments::reclaim_addresses(&shared).await;
            ipam::release_orphans(&shared).await;
            shared.ipam().started = true;
            attachments::watch_docker(shared).await
        });
    }
    if let Some(http) = crate::api::http::bind(shared.config.http_addr).await {
        tasks.spawn(crate::api::http::serve(shared.clone(), http));
    }

    let mut stop = shared.shutdown_signal();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let outcome = tokio::select! {
        _ = stop.wait_for(|s| *s) => { info!("stop requested"); Ok(()) }
        _ = term.recv() => { info!("SIGTERM: stopping"); Ok(()) }
        _ = tokio::signal::ctrl_c() => { info!("SIGINT: stopping"); Ok(()) }
        e = pump_failure.recv() => Err(e.unwrap_or_else(|| anyhow::anyhow!("the data-plane thread ended"))),
        Some(r) = tasks.join_next() => {
            // These tasks run forever; one ending is a fault worth dying for.
            match r {
                Ok(Err(e)) => Err(e),
                Ok(Ok(())) => Err(anyhow::anyhow!("a router task ended unexpectedly")),
                Err(e) => Err(anyhow::anyhow!("a router task failed: {e}")),
            }
        }
    };
    if let Err(e) = &outcome {
        error!("router stopping: {e:#}");
    } else {
        // Say goodbye so peers notice at once rather than by heartbeat timeout.
        let closing: Vec<_> = {
            let st = shared.state();
            st.conns
                .values()
                .map(|c| {
                    let _ =
                        c.tx.try_send(state::ConnCmd::Close("peer is shutting down".into()));
                    c.tx.clone()
                })
                .collect()
        };
        // Each connection task drops its queue once the goodbye is written.
        let written = futures::future::join_all(closing.iter().map(|tx| tx.closed()));
        let _ = tokio::time::timeout(Duration::from_millis(500), written).await;
    }
    shared.cancel.cancel();
    shared.tasks.close();
    tasks.shutdown().await;
    if tokio::time::timeout(SHUTDOWN_GRACE, shared.tasks.wait())
        .await
        .is_err()
    {
        warn!(
            "{} router tasks still running after {}s",
            shared.tasks.len(),
            SHUTDOWN_GRACE.as_secs()
        );
    }
    pumps.join().await;
    fastpath::teardown(&shared).await;
    outcome
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

    /// Run `tap_loop` and `udp_loop` on the data-plane thread until the
    /// router is cancelled. Anything else that ends them (an error, a panic:
    /// they never end otherwise) is reported on `failed`, and the router
    /// stops: a router without a data path must not look healthy.
    fn start(
        mut self,
        shared: &Arc<Shared>,
        failed: mpsc::Sender<anyhow::Error>,
    ) -> anyhow::Result<PumpThread> {
        let Some(rt) = self.rt.take() else {
            anyhow::bail!("data plane already started");
        };
        let shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("weave-rs-data".into())
            .spawn(move || {
                let cancel = shared.cancel.clone();
                let pumps = std::panic::AssertUnwindSafe(|| {
                    rt.block_on(async {
                        tokio::select! {
                            r = dataplane::tap_loop(shared.clone()) => Some(r.context("TAP pump")),
                            r = dataplane::udp_loop(shared.clone()) => Some(r.context("UDP pump")),
                            _ = cancel.cancelled() => None,
                        }
                    })
                });
                let e = match std::panic::catch_unwind(pumps) {
                    Ok(None) => return,
                    Ok(Some(r)) => r
                        .err()
                        .unwrap_or_else(|| anyhow::anyhow!("a data-plane pump ended")),
                    Err(panic) => anyhow::anyhow!(
                        "the data-plane thread panicked: {}",
                        panic_message(panic.as_ref())
                    ),
                };
                let _ = failed.blocking_send(e);
            })
            .context("start the data-plane thread")?;
        Ok(PumpThread(thread))
    }
}

/// The running data-plane thread, joined at shutdown.
struct PumpThread(std::thread::JoinHandle<()>);

impl PumpThread {
    async fn join(self) {
        let joined = tokio::task::spawn_blocking(move || self.0.join());
        if tokio::time::timeout(SHUTDOWN_GRACE, joined).await.is_err() {
            warn!("the data-plane thread did not stop");
        }
    }
}

/// The text of a panic's payload.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

/// Log every panic, on any thread, before it unwinds or (release builds)
/// aborts the process: the router's log must say why it ended.
fn log_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let thread = std::thread::current();
        let location = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        error!(
            "panic in thread {}{location}: {}",
            thread.name().unwrap_or("?"),
            panic_message(info.payload())
        );
        default(info);
    }));
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
        ipam::step(&shared, false);
        dns::step(&shared);
        plugin::sweep(&shared, false);
        if now.duration_since(last_full) >= FULL_GOSSIP_INTERVAL {
            last_full = now;
            let st = shared.state();
            for f in st.full_gossip() {
                st.send_all(&f, None);
            }
        }
    }
}
