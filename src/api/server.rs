//! The router's side of the local control socket.
//!
//! An abstract unix socket (per network namespace); each client sends one
//! JSON request line and reads one JSON reply line. Requests that change
//! the router are refused unless the client runs as root. Root has
//! connection slots of its own (`slots`), slow clients time out, and a
//! failing `accept` (out of descriptors) is retried, never fatal.

use std::collections::HashMap;
use std::net::IpAddr;
use std::os::linux::net::SocketAddrExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipnetwork::IpNetwork;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tracing::{debug, info};

use super::accept::AcceptBackoff;
use super::peer;
use super::protocol::*;
use super::slots::{Slots, LIMITS};
use crate::core::cidr;
use crate::core::ipam::spec::AddrSpec;
use crate::core::PeerName;
use crate::daemon::state::{Encryption, TargetSource, TargetStatus};
use crate::daemon::{attachments, cni, dns, ipam, targets, Shared};

/// Longest request line accepted.
const MAX_REQUEST: usize = 64 << 10;
/// A client must send its request line within this.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// A client must take its reply within this.
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// Bind the control socket. If its name is taken, the error names the
/// process holding it.
pub fn bind() -> std::io::Result<UnixListener> {
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(SOCKET_NAME)?;
    let l = std::os::unix::net::UnixListener::bind_addr(&addr).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AddrInUse {
            let who = peer::holder_of_name()
                .map_or_else(|| "another process".to_string(), |h| h.to_string());
            std::io::Error::new(
                e.kind(),
                format!(
                    "the name @{} is taken by {who}",
                    String::from_utf8_lossy(SOCKET_NAME)
                ),
            )
        } else {
            e
        }
    })?;
    l.set_nonblocking(true)?;
    UnixListener::from_std(l)
}

/// Accept clients until the router stops. Never fails: accept errors are
/// logged and retried after a pause.
pub async fn serve(shared: Arc<Shared>, listener: UnixListener) -> anyhow::Result<()> {
    let slots = Slots::new(LIMITS);
    let mut backoff = AcceptBackoff::new("control socket");
    loop {
        let Some((stream, _)) = backoff.accepted(listener.accept().await).await else {
            continue;
        };
        let uid = stream.peer_cred().map(|c| c.uid()).unwrap_or(u32::MAX);
        let slot = match slots.try_take(uid) {
            Ok(s) => s,
            Err(why) => {
                debug!("control client refused: {why}");
                // Best effort, never waiting: the client may not read.
                let _ = stream.try_write(&reply_line(&Reply::error(why)));
                continue;
            }
        };
        let task_shared = shared.clone();
        shared.spawn(async move {
            let shared = task_shared;
            let _slot = slot;
            if let Err(e) = client(&shared, stream, uid).await {
                debug!("control client (uid {uid}): {e}");
            }
        });
    }
}

fn reply_line(reply: &Reply) -> Vec<u8> {
    let mut out = serde_json::to_vec(reply)
        .unwrap_or_else(|_| br#"{"status":"error","error":"reply not serialisable"}"#.to_vec());
    out.push(b'\n');
    out
}

async fn send(write: &mut tokio::net::unix::OwnedWriteHalf, reply: &Reply) -> std::io::Result<()> {
    tokio::time::timeout(REPLY_TIMEOUT, write.write_all(&reply_line(reply)))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "reply not taken"))?
}

async fn client(shared: &Arc<Shared>, stream: UnixStream, uid: u32) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let n = tokio::time::timeout(
        REQUEST_TIMEOUT,
        BufReader::new(read)
            .take(MAX_REQUEST as u64)
            .read_line(&mut line),
    )
    .await
    .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no request"))??;
    if n == 0 {
        return Ok(());
    }
    let reply = match serde_json::from_str::<Request>(&line) {
        Err(e) => Reply::error(format!("bad request: {e}")),
        Ok(req) if req.mutates() && uid != 0 => Reply::error(format!(
            "permission denied: only root may change the router (you are uid {uid})"
        )),
        Ok(Request::Stop) => {
            send(&mut write, &Reply::ok("router stopping")).await?;
            info!("stop requested over the control socket");
            shared.shutdown();
            return Ok(());
        }
        Ok(req) => handle(shared, req).await,
    };
    send(&mut write, &reply).await
}

