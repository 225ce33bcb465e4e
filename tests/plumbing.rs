//! Integration tests of the host plumbing (`weave_rs::net`): bridge, veth
//! attach/detach into network namespaces, expose/hide, TAP, reset,
//! iptables, gratuitous ARP.
//!
//! Needs root. Every test makes its own network namespaces named
//! `wrpl-<pid>-<n>-<role>` (deleted by an RAII guard even on panic) and runs
//! the plumbing inside a "host" namespace of its own, on a thread that
//! entered it, so nothing is created in the machine's root namespace.

use std::fs::File;
use std::future::Future;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ipnetwork::IpNetwork;
use weave_rs::net::iptables::{Family, Guarded, Iptables};
use weave_rs::net::{open_tap, run_in_netns, NetError, Netlink, NetnsTarget};

const ETHWE: &str = weave_rs::net::CONTAINER_IFNAME;
const MTU: u32 = 1376;
/// The bridge's MAC in these tests (locally administered).
const BR_MAC: [u8; 6] = [0x02, 0x77, 0x72, 0x70, 0x6c, 0x01];
static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A network namespace made by `ip netns add`, deleted on drop.
struct Netns {
    name: String,
}

impl Netns {
    fn new(role: &str) -> Netns {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("wrpl-{}-{n}-{role}", std::process::id());
        ip(&["netns", "add", &name]);
        Netns { name }
    }

    fn path(&self) -> PathBuf {
        PathBuf::from(format!("/var/run/netns/{}", self.name))
    }

    fn target(&self) -> NetnsTarget {
        NetnsTarget::Path(self.path())
    }

    fn file(&self) -> File {
        self.target().open().expect("open test netns")
    }

    /// Runs an async block on a current-thread runtime on a thread inside
    /// this namespace.
    fn run<T, F, Fut>(&self, f: F) -> T
    where
        T: Send + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = T>,
    {
        run_in_netns(&self.file(), move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(f())
        })
        .expect("enter test netns")
    }

    /// `ip -n NAME args...`, stdout.
    fn ip(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", &self.name];
        all.extend_from_slice(args);
        ip(&all)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}

/// A child process, killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn cidr(s: &str) -> IpNetwork {
    s.parse().unwrap()
}

/// A receive-only packet socket on one interface of the caller's netns.
struct Sniffer(OwnedFd);

