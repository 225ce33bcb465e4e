//! Traffic made from Rust inside namespaces: a TCP transfer of known bytes
//! between two containers, raw UDP datagrams, raw Ethernet frames, and
//! reading an interface's MAC address.

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::netns::AsNetns;

/// `len` bytes of `marker` repeated (the last copy cut).
pub fn repeated(marker: &[u8], len: usize) -> Vec<u8> {
    marker.iter().copied().cycle().take(len).collect()
}

/// Sends `data` over one TCP connection from `from` to `to_ip:port`, where
/// a listener is opened in `to` first; returns once the receiver read
/// everything up to the sender's close, and panics unless it received
/// exactly `data`. The sender retries its connect until `timeout` (the
/// overlay may still be learning addresses).
#[track_caller]
pub fn tcp_transfer(
    from: &impl AsNetns,
    to: &impl AsNetns,
    to_ip: Ipv4Addr,
    port: u16,
    data: &[u8],
    timeout: Duration,
) {
    let (ready_tx, ready_rx) = mpsc::channel();
    let deadline = Instant::now() + timeout;
    let receiver = to.netns().spawn(move || -> Result<Vec<u8>, String> {
        let l =
            TcpListener::bind((to_ip, port)).map_err(|e| format!("bind {to_ip}:{port}: {e}"))?;
        l.set_nonblocking(true).map_err(|e| e.to_string())?;
        let _ = ready_tx.send(());
        let mut s = loop {
            match l.accept() {
                Ok((s, _)) => break s,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    if Instant::now() > deadline {
                        return Err("no connection arrived".into());
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => return Err(format!("accept: {e}")),
            }
        };
        s.set_nonblocking(false).map_err(|e| e.to_string())?;
        let mut got = Vec::new();
        let mut buf = [0u8; 16384];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!("receive timed out after {} bytes", got.len()));
            }
            s.set_read_timeout(Some(left)).map_err(|e| e.to_string())?;
            match s.read(&mut buf) {
                Ok(0) => return Ok(got),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("read after {} bytes: {e}", got.len())),
            }
        }
    });
    if ready_rx.recv_timeout(Duration::from_secs(10)).is_err() {
        match receiver.join() {
            Ok(Err(e)) => panic!("tcp_transfer receiver: {e}"),
            Ok(Ok(_)) => panic!("tcp_transfer receiver ended before listening"),
            Err(p) => std::panic::resume_unwind(p),
        }
    }
    let payload = data.to_vec();
    let sent = from.netns().in_netns(move || -> Result<(), String> {
        let to = SocketAddr::V4(SocketAddrV4::new(to_ip, port));
        let mut s = loop {
            match TcpStream::connect_timeout(&to, Duration::from_secs(2)) {
                Ok(s) => break s,
                Err(e) => {
                    if Instant::now() > deadline {
                        return Err(format!("connect {to}: {e}"));
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        };
        let left = deadline.saturating_duration_since(Instant::now());
        s.set_write_timeout(Some(left.max(Duration::from_millis(1))))
            .map_err(|e| e.to_string())?;
        s.write_all(&payload).map_err(|e| format!("write: {e}"))?;
        s.shutdown(std::net::Shutdown::Write)
            .map_err(|e| format!("shutdown: {e}"))?;
        // Wait for the receiver's close so every byte was acknowledged.
        let mut b = [0u8; 1];
        let _ = s.set_read_timeout(Some(left.max(Duration::from_millis(1))));
        let _ = s.read(&mut b);
        Ok(())
    });
    let got = match receiver.join() {
        Ok(r) => r,
        Err(p) => std::panic::resume_unwind(p),
    };
    if let Err(e) = sent {
        panic!("tcp_transfer sender: {e}");
    }
    let got = got.unwrap_or_else(|e| panic!("tcp_transfer receiver: {e}"));
    assert!(
        got == data,
        "tcp_transfer: received {} bytes, sent {} (contents equal: {})",
        got.len(),
        data.len(),
        got == data
    );
}

/// Sends each of `datagrams` once to `to` from an ephemeral UDP port inside
/// `from` (to addresses of the test's own namespaces only).
#[track_caller]
pub fn udp_send(from: &impl AsNetns, to: SocketAddr, datagrams: &[Vec<u8>]) {
    let dgs = datagrams.to_vec();
    from.netns().in_netns(move || {
        let sock = UdpSocket::bind("0.0.0.0:0").expect("udp bind");
        for d in &dgs {
            sock.send_to(d, to)
                .unwrap_or_else(|e| panic!("send {} bytes to {to}: {e}", d.len()));
        }
    });
}

/// An IPv4 packet carrying one UDP datagram, as `raw_udp_send` sends it:
/// IP checksum, id and total length are filled in by the kernel; the UDP
/// checksum is 0 (none, allowed for IPv4).
pub fn ipv4_udp_packet(src: SocketAddrV4, dst: SocketAddrV4, ttl: u8, payload: &[u8]) -> Vec<u8> {
    let total = 20 + 8 + payload.len();
    assert!(total <= 65_535, "datagram too big");
    let mut p = Vec::with_capacity(total);
    p.extend_from_slice(&[0x45, 0]);
    p.extend_from_slice(&(total as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0, 0x40, 0]); // id, DF
    p.extend_from_slice(&[ttl, 17, 0, 0]);
    p.extend_from_slice(&src.ip().octets());
    p.extend_from_slice(&dst.ip().octets());
    p.extend_from_slice(&src.port().to_be_bytes());
    p.extend_from_slice(&dst.port().to_be_bytes());
    p.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(payload);
    p
}

/// Sends `payload` as a UDP datagram from `src` (any address and port, e.g.
/// the router's own `ip:6783`, so it looks exactly like the router's
/// datagrams) to `dst`, with the given IP TTL, through a raw socket inside
/// `from`. Only to addresses of the test's own namespaces.
#[track_caller]
pub fn raw_udp_send(
    from: &impl AsNetns,
    src: SocketAddrV4,
    dst: SocketAddrV4,
    ttl: u8,
    payload: &[u8],
) {
    let packet = ipv4_udp_packet(src, dst, ttl, payload);
    from.netns().in_netns(move || {
        use socket2::{Domain, Protocol, SockAddr, Socket, Type};
        // IPPROTO_RAW: we write the IP header (IP_HDRINCL implied).
        let sock = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(255)))
            .expect("raw IPv4 socket");
        let to = SockAddr::from(SocketAddr::V4(SocketAddrV4::new(*dst.ip(), 0)));
        let n = sock
            .send_to(&packet, &to)
            .unwrap_or_else(|e| panic!("raw send to {dst}: {e}"));
        assert_eq!(n, packet.len(), "short raw send");
    });
}

