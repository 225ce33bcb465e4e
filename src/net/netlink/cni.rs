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