impl Sniffer {
    fn open(ifname: &str) -> Sniffer {
        let index = nix::net::if_::if_nametoindex(ifname).expect("ifindex") as i32;
        // SAFETY: plain socket(2); the fd is owned right after.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                i32::from((libc::ETH_P_ALL as u16).to_be()),
            )
        };
        assert!(
            raw >= 0,
            "packet socket: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: fresh fd.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: zeroed sockaddr_ll is valid; we fill the fields we need.
        let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sa.sll_family = libc::AF_PACKET as u16;
        sa.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
        sa.sll_ifindex = index;
        // SAFETY: valid sockaddr_ll and length.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                &sa as *const libc::sockaddr_ll as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        assert_eq!(r, 0, "bind: {}", std::io::Error::last_os_error());
        let tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 100_000,
        };
        // SAFETY: valid timeval option.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                &tv as *const libc::timeval as *const libc::c_void,
                std::mem::size_of::<libc::timeval>() as u32,
            );
        }
        Sniffer(fd)
    }

    /// Frames until `pred` matches one or `wait` passes.
    fn find(&self, wait: Duration, pred: impl Fn(&[u8]) -> bool) -> bool {
        let end = Instant::now() + wait;
        let mut buf = [0u8; 2048];
        while Instant::now() < end {
            // SAFETY: buf is valid for its length.
            let n =
                unsafe { libc::recv(self.0.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n > 0 && pred(&buf[..n as usize]) {
                return true;
            }
        }
        false
    }
}

fn is_garp(f: &[u8], mac: [u8; 6], ip: [u8; 4]) -> bool {
    f.len() >= 42
        && f[..6] == [0xff; 6]
        && f[6..12] == mac
        && f[12..14] == [0x08, 0x06]
        && f[22..28] == mac
        && f[28..32] == ip
        && f[38..42] == ip
}

fn is_na(f: &[u8], mac: [u8; 6], ip: std::net::Ipv6Addr) -> bool {
    f.len() >= 14 + 40 + 24
        && f[6..12] == mac
        && f[12..14] == [0x86, 0xdd]
        && f[14 + 6] == 58
        && f[14 + 40] == 136
        && f[14 + 40 + 8..14 + 40 + 24] == ip.octets()
}

// ------------------------------------------------------------------ tests

#[test]
fn bridge_and_attach() {
    let host = Netns::new("host");
    let c1 = Netns::new("c1");
    let target = c1.target();
    let c1_file = c1.file();
    let (a, br_index, sniffed_arp, sniffed_na) = host.run(move || async move {
        let nl = Netlink::connect().unwrap();
        let br = nl.ensure_bridge("weave", MTU, BR_MAC).await.unwrap();
        assert_eq!(nl.ensure_bridge("weave", MTU, BR_MAC).await.unwrap(), br);
        let s = nl.link("weave").await.unwrap().unwrap();
        assert_eq!(
            (s.mtu, s.up, s.kind.as_deref(), s.mac),
            (MTU, true, Some("bridge"), Some(BR_MAC))
        );

        let sniffer = Sniffer::open("weave");
        let a = nl
            .attach(
                "weave",
                &target,
                ETHWE,
                &[cidr("10.2.1.1/24"), cidr("fd00:2::1/64")],
                MTU,
            )
            .await
            .unwrap();
        let arp = sniffer.find(Duration::from_secs(2), |f| is_garp(f, a.mac, [10, 2, 1, 1]));
        let na = sniffer.find(Duration::from_secs(2), |f| {
            is_na(f, a.mac, "fd00:2::1".parse().unwrap())
        });

        let hv = nl.link(&a.host_veth).await.unwrap().unwrap();
        assert_eq!(hv.master, Some(br));
        assert!(hv.up);
        assert_eq!(hv.mtu, MTU);
        assert_eq!(
            nl.attached("weave").await.unwrap(),
            vec![a.host_veth.clone()]
        );

        // The container side, seen through a connection inside c1.
        let ctr = Netlink::connect_in(&c1_file).unwrap();
        let e = ctr.link("ethwe").await.unwrap().unwrap();
        assert_eq!((e.mtu, e.up, e.mac), (MTU, true, Some(a.mac)));
        let addrs = ctr.link_addrs("ethwe").await.unwrap();
        assert!(addrs.contains(&cidr("10.2.1.1/24")), "{addrs:?}");
        assert!(addrs.contains(&cidr("fd00:2::1/64")), "{addrs:?}");
        (a, br, arp, na)
    });
    assert_eq!(a.host_veth, format!("vethwr{}", c1.target().short_id()));
    assert_eq!(a.host_veth.len(), 14);
    assert_eq!(a.addrs.len(), 2, "{:?}", a.addrs);
    assert!(br_index > 0);
    assert!(sniffed_arp, "no gratuitous ARP seen on the bridge");
    assert!(sniffed_na, "no unsolicited NA seen on the bridge");

    // Independent check with iproute2: addresses usable at once, routes.
    let addr = c1.ip(&["addr", "show", "dev", "ethwe"]);
    assert!(addr.contains("inet 10.2.1.1/24"), "{addr}");
    assert!(addr.contains("inet6 fd00:2::1/64"), "{addr}");
    let v6 = addr.lines().find(|l| l.contains("fd00:2::1/64")).unwrap();
    assert!(!v6.contains("tentative"), "{addr}");
    assert!(addr.contains("mtu 1376"), "{addr}");
    let promote = Command::new("ip")
        .args([
            "netns",
            "exec",
            &c1.name,
            "cat",
            "/proc/sys/net/ipv4/conf/ethwe/promote_secondaries",
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&promote.stdout).trim(), "1");
    let routes = c1.ip(&["route", "show", "dev", "ethwe"]);
    assert!(routes.contains("10.2.1.0/24"), "{routes}");
    let brlink = host.ip(&["link", "show", "dev", &a.host_veth]);
    assert!(brlink.contains("master weave"), "{brlink}");

    // And traffic flows: the host gets an address on the bridge, pings c1.
    host.run(|| async {
        let nl = Netlink::connect().unwrap();
        assert!(nl.expose("weave", cidr("10.2.1.254/24")).await.unwrap());
    });
    let out = Command::new("ip")
        .args([
            "netns", "exec", &host.name, "ping", "-c", "1", "-W", "2", "10.2.1.1",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ping: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn attach_is_idempotent_and_same_netns_same_veth() {
    let host = Netns::new("host");
    let c1 = Netns::new("c1");
    // A process inside c1, to name the same netns as pid:N.
    let child = Command::new("ip")
        .args(["netns", "exec", &c1.name, "sleep", "60"])
        .spawn()
        .unwrap();
    let child = Proc(child);
    let by_pid = NetnsTarget::Pid(child.0.id());
    // `ip netns exec` execs sleep after setns; wait until it has.
    let want = c1.target().short_id();
    let end = Instant::now() + Duration::from_secs(5);
    while by_pid.short_id() != want && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(by_pid.short_id(), want);

    let target = c1.target();
    host.run(move || async move {
        let nl = Netlink::connect().unwrap();
        nl.ensure_bridge("weave", MTU, BR_MAC).await.unwrap();
        let cidrs = [cidr("10.2.1.1/24")];
        let a1 = nl
            .attach("weave", &target, ETHWE, &cidrs, MTU)
            .await
            .unwrap();
        let a2 = nl
            .attach("weave", &target, ETHWE, &cidrs, MTU)
            .await
            .unwrap();
        assert_eq!(a1, a2);
        let a3 = nl
            .attach("weave", &by_pid, ETHWE, &cidrs, MTU)
            .await
            .unwrap();
        assert_eq!(a1, a3);
        // A further address is added to the same ethwe.
        let a4 = nl
            .attach(
                "weave",
                &by_pid,
                ETHWE,
                &[cidr("10.2.1.1/24"), cidr("10.2.1.7/24")],
                MTU,
            )
            .await
            .unwrap();
        assert_eq!(a4.host_veth, a1.host_veth);
        assert_eq!(a4.mac, a1.mac);
        assert!(a4.addrs.contains(&cidr("10.2.1.7/24")));
        assert_eq!(a4.addrs.len(), 2, "{:?}", a4.addrs);
        assert_eq!(nl.attached("weave").await.unwrap(), vec![a1.host_veth]);
    });
    drop(child);
}

#[test]
fn detach_removes_addresses_then_veth() {
    let host = Netns::new("host");
    let c1 = Netns::new("c1");
    let target = c1.target();
    let c1_file = c1.file();
    host.run(move || async move {
        let nl = Netlink::connect().unwrap();
        nl.ensure_bridge("weave", MTU, BR_MAC).await.unwrap();
        let a = nl
            .attach(
                "weave",
                &target,
                ETHWE,
                &[
                    cidr("10.2.1.1/24"),
                    cidr("10.2.1.2/24"),
                    cidr("fd00:2::1/64"),
                ],
                MTU,
            )
            .await
            .unwrap();
        let ctr = Netlink::connect_in(&c1_file).unwrap();

        // Removing the primary keeps the secondary of the same subnet.
        let left = nl
            .detach(&target, ETHWE, &[cidr("10.2.1.1/24")])
            .await
            .unwrap();
        let mut left_sorted = left.clone();
        left_sorted.sort();
        assert_eq!(left_sorted, vec![cidr("10.2.1.2/24"), cidr("fd00:2::1/64")]);
        let now = ctr.link_addrs("ethwe").await.unwrap();
        assert!(now.contains(&cidr("10.2.1.2/24")) && !now.contains(&cidr("10.2.1.1/24")));

        // Absent addresses are ignored.
        let left = nl
            .detach(&target, ETHWE, &[cidr("10.9.9.9/24")])
            .await
            .unwrap();
        assert_eq!(left.len(), 2);

        // Removing the last addresses removes the veth pair.
        let left = nl
            .detach(&target, ETHWE, &[cidr("10.2.1.2/24"), cidr("fd00:2::1/64")])
            .await
            .unwrap();
        assert!(left.is_empty());
        assert_eq!(ctr.link_index("ethwe").await.unwrap(), None);
        assert_eq!(nl.link_index(&a.host_veth).await.unwrap(), None);

        // Attach again, then detach with no list: the veth goes at once.
        let a = nl
            .attach("weave", &target, ETHWE, &[cidr("10.2.1.1/24")], MTU)
            .await
            .unwrap();
        assert!(nl.detach(&target, ETHWE, &[]).await.unwrap().is_empty());
        assert_eq!(ctr.link_index("ethwe").await.unwrap(), None);
        assert_eq!(nl.link_index(&a.host_veth).await.unwrap(), None);
        assert!(nl.attached("weave").await.unwrap().is_empty());

        // Nothing left to detach.
        let e = nl.detach(&target, ETHWE, &[]).await.unwrap_err();
        assert!(matches!(e, NetError::NotAttached { .. }), "{e}");
        assert!(e.to_string().ends_with(": not attached (no ethwe)"), "{e}");
    });
}

#[test]
fn bad_targets_give_specific_errors() {
    // Parse errors are covered by net::netns's unit tests; these need a system.
    let missing = format!("/var/run/netns/wrpl-{}-missing", std::process::id());
    let t: NetnsTarget = missing.parse().unwrap();
    assert_eq!(
        t.open().unwrap_err().to_string(),
        format!("no such network namespace {missing}")
    );
    let t: NetnsTarget = "pid:2147483646".parse().unwrap();
    assert_eq!(t.open().unwrap_err().to_string(), "no process 2147483646");
    // A regular file is not a namespace.
    let t = NetnsTarget::Path("/proc/self/status".into());
    assert_eq!(
        t.open().unwrap_err().to_string(),
        "/proc/self/status: not a network namespace"
    );
    // Another namespace type is not a network namespace either.
    let t = NetnsTarget::Path("/proc/self/ns/uts".into());
    assert!(matches!(t.open().unwrap_err(), NetError::NotNetns(_)));
    // A deleted namespace.
    let gone = Netns::new("gone");
    let gone_target = gone.target();
    drop(gone);
    assert!(matches!(
        gone_target.open().unwrap_err(),
        NetError::NoSuchNetns(_)
    ));

    let host = Netns::new("host");
    let c1 = Netns::new("c1");
    let (target, host_target) = (c1.target(), host.target());
    host.run(move || async move {
        let nl = Netlink::connect().unwrap();
        // No bridge yet.
        let e = nl
            .attach("weave", &target, ETHWE, &[cidr("10.2.1.1/24")], MTU)
            .await
            .unwrap_err();
        assert_eq!(e.to_string(), "bridge weave: does not exist");
        nl.ensure_bridge("weave", MTU, BR_MAC).await.unwrap();
        // Not an address an interface can have; nothing is created.
        let e = nl
            .attach(
                "weave",
                &target,
                ETHWE,
                &[cidr("10.2.1.1/24"), cidr("224.0.0.5/24")],
                MTU,
            )
            .await
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("ethwe in {target}: 224.0.0.5/24: not a unicast address")
        );
        assert!(nl.attached("weave").await.unwrap().is_empty());
        // The router's own namespace.
        let e = nl
            .attach("weave", &host_target, ETHWE, &[cidr("10.2.1.1/24")], MTU)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("own network namespace"), "{e}");
        // A missing namespace.
        let e = nl
            .attach("weave", &gone_target, ETHWE, &[cidr("10.2.1.1/24")], MTU)
            .await
            .unwrap_err();
        assert!(
            e.to_string().starts_with("no such network namespace"),
            "{e}"
        );
        // A bad interface name.
        let e = nl
            .ensure_bridge("a-name-far-too-long", MTU, BR_MAC)
            .await
            .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("bridge a-name-far-too-long: name:"),
            "{e}"
        );
        // A link that is not a bridge.
        let tap = open_tap("notabridge", 1500).unwrap();
        let e = nl
            .ensure_bridge("notabridge", MTU, BR_MAC)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("not a bridge (kind tun)"), "{e}");
        drop(tap);
    });
}

