//! DNS with the real Docker engine (issue 12, acceptance): containers
//! started with `weave-rs run` find each other by name through their own
//! host's router (169.254.53.53, search domain weave.local), across a relay;
//! two containers with one hostname are both answered, in rotating order,
//! and `docker rm -f` takes a name off every host within 2 s; a router
//! killed with SIGKILL takes its names with it (hidden on the others) and a
//! relaunch brings back its containers' names but never the dead
//! incarnation's other records; a container that dies at once, or is
//! stopped, leaves no name behind, and `docker start` names it again.
//! Acceptance 2 literally: two containers both named `web`, one on the
//! machine's engine and one on a second engine of h2's ([`DockerEngine`]).
//! Needs the engine and the local images (scripts/test.sh sets them up).

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Instant;

use netns_tests::cmd;
use netns_tests::*;

const REDIS: &str = "weave-rs-test/redis:latest";
const BUSYBOX: &str = "weave-rs-test/busybox:latest";
/// Where every router answers DNS (on its own bridge).
const DNS: &str = "169.254.53.53";
const DOMAIN: &str = "weave.local";
/// How soon a removed container's name must be gone from every host.
const GONE_WITHIN: Duration = Duration::from_secs(2);

/// `weave-rs run --label <lab label> ARGS...` on `h` (the addresses, if
/// any, come first in `args`).
fn wrun(h: &Host, c: &DockerContainers, args: &[&str]) -> Output {
    let label = c.label();
    let mut argv = vec!["run"];
    let specs = args.iter().take_while(|a| !a.starts_with('-')).count();
    argv.extend_from_slice(&args[..specs]);
    argv.extend_from_slice(&["--label", &label]);
    argv.extend_from_slice(&args[specs..]);
    h.weave(&argv)
}

/// `weave-rs run ADDR -d --name NAME [EXTRA...] busybox sleep 3600` on `h`.
#[track_caller]
fn run_sleeper(h: &Host, c: &DockerContainers, addr: &str, name: &str, extra: &[&str]) {
    let mut args = vec![addr, "-d", "--name", name];
    args.extend_from_slice(extra);
    args.extend_from_slice(&[BUSYBOX, "sleep", "3600"]);
    wrun(h, c, &args).ok();
}

fn fqdn(name: &str) -> String {
    format!("{name}.{DOMAIN}")
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// `dns-lookup NAME` on `h`: the addresses it would answer (empty when it
/// says there is no such name). Any other failure panics.
#[track_caller]
fn lookup(h: &Host, name: &str) -> Vec<IpAddr> {
    let out = h.weave(&["dns-lookup", name]);
    if !out.success() {
        if out.stderr.contains("no such name") {
            return Vec::new();
        }
        panic!("dns-lookup {name} on {} failed:\n{out}", h.name());
    }
    let mut v: Vec<IpAddr> = out
        .stdout
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| {
            l.parse()
                .unwrap_or_else(|e| panic!("dns-lookup {name} on {}: {l:?}: {e}", h.name()))
        })
        .collect();
    v.sort();
    v
}

/// Does `h`'s report (`dns.records`) list any record named `name`?
#[track_caller]
fn reported(h: &Host, name: &str) -> bool {
    let want = format!("{}.", fqdn(name));
    let r = h.status_json();
    let recs = r.raw["dns"]["records"]
        .as_array()
        .unwrap_or_else(|| panic!("report on {} has no dns.records: {}", h.name(), r.raw));
    recs.iter()
        .filter_map(|rec| rec["name"].as_str())
        .any(|n| n.trim_end_matches('.') == want.trim_end_matches('.'))
}

/// Waits until every host in `hosts` looks `name` up as exactly `addrs`;
/// returns how long that took.
#[track_caller]
fn wait_named(hosts: &[&Host], name: &str, addrs: &[IpAddr], timeout: Duration) -> Duration {
    let mut want = addrs.to_vec();
    want.sort();
    let t = Instant::now();
    let ok = try_wait_until(timeout, || hosts.iter().all(|h| lookup(h, name) == want));
    if !ok {
        let seen: Vec<String> = hosts
            .iter()
            .map(|h| format!("{}: {:?}", h.name(), lookup(h, name)))
            .collect();
        panic!(
            "timed out after {timeout:?} waiting until every host looks {name} up as {want:?}; \
             now {}",
            seen.join(", ")
        );
    }
    t.elapsed()
}

