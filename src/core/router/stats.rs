//! What the router counts: every drop has a reason and a counter.

use super::DropReason;
use crate::core::topology::GossipDrops;

/// Counters a user sees in `report` and metrics.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Stats {
    pub frames_from_tap: u64,
    /// The sleeve's batching: UDP send calls of the TAP pump, and the
    /// datagrams they carried (several per call with GSO).
    pub udp_sends: u64,
    pub udp_datagrams_sent: u64,
    pub frames_to_tap: u64,
    /// The receiving side's batching: TAP writes of UDP datagrams joined
    /// into one (`core::wire::udp_run`), and the datagrams they carried.
    pub tap_udp_runs: u64,
    pub tap_udp_run_datagrams: u64,
    pub datagrams_received: u64,
    pub datagrams_relayed: u64,
    pub dropped_malformed: u64,
    pub dropped_bad_source_mac: u64,
    pub dropped_local_destination: u64,
    pub dropped_no_route: u64,
    pub dropped_too_many_hops: u64,
    pub dropped_own_datagram: u64,
    /// ARP about the DNS address, kept on this host.
    pub dropped_host_only: u64,
    pub dropped_unknown_sender: u64,
    /// Sealed datagrams whose tag did not verify (tampered, or wrong key).
    pub dropped_auth_failed: u64,
    /// Sealed datagrams seen before, or too old for the replay window.
    pub dropped_replayed: u64,
    /// Plain datagrams from a peer that must encrypt.
    pub dropped_unencrypted: u64,
    /// Sealed datagrams for a session we do not have.
    pub dropped_unknown_session: u64,
    /// Datagram keys replaced by us, and followed on the peers' side.
    pub rekeys_sent: u64,
    pub rekeys_received: u64,
    /// Offloaded frames whose fragments did not all arrive.
    pub dropped_incomplete: u64,
    /// Offloaded frames whose virtio-net header we would not pass on.
    pub dropped_bad_offload: u64,
    /// Frames larger than our overlay MTU (their senders get an ICMP
    /// "fragmentation needed" or "packet too big" where one is due).
    pub dropped_too_big: u64,
    pub icmp_too_big_sent: u64,
    pub mac_moves: u64,
    /// MACs learned in place of another (the table was full): the least
    /// recently seen entry of the origin holding the most went.
    pub mac_evictions: u64,
    /// Gossiped peer entries dropped (see `topology::GossipDrops`): new
    /// peers past the cap, versions implausibly far ahead of our clock, the
    /// reserved name; and entries merged with part cut.
    pub dropped_gossip_over_peer_cap: u64,
    pub dropped_gossip_future_version: u64,
    pub dropped_gossip_reserved_name: u64,
    pub gossip_entries_trimmed: u64,
    /// Control frames of a kind this version does not know (a newer
    /// peer's), skipped; the connection stays up.
    pub control_frames_skipped: u64,
    /// IPAM gossip that did not parse (dropped), or that came from another
    /// cluster or range (refused; `status` shows why).
    pub dropped_ipam_gossip: u64,
    pub refused_ipam_gossip: u64,
    /// DNS gossip that did not parse (dropped), and gossiped records not
    /// merged (of an incarnation that is over, or past a cap).
    pub dropped_dns_gossip: u64,
    pub dns_records_dropped: u64,
    /// The kernel fast path (issue 15): heartbeats over it sent, received,
    /// and dropped (not ours, from no neighbour, or unreadable); switches
    /// of a connection between the carriers; MACs steered to the kernel or
    /// back, kernel entry changes that failed, and steering requests lost
    /// because their queue was full.
    pub fastpath_heartbeats_sent: u64,
    pub fastpath_heartbeats_received: u64,
    pub fastpath_heartbeats_dropped: u64,
    pub fastpath_switches_to_fast: u64,
    pub fastpath_switches_to_sleeve: u64,
    pub fastpath_macs_steered: u64,
    pub fastpath_macs_unsteered: u64,
    pub fastpath_entry_failures: u64,
    pub fastpath_steer_queue_full: u64,
}

impl Stats {
    pub fn count_gossip_drops(&mut self, d: &GossipDrops) {
        self.dropped_gossip_over_peer_cap += d.over_peer_cap;
        self.dropped_gossip_future_version += d.future_version;
        self.dropped_gossip_reserved_name += d.reserved_name;
        self.gossip_entries_trimmed += d.trimmed;
    }

    pub fn count_drop(&mut self, r: DropReason) {
        let c = match r {
            DropReason::Malformed(_) => &mut self.dropped_malformed,
            DropReason::BadSourceMac => &mut self.dropped_bad_source_mac,
            DropReason::LocalDestination => &mut self.dropped_local_destination,
            DropReason::NoRoute => &mut self.dropped_no_route,
            DropReason::TooManyHops => &mut self.dropped_too_many_hops,
            DropReason::OwnDatagram => &mut self.dropped_own_datagram,
            DropReason::HostOnly => &mut self.dropped_host_only,
        };
        *c += 1;
    }
}
