//! Wire formats of encrypted connections (`--password`).
//!
//! Datagram (UDP), one per sealed sleeve datagram:
//!
//!     magic 0xE8, epoch u8, 0 u16, session u32be, counter u64be,
//!     ciphertext of the sleeve datagram, tag[16]
//!
//! The 16-byte header is the AEAD's associated data. `session` is the
//! receiver's id for the link, chosen by the receiver, so a datagram finds its
//! key without trusting its source address.
//!
//! TCP, after the plaintext hellos, a stream of records:
//!
//!     kind u8 (1 noise, 2 refusal, 3 sealed), len u16be, body
//!
//! noise: a Noise handshake message; refusal: a UTF-8 reason (plaintext,
//! unauthenticated, accepted only during the handshake); sealed: epoch u8
//! then ciphertext and tag of a chunk of the control-frame stream, with the
//! record's first four bytes as associated data.

use super::Reader;

pub const MAGIC: u8 = 0xE8;
pub const HEADER_LEN: usize = 16;
pub const TAG_LEN: usize = crate::core::crypto::keys::TAG_LEN;
/// Bytes a sealed datagram adds to the sleeve datagram inside it.
pub const OVERHEAD: usize = HEADER_LEN + TAG_LEN;

pub const RECORD_HEADER_LEN: usize = 3;
pub const MAX_RECORD_BODY: usize = u16::MAX as usize;
/// Plaintext bytes one sealed record carries at most.
pub const MAX_RECORD_PLAIN: usize = MAX_RECORD_BODY - 1 - TAG_LEN;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DatagramHeader {
    pub epoch: u8,
    pub session: u32,
    pub counter: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SealedError {
    #[error("sealed datagram too short")]
    Short,
    #[error("not a sealed datagram")]
    BadMagic,
    #[error("unknown record kind {0}")]
    UnknownRecord(u8),
    #[error("malformed confirmation")]
    BadConfirm,
}

impl DatagramHeader {
    pub fn parse(d: &[u8]) -> Result<DatagramHeader, SealedError> {
        if d.len() < HEADER_LEN + TAG_LEN {
            return Err(SealedError::Short);
        }
        let mut r = Reader::new(d);
        let (Some(magic), Some(epoch), Some(_), Some(session), Some(counter)) =
            (r.u8(), r.u8(), r.u16(), r.u32(), r.u64())
        else {
            return Err(SealedError::Short);
        };
        if magic != MAGIC {
            return Err(SealedError::BadMagic);
        }
        Ok(DatagramHeader {
            epoch,
            session,
            counter,
        })
    }

    pub fn emit(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[0] = MAGIC;
        h[1] = self.epoch;
        h[4..8].copy_from_slice(&self.session.to_be_bytes());
        h[8..16].copy_from_slice(&self.counter.to_be_bytes());
        h
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum RecordKind {
    Noise = 1,
    Refusal = 2,
    Sealed = 3,
}

/// Parse a record header: its kind and body length.
pub fn record_header(h: [u8; RECORD_HEADER_LEN]) -> Result<(RecordKind, usize), SealedError> {
    let kind = match h[0] {
        1 => RecordKind::Noise,
        2 => RecordKind::Refusal,
        3 => RecordKind::Sealed,
        k => return Err(SealedError::UnknownRecord(k)),
    };
    Ok((kind, usize::from(u16::from_be_bytes([h[1], h[2]]))))
}

/// A whole unsealed record (noise or refusal); `body` is cut to fit.
pub fn record(kind: RecordKind, body: &[u8]) -> Vec<u8> {
    let body = &body[..body.len().min(MAX_RECORD_BODY)];
    let mut out = Vec::with_capacity(RECORD_HEADER_LEN + body.len());
    out.push(kind as u8);
    out.extend_from_slice(&(body.len() as u16).to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// What each side tells the other once the handshake authenticated it (in
/// the last Noise message from the initiator, in the first sealed record
/// from the responder).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Confirm {
    /// The id the sender wants on datagrams sealed for it.
    pub session: u32,
    /// The sender's --trusted-subnets cover the receiver: data between them
    /// may go unencrypted if both agree.
    pub trusts_you: bool,
}

impl Confirm {
    pub const LEN: usize = 5;

    pub fn emit(&self) -> [u8; Confirm::LEN] {
        let mut b = [0u8; Confirm::LEN];
        b[..4].copy_from_slice(&self.session.to_be_bytes());
        b[4] = u8::from(self.trusts_you);
        b
    }

    pub fn parse(b: &[u8]) -> Result<Confirm, SealedError> {
        let mut r = Reader::new(b);
        let (Some(session), Some(trust)) = (r.u32(), r.u8()) else {
            return Err(SealedError::BadConfirm);
        };
        if !r.is_empty() || trust > 1 {
            return Err(SealedError::BadConfirm);
        }
        Ok(Confirm {
            session,
            trusts_you: trust == 1,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn header_round_trip() {
        let h = DatagramHeader {
            epoch: 3,
            session: 0xDEAD_BEEF,
            counter: 1 << 40,
        };
        let mut d = h.emit().to_vec();
        d.extend_from_slice(&[0; TAG_LEN]);
        assert_eq!(DatagramHeader::parse(&d), Ok(h));
        assert_eq!(
            DatagramHeader::parse(&d[..HEADER_LEN]),
            Err(SealedError::Short)
        );
        d[0] = 0xE7;
        assert_eq!(DatagramHeader::parse(&d), Err(SealedError::BadMagic));
    }

    #[test]
    fn records_and_confirm() {
        let r = record(RecordKind::Refusal, b"authentication failed");
        let (k, n) = record_header([r[0], r[1], r[2]]).unwrap();
        assert_eq!((k, n), (RecordKind::Refusal, 21));
        assert_eq!(record_header([9, 0, 0]), Err(SealedError::UnknownRecord(9)));
        let c = Confirm {
            session: 42,
            trusts_you: true,
        };
        assert_eq!(Confirm::parse(&c.emit()), Ok(c));
        assert!(Confirm::parse(&[0, 0, 0, 1, 2]).is_err());
        assert!(Confirm::parse(&[0, 0, 0, 1]).is_err());
    }

    proptest! {
        #[test]
        fn parsers_never_panic(d in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = DatagramHeader::parse(&d);
            let _ = Confirm::parse(&d);
        }
    }
}
