//! The weave-rs Docker plugin (issue 13): hosts, each with its own Docker
//! engine whose network and IPAM driver `weave-rs` is served by the host's
//! router ([`DockerEngine::start_with_plugin`]).
//!
//! * `network_across_two_engines` (acceptance 1): the same network
//!   `<prefix>app` on both engines; a container on each gets an address of
//!   the default subnet from weave-rs IPAM, and they reach each other by
//!   address and by name (the engine's embedded resolver forwards the
//!   other engine's name to the weave-rs DNS).
//! * `compose_across_two_hosts` (acceptance 2): a compose project in two
//!   files, redis on h1 and a client on h2 (Debian's docker-compose 1.29,
//!   one `up` per engine, an external network): `redis-cli -h redis ping`
//!   from the client answers PONG.
//! * `networks_are_isolated` (acceptance 3): two networks with different
//!   subnets on both engines; each container reaches its own network's
//!   peers and neither the other network's container on the same host nor
//!   the one on the other host, even with a route added inside.
//! * `connect_and_disconnect` (acceptance 4): `docker network connect`
//!   gives a running container `ethwe1` with an address of the second
//!   network, held in weave-rs IPAM; `disconnect` removes both.
//! * `restart_always_survives_engine_and_router_restarts` (acceptance 5,
//!   engine first): a `--restart=always --ip` container on h1 comes back
//!   with its address and pings h2's container after h1's engine is
//!   killed (-9) and started again, then after h1's router restarts.
//!   `restart_always_when_the_router_restarts_first` (router stopped,
//!   then the engine restarted without it) is ignored: see its comment.
//! * `no_address_leaks` (acceptance 6): 50 run/rm cycles on two hosts
//!   leave each IPAM as it was; an engine killed mid-create leaks
//!   nothing; an address requested and never used (RequestAddress sent
//!   straight to the plugin) goes with a router restart (startup sweep)
//!   and, router left alone, after PENDING_GRACE (60 s).
//! * `clear_errors` (acceptance 7): docker's own error output for an
//!   unknown network option, a subnet outside the range, a network without
//!   the weave-rs IPAM, an address already in use, and the plugin while the
//!   router is stopped (and `network create` working again once relaunched).
//!
//! Needs the engine and the local images (scripts/test.sh sets them up),
//! and docker-compose for the compose test.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use ipnetwork::Ipv4Network;
use netns_tests::cmd::run_cmd;
use netns_tests::docker_engine::{HOST_RESOLVER, PLUGIN_NAME, WEAVE_DNS};
use netns_tests::*;

const BUSYBOX: &str = "weave-rs-test/busybox:latest";
const REDIS: &str = "weave-rs-test/redis:latest";

/// The default subnet of `--ipalloc-range`'s default.
const DEFAULT_SUBNET: &str = "10.32.0.0/12";
const DOMAIN: &str = "weave.local";

/// Launches `hosts` in a full mesh with `--ipalloc-init consensus=N` (N =
/// the number of hosts), each given the addresses of the hosts before it.
/// The default subnet is a /16 of the range, as the README advises for
/// several networks: Docker refuses a container two networks whose
/// subnets overlap, and `--subnet` networks lie in the range.
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
            "--ipalloc-default-subnet".to_string(),
            "10.32.0.0/16".to_string(),
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

/// `h`'s ipam.allocations holds `addr` for an id starting with "docker:"
/// (the plugin's); prints `ps` and `status ipam` too.
#[track_caller]
fn assert_allocated(h: &Host, name: &str, addr: Ipv4Addr) {
    let allocs = h.ipam_allocations();
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

/// Hosts whose engines have the weave-rs plugin, their routers launched
/// and serving it. The engines drop first (field order), removing their
/// containers and networks while the routers still serve the plugin.
struct Plugged {
    engines: Vec<DockerEngine>,
    hosts: Vec<Host>,
}

impl Plugged {
    /// `n` switched hosts, an engine with the plugin in each (loaded with
    /// `images`, started in parallel), then the routers
    /// ([`launch_consensus`]); waits until each plugin socket answers.
    #[track_caller]
    fn start(lab: &Lab, n: usize, images: &[&str]) -> Plugged {
        require_images(images);
        let hosts = lab.switched_hosts(n);
        lab.step(&format!(
            "an engine with the weave-rs plugin in each of {n} hosts (before the routers)"
        ));
        // Declared after the hosts: dropped before them on a panic.
        let engines: Vec<DockerEngine> = std::thread::scope(|s| {
            let started: Vec<_> = hosts
                .iter()
                .map(|h| s.spawn(move || DockerEngine::start_with_plugin(h, images)))
                .collect();
            let mut engines = Vec::new();
            let mut failed = None;
            for t in started {
                match t.join() {
                    Ok(e) => engines.push(e),
                    Err(p) => failed = failed.or(Some(p)),
                }
            }
            if let Some(p) = failed {
                drop(engines);
                std::panic::resume_unwind(p);
            }
            engines
        });
        for (h, e) in hosts.iter().zip(&engines) {
            eprintln!(
                "{}'s engine answered {:.2}s after dockerd started; plugin socket {}",
                h.name(),
                e.started_in().as_secs_f64(),
                e.plugin_socket().expect("plugin engine").display()
            );
        }
        lab.step(&format!(
            "launch the routers (mesh, --ipalloc-init consensus={n})"
        ));
        let started = Instant::now();
        launch_consensus(lab, &hosts);
        eprintln!(
            "routers launched and connected in {:.2}s",
            started.elapsed().as_secs_f64()
        );
        for (h, e) in hosts.iter().zip(&engines) {
            wait_plugin(h, e, secs(10));
        }
        Plugged { engines, hosts }
    }

    fn h(&self, i: usize) -> &Host {
        &self.hosts[i]
    }

    fn e(&self, i: usize) -> &DockerEngine {
        &self.engines[i]
    }
}

/// Waits until `h`'s router serves the plugin on `e`'s plugin socket.
#[track_caller]
fn wait_plugin(h: &Host, e: &DockerEngine, timeout: Duration) {
    let sock = e
        .plugin_socket()
        .expect("plugin engine")
        .display()
        .to_string();
    if !try_wait_until(timeout, || e.plugin_answers()) {
        panic!(
            "{}'s router does not serve the Docker plugin on {sock} \
             (WEAVE_RS_PLUGIN_SOCKET; is issue 13's plugin in this build?)\n{}",
            h.name(),
            logs(h, e)
        );
    }
}

/// `docker network create -d weave-rs --ipam-driver weave-rs EXTRA...
/// NAME` on `e`; must succeed. Prints its IPAM section and how long it took.
#[track_caller]
fn create_network(h: &Host, e: &DockerEngine, name: &str, extra: &[&str]) {
    let mut args = vec![
        "network",
        "create",
        "-d",
        PLUGIN_NAME,
        "--ipam-driver",
        PLUGIN_NAME,
    ];
    args.extend_from_slice(extra);
    args.push(name);
    let (id, took) = docker_must(h, e, &args, secs(60));
    let ipam = e.docker_ok(&["network", "inspect", "-f", "{{json .IPAM}}", name]);
    eprintln!(
        "{name} on {}'s engine: {} in {:.2}s, IPAM {}",
        h.name(),
        id.trim(),
        took.as_secs_f64(),
        ipam.trim()
    );
}

/// `docker run -d --init --network NET EXTRA... --name NAME busybox sleep
/// 3600` on `e`; must succeed.
#[track_caller]
fn run_busybox(h: &Host, e: &DockerEngine, name: &str, net: &str, extra: &[&str]) {
    let mut args = vec!["run", "-d", "--init", "--network", net, "--name", name];
    args.extend_from_slice(extra);
    args.extend_from_slice(&[BUSYBOX, "sleep", "3600"]);
    let (_, took) = docker_must(h, e, &args, secs(60));
    eprintln!(
        "docker run {name} on {}'s engine took {:.2}s",
        h.name(),
        took.as_secs_f64()
    );
}

/// `ping -c 2 -W 1` from `from` to `to` must fail (both tries); panics
/// with the ping's output and both containers' view otherwise.
#[track_caller]
fn no_ping(h: &Host, e: &DockerEngine, from: &str, to: &str, why: &str) {
    let out = exec_ping(e, from, to, 2, 1);
    eprintln!(
        "{from} -> {to} ({why}): exit {:?}, {}",
        out.code(),
        out.stdout
            .lines()
            .chain(out.stderr.lines())
            .filter(|l| l.contains("packets") || l.contains("ping:"))
            .collect::<Vec<_>>()
            .join(" / ")
    );
    if out.success() {
        panic!(
            "{from} (on {}) reaches {to} ({why}):\n{out}\n{from}'s routes:\n{}\n{}",
            h.name(),
            e.docker(&["exec", from, "ip", "route"]),
            logs(h, e)
        );
    }
}

/// `docker exec C ip route add ROUTE dev ethwe0`; must succeed.
#[track_caller]
fn add_route(h: &Host, e: &DockerEngine, c: &str, route: &str) {
    docker_must(
        h,
        e,
        &["exec", c, "ip", "route", "add", route, "dev", "ethwe0"],
        secs(15),
    );
}

/// `status ipam`'s "Allocated here: N" on `h`.
#[track_caller]
fn allocated_here(h: &Host) -> usize {
    let out = h.weave_ok(&["status", "ipam"]);
    out.lines()
        .find_map(|l| l.strip_prefix("Allocated here:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "no \"Allocated here: N\" in status ipam of {}:\n{out}",
                h.name()
            )
        })
}

