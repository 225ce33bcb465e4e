//! The DNS server's address (`core::dns::DEFAULT_ADDRESS`): on the bridge,
//! so the host answers it, and routed over `ethwe` in each attached
//! namespace, so a container that has no other way out reaches it too.
//!
//! Replies need a way back to containers whose subnets the host has no
//! route for (only `expose` gives it one). Policy routing, as wg-quick
//! does it: packets from the DNS address use the main table except its
//! default route (so containers on docker0, and the host itself, are
//! answered as usual), and otherwise leave by the bridge, on link.

use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use ipnetwork::IpNetwork;
use netlink_packet_route::route::RouteScope;
use rtnetlink::packet_route::rule::{RuleAction, RuleAttribute, RuleMessage};
use rtnetlink::RouteMessageBuilder;

use super::{errno_of, nl_err, Netlink};

/// The routing table of replies from the DNS address ("we").
pub const DNS_TABLE: u32 = 0x7765;
/// The rule that consults the main table (default route suppressed); the
/// rule for `DNS_TABLE` comes next.
const RULE_PRIORITY: u32 = 1053;
const MAIN_TABLE: u32 = 254;
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

    /// Replies from `addr` reach containers on `bridge` (see the module
    /// doc). Idempotent.
    pub async fn route_dns_replies(&self, bridge: &str, addr: Ipv4Addr) -> Result<(), NetError> {
        let object = format!("bridge {bridge}");
        let index = self.require(&object, bridge).await?.header.index;
        let route = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(Ipv4Addr::UNSPECIFIED, 0)
            .output_interface(index)
            .scope(RouteScope::Link)
            .table_id(DNS_TABLE)
            .build();
        match self.handle.route().add(route).execute().await {
            Ok(()) => {}
            Err(e) if errno_of(&e) == Some(libc::EEXIST) => {}
            Err(e) => return Err(nl_err(&object, "add the DNS reply route", e)),
        }
        for (priority, table) in [(RULE_PRIORITY, MAIN_TABLE), (RULE_PRIORITY + 1, DNS_TABLE)] {
            let mut req = self
                .handle
                .rule()
                .add()
                .v4()
                .source_prefix(addr, 32)
                .priority(priority)
                .table_id(table)
                .action(RuleAction::ToTable);
            if table == MAIN_TABLE {
                req.message_mut()
                    .attributes
                    .push(RuleAttribute::SuppressPrefixLen(0));
            }
            match req.execute().await {
                Ok(()) => {}
                Err(e) if errno_of(&e) == Some(libc::EEXIST) => {}
                Err(e) => {
                    return Err(nl_err(
                        &format!("rule from {addr}"),
                        "add the DNS reply rule",
                        e,
                    ))
                }
            }
        }
        Ok(())
    }

    /// Removes the rules of `route_dns_replies` (reset; the table's route
    /// goes with the bridge).
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
