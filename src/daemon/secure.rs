//! Encrypted control connections: the Noise handshake over TCP records, and
//! the control-frame stream sealed into records afterwards.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use ipnetwork::IpNetwork;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::connection::ConnError;
use crate::core::crypto::keys::{Receiver, Secret, Sender, StreamReceiver, TAG_LEN};
use crate::core::crypto::noise::{Handshake, NoiseError, StaticKey};
use crate::core::wire::control;
use crate::core::wire::sealed::{
    self, Confirm, RecordKind, MAX_RECORD_BODY, MAX_RECORD_PLAIN, RECORD_HEADER_LEN,
};

/// Default time after which every key is replaced (`--rekey-interval`).
pub const DEFAULT_REKEY_INTERVAL: Duration = Duration::from_secs(120);
const PROLOGUE_LABEL: &[u8] = b"weave-rs noise v1";

/// What `--password` and its companions configure.
pub struct CryptoConfig {
    pub psk: Secret,
    pub key: StaticKey,
    /// Peers in these subnets may exchange data unencrypted, if they trust
    /// us back (control traffic stays encrypted).
    pub trusted: Vec<IpNetwork>,
    pub rekey_interval: Duration,
}

impl std::fmt::Debug for CryptoConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CryptoConfig")
            .field("psk", &"<redacted>")
            .field("key", &StaticKey::fingerprint(&self.key.public))
            .field("trusted", &self.trusted)
            .field("rekey_interval", &self.rekey_interval)
            .finish()
    }
}

impl CryptoConfig {
    pub fn trusts(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.trusted.iter().any(|n| n.contains(ip))
    }
}

/// The datagram keys of one link, for the data plane.
pub struct LinkKeys {
    pub tx: Sender,
    pub rx: Receiver,
    /// Our id for the link, on datagrams the peer seals for us.
    pub our_session: u32,
    /// The peer's id, on datagrams we seal for it.
    pub peer_session: u32,
}

/// An authenticated session.
pub struct Secured {
    pub control_tx: ControlTx,
    pub control_rx: ControlRx,
    pub link: LinkKeys,
    /// Both sides trust each other's subnet: data goes unencrypted.
    pub data_plain: bool,
    pub remote_key: [u8; 32],
}

/// The prologue both sides feed Noise: the hellos as sent, dialler's first.
pub fn prologue(initiator_hello: &[u8], responder_hello: &[u8]) -> Vec<u8> {
    let mut p = PROLOGUE_LABEL.to_vec();
    p.extend_from_slice(initiator_hello);
    p.extend_from_slice(responder_hello);
    p
}

/// A failure to read Noise message 3, the only one that depends on the
/// password.
fn noise_error(e: NoiseError) -> ConnError {
    match e {
        NoiseError::AuthFailed => {
            ConnError::AuthFailed("the peer's password differs from ours".into())
        }
        NoiseError::Malformed => ConnError::AuthFailed("malformed handshake message".into()),
        NoiseError::Internal(e) => ConnError::Protocol(e),
    }
}

/// A failure to read message 1 or 2: no password involved yet, so the peer
/// does not speak our Noise protocol at all.
fn early_noise_error(e: NoiseError) -> ConnError {
    match e {
        NoiseError::AuthFailed | NoiseError::Malformed => {
            ConnError::AuthFailed("bad handshake message (not a weave-rs peer?)".into())
        }
        NoiseError::Internal(e) => ConnError::Protocol(e),
    }
}

async fn read_record<R: AsyncRead + Unpin>(
    r: &mut R,
    body: &mut Vec<u8>,
) -> Result<(RecordKind, [u8; RECORD_HEADER_LEN]), ConnError> {
    let mut h = [0u8; RECORD_HEADER_LEN];
    r.read_exact(&mut h).await.map_err(eof_as_close)?;
    let (kind, len) = sealed::record_header(h).map_err(|e| ConnError::Protocol(e.to_string()))?;
    body.resize(len, 0);
    r.read_exact(body).await.map_err(eof_as_close)?;
    Ok((kind, h))
}

