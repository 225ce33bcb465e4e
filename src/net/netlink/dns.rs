//! The DNS server's address (`core::dns::DEFAULT_ADDRESS`): on the bridge,
//! so the host answers it, and routed over `ethwe` in each attached
//! namespace, so a container that has no other way out reaches it too.
//!
//! Replies need a way back to containers whose subnets the host has no
//! route for (only `expose` gives it one): the server sends them out of
//! the bridge (`daemon::dns::server`). Routers before 2026-12 used policy
//! routing instead; `remove_dns_rules` clears what they left, since any
//! rule of its own makes the kernel walk the rule list on every route
//! lookup, the fast path's included.

use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use ipnetwork::IpNetwork;
use netlink_packet_route::route::RouteScope;
use rtnetlink::packet_route::rule::{RuleAttribute, RuleMessage};
use rtnetlink::RouteMessageBuilder;

use super::{errno_of, nl_err, Netlink};

/// The routing table and rule priority older routers used for replies.
const DNS_TABLE: u32 = 0x7765;
const RULE_PRIORITY: u32 = 1053;
use crate::net::{NetError, NetnsTarget};

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

    /// In `target`: a route to `addr` over `ifname` (which must exist).
    pub async fn route_dns_over(
        &self,
        target: &NetnsTarget,
        ifname: &str,
        addr: Ipv4Addr,
    ) -> Result<(), NetError> {
        let ns = target.open()?;
        let ctr = Netlink::connect_in(&ns)?;
        let object = format!("{ifname} in {target}");
        let index = ctr.require(&object, ifname).await?.header.index;
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

    /// Removes the policy-routing rules older routers made for DNS
    /// replies (at start and reset; their table's route goes with the
    /// bridge).
    pub async fn remove_dns_rules(&self) -> Result<(), NetError> {
        let rules: Vec<RuleMessage> = self
            .handle
            .rule()
            .get(rtnetlink::IpVersion::V4)
            .execute()
            .try_collect()
            .await
            .map_err(|e| nl_err("rules", "list", e))?;
        for r in rules {
            let at = |a: &RuleAttribute| matches!(a, RuleAttribute::Priority(p) if *p == RULE_PRIORITY || *p == RULE_PRIORITY + 1);
            let made = |a: &RuleAttribute| {
                matches!(
                    a,
                    RuleAttribute::Table(DNS_TABLE) | RuleAttribute::SuppressPrefixLen(0)
                )
            };
            let ours = r.attributes.iter().any(at) && r.attributes.iter().any(made);
            if ours {
                match self.handle.rule().del(r).execute().await {
                    Ok(()) => {}
                    Err(e) if errno_of(&e) == Some(libc::ENOENT) => {}
                    Err(e) => return Err(nl_err("rule", "delete", e)),
                }
            }
        }
        Ok(())
    }
}
