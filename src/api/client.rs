//! The CLI's side of the local control socket.
//!
//! Before sending anything, the CLI checks who serves the socket: only a
//! process running as root can be the router (`launch` needs root), and any
//! local user can bind an abstract socket's name first. Every step has a
//! deadline, so a stuck or hostile server cannot hang the CLI.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::socket::{self, AddressFamily, SockFlag, SockType, UnixAddr};

use super::peer::Holder;
use super::protocol::{Reply, Report, Request, SOCKET_NAME};

/// How long connecting may take (the server's backlog may be full).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest reply line accepted (a report of a big mesh is well under).
const MAX_REPLY: usize = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no weave-rs router is running in this network namespace (start one with `weave-rs launch`)")]
    NotRunning,
    #[error("refusing to talk to the control socket @{name}: it is served by {0}, not by root, so it is not a weave-rs router (another user took its name)", name = socket_name())]
    Impostor(Holder),
    #[error("the router did not {what} within {}s", .after.as_secs())]
    Timeout { what: &'static str, after: Duration },
    #[error("talking to the router: {0}")]
    Io(#[from] std::io::Error),
    #[error("the router sent a reply this CLI does not understand: {0}")]
    BadReply(String),
    #[error("{0}")]
    Router(String),
}

fn socket_name() -> String {
    String::from_utf8_lossy(SOCKET_NAME).into_owned()
}

/// How long the router may take to answer `req`: attaching may wait for
/// Docker and netlink, and an allocation for the mesh up to the router's
/// own deadline (`--ipalloc-timeout`, at most an hour), which it enforces;
/// the rest is quick.
pub fn reply_timeout(req: &Request) -> Duration {
    match req {
        Request::Attach { .. }
        | Request::Expose { .. }
        | Request::Allocate { .. }
        | Request::Claim { .. } => Duration::from_secs(3_600 + 60),
        Request::Detach { .. }
        | Request::CniAdd(_)
        | Request::CniDel { .. }
        | Request::CniGc { .. } => Duration::from_secs(60),
        _ => Duration::from_secs(15),
    }
}

/// Connect to the control socket, checking that root serves it.
pub fn connect() -> Result<UnixStream, ClientError> {
    let addr = UnixAddr::new_abstract(SOCKET_NAME).map_err(std::io::Error::from)?;
    let fd: OwnedFd = socket::socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(std::io::Error::from)?;
    let deadline = Instant::now() + CONNECT_TIMEOUT;
    loop {
        match socket::connect(fd.as_raw_fd(), &addr) {
            Ok(()) => break,
            // The listener's backlog is full: it is busy or not accepting.
            Err(Errno::EAGAIN) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(Errno::EAGAIN) => {
                return Err(ClientError::Timeout {
                    what: "accept the connection",
                    after: CONNECT_TIMEOUT,
                })
            }
            Err(Errno::ECONNREFUSED | Errno::ENOENT) => return Err(ClientError::NotRunning),
            Err(e) => return Err(ClientError::Io(e.into())),
        }
    }
    let server = Holder::of_peer(&fd)?;
    if !server.is_root() {
        return Err(ClientError::Impostor(server));
    }
    let s = UnixStream::from(fd);
    s.set_nonblocking(false)?;
    Ok(s)
}

/// Send one request, return the router's success message or its report.
pub fn call(req: &Request) -> Result<Reply, ClientError> {
    let timeout = reply_timeout(req);
    let deadline = Instant::now() + timeout;
    let mut s = connect()?;
    let mut line = serde_json::to_vec(req).map_err(|e| ClientError::BadReply(e.to_string()))?;
    line.push(b'\n');
    s.set_write_timeout(Some(timeout))?;
    s.write_all(&line)
        .map_err(|e| timed_out(e, "take the request", timeout))?;
    let reply = read_line_by(&mut s, deadline, timeout)?;
    if reply.is_empty() {
        return Err(ClientError::BadReply(
            "empty reply (router stopping?)".into(),
        ));
    }
    let reply: Reply =
        serde_json::from_slice(&reply).map_err(|e| ClientError::BadReply(e.to_string()))?;
    match reply {
        Reply::Error { error } => Err(ClientError::Router(error)),
        ok => Ok(ok),
    }
}

/// One reply line, read by `deadline` however slowly the server trickles it.
fn read_line_by(
    s: &mut UnixStream,
    deadline: Instant,
    timeout: Duration,
) -> Result<Vec<u8>, ClientError> {
    let mut reply = Vec::new();
    let mut buf = [0u8; 16 << 10];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ClientError::Timeout {
                what: "answer",
                after: timeout,
            });
        }
        s.set_read_timeout(Some(left))?;
        let n = s
            .read(&mut buf)
            .map_err(|e| timed_out(e, "answer", timeout))?;
        let chunk = buf.get(..n).unwrap_or_default();
        if n == 0 {
            return Ok(reply);
        }
        if let Some(end) = chunk.iter().position(|b| *b == b'\n') {
            reply.extend_from_slice(chunk.get(..end).unwrap_or_default());
            return Ok(reply);
        }
        if reply.len() + n > MAX_REPLY {
            return Err(ClientError::BadReply(format!(
                "reply longer than {MAX_REPLY} bytes"
            )));
        }
        reply.extend_from_slice(chunk);
    }
}

fn timed_out(e: std::io::Error, what: &'static str, after: Duration) -> ClientError {
    match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
            ClientError::Timeout { what, after }
        }
        _ => ClientError::Io(e),
    }
}

pub fn report() -> Result<Report, ClientError> {
    match call(&Request::Report)? {
        Reply::Ok {
            report: Some(r), ..
        } => Ok(*r),
        _ => Err(ClientError::BadReply("no report in reply".into())),
    }
}