fn eof_as_close(e: std::io::Error) -> ConnError {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        ConnError::ClosedByPeer("connection closed".into())
    } else {
        e.into()
    }
}

/// Read the peer's next record during the handshake. A refusal ends the
/// handshake with the peer's reason; so does the responder hanging up on
/// the dialler, which an older or foreign peer does without saying why.
async fn read_handshake_record<R: AsyncRead + Unpin>(
    r: &mut R,
    initiator: bool,
    body: &mut Vec<u8>,
) -> Result<(RecordKind, [u8; RECORD_HEADER_LEN]), ConnError> {
    match read_record(r, body).await {
        Ok((RecordKind::Refusal, _)) => Err(ConnError::Refused(crate::core::text::sanitize(
            &String::from_utf8_lossy(body),
            200,
        ))),
        Err(ConnError::ClosedByPeer(_)) if initiator => Err(ConnError::Refused(
            "closed during the handshake (wrong password?)".into(),
        )),
        other => other,
    }
}

/// Read the peer's next Noise handshake message.
async fn read_noise<R: AsyncRead + Unpin>(
    r: &mut R,
    initiator: bool,
) -> Result<Vec<u8>, ConnError> {
    let mut body = Vec::new();
    match read_handshake_record(r, initiator, &mut body).await? {
        (RecordKind::Noise, _) => Ok(body),
        _ => Err(ConnError::Protocol(
            "sealed record during the handshake".into(),
        )),
    }
}

/// Run the Noise handshake on a connection whose hellos both announced
/// encryption. `initiator` is the side that dialled.
pub async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
    cfg: &CryptoConfig,
    stream: &mut S,
    initiator: bool,
    prologue: &[u8],
    peer_ip: IpAddr,
    our_session: u32,
    now: Instant,
) -> Result<Secured, ConnError> {
    let mut hs = Handshake::new(initiator, &cfg.key, &cfg.psk, prologue).map_err(noise_error)?;
    let ours = Confirm {
        session: our_session,
        trusts_you: cfg.trusts(peer_ip),
    };
    let theirs;
    let mut control_tx;
    let mut control_rx;
    if initiator {
        let m1 = hs.write(&[]).map_err(noise_error)?;
        stream
            .write_all(&sealed::record(RecordKind::Noise, &m1))
            .await?;
        let m2 = read_noise(stream, true).await?;
        hs.read(&m2).map_err(early_noise_error)?;
        let m3 = hs.write(&ours.emit()).map_err(noise_error)?;
        stream
            .write_all(&sealed::record(RecordKind::Noise, &m3))
            .await?;
        let keys = hs.finish().map_err(noise_error)?;
        control_tx = ControlTx::sealed(keys.control_tx.clone(), now, cfg.rekey_interval);
        control_rx = ControlRx::sealed(keys.control_rx.clone());
        // The responder's confirmation, sealed: proof it derived our keys,
        // i.e. knows the password. A refusal here says why it did not.
        let mut body = Vec::new();
        let confirm = match read_handshake_record(stream, true, &mut body).await? {
            (RecordKind::Sealed, h) => control_rx.open_record(h, &mut body)?,
            _ => return Err(ConnError::Protocol("unexpected handshake message".into())),
        };
        theirs = Confirm::parse(confirm).map_err(|e| ConnError::Protocol(e.to_string()))?;
        finish(cfg, keys, control_tx, control_rx, ours, theirs, now)
    } else {
        let responded = async {
            let m1 = read_noise(stream, false).await?;
            hs.read(&m1).map_err(early_noise_error)?;
            let m2 = hs.write(&[]).map_err(noise_error)?;
            stream
                .write_all(&sealed::record(RecordKind::Noise, &m2))
                .await?;
            let m3 = read_noise(stream, false).await?;
            hs.read(&m3).map_err(noise_error)
        }
        .await;
        let payload = match responded {
            Ok(p) => p,
            Err(err) => {
                if matches!(err, ConnError::AuthFailed(_)) {
                    // Tell the dialler why, so both sides show the reason.
                    let refusal = sealed::record(RecordKind::Refusal, err.to_string().as_bytes());
                    let _ = stream.write_all(&refusal).await;
                    let _ = stream.shutdown().await;
                }
                return Err(err);
            }
        };
        theirs = Confirm::parse(&payload).map_err(|e| ConnError::Protocol(e.to_string()))?;
        let keys = hs.finish().map_err(noise_error)?;
        control_tx = ControlTx::sealed(keys.control_tx.clone(), now, cfg.rekey_interval);
        control_rx = ControlRx::sealed(keys.control_rx.clone());
        control_tx.send(stream, &ours.emit(), now).await?;
        finish(cfg, keys, control_tx, control_rx, ours, theirs, now)
    }
}

