//! The daemon's side of IPAM.

use std::sync::Arc;

use super::Shared;
use crate::core::PeerName;

/// IPAM gossip from `from`.
pub fn on_gossip(_shared: &Arc<Shared>, _from: PeerName, _body: &[u8]) {}