/// The allocation of `addr` in `h`'s ipam.allocations, if any: its id.
fn allocation_of(h: &Host, addr: Ipv4Addr) -> Option<String> {
    h.ipam_allocations()
        .into_iter()
        .find(|(_, cidr)| cidr.parse::<Ipv4Network>().is_ok_and(|c| c.ip() == addr))
        .map(|(id, _)| id)
}

/// The IPv4 address (and prefix) of `dev` in container `c`, if it has the
/// interface: from `ip -o -4 addr show dev DEV`.
fn iface_addr(e: &DockerEngine, c: &str, dev: &str) -> Option<(Ipv4Addr, u8)> {
    let out = e.docker(&["exec", c, "ip", "-o", "-4", "addr", "show", "dev", dev]);
    if !out.success() {
        return None;
    }
    let cidr = out
        .stdout
        .split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)?;
    let n: Ipv4Network = cidr.parse().ok()?;
    Some((n.ip(), n.prefix()))
}

/// A compose project of the test's on one engine; `down` when dropped
/// (also when the test panics), before the engines go.
struct ComposeProject {
    docker_host: String,
    project: String,
    file: PathBuf,
}

impl ComposeProject {
    /// Writes `yaml` to `dir/<project>.yml` for the engine `e`.
    fn new(e: &DockerEngine, dir: &Path, project: &str, yaml: &str) -> ComposeProject {
        let file = dir.join(format!("{project}.yml"));
        std::fs::write(&file, yaml).unwrap_or_else(|err| panic!("write {}: {err}", file.display()));
        eprintln!("--- {} ---\n{yaml}", file.display());
        ComposeProject {
            docker_host: e.docker_host(),
            project: project.to_string(),
            file,
        }
    }

    /// `DOCKER_HOST=<engine> docker-compose -p PROJECT -f FILE ARGS...`.
    fn run(&self, args: &[&str], timeout: Duration) -> Output {
        let mut c = Command::new("docker-compose");
        c.env("DOCKER_HOST", &self.docker_host)
            .args(["--ansi", "never", "-p", &self.project, "-f"])
            .arg(&self.file)
            .args(args);
        run_cmd(c, timeout)
    }

    /// Like [`ComposeProject::run`]; must succeed. Returns stdout and how
    /// long it took.
    #[track_caller]
    fn must(
        &self,
        h: &Host,
        e: &DockerEngine,
        args: &[&str],
        timeout: Duration,
    ) -> (String, Duration) {
        let started = Instant::now();
        let out = self.run(args, timeout);
        let took = started.elapsed();
        if !out.success() {
            panic!(
                "docker-compose -p {} {} on {}'s engine failed after {:.2}s:\n{out}\n{}",
                self.project,
                args.join(" "),
                h.name(),
                took.as_secs_f64(),
                logs(h, e)
            );
        }
        (out.stdout, took)
    }
}

impl Drop for ComposeProject {
    fn drop(&mut self) {
        let out = self.run(&["down", "-t", "1"], secs(60));
        if !out.success() {
            eprintln!(
                "netns-tests: docker-compose -p {} down:\n{out}",
                self.project
            );
        }
    }
}

