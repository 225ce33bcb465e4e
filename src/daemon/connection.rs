//! One task per control connection: handshake, then gossip and heartbeats
//! until either side closes or falls silent.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tracing::{debug, info, info_span, warn, Instrument};

use super::dataplane::LinkCrypto;
use super::secure::{self, ControlRx, ControlTx, Secured};
use super::state::{Conn, ConnCmd, Encryption};
use super::{Shared, HEARTBEAT_INTERVAL, HEARTBEAT_TIMEOUT};
use crate::core::crypto::keys::Resync;
use crate::core::wire::handshake::{self, Hello, Prefix, PREFIX_LEN};
use crate::core::wire::{control, gossip, sleeve};
use crate::core::PeerName;

pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection whose UDP heartbeats do not arrive (or stopped) for this
/// long is closed and dialled again: whatever broke (keys, addresses, a
/// NAT mapping) starts over.
pub const PENDING_TIMEOUT: Duration = Duration::from_secs(30);
/// Inbound connections allowed beyond the limit while they handshake.
const MAX_PENDING: usize = 64;
/// Frames queued for one connection before we stop queueing.
const QUEUE: usize = 256;
/// Unproven connections (handshaking, or registered without UDP yet) one
/// address may have at once.
const UNPROVEN_PER_IP: usize = 8;
/// A peer that takes longer than this to accept one control frame has
/// stopped reading.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How much of a peer's own text (close reasons) is kept and logged.
const PEER_TEXT_MAX: usize = 200;

