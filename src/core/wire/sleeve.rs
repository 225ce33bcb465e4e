//! UDP datagrams between peers ("sleeve"):
//!
//!     magic 0xE7, kind u8 (1 frames, 2 heartbeat), hops u8, flags u8,
//!     src[6] (origin peer), dst[6] (destination; all-zero = broadcast
//!     along src's tree), then
//!     kind 1: repeated { len u16be, Ethernet frame }
//!     kind 2: uid u64be (the sender's incarnation)
//!
//! A relay forwards a datagram as it came, with `hops` raised by one.

use super::super::PeerName;
use super::Reader;

pub const MAGIC: u8 = 0xE7;
pub const HEADER_LEN: usize = 16;
/// A datagram that has been relayed this often is looping: drop it.
pub const MAX_HOPS: u8 = 16;
/// The smallest Ethernet header.
pub const MIN_FRAME_LEN: usize = 14;
const HOPS_OFFSET: usize = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    Frames = 1,
    Heartbeat = 2,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub kind: Kind,
    pub hops: u8,
    pub src: PeerName,
    /// `PeerName::NONE` for a broadcast.
    pub dst: PeerName,
}

#[derive(Debug, Clone, Copy, thiserror::Error, PartialEq, Eq)]
pub enum SleeveError {
    #[error("datagram shorter than its header")]
    Short,
    #[error("bad magic byte {0:#04x}")]
    BadMagic(u8),
    #[error("unknown datagram kind {0}")]
    UnknownKind(u8),
    #[error("frame length runs past the end of the datagram")]
    TruncatedFrame,
    #[error("frame of {0} bytes is shorter than an Ethernet header")]
    RuntFrame(usize),
    #[error("malformed heartbeat")]
    BadHeartbeat,
    #[error("datagram from the reserved all-zero peer name")]
    ReservedSource,
}

impl Header {
    pub fn is_broadcast(&self) -> bool {
        self.dst == PeerName::NONE
    }

    /// Split a datagram into its header and payload.
    pub fn parse(d: &[u8]) -> Result<(Header, &[u8]), SleeveError> {
        let mut r = Reader::new(d);
        let head = r.bytes(4).ok_or(SleeveError::Short)?;
        let (magic, kind, hops) = (head[0], head[1], head[2]);
        if magic != MAGIC {
            return Err(SleeveError::BadMagic(magic));
        }
        let kind = match kind {
            1 => Kind::Frames,
            2 => Kind::Heartbeat,
            k => return Err(SleeveError::UnknownKind(k)),
        };
        let src = r.peer_name().ok_or(SleeveError::Short)?;
        let dst = r.peer_name().ok_or(SleeveError::Short)?;
        if src == PeerName::NONE {
            return Err(SleeveError::ReservedSource);
        }
        let payload = d.get(HEADER_LEN..).ok_or(SleeveError::Short)?;
        Ok((
            Header {
                kind,
                hops,
                src,
                dst,
            },
            payload,
        ))
    }

    /// Append the header to `out` (normally an empty, reused buffer).
    pub fn emit(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&[MAGIC, self.kind as u8, self.hops, 0]);
        out.extend_from_slice(self.src.as_bytes());
        out.extend_from_slice(self.dst.as_bytes());
    }
}

/// Append one frame to a datagram under construction.
pub fn push_frame(out: &mut Vec<u8>, frame: &[u8]) {
    debug_assert!(frame.len() <= usize::from(u16::MAX));
    out.extend_from_slice(&(frame.len() as u16).to_be_bytes());
    out.extend_from_slice(frame);
}

/// Bytes a frame adds to a datagram.
pub const fn framed_len(frame_len: usize) -> usize {
    2 + frame_len
}

/// Raise the hop count of a datagram in place, for relaying. Returns false
/// when the datagram has already travelled `MAX_HOPS`.
pub fn bump_hops(d: &mut [u8]) -> bool {
    match d.get_mut(HOPS_OFFSET) {
        Some(h) if *h < MAX_HOPS => {
            *h += 1;
            true
        }
        _ => false,
    }
}

/// The frames of a `Frames` payload, each checked against the payload end.
pub fn frames(payload: &[u8]) -> Frames<'_> {
    Frames {
        r: Reader::new(payload),
    }
}

