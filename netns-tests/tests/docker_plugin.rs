//! The weave-rs Docker plugin (issue 13, acceptance 1): two hosts, each
//! with its own Docker engine whose network and IPAM driver `weave-rs` is
//! served by the host's router ([`DockerEngine::start_with_plugin`]). The
//! same network `<prefix>app` is created on both engines; a container on
//! each gets an address of the default subnet from weave-rs IPAM, and they
//! reach each other by address and by name (the engine's embedded resolver
//! forwards the other engine's name to the weave-rs DNS, dockerd `--dns
//! 169.254.53.53`). Needs the engine and the local images (scripts/test.sh
//! sets them up).

use std::net::Ipv4Addr;
use std::time::Instant;

use ipnetwork::Ipv4Network;
use netns_tests::docker_engine::{HOST_RESOLVER, PLUGIN_NAME, WEAVE_DNS};
use netns_tests::*;

const BUSYBOX: &str = "weave-rs-test/busybox:latest";

/// The default subnet of `--ipalloc-range`'s default.
const DEFAULT_SUBNET: &str = "10.32.0.0/12";
const DOMAIN: &str = "weave.local";

/// Launches `hosts` in a full mesh with `--ipalloc-init consensus=N` (N =
/// the number of hosts), each given the addresses of the hosts before it.
fn launch_consensus(lab: &Lab, hosts: &[Host]) {
    let quorum = format!("consensus={}", hosts.len());
    // The routers' upstream is the engines' "host resolver" (never the
    // machine's own resolvers).
    let resolv = lab.dir().join("resolv.conf");
    std::fs::write(&resolv, format!("nameserver {HOST_RESOLVER}\n")).unwrap();
    let resolv = resolv.display().to_string();
    for (i, h) in hosts.iter().enumerate() {
        let mut args = vec![
            "--resolv-conf".to_string(),
            resolv.clone(),
            "--ipalloc-init".to_string(),
            quorum.clone(),
        ];
        args.extend(hosts[..i].iter().map(|p| p.addr_for(h).to_string()));
        h.launch(&args);
    }
    wait_full_mesh(hosts, secs(30));
}

/// What a failure message needs: the router's log and the engine's.
fn logs(h: &Host, e: &DockerEngine) -> String {
    format!(
        "  --- router log of {} ---\n{}\n{}",
        h.name(),
        h.log_tail(40),
        e.log_tail(30)
    )
}

/// `docker ARGS...` on `e` (timeout `t`); must succeed, else panics with
/// the docker error and both logs. Returns stdout and how long it took.
#[track_caller]
fn docker_must(h: &Host, e: &DockerEngine, args: &[&str], t: Duration) -> (String, Duration) {
    let started = Instant::now();
    let out = e.docker_timeout(args, t);
    let took = started.elapsed();
    if !out.success() {
        panic!(
            "docker {} on {}'s engine failed after {:.2}s:\n{out}\n{}",
            args.join(" "),
            h.name(),
            took.as_secs_f64(),
            logs(h, e)
        );
    }
    (out.stdout, took)
}

/// The container's address on `net` (`docker inspect`'s
/// NetworkSettings.Networks.<net>.IPAddress), and its prefix length.
#[track_caller]
fn address_on(e: &DockerEngine, name: &str, net: &str) -> (Ipv4Addr, u8) {
    let out = e.docker_ok(&["inspect", "-f", "{{json .NetworkSettings.Networks}}", name]);
    let nets: serde_json::Value = serde_json::from_str(out.trim())
        .unwrap_or_else(|err| panic!("inspect {name}: not JSON ({err}): {out}"));
    let ep = &nets[net];
    let addr = ep["IPAddress"]
        .as_str()
        .unwrap_or_else(|| panic!("{name} has no IPAddress on {net}: {out}"));
    let addr: Ipv4Addr = addr
        .parse()
        .unwrap_or_else(|err| panic!("{name}'s IPAddress {addr:?} on {net}: {err}\n{out}"));
    let prefix = ep["IPPrefixLen"].as_u64().unwrap_or_default() as u8;
    eprintln!(
        "{name}: {addr}/{prefix} on {net}, endpoint {}, gateway {:?}",
        ep["EndpointID"].as_str().unwrap_or("?"),
        ep["Gateway"].as_str().unwrap_or("")
    );
    (addr, prefix)
}

/// `docker exec FROM ping -c COUNT -W WAIT TO` on `e`.
fn exec_ping(e: &DockerEngine, from: &str, to: &str, count: u32, wait: u32) -> Output {
    let (c, w) = (count.to_string(), wait.to_string());
    e.docker_timeout(
        &["exec", from, "ping", "-c", &c, "-W", &w, to],
        secs(u64::from(count * (wait + 1) + 5)),
    )
}