/// Why a connection ended, as shown in status.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error("{0}")]
    Handshake(#[from] handshake::HandshakeError),
    #[error("handshake timed out")]
    HandshakeTimeout,
    #[error("cannot connect to ourself")]
    Ourself,
    #[error("connection limit of {0} reached")]
    Limit(usize),
    #[error("already connected to peer {0}")]
    Duplicate(PeerName),
    #[error("replaced by a connection from the other side")]
    Replaced(PeerName),
    #[error("no heartbeat from peer for {}s", HEARTBEAT_TIMEOUT.as_secs())]
    HeartbeatTimeout,
    #[error("no UDP heartbeats from peer for {}s", PENDING_TIMEOUT.as_secs())]
    NoUdp,
    #[error("peer stopped reading (a write timed out after {}s)", WRITE_TIMEOUT.as_secs())]
    WriteTimeout,
    #[error("datagram keys too far apart after a long UDP outage")]
    KeysTooFarApart,
    #[error("peer closed the connection: {0}")]
    ClosedByPeer(String),
    #[error("closed: {0}")]
    ClosedByUs(String),
    #[error("peer sent a bad control message: {0}")]
    Protocol(String),
    #[error("{0}")]
    EncryptionMismatch(&'static str),
    #[error("authentication failed: {0}")]
    AuthFailed(String),
    #[error("peer refused the connection: {0}")]
    Refused(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl ConnError {
    /// Ended before the connection was registered: worth remembering as
    /// a refused inbound connection.
    fn is_refusal(&self) -> bool {
        matches!(
            self,
            ConnError::Handshake(_)
                | ConnError::HandshakeTimeout
                | ConnError::Ourself
                | ConnError::Limit(_)
                | ConnError::EncryptionMismatch(_)
                | ConnError::AuthFailed(_)
                | ConnError::Refused(_)
        )
    }
}

pub async fn accept_loop(shared: Arc<Shared>, listener: TcpListener) -> anyhow::Result<()> {
    // Connections in any state, handshakes included: a flood of half-open
    // connections must not grow without bound.
    let slots = Arc::new(tokio::sync::Semaphore::new(
        shared.config.conn_limit + MAX_PENDING,
    ));
    loop {
        let (stream, remote) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: back off rather than spin.
                warn!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if !shared.state().admit(remote.ip(), UNPROVEN_PER_IP) {
            shared.state().refuse(
                remote,
                format!("more than {UNPROVEN_PER_IP} unproven connections from this address"),
                Instant::now(),
            );
            continue;
        }
        let admitted = Admitted {
            shared: shared.clone(),
            ip: remote.ip(),
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            shared
                .state()
                .refuse(remote, "too many connections".into(), Instant::now());
            continue;
        };
        let task_shared = shared.clone();
        shared.spawn(
            async move {
                let shared = task_shared;
                let _slot = slot;
                if let Err(e) = run(&shared, stream, remote, false, Some(admitted), None).await {
                    if e.is_refusal() {
                        // Kept, merged with a count, in `status`; strangers
                        // knocking must not fill the log.
                        debug!("inbound connection from {remote} refused: {e}");
                        shared.state().refuse(remote, e.to_string(), Instant::now());
                    } else {
                        info!("inbound connection from {remote} ended: {e}");
                    }
                }
            }
            .instrument(info_span!("conn", %remote)),
        );
    }
}

/// An inbound connection counted against its address's share until its
/// handshake is over (see `State::admit`).
pub struct Admitted {
    shared: Arc<Shared>,
    ip: std::net::IpAddr,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.shared.state().handshake_over(self.ip);
    }
}

/// The hellos, then, if both sides have a password, the Noise handshake.
async fn handshake(
    shared: &Shared,
    stream: &mut TcpStream,
    remote: SocketAddr,
    outbound: bool,
    our_session: u32,
) -> Result<(Hello, Option<Secured>), ConnError> {
    let crypto = shared.config.crypto.as_deref();
    let ours = Hello {
        name: shared.config.name,
        uid: shared.uid,
        port: shared.config.port,
        features: if crypto.is_some() {
            handshake::FEATURE_ENCRYPTION
        } else {
            0
        } | if shared.fast_device.is_ok() {
            handshake::FEATURE_FASTDP
        } else {
            0
        },
        nickname: shared.config.nickname.clone(),
    }
    .emit();
    stream.write_all(&ours).await?;
    let mut theirs = vec![0u8; PREFIX_LEN];
    stream.read_exact(&mut theirs).await?;
    let prefix = theirs
        .first_chunk::<PREFIX_LEN>()
        .map(Prefix::parse)
        .ok_or(ConnError::Protocol("short hello".into()))??;
    prefix.negotiate()?;
    theirs.resize(PREFIX_LEN + usize::from(prefix.body_len), 0);
    stream.read_exact(&mut theirs[PREFIX_LEN..]).await?;
    let hello = Hello::parse_body(&theirs[PREFIX_LEN..])?;
    if hello.name == shared.config.name {
        return Err(ConnError::Ourself);
    }
    let peer_encrypts = hello.features & handshake::FEATURE_ENCRYPTION != 0;
    let secured = match (crypto, peer_encrypts) {
        (None, false) => None,
        (Some(_), false) => {
            return Err(ConnError::EncryptionMismatch(
                "peer does not use encryption (we have a password, it has none)",
            ))
        }
        (None, true) => {
            return Err(ConnError::EncryptionMismatch(
                "peer requires encryption (launch this router with --password)",
            ))
        }
        (Some(c), true) => {
            let prologue = if outbound {
                secure::prologue(&ours, &theirs)
            } else {
                secure::prologue(&theirs, &ours)
            };
            Some(
                secure::handshake(
                    c,
                    stream,
                    outbound,
                    &prologue,
                    remote.ip(),
                    our_session,
                    Instant::now(),
                )
                .await?,
            )
        }
    };
    Ok((hello, secured))
}

/// Handshake, register, then serve the connection until it ends. `Ok` is
/// never returned: a connection always ends for a reason.
pub async fn run(
    shared: &Arc<Shared>,
    mut stream: TcpStream,
    remote: SocketAddr,
    outbound: bool,
    inbound: Option<Admitted>,
    on_established: Option<&(dyn Fn(u64) + Sync)>,
) -> Result<(), ConnError> {
    stream.set_nodelay(true).ok();
    let remote = SocketAddr::new(remote.ip().to_canonical(), remote.port());
    let our_session = shared.data().new_session_id();
    let (hello, secured) = tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        handshake(shared, &mut stream, remote, outbound, our_session),
    )
    .await
    .map_err(|_| ConnError::HandshakeTimeout)??;
    let listen_addr = SocketAddr::new(remote.ip().to_canonical(), hello.port);
    let (tx, rx) = mpsc::channel(QUEUE);
    let encryption = match &secured {
        None => Encryption::None,
        Some(s) if s.data_plain => Encryption::ControlOnly,
        Some(_) => Encryption::Full,
    };
    let remote_key = secured
        .as_ref()
        .map(|s| crate::core::crypto::noise::StaticKey::fingerprint(&s.remote_key));
    let (control_tx, control_rx, link) = match secured {
        None => (ControlTx::Plain, ControlRx::plain(), LinkCrypto::Plain),
        Some(s) => {
            let link = if s.data_plain {
                LinkCrypto::Plain
            } else {
                LinkCrypto::Sealed(Box::new(s.link))
            };
            (s.control_tx, s.control_rx, link)
        }
    };
    let conn = Conn {
        id: 0,
        peer: hello.name,
        nickname: hello.nickname.clone(),
        uid: hello.uid,
        remote,
        listen_addr,
        udp_addr: listen_addr,
        outbound,
        udp_ok: false,
        last_udp: None,
        since: Instant::now(),
        encryption,
        remote_key,
        fastdp: hello.features & handshake::FEATURE_FASTDP != 0,
        tx: tx.clone(),
    };
    let id = {
        let mut st = shared.state();
        let id = st.register(
            &mut shared.data(),
            conn,
            link,
            shared.config.name,
            shared.config.conn_limit,
        )?;
        // Tell the new neighbour everything we know.
        for f in st.full_gossip() {
            let _ = tx.try_send(ConnCmd::Send(f));
        }
        id
    };
    // Registered: from now on it counts against its address's share while
    // its UDP heartbeats are awaited (`State::admit`).
    drop(inbound);
    // From here on the connection leaves the tables however this future
    // ends, cancellation included.
    let _registered = Registered {
        shared: shared.clone(),
        peer: hello.name,
        id,
    };
    if let Some(f) = on_established {
        f(id);
    }
    let nickname = crate::core::text::sanitize(&hello.nickname, 64);
    info!(peer = %hello.name, %nickname, outbound, encryption = encryption.as_str(), "connection up, awaiting UDP heartbeats");
    let result = serve(shared, stream, &hello, id, rx, control_tx, control_rx)
        .instrument(info_span!("peer", name = %hello.name))
        .await;
    Err(result)
}

/// Connection `id` to `peer` as registered in the router's tables. A
/// connection's task may be cancelled (a forgotten target aborts its dial
/// loop): dropping this is what takes the connection out, so no entry can
/// outlive its task and keep refusing the peer's new connections.
struct Registered {
    shared: Arc<Shared>,
    peer: PeerName,
    id: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        let (shared, peer) = (&self.shared, self.peer);
        let removed = shared.state().unregister(&mut shared.data(), peer, self.id);
        if removed {
            // A router shutting down has nothing left to tell or dial.
            if !shared.stopping() {
                shared.topology_changed(false);
            }
        }
    }
}

