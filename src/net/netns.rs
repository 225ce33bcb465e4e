//! Network namespace targets (`/var/run/netns/NAME`, any netns file, or
//! `pid:N`) and running code inside a namespace.
//!
//! [`run_in_netns`] runs a closure on a fresh std thread that did
//! `setns(CLONE_NEWNET)`; the thread ends with the closure, so no other code
//! ever runs in the wrong namespace and tokio workers are never moved.

use std::fmt;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use nix::sched::{setns, CloneFlags};

use super::NetError;

/// `NS_GET_NSTYPE` = `_IO(0xb7, 0x3)`: the `CLONE_NEW*` type of an nsfs fd.
const NS_GET_NSTYPE: libc::c_ulong = 0xb703;

/// Where a container's network lives: a netns file or a process.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum NetnsTarget {
    /// A network namespace file, e.g. `/var/run/netns/c1` or
    /// `/proc/123/ns/net`.
    Path(PathBuf),
    /// The network namespace of process N (`/proc/N/ns/net`).
    Pid(u32),
}

impl FromStr for NetnsTarget {
    type Err = NetError;

    /// `pid:N` or a path (anything containing a `/`).
    fn from_str(s: &str) -> Result<Self, NetError> {
        if let Some(pid) = s.strip_prefix("pid:") {
            return match pid.parse::<u32>() {
                Ok(n) if n > 0 => Ok(NetnsTarget::Pid(n)),
                _ => Err(NetError::BadTarget {
                    target: s.to_string(),
                    reason: "not a process id",
                }),
            };
        }
        if s.contains('/') {
            return Ok(NetnsTarget::Path(PathBuf::from(s)));
        }
        Err(NetError::BadTarget {
            target: s.to_string(),
            reason: "not a network namespace path or pid:N",
        })
    }
}

impl fmt::Display for NetnsTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetnsTarget::Path(p) => write!(f, "{}", p.display()),
            NetnsTarget::Pid(n) => write!(f, "pid:{n}"),
        }
    }
}

impl NetnsTarget {
    /// The file that holds the namespace.
    pub fn path(&self) -> PathBuf {
        match self {
            NetnsTarget::Path(p) => p.clone(),
            NetnsTarget::Pid(n) => PathBuf::from(format!("/proc/{n}/ns/net")),
        }
    }

    /// Opens the namespace, checking that it is a live network namespace.
    pub fn open(&self) -> Result<File, NetError> {
        let path = self.path();
        let file = File::open(&path).map_err(|e| match (self, e.kind()) {
            (NetnsTarget::Path(p), io::ErrorKind::NotFound) => NetError::NoSuchNetns(p.clone()),
            (NetnsTarget::Pid(n), io::ErrorKind::NotFound) => NetError::NoSuchProcess(*n),
            _ => NetError::Netns {
                target: self.to_string(),
                source: e,
            },
        })?;
        check_netns(&file).map_err(|e| match e {
            Some(source) => NetError::Netns {
                target: self.to_string(),
                source,
            },
            None => NetError::NotNetns(self.to_string()),
        })?;
        Ok(file)
    }

    /// 8 hex chars derived from the namespace's inode: the same namespace
    /// gets the same id whichever way it is named (path or pid), so its host
    /// veth is always `vethwr<id>`. If the namespace cannot be opened, the
    /// id is derived from the target's text instead.
    pub fn short_id(&self) -> String {
        match self.open() {
            Ok(f) => ns_short_id(&f).unwrap_or_else(|_| hash_id(self.to_string().as_bytes())),
            Err(_) => hash_id(self.to_string().as_bytes()),
        }
    }
}

/// Checks that `f` is a network namespace file. `Err(None)`: it is not one;
/// `Err(Some(e))`: it could not be determined.
fn check_netns(f: &File) -> Result<(), Option<io::Error>> {
    // SAFETY: NS_GET_NSTYPE takes no argument and only reads the fd.
    let r = unsafe { libc::ioctl(f.as_raw_fd(), NS_GET_NSTYPE as _) };
    if r < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            // Not an nsfs file (a regular file, an unmounted bind target).
            Some(libc::ENOTTY) | Some(libc::EINVAL) => Err(None),
            _ => Err(Some(e)),
        };
    }
    if r != libc::CLONE_NEWNET {
        return Err(None);
    }
    Ok(())
}

