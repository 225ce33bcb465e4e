//! Dial targets: one task per address we keep a connection to, retrying
//! with exponential backoff and jitter. Targets come from the user (launch
//! arguments, `connect`) or from discovery (addresses gossip reports for
//! peers we are not connected to).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::net::TcpStream;
use tracing::{info, info_span, Instrument};

use super::connection::{self, ConnError};
use super::state::{Target, TargetSource, TargetStatus};
use super::Shared;
use crate::core::backoff::{Backoff, DEFAULT as BACKOFF};
use crate::core::PeerName;

pub const DIAL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Normalise a user's peer address: "host", "host:port", "[v6]:port".
pub fn parse_target(spec: &str, default_port: u16) -> Result<String, String> {
    let spec = spec.trim();
    if spec.is_empty() {
        return Err("empty peer address".into());
    }
    if let Ok(sa) = spec.parse::<SocketAddr>() {
        if sa.port() == 0 {
            return Err(format!("{spec}: port 0 is not valid"));
        }
        return Ok(sa.to_string());
    }
    if let Ok(ip) = spec.parse::<std::net::IpAddr>() {
        return Ok(SocketAddr::new(ip, default_port).to_string());
    }
    // host or host:port
    let (host, port) = match spec.rsplit_once(':') {
        Some((h, p)) => match p.parse::<u16>() {
            Ok(p) if p != 0 => (h, p),
            _ => return Err(format!("{spec}: invalid port {p:?}")),
        },
        None => (spec, default_port),
    };
    let valid_host = !host.is_empty()
        && host.len() <= 253
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    if !valid_host {
        return Err(format!("{spec}: not an IP address or host name"));
    }
    Ok(format!("{host}:{port}"))
}

pub fn add_user_target(shared: &Arc<Shared>, spec: String) {
    add(shared, spec, TargetSource::User);
}

/// Failed attempts after which a remembered peer is left to discovery
/// (about a minute of backoff).
const REMEMBERED_ATTEMPTS: u32 = 6;

/// Dial where `peer` listened when this router last ran (`known_peers`),
/// unless the address is a target already.
pub fn add_remembered(shared: &Arc<Shared>, peer: PeerName, addr: SocketAddr) {
    add(shared, addr.to_string(), TargetSource::Remembered(peer));
}

fn add(shared: &Arc<Shared>, key: String, source: TargetSource) {
    let mut st = shared.state();
    if let Some(t) = st.targets.get_mut(&key) {
        // A user naming a discovered address makes it permanent.
        if source == TargetSource::User {
            t.source = source;
        }
        return;
    }
    let id = st.next_target_id();
    // Its own root span: the caller may be any connection's task.
    let task = shared.spawn(
        dial_loop(shared.clone(), key.clone(), id)
            .instrument(info_span!(parent: None, "target", addr = %key)),
    );
    st.targets.insert(
        key,
        Target {
            id,
            source,
            status: TargetStatus::Connecting,
            task: task.abort_handle(),
        },
    );
}

/// Stop dialling `key` and close its connection, if it has one. Returns
/// false when it was not a target.
pub fn forget(shared: &Arc<Shared>, key: &str) -> bool {
    let t = shared.state().targets.remove(key);
    match t {
        Some(t) => {
            t.task.abort();
            true
        }
        None => false,
    }
}

/// Reconcile discovered targets with what discovery wants now. A target
/// no longer wanted is dropped; if it is in the middle of an attempt, the
/// attempt is left to finish (its connection may be the one both sides
/// keep) and the loop ends after it.
pub fn discovered(shared: &Arc<Shared>, wanted: Vec<(PeerName, SocketAddr)>) {
    let mut idle = Vec::new();
    shared.state().targets.retain(|_, t| {
        let TargetSource::Discovered(p) = t.source else {
            return true;
        };
        if wanted.iter().any(|(w, _)| *w == p) {
            return true;
        }
        match t.status {
            TargetStatus::Connected { .. } => true,
            TargetStatus::Connecting => false,
            TargetStatus::Retrying { .. } | TargetStatus::Failed { .. } => {
                idle.push(t.task.clone());
                false
            }
        }
    });
    // Outside the lock: a cancelled task's drop code takes it too.
    for task in idle {
        task.abort();
    }
    for (peer, addr) in wanted {
        add(shared, addr.to_string(), TargetSource::Discovered(peer));
    }
}