/// Polls from now until no host of `hosts` answers `name` with `addr`
/// (any address when None); returns how long that took, or panics after
/// `timeout` saying which hosts still do. Each host is polled until it has
/// dropped the name once; the figure is the latest of the hosts.
#[track_caller]
fn time_until_gone(
    hosts: &[&Host],
    name: &str,
    addr: Option<IpAddr>,
    timeout: Duration,
) -> Duration {
    let t = Instant::now();
    let mut gone_at: Vec<Option<Duration>> = vec![None; hosts.len()];
    let has = |h: &Host| {
        let v = lookup(h, name);
        match addr {
            Some(a) => v.contains(&a),
            None => !v.is_empty(),
        }
    };
    loop {
        for (i, h) in hosts.iter().enumerate() {
            if gone_at[i].is_none() && !has(h) {
                gone_at[i] = Some(t.elapsed());
            }
        }
        if gone_at.iter().all(Option::is_some) {
            let per_host: Vec<String> = hosts
                .iter()
                .zip(&gone_at)
                .map(|(h, d)| format!("{} {:.2}s", h.name(), d.unwrap().as_secs_f64()))
                .collect();
            eprintln!("{name} gone: {}", per_host.join(", "));
            return gone_at.iter().map(|d| d.unwrap()).max().unwrap();
        }
        if t.elapsed() > timeout {
            let still: Vec<&str> = hosts
                .iter()
                .zip(&gone_at)
                .filter(|(_, d)| d.is_none())
                .map(|(h, _)| h.name())
                .collect();
            panic!("{name} still answered on {still:?} {timeout:?} after it should have gone");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Asserts that no host of `hosts` answers `name` (with `addr`, or at all)
/// at any time during `hold`.
#[track_caller]
fn assert_stays_gone(hosts: &[&Host], name: &str, addr: Option<IpAddr>, hold: Duration) {
    let t = Instant::now();
    while t.elapsed() < hold {
        for h in hosts {
            let v = lookup(h, name);
            let back = match addr {
                Some(a) => v.contains(&a),
                None => !v.is_empty(),
            };
            assert!(
                !back,
                "{name} came back on {} after {:.2}s: {v:?}",
                h.name(),
                t.elapsed().as_secs_f64()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Launches a chain h1 - h2 - h3 (each with the address of the one
/// before it) and waits until h2 is connected to both ends.
fn launch_chain(hosts: &[Host]) {
    let (h1, h2, h3) = (&hosts[0], &hosts[1], &hosts[2]);
    h1.launch(NO_ARGS);
    h2.launch(&[h1.addr_for(h2).to_string()]);
    h3.launch(&[h2.addr_for(h3).to_string()]);
    wait_until(
        secs(30),
        "h2 has established connections to h1 and h3",
        || {
            let r = h2.status_json();
            r.established_to(h1) && r.established_to(h3)
        },
    );
}

/// dig run in the network namespace of the container whose main process
/// is `pid` (the container has no dig), at the DNS address.
fn dig_in_container(pid: &str, args: &[&str]) -> Result<DigResult, String> {
    let mut c = std::process::Command::new("nsenter");
    c.args(["-t", pid, "-n"]);
    c.args(netns_tests::dns::dig_argv(DNS, args));
    let out = cmd::run_cmd(c, netns_tests::dns::DIG_TIMEOUT);
    if !out.success() {
        return Err(out.to_string());
    }
    DigResult::parse(&out.stdout).map_err(|e| format!("{e}:\n{out}"))
}

/// Redis answers inside its own container (it is listening).
fn redis_ready(name: &str) -> bool {
    let mut c = std::process::Command::new("docker");
    c.args(["exec", name, "redis-cli", "ping"]);
    cmd::run_cmd(c, secs(5)).stdout.contains("PONG")
}

#[test]
fn redis_by_name_across_a_relay() {
    require_images(&[REDIS]);
    let lab = Lab::new();
    let containers = DockerContainers(lab.prefix().to_string());
    let hosts = lab.chain(3);
    let (h1, h3) = (&hosts[0], &hosts[2]);
    lab.step("launch the chain h1 - h2 - h3");
    launch_chain(&hosts);

    lab.step("redis named <prefix>db on h1");
    let db = format!("{}db", lab.prefix());
    wrun(
        h1,
        &containers,
        &[
            "10.2.1.1/24",
            "-d",
            "--name",
            &db,
            REDIS,
            "redis-server",
            "--protected-mode",
            "no",
        ],
    )
    .ok();
    let took = wait_named(&[h1, h3], &db, &[ip("10.2.1.1")], secs(15));
    eprintln!(
        "{db} known on h3 {:.2}s after run -d returned",
        took.as_secs_f64()
    );
    let r = dig(h3, DNS, &[&fqdn(&db), "A"]);
    assert_eq!(
        r.addrs(),
        vec![ip("10.2.1.1")],
        "h3's DNS server on {DNS} does not answer {db}:\n{}",
        r.raw
    );
    wait_until(secs(20), &format!("redis listens in {db}"), || {
        redis_ready(&db)
    });

    lab.step("a container on h3 gets answers from its router over ethwe (UDP and TCP)");
    let cli = format!("{}cli", lab.prefix());
    run_sleeper(h3, &containers, "10.2.1.3/24", &cli, &[]);
    let pid = cmd::sh(&["docker", "inspect", "-f", "{{.State.Pid}}", &cli]);
    let pid = pid.trim();
    for transport in ["+notcp", "+tcp"] {
        let mut last = String::new();
        let answered = try_wait_until(secs(10), || {
            match dig_in_container(pid, &[transport, &fqdn(&db), "A"]) {
                Ok(r) if r.addrs() == vec![ip("10.2.1.1")] => true,
                Ok(r) => {
                    last = r.raw;
                    false
                }
                Err(e) => {
                    last = e;
                    false
                }
            }
        });
        assert!(
            answered,
            "a container on h3 ({cli}) gets no answer for {db} from {DNS} ({transport}): \
             the DNS server's reply does not come back over ethwe\n{last}"
        );
    }

    lab.step("weave-rs run --rm redis-cli -h <prefix>db ping on h3");
    // The overlay path through the relay may take a moment after the name
    // arrived: two tries, but the name itself must always resolve.
    let mut tries = 0;
    let out = loop {
        tries += 1;
        let out = wrun(
            h3,
            &containers,
            &[
                &format!("10.2.1.{}/24", 10 + tries),
                "--rm",
                REDIS,
                "redis-cli",
                "-h",
                &db,
                "ping",
            ],
        );
        let all = format!("{}{}", out.stdout, out.stderr);
        assert!(
            !all.contains("Name or service not known")
                && !all.contains("Temporary failure in name resolution")
                && !all.contains("nodename nor servname"),
            "the container on h3 could not resolve {db}:\n{out}"
        );
        if out.stdout.contains("PONG") || tries >= 2 {
            break out;
        }
        eprintln!("try {tries} got no PONG:\n{out}");
    };
    assert!(
        out.stdout.contains("PONG"),
        "no PONG from {db} on h1 after {tries} tries:\n{out}"
    );
    eprintln!("PONG from {db} by name, from h3, try {tries}");
}

#[test]
fn two_webs_rotate_and_go_on_rm() {
    require_images(&[BUSYBOX]);
    let lab = Lab::new();
    let containers = DockerContainers(lab.prefix().to_string());
    let hosts = lab.chain(3);
    let (h1, h2, h3) = (&hosts[0], &hosts[1], &hosts[2]);
    lab.step("launch the chain h1 - h2 - h3");
    launch_chain(&hosts);

    lab.step("two containers with the hostname <prefix>web.weave.local, on h1 and h2");
    let web = format!("{}web", lab.prefix());
    let web_host = fqdn(&web);
    let (w1, w2) = (
        format!("{}-web1", lab.prefix()),
        format!("{}-web2", lab.prefix()),
    );
    let (a1, a2) = (ip("10.2.1.1"), ip("10.2.1.2"));
    run_sleeper(h1, &containers, "10.2.1.1/24", &w1, &["-h", &web_host]);
    run_sleeper(h2, &containers, "10.2.1.2/24", &w2, &["-h", &web_host]);
    wait_named(&[h1, h2, h3], &web, &[a1, a2], secs(15));
    wait_named(&[h1, h2, h3], &w1, &[a1], secs(5));

    lab.step("dig from h3 returns both, in an order that changes");
    let mut orders = BTreeSet::new();
    for _ in 0..12 {
        let r = dig(h3, DNS, &[&web_host, "A"]);
        assert_eq!(r.status, "NOERROR", "{}", r.raw);
        assert_eq!(r.addrs(), vec![a1, a2], "both webs expected:\n{}", r.raw);
        orders.insert(r.answer_data("A"));
    }
    eprintln!("orders seen in 12 queries: {orders:?}");
    assert!(
        orders.len() >= 2,
        "the two addresses always came in the same order: {orders:?}"
    );

    lab.step("docker rm -f the web on h1: its address goes from every host within 2 s");
    cmd::sh(&["docker", "rm", "-f", &w1]);
    let took = time_until_gone(&[h1, h2, h3], &web, Some(a1), secs(10));
    eprintln!(
        "{web} lost {a1} on every host {:.2}s after docker rm -f returned",
        took.as_secs_f64()
    );
    assert!(
        took <= GONE_WITHIN,
        "{a1} was still answered {:.2}s after docker rm -f (bound {GONE_WITHIN:?})",
        took.as_secs_f64()
    );
    time_until_gone(&[h1, h2, h3], &w1, None, secs(2));
    for h in [h1, h2, h3] {
        assert_eq!(
            lookup(h, &web),
            vec![a2],
            "{} should still answer the other web",
            h.name()
        );
    }
    let r = dig(h3, DNS, &[&web_host, "A"]);
    assert_eq!(r.addrs(), vec![a2], "dig on h3 after rm -f:\n{}", r.raw);
}

#[test]
fn killed_router_takes_its_names_and_brings_them_back() {
    require_images(&[BUSYBOX]);
    let lab = Lab::new();
    let containers = DockerContainers(lab.prefix().to_string());
    let hosts = lab.switched_hosts(3);
    let (h1, h2, h3) = (&hosts[0], &hosts[1], &hosts[2]);
    lab.step("launch a full mesh of three");
    launch_mesh(&hosts);

    lab.step("a container on h1 and one on h2; a manual name on h2");
    let (s1, s2) = (
        format!("{}-svc1", lab.prefix()),
        format!("{}-svc2", lab.prefix()),
    );
    let (a1, a2) = (ip("10.2.1.1"), ip("10.2.1.2"));
    run_sleeper(h1, &containers, "10.2.1.1/24", &s1, &[]);
    run_sleeper(h2, &containers, "10.2.1.2/24", &s2, &[]);
    let manual = format!("{}-manual", lab.prefix());
    let manual_addr = ip("10.2.1.99");
    h2.weave_ok(&["dns-add", "10.2.1.99", &fqdn(&manual)]);
    wait_named(&[h1, h2, h3], &s1, &[a1], secs(15));
    wait_named(&[h1, h2, h3], &s2, &[a2], secs(15));
    wait_named(&[h1, h2, h3], &manual, &[manual_addr], secs(15));

    lab.step("kill -9 h2's router");
    let killed = h2.kill_router();
    let t = Instant::now();
    eprintln!("killed h2's router: pids {killed:?}");
    let hidden = time_until_gone(&[h1, h3], &s2, None, secs(30));
    time_until_gone(&[h1, h3], &manual, None, secs(30));
    let hidden_all = t.elapsed();
    eprintln!(
        "h2's names hidden on h1 and h3 {:.2}s after kill -9 ({:.2}s for the container's)",
        hidden_all.as_secs_f64(),
        hidden.as_secs_f64()
    );
    assert!(
        hidden_all <= secs(15),
        "h2's names were answered for {:.2}s after its router died (bound 15 s)",
        hidden_all.as_secs_f64()
    );
    for h in [h1, h3] {
        assert_eq!(lookup(h, &s1), vec![a1], "{} lost h1's name", h.name());
    }
    let r = dig(h3, DNS, &[&fqdn(&s2), "A"]);
    assert!(
        r.addrs().is_empty(),
        "h3's server still answers {s2}:\n{}",
        r.raw
    );

    lab.step("relaunch h2: its container's name comes back, the manual one does not");
    h2.relaunch();
    let t = Instant::now();
    wait_named(&[h1, h2, h3], &s2, &[a2], secs(20));
    eprintln!(
        "{s2} back on every host {:.2}s after the relaunch returned",
        t.elapsed().as_secs_f64()
    );
    assert_stays_gone(&[h1, h2, h3], &manual, None, secs(5));
    for h in [h1, h2, h3] {
        assert!(
            !reported(h, &manual),
            "{}'s report lists the dead incarnation's {manual}",
            h.name()
        );
        assert_eq!(lookup(h, &s1), vec![a1], "{} lost h1's name", h.name());
    }
    let r = dig(h1, DNS, &[&fqdn(&manual), "A"]);
    assert_eq!(r.status, "NXDOMAIN", "h1 answers {manual}:\n{}", r.raw);
}

#[test]
fn died_young_leaves_nothing() {
    require_images(&[BUSYBOX]);
    let lab = Lab::new();
    let containers = DockerContainers(lab.prefix().to_string());
    let hosts = lab.switched_hosts(2);
    let (h1, h2) = (&hosts[0], &hosts[1]);
    lab.step("launch two routers");
    launch_mesh(&hosts);

    lab.step("run a container that exits at once");
    let short = format!("{}short", lab.prefix());
    let out = wrun(
        h1,
        &containers,
        &["10.2.1.1/24", "--name", &short, BUSYBOX, "true"],
    );
    assert_eq!(out.code(), Some(0), "run ... true:\n{out}");
    let took = time_until_gone(&[h1, h2], &short, None, secs(10));
    eprintln!(
        "{short} unnamed on both hosts {:.2}s after run returned",
        took.as_secs_f64()
    );
    assert!(
        took <= GONE_WITHIN,
        "{short} was answered {:.2}s after it exited (bound {GONE_WITHIN:?})",
        took.as_secs_f64()
    );
    assert_stays_gone(&[h1, h2], &short, None, secs(3));
    for h in [h1, h2] {
        assert!(
            !reported(h, &short),
            "{}'s report still lists {short}",
            h.name()
        );
        let status = h.weave_ok(&["status", "dns"]);
        assert!(
            !status.contains(&short),
            "status dns on {} lists {short}:\n{status}",
            h.name()
        );
    }

    lab.step("docker stop takes a running container's name");
    let stop = format!("{}stop", lab.prefix());
    let a = ip("10.2.1.2");
    run_sleeper(h1, &containers, "10.2.1.2/24", &stop, &[]);
    wait_named(&[h1, h2], &stop, &[a], secs(15));
    cmd::sh(&["docker", "stop", "-t", "1", &stop]);
    let took = time_until_gone(&[h1, h2], &stop, None, secs(10));
    eprintln!(
        "{stop} unnamed on both hosts {:.2}s after docker stop returned",
        took.as_secs_f64()
    );
    assert!(
        took <= GONE_WITHIN,
        "{stop} was answered {:.2}s after docker stop (bound {GONE_WITHIN:?})",
        took.as_secs_f64()
    );

    lab.step("docker start brings it back (re-attached, named again)");
    cmd::sh(&["docker", "start", &stop]);
    let took = wait_named(&[h1, h2], &stop, &[a], secs(15));
    eprintln!(
        "{stop} named again on both hosts {:.2}s after docker start returned",
        took.as_secs_f64()
    );
    let r = dig(h2, DNS, &[&fqdn(&stop), "A"]);
    assert_eq!(
        r.addrs(),
        vec![a],
        "h2's server after docker start:\n{}",
        r.raw
    );
}

#[test]
fn same_name_on_two_engines() {
    require_images(&[BUSYBOX]);
    let lab = Lab::new();
    let containers = DockerContainers(lab.prefix().to_string());
    let hosts = lab.chain(3);
    let (h1, h2, h3) = (&hosts[0], &hosts[1], &hosts[2]);
    lab.step("a second Docker engine in h2 (DOCKER_HOST for h2's router and commands)");
    // After the hosts: it drops (removing its containers) before them.
    let engine = DockerEngine::start(h2, &[BUSYBOX]);
    eprintln!(
        "h2's engine answered {:.2}s after dockerd started ({})",
        engine.started_in().as_secs_f64(),
        engine.docker_host()
    );
    lab.step("launch the chain h1 - h2 - h3");
    launch_chain(&hosts);

    lab.step("a container named <prefix>web on h1 (machine's engine) and one on h2 (its own)");
    let web = format!("{}web", lab.prefix());
    let web_host = fqdn(&web);
    let (a1, a2) = (ip("10.2.1.1"), ip("10.2.1.2"));
    run_sleeper(h1, &containers, "10.2.1.1/24", &web, &[]);
    run_sleeper(h2, &containers, "10.2.1.2/24", &web, &[]);
    let id1 = cmd::sh(&["docker", "inspect", "-f", "{{.Id}}", &web]);
    let id2 = engine.docker_ok(&["inspect", "-f", "{{.Id}}", &web]);
    assert_ne!(id1.trim(), id2.trim(), "one container, not two");
    // The waiter (bind-mounted from /var/lib/weave-rs/run, which the
    // engine's own mount namespace sees) saw ethwe and exec'd the command.
    let pid2 = engine.docker_ok(&["inspect", "-f", "{{.State.Pid}}", &web]);
    let pid2 = pid2.trim();
    let ethwe = cmd::sh(&[
        "nsenter", "-t", pid2, "-n", "ip", "-o", "-4", "addr", "show",
    ]);
    assert!(
        ethwe.contains("ethwe") && ethwe.contains("10.2.1.2/24"),
        "h2's {web} has no ethwe with 10.2.1.2:\n{ethwe}"
    );
    wait_until(
        secs(10),
        &format!("h2's {web} runs its own command"),
        || std::fs::read_to_string(format!("/proc/{pid2}/comm")).is_ok_and(|c| c.trim() == "sleep"),
    );
    let took = wait_named(&[h1, h2, h3], &web, &[a1, a2], secs(15));
    eprintln!(
        "{web} known as both addresses on every host {:.2}s after the second run -d",
        took.as_secs_f64()
    );

    lab.step("dig from h3 returns both, in an order that changes");
    let mut orders = BTreeSet::new();
    for _ in 0..12 {
        let r = dig(h3, DNS, &[&web_host, "A"]);
        assert_eq!(r.status, "NOERROR", "{}", r.raw);
        assert_eq!(r.addrs(), vec![a1, a2], "both webs expected:\n{}", r.raw);
        orders.insert(r.answer_data("A"));
    }
    eprintln!("orders seen in 12 queries: {orders:?}");
    assert!(
        orders.len() >= 2,
        "the two addresses always came in the same order: {orders:?}"
    );

    lab.step("docker -H <h2's engine> rm -f <prefix>web: h2's address goes from every host");
    engine.docker_ok(&["rm", "-f", &web]);
    let took = time_until_gone(&[h1, h2, h3], &web, Some(a2), secs(10));
    eprintln!(
        "{web} lost {a2} on every host {:.2}s after docker rm -f returned",
        took.as_secs_f64()
    );
    assert!(
        took <= GONE_WITHIN,
        "{a2} was still answered {:.2}s after docker rm -f (bound {GONE_WITHIN:?})",
        took.as_secs_f64()
    );
    for h in [h1, h2, h3] {
        assert_eq!(
            lookup(h, &web),
            vec![a1],
            "{} should still answer h1's web",
            h.name()
        );
    }
    let r = dig(h3, DNS, &[&web_host, "A"]);
    assert_eq!(r.addrs(), vec![a1], "dig on h3 after rm -f:\n{}", r.raw);
    assert!(
        cmd::run(&["docker", "inspect", &web]).success(),
        "the machine's {web} should be untouched"
    );
}

/// Acceptance 4's container checks: a container run with an IPv4 and an
/// IPv6 address answers A and AAAA under its name, PTR for both
/// addresses, and the name is found whatever its case; on another host.
#[test]
fn a_container_with_ipv6_answers_aaaa_and_ptr() {
    require_images(&[BUSYBOX]);
    let lab = Lab::new();
    let containers = DockerContainers(lab.prefix().to_string());
    let hosts = lab.switched_hosts(2);
    let (h1, h2) = (&hosts[0], &hosts[1]);
    launch_mesh(&hosts);

    let name = format!("{}six", lab.prefix());
    let (v4, v6) = (ip("10.2.1.5"), ip("fd00:2::5"));
    wrun(
        h1,
        &containers,
        &[
            "10.2.1.5/24",
            "fd00:2::5/64",
            "-d",
            "--name",
            &name,
            BUSYBOX,
            "sleep",
            "3600",
        ],
    )
    .ok();
    wait_named(&[h1, h2], &name, &[v4, v6], secs(15));

    let a = dig(h2, DNS, &[&fqdn(&name), "A"]);
    assert_eq!(a.addrs(), vec![v4], "A on h2:\n{}", a.raw);
    let aaaa = dig(h2, DNS, &[&fqdn(&name), "AAAA"]);
    assert_eq!(aaaa.addrs(), vec![v6], "AAAA on h2:\n{}", aaaa.raw);
    let upper = dig(h2, DNS, &[&fqdn(&name).to_ascii_uppercase(), "AAAA"]);
    assert_eq!(upper.addrs(), vec![v6], "AAAA, upper case:\n{}", upper.raw);
    for addr in ["10.2.1.5", "fd00:2::5"] {
        let ptr = dig(h2, DNS, &["-x", addr]);
        assert_eq!(
            ptr.answer_data("PTR"),
            vec![format!("{}.", fqdn(&name))],
            "PTR {addr} on h2:\n{}",
            ptr.raw
        );
    }
}
