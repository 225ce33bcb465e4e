//! The kernel fast path's plumbing (issue 15; nothing drives it yet): the
//! VXLAN device on the bridge and its forwarding entries.
//!
//! One device per host (`VxlanSpec`), `nolearning`: the router writes every
//! entry. An all-zeros entry per fast-path peer makes the flood list
//! (appended: NLM_F_APPEND, which rtnetlink's builder lacks); one entry per
//! MAC behind a peer says where unicast goes (replaced when it moves).
//! Every entry carries NTF_SELF: without it the kernel files it in the
//! bridge's own table and ignores the destination, and says nothing.
//! The device and the router's TAP are isolated bridge ports, so the
//! kernel never forwards between the two carriers.

use std::net::Ipv4Addr;

use futures::StreamExt;
use netlink_packet_core::{
    NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE, NLM_F_REPLACE,
    NLM_F_REQUEST,
};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::RouteType;
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::LinkVxlan;

use super::*;

/// The all-zeros MAC: a flood-list entry.
const FLOOD: [u8; 6] = [0; 6];

/// The fast path's device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanSpec {
    pub name: String,
    pub vni: u32,
    pub port: u16,
    /// Our underlay address (the kernel does not check it is ours); None:
    /// the route to each peer picks it.
    pub local: Option<Ipv4Addr>,
    /// The underlay interface: the device's MTU is then its MTU - 50.
    pub underlay: Option<u32>,
    pub mac: [u8; 6],
    pub mtu: Option<u32>,
    pub bridge: String,
}

impl Netlink {
    /// The device as `spec` says, on the bridge, up and isolated; made if
    /// missing (one of the same name but another kind is an error).
    /// Returns its index.
    pub async fn ensure_vxlan(&self, spec: &VxlanSpec) -> Result<u32, NetError> {
        let object = format!("vxlan {}", spec.name);
        check_ifname(&object, &spec.name)?;
        let br = self
            .require(&format!("bridge {}", spec.bridge), &spec.bridge)
            .await?
            .header
            .index;
        if self.get_link(&spec.name).await?.is_none() {
            let mut b = LinkVxlan::new(&spec.name, spec.vni)
                .port(spec.port)
                .learning(false);
            if let Some(local) = spec.local {
                b = b.local(local);
            }
            if let Some(dev) = spec.underlay {
                b = b.dev(dev);
            }
            let msg = b.address(spec.mac.to_vec()).build();
            self.handle
                .link()
                .add(msg)
                .execute()
                .await
                .map_err(|e| nl_err(&object, "create", e))?;
        }
        let link = self.require(&object, &spec.name).await?;
        let index = link.header.index;
        let mut up = LinkUnspec::new_with_index(index).controller(br).up();
        if let Some(m) = spec.mtu {
            up = up.mtu(m);
        }
        self.set_link(&object, "enslave and bring up", up.build())
            .await?;
        self.set_isolated(&spec.name, true).await?;
        // The bridge learns nothing from what arrives on the fast path: a
        // MAC it learned there would have no VXLAN entry to leave by.
        self.set_learning(&spec.name, false).await?;
        Ok(index)
    }

    /// Bridge port isolation on `port`: isolated ports never forward to
    /// each other.
    pub async fn set_isolated(&self, port: &str, on: bool) -> Result<(), NetError> {
        self.set_bridge_port(port, "set isolated", |p| p.isolated(on))
            .await
    }

    /// Adds `peer` to device `vx`'s flood list. Idempotent.
    pub async fn fdb_flood_add(&self, vx: u32, peer: Ipv4Addr) -> Result<(), NetError> {
        match self
            .fdb_request(vx, FLOOD, Some(peer), NLM_F_CREATE | NLM_F_APPEND, true)
            .await
        {
            Err(NetError::Netlink {
                errno: Some(libc::EEXIST),
                ..
            }) => Ok(()),
            r => r,
        }
    }

