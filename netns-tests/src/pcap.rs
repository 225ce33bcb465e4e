//! Capturing underlay traffic with `tcpdump -w` inside a namespace, and a
//! small reader for the classic libpcap file format (no dependencies).
//!
//! ```no_run
//! # use netns_tests::*;
//! # let lab = Lab::new(); let hosts = lab.switched_hosts(2);
//! # let (h1, h2) = (&hosts[0], &hosts[1]);
//! let cap = Capture::start(h1, &h1.ifname_for(h2), "udp port 6783", &lab.dir().join("a.pcap"));
//! // ... traffic ...
//! let pcap = cap.stop();
//! for d in pcap.udp() { /* d.src, d.dst, d.payload */ }
//! ```

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use crate::cmd::capture_files;
use crate::netns::AsNetns;
use crate::tools::try_wait_until;

/// A running `tcpdump -w FILE` in a namespace. [`Capture::stop`] ends it
/// and reads the file; dropping it without `stop` kills it and removes the
/// file.
pub struct Capture {
    child: Child,
    path: PathBuf,
    out_path: PathBuf,
    err_path: PathBuf,
    ns: String,
}

impl Capture {
    /// Starts `tcpdump -i IFACE -w PATH FILTER` (unbuffered, immediate
    /// mode, full snap length) inside `at`, and returns once tcpdump
    /// listens: packets sent after this returns are captured.
    #[track_caller]
    pub fn start(at: &impl AsNetns, iface: &str, filter: &str, path: &Path) -> Capture {
        let (out_path, err_path, fo, fe) = capture_files();
        let _ = std::fs::remove_file(path);
        let path_s = path.to_string_lossy().into_owned();
        let mut argv: Vec<&str> = vec![
            "tcpdump",
            "-i",
            iface,
            "-n",
            "-U",
            "--immediate-mode",
            "-s",
            "0",
            // 32 MiB kernel buffer: no drops while 2 cores are busy.
            "-B",
            "32768",
            // Debian's tcpdump drops root after opening the interface;
            // the file is written as root into the lab's scratch dir.
            "-Z",
            "root",
            "-w",
            &path_s,
        ];
        argv.extend(filter.split_whitespace());
        let mut cmd = at.netns().command(&argv);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(fo))
            .stderr(Stdio::from(fe));
        {
            use std::os::unix::process::CommandExt;
            cmd.process_group(0);
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("start tcpdump: {e} (is tcpdump installed?)"));
        let mut cap = Capture {
            child,
            path: path.to_path_buf(),
            out_path,
            err_path,
            ns: at.netns().name().to_string(),
        };
        let ready = try_wait_until(Duration::from_secs(10), || {
            if let Ok(Some(_)) = cap.child.try_wait() {
                return true;
            }
            std::fs::read_to_string(&cap.err_path)
                .unwrap_or_default()
                .contains("listening on")
        });
        let exited = cap.child.try_wait().ok().flatten();
        if !ready || exited.is_some() {
            panic!(
                "tcpdump in {} on {iface} did not start listening (exited: {exited:?}):\n{}",
                cap.ns,
                cap.stderr()
            );
        }
        cap
    }

    /// The pcap file being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.err_path).unwrap_or_default()
    }

    /// Stops tcpdump (SIGINT: it flushes and exits) and reads what it
    /// captured. Panics when the file cannot be read.
    #[track_caller]
    pub fn stop(mut self) -> Pcap {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::killpg(pid, nix::sys::signal::Signal::SIGINT);
        let done = try_wait_until(Duration::from_secs(10), || {
            matches!(self.child.try_wait(), Ok(Some(_)))
        });
        if !done {
            let _ = nix::sys::signal::killpg(pid, nix::sys::signal::Signal::SIGKILL);
            let _ = self.child.wait();
        }
        let bytes = std::fs::read(&self.path)
            .unwrap_or_else(|e| panic!("read {}: {e}\n{}", self.path.display(), self.stderr()));
        let mut pcap = Pcap::parse(&bytes)
            .unwrap_or_else(|e| panic!("{}: {e}\n{}", self.path.display(), self.stderr()));
        // "N packets dropped by kernel", printed by tcpdump as it exits.
        pcap.dropped_by_kernel = self.stderr().lines().find_map(|l| {
            l.strip_suffix("packets dropped by kernel")
                .and_then(|n| n.trim().parse().ok())
        });
        pcap
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
            let _ = nix::sys::signal::killpg(pid, nix::sys::signal::Signal::SIGKILL);
        }
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.path);
        let _ = std::fs::remove_file(&self.out_path);
        let _ = std::fs::remove_file(&self.err_path);
    }
}

