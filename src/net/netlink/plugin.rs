//! The veth pair of a Docker endpoint (the Docker plugin's Join): one end
//! on the bridge, the other left in this namespace for the engine to move
//! into the container and rename.

use rtnetlink::{LinkMessageBuilder, LinkUnspec};

use super::*;

impl Netlink {
    /// Makes `host` (on `bridge`, up) and `peer` (MAC `mac`, down), both
    /// with MTU `mtu`. A pair left by an earlier try is replaced.
    pub async fn endpoint_veth(
        &self,
        bridge: &str,
        (host, peer): (&str, &str),
        mac: [u8; 6],
        mtu: u32,
    ) -> Result<(), NetError> {
        check_ifname(&format!("veth {host}"), host)?;
        check_ifname(&format!("veth {peer}"), peer)?;
        let br = self
            .require(&format!("bridge {bridge}"), bridge)
            .await?
            .header
            .index;
        for name in [host, peer] {
            if let Some(stale) = self.get_link(name).await? {
                self.del_index(&format!("veth {name}"), stale.header.index)
                    .await?;
            }
        }
        let peer_msg = LinkMessageBuilder::<LinkUnspec>::new()
            .name(peer)
            .mtu(mtu)
            .address(mac.to_vec())
            .build();
        self.add_veth(host, br, mtu, peer_msg)
            .await
            .map_err(|e| nl_err(&format!("veth {host} / {peer}"), "create", e))
    }
}
