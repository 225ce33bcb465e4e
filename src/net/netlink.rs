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

mod attach;
mod cni;
mod vxlan;
pub use vxlan::VxlanSpec;
mod dns;
mod host_routes;
mod plugin;

use std::collections::HashMap;
use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::sync::Arc;

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
use rtnetlink::{Handle, LinkMessageBuilder, LinkUnspec, RouteMessageBuilder};

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
    /// Frames the kernel dropped on their way out of this interface (for a
    /// TAP: towards its reader, whose queue was full).
    pub tx_dropped: u64,
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
        tx_dropped: 0,
        mac: None,
        kind: None,
    };
    for a in &m.attributes {
        match a {
            LinkAttribute::IfName(n) => s.name = n.clone(),
            LinkAttribute::Mtu(v) => s.mtu = *v,
            LinkAttribute::Stats64(st) => s.tx_dropped = st.tx_dropped,
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
}
