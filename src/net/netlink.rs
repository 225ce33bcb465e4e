//! Links and addresses over rtnetlink: the `weave` bridge (with a fixed
//! MAC address, see [`Netlink::ensure_bridge`]), container veth
//! pairs (`vethwr<id>` on the bridge, `ethwe` in the container), addresses
//! on `ethwe` and on the bridge (expose/hide), and reset.
//!
//! A [`Netlink`] is bound to one network namespace for its whole life: the
//! one its socket was opened in ([`Netlink::connect`]: the caller's,
//! [`Netlink::connect_in`]: any other, the socket being opened on a thread
//! that entered that netns). Its connection task runs on the tokio runtime
//! that was current when it was made.

mod dns;

use std::collections::HashMap;
use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt;
use ipnetwork::IpNetwork;
use netlink_packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage,
};
use netlink_packet_route::link::{
    BridgePortState, InfoBridgePort, InfoData, InfoKind, InfoPortData, InfoVeth, LinkAttribute,
    LinkFlags, LinkInfo, LinkMessage, State,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteType,
};
use netlink_packet_route::AddressFamily;
use rtnetlink::sys::{protocols::NETLINK_ROUTE, AsyncSocket, TokioSocket};
use rtnetlink::{Handle, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder};

use super::netns::{ns_inode, ns_short_id, run_in_netns, run_in_netns_async};
use super::{garp, NetError, NetnsTarget, CONTAINER_IFNAME, HOST_VETH_PREFIX};

/// The result of [`Netlink::attach`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attached {
    /// Name of the host end, on the bridge: `vethwr<short_id>`.
    pub host_veth: String,
    /// MAC address of `ethwe`, the container end.
    pub mac: [u8; 6],
    /// Every address now on `ethwe` (IPv6 link-local excepted).
    pub addrs: Vec<IpNetwork>,
}

/// What [`Netlink::link`] reports about one link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkSummary {
    /// Interface index.
    pub index: u32,
    /// Interface name.
    pub name: String,
    /// MTU.
    pub mtu: u32,
    /// Administratively up (IFF_UP).
    pub up: bool,
    /// Operational state is UP (carrier and all).
    pub oper_up: bool,
    /// Index of the bridge (or other controller) it is enslaved to.
    pub master: Option<u32>,
    /// Hardware address, when it has a 6-byte one.
    pub mac: Option<[u8; 6]>,
    /// Link kind (`bridge`, `veth`, `tun`, ...), when the kernel says.
    pub kind: Option<String>,
}

/// An rtnetlink connection bound to one network namespace.
#[derive(Clone)]
pub struct Netlink {
    handle: Handle,
    /// The namespace the socket lives in (for GARP on the bridge, and to
    /// refuse attaching the router's own netns).
    ns: Arc<File>,
}

impl std::fmt::Debug for Netlink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Netlink")
            .field("ns_fd", &self.ns.as_raw_fd())
            .finish_non_exhaustive()
    }
}

fn runtime(what: &'static str) -> Result<tokio::runtime::Handle, NetError> {
    tokio::runtime::Handle::try_current().map_err(|_| NetError::NoRuntime(what))
}

fn io_err(what: &str) -> impl FnOnce(std::io::Error) -> NetError + '_ {
    move |source| NetError::Io {
        what: what.to_string(),
        source,
    }
}

/// Maps an rtnetlink error to a [`NetError`] naming `object` and `op`.
fn nl_err(object: &str, op: &str, e: rtnetlink::Error) -> NetError {
    match e {
        rtnetlink::Error::NetlinkError(m) => {
            let errno = m.raw_code().abs();
            NetError::Netlink {
                object: object.to_string(),
                op: op.to_string(),
                cause: nix::errno::Errno::from_raw(errno).desc().to_string(),
                errno: Some(errno),
            }
        }
        other => NetError::Netlink {
            object: object.to_string(),
            op: op.to_string(),
            cause: other.to_string(),
            errno: None,
        },
    }
}

fn errno_of(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => Some(m.raw_code().abs()),
        _ => None,
    }
}

fn check_ifname(object: &str, name: &str) -> Result<(), NetError> {
    if name.is_empty() || name.len() > 15 || name.contains(['/', ' ', '\0']) {
        return Err(NetError::Netlink {
            object: object.to_string(),
            op: "name".into(),
            cause: "not a valid interface name (1-15 bytes, no '/' or space)".into(),
            errno: Some(libc::EINVAL),
        });
    }
    Ok(())
}