/// Waits (`timeout`) until one ping from `from` to `to` is answered, then
/// `ping -c 3 -W 2` must succeed. Returns how long the first answer took.
#[track_caller]
fn pings(h: &Host, e: &DockerEngine, from: &str, to: &str, timeout: Duration) -> Duration {
    let started = Instant::now();
    let first = try_wait_until(timeout, || exec_ping(e, from, to, 1, 1).success());
    let took = started.elapsed();
    let out = exec_ping(e, from, to, 3, 2);
    if !first || !out.success() {
        panic!(
            "{from} (on {}) does not ping {to} (first answer: {first}, waited {:.2}s):\n{out}\n\
             {from}'s interfaces:\n{}\n{}",
            h.name(),
            took.as_secs_f64(),
            e.docker(&["exec", from, "ip", "-o", "addr"]),
            logs(h, e)
        );
    }
    took
}

/// Why a name does not resolve in `from`: nslookup of the bare name and of
/// the FQDN inside the container, dig at the weave-rs DNS on the host, and
/// the host's `status dns`.
fn name_diagnostics(h: &Host, e: &DockerEngine, from: &str, name: &str) -> String {
    let fqdn = format!("{name}.{DOMAIN}");
    let mut s = String::new();
    for n in [name, fqdn.as_str()] {
        let out = e.docker_timeout(&["exec", from, "nslookup", n], secs(15));
        s.push_str(&format!("  nslookup {n} in {from}:\n{out}\n"));
    }
    for n in [name, fqdn.as_str()] {
        let out = try_dig(h, WEAVE_DNS, &[n, "A"]);
        s.push_str(&format!(
            "  dig @{WEAVE_DNS} {n} on {}: {out:?}\n",
            h.name()
        ));
    }
    s.push_str(&format!(
        "  {from}'s routes:\n{}\n  weave-rs status dns on {}:\n{}\n",
        e.docker(&["exec", from, "ip", "route"]),
        h.name(),
        h.weave(&["status", "dns"])
    ));
    s
}

/// Like [`pings`], by name: `from` resolves `to` (a container of the
/// other engine) and pings it; the ping's first line must name `addr`.
#[track_caller]
fn pings_by_name(
    h: &Host,
    e: &DockerEngine,
    from: &str,
    to: &str,
    addr: Ipv4Addr,
    timeout: Duration,
) -> Duration {
    let started = Instant::now();
    let first = try_wait_until(timeout, || exec_ping(e, from, to, 1, 1).success());
    let took = started.elapsed();
    let out = exec_ping(e, from, to, 3, 2);
    if !first || !out.success() {
        panic!(
            "{from} (on {}) does not ping {to} by name (first answer: {first}, waited {:.2}s):\n\
             {out}\n{}\n{}",
            h.name(),
            took.as_secs_f64(),
            name_diagnostics(h, e, from, to),
            logs(h, e)
        );
    }
    // busybox: "PING <name> (<address>): 56 data bytes".
    assert!(
        out.stdout.contains(&format!("({addr})")),
        "{from} resolved {to} to something else than {addr}:\n{out}"
    );
    took
}

