//! Driving `weave-rs-cni` as a CNI runtime does (CNI_COMMAND and the
//! other variables, the config on stdin), and reading back what the router
//! holds for CNI attachments.

use std::io::Read;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ipnetwork::IpNetwork;
use serde_json::Value;

use crate::container::Container;
use crate::host::{weave_bin, Host};
use crate::lab::Lab;
use crate::tools::secs;

/// `weave-rs-cni` for one host: the weave-rs binary under the plugin's
/// name, run in the host's namespace with its state dir.
pub struct Plugin<'a> {
    h: &'a Host,
    bin: PathBuf,
}

/// One invocation: success, the JSON printed (Null if nothing), how long.
pub struct Call {
    pub ok: bool,
    pub out: Value,
    pub took: Duration,
    pub raw: String,
}

impl Call {
    /// The error code printed (panics if the call succeeded).
    #[track_caller]
    pub fn code(&self) -> u64 {
        assert!(!self.ok, "expected an error, got success: {}", self.raw);
        self.out["code"]
            .as_u64()
            .unwrap_or_else(|| panic!("no error code in {:?}", self.raw))
    }

    #[track_caller]
    pub fn must_succeed(&self, what: &str) -> &Value {
        assert!(self.ok, "{what} failed: {}", self.raw);
        &self.out
    }
}

impl<'a> Plugin<'a> {
    pub fn new(lab: &Lab, h: &'a Host) -> Plugin<'a> {
        let dir = lab.dir().join(format!("cni-bin-{}", h.name()));
        std::fs::create_dir_all(&dir).unwrap();
        let bin = dir.join("weave-rs-cni");
        if !bin.exists() {
            std::os::unix::fs::symlink(weave_bin(), &bin).unwrap();
        }
        Plugin { h, bin }
    }

    /// The plugin installed at `bin` (by `setup-cni`).
    pub fn at(h: &'a Host, bin: PathBuf) -> Plugin<'a> {
        Plugin { h, bin }
    }

    pub fn call(&self, cmd: &str, conf: &Value, env: &[(&str, &str)]) -> Call {
        let started = Instant::now();
        let mut c = Command::new("ip");
        c.args(["netns", "exec", self.h.ns().name()])
            .arg(&self.bin)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("WEAVE_RS_STATE_DIR", self.h.state_dir())
            .env("CNI_COMMAND", cmd)
            .env("CNI_PATH", "/usr/lib/cni")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            c.env(k, v);
        }
        let mut child = c.spawn().expect("running weave-rs-cni");
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().unwrap();
            stdin.write_all(conf.to_string().as_bytes()).unwrap();
        }
        let deadline = started + secs(90);
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("weave-rs-cni {cmd} hung for 90 s");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let mut raw = String::new();
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut raw)
            .unwrap();
        let mut err = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        let took = started.elapsed();
        eprintln!(
            "CNI {cmd} -> {} in {:.2}s: {}{}",
            if status.success() { "ok" } else { "error" },
            took.as_secs_f64(),
            raw.trim(),
            if err.trim().is_empty() {
                String::new()
            } else {
                format!(" (stderr: {})", err.trim())
            }
        );
        let out = if raw.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&raw)
                .unwrap_or_else(|e| panic!("CNI {cmd} printed no JSON ({e}): {raw:?}"))
        };
        Call {
            ok: status.success(),
            out,
            took,
            raw,
        }
    }

    /// ADD/DEL/CHECK for container `id`'s `ifname` in `c`.
    pub fn op(&self, cmd: &str, conf: &Value, id: &str, ifname: &str, netns: &str) -> Call {
        self.call(
            cmd,
            conf,
            &[
                ("CNI_CONTAINERID", id),
                ("CNI_IFNAME", ifname),
                ("CNI_NETNS", netns),
                ("CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAME=pod1"),
            ],
        )
    }
}

pub fn cni_allocations(h: &Host) -> Vec<(String, String)> {
    h.ipam_allocations()
        .into_iter()
        .filter(|(id, _)| id.starts_with("cni:"))
        .collect()
}

/// The addresses of `ifname` in `c` (None: no such interface).
pub fn iface_addrs(c: &Container, ifname: &str) -> Option<Vec<IpNetwork>> {
    let out = c.ns().run(&["ip", "-o", "addr", "show", "dev", ifname]);
    if !out.success() {
        return None;
    }
    Some(
        out.stdout
            .lines()
            .filter_map(|l| {
                let mut w = l
                    .split_whitespace()
                    .skip_while(|w| *w != "inet" && *w != "inet6");
                w.next()?;
                w.next()?.parse().ok()
            })
            .filter(|n: &IpNetwork| !matches!(n.ip(), IpAddr::V6(a) if a.segments()[0] == 0xfe80))
            .collect(),
    )
}