fn finish(
    cfg: &CryptoConfig,
    keys: crate::core::crypto::noise::SessionKeys,
    control_tx: ControlTx,
    control_rx: ControlRx,
    ours: Confirm,
    theirs: Confirm,
    now: Instant,
) -> Result<Secured, ConnError> {
    if theirs.session == 0 {
        return Err(ConnError::Protocol(
            "peer chose the reserved session id 0".into(),
        ));
    }
    Ok(Secured {
        control_tx,
        control_rx,
        link: LinkKeys {
            tx: Sender::new(keys.udp_tx, now, cfg.rekey_interval),
            rx: Receiver::new(keys.udp_rx),
            our_session: ours.session,
            peer_session: theirs.session,
        },
        data_plain: ours.trusts_you && theirs.trusts_you,
        remote_key: keys.remote_static,
    })
}

/// The writing side of a control connection.
pub enum ControlTx {
    Plain,
    Sealed { tx: Box<Sender>, buf: Vec<u8> },
}

impl ControlTx {
    fn sealed(secret: Secret, now: Instant, interval: Duration) -> ControlTx {
        ControlTx::Sealed {
            tx: Box::new(Sender::new(secret, now, interval)),
            buf: Vec::new(),
        }
    }

    /// Write bytes of the control-frame stream (sealed, in records of at
    /// most 64 KiB).
    pub async fn send<W: AsyncWrite + Unpin>(
        &mut self,
        w: &mut W,
        bytes: &[u8],
        now: Instant,
    ) -> std::io::Result<()> {
        let ControlTx::Sealed { tx, buf } = self else {
            return w.write_all(bytes).await;
        };
        for chunk in bytes.chunks(MAX_RECORD_PLAIN) {
            let n = tx.reserve(now);
            let body_len = 1 + chunk.len() + TAG_LEN;
            buf.clear();
            buf.push(RecordKind::Sealed as u8);
            buf.extend_from_slice(&(body_len as u16).to_be_bytes());
            buf.push(n.epoch);
            buf.extend_from_slice(chunk);
            let (aad, rest) = buf.split_at_mut(RECORD_HEADER_LEN + 1);
            let tag = tx.seal(n, aad, rest);
            buf.extend_from_slice(&tag);
            w.write_all(buf).await?;
        }
        if buf.capacity() > 2 * MAX_RECORD_BODY {
            *buf = Vec::new();
        }
        Ok(())
    }
}

/// The reading side of a control connection.
pub enum ControlRx {
    Plain {
        buf: Vec<u8>,
    },
    Sealed {
        rx: Box<StreamReceiver>,
        /// Decrypted stream bytes not yet returned as frames.
        plain: Vec<u8>,
        /// Where the unreturned bytes start in `plain`.
        start: usize,
        record: Vec<u8>,
    },
}

impl ControlRx {
    pub fn plain() -> ControlRx {
        ControlRx::Plain { buf: Vec::new() }
    }

