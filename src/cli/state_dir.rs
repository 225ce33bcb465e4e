//! Where this network namespace's router keeps its files, and whose they are.
//!
//! The state dir is `/var/lib/weave-rs/netns-<inode>/`. Namespace inodes are
//! reused once a namespace is gone, so the dir records which namespace
//! instance it belongs to (`netns-id`: the boot id and the namespace's
//! SO_NETNS_COOKIE, unique per namespace per boot). A namespace that finds
//! another instance's dir starts fresh: it must not inherit an old router's
//! peer name, key and attachments. The initial namespace (the host's own,
//! the one of pid 1) keeps its identity across reboots. A dir chosen with
//! `WEAVE_RS_STATE_DIR` is not keyed by inode: whoever set it decided which
//! router it belongs to, and it is used as it is.

use std::fs;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::launch::{hex_decode, hex_encode};
use crate::core::crypto::keys::KEY_LEN;
use crate::core::crypto::noise::StaticKey;
use crate::core::PeerName;
use crate::files;

/// The file recording the namespace instance.
const ID_FILE: &str = "netns-id";
/// `SO_NETNS_COOKIE` (Linux 5.14+).
const SO_NETNS_COOKIE: libc::c_int = 71;

/// The state dir, and whether the user chose it (`WEAVE_RS_STATE_DIR`).
pub fn path() -> (PathBuf, bool) {
    if let Some(d) = std::env::var_os("WEAVE_RS_STATE_DIR") {
        return (PathBuf::from(d), true);
    }
    let ns = netns_inode(Path::new("/proc/self/ns/net")).unwrap_or(0);
    (
        Path::new(files::BASE_DIR).join(format!("netns-{ns}")),
        false,
    )
}

fn netns_inode(p: &Path) -> Option<u64> {
    fs::metadata(p).ok().map(|m| m.ino())
}

/// One network namespace instance: unique across namespaces and boots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetnsId {
    pub boot_id: String,
    pub cookie: u64,
}