/// Link types this reader understands.
pub const LINKTYPE_ETHERNET: u32 = 1;
pub const LINKTYPE_RAW: u32 = 101;
pub const LINKTYPE_LINUX_SLL: u32 = 113;
pub const LINKTYPE_LINUX_SLL2: u32 = 276;

/// A classic libpcap file, read into memory.
#[derive(Clone, Debug)]
pub struct Pcap {
    pub linktype: u32,
    /// Every record's captured bytes (link-layer frame), in file order.
    pub packets: Vec<Vec<u8>>,
    /// What tcpdump reported as dropped by the kernel (None: not known,
    /// e.g. a file read with [`Pcap::read`]).
    pub dropped_by_kernel: Option<u64>,
}

/// A UDP datagram or TCP segment seen in a capture (IPv4 only).
#[derive(Clone, Debug)]
pub struct Segment<'a> {
    pub src: SocketAddrV4,
    pub dst: SocketAddrV4,
    /// Bytes after the UDP/TCP header up to the end of the captured frame
    /// (IP/UDP length fields are not trusted: GSO super-packets carry
    /// several datagrams behind one header).
    pub payload: &'a [u8],
    /// The payload length the headers claim (UDP length - 8; IP total
    /// length - headers for TCP). Equal to `payload.len()` for an ordinary
    /// unfragmented datagram without link-layer padding.
    pub declared_len: usize,
}

impl Segment<'_> {
    /// Does either end use `port`?
    pub fn has_port(&self, port: u16) -> bool {
        self.src.port() == port || self.dst.port() == port
    }
}

/// An IPv4 packet inside a captured frame.
#[derive(Clone, Debug)]
pub struct Ipv4<'a> {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub proto: u8,
    /// Fragment offset in bytes (0 for the first or only fragment).
    pub frag_offset: usize,
    /// More fragments follow.
    pub more_fragments: bool,
    /// The IP total length field.
    pub total_len: usize,
    /// IP header length.
    pub header_len: usize,
    /// The bytes after the IP header, to the end of the frame.
    pub payload: &'a [u8],
}

impl Pcap {
    /// Parses a classic pcap file (either byte order, microsecond or
    /// nanosecond timestamps). pcapng is refused.
    pub fn parse(b: &[u8]) -> Result<Pcap, String> {
        if b.len() < 24 {
            return Err(format!(
                "pcap file too short ({} bytes, header is 24)",
                b.len()
            ));
        }
        let magic = [b[0], b[1], b[2], b[3]];
        let le = match magic {
            [0xd4, 0xc3, 0xb2, 0xa1] | [0x4d, 0x3c, 0xb2, 0xa1] => true,
            [0xa1, 0xb2, 0xc3, 0xd4] | [0xa1, 0xb2, 0x3c, 0x4d] => false,
            [0x0a, 0x0d, 0x0d, 0x0a] => return Err("pcapng is not supported".into()),
            _ => return Err(format!("not a pcap file (magic {magic:02x?})")),
        };
        let u32_at = |o: usize| -> u32 {
            let a = [b[o], b[o + 1], b[o + 2], b[o + 3]];
            if le {
                u32::from_le_bytes(a)
            } else {
                u32::from_be_bytes(a)
            }
        };
        // linktype: low 28 bits of the last header field (FCS bits above).
        let linktype = u32_at(20) & 0x0fff_ffff;
        let mut packets = Vec::new();
        let mut o = 24;
        while o < b.len() {
            if o + 16 > b.len() {
                // tcpdump killed mid-record: keep what is complete.
                break;
            }
            let incl = u32_at(o + 8) as usize;
            if incl > 16 << 20 {
                return Err(format!("record at offset {o} claims {incl} bytes"));
            }
            if o + 16 + incl > b.len() {
                break;
            }
            packets.push(b[o + 16..o + 16 + incl].to_vec());
            o += 16 + incl;
        }
        Ok(Pcap {
            linktype,
            packets,
            dropped_by_kernel: None,
        })
    }

    /// Reads and parses a pcap file.
    pub fn read(path: &Path) -> Result<Pcap, String> {
        let b = std::fs::read(path).map_err(|e| format!("read {}: {e}", path.display()))?;
        Pcap::parse(&b)
    }

