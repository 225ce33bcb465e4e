//! A simulated machine: a network namespace where a weave-rs router runs.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::cmd::{run_cmd, Output};
use crate::container::Container;
use crate::lab::Ctx;
use crate::netns::{AsNetns, Netns};
use crate::report::Report;

/// No arguments: `h1.launch(NO_ARGS)`.
pub const NO_ARGS: &[&str] = &[];

/// Timeout of `weave-rs launch` (it returns once the router answers).
pub const LAUNCH_TIMEOUT: Duration = Duration::from_secs(60);
/// Timeout of any other weave-rs command.
pub const WEAVE_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the weave-rs binary under test is expected: `$WEAVE_RS_BIN`, else
/// `<workspace>/target/debug/weave-rs`.
pub fn weave_bin_path() -> PathBuf {
    match std::env::var_os("WEAVE_RS_BIN") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("workspace dir")
            .join("target/debug/weave-rs"),
    }
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// The weave-rs binary under test (see [`weave_bin_path`]). Panics when it
/// is missing.
#[track_caller]
pub fn weave_bin() -> PathBuf {
    let path = weave_bin_path();
    if !is_executable(&path) {
        panic!(
            "weave-rs binary not found (or not executable) at {}: run `cargo build` in the \
             workspace first, or set WEAVE_RS_BIN",
            path.display()
        );
    }
    path
}

#[derive(Clone, Debug)]
pub(crate) struct LinkInfo {
    /// Namespace at the other end of a point-to-point link; None = switch.
    pub peer: Option<String>,
    pub addr: Ipv4Addr,
    pub ifname: String,
}

/// A host: a network namespace with underlay links and (once launched) a
/// weave-rs router. Dropping it kills the router and deletes the namespace;
/// when the test is panicking it first prints the router's report and log.
pub struct Host {
    short: String,
    ctx: Arc<Ctx>,
    state_dir: PathBuf,
    links: Mutex<Vec<LinkInfo>>,
    ifaces: AtomicU32,
    peer_name: Mutex<Option<String>>,
    last_launch: Mutex<Option<Vec<String>>>,
    /// Extra environment of every weave-rs command (see [`Host::set_env`]).
    env: Mutex<Vec<(String, String)>>,
    ns: Netns,
}

impl AsNetns for Host {
    fn netns(&self) -> &Netns {
        &self.ns
    }
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "host {} ({})", self.short, self.ns.name())
    }
}

impl Host {
    #[track_caller]
    pub(crate) fn new(ctx: Arc<Ctx>, short: &str) -> Host {
        let ns = Netns::create(&format!("{}{short}", ctx.prefix));
        let state_dir = ctx.dir.join(short);
        std::fs::create_dir_all(&state_dir)
            .unwrap_or_else(|e| panic!("create {}: {e}", state_dir.display()));
        ctx.register_host(short, ns.name(), &state_dir);
        Host {
            short: short.into(),
            ctx,
            state_dir,
            links: Mutex::new(Vec::new()),
            ifaces: AtomicU32::new(0),
            peer_name: Mutex::new(None),
            last_launch: Mutex::new(None),
            // No Docker plugin unless a test asks for one (`set_env`): the
            // default socket is the machine engine's plugin directory, which
            // every host of every test would share.
            env: Mutex::new(vec![(
                "WEAVE_RS_PLUGIN_SOCKET".to_string(),
                "off".to_string(),
            )]),
            ns,
        }
    }

    pub(crate) fn ctx(&self) -> &Arc<Ctx> {
        &self.ctx
    }

    pub(crate) fn next_ifname(&self) -> String {
        format!("ul{}", self.ifaces.fetch_add(1, Ordering::Relaxed))
    }

    pub(crate) fn add_link(&self, l: LinkInfo) {
        self.links.lock().unwrap().push(l);
    }

    /// Short name, like "h1".
    pub fn name(&self) -> &str {
        &self.short
    }

    pub fn ns(&self) -> &Netns {
        &self.ns
    }

    /// The router's state directory (WEAVE_RS_STATE_DIR).
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// This host's first underlay address.
    #[track_caller]
    pub fn ip(&self) -> Ipv4Addr {
        self.links
            .lock()
            .unwrap()
            .first()
            .unwrap_or_else(|| panic!("{} has no underlay link", self.short))
            .addr
    }

    /// Every underlay address of this host.
    pub fn ips(&self) -> Vec<Ipv4Addr> {
        self.links.lock().unwrap().iter().map(|l| l.addr).collect()
    }