#[test]
fn expose_and_hide() {
    let host = Netns::new("host");
    host.run(|| async {
        let nl = Netlink::connect().unwrap();
        let e = nl.expose("weave", cidr("10.2.1.254/24")).await.unwrap_err();
        assert_eq!(e.to_string(), "bridge weave: does not exist");
        nl.ensure_bridge("weave", MTU, BR_MAC).await.unwrap();
        assert!(nl.expose("weave", cidr("10.2.1.254/24")).await.unwrap());
        assert!(!nl.expose("weave", cidr("10.2.1.254/24")).await.unwrap());
        assert!(nl.expose("weave", cidr("10.3.0.254/16")).await.unwrap());
        assert!(nl.expose("weave", cidr("fd00:2::fe/64")).await.unwrap());
        let mut addrs = nl.bridge_addrs("weave").await.unwrap();
        addrs.sort();
        assert_eq!(
            addrs,
            vec![
                cidr("10.2.1.254/24"),
                cidr("10.3.0.254/16"),
                cidr("fd00:2::fe/64")
            ]
        );
        let removed = nl.hide("weave", &[cidr("10.3.0.254/16")]).await.unwrap();
        assert_eq!(removed, vec![cidr("10.3.0.254/16")]);
        let mut removed = nl.hide("weave", &[]).await.unwrap();
        removed.sort();
        assert_eq!(removed, vec![cidr("10.2.1.254/24"), cidr("fd00:2::fe/64")]);
        assert!(nl.bridge_addrs("weave").await.unwrap().is_empty());
    });
}