/// Sends `count` Ethernet frames, `frame(i)` for i in 0..count, out of
/// `ifname` inside `from` through an AF_PACKET socket, back to back as fast
/// as the kernel takes them (a frame the kernel has no room for is retried,
/// so all are sent). The frames leave only through that interface.
#[track_caller]
pub fn eth_send(
    from: &impl AsNetns,
    ifname: &str,
    count: usize,
    frame: impl Fn(usize) -> Vec<u8> + Send + 'static,
) {
    let ifname = ifname.to_string();
    from.netns().in_netns(move || {
        use socket2::{Domain, Protocol, SockAddr, SockAddrStorage, Socket, Type};
        let name = std::ffi::CString::new(ifname.as_str()).expect("interface name");
        // SAFETY: a NUL-terminated string that outlives the call.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        assert!(
            ifindex != 0,
            "no interface {ifname}: {}",
            std::io::Error::last_os_error()
        );
        let eth_p_all = (libc::ETH_P_ALL as u16).to_be();
        let sock = Socket::new(
            Domain::PACKET,
            Type::RAW,
            Some(Protocol::from(i32::from(eth_p_all))),
        )
        .expect("AF_PACKET socket");
        let mut storage = SockAddrStorage::zeroed();
        // SAFETY: sockaddr_ll fits in sockaddr_storage; every field is set.
        let addr = unsafe {
            let ll = storage.view_as::<libc::sockaddr_ll>();
            ll.sll_family = libc::AF_PACKET as u16;
            ll.sll_protocol = eth_p_all;
            ll.sll_ifindex = ifindex as i32;
            SockAddr::new(
                storage,
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        sock.bind(&addr)
            .unwrap_or_else(|e| panic!("bind AF_PACKET socket to {ifname}: {e}"));
        for i in 0..count {
            let f = frame(i);
            loop {
                match sock.send(&f) {
                    Ok(n) => {
                        assert_eq!(n, f.len(), "short send on {ifname}");
                        break;
                    }
                    Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => std::thread::yield_now(),
                    Err(e) => panic!("send frame {i} on {ifname}: {e}"),
                }
            }
        }
    });
}

/// A random unicast, locally administered MAC for each `i` (a fixed
/// sequence per `seed`; distinct with overwhelming odds).
pub fn random_local_mac(seed: u64, i: usize) -> [u8; 6] {
    // splitmix64
    let mut z = seed.wrapping_add((i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    let b = z.to_be_bytes();
    [(b[0] & 0xfc) | 0x02, b[1], b[2], b[3], b[4], b[5]]
}

/// An iptables rule in a namespace, deleted on drop:
/// `IptablesRule::insert(h2, &["INPUT", "-p", "udp", ..., "-j", "DROP"])`.
pub struct IptablesRule {
    ns: String,
    rule: Vec<String>,
}

impl IptablesRule {
    /// `iptables -I RULE...` in `at`; must succeed.
    #[track_caller]
    pub fn insert(at: &impl AsNetns, rule: &[&str]) -> IptablesRule {
        let mut argv = vec!["iptables", "-w", "-I"];
        argv.extend_from_slice(rule);
        at.netns().sh(&argv);
        IptablesRule {
            ns: at.netns().name().to_string(),
            rule: rule.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// Deletes the rule now (same as dropping it).
    pub fn remove(self) {}

    /// Cuts `at` off from `ip` (DROP in both directions) until dropped.
    #[track_caller]
    pub fn cut_off(at: &impl AsNetns, ip: &str) -> [IptablesRule; 2] {
        [
            IptablesRule::insert(at, &["INPUT", "-s", ip, "-j", "DROP"]),
            IptablesRule::insert(at, &["OUTPUT", "-d", ip, "-j", "DROP"]),
        ]
    }
}

impl Drop for IptablesRule {
    fn drop(&mut self) {
        let mut argv: Vec<String> = ["ip", "netns", "exec", &self.ns, "iptables", "-w", "-D"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        argv.extend(self.rule.iter().cloned());
        let _ = crate::cmd::run(&argv);
    }
}

/// The MAC address of `ifname` in `at` (`ip link show`).
#[track_caller]
pub fn mac_of(at: &impl AsNetns, ifname: &str) -> [u8; 6] {
    let out = at.netns().ip(&["-o", "link", "show", "dev", ifname]);
    let word = out
        .split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .unwrap_or_else(|| panic!("no link/ether for {ifname} in:\n{out}"));
    parse_mac(word).unwrap_or_else(|| panic!("bad MAC {word:?} of {ifname}"))
}

/// "aa:bb:cc:dd:ee:ff" as bytes.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let parts: Vec<&str> = s.trim().split(':').collect();
    if parts.len() != 6 {
        return None;
    }
    let mut m = [0u8; 6];
    for (i, p) in parts.iter().enumerate() {
        m[i] = u8::from_str_radix(p, 16).ok()?;
    }
    Some(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_and_parse_mac() {
        assert_eq!(repeated(b"ab", 5), b"ababa");
        assert_eq!(
            parse_mac("02:Fa:00:11:22:ff"),
            Some([2, 0xfa, 0, 0x11, 0x22, 0xff])
        );
        assert_eq!(parse_mac("02:fa:00"), None);
    }
}
