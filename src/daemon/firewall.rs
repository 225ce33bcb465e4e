//! Keeps the host's FORWARD chains from dropping frames bridged between the
//! containers, the TAP and the fast path's VXLAN port.
//!
//! The accept rule (`net::iptables`) goes in only where a chain could drop
//! them (a policy other than ACCEPT, or rules): on a host without a
//! firewall, adding it would create the filter table, and every packet of
//! the host would pass its hooks. A firewall can appear later (Docker sets
//! the policy to DROP when it starts) or be reloaded without our rule, so
//! the chains are checked again on every nftables change this namespace
//! announces (iptables-nft writes nftables), and by polling where none are
//! announced (iptables-legacy).

use std::sync::Arc;
use std::time::Duration;

use netlink_sys::{constants::NETLINK_NETFILTER, AsyncSocket, AsyncSocketExt, TokioSocket};
use tracing::{debug, info, warn};

use super::Shared;
use crate::net::iptables::{Family, Iptables};

/// nfnetlink's multicast group for nftables ruleset changes.
const NFNLGRP_NFTABLES: u32 = 7;
/// The fallback poll when changes are announced (a missed event) and
/// when they are not (iptables-legacy writes no nftables).
const POLL_ANNOUNCED: Duration = Duration::from_secs(60);
const POLL_UNANNOUNCED: Duration = Duration::from_secs(5);
/// Changes come in bursts (Docker writes dozens of rules): one check after
/// the burst settles.
const SETTLE: Duration = Duration::from_millis(200);

/// Runs for the router's life.
pub async fn keep_forward_accept(shared: Arc<Shared>) -> anyhow::Result<()> {
    let bridge = shared.config.bridge.clone();
    // iptables-legacy's changes are not nftables changes: poll for those.
    let nft = tokio::task::spawn_blocking(|| Iptables::for_family(Family::V4).writes_nftables())
        .await
        .unwrap_or(false);
    let changes = match nft.then(ruleset_changes) {
        Some(Ok(s)) => Some(s),
        Some(Err(e)) => {
            debug!("nftables changes not announced ({e}): polling the FORWARD chains");
            None
        }
        None => None,
    };
    let poll = if changes.is_some() {
        POLL_ANNOUNCED
    } else {
        POLL_UNANNOUNCED
    };
    // The last error reported per family: a missing iptables is said once.
    let mut reported: [Option<String>; 2] = [None, None];
    loop {
        let b = bridge.clone();
        let checked = tokio::task::spawn_blocking(move || {
            Family::ALL.map(|f| (f, Iptables::for_family(f).guard_forward(&b)))
        })
        .await?;
        for (i, (family, result)) in checked.into_iter().enumerate() {
            match result {
                Ok(added) => {
                    reported[i] = None;
                    if let Some(why) = added {
                        info!(
                            "{} FORWARD chain {why}: accept rule for bridge {bridge} added",
                            family.program()
                        );
                    }
                }
                Err(e) => {
                    let text = e.to_string();
                    if reported[i].as_ref() != Some(&text) {
                        warn!(
                            "{} FORWARD rule for bridge {bridge}: {text}",
                            family.program()
                        );
                        reported[i] = Some(text);
                    }
                }
            }
        }
        match &changes {
            Some(socket) => {
                tokio::select! {
                    _ = socket.recv_from_full() => {
                        tokio::time::sleep(SETTLE).await;
                        drain(socket);
                    }
                    _ = tokio::time::sleep(poll) => {}
                }
            }
            None => tokio::time::sleep(poll).await,
        }
    }
}

/// A socket that wakes on every nftables change in this namespace.
fn ruleset_changes() -> std::io::Result<TokioSocket> {
    let mut socket = TokioSocket::new(NETLINK_NETFILTER)?;
    let s = socket.socket_mut();
    s.bind_auto()?;
    s.add_membership(NFNLGRP_NFTABLES)?;
    Ok(socket)
}

/// Discards what the burst queued (an overflow, ENOBUFS, ends it too).
fn drain(socket: &TokioSocket) {
    let mut buf = vec![0u8; 8192];
    for _ in 0..1024 {
        if socket
            .socket_ref()
            .recv(&mut &mut buf[..], libc::MSG_DONTWAIT)
            .is_err()
        {
            break;
        }
    }
}