async fn serve(
    shared: &Arc<Shared>,
    stream: TcpStream,
    hello: &Hello,
    id: u64,
    mut rx: mpsc::Receiver<ConnCmd>,
    mut control_tx: ControlTx,
    control_rx: ControlRx,
) -> ConnError {
    let (read, mut write) = stream.into_split();
    let (alive_tx, mut alive_rx) = tokio::sync::watch::channel(Instant::now());
    let reader = {
        let task_shared = shared.clone();
        let peer = hello.name;
        shared.spawn(
            async move { read_loop(&task_shared, read, control_rx, (peer, id), alive_tx).await }
                .in_current_span(),
        )
    };
    let abort = reader.abort_handle();
    let _guard = AbortOnDrop(abort);
    let mut reader = reader;
    let udp_heartbeat = sleeve::heartbeat(shared.config.name, hello.name, shared.uid);
    let mut tick = tokio::time::interval(HEARTBEAT_INTERVAL);
    loop {
        tokio::select! {
            r = &mut reader => {
                return match r {
                    Ok(Some(e)) => e,
                    Ok(None) => ConnError::ClosedByUs("router stopping".into()),
                    Err(e) => ConnError::Protocol(format!("reader task: {e}")),
                };
            }
            cmd = rx.recv() => match cmd {
                Some(ConnCmd::Send(frame)) => {
                    if let Err(e) = write_frame(&mut control_tx, &mut write, &frame, WRITE_TIMEOUT).await {
                        return e;
                    }
                }
                Some(ConnCmd::Close(reason)) => {
                    say_goodbye(&mut control_tx, &mut write, &reason).await;
                    return ConnError::ClosedByUs(reason);
                }
                Some(ConnCmd::Replaced) => {
                    let e = ConnError::Replaced(hello.name);
                    say_goodbye(&mut control_tx, &mut write, &e.to_string()).await;
                    return e;
                }
                None => return ConnError::ClosedByUs("router stopping".into()),
            },
            _ = tick.tick() => {
                let now = Instant::now();
                if now.duration_since(*alive_rx.borrow_and_update()) > HEARTBEAT_TIMEOUT {
                    return ConnError::HeartbeatTimeout;
                }
                let heartbeat = control::heartbeat(shared.data().tx_epoch(hello.name, id));
                if let Err(e) = write_frame(&mut control_tx, &mut write, &heartbeat, WRITE_TIMEOUT).await {
                    return e;
                }
                let udp_addr = match udp_check(shared, hello.name, now) {
                    Ok(a) => a,
                    Err(e) => return e,
                };
                let wrapped = udp_addr.and_then(|a| Some((a, shared.data().wrap_for(hello.name, &udp_heartbeat, now)?)));
                if let Some((addr, datagram)) = wrapped {
                    if let Err(e) = shared.udp.send_to(&datagram, addr).await {
                        debug!("UDP heartbeat to {addr}: {e}");
                    }
                }
            }
        }
    }
}