/// `report`'s ipam.allocations on `h`: (id, cidr) pairs.
#[track_caller]
fn allocations(h: &Host) -> Vec<(String, String)> {
    let r = h.status_json();
    let list = r.raw["ipam"]["allocations"]
        .as_array()
        .unwrap_or_else(|| panic!("report on {} has no ipam.allocations: {}", h.name(), r.raw));
    list.iter()
        .map(|a| {
            (
                a["id"].as_str().unwrap_or_default().to_string(),
                a["cidr"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// `h`'s ipam.allocations holds `addr` for an id starting with "docker:"
/// (the plugin's); prints `ps` and `status ipam` too.
#[track_caller]
fn assert_allocated(h: &Host, name: &str, addr: Ipv4Addr) {
    let allocs = allocations(h);
    eprintln!(
        "--- {}: weave-rs ps ---\n{}--- {}: weave-rs status ipam ---\n{}--- {}: ipam.allocations: {allocs:?}",
        h.name(),
        h.weave(&["ps"]).stdout,
        h.name(),
        h.weave(&["status", "ipam"]).stdout,
        h.name()
    );
    let found = allocs
        .iter()
        .find(|(_, cidr)| cidr.parse::<Ipv4Network>().is_ok_and(|c| c.ip() == addr));
    let Some((id, cidr)) = found else {
        panic!(
            "{}'s ipam.allocations has no {addr} ({name}'s address): {allocs:?}",
            h.name()
        );
    };
    assert!(
        id.starts_with("docker:"),
        "{}: {cidr} ({name}'s address) is allocated to {id:?}, not to a \"docker:...\" id",
        h.name()
    );
}

#[test]
fn network_across_two_engines() {
    let test_started = Instant::now();
    require_images(&[BUSYBOX]);
    let lab = Lab::new();
    let hosts = lab.switched_hosts(2);
    let (h1, h2) = (&hosts[0], &hosts[1]);

    lab.step("an engine with the weave-rs plugin in h1 and one in h2 (before the routers)");
    // After the hosts: the engines drop first, removing their containers
    // and networks while the routers still serve the plugin.
    let (e1, e2) = std::thread::scope(|s| {
        let t1 = s.spawn(|| DockerEngine::start_with_plugin(h1, &[BUSYBOX]));
        let e2 = DockerEngine::start_with_plugin(h2, &[BUSYBOX]);
        (
            t1.join().unwrap_or_else(|p| std::panic::resume_unwind(p)),
            e2,
        )
    });
    for (h, e) in [(h1, &e1), (h2, &e2)] {
        eprintln!(
            "{}'s engine answered {:.2}s after dockerd started; plugin socket {}",
            h.name(),
            e.started_in().as_secs_f64(),
            e.plugin_socket().expect("plugin engine").display()
        );
    }

    lab.step("launch both routers (mesh, --ipalloc-init consensus=2)");
    let started = Instant::now();
    launch_consensus(&lab, &hosts);
    eprintln!(
        "routers launched and connected in {:.2}s",
        started.elapsed().as_secs_f64()
    );
    for (h, e) in [(h1, &e1), (h2, &e2)] {
        let sock = e
            .plugin_socket()
            .expect("plugin engine")
            .display()
            .to_string();
        if !try_wait_until(secs(10), || e.plugin_answers()) {
            panic!(
                "{}'s router does not serve the Docker plugin on {sock} \
                 (WEAVE_RS_PLUGIN_SOCKET; is issue 13's plugin in this build?)\n{}",
                h.name(),
                logs(h, e)
            );
        }
    }

    let net = format!("{}app", lab.prefix());
    lab.step(&format!(
        "docker network create -d {PLUGIN_NAME} --ipam-driver {PLUGIN_NAME} {net} on both engines"
    ));
    for (h, e) in [(h1, &e1), (h2, &e2)] {
        let (id, took) = docker_must(
            h,
            e,
            &[
                "network",
                "create",
                "-d",
                PLUGIN_NAME,
                "--ipam-driver",
                PLUGIN_NAME,
                &net,
            ],
            secs(60),
        );
        let ipam = e.docker_ok(&["network", "inspect", "-f", "{{json .IPAM}}", &net]);
        eprintln!(
            "{net} on {}'s engine: {} in {:.2}s, IPAM {}",
            h.name(),
            id.trim(),
            took.as_secs_f64(),
            ipam.trim()
        );
    }

    let (a, b) = (format!("{}a", lab.prefix()), format!("{}b", lab.prefix()));
    lab.step(&format!("docker run {a} on h1's engine, {b} on h2's"));
    for (h, e, name) in [(h1, &e1, &a), (h2, &e2, &b)] {
        let (_, took) = docker_must(
            h,
            e,
            &[
                "run",
                "-d",
                "--init",
                "--network",
                &net,
                "--name",
                name,
                BUSYBOX,
                "sleep",
                "3600",
            ],
            secs(60),
        );
        eprintln!(
            "docker run {name} on {}'s engine took {:.2}s",
            h.name(),
            took.as_secs_f64()
        );
    }

    lab.step("their addresses: in the default subnet, different");
    let default: Ipv4Network = DEFAULT_SUBNET.parse().unwrap();
    let (addr_a, prefix_a) = address_on(&e1, &a, &net);
    let (addr_b, prefix_b) = address_on(&e2, &b, &net);
    for (name, addr, prefix) in [(&a, addr_a, prefix_a), (&b, addr_b, prefix_b)] {
        assert!(
            default.contains(addr),
            "{name}'s address {addr}/{prefix} is not in {DEFAULT_SUBNET}"
        );
    }
    assert_ne!(addr_a, addr_b, "{a} and {b} got the same address");

    lab.step("by address: a pings b, b pings a");
    let (sa, sb) = (addr_a.to_string(), addr_b.to_string());
    let ab = pings(h1, &e1, &a, &sb, secs(20));
    let ba = pings(h2, &e2, &b, &sa, secs(20));
    eprintln!(
        "{a} -> {addr_b}: first answer after {:.2}s; {b} -> {addr_a}: after {:.2}s",
        ab.as_secs_f64(),
        ba.as_secs_f64()
    );

    lab.step(&format!(
        "by name: a pings {b} (another engine's: forwarded to {WEAVE_DNS}), b pings {a}"
    ));
    let ab = pings_by_name(h1, &e1, &a, &b, addr_b, secs(20));
    let ba = pings_by_name(h2, &e2, &b, &a, addr_a, secs(20));
    eprintln!(
        "{a} -> {b}: first answer after {:.2}s; {b} -> {a}: after {:.2}s",
        ab.as_secs_f64(),
        ba.as_secs_f64()
    );

    lab.step("each router's ipam.allocations holds its container's address (docker:...)");
    assert_allocated(h1, &a, addr_a);
    assert_allocated(h2, &b, addr_b);
    eprintln!(
        "whole test {:.2}s (engines and routers stop next)",
        test_started.elapsed().as_secs_f64()
    );
}
