//! The one firewall rule the router needs, for IPv4 and IPv6:
//! `iptables -I FORWARD -i <bridge> -o <bridge> -j ACCEPT`, and the same
//! with `ip6tables`.
//!
//! With br_netfilter loaded (it is once Docker runs) and a FORWARD policy of
//! DROP, bridged traffic between a container's veth and the router's TAP is
//! silently dropped while ARP (or, for IPv6, whatever the policy lets by)
//! still works. Each rule is added once (checked with `-C` first) and
//! removed on reset. The binaries are run as child processes (blocking, a
//! few milliseconds: from async code use `spawn_blocking`). If one is not
//! installed the functions return [`NetError::IptablesMissing`] for that
//! family, which callers log as a warning.

use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::NetError;

/// An address family, and so which of `iptables` / `ip6tables` is run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    /// Both families, IPv4 first.
    pub const ALL: [Family; 2] = [Family::V4, Family::V6];

    /// The program managing this family's rules.
    pub fn program(self) -> &'static str {
        match self {
            Family::V4 => "iptables",
            Family::V6 => "ip6tables",
        }
    }
}

/// How to run iptables: the program (default `iptables`, looked up in PATH).
#[derive(Debug, Clone)]
pub struct Iptables {
    program: PathBuf,
}

impl Default for Iptables {
    fn default() -> Self {
        Iptables::for_family(Family::V4)
    }
}

/// Adds the FORWARD accept rule for `bridge` in each family unless present.
/// Returns, per family, whether it was added.
pub fn ensure_forward_accept(bridge: &str) -> Vec<(Family, Result<bool, NetError>)> {
    Family::ALL
        .iter()
        .map(|&f| (f, Iptables::for_family(f).ensure_forward_accept(bridge)))
        .collect()
}

/// Removes the FORWARD accept rule for `bridge` (every copy) in each
/// family. Returns, per family, whether one was removed.
pub fn remove_forward_accept(bridge: &str) -> Vec<(Family, Result<bool, NetError>)> {
    Family::ALL
        .iter()
        .map(|&f| (f, Iptables::for_family(f).remove_forward_accept(bridge)))
        .collect()
}

impl Iptables {
    /// `iptables` or `ip6tables`, looked up in PATH.
    pub fn for_family(family: Family) -> Self {
        Iptables::with_program(family.program())
    }

    /// Uses `program` instead of `iptables` (e.g. `iptables-legacy`).
    pub fn with_program(program: impl AsRef<Path>) -> Self {
        Iptables {
            program: program.as_ref().to_path_buf(),
        }
    }

    /// Adds the FORWARD accept rule for `bridge` unless present; returns
    /// whether it was added.
    pub fn ensure_forward_accept(&self, bridge: &str) -> Result<bool, NetError> {
        if self.check(bridge)? {
            return Ok(false);
        }
        self.run_ok(&rule("-I", bridge))?;
        Ok(true)
    }

    /// Removes every copy of the FORWARD accept rule for `bridge`; returns
    /// whether one was removed.
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

    fn program_name(&self) -> String {
        self.program.display().to_string()
    }

    fn run(&self, args: &[String]) -> Result<std::process::Output, NetError> {
        Command::new(&self.program)
            .arg("-w")
            .args(args)
            .output()
            .map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => NetError::IptablesMissing {
                    program: self.program_name(),
                },
                _ => NetError::Iptables {
                    program: self.program_name(),
                    args: args.join(" "),
                    cause: e.to_string(),
                },
            })
    }

    fn failed(&self, args: &[String], out: &std::process::Output) -> NetError {
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        NetError::Iptables {
            program: self.program_name(),
            args: args.join(" "),
            cause: if stderr.is_empty() {
                out.status.to_string()
            } else {
                stderr
            },
        }
    }
}

/// The rule's arguments after `-w`, with `op` = `-C`, `-I` or `-D`; the
/// same for both families.
fn rule(op: &str, bridge: &str) -> Vec<String> {
    [op, "FORWARD", "-i", bridge, "-o", bridge, "-j", "ACCEPT"]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_arguments() {
        assert_eq!(
            rule("-I", "weave").join(" "),
            "-I FORWARD -i weave -o weave -j ACCEPT"
        );
        assert_eq!(
            rule("-D", "br0").join(" "),
            "-D FORWARD -i br0 -o br0 -j ACCEPT"
        );
        assert_eq!(Family::V4.program(), "iptables");
        assert_eq!(Family::V6.program(), "ip6tables");
    }

    #[test]
    fn missing_program_is_its_own_error() {
        let e = Iptables::with_program("/nonexistent/ip6tables")
            .ensure_forward_accept("weave")
            .unwrap_err();
        assert!(matches!(e, NetError::IptablesMissing { .. }), "{e:?}");
        assert!(e
            .to_string()
            .starts_with("/nonexistent/ip6tables is not installed"));
    }
}
