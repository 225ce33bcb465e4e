//! What the CNI front door needs beyond `attach`: hairpin mode on a host
//! end, and reading an interface back for CHECK.

use rtnetlink::{LinkBridgePort, LinkMessageBuilder};

use super::*;

impl Netlink {
    /// Hairpin mode on bridge port `host_veth`: frames may go back out of
    /// the port they came in by (a pod reaching itself through a service).
    pub async fn set_hairpin(&self, host_veth: &str, on: bool) -> Result<(), NetError> {
        self.set_bridge_port(host_veth, "set hairpin mode", |p| p.hairpin(on))
            .await
    }

    /// Applies `set` to bridge port `port`'s settings.
    pub(super) async fn set_bridge_port(
        &self,
        port: &str,
        op: &str,
        set: impl FnOnce(LinkMessageBuilder<LinkBridgePort>) -> LinkMessageBuilder<LinkBridgePort>,
    ) -> Result<(), NetError> {
        let object = format!("bridge port {port}");
        let index = self.require(&object, port).await?.header.index;
        let msg = set(LinkBridgePort::new(index)).build();
        // Port settings go with RTM_NEWLINK (RTM_SETLINK ignores them).
        self.handle
            .link()
            .set_port(msg)
            .execute()
            .await
            .map_err(|e| nl_err(&object, op, e))
    }

    /// In `target`: a route to `dst` over `ifname`, via `gateway` if
    /// given. One already there (another network's default route, say) is
    /// left alone: Ok(false).
    pub async fn route_in(
        &self,
        target: &NetnsTarget,
        ifname: &str,
        dst: IpNetwork,
        gateway: Option<std::net::IpAddr>,
    ) -> Result<bool, NetError> {
        let ns = target.open()?;
        let ctr = Netlink::connect_in(&ns)?;
        let object = format!("{ifname} in {target}");
        let index = ctr.require(&object, ifname).await?.header.index;
        let op = match gateway {
            Some(g) => format!("add route {dst} via {g}"),
            None => format!("add route {dst}"),
        };
        let bad = |cause: String| NetError::Netlink {
            object: object.clone(),
            op: op.clone(),
            cause,
            errno: None,
        };
        let mut route = rtnetlink::RouteMessageBuilder::<std::net::IpAddr>::new()
            .destination_prefix(dst.network(), dst.prefix())
            .map_err(|e| bad(e.to_string()))?
            .output_interface(index);
        if let Some(g) = gateway {
            route = route.gateway(g).map_err(|e| bad(e.to_string()))?;
        }
        match ctr.handle.route().add(route.build()).execute().await {
            Ok(()) => Ok(true),
            Err(e) if errno_of(&e) == Some(libc::EEXIST) => Ok(false),
            Err(e) => Err(nl_err(&object, &op, e)),
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
