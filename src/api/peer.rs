//! Who is behind the control socket's name.
//!
//! An abstract unix socket has no permissions: any local user can bind
//! `@weave-rs/control` first. So the CLI checks the credentials of the
//! process serving it (SO_PEERCRED on its connected socket gives the
//! listener's pid and uid) before sending anything, and `launch` names the
//! holder when the name is taken. A holder that binds without listening is
//! found through `/proc/net/unix` and the holders' descriptors.

use std::fmt;
use std::os::fd::AsFd;

use nix::sys::socket::{getsockopt, sockopt};

use super::protocol::SOCKET_NAME;

/// Longest command line shown in a message.
const MAX_COMMAND: usize = 120;

/// A process that holds (or serves) the control socket's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// None when it lives in a pid namespace we cannot see.
    pub pid: Option<i32>,
    pub uid: Option<u32>,
    pub command: Option<String>,
}

impl Holder {
    /// The process `pid` (0: unknown) running as `uid`, as /proc shows it.
    pub fn describe(pid: i32, uid: Option<u32>) -> Holder {
        let pid = (pid > 0).then_some(pid);
        Holder {
            pid,
            uid: uid.or_else(|| pid.and_then(uid_of)),
            command: pid.and_then(command_of),
        }
    }

    /// The process serving the socket `fd` is connected to.
    pub fn of_peer(fd: impl AsFd) -> std::io::Result<Holder> {
        let cred = getsockopt(&fd, sockopt::PeerCredentials)?;
        Ok(Holder::describe(cred.pid(), Some(cred.uid())))
    }

    pub fn is_root(&self) -> bool {
        self.uid == Some(0)
    }
}

impl fmt::Display for Holder {
    /// `pid 1234 (user nobody, uid 65534, command "python3 fake.py")`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.pid {
            Some(p) => write!(f, "pid {p}")?,
            None => write!(f, "an unknown process")?,
        }
        let user = self.uid.map(|u| match user_name(u) {
            Some(n) => format!("user {n}, uid {u}"),
            None => format!("uid {u}"),
        });
        match (user, &self.command) {
            (Some(u), Some(c)) => write!(f, " ({u}, command \"{c}\")"),
            (Some(u), None) => write!(f, " ({u})"),
            (None, Some(c)) => write!(f, " (command \"{c}\")"),
            (None, None) => Ok(()),
        }
    }
}

fn user_name(uid: u32) -> Option<String> {
    nix::unistd::User::from_uid(uid.into())
        .ok()
        .flatten()
        .map(|u| sanitize(&u.name))
}

/// The effective uid of `pid`, from /proc.
fn uid_of(pid: i32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .and_then(|u| u.parse().ok())
}

/// The command line of `pid`, shortened and made printable.
fn command_of(pid: i32) -> Option<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args: Vec<String> = raw
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let line = if args.is_empty() {
        // A kernel thread or a process that cleared its argv.
        std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .ok()?
            .trim()
            .to_string()
    } else {
        args.join(" ")
    };
    Some(shorten(&sanitize(&line), MAX_COMMAND))
}

/// Control characters (terminal escapes) replaced by '?'.
fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max).collect();
    out.push_str("...");
    out
}

/// Is the control socket's name free? Checked by binding it for a moment
/// (an abstract name is released when its socket closes).
pub fn name_is_free() -> std::io::Result<bool> {
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(SOCKET_NAME)?;
    match std::os::unix::net::UnixListener::bind_addr(&addr) {
        Ok(_probe) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Ok(false),
        Err(e) => Err(e),
    }
}

/// Whoever holds the control socket's name: the listener's credentials if
/// it accepts connections, else the processes that have a socket bound to
/// it (it may be bound without listening). None when nobody is found.
pub fn holder_of_name() -> Option<Holder> {
    if let Some(h) = listener_credentials() {
        return Some(h);
    }
    let text = std::fs::read_to_string("/proc/net/unix").ok()?;
    let inodes = socket_inodes(&text, SOCKET_NAME);
    pids_with_sockets(&inodes)
        .into_iter()
        .next()
        .map(|pid| Holder::describe(pid, None))
}

