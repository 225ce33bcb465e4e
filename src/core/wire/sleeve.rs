//! UDP datagrams between peers ("sleeve"):
//!
//!     magic 0xE7, kind u8 (1 frames, 2 heartbeat), hops u8, flags u8,
//!     src[6] (origin peer), dst[6] (destination; all-zero = broadcast
//!     along src's tree), then
//!     kind 1: repeated { len u16be, Ethernet frame }
//!     kind 2: uid u64be (the sender's incarnation)
//!     kind 3: one fragment of an offloaded frame (a virtio-net header and a
//!             frame of up to 64 KiB, see `super::vnet`): id u32be,
//!             total u32be (bytes of header and frame), offset u32be,
//!             index u8, count u8, 0 u16, then the fragment's bytes.
//!             All fragments but the last are the same size, so a batch of
//!             them goes out in one UDP GSO send; relays forward fragments
//!             as they come, and only the destination reassembles.
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
    Fragment = 3,
}

pub const FRAG_HEADER_LEN: usize = 16;
/// Most fragments one frame is cut into.
pub const MAX_FRAGMENTS: usize = 128;
/// Largest offloaded frame (virtio-net header and frame) we carry.
pub const MAX_JUMBO: usize = super::vnet::LEN + 65_550;

/// Where a fragment belongs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FragHeader {
    /// Per origin, one id per fragmented frame.
    pub id: u32,
    pub total: u32,
    pub offset: u32,
    pub index: u8,
    pub count: u8,
}

impl FragHeader {
    pub fn emit(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.id.to_be_bytes());
        out.extend_from_slice(&self.total.to_be_bytes());
        out.extend_from_slice(&self.offset.to_be_bytes());
        out.extend_from_slice(&[self.index, self.count, 0, 0]);
    }
}

/// The headers of `len` bytes cut into fragments of `chunk` bytes (the
/// last may be shorter), in order.
pub fn fragment_headers(id: u32, len: usize, chunk: usize) -> impl Iterator<Item = FragHeader> {
    let chunk = chunk.max(1);
    let count = len.div_ceil(chunk);
    (0..count).map(move |i| FragHeader {
        id,
        total: len as u32,
        offset: (i * chunk) as u32,
        index: i as u8,
        count: count as u8,
    })
}

/// Cut `whole` (a virtio-net header and a frame) into `Fragment`
/// datagrams of at most `max_datagram` bytes, appended to `out` back to
/// back, all the same size but the last, each between `pad.0` and `pad.1`
/// zero bytes (room for the caller to seal it in place). Returns the stride
/// (datagram and padding), or None if it would take more than
/// `MAX_FRAGMENTS`.
pub fn push_fragments(
    out: &mut Vec<u8>,
    header: Header,
    id: u32,
    whole: &[u8],
    max_datagram: usize,
    pad: (usize, usize),
) -> Option<usize> {
    let chunk = max_datagram.checked_sub(HEADER_LEN + FRAG_HEADER_LEN)?;
    let count = whole.len().div_ceil(chunk.max(1));
    if chunk == 0 || count == 0 || count > MAX_FRAGMENTS || whole.len() > MAX_JUMBO {
        return None;
    }
    out.reserve(whole.len() + count * (pad.0 + HEADER_LEN + FRAG_HEADER_LEN + pad.1));
    let headers = fragment_headers(id, whole.len(), chunk);
    for (part, frag) in whole.chunks(chunk).zip(headers) {
        out.resize(out.len() + pad.0, 0);
        header.emit(out);
        frag.emit(out);
        out.extend_from_slice(part);
        out.resize(out.len() + pad.1, 0);
    }
    Some(pad.0 + HEADER_LEN + FRAG_HEADER_LEN + chunk + pad.1)
}