fn summarize(m: &LinkMessage) -> LinkSummary {
    let mut s = LinkSummary {
        index: m.header.index,
        name: String::new(),
        mtu: 0,
        up: m.header.flags.contains(LinkFlags::Up),
        oper_up: false,
        master: None,
        mac: None,
        kind: None,
    };
    for a in &m.attributes {
        match a {
            LinkAttribute::IfName(n) => s.name = n.clone(),
            LinkAttribute::Mtu(v) => s.mtu = *v,
            LinkAttribute::Controller(i) if *i != 0 => s.master = Some(*i),
            LinkAttribute::OperState(st) => s.oper_up = *st == State::Up,
            LinkAttribute::Address(a) if a.len() == 6 => {
                let mut mac = [0u8; 6];
                mac.copy_from_slice(a);
                s.mac = Some(mac);
            }
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    if let LinkInfo::Kind(k) = i {
                        s.kind = Some(k.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    s
}

fn bridge_port_state(m: &LinkMessage) -> Option<BridgePortState> {
    m.attributes.iter().find_map(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
            LinkInfo::PortData(InfoPortData::BridgePort(ps)) => ps.iter().find_map(|p| match p {
                InfoBridgePort::State(s) => Some(*s),
                _ => None,
            }),
            _ => None,
        }),
        _ => None,
    })
}

/// The address and prefix of an address message.
fn addr_of(m: &AddressMessage) -> Option<IpNetwork> {
    // IPv4: IFA_LOCAL is the address (IFA_ADDRESS may be a peer's).
    // IPv6: only IFA_ADDRESS.
    let local = m.attributes.iter().find_map(|a| match a {
        AddressAttribute::Local(ip) => Some(*ip),
        _ => None,
    });
    let address = m.attributes.iter().find_map(|a| match a {
        AddressAttribute::Address(ip) => Some(*ip),
        _ => None,
    });
    let ip = local.or(address)?;
    IpNetwork::new(ip, m.header.prefix_len).ok()
}

/// `addr_assign_type` of a link whose address was set by the user
/// (`NET_ADDR_SET`).
const NET_ADDR_SET: u8 = 3;

fn fmt_mac(m: [u8; 6]) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
}

/// How the kernel says link `s` got its MAC (sysfs `addr_assign_type`),
/// or `None` if that cannot be told. Netlink does not carry it, and
/// `/sys/class/net` shows the links of the namespace sysfs was mounted in,
/// not necessarily this thread's: the answer counts only if the link there
/// has the same index and MAC.
fn addr_assign_type(s: &LinkSummary) -> Option<u8> {
    let dir = std::path::Path::new("/sys/class/net").join(&s.name);
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).ok();
    let index: u32 = read("ifindex")?.trim().parse().ok()?;
    let mac = read("address")?;
    if index != s.index || Some(mac.trim()) != s.mac.map(fmt_mac).as_deref() {
        return None;
    }
    read("addr_assign_type")?.trim().parse().ok()
}

fn check_unicast(object: &str, cidrs: &[IpNetwork]) -> Result<(), NetError> {
    for c in cidrs {
        let bad = match c.ip() {
            IpAddr::V4(ip) => ip.is_multicast() || ip.is_unspecified() || ip.is_broadcast(),
            IpAddr::V6(ip) => ip.is_multicast() || ip.is_unspecified(),
        };
        if bad {
            return Err(NetError::BadAddress {
                object: object.to_string(),
                addr: c.to_string(),
            });
        }
    }
    Ok(())
}

fn is_link_local(n: &IpNetwork) -> bool {
    match n.ip() {
        IpAddr::V6(ip) => (ip.segments()[0] & 0xffc0) == 0xfe80,
        IpAddr::V4(_) => false,
    }
}

fn is_multicast(n: &IpNetwork) -> bool {
    n.ip().is_multicast()
}

/// The destination of a route of the main table and its description as
/// `ip route` would print it, unless it goes out of a link in `skipped`
/// (every next hop of a multipath route, for those), or is IPv6
/// link-local or multicast.
fn main_route(
    m: &RouteMessage,
    skipped: &[u32],
    name_of: &dyn Fn(u32) -> String,
) -> Option<(IpNetwork, String)> {
    let table = m
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(m.header.table));
    if table != u32::from(RouteHeader::RT_TABLE_MAIN) {
        return None;
    }
    if matches!(
        m.header.kind,
        RouteType::Multicast | RouteType::Local | RouteType::Broadcast | RouteType::Anycast
    ) {
        return None;
    }
    let ip = |a: &RouteAddress| match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    };
    let zero = match m.header.address_family {
        AddressFamily::Inet => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        AddressFamily::Inet6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        _ => return None,
    };
    let mut dst = zero;
    let mut gateway = None;
    let mut oifs = Vec::new();
    for a in &m.attributes {
        match a {
            RouteAttribute::Destination(d) => dst = ip(d)?,
            RouteAttribute::Gateway(g) => gateway = ip(g),
            RouteAttribute::Oif(i) => oifs.push(*i),
            RouteAttribute::MultiPath(hops) => {
                oifs.extend(hops.iter().map(|h| h.interface_index));
            }
            _ => {}
        }
    }
    if !oifs.is_empty() && oifs.iter().all(|i| skipped.contains(i)) {
        return None;
    }
    let net = IpNetwork::new(dst, m.header.destination_prefix_length).ok()?;
    if is_link_local(&net) || is_multicast(&net) {
        return None;
    }
    let mut what = String::from("route ");
    if m.header.kind != RouteType::Unicast {
        what.push_str(&format!(
            "{} ",
            format!("{:?}", m.header.kind).to_lowercase()
        ));
    }
    what.push_str(&net.to_string());
    if let Some(g) = gateway {
        what.push_str(&format!(" via {g}"));
    }
    if let Some(dev) = oifs.first() {
        what.push_str(&format!(" dev {}", name_of(*dev)));
    }
    Some((net, what))
}

