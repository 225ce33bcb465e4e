//! What the CNI front door needs beyond `attach`: hairpin mode on a host
//! end, and reading an interface back for CHECK.

use rtnetlink::LinkBridgePort;

use super::*;

impl Netlink {
    /// Hairpin mode on bridge port `host_veth`: frames may go back out of
    /// the port they came in by (a pod reaching itself through a service).
    pub async fn set_hairpin(&self, host_veth: &str, on: bool) -> Result<(), NetError> {
        let object = format!("veth {host_veth}");
        let index = self.require(&object, host_veth).await?.header.index;
        let msg = LinkBridgePort::new(index).hairpin(on).build();
        self.set_link(&object, "set hairpin mode", msg).await
    }

    /// In `target`: the default route via `gateway` over `ifname`. One
    /// already there (another network's) is left alone: Ok(false).
    pub async fn default_route_in(
        &self,
        target: &NetnsTarget,
        ifname: &str,
        gateway: std::net::Ipv4Addr,
    ) -> Result<bool, NetError> {
        let ns = target.open()?;
        let ctr = Netlink::connect_in(&ns)?;
        let object = format!("{ifname} in {target}");
        let index = ctr.require(&object, ifname).await?.header.index;
        let route = rtnetlink::RouteMessageBuilder::<std::net::Ipv4Addr>::new()
            .destination_prefix(std::net::Ipv4Addr::UNSPECIFIED, 0)
            .gateway(gateway)
            .output_interface(index)
            .build();
        match ctr.handle.route().add(route).execute().await {
            Ok(()) => Ok(true),
            Err(e) if errno_of(&e) == Some(libc::EEXIST) => Ok(false),
            Err(e) => Err(nl_err(
                &object,
                &format!("add default route via {gateway}"),
                e,
            )),
        }
    }

    /// The addresses of `ifname` in `target`; None when it has no such
    /// interface.
    pub async fn addrs_in(
        &self,
        target: &NetnsTarget,
        ifname: &str,
    ) -> Result<Option<Vec<IpNetwork>>, NetError> {
        let ns = target.open()?;
        let ctr = Netlink::connect_in(&ns)?;
        let Some(link) = ctr.get_link(ifname).await? else {
            return Ok(None);
        };
        let object = format!("{ifname} in {target}");
        ctr.addrs_of(&object, link.header.index).await.map(Some)
    }
}
