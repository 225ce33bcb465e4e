//! The local control socket against local users.
//!
//! An abstract unix socket has no permissions: an unprivileged process can
//! bind `@weave-rs/control` before the router. Then root's `launch` must
//! refuse and name it, and root's `status`, `report` and `attach` must
//! refuse to talk to it, sending it nothing. With a real router running,
//! idle connections held by an unprivileged user must not lock root out,
//! and running out of file descriptors must not end the router.

use std::io::{BufRead, BufReader};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixStream};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::Instant;

use netns_tests::*;

/// The unprivileged user the local attacker runs as.
const NOBODY: &str = "65534";

/// `wrt-unix-peer` (netns-tests/src/bin) running in a host; killed on drop.
struct UnixPeer {
    child: Child,
    files: Vec<PathBuf>,
}

impl UnixPeer {
    /// Starts `wrt-unix-peer ARGS...` in `host` and waits for its first
    /// line on stdout, which must start with `ready`.
    #[track_caller]
    fn start(host: &Host, args: &[&str], ready: &str, files: Vec<PathBuf>) -> UnixPeer {
        let bin = env!("CARGO_BIN_EXE_wrt-unix-peer");
        let mut argv = vec![bin];
        argv.extend_from_slice(args);
        let mut child = host
            .ns()
            .command(&argv)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("start {bin}: {e}"));
        let out = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(out).read_line(&mut line);
            let _ = tx.send(line);
        });
        let mut peer = UnixPeer { child, files };
        let line = rx.recv_timeout(secs(20)).unwrap_or_default();
        if !line.starts_with(ready) {
            let status = peer.child.try_wait();
            panic!("wrt-unix-peer {args:?} did not get ready: {line:?} (exit: {status:?})");
        }
        peer
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for UnixPeer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for f in &self.files {
            let _ = std::fs::remove_file(f);
        }
    }
}

/// A well-formed reply carrying the report of a router that does not exist.
fn fake_reply() -> String {
    serde_json::json!({
        "status": "ok",
        "message": "02:00:00:00:00:99",
        "report": {
            "version": "0.1.0",
            "protocol": "1..1",
            "router": {
                "name": "02:00:00:00:00:99", "nickname": "impostor", "uid": 7,
                "pid": 4242, "port": 6783, "mtu": 1376, "bridge": "weave",
                "discovery": true, "conn_limit": 200, "encryption": false,
                "uptime_secs": 5
            },
            "connections": [], "peers": [], "targets": [], "refused": [],
            "attached": [], "exposed": [], "mac_table_entries": 0, "stats": {}
        }
    })
    .to_string()
}

/// The command failed with one stderr line naming the squatter.
#[track_caller]
fn refused_naming(out: Output, squatter: u32) -> String {
    let out = out.err();
    let lines: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert_eq!(lines.len(), 1, "want one line on stderr:\n{out}");
    let line = lines[0];
    for needle in [
        format!("pid {squatter}"),
        format!("uid {NOBODY}"),
        "wrt-unix-peer".to_string(),
    ] {
        assert!(
            line.contains(&needle),
            "the error should name {needle:?}:\n{out}"
        );
    }
    assert!(
        !out.stdout.contains("02:00:00:00:00:99") && !out.stdout.contains("impostor"),
        "the impostor's report was shown:\n{out}"
    );
    line.to_string()
}

