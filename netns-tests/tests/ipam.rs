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

/// The `ipam` section of `report` on `h`.
fn ipam(h: &Host) -> serde_json::Value {
    h.status_json().raw["ipam"].clone()
}

/// (peer, addresses) per owner, as `h` sees the ring.
fn owners(h: &Host) -> Vec<(String, u64)> {
    ipam(h)["owners"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|o| {
                    (
                        o["peer"].as_str().unwrap_or_default().to_string(),
                        o["addresses"].as_u64().unwrap_or(0),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Every address `h`'s ps lists for attached namespaces.
fn ps_addrs(h: &Host) -> Vec<IpAddr> {
    h.weave_ok(&["ps"])
        .lines()
        .filter(|l| !l.starts_with("weave:expose"))
        .flat_map(|l| {
            l.split_whitespace()
                .skip(2)
                .filter_map(|a| a.parse::<IpNetwork>().ok())
                .map(|n| n.ip())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Waits until every host reports the same owners, with the same shares.
#[track_caller]
fn wait_rings_agree(hosts: &[Host]) {
    wait_until(secs(20), "every host's ring agrees", || {
        let o = owners(&hosts[0]);
        hosts.iter().all(|h| owners(h) == o)
    });
}

#[track_caller]
fn assert_unique(hosts: &[&Host]) -> usize {
    let all: Vec<IpAddr> = hosts.iter().flat_map(|h| ps_addrs(h)).collect();
    let unique: BTreeSet<IpAddr> = all.iter().copied().collect();
    assert_eq!(unique.len(), all.len(), "an address is held twice: {all:?}");
    all.len()
}

#[test]
fn rmpeer_on_two_hosts_at_once_and_the_removed_peer_rejoins_without_duplicates() {
    let lab = Lab::new();
    let hosts = lab.switched_hosts(3);
    let (h1, h2, h3) = (&hosts[0], &hosts[1], &hosts[2]);
    // 30 usable addresses, about ten per host: small enough to fill.
    launch_all(
        &hosts,
        &[
            "--ipalloc-init",
            "consensus=3",
            "--ipalloc-range",
            "10.40.0.0/27",
        ],
    );
    let mut cs: Vec<(usize, Container)> = Vec::new();
    for _ in 0..2 {
        for (i, h) in hosts.iter().enumerate() {
            let c = Container::new(h);
            attach_auto(h, &c);
            cs.push((i, c));
        }
    }
    let h3_name = h3.peer_name().unwrap();
    let h3_addrs = ps_addrs(h3);

    lab.step("kill -9 h3; rmpeer h3 on h1 and h2 at the same moment");
    h3.kill_router();
    for h in [h1, h2] {
        wait_until(secs(20), "h3 shows as unreachable", || {
            ipam(h)["owners"].as_array().is_some_and(|o| {
                o.iter()
                    .any(|o| o["peer"] == h3_name.as_str() && o["reachable"] == false)
            })
        });
    }
    let outs: Vec<String> = std::thread::scope(|s| {
        let t: Vec<_> = [h1, h2]
            .iter()
            .map(|h| s.spawn(|| h.weave_ok(&["rmpeer", &h3_name])))
            .collect();
        t.into_iter().map(|t| t.join().unwrap()).collect()
    });
    eprintln!("rmpeer said: {outs:?}");
    wait_until(
        secs(20),
        "h1 and h2 hold identical rings without h3",
        || {
            let (a, b) = (owners(h1), owners(h2));
            a == b
                && !a.iter().any(|(p, _)| *p == h3_name)
                && ipam(h1)["quarantined"] == 0
                && ipam(h2)["quarantined"] == 0
        },
    );

    lab.step("h3's space is reused by new allocations");
    let mut reused = false;
    for k in 0..20 {
        let h = [h1, h2][k % 2];
        let c = Container::new(h);
        let a = attach_auto(h, &c);
        reused |= h3_addrs.contains(&a.ip());
        cs.push((k % 2, c));
    }
    assert!(
        reused,
        "none of h3's old addresses {h3_addrs:?} was given out again"
    );
    assert_unique(&[h1, h2]);

    lab.step("h3 comes back with its old state");
    h3.relaunch();
    wait_full_mesh(&hosts, secs(30));
    wait_until(
        secs(30),
        "every address is held once across the three hosts",
        || {
            let all: Vec<IpAddr> = hosts.iter().flat_map(ps_addrs).collect();
            let unique: BTreeSet<IpAddr> = all.iter().copied().collect();
            unique.len() == all.len()
        },
    );
    wait_rings_agree(&hosts);
    assert_unique(&[h1, h2, h3]);
    // h3's namespaces whose addresses went to others got new ones.
    wait_until(secs(20), "h3's two namespaces hold an address each", || {
        ps_addrs(h3).len() == 2
    });
    assert!(
        h3.log_tail(200).contains("now belongs to another peer"),
        "h3 never noticed a lost address:\n{}",
        h3.log_tail(40)
    );
}

#[test]
fn allocations_on_both_sides_of_a_partition_never_clash() {
    let lab = Lab::new();
    let hosts = lab.switched_hosts(3);
    let (h1, h2, h3) = (&hosts[0], &hosts[1], &hosts[2]);
    launch_all(
        &hosts,
        &[
            "--ipalloc-init",
            "consensus=3",
            "--ipalloc-range",
            "10.40.0.0/26",
        ],
    );
    // The ring is made while all three are together.
    let mut cs = Vec::new();
    for h in &hosts {
        let c = Container::new(h);
        attach_auto(h, &c);
        cs.push(c);
    }

    lab.step("cut h3 off from h1 and h2; allocate on both sides");
    let ips: Vec<String> = [h1, h2]
        .iter()
        .map(|h| h.addr_for(h3).to_string())
        .collect();
    let cuts: Vec<[IptablesRule; 2]> = ips.iter().map(|ip| IptablesRule::cut_off(h3, ip)).collect();
    wait_until(secs(20), "h3 sees h1 and h2 unreachable", || {
        ipam(h3)["owners"]
            .as_array()
            .is_some_and(|o| o.iter().filter(|o| o["reachable"] == false).count() == 2)
    });
    for k in 0..12 {
        let h = [h1, h2, h3][k % 3];
        let c = Container::new(h);
        attach_auto(h, &c);
        cs.push(c);
    }
    assert_unique(&[h1, h2, h3]);

    lab.step("heal");
    drop(cuts);
    wait_full_mesh(&hosts, secs(40));
    wait_rings_agree(&hosts);
    assert_eq!(assert_unique(&[h1, h2, h3]), 15);
}

#[test]
fn addresses_survive_a_restart_and_a_namespace_gone_meanwhile_is_freed() {
    let lab = Lab::new();
    let h1 = lab.switched_host("h1");
    h1.launch(&[
        "--ipalloc-init",
        "consensus=1",
        "--ipalloc-range",
        "10.40.0.0/28",
    ]);
    let cs: Vec<Container> = (0..3).map(|_| Container::new(&h1)).collect();
    let addrs: Vec<IpNetwork> = cs.iter().map(|c| attach_auto(&h1, c)).collect();
    let exposed = h1.weave_ok(&["expose"]);

    lab.step("stop the router; one namespace goes while it is down");
    h1.weave_ok(&["stop"]);
    let mut cs = cs;
    let gone = cs.pop().unwrap();
    let gone_path = gone.path();
    drop(gone);
    h1.relaunch();

    wait_until(
        secs(20),
        "the vanished namespace's address is free again",
        || {
            let a = ipam(&h1)["allocations"].clone();
            let list = a.as_array().cloned().unwrap_or_default();
            !list.iter().any(|x| x["id"] == gone_path.as_str()) && list.len() == 3
        },
    );
    let r = ipam(&h1);
    let held: BTreeSet<String> = r["allocations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            format!(
                "{}={}",
                x["id"].as_str().unwrap(),
                x["cidr"].as_str().unwrap()
            )
        })
        .collect();
    for (c, a) in cs.iter().zip(&addrs) {
        assert!(
            held.contains(&format!("{}={a}", c.path())),
            "{} lost {a}: {held:?}",
            c.path()
        );
    }
    assert!(
        held.contains(&format!("weave:expose={}", exposed.trim())),
        "{held:?}"
    );
    // The freed address is the next one given out.
    let again = attach_auto(&h1, &Container::new(&h1));
    assert_eq!(again, addrs[2], "the freed address was not reused");
}

#[test]
fn errors_say_what_is_wrong_and_what_to_do() {
    let lab = Lab::new();
    let hosts = lab.switched_hosts(2);
    let (h1, h2) = (&hosts[0], &hosts[1]);

    lab.step("consensus with the other peer down: the reason, within the deadline");
    h1.launch(&[
        "--ipalloc-init",
        "consensus=2",
        "--ipalloc-timeout",
        "3",
        &h2.addr_for(h1).to_string(),
    ]);
    let c = Container::new(h1);
    let t = std::time::Instant::now();
    let out = h1.weave(&["attach", &c.path()]);
    assert!(!out.success());
    assert!(t.elapsed() < secs(10), "took {:?}", t.elapsed());
    assert!(
        out.stderr
            .contains("waiting for IP allocation consensus: heard from 1 of 2 peers")
            && out.stderr.contains("retrying"),
        "{out}"
    );
    assert_eq!(out.stderr.trim().lines().count(), 1, "{out}");
    assert!(h1
        .weave_ok(&["status", "ipam"])
        .contains("Consensus: heard from 1 of 2"));

    lab.step("h2 joins: consensus is reached");
    h2.launch(&[
        "--ipalloc-init",
        "consensus=2",
        &h1.addr_for(h2).to_string(),
    ]);
    let a = attach_auto(h1, &c);

    lab.step("net: outside the range; a claim of a taken address");
    let c2 = Container::new(h2);
    let out = h2.weave(&["attach", "net:10.99.0.0/24", &c2.path()]);
    assert!(
        !out.success() && out.stderr.contains("not within the allocation range"),
        "{out}"
    );
    let out = h2.weave(&["attach", &format!("ip:{a}"), &c2.path()]);
    assert!(
        !out.success()
            && out
                .stderr
                .contains(&format!("{} is in use on peer", a.ip())),
        "{out}"
    );
    let c3 = Container::new(h1);
    let out = h1.weave(&["attach", &format!("ip:{a}"), &c3.path()]);
    assert!(
        !out.success() && out.stderr.contains("already allocated to"),
        "{out}"
    );
    // A free address owned by the other peer is handed over.
    let b = attach_auto(h2, &c2);
    h2.weave_ok(&["detach", &b.to_string(), &c2.path()]);
    let claimed = h1.weave_ok(&["attach", &format!("ip:{b}"), &c3.path()]);
    assert_eq!(claimed.trim(), b.to_string());
}

#[test]
fn a_full_range_and_a_range_on_a_host_route_are_refused() {
    let lab = Lab::new();
    let h1 = lab.switched_host("h1");

    lab.step("a range overlapping a route of the host");
    h1.ns().ip(&["route", "add", "10.41.3.0/24", "dev", "ul0"]);
    let out = h1.try_launch(&["--ipalloc-range", "10.41.0.0/16"]);
    assert!(!out.success(), "{out}");
    assert!(
        out.stderr.contains("overlaps route 10.41.3.0/24")
            && out.stderr.contains("--ipalloc-range"),
        "{out}"
    );
    assert_eq!(out.stderr.trim().lines().count(), 1, "{out}");

    lab.step("a full range");
    h1.launch(&[
        "--ipalloc-init",
        "consensus=1",
        "--ipalloc-range",
        "10.40.0.0/30",
    ]);
    let cs: Vec<Container> = (0..3).map(|_| Container::new(&h1)).collect();
    attach_auto(&h1, &cs[0]);
    attach_auto(&h1, &cs[1]);
    let out = h1.weave(&["attach", &cs[2].path()]);
    assert!(
        !out.success() && out.stderr.contains("no free address left in 10.40.0.0/30"),
        "{out}"
    );
    assert!(!cs[2].ns().has_link("ethwe"), "a failed attach left ethwe");
}

#[test]
fn a_peer_from_another_cluster_is_shown_and_nothing_else_breaks() {
    let lab = Lab::new();
    let hosts = lab.switched_hosts(2);
    let (h1, h2) = (&hosts[0], &hosts[1]);
    // Each makes its own ring alone.
    for h in &hosts {
        h.launch(&["--ipalloc-init", "consensus=1"]);
    }
    let c1 = Container::new(h1);
    let c2 = Container::new(h2);
    attach_auto(h1, &c1);
    attach_auto(h2, &c2);

    lab.step("connect them");
    h2.weave_ok(&["connect", &h1.addr_for(h2).to_string()]);
    wait_full_mesh(&hosts, secs(30));
    wait_until(
        secs(15),
        "status connections shows the IPAM refusal",
        || {
            h1.weave_ok(&["status", "connections"])
                .contains("IPAM refused")
        },
    );
    assert!(h1
        .weave_ok(&["status", "ipam"])
        .contains("another IPAM cluster"));
    // The overlay itself works: literal addresses ping.
    h1.attach(&c1, "10.2.1.1/24");
    h2.attach(&c2, "10.2.1.2/24");
    wait_ping(&c1, "10.2.1.2", secs(20));
    // And each keeps allocating from its own ring.
    attach_auto(h1, &Container::new(h1));
}

#[test]
fn an_ipv6_range_works_the_same() {
    let lab = Lab::new();
    let hosts = lab.switched_hosts(2);
    launch_all(
        &hosts,
        &[
            "--ipalloc-init",
            "consensus=2",
            "--ipalloc-range",
            "fd00:40::/64",
        ],
    );
    let c1 = Container::new(&hosts[0]);
    let c2 = Container::new(&hosts[1]);
    let a1 = attach_auto(&hosts[0], &c1);
    let a2 = attach_auto(&hosts[1], &c2);
    let range: IpNetwork = "fd00:40::/64".parse().unwrap();
    for a in [a1, a2] {
        assert!(range.contains(a.ip()) && a.prefix() == 64, "{a}");
    }
    assert_ne!(a1.ip(), a2.ip());
    wait_ping(&c1, &a2.ip().to_string(), secs(20));
}

/// One request on the control socket as a client of the API (root unless
/// `uid` says otherwise); the reply, parsed.
fn api(h: &Host, uid: u32, json: &str) -> serde_json::Value {
    let bin = env!("CARGO_BIN_EXE_wrt-unix-peer");
    let out = h.ns().run(&[bin, "request", &uid.to_string(), json]);
    assert!(out.success(), "{out}");
    serde_json::from_str(out.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn ok_message(v: &serde_json::Value) -> String {
    assert_eq!(v["status"], "ok", "{v}");
    v["message"].as_str().unwrap_or_default().to_string()
}

#[test]
fn the_allocation_api_is_idempotent_per_id() {
    let lab = Lab::new();
    let h1 = lab.switched_host("h1");
    h1.launch(&[
        "--ipalloc-init",
        "consensus=1",
        "--ipalloc-range",
        "10.40.0.0/28",
    ]);

    let first = ok_message(&api(&h1, 0, r#"{"cmd":"allocate","id":"cni-1"}"#));
    assert_eq!(first, "10.40.0.1/28");
    let again = ok_message(&api(&h1, 0, r#"{"cmd":"allocate","id":"cni-1"}"#));
    assert_eq!(again, first, "the same id got another address");
    let sub = ok_message(&api(
        &h1,
        0,
        r#"{"cmd":"allocate","id":"cni-1","subnet":"10.40.0.8/29"}"#,
    ));
    assert_eq!(sub, "10.40.0.9/29");
    let both = ok_message(&api(&h1, 0, r#"{"cmd":"lookup","id":"cni-1"}"#));
    assert_eq!(both, "10.40.0.1/28 10.40.0.9/29");

    let taken = api(
        &h1,
        0,
        r#"{"cmd":"claim","id":"cni-2","cidr":"10.40.0.1/28"}"#,
    );
    assert_eq!(taken["status"], "error", "{taken}");
    assert!(
        taken["error"]
            .as_str()
            .unwrap()
            .contains("already allocated to cni-1"),
        "{taken}"
    );
    for _ in 0..2 {
        let c = ok_message(&api(
            &h1,
            0,
            r#"{"cmd":"claim","id":"cni-2","cidr":"10.40.0.5/28"}"#,
        ));
        assert_eq!(c, "10.40.0.5/28");
    }
    let outside = api(
        &h1,
        0,
        r#"{"cmd":"allocate","id":"x","subnet":"10.99.0.0/24"}"#,
    );
    assert!(
        outside["error"]
            .as_str()
            .unwrap()
            .contains("not within the allocation range"),
        "{outside}"
    );
    let bad_id = api(&h1, 0, "{\"cmd\":\"allocate\",\"id\":\"\"}");
    assert_eq!(bad_id["status"], "error", "{bad_id}");

    // Only root changes allocations; anyone may look up.
    let denied = api(&h1, 65534, r#"{"cmd":"release","id":"cni-1"}"#);
    assert!(
        denied["error"]
            .as_str()
            .unwrap()
            .contains("permission denied"),
        "{denied}"
    );
    assert_eq!(
        ok_message(&api(&h1, 65534, r#"{"cmd":"lookup","id":"cni-2"}"#)),
        "10.40.0.5/28"
    );

    assert_eq!(
        ok_message(&api(&h1, 0, r#"{"cmd":"release","id":"cni-1"}"#)),
        "10.40.0.1/28 10.40.0.9/29"
    );
    assert_eq!(
        ok_message(&api(&h1, 0, r#"{"cmd":"release","id":"cni-1"}"#)),
        ""
    );
    assert_eq!(
        ok_message(&api(&h1, 0, r#"{"cmd":"lookup","id":"cni-1"}"#)),
        ""
    );
    // Freed: the next id gets the lowest free address again.
    assert_eq!(
        ok_message(&api(&h1, 0, r#"{"cmd":"allocate","id":"cni-3"}"#)),
        "10.40.0.1/28"
    );
}

#[test]
fn space_held_by_an_unreachable_peer_names_the_rmpeer_to_run() {
    let lab = Lab::new();
    let hosts = lab.switched_hosts(2);
    let (h1, h2) = (&hosts[0], &hosts[1]);
    // Six hosts in the range: three each.
    launch_all(
        &hosts,
        &[
            "--ipalloc-init",
            "consensus=2",
            "--ipalloc-range",
            "10.40.0.0/29",
            "--ipalloc-timeout",
            "3",
        ],
    );
    let c = Container::new(h1);
    attach_auto(h1, &c);
    let h2_name = h2.peer_name().unwrap();
    h2.kill_router();
    for i in 0..2 {
        let ci = Container::new(h1);
        let out = h1.weave(&["attach", &ci.path()]);
        assert!(out.success(), "attach {i}: {out}");
    }
    let out = h1.weave(&["attach", &Container::new(h1).path()]);
    assert!(!out.success(), "{out}");
    assert!(
        out.stderr.contains("is owned by unreachable peers")
            && out
                .stderr
                .contains(&format!("run weave-rs rmpeer {h2_name}")),
        "{out}"
    );
    let status = h1.weave_ok(&["status", "ipam"]);
    assert!(status.contains("UNREACHABLE"), "{status}");
}

#[test]
fn reset_hands_the_hosts_space_to_a_peer() {
    let lab = Lab::new();
    let hosts = lab.switched_hosts(2);
    let (h1, h2) = (&hosts[0], &hosts[1]);
    launch_all(&hosts, &["--ipalloc-init", "consensus=2"]);
    let c = Container::new(h2);
    attach_auto(h2, &c);
    let h2_name = h2.peer_name().unwrap();
    assert_eq!(owners(h1).len(), 2);

    lab.step("reset on h2");
    h2.weave_ok(&["reset"]);
    wait_until(secs(10), "h1 owns the whole range", || {
        let o = owners(h1);
        !o.iter().any(|(p, _)| *p == h2_name) && o.len() == 1
    });
    assert_eq!(owners(h1)[0].1, 1 << 20);
}