    fn sealed(secret: Secret) -> ControlRx {
        ControlRx::Sealed {
            rx: Box::new(StreamReceiver::new(secret)),
            plain: Vec::new(),
            start: 0,
            record: Vec::new(),
        }
    }

    /// Authenticate and decrypt one sealed record's body in place.
    fn open_record<'a>(
        &mut self,
        header: [u8; RECORD_HEADER_LEN],
        body: &'a mut [u8],
    ) -> Result<&'a [u8], ConnError> {
        let ControlRx::Sealed { rx, .. } = self else {
            return Err(ConnError::Protocol(
                "sealed record on a plain connection".into(),
            ));
        };
        open_with(rx, header, body)
    }

    /// The next control frame (what follows its length prefix).
    pub async fn next_frame<R: AsyncRead + Unpin>(
        &mut self,
        r: &mut R,
    ) -> Result<&[u8], ConnError> {
        match self {
            ControlRx::Plain { buf } => {
                let mut prefix = [0u8; control::LEN_PREFIX];
                r.read_exact(&mut prefix).await.map_err(eof_as_close)?;
                let len =
                    control::frame_len(prefix).map_err(|e| ConnError::Protocol(e.to_string()))?;
                if buf.capacity() > 64 << 10 {
                    *buf = Vec::new();
                }
                // The buffer grows as bytes arrive, never to a length the
                // peer merely announced: a prefix alone costs nothing.
                buf.clear();
                let got = (&mut *r).take(len as u64).read_to_end(buf).await?;
                if got < len {
                    return Err(ConnError::ClosedByPeer(
                        "connection closed in the middle of a frame".into(),
                    ));
                }
                Ok(&buf[..])
            }
            ControlRx::Sealed {
                rx,
                plain,
                start,
                record,
            } => {
                let (from, to) = loop {
                    if let Some(range) = complete_frame(&plain[*start..])? {
                        let from = *start + range.0;
                        let to = *start + range.1;
                        *start = to;
                        break (from, to);
                    }
                    plain.drain(..*start);
                    *start = 0;
                    if plain.capacity() > 2 * control::MAX_FRAME_LEN {
                        plain.shrink_to(control::MAX_FRAME_LEN);
                    }
                    let (kind, h) = read_record(r, record).await?;
                    if kind != RecordKind::Sealed {
                        return Err(ConnError::Protocol(format!(
                            "unexpected record kind {}",
                            kind as u8
                        )));
                    }
                    let chunk = open_with(rx, h, record)?;
                    plain.extend_from_slice(chunk);
                };
                Ok(&plain[from..to])
            }
        }
    }
}

/// If `avail` begins with a whole control frame, where its body is.
fn complete_frame(avail: &[u8]) -> Result<Option<(usize, usize)>, ConnError> {
    let Some(prefix) = avail.first_chunk::<{ control::LEN_PREFIX }>() else {
        return Ok(None);
    };
    let len = control::frame_len(*prefix).map_err(|e| ConnError::Protocol(e.to_string()))?;
    let end = control::LEN_PREFIX + len;
    Ok((avail.len() >= end).then_some((control::LEN_PREFIX, end)))
}