#[test]
fn squatter_is_named_and_told_nothing() {
    let lab = Lab::new();
    let h1 = lab.switched_host("h1");
    let c = Container::new(&h1);
    let base = std::env::temp_dir().join(lab.prefix());
    let (reply, log) = (base.with_extension("reply"), base.with_extension("log"));
    std::fs::write(&reply, fake_reply()).unwrap();
    std::fs::write(&log, "").unwrap();
    let squatter = UnixPeer::start(
        &h1,
        &[
            "serve",
            NOBODY,
            reply.to_str().unwrap(),
            log.to_str().unwrap(),
        ],
        "ready",
        vec![reply.clone(), log.clone()],
    );
    let pid = squatter.pid();

    lab.step("root's launch refuses, naming the squatter, and makes nothing");
    let line = refused_naming(h1.try_launch(NO_ARGS), pid);
    eprintln!("launch: {line}");
    assert!(
        !line.contains("already running"),
        "a process that is no router was called a router: {line}"
    );
    for link in ["weave", "weave-tap"] {
        assert!(!h1.ns().has_link(link), "launch made {link} anyway");
    }

    lab.step("root's status, report and attach refuse to talk to it");
    eprintln!("status: {}", refused_naming(h1.weave(&["status"]), pid));
    refused_naming(h1.weave(&["report"]), pid);
    refused_naming(h1.weave(&["attach", "10.2.1.1/24", &c.path()]), pid);
    assert!(!c.ns().has_link("ethwe"));

    let seen = std::fs::read_to_string(&log).unwrap();
    let conns: Vec<&str> = seen.lines().collect();
    assert!(!conns.is_empty(), "the CLI never reached the squatter");
    assert!(
        conns.iter().all(|l| *l == "bytes=0"),
        "the squatter received data from root's CLI:\n{seen}"
    );

    lab.step("once the squatter is gone, launch works");
    drop(squatter);
    h1.launch(NO_ARGS);
    h1.status_json();
}

#[test]
fn idle_connections_of_a_user_do_not_lock_root_out() {
    let lab = Lab::new();
    let h1 = lab.switched_host("h1");
    h1.launch(NO_ARGS);
    let mut holder = UnixPeer::start(&h1, &["hold", NOBODY, "100"], "holding", Vec::new());

    lab.step("root's status answers while uid 65534 holds 100 connections");
    for i in 0..5 {
        let t = Instant::now();
        let out = h1.weave(&["status"]);
        assert!(
            out.success(),
            "status #{i} failed with 100 idle connections held:\n{out}"
        );
        assert!(t.elapsed() < secs(5), "status #{i} took {:?}", t.elapsed());
    }
    assert!(holder.alive(), "the holder gave up");
    h1.status_json();
}

/// Open descriptors of `pid`.
fn fd_count(pid: i32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count() as u64)
        .unwrap_or(0)
}

#[test]
fn router_survives_running_out_of_descriptors() {
    let lab = Lab::new();
    let h1 = lab.switched_host("h1");
    h1.launch(NO_ARGS);
    let pid = h1.status_json().raw["router"]["pid"]
        .as_i64()
        .expect("router.pid") as i32;

    lab.step("lower the router's RLIMIT_NOFILE just above what it uses");
    let limit = fd_count(pid) + 8;
    let lim = nix::libc::rlimit {
        rlim_cur: limit,
        rlim_max: limit,
    };
    // SAFETY: plain syscall on another process with valid pointers.
    let rc =
        unsafe { nix::libc::prlimit(pid, nix::libc::RLIMIT_NOFILE, &lim, std::ptr::null_mut()) };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());

    lab.step("open 60 connections: the router runs out of descriptors");
    let conns: Vec<UnixStream> = h1.ns().in_netns(|| {
        let addr = SocketAddr::from_abstract_name(b"weave-rs/control").unwrap();
        (0..60)
            .map(|i| {
                UnixStream::connect_addr(&addr).unwrap_or_else(|e| panic!("connect #{i}: {e}"))
            })
            .collect()
    });
    let alive = || std::path::Path::new(&format!("/proc/{pid}")).exists();
    wait_until(secs(10), "the router has used all its descriptors", || {
        fd_count(pid) >= limit || !alive()
    });
    assert!(alive(), "the router died when it ran out of descriptors");
    // What an operator sees: the router says so, and keeps going.
    wait_until(secs(10), "the router logs failing accepts", || {
        h1.log_tail(200).contains("accept failed")
    });
    drop(conns);

    lab.step("the connections gone, the router answers again");
    wait_until(secs(10), "status answers", || {
        h1.weave(&["status"]).success()
    });
    assert!(alive(), "the router process is gone");
    assert_eq!(
        h1.status_json().raw["router"]["pid"].as_i64(),
        Some(i64::from(pid))
    );
}
