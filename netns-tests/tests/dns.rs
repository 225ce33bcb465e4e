//! The router's DNS server (issue 12), with real routers in namespaces and
//! no Docker: namespaces attached with `weave-rs attach` ask
//! 169.254.53.53 (routed over their `ethwe`) with dig.
//!
//! * names added on one host answer on another, across a relay, and go
//!   again when removed (`names_cross_a_relay`);
//! * a name held on two hosts answers both addresses, in rotating order
//!   (`rotation_and_many_hosts`);
//! * AAAA, PTR, NODATA, NXDOMAIN with SOA, case, truncation and the TCP
//!   retry, forwarding to a resolver of the test's own and SERVFAIL when it
//!   is silent (`dig_checks`);
//! * garbage over UDP and TCP, and a query flood, from one namespace leave
//!   another namespace answered and the router's memory flat
//!   (`hostile_queries`);
//! * `--no-dns` (`no_dns_flag`).
//!
//! Every router is launched with `--resolv-conf` naming only resolvers
//! the test runs in its own namespaces (or none), so no query leaves them.

use std::collections::BTreeSet;
use std::io::{ErrorKind, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use netns_tests::wire::{connect, read_until_closed, Rng};
use netns_tests::*;
use serde_json::Value;

/// Where every router answers DNS.
const DNS: &str = "169.254.53.53";
const DNS_ADDR: Ipv4Addr = Ipv4Addr::new(169, 254, 53, 53);
const OFF: &str = "DNS is off on this router (launched with --no-dns)";

/// A resolv.conf in the lab's directory naming `servers` (none: no
/// upstream at all). Returns its path.
fn resolv_conf(lab: &Lab, file: &str, servers: &[Ipv4Addr]) -> String {
    let path = lab.dir().join(file);
    let mut text = String::from("# netns-tests/tests/dns.rs\nsearch example.invalid\n");
    for s in servers {
        text.push_str(&format!("nameserver {s}\n"));
    }
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    path.display().to_string()
}

/// `launch --resolv-conf RESOLV PEERS...`; waits until its DNS server
/// answers. Returns the peer name.
#[track_caller]
fn launch_dns(h: &Host, resolv: &str, peers: &[Ipv4Addr]) -> String {
    let mut args = vec!["--resolv-conf".to_string(), resolv.to_string()];
    args.extend(peers.iter().map(ToString::to_string));
    let name = h.launch(&args);
    wait_dns_up(h);
    name
}

/// Launches `hosts` in a full mesh (each with the hosts before it).
#[track_caller]
fn launch_mesh_dns(hosts: &[Host], resolv: &str) -> Vec<String> {
    let names = hosts
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let peers: Vec<Ipv4Addr> = hosts[..i].iter().map(|p| p.addr_for(h)).collect();
            launch_dns(h, resolv, &peers)
        })
        .collect();
    wait_full_mesh(hosts, secs(30));
    names
}

/// The report's `dns` section.
#[track_caller]
fn dns_report(h: &Host) -> Value {
    h.status_json().raw["dns"].clone()
}

/// `dns.queries.<key>` of the report.
#[track_caller]
fn queries(h: &Host, key: &str) -> u64 {
    let d = dns_report(h);
    d["queries"][key]
        .as_u64()
        .unwrap_or_else(|| panic!("report of {} has no dns.queries.{key}: {d}", h.name()))
}

/// Waits until the report says the DNS server listens (no `error`).
#[track_caller]
fn wait_dns_up(h: &Host) {
    let mut last = Value::Null;
    let up = try_wait_until(secs(10), || {
        last = dns_report(h);
        last["address"] == DNS && last["error"].is_null()
    });
    assert!(
        up,
        "{}'s DNS server is not listening 10 s after launch; report dns: {last}",
        h.name()
    );
}

/// A new namespace attached to `h` with `cidr`.
#[track_caller]
fn client(h: &Host, cidr: &str) -> Container {
    let c = Container::new(h);
    h.attach(&c, cidr);
    c
}

/// Waits until `what` holds of the answer to `dig @169.254.53.53 ARGS`
/// from `from`; returns that answer. The last answer (or dig's error) is
/// in the message on timeout.
#[track_caller]
fn wait_dig(
    from: &Container,
    args: &[&str],
    timeout: Duration,
    what: &str,
    mut ok: impl FnMut(&DigResult) -> bool,
) -> DigResult {
    let mut last = String::from("(no dig ran)");
    let mut got = None;
    let done = try_wait_until(timeout, || match try_dig(from, DNS, args) {
        Ok(r) if ok(&r) => {
            got = Some(r);
            true
        }
        Ok(r) => {
            last = r.raw;
            false
        }
        Err(e) => {
            last = e.to_string();
            false
        }
    });
    match got {
        Some(r) if done => r,
        _ => panic!(
            "timed out after {timeout:?}: dig @{DNS} {} from {}: {what}; last answer:\n{last}",
            args.join(" "),
            from.name()
        ),
    }
}

/// A DNS query: RD set, one question of class IN.
fn query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&1u16.to_be_bytes());
    q
}

const TYPE_A: u16 = 1;