    /// The address of this host that `other` reaches directly (a shared
    /// link, or the switch when both are plugged into it).
    #[track_caller]
    pub fn addr_for(&self, other: &Host) -> Ipv4Addr {
        let mine = self.links.lock().unwrap().clone();
        let theirs = other.links.lock().unwrap().clone();
        if let Some(l) = mine
            .iter()
            .find(|l| l.peer.as_deref() == Some(other.ns.name()))
        {
            return l.addr;
        }
        if theirs.iter().any(|l| l.peer.is_none()) {
            if let Some(l) = mine.iter().find(|l| l.peer.is_none()) {
                return l.addr;
            }
        }
        panic!("{} and {} share no underlay link", self.short, other.short)
    }

    /// The name of this host's interface that `other` reaches directly
    /// (see [`Host::addr_for`]): where to capture their underlay traffic.
    #[track_caller]
    pub fn ifname_for(&self, other: &Host) -> String {
        let addr = self.addr_for(other);
        self.links
            .lock()
            .unwrap()
            .iter()
            .find(|l| l.addr == addr)
            .map(|l| l.ifname.clone())
            .expect("link of addr_for")
    }

    /// The peer name the last successful launch printed (or reported).
    pub fn peer_name(&self) -> Option<String> {
        self.peer_name.lock().unwrap().clone()
    }

    /// Sets `key=value` in the environment of every weave-rs command this
    /// host runs from now on, `launch` (so its router) included, e.g.
    /// `DOCKER_HOST` for a [`crate::DockerEngine`] of its own. Replaces an
    /// earlier value of `key`; the `env` of [`Host::launch_env`] wins.
    pub fn set_env(&self, key: &str, value: &str) {
        let mut env = self.env.lock().unwrap();
        env.retain(|(k, _)| k != key);
        env.push((key.to_string(), value.to_string()));
    }

    /// The environment set with [`Host::set_env`].
    pub fn env(&self) -> Vec<(String, String)> {
        self.env.lock().unwrap().clone()
    }

    /// The command `weave-rs ARGS...` in this host's namespace, with its
    /// state dir (and [`Host::set_env`]'s variables), to run as the test
    /// likes (e.g. `launch --foreground`).
    pub fn weave_command<S: AsRef<str>>(&self, args: &[S]) -> Command {
        let mut c = weave_command_in(self.ns.name(), &self.state_dir, &weave_bin(), args);
        for (k, v) in self.env.lock().unwrap().iter() {
            c.env(k, v);
        }
        c
    }

    /// Runs `weave-rs ARGS...` in this host's namespace (30 s timeout).
    #[track_caller]
    pub fn weave<S: AsRef<str>>(&self, args: &[S]) -> Output {
        run_cmd(self.weave_command(args), WEAVE_TIMEOUT)
    }

    /// Runs `weave-rs ARGS...`; it must succeed. Returns stdout.
    #[track_caller]
    pub fn weave_ok<S: AsRef<str>>(&self, args: &[S]) -> String {
        self.weave(args).ok().stdout
    }

    /// Runs `weave-rs launch ARGS...` and returns its output, whatever it is.
    #[track_caller]
    pub fn try_launch<S: AsRef<str>>(&self, args: &[S]) -> Output {
        self.try_launch_env(&[], args)
    }

    /// Like [`Host::try_launch`], with extra environment variables for
    /// `weave-rs launch` (e.g. `WEAVE_PASSWORD`).
    #[track_caller]
    pub fn try_launch_env<S: AsRef<str>>(&self, env: &[(&str, &str)], args: &[S]) -> Output {
        let mut argv = vec!["launch".to_string()];
        argv.extend(args.iter().map(|s| s.as_ref().to_string()));
        let mut cmd = self.weave_command(&argv);
        for (k, v) in env {
            cmd.env(k, v);
        }
        run_cmd(cmd, LAUNCH_TIMEOUT)
    }

    /// Like [`Host::launch`], with extra environment variables for
    /// `weave-rs launch` (not repeated by [`Host::relaunch`]).
    #[track_caller]
    pub fn launch_env<S: AsRef<str>>(&self, env: &[(&str, &str)], args: &[S]) -> String {
        let args: Vec<String> = args.iter().map(|s| s.as_ref().to_string()).collect();
        let out = self.try_launch_env(env, &args);
        self.launched(out, args)
    }

