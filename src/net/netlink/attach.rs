//! Attaching a namespace: the veth pair, ethwe's addresses, and taking
//! them off again.

use std::net::IpAddr;
use std::time::Duration;

use ipnetwork::IpNetwork;
use rtnetlink::{LinkMessageBuilder, LinkUnspec, LinkVeth};

use super::*;

impl Netlink {
    /// Connects the container network namespace `target` to `bridge`:
    /// a veth pair whose host end `vethwr<8 hex>` is on the bridge and
    /// up, and whose other end is `ifname` (`ethwe`, or what a CNI runtime
    /// asks for) in `target` with MTU `mtu`,
    /// addresses `cidrs` (IPv6 without DAD) and up; the prefix route comes
    /// with each address. Then announces each address (gratuitous ARP,
    /// unsolicited NA) from inside `target`.
    ///
    /// Idempotent: if `ifname` already exists, only the missing addresses
    /// are added (and MTU, up and the host end's bridge are reasserted).
    pub async fn attach(
        &self,
        bridge: &str,
        target: &NetnsTarget,
        ifname: &str,
        cidrs: &[IpNetwork],
        mtu: u32,
    ) -> Result<Attached, NetError> {
        check_ifname(&format!("interface {ifname}"), ifname)?;
        let ns = target.open()?;
        if ns_inode(&ns)? == ns_inode(&self.ns)? {
            return Err(NetError::Netns {
                target: target.to_string(),
                source: std::io::Error::other("is the router's own network namespace"),
            });
        }
        let host_veth = host_veth_name(&ns, ifname)?;
        let host_obj = format!("veth {host_veth}");
        let ctr_obj = format!("{ifname} in {target}");
        check_unicast(&ctr_obj, cidrs)?;
        let br_index = self
            .require(&format!("bridge {bridge}"), bridge)
            .await?
            .header
            .index;
        let ctr = Netlink::connect_in(&ns)?;
        ctr.check_no_clash(&ctr_obj, ifname, cidrs).await?;

        let existing = ctr.get_link(ifname).await?;
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
                self.create_veth(&host_veth, br_index, (&ns, ifname), mtu)
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
                ctr.require(&ctr_obj, ifname).await?
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

        if cidrs.iter().any(IpNetwork::is_ipv6) {
            // Docker turns IPv6 off in containers of networks without it;
            // ethwe's own addresses need it on, on ethwe alone.
            let name = ifname.to_string();
            let enabled = run_in_netns_async(&ns, move || {
                std::fs::write(format!("/proc/sys/net/ipv6/conf/{name}/disable_ipv6"), "0").map_err(
                    |e| NetError::Netns {
                        target: name.clone(),
                        source: e,
                    },
                )
            })
            .await;
            match enabled {
                Ok(Ok(())) => {}
                Ok(Err(e)) | Err(e) => tracing::debug!("{target}: enabling IPv6 on {ifname}: {e}"),
            }
        }
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
        let name = ifname.to_string();
        let announced = run_in_netns_async(&ns, move || {
            // Removing a primary IPv4 address must not take the secondaries
            // in the same subnet with it (detach of one of several).
            let _ = std::fs::write(
                format!("/proc/sys/net/ipv4/conf/{name}/promote_secondaries"),
                "1",
            );
            garp::announce(&name, mac, &ips)
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
    async fn check_no_clash(
        &self,
        object: &str,
        ifname: &str,
        cidrs: &[IpNetwork],
    ) -> Result<(), NetError> {
        for link in self.all_links().await? {
            let s = summarize(&link);
            if s.name == ifname || s.name == "lo" {
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
    /// `ifname` created directly in `ns` (down, no addresses yet).
    async fn create_veth(
        &self,
        host_veth: &str,
        br_index: u32,
        (ns, ifname): (&File, &str),
        mtu: u32,
    ) -> Result<(), NetError> {
        let peer = LinkMessageBuilder::<LinkUnspec>::new()
            .name(ifname)
            .mtu(mtu)
            .setns_by_fd(ns.as_raw_fd())
            .build();
        self.add_veth(host_veth, br_index, mtu, peer)
            .await
            .map_err(|e| nl_err(&format!("veth {host_veth}"), "create", e))
    }

    /// A veth pair: `host` on the bridge `br_index` and up, its peer as
    /// `peer` describes it (name, namespace, MAC).
    pub(super) async fn add_veth(
        &self,
        host: &str,
        br_index: u32,
        mtu: u32,
        peer: netlink_packet_route::link::LinkMessage,
    ) -> Result<(), rtnetlink::Error> {
        let msg = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
            .name(host)
            .mtu(mtu)
            .controller(br_index)
            .up()
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
            .build();
        self.handle.link().add(msg).execute().await
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

    /// Removes `cidrs` from `ifname` in `target`. With an empty list, or
    /// when no address (IPv6 link-local excepted) remains, deletes the veth
    /// pair. Addresses not present are ignored. Returns the addresses that
    /// remain (empty: the veth is gone).
    pub async fn detach(
        &self,
        target: &NetnsTarget,
        ifname: &str,
        cidrs: &[IpNetwork],
    ) -> Result<Vec<IpNetwork>, NetError> {
        let ns = target.open()?;
        let ctr_obj = format!("{ifname} in {target}");
        let ctr = Netlink::connect_in(&ns)?;
        let Some(ethwe) = ctr.get_link(ifname).await? else {
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

/// The host end's name for `ifname` in `ns`: `vethwr` and 8 hex digits
/// of the namespace's inode (and of `ifname`, unless it is `ethwe`, so a
/// namespace can have several).
fn host_veth_name(ns: &File, ifname: &str) -> Result<String, NetError> {
    let id = if ifname == CONTAINER_IFNAME {
        ns_short_id(ns)?
    } else {
        crate::net::netns::ns_short_id_with(ns, ifname)?
    };
    Ok(format!("{HOST_VETH_PREFIX}{id}"))
}
