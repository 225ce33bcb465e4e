//! The DNS server: UDP and TCP on port 53 of the DNS address. Each query
//! is answered from the zone (`core::dns::answer`) on the spot, or
//! forwarded upstream in a task of its own (bounded by the forwarder's
//! cap: past it a query is dropped and counted, so a flood costs no
//! memory). Malformed queries are counted and dropped.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;
use tracing::{debug, info, warn};

use crate::core::dns::flood::{Shedder, BUDGET};

use super::upstream::{Upstream, UpstreamError, MAX_IN_FLIGHT, TIMEOUT};
use crate::api::protocol::QueryCounts;
use crate::core::dns::answer::{answer, servfail, Outcome, QueryError, Transport};
use crate::daemon::Shared;

const PORT: u16 = 53;
/// TCP connections served at once, and from one source; more are closed
/// at once.
const MAX_TCP: usize = 64;
const MAX_TCP_PER_SOURCE: usize = 8;
/// A TCP connection with no query for this long is closed.
const TCP_IDLE: Duration = Duration::from_secs(10);
/// A query, once begun, must arrive whole within this (and its answer be
/// taken within it).
const TCP_QUERY: Duration = Duration::from_secs(3);

/// Query counters (`report`, /metrics).
#[derive(Debug, Default)]
pub struct QueryStats {
    pub udp: AtomicU64,
    pub tcp: AtomicU64,
    /// Answered from the zone (NXDOMAIN and NODATA included).
    pub local: AtomicU64,
    pub forwarded: AtomicU64,
    /// Forwarded, and no upstream server answered: SERVFAIL.
    pub upstream_failed: AtomicU64,
    /// Dropped: too many forwarded queries waiting already.
    pub dropped_busy: AtomicU64,
    /// Dropped: a source over its share while the server could not keep up.
    pub dropped_flood: AtomicU64,
    pub dropped_malformed: AtomicU64,
    /// Answers sent truncated over UDP (the client asks again over TCP).
    pub truncated: AtomicU64,
    rotation: AtomicUsize,
}

impl QueryStats {
    pub fn counts(&self) -> QueryCounts {
        QueryCounts {
            udp: self.udp.load(Relaxed),
            tcp: self.tcp.load(Relaxed),
            local: self.local.load(Relaxed),
            forwarded: self.forwarded.load(Relaxed),
            upstream_failed: self.upstream_failed.load(Relaxed),
            dropped_busy: self.dropped_busy.load(Relaxed),
            dropped_flood: self.dropped_flood.load(Relaxed),
            dropped_malformed: self.dropped_malformed.load(Relaxed),
            truncated: self.truncated.load(Relaxed),
        }
    }
}

/// What to send back for `query`, or None (dropped); forwarding happens
/// here, so callers run this in a task when it may.
async fn respond(
    shared: &Shared,
    upstream: &Upstream,
    query: &[u8],
    t: Transport,
) -> Option<Vec<u8>> {
    match local(shared, query, t) {
        Some(reply) => reply,
        None => forward(shared, upstream, query, t).await,
    }
}

/// The answer from the zone: Some(reply or drop), or None to forward.
fn local(shared: &Shared, query: &[u8], t: Transport) -> Option<Option<Vec<u8>>> {
    let stats = &shared.dns_served.stats;
    let zone = shared.dns_served.zone();
    let rotation = stats.rotation.fetch_add(1, Relaxed);
    match answer(query, &zone, rotation, t) {
        Ok(Outcome::Reply(r)) => {
            stats.local.fetch_add(1, Relaxed);
            if r.get(2).is_some_and(|flags| flags & 0x02 != 0) {
                stats.truncated.fetch_add(1, Relaxed);
            }
            Some(Some(r))
        }
        Ok(Outcome::Forward) => None,
        Err(QueryError::Malformed(_) | QueryError::NotAQuery) => {
            stats.dropped_malformed.fetch_add(1, Relaxed);
            Some(None)
        }
        Err(e @ QueryError::Encode(_)) => {
            warn!("DNS: {e}");
            Some(servfail(query, t))
        }
    }
}