async fn handle(shared: &Arc<Shared>, req: Request) -> Reply {
    match req {
        Request::Report => Reply::Ok {
            message: String::new(),
            report: Some(Box::new(full_report(shared).await)),
            cni: None,
        },
        Request::Connect { peers } => {
            let mut keys = Vec::new();
            for p in &peers {
                match targets::parse_target(p, shared.config.port) {
                    Ok(k) => keys.push(k),
                    Err(e) => return Reply::error(e),
                }
            }
            for k in keys {
                targets::add_user_target(shared, k);
            }
            Reply::ok("")
        }
        Request::Forget { peers } => {
            for p in &peers {
                let key = match targets::parse_target(p, shared.config.port) {
                    Ok(k) => k,
                    Err(e) => return Reply::error(e),
                };
                crate::daemon::known_peers::forget(shared, &key);
                if !targets::forget(shared, &key) {
                    return Reply::error(format!("{p}: not a peer this router connects to"));
                }
            }
            Reply::ok("")
        }
        Request::Attach { target, cidrs } => attach(shared, &target, &cidrs).await,
        Request::Detach { target, cidrs } => detach(shared, &target, &cidrs).await,
        Request::Expose { cidrs } => expose(shared, &cidrs).await,
        Request::Hide { cidrs } => {
            let nets = match cidr::parse_all(&cidrs) {
                Ok(n) => n,
                Err(e) => return Reply::error(e),
            };
            match shared.netlink.hide(&shared.config.bridge, &nets).await {
                Ok(_) if nets.is_empty() => {
                    // Every address went, the DNS server's too: it comes back.
                    dns::prepare(shared).await;
                    ipam::release(shared, ipam::EXPOSE_ID);
                    Reply::ok("")
                }
                Ok(_) => {
                    let ips: Vec<IpAddr> = nets.iter().map(|n| n.ip()).collect();
                    ipam::release_addrs(shared, ipam::EXPOSE_ID, &ips);
                    Reply::ok("")
                }
                Err(e) => Reply::error(e),
            }
        }
        Request::Allocate { id, subnet } => {
            let subnet = match subnet.as_deref().map(parse_subnet) {
                None => None,
                Some(Ok(s)) => Some(s),
                Some(Err(e)) => return Reply::error(e),
            };
            match valid_id(&id) {
                Ok(()) => addr_reply(ipam::allocate(shared, &id, subnet).await),
                Err(e) => Reply::error(e),
            }
        }
        Request::Claim { id, cidr } => match (valid_id(&id), cidr::parse(&cidr)) {
            (Err(e), _) => Reply::error(e),
            (_, Err(e)) => Reply::error(e),
            (Ok(()), Ok(net)) => addr_reply(ipam::claim(shared, &id, net).await),
        },
        Request::Release { id } => Reply::ok(join(&ipam::release(shared, &id))),
        Request::Lookup { id } => Reply::ok(join(&shared.ipam().lookup(&id))),
        Request::RemovePeer { peer } => match ipam::remove_peer(shared, &peer) {
            Ok(m) => Reply::ok(m),
            Err(e) => Reply::error(e),
        },
        Request::IpamLeave => Reply::ok(ipam::leave(shared)),
        Request::DnsAdd { addrs, owner } => match parse_addrs(&addrs) {
            Ok(a) => result(dns::add(shared, &a, &owner).await),
            Err(e) => Reply::error(e),
        },
        Request::DnsRemove { addrs, owner } => match parse_addrs(&addrs) {
            Ok(a) => result(dns::remove(shared, &a, &owner).await),
            Err(e) => Reply::error(e),
        },
        Request::DnsLookup { name } => match dns::lookup(shared, &name) {
            Ok(a) => Reply::ok(join(&a)),
            Err(e) => Reply::error(e),
        },
        Request::CniAdd(req) => match cni::add(shared, req).await {
            Ok(a) => Reply::Ok {
                message: String::new(),
                report: None,
                cni: Some(a),
            },
            Err(e) => Reply::error(e),
        },
        Request::CniDel {
            container_id,
            ifname,
        } => unit(cni::del(shared, &container_id, &ifname).await),
        Request::CniCheck {
            container_id,
            ifname,
            netns,
            addrs,
        } => unit(cni::check(shared, &container_id, &ifname, &netns, &addrs).await),
        Request::CniGc { keep } => Reply::ok(format!(
            "released {} attachments",
            cni::gc(shared, &keep).await
        )),
        Request::CniStatus => unit(cni::status(shared).await),
        Request::Stop => Reply::ok(""),
    }
}

/// Addresses as `dns-add` takes them: plain IPv4 or IPv6 addresses.
fn parse_addrs(addrs: &[String]) -> Result<Vec<IpAddr>, String> {
    addrs
        .iter()
        .map(|a| {
            a.parse::<IpAddr>()
                .map_err(|_| format!("{a:?} is not an IP address (e.g. 10.32.0.5)"))
        })
        .collect()
}

fn unit(r: Result<(), String>) -> Reply {
    match r {
        Ok(()) => Reply::ok(""),
        Err(e) => Reply::error(e),
    }
}

fn result(r: Result<String, String>) -> Reply {
    match r {
        Ok(m) => Reply::ok(m),
        Err(e) => Reply::error(e),
    }
}

