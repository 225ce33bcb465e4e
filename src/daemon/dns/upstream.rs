//! Forwarding queries for names outside our domain to the host's resolvers.
//!
//! The query bytes go out unchanged, to each server in turn (resolv.conf
//! order), and the first well-formed answer comes back unchanged; a server
//! that stays silent for the timeout, refuses or cannot be reached is skipped.
//! A semaphore bounds the queries waiting on upstream servers: when it is
//! full a query fails at once with [`UpstreamError::Busy`] instead of
//! queueing, so a flood costs bounded memory (one 64 KiB buffer per query in
//! flight) and bounded sockets.

use std::fmt;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::Semaphore;
use tokio::time::{timeout_at, Instant};

/// How long each server has to answer before the next one is tried.
pub const TIMEOUT: Duration = Duration::from_secs(2);
/// Queries waiting on upstream servers at once; more fail with `Busy`.
pub const MAX_IN_FLIGHT: usize = 256;

/// A DNS message starts with a 12-byte header, the ID in its first 2 bytes.
const HEADER_LEN: usize = 12;
/// The largest DNS message over UDP or TCP (TCP's length prefix is 16 bits).
const MAX_MESSAGE: usize = u16::MAX as usize;

/// How a query reaches the upstream server: the transport the client used,
/// so a truncated UDP answer makes the client retry over TCP end to end.
pub use crate::core::dns::answer::Transport;

/// Why a query got no answer from upstream.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("no upstream DNS servers configured (no usable nameserver line in resolv.conf)")]
    NoServers,
    #[error("too many DNS queries already waiting for the upstream servers; query dropped")]
    Busy,
    #[error("query of {0} bytes is not a DNS message (shorter than the 12-byte header)")]
    QueryTooShort(usize),
    #[error("query of {0} bytes is larger than a DNS message can be (65535 bytes)")]
    QueryTooLong(usize),
    /// Every server was tried and none answered in time.
    #[error("no answer from upstream DNS servers {} within the timeout", List(.0))]
    Timeout(Vec<SocketAddr>),
    /// Every server was tried and at least one failed other than by staying
    /// silent; one entry per server, in the order tried.
    #[error("upstream DNS servers failed: {}", Failures(.0))]
    Io(Vec<ServerFailure>),
}

/// What went wrong with one upstream server.
#[derive(Debug)]
pub struct ServerFailure {
    pub server: SocketAddr,
    /// `ErrorKind::TimedOut` for a server that stayed silent.
    pub error: io::Error,
}

impl fmt::Display for ServerFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.server, self.error)
    }
}

struct List<'a>(&'a [SocketAddr]);

impl fmt::Display for List<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, server) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{server}")?;
        }
        Ok(())
    }
}

struct Failures<'a>(&'a [ServerFailure]);

impl fmt::Display for Failures<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, failure) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{failure}")?;
        }
        Ok(())
    }
}

/// The host's resolvers, and the bound on queries waiting on them.
#[derive(Debug)]
pub struct Upstream {
    servers: Vec<SocketAddr>,
    timeout: Duration,
    in_flight: Semaphore,
}

impl Upstream {
    /// `timeout` is per server; `max_in_flight` bounds queries waiting on any
    /// server (0 makes every query `Busy`).
    pub fn new(servers: Vec<SocketAddr>, timeout: Duration, max_in_flight: usize) -> Upstream {
        Upstream {
            servers,
            timeout,
            in_flight: Semaphore::new(max_in_flight.min(Semaphore::MAX_PERMITS)),
        }
    }

    pub fn servers(&self) -> &[SocketAddr] {
        &self.servers
    }