async fn forward(
    shared: &Shared,
    upstream: &Upstream,
    query: &[u8],
    t: Transport,
) -> Option<Vec<u8>> {
    let stats = &shared.dns_served.stats;
    stats.forwarded.fetch_add(1, Relaxed);
    match upstream.forward(query, t).await {
        Ok(r) => Some(r),
        Err(UpstreamError::Busy) => {
            stats.dropped_busy.fetch_add(1, Relaxed);
            None
        }
        Err(e) => {
            debug!("DNS: {e}");
            stats.upstream_failed.fetch_add(1, Relaxed);
            servfail(query, t)
        }
    }
}

/// Serves DNS until the router stops. A DNS address that cannot be bound
/// is logged and leaves the router running without DNS.
pub async fn serve(shared: Arc<Shared>) -> anyhow::Result<()> {
    let Some(cfg) = shared.config.dns.clone() else {
        return std::future::pending().await;
    };
    let at = SocketAddr::from((cfg.address, PORT));
    let bridge = shared.config.bridge.as_str();
    let sockets = match (UdpSocket::bind(at).await, tcp_listeners(at, bridge)) {
        (Ok(u), Ok(t)) => (u, t),
        (Err(e), _) | (_, Err(e)) => {
            warn!("DNS: cannot listen on {at}: {e}; DNS is off");
            shared
                .dns_served
                .listening(Err(format!("cannot listen on {at}: {e}")));
            return std::future::pending().await;
        }
    };
    let upstream = Arc::new(Upstream::new(
        super::upstream_servers(&cfg),
        TIMEOUT,
        MAX_IN_FLIGHT,
    ));
    info!(
        "DNS: answering for {} on {at}; upstream {:?}",
        cfg.domain,
        upstream.servers()
    );
    shared.dns_served.listening(Ok(upstream.servers().to_vec()));
    let (udp, tcp) = sockets;
    let udp = Arc::new(udp);
    let bridge = nix::net::if_::if_nametoindex(bridge)
        .ok()
        .map(|ifindex| Via {
            ifindex,
            from: cfg.address,
        });
    tokio::select! {
        r = udp_loop(&shared, udp, bridge, upstream.clone()) => r,
        r = tcp_loop(&shared, tcp, upstream) => r,
    }
}

/// Two TCP listeners on `at`. An answer to a container on the bridge must
/// leave by the bridge: the host may have no route to its subnet. The
/// kernel routes a socket bound to a device out of that device, on link
/// where no route says otherwise, so one listener is bound to the bridge;
/// the other serves the host itself and docker0. Of two listeners on one
/// port the kernel takes the first it meets that matches the arriving
/// device, and meets the one listened last first: the bound one.
fn tcp_listeners(at: SocketAddr, bridge: &str) -> std::io::Result<[TcpListener; 2]> {
    let listen = |device: Option<&str>| -> std::io::Result<TcpListener> {
        let s = tokio::net::TcpSocket::new_v4()?;
        s.set_reuseaddr(true)?;
        s.set_reuseport(true)?;
        s.bind_device(device.map(str::as_bytes))?;
        s.bind(at)?;
        s.listen(1024)
    };
    let any = listen(None)?;
    Ok([any, listen(Some(bridge))?])
}

/// Datagrams read per receive call.
const RECV_BATCH: usize = 32;
/// How often the socket's drop counter is read.
const DROPS_EVERY: Duration = Duration::from_millis(100);