/// Whether target `id` is still wanted: the user has not forgotten it,
/// discovery has not dropped it, and, for a discovered peer, no other
/// connection reached that peer meanwhile. A target found unwanted here is
/// dropped.
fn still_wanted(shared: &Shared, key: &str, id: u64) -> bool {
    let mut st = shared.state();
    let Some(t) = st.targets.get(key).filter(|t| t.id == id) else {
        return false;
    };
    let connected_otherwise = match t.source {
        TargetSource::Discovered(p) | TargetSource::Remembered(p) => st.conns.contains_key(&p),
        TargetSource::User => false,
    };
    if connected_otherwise {
        st.targets.remove(key);
        return false;
    }
    true
}

/// If `peer` has a connection (the one its own dial made), show target
/// `id` as connected through it and return what ends when it closes.
fn reached_otherwise(
    shared: &Shared,
    key: &str,
    id: u64,
    peer: PeerName,
) -> Option<impl std::future::Future<Output = ()>> {
    let mut st = shared.state();
    let (conn_id, tx) = st.conns.get(&peer).map(|c| (c.id, c.tx.clone()))?;
    let t = st.targets.get_mut(key).filter(|t| t.id == id)?;
    t.status = TargetStatus::Connected { conn_id };
    Some(async move { tx.closed().await })
}

/// Drops target `id` if it is a remembered one; whether it was.
fn give_up_remembered(shared: &Shared, key: &str, id: u64) -> bool {
    let mut st = shared.state();
    let remembered = st
        .targets
        .get(key)
        .is_some_and(|t| t.id == id && matches!(t.source, TargetSource::Remembered(_)));
    if remembered {
        st.targets.remove(key);
    }
    remembered
}

fn set_status(shared: &Shared, key: &str, id: u64, status: TargetStatus) {
    if let Some(t) = shared.state().targets.get_mut(key).filter(|t| t.id == id) {
        t.status = status;
    }
}

async fn dial_loop(shared: Arc<Shared>, key: String, id: u64) {
    let mut backoff = Backoff::new(BACKOFF.0, BACKOFF.1);
    let mut failures = 0u32;
    while still_wanted(&shared, &key, id) {
        set_status(&shared, &key, id, TargetStatus::Connecting);
        let started = Instant::now();
        let err = attempt(&shared, &key, id).await;
        if matches!(err, ConnError::Ourself) {
            info!("{key} is this router itself: not dialling it again");
            set_status(
                &shared,
                &key,
                id,
                TargetStatus::Failed {
                    error: err.to_string(),
                },
            );
            return;
        }
        // Both sides dialled, and the peer's connection is the one kept:
        // the target is reached that way. Wait for that connection to end
        // instead of dialling into a duplicate again and again.
        if let ConnError::Duplicate(peer) | ConnError::Replaced(peer) = err {
            if let Some(closed) = reached_otherwise(&shared, &key, id, peer) {
                info!("{key} is connected through the peer's own connection");
                closed.await;
                backoff.reset();
            }
        }
        // A connection that lived a while earns a fresh backoff.
        if started.elapsed() > std::time::Duration::from_secs(10) {
            backoff.reset();
            failures = 0;
        }
        failures += 1;
        if failures >= REMEMBERED_ATTEMPTS && give_up_remembered(&shared, &key, id) {
            info!("{key}: a peer of this router's last run, unreachable: no longer dialled");
            return;
        }
        let delay = backoff.next_delay(rand::random::<f64>());
        info!(
            "connection to {key} failed: {err}; retrying in {:.1}s",
            delay.as_secs_f64()
        );
        set_status(
            &shared,
            &key,
            id,
            TargetStatus::Retrying {
                last_error: err.to_string(),
                next_attempt: Instant::now() + delay,
            },
        );
        tokio::time::sleep(delay).await;
    }
}

async fn attempt(shared: &Arc<Shared>, key: &str, id: u64) -> ConnError {
    let addrs: Vec<SocketAddr> = match tokio::net::lookup_host(key).await {
        Ok(a) => a.collect(),
        Err(e) => {
            return ConnError::Io(std::io::Error::new(e.kind(), format!("resolve {key}: {e}")))
        }
    };
    let Some(addr) = addrs.first().copied() else {
        return ConnError::Io(std::io::Error::other(format!("resolve {key}: no address")));
    };
    let stream = match tokio::time::timeout(DIAL_TIMEOUT, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return e.into(),
        Err(_) => {
            return ConnError::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "connect timed out",
            ))
        }
    };
    let mark = |conn_id: u64| set_status(shared, key, id, TargetStatus::Connected { conn_id });
    match connection::run(shared, stream, addr, true, None, Some(&mark)).await {
        Err(e) => e,
        Ok(()) => ConnError::ClosedByUs("connection ended".into()),
    }
}
