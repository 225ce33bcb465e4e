//! [`NetError`]: every failure of the host plumbing, with messages that name
//! the object acted on and the cause, e.g.
//! `ethwe in /var/run/netns/c1: address 10.2.1.1/24 already assigned`.

use std::io;
use std::path::PathBuf;

/// An error from the host plumbing (`crate::net`).
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A netns target string that is neither `pid:N` nor a path.
    #[error("{target}: {reason}")]
    BadTarget {
        /// The string as given.
        target: String,
        /// Why it was rejected.
        reason: &'static str,
    },

    /// The namespace file does not exist.
    #[error("no such network namespace {}", .0.display())]
    NoSuchNetns(PathBuf),

    /// `pid:N` names no running process.
    #[error("no process {0}")]
    NoSuchProcess(u32),

    /// The path exists but is not a network namespace (not nsfs, or another
    /// namespace type, or an `ip netns` mount point whose netns is gone).
    #[error("{0}: not a network namespace")]
    NotNetns(String),

    /// Opening or entering a namespace failed for another reason.
    #[error("network namespace {target}: {source}")]
    Netns {
        /// The target, as displayed.
        target: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// The target has no `ethwe` (detach of something never attached).
    #[error("{target}: not attached (no ethwe)")]
    NotAttached {
        /// The target, as displayed.
        target: String,
    },

    /// A link that must exist does not.
    #[error("{object}: does not exist")]
    NoSuchLink {
        /// What was looked for, e.g. `bridge weave`.
        object: String,
    },

    /// An address is already on the interface (EEXIST from the kernel).
    #[error("{object}: address {addr} already assigned")]
    AddressInUse {
        /// E.g. `ethwe in /var/run/netns/c1`.
        object: String,
        /// The CIDR.
        addr: String,
    },

    /// An address that cannot be given to an interface (multicast,
    /// unspecified, broadcast).
    #[error("{object}: {addr}: not a unicast address")]
    BadAddress {
        /// E.g. `ethwe in /var/run/netns/c1`.
        object: String,
        /// The CIDR.
        addr: String,
    },

    /// A netlink request failed.
    #[error("{object}: {op}: {cause}")]
    Netlink {
        /// E.g. `bridge weave`, `veth vethwr0123abcd`.
        object: String,
        /// What was being done, e.g. `create`, `set mtu 1376`.
        op: String,
        /// The kernel's reason, e.g. `File exists`.
        cause: String,
        /// The errno, when the kernel sent one.
        errno: Option<i32>,
    },

    /// Creating or configuring the TAP device failed.
    #[error("TAP {name}: {source}")]
    Tap {
        /// The TAP's name.
        name: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// The iptables (or ip6tables) binary is not installed: callers log
    /// this as a warning.
    #[error("{program} is not installed: frames between containers and the router may be dropped by the FORWARD chain")]
    IptablesMissing {
        /// The program that was looked for.
        program: String,
    },

    /// iptables (or ip6tables) ran and failed.
    #[error("{program} {args}: {cause}")]
    Iptables {
        /// The program run.
        program: String,
        /// The arguments, space-separated.
        args: String,
        /// Its stderr or exit status.
        cause: String,
    },

    /// A gratuitous ARP / unsolicited NA could not be sent.
    #[error("gratuitous ARP on {ifname}: {source}")]
    Garp {
        /// The interface.
        ifname: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// Called outside a tokio runtime, or the runtime is shutting down.
    #[error("{0}: must be called within a tokio runtime")]
    NoRuntime(&'static str),

    /// Any other I/O failure.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

impl NetError {
    /// The errno behind a netlink error, if any.
    pub fn errno(&self) -> Option<i32> {
        match self {
            NetError::Netlink { errno, .. } => *errno,
            NetError::AddressInUse { .. } => Some(libc::EEXIST),
            NetError::Netns { source, .. }
            | NetError::Tap { source, .. }
            | NetError::Garp { source, .. }
            | NetError::Io { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}