#[test]
fn network_across_two_engines() {
    let test_started = Instant::now();
    let lab = Lab::new();
    let p = Plugged::start(&lab, 2, &[BUSYBOX]);
    let (h1, h2, e1, e2) = (p.h(0), p.h(1), p.e(0), p.e(1));

    let net = format!("{}app", lab.prefix());
    lab.step(&format!(
        "docker network create -d {PLUGIN_NAME} --ipam-driver {PLUGIN_NAME} {net} on both engines"
    ));
    for (h, e) in [(h1, e1), (h2, e2)] {
        create_network(h, e, &net, &[]);
    }

    let (a, b) = (format!("{}a", lab.prefix()), format!("{}b", lab.prefix()));
    lab.step(&format!("docker run {a} on h1's engine, {b} on h2's"));
    run_busybox(h1, e1, &a, &net, &[]);
    run_busybox(h2, e2, &b, &net, &[]);

    lab.step("their addresses: in the default subnet, different");
    let default: Ipv4Network = DEFAULT_SUBNET.parse().unwrap();
    let (addr_a, prefix_a) = address_on(e1, &a, &net);
    let (addr_b, prefix_b) = address_on(e2, &b, &net);
    for (name, addr, prefix) in [(&a, addr_a, prefix_a), (&b, addr_b, prefix_b)] {
        assert!(
            default.contains(addr),
            "{name}'s address {addr}/{prefix} is not in {DEFAULT_SUBNET}"
        );
    }
    assert_ne!(addr_a, addr_b, "{a} and {b} got the same address");

    lab.step("by address: a pings b, b pings a");
    let (sa, sb) = (addr_a.to_string(), addr_b.to_string());
    let ab = pings(h1, e1, &a, &sb, secs(20));
    let ba = pings(h2, e2, &b, &sa, secs(20));
    eprintln!(
        "{a} -> {addr_b}: first answer after {:.2}s; {b} -> {addr_a}: after {:.2}s",
        ab.as_secs_f64(),
        ba.as_secs_f64()
    );

    lab.step(&format!(
        "by name: a pings {b} (another engine's: forwarded to {WEAVE_DNS}), b pings {a}"
    ));
    let ab = pings_by_name(h1, e1, &a, &b, addr_b, secs(20));
    let ba = pings_by_name(h2, e2, &b, &a, addr_a, secs(20));
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

#[test]
fn compose_across_two_hosts() {
    let test_started = Instant::now();
    require_tool("docker-compose");
    let lab = Lab::new();
    let p = Plugged::start(&lab, 2, &[REDIS]);
    let (h1, h2, e1, e2) = (p.h(0), p.h(1), p.e(0), p.e(1));

    let net = format!("{}app", lab.prefix());
    lab.step(&format!("docker network create ... {net} on both engines"));
    for (h, e) in [(h1, e1), (h2, e2)] {
        create_network(h, e, &net, &[]);
    }

    lab.step("a compose project in two files: redis for h1's engine, client for h2's");
    let networks = format!("networks:\n  default:\n    external: true\n    name: {net}\n");
    let service = |name: &str, command: &str| {
        format!(
            "version: \"3.7\"\nservices:\n  {name}:\n    image: {REDIS}\n    \
             command: {command}\n    init: true\n{networks}"
        )
    };
    let dir = lab.dir();
    let (p1, p2) = (format!("{}p1", lab.prefix()), format!("{}p2", lab.prefix()));
    // Dropped (down) before the engines, also on a panic.
    let c1 = ComposeProject::new(
        e1,
        dir,
        &p1,
        &service("redis", "redis-server --protected-mode no"),
    );
    // The redis image has no `sleep`: the client service stays up with a
    // redis-server of its own on a unix socket only (no TCP port), and the
    // test runs redis-cli in it.
    let c2 = ComposeProject::new(
        e2,
        dir,
        &p2,
        &service(
            "client",
            "redis-server --port 0 --unixsocket /data/client.sock",
        ),
    );

    lab.step("docker-compose up -d: p1 on h1's engine, p2 on h2's");
    for (c, h, e) in [(&c1, h1, e1), (&c2, h2, e2)] {
        let (_, took) = c.must(h, e, &["up", "-d"], secs(120));
        eprintln!(
            "docker-compose -p {} up -d on {}'s engine took {:.2}s\n{}",
            c.project,
            h.name(),
            took.as_secs_f64(),
            c.run(&["ps"], secs(30)).stdout
        );
    }
    let redis = e1.docker_ok(&[
        "ps",
        "-q",
        "--filter",
        &format!("label=com.docker.compose.project={p1}"),
    ]);
    let redis = redis.trim();
    let aliases = e1.docker_ok(&[
        "inspect",
        "-f",
        &format!("{{{{json (index .NetworkSettings.Networks \"{net}\").Aliases}}}}"),
        redis,
    ]);
    let (addr, _) = address_on(e1, redis, &net);
    eprintln!("redis ({redis}) on h1: {addr}, aliases {}", aliases.trim());

    lab.step("the client (h2) asks redis (h1) by its service name: PONG");
    let ping = ["exec", "-T", "client", "redis-cli", "-h", "redis", "ping"];
    let started = Instant::now();
    let mut last = None;
    let answered = try_wait_until(secs(30), || {
        let out = c2.run(&ping, secs(20));
        let pong = out.success() && out.stdout.trim() == "PONG";
        last = Some(out);
        pong
    });
    let took = started.elapsed();
    if !answered {
        let client = e2.docker_ok(&[
            "ps",
            "-q",
            "--filter",
            &format!("label=com.docker.compose.project={p2}"),
        ]);
        panic!(
            "redis-cli -h redis ping from the client (h2) got no PONG within {:.2}s:\n{}\n{}\n{}\n{}",
            took.as_secs_f64(),
            last.map(|o| o.to_string()).unwrap_or_default(),
            name_diagnostics(h2, e2, client.trim(), "redis"),
            logs(h1, e1),
            logs(h2, e2)
        );
    }
    eprintln!(
        "client -> redis: PONG after {:.2}s ({})",
        took.as_secs_f64(),
        last.map(|o| o.stdout.trim().to_string())
            .unwrap_or_default()
    );
    // And once more, now that it answers.
    let (out, took) = c2.must(h2, e2, &ping, secs(20));
    assert_eq!(out.trim(), "PONG", "second redis-cli ping");
    eprintln!("second ping: {} in {:.2}s", out.trim(), took.as_secs_f64());

    lab.step("docker-compose down on both engines");
    for (c, h, e) in [(&c2, h2, e2), (&c1, h1, e1)] {
        let (_, took) = c.must(h, e, &["down", "-t", "1"], secs(60));
        eprintln!(
            "docker-compose -p {} down on {}'s engine took {:.2}s",
            c.project,
            h.name(),
            took.as_secs_f64()
        );
    }
    assert!(
        allocation_of(h1, addr).is_none(),
        "redis's address {addr} is still allocated on h1 after down: {:?}",
        h1.ipam_allocations()
    );
    eprintln!(
        "whole test {:.2}s (engines and routers stop next)",
        test_started.elapsed().as_secs_f64()
    );
}

#[test]
fn networks_are_isolated() {
    let test_started = Instant::now();
    let lab = Lab::new();
    let p = Plugged::start(&lab, 2, &[BUSYBOX]);
    let (h1, h2, e1, e2) = (p.h(0), p.h(1), p.e(0), p.e(1));

    let (n1, n2) = (format!("{}n1", lab.prefix()), format!("{}n2", lab.prefix()));
    let (s1, s2) = ("10.33.1.0/24", "10.33.2.0/24");
    lab.step(&format!("{n1} ({s1}) and {n2} ({s2}) on both engines"));
    for (h, e) in [(h1, e1), (h2, e2)] {
        create_network(h, e, &n1, &["--subnet", s1]);
        create_network(h, e, &n2, &["--subnet", s2]);
    }

    let c = |s: &str| format!("{}{s}", lab.prefix());
    let (a1, b1, a2, b2) = (c("a1"), c("b1"), c("a2"), c("b2"));
    lab.step(&format!(
        "{a1} ({n1}) and {a2} ({n2}) on h1, {b1} ({n1}) and {b2} ({n2}) on h2"
    ));
    let admin = ["--cap-add", "NET_ADMIN"];
    run_busybox(h1, e1, &a1, &n1, &admin);
    run_busybox(h1, e1, &a2, &n2, &admin);
    run_busybox(h2, e2, &b1, &n1, &admin);
    run_busybox(h2, e2, &b2, &n2, &admin);
    let (addr_a1, _) = address_on(e1, &a1, &n1);
    let (addr_a2, _) = address_on(e1, &a2, &n2);
    let (addr_b1, _) = address_on(e2, &b1, &n1);
    let (addr_b2, _) = address_on(e2, &b2, &n2);
    let (net1, net2): (Ipv4Network, Ipv4Network) = (s1.parse().unwrap(), s2.parse().unwrap());
    for (name, addr, subnet) in [
        (&a1, addr_a1, net1),
        (&b1, addr_b1, net1),
        (&a2, addr_a2, net2),
        (&b2, addr_b2, net2),
    ] {
        assert!(
            subnet.contains(addr),
            "{name}'s address {addr} is not in {subnet}"
        );
    }

    lab.step("each reaches its own network's peer on the other host");
    let t = pings(h1, e1, &a1, &addr_b1.to_string(), secs(20));
    eprintln!(
        "{a1} -> {b1} ({addr_b1}): first answer after {:.2}s",
        t.as_secs_f64()
    );
    let t = pings(h1, e1, &a2, &addr_b2.to_string(), secs(20));
    eprintln!(
        "{a2} -> {b2} ({addr_b2}): first answer after {:.2}s",
        t.as_secs_f64()
    );

    lab.step("without routes: no way across (nothing routes the other subnet)");
    no_ping(
        h1,
        e1,
        &a1,
        &addr_a2.to_string(),
        "n1 -> n2, same host, no route",
    );
    no_ping(
        h1,
        e1,
        &a1,
        &addr_b2.to_string(),
        "n1 -> n2, other host, no route",
    );

    lab.step(&format!(
        "routes added inside: {s2} dev ethwe0 in {a1}, {s1} dev ethwe0 in {a2} and {b2}"
    ));
    add_route(h1, e1, &a1, s2);
    add_route(h1, e1, &a2, s1);
    add_route(h2, e2, &b2, s1);
    let started = Instant::now();
    no_ping(
        h1,
        e1,
        &a1,
        &addr_a2.to_string(),
        "n1 -> n2, same host, with routes",
    );
    no_ping(
        h1,
        e1,
        &a1,
        &addr_b2.to_string(),
        "n1 -> n2, other host, with routes",
    );
    no_ping(
        h1,
        e1,
        &a2,
        &addr_a1.to_string(),
        "n2 -> n1, same host, with routes",
    );
    no_ping(
        h2,
        e2,
        &b2,
        &addr_a1.to_string(),
        "n2 -> n1, other host, with routes",
    );
    eprintln!(
        "4 cross-network pings refused in {:.2}s",
        started.elapsed().as_secs_f64()
    );

    lab.step("and each still reaches its own peers");
    pings(h1, e1, &a1, &addr_b1.to_string(), secs(10));
    pings(h2, e2, &b2, &addr_a2.to_string(), secs(10));
    eprintln!(
        "whole test {:.2}s (engines and routers stop next)",
        test_started.elapsed().as_secs_f64()
    );
}

/// Acceptance 4 on a container started on `<prefix>app` (made with
/// `app_opts`): `network connect <prefix>app2 c` (10.33.3.0/24) gives it
/// ethwe1 with an address of that subnet, allocated in weave-rs IPAM
/// (report, `status ipam`); `disconnect` removes the interface and the
/// allocation.
#[track_caller]
fn connect_and_disconnect_on(app_opts: &[&str]) {
    let test_started = Instant::now();
    let lab = Lab::new();
    let p = Plugged::start(&lab, 1, &[BUSYBOX]);
    let (h1, e1) = (p.h(0), p.e(0));

    let (app, app2) = (
        format!("{}app", lab.prefix()),
        format!("{}app2", lab.prefix()),
    );
    let s2 = "10.33.3.0/24";
    lab.step(&format!("{app} ({app_opts:?}) and {app2} ({s2})"));
    create_network(h1, e1, &app, app_opts);
    create_network(h1, e1, &app2, &["--subnet", s2]);
    let c = format!("{}c", lab.prefix());
    run_busybox(h1, e1, &c, &app, &[]);
    let (addr, _) = address_on(e1, &c, &app);
    assert_allocated(h1, &c, addr);
    let before = allocated_here(h1);
    assert!(
        iface_addr(e1, &c, "ethwe1").is_none(),
        "{c} has an ethwe1 before the connect"
    );

    lab.step(&format!(
        "docker network connect {app2} {c}: ethwe1 in {s2}"
    ));
    let (_, took) = docker_must(h1, e1, &["network", "connect", &app2, &c], secs(60));
    eprintln!("network connect took {:.2}s", took.as_secs_f64());
    let net2: Ipv4Network = s2.parse().unwrap();
    let (addr2, _) = address_on(e1, &c, &app2);
    assert!(
        net2.contains(addr2),
        "{c}'s address {addr2} on {app2} is not in {s2}"
    );
    let inside = iface_addr(e1, &c, "ethwe1");
    assert_eq!(
        inside.map(|(a, _)| a),
        Some(addr2),
        "{c}'s ethwe1 should have {addr2}:\n{}",
        e1.docker(&["exec", &c, "ip", "-o", "addr"])
    );
    eprintln!("{c}'s ethwe1: {:?}", inside);
    assert_allocated(h1, &c, addr2);
    let connected = allocated_here(h1);
    assert_eq!(
        connected,
        before + 1,
        "status ipam's Allocated here after the connect (was {before})"
    );
    let ps = h1.weave_ok(&["ps"]);
    eprintln!(
        "weave-rs ps after the connect (does {c} show, with {addr} and {addr2}?):\n{ps}\
         --- shows {addr}: {}, shows {addr2}: {}",
        ps.contains(&addr.to_string()),
        ps.contains(&addr2.to_string())
    );

    lab.step(&format!(
        "docker network disconnect {app2} {c}: ethwe1 and {addr2} gone"
    ));
    let (_, took) = docker_must(h1, e1, &["network", "disconnect", &app2, &c], secs(60));
    eprintln!("network disconnect took {:.2}s", took.as_secs_f64());
    assert!(
        iface_addr(e1, &c, "ethwe1").is_none(),
        "{c} still has ethwe1 after the disconnect:\n{}",
        e1.docker(&["exec", &c, "ip", "-o", "addr"])
    );
    let started = Instant::now();
    if !try_wait_until(secs(5), || allocation_of(h1, addr2).is_none()) {
        panic!(
            "{addr2} is still allocated on {} 5 s after the disconnect: {:?}\n{}",
            h1.name(),
            h1.ipam_allocations(),
            logs(h1, e1)
        );
    }
    eprintln!(
        "{addr2} gone from report {:.2}s after disconnect returned",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(
        allocated_here(h1),
        before,
        "status ipam's Allocated here after the disconnect"
    );
    assert_allocated(h1, &c, addr);
    let ps = h1.weave_ok(&["ps"]);
    eprintln!(
        "weave-rs ps after the disconnect:\n{ps}--- shows {addr}: {}, shows {addr2}: {}",
        ps.contains(&addr.to_string()),
        ps.contains(&addr2.to_string())
    );
    assert!(
        !ps.contains(&addr2.to_string()),
        "weave-rs ps still shows {addr2} after the disconnect:\n{ps}"
    );
    eprintln!(
        "whole test {:.2}s (engine and router stop next)",
        test_started.elapsed().as_secs_f64()
    );
}

#[test]
fn connect_and_disconnect() {
    // Its own subnet: see connect_from_the_default_subnet.
    connect_and_disconnect_on(&["--subnet", "10.33.5.0/24"]);
}

/// The same from a network of the default subnet (`network create`
/// without --subnet, like the default network `weave`): that subnet is
/// the whole allocation range 10.32.0.0/12, and every --subnet network
/// lies inside it, so the container's route to the first network covers
/// the second's subnet.
#[test]
fn connect_from_the_default_subnet() {
    connect_and_disconnect_on(&[]);
}

/// `docker ARGS...` on `e` must fail within `t`; its error output must
/// contain each of `needles` (case-insensitive). Returns the error output.
#[track_caller]
fn docker_fails(
    h: &Host,
    e: &DockerEngine,
    args: &[&str],
    needles: &[&str],
    t: Duration,
) -> String {
    let started = Instant::now();
    let out = e.docker_timeout(args, t);
    let took = started.elapsed();
    let text = format!("{}{}", out.stdout, out.stderr);
    eprintln!(
        "docker {} -> exit {:?} after {:.2}s: {}",
        args.join(" "),
        out.code(),
        took.as_secs_f64(),
        out.stderr.trim()
    );
    if out.success() || out.timed_out {
        panic!(
            "docker {} on {}'s engine should fail (timed out: {}):\n{out}\n{}",
            args.join(" "),
            h.name(),
            out.timed_out,
            logs(h, e)
        );
    }
    let lower = text.to_lowercase();
    for n in needles {
        assert!(
            lower.contains(&n.to_lowercase()),
            "docker {}: the error does not say {n:?}:\n{out}",
            args.join(" ")
        );
    }
    out.stderr
}

#[test]
fn clear_errors() {
    let test_started = Instant::now();
    let lab = Lab::new();
    let p = Plugged::start(&lab, 1, &[BUSYBOX]);
    let (h1, e1) = (p.h(0), p.e(0));
    let net = |s: &str| format!("{}{s}", lab.prefix());
    let create = [
        "network",
        "create",
        "-d",
        PLUGIN_NAME,
        "--ipam-driver",
        PLUGIN_NAME,
    ];
    let with = |extra: &[&str]| -> Vec<String> {
        create.iter().chain(extra).map(|s| s.to_string()).collect()
    };
    fn args(v: &[String]) -> Vec<&str> {
        v.iter().map(String::as_str).collect()
    }

    lab.step("an unknown network option (-o foo=bar)");
    let v = with(&["-o", "foo=bar", &net("opt")]);
    docker_fails(h1, e1, &args(&v), &["foo", "option"], secs(30));

    lab.step("a subnet outside the allocation range (--subnet 192.168.77.0/24)");
    let v = with(&["--subnet", "192.168.77.0/24", &net("out")]);
    docker_fails(
        h1,
        e1,
        &args(&v),
        &["192.168.77.0/24", "outside", "allocation range"],
        secs(30),
    );

    lab.step("a weave-rs network without --ipam-driver weave-rs");
    let noipam = net("noipam");
    docker_fails(
        h1,
        e1,
        &["network", "create", "-d", PLUGIN_NAME, &noipam],
        &["--ipam-driver weave-rs"],
        secs(30),
    );
    for n in ["opt", "out", "noipam"] {
        let ls = e1.docker_ok(&[
            "network",
            "ls",
            "-q",
            "--filter",
            &format!("name=^{}$", net(n)),
        ]);
        assert!(
            ls.trim().is_empty(),
            "the refused network {} exists: {ls}",
            net(n)
        );
    }

    lab.step("docker run --ip with an address another container has");
    let app = net("app");
    create_network(h1, e1, &app, &["--subnet", "10.33.4.0/24"]);
    let taken = "10.33.4.10";
    let (first, second) = (net("ip1"), net("ip2"));
    run_busybox(h1, e1, &first, &app, &["--ip", taken]);
    let (addr, _) = address_on(e1, &first, &app);
    assert_eq!(addr.to_string(), taken, "--ip {taken} gave another address");
    let before = h1.ipam_allocations();
    let err = docker_fails(
        h1,
        e1,
        &[
            "run",
            "-d",
            "--init",
            "--network",
            &app,
            "--ip",
            taken,
            "--name",
            &second,
            BUSYBOX,
            "sleep",
            "3600",
        ],
        &[taken, "in use by container", &first],
        secs(60),
    );
    eprintln!("the claim refusal as docker shows it: {}", err.trim());
    let state = e1.docker(&["inspect", "-f", "{{.State.Status}}", &second]);
    eprintln!("{second} after the refused run: {}", state.stdout.trim());
    assert_eq!(
        allocation_of(h1, addr).as_deref(),
        before
            .iter()
            .find(|(_, c)| c.starts_with(&format!("{taken}/")))
            .map(|(id, _)| id.as_str()),
        "the refused claim changed who holds {taken}"
    );
    pings(h1, e1, &first, taken, secs(5));

    lab.step("the plugin while the router is stopped");
    h1.weave_ok(&["stop"]);
    let x = net("x");
    let v = with(&[&x]);
    let started = Instant::now();
    let err = docker_fails(h1, e1, &args(&v), &[PLUGIN_NAME], secs(60));
    let took = started.elapsed();
    eprintln!(
        "network create with the router stopped failed after {:.2}s: {}",
        took.as_secs_f64(),
        err.trim()
    );
    assert!(
        took < secs(20),
        "network create took {:.2}s to fail with the router stopped",
        took.as_secs_f64()
    );

    lab.step("relaunch the router: the same create works");
    let started = Instant::now();
    h1.relaunch();
    wait_plugin(h1, e1, secs(10));
    eprintln!(
        "router relaunched, plugin up in {:.2}s",
        started.elapsed().as_secs_f64()
    );
    create_network(h1, e1, &x, &[]);
    eprintln!(
        "whole test {:.2}s (engine and router stop next)",
        test_started.elapsed().as_secs_f64()
    );
}

/// `docker inspect`'s state of `c` on `e`: (running, a one-line summary
/// with status, restart count and error).
fn container_state(e: &DockerEngine, c: &str) -> (bool, String) {
    let out = e.docker_timeout(
        &[
            "inspect",
            "-f",
            "{{.State.Running}} status={{.State.Status}} restarts={{.RestartCount}} \
             started={{.State.StartedAt}} error={{json .State.Error}}",
            c,
        ],
        secs(20),
    );
    let line = format!("{}{}", out.stdout.trim(), out.stderr.trim());
    (out.success() && line.starts_with("true "), line)
}

/// Waits (`timeout`) until `c` runs on `e`; returns how long it took.
#[track_caller]
fn wait_running(h: &Host, e: &DockerEngine, c: &str, timeout: Duration) -> Duration {
    let started = Instant::now();
    if !try_wait_until(timeout, || container_state(e, c).0) {
        panic!(
            "{c} on {} is not running {:.2}s later: {}\n{}",
            h.name(),
            started.elapsed().as_secs_f64(),
            container_state(e, c).1,
            logs(h, e)
        );
    }
    started.elapsed()
}

/// `c` on `e` has `addr` on ethwe0 (inside) and on `net` (inspect), and
/// pings `peer` (on `pe`, `peer_addr`) both ways.
#[track_caller]
fn back_with(
    (h, e, c): (&Host, &DockerEngine, &str),
    net: &str,
    addr: Ipv4Addr,
    (ph, pe, peer): (&Host, &DockerEngine, &str),
    peer_addr: Ipv4Addr,
    what: &str,
) {
    let inside = iface_addr(e, c, "ethwe0");
    assert_eq!(
        inside.map(|(a, _)| a),
        Some(addr),
        "{what}: {c}'s ethwe0 should have {addr}:\n{}",
        e.docker(&["exec", c, "ip", "-o", "addr"])
    );
    let (seen, _) = address_on(e, c, net);
    assert_eq!(seen, addr, "{what}: {c}'s address on {net} (inspect)");
    // A new endpoint has a new MAC and nothing announces it: the peer's
    // ARP entry may still name the old one (see the report of this test).
    let mac = e.docker(&["exec", c, "cat", "/sys/class/net/ethwe0/address"]);
    let neigh = pe.docker(&["exec", peer, "ip", "neigh", "show", &addr.to_string()]);
    eprintln!(
        "{what}: {c}'s ethwe0 MAC {}; {peer}'s ARP entry for {addr}: {:?}",
        mac.stdout.trim(),
        neigh.stdout.trim()
    );
    // c first: its ARP request refreshes the peer's entry.
    let t2 = pings(h, e, c, &peer_addr.to_string(), secs(30));
    let t1 = pings(ph, pe, peer, &addr.to_string(), secs(30));
    eprintln!(
        "{what}: {c} has {addr} on ethwe0; {c} -> {peer} first answer after {:.2}s, \
         then {peer} -> {c} after {:.2}s",
        t2.as_secs_f64(),
        t1.as_secs_f64()
    );
}

/// Acceptance 5, the start: two plugged hosts, `<prefix>app`
/// (10.32.77.0/24) on both, `<prefix>r` (`--restart=always --ip
/// 10.32.77.10`) on h1 and `<prefix>peer` on h2, pinging each other.
/// Returns the hosts, the network, r, peer, r's address and peer's.
///
/// The subnet lies inside the default subnet (10.32.0.0/16): a --subnet
/// network outside it fails on the host that does not own its range ("no
/// free address left": the allocator's `full` counts no free space
/// outside the default subnet).
fn restart_always_setup(lab: &Lab) -> (Plugged, String, String, String, Ipv4Addr, Ipv4Addr) {
    let p = Plugged::start(lab, 2, &[BUSYBOX]);
    let (h1, h2, e1, e2) = (p.h(0), p.h(1), p.e(0), p.e(1));
    let net = format!("{}app", lab.prefix());
    let subnet = "10.32.77.0/24";
    let addr: Ipv4Addr = "10.32.77.10".parse().unwrap();
    lab.step(&format!("{net} ({subnet}) on both engines"));
    for (h, e) in [(h1, e1), (h2, e2)] {
        create_network(h, e, &net, &["--subnet", subnet]);
    }
    let (r, peer) = (
        format!("{}r", lab.prefix()),
        format!("{}peer", lab.prefix()),
    );
    lab.step(&format!(
        "{r} --restart=always --ip {addr} on h1, {peer} on h2"
    ));
    let a = addr.to_string();
    run_busybox(h1, e1, &r, &net, &["--restart=always", "--ip", &a]);
    run_busybox(h2, e2, &peer, &net, &[]);
    let (peer_addr, _) = address_on(e2, &peer, &net);
    back_with(
        (h1, e1, &r),
        &net,
        addr,
        (h2, e2, &peer),
        peer_addr,
        "at first",
    );
    (p, net, r, peer, addr, peer_addr)
}

/// h1's "docker:endpoint:" allocations: r's address only.
#[track_caller]
fn only_endpoint(h: &Host, r: &str, addr: Ipv4Addr, what: &str) {
    let eps: Vec<(String, String)> = h
        .ipam_allocations()
        .into_iter()
        .filter(|(id, _)| id.starts_with("docker:endpoint:"))
        .collect();
    eprintln!("{what}: {}'s endpoint allocations {eps:?}", h.name());
    assert!(
        eps.len() == 1 && eps[0].1.starts_with(&format!("{addr}/")),
        "{what}: {}'s endpoint allocations should be {r}'s {addr} alone: {eps:?}",
        h.name()
    );
}

/// Acceptance 5, engine first: the `--restart=always` container comes
/// back, with its address (`--ip`) and connectivity to the other host's
/// container, after h1's engine is killed (`kill -9`) and started again,
/// and again after h1's router is then restarted; the old endpoint's
/// address is not left behind.
#[test]
fn restart_always_survives_engine_and_router_restarts() {
    let test_started = Instant::now();
    let lab = Lab::new();
    let (mut p, net, r, peer, addr, peer_addr) = restart_always_setup(&lab);
    let (hosts, engines) = (&p.hosts, &mut p.engines);
    let (h1, h2) = (&hosts[0], &hosts[1]);

    lab.step("kill -9 h1's engine and start it again (the router serves the plugin)");
    let took = engines[0].kill9_and_restart(secs(90));
    eprintln!(
        "h1's engine answered {:.2}s after its restart",
        took.as_secs_f64()
    );
    let running = wait_running(h1, &engines[0], &r, secs(60));
    eprintln!(
        "{r} running {:.2}s after the engine answered: {}",
        running.as_secs_f64(),
        container_state(&engines[0], &r).1
    );
    back_with(
        (h1, &engines[0], &r),
        &net,
        addr,
        (h2, &engines[1], &peer),
        peer_addr,
        "after the engine restart",
    );
    only_endpoint(h1, &r, addr, "after the engine restart");

    lab.step("then restart h1's router (weave-rs stop, relaunch)");
    h1.weave_ok(&["stop"]);
    let started = Instant::now();
    h1.relaunch();
    wait_plugin(h1, &engines[0], secs(10));
    eprintln!(
        "router relaunched, plugin up in {:.2}s; {r}: {}",
        started.elapsed().as_secs_f64(),
        container_state(&engines[0], &r).1
    );
    wait_running(h1, &engines[0], &r, secs(10));
    back_with(
        (h1, &engines[0], &r),
        &net,
        addr,
        (h2, &engines[1], &peer),
        peer_addr,
        "after the router restart",
    );
    only_endpoint(h1, &r, addr, "after the router restart");
    eprintln!(
        "whole test {:.2}s (engines and routers stop next)",
        test_started.elapsed().as_secs_f64()
    );
}

/// Acceptance 5, router first: h1's router stopped, then its engine
/// killed (`kill -9`) and started again. Without the plugin the engine
/// gives the container up (Exited, `plugin "weave-rs" not found`; each
/// plugin lookup takes 15 s, the API answers only after them); the
/// relaunched router starts it, with its address and connectivity. (The
/// engine could not release the old endpoint while the plugin was away,
/// and never tells a restarted plugin: the router forgets endpoints the
/// engine no longer has before it starts the container, or its address
/// would still be held by the old endpoint.)
#[test]
fn restart_always_when_the_router_restarts_first() {
    let test_started = Instant::now();
    let lab = Lab::new();
    let (mut p, net, r, peer, addr, peer_addr) = restart_always_setup(&lab);
    let (hosts, engines) = (&p.hosts, &mut p.engines);
    let (h1, h2) = (&hosts[0], &hosts[1]);

    lab.step("stop h1's router first, then kill -9 h1's engine and start it again");
    h1.weave_ok(&["stop"]);
    assert!(
        !engines[0].plugin_answers(),
        "the plugin answers after stop"
    );
    // Each plugin lookup gives up after 15 s; the API answers once the
    // engine has given up on everything.
    let took = engines[0].kill9_and_restart(secs(180));
    let (running, state) = container_state(&engines[0], &r);
    eprintln!(
        "h1's engine answered {:.2}s after its restart (no plugin); {r}: {state}",
        took.as_secs_f64()
    );
    assert!(
        !running,
        "{r} runs although the engine had no plugin: {state}"
    );

    lab.step("relaunch h1's router: it starts the stranded container");
    let started = Instant::now();
    h1.relaunch();
    let launched = started.elapsed();
    wait_plugin(h1, &engines[0], secs(10));
    wait_running(h1, &engines[0], &r, secs(30));
    let running = started.elapsed();
    eprintln!(
        "router launch returned after {:.2}s; {r} running {:.2}s after the launch began: {}",
        launched.as_secs_f64(),
        running.as_secs_f64(),
        container_state(&engines[0], &r).1
    );
    back_with(
        (h1, &engines[0], &r),
        &net,
        addr,
        (h2, &engines[1], &peer),
        peer_addr,
        "after the router relaunch",
    );
    only_endpoint(h1, &r, addr, "after the router relaunch");
    eprintln!(
        "whole test {:.2}s (engines and routers stop next)",
        test_started.elapsed().as_secs_f64()
    );
}

/// What `h`'s IPAM holds: (ipam.allocations' length, its "docker:" ids,
/// status ipam's "Allocated here").
fn ipam_counts(h: &Host) -> (usize, Vec<String>, usize) {
    let allocs = h.ipam_allocations();
    let docker: Vec<String> = allocs
        .iter()
        .filter(|(id, _)| id.starts_with("docker:"))
        .map(|(id, cidr)| format!("{id}={cidr}"))
        .collect();
    (allocs.len(), docker, allocated_here(h))
}

/// The address `h`'s IPAM holds for `id`, if any.
fn allocation_of_id(h: &Host, id: &str) -> Option<String> {
    h.ipam_allocations()
        .into_iter()
        .find(|(a, _)| a == id)
        .map(|(_, cidr)| cidr)
}

/// Waits (`timeout`) until `h`'s counts are `want`; panics otherwise.
#[track_caller]
fn counts_back(
    h: &Host,
    e: &DockerEngine,
    want: &(usize, Vec<String>, usize),
    timeout: Duration,
    what: &str,
) -> Duration {
    let started = Instant::now();
    let mut last = None;
    let back = try_wait_until(timeout, || {
        let now = ipam_counts(h);
        let same = now == *want;
        last = Some(now);
        same
    });
    if !back {
        panic!(
            "{what}: {}'s IPAM is not back to the start within {:.2}s:\n  start {want:?}\n  now   {last:?}\n{}",
            h.name(),
            started.elapsed().as_secs_f64(),
            logs(h, e)
        );
    }
    started.elapsed()
}

/// What an engine that dies right after its RequestAddress leaves: one
/// `/IpamDriver.RequestAddress` for `pool` with the endpoint MAC `mac`,
/// sent straight to `e`'s plugin socket. Returns the address given.
#[track_caller]
fn request_address_only(h: &Host, e: &DockerEngine, pool: &str, mac: &str) -> String {
    use std::io::{Read, Write};
    let sock = e.plugin_socket().expect("plugin engine");
    let body = serde_json::json!({
        "PoolID": pool,
        "Address": "",
        "Options": {"com.docker.network.endpoint.macaddress": mac},
    })
    .to_string();
    let mut s = std::os::unix::net::UnixStream::connect(sock)
        .unwrap_or_else(|err| panic!("connect {}: {err}", sock.display()));
    s.set_read_timeout(Some(secs(10))).unwrap();
    write!(
        s,
        "POST /IpamDriver.RequestAddress HTTP/1.1\r\nHost: plugin\r\n\
         Content-Type: application/vnd.docker.plugins.v1+json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    let json = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let v: serde_json::Value = serde_json::from_str(json.trim()).unwrap_or_default();
    let addr = v["Address"].as_str().unwrap_or_default().to_string();
    if !answer.starts_with("HTTP/1.1 200") || addr.is_empty() {
        panic!(
            "RequestAddress {body} on {}'s plugin socket: {answer}\n{}",
            h.name(),
            logs(h, e)
        );
    }
    addr
}

/// Acceptance 6: 50 create/rm cycles (both hosts at once) leave each
/// host's IPAM as it was; an engine killed right after the plugin handed
/// out an address (before or while the endpoint was made) leaks nothing
/// once the engine is back and the router restarted (startup sweep).
#[test]
fn no_address_leaks() {
    let test_started = Instant::now();
    let lab = Lab::new();
    let mut p = Plugged::start(&lab, 2, &[BUSYBOX]);
    let (hosts, engines) = (&p.hosts, &mut p.engines);

    let net = format!("{}app", lab.prefix());
    lab.step(&format!("{net} on both engines; IPAM counts at the start"));
    for (h, e) in hosts.iter().zip(engines.iter()) {
        create_network(h, e, &net, &[]);
    }
    let start: Vec<_> = hosts.iter().map(ipam_counts).collect();
    for (h, c) in hosts.iter().zip(&start) {
        eprintln!(
            "{}: ipam.allocations {}, allocated here {}, docker ids {:?}",
            h.name(),
            c.0,
            c.2,
            c.1
        );
    }

    const CYCLES: usize = 50;
    lab.step(&format!(
        "{CYCLES} cycles of docker run -d --network {net} + rm -f, half on each host at once"
    ));
    let started = Instant::now();
    std::thread::scope(|s| {
        for (i, (h, e)) in hosts.iter().zip(engines.iter()).enumerate() {
            let net = &net;
            s.spawn(move || {
                for n in 0..CYCLES / 2 {
                    let (id, _) = docker_must(
                        h,
                        e,
                        &[
                            "run",
                            "-d",
                            "--init",
                            "--network",
                            net,
                            BUSYBOX,
                            "sleep",
                            "60",
                        ],
                        secs(60),
                    );
                    let id = id.trim();
                    docker_must(h, e, &["rm", "-f", id], secs(60));
                    if n % 10 == 0 {
                        eprintln!("host {i}: cycle {n} done");
                    }
                }
            });
        }
    });
    eprintln!("{CYCLES} cycles in {:.2}s", started.elapsed().as_secs_f64());
    for ((h, e), c) in hosts.iter().zip(engines.iter()).zip(&start) {
        let t = counts_back(h, e, c, secs(10), "after the cycles");
        eprintln!(
            "{}: back to the start {:.2}s after the cycles",
            h.name(),
            t.as_secs_f64()
        );
    }

    lab.step(
        "an engine gone right after RequestAddress (sent straight to the plugin): \
         one on each host; h1's must go with the router's restart (startup sweep), \
         h2's after PENDING_GRACE (60 s)",
    );
    let pool = format!("weave-rs:{}", "10.32.0.0/16");
    let mut orphans = Vec::new();
    for (i, (h, e)) in hosts.iter().zip(engines.iter()).enumerate() {
        let mac = format!("02:42:0a:be:ef:0{i}");
        let addr = request_address_only(h, e, &pool, &mac);
        let id = format!("docker:endpoint:{mac}");
        let held = h.ipam_allocations().iter().any(|(a, _)| *a == id);
        eprintln!(
            "{}: RequestAddress only -> {addr} ({id}, in ipam.allocations: {held})",
            h.name()
        );
        assert!(
            held,
            "{}: {id} not in ipam.allocations: {:?}",
            h.name(),
            h.ipam_allocations()
        );
        orphans.push((id, Instant::now()));
    }

    let (first, rest) = engines.split_at_mut(1);
    let (h1, e1, h2, e2) = (&hosts[0], &mut first[0], &hosts[1], &rest[0]);
    let x = format!("{}x", lab.prefix());
    lab.step(&format!(
        "docker run --network {net} {x} on h1, its engine killed once the plugin handed out an address"
    ));
    let known: Vec<String> = h1
        .ipam_allocations()
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    let mut run = e1.docker_command(&[
        "run",
        "-d",
        "--init",
        "--network",
        &net,
        "--name",
        &x,
        BUSYBOX,
        "sleep",
        "60",
    ]);
    run.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let started = Instant::now();
    let mut child = run.spawn().expect("spawn docker run");
    let mut new = None;
    while started.elapsed() < secs(30) {
        new = h1
            .ipam_allocations()
            .into_iter()
            .find(|(id, _)| id.starts_with("docker:endpoint:") && !known.contains(id));
        if new.is_some() {
            break;
        }
    }
    let Some((id, cidr)) = new else {
        let _ = child.kill();
        panic!(
            "no new docker:endpoint: allocation on h1 within 30 s\n{}",
            logs(h1, e1)
        );
    };
    let seen = started.elapsed();
    let took = e1.kill9_and_restart(secs(90));
    let _ = child.kill();
    let _ = child.wait();
    eprintln!(
        "{id} ({cidr}) seen {:.3}s after docker run began; engine killed, answered {:.2}s after its restart",
        seen.as_secs_f64(),
        took.as_secs_f64()
    );
    let (_, state) = container_state(e1, &x);
    // What the engine's own restore did (it cleans up the endpoints it
    // had recorded), before the router's sweep.
    let released = try_wait_until(secs(3), || allocation_of_id(h1, &id).is_none());
    eprintln!(
        "after the engine restart: {x}: {state}; {id} released by the engine's restore: {released}\n  \
         h1 IPAM now {:?}\n  start        {:?}",
        ipam_counts(h1),
        start[0]
    );
    let _ = e1.docker(&["rm", "-f", &x]);
    assert!(
        allocation_of_id(h1, &orphans[0].0).is_some(),
        "h1's {} went before the router's restart ({:.2}s after the request)",
        orphans[0].0,
        orphans[0].1.elapsed().as_secs_f64()
    );

    lab.step("restart h1's router (its startup sweep frees what no endpoint holds)");
    h1.weave_ok(&["stop"]);
    let started = Instant::now();
    h1.relaunch();
    wait_plugin(h1, e1, secs(10));
    let t = counts_back(h1, e1, &start[0], secs(10), "after the router restart");
    eprintln!(
        "h1's IPAM back to the start {:.2}s after the relaunch began ({:.2}s after it answered)",
        started.elapsed().as_secs_f64(),
        t.as_secs_f64()
    );
    lab.step("h2's orphan goes after PENDING_GRACE (60 s), its router left alone");
    let (id2, asked) = &orphans[1];
    assert!(
        asked.elapsed() < secs(55),
        "too late to see {id2} held before the grace ends ({:.2}s)",
        asked.elapsed().as_secs_f64()
    );
    assert!(
        allocation_of_id(h2, id2).is_some(),
        "h2's {id2} went {:.2}s after the request, before PENDING_GRACE",
        asked.elapsed().as_secs_f64()
    );
    let left = secs(60 + 10).saturating_sub(asked.elapsed());
    counts_back(
        h2,
        e2,
        &start[1],
        left,
        "h2, PENDING_GRACE after the request",
    );
    let after = asked.elapsed();
    eprintln!(
        "h2's {id2} released {:.2}s after the request (PENDING_GRACE 60 s)",
        after.as_secs_f64()
    );
    assert!(
        after >= secs(59),
        "released before PENDING_GRACE: {after:?}"
    );
    counts_back(h1, e1, &start[0], secs(1), "h1 at the end");
    eprintln!(
        "whole test {:.2}s (engines and routers stop next)",
        test_started.elapsed().as_secs_f64()
    );
}
