//! The Noise handshake that opens an encrypted control connection.
//!
//! Noise_XXpsk3_25519_AESGCM_SHA256: both sides prove possession of the mesh
//! key (the PSK, mixed in at the third message) and exchange long-term
//! static keys under encryption; the ephemeral DH gives forward secrecy. The
//! plaintext hellos sent before are the prologue, so tampering with them
//! (a peer name, a feature bit) fails the handshake.
//!
//! Transport keys are not snow's: from the split we derive four independent
//! keys (control and datagrams, each direction) for `super::keys`, which
//! carries explicit counters, epochs and replay windows.

use zeroize::Zeroizing;

use super::keys::{derive, Secret, KEY_LEN};

pub const PATTERN: &str = "Noise_XXpsk3_25519_AESGCM_SHA256";
/// Noise's own limit on one message.
pub const MAX_MESSAGE: usize = 65_535;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoiseError {
    /// A message did not decrypt: the peer has another password, or is not
    /// a weave-rs peer at all.
    #[error("authentication failed")]
    AuthFailed,
    #[error("malformed handshake message")]
    Malformed,
    #[error("noise: {0}")]
    Internal(String),
}

fn internal(e: snow::Error) -> NoiseError {
    NoiseError::Internal(e.to_string())
}

fn params() -> snow::params::NoiseParams {
    // The pattern string is a constant that snow parses.
    PATTERN.parse().expect("valid Noise pattern")
}

/// A router's long-term Curve25519 key pair.
pub struct StaticKey {
    pub private: Secret,
    pub public: [u8; KEY_LEN],
}

impl StaticKey {
    pub fn generate() -> Result<StaticKey, NoiseError> {
        let kp = snow::Builder::new(params())
            .generate_keypair()
            .map_err(internal)?;
        let (Ok(private), Ok(public)) = (
            <[u8; KEY_LEN]>::try_from(kp.private.as_slice()),
            <[u8; KEY_LEN]>::try_from(kp.public.as_slice()),
        ) else {
            return Err(NoiseError::Internal("unexpected key length".into()));
        };
        Ok(StaticKey {
            private: Zeroizing::new(private),
            public,
        })
    }

