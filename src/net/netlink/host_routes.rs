//! What the host's namespace already uses (routes and addresses), for the
//! check that the IPAM range clashes with nothing.

use super::*;

/// The destination of a route of the main table and its description as
/// `ip route` would print it, unless it goes out of a link in `skipped`
/// (every next hop of a multipath route, for those), or is IPv6
/// link-local or multicast.
fn main_route(
    m: &RouteMessage,
    skipped: &[u32],
    name_of: &dyn Fn(u32) -> String,
) -> Option<(IpNetwork, String)> {
    let table = m
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(m.header.table));
    if table != u32::from(RouteHeader::RT_TABLE_MAIN) {
        return None;
    }
    if matches!(
        m.header.kind,
        RouteType::Multicast | RouteType::Local | RouteType::Broadcast | RouteType::Anycast
    ) {
        return None;
    }
    let ip = |a: &RouteAddress| match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    };
    let zero = match m.header.address_family {
        AddressFamily::Inet => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        AddressFamily::Inet6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        _ => return None,
    };
    let mut dst = zero;
    let mut gateway = None;
    let mut oifs = Vec::new();
    for a in &m.attributes {
        match a {
            RouteAttribute::Destination(d) => dst = ip(d)?,
            RouteAttribute::Gateway(g) => gateway = ip(g),
            RouteAttribute::Oif(i) => oifs.push(*i),
            RouteAttribute::MultiPath(hops) => {
                oifs.extend(hops.iter().map(|h| h.interface_index));
            }
            _ => {}
        }
    }
    if !oifs.is_empty() && oifs.iter().all(|i| skipped.contains(i)) {
        return None;
    }
    let net = IpNetwork::new(dst, m.header.destination_prefix_length).ok()?;
    if is_link_local(&net) || is_multicast(&net) {
        return None;
    }
    let mut what = String::from("route ");
    if m.header.kind != RouteType::Unicast {
        what.push_str(&format!(
            "{} ",
            format!("{:?}", m.header.kind).to_lowercase()
        ));
    }
    what.push_str(&net.to_string());
    if let Some(g) = gateway {
        what.push_str(&format!(" via {g}"));
    }
    if let Some(dev) = oifs.first() {
        what.push_str(&format!(" dev {}", name_of(*dev)));
    }
    Some((net, what))
}

impl Netlink {
    /// Every address of every interface in this namespace.
    pub(super) async fn all_addrs(&self) -> Result<Vec<AddressMessage>, NetError> {
        self.handle
            .address()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(|e| nl_err("addresses", "list", e))
    }