    /// Forward raw query bytes; returns the raw response bytes from the first
    /// server that answers.
    ///
    /// Over UDP, only a reply of at least 12 bytes carrying the query's ID
    /// counts as an answer; anything else from the server is ignored until
    /// its timeout runs out. Over TCP the whole exchange (connect, write,
    /// read) must fit in the timeout, and a reply with another ID is a
    /// failure of that server.
    pub async fn forward(
        &self,
        query: &[u8],
        transport: Transport,
    ) -> Result<Vec<u8>, UpstreamError> {
        if self.servers.is_empty() {
            return Err(UpstreamError::NoServers);
        }
        if query.len() < HEADER_LEN {
            return Err(UpstreamError::QueryTooShort(query.len()));
        }
        if query.len() > MAX_MESSAGE {
            return Err(UpstreamError::QueryTooLong(query.len()));
        }
        let _permit = self
            .in_flight
            .try_acquire()
            .map_err(|_| UpstreamError::Busy)?;

        let mut failures = Vec::with_capacity(self.servers.len());
        for &server in &self.servers {
            let deadline = Instant::now() + self.timeout;
            let attempt = match transport {
                Transport::Udp => timeout_at(deadline, udp_exchange(server, query)).await,
                Transport::Tcp => timeout_at(deadline, tcp_exchange(server, query)).await,
            };
            let error = match attempt {
                Ok(Ok(response)) => return Ok(response),
                Ok(Err(error)) => error,
                Err(_) => io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no answer within {:?}", self.timeout),
                ),
            };
            tracing::debug!(%server, ?transport, %error, "upstream DNS server failed");
            failures.push(ServerFailure { server, error });
        }
        if failures
            .iter()
            .all(|f| f.error.kind() == io::ErrorKind::TimedOut)
        {
            Err(UpstreamError::Timeout(
                failures.into_iter().map(|f| f.server).collect(),
            ))
        } else {
            Err(UpstreamError::Io(failures))
        }
    }
}

/// An unspecified local address of the server's family, any port.
fn local_for(server: SocketAddr) -> SocketAddr {
    match server {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    }
}

fn is_answer_to(response: &[u8], query: &[u8]) -> bool {
    response.len() >= HEADER_LEN && response[..2] == query[..2]
}

/// One query on a fresh socket (a fresh random source port); returns at the
/// first answer, and runs until cancelled if none comes.
async fn udp_exchange(server: SocketAddr, query: &[u8]) -> io::Result<Vec<u8>> {
    let socket = UdpSocket::bind(local_for(server)).await?;
    // Connected: the kernel drops datagrams from anyone but the server, and
    // reports its ICMP "port unreachable" as an error on recv.
    socket.connect(server).await?;
    socket.send(query).await?;
    let mut buf = vec![0; MAX_MESSAGE + 1];
    loop {
        let len = socket.recv(&mut buf).await?;
        if is_answer_to(&buf[..len], query) {
            buf.truncate(len);
            return Ok(buf);
        }
        tracing::debug!(%server, len, "ignoring a UDP reply that does not answer the query");
    }
}