impl NetnsId {
    /// This process's namespace.
    pub fn current() -> io::Result<NetnsId> {
        let boot_id = fs::read_to_string("/proc/sys/kernel/random/boot_id")?
            .trim()
            .to_string();
        let sock = std::os::unix::net::UnixDatagram::unbound()?;
        let mut cookie: u64 = 0;
        let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
        // SAFETY: getsockopt writes at most `len` bytes into `cookie`.
        let rc = unsafe {
            libc::getsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                SO_NETNS_COOKIE,
                (&mut cookie as *mut u64).cast(),
                &mut len,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(NetnsId { boot_id, cookie })
    }

    fn to_line(&self) -> String {
        format!("{} {}\n", self.boot_id, self.cookie)
    }

    fn parse(s: &str) -> Option<NetnsId> {
        let mut f = s.split_whitespace();
        let (boot_id, cookie) = (f.next()?, f.next()?.parse().ok()?);
        (f.next().is_none() && !boot_id.is_empty()).then(|| NetnsId {
            boot_id: boot_id.to_string(),
            cookie,
        })
    }
}

/// What to do with a state dir found for our namespace's inode.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// It is ours.
    Keep,
    /// No record (a new dir, or one from an older weave-rs), or the host's
    /// namespace after a reboot: keep it and record us.
    Claim,
    /// Another namespace instance's: start with an empty dir.
    Fresh(&'static str),
}

/// Pure: whose is a dir holding `recorded` (the record's text, if any),
/// for namespace `now`; `initial` when `now` is the host's own namespace.
pub fn verdict(recorded: Option<&str>, now: &NetnsId, initial: bool) -> Verdict {
    let Some(text) = recorded else {
        return Verdict::Claim;
    };
    match NetnsId::parse(text) {
        Some(then) if then == *now => Verdict::Keep,
        _ if initial => Verdict::Claim,
        None => Verdict::Fresh("its namespace record is unreadable"),
        Some(then) if then.boot_id == now.boot_id => {
            Verdict::Fresh("it belonged to a deleted network namespace whose inode was reused")
        }
        Some(_) => Verdict::Fresh("it belonged to a network namespace of an earlier boot"),
    }
}

/// Make the state dir ready for this namespace's router. Returns a note
/// for the log when an old identity was removed.
pub fn prepare(dir: &Path, chosen_by_user: bool) -> anyhow::Result<Option<String>> {
    if chosen_by_user {
        files::dir_if_missing(dir, 0o700).with_context(|| format!("create {}", dir.display()))?;
        return Ok(None);
    }
    files::dir_with_mode(Path::new(files::BASE_DIR), 0o700)
        .with_context(|| format!("create {}", files::BASE_DIR))?;
    let now = match NetnsId::current() {
        Ok(id) => id,
        Err(e) => {
            // An old kernel: no way to tell namespace instances apart.
            files::dir_with_mode(dir, 0o700)
                .with_context(|| format!("create {}", dir.display()))?;
            return Ok(Some(format!(
                "cannot identify this network namespace (SO_NETNS_COOKIE: {e}); using {} as it is",
                dir.display()
            )));
        }
    };
    let initial = netns_inode(Path::new("/proc/self/ns/net")).is_some()
        && netns_inode(Path::new("/proc/self/ns/net")) == netns_inode(Path::new("/proc/1/ns/net"));
    prepare_for(dir, &now, initial)
}

/// `prepare` for namespace `now` (testable with any dir and id).
fn prepare_for(dir: &Path, now: &NetnsId, initial: bool) -> anyhow::Result<Option<String>> {
    let record = dir.join(ID_FILE);
    let recorded = match fs::read_to_string(&record) {
        Ok(s) => Some(s),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        // Not valid UTF-8 and the like: a record we cannot read.
        Err(_) if record.exists() => Some(String::new()),
        Err(e) => return Err(e).with_context(|| format!("read {}", record.display())),
    };
    let verdict = verdict(recorded.as_deref(), now, initial);
    let mut note = None;
    if let Verdict::Fresh(why) = verdict {
        fs::remove_dir_all(dir).with_context(|| format!("remove {}", dir.display()))?;
        note = Some(format!(
            "removed {}: {why}; this router starts with a new identity",
            dir.display()
        ));
    }
    files::dir_with_mode(dir, 0o700).with_context(|| format!("create {}", dir.display()))?;
    if verdict != Verdict::Keep {
        files::write_atomic(&record, now.to_line().as_bytes(), 0o600, None)
            .with_context(|| format!("write {}", record.display()))?;
    }
    Ok(note)
}

/// The peer name: `given`, else the one kept in the dir, else a new one.
pub fn peer_name(dir: &Path, given: Option<PeerName>) -> anyhow::Result<PeerName> {
    let file = dir.join("peer-name");
    let write = |n: PeerName| {
        files::write_atomic(&file, format!("{n}\n").as_bytes(), 0o644, None)
            .with_context(|| format!("write {}", file.display()))
    };
    if let Some(n) = given {
        write(n)?;
        return Ok(n);
    }
    if let Ok(s) = fs::read_to_string(&file) {
        if let Ok(n) = s.trim().parse() {
            return Ok(n);
        }
    }
    let n = PeerName::random();
    write(n)?;
    Ok(n)
}

/// This router's long-term Noise key, made on first use and kept in the
/// state dir as `noise-key`, mode 0600 whatever mode it was found with.
/// Nothing pins it, so an unreadable file is replaced.
pub fn static_key(dir: &Path) -> anyhow::Result<StaticKey> {
    let file = dir.join("noise-key");
    if let Ok(meta) = fs::symlink_metadata(&file) {
        if meta.is_file() && meta.mode() & 0o7777 != 0o600 {
            tracing::warn!(
                "{}: mode {:o}, making it 0600",
                file.display(),
                meta.mode() & 0o7777
            );
            fs::set_permissions(&file, fs::Permissions::from_mode(0o600))
                .with_context(|| format!("chmod 0600 {}", file.display()))?;
        }
    }
    if let Ok(s) = fs::read_to_string(&file) {
        let mut lines = s.lines();
        let mut private = zeroize::Zeroizing::new([0u8; KEY_LEN]);
        let mut public = [0u8; KEY_LEN];
        if let (Some(a), Some(b)) = (lines.next(), lines.next()) {
            if hex_decode(a, &mut private[..]) && hex_decode(b, &mut public) {
                return Ok(StaticKey { private, public });
            }
        }
        tracing::warn!("{}: unreadable, making a new key", file.display());
    }
    let key = StaticKey::generate().map_err(|e| anyhow::anyhow!("generate a key: {e}"))?;
    let text = zeroize::Zeroizing::new(format!(
        "{}\n{}\n",
        hex_encode(&key.private[..]),
        hex_encode(&key.public)
    ));
    files::write_atomic(&file, text.as_bytes(), 0o600, None)
        .with_context(|| format!("write {}", file.display()))?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(boot: &str, cookie: u64) -> NetnsId {
        NetnsId {
            boot_id: boot.into(),
            cookie,
        }
    }

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().mode() & 0o7777
    }

