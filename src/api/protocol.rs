//! Requests and replies between the CLI and its host's router: one JSON
//! object per line each way over the local control socket.

use serde::{Deserialize, Serialize};

use crate::core::router::Stats;
use crate::core::PeerName;

/// The abstract unix socket name: abstract sockets belong to the network
/// namespace, so routers in separate namespaces never clash.
pub const SOCKET_NAME: &[u8] = b"weave-rs/control";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    Report,
    Connect {
        peers: Vec<String>,
    },
    Forget {
        peers: Vec<String>,
    },
    Attach {
        target: String,
        cidrs: Vec<String>,
    },
    Detach {
        target: String,
        cidrs: Vec<String>,
    },
    Expose {
        cidrs: Vec<String>,
    },
    Hide {
        cidrs: Vec<String>,
    },
    /// An address for `id` in `subnet` (a CIDR within the range; None: the
    /// default subnet). Idempotent: the same id gets the same address.
    Allocate {
        id: String,
        #[serde(default)]
        subnet: Option<String>,
    },
    /// Exactly `cidr`'s address for `id`; refused if another holds it.
    Claim {
        id: String,
        cidr: String,
    },
    /// Free every address of `id`.
    Release {
        id: String,
    },
    /// The addresses of `id`.
    Lookup {
        id: String,
    },
    /// rmpeer: take over the address ranges of a peer that is gone.
    RemovePeer {
        peer: String,
    },
    /// Free every address and hand this peer's ranges to another (reset).
    IpamLeave,
    /// Name `addrs` as `owner` (a name with a dot, else a container: its
    /// names, and its attached addresses when `addrs` is empty).
    DnsAdd {
        addrs: Vec<String>,
        owner: String,
    },
    /// Remove names of `owner` (`addrs` empty: all of them).
    DnsRemove {
        addrs: Vec<String>,
        owner: String,
    },
    /// The addresses a name has here.
    DnsLookup {
        name: String,
    },
    /// CNI ADD (from `weave-rs-cni`): an interface for a runtime's
    /// attachment.
    CniAdd(CniAdd),
    /// CNI DEL: the attachment's interface, names and addresses go.
    /// Idempotent.
    CniDel {
        container_id: String,
        ifname: String,
    },
    /// CNI CHECK: the interface is there with `addrs`, and they are held.
    CniCheck {
        container_id: String,
        ifname: String,
        netns: String,
        addrs: Vec<String>,
    },
    /// CNI GC: release every CNI attachment but these (container ID,
    /// interface name).
    CniGc {
        keep: Vec<(String, String)>,
    },
    /// CNI STATUS: can an ADD be served now?
    CniStatus,
    Stop,
}

/// What a CNI ADD asks for.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct CniAdd {
    pub container_id: String,
    pub ifname: String,
    /// `CNI_NETNS`: a path to the network namespace.
    pub netns: String,
    /// As `attach` takes them (none: one from the default subnet).
    pub addrs: Vec<String>,
    /// Addresses the runtime asks for (`CNI_ARGS` `IP=`, runtimeConfig
    /// `ips`): claimed instead of allocated, in the config's subnet.
    #[serde(default)]
    pub claims: Vec<std::net::IpAddr>,
    /// Names for DNS (qualified in the router's domain).
    pub names: Vec<String>,
    pub mtu: Option<u32>,
    /// The bridge the config names; refused if not the router's.
    pub bridge: Option<String>,
    pub hairpin: bool,
    /// A default route via the host's address in the subnet (the host is
    /// exposed there if it has none), as Weave gave pods.
    #[serde(default)]
    pub gateway: bool,
    /// Routes to add (destination, gateway): another IPAM plugin's.
    #[serde(default)]
    pub routes: Vec<(ipnetwork::IpNetwork, Option<std::net::IpAddr>)>,
    /// How long an allocation may wait before the runtime is told to try
    /// again later.
    pub patience_ms: u64,
}