/// `bridge`: answers to queries that came in by the bridge leave by it
/// (see `send`).
async fn udp_loop(
    shared: &Arc<Shared>,
    sock: Arc<UdpSocket>,
    bridge: Option<Via>,
    upstream: Arc<Upstream>,
) -> anyhow::Result<()> {
    let state = quinn_udp::UdpSocketState::new((&*sock).into())?;
    // A GRO run of same-sized queries arrives as one buffer of up to 64 KiB.
    let mut bufs: [Vec<u8>; RECV_BATCH] = std::array::from_fn(|_| vec![0u8; 65_535]);
    let mut meta = [quinn_udp::RecvMeta::default(); RECV_BATCH];
    let mut shedder = Shedder::default();
    let mut drops = socket_drops(&sock);
    let mut drops_read = Instant::now();
    loop {
        let n = {
            let mut slices = bufs.each_mut().map(|b| std::io::IoSliceMut::new(b));
            match sock
                .async_io(tokio::io::Interest::READABLE, || {
                    state.recv((&*sock).into(), &mut slices, &mut meta)
                })
                .await
            {
                Ok(n) => n,
                Err(e) => {
                    debug!("DNS: UDP receive: {e}");
                    continue;
                }
            }
        };
        let now_ms = shared.started.elapsed().as_millis() as u64;
        if drops_read.elapsed() >= DROPS_EVERY {
            drops_read = Instant::now();
            let d = socket_drops(&sock);
            if d > drops {
                if !shedder.shedding(now_ms) {
                    warn!("DNS: queries arrive faster than they can be answered; the busiest sources are limited to {} a second", BUDGET * 10);
                }
                shedder.overflowed(now_ms);
            }
            drops = d;
        }
        for (buf, m) in bufs.iter().zip(&meta).take(n) {
            let from = SocketAddr::new(m.addr.ip().to_canonical(), m.addr.port());
            let via = bridge.filter(|b| m.interface_index == Some(b.ifindex));
            let Some(run) = buf.get(..m.len) else {
                continue;
            };
            for query in run.chunks(m.stride.max(1)) {
                shared.dns_served.stats.udp.fetch_add(1, Relaxed);
                if !shedder.admit(from.ip(), now_ms) {
                    shared.dns_served.stats.dropped_flood.fetch_add(1, Relaxed);
                    continue;
                }
                match local(shared, query, Transport::Udp) {
                    Some(Some(reply)) => send(&sock, &reply, from, via).await,
                    Some(None) => {}
                    None => {
                        let (shared, sock, upstream) =
                            (shared.clone(), sock.clone(), upstream.clone());
                        let query = query.to_vec();
                        tokio::spawn(async move {
                            if let Some(r) =
                                forward(&shared, &upstream, &query, Transport::Udp).await
                            {
                                send(&sock, &r, from, via).await;
                            }
                        });
                    }
                }
            }
        }
    }
}

/// Where an answer leaves (IP_PKTINFO): by interface `ifindex`, on link
/// where no route says otherwise, from `from` (the DNS address; without
/// it the kernel would pick the interface's own address, which a
/// container's resolver would not take an answer from). `tcp_listeners`
/// does the same for TCP. No policy-routing rule, which would slow every
/// route lookup of the host.
#[derive(Debug, Clone, Copy)]
struct Via {
    ifindex: u32,
    from: std::net::Ipv4Addr,
}

/// Sends a reply; waits for room only when the socket's buffer is full.
async fn send(sock: &UdpSocket, reply: &[u8], to: SocketAddr, via: Option<Via>) {
    let SocketAddr::V4(to) = to else {
        return; // The socket is bound to an IPv4 address.
    };
    let once = || send_via(sock, reply, to, via);
    match sock.try_io(tokio::io::Interest::WRITABLE, once) {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
            let _ = sock.async_io(tokio::io::Interest::WRITABLE, once).await;
        }
        _ => {}
    }
}

fn send_via(
    sock: &UdpSocket,
    reply: &[u8],
    to: std::net::SocketAddrV4,
    via: Option<Via>,
) -> std::io::Result<usize> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags, SockaddrIn};
    use std::os::fd::AsRawFd;
    let info = via.map(|v| libc::in_pktinfo {
        ipi_ifindex: v.ifindex as libc::c_int,
        ipi_spec_dst: libc::in_addr {
            s_addr: u32::from(v.from).to_be(),
        },
        ipi_addr: libc::in_addr { s_addr: 0 },
    });
    let cmsg = info.as_ref().map(ControlMessage::Ipv4PacketInfo);
    let to = SockaddrIn::from(to);
    let iov = [std::io::IoSlice::new(reply)];
    sendmsg(
        sock.as_raw_fd(),
        &iov,
        cmsg.as_slice(),
        MsgFlags::empty(),
        Some(&to),
    )
    .map_err(std::io::Error::from)
}