#[test]
fn tap_on_bridge_sees_container_frames_and_reset_removes_all() {
    let host = Netns::new("host");
    let c1 = Netns::new("c1");
    let c2 = Netns::new("c2");
    let (t1, t2) = (c1.target(), c2.target());
    let (f1, f2) = (c1.file(), c2.file());
    host.run(move || async move {
        let nl = Netlink::connect().unwrap();
        nl.ensure_bridge("weave", MTU, BR_MAC).await.unwrap();
        let tap = open_tap("weave-tap", MTU as u16).unwrap();
        nl.enslave("weave-tap", "weave", MTU).await.unwrap();
        let t = nl.link("weave-tap").await.unwrap().unwrap();
        assert!(t.up && t.master.is_some() && t.mtu == MTU, "{t:?}");
        assert_eq!(t.kind.as_deref(), Some("tun"));

        let a1 = nl
            .attach("weave", &t1, ETHWE, &[cidr("10.2.1.1/24")], MTU)
            .await
            .unwrap();
        nl.attach("weave", &t2, ETHWE, &[cidr("10.2.1.2/24")], MTU)
            .await
            .unwrap();
        assert_eq!(nl.attached("weave").await.unwrap().len(), 2);

        // The container's gratuitous ARP reaches the router's TAP as an
        // Ethernet frame behind a virtio-net header (no packet-information
        // prefix), the header asking nothing of us.
        let mut buf = vec![0u8; 70_000];
        let found = tokio::time::timeout(Duration::from_secs(3), async {
            loop {
                let n = tap.recv(&mut buf).await.unwrap();
                let (hdr, frame) = buf[..n].split_at(weave_rs::core::wire::vnet::LEN);
                if is_garp(frame, a1.mac, [10, 2, 1, 1]) {
                    assert_eq!(hdr, weave_rs::core::wire::vnet::PLAIN);
                    return true;
                }
            }
        })
        .await
        .unwrap_or(false);
        assert!(found, "GARP from c1 not read on the TAP");

        nl.reset("weave", "weave-tap").await.unwrap();
        assert_eq!(nl.link_index("weave").await.unwrap(), None);
        assert_eq!(nl.link_index("weave-tap").await.unwrap(), None);
        assert!(nl.attached("weave").await.unwrap().is_empty());
        for f in [&f1, &f2] {
            let ctr = Netlink::connect_in(f).unwrap();
            assert_eq!(ctr.link_index("ethwe").await.unwrap(), None);
        }
        // Nothing left: reset again is fine.
        nl.reset("weave", "weave-tap").await.unwrap();
        drop(tap);
    });
    let links = host.ip(&["-o", "link", "show"]);
    assert!(
        !links.contains("vethwr") && !links.contains("weave"),
        "{links}"
    );
}

