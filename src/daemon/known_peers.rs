//! The peers this router was connected to, kept in the state dir
//! (`peers.json`), so a router relaunched with no peer on its command line
//! (the first host, typically) dials them at once instead of waiting for
//! their redial, whose backoff may have grown to 10 s meanwhile.
//!
//! Newest first, at most `MAX`; a relaunched router dials each for a
//! while (`targets::add_remembered`), then leaves the rest to discovery.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use tracing::warn;

use super::Shared;
use crate::core::PeerName;

const FILE: &str = "peers.json";
/// Peers remembered.
const MAX: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Known {
    peer: String,
    addr: SocketAddr,
}

/// What was written last (saves rewriting an unchanged file on every
/// topology change).
static LAST: Mutex<Vec<Known>> = Mutex::new(Vec::new());

fn path(shared: &Shared) -> PathBuf {
    shared.config.state_dir.join(FILE)
}

fn read(shared: &Shared) -> Vec<Known> {
    std::fs::read(path(shared))
        .ok()
        .and_then(|b| serde_json::from_slice::<Vec<Known>>(&b).ok())
        .unwrap_or_default()
}

/// The remembered peers and where they listened.
pub fn load(shared: &Shared) -> Vec<(PeerName, SocketAddr)> {
    let list = read(shared);
    *LAST.lock().unwrap_or_else(|e| e.into_inner()) = list.clone();
    list.into_iter()
        .take(MAX)
        .filter_map(|k| Some((k.peer.parse().ok()?, k.addr)))
        .collect()
}

/// The list after `connected` (peer, listen address) were seen: those
/// first, then the earlier ones of other peers and addresses, at most
/// `MAX`.
fn merged(connected: &[(PeerName, SocketAddr)], before: &[Known]) -> Vec<Known> {
    let mut out: Vec<Known> = connected
        .iter()
        .map(|(p, a)| Known {
            peer: p.to_string(),
            addr: *a,
        })
        .collect();
    for k in before {
        if !out.iter().any(|o| o.peer == k.peer || o.addr == k.addr) {
            out.push(k.clone());
        }
    }
    out.truncate(MAX);
    out
}

/// Records the peers connected now (sorted by name), if that changes the
/// list.
pub fn record(shared: &Shared, mut connected: Vec<(PeerName, SocketAddr)>) {
    if connected.is_empty() {
        return;
    }
    connected.sort();
    let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
    let next = merged(&connected, &last);
    if next == *last {
        return;
    }
    write(shared, &next);
    *last = next;
}

/// Forgets `addr` (the user's `forget`): a relaunch must not dial it.
pub fn forget(shared: &Shared, addr: &str) {
    let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
    let before = last.len();
    last.retain(|k| k.addr.to_string() != addr);
    if last.len() != before {
        write(shared, &last);
    }
}

fn write(shared: &Shared, list: &[Known]) {
    let bytes = match serde_json::to_vec_pretty(list) {
        Ok(b) => b,
        Err(e) => return warn!("peers.json: {e}"),
    };
    if let Err(e) = crate::files::write_atomic(&path(shared), &bytes, 0o600, None) {
        warn!("saving {}: {e}", path(shared).display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(i: u8) -> PeerName {
        PeerName([2, 0, 0, 0, 0, i])
    }

    fn a(i: u8) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, i], 6783))
    }

    #[test]
    fn newest_first_each_peer_and_address_once_capped() {
        let first = merged(&[(p(1), a(1)), (p(2), a(2))], &[]);
        assert_eq!(first.len(), 2);
        // Peer 2 moved to another address; peer 3 is new.
        let second = merged(&[(p(2), a(9)), (p(3), a(3))], &first);
        let addrs: Vec<SocketAddr> = second.iter().map(|k| k.addr).collect();
        assert_eq!(addrs, [a(9), a(3), a(1)]);
        let many: Vec<(PeerName, SocketAddr)> = (0..100).map(|i| (p(i), a(i))).collect();
        assert_eq!(merged(&many, &second).len(), MAX);
    }
}
