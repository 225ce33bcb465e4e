//! The CNI plugin under a real runtime: podman (CNI backend) in two host
//! namespaces, each with a router, the plugin and its network config put
//! in place by `weave-rs setup-cni`.

use std::net::Ipv4Addr;
use std::time::Instant;

use netns_tests::cni_driver::*;
use netns_tests::*;
use serde_json::json;

const NETWORK: &str = "weave-rs";

/// A podman for `h` whose plugin and network config `setup-cni` wrote.
fn podman_with_cni(h: &Host) -> Podman {
    let state = h.state_dir().display().to_string();
    // The router's state dir reaches every plugin call, DELs from
    // `container cleanup` included, through containers.conf.
    let pm = Podman::for_host_with_env(h, &[("WEAVE_RS_STATE_DIR", &state)]);
    let out = h.weave_ok(&[
        "setup-cni",
        "--bin-dir",
        &pm.plugin_dir().display().to_string(),
        "--conf-dir",
        &pm.cni_config_dir().display().to_string(),
    ]);
    eprintln!("setup-cni on {}: {}", h.name(), out.trim());
    pm
}

fn launch_two(lab: &Lab) -> Vec<Host> {
    let hosts = lab.switched_hosts(2);
    for (i, h) in hosts.iter().enumerate() {
        let mut args = vec!["--ipalloc-init".to_string(), "consensus=2".to_string()];
        args.extend(hosts[..i].iter().map(|p| p.addr_for(h).to_string()));
        h.launch(&args);
    }
    wait_full_mesh(&hosts, secs(30));
    hosts
}

/// `podman run -d --network weave-rs NAME sleep`; its address there.
#[track_caller]
fn run(pm: &Podman, name: &str) -> Ipv4Addr {
    let started = Instant::now();
    pm.run_detached(name, NETWORK, BUSYBOX_IMAGE, &["sleep", "3600"]);
    let ip = pm
        .ip_of(name, NETWORK)
        .unwrap_or_else(|| panic!("{name} has no address on {NETWORK}"));
    eprintln!(
        "podman run {name}: {ip} in {:.2}s",
        started.elapsed().as_secs_f64()
    );
    ip
}