/// A subnet to allocate in: a network address and its prefix, as `net:`.
fn parse_subnet(s: &str) -> Result<IpNetwork, String> {
    match format!("net:{s}").parse::<AddrSpec>() {
        Ok(AddrSpec::Net(n)) => Ok(n),
        Ok(_) => Err(format!("{s}: not a subnet (e.g. 10.32.1.0/24)")),
        Err(e) => Err(e.to_string()),
    }
}

/// Allocation ids name what an address serves: printable, and short.
fn valid_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > 256 || id.chars().any(|c| c.is_control()) {
        return Err(format!(
            "{:?}: an allocation id is 1 to 256 printable characters",
            crate::core::text::sanitize(id, 64)
        ));
    }
    Ok(())
}

fn join<T: ToString>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(" ")
}

fn addr_reply(r: Result<IpNetwork, ipam::AllocError>) -> Reply {
    match r {
        Ok(n) => Reply::ok(n.to_string()),
        Err(e) => Reply::error(e),
    }
}

fn parse_specs(specs: &[String]) -> Result<Vec<AddrSpec>, String> {
    specs
        .iter()
        .map(|s| s.parse::<AddrSpec>().map_err(|e| e.to_string()))
        .collect()
}

async fn attach(shared: &Arc<Shared>, target: &str, cidrs: &[String]) -> Reply {
    match parse_specs(cidrs) {
        Ok(specs) => match attachments::attach(shared, target, &specs).await {
            Ok((_, nets)) => Reply::ok(join(&nets)),
            Err(e) => Reply::error(e),
        },
        Err(e) => Reply::error(e),
    }
}

async fn detach(shared: &Arc<Shared>, target: &str, cidrs: &[String]) -> Reply {
    let mut nets = Vec::new();
    for spec in match parse_specs(cidrs) {
        Ok(s) => s,
        Err(e) => return Reply::error(e),
    } {
        match spec {
            AddrSpec::Cidr(n) | AddrSpec::Ip(n) => nets.push(n),
            other => {
                return Reply::error(format!(
                    "{other}: detach takes the addresses to remove, not a subnet to allocate in"
                ))
            }
        }
    }
    match attachments::detach(shared, target, &nets).await {
        Ok(()) => Reply::ok(""),
        Err(e) => Reply::error(e),
    }
}

/// expose: literal addresses outside the range as given; the rest (none
/// given: one from the default subnet) allocated for the host.
async fn expose(shared: &Arc<Shared>, cidrs: &[String]) -> Reply {
    let specs = match parse_specs(cidrs) {
        Ok(s) => s,
        Err(e) => return Reply::error(e),
    };
    let nets = match ipam::addresses(shared, ipam::EXPOSE_ID, &specs).await {
        Ok(n) => n,
        Err(e) => return Reply::error(e),
    };
    for net in &nets {
        if let Err(e) = shared.netlink.expose(&shared.config.bridge, *net).await {
            return Reply::error(e);
        }
    }
    Reply::ok(join(&nets))
}

/// Everything `report` shows, the bridge's addresses included.
pub(crate) async fn full_report(shared: &Arc<Shared>) -> Report {
    let mut r = report(shared);
    r.attached = attachments::present(shared)
        .await
        .into_iter()
        .map(|a| AttachedReport {
            target: a.label,
            container: a.container_id,
            host_veth: a.host_veth,
            mac: a.mac,
            addrs: a.cidrs,
        })
        .chain(crate::daemon::plugin::attached(shared))
        .collect();
    // Drops the kernel counts for us: frames our TAP could not queue for
    // the router (it was behind), datagrams our UDP socket could not.
    if let Some(stats) = r.stats.0.as_object_mut() {
        let tap = match shared.netlink.link(&shared.config.tap).await {
            Ok(Some(l)) => l.tx_dropped,
            _ => 0,
        };
        let udp = crate::net::udp_drops::udp_drops(&shared.udp).unwrap_or(0);
        stats.insert("dropped_tap_queue".into(), tap.into());
        stats.insert("dropped_udp_buffer".into(), udp.into());
    }
    let dns_addr = shared.config.dns.as_ref().map(|d| IpAddr::V4(d.address));
    r.exposed = match shared.netlink.bridge_addrs(&shared.config.bridge).await {
        Ok(addrs) => addrs
            .iter()
            .filter(|a| Some(a.ip()) != dns_addr)
            .map(|a| a.to_string())
            .collect(),
        Err(e) => vec![format!("unknown: {e}")],
    };
    r
}

