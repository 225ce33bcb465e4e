//! The DNS server's address (`core::dns::DEFAULT_ADDRESS`): on the bridge,
//! so the host answers it, and routed over `ethwe` in each attached
//! namespace, so a container that has no other way out reaches it too.

use std::net::{IpAddr, Ipv4Addr};

use ipnetwork::IpNetwork;
use netlink_packet_route::route::RouteScope;
use rtnetlink::RouteMessageBuilder;

use super::{errno_of, nl_err, Netlink};
use crate::net::{NetError, NetnsTarget, CONTAINER_IFNAME};

impl Netlink {
    /// Puts `addr` (a host address: /32) on `bridge` if it is missing. No
    /// gratuitous ARP: every host has the same address, and none of them
    /// may claim it for the others.
    pub async fn ensure_dns_address(&self, bridge: &str, addr: Ipv4Addr) -> Result<(), NetError> {
        let object = format!("bridge {bridge}");
        let index = self.require(&object, bridge).await?.header.index;
        let cidr = IpNetwork::new(IpAddr::V4(addr), 32).map_err(|e| NetError::Netlink {
            object: object.clone(),
            op: "add DNS address".into(),
            cause: e.to_string(),
            errno: None,
        })?;
        if self.addrs_of(&object, index).await?.contains(&cidr) {
            return Ok(());
        }
        self.add_addr(&object, index, cidr).await
    }

    /// In `target`: a route to `addr` over `ethwe` (which must exist).
    pub async fn route_dns_over_ethwe(
        &self,
        target: &NetnsTarget,
        addr: Ipv4Addr,
    ) -> Result<(), NetError> {
        let ns = target.open()?;
        let ctr = Netlink::connect_in(&ns)?;
        let object = format!("{CONTAINER_IFNAME} in {target}");
        let index = ctr.require(&object, CONTAINER_IFNAME).await?.header.index;
        let route = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(addr, 32)
            .output_interface(index)
            .scope(RouteScope::Link)
            .build();
        match ctr.handle.route().add(route).execute().await {
            Ok(()) => Ok(()),
            Err(e) if errno_of(&e) == Some(libc::EEXIST) => Ok(()),
            Err(e) => Err(nl_err(&object, &format!("add route {addr}"), e)),
        }
    }
}