    #[test]
    fn verdicts() {
        let now = id("b1", 7);
        assert_eq!(verdict(None, &now, false), Verdict::Claim);
        assert_eq!(verdict(Some("b1 7\n"), &now, false), Verdict::Keep);
        assert!(
            matches!(verdict(Some("b1 8\n"), &now, false), Verdict::Fresh(w) if w.contains("reused"))
        );
        assert!(
            matches!(verdict(Some("b0 7\n"), &now, false), Verdict::Fresh(w) if w.contains("earlier boot"))
        );
        for bad in ["", "b1", "b1 x", "b1 7 9", "\u{0}"] {
            assert!(
                matches!(verdict(Some(bad), &now, false), Verdict::Fresh(_)),
                "{bad:?}"
            );
        }
        // The host's own namespace keeps its identity across reboots.
        assert_eq!(verdict(Some("b0 1\n"), &now, true), Verdict::Claim);
        assert_eq!(verdict(Some("junk"), &now, true), Verdict::Claim);
        assert_eq!(verdict(Some("b1 7"), &now, true), Verdict::Keep);
    }

    /// A state dir with an identity in it, as a router leaves it.
    fn used_dir(root: &Path) -> PathBuf {
        let dir = root.join("netns-4026532000");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("peer-name"), "02:00:00:00:00:01\n").unwrap();
        fs::write(dir.join("attached.json"), "[]").unwrap();
        static_key(&dir).unwrap();
        dir
    }

    #[test]
    fn a_reused_inode_starts_fresh_and_a_known_one_keeps_its_identity() {
        let root = tempfile::tempdir().unwrap();
        let dir = used_dir(root.path());
        let first = id("b1", 100);
        // Legacy dir without a record: claimed, identity kept.
        assert_eq!(prepare_for(&dir, &first, false).unwrap(), None);
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(
            peer_name(&dir, None).unwrap().to_string(),
            "02:00:00:00:00:01"
        );
        let key = static_key(&dir).unwrap().public;
        // Same namespace again (a relaunch).
        assert_eq!(prepare_for(&dir, &first, false).unwrap(), None);
        assert_eq!(static_key(&dir).unwrap().public, key);

        // A new namespace got the same inode.
        let note = prepare_for(&dir, &id("b1", 101), false).unwrap().unwrap();
        assert!(
            note.contains("reused") && note.contains("new identity"),
            "{note}"
        );
        assert!(!dir.join("peer-name").exists());
        assert!(!dir.join("attached.json").exists());
        assert_ne!(static_key(&dir).unwrap().public, key);
        assert_eq!(mode(&dir), 0o700);
        // From now on it is that namespace's.
        assert_eq!(prepare_for(&dir, &id("b1", 101), false).unwrap(), None);
    }

    #[test]
    fn after_a_reboot_only_the_hosts_namespace_keeps_its_identity() {
        let root = tempfile::tempdir().unwrap();
        let dir = used_dir(root.path());
        prepare_for(&dir, &id("b1", 1), true).unwrap();
        assert_eq!(prepare_for(&dir, &id("b2", 1), true).unwrap(), None);
        assert!(dir.join("peer-name").exists());

        let other = used_dir(&root.path().join("x"));
        prepare_for(&other, &id("b1", 55), false).unwrap();
        let note = prepare_for(&other, &id("b2", 55), false).unwrap().unwrap();
        assert!(note.contains("earlier boot"), "{note}");
        assert!(!other.join("peer-name").exists());
    }

    #[test]
    fn a_chosen_dir_is_used_as_it_is() {
        let root = tempfile::tempdir().unwrap();
        let dir = used_dir(root.path());
        fs::write(dir.join(ID_FILE), "someone-else 1\n").unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o750)).unwrap();
        assert_eq!(prepare(&dir, true).unwrap(), None);
        assert!(dir.join("peer-name").exists());
        assert_eq!(mode(&dir), 0o750, "a dir the user chose was changed");
        let fresh = root.path().join("new");
        prepare(&fresh, true).unwrap();
        assert_eq!(mode(&fresh), 0o700);
    }

    #[test]
    fn this_kernel_identifies_namespaces() {
        let a = NetnsId::current().unwrap();
        assert_eq!(a, NetnsId::current().unwrap());
        assert!(a.cookie > 0 && !a.boot_id.is_empty());
        assert_eq!(NetnsId::parse(&a.to_line()), Some(a));
    }

    #[test]
    fn noise_key_is_made_and_kept_0600() {
        let d = tempfile::tempdir().unwrap();
        let k = static_key(d.path()).unwrap();
        let file = d.path().join("noise-key");
        assert_eq!(mode(&file), 0o600);
        fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
        let again = static_key(d.path()).unwrap();
        assert_eq!(again.public, k.public, "a good key was replaced");
        assert_eq!(mode(&file), 0o600, "a loose mode was kept");
        // An unreadable key is replaced, still 0600.
        fs::write(&file, "garbage").unwrap();
        fs::set_permissions(&file, fs::Permissions::from_mode(0o666)).unwrap();
        let new = static_key(d.path()).unwrap();
        assert_ne!(new.public, k.public);
        assert_eq!(mode(&file), 0o600);
    }
}
