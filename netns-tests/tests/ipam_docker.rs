//! Automatic addresses with Docker (issue 11, acceptance 2): `weave-rs run
//! -d` with no address on two hosts gives each container its own address of
//! the default subnet, `ps` shows it, the containers reach each other, and
//! `docker rm -f` releases the address (gone from `report`'s
//! ipam.allocations) so that a new container may get it again.
//! Needs the engine and the local images (scripts/test.sh sets them up).

use ipnetwork::IpNetwork;
use netns_tests::cmd;
use netns_tests::*;

const BUSYBOX: &str = "weave-rs-test/busybox:latest";

/// The default subnet of `--ipalloc-range`'s default.
const DEFAULT_SUBNET: &str = "10.32.0.0/12";

/// Launches `hosts` in a full mesh with `--ipalloc-init consensus=N` (N =
/// the number of hosts), each given the addresses of the hosts before it.
fn launch_consensus(hosts: &[Host]) {
    let quorum = format!("consensus={}", hosts.len());
    for (i, h) in hosts.iter().enumerate() {
        let mut args = vec!["--ipalloc-init".to_string(), quorum.clone()];
        args.extend(hosts[..i].iter().map(|p| p.addr_for(h).to_string()));
        h.launch(&args);
    }
    wait_full_mesh(hosts, secs(30));
}

/// `weave-rs run -d --label ... --name NAME busybox sleep 3600` on `h`, with
/// no address: the container ID it printed.
#[track_caller]
fn run_auto(h: &Host, c: &DockerContainers, name: &str) -> String {
    let label = c.label();
    let out = h
        .weave(&[
            "run", "-d", "--label", &label, "--name", name, BUSYBOX, "sleep", "3600",
        ])
        .ok();
    let id = out.stdout.trim().to_string();
    assert!(
        id.len() == 64 && id.chars().all(|c| c.is_ascii_hexdigit()),
        "run -d should print the container ID, got {:?}",
        out.stdout
    );
    id
}

/// The addresses `ps` on `h` lists for the container `name` (None when it
/// is not listed), and the whole listing for messages.
fn ps_addrs(h: &Host, name: &str) -> (Option<Vec<String>>, String) {
    let ps = h.weave_ok(&["ps"]);
    let addrs = ps.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        let target = f.next()?;
        (target.trim_start_matches('/') == name).then(|| f.skip(1).map(String::from).collect())
    });
    (addrs, ps)
}

/// The one address `ps` on `h` shows for `name`; checked to be in the
/// default subnet, with its prefix length.
#[track_caller]
fn ps_address(h: &Host, name: &str) -> IpNetwork {
    let default: IpNetwork = DEFAULT_SUBNET.parse().unwrap();
    let (addrs, ps) = ps_addrs(h, name);
    let addrs = addrs.unwrap_or_else(|| panic!("ps on {} does not list {name}:\n{ps}", h.name()));
    let [addr] = addrs.as_slice() else {
        panic!(
            "ps on {} should show one address for {name}:\n{ps}",
            h.name()
        );
    };
    let addr: IpNetwork = addr
        .parse()
        .unwrap_or_else(|e| panic!("ps on {}: {addr:?} is not a CIDR ({e}):\n{ps}", h.name()));
    assert!(
        default.contains(addr.ip()) && addr.prefix() == default.prefix(),
        "{name}'s address {addr} is not one of {DEFAULT_SUBNET}:\n{ps}"
    );
    addr
}

/// The container's own view: `ip -o addr show ethwe` inside it.
fn ethwe_addrs(name: &str) -> String {
    cmd::run(&["docker", "exec", name, "ip", "-o", "addr", "show", "ethwe"]).stdout
}

/// One ping from inside the container `from` to `to`, bounded.
fn docker_ping(from: &str, to: &IpNetwork) -> bool {
    let mut c = std::process::Command::new("docker");
    c.args(["exec", from, "ping", "-c", "1", "-W", "1"])
        .arg(to.ip().to_string());
    cmd::run_cmd(c, secs(5)).success()
}

#[track_caller]
fn wait_docker_ping(from: &str, to: &IpNetwork) {
    wait_until(secs(20), &format!("{from} pings {}", to.ip()), || {
        docker_ping(from, to)
    });
}