/// The inode number of an open namespace file.
pub fn ns_inode(ns: &File) -> Result<u64, NetError> {
    ns.metadata().map(|m| m.ino()).map_err(|e| NetError::Io {
        what: "stat network namespace".into(),
        source: e,
    })
}

/// The inode of the caller's own network namespace (`/proc/thread-self/ns/net`).
pub fn current_ns_inode() -> Result<u64, NetError> {
    std::fs::metadata("/proc/thread-self/ns/net")
        .map(|m| m.ino())
        .map_err(|e| NetError::Io {
            what: "stat /proc/thread-self/ns/net".into(),
            source: e,
        })
}

/// [`NetnsTarget::short_id`] of an already open namespace.
pub fn ns_short_id(ns: &File) -> Result<String, NetError> {
    Ok(hash_id(&ns_inode(ns)?.to_le_bytes()))
}

/// As `ns_short_id`, for one of several interfaces of `ns`.
pub fn ns_short_id_with(ns: &File, ifname: &str) -> Result<String, NetError> {
    let mut bytes = ns_inode(ns)?.to_le_bytes().to_vec();
    bytes.extend_from_slice(ifname.as_bytes());
    Ok(hash_id(&bytes))
}

/// FNV-1a 64, folded to 32 bits: stable across builds and Rust versions.
fn hash_id(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{:08x}", ((h >> 32) ^ h) as u32)
}

/// Runs `f` on a fresh std thread that entered the network namespace `ns`,
/// and returns its result. Blocks the caller until `f` returns; a panic in
/// `f` is resumed in the caller. Never moves the calling thread.
pub fn run_in_netns<T: Send + 'static>(
    ns: &File,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, NetError> {
    let ns = dup_ns(ns)?;
    let handle = std::thread::Builder::new()
        .name("weave-netns".into())
        .spawn(move || -> Result<T, NetError> {
            enter(&ns)?;
            drop(ns);
            Ok(f())
        })
        .map_err(|e| NetError::Io {
            what: "spawn netns thread".into(),
            source: e,
        })?;
    match handle.join() {
        Ok(r) => r,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// Like [`run_in_netns`], but awaits the thread instead of blocking: use it
/// from async code when `f` may take more than a moment.
pub async fn run_in_netns_async<T: Send + 'static>(
    ns: &File,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, NetError> {
    let ns = dup_ns(ns)?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("weave-netns".into())
        .spawn(move || {
            let r = match enter(&ns) {
                Ok(()) => {
                    drop(ns);
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map(Ok)
                }
                Err(e) => Ok(Err(e)),
            };
            let _ = tx.send(r);
        })
        .map_err(|e| NetError::Io {
            what: "spawn netns thread".into(),
            source: e,
        })?;
    match rx.await {
        Ok(Ok(r)) => r,
        Ok(Err(panic)) => std::panic::resume_unwind(panic),
        Err(_) => Err(NetError::Io {
            what: "netns thread".into(),
            source: io::Error::other("ended without a result"),
        }),
    }
}

fn dup_ns(ns: &File) -> Result<File, NetError> {
    ns.try_clone().map_err(|e| NetError::Io {
        what: "dup network namespace fd".into(),
        source: e,
    })
}

fn enter(ns: &File) -> Result<(), NetError> {
    setns(ns.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|e| NetError::Netns {
        target: fd_path(ns),
        source: io::Error::from(e),
    })
}

/// Best-effort name of an open fd, for error messages.
fn fd_path(f: &File) -> String {
    std::fs::read_link(Path::new("/proc/self/fd").join(f.as_raw_fd().to_string()))
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| format!("fd {}", f.as_raw_fd()))
}

/// Mounts of network namespaces a router inherited and must not keep.
///
/// A router started in a mount namespace of its own (as `ip netns exec`
/// gives it) holds a copy of every mount that existed then, Docker's
/// private bind mounts of its containers' network namespaces included
/// (/run/docker/netns/...). Docker later unmounts its own copy, but ours
/// would keep a removed container's namespace, and so its veth on our
/// bridge, alive for as long as the router runs. When our mount namespace is
/// not Docker's (nor, without Docker, init's), detach every such private
/// nsfs mount: private means nothing propagates back, so the real ones are
/// untouched. Returns how many.
pub fn release_inherited_netns_mounts() -> usize {
    let ours = match std::fs::metadata("/proc/self/ns/mnt") {
        Ok(m) => (m.dev(), m.ino()),
        Err(_) => return 0,
    };
    let dockerd = std::fs::read_to_string("/var/run/docker.pid")
        .ok()
        .and_then(|p| p.trim().parse::<u32>().ok())
        .map(|p| format!("/proc/{p}/ns/mnt"));
    let reference = dockerd
        .into_iter()
        .chain(["/proc/1/ns/mnt".to_string()])
        .find_map(|path| std::fs::metadata(path).ok());
    match reference {
        Some(m) if (m.dev(), m.ino()) != ours => {}
        // Same namespace, or none to compare with: leave mounts alone.
        _ => return 0,
    }
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return 0;
    };
    private_nsfs_mounts(&info)
        .into_iter()
        .filter(|path| nix::mount::umount2(path.as_str(), nix::mount::MntFlags::MNT_DETACH).is_ok())
        .count()
}