impl Netlink {
    /// Connects in the caller's network namespace. Must be called within a
    /// tokio runtime (the connection task is spawned on it).
    pub fn connect() -> Result<Self, NetError> {
        let rt = runtime("Netlink::connect")?;
        let ns = File::open("/proc/thread-self/ns/net")
            .map_err(io_err("open /proc/thread-self/ns/net"))?;
        let (conn, handle, _) =
            rtnetlink::new_connection().map_err(io_err("open netlink socket"))?;
        rt.spawn(conn);
        Ok(Netlink {
            handle,
            ns: Arc::new(ns),
        })
    }

    /// Connects in the network namespace `ns`: the socket is opened on a
    /// short-lived thread inside `ns` and stays bound to it. Must be called
    /// within a tokio runtime.
    pub fn connect_in(ns: &File) -> Result<Self, NetError> {
        let rt = runtime("Netlink::connect_in")?;
        let rt2 = rt.clone();
        let sock = run_in_netns(ns, move || {
            // Registering with the reactor needs the runtime's context; the
            // registration itself is not tied to a namespace.
            let _guard = rt2.enter();
            TokioSocket::new(NETLINK_ROUTE)
        })?
        .map_err(io_err("open netlink socket in network namespace"))?;
        let (conn, handle, _) = rtnetlink::from_socket(sock);
        rt.spawn(conn);
        let ns = ns.try_clone().map_err(io_err("dup network namespace fd"))?;
        Ok(Netlink {
            handle,
            ns: Arc::new(ns),
        })
    }

    /// The underlying rtnetlink handle, for anything not wrapped here.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// The namespace this connection acts in.
    pub fn netns(&self) -> &File {
        &self.ns
    }

    // ---------------------------------------------------------------- links

    async fn get_link(&self, name: &str) -> Result<Option<LinkMessage>, NetError> {
        check_ifname(&format!("link {name}"), name)?;
        let mut s = self.handle.link().get().match_name(name).execute();
        match s.try_next().await {
            Ok(m) => Ok(m),
            Err(e) if errno_of(&e) == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(nl_err(&format!("link {name}"), "get", e)),
        }
    }

    async fn all_links(&self) -> Result<Vec<LinkMessage>, NetError> {
        self.handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(|e| nl_err("links", "list", e))
    }

    async fn require(&self, object: &str, name: &str) -> Result<LinkMessage, NetError> {
        self.get_link(name)
            .await?
            .ok_or_else(|| NetError::NoSuchLink {
                object: object.to_string(),
            })
    }

    async fn set_link(&self, object: &str, op: &str, msg: LinkMessage) -> Result<(), NetError> {
        self.handle
            .link()
            .set(msg)
            .execute()
            .await
            .map_err(|e| nl_err(object, op, e))
    }

    async fn del_index(&self, object: &str, index: u32) -> Result<bool, NetError> {
        match self.handle.link().del(index).execute().await {
            Ok(()) => Ok(true),
            Err(e) if errno_of(&e) == Some(libc::ENODEV) => Ok(false),
            Err(e) => Err(nl_err(object, "delete", e)),
        }
    }

    /// Index of the link `name`, `None` if there is none.
    pub async fn link_index(&self, name: &str) -> Result<Option<u32>, NetError> {
        Ok(self.get_link(name).await?.map(|m| m.header.index))
    }

    /// What the kernel says about link `name`, `None` if there is none.
    pub async fn link(&self, name: &str) -> Result<Option<LinkSummary>, NetError> {
        Ok(self.get_link(name).await?.as_ref().map(summarize))
    }

    /// Deletes link `name`; `Ok(false)` if it did not exist.
    pub async fn delete_link(&self, name: &str) -> Result<bool, NetError> {
        let object = format!("link {name}");
        match self.get_link(name).await? {
            Some(m) => self.del_index(&object, m.header.index).await,
            None => Ok(false),
        }
    }

