//! Control frames on a TCP connection after the handshake:
//!
//!     len u32be (type byte + body, 1..=MAX_FRAME_LEN)  type u8  body
//!
//! The length is checked before any body byte is buffered, so a hostile
//! length prefix costs nothing.

/// Gossip is split into frames of at most 64 KiB; 1 MiB leaves room for
/// other kinds and bounds what one connection can make us hold.
pub const MAX_FRAME_LEN: usize = 1 << 20;
pub const LEN_PREFIX: usize = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    Heartbeat = 1,
    Gossip = 2,
    Close = 3,
    /// IPAM gossip (`wire::ipam`).
    Ipam = 4,
    /// DNS gossip (`wire::dns`).
    Dns = 5,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ControlError {
    #[error("control frame length {0} out of range (1..={MAX_FRAME_LEN})")]
    BadLength(u32),
    #[error("unknown control message type {0}")]
    UnknownKind(u8),
    #[error("empty control frame")]
    Empty,
}

/// Validate a length prefix; returns how many bytes follow it.
pub fn frame_len(prefix: [u8; LEN_PREFIX]) -> Result<usize, ControlError> {
    let len = u32::from_be_bytes(prefix);
    match usize::try_from(len) {
        Ok(n) if (1..=MAX_FRAME_LEN).contains(&n) => Ok(n),
        _ => Err(ControlError::BadLength(len)),
    }
}

/// Split a frame (what followed the length prefix) into its kind and body.
pub fn parse(frame: &[u8]) -> Result<(Kind, &[u8]), ControlError> {
    let (&kind, body) = frame.split_first().ok_or(ControlError::Empty)?;
    let kind = match kind {
        1 => Kind::Heartbeat,
        2 => Kind::Gossip,
        3 => Kind::Close,
        4 => Kind::Ipam,
        5 => Kind::Dns,
        other => return Err(ControlError::UnknownKind(other)),
    };
    Ok((kind, body))
}

/// A heartbeat. On an encrypted link it carries the epoch of the sender's
/// datagram key (u32be), so the receiver can follow rekeys that happened
/// while UDP was cut (`crypto::keys::Receiver::resync`).
pub fn heartbeat(udp_epoch: Option<u32>) -> Vec<u8> {
    match udp_epoch {
        Some(e) => emit(Kind::Heartbeat, &e.to_be_bytes()),
        None => emit(Kind::Heartbeat, &[]),
    }
}

/// The datagram-key epoch a heartbeat's body carries, if any.
pub fn heartbeat_epoch(body: &[u8]) -> Option<u32> {
    body.first_chunk::<4>().map(|b| u32::from_be_bytes(*b))
}

/// A whole frame, length prefix included. Bodies over the limit are the
/// caller's bug; they are cut rather than sent malformed.
pub fn emit(kind: Kind, body: &[u8]) -> Vec<u8> {
    let body = &body[..body.len().min(MAX_FRAME_LEN - 1)];
    let mut out = Vec::with_capacity(LEN_PREFIX + 1 + body.len());
    out.extend_from_slice(&((body.len() + 1) as u32).to_be_bytes());
    out.push(kind as u8);
    out.extend_from_slice(body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let f = emit(Kind::Close, b"bye");
        let n = frame_len(f[..4].try_into().unwrap()).unwrap();
        assert_eq!(n, 4);
        assert_eq!(parse(&f[4..]), Ok((Kind::Close, &b"bye"[..])));
    }

    #[test]
    fn rejects_hostile_lengths_and_kinds() {
        assert_eq!(frame_len([0; 4]), Err(ControlError::BadLength(0)));
        assert_eq!(frame_len([0xff; 4]), Err(ControlError::BadLength(u32::MAX)));
        assert_eq!(parse(&[]), Err(ControlError::Empty));
        assert_eq!(parse(&[9, 1]), Err(ControlError::UnknownKind(9)));
    }
}