/// Tell the peer why we close, if it listens within a second, and close.
async fn say_goodbye(
    control_tx: &mut ControlTx,
    write: &mut tokio::net::tcp::OwnedWriteHalf,
    reason: &str,
) {
    let bye = control::emit(control::Kind::Close, reason.as_bytes());
    let _ = write_frame(control_tx, write, &bye, Duration::from_secs(1)).await;
    let _ = tokio::time::timeout(Duration::from_secs(1), write.shutdown()).await;
}

/// Write one control frame, or give up after `timeout`.
async fn write_frame(
    control_tx: &mut ControlTx,
    write: &mut tokio::net::tcp::OwnedWriteHalf,
    frame: &[u8],
    timeout: Duration,
) -> Result<(), ConnError> {
    match tokio::time::timeout(timeout, control_tx.send(write, frame, Instant::now())).await {
        Ok(r) => r.map_err(ConnError::from),
        Err(_) => Err(ConnError::WriteTimeout),
    }
}

/// A peer's own words (a close reason), fit to keep and log: cut short,
/// control characters replaced.
fn peer_text(bytes: &[u8]) -> String {
    // Only the start can be shown: do not decode megabytes to cut them.
    let head = &bytes[..bytes.len().min(4 * PEER_TEXT_MAX + 4)];
    crate::core::text::sanitize(&String::from_utf8_lossy(head), PEER_TEXT_MAX)
}

struct AbortOnDrop(tokio::task::AbortHandle);
impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Where to send our UDP heartbeat; also notices a UDP path gone silent
/// and takes the connection out of our topology entry until it recovers.
/// A connection that stays pending too long is closed, to be dialled again
/// with fresh keys and addresses.
fn udp_check(
    shared: &Arc<Shared>,
    peer: PeerName,
    now: Instant,
) -> Result<Option<SocketAddr>, ConnError> {
    let (addr, lost) = {
        let mut st = shared.state();
        let Some(c) = st.conns.get_mut(&peer) else {
            return Ok(None);
        };
        let heard = c.last_udp.unwrap_or(c.since);
        let stale = now.duration_since(heard) > HEARTBEAT_TIMEOUT;
        if !c.udp_ok && now.duration_since(heard) > PENDING_TIMEOUT {
            return Err(ConnError::NoUdp);
        }
        let lost = c.udp_ok && stale;
        if lost {
            warn!("UDP heartbeats from {peer} stopped: connection unusable until they resume");
            c.udp_ok = false;
        }
        (c.udp_addr, lost)
    };
    if lost {
        shared.data().remove_neighbour(peer);
        shared.topology_changed(false);
    }
    Ok(Some(addr))
}

/// UDP heartbeats handed over by the data plane, handled on the control
/// runtime (they may change routes and start dialling).
pub async fn heartbeat_loop(
    shared: Arc<Shared>,
    mut rx: mpsc::Receiver<super::UdpHeartbeat>,
) -> anyhow::Result<()> {
    while let Some((src, uid, from)) = rx.recv().await {
        udp_heartbeat(&shared, src, uid, from);
    }
    anyhow::bail!("the data plane's heartbeat queue closed")
}