/// What a CNI ADD made.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct CniAttached {
    pub mac: String,
    pub addrs: Vec<String>,
    pub mtu: u32,
    /// The DNS server containers use, and the domain (None: DNS is off).
    pub dns: Option<(String, String)>,
    /// The default route's gateway (the host's address in the subnet).
    #[serde(default)]
    pub gateway: Option<std::net::IpAddr>,
}

impl Request {
    /// Requests that change the router; only root may send them.
    pub fn mutates(&self) -> bool {
        !matches!(
            self,
            Request::Report
                | Request::Lookup { .. }
                | Request::DnsLookup { .. }
                | Request::CniCheck { .. }
                | Request::CniStatus
        )
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Reply {
    Ok {
        #[serde(default)]
        message: String,
        #[serde(default)]
        report: Option<Box<Report>>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cni: Option<CniAttached>,
    },
    Error {
        error: String,
    },
}

impl Reply {
    pub fn ok(message: impl Into<String>) -> Reply {
        Reply::Ok {
            message: message.into(),
            report: None,
            cni: None,
        }
    }

    pub fn error(e: impl std::fmt::Display) -> Reply {
        Reply::Error {
            error: e.to_string(),
        }
    }
}

/// Everything `status` and `report` show.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub version: String,
    pub protocol: String,
    pub router: RouterInfo,
    pub connections: Vec<ConnectionReport>,
    pub peers: Vec<PeerReport>,
    pub targets: Vec<String>,
    /// Recent inbound connections refused, newest last.
    pub refused: Vec<RefusedReport>,
    pub attached: Vec<AttachedReport>,
    pub exposed: Vec<String>,
    pub mac_table_entries: usize,
    pub stats: StatsReport,
    /// Address allocation (`status ipam`).
    #[serde(default)]
    pub ipam: Option<IpamReport>,
    /// Names (`status dns`); None: DNS is off.
    #[serde(default)]
    pub dns: Option<DnsReport>,
}

/// The DNS server and the names this host knows.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DnsReport {
    /// Where it answers (port 53, UDP and TCP).
    pub address: String,
    pub domain: String,
    pub ttl: u32,
    /// The resolvers other names are forwarded to.
    pub upstream: Vec<String>,
    /// Why it does not answer, if it does not.
    #[serde(default)]
    pub error: Option<String>,
    pub records: Vec<DnsRecordReport>,
    pub queries: QueryCounts,
}

/// One name of the mesh, and whose it is.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct DnsRecordReport {
    pub name: String,
    pub address: String,
    /// The peer that registered it, and its nickname.
    pub origin: String,
    pub nickname: String,
    /// Its container's ID ("" for a name added by hand).
    pub container: String,
    /// Answered now (false: its peer is unreachable).
    pub answered: bool,
}

/// DNS query counters.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct QueryCounts {
    pub udp: u64,
    pub tcp: u64,
    /// Answered from the zone (NXDOMAIN and NODATA included).
    pub local: u64,
    pub forwarded: u64,
    /// Forwarded, and no upstream server answered (SERVFAIL).
    pub upstream_failed: u64,
    /// Dropped: too many forwarded queries or TCP connections already.
    pub dropped_busy: u64,
    /// Dropped: a source over its share while the server could not keep
    /// up (`core::dns::flood`).
    #[serde(default)]
    pub dropped_flood: u64,
    pub dropped_malformed: u64,
    /// Answers sent truncated over UDP.
    pub truncated: u64,
}