fn open_with<'a>(
    rx: &mut StreamReceiver,
    header: [u8; RECORD_HEADER_LEN],
    body: &'a mut [u8],
) -> Result<&'a [u8], ConnError> {
    let Some((epoch, sealed)) = body.split_first_mut() else {
        return Err(ConnError::Protocol("empty sealed record".into()));
    };
    let epoch = *epoch;
    let aad = [header[0], header[1], header[2], epoch];
    rx.open(epoch, &aad, sealed)
        .map(|p| &*p)
        .map_err(|e| ConnError::Protocol(format!("control record: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::crypto::noise::StaticKey;

    fn cfg(psk: u8, trusted: &[&str]) -> CryptoConfig {
        CryptoConfig {
            psk: zeroize::Zeroizing::new([psk; 32]),
            key: StaticKey::generate().unwrap(),
            trusted: trusted.iter().map(|s| s.parse().unwrap()).collect(),
            rekey_interval: Duration::from_secs(1),
        }
    }

    async fn pair(
        a: CryptoConfig,
        b: CryptoConfig,
    ) -> (Result<Secured, ConnError>, Result<Secured, ConnError>) {
        let (mut x, mut y) = tokio::io::duplex(1 << 20);
        let now = Instant::now();
        let ip: IpAddr = "192.168.7.1".parse().unwrap();
        let p = prologue(b"hello-i", b"hello-r");
        let p2 = p.clone();
        let i = tokio::spawn(async move { handshake(&a, &mut x, true, &p, ip, 11, now).await });
        let r = tokio::spawn(async move { handshake(&b, &mut y, false, &p2, ip, 22, now).await });
        (i.await.unwrap(), r.await.unwrap())
    }

    #[tokio::test]
    async fn same_password_connects_and_swaps_sessions() {
        let (i, r) = pair(cfg(1, &[]), cfg(1, &[])).await;
        let (i, r) = (i.unwrap(), r.unwrap());
        assert_eq!((i.link.our_session, i.link.peer_session), (11, 22));
        assert_eq!((r.link.our_session, r.link.peer_session), (22, 11));
        assert!(!i.data_plain && !r.data_plain);
    }

    #[tokio::test]
    async fn wrong_password_fails_on_both_sides_with_a_reason() {
        let (i, r) = pair(cfg(1, &[]), cfg(2, &[])).await;
        let (i, r) = (i.err().unwrap().to_string(), r.err().unwrap().to_string());
        assert!(r.starts_with("authentication failed"), "{r}");
        assert!(
            i.contains("refused") && i.contains("authentication failed"),
            "{i}"
        );
    }

    #[tokio::test]
    async fn trust_must_be_mutual() {
        let (i, r) = pair(cfg(1, &["192.168.7.0/24"]), cfg(1, &["192.168.7.0/24"])).await;
        assert!(i.unwrap().data_plain && r.unwrap().data_plain);
        let (i, r) = pair(cfg(1, &["192.168.7.0/24"]), cfg(1, &[])).await;
        assert!(!i.unwrap().data_plain && !r.unwrap().data_plain);
    }

    #[tokio::test]
    async fn control_stream_round_trips_large_frames_across_rekeys() {
        let (i, r) = pair(cfg(1, &[]), cfg(1, &[])).await;
        let (mut i, mut r) = (i.unwrap(), r.unwrap());
        let (mut x, mut y) = tokio::io::duplex(16 << 20);
        let big = control::emit(control::Kind::Gossip, &vec![0x5A; 300_000]);
        let small = control::emit(control::Kind::Heartbeat, &[]);
        let t0 = Instant::now();
        for step in 0..3u64 {
            let t = t0 + Duration::from_secs(2 * step);
            i.control_tx.send(&mut x, &big, t).await.unwrap();
            i.control_tx.send(&mut x, &small, t).await.unwrap();
        }
        for _ in 0..3 {
            assert_eq!(r.control_rx.next_frame(&mut y).await.unwrap(), &big[4..]);
            assert_eq!(r.control_rx.next_frame(&mut y).await.unwrap(), &small[4..]);
        }
    }

    #[tokio::test]
    async fn tampered_control_record_is_an_error() {
        let (i, r) = pair(cfg(1, &[]), cfg(1, &[])).await;
        let (mut i, mut r) = (i.unwrap(), r.unwrap());
        let mut wire = Vec::new();
        let hb = control::emit(control::Kind::Heartbeat, &[]);
        i.control_tx
            .send(&mut wire, &hb, Instant::now())
            .await
            .unwrap();
        let last = wire.len() - 1;
        wire[last] ^= 1;
        let mut rd = &wire[..];
        assert!(r.control_rx.next_frame(&mut rd).await.is_err());
    }
}
