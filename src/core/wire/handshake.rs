//! The first bytes each side of a control connection sends: who it is and
//! which protocol versions it speaks.
//!
//!     "weave-rs" (8)  min_version u8  max_version u8  body_len u16be  body
//!     body: name[6] uid u64be port u16be features u32be nick_len u8 nick
//!
//! The fixed prefix (12 bytes) is read first so that a peer with another
//! protocol version is recognised before its body is trusted.

use super::super::PeerName;

pub const MAGIC: &[u8; 8] = b"weave-rs";
pub const PREFIX_LEN: usize = 12;
/// The protocol versions this build speaks.
pub const MIN_VERSION: u8 = 1;
pub const MAX_VERSION: u8 = 1;
/// Bodies are small; anything larger is hostile.
pub const MAX_BODY_LEN: usize = 512;
const FIXED_BODY_LEN: usize = 6 + 8 + 2 + 4 + 1;

/// Feature bits.
pub const FEATURE_ENCRYPTION: u32 = 1;
/// The sender runs the kernel fast path (a VXLAN device): without it, the
/// other side's heartbeats over VXLAN would go unanswered, and the reason
/// would be guessed wrong.
pub const FEATURE_FASTDP: u32 = 2;

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum HandshakeError {
    #[error("not a weave-rs peer (bad magic)")]
    BadMagic,
    #[error("protocol version mismatch: peer speaks {peer_min}..{peer_max}, we speak {MIN_VERSION}..{MAX_VERSION}")]
    VersionMismatch { peer_min: u8, peer_max: u8 },
    #[error("malformed handshake: {0}")]
    Malformed(&'static str),
}

/// The fixed-size prefix, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prefix {
    pub min_version: u8,
    pub max_version: u8,
    pub body_len: u16,
}

impl Prefix {
    pub fn parse(b: &[u8; PREFIX_LEN]) -> Result<Prefix, HandshakeError> {
        if &b[..8] != MAGIC {
            return Err(HandshakeError::BadMagic);
        }
        let p = Prefix {
            min_version: b[8],
            max_version: b[9],
            body_len: u16::from_be_bytes([b[10], b[11]]),
        };
        if p.min_version > p.max_version {
            return Err(HandshakeError::Malformed("min version above max version"));
        }
        if usize::from(p.body_len) > MAX_BODY_LEN {
            return Err(HandshakeError::Malformed("body too long"));
        }
        Ok(p)
    }

    /// The version both sides will speak.
    pub fn negotiate(&self) -> Result<u8, HandshakeError> {
        let lo = self.min_version.max(MIN_VERSION);
        let hi = self.max_version.min(MAX_VERSION);
        if lo > hi {
            return Err(HandshakeError::VersionMismatch {
                peer_min: self.min_version,
                peer_max: self.max_version,
            });
        }
        Ok(hi)
    }
}

/// Who a peer says it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    pub name: PeerName,
    pub uid: u64,
    /// The port the peer listens on (TCP and UDP).
    pub port: u16,
    pub features: u32,
    pub nickname: String,
}

impl Hello {
    /// The whole handshake message: prefix and body.
    pub fn emit(&self) -> Vec<u8> {
        let nick = truncate_utf8(&self.nickname, usize::from(u8::MAX));
        let body_len = FIXED_BODY_LEN + nick.len();
        let mut out = Vec::with_capacity(PREFIX_LEN + body_len);
        out.extend_from_slice(MAGIC);
        out.push(MIN_VERSION);
        out.push(MAX_VERSION);
        out.extend_from_slice(&(body_len as u16).to_be_bytes());
        out.extend_from_slice(self.name.as_bytes());
        out.extend_from_slice(&self.uid.to_be_bytes());
        out.extend_from_slice(&self.port.to_be_bytes());
        out.extend_from_slice(&self.features.to_be_bytes());
        out.push(nick.len() as u8);
        out.extend_from_slice(nick.as_bytes());
        out
    }

    /// Parse a body whose length the prefix announced.
    pub fn parse_body(b: &[u8]) -> Result<Hello, HandshakeError> {
        let mut r = super::Reader::new(b);
        let short = HandshakeError::Malformed("body too short");
        let name = r.peer_name().ok_or(short.clone())?;
        let uid = r.u64().ok_or(short.clone())?;
        let port = r.u16().ok_or(short.clone())?;
        let features = r.u32().ok_or(short.clone())?;
        let nick_len = r.u8().ok_or(short.clone())?;
        let nick = r.bytes(usize::from(nick_len)).ok_or(short)?;
        if !r.is_empty() {
            return Err(HandshakeError::Malformed("trailing bytes after body"));
        }
        if name == PeerName::NONE {
            return Err(HandshakeError::Malformed("reserved all-zero peer name"));
        }
        let nickname = std::str::from_utf8(nick)
            .map_err(|_| HandshakeError::Malformed("nickname is not UTF-8"))?
            .to_string();
        Ok(Hello {
            name,
            uid,
            port,
            features,
            nickname,
        })
    }
}

/// The longest prefix of `s` of at most `max` bytes that ends on a char boundary.
pub fn truncate_utf8(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello() -> Hello {
        Hello {
            name: PeerName([2, 1, 2, 3, 4, 5]),
            uid: 77,
            port: 6783,
            features: FEATURE_ENCRYPTION,
            nickname: "host1".into(),
        }
    }

    #[test]
    fn round_trip() {
        let bytes = hello().emit();
        let prefix = Prefix::parse(bytes[..PREFIX_LEN].try_into().unwrap()).unwrap();
        assert_eq!(prefix.negotiate(), Ok(1));
        assert_eq!(usize::from(prefix.body_len), bytes.len() - PREFIX_LEN);
        assert_eq!(Hello::parse_body(&bytes[PREFIX_LEN..]), Ok(hello()));
    }

    #[test]
    fn version_mismatch_names_both_ranges() {
        let mut bytes = hello().emit();
        bytes[8] = 99;
        bytes[9] = 99;
        let prefix = Prefix::parse(bytes[..PREFIX_LEN].try_into().unwrap()).unwrap();
        let err = prefix.negotiate().unwrap_err();
        assert_eq!(
            err.to_string(),
            "protocol version mismatch: peer speaks 99..99, we speak 1..1"
        );
    }

    #[test]
    fn rejects_bad_magic_and_every_truncation() {
        let mut bytes = hello().emit();
        for n in 0..bytes.len() - PREFIX_LEN {
            assert!(Hello::parse_body(&bytes[PREFIX_LEN..PREFIX_LEN + n]).is_err());
        }
        bytes[0] = b'x';
        assert_eq!(
            Prefix::parse(bytes[..PREFIX_LEN].try_into().unwrap()),
            Err(HandshakeError::BadMagic)
        );
    }

    #[test]
    fn long_nicknames_are_cut_on_a_char_boundary() {
        let mut h = hello();
        h.nickname = "é".repeat(200);
        let bytes = h.emit();
        let back = Hello::parse_body(&bytes[PREFIX_LEN..]).unwrap();
        assert_eq!(back.nickname.len(), 254);
    }
}
