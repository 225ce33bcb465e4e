//! Waiting, ping, iperf3 and ICMP capture helpers.

use std::io::Read;
use std::net::Ipv4Addr;
use std::process::{Child, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::cmd::{capture_files, run_cmd, Output};
use crate::netns::AsNetns;

/// Polls `cond` (every 100 ms) until it is true; panics with `what` after
/// `timeout`. Use it instead of sleeping: it returns as soon as the state is
/// reached.
#[track_caller]
pub fn wait_until(timeout: Duration, what: &str, cond: impl FnMut() -> bool) {
    if !try_wait_until(timeout, cond) {
        panic!("timed out after {timeout:?} waiting until: {what}");
    }
}

/// Like [`wait_until`] but returns false on timeout.
pub fn try_wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn ping_argv(to_ip: &str, count: u32) -> Vec<String> {
    let mut v = vec!["ping".to_string()];
    if to_ip.contains(':') {
        v.push("-6".into());
    }
    for a in [
        "-n",
        "-c",
        &count.to_string(),
        "-i",
        "0.2",
        "-W",
        "1",
        to_ip,
    ] {
        v.push(a.to_string());
    }
    v
}

fn ping_output(from: &impl AsNetns, to_ip: &str, count: u32) -> Output {
    let timeout = Duration::from_millis(200 * count as u64) + Duration::from_secs(5);
    from.netns().run_timeout(&ping_argv(to_ip, count), timeout)
}

/// `ping -c COUNT TO_IP` from inside `from`: true when at least one reply
/// came back.
pub fn ping(from: &impl AsNetns, to_ip: &str, count: u32) -> bool {
    ping_output(from, to_ip, count).success()
}

/// `ping -c COUNT TO_IP` from inside `from`: (transmitted, received), and
/// the whole output for messages.
pub fn ping_count(from: &impl AsNetns, to_ip: &str, count: u32) -> (u32, u32, Output) {
    let out = ping_output(from, to_ip, count);
    let mut tx = 0;
    let mut rx = 0;
    for line in out.stdout.lines() {
        if line.contains("packets transmitted") {
            let nums: Vec<u32> = line
                .split(|c: char| !c.is_ascii_digit())
                .filter_map(|w| w.parse().ok())
                .collect();
            if nums.len() >= 2 {
                tx = nums[0];
                rx = nums[1];
            }
        }
    }
    (tx, rx, out)
}

/// An `iperf3 -s -1` running in a namespace; killed on drop.
pub struct Iperf3Server {
    child: Child,
    pub addr: String,
    pub port: u16,
    out_path: std::path::PathBuf,
    err_path: std::path::PathBuf,
}

impl Iperf3Server {
    /// Starts a one-shot iperf3 server bound to `bind_ip` in `at`, and
    /// returns once it listens.
    #[track_caller]
    pub fn start(at: &impl AsNetns, bind_ip: &str) -> Iperf3Server {
        let port = 5201u16;
        let (out_path, err_path, fo, fe) = capture_files();
        let mut cmd =
            at.netns()
                .command(&["iperf3", "-s", "-1", "-B", bind_ip, "-p", &port.to_string()]);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(fo))
            .stderr(Stdio::from(fe));
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("start iperf3 server: {e}"));
        let mut s = Iperf3Server {
            child,
            addr: bind_ip.to_string(),
            port,
            out_path,
            err_path,
        };
        let ns = at.netns();
        let filter = format!("sport = :{port}");
        let ready = try_wait_until(Duration::from_secs(10), || {
            if let Ok(Some(_)) = s.child.try_wait() {
                return false;
            }
            let o = ns.run(&["ss", "-Hltn", &filter]);
            o.success() && !o.stdout.trim().is_empty()
        });
        if !ready {
            panic!(
                "iperf3 server in {} did not listen on {bind_ip}:{port} within 10 s (exited: {:?})\n{}",
                ns.name(),
                s.child.try_wait().ok().flatten(),
                s.output()
            );
        }
        s
    }

    /// What the server printed so far.
    pub fn output(&self) -> String {
        format!(
            "  --- iperf3 server stdout ---\n{}\n  --- iperf3 server stderr ---\n{}",
            std::fs::read_to_string(&self.out_path).unwrap_or_default(),
            std::fs::read_to_string(&self.err_path).unwrap_or_default()
        )
    }
}

impl Drop for Iperf3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.out_path);
        let _ = std::fs::remove_file(&self.err_path);
    }
}

/// What an iperf3 client measured.
#[derive(Clone, Debug)]
pub struct IperfResult {
    pub sent_bps: f64,
    pub received_bps: f64,
    pub retransmits: Option<u64>,
    pub raw: Value,
}