    /// The networks this namespace already uses, each with how to name it
    /// in an error: the destinations of the main table's IPv4 and IPv6
    /// routes ("route 10.32.0.0/16 via 192.168.1.1 dev eth0") and every
    /// interface address ("address 10.33.1.1/24 on eth1"), addresses
    /// first. Left out: whatever is on `skip_dev` (our bridge, which holds
    /// overlay addresses after `expose`) or `lo`, IPv6 link-local and
    /// multicast. For the check that the IPAM range clashes with nothing
    /// (`crate::core::ipam::config::overlap`).
    pub async fn host_networks(
        &self,
        skip_dev: &str,
    ) -> Result<Vec<(IpNetwork, String)>, NetError> {
        let names: HashMap<u32, String> = self
            .all_links()
            .await?
            .iter()
            .map(|l| {
                let s = summarize(l);
                (s.index, s.name)
            })
            .collect();
        let skipped: Vec<u32> = names
            .iter()
            .filter(|(_, n)| n.as_str() == skip_dev || n.as_str() == "lo")
            .map(|(i, _)| *i)
            .collect();
        let name_of = |i: u32| names.get(&i).cloned().unwrap_or_else(|| format!("if{i}"));
        let mut out = Vec::new();
        for m in &self.all_addrs().await? {
            if skipped.contains(&m.header.index) {
                continue;
            }
            if let Some(n) = addr_of(m).filter(|n| !is_link_local(n) && !is_multicast(n)) {
                out.push((n, format!("address {n} on {}", name_of(m.header.index))));
            }
        }
        let v4 = RouteMessageBuilder::<Ipv4Addr>::new().build();
        let v6 = RouteMessageBuilder::<Ipv6Addr>::new().build();
        for (family, query) in [("IPv4", v4), ("IPv6", v6)] {
            let routes: Vec<RouteMessage> =
                match self.handle.route().get(query).execute().try_collect().await {
                    Ok(r) => r,
                    // A kernel without IPv6 has no IPv6 routes to clash with.
                    Err(e) if errno_of(&e) == Some(libc::EAFNOSUPPORT) => Vec::new(),
                    Err(e) => return Err(nl_err(&format!("{family} routes"), "list", e)),
                };
            out.extend(
                routes
                    .iter()
                    .filter_map(|r| main_route(r, &skipped, &name_of)),
            );
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(
        family: AddressFamily,
        kind: RouteType,
        table: u8,
        prefix: u8,
        attrs: Vec<RouteAttribute>,
    ) -> RouteMessage {
        let mut m = RouteMessage::default();
        m.header.address_family = family;
        m.header.kind = kind;
        m.header.table = table;
        m.header.destination_prefix_length = prefix;
        m.attributes = attrs;
        m
    }

    fn name_of(i: u32) -> String {
        match i {
            2 => "eth0".into(),
            3 => "weave".into(),
            _ => format!("if{i}"),
        }
    }

    const MAIN: u8 = RouteHeader::RT_TABLE_MAIN;

    #[test]
    fn main_routes_are_described_as_ip_route_does() {
        let dst = |a: [u8; 4]| RouteAttribute::Destination(RouteAddress::Inet(a.into()));
        let r = route(
            AddressFamily::Inet,
            RouteType::Unicast,
            MAIN,
            16,
            vec![
                dst([10, 32, 0, 0]),
                RouteAttribute::Gateway(RouteAddress::Inet([192, 168, 1, 1].into())),
                RouteAttribute::Oif(2),
            ],
        );
        assert_eq!(
            main_route(&r, &[3], &name_of),
            Some((
                "10.32.0.0/16".parse().unwrap(),
                "route 10.32.0.0/16 via 192.168.1.1 dev eth0".into()
            ))
        );
        // The default route has no destination attribute: prefix 0.
        let d = route(
            AddressFamily::Inet,
            RouteType::Unicast,
            MAIN,
            0,
            vec![RouteAttribute::Oif(2)],
        );
        assert_eq!(
            main_route(&d, &[], &name_of).map(|(n, _)| n),
            Some("0.0.0.0/0".parse().unwrap())
        );
        let b = route(
            AddressFamily::Inet,
            RouteType::BlackHole,
            MAIN,
            8,
            vec![dst([10, 0, 0, 0])],
        );
        assert_eq!(
            main_route(&b, &[], &name_of).map(|(_, w)| w).as_deref(),
            Some("route blackhole 10.0.0.0/8")
        );
    }

    #[test]
    fn skipped_links_other_tables_and_link_local_are_left_out() {
        let dst = |a: [u8; 4]| RouteAttribute::Destination(RouteAddress::Inet(a.into()));
        let on_bridge = route(
            AddressFamily::Inet,
            RouteType::Unicast,
            MAIN,
            24,
            vec![dst([10, 32, 1, 0]), RouteAttribute::Oif(3)],
        );
        assert_eq!(main_route(&on_bridge, &[3], &name_of), None);
        let local = route(
            AddressFamily::Inet,
            RouteType::Local,
            255,
            32,
            vec![dst([10, 32, 1, 1]), RouteAttribute::Oif(2)],
        );
        assert_eq!(main_route(&local, &[], &name_of), None);
        let mut other_table = on_bridge.clone();
        other_table.attributes = vec![dst([10, 32, 1, 0]), RouteAttribute::Table(1000)];
        assert_eq!(main_route(&other_table, &[], &name_of), None);
        let ll = route(
            AddressFamily::Inet6,
            RouteType::Unicast,
            MAIN,
            64,
            vec![
                RouteAttribute::Destination(RouteAddress::Inet6("fe80::".parse().unwrap())),
                RouteAttribute::Oif(2),
            ],
        );
        assert_eq!(main_route(&ll, &[], &name_of), None);
        let ula = route(
            AddressFamily::Inet6,
            RouteType::Unicast,
            MAIN,
            64,
            vec![
                RouteAttribute::Destination(RouteAddress::Inet6("fd00:1::".parse().unwrap())),
                RouteAttribute::Oif(2),
            ],
        );
        assert_eq!(
            main_route(&ula, &[], &name_of).map(|(_, w)| w).as_deref(),
            Some("route fd00:1::/64 dev eth0")
        );
    }
}