    /// The network-layer bytes of a frame and their ethertype.
    fn network<'a>(&self, f: &'a [u8]) -> Option<(u16, &'a [u8])> {
        let be16 = |o: usize| u16::from_be_bytes([f[o], f[o + 1]]);
        match self.linktype {
            LINKTYPE_ETHERNET => {
                if f.len() < 14 {
                    return None;
                }
                let mut et = be16(12);
                let mut o = 14;
                // 802.1Q / 802.1ad tags.
                while (et == 0x8100 || et == 0x88a8) && f.len() >= o + 4 {
                    et = be16(o + 2);
                    o += 4;
                }
                Some((et, &f[o..]))
            }
            LINKTYPE_LINUX_SLL => (f.len() >= 16).then(|| (be16(14), &f[16..])),
            LINKTYPE_LINUX_SLL2 => (f.len() >= 20).then(|| (be16(0), &f[20..])),
            LINKTYPE_RAW => f
                .first()
                .map(|v| (if v >> 4 == 4 { 0x0800 } else { 0x86dd }, f)),
            _ => None,
        }
    }

    /// Every IPv4 packet (fragments included).
    pub fn ipv4(&self) -> Vec<Ipv4<'_>> {
        let mut v = Vec::new();
        for f in &self.packets {
            let Some((0x0800, ip)) = self.network(f) else {
                continue;
            };
            if ip.len() < 20 || ip[0] >> 4 != 4 {
                continue;
            }
            let ihl = (ip[0] & 0x0f) as usize * 4;
            if ihl < 20 || ip.len() < ihl {
                continue;
            }
            let frag = u16::from_be_bytes([ip[6], ip[7]]);
            v.push(Ipv4 {
                src: Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]),
                dst: Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]),
                proto: ip[9],
                frag_offset: (frag & 0x1fff) as usize * 8,
                more_fragments: frag & 0x2000 != 0,
                total_len: u16::from_be_bytes([ip[2], ip[3]]) as usize,
                header_len: ihl,
                payload: &ip[ihl..],
            });
        }
        v
    }

    /// UDP datagrams (first fragments only: later ones have no header).
    pub fn udp(&self) -> Vec<Segment<'_>> {
        self.ipv4()
            .into_iter()
            .filter(|p| p.proto == 17 && p.frag_offset == 0 && p.payload.len() >= 8)
            .map(|p| Segment {
                src: SocketAddrV4::new(p.src, u16::from_be_bytes([p.payload[0], p.payload[1]])),
                dst: SocketAddrV4::new(p.dst, u16::from_be_bytes([p.payload[2], p.payload[3]])),
                payload: &p.payload[8..],
                declared_len: (u16::from_be_bytes([p.payload[4], p.payload[5]]) as usize)
                    .saturating_sub(8),
            })
            .collect()
    }

    /// TCP segments (first fragments only).
    pub fn tcp(&self) -> Vec<Segment<'_>> {
        self.ipv4()
            .into_iter()
            .filter(|p| p.proto == 6 && p.frag_offset == 0 && p.payload.len() >= 20)
            .filter_map(|p| {
                let off = (p.payload[12] >> 4) as usize * 4;
                (off >= 20 && p.payload.len() >= off).then(|| Segment {
                    src: SocketAddrV4::new(p.src, u16::from_be_bytes([p.payload[0], p.payload[1]])),
                    dst: SocketAddrV4::new(p.dst, u16::from_be_bytes([p.payload[2], p.payload[3]])),
                    payload: &p.payload[off..],
                    declared_len: p.total_len.saturating_sub(p.header_len + off),
                })
            })
            .collect()
    }

    /// Number of captured frames that contain `needle` anywhere (headers
    /// included).
    pub fn frames_containing(&self, needle: &[u8]) -> usize {
        self.packets.iter().filter(|f| contains(f, needle)).count()
    }
}