/// The allocation range, who owns what, and what waits.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct IpamReport {
    pub range: String,
    pub default_subnet: String,
    /// `--ipalloc-init`, as understood.
    pub init: String,
    /// The ring exists: addresses can be allocated.
    pub ready: bool,
    /// The ring's cluster identity (hex); empty before it exists.
    pub cluster: String,
    /// While the first ring is being agreed.
    #[serde(default)]
    pub consensus: Option<ConsensusReport>,
    pub owners: Vec<IpamOwnerReport>,
    /// This host's allocations.
    pub allocations: Vec<IpamAllocationReport>,
    /// Requests waiting here, and what for.
    pub pending: Vec<String>,
    /// Peers asking for space or addresses.
    pub wants: Vec<IpamWantReport>,
    /// Addresses taken over with rmpeer, not yet acknowledged by all.
    pub quarantined: u64,
    /// Peers whose IPAM gossip is refused (another range or cluster).
    pub refused: Vec<IpamRefusedReport>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConsensusReport {
    pub quorum: usize,
    pub heard: Vec<PeerName>,
    pub waiting_secs: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IpamOwnerReport {
    pub peer: PeerName,
    pub nickname: String,
    pub reachable: bool,
    pub ranges: usize,
    /// Addresses owned, and free among them (as last reported).
    pub addresses: u64,
    pub free: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IpamAllocationReport {
    pub id: String,
    pub cidr: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IpamWantReport {
    pub peer: PeerName,
    pub what: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IpamRefusedReport {
    pub peer: PeerName,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RouterInfo {
    pub name: PeerName,
    pub nickname: String,
    pub uid: u64,
    pub pid: u32,
    pub port: u16,
    pub mtu: u16,
    pub bridge: String,
    pub discovery: bool,
    pub conn_limit: usize,
    pub encryption: bool,
    /// `--mesh-name` (it salts the password).
    #[serde(default)]
    pub mesh_name: String,
    pub uptime_secs: u64,
    /// The fast path's device ("weave-vxlan, vni 123, udp 6784"), or why
    /// there is none.
    #[serde(default)]
    pub fast_path: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConnectionReport {
    /// The remote TCP address (for an outbound attempt, the target).
    pub addr: String,
    pub peer: Option<PeerName>,
    pub nickname: Option<String>,
    pub outbound: bool,
    /// established | pending | connecting | retrying | failed
    pub state: String,
    /// What went wrong last, or what is awaited.
    pub last_error: Option<String>,
    pub encrypted: bool,
    /// "none", "full" or "control-only" (trusted subnet: data plain).
    #[serde(default)]
    pub encryption: String,
    /// Fingerprint of the peer's long-term key, on encrypted connections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_key: Option<String>,
    /// Why this peer's IPAM gossip is refused (another range or cluster).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipam_refused: Option<String>,
    /// Which carrier takes the data, and on the sleeve why: "fast path
    /// (mtu 1376) since 3s", "sleeve: encrypted mesh: ..." (established
    /// connections only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_path: Option<String>,
    /// The kernel's fast path carries the data.
    #[serde(default)]
    pub fast_path: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeerReport {
    pub name: PeerName,
    pub nickname: String,
    pub uid: u64,
    pub version: u64,
    pub connections: Vec<PeerConnectionReport>,
    /// How our data reaches this peer: a neighbour's data path ("fast
    /// path (mtu 1376) since 3s", "sleeve: ..."), or "sleeve: reached
    /// through a relay via NAME"; None for ourselves and the unreachable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_path: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeerConnectionReport {
    pub peer: PeerName,
    pub addr: String,
    pub outbound: bool,
    /// Both ends list the connection: routes use it.
    pub established: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RefusedReport {
    /// The latest refused connection's address.
    pub addr: String,
    pub reason: String,
    /// Since the latest.
    pub secs_ago: u64,
    /// Connections from that IP refused for that reason.
    #[serde(default = "one")]
    pub count: u64,
}

fn one() -> u64 {
    1
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AttachedReport {
    /// The container's name, or the namespace target as given.
    pub target: String,
    /// The container's ID, for a container.
    #[serde(default)]
    pub container: Option<String>,
    pub host_veth: String,
    pub mac: String,
    pub addrs: Vec<String>,
}

/// The router's counters, as reported.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StatsReport(pub serde_json::Value);

impl From<&Stats> for StatsReport {
    fn from(s: &Stats) -> Self {
        StatsReport(serde_json::to_value(s).unwrap_or_default())
    }
}