#[test]
fn reset_removes_orphan_veths() {
    // A vethwr* link left on no bridge (e.g. a crashed router) goes too.
    let host = Netns::new("host");
    host.ip(&[
        "link",
        "add",
        "vethwr00000000",
        "type",
        "veth",
        "peer",
        "name",
        "wrpl-peer",
    ]);
    host.run(|| async {
        let nl = Netlink::connect().unwrap();
        nl.reset("weave", "weave-tap").await.unwrap();
        assert_eq!(nl.link_index("vethwr00000000").await.unwrap(), None);
        assert_eq!(nl.link_index("wrpl-peer").await.unwrap(), None);
    });
}

#[test]
fn bridge_mac_stays_fixed_when_ports_come_and_go() {
    // An existing bridge with no MAC set, whose only port has a MAC lower
    // than the one we want: it has taken the port's.
    let host = Netns::new("host");
    host.ip(&["link", "add", "weave", "type", "bridge"]);
    host.ip(&[
        "link",
        "add",
        "wrpl-a",
        "address",
        "02:00:00:00:00:05",
        "type",
        "veth",
        "peer",
        "name",
        "wrpl-a2",
    ]);
    host.ip(&["link", "set", "wrpl-a", "master", "weave"]);
    host.run(|| async {
        let nl = Netlink::connect().unwrap();
        let mac = |nl: Netlink| async move { nl.link("weave").await.unwrap().unwrap().mac };
        assert_eq!(mac(nl.clone()).await, Some([2, 0, 0, 0, 0, 5]));
        nl.ensure_bridge("weave", MTU, BR_MAC).await.unwrap();
        assert_eq!(mac(nl.clone()).await, Some(BR_MAC));
        // A port with a still lower MAC joins, then leaves.
        let out = Command::new("ip")
            .args([
                "link",
                "add",
                "wrpl-b",
                "address",
                "02:00:00:00:00:01",
                "type",
                "veth",
                "peer",
                "name",
                "wrpl-b2",
            ])
            .status()
            .unwrap();
        assert!(out.success());
        nl.enslave("wrpl-b", "weave", MTU).await.unwrap();
        assert_eq!(
            mac(nl.clone()).await,
            Some(BR_MAC),
            "a lower port MAC was taken"
        );
        nl.delete_link("wrpl-b").await.unwrap();
        nl.delete_link("wrpl-a").await.unwrap();
        assert_eq!(mac(nl.clone()).await, Some(BR_MAC));
        // Idempotent.
        nl.ensure_bridge("weave", MTU, BR_MAC).await.unwrap();
        assert_eq!(mac(nl).await, Some(BR_MAC));
    });
}