fn report(shared: &Arc<Shared>) -> Report {
    let now = Instant::now();
    let c = &shared.config;
    let ipam_refused = shared.ipam().refused.clone();
    let ipam = ipam::report(shared);
    let dns = dns::report(shared);
    let fast = shared.fast_published().links.clone();
    let st = shared.state();
    let mut connections: Vec<ConnectionReport> = Vec::new();
    for conn in st.conns.values() {
        connections.push(ConnectionReport {
            addr: conn.remote.to_string(),
            peer: Some(conn.peer),
            nickname: Some(conn.nickname.clone()),
            outbound: conn.outbound,
            state: if conn.udp_ok {
                "established"
            } else {
                "pending"
            }
            .into(),
            last_error: (!conn.udp_ok).then(|| "waiting for UDP heartbeats".to_string()),
            encrypted: conn.encryption == Encryption::Full,
            encryption: conn.encryption.as_str().into(),
            remote_key: conn.remote_key.clone(),
            ipam_refused: ipam_refused.get(&conn.peer).cloned(),
            data_path: fast.get(&conn.peer).map(|l| l.describe.clone()),
            fast_path: fast.get(&conn.peer).is_some_and(|l| l.fast),
        });
    }
    for (key, t) in &st.targets {
        let (state, last_error) = match &t.status {
            TargetStatus::Connected { .. } => continue,
            TargetStatus::Connecting => ("connecting", None),
            TargetStatus::Retrying {
                last_error,
                next_attempt,
            } => (
                "retrying",
                Some(format!(
                    "{last_error} (next attempt in {:.1}s)",
                    next_attempt.saturating_duration_since(now).as_secs_f64()
                )),
            ),
            TargetStatus::Failed { error } => ("failed", Some(error.clone())),
        };
        connections.push(ConnectionReport {
            addr: key.clone(),
            peer: match t.source {
                TargetSource::Discovered(p) | TargetSource::Remembered(p) => Some(p),
                TargetSource::User => None,
            },
            nickname: None,
            outbound: true,
            state: state.into(),
            last_error,
            encrypted: false,
            encryption: String::new(),
            remote_key: None,
            ipam_refused: None,
            data_path: None,
            fast_path: false,
        });
    }
    connections.sort_by(|a, b| a.addr.cmp(&b.addr));
    let topo = &st.topology;
    let next_hops: HashMap<PeerName, PeerName> = {
        let data = shared.data();
        topo.entries()
            .filter_map(|e| Some((e.name, data.router.next_hop(e.name)?)))
            .collect()
    };
    let data_path = |peer: PeerName| {
        let hop = *next_hops.get(&peer)?;
        if hop == peer {
            fast.get(&peer).map(|l| l.describe.clone())
        } else {
            Some(format!(
                "sleeve: {} via {hop}",
                crate::core::fastpath::Ineligible::Relayed
            ))
        }
    };
    let peers = topo
        .entries()
        .map(|e| PeerReport {
            data_path: (e.name != c.name).then(|| data_path(e.name)).flatten(),
            name: e.name,
            nickname: e.nickname.clone(),
            uid: e.uid,
            version: e.version,
            connections: e
                .connections
                .iter()
                .map(|ci| PeerConnectionReport {
                    peer: ci.peer,
                    addr: ci.addr.to_string(),
                    outbound: ci.outbound,
                    established: topo.connected(e.name, ci.peer),
                })
                .collect(),
        })
        .collect();
    let targets = st
        .targets
        .iter()
        .filter(|(_, t)| t.source == TargetSource::User)
        .map(|(k, _)| k.clone())
        .collect();
    let refused = st
        .refused
        .iter()
        .map(|r| RefusedReport {
            addr: r.addr.to_string(),
            reason: r.reason.clone(),
            secs_ago: now.saturating_duration_since(r.at).as_secs(),
            count: r.count,
        })
        .collect();
    drop(st);
    let data = shared.data();
    Report {
        version: env!("CARGO_PKG_VERSION").to_string(),
        protocol: format!(
            "{}..{}",
            crate::core::wire::handshake::MIN_VERSION,
            crate::core::wire::handshake::MAX_VERSION
        ),
        router: RouterInfo {
            name: c.name,
            nickname: c.nickname.clone(),
            uid: shared.uid,
            pid: std::process::id(),
            port: c.port,
            mtu: c.mtu,
            bridge: c.bridge.clone(),
            discovery: c.discovery,
            conn_limit: c.conn_limit,
            encryption: c.crypto.is_some(),
            mesh_name: c.mesh_name.clone(),
            uptime_secs: shared.started.elapsed().as_secs(),
            fast_path: match &shared.fast_device {
                Ok(_) => format!(
                    "{}, vni {}, udp {}",
                    crate::daemon::fastpath::DEVICE,
                    crate::daemon::fastpath::vni(&c.mesh_name),
                    crate::daemon::fastpath::udp_port(c)
                ),
                Err(why) => format!("off: {why}"),
            },
        },
        connections,
        peers,
        targets,
        refused,
        attached: Vec::new(),
        exposed: Vec::new(),
        mac_table_entries: data.router.macs().len(),
        stats: (&data.router.stats).into(),
        ipam: Some(ipam),
        dns,
    }
}
