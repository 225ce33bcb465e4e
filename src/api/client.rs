//! The CLI's side of the local control socket.

use std::io::{BufRead, BufReader, Write};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use super::protocol::{Reply, Report, Request, SOCKET_NAME};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no weave-rs router is running in this network namespace (start one with `weave-rs launch`)")]
    NotRunning,
    #[error("talking to the router: {0}")]
    Io(#[from] std::io::Error),
    #[error("the router sent a reply this CLI does not understand: {0}")]
    BadReply(String),
    #[error("{0}")]
    Router(String),
}

fn connect() -> Result<UnixStream, ClientError> {
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(SOCKET_NAME)?;
    let s = UnixStream::connect_addr(&addr).map_err(|e| match e.kind() {
        std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotFound => {
            ClientError::NotRunning
        }
        _ => ClientError::Io(e),
    })?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    Ok(s)
}

/// Send one request, return the router's success message or its report.
pub fn call(req: &Request) -> Result<Reply, ClientError> {
    let mut s = connect()?;
    let mut line = serde_json::to_vec(req).map_err(|e| ClientError::BadReply(e.to_string()))?;
    line.push(b'\n');
    s.write_all(&line)?;
    let mut reply = String::new();
    BufReader::new(s).read_line(&mut reply)?;
    if reply.is_empty() {
        return Err(ClientError::BadReply(
            "empty reply (router stopping?)".into(),
        ));
    }
    let reply: Reply =
        serde_json::from_str(&reply).map_err(|e| ClientError::BadReply(e.to_string()))?;
    match reply {
        Reply::Error { error } => Err(ClientError::Router(error)),
        ok => Ok(ok),
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
