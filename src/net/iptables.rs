//! The one iptables rule the router needs:
//! `-I FORWARD -i <bridge> -o <bridge> -j ACCEPT`.
//!
//! With br_netfilter loaded (it is once Docker runs) and a FORWARD policy of
//! DROP, bridged IPv4 between a container's veth and the router's TAP is
//! silently dropped while ARP still works. The rule is added once
//! (checked with `-C` first) and removed on reset. The `iptables` binary is
//! run as a child process (blocking, a few milliseconds: from async code use
//! `spawn_blocking`). If it is not installed the functions return
//! [`NetError::IptablesMissing`], which callers log as a warning.

use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::NetError;

/// How to run iptables: the program (default `iptables`, looked up in PATH).
#[derive(Debug, Clone)]
pub struct Iptables {
    program: PathBuf,
}

impl Default for Iptables {
    fn default() -> Self {
        Iptables {
            program: PathBuf::from("iptables"),
        }
    }
}

/// Adds the FORWARD accept rule for `bridge` unless present, with the
/// default `iptables`. Returns whether it was added.
pub fn ensure_forward_accept(bridge: &str) -> Result<bool, NetError> {
    Iptables::default().ensure_forward_accept(bridge)
}

/// Removes the FORWARD accept rule for `bridge` (every copy), with the
/// default `iptables`. Returns whether one was removed.
pub fn remove_forward_accept(bridge: &str) -> Result<bool, NetError> {
    Iptables::default().remove_forward_accept(bridge)
}

impl Iptables {
    /// Uses `program` instead of `iptables` (e.g. `iptables-legacy`).
    pub fn with_program(program: impl AsRef<Path>) -> Self {
        Iptables {
            program: program.as_ref().to_path_buf(),
        }
    }

    /// See [`ensure_forward_accept`].
    pub fn ensure_forward_accept(&self, bridge: &str) -> Result<bool, NetError> {
        if self.check(bridge)? {
            return Ok(false);
        }
        self.run_ok(&rule("-I", bridge))?;
        Ok(true)
    }

    /// See [`remove_forward_accept`].
    pub fn remove_forward_accept(&self, bridge: &str) -> Result<bool, NetError> {
        let mut removed = false;
        // Bounded: each round deletes one copy; never loop forever on a
        // misbehaving binary.
        for _ in 0..16 {
            if !self.check(bridge)? {
                break;
            }
            self.run_ok(&rule("-D", bridge))?;
            removed = true;
        }
        Ok(removed)
    }

    /// Whether the rule is present (`-C` exits 0; 1 means absent).
    fn check(&self, bridge: &str) -> Result<bool, NetError> {
        let args = rule("-C", bridge);
        let out = self.run(&args)?;
        match out.status.code() {
            Some(0) => Ok(true),
            Some(1) => Ok(false),
            _ => Err(self.failed(&args, &out)),
        }
    }

    fn run_ok(&self, args: &[String]) -> Result<(), NetError> {
        let out = self.run(args)?;
        if out.status.success() {
            Ok(())
        } else {
            Err(self.failed(args, &out))
        }
    }

    fn run(&self, args: &[String]) -> Result<std::process::Output, NetError> {
        Command::new(&self.program)
            .arg("-w")
            .args(args)
            .output()
            .map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => NetError::IptablesMissing {
                    program: self.program.display().to_string(),
                },
                _ => NetError::Iptables {
                    args: args.join(" "),
                    cause: e.to_string(),
                },
            })
    }

    fn failed(&self, args: &[String], out: &std::process::Output) -> NetError {
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        NetError::Iptables {
            args: args.join(" "),
            cause: if stderr.is_empty() {
                out.status.to_string()
            } else {
                stderr
            },
        }
    }
}

fn rule(op: &str, bridge: &str) -> Vec<String> {
    [op, "FORWARD", "-i", bridge, "-o", bridge, "-j", "ACCEPT"]
        .iter()
        .map(|s| s.to_string())
        .collect()
}
