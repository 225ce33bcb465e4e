//! Automatic addresses (issue 11): hosts agree on the ring by consensus,
//! namespaces attached with no address get unique ones from the default
//! subnet, and they reach each other across hosts.

use std::collections::BTreeSet;
use std::net::IpAddr;

use ipnetwork::IpNetwork;
use netns_tests::*;

/// Launches `hosts` in a full mesh, each with `args` (and the addresses of
/// the hosts before it).
fn launch_all(hosts: &[Host], args: &[&str]) {
    for (i, h) in hosts.iter().enumerate() {
        let mut a: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        a.extend(hosts[..i].iter().map(|p| p.addr_for(h).to_string()));
        h.launch(&a);
    }
    wait_full_mesh(hosts, secs(30));
}

/// `attach TARGET` with no address: the address it printed.
#[track_caller]
fn attach_auto(h: &Host, c: &Container) -> IpNetwork {
    let out = h.weave_ok(&["attach", &c.path()]);
    out.trim()
        .parse()
        .unwrap_or_else(|e| panic!("attach printed {out:?}, not a CIDR: {e}"))
}

#[test]
fn sixty_namespaces_on_three_hosts_get_unique_addresses_that_ping() {
    let lab = Lab::new();
    let hosts = lab.switched_hosts(3);
    lab.step("launch three routers with consensus=3");
    launch_all(&hosts, &["--ipalloc-init", "consensus=3"]);

    lab.step("attach 20 namespaces per host with no address");
    let default: IpNetwork = "10.32.0.0/12".parse().unwrap();
    let mut all: Vec<(usize, Container, IpNetwork)> = Vec::new();
    for round in 0..20 {
        for (i, h) in hosts.iter().enumerate() {
            let c = Container::new(h);
            let addr = attach_auto(h, &c);
            assert_eq!(addr.prefix(), default.prefix(), "round {round}: {addr}");
            assert!(default.contains(addr.ip()), "{addr} outside {default}");
            all.push((i, c, addr));
        }
    }
    let unique: BTreeSet<IpAddr> = all.iter().map(|(_, _, a)| a.ip()).collect();
    assert_eq!(
        unique.len(),
        60,
        "duplicate addresses: {:?}",
        all.iter().map(|x| x.2).collect::<Vec<_>>()
    );

    // Every host's ps shows what it attached.
    for (i, h) in hosts.iter().enumerate() {
        let ps = h.weave_ok(&["ps"]);
        for (_, c, a) in all.iter().filter(|(j, _, _)| *j == i) {
            assert!(
                ps.contains(&a.to_string()) && ps.contains(&c.path()),
                "ps on h{}: {ps}",
                i + 1
            );
        }
    }

    lab.step("sampled pairs across hosts ping");
    for k in [0usize, 7, 13, 22, 38, 59] {
        let (i, from, _) = &all[k];
        let (j, _, to) = all
            .iter()
            .cycle()
            .skip(k + 1)
            .find(|(j, _, _)| j != i)
            .unwrap();
        assert_ne!(i, j);
        wait_ping(from, &to.ip().to_string(), secs(20));
    }

    lab.step("every host reports the same ring, split between the three");
    let rings: Vec<serde_json::Value> = hosts
        .iter()
        .map(|h| h.status_json().raw["ipam"].clone())
        .collect();
    for r in &rings {
        assert_eq!(r["ready"], true, "{r}");
        assert_eq!(r["cluster"], rings[0]["cluster"], "clusters differ");
        assert_eq!(r["owners"].as_array().map(Vec::len), Some(3), "{r}");
    }
}