    /// `weave-rs launch ARGS...` in this host; returns once launch returned
    /// (the router is ready). Panics (with stderr and the router log) when
    /// it fails. Returns the router's peer name.
    #[track_caller]
    pub fn launch<S: AsRef<str>>(&self, args: &[S]) -> String {
        let args: Vec<String> = args.iter().map(|s| s.as_ref().to_string()).collect();
        let out = self.try_launch(&args);
        self.launched(out, args)
    }

    /// `launch` right after this host's router was killed: the kernel may
    /// still be releasing the dead router's files, its launch lock among
    /// them, and `launch` then rightly refuses ("... holds the lock"); it
    /// is tried again for up to 10 s, as a supervisor would.
    #[track_caller]
    pub fn launch_after_kill<S: AsRef<str>>(&self, args: &[S]) -> String {
        let args: Vec<String> = args.iter().map(|s| s.as_ref().to_string()).collect();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let out = self.try_launch(&args);
            if out.success()
                || !out.stderr.contains("holds the lock")
                || std::time::Instant::now() > deadline
            {
                return self.launched(out, args);
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    /// Checks a launch's outcome; records its arguments and peer name.
    #[track_caller]
    fn launched(&self, out: Output, args: Vec<String>) -> String {
        if !out.success() {
            panic!(
                "launch on {} failed:\n{out}\n  --- router log ---\n{}",
                self.short,
                self.log_tail(40)
            );
        }
        if self.router_pids().is_empty() {
            panic!(
                "launch on {} returned success but no process runs in its namespace:\n{out}\n  --- router log ---\n{}",
                self.short,
                self.log_tail(40)
            );
        }
        *self.last_launch.lock().unwrap() = Some(args);
        let name = match parse_peer_name(&out.stdout) {
            Some(n) => n,
            None => self.status_json().name,
        };
        *self.peer_name.lock().unwrap() = Some(name.clone());
        name
    }

    /// Launches again with the arguments of the last successful launch.
    #[track_caller]
    pub fn relaunch(&self) -> String {
        let args = self
            .last_launch
            .lock()
            .unwrap()
            .clone()
            .unwrap_or_else(|| panic!("{} was never launched", self.short));
        self.launch(&args)
    }

    /// `report`'s ipam.allocations: (id, cidr) pairs. Panics when the
    /// report has none.
    #[track_caller]
    pub fn ipam_allocations(&self) -> Vec<(String, String)> {
        let r = self.status_json();
        let list = r.raw["ipam"]["allocations"].as_array().unwrap_or_else(|| {
            panic!(
                "report on {} has no ipam.allocations: {}",
                self.short, r.raw
            )
        });
        list.iter()
            .map(|a| {
                (
                    a["id"].as_str().unwrap_or_default().to_string(),
                    a["cidr"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    }

    /// `weave-rs report`, parsed. Panics when the command fails or its JSON
    /// cannot be read.
    #[track_caller]
    pub fn status_json(&self) -> Report {
        let out = self.weave(&["report"]);
        if !out.success() {
            panic!(
                "report on {} failed:\n{out}\n  --- router log ---\n{}",
                self.short,
                self.log_tail(40)
            );
        }
        Report::parse(&out.stdout)
            .unwrap_or_else(|e| panic!("report on {}: {e}\n{out}", self.short))
    }

    /// `weave-rs attach CIDR <container's netns path>`; must succeed.
    #[track_caller]
    pub fn attach(&self, c: &Container, cidr: &str) {
        self.weave_ok(&["attach", cidr, &c.path()]);
    }

    /// `program -S FORWARD` (iptables or ip6tables) in this host: the
    /// FORWARD chain's policy and rules. Fails loudly if `program` is
    /// missing.
    #[track_caller]
    pub fn forward_chain(&self, program: &str) -> String {
        let out = self.ns.run(&[program, "-w", "-S", "FORWARD"]);
        assert!(
            out.success(),
            "`{program} -S FORWARD` failed in {} (is {program} installed? scripts/install-deps.sh): {}",
            self.short,
            out.stderr
        );
        out.stdout
    }

    /// Is the accept rule for bridge `weave` in `program`'s FORWARD chain?
    #[track_caller]
    pub fn has_forward_rule(&self, program: &str) -> bool {
        self.forward_chain(program)
            .lines()
            .any(|l| l.trim() == "-A FORWARD -i weave -o weave -j ACCEPT")
    }

    /// Pids in this host's namespace (the router and anything it started).
    pub fn router_pids(&self) -> Vec<i32> {
        self.ns.pids()
    }

    /// Is anything (the router) running in this host's namespace?
    pub fn router_running(&self) -> bool {
        !self.router_pids().is_empty()
    }

    /// SIGKILLs every process in the host's namespace; returns their pids.
    #[track_caller]
    pub fn kill_router(&self) -> Vec<i32> {
        let pids = self.ns.kill_all();
        assert!(
            !pids.is_empty(),
            "no router process to kill on {}",
            self.short
        );
        assert!(
            self.router_pids().is_empty(),
            "processes survived SIGKILL on {}",
            self.short
        );
        pids
    }

    /// The last `n` lines of every log file in the state dir.
    pub fn log_tail(&self, n: usize) -> String {
        log_tail_of(&self.state_dir, n)
    }
}

fn weave_command_in<S: AsRef<str>>(ns: &str, state_dir: &Path, bin: &Path, args: &[S]) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns]);
    c.arg(bin);
    c.args(args.iter().map(|s| s.as_ref()));
    c.env("WEAVE_RS_STATE_DIR", state_dir);
    c.env("RUST_BACKTRACE", "1");
    c
}

/// Removes terminal colour sequences (ESC [ ... letter).
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        if c == '\x1b' && it.peek() == Some(&'[') {
            it.next();
            for d in it.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The last `n` lines of every `*.log` under `dir`.
fn log_tail_of(dir: &Path, n: usize) -> String {
    let mut s = String::new();
    let mut files: Vec<PathBuf> = walk(dir)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    files.sort();
    for f in files {
        let text = strip_ansi(&std::fs::read_to_string(&f).unwrap_or_default());
        let lines: Vec<&str> = text.lines().collect();
        let from = lines.len().saturating_sub(n);
        s.push_str(&format!("    ==> {} <==\n", f.display()));
        for l in &lines[from..] {
            s.push_str("    ");
            s.push_str(l);
            s.push('\n');
        }
    }
    if s.is_empty() {
        s = format!("    (no *.log under {})", dir.display());
    }
    s
}

/// What a failing test prints about one host: its report and router log.
pub(crate) fn dump_host(short: &str, ns: &str, state_dir: &Path) -> String {
    let mut msg = format!("\n===== netns-tests: state of {short} ({ns}) at failure =====\n");
    let running = crate::cmd::run(&["ip", "netns", "pids", ns])
        .stdout
        .split_whitespace()
        .next()
        .is_some();
    let bin = weave_bin_path();
    if running && is_executable(&bin) {
        let out = run_cmd(
            weave_command_in(ns, state_dir, &bin, &["report"]),
            Duration::from_secs(5),
        );
        msg.push_str(&format!("weave-rs report:\n{out}\n"));
    } else {
        msg.push_str("(no process in the namespace)\n");
    }
    msg.push_str(&format!("router log:\n{}\n", log_tail_of(state_dir, 60)));
    msg
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

impl Drop for Host {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // Every host of the lab, before any of them is torn down.
            self.ctx.dump_all_once();
        }
        // Netns's own Drop kills every process and deletes the namespace.
    }
}

/// The first "xx:xx:xx:xx:xx:xx" in launch's output.
pub fn parse_peer_name(out: &str) -> Option<String> {
    out.split(|c: char| c.is_whitespace() || c == '(' || c == ')' || c == ',' || c == '"')
        .find(|w| {
            let parts: Vec<&str> = w.split(':').collect();
            parts.len() == 6
                && parts
                    .iter()
                    .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()))
        })
        .map(|s| s.to_ascii_lowercase())
}

/// Does `ip` belong to this host?
pub(crate) fn host_has_ip(h: &Host, ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => h.ips().contains(&v4),
        IpAddr::V6(v6) => v6.to_ipv4_mapped().is_some_and(|v4| h.ips().contains(&v4)),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_peer_name;

    #[test]
    fn peer_name_from_launch_output() {
        assert_eq!(
            parse_peer_name("a2:3f:00:11:bc:9e\n").as_deref(),
            Some("a2:3f:00:11:bc:9e")
        );
        assert_eq!(
            parse_peer_name("router A2:3F:00:11:BC:9E (h1) up").as_deref(),
            Some("a2:3f:00:11:bc:9e")
        );
        assert_eq!(parse_peer_name("listening on 10.0.0.1:6783"), None);
    }
}
