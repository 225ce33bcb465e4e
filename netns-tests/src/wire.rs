//! Bytes of the weave-rs wire protocol, written independently of the router
//! (from docs/DESIGN.md), for fake and hostile peers in tests.
//!
//! TCP handshake (both sides send at once):
//!   "weave-rs" (8) min_version u8 max_version u8 body_len u16be body
//!   body: name[6] uid u64be port u16be features u32be nick_len u8 nick
//! TCP control frames: len u32be (type + body, <= 1 MiB), type u8, body.
//! UDP sleeve: magic 0xE7, kind u8 (1 frames, 2 heartbeat), hops u8,
//!   flags u8, src[6], dst[6]; kind 1: { len u16be, frame }*; kind 2: uid u64be.

/// Magic at the start of every TCP handshake.
pub const MAGIC: &[u8; 8] = b"weave-rs";
/// The protocol version the router speaks.
pub const VERSION: u8 = 1;
/// Default control/data port.
pub const PORT: u16 = 6783;
/// Largest control frame the router accepts (type + body).
pub const MAX_FRAME: u32 = 1 << 20;
/// First byte of every UDP sleeve datagram.
pub const SLEEVE_MAGIC: u8 = 0xE7;

/// Connects to a router's TCP port as a fake or hostile peer (5 s to
/// connect, 5 s per write).
pub fn connect(to: std::net::SocketAddr) -> std::net::TcpStream {
    let s = std::net::TcpStream::connect_timeout(&to, std::time::Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connect {to}: {e}"));
    s.set_write_timeout(Some(std::time::Duration::from_secs(5)))
        .expect("set write timeout");
    s
}

/// Reads until the other end closes or `timeout` passes. Returns what was
/// read and whether the other end closed (EOF or reset).
pub fn read_until_closed(
    s: &mut std::net::TcpStream,
    timeout: std::time::Duration,
) -> (Vec<u8>, bool) {
    use std::io::{ErrorKind, Read};
    let deadline = std::time::Instant::now() + timeout;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return (got, false);
        }
        s.set_read_timeout(Some(left)).expect("set read timeout");
        match s.read(&mut buf) {
            Ok(0) => return (got, true),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return (got, false)
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return (got, true), // reset
        }
    }
}

/// A handshake body.
#[derive(Clone, Debug)]
pub struct Hello {
    pub name: [u8; 6],
    pub uid: u64,
    pub port: u16,
    pub features: u32,
    pub nick: String,
}

impl Hello {
    /// A plausible fake peer.
    pub fn fake(last: u8) -> Hello {
        Hello {
            name: [0x02, 0xfa, 0x4e, 0x00, 0x00, last],
            uid: 0x0123_4567_89ab_cdef ^ last as u64,
            port: PORT,
            features: 0,
            nick: format!("fake{last}"),
        }
    }

    pub fn body(&self) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&self.name);
        b.extend_from_slice(&self.uid.to_be_bytes());
        b.extend_from_slice(&self.port.to_be_bytes());
        b.extend_from_slice(&self.features.to_be_bytes());
        let nick = self.nick.as_bytes();
        b.push(nick.len() as u8);
        b.extend_from_slice(nick);
        b
    }
}

/// The whole handshake: header with the version range, then the body.
pub fn handshake(min_version: u8, max_version: u8, hello: &Hello) -> Vec<u8> {
    let body = hello.body();
    handshake_raw(min_version, max_version, body.len() as u16, &body)
}

/// A handshake header with any body length, followed by `body` as given
/// (for lying length fields).
pub fn handshake_raw(min_version: u8, max_version: u8, body_len: u16, body: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(12 + body.len());
    v.extend_from_slice(MAGIC);
    v.push(min_version);
    v.push(max_version);
    v.extend_from_slice(&body_len.to_be_bytes());
    v.extend_from_slice(body);
    v
}

/// Length of the fixed handshake header.
pub const HANDSHAKE_HEADER: usize = 12;

/// A control frame: len u32be (= 1 + body), type, body.
pub fn control_frame(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(5 + body.len());
    v.extend_from_slice(&((1 + body.len()) as u32).to_be_bytes());
    v.push(kind);
    v.extend_from_slice(body);
    v
}

/// First byte of every encrypted UDP datagram.
pub const SEALED_MAGIC: u8 = 0xE8;
/// Header of an encrypted datagram: magic, epoch, 2 zero bytes, receiver
/// session id u32be, counter u64be; then ciphertext, then a 16-byte tag.
pub const SEALED_HEADER: usize = 16;
/// Authentication tag at the end of an encrypted datagram.
pub const SEALED_TAG: usize = 16;

/// The header fields of an encrypted datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SealedHeader {
    pub epoch: u8,
    pub session: u32,
    pub counter: u64,
}

/// Reads the header of an encrypted datagram (None unless it starts with
/// [`SEALED_MAGIC`] and is long enough for header and tag).
pub fn sealed_header(d: &[u8]) -> Option<SealedHeader> {
    if d.len() < SEALED_HEADER + SEALED_TAG || d[0] != SEALED_MAGIC {
        return None;
    }
    Some(SealedHeader {
        epoch: d[1],
        session: u32::from_be_bytes(d[4..8].try_into().unwrap()),
        counter: u64::from_be_bytes(d[8..16].try_into().unwrap()),
    })
}

/// A sleeve datagram header.
pub fn sleeve_header(kind: u8, hops: u8, flags: u8, src: [u8; 6], dst: [u8; 6]) -> Vec<u8> {
    let mut v = vec![SLEEVE_MAGIC, kind, hops, flags];
    v.extend_from_slice(&src);
    v.extend_from_slice(&dst);
    v
}

/// A tiny deterministic PRNG (xorshift64*), so hostile inputs are
/// reproducible from a printed seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    /// Seeded from the clock; print `seed()` so a failure can be replayed.
    pub fn from_time() -> Rng {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        Rng::new(t ^ (std::process::id() as u64) << 32)
    }

    pub fn seed(&self) -> u64 {
        self.0
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshake_layout() {
        let h = Hello::fake(7);
        let b = handshake(99, 99, &h);
        assert_eq!(&b[..8], b"weave-rs");
        assert_eq!(b[8], 99);
        assert_eq!(b[9], 99);
        let body_len = u16::from_be_bytes([b[10], b[11]]) as usize;
        assert_eq!(body_len, b.len() - HANDSHAKE_HEADER);
        // name 6 + uid 8 + port 2 + features 4 + nick_len 1 + "fake7"
        assert_eq!(body_len, 6 + 8 + 2 + 4 + 1 + 5);
        assert_eq!(&b[12..18], &h.name);
    }

    #[test]
    fn sealed_header_layout() {
        let mut d = vec![0xE8, 3, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 0, 0, 0, 9];
        assert_eq!(sealed_header(&d), None); // no room for a tag
        d.extend_from_slice(&[0; 16]);
        assert_eq!(
            sealed_header(&d),
            Some(SealedHeader {
                epoch: 3,
                session: 0x0102,
                counter: 9
            })
        );
        d[0] = 0xE7;
        assert_eq!(sealed_header(&d), None);
    }

    #[test]
    fn control_frame_layout() {
        assert_eq!(control_frame(1, &[]), vec![0, 0, 0, 1, 1]);
        assert_eq!(
            control_frame(3, b"bye"),
            vec![0, 0, 0, 4, 3, b'b', b'y', b'e']
        );
    }
}