    /// Creates the bridge `name` if missing, with MAC `mac`, sets its MTU
    /// and brings it up; returns its index. Idempotent. Fails if `name`
    /// exists and is not a bridge.
    ///
    /// A bridge whose MAC nobody set takes the lowest MAC of its ports, so
    /// attaching or removing a container could change it, and everything
    /// that cached the old one (a container's ARP entry for an exposed
    /// address) would lose the host for up to a minute. So the bridge is
    /// made with `mac`, and an existing bridge whose MAC was not set by
    /// anyone gets `mac` too; a MAC set by the user is kept.
    pub async fn ensure_bridge(&self, name: &str, mtu: u32, mac: [u8; 6]) -> Result<u32, NetError> {
        let object = format!("bridge {name}");
        check_ifname(&object, name)?;
        let link = match self.get_link(name).await? {
            Some(l) => l,
            None => {
                let msg = LinkMessageBuilder::<rtnetlink::LinkBridge>::new(name)
                    .mtu(mtu)
                    .address(mac.to_vec())
                    .up()
                    .build();
                match self.handle.link().add(msg).execute().await {
                    Ok(()) => {}
                    // Lost a race with another creator: fine if it is a bridge.
                    Err(e) if errno_of(&e) == Some(libc::EEXIST) => {}
                    Err(e) => return Err(nl_err(&object, "create", e)),
                }
                self.require(&object, name).await?
            }
        };
        let s = summarize(&link);
        if s.kind.as_deref() != Some("bridge") {
            return Err(NetError::Netlink {
                object,
                op: "check kind".into(),
                cause: format!(
                    "exists but is not a bridge (kind {})",
                    s.kind.as_deref().unwrap_or("unknown")
                ),
                errno: None,
            });
        }
        if s.mac != Some(mac) {
            match addr_assign_type(&s) {
                Some(NET_ADDR_SET) => {
                    tracing::info!(
                        "{object}: keeping the MAC address set on it ({})",
                        s.mac.map(fmt_mac).unwrap_or_default()
                    );
                }
                _ => {
                    let msg = LinkUnspec::new_with_index(s.index)
                        .address(mac.to_vec())
                        .build();
                    self.set_link(&object, &format!("set MAC address {}", fmt_mac(mac)), msg)
                        .await?;
                    tracing::info!(
                        "{object}: MAC address fixed at {} (was {}, from a port)",
                        fmt_mac(mac),
                        s.mac.map(fmt_mac).unwrap_or_default()
                    );
                }
            }
        }
        if s.mtu != mtu || !s.up {
            let msg = LinkUnspec::new_with_index(s.index).mtu(mtu).up().build();
            self.set_link(&object, &format!("set mtu {mtu} and up"), msg)
                .await?;
        }
        Ok(s.index)
    }

    /// Enslaves link `ifname` to `bridge`, sets its MTU and brings it up.
    pub async fn enslave(&self, ifname: &str, bridge: &str, mtu: u32) -> Result<(), NetError> {
        let br = self.require(&format!("bridge {bridge}"), bridge).await?;
        let object = format!("link {ifname}");
        let link = self.require(&object, ifname).await?;
        let msg = LinkUnspec::new_with_index(link.header.index)
            .controller(br.header.index)
            .mtu(mtu)
            .up()
            .build();
        self.set_link(&object, &format!("enslave to {bridge} with mtu {mtu}"), msg)
            .await
    }

    /// Names of the `vethwr*` links enslaved to `bridge` (none if the
    /// bridge does not exist), sorted.
    pub async fn attached(&self, bridge: &str) -> Result<Vec<String>, NetError> {
        let Some(br) = self.link_index(bridge).await? else {
            return Ok(Vec::new());
        };
        let mut names: Vec<String> = self
            .all_links()
            .await?
            .iter()
            .map(summarize)
            .filter(|s| s.name.starts_with(HOST_VETH_PREFIX) && s.master == Some(br))
            .map(|s| s.name)
            .collect();
        names.sort();
        Ok(names)
    }

    /// Deletes every `vethwr*` link (whichever bridge, or none, it is on),
    /// the TAP `tap` and the bridge `bridge`; absent ones are skipped.
    /// Deleting a host veth also removes its `ethwe` in the container.
    pub async fn reset(&self, bridge: &str, tap: &str) -> Result<(), NetError> {
        for s in self.all_links().await?.iter().map(summarize) {
            if s.name.starts_with(HOST_VETH_PREFIX) {
                self.del_index(&format!("veth {}", s.name), s.index).await?;
            }
        }
        if let Some(m) = self.get_link(tap).await? {
            self.del_index(&format!("TAP {tap}"), m.header.index)
                .await?;
        }
        if let Some(m) = self.get_link(bridge).await? {
            self.del_index(&format!("bridge {bridge}"), m.header.index)
                .await?;
        }
        self.remove_dns_rules().await
    }

    // ------------------------------------------------------------ addresses

    async fn addr_msgs(&self, object: &str, index: u32) -> Result<Vec<AddressMessage>, NetError> {
        self.handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute()
            .try_collect()
            .await
            .map_err(|e| nl_err(object, "list addresses", e))
    }

    /// Addresses on link `index`, IPv6 link-local excepted.
    async fn addrs_of(&self, object: &str, index: u32) -> Result<Vec<IpNetwork>, NetError> {
        Ok(self
            .addr_msgs(object, index)
            .await?
            .iter()
            .filter_map(addr_of)
            .filter(|n| !is_link_local(n))
            .collect())
    }