/// Split a `Fragment` payload into its header and bytes, checked for
/// consistency (the bytes fit inside the frame they claim to be part of).
pub fn parse_fragment(payload: &[u8]) -> Result<(FragHeader, &[u8]), SleeveError> {
    let mut r = Reader::new(payload);
    let (Some(id), Some(total), Some(offset), Some(index), Some(count), Some(_)) =
        (r.u32(), r.u32(), r.u32(), r.u8(), r.u8(), r.u16())
    else {
        return Err(SleeveError::BadFragment);
    };
    let bytes = payload.get(FRAG_HEADER_LEN..).unwrap_or_default();
    let end = usize::try_from(offset)
        .ok()
        .and_then(|o| o.checked_add(bytes.len()));
    let total_ok = usize::try_from(total).is_ok_and(|t| (1..=MAX_JUMBO).contains(&t));
    if !total_ok
        || bytes.is_empty()
        || count == 0
        || usize::from(count) > MAX_FRAGMENTS
        || index >= count
        || end.is_none_or(|e| e > total as usize)
    {
        return Err(SleeveError::BadFragment);
    }
    Ok((
        FragHeader {
            id,
            total,
            offset,
            index,
            count,
        },
        bytes,
    ))
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
    #[error("malformed fragment")]
    BadFragment,
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
            3 => Kind::Fragment,
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

    fn fragment(h: FragHeader, bytes: &[u8]) -> Vec<u8> {
        let mut d = Vec::new();
        h.emit(&mut d);
        d.extend_from_slice(bytes);
        d
    }

    #[test]
    fn push_fragments_cuts_evenly_and_parses_back() {
        let whole: Vec<u8> = (0..65_000u32).map(|i| i as u8).collect();
        let h = Header {
            kind: Kind::Fragment,
            hops: 0,
            src: A,
            dst: B,
        };
        let mut out = Vec::new();
        let stride = push_fragments(&mut out, h, 9, &whole, 1472, (0, 0)).unwrap();
        assert_eq!(stride, 1472);
        let datagrams: Vec<&[u8]> = out.chunks(stride).collect();
        assert_eq!(datagrams.len(), 65_000usize.div_ceil(1440));
        let mut back = vec![0u8; whole.len()];
        for (i, d) in datagrams.iter().enumerate() {
            let (hh, payload) = Header::parse(d).unwrap();
            assert_eq!(hh, h);
            let (f, bytes) = parse_fragment(payload).unwrap();
            assert_eq!(
                (f.id, f.index as usize, f.count as usize),
                (9, i, datagrams.len())
            );
            back[f.offset as usize..][..bytes.len()].copy_from_slice(bytes);
        }
        assert_eq!(back, whole);
        // Too many fragments, or no room for any byte: refused.
        assert_eq!(
            push_fragments(&mut Vec::new(), h, 1, &whole, 100, (0, 0)),
            None
        );
        assert_eq!(
            push_fragments(&mut Vec::new(), h, 1, &whole, 32, (0, 0)),
            None
        );
        assert_eq!(
            push_fragments(&mut Vec::new(), h, 1, &whole, 10, (0, 0)),
            None
        );
        // With room to seal each datagram in place.
        let mut padded = Vec::new();
        let s2 = push_fragments(&mut padded, h, 9, &whole, 1472, (16, 16)).unwrap();
        assert_eq!(s2, 1504);
        for (d, p) in out.chunks(stride).zip(padded.chunks(s2)) {
            assert_eq!(&p[16..p.len() - 16], d);
        }
    }

    #[test]
    fn fragments_round_trip_and_bad_ones_are_refused() {
        let h = FragHeader {
            id: 7,
            total: 3000,
            offset: 1400,
            index: 1,
            count: 3,
        };
        let d = fragment(h, &[5; 1400]);
        assert_eq!(parse_fragment(&d), Ok((h, &[5u8; 1400][..])));
        let bad = [
            FragHeader { index: 3, ..h },
            FragHeader {
                count: 0,
                index: 0,
                ..h
            },
            FragHeader { offset: 1601, ..h },
            FragHeader {
                offset: u32::MAX,
                ..h
            },
            FragHeader { total: 0, ..h },
            FragHeader {
                total: u32::MAX,
                ..h
            },
            FragHeader { count: 200, ..h },
        ];
        for b in bad {
            assert_eq!(
                parse_fragment(&fragment(b, &[5; 1400])),
                Err(SleeveError::BadFragment),
                "{b:?}"
            );
        }
        assert_eq!(
            parse_fragment(&fragment(h, &[])),
            Err(SleeveError::BadFragment)
        );
        assert_eq!(parse_fragment(&d[..15]), Err(SleeveError::BadFragment));
    }

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
