//! User errors: one line on stderr ("weave-rs: <what>: <why>") naming the
//! problem, and a non-zero exit.

use netns_tests::*;

/// The command failed with exactly one stderr line that starts with
/// "weave-rs:" and contains every one of `needles` (case-insensitive).
#[track_caller]
fn one_line_error(out: Output, needles: &[&str]) -> String {
    let out = out.err();
    let lines: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert_eq!(lines.len(), 1, "want exactly one line on stderr:\n{out}");
    let line = lines[0];
    assert!(
        line.starts_with("weave-rs:"),
        "want \"weave-rs: <what>: <why>\":\n{out}"
    );
    let lower = line.to_ascii_lowercase();
    for n in needles {
        assert!(
            lower.contains(&n.to_ascii_lowercase()),
            "the error should name {n:?}:\n{out}"
        );
    }
    line.to_string()
}

#[test]
fn attach_without_router() {
    let lab = Lab::new();
    let h1 = lab.switched_host("h1");
    let c = Container::new(&h1);
    let out = h1.weave(&["attach", "10.2.1.1/24", &c.path()]);
    let line = one_line_error(out, &[]);
    let l = line.to_ascii_lowercase();
    assert!(
        l.contains("router") || l.contains("running") || l.contains("launch"),
        "the error should say the router is not running: {line}"
    );
    assert!(!c.ns().has_link("ethwe"), "ethwe appeared without a router");
}

#[test]
fn bad_arguments_with_router_running() {
    let lab = Lab::new();
    let h1 = lab.switched_host("h1");
    h1.launch(NO_ARGS);
    let c = Container::new(&h1);

    // Malformed CIDRs (the target exists, so only the CIDR is wrong).
    for bad in ["10.2.1.300/24", "10.2.1.1/33", "not-a-cidr"] {
        one_line_error(h1.weave(&["attach", bad, &c.path()]), &[bad]);
    }

    // Unknown targets.
    let missing = format!("/var/run/netns/{}nosuch", lab.prefix());
    one_line_error(h1.weave(&["attach", "10.2.1.1/24", &missing]), &[&missing]);
    one_line_error(
        h1.weave(&["attach", "10.2.1.1/24", "pid:999999999"]),
        &["999999999"],
    );

    // Nothing was made by the failed attaches.
    let veths: Vec<String> = h1
        .ns()
        .links()
        .into_iter()
        .filter(|l| l.starts_with("vethwr"))
        .collect();
    assert!(
        veths.is_empty(),
        "failed attaches left links behind: {veths:?}"
    );
    assert!(
        !c.ns().has_link("ethwe"),
        "a failed attach left ethwe in the container"
    );

    // A second launch on a running host.
    let out = h1.try_launch(NO_ARGS).err();
    assert!(
        out.stderr.contains("already running"),
        "second launch should say \"already running\":\n{out}"
    );

    // The first router is unharmed and attach still works.
    h1.status_json();
    h1.attach(&c, "10.2.1.1/24");
    assert!(
        c.ns().has_link("ethwe"),
        "attach succeeded but no ethwe in the container"
    );
}

/// DNS commands: a bad address, a name outside the domain, a name that
/// is not there, and a bare word that names no container each say so,
/// and the router keeps the names it had.
#[test]
fn bad_dns_arguments() {
    let lab = Lab::new();
    let h1 = lab.switched_host("h1");
    h1.launch(&["--resolv-conf", "/dev/null"]);
    h1.weave_ok(&["dns-add", "10.40.0.7", "api.weave.local"]);

    one_line_error(
        h1.weave(&["dns-add", "10.40.0.300", "db.weave.local"]),
        &["10.40.0.300", "not an IP address"],
    );
    one_line_error(
        h1.weave(&["dns-add", "10.40.0.8", "api.example.com"]),
        &["api.example.com", "not in the domain weave.local."],
    );
    one_line_error(
        h1.weave(&["dns-add", "10.40.0.8", "bad name.weave.local"]),
        &["only letters, digits"],
    );
    one_line_error(
        h1.weave(&["dns-add", "api.weave.local"]),
        &["give at least one address"],
    );
    one_line_error(
        h1.weave(&["dns-lookup", "nope.weave.local"]),
        &["nope.weave.local", "no such name"],
    );
    one_line_error(
        h1.weave(&["dns-remove", "10.40.0.9", "api.weave.local"]),
        &["no DNS record of api.weave.local", "10.40.0.9"],
    );
    let nosuch = format!("{}nosuch", lab.prefix());
    one_line_error(
        h1.weave(&["dns-add", "10.40.0.8", &nosuch]),
        &[&nosuch, "a NAME needs a dot"],
    );

    // What was there still is.
    assert_eq!(h1.weave_ok(&["dns-lookup", "api"]).trim(), "10.40.0.7");
}

#[test]
fn bad_setup_cni_arguments() {
    let lab = Lab::new();
    let h1 = lab.switched_host("h1");
    let dir = lab.dir().join("setup-cni");
    let bin = dir.join("bin").display().to_string();
    let conf = dir.join("net.d").display().to_string();
    let with = |extra: &[&str]| {
        let mut a = vec!["setup-cni", "--bin-dir", &bin, "--conf-dir", &conf];
        a.extend_from_slice(extra);
        h1.weave(&a)
    };
    one_line_error(with(&["--cni-version", "9.x"]), &["--cni-version 9.x"]);
    one_line_error(with(&["--cni-version", "0.2.0"]), &["0.3.0 to 1.1.0"]);
    one_line_error(
        with(&["--network", "bad name"]),
        &["--network", "letters, digits"],
    );
    one_line_error(
        with(&["--bridge", "a/b"]),
        &["--bridge", "not an interface name"],
    );
    assert!(
        !dir.join("net.d").exists() && !dir.join("bin").exists(),
        "a refused setup-cni wrote files"
    );
    let out = with(&["--subnet", "10.32.8.0/24"]).ok().stdout;
    assert!(out.contains("weave-rs-cni"), "{out}");
    let list: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("net.d/10-weave-rs.conflist")).unwrap())
            .unwrap();
    assert_eq!(list["cniVersion"], "1.0.0");
    assert_eq!(list["plugins"][0]["type"], "weave-rs-cni");
    assert_eq!(list["plugins"][0]["subnet"], "10.32.8.0/24");
    assert_eq!(list["plugins"][1]["type"], "portmap");
    assert!(dir.join("bin/weave-rs-cni").is_file());
}