    /// A short, stable fingerprint of a public key, for status.
    pub fn fingerprint(public: &[u8; KEY_LEN]) -> String {
        let d = ring::digest::digest(&ring::digest::SHA256, public);
        d.as_ref()[..8].iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// The keys an established session uses, one per purpose and direction.
pub struct SessionKeys {
    pub control_tx: Secret,
    pub control_rx: Secret,
    pub udp_tx: Secret,
    pub udp_rx: Secret,
    pub remote_static: [u8; KEY_LEN],
}

pub struct Handshake {
    state: snow::HandshakeState,
    initiator: bool,
}

impl Handshake {
    pub fn new(
        initiator: bool,
        key: &StaticKey,
        psk: &[u8; KEY_LEN],
        prologue: &[u8],
    ) -> Result<Handshake, NoiseError> {
        let b = snow::Builder::new(params())
            .local_private_key(&key.private[..])
            .and_then(|b| b.psk(3, psk))
            .and_then(|b| b.prologue(prologue))
            .map_err(internal)?;
        let state = if initiator {
            b.build_initiator()
        } else {
            b.build_responder()
        }
        .map_err(internal)?;
        Ok(Handshake { state, initiator })
    }

    pub fn is_finished(&self) -> bool {
        self.state.is_handshake_finished()
    }

    /// The next message to send, carrying `payload`.
    pub fn write(&mut self, payload: &[u8]) -> Result<Vec<u8>, NoiseError> {
        let mut out = vec![0u8; MAX_MESSAGE];
        let n = self
            .state
            .write_message(payload, &mut out)
            .map_err(internal)?;
        out.truncate(n);
        Ok(out)
    }

    /// Read the peer's next message; returns its payload.
    pub fn read(&mut self, msg: &[u8]) -> Result<Vec<u8>, NoiseError> {
        let mut out = vec![0u8; MAX_MESSAGE];
        match self.state.read_message(msg, &mut out) {
            Ok(n) => {
                out.truncate(n);
                Ok(out)
            }
            Err(snow::Error::Decrypt) => Err(NoiseError::AuthFailed),
            Err(snow::Error::Input) | Err(snow::Error::Dh) => Err(NoiseError::Malformed),
            Err(e) => Err(internal(e)),
        }
    }

    pub fn finish(mut self) -> Result<SessionKeys, NoiseError> {
        if !self.state.is_handshake_finished() {
            return Err(NoiseError::Internal("handshake not finished".into()));
        }
        let remote_static = self
            .state
            .get_remote_static()
            .and_then(|k| <[u8; KEY_LEN]>::try_from(k).ok())
            .ok_or_else(|| NoiseError::Internal("no remote static key".into()))?;
        let (i2r, r2i) = self.state.dangerously_get_raw_split();
        let (i2r, r2i) = (Zeroizing::new(i2r), Zeroizing::new(r2i));
        let (tx, rx) = if self.initiator {
            (i2r, r2i)
        } else {
            (r2i, i2r)
        };
        Ok(SessionKeys {
            control_tx: derive(&tx, b"control"),
            control_rx: derive(&rx, b"control"),
            udp_tx: derive(&tx, b"datagrams"),
            udp_rx: derive(&rx, b"datagrams"),
            remote_static,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(
        psk_i: [u8; 32],
        psk_r: [u8; 32],
        prologue_r: &[u8],
    ) -> Result<(SessionKeys, SessionKeys, Vec<u8>), NoiseError> {
        let (ki, kr) = (StaticKey::generate()?, StaticKey::generate()?);
        let mut i = Handshake::new(true, &ki, &psk_i, b"hellos")?;
        let mut r = Handshake::new(false, &kr, &psk_r, prologue_r)?;
        r.read(&i.write(&[])?)?;
        i.read(&r.write(&[])?)?;
        let payload = r.read(&i.write(b"confirm")?)?;
        assert!(i.is_finished() && r.is_finished());
        let (si, sr) = (i.finish()?, r.finish()?);
        assert_eq!(si.remote_static, kr.public);
        assert_eq!(sr.remote_static, ki.public);
        Ok((si, sr, payload))
    }

    #[test]
    fn same_psk_agrees_on_mirrored_keys() {
        let (i, r, payload) = run([1; 32], [1; 32], b"hellos").unwrap();
        assert_eq!(payload, b"confirm");
        assert_eq!(*i.control_tx, *r.control_rx);
        assert_eq!(*i.udp_tx, *r.udp_rx);
        assert_eq!(*r.udp_tx, *i.udp_rx);
        // Four distinct keys: no nonce is ever reused across purposes.
        let all = [&i.control_tx, &i.control_rx, &i.udp_tx, &i.udp_rx];
        for (a, x) in all.iter().enumerate() {
            for y in &all[a + 1..] {
                assert_ne!(***x, ***y);
            }
        }
    }

    #[test]
    fn wrong_psk_fails_at_the_responder() {
        assert!(matches!(
            run([1; 32], [2; 32], b"hellos"),
            Err(NoiseError::AuthFailed)
        ));
    }

    #[test]
    fn tampered_prologue_fails() {
        assert!(run([1; 32], [1; 32], b"hell0s").is_err());
    }

    #[test]
    fn garbage_is_refused_without_panicking() {
        let k = StaticKey::generate().unwrap();
        for len in [0usize, 1, 31, 32, 33, 200, 70_000] {
            let mut r = Handshake::new(false, &k, &[1; 32], b"").unwrap();
            let _ = r.read(&vec![0xAB; len]);
            let mut i = Handshake::new(true, &k, &[1; 32], b"").unwrap();
            i.write(&[]).unwrap();
            assert!(i.read(&vec![0xCD; len]).is_err(), "len {len}");
        }
    }
}