/// Does `h`'s ipam.allocations list `addr`, or anything for `id`?
#[track_caller]
fn allocated(h: &Host, id: &str, addr: &IpNetwork) -> bool {
    h.ipam_allocations()
        .iter()
        .any(|(i, cidr)| i == id || cidr.parse::<IpNetwork>().is_ok_and(|c| c.ip() == addr.ip()))
}

#[test]
fn run_without_address_on_two_hosts() {
    require_images(&[BUSYBOX]);
    let lab = Lab::new();
    let containers = DockerContainers(lab.prefix().to_string());
    let hosts = lab.switched_hosts(2);
    let (h1, h2) = (&hosts[0], &hosts[1]);
    lab.step("launch two routers with consensus=2");
    launch_consensus(&hosts);

    lab.step("run -d with no address on each host");
    let (n1, n2, n3) = (
        format!("{}-a1", lab.prefix()),
        format!("{}-a2", lab.prefix()),
        format!("{}-a3", lab.prefix()),
    );
    let id1 = run_auto(h1, &containers, &n1);
    let id2 = run_auto(h2, &containers, &n2);

    lab.step("ps shows each container's address, in the default subnet, distinct");
    let a1 = ps_address(h1, &n1);
    let a2 = ps_address(h2, &n2);
    eprintln!("{n1} on h1: {a1}; {n2} on h2: {a2}");
    assert_ne!(a1.ip(), a2.ip(), "both containers got the same address");
    for (name, addr) in [(&n1, &a1), (&n2, &a2)] {
        let seen = ethwe_addrs(name);
        assert!(
            seen.contains(&format!("inet {addr} ")),
            "{name}'s ethwe does not carry {addr} (ps said so):\n{seen}"
        );
    }
    for (h, id, addr) in [(h1, &id1, &a1), (h2, &id2, &a2)] {
        let list = h.ipam_allocations();
        assert!(
            list.iter().any(|(i, c)| i == id && c == &addr.to_string()),
            "report on {} does not list {addr} for {id}: {list:?}",
            h.name()
        );
    }

    lab.step("the containers reach each other across the hosts");
    wait_docker_ping(&n1, &a2);
    wait_docker_ping(&n2, &a1);

    lab.step("docker rm -f on h1 releases the address");
    cmd::sh(&["docker", "rm", "-f", &n1]);
    wait_until(
        secs(10),
        &format!("h1's ipam.allocations no longer lists {a1} ({n1})"),
        || !allocated(h1, &id1, &a1),
    );
    let (listed, ps) = ps_addrs(h1, &n1);
    assert!(listed.is_none(), "ps on h1 still lists {n1}:\n{ps}");
    assert!(
        allocated(h2, &id2, &a2),
        "h2 lost {a2} when h1's container went: {:?}",
        h2.ipam_allocations()
    );

    lab.step("a new run -d with no address on h1");
    let id3 = run_auto(h1, &containers, &n3);
    let a3 = ps_address(h1, &n3);
    eprintln!(
        "{n3} on h1: {a3} ({})",
        if a3.ip() == a1.ip() {
            "the released address, reused"
        } else {
            "not the released one"
        }
    );
    assert_ne!(a3.ip(), a2.ip(), "{n3} got {n2}'s address");
    assert!(
        h1.ipam_allocations()
            .iter()
            .any(|(i, c)| i == &id3 && c == &a3.to_string()),
        "report on h1 does not list {a3} for {id3}: {:?}",
        h1.ipam_allocations()
    );
    wait_docker_ping(&n2, &a3);
    wait_docker_ping(&n3, &a2);

    lab.step("a container removed while h2's router is down is freed on relaunch");
    h2.weave_ok(&["stop"]);
    cmd::sh(&["docker", "rm", "-f", &n2]);
    h2.relaunch();
    wait_until(
        secs(20),
        "h2 releases the removed container's address",
        || !allocated(h2, &id2, &a2),
    );
    assert!(
        allocated(h1, &id3, &a3),
        "h1 lost {a3}: {:?}",
        h1.ipam_allocations()
    );

    lab.step("docker rm -f of the rest releases theirs too");
    cmd::sh(&["docker", "rm", "-f", &n3]);
    wait_until(secs(10), "h1 releases its new container's address", || {
        !allocated(h1, &id3, &a3)
    });
    lab.step("done");
}