fn listener_credentials() -> Option<Holder> {
    let addr = nix::sys::socket::UnixAddr::new_abstract(SOCKET_NAME).ok()?;
    let fd = nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Unix,
        nix::sys::socket::SockType::Stream,
        nix::sys::socket::SockFlag::SOCK_NONBLOCK | nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    )
    .ok()?;
    // Non-blocking: a full backlog must not hang us. The holder receives a
    // connection and nothing else.
    nix::sys::socket::connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &addr).ok()?;
    Holder::of_peer(&fd).ok()
}

/// Inodes of the sockets `/proc/net/unix` lists with the abstract `name`
/// (shown there as `@name`).
pub fn socket_inodes(proc_net_unix: &str, name: &[u8]) -> Vec<u64> {
    let want = format!("@{}", String::from_utf8_lossy(name));
    proc_net_unix
        .lines()
        .skip(1)
        .filter_map(|l| {
            // Num RefCount Protocol Flags Type St Inode Path
            let f: Vec<&str> = l.split_whitespace().collect();
            match (f.get(6), f.get(7)) {
                (Some(inode), Some(path)) if *path == want => inode.parse().ok(),
                _ => None,
            }
        })
        .collect()
}

/// Processes with a descriptor on one of `inodes` (sockets).
fn pids_with_sockets(inodes: &[u64]) -> Vec<i32> {
    if inodes.is_empty() {
        return Vec::new();
    }
    let targets: Vec<String> = inodes.iter().map(|i| format!("socket:[{i}]")).collect();
    let mut pids = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return pids;
    };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else {
            continue;
        };
        let holds = fds.flatten().any(|fd| {
            std::fs::read_link(fd.path())
                .map(|t| targets.iter().any(|w| t.as_os_str() == w.as_str()))
                .unwrap_or(false)
        });
        if holds {
            pids.push(pid);
        }
    }
    pids
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_abstract_name_in_proc_net_unix() {
        let text = "Num       RefCount Protocol Flags    Type St Inode Path\n\
            0000000000000000: 00000002 00000000 00010000 0001 01 23456 @weave-rs/control\n\
            0000000000000000: 00000002 00000000 00010000 0001 01 23457 @weave-rs/control2\n\
            0000000000000000: 00000003 00000000 00000000 0001 03 23458\n\
            0000000000000000: 00000002 00000000 00010000 0001 01 23459 /run/weave-rs/control\n\
            0000000000000000: 00000002 00000000 00000000 0001 01 notanumber @weave-rs/control\n\
            garbage\n";
        assert_eq!(socket_inodes(text, SOCKET_NAME), [23456]);
        assert!(socket_inodes("", SOCKET_NAME).is_empty());
    }

    #[test]
    fn describes_a_process_in_one_line() {
        let me = Holder::describe(std::process::id() as i32, None);
        let uid = nix::unistd::geteuid().as_raw();
        assert_eq!(me.uid, Some(uid));
        let s = me.to_string();
        assert!(
            s.starts_with(&format!("pid {} (", std::process::id())),
            "{s}"
        );
        assert!(s.contains(&format!("uid {uid}")), "{s}");
        assert!(s.contains("command \""), "{s}");
        assert_eq!(s.lines().count(), 1);

        let unknown = Holder::describe(0, Some(65534));
        assert_eq!(unknown.pid, None);
        assert!(unknown.to_string().starts_with("an unknown process ("));
        assert!(unknown.to_string().contains("uid 65534"));
    }

    #[test]
    fn commands_are_printable_and_short() {
        assert_eq!(sanitize("a\x1b[31mb\nc"), "a?[31mb?c");
        let long = "x".repeat(500);
        assert_eq!(shorten(&long, 10), "xxxxxxxxxx...");
        assert_eq!(shorten("é", 1), "é");
    }
}