    /// Adds `cidr` to link `index` (IPv6 without DAD, usable at once).
    async fn add_addr(&self, object: &str, index: u32, cidr: IpNetwork) -> Result<(), NetError> {
        let mut req = self.handle.address().add(index, cidr.ip(), cidr.prefix());
        if cidr.is_ipv6() {
            let m = req.message_mut();
            m.header.flags |= AddressHeaderFlags::Nodad;
            m.attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        req.execute().await.map_err(|e| match errno_of(&e) {
            Some(libc::EEXIST) => NetError::AddressInUse {
                object: object.to_string(),
                addr: cidr.to_string(),
            },
            _ => nl_err(object, &format!("add address {cidr}"), e),
        })
    }

    /// Removes the addresses of `msgs` that are in `cidrs` (all but IPv6
    /// link-local if `cidrs` is empty); returns those removed.
    async fn del_addrs(
        &self,
        object: &str,
        msgs: Vec<AddressMessage>,
        cidrs: &[IpNetwork],
    ) -> Result<Vec<IpNetwork>, NetError> {
        let mut removed = Vec::new();
        for m in msgs {
            let Some(n) = addr_of(&m) else { continue };
            let wanted = if cidrs.is_empty() {
                !is_link_local(&n)
            } else {
                cidrs.contains(&n)
            };
            if !wanted {
                continue;
            }
            match self.handle.address().del(m).execute().await {
                Ok(()) => removed.push(n),
                // Already gone (e.g. a secondary removed with its primary).
                Err(e) if errno_of(&e) == Some(libc::EADDRNOTAVAIL) => removed.push(n),
                Err(e) => return Err(nl_err(object, &format!("remove address {n}"), e)),
            }
        }
        Ok(removed)
    }

    /// Adds `cidr` to the bridge itself (giving the host an address on the
    /// overlay). Returns false if it was already there.
    pub async fn expose(&self, bridge: &str, cidr: IpNetwork) -> Result<bool, NetError> {
        let object = format!("bridge {bridge}");
        check_unicast(&object, &[cidr])?;
        let br = self.require(&object, bridge).await?;
        let index = br.header.index;
        if self.addrs_of(&object, index).await?.contains(&cidr) {
            return Ok(false);
        }
        self.add_addr(&object, index, cidr).await?;
        if let Some(mac) = summarize(&br).mac {
            let name = bridge.to_string();
            let ip = cidr.ip();
            match run_in_netns_async(&self.ns, move || garp::announce(&name, mac, &[ip])).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) | Err(e) => tracing::warn!("{e}"),
            }
        }
        Ok(true)
    }

    /// Removes `cidrs` from the bridge (every address, IPv6 link-local
    /// excepted, if `cidrs` is empty); returns those removed.
    pub async fn hide(
        &self,
        bridge: &str,
        cidrs: &[IpNetwork],
    ) -> Result<Vec<IpNetwork>, NetError> {
        let object = format!("bridge {bridge}");
        let index = self.require(&object, bridge).await?.header.index;
        let msgs = self.addr_msgs(&object, index).await?;
        self.del_addrs(&object, msgs, cidrs).await
    }

    /// Addresses on the bridge, IPv6 link-local excepted.
    pub async fn bridge_addrs(&self, bridge: &str) -> Result<Vec<IpNetwork>, NetError> {
        let object = format!("bridge {bridge}");
        let index = self.require(&object, bridge).await?.header.index;
        self.addrs_of(&object, index).await
    }

    /// Addresses on link `name`, IPv6 link-local excepted.
    pub async fn link_addrs(&self, name: &str) -> Result<Vec<IpNetwork>, NetError> {
        let object = format!("link {name}");
        let index = self.require(&object, name).await?.header.index;
        self.addrs_of(&object, index).await
    }

    // ------------------------------------------------------- host networks

    /// The networks this namespace already uses, each with how to name it
    /// in an error: the destinations of the main table's IPv4 and IPv6
    /// routes ("route 10.32.0.0/16 via 192.168.1.1 dev eth0") and every
    /// interface address ("address 10.33.1.1/24 on eth1"), addresses
    /// first. Left out: whatever is on `skip_dev` (our bridge, which holds
    /// overlay addresses after `expose`) or `lo`, IPv6 link-local and
    /// multicast. For the check that the IPAM range clashes with nothing
    /// (`crate::core::ipam::config::overlap`).
    pub async fn host_networks(
        &self,
        skip_dev: &str,
    ) -> Result<Vec<(IpNetwork, String)>, NetError> {
        let names: HashMap<u32, String> = self
            .all_links()
            .await?
            .iter()
            .map(|l| {
                let s = summarize(l);
                (s.index, s.name)
            })
            .collect();
        let skipped: Vec<u32> = names
            .iter()
            .filter(|(_, n)| n.as_str() == skip_dev || n.as_str() == "lo")
            .map(|(i, _)| *i)
            .collect();
        let name_of = |i: u32| names.get(&i).cloned().unwrap_or_else(|| format!("if{i}"));
        let mut out = Vec::new();
        let addrs: Vec<AddressMessage> = self
            .handle
            .address()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(|e| nl_err("addresses", "list", e))?;
        for m in &addrs {
            if skipped.contains(&m.header.index) {
                continue;
            }
            if let Some(n) = addr_of(m).filter(|n| !is_link_local(n) && !is_multicast(n)) {
                out.push((n, format!("address {n} on {}", name_of(m.header.index))));
            }
        }
        let v4 = RouteMessageBuilder::<Ipv4Addr>::new().build();
        let v6 = RouteMessageBuilder::<Ipv6Addr>::new().build();
        for (family, query) in [("IPv4", v4), ("IPv6", v6)] {
            let routes: Vec<RouteMessage> =
                match self.handle.route().get(query).execute().try_collect().await {
                    Ok(r) => r,
                    // A kernel without IPv6 has no IPv6 routes to clash with.
                    Err(e) if errno_of(&e) == Some(libc::EAFNOSUPPORT) => Vec::new(),
                    Err(e) => return Err(nl_err(&format!("{family} routes"), "list", e)),
                };
            out.extend(
                routes
                    .iter()
                    .filter_map(|r| main_route(r, &skipped, &name_of)),
            );
        }
        Ok(out)
    }

    // ------------------------------------------------------ attach / detach

    /// Connects the container network namespace `target` to `bridge`:
    /// a veth pair whose host end `vethwr<short_id>` is on the bridge and
    /// up, and whose other end is `ethwe` in `target` with MTU `mtu`,
    /// addresses `cidrs` (IPv6 without DAD) and up; the prefix route comes
    /// with each address. Then announces each address (gratuitous ARP,
    /// unsolicited NA) from inside `target`.
    ///
    /// Idempotent: if `ethwe` already exists, only the missing addresses
    /// are added (and MTU, up and the host end's bridge are reasserted).
    pub async fn attach(
        &self,
        bridge: &str,
        target: &NetnsTarget,
        cidrs: &[IpNetwork],
        mtu: u32,
    ) -> Result<Attached, NetError> {
        let ns = target.open()?;
        if ns_inode(&ns)? == ns_inode(&self.ns)? {
            return Err(NetError::Netns {
                target: target.to_string(),
                source: std::io::Error::other("is the router's own network namespace"),
            });
        }
        let host_veth = format!("{HOST_VETH_PREFIX}{}", ns_short_id(&ns)?);
        let host_obj = format!("veth {host_veth}");
        let ctr_obj = format!("{CONTAINER_IFNAME} in {target}");
        check_unicast(&ctr_obj, cidrs)?;
        let br_index = self
            .require(&format!("bridge {bridge}"), bridge)
            .await?
            .header
            .index;
        let ctr = Netlink::connect_in(&ns)?;
        ctr.check_no_clash(&ctr_obj, cidrs).await?;

        let existing = ctr.get_link(CONTAINER_IFNAME).await?;
        let created = existing.is_none();
        let ethwe = match existing {
            Some(l) => {
                let Some(host) = self.get_link(&host_veth).await? else {
                    return Err(NetError::Netlink {
                        object: ctr_obj,
                        op: "attach".into(),
                        cause: format!(
                            "already exists, but its host end {host_veth} is not in this network namespace"
                        ),
                        errno: Some(libc::EEXIST),
                    });
                };
                let s = summarize(&host);
                if s.master != Some(br_index) || !s.up || s.mtu != mtu {
                    let msg = LinkUnspec::new_with_index(s.index)
                        .controller(br_index)
                        .mtu(mtu)
                        .up()
                        .build();
                    self.set_link(&host_obj, &format!("enslave to {bridge}"), msg)
                        .await?;
                }
                l
            }
            None => {
                // A host end without its peer cannot be ours any more.
                if let Some(stale) = self.get_link(&host_veth).await? {
                    self.del_index(&host_obj, stale.header.index).await?;
                }
                self.create_veth(&host_veth, br_index, &ns, mtu)
                    .await
                    .map_err(|e| match e {
                        NetError::Netlink {
                            op, cause, errno, ..
                        } => NetError::Netlink {
                            object: format!("{host_obj} / {ctr_obj}"),
                            op,
                            cause,
                            errno,
                        },
                        e => e,
                    })?;
                ctr.require(&ctr_obj, CONTAINER_IFNAME).await?
            }
        };
        let ethwe = summarize(&ethwe);
        let Some(mac) = ethwe.mac else {
            return Err(NetError::Netlink {
                object: ctr_obj,
                op: "read MAC".into(),
                cause: "no Ethernet address".into(),
                errno: None,
            });
        };

        if let Err(e) = ctr.configure_ethwe(&ctr_obj, &ethwe, cidrs, mtu).await {
            if created {
                // Leave nothing half-made behind.
                let _ = ctr.del_index(&ctr_obj, ethwe.index).await;
            }
            return Err(e);
        }

        // Announce once the host end forwards, or the bridge drops it.
        self.wait_forwarding(&host_veth).await;
        let ips: Vec<IpAddr> = cidrs.iter().map(|c| c.ip()).collect();
        let announced = run_in_netns_async(&ns, move || {
            // Removing a primary IPv4 address must not take the secondaries
            // in the same subnet with it (detach of one of several).
            let _ = std::fs::write(
                format!("/proc/sys/net/ipv4/conf/{CONTAINER_IFNAME}/promote_secondaries"),
                "1",
            );
            garp::announce(CONTAINER_IFNAME, mac, &ips)
        })
        .await;
        match announced {
            Ok(Ok(())) => {}
            Ok(Err(e)) | Err(e) => tracing::warn!("{target}: {e}"),
        }

        let addrs = ctr.addrs_of(&ctr_obj, ethwe.index).await?;
        Ok(Attached {
            host_veth,
            mac,
            addrs,
        })
    }

    /// Refuses `cidrs` whose address is already on another interface of
    /// this namespace, or whose subnet overlaps one there (e.g. Docker's
    /// eth0): the overlay's routes would fight with it.
    async fn check_no_clash(&self, object: &str, cidrs: &[IpNetwork]) -> Result<(), NetError> {
        for link in self.all_links().await? {
            let s = summarize(&link);
            if s.name == CONTAINER_IFNAME || s.name == "lo" {
                continue;
            }
            for have in self.addrs_of(&format!("link {}", s.name), s.index).await? {
                for want in cidrs {
                    let clash = if have.ip() == want.ip() {
                        Some(format!("address {} is already on {}", want.ip(), s.name))
                    } else if have.contains(want.ip()) || want.contains(have.ip()) {
                        Some(format!("{want} overlaps {have} on {}", s.name))
                    } else {
                        None
                    };
                    if let Some(cause) = clash {
                        return Err(NetError::Netlink {
                            object: object.to_string(),
                            op: "attach".into(),
                            cause,
                            errno: Some(libc::EEXIST),
                        });
                    }
                }
            }
        }
        Ok(())
    }

    /// Adds the missing `cidrs` to `ethwe`, sets its MTU and brings it up.
    async fn configure_ethwe(
        &self,
        object: &str,
        ethwe: &LinkSummary,
        cidrs: &[IpNetwork],
        mtu: u32,
    ) -> Result<(), NetError> {
        let present = self.addrs_of(object, ethwe.index).await?;
        for c in cidrs {
            if !present.contains(c) {
                self.add_addr(object, ethwe.index, *c).await?;
            }
        }
        if !ethwe.up || ethwe.mtu != mtu {
            let msg = LinkUnspec::new_with_index(ethwe.index)
                .mtu(mtu)
                .up()
                .build();
            self.set_link(object, &format!("set mtu {mtu} and up"), msg)
                .await?;
        }
        Ok(())
    }

    /// Creates the pair: host end in this netns (on the bridge, up), peer
    /// `ethwe` created directly in `ns` (down, no addresses yet).
    async fn create_veth(
        &self,
        host_veth: &str,
        br_index: u32,
        ns: &File,
        mtu: u32,
    ) -> Result<(), NetError> {
        let peer = LinkMessageBuilder::<LinkUnspec>::new()
            .name(CONTAINER_IFNAME)
            .mtu(mtu)
            .setns_by_fd(ns.as_raw_fd())
            .build();
        let msg = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
            .name(host_veth)
            .mtu(mtu)
            .controller(br_index)
            .up()
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
            .build();
        self.handle
            .link()
            .add(msg)
            .execute()
            .await
            .map_err(|e| nl_err(&format!("veth {host_veth}"), "create", e))
    }

    /// Waits (at most 2 s) until bridge port `name` is forwarding.
    async fn wait_forwarding(&self, name: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        loop {
            match self.get_link(name).await {
                Ok(Some(m)) => match bridge_port_state(&m) {
                    Some(BridgePortState::Forwarding) | None => return,
                    Some(_) => {}
                },
                _ => return,
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::debug!("{name}: bridge port not forwarding after 2s");
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Removes `cidrs` from `ethwe` in `target`. With an empty list, or
    /// when no address (IPv6 link-local excepted) remains, deletes the veth
    /// pair. Addresses not present are ignored. Returns the addresses that
    /// remain (empty: the veth is gone).
    pub async fn detach(
        &self,
        target: &NetnsTarget,
        cidrs: &[IpNetwork],
    ) -> Result<Vec<IpNetwork>, NetError> {
        let ns = target.open()?;
        let ctr_obj = format!("{CONTAINER_IFNAME} in {target}");
        let ctr = Netlink::connect_in(&ns)?;
        let Some(ethwe) = ctr.get_link(CONTAINER_IFNAME).await? else {
            return Err(NetError::NotAttached {
                target: target.to_string(),
            });
        };
        let index = ethwe.header.index;
        if cidrs.is_empty() {
            ctr.del_index(&ctr_obj, index).await?;
            return Ok(Vec::new());
        }
        let msgs = ctr.addr_msgs(&ctr_obj, index).await?;
        let before: Vec<IpNetwork> = msgs.iter().filter_map(addr_of).collect();
        ctr.del_addrs(&ctr_obj, msgs, cidrs).await?;
        // Without promote_secondaries, removing a primary IPv4 address
        // removes the secondaries of its subnet too: put back any that
        // were not meant to go.
        let mut remaining = ctr.addrs_of(&ctr_obj, index).await?;
        for n in before {
            if !is_link_local(&n) && !cidrs.contains(&n) && !remaining.contains(&n) {
                ctr.add_addr(&ctr_obj, index, n).await?;
                remaining.push(n);
            }
        }
        if remaining.is_empty() {
            ctr.del_index(&ctr_obj, index).await?;
        }
        Ok(remaining)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(
        family: AddressFamily,
        kind: RouteType,
        table: u8,
        prefix: u8,
        attrs: Vec<RouteAttribute>,
    ) -> RouteMessage {
        let mut m = RouteMessage::default();
        m.header.address_family = family;
        m.header.kind = kind;
        m.header.table = table;
        m.header.destination_prefix_length = prefix;
        m.attributes = attrs;
        m
    }

    fn name_of(i: u32) -> String {
        match i {
            2 => "eth0".into(),
            3 => "weave".into(),
            _ => format!("if{i}"),
        }
    }

    const MAIN: u8 = RouteHeader::RT_TABLE_MAIN;

    #[test]
    fn main_routes_are_described_as_ip_route_does() {
        let dst = |a: [u8; 4]| RouteAttribute::Destination(RouteAddress::Inet(a.into()));
        let r = route(
            AddressFamily::Inet,
            RouteType::Unicast,
            MAIN,
            16,
            vec![
                dst([10, 32, 0, 0]),
                RouteAttribute::Gateway(RouteAddress::Inet([192, 168, 1, 1].into())),
                RouteAttribute::Oif(2),
            ],
        );
        assert_eq!(
            main_route(&r, &[3], &name_of),
            Some((
                "10.32.0.0/16".parse().unwrap(),
                "route 10.32.0.0/16 via 192.168.1.1 dev eth0".into()
            ))
        );
        // The default route has no destination attribute: prefix 0.
        let d = route(
            AddressFamily::Inet,
            RouteType::Unicast,
            MAIN,
            0,
            vec![RouteAttribute::Oif(2)],
        );
        assert_eq!(
            main_route(&d, &[], &name_of).map(|(n, _)| n),
            Some("0.0.0.0/0".parse().unwrap())
        );
        let b = route(
            AddressFamily::Inet,
            RouteType::BlackHole,
            MAIN,
            8,
            vec![dst([10, 0, 0, 0])],
        );
        assert_eq!(
            main_route(&b, &[], &name_of).map(|(_, w)| w).as_deref(),
            Some("route blackhole 10.0.0.0/8")
        );
    }

    #[test]
    fn skipped_links_other_tables_and_link_local_are_left_out() {
        let dst = |a: [u8; 4]| RouteAttribute::Destination(RouteAddress::Inet(a.into()));
        let on_bridge = route(
            AddressFamily::Inet,
            RouteType::Unicast,
            MAIN,
            24,
            vec![dst([10, 32, 1, 0]), RouteAttribute::Oif(3)],
        );
        assert_eq!(main_route(&on_bridge, &[3], &name_of), None);
        let local = route(
            AddressFamily::Inet,
            RouteType::Local,
            255,
            32,
            vec![dst([10, 32, 1, 1]), RouteAttribute::Oif(2)],
        );
        assert_eq!(main_route(&local, &[], &name_of), None);
        let mut other_table = on_bridge.clone();
        other_table.attributes = vec![dst([10, 32, 1, 0]), RouteAttribute::Table(1000)];
        assert_eq!(main_route(&other_table, &[], &name_of), None);
        let ll = route(
            AddressFamily::Inet6,
            RouteType::Unicast,
            MAIN,
            64,
            vec![
                RouteAttribute::Destination(RouteAddress::Inet6("fe80::".parse().unwrap())),
                RouteAttribute::Oif(2),
            ],
        );
        assert_eq!(main_route(&ll, &[], &name_of), None);
        let ula = route(
            AddressFamily::Inet6,
            RouteType::Unicast,
            MAIN,
            64,
            vec![
                RouteAttribute::Destination(RouteAddress::Inet6("fd00:1::".parse().unwrap())),
                RouteAttribute::Oif(2),
            ],
        );
        assert_eq!(
            main_route(&ula, &[], &name_of).map(|(_, w)| w).as_deref(),
            Some("route fd00:1::/64 dev eth0")
        );
    }
}