/// How many datagrams the kernel dropped at `sock` (its receive buffer was
/// full): SO_MEMINFO's drop count; 0 where the kernel does not say.
fn socket_drops(sock: &UdpSocket) -> u32 {
    use std::os::fd::AsRawFd;
    const SK_MEMINFO_DROPS: usize = 8;
    let mut info = [0u32; 9];
    let mut len = std::mem::size_of_val(&info) as libc::socklen_t;
    // SAFETY: the buffer and its length are ours and match; the kernel
    // writes at most `len` bytes.
    let r = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_MEMINFO,
            info.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if r != 0 {
        return 0;
    }
    info[SK_MEMINFO_DROPS]
}

async fn tcp_loop(
    shared: &Arc<Shared>,
    listeners: [TcpListener; 2],
    upstream: Arc<Upstream>,
) -> anyhow::Result<()> {
    let slots = Arc::new(Semaphore::new(MAX_TCP));
    let per_source: Arc<Mutex<HashMap<IpAddr, usize>>> = Arc::default();
    let [any, on_bridge] = &listeners;
    loop {
        let accepted = tokio::select! {
            a = any.accept() => a,
            b = on_bridge.accept() => b,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                debug!("DNS: TCP accept: {e}");
                continue;
            }
        };
        let src = peer.ip().to_canonical();
        let admitted = {
            let mut m = per_source.lock().unwrap_or_else(|e| e.into_inner());
            let n = m.entry(src).or_insert(0);
            (*n < MAX_TCP_PER_SOURCE).then(|| *n += 1)
        };
        let permit = admitted.and_then(|()| slots.clone().try_acquire_owned().ok());
        let Some(permit) = permit else {
            if admitted.is_some() {
                release(&per_source, src);
            }
            shared.dns_served.stats.dropped_busy.fetch_add(1, Relaxed);
            continue;
        };
        let (shared, upstream, per_source) = (shared.clone(), upstream.clone(), per_source.clone());
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(e) = tcp_conn(&shared, stream, &upstream).await {
                debug!("DNS: TCP connection from {src}: {e}");
            }
            release(&per_source, src);
        });
    }
}

fn release(per_source: &Mutex<HashMap<IpAddr, usize>>, src: IpAddr) {
    let mut m = per_source.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(n) = m.get_mut(&src) {
        *n -= 1;
        if *n == 0 {
            m.remove(&src);
        }
    }
}

/// Queries on one TCP connection, one after another (RFC 7766 framing):
/// the next query may take `TCP_IDLE` to start, and `TCP_QUERY` to arrive
/// whole.
async fn tcp_conn(shared: &Shared, mut s: TcpStream, upstream: &Upstream) -> std::io::Result<()> {
    loop {
        let mut len = [0u8; 2];
        match tokio::time::timeout(TCP_IDLE, s.read_u8()).await {
            Ok(Ok(b)) => len[0] = b,
            Ok(Err(_)) | Err(_) => return Ok(()),
        }
        let timed_out = || std::io::Error::from(std::io::ErrorKind::TimedOut);
        let deadline = tokio::time::Instant::now() + TCP_QUERY;
        len[1] = tokio::time::timeout_at(deadline, s.read_u8())
            .await
            .map_err(|_| timed_out())??;
        let mut query = vec![0u8; usize::from(u16::from_be_bytes(len))];
        tokio::time::timeout_at(deadline, s.read_exact(&mut query))
            .await
            .map_err(|_| timed_out())??;
        shared.dns_served.stats.tcp.fetch_add(1, Relaxed);
        let Some(reply) = respond(shared, upstream, &query, Transport::Tcp).await else {
            // Malformed: on a stream, nothing after it can be trusted.
            return Ok(());
        };
        let Ok(n) = u16::try_from(reply.len()) else {
            return Ok(());
        };
        let mut out = Vec::with_capacity(reply.len() + 2);
        out.extend_from_slice(&n.to_be_bytes());
        out.extend_from_slice(&reply);
        tokio::time::timeout(TCP_QUERY, s.write_all(&out))
            .await
            .map_err(|_| timed_out())??;
    }
}
