//! The CNI plugin driven as the spec drives it (CNI_COMMAND and the other
//! variables, the config on stdin), at every version it speaks, against a
//! real router in a host namespace: results in each version's shape,
//! idempotent ADD and DEL, CHECK, GC and STATUS, the spec's error codes
//! for bad input, and a router that is down or dies mid-call.

use std::time::{Duration, Instant};

use ipnetwork::IpNetwork;
use netns_tests::cni_driver::*;
use netns_tests::*;
use serde_json::{json, Value};

const VERSIONS: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

fn conf(version: &str) -> Value {
    json!({"cniVersion": version, "name": "weave-rs", "type": "weave-rs-cni"})
}

#[test]
fn conformance_at_every_version() {
    let lab = Lab::new();
    let h = lab.host("h1");
    h.launch(&["--ipalloc-init", "consensus=1"]);
    let p = Plugin::new(&lab, &h);
    let range: IpNetwork = "10.32.0.0/12".parse().unwrap();

    lab.step("VERSION lists every version");
    let v = p.call("VERSION", &conf("1.1.0"), &[]);
    assert_eq!(
        v.must_succeed("VERSION")["supportedVersions"],
        json!(VERSIONS),
    );

    for (i, version) in VERSIONS.iter().enumerate() {
        lab.step(&format!(
            "cniVersion {version}: ADD, ADD again, CHECK, DEL, DEL again"
        ));
        let c = Container::new(&h);
        let id = format!("conformance{i}");
        let cf = conf(version);
        let add = p.op("ADD", &cf, &id, "eth0", &c.path());
        let r = add.must_succeed("ADD").clone();
        assert_eq!(r["cniVersion"], *version, "{r}");
        assert_eq!(r["interfaces"][0]["name"], "eth0", "{r}");
        assert_eq!(r["interfaces"][0]["sandbox"], c.path(), "{r}");
        let mac = r["interfaces"][0]["mac"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert_eq!(mac.len(), 17, "no MAC in {r}");
        let ip = &r["ips"][0];
        assert_eq!(ip["interface"], 0, "{r}");
        let legacy = version.starts_with("0.");
        assert_eq!(ip.get("version").is_some(), legacy, "{version}: {r}");
        if legacy {
            assert_eq!(ip["version"], "4");
        }
        let addr: IpNetwork = ip["address"].as_str().unwrap().parse().unwrap();
        assert!(range.contains(addr.ip()), "{addr} outside {range}");
        assert_eq!(r["dns"]["nameservers"], json!(["169.254.53.53"]), "{r}");
        // The host, exposed in the subnet, is the pod's gateway.
        let gw = ip["gateway"]
            .as_str()
            .unwrap_or_else(|| panic!("no gateway in {r}"));
        assert_eq!(r["routes"], json!([{"dst": "0.0.0.0/0", "gw": gw}]), "{r}");
        let routes = c.ns().run(&["ip", "route", "show", "default"]).ok().stdout;
        assert!(routes.contains(&format!("via {gw} dev eth0")), "{routes}");
        assert!(
            h.weave_ok(&["ps"]).contains(gw),
            "the host is not exposed at {gw}: {}",
            h.weave_ok(&["ps"])
        );
        assert_eq!(
            iface_addrs(&c, "eth0"),
            Some(vec![addr]),
            "eth0 in {} after ADD",
            c.name()
        );
        let key = format!("cni:{id}:eth0");
        assert!(
            h.ipam_allocations()
                .contains(&(key.clone(), addr.to_string())),
            "{key} does not hold {addr}: {:?}",
            h.ipam_allocations()
        );

        let named = h.weave_ok(&["dns-lookup", "pod1.weave.local"]);
        assert!(
            named.contains(&addr.ip().to_string()),
            "K8S_POD_NAME=pod1 is not named {addr}: {named:?}"
        );

        let again = p.op("ADD", &cf, &id, "eth0", &c.path());
        assert_eq!(
            again.must_succeed("the second ADD")["ips"],
            r["ips"],
            "a repeated ADD gave another address"
        );

        let mut with_prev = cf.clone();
        with_prev["prevResult"] = r.clone();
        let check = p.op("CHECK", &with_prev, &id, "eth0", &c.path());
        if *version == "0.3.0" || *version == "0.3.1" {
            assert_eq!(check.code(), 1, "CHECK is not in {version}");
        } else {
            check.must_succeed("CHECK");
        }

        let del = p.op("DEL", &cf, &id, "eth0", &c.path());
        del.must_succeed("DEL");
        assert_eq!(iface_addrs(&c, "eth0"), None, "eth0 still in {}", c.name());
        assert!(
            !h.ipam_allocations().iter().any(|(k, _)| *k == key),
            "{key} still allocated after DEL"
        );
        p.op("DEL", &cf, &id, "eth0", &c.path())
            .must_succeed("a second DEL");

        let gc = p.call("GC", &json!({"cniVersion": version, "name": "weave-rs", "type": "weave-rs-cni", "cni.dev/valid-attachments": []}), &[]);
        let status = p.call("STATUS", &cf, &[]);
        if *version == "1.1.0" {
            gc.must_succeed("GC");
            status.must_succeed("STATUS");
        } else {
            assert_eq!(gc.code(), 1, "GC is not in {version}");
            assert_eq!(status.code(), 1, "STATUS is not in {version}");
        }
    }
}

#[test]
fn bad_input_gets_the_specs_error_codes() {
    let lab = Lab::new();
    let h = lab.host("h1");
    h.launch(&["--ipalloc-init", "consensus=1"]);
    let p = Plugin::new(&lab, &h);
    let c = Container::new(&h);
    let ok = conf("1.0.0");
    let all = |id: &str| {
        vec![
            ("CNI_CONTAINERID", id.to_string()),
            ("CNI_IFNAME", "eth0".to_string()),
            ("CNI_NETNS", c.path()),
        ]
    };
    let call = |cmd: &str, conf: &Value, env: &[(&str, String)]| {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        p.call(cmd, conf, &env)
    };

    lab.step("an unknown version: code 1");
    let e = call("ADD", &conf("9.9.9"), &all("bad1"));
    assert_eq!(e.code(), 1);
    assert!(e.raw.contains("9.9.9"), "{}", e.raw);

    lab.step("a config that is not JSON: code 6");
    let e = p.call("ADD", &Value::String("{not json".into()), &[]);
    assert_eq!(e.code(), 6);

    lab.step("bad values: code 7, naming the field");
    for (field, value) in [
        ("mtu", json!(20)),
        ("subnet", json!("10.32.8.1/24")),
        ("bridge", json!("a/b")),
    ] {
        let mut cf = ok.clone();
        cf[field] = value;
        let e = call("ADD", &cf, &all("bad2"));
        assert_eq!(e.code(), 7, "{field}");
        assert!(e.raw.contains(field), "{field}: {}", e.raw);
    }

    lab.step("a missing variable: code 4, naming it");
    let e = call("ADD", &ok, &all("bad3")[..2]);
    assert_eq!(e.code(), 4);
    assert!(e.raw.contains("CNI_NETNS"), "{}", e.raw);
    let e = call("ADD", &ok, &[("CNI_CONTAINERID", "x".into())]);
    assert_eq!(e.code(), 4);
    let e = p.call("FROB", &ok, &[]);
    assert_eq!(e.code(), 4, "an unknown CNI_COMMAND");

    lab.step("a missing network namespace: code 3, nothing allocated");
    let gone = format!("/var/run/netns/{}-gone", lab.prefix());
    let mut env = all("bad4");
    env[2].1 = gone;
    let e = call("ADD", &ok, &env);
    assert_eq!(e.code(), 3);
    assert!(cni_allocations(&h).is_empty(), "{:?}", cni_allocations(&h));

    lab.step(
        "an mtu above the overlay's and another bridge: refused by the router, nothing allocated",
    );
    let mut cf = ok.clone();
    cf["mtu"] = json!(9000);
    let e = call("ADD", &cf, &all("bad5"));
    assert!(e.code() >= 100, "{}", e.raw);
    assert!(e.raw.contains("mtu 9000"), "{}", e.raw);
    let mut cf = ok.clone();
    cf["bridge"] = json!("notweave");
    let e = call("ADD", &cf, &all("bad6"));
    assert!(e.raw.contains("notweave"), "{}", e.raw);
    assert!(cni_allocations(&h).is_empty(), "{:?}", cni_allocations(&h));
    assert!(h.router_running(), "the router died on bad input");
}

#[test]
fn check_finds_a_removed_interface() {
    let lab = Lab::new();
    let h = lab.host("h1");
    h.launch(&["--ipalloc-init", "consensus=1"]);
    let p = Plugin::new(&lab, &h);
    let c = Container::new(&h);
    let cf = conf("1.1.0");
    let r = p
        .op("ADD", &cf, "chk", "eth0", &c.path())
        .must_succeed("ADD")
        .clone();
    let mut with_prev = cf.clone();
    with_prev["prevResult"] = r;
    p.op("CHECK", &with_prev, "chk", "eth0", &c.path())
        .must_succeed("CHECK");

    lab.step("remove eth0 behind the plugin's back: CHECK reports it");
    c.ns().run(&["ip", "link", "del", "eth0"]).ok();
    let e = p.op("CHECK", &with_prev, "chk", "eth0", &c.path());
    assert!(e.code() >= 100, "{}", e.raw);
    assert!(e.raw.contains("eth0 is missing"), "{}", e.raw);

    lab.step("an address taken off: CHECK names it");
    let d = Container::new(&h);
    let r = p
        .op("ADD", &cf, "chk2", "eth0", &d.path())
        .must_succeed("ADD")
        .clone();
    let addr = r["ips"][0]["address"].as_str().unwrap().to_string();
    d.ns()
        .run(&["ip", "addr", "del", &addr, "dev", "eth0"])
        .ok();
    let mut with_prev = cf.clone();
    with_prev["prevResult"] = r;
    let e = p.op("CHECK", &with_prev, "chk2", "eth0", &d.path());
    assert!(e.raw.contains(&addr), "{}", e.raw);
}

#[test]
fn gc_releases_what_the_runtime_no_longer_lists() {
    let lab = Lab::new();
    let h = lab.host("h1");
    h.launch(&["--ipalloc-init", "consensus=1"]);
    let p = Plugin::new(&lab, &h);
    let cf = conf("1.1.0");
    let cs: Vec<Container> = (0..3).map(|_| Container::new(&h)).collect();
    for (i, c) in cs.iter().enumerate() {
        p.op("ADD", &cf, &format!("gc{i}"), "eth0", &c.path())
            .must_succeed("ADD");
    }
    assert_eq!(cni_allocations(&h).len(), 3);

    lab.step("GC keeping gc1: gc0 and gc2 go");
    let mut g = cf.clone();
    g["cni.dev/valid-attachments"] = json!([{"containerID": "gc1", "ifname": "eth0"}]);
    p.call("GC", &g, &[]).must_succeed("GC");
    let left: Vec<String> = cni_allocations(&h).into_iter().map(|(k, _)| k).collect();
    assert_eq!(left, ["cni:gc1:eth0"]);
    assert!(
        iface_addrs(&cs[0], "eth0").is_none(),
        "gc0's eth0 survived GC"
    );
    assert!(iface_addrs(&cs[1], "eth0").is_some(), "gc1's eth0 went");

    lab.step("GC with an empty list: everything goes; other allocations stay");
    let other = Container::new(&h);
    h.weave_ok(&["attach", &other.path()]);
    let not_cni = |h: &Host| -> Vec<(String, String)> {
        h.ipam_allocations()
            .into_iter()
            .filter(|(k, _)| !k.starts_with("cni:"))
            .collect()
    };
    let kept = not_cni(&h);
    assert_eq!(kept.len(), 2, "the attach and the host's gateway: {kept:?}");
    g["cni.dev/valid-attachments"] = json!([]);
    p.call("GC", &g, &[]).must_succeed("GC");
    assert!(cni_allocations(&h).is_empty(), "{:?}", cni_allocations(&h));
    assert_eq!(not_cni(&h), kept, "GC took a non-CNI allocation");
    let e = p.call("GC", &cf, &[]);
    assert_eq!(e.code(), 7, "GC without the list");
}

#[test]
fn a_router_that_is_down_or_dies_mid_add() {
    let lab = Lab::new();
    let h = lab.host("h1");
    let p = Plugin::new(&lab, &h);
    let cf = conf("1.1.0");
    let c = Container::new(&h);

    lab.step("before launch: STATUS says not available (50), ADD says try again (11) at once");
    let s = p.call("STATUS", &cf, &[]);
    assert_eq!(s.code(), 50);
    assert!(s.raw.contains("no weave-rs router"), "{}", s.raw);
    let a = p.op("ADD", &cf, "down1", "eth0", &c.path());
    assert_eq!(a.code(), 11);
    assert!(a.took < secs(2), "ADD took {:?} with no router", a.took);

    lab.step(
        "launched, but its quorum of 2 cannot be met: STATUS not ready (50), ADD try again (11)",
    );
    // Two peers must agree on the ring and the second never comes: an
    // allocation waits, which lets the router die in the middle of an ADD.
    h.launch(&["--ipalloc-init", "consensus=2"]);
    let s = p.call("STATUS", &cf, &[]);
    assert_eq!(s.code(), 50, "no ring, and no quorum to make one");
    assert!(s.raw.contains("heard from 1 of 2 peers"), "{}", s.raw);
    let a = p.op("ADD", &cf, "down1", "eth0", &c.path());
    assert_eq!(a.code(), 11, "no ring yet: try again");
    assert!(a.took < secs(10), "ADD waited {:?}", a.took);

    lab.step("kill the router during an ADD: the ADD fails fast with 11");
    let d = Container::new(&h);
    // The router alone (the plugin runs in the same namespace).
    let router = h.router_pids();
    let started = Instant::now();
    let call = std::thread::scope(|s| {
        let t = s.spawn(|| p.op("ADD", &cf, "mid", "eth0", &d.path()));
        std::thread::sleep(Duration::from_millis(1500));
        netns_tests::netns::kill_pids(&router);
        t.join().unwrap()
    });
    let deadline = Instant::now() + secs(5);
    while h.router_running() {
        assert!(Instant::now() < deadline, "the router survived SIGKILL");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(call.code(), 11, "{}", call.raw);
    assert!(
        call.raw.contains("router stopped during the call"),
        "{}",
        call.raw
    );
    assert!(
        started.elapsed() < secs(4),
        "the ADD took {:?}",
        started.elapsed()
    );

    lab.step("relaunch with one peer's consensus; ADD; kill; DEL while down succeeds");
    h.launch_after_kill(&["--ipalloc-init", "consensus=1"]);
    p.call("STATUS", &cf, &[])
        .must_succeed("STATUS after launch");
    let r = p
        .op("ADD", &cf, "down2", "eth0", &d.path())
        .must_succeed("ADD")
        .clone();
    let addr = r["ips"][0]["address"].as_str().unwrap().to_string();
    h.kill_router();
    let del = p.op("DEL", &cf, "down2", "eth0", &d.path());
    del.must_succeed("DEL with the router down");
    assert!(del.took < secs(2), "DEL took {:?}", del.took);

    lab.step("relaunch: the DEL is replayed and the address is free");
    h.relaunch();
    let deadline = Instant::now() + secs(15);
    while cni_allocations(&h)
        .iter()
        .any(|(k, _)| k == "cni:down2:eth0")
    {
        assert!(
            Instant::now() < deadline,
            "{addr} still held after relaunch: {:?}",
            cni_allocations(&h)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn another_ipam_plugin_dns_and_hairpin_from_the_config() {
    let lab = Lab::new();
    let h = lab.host("h1");
    h.launch(&["--ipalloc-init", "consensus=1"]);
    let p = Plugin::new(&lab, &h);
    let c = Container::new(&h);
    let data_dir = lab.dir().join("host-local");

    lab.step("ipam host-local (Debian's, from CNI_PATH): its address, gateway and routes");
    let cf = json!({
        "cniVersion": "1.0.0", "name": "weave-rs", "type": "weave-rs-cni",
        "hairpin": false,
        "dns": {"nameservers": ["10.99.0.53"], "search": ["example.test"]},
        "ipam": {"type": "host-local", "dataDir": data_dir,
                 "ranges": [[{"subnet": "10.99.0.0/24", "gateway": "10.99.0.1"}]],
                 "routes": [{"dst": "10.98.0.0/16"}]}
    });
    let r = p
        .op("ADD", &cf, "other", "eth0", &c.path())
        .must_succeed("ADD with host-local")
        .clone();
    let addr = r["ips"][0]["address"].as_str().unwrap().to_string();
    assert!(addr.starts_with("10.99.0."), "{r}");
    assert_eq!(r["ips"][0]["gateway"], "10.99.0.1", "{r}");
    assert_eq!(r["routes"], json!([{"dst": "10.98.0.0/16"}]), "{r}");
    assert_eq!(
        r["dns"],
        json!({"nameservers": ["10.99.0.53"], "search": ["example.test"]})
    );
    assert_eq!(
        iface_addrs(&c, "eth0"),
        Some(vec![addr.parse().unwrap()]),
        "eth0 has host-local's address"
    );
    let routes = c.ns().run(&["ip", "route"]).ok().stdout;
    assert!(
        routes.contains("10.98.0.0/16 via 10.99.0.1 dev eth0"),
        "host-local's route (via its gateway) is not in the pod: {routes}"
    );
    assert!(
        cni_allocations(&h).is_empty(),
        "weave-rs IPAM allocated with another IPAM plugin named: {:?}",
        cni_allocations(&h)
    );
    let ports = h.ns().run(&["bridge", "-d", "link", "show"]).ok().stdout;
    assert!(!ports.contains("hairpin on"), "hairpin: false, yet {ports}");

    lab.step("DEL: host-local frees its address too (the next ADD may take it)");
    p.op("DEL", &cf, "other", "eth0", &c.path())
        .must_succeed("DEL");
    let held = std::fs::read_dir(data_dir.join("weave-rs"))
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("10.99."))
                .count()
        })
        .unwrap_or(0);
    assert_eq!(held, 0, "host-local still holds an address after DEL");

    lab.step("hairpin on by default");
    let d = Container::new(&h);
    p.op("ADD", &conf("1.0.0"), "hp", "eth0", &d.path())
        .must_succeed("ADD");
    let ports = h.ns().run(&["bridge", "-d", "link", "show"]).ok().stdout;
    assert!(ports.contains("hairpin on"), "{ports}");
}