/// A UDP heartbeat arrived from `src` at `from`.
fn udp_heartbeat(shared: &Arc<Shared>, src: PeerName, uid: u64, from: SocketAddr) {
    let now = Instant::now();
    let became_ok = {
        let mut st = shared.state();
        let Some(c) = st.conns.get_mut(&src) else {
            debug!("UDP heartbeat from {src} at {from}: no connection");
            return;
        };
        if c.uid != uid {
            debug!("UDP heartbeat from {src} at {from}: stale incarnation");
            return;
        }
        if !c.udp_source_allowed(from) {
            debug!(
                "UDP heartbeat from {src} at {from}: not the connection's address {}",
                c.remote.ip()
            );
            drop(st);
            shared.data().router.stats.dropped_unknown_sender += 1;
            return;
        }
        c.last_udp = Some(now);
        c.udp_addr = from;
        let became_ok = !c.udp_ok;
        c.udp_ok = true;
        became_ok
    };
    shared.data().set_neighbour(src, from);
    if became_ok {
        info!(peer = %src, "connection established (UDP heartbeats both ways)");
        // Now that the edge is usable, the peer can place everything we know:
        // send it all again (what it got at connect time may have been about
        // peers it could not yet reach).
        {
            let ipam = super::ipam::gossip_frame(shared);
            let dns = super::dns::full_frames(shared);
            let st = shared.state();
            if let Some(c) = st.conns.get(&src) {
                for f in st.full_gossip() {
                    let _ = c.tx.try_send(ConnCmd::Send(f));
                }
                let _ = c.tx.try_send(ConnCmd::Send(ipam));
                for f in dns {
                    let _ = c.tx.try_send(ConnCmd::Send(f));
                }
            }
        }
        shared.topology_changed(false);
    }
}

async fn read_loop(
    shared: &Arc<Shared>,
    mut read: OwnedReadHalf,
    mut control_rx: ControlRx,
    (peer, id): (PeerName, u64),
    alive: tokio::sync::watch::Sender<Instant>,
) -> ConnError {
    loop {
        let frame = match control_rx.next_frame(&mut read).await {
            Ok(f) => f,
            Err(e) => return e,
        };
        let now = Instant::now();
        let _ = alive.send(now);
        match control::parse(frame) {
            Ok((control::Kind::Heartbeat, body)) => {
                let Some(epoch) = control::heartbeat_epoch(body) else {
                    continue;
                };
                match shared.data().resync_rx(peer, id, epoch, now) {
                    Resync::Current => {}
                    Resync::Followed(n) => {
                        info!("followed the peer's datagram key {n} epochs on (UDP was cut)")
                    }
                    Resync::TooFar => return ConnError::KeysTooFarApart,
                }
            }
            Ok((control::Kind::Close, reason)) => {
                return ConnError::ClosedByPeer(peer_text(reason));
            }
            Ok((control::Kind::Gossip, body)) => {
                if let Err(e) = on_gossip(shared, peer, body) {
                    return ConnError::Protocol(e.to_string());
                }
            }
            Ok((control::Kind::Ipam, body)) => super::ipam::on_gossip(shared, peer, body),
            Ok((control::Kind::Dns, body)) => super::dns::on_gossip(shared, peer, body),
            // A newer peer's kind (IPAM or DNS gossip, say): not ours to
            // understand, and no reason to drop the peer.
            Err(control::ControlError::UnknownKind(kind)) => {
                debug!(%peer, kind, "skipped a control frame of a kind we do not know");
                shared.data().router.stats.control_frames_skipped += 1;
            }
            Err(e) => return ConnError::Protocol(e.to_string()),
        }
    }
}

/// Merges a gossip message. Only a malformed body is an error (it closes
/// the connection); entries the topology's rules drop or cut are counted.
fn on_gossip(shared: &Arc<Shared>, from: PeerName, body: &[u8]) -> anyhow::Result<()> {
    let entries = gossip::parse(body)?;
    let mut st = shared.state();
    let merged = st.topology.merge(entries, super::now_millis());
    for f in super::state::State::gossip_frames(&merged.changed) {
        st.send_all(&f, Some(from));
    }
    drop(st);
    if !merged.dropped.is_empty() {
        debug!(peer = %from, "gossip entries dropped or cut: {:?}", merged.dropped);
        shared
            .data()
            .router
            .stats
            .count_gossip_drops(&merged.dropped);
    }
    if merged.changed.is_empty() {
        return Ok(());
    }
    // An entry for our name that we do not hold was gossiped (a past
    // incarnation, or a forgery): our bumped entry must reach everyone, the
    // sender included.
    let ours_bumped = merged.changed.iter().any(|e| e.name == shared.config.name);
    shared.topology_changed(ours_bumped);
    Ok(())
}