async fn tcp_exchange(server: SocketAddr, query: &[u8]) -> io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(server).await?;
    stream.set_nodelay(true)?;
    // One write for prefix and query, so they leave in one segment.
    let mut framed = Vec::with_capacity(2 + query.len());
    let len = u16::try_from(query.len()).map_err(|_| io::ErrorKind::InvalidInput)?;
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(query);
    stream.write_all(&framed).await?;

    let len = usize::from(stream.read_u16().await?);
    let mut response = vec![0; len];
    stream.read_exact(&mut response).await?;
    if !is_answer_to(&response, query) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("reply of {len} bytes does not answer the query (short, or another ID)"),
        ));
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use tokio::net::TcpListener;

    /// A query with `id`, and a body to tell it apart.
    fn query(id: u16) -> Vec<u8> {
        let mut q = id.to_be_bytes().to_vec();
        q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
        q.extend_from_slice(b"\x07example\x03com\x00\x00\x01\x00\x01");
        q
    }

    /// A response to a query with `id`, marked by `tag` so a test can tell
    /// which server or which reply it came from.
    fn response(id: u16, tag: u8) -> Vec<u8> {
        let mut r = id.to_be_bytes().to_vec();
        r.extend_from_slice(&[0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0, tag]);
        r
    }

    fn id_of(message: &[u8]) -> u16 {
        u16::from_be_bytes([message[0], message[1]])
    }

    async fn udp_socket() -> UdpSocket {
        UdpSocket::bind("127.0.0.1:0").await.unwrap()
    }

    /// A UDP server that answers every query with `response(id, tag)`.
    async fn udp_server(tag: u8) -> SocketAddr {
        let socket = udp_socket().await;
        let addr = socket.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = vec![0; 65536];
            loop {
                let (len, from) = socket.recv_from(&mut buf).await.unwrap();
                let reply = response(id_of(&buf[..len]), tag);
                socket.send_to(&reply, from).await.unwrap();
            }
        });
        addr
    }

    /// A TCP server that answers one query per connection, checking framing.
    async fn tcp_server(tag: u8) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                let len = usize::from(stream.read_u16().await.unwrap());
                let mut q = vec![0; len];
                stream.read_exact(&mut q).await.unwrap();
                assert_eq!(q, query(id_of(&q)), "framing delivered the query intact");
                let reply = response(id_of(&q), tag);
                let mut framed = (reply.len() as u16).to_be_bytes().to_vec();
                framed.extend_from_slice(&reply);
                stream.write_all(&framed).await.unwrap();
            }
        });
        addr
    }

    /// Receives one datagram on a silent server: proof the query was sent.
    async fn received(socket: &UdpSocket) -> Vec<u8> {
        let mut buf = vec![0; 65536];
        let (len, _) = socket.recv_from(&mut buf).await.unwrap();
        buf.truncate(len);
        buf
    }

    const LONG: Duration = Duration::from_secs(10);
    const SHORT: Duration = Duration::from_millis(200);

    #[tokio::test]
    async fn answers_over_udp() {
        let server = udp_server(7).await;
        let upstream = Upstream::new(vec![server], LONG, MAX_IN_FLIGHT);
        let answer = upstream.forward(&query(0x1234), Transport::Udp).await;
        assert_eq!(answer.unwrap(), response(0x1234, 7));
    }

    #[tokio::test]
    async fn answers_over_tcp() {
        let server = tcp_server(9).await;
        let upstream = Upstream::new(vec![server], LONG, MAX_IN_FLIGHT);
        let answer = upstream.forward(&query(0xbeef), Transport::Tcp).await;
        assert_eq!(answer.unwrap(), response(0xbeef, 9));
    }

    #[tokio::test]
    async fn silent_udp_server_is_skipped_for_the_next() {
        let silent = udp_socket().await;
        let answering = udp_server(2).await;
        let upstream = Upstream::new(
            vec![silent.local_addr().unwrap(), answering],
            SHORT,
            MAX_IN_FLIGHT,
        );
        let started = Instant::now();
        let answer = upstream.forward(&query(42), Transport::Udp).await;
        assert_eq!(answer.unwrap(), response(42, 2));
        assert!(started.elapsed() >= SHORT, "waited for the silent server");
        assert_eq!(
            received(&silent).await,
            query(42),
            "silent server asked first"
        );
    }

    #[tokio::test]
    async fn silent_tcp_server_is_skipped_for_the_next() {
        // Accepts (the backlog does) but never reads or answers.
        let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let answering = tcp_server(3).await;
        let upstream = Upstream::new(
            vec![silent.local_addr().unwrap(), answering],
            SHORT,
            MAX_IN_FLIGHT,
        );
        let answer = upstream.forward(&query(43), Transport::Tcp).await;
        assert_eq!(answer.unwrap(), response(43, 3));
        let (mut stream, _) = silent.accept().await.unwrap();
        assert_eq!(stream.read_u16().await.unwrap() as usize, query(43).len());
    }

    #[tokio::test]
    async fn all_silent_is_a_timeout_naming_each_server_in_order() {
        let a = udp_socket().await;
        let b = udp_socket().await;
        let servers = vec![a.local_addr().unwrap(), b.local_addr().unwrap()];
        let upstream = Upstream::new(servers.clone(), SHORT, MAX_IN_FLIGHT);
        let error = upstream
            .forward(&query(5), Transport::Udp)
            .await
            .unwrap_err();
        match &error {
            UpstreamError::Timeout(tried) => assert_eq!(tried, &servers),
            other => panic!("expected Timeout, got {other:?}"),
        }
        let message = error.to_string();
        assert!(message.contains(&servers[0].to_string()), "{message}");
        assert!(message.contains(&servers[1].to_string()), "{message}");
        assert_eq!(received(&a).await, query(5));
        assert_eq!(received(&b).await, query(5));
    }

    #[tokio::test]
    async fn udp_reply_with_wrong_id_or_too_short_is_ignored() {
        let server = udp_socket().await;
        let addr = server.local_addr().unwrap();
        let upstream = Arc::new(Upstream::new(vec![addr], LONG, MAX_IN_FLIGHT));
        let forward = {
            let upstream = upstream.clone();
            tokio::spawn(async move { upstream.forward(&query(100), Transport::Udp).await })
        };
        let mut buf = vec![0; 65536];
        let (_, client) = server.recv_from(&mut buf).await.unwrap();
        // Sent in order on loopback: the client sees the two bad ones first.
        server.send_to(&response(101, 1), client).await.unwrap();
        server.send_to(&100u16.to_be_bytes(), client).await.unwrap();
        server.send_to(&response(100, 2), client).await.unwrap();
        assert_eq!(forward.await.unwrap().unwrap(), response(100, 2));
    }

    #[tokio::test]
    async fn only_wrong_id_replies_is_a_timeout() {
        let server = udp_socket().await;
        let addr = server.local_addr().unwrap();
        let upstream = Arc::new(Upstream::new(vec![addr], SHORT, MAX_IN_FLIGHT));
        let forward = {
            let upstream = upstream.clone();
            tokio::spawn(async move { upstream.forward(&query(7), Transport::Udp).await })
        };
        let mut buf = vec![0; 65536];
        let (_, client) = server.recv_from(&mut buf).await.unwrap();
        server.send_to(&response(8, 1), client).await.unwrap();
        match forward.await.unwrap() {
            Err(UpstreamError::Timeout(tried)) => assert_eq!(tried, vec![addr]),
            other => panic!("expected Timeout, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn tcp_reply_with_wrong_id_fails_that_server() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let len = usize::from(stream.read_u16().await.unwrap());
            let mut q = vec![0; len];
            stream.read_exact(&mut q).await.unwrap();
            let reply = response(id_of(&q).wrapping_add(1), 1);
            let mut framed = (reply.len() as u16).to_be_bytes().to_vec();
            framed.extend_from_slice(&reply);
            stream.write_all(&framed).await.unwrap();
        });
        let upstream = Upstream::new(vec![addr], LONG, MAX_IN_FLIGHT);
        match upstream.forward(&query(9), Transport::Tcp).await {
            Err(UpstreamError::Io(failures)) => {
                assert_eq!(failures.len(), 1);
                assert_eq!(failures[0].server, addr);
                assert_eq!(failures[0].error.kind(), io::ErrorKind::InvalidData);
            }
            other => panic!("expected Io, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn refused_server_is_skipped_and_reported_with_the_silent_one() {
        // A port nobody listens on: loopback answers ICMP port unreachable.
        let closed = udp_socket().await.local_addr().unwrap();
        let silent = udp_socket().await;
        let servers = vec![closed, silent.local_addr().unwrap()];
        let upstream = Upstream::new(servers.clone(), SHORT, MAX_IN_FLIGHT);
        match upstream.forward(&query(11), Transport::Udp).await {
            Err(UpstreamError::Io(failures)) => {
                let tried: Vec<_> = failures.iter().map(|f| f.server).collect();
                assert_eq!(tried, servers);
                assert_eq!(failures[0].error.kind(), io::ErrorKind::ConnectionRefused);
                assert_eq!(failures[1].error.kind(), io::ErrorKind::TimedOut);
            }
            other => panic!("expected Io, got {other:?}"),
        }
        assert_eq!(received(&silent).await, query(11));
    }

    #[tokio::test]
    async fn busy_at_once_when_the_cap_is_reached_and_free_again_after() {
        let server = udp_socket().await;
        let addr = server.local_addr().unwrap();
        let upstream = Arc::new(Upstream::new(vec![addr], LONG, 1));
        let pending = {
            let upstream = upstream.clone();
            tokio::spawn(async move { upstream.forward(&query(1), Transport::Udp).await })
        };
        // The query reached the server, so the first forward holds the permit.
        let mut buf = vec![0; 65536];
        let (_, client) = server.recv_from(&mut buf).await.unwrap();

        let busy = upstream.forward(&query(2), Transport::Udp).await;
        assert!(matches!(busy, Err(UpstreamError::Busy)), "{busy:?}");
        let busy = upstream.forward(&query(3), Transport::Tcp).await;
        assert!(matches!(busy, Err(UpstreamError::Busy)), "{busy:?}");

        server.send_to(&response(1, 1), client).await.unwrap();
        assert_eq!(pending.await.unwrap().unwrap(), response(1, 1));

        // The permit is back: the next query goes out.
        let next = {
            let upstream = upstream.clone();
            tokio::spawn(async move { upstream.forward(&query(4), Transport::Udp).await })
        };
        let (_, client) = server.recv_from(&mut buf).await.unwrap();
        server.send_to(&response(4, 4), client).await.unwrap();
        assert_eq!(next.await.unwrap().unwrap(), response(4, 4));
    }

    #[tokio::test]
    async fn no_servers_and_malformed_queries_fail_without_sending() {
        let none = Upstream::new(Vec::new(), LONG, MAX_IN_FLIGHT);
        let error = none.forward(&query(1), Transport::Udp).await;
        assert!(matches!(error, Err(UpstreamError::NoServers)), "{error:?}");

        let server = udp_socket().await;
        let upstream = Upstream::new(vec![server.local_addr().unwrap()], LONG, MAX_IN_FLIGHT);
        let error = upstream.forward(&[0; 11], Transport::Udp).await;
        assert!(
            matches!(error, Err(UpstreamError::QueryTooShort(11))),
            "{error:?}"
        );
        let error = upstream.forward(&vec![0; 65536], Transport::Tcp).await;
        assert!(
            matches!(error, Err(UpstreamError::QueryTooLong(65536))),
            "{error:?}"
        );
    }

    #[tokio::test]
    async fn cancelling_a_query_gives_its_permit_back() {
        let server = udp_socket().await;
        let addr = server.local_addr().unwrap();
        let upstream = Arc::new(Upstream::new(vec![addr], LONG, 1));
        let pending = {
            let upstream = upstream.clone();
            tokio::spawn(async move { upstream.forward(&query(1), Transport::Udp).await })
        };
        received(&server).await;
        pending.abort();
        assert!(pending.await.unwrap_err().is_cancelled());

        let next = {
            let upstream = upstream.clone();
            tokio::spawn(async move { upstream.forward(&query(2), Transport::Udp).await })
        };
        let mut buf = vec![0; 65536];
        let (_, client) = server.recv_from(&mut buf).await.unwrap();
        server.send_to(&response(2, 2), client).await.unwrap();
        assert_eq!(next.await.unwrap().unwrap(), response(2, 2));
    }
}