/// `from` pings `to` (an address or a name) within `within`.
#[track_caller]
fn pings(pm: &Podman, from: &str, to: &str, within: Duration) {
    let started = Instant::now();
    loop {
        let out = pm.exec(from, &["ping", "-c", "1", "-W", "1", to]);
        if out.success() {
            eprintln!(
                "{from} -> {to}: answered after {:.2}s",
                started.elapsed().as_secs_f64()
            );
            return;
        }
        if started.elapsed() > within {
            panic!("{from} cannot ping {to} within {within:?}:\n{out}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn podman_containers_on_two_hosts_reach_each_other_by_address_and_name() {
    let lab = Lab::new();
    let hosts = launch_two(&lab);
    let (p1, p2) = (podman_with_cni(&hosts[0]), podman_with_cni(&hosts[1]));
    let (a, b) = (format!("{}a", lab.prefix()), format!("{}b", lab.prefix()));

    lab.step("podman run --network weave-rs on h1 and h2");
    let ip_a = run(&p1, &a);
    let ip_b = run(&p2, &b);
    assert_ne!(ip_a, ip_b);
    for (h, name, ip) in [(&hosts[0], &a, ip_a), (&hosts[1], &b, ip_b)] {
        let held: Vec<(String, String)> = cni_allocations(h);
        assert!(
            held.iter()
                .any(|(k, c)| k.ends_with(":eth0") && c.starts_with(&format!("{ip}/"))),
            "{name}'s {ip} is not a CNI allocation on {}: {held:?}",
            h.name()
        );
    }

    lab.step("by address, both ways");
    pings(&p1, &a, &ip_b.to_string(), secs(10));
    pings(&p2, &b, &ip_a.to_string(), secs(10));

    lab.step("by name (weave-rs DNS, the search domain from the CNI result)");
    let resolv = p1.exec(&a, &["cat", "/etc/resolv.conf"]).ok().stdout;
    assert!(
        resolv.contains("nameserver 169.254.53.53") && resolv.contains("weave.local"),
        "{a}'s resolv.conf: {resolv}"
    );
    pings(&p1, &a, &b, secs(10));
    pings(&p2, &b, &a, secs(10));
    let look = p1
        .exec(
            &a,
            &["nslookup", &format!("{b}.weave.local"), "169.254.53.53"],
        )
        .ok()
        .stdout;
    assert!(look.contains(&ip_b.to_string()), "nslookup {b}: {look}");

    lab.step("h2's router restarts: its pod keeps its address and its name");
    hosts[1].weave_ok(&["stop"]);
    hosts[1].relaunch();
    wait_full_mesh(&hosts, secs(30));
    pings(&p1, &a, &b, secs(15));
    pings(&p2, &b, &a, secs(15));
    assert_eq!(p2.ip_of(&b, NETWORK), Some(ip_b));
}

#[test]
fn podman_rm_releases_and_gc_with_an_empty_list_releases_everything() {
    let lab = Lab::new();
    let hosts = launch_two(&lab);
    let h = &hosts[0];
    let pm = podman_with_cni(h);
    let name = |s: &str| format!("{}{s}", lab.prefix());

    lab.step("podman rm -f releases the address and the name");
    let ip = run(&pm, &name("gone"));
    let dns_has = |n: &str| h.weave_ok(&["dns-lookup", &format!("{n}.weave.local")]);
    assert!(dns_has(&name("gone")).contains(&ip.to_string()));
    pm.rm_f(&name("gone")).ok();
    let deadline = Instant::now() + secs(10);
    while cni_allocations(h)
        .iter()
        .any(|(_, c)| c.starts_with(&format!("{ip}/")))
    {
        assert!(
            Instant::now() < deadline,
            "{ip} still held after rm: {:?}",
            cni_allocations(h)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let look = h.weave(&["dns-lookup", &format!("{}.weave.local", name("gone"))]);
    assert!(
        !look.stdout.contains(&ip.to_string()),
        "the name outlived the container: {look}"
    );

    lab.step("two more containers; a CNI GC with an empty list releases both");
    run(&pm, &name("k1"));
    run(&pm, &name("k2"));
    assert_eq!(cni_allocations(h).len(), 2, "{:?}", cni_allocations(h));
    let plugin = Plugin::at(h, pm.plugin_dir().join("weave-rs-cni"));
    let conf = json!({"cniVersion": "1.1.0", "name": NETWORK, "type": "weave-rs-cni",
                      "cni.dev/valid-attachments": []});
    plugin.call("GC", &conf, &[]).must_succeed("GC");
    assert!(cni_allocations(h).is_empty(), "{:?}", cni_allocations(h));
    let out = pm.exec(&name("k1"), &["ip", "link", "show", "eth0"]);
    assert!(!out.success(), "k1's eth0 survived GC: {out}");
}

#[test]
fn portmap_chained_after_weave_rs_publishes_a_port() {
    let lab = Lab::new();
    let hosts = launch_two(&lab);
    let h = &hosts[0];
    let pm = podman_with_cni(h);
    let web = format!("{}web", lab.prefix());

    lab.step("podman run -p 18080:8080 (portmap, chained in setup-cni's conflist)");
    pm.run_detached_with(
        &web,
        &["--network", NETWORK, "-p", "18080:8080"],
        BUSYBOX_IMAGE,
        &[
            "sh",
            "-c",
            "mkdir -p /www && echo hello-from-the-pod > /www/index.html && exec httpd -f -p 8080 -h /www",
        ],
    );
    let ip = pm.ip_of(&web, NETWORK).expect("no address");

    lab.step("the host's own address, port 18080, reaches the pod's 8080");
    let url = format!("http://{}:18080/index.html", h.ip());
    let started = Instant::now();
    loop {
        let get = format!(
            "printf 'GET /index.html HTTP/1.0\\r\\n\\r\\n' | nc.openbsd -w 2 {} 18080",
            h.ip()
        );
        let out = h.ns().run(&["sh", "-c", &get]);
        if out.success() && out.stdout.contains("hello-from-the-pod") {
            eprintln!(
                "{url} answered by {web} ({ip}) after {:.2}s",
                started.elapsed().as_secs_f64()
            );
            break;
        }
        assert!(
            started.elapsed() < secs(15),
            "{url} never reached {web} ({ip}): {out}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
