//! A named network namespace with an RAII guard, and running code in one.

use std::fs::File;
use std::os::fd::AsFd;
use std::process::Command;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sched::CloneFlags;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::cmd::{self, run_cmd, Output, DEFAULT_TIMEOUT};

/// Anything that lives in a network namespace of the test's.
pub trait AsNetns {
    fn netns(&self) -> &Netns;
}

/// A network namespace made by the test (`ip netns add`). Dropping it kills
/// every process inside and deletes it.
pub struct Netns {
    name: String,
}

impl AsNetns for Netns {
    fn netns(&self) -> &Netns {
        self
    }
}

impl std::fmt::Debug for Netns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "netns {}", self.name)
    }
}

impl Netns {
    /// `ip netns add NAME`, loopback up, IPv4 forwarding off.
    #[track_caller]
    pub fn create(name: &str) -> Netns {
        assert!(
            !name.is_empty() && name.len() <= 64 && !name.contains('/'),
            "bad netns name {name:?}"
        );
        cmd::sh(&["ip", "netns", "add", name]);
        let ns = Netns { name: name.into() };
        ns.ip(&["link", "set", "lo", "up"]);
        ns.sysctl("net.ipv4.ip_forward", "0");
        ns
    }

    /// Takes ownership of an existing namespace (it is deleted on drop).
    pub(crate) fn adopt(name: &str) -> Netns {
        Netns { name: name.into() }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace file, as `weave-rs attach` takes it.
    pub fn path(&self) -> String {
        format!("/var/run/netns/{}", self.name)
    }

    /// A command that runs `argv` inside this namespace (`ip netns exec`).
    pub fn command<S: AsRef<str>>(&self, argv: &[S]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]);
        c.args(argv.iter().map(|s| s.as_ref()));
        c
    }

    /// Runs `argv` inside the namespace with the default timeout.
    #[track_caller]
    pub fn run<S: AsRef<str>>(&self, argv: &[S]) -> Output {
        run_cmd(self.command(argv), DEFAULT_TIMEOUT)
    }

    /// Runs `argv` inside the namespace with a timeout.
    #[track_caller]
    pub fn run_timeout<S: AsRef<str>>(&self, argv: &[S], timeout: Duration) -> Output {
        run_cmd(self.command(argv), timeout)
    }

    /// Runs `argv` inside the namespace; it must succeed. Returns stdout.
    #[track_caller]
    pub fn sh<S: AsRef<str>>(&self, argv: &[S]) -> String {
        self.run(argv).ok().stdout
    }

    /// `ip -n NAME ARGS...`, must succeed. Returns stdout.
    #[track_caller]
    pub fn ip<S: AsRef<str>>(&self, args: &[S]) -> String {
        let mut argv: Vec<&str> = vec!["ip", "-n", &self.name];
        argv.extend(args.iter().map(|s| s.as_ref()));
        cmd::sh(&argv)
    }

    /// `sysctl -w KEY=VALUE` inside the namespace.
    #[track_caller]
    pub fn sysctl(&self, key: &str, value: &str) {
        self.sh(&["sysctl", "-q", "-w", &format!("{key}={value}")]);
    }

    /// Names of the links in this namespace.
    #[track_caller]
    pub fn links(&self) -> Vec<String> {
        let out = self.ip(&["-o", "link", "show"]);
        out.lines()
            .filter_map(|l| {
                // "7: weave-tap: <...>" or "9: vethwr1234@if8: <...>"
                let name = l.split(':').nth(1)?.trim();
                Some(name.split('@').next().unwrap_or(name).to_string())
            })
            .collect()
    }

    pub fn has_link(&self, name: &str) -> bool {
        self.links().iter().any(|l| l == name)
    }

    /// Processes whose network namespace is this one (`ip netns pids`),
    /// never the test process itself.
    pub fn pids(&self) -> Vec<i32> {
        let out = cmd::run(&["ip", "netns", "pids", &self.name]);
        if !out.success() {
            return Vec::new();
        }
        let me = std::process::id() as i32;
        out.stdout
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .filter(|&p| p != me)
            .collect()
    }

    /// SIGKILLs every process in the namespace and waits (up to 5 s) until
    /// none is left. Returns the pids that were killed.
    pub fn kill_all(&self) -> Vec<i32> {
        let mut killed = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let pids = self.pids();
            if pids.is_empty() || Instant::now() > deadline {
                wait_released(&killed, deadline);
                return killed;
            }
            for p in pids {
                let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
                if !killed.contains(&p) {
                    killed.push(p);
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// SIGKILLs `pids` and waits (up to 5 s) until they hold no file any more
/// (see `wait_released`).
pub fn kill_pids(pids: &[i32]) {
    for p in pids {
        let _ = kill(Pid::from_raw(*p), Signal::SIGKILL);
    }
    wait_released(pids, Instant::now() + Duration::from_secs(15));
}

/// Waits until each of `pids` is gone or has only zombie threads. A killed
/// process leaves the namespace's pid list when its first thread exits,
/// while its last thread may still be releasing its files (the launch lock
/// among them), after they left its descriptor table: closing a packet
/// socket waits for an RCU grace period. A thread is a zombie only once
/// that is done.
fn wait_released(pids: &[i32], deadline: Instant) {
    let exiting = |p: i32| {
        std::fs::read_dir(format!("/proc/{p}/task")).is_ok_and(|tasks| {
            tasks.filter_map(Result::ok).any(|t| {
                // The state follows the command name, which is in
                // parentheses and may hold spaces.
                std::fs::read_to_string(t.path().join("stat")).is_ok_and(|stat| {
                    stat.rsplit_once(')')
                        .and_then(|(_, rest)| rest.split_whitespace().next())
                        .is_some_and(|state| state != "Z" && state != "X")
                })
            })
        })
    };
    for p in pids {
        while exiting(*p) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Netns {
    /// Runs `f` on a thread whose network namespace is this one (sockets it
    /// makes belong to the namespace and keep working from any thread).
    pub fn in_netns<F, R>(&self, f: F) -> R
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        in_netns(&self.name, f)
    }

    /// Like [`Netns::in_netns`], in the background.
    pub fn spawn<F, R>(&self, f: F) -> JoinHandle<R>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        spawn_in_netns(&self.name, f)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        self.kill_all();
        for attempt in 0..20 {
            let out = cmd::run(&["ip", "netns", "del", &self.name]);
            if out.success() || !std::path::Path::new(&self.path()).exists() {
                return;
            }
            if attempt == 19 {
                eprintln!("netns-tests: could not delete {}:\n{out}", self.name);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Moves the current thread into the named namespace.
fn enter(name: &str) {
    let path = format!("/run/netns/{name}");
    let f = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
    nix::sched::setns(f.as_fd(), CloneFlags::CLONE_NEWNET)
        .unwrap_or_else(|e| panic!("setns({path}): {e}"));
}

/// Runs `f` on a fresh thread inside the named network namespace and
/// returns its result (a panic in `f` is resumed here).
pub fn in_netns<F, R>(name: &str, f: F) -> R
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    match spawn_in_netns(name, f).join() {
        Ok(r) => r,
        Err(p) => std::panic::resume_unwind(p),
    }
}

/// Starts `f` on a fresh thread inside the named network namespace.
pub fn spawn_in_netns<F, R>(name: &str, f: F) -> JoinHandle<R>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    let name = name.to_string();
    std::thread::Builder::new()
        .name(format!("in-{name}"))
        .spawn(move || {
            enter(&name);
            f()
        })
        .expect("spawn thread")
}