/// Mount points of private nsfs mounts of network namespaces, from
/// /proc/self/mountinfo text.
fn private_nsfs_mounts(mountinfo: &str) -> Vec<String> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let (before, after) = line.split_once(" - ")?;
            let fields: Vec<&str> = before.split(' ').collect();
            let (root, mount_point) = (fields.get(3)?, fields.get(4)?);
            // Optional fields (shared:N, master:N) follow the sixth field.
            let private = fields.len() == 6;
            let nsfs = after.split(' ').next() == Some("nsfs");
            (nsfs && private && root.starts_with("net:[")).then(|| unescape(mount_point))
        })
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as \ooo.
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(char::from(v));
            i += 4;
        } else {
            out.push(char::from(b[i]));
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_display() {
        let t: NetnsTarget = "pid:42".parse().unwrap();
        assert_eq!(t, NetnsTarget::Pid(42));
        assert_eq!(t.to_string(), "pid:42");
        let t: NetnsTarget = "/var/run/netns/c1".parse().unwrap();
        assert_eq!(t, NetnsTarget::Path("/var/run/netns/c1".into()));
        assert_eq!(t.to_string(), "/var/run/netns/c1");
        assert_eq!(
            "pid:abc".parse::<NetnsTarget>().unwrap_err().to_string(),
            "pid:abc: not a process id"
        );
        assert_eq!(
            "foo".parse::<NetnsTarget>().unwrap_err().to_string(),
            "foo: not a network namespace path or pid:N"
        );
    }

    #[test]
    fn hash_is_stable() {
        assert_eq!(hash_id(&4026531840u64.to_le_bytes()).len(), 8);
        assert_eq!(
            hash_id(&4026531840u64.to_le_bytes()),
            hash_id(&4026531840u64.to_le_bytes())
        );
        assert_ne!(
            hash_id(&4026531840u64.to_le_bytes()),
            hash_id(&4026531841u64.to_le_bytes())
        );
    }

    #[test]
    fn finds_only_private_network_namespace_mounts() {
        let info = "\
83 46 0:4 net:[4026532256] /run/docker/netns/160e301105b8 rw - nsfs nsfs rw
84 46 0:4 net:[4026532257] /run/netns/c1 rw shared:5 - nsfs nsfs rw
85 46 0:4 mnt:[4026532258] /run/x rw - nsfs nsfs rw
86 46 0:4 net:[4026532259] /run/docker/netns/a\\040b rw - nsfs nsfs rw
22 1 0:21 / /proc rw,nosuid - proc proc rw
";
        assert_eq!(
            private_nsfs_mounts(info),
            vec![
                "/run/docker/netns/160e301105b8".to_string(),
                "/run/docker/netns/a b".to_string()
            ]
        );
    }
}