    /// Points `mac` at `peer` (moving it from another peer). Idempotent.
    pub async fn fdb_set(&self, vx: u32, mac: [u8; 6], peer: Ipv4Addr) -> Result<(), NetError> {
        self.fdb_request(vx, mac, Some(peer), NLM_F_CREATE | NLM_F_REPLACE, true)
            .await
    }

    /// Removes the entry (`mac`, `peer`); FLOOD's removes `peer` from the
    /// flood list. Absent already is fine.
    pub async fn fdb_del(&self, vx: u32, mac: [u8; 6], peer: Ipv4Addr) -> Result<(), NetError> {
        absent_is_fine(self.fdb_request(vx, mac, Some(peer), 0, false).await)
    }

    /// A static entry in the bridge's own table sending `mac` to bridge
    /// port `port` (moving it from another port). Idempotent.
    pub async fn bridge_fdb_set(&self, port: u32, mac: [u8; 6]) -> Result<(), NetError> {
        self.fdb_request(port, mac, None, NLM_F_CREATE | NLM_F_REPLACE, true)
            .await
    }

    /// Removes the bridge's entry for `mac` if it sends to `port` (one the
    /// bridge has since moved to another port stays). Absent is fine.
    pub async fn bridge_fdb_del(&self, port: u32, mac: [u8; 6]) -> Result<(), NetError> {
        absent_is_fine(self.fdb_request(port, mac, None, 0, false).await)
    }

    /// Whether the bridge learns source MACs on `port`.
    pub async fn set_learning(&self, port: &str, on: bool) -> Result<(), NetError> {
        self.set_bridge_port(port, "set learning", |p| p.learning(on))
            .await
    }

    /// Removes `peer` from the flood list.
    pub async fn fdb_flood_del(&self, vx: u32, peer: Ipv4Addr) -> Result<(), NetError> {
        self.fdb_del(vx, FLOOD, peer).await
    }

    /// An entry of the VXLAN device's table (`peer` given: NTF_SELF, the
    /// outer destination) or of the bridge's (NTF_MASTER, static) on port
    /// `ifindex`.
    async fn fdb_request(
        &self,
        ifindex: u32,
        mac: [u8; 6],
        peer: Option<Ipv4Addr>,
        flags: u16,
        add: bool,
    ) -> Result<(), NetError> {
        let mac_text = crate::core::PeerName(mac);
        let object = match peer {
            Some(peer) => format!("fdb {mac_text} dst {peer}"),
            None => format!("bridge fdb {mac_text} port {ifindex}"),
        };
        let mut m = NeighbourMessage::default();
        m.header.family = AddressFamily::Bridge;
        m.header.ifindex = ifindex;
        m.header.kind = RouteType::Unspec;
        m.attributes
            .push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
        if let Some(peer) = peer {
            m.header.state = NeighbourState::Permanent;
            m.header.flags = NeighbourFlags::Own;
            m.attributes
                .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(
                    peer,
                )));
        } else {
            // Static, not permanent: a permanent bridge entry is the
            // bridge's own address, delivered to the host. Sticky: the
            // bridge must not move it to another port when the MAC's
            // frames still come in there (the sleeve's, in flight).
            m.header.state = NeighbourState::Noarp;
            m.header.flags = NeighbourFlags::Controller | NeighbourFlags::Sticky;
        }
        let payload = if add {
            RouteNetlinkMessage::NewNeighbour(m)
        } else {
            RouteNetlinkMessage::DelNeighbour(m)
        };
        let mut req = NetlinkMessage::from(payload);
        req.header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        let op = if add { "add" } else { "delete" };
        let mut handle = self.handle.clone();
        let mut resp = handle.request(req).map_err(|e| nl_err(&object, op, e))?;
        while let Some(msg) = resp.next().await {
            if let NetlinkPayload::Error(e) = msg.payload {
                return Err(nl_err(&object, op, rtnetlink::Error::NetlinkError(e)));
            }
        }
        Ok(())
    }
}

fn absent_is_fine(r: Result<(), NetError>) -> Result<(), NetError> {
    match r {
        Err(NetError::Netlink {
            errno: Some(libc::ENOENT),
            ..
        }) => Ok(()),
        r => r,
    }
}