#[test]
fn iptables_rule_is_added_once_and_removed() {
    // The real binary: either it works (inside a test netns) or it is
    // reported as missing.
    let host = Netns::new("host");
    host.run(|| async {
        for family in Family::ALL {
            let ipt = Iptables::for_family(family);
            match ipt.ensure_forward_accept("weave") {
                Ok(_) => {
                    assert!(!ipt.ensure_forward_accept("weave").unwrap());
                    assert!(ipt.remove_forward_accept("weave").unwrap());
                    assert!(!ipt.remove_forward_accept("weave").unwrap());
                }
                Err(e @ NetError::IptablesMissing { .. }) => {
                    assert!(
                        e.to_string()
                            .starts_with(&format!("{} is not installed", family.program())),
                        "{e}"
                    );
                }
                Err(e) => panic!("{e}"),
            }
        }
        // The router's guard: nothing on an open chain, the rule once the
        // policy is DROP; reset removes it in both families.
        for family in Family::ALL {
            let ipt = Iptables::for_family(family);
            match ipt.guard_forward("weave") {
                Ok(None) => {}
                Err(NetError::IptablesMissing { .. }) => continue,
                other => panic!("{} on an open chain: {other:?}", family.program()),
            }
            let listed = std::process::Command::new(family.program())
                .args(["-w", "-S", "FORWARD"])
                .output()
                .unwrap();
            assert_eq!(
                String::from_utf8_lossy(&listed.stdout),
                "-P FORWARD ACCEPT\n"
            );
            let dropping = std::process::Command::new(family.program())
                .args(["-w", "-P", "FORWARD", "DROP"])
                .status()
                .unwrap();
            assert!(dropping.success());
            assert_eq!(
                ipt.guard_forward("weave").unwrap(),
                Some(Guarded::Policy("DROP".into())),
                "{}",
                family.program()
            );
            assert_eq!(ipt.guard_forward("weave").unwrap(), None);
        }
        for (f, r) in weave_rs::net::iptables::remove_forward_accept("weave") {
            assert!(
                matches!(r, Ok(true) | Err(NetError::IptablesMissing { .. })),
                "removed {}: {r:?}",
                f.program()
            );
        }
    });
    // Which changes the router can wait for: iptables-nft's are announced.
    assert!(Iptables::with_program("iptables-nft").writes_nftables());
    assert!(!Iptables::with_program("iptables-legacy").writes_nftables());
    let missing = Iptables::with_program("/nonexistent/iptables");
    assert!(!missing.writes_nftables());
    assert!(matches!(
        missing.ensure_forward_accept("weave"),
        Err(NetError::IptablesMissing { .. })
    ));

    // A stand-in that keeps its rules in a file, to check the calls.
    let dir = std::env::temp_dir().join(format!("wrpl-{}-iptables", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let rules = dir.join("rules");
    let calls = dir.join("calls");
    let script = dir.join("iptables");
    std::fs::write(
        &script,
        format!(
            r#"#!/bin/sh
echo "$*" >> {calls}
[ "$1" = -w ] || exit 2
op=$2; shift 2; rule="$*"
touch {rules}
case $op in
  -C) grep -qxF -- "$rule" {rules} ;;
  -I) echo "$rule" >> {rules} ;;
  -D) grep -qxF -- "$rule" {rules} || {{ echo "Bad rule" >&2; exit 1; }}
      grep -vxF -- "$rule" {rules} > {rules}.new; mv {rules}.new {rules} ;;
  *) echo "unknown $op" >&2; exit 2 ;;
esac
"#,
            calls = calls.display(),
            rules = rules.display()
        ),
    )
    .unwrap();
    std::process::Command::new("chmod")
        .args(["+x", script.to_str().unwrap()])
        .status()
        .unwrap();
    let ipt = Iptables::with_program(&script);
    assert!(ipt.ensure_forward_accept("weave").unwrap());
    assert!(!ipt.ensure_forward_accept("weave").unwrap());
    assert_eq!(
        std::fs::read_to_string(&rules).unwrap(),
        "FORWARD -i weave -o weave -j ACCEPT\n"
    );
    let log = std::fs::read_to_string(&calls).unwrap();
    assert_eq!(
        log.lines().collect::<Vec<_>>(),
        vec![
            "-w -C FORWARD -i weave -o weave -j ACCEPT",
            "-w -I FORWARD -i weave -o weave -j ACCEPT",
            "-w -C FORWARD -i weave -o weave -j ACCEPT",
        ]
    );
    assert!(ipt.remove_forward_accept("weave").unwrap());
    assert!(!ipt.remove_forward_accept("weave").unwrap());
    assert_eq!(std::fs::read_to_string(&rules).unwrap(), "");
    // A failing iptables reports its stderr.
    std::fs::write(
        &script,
        "#!/bin/sh\necho 'Permission denied (you must be root)' >&2\nexit 4\n",
    )
    .unwrap();
    let e = ipt.ensure_forward_accept("weave").unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "{} -C FORWARD -i weave -o weave -j ACCEPT: Permission denied (you must be root)",
            script.display()
        )
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn run_in_netns_enters_and_propagates_panics() {
    let ns = Netns::new("x");
    let f = ns.file();
    let inode = |p: &str| {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(p).unwrap().ino()
    };
    let want = {
        use std::os::unix::fs::MetadataExt;
        f.metadata().unwrap().ino()
    };
    let got = run_in_netns(&f, move || inode("/proc/thread-self/ns/net")).unwrap();
    assert_eq!(got, want);
    assert_ne!(
        inode("/proc/thread-self/ns/net"),
        want,
        "caller must not move"
    );
    let r = std::panic::catch_unwind(|| run_in_netns(&f, || -> u32 { panic!("boom") }));
    assert!(r.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_in_works_from_a_multi_thread_runtime() {
    // The test's own threads stay in the root netns; every request goes
    // through a socket opened inside the test's "host" netns.
    let host = Netns::new("host");
    let c1 = Netns::new("c1");
    let nl = Netlink::connect_in(&host.file()).unwrap();
    nl.ensure_bridge("weave", MTU, BR_MAC).await.unwrap();
    assert!(nl.expose("weave", cidr("10.2.1.254/24")).await.unwrap());
    let a = nl
        .attach("weave", &c1.target(), ETHWE, &[cidr("10.2.1.1/24")], MTU)
        .await
        .unwrap();
    let links = host.ip(&["-o", "link", "show"]);
    assert!(links.contains(&a.host_veth), "{links}");
    assert!(!ip(&["-o", "link", "show"]).contains(&a.host_veth));
    assert!(nl
        .detach(&c1.target(), ETHWE, &[])
        .await
        .unwrap()
        .is_empty());
    nl.reset("weave", "weave-tap").await.unwrap();
    assert_eq!(nl.link_index("weave").await.unwrap(), None);
}

/// Two hosts joined by an underlay veth, each with a bridge, the fast
/// path's VXLAN device and a container. With only the router's entries
/// (flood list, unicast per remote MAC) the containers ping each other
/// over VXLAN; the flood list holds several peers; deleting the entries
/// cuts the path; the device is an isolated bridge port.
#[test]
fn vxlan_device_and_forwarding_entries() {
    use weave_rs::net::VxlanSpec;
    let hosts = [Netns::new("vx1"), Netns::new("vx2")];
    let ctrs = [Netns::new("vc1"), Netns::new("vc2")];
    // The underlay: a veth pair between the two hosts.
    let (u1, u2) = (format!("{}u", hosts[0].name), format!("{}u", hosts[1].name));
    let (u1, u2) = (
        &u1[u1.len().saturating_sub(15)..],
        &u2[u2.len().saturating_sub(15)..],
    );
    ip(&[
        "link",
        "add",
        u1,
        "netns",
        &hosts[0].name,
        "type",
        "veth",
        "peer",
        "name",
        u2,
        "netns",
        &hosts[1].name,
    ]);
    let underlay = ["10.99.7.1", "10.99.7.2"];
    for (i, (h, u)) in hosts.iter().zip([u1, u2]).enumerate() {
        h.ip(&["link", "set", u, "name", "ul", "up"]);
        h.ip(&["addr", "add", &format!("{}/24", underlay[i]), "dev", "ul"]);
    }
    let mut macs = Vec::new();
    for (i, (h, c)) in hosts.iter().zip(&ctrs).enumerate() {
        let target = c.target();
        let local: std::net::Ipv4Addr = underlay[i].parse().unwrap();
        let mac = h.run(move || async move {
            let nl = Netlink::connect().unwrap();
            nl.ensure_bridge("weave", MTU, BR_MAC).await.unwrap();
            let ul = nl.link_index("ul").await.unwrap().unwrap();
            let spec = VxlanSpec {
                name: "vxwr".into(),
                vni: 4242,
                port: 6784,
                local: Some(local),
                underlay: Some(ul),
                mac: [0x02, 0x77, 0x76, 0x78, 0, i as u8 + 1],
                mtu: Some(MTU),
                bridge: "weave".into(),
            };
            let vx = nl.ensure_vxlan(&spec).await.unwrap();
            assert_eq!(nl.ensure_vxlan(&spec).await.unwrap(), vx, "idempotent");
            let cidrs = [cidr(&format!("10.2.9.{}/24", i + 1))];
            nl.attach("weave", &target, ETHWE, &cidrs, MTU)
                .await
                .unwrap()
                .mac
        });
        macs.push(mac);
    }
    let details = hosts[0].ip(&["-d", "link", "show", "vxwr"]);
    assert!(
        details.contains("vxlan id 4242")
            && details.contains("dstport 6784")
            && details.contains("nolearning"),
        "{details}"
    );
    assert!(
        details.contains("isolated on"),
        "not an isolated port: {details}"
    );

    let ping = |c: &Netns, to: &str| {
        Command::new("ip")
            .args(["netns", "exec", &c.name, "ping", "-c", "1", "-W", "1", to])
            .stdout(Stdio::null())
            .status()
            .unwrap()
            .success()
    };
    let entries = |h: &Netns, set: bool| {
        let other = if h.name == hosts[0].name { 1 } else { 0 };
        let peer: std::net::Ipv4Addr = underlay[other].parse().unwrap();
        let remote_mac = macs[other];
        let extra: std::net::Ipv4Addr = "10.99.7.77".parse().unwrap();
        h.run(move || async move {
            let nl = Netlink::connect().unwrap();
            let vx = nl.link_index("vxwr").await.unwrap().unwrap();
            if set {
                nl.fdb_flood_add(vx, peer).await.unwrap();
                nl.fdb_flood_add(vx, peer).await.unwrap();
                nl.fdb_flood_add(vx, extra).await.unwrap();
                nl.fdb_set(vx, remote_mac, extra).await.unwrap();
                nl.fdb_set(vx, remote_mac, peer).await.unwrap();
            } else {
                nl.fdb_del(vx, remote_mac, peer).await.unwrap();
                nl.fdb_flood_del(vx, peer).await.unwrap();
                nl.fdb_flood_del(vx, peer).await.unwrap();
            }
        })
    };
    assert!(!ping(&ctrs[0], "10.2.9.2"), "pings cross with no entries");
    for h in &hosts {
        entries(h, true);
    }
    let shown = Command::new("bridge")
        .args(["-n", &hosts[0].name, "fdb", "show", "dev", "vxwr"])
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&shown.stdout).into_owned();
    let floods = shown
        .lines()
        .filter(|l| l.starts_with("00:00:00:00:00:00") && l.contains(" dst "))
        .count();
    assert_eq!(floods, 2, "two peers in the flood list, each once: {shown}");
    let unicast: Vec<&str> = shown
        .lines()
        .filter(|l| {
            l.starts_with(&weave_rs::core::PeerName(macs[1]).to_string()) && l.contains(" dst ")
        })
        .collect();
    assert_eq!(unicast.len(), 1, "{shown}");
    assert!(
        unicast[0].contains("dst 10.99.7.2"),
        "moved to the peer: {shown}"
    );

    let deadline = Instant::now() + Duration::from_secs(5);
    while !ping(&ctrs[0], "10.2.9.2") {
        assert!(Instant::now() < deadline, "no ping over VXLAN:\n{shown}");
    }
    assert!(ping(&ctrs[1], "10.2.9.1"));

    // Heartbeats from host 1's device to host 2's, over the same path,
    // at the full MTU; the receiver sees only them.
    use weave_rs::core::wire::fastpath::{payload_len, Heartbeat};
    use weave_rs::net::heartbeat::HeartbeatSocket;
    let vx_mac = |i: usize| [0x02, 0x77, 0x76, 0x78, 0, i as u8 + 1];
    for (i, h) in hosts.iter().enumerate() {
        let (mac, peer) = (vx_mac(1 - i), underlay[1 - i].parse().unwrap());
        h.run(move || async move {
            let nl = Netlink::connect().unwrap();
            let vx = nl.link_index("vxwr").await.unwrap().unwrap();
            nl.fdb_set(vx, mac, peer).await.unwrap();
        });
    }
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let h2 = hosts[1].file();
    let receiver = std::thread::spawn(move || {
        run_in_netns(&h2, move || {
            let s = HeartbeatSocket::open("vxwr", "weave").unwrap();
            ready_tx.send(()).unwrap();
            let mut buf = vec![0u8; 16 << 10];
            let mut got = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(3);
            while got.len() < 3 && Instant::now() < deadline {
                match s.recv(&mut buf).unwrap() {
                    Some(n) => got.push((payload_len(n), Heartbeat::parse(&buf[..n]))),
                    None => std::thread::sleep(Duration::from_millis(5)),
                }
            }
            got
        })
        .unwrap()
    });
    ready_rx.recv().unwrap();
    let from = weave_rs::core::PeerName([2, 0, 0, 0, 0, 1]);
    run_in_netns(&hosts[0].file(), move || {
        let s = HeartbeatSocket::open("vxwr", "weave").unwrap();
        for seq in 1..=3 {
            let hb = Heartbeat {
                from,
                seq,
                hears_you: seq > 1,
            };
            s.send(&hb.frame(vx_mac(1), vx_mac(0), MTU as usize))
                .unwrap();
        }
    })
    .unwrap();
    let got = receiver.join().unwrap();
    let seqs: Vec<u64> = got
        .iter()
        .filter_map(|(_, h)| Some(h.as_ref()?.seq))
        .collect();
    assert_eq!(seqs, [1, 2, 3], "heartbeats over VXLAN: {got:?}");
    assert!(
        got.iter().all(|(len, _)| *len == MTU as usize),
        "not at the full MTU: {got:?}"
    );

    // A static entry in the bridge's own table sends a MAC to the device
    // (the port learns nothing by itself); deleting it is idempotent.
    let bridge_entry = |set: bool| {
        let rm = macs[1];
        hosts[0].run(move || async move {
            let nl = Netlink::connect().unwrap();
            let vx = nl.link_index("vxwr").await.unwrap().unwrap();
            for _ in 0..2 {
                if set {
                    nl.bridge_fdb_set(vx, rm).await.unwrap();
                } else {
                    nl.bridge_fdb_del(vx, rm).await.unwrap();
                }
            }
        });
        let shown = Command::new("bridge")
            .args(["-n", &hosts[0].name, "fdb", "show", "dev", "vxwr"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&shown.stdout)
            .lines()
            .filter(|l| {
                l.starts_with(&weave_rs::core::PeerName(macs[1]).to_string())
                    && l.contains("master")
            })
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let set = bridge_entry(true);
    assert!(
        set.len() == 1 && set[0].contains("master weave static"),
        "{set:?}"
    );
    assert!(bridge_entry(false).is_empty());

    for h in &hosts {
        entries(h, false);
    }
    // The neighbour entries in the containers would let unicast go on:
    // forget them, then the path is cut.
    for c in &ctrs {
        c.ip(&["neigh", "flush", "all"]);
    }
    assert!(
        !ping(&ctrs[0], "10.2.9.2"),
        "pings cross after the entries went"
    );
}
