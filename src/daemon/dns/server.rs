//! The DNS server: UDP and TCP on port 53 of the DNS address. Each query
//! is answered from the zone (`core::dns::answer`) on the spot, or
//! forwarded upstream in a task of its own (bounded by the forwarder's
//! cap: past it a query is dropped and counted, so a flood costs no
//! memory). Malformed queries are counted and dropped.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;
use tracing::{debug, info, warn};

use super::upstream::{Upstream, UpstreamError, MAX_IN_FLIGHT, TIMEOUT};
use crate::api::protocol::QueryCounts;
use crate::core::dns::answer::{answer, servfail, Outcome, QueryError, Transport};
use crate::daemon::Shared;

const PORT: u16 = 53;
/// TCP connections served at once; more are closed at once.
const MAX_TCP: usize = 64;
/// A TCP connection with no query for this long is closed.
const TCP_IDLE: Duration = Duration::from_secs(10);

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
    let sockets = match (UdpSocket::bind(at).await, TcpListener::bind(at).await) {
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
    tokio::select! {
        r = udp_loop(&shared, udp, upstream.clone()) => r,
        r = tcp_loop(&shared, tcp, upstream) => r,
    }
}

async fn udp_loop(
    shared: &Arc<Shared>,
    sock: Arc<UdpSocket>,
    upstream: Arc<Upstream>,
) -> anyhow::Result<()> {
    let mut buf = vec![0u8; 65_535];
    loop {
        let (n, from) = match sock.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(e) => {
                debug!("DNS: UDP receive: {e}");
                continue;
            }
        };
        shared.dns_served.stats.udp.fetch_add(1, Relaxed);
        let query = &buf[..n];
        match local(shared, query, Transport::Udp) {
            Some(Some(reply)) => {
                let _ = sock.send_to(&reply, from).await;
            }
            Some(None) => {}
            None => {
                let (shared, sock, upstream) = (shared.clone(), sock.clone(), upstream.clone());
                let query = query.to_vec();
                tokio::spawn(async move {
                    if let Some(r) = forward(&shared, &upstream, &query, Transport::Udp).await {
                        let _ = sock.send_to(&r, from).await;
                    }
                });
            }
        }
    }
}

async fn tcp_loop(
    shared: &Arc<Shared>,
    listener: TcpListener,
    upstream: Arc<Upstream>,
) -> anyhow::Result<()> {
    let slots = Arc::new(Semaphore::new(MAX_TCP));
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                debug!("DNS: TCP accept: {e}");
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            shared.dns_served.stats.dropped_busy.fetch_add(1, Relaxed);
            continue;
        };
        let (shared, upstream) = (shared.clone(), upstream.clone());
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(e) = tcp_conn(&shared, stream, &upstream).await {
                debug!("DNS: TCP connection: {e}");
            }
        });
    }
}

/// Queries on one TCP connection, one after another (RFC 7766 framing).
async fn tcp_conn(shared: &Shared, mut s: TcpStream, upstream: &Upstream) -> std::io::Result<()> {
    loop {
        let mut len = [0u8; 2];
        match tokio::time::timeout(TCP_IDLE, s.read_exact(&mut len)).await {
            Ok(Ok(_)) => {}
            Ok(Err(_)) | Err(_) => return Ok(()),
        }
        let mut query = vec![0u8; usize::from(u16::from_be_bytes(len))];
        tokio::time::timeout(TCP_IDLE, s.read_exact(&mut query))
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
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
        s.write_all(&out).await?;
    }
}
