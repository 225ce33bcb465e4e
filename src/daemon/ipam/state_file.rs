//! `ipam.json` in the state dir: the ring, take-overs not yet settled, and
//! the allocations with their prefixes; written atomically, read at start.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::IpamShell;
use crate::core::ipam::ring::{Entry, Ring};
use crate::core::ipam::space::Span;
use crate::core::PeerName;
use crate::daemon::Shared;

/// State saved at least this often while anything changes.
const SAVE_INTERVAL: Duration = Duration::from_secs(10);

/// What the state file holds.
#[derive(Serialize, Deserialize)]
struct Saved {
    range: String,
    cluster: String,
    ring: Vec<SavedEntry>,
    quarantine: Vec<(String, String)>,
    allocations: Vec<SavedAllocation>,
}

#[derive(Serialize, Deserialize)]
struct SavedEntry {
    token: String,
    version: u64,
    owner: String,
    free: String,
}

#[derive(Serialize, Deserialize)]
struct SavedAllocation {
    id: String,
    cidr: String,
}

fn file(shared: &Shared) -> PathBuf {
    shared.config.state_dir.join("ipam.json")
}

fn snapshot(s: &IpamShell) -> Vec<u8> {
    let ring = s.core.ring();
    let saved = Saved {
        range: s.core.range().to_string(),
        cluster: format!("{:016x}", ring.cluster()),
        ring: ring
            .entries()
            .map(|(t, e)| SavedEntry {
                token: t.to_string(),
                version: e.version,
                owner: e.owner.to_string(),
                free: e.free.to_string(),
            })
            .collect(),
        quarantine: s
            .core
            .quarantined()
            .iter()
            .map(|q| (q.start().to_string(), q.end().to_string()))
            .collect(),
        allocations: s
            .core
            .allocations()
            .map(|(id, a)| SavedAllocation {
                id: id.to_string(),
                cidr: s.cidr(a).to_string(),
            })
            .collect(),
    };
    serde_json::to_vec_pretty(&saved).unwrap_or_default()
}

/// Reads the state file into a fresh allocator: the ring (if it is for our
/// range), take-overs still unsettled, and the allocations.
pub fn load(shared: &Shared) {
    let path = file(shared);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
        Err(e) => {
            warn!("IPAM state {}: {e}", path.display());
            return;
        }
    };
    let saved: Saved = match serde_json::from_slice(&bytes) {
        Ok(s) => s,
        Err(e) => {
            warn!("ignoring IPAM state {}: {e}", path.display());
            return;
        }
    };
    let mut s = shared.ipam();
    if saved.range != s.core.range().to_string() {
        warn!(
            "IPAM state {} is for range {}, not {}: starting afresh",
            path.display(),
            saved.range,
            s.core.range()
        );
        return;
    }
    match restore_ring(&saved, s.core.ring().size()) {
        Ok(Some(ring)) => {
            if let Err(e) = s.core.restore_ring(ring) {
                warn!("IPAM state: ring not restored: {e}");
            }
        }
        Ok(None) => {}
        Err(e) => warn!("IPAM state: ring not restored: {e}"),
    }
    let quarantine: Vec<Span> = saved
        .quarantine
        .iter()
        .filter_map(|(a, b)| Span::new(a.parse().ok()?, b.parse().ok()?))
        .collect();
    s.core.restore_quarantine(&quarantine);
    for a in &saved.allocations {
        let Ok(net) = a.cidr.parse::<IpNetwork>() else {
            warn!("IPAM state: bad address {:?} for {}", a.cidr, a.id);
            continue;
        };
        match s.core.restore(&a.id, net.ip()) {
            Ok(()) => {
                s.prefixes.insert(net.ip(), net.prefix());
            }
            Err(e) => warn!("IPAM state: {}: {e}", a.id),
        }
    }
    s.saved = Some(bytes);
    info!(
        "IPAM state restored: {} allocations, ring of {} ranges",
        saved.allocations.len(),
        s.core.ring().tokens()
    );
}

fn restore_ring(saved: &Saved, size: u128) -> Result<Option<Ring>, String> {
    if saved.ring.is_empty() {
        return Ok(None);
    }
    let cluster = u64::from_str_radix(&saved.cluster, 16).map_err(|e| e.to_string())?;
    let mut entries = Vec::new();
    for e in &saved.ring {
        let token: u128 = e.token.parse().map_err(|_| "bad token".to_string())?;
        let free: u128 = e.free.parse().map_err(|_| "bad free count".to_string())?;
        let owner: PeerName = e.owner.parse().map_err(|e| format!("{e}"))?;
        entries.push((
            token,
            Entry {
                version: e.version,
                owner,
                free,
            },
        ));
    }
    Ring::from_entries(cluster, size, entries)
        .map(Some)
        .map_err(|e| e.to_string())
}

/// Writes the state file if it changed: at once when allocations or
/// ownership changed (`must_save`), otherwise at most every 10 s.
pub(super) fn save(shared: &Shared, s: &mut IpamShell) {
    let now = Instant::now();
    let due = s.must_save
        || s.saved_at
            .is_none_or(|t| now.duration_since(t) >= SAVE_INTERVAL);
    if !due {
        return;
    }
    let bytes = snapshot(s);
    if s.saved.as_deref() == Some(bytes.as_slice()) {
        s.must_save = false;
        return;
    }
    let path = file(shared);
    match crate::files::write_atomic(&path, &bytes, 0o600, None) {
        Ok(()) => {
            s.saved = Some(bytes);
            s.saved_at = Some(now);
            s.must_save = false;
        }
        Err(e) => warn!("saving IPAM state to {}: {e}", path.display()),
    }
}