/// `iperf3 -c SERVER -t SECS -J` from inside `from`; panics with the output
/// when the client fails.
#[track_caller]
pub fn iperf3_client(
    from: &impl AsNetns,
    server: &Iperf3Server,
    secs: u32,
    extra: &[&str],
) -> IperfResult {
    let mut argv = vec![
        "iperf3".to_string(),
        "-c".into(),
        server.addr.clone(),
        "-p".into(),
        server.port.to_string(),
        "-t".into(),
        secs.to_string(),
        "-J".into(),
    ];
    argv.extend(extra.iter().map(|s| s.to_string()));
    let out = run_cmd(
        from.netns().command(&argv),
        Duration::from_secs(secs as u64 + 30),
    );
    if !out.success() {
        panic!("iperf3 client failed:\n{out}\n{}", server.output());
    }
    let raw: Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("iperf3 -J output is not JSON ({e}):\n{out}"));
    let num = |p: &str| raw.pointer(p).and_then(Value::as_f64).unwrap_or(0.0);
    IperfResult {
        sent_bps: num("/end/sum_sent/bits_per_second"),
        received_bps: num("/end/sum_received/bits_per_second"),
        retransmits: raw
            .pointer("/end/sum_sent/retransmits")
            .and_then(Value::as_u64),
        raw,
    }
}

/// Listens for ICMP echo replies in `at` for `duration` on a raw socket.
/// Returns once the socket is open; the handle yields the source address of
/// every echo reply seen (one entry per reply, duplicates kept).
#[track_caller]
pub fn icmp_echo_reply_sniffer(at: &impl AsNetns, duration: Duration) -> JoinHandle<Vec<Ipv4Addr>> {
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = at.netns().spawn(move || {
        use socket2::{Domain, Protocol, Socket, Type};
        let sock =
            Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4)).expect("raw ICMP socket");
        tx.send(()).expect("sniffer ready");
        let deadline = Instant::now() + duration;
        let mut seen = Vec::new();
        let mut buf = [0u8; 2048];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            sock.set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .expect("set timeout");
            let n = match (&sock).read(&mut buf) {
                Ok(n) => n,
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut =>
                {
                    continue
                }
                Err(e) => panic!("raw socket read: {e}"),
            };
            if n < 20 {
                continue;
            }
            let ihl = ((buf[0] & 0x0f) as usize) * 4;
            if n < ihl + 8 {
                continue;
            }
            // ICMP type 0 = echo reply
            if buf[ihl] == 0 {
                seen.push(Ipv4Addr::new(buf[12], buf[13], buf[14], buf[15]));
            }
        }
        seen
    });
    if rx.recv_timeout(Duration::from_secs(10)).is_err() {
        match handle.join() {
            Err(p) => std::panic::resume_unwind(p),
            Ok(_) => panic!("ICMP sniffer did not start"),
        }
    }
    handle
}

/// Pings `count` times and panics (with ping's output) unless at least
/// `count - count / 5` replies came back.
#[track_caller]
pub fn assert_pings(from: &impl AsNetns, to_ip: &str, count: u32) {
    let (tx, rx, out) = ping_count(from, to_ip, count);
    let need = count - count / 5;
    if rx < need {
        panic!(
            "ping from {} to {to_ip}: {rx} of {tx} replies (need {need}):\n{out}",
            from.netns().name()
        );
    }
}

/// Waits (up to `timeout`) until one ping from `from` to `to_ip` succeeds.
#[track_caller]
pub fn wait_ping(from: &impl AsNetns, to_ip: &str, timeout: Duration) {
    let what = format!("{} pings {to_ip}", from.netns().name());
    wait_until(timeout, &what, || ping(from, to_ip, 1));
}

/// Seconds.
pub fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// Commands the tests run and the Debian package of each, as
/// scripts/install-deps.sh installs them.
pub const TOOL_PACKAGES: &[(&str, &str)] = &[
    ("iperf3", "iperf3"),
    ("ping", "iputils-ping"),
    ("arping", "iputils-arping"),
    ("tcpdump", "tcpdump"),
    ("iptables", "iptables"),
    ("nc.openbsd", "netcat-openbsd"),
    ("ethtool", "ethtool"),
    ("busybox", "busybox-static"),
    ("dockerd", "docker.io"),
    ("redis-server", "redis-server"),
    ("redis-cli", "redis-tools"),
    ("dig", "bind9-dnsutils"),
    ("dnsperf", "dnsperf"),
    ("dnsmasq", "dnsmasq-base"),
];

/// The absolute path of the command `tool` (searched in PATH, then in the
/// sbin directories, which a non-login PATH may lack). Panics, naming the
/// package and scripts/install-deps.sh, when it is not installed.
#[track_caller]
pub fn require_tool(tool: &str) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .filter(|d| !d.is_empty())
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"])
        .map(|d| std::path::Path::new(d).join(tool))
        .find(|p| {
            std::fs::metadata(p)
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        });
    match found {
        Some(p) => p,
        None => {
            let pkg = TOOL_PACKAGES
                .iter()
                .find(|(t, _)| *t == tool)
                .map(|(_, p)| format!(" (Debian package {p})"))
                .unwrap_or_default();
            panic!(
                "required tool `{tool}` is not installed{pkg}: run `sudo bash \
                 scripts/install-deps.sh` (scripts/test.sh does)"
            )
        }
    }
}