/// A UDP socket that reads everything sent to `addr`:53 in a namespace
/// and never answers: an upstream resolver that stays silent. Stops on
/// drop.
struct SilentUpstream {
    stop: Arc<AtomicBool>,
    got: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl SilentUpstream {
    #[track_caller]
    fn start(at: &impl AsNetns, addr: Ipv4Addr) -> SilentUpstream {
        let stop = Arc::new(AtomicBool::new(false));
        let got = Arc::new(AtomicU64::new(0));
        let (tx, rx) = mpsc::channel();
        let thread = {
            let (stop, got) = (stop.clone(), got.clone());
            at.netns().spawn(move || {
                let s = UdpSocket::bind((addr, 53))
                    .unwrap_or_else(|e| panic!("silent upstream: bind {addr}:53: {e}"));
                s.set_read_timeout(Some(Duration::from_millis(100)))
                    .expect("set read timeout");
                tx.send(()).expect("silent upstream ready");
                let mut buf = vec![0u8; 65_536];
                while !stop.load(Ordering::Relaxed) {
                    if s.recv_from(&mut buf).is_ok() {
                        got.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        };
        if rx.recv_timeout(secs(10)).is_err() {
            match thread.join() {
                Err(p) => std::panic::resume_unwind(p),
                Ok(()) => panic!("silent upstream on {addr}:53 did not start"),
            }
        }
        SilentUpstream {
            stop,
            got,
            thread: Some(thread),
        }
    }

    /// Datagrams received so far.
    fn received(&self) -> u64 {
        self.got.load(Ordering::Relaxed)
    }
}

impl Drop for SilentUpstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn names_cross_a_relay() {
    let lab = Lab::new();
    let hosts = lab.chain(3);
    let (h1, h2, h3) = (&hosts[0], &hosts[1], &hosts[2]);
    let resolv = resolv_conf(&lab, "resolv.conf", &[]);

    lab.step("launch h1 - h2 - h3 (h1 and h3 meet only through h2)");
    let n1 = launch_dns(h1, &resolv, &[]);
    launch_dns(h2, &resolv, &[h1.addr_for(h2)]);
    launch_dns(h3, &resolv, &[h2.addr_for(h3)]);
    wait_until(secs(30), "h2 is established with h1 and with h3", || {
        let r = h2.status_json();
        r.established_to(h1) && r.established_to(h3)
    });
    let c3 = client(h3, "10.40.3.3/24");

    lab.step("dns-add on h1; h3's namespace resolves the name");
    let out = h1.weave_ok(&["dns-add", "10.40.0.7", "api.weave.local"]);
    assert!(out.contains("api.weave.local"), "dns-add printed {out:?}");
    let r = wait_dig(
        &c3,
        &["api.weave.local", "A"],
        secs(15),
        "api.weave.local -> 10.40.0.7",
        |r| r.status == "NOERROR" && r.answer_data("A") == ["10.40.0.7"],
    );
    assert!(r.has_flag("aa"), "not authoritative:\n{}", r.raw);
    assert_eq!(r.answers[0].3, 1, "TTL is not 1:\n{}", r.raw);

    let lookup = h3.weave_ok(&["dns-lookup", "api.weave.local"]);
    assert_eq!(lookup.trim(), "10.40.0.7", "dns-lookup on h3");
    let status = h3.weave_ok(&["status", "dns"]);
    let line = status
        .lines()
        .find(|l| l.contains("api.weave.local"))
        .unwrap_or_else(|| panic!("`status dns` on h3 does not list api.weave.local:\n{status}"));
    assert!(
        line.contains("10.40.0.7") && line.contains(&n1) && !line.contains("unreachable"),
        "`status dns` on h3 should list api.weave.local -> 10.40.0.7 from h1 ({n1}):\n{status}"
    );
    let recs = dns_report(h3)["records"].clone();
    let rec = recs
        .as_array()
        .and_then(|a| a.iter().find(|r| r["name"] == "api.weave.local."))
        .unwrap_or_else(|| panic!("h3's report has no record of api.weave.local.: {recs}"));
    assert_eq!(rec["origin"], n1.as_str(), "{rec}");
    assert_eq!(rec["answered"], true, "{rec}");

    lab.step("dns-remove on h1: gone on h3 within 2 s");
    h1.weave_ok(&["dns-remove", "10.40.0.7", "api.weave.local"]);
    let removed = Instant::now();
    let mut last = String::new();
    let gone = try_wait_until(secs(2), || match try_dig(&c3, DNS, &["api.weave.local"]) {
        Ok(r) => {
            let nx = r.status == "NXDOMAIN";
            last = r.raw;
            nx
        }
        Err(e) => {
            last = e.to_string();
            false
        }
    });
    assert!(
        gone,
        "api.weave.local still answers on h3 {:?} after dns-remove on h1:\n{last}",
        removed.elapsed()
    );
    eprintln!("gone on h3 {:?} after dns-remove", removed.elapsed());
    let r = dig(&c3, DNS, &["api.weave.local"]);
    assert_eq!(r.status, "NXDOMAIN", "{}", r.raw);
    assert!(
        r.authority.iter().any(|a| a.1 == "SOA"),
        "NXDOMAIN without SOA:\n{}",
        r.raw
    );
    assert!(
        h3.weave(&["dns-lookup", "api.weave.local"]).code() != Some(0),
        "dns-lookup on h3 still finds the removed name"
    );
    wait_until(
        secs(5),
        "`status dns` on h3 no longer lists the name",
        || !h3.weave_ok(&["status", "dns"]).contains("api.weave.local"),
    );
}

#[test]
fn rotation_and_many_hosts() {
    let lab = Lab::new();
    let hosts = lab.switched_hosts(3);
    let resolv = resolv_conf(&lab, "resolv.conf", &[]);
    lab.step("launch three routers");
    let names = launch_mesh_dns(&hosts, &resolv);
    let clients: Vec<Container> = hosts
        .iter()
        .enumerate()
        .map(|(i, h)| client(h, &format!("10.40.5.{}/24", i + 1)))
        .collect();

    lab.step("web.weave.local on h1 (10.40.0.11) and h2 (10.40.0.12)");
    hosts[0].weave_ok(&["dns-add", "10.40.0.11", "web.weave.local"]);
    hosts[1].weave_ok(&["dns-add", "10.40.0.12", "web.weave.local"]);
    let both = ["10.40.0.11", "10.40.0.12"];
    let both_addrs: Vec<std::net::IpAddr> = both.iter().map(|a| a.parse().unwrap()).collect();
    for c in &clients {
        wait_dig(
            c,
            &["web.weave.local", "A"],
            secs(15),
            "both addresses of web.weave.local",
            |r| r.status == "NOERROR" && r.addrs() == both_addrs,
        );
    }

    lab.step("the order rotates from one query to the next");
    let mut firsts = BTreeSet::new();
    let mut orders = Vec::new();
    for _ in 0..6 {
        let r = dig(&clients[2], DNS, &["web.weave.local", "A"]);
        assert_eq!(r.addrs(), both_addrs, "{}", r.raw);
        let order = r.answer_data("A");
        firsts.insert(order[0].clone());
        orders.push(order);
    }
    assert_eq!(
        firsts.len(),
        2,
        "the first address never changed over 6 queries: {orders:?}"
    );

    let status = hosts[2].weave_ok(&["status", "dns"]);
    for (addr, origin) in both.iter().zip(&names) {
        assert!(
            status
                .lines()
                .any(|l| l.contains("web.weave.local") && l.contains(addr) && l.contains(origin)),
            "`status dns` on h3 should list web.weave.local -> {addr} from {origin}:\n{status}"
        );
    }
}

#[test]
fn dig_checks() {
    let lab = Lab::new();
    let h1 = lab.host("h1");
    let h2 = lab.host("h2");
    let up = lab.host("up"); // the upstream resolvers' namespace: no router
    let (_, up1) = lab.link(&h1, &up);
    let (_, up2) = lab.link(&h2, &up);
    lab.step(&format!(
        "dnsmasq on {up1} (h1's upstream), silence on {up2} (h2's)"
    ));
    let dnsmasq = DnsmasqUpstream::start(
        &up,
        &up1.to_string(),
        &[
            ("upstream.example.test", "10.9.9.9"),
            ("ready.example.test", "10.9.9.1"),
        ],
    );
    let silent = SilentUpstream::start(&up, up2);

    lab.step("launch h1 and h2 (not peers)");
    launch_dns(&h1, &resolv_conf(&lab, "resolv-h1.conf", &[up1]), &[]);
    launch_dns(&h2, &resolv_conf(&lab, "resolv-h2.conf", &[up2]), &[]);
    let c1 = client(&h1, "10.40.1.1/24");
    let c2 = client(&h2, "10.40.2.1/24");
    let upstream = dns_report(&h1)["upstream"].clone();
    assert!(
        upstream.to_string().contains(&up1.to_string()),
        "h1's report does not name {up1} as upstream: {upstream}"
    );

    h1.weave_ok(&["dns-add", "10.40.0.7", "api.weave.local"]);
    h1.weave_ok(&["dns-add", "fd00::5", "six.weave.local"]);
    let big: Vec<String> = (1..=100).map(|i| format!("10.41.0.{i}")).collect();
    let mut argv = vec!["dns-add".to_string()];
    argv.extend(big.iter().cloned());
    argv.push("big.weave.local".into());
    h1.weave_ok(&argv);

    lab.step("A, authoritative, TTL 1");
    let r = wait_dig(
        &c1,
        &["api.weave.local", "A"],
        secs(10),
        "api.weave.local -> 10.40.0.7",
        |r| r.status == "NOERROR" && !r.answers.is_empty(),
    );
    assert_eq!(r.answer_data("A"), ["10.40.0.7"], "{}", r.raw);
    assert!(r.has_flag("aa"), "{}", r.raw);
    assert_eq!(r.answers[0].3, 1, "TTL:\n{}", r.raw);
    assert!(
        r.raw.contains("udp: 1232"),
        "EDNS query not answered with EDNS, max UDP payload 1232:\n{}",
        r.raw
    );

    lab.step("AAAA");
    let r = dig(&c1, DNS, &["six.weave.local", "AAAA"]);
    assert_eq!(r.status, "NOERROR", "{}", r.raw);
    assert_eq!(r.answer_data("AAAA"), ["fd00::5"], "{}", r.raw);

    lab.step("PTR, IPv4 and IPv6");
    let r = dig(&c1, DNS, &["-x", "10.40.0.7"]);
    assert_eq!(r.status, "NOERROR", "{}", r.raw);
    assert_eq!(r.answer_data("PTR"), ["api.weave.local."], "{}", r.raw);
    let r = dig(&c1, DNS, &["-x", "fd00::5"]);
    assert_eq!(r.answer_data("PTR"), ["six.weave.local."], "{}", r.raw);

    lab.step("NODATA: AAAA of an IPv4-only name; A of an IPv6-only name");
    for (name, t) in [("api.weave.local", "AAAA"), ("six.weave.local", "A")] {
        let r = dig(&c1, DNS, &[name, t]);
        assert_eq!(r.status, "NOERROR", "{name} {t}:\n{}", r.raw);
        assert!(r.answers.is_empty(), "{name} {t}:\n{}", r.raw);
        assert!(
            r.authority
                .iter()
                .any(|a| a.1 == "SOA" && a.0 == "weave.local."),
            "NODATA for {name} {t} without the zone's SOA:\n{}",
            r.raw
        );
    }

    lab.step("NXDOMAIN with SOA");
    let r = dig(&c1, DNS, &["nothere.weave.local", "A"]);
    assert_eq!(r.status, "NXDOMAIN", "{}", r.raw);
    assert!(r.answers.is_empty(), "{}", r.raw);
    assert!(
        r.authority
            .iter()
            .any(|a| a.1 == "SOA" && a.0 == "weave.local."),
        "NXDOMAIN without the zone's SOA:\n{}",
        r.raw
    );

    lab.step("names are case-insensitive");
    let r = dig(&c1, DNS, &["API.Weave.LOCAL", "A"]);
    assert_eq!(r.status, "NOERROR", "{}", r.raw);
    assert_eq!(r.answer_data("A"), ["10.40.0.7"], "{}", r.raw);

    lab.step("the host itself is answered over UDP and TCP; no routing rule of ours");
    for args in [
        &["api.weave.local", "A"][..],
        &["+tcp", "api.weave.local", "A"],
    ] {
        let r = dig(&h1, DNS, args);
        assert_eq!(r.answer_data("A"), ["10.40.0.7"], "{args:?}:\n{}", r.raw);
    }
    // A rule of its own makes the kernel walk the rule list on every
    // route lookup: replies leave by the bridge without one.
    let rules = h1.ns().ip(&["rule", "show"]);
    assert!(
        !rules.contains("169.254.53.53"),
        "a policy-routing rule for DNS replies:\n{rules}"
    );

    lab.step(
        "with an address of its own on the bridge, the host still answers from the DNS address",
    );
    h1.weave_ok(&["expose", "10.40.1.254/24"]);
    for args in [
        &["api.weave.local", "A"][..],
        &["+tcp", "api.weave.local", "A"],
    ] {
        let r = dig(&c1, DNS, args);
        assert_eq!(r.answer_data("A"), ["10.40.0.7"], "{args:?}:\n{}", r.raw);
    }
    h1.weave_ok(&["hide", "10.40.1.254/24"]);

    lab.step("100 addresses: truncated over UDP, dig retries over TCP");
    let truncated_before = queries(&h1, "truncated");
    let r = dig(&c1, DNS, &["big.weave.local", "A"]);
    assert!(
        r.retried_tcp && r.via_tcp == Some(true),
        "dig did not retry over TCP:\n{}",
        r.raw
    );
    let mut want: Vec<std::net::IpAddr> = big.iter().map(|a| a.parse().unwrap()).collect();
    want.sort();
    assert_eq!(
        r.addrs(),
        want,
        "not all 100 addresses over TCP:\n{}",
        r.raw
    );
    // The truncated UDP reply itself.
    let r = dig(&c1, DNS, &["+ignore", "big.weave.local", "A"]);
    assert!(r.has_flag("tc"), "UDP reply not truncated:\n{}", r.raw);
    assert_eq!(r.via_tcp, Some(false), "{}", r.raw);
    let t = queries(&h1, "truncated");
    assert!(
        t >= truncated_before + 2,
        "queries.truncated went from {truncated_before} to {t}"
    );

    lab.step("a name outside the domain, through dnsmasq");
    let forwarded_before = queries(&h1, "forwarded");
    let r = dig(&c1, DNS, &["upstream.example.test", "A"]);
    assert_eq!(r.status, "NOERROR", "{}", r.raw);
    assert_eq!(r.answer_data("A"), ["10.9.9.9"], "{}", r.raw);
    let q = dnsmasq.queries();
    assert!(
        q.contains(&("A".into(), "upstream.example.test".into())),
        "dnsmasq was not asked: {q:?}"
    );
    let r = dig(&c1, DNS, &["+tcp", "upstream.example.test", "A"]);
    assert_eq!(r.answer_data("A"), ["10.9.9.9"], "over TCP:\n{}", r.raw);
    let r = dig(&c1, DNS, &["nope.example.test", "A"]);
    assert_eq!(r.status, "NXDOMAIN", "upstream's NXDOMAIN:\n{}", r.raw);
    // PTR of an address not in the zone: forwarded too.
    let r = dig(&c1, DNS, &["-x", "10.9.9.9"]);
    assert_eq!(
        r.answer_data("PTR"),
        ["upstream.example.test."],
        "{}",
        r.raw
    );
    let f = queries(&h1, "forwarded");
    assert!(
        f >= forwarded_before + 4,
        "queries.forwarded went from {forwarded_before} to {f}"
    );

    lab.step("a silent upstream: SERVFAIL, and local names still answer meanwhile");
    h2.weave_ok(&["dns-add", "10.40.0.8", "local.weave.local"]);
    wait_dig(
        &c2,
        &["local.weave.local", "A"],
        secs(10),
        "local.weave.local -> 10.40.0.8",
        |r| r.answer_data("A") == ["10.40.0.8"],
    );
    let failed_before = queries(&h2, "upstream_failed");
    let (servfail, took, local_during) = std::thread::scope(|s| {
        let slow = s.spawn(|| {
            let t = Instant::now();
            let r = try_dig(&c2, DNS, &["+time=10", "silent.example.test", "A"]);
            (r, t.elapsed())
        });
        // While that one waits on the silent upstream.
        wait_until(secs(5), "the silent upstream got the query", || {
            silent.received() > 0
        });
        let t = Instant::now();
        let local = dig(&c2, DNS, &["local.weave.local", "A"]);
        let local_took = t.elapsed();
        let (r, took) = slow.join().expect("dig thread");
        (r, took, (local, local_took))
    });
    let servfail = servfail.unwrap_or_else(|e| panic!("no answer for a silent upstream: {e}"));
    assert_eq!(servfail.status, "SERVFAIL", "{}", servfail.raw);
    assert!(
        took < secs(6),
        "SERVFAIL took {took:?} (a silent upstream should fail within a few seconds)"
    );
    assert_eq!(
        local_during.0.answer_data("A"),
        ["10.40.0.8"],
        "{}",
        local_during.0.raw
    );
    assert!(
        local_during.1 < secs(1),
        "a local name took {:?} while a forwarded query waited",
        local_during.1
    );
    let failed = queries(&h2, "upstream_failed");
    assert!(
        failed > failed_before,
        "queries.upstream_failed went from {failed_before} to {failed}"
    );
    eprintln!(
        "SERVFAIL after {took:?}; the silent upstream got {} datagrams",
        silent.received()
    );
}

/// Writes, ignoring errors (the router may close first: that is fine).
fn send(s: &mut TcpStream, bytes: &[u8]) {
    let _ = s.write_all(bytes);
}

#[track_caller]
fn expect_closed(s: &mut TcpStream, what: &str) {
    let (_, closed) = read_until_closed(s, secs(15));
    assert!(
        closed,
        "router kept a DNS TCP connection open 15 s after {what}"
    );
}

/// Malformed UDP datagrams that must each be counted as dropped: every
/// truncation of a valid query, a response, a question whose name points
/// at itself, a header announcing 65535 questions.
fn surely_malformed(rng: &mut Rng) -> Vec<Vec<u8>> {
    let valid = query(0x4242, "api.weave.local", TYPE_A);
    let mut v: Vec<Vec<u8>> = (0..valid.len()).map(|cut| valid[..cut].to_vec()).collect();
    let mut response = valid.clone();
    response[2] |= 0x80;
    v.push(response);
    let mut looped = valid[..12].to_vec();
    looped.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1]);
    v.push(looped);
    let mut many = valid[..12].to_vec();
    many[4] = 0xff;
    many[5] = 0xff;
    v.push(many);
    // Random bytes that claim to be a response.
    for _ in 0..20 {
        let n = 12 + rng.below(500) as usize;
        let mut b = rng.bytes(n);
        b[2] |= 0x80;
        v.push(b);
    }
    v
}

/// UDP garbage from inside the attacker's namespace: random datagrams of
/// every size up to the largest IPv4 UDP payload, then the surely
/// malformed ones, 2 ms apart (so none is lost to a full socket buffer).
/// Returns how many surely malformed datagrams were sent.
fn udp_garbage(to: SocketAddr, seed: u64) -> u64 {
    let mut rng = Rng::new(seed);
    let sock = UdpSocket::bind("0.0.0.0:0").expect("udp bind");
    let tx = |b: &[u8]| {
        let _ = sock.send_to(b, to);
    };
    for i in 0..300 {
        let n = rng.below(1500) as usize;
        tx(&rng.bytes(n));
        if i % 20 == 0 {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    for n in [9000usize, 16_384, 65_507] {
        tx(&rng.bytes(n));
        std::thread::sleep(Duration::from_millis(2));
    }
    // A valid query with 9000 bytes of junk behind it.
    let mut padded = query(7, "api.weave.local", TYPE_A);
    padded.extend(rng.bytes(9000));
    tx(&padded);
    std::thread::sleep(Duration::from_millis(50));
    let sure = surely_malformed(&mut rng);
    for d in &sure {
        tx(d);
        std::thread::sleep(Duration::from_millis(2));
    }
    sure.len() as u64
}

/// TCP garbage. Returns (connections left hanging mid-message, surely
/// malformed messages sent).
fn tcp_garbage(to: SocketAddr, seed: u64) -> (Vec<TcpStream>, u64) {
    let mut rng = Rng::new(seed ^ 0x5a5a);
    let mut held = Vec::new();
    let mut sure = 0;

    // A huge length prefix, part of the body, then EOF.
    let mut s = connect(to);
    send(&mut s, &0xffffu16.to_be_bytes());
    send(&mut s, &rng.bytes(100));
    let _ = s.shutdown(Shutdown::Write);
    expect_closed(&mut s, "a 65535-byte length prefix, 100 bytes and EOF");
    // A huge length prefix, then close at once.
    for _ in 0..5 {
        let mut s = connect(to);
        send(&mut s, &0xffffu16.to_be_bytes());
        drop(s);
    }
    // A framed response: malformed (not a query), the router closes.
    {
        let mut r = query(9, "api.weave.local", TYPE_A);
        r[2] |= 0x80;
        let mut s = connect(to);
        send(&mut s, &(r.len() as u16).to_be_bytes());
        send(&mut s, &r);
        expect_closed(&mut s, "a framed DNS response");
        sure += 1;
    }
    // A zero-length message.
    {
        let mut s = connect(to);
        send(&mut s, &[0, 0]);
        expect_closed(&mut s, "a zero-length message");
        sure += 1;
    }
    // A framed random message claiming to be a response, then more.
    {
        let mut junk = rng.bytes(300);
        junk[2] |= 0x80;
        let mut s = connect(to);
        send(&mut s, &300u16.to_be_bytes());
        send(&mut s, &junk);
        send(&mut s, &rng.bytes(1000));
        expect_closed(&mut s, "a framed random message");
        sure += 1;
    }
    // A long random stream.
    {
        let mut s = connect(to);
        for _ in 0..64 {
            if s.write_all(&rng.bytes(16 * 1024)).is_err() {
                break;
            }
        }
        let _ = s.shutdown(Shutdown::Write);
        expect_closed(&mut s, "1 MiB of random bytes and EOF");
    }
    // Partial messages left hanging.
    for cut in [1usize, 2, 10, 20] {
        let q = query(11, "api.weave.local", TYPE_A);
        let mut framed = (q.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&q);
        let mut s = connect(to);
        send(&mut s, &framed[..cut]);
        held.push(s);
    }
    for _ in 0..4 {
        let mut s = connect(to);
        send(&mut s, &0xffffu16.to_be_bytes());
        send(&mut s, &rng.bytes(1000));
        held.push(s);
    }
    (held, sure)
}

/// Valid queries as fast as one socket sends them, for `how_long`: local
/// names, unknown names, and names forwarded to a silent upstream.
/// Replies are read and thrown away. Returns (queries sent, replies read).
fn query_flood(to: SocketAddr, how_long: Duration) -> (u64, u64) {
    let sock = UdpSocket::bind("0.0.0.0:0").expect("udp bind");
    sock.set_nonblocking(true).expect("nonblocking");
    let names: Vec<String> = (0..64)
        .map(|i| match i % 4 {
            0 | 1 => "api.weave.local".to_string(),
            2 => format!("nx{i}.weave.local"),
            _ => format!("far{i}.example.test"),
        })
        .collect();
    let qs: Vec<Vec<u8>> = names
        .iter()
        .enumerate()
        .map(|(i, n)| query(i as u16, n, TYPE_A))
        .collect();
    let (mut sent, mut replies) = (0u64, 0u64);
    let mut buf = [0u8; 2048];
    let end = Instant::now() + how_long;
    let mut i = 0usize;
    while Instant::now() < end {
        for _ in 0..64 {
            let q = &qs[i % qs.len()];
            i += 1;
            match sock.send_to(q, to) {
                Ok(_) => sent += 1,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(_) => {}
            }
        }
        while sock.recv_from(&mut buf).is_ok() {
            replies += 1;
        }
    }
    (sent, replies)
}

/// `Udp: RcvbufErrors` of /proc/net/snmp in `at`: datagrams the kernel
/// dropped because a socket's receive buffer was full.
#[track_caller]
fn udp_rcvbuf_errors(at: &impl AsNetns) -> u64 {
    let snmp = at.netns().sh(&["cat", "/proc/net/snmp"]);
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp: "));
    let (names, values) = (udp.next().unwrap_or(""), udp.next().unwrap_or(""));
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "RcvbufErrors")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or_else(|| panic!("no Udp RcvbufErrors in /proc/net/snmp:\n{snmp}"))
}

fn mib(kib: u64) -> u64 {
    kib / 1024
}

#[test]
fn hostile_queries() {
    const FLOOD: Duration = Duration::from_secs(8);
    /// Peak RSS during everything, above the RSS before it.
    const GROWTH_LIMIT_MIB: u64 = 64;
    /// After: back within this of the RSS before.
    const SLACK_MIB: u64 = 32;

    let lab = Lab::new();
    let h1 = lab.host("h1");
    let up = lab.host("up");
    let (_, up_addr) = lab.link(&h1, &up);
    let silent = SilentUpstream::start(&up, up_addr);
    launch_dns(&h1, &resolv_conf(&lab, "resolv.conf", &[up_addr]), &[]);
    let bad = client(&h1, "10.40.1.66/24"); // the attacker
    let good = client(&h1, "10.40.1.2/24");
    h1.weave_ok(&["dns-add", "10.40.0.7", "api.weave.local"]);
    let good_answer = |args: &[&str]| -> DigResult {
        let r = dig(&good, DNS, args);
        assert_eq!(r.answer_data("A"), ["10.40.0.7"], "{}", r.raw);
        r
    };
    wait_dig(
        &good,
        &["api.weave.local", "A"],
        secs(10),
        "api.weave.local -> 10.40.0.7",
        |r| r.answer_data("A") == ["10.40.0.7"],
    );
    // The query builder is right: the router answers it.
    let q = query(0x1234, "api.weave.local", TYPE_A);
    let reply = bad.ns().in_netns(move || {
        let s = UdpSocket::bind("0.0.0.0:0").expect("udp bind");
        s.set_read_timeout(Some(secs(3))).unwrap();
        s.send_to(&q, (DNS_ADDR, 53)).expect("send query");
        let mut buf = [0u8; 1500];
        s.recv(&mut buf).map(|n| buf[..n].to_vec())
    });
    let reply = reply.expect("no reply to a hand-made query");
    assert_eq!(reply[..2], [0x12, 0x34], "reply to the wrong query ID");

    let pid = h1
        .status_json()
        .router_pid()
        .expect("h1's report gives no router.pid");
    let baseline = rss_kib(pid).expect("router RSS");
    let watch = RssWatch::start(pid);
    let to = SocketAddr::from((DNS_ADDR, 53));
    let seed = Rng::from_time().seed();
    eprintln!("seed {seed}; router pid {pid}, RSS {} MiB", mib(baseline));

    lab.step("UDP garbage");
    let malformed_before = queries(&h1, "dropped_malformed");
    let sure_udp = bad.ns().in_netns(move || udp_garbage(to, seed));
    lab.step("TCP garbage");
    let (held, sure_tcp) = bad.ns().in_netns(move || tcp_garbage(to, seed));
    let want = malformed_before + sure_udp + sure_tcp;
    let mut got = 0;
    let counted = try_wait_until(secs(5), || {
        got = queries(&h1, "dropped_malformed");
        got >= want
    });
    assert!(
        counted,
        "queries.dropped_malformed went from {malformed_before} to {got}, want at least \
         {want} ({sure_udp} surely malformed UDP datagrams, {sure_tcp} TCP messages)"
    );
    eprintln!("dropped_malformed {malformed_before} -> {got}");

    lab.step("another namespace is answered, over UDP and TCP, with connections hanging");
    good_answer(&["api.weave.local", "A"]);
    let r = good_answer(&["+tcp", "api.weave.local", "A"]);
    assert_eq!(r.via_tcp, Some(true), "{}", r.raw);
    drop(held);

    lab.step(&format!("query flood from one namespace for {FLOOD:?}"));
    let udp_before = queries(&h1, "udp");
    let rcvbuf_before = udp_rcvbuf_errors(&h1);
    let flood = bad.ns().spawn(move || query_flood(to, FLOOD));
    let started = Instant::now();
    let mut during = Vec::new();
    let mut failed = Vec::new();
    while started.elapsed() + secs(2) < FLOOD {
        let t = Instant::now();
        let at = started.elapsed();
        match try_dig(&good, DNS, &["+tries=3", "api.weave.local", "A"]) {
            Ok(r) if r.answer_data("A") == ["10.40.0.7"] => during.push(t.elapsed()),
            Ok(r) => failed.push(format!("{at:?} into the flood, a wrong answer:\n{}", r.raw)),
            Err(e) => failed.push(format!(
                "{at:?} into the flood, no answer after {:?}: {e}",
                t.elapsed()
            )),
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    let (sent, replies) = flood.join().expect("flood thread");
    let rcvbuf_errors = udp_rcvbuf_errors(&h1) - rcvbuf_before;
    let peak = watch.peak_kib();
    let d = dns_report(&h1);
    let summary = format!(
        "flood: {sent} queries sent in {FLOOD:?}, {replies} replies; router counted {} UDP \
         queries; dig during the flood answered in {during:?}; queries {}; silent upstream got \
         {}; RSS {} MiB before, peak {} MiB; {} datagrams dropped at full UDP receive buffers in h1",
        queries(&h1, "udp") - udp_before,
        d["queries"],
        silent.received(),
        mib(baseline),
        mib(peak),
        rcvbuf_errors
    );
    eprintln!("{summary}");
    assert!(
        failed.is_empty(),
        "another namespace was not answered during a query flood from one namespace:\n  {}\n{summary}",
        failed.join("\n  ")
    );
    assert!(
        !during.is_empty(),
        "no dig ran during the flood (it took too long to start?)"
    );
    assert!(
        mib(peak) <= mib(baseline) + GROWTH_LIMIT_MIB,
        "router RSS peaked at {} MiB under garbage and the flood ({} MiB before; limit +{} MiB)",
        mib(peak),
        mib(baseline),
        GROWTH_LIMIT_MIB
    );

    lab.step("after: still answering; RSS back near where it was");
    good_answer(&["api.weave.local", "A"]);
    good_answer(&["+tcp", "api.weave.local", "A"]);
    let limit = baseline + SLACK_MIB * 1024;
    let back = try_wait_until(secs(15), || rss_kib(pid).is_some_and(|k| k <= limit));
    assert!(
        back,
        "router RSS {:?} KiB 15 s after the flood (before: {baseline} KiB, limit {limit} KiB)",
        rss_kib(pid)
    );
}

#[test]
fn no_dns_flag() {
    let lab = Lab::new();
    let h1 = lab.host("h1");
    h1.launch(&["--no-dns"]);
    let c1 = client(&h1, "10.40.1.1/24");

    lab.step("nothing answers on 169.254.53.53");
    let bridge = h1.ns().ip(&["-o", "addr", "show", "dev", "weave"]);
    assert!(
        !bridge.contains(DNS),
        "the bridge has the DNS address under --no-dns:\n{bridge}"
    );
    let routes = c1.ns().ip(&["route", "show"]);
    assert!(
        !routes.contains(DNS),
        "attach routed the DNS address under --no-dns:\n{routes}"
    );
    for (who, r) in [
        (
            "the attached namespace",
            try_dig(&c1, DNS, &["api.weave.local"]),
        ),
        ("the host", try_dig(&h1, DNS, &["api.weave.local"])),
    ] {
        assert!(r.is_err(), "{who} got a DNS answer under --no-dns: {r:?}");
    }
    let listening = h1.ns().sh(&["ss", "-Hlnu", "sport = :53"]);
    assert!(
        listening.trim().is_empty(),
        "something listens on UDP 53 under --no-dns:\n{listening}"
    );

    lab.step("the DNS commands say DNS is off");
    for args in [
        &["dns-add", "10.40.0.7", "api.weave.local"][..],
        &["dns-remove", "10.40.0.7", "api.weave.local"],
        &["dns-lookup", "api.weave.local"],
        &["dns-args"],
    ] {
        let out = h1.weave(args).err();
        assert!(
            out.stderr.contains(OFF) || out.stdout.contains(OFF),
            "`weave-rs {}` should fail with {OFF:?}:\n{out}",
            args.join(" ")
        );
    }
    let status = h1.weave_ok(&["status", "dns"]);
    assert!(status.contains(OFF), "`status dns`:\n{status}");
    let d = dns_report(&h1);
    assert!(d.is_null(), "report has a dns section under --no-dns: {d}");
}

/// A peer cut off from the mesh takes its names with it (not answered
/// once it is unreachable, and marked in `status dns`), and they come back
/// when the network heals, with no new registration: same incarnation.
#[test]
fn a_cut_off_peers_names_go_and_come_back() {
    let lab = Lab::new();
    let hosts = lab.switched_hosts(2);
    let (h1, h2) = (&hosts[0], &hosts[1]);
    let resolv = resolv_conf(&lab, "resolv.conf", &[]);
    launch_mesh_dns(&hosts, &resolv);
    let c1 = client(h1, "10.40.6.1/24");
    h2.weave_ok(&["dns-add", "10.40.0.21", "far.weave.local"]);
    let has = |r: &DigResult| r.status == "NOERROR" && r.answer_data("A") == ["10.40.0.21"];
    wait_dig(&c1, &["far.weave.local", "A"], secs(15), "h2's name", has);

    lab.step("cut h2 off");
    let h2_ip = h2.addr_for(h1).to_string();
    let cut = IptablesRule::cut_off(h1, &h2_ip);
    let t = Instant::now();
    wait_dig(
        &c1,
        &["far.weave.local", "A"],
        secs(20),
        "h2's name no longer answered",
        |r| r.status == "NXDOMAIN",
    );
    eprintln!(
        "h2's name gone on h1 {:.2}s after the cut",
        t.elapsed().as_secs_f64()
    );
    let status = h1.weave_ok(&["status", "dns"]);
    assert!(
        status
            .lines()
            .any(|l| l.contains("far.weave.local") && l.contains("peer unreachable")),
        "status dns on h1 should keep h2's name, marked unreachable:\n{status}"
    );

    lab.step("heal");
    drop(cut);
    let t = Instant::now();
    wait_dig(
        &c1,
        &["far.weave.local", "A"],
        secs(30),
        "h2's name answered again",
        has,
    );
    eprintln!(
        "h2's name back on h1 {:.2}s after the heal",
        t.elapsed().as_secs_f64()
    );
}
