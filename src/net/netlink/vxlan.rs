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
    /// Our underlay address (the kernel does not check it is ours).
    pub local: Ipv4Addr,
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
                .learning(false)
                .local(spec.local);
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
            .fdb_request(vx, FLOOD, peer, NLM_F_CREATE | NLM_F_APPEND, true)
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
        self.fdb_request(vx, mac, peer, NLM_F_CREATE | NLM_F_REPLACE, true)
            .await
    }

    /// Removes the entry (`mac`, `peer`); FLOOD's removes `peer` from the
    /// flood list. Absent already is fine.
    pub async fn fdb_del(&self, vx: u32, mac: [u8; 6], peer: Ipv4Addr) -> Result<(), NetError> {
        match self.fdb_request(vx, mac, peer, 0, false).await {
            Err(NetError::Netlink {
                errno: Some(libc::ENOENT),
                ..
            }) => Ok(()),
            r => r,
        }
    }

    /// Removes `peer` from the flood list.
    pub async fn fdb_flood_del(&self, vx: u32, peer: Ipv4Addr) -> Result<(), NetError> {
        self.fdb_del(vx, FLOOD, peer).await
    }

    async fn fdb_request(
        &self,
        vx: u32,
        mac: [u8; 6],
        peer: Ipv4Addr,
        flags: u16,
        add: bool,
    ) -> Result<(), NetError> {
        let object = format!("fdb {} dst {peer}", crate::core::PeerName(mac));
        let mut m = NeighbourMessage::default();
        m.header.family = AddressFamily::Bridge;
        m.header.ifindex = vx;
        m.header.state = NeighbourState::Permanent;
        m.header.kind = RouteType::Unspec;
        m.header.flags = NeighbourFlags::Own;
        m.attributes
            .push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
        m.attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(
                peer,
            )));
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