pub struct Frames<'a> {
    r: Reader<'a>,
}

impl<'a> Iterator for Frames<'a> {
    type Item = Result<&'a [u8], SleeveError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.r.is_empty() {
            return None;
        }
        let item = (|| {
            let len = usize::from(self.r.u16().ok_or(SleeveError::TruncatedFrame)?);
            let frame = self.r.bytes(len).ok_or(SleeveError::TruncatedFrame)?;
            if len < MIN_FRAME_LEN {
                return Err(SleeveError::RuntFrame(len));
            }
            Ok(frame)
        })();
        if item.is_err() {
            // Nothing after a malformed length can be trusted.
            self.r = Reader::new(&[]);
        }
        Some(item)
    }
}

/// A complete heartbeat datagram.
pub fn heartbeat(src: PeerName, dst: PeerName, uid: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + 8);
    Header {
        kind: Kind::Heartbeat,
        hops: 0,
        src,
        dst,
    }
    .emit(&mut out);
    out.extend_from_slice(&uid.to_be_bytes());
    out
}

/// The sender's incarnation from a heartbeat payload.
pub fn parse_heartbeat(payload: &[u8]) -> Result<u64, SleeveError> {
    let b: [u8; 8] = payload.try_into().map_err(|_| SleeveError::BadHeartbeat)?;
    Ok(u64::from_be_bytes(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: PeerName = PeerName([2, 0, 0, 0, 0, 0xa]);
    const B: PeerName = PeerName([2, 0, 0, 0, 0, 0xb]);

    #[test]
    fn frames_round_trip() {
        let mut d = Vec::new();
        Header {
            kind: Kind::Frames,
            hops: 0,
            src: A,
            dst: B,
        }
        .emit(&mut d);
        push_frame(&mut d, &[1; 60]);
        push_frame(&mut d, &[2; 14]);
        let (h, payload) = Header::parse(&d).unwrap();
        assert_eq!(
            h,
            Header {
                kind: Kind::Frames,
                hops: 0,
                src: A,
                dst: B
            }
        );
        let got: Vec<_> = frames(payload).collect();
        assert_eq!(got, vec![Ok(&[1u8; 60][..]), Ok(&[2u8; 14][..])]);
    }

    #[test]
    fn truncated_and_runt_frames_are_errors_and_stop_iteration() {
        let mut d = Vec::new();
        push_frame(&mut d, &[1; 60]);
        let got: Vec<_> = frames(&d[..30]).collect();
        assert_eq!(got, vec![Err(SleeveError::TruncatedFrame)]);
        let got: Vec<_> = frames(&[0, 3, 1, 2, 3, 0, 20]).collect();
        assert_eq!(got, vec![Err(SleeveError::RuntFrame(3))]);
    }

    #[test]
    fn heartbeat_round_trip() {
        let d = heartbeat(A, B, 42);
        let (h, p) = Header::parse(&d).unwrap();
        assert_eq!((h.kind, h.src, h.dst), (Kind::Heartbeat, A, B));
        assert_eq!(parse_heartbeat(p), Ok(42));
        assert_eq!(parse_heartbeat(&p[..7]), Err(SleeveError::BadHeartbeat));
    }

    #[test]
    fn bad_headers() {
        assert_eq!(Header::parse(&[MAGIC, 1]), Err(SleeveError::Short));
        assert_eq!(Header::parse(&[0; 16]), Err(SleeveError::BadMagic(0)));
        let mut d = heartbeat(A, B, 1);
        d[1] = 7;
        assert_eq!(Header::parse(&d), Err(SleeveError::UnknownKind(7)));
        let mut d = heartbeat(PeerName::NONE, B, 1);
        assert_eq!(Header::parse(&d), Err(SleeveError::ReservedSource));
        d.truncate(10);
        assert_eq!(Header::parse(&d), Err(SleeveError::Short));
    }

    #[test]
    fn hops_are_bounded() {
        let mut d = heartbeat(A, B, 1);
        for _ in 0..MAX_HOPS {
            assert!(bump_hops(&mut d));
        }
        assert!(!bump_hops(&mut d));
        assert!(!bump_hops(&mut []));
    }
}