/// Does `hay` contain `needle`?
pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// A short hex rendering of the start of `b`, for messages.
pub fn hex_head(b: &[u8], n: usize) -> String {
    let mut s: String = b
        .iter()
        .take(n)
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(" ");
    if b.len() > n {
        s.push_str(&format!(" ... ({} bytes)", b.len()));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ipv4_udp(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
        let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0];
        let total = (20 + 8 + payload.len()) as u16;
        ip[2..4].copy_from_slice(&total.to_be_bytes());
        ip.extend_from_slice(&src);
        ip.extend_from_slice(&dst);
        ip.extend_from_slice(&sport.to_be_bytes());
        ip.extend_from_slice(&dport.to_be_bytes());
        ip.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        ip.extend_from_slice(&[0, 0]);
        ip.extend_from_slice(payload);
        ip
    }

    fn ipv4_tcp(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
        let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 6, 0, 0];
        let total = (20 + 20 + payload.len()) as u16;
        ip[2..4].copy_from_slice(&total.to_be_bytes());
        ip.extend_from_slice(&src);
        ip.extend_from_slice(&dst);
        ip.extend_from_slice(&sport.to_be_bytes());
        ip.extend_from_slice(&dport.to_be_bytes());
        ip.extend_from_slice(&[0; 8]); // seq, ack
        ip.extend_from_slice(&[0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0]);
        ip.extend_from_slice(payload);
        ip
    }

    fn file(le: bool, linktype: u32, frames: &[Vec<u8>]) -> Vec<u8> {
        let w32 = |v: u32| if le { v.to_le_bytes() } else { v.to_be_bytes() };
        let w16 = |v: u16| if le { v.to_le_bytes() } else { v.to_be_bytes() };
        let mut b = Vec::new();
        b.extend_from_slice(&w32(0xa1b2_c3d4));
        b.extend_from_slice(&w16(2));
        b.extend_from_slice(&w16(4));
        b.extend_from_slice(&w32(0));
        b.extend_from_slice(&w32(0));
        b.extend_from_slice(&w32(262_144));
        b.extend_from_slice(&w32(linktype));
        for (i, f) in frames.iter().enumerate() {
            b.extend_from_slice(&w32(i as u32));
            b.extend_from_slice(&w32(0));
            b.extend_from_slice(&w32(f.len() as u32));
            b.extend_from_slice(&w32(f.len() as u32));
            b.extend_from_slice(f);
        }
        b
    }

    fn eth(ethertype: u16, ip: Vec<u8>) -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2];
        f.extend_from_slice(&ethertype.to_be_bytes());
        f.extend(ip);
        f
    }

    #[test]
    fn reads_udp_and_tcp_over_ethernet_both_byte_orders() {
        for le in [true, false] {
            let frames = vec![
                eth(
                    0x0800,
                    ipv4_udp([10, 77, 0, 1], [10, 77, 0, 2], 6783, 6783, b"\xe8hello"),
                ),
                eth(
                    0x0800,
                    ipv4_tcp([10, 77, 0, 2], [10, 77, 0, 1], 40000, 6783, b"MARK"),
                ),
                eth(0x0806, vec![0; 28]), // ARP
            ];
            let mut bytes = file(le, LINKTYPE_ETHERNET, &frames);
            bytes.extend_from_slice(&[1, 2, 3]); // a cut record at the end
            let p = Pcap::parse(&bytes).unwrap();
            assert_eq!(p.linktype, 1);
            assert_eq!(p.packets.len(), 3);
            let u = p.udp();
            assert_eq!(u.len(), 1);
            assert_eq!(u[0].src, "10.77.0.1:6783".parse().unwrap());
            assert_eq!(u[0].dst, "10.77.0.2:6783".parse().unwrap());
            assert_eq!(u[0].payload, b"\xe8hello");
            assert_eq!(u[0].declared_len, 6);
            let t = p.tcp();
            assert_eq!(t.len(), 1);
            assert_eq!(t[0].dst.port(), 6783);
            assert!(t[0].has_port(40000));
            assert_eq!(t[0].payload, b"MARK");
            assert_eq!(t[0].declared_len, 4);
            assert_eq!(p.frames_containing(b"MARK"), 1);
            assert_eq!(p.frames_containing(b"nope"), 0);
        }
    }

    #[test]
    fn reads_sll_and_vlan() {
        let ip = ipv4_udp([1, 2, 3, 4], [5, 6, 7, 8], 1, 2, b"x");
        let mut sll = vec![0u8; 14];
        sll.extend_from_slice(&0x0800u16.to_be_bytes());
        sll.extend_from_slice(&ip);
        let p = Pcap::parse(&file(true, LINKTYPE_LINUX_SLL, &[sll])).unwrap();
        assert_eq!(p.udp()[0].payload, b"x");

        let mut vlan = vec![
            2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x81, 0x00, 0, 5, 0x08, 0x00,
        ];
        vlan.extend_from_slice(&ip);
        let p = Pcap::parse(&file(true, LINKTYPE_ETHERNET, &[vlan])).unwrap();
        assert_eq!(p.udp()[0].src.port(), 1);
    }

    #[test]
    fn later_fragments_have_no_udp_header() {
        let mut ip = ipv4_udp([1, 2, 3, 4], [5, 6, 7, 8], 1, 2, b"xxxxxxxx");
        ip[6] = 0x00;
        ip[7] = 0x10; // offset 128 bytes
        let p = Pcap::parse(&file(true, LINKTYPE_ETHERNET, &[eth(0x0800, ip)])).unwrap();
        assert_eq!(p.ipv4().len(), 1);
        assert_eq!(p.ipv4()[0].frag_offset, 128);
        assert!(p.udp().is_empty());
    }

    #[test]
    fn refuses_garbage() {
        assert!(Pcap::parse(b"short").is_err());
        assert!(Pcap::parse(&[0u8; 24]).is_err());
        assert!(Pcap::parse(&[
            0x0a, 0x0d, 0x0d, 0x0a, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0
        ])
        .is_err());
    }

    #[test]
    fn contains_works() {
        assert!(contains(b"abcdef", b"cde"));
        assert!(!contains(b"abc", b"abcd"));
        assert!(!contains(b"abc", b""));
    }
}