impl Netlink {
    /// The underlay's MTU: that of the IPv4 default route's interface, or,
    /// with no default route, the largest among the interfaces that are up,
    /// hold a global IPv4 address and are not bridge ports, bridges, TAPs,
    /// VXLAN devices or named in `ours`. None if there is no such interface.
    pub async fn underlay_mtu(&self, ours: &[&str]) -> Result<Option<u32>, NetError> {
        let links: Vec<LinkSummary> = self.all_links().await?.iter().map(summarize).collect();
        let routes: Vec<RouteMessage> = self
            .handle
            .route()
            .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
            .execute()
            .try_collect()
            .await
            .map_err(|e| nl_err("IPv4 routes", "list", e))?;
        let default_oif = routes.iter().find_map(|r| {
            let main = r.header.table == RouteHeader::RT_TABLE_MAIN;
            if !main || r.header.destination_prefix_length != 0 {
                return None;
            }
            r.attributes.iter().find_map(|a| match a {
                RouteAttribute::Oif(i) => Some(*i),
                _ => None,
            })
        });
        if let Some(l) = default_oif.and_then(|i| links.iter().find(|l| l.index == i)) {
            return Ok(Some(l.mtu));
        }
        let with_v4: Vec<u32> = self
            .all_addrs()
            .await?
            .iter()
            .filter(|m| {
                matches!(addr_of(m), Some(IpNetwork::V4(n)) if !n.ip().is_loopback() && !n.ip().is_link_local())
            })
            .map(|m| m.header.index)
            .collect();
        Ok(links
            .iter()
            .filter(|l| {
                l.up && l.master.is_none()
                    && with_v4.contains(&l.index)
                    && !ours.contains(&l.name.as_str())
                    && !matches!(l.kind.as_deref(), Some("bridge" | "tun" | "vxlan"))
            })
            .map(|l| l.mtu)
            .max())
    }

    /// Removes every entry of VXLAN device `vx` that sends to `peer` (the
    /// flood list's included), with the bridge's static entries on `vx`
    /// for the same MACs. Returns how many MACs went.
    pub async fn fdb_flush_peer(&self, vx: u32, peer: Ipv4Addr) -> Result<usize, NetError> {
        let mut q = NeighbourMessage::default();
        q.header.family = AddressFamily::Bridge;
        let mut req = NetlinkMessage::from(RouteNetlinkMessage::GetNeighbour(q));
        req.header.flags = NLM_F_REQUEST | netlink_packet_core::NLM_F_DUMP;
        let mut handle = self.handle.clone();
        let mut resp = handle.request(req).map_err(|e| nl_err("fdb", "list", e))?;
        let mut macs = Vec::new();
        while let Some(msg) = resp.next().await {
            let NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewNeighbour(m)) = msg.payload
            else {
                continue;
            };
            if m.header.ifindex != vx {
                continue;
            }
            let mut mac = None;
            let mut dst = None;
            for a in &m.attributes {
                match a {
                    NeighbourAttribute::LinkLayerAddress(b) => {
                        mac = <[u8; 6]>::try_from(b.as_slice()).ok();
                    }
                    // In a bridge-family message the parser cannot tell
                    // an IPv4 destination from other bytes.
                    NeighbourAttribute::Destination(NeighbourAddress::Inet(d)) => dst = Some(*d),
                    NeighbourAttribute::Destination(NeighbourAddress::Other(b)) => {
                        dst = <[u8; 4]>::try_from(b.as_slice()).ok().map(Ipv4Addr::from);
                    }
                    _ => {}
                }
            }
            if let (Some(mac), Some(d)) = (mac, dst) {
                if d == peer {
                    macs.push(mac);
                }
            }
        }
        for mac in &macs {
            // The bridge's entry first: it must never send to the device
            // a MAC the device has no destination for.
            if *mac != FLOOD {
                self.bridge_fdb_del(vx, *mac).await?;
            }
            self.fdb_del(vx, *mac, peer).await?;
        }
        Ok(macs.len())
    }
}
