//! Per-direction AEAD keys with explicit counters and rekeying.
//!
//! Each direction of each link has its own 256-bit secret. A sealed message
//! carries the key epoch (low byte) and, on UDP, its counter; the 96-bit
//! nonce is four zero bytes and the counter. Rekeying is a one-way ratchet
//! (`next = HKDF(secret, "rekey")`) that the sender starts alone when its key
//! is old or has sealed many messages; the receiver follows when it first
//! sees the next epoch, after that message authenticated, and keeps the
//! previous key briefly for datagrams still in flight. No message is lost to
//! a rekey, and an old key cannot be recovered from a newer one.

use std::time::{Duration, Instant};

use ring::aead::{self, LessSafeKey, UnboundKey};
use ring::hkdf;
use zeroize::Zeroizing;

use super::replay::{ReplayError, ReplayWindow};

pub const KEY_LEN: usize = 32;
pub const TAG_LEN: usize = 16;
/// The data AEAD: AES-256-GCM (with AES-NI, several times ChaCha20-Poly1305's
/// speed on these machines; see docs/DESIGN.md).
pub static AEAD: &aead::Algorithm = &aead::AES_256_GCM;
/// Rekey after this many messages even if the key is young.
pub const REKEY_AFTER_MESSAGES: u64 = 1 << 32;
/// How long a retired receive key still opens late datagrams.
pub const PREVIOUS_KEY_GRACE: Duration = Duration::from_secs(10);

pub type Secret = Zeroizing<[u8; KEY_LEN]>;

/// HKDF-SHA256 of `secret` under `label`: a key independent of any other
/// label's.
pub fn derive(secret: &[u8; KEY_LEN], label: &[u8]) -> Secret {
    struct Len;
    impl hkdf::KeyType for Len {
        fn len(&self) -> usize {
            KEY_LEN
        }
    }
    let mut out = Zeroizing::new([0u8; KEY_LEN]);
    let labels = [label];
    hkdf::Salt::new(hkdf::HKDF_SHA256, b"weave-rs key derivation v1")
        .extract(secret)
        .expand(&labels, Len)
        .and_then(|okm| okm.fill(&mut out[..]))
        // Only a length above 255 * 32 bytes can fail.
        .expect("HKDF-SHA256 yields 32 bytes");
    out
}

/// The next key of the one-way ratchet, and its AEAD key.
fn ratchet(secret: &[u8; KEY_LEN]) -> (Secret, LessSafeKey) {
    let next = derive(secret, b"rekey");
    let key = aead_key(&next);
    (next, key)
}

fn aead_key(secret: &[u8; KEY_LEN]) -> LessSafeKey {
    // Only a wrong key length can fail, and KEY_LEN is AES-256's.
    LessSafeKey::new(UnboundKey::new(AEAD, secret).expect("AES-256 key is 32 bytes"))
}

fn nonce(counter: u64) -> aead::Nonce {
    let mut n = [0u8; aead::NONCE_LEN];
    n[4..].copy_from_slice(&counter.to_be_bytes());
    aead::Nonce::assume_unique_for_key(n)
}

/// The epoch and counter a message is sealed under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Nonce {
    /// Low byte of the key epoch, as carried on the wire.
    pub epoch: u8,
    pub counter: u64,
    /// This message is the first under a new key.
    pub rotated: bool,
}

/// The sending half of one direction.
pub struct Sender {
    secret: Secret,
    key: LessSafeKey,
    epoch: u32,
    next_counter: u64,
    born: Instant,
    interval: Duration,
}

impl Sender {
    pub fn new(secret: Secret, now: Instant, rekey_interval: Duration) -> Sender {
        Sender {
            key: aead_key(&secret),
            secret,
            epoch: 0,
            next_counter: 0,
            born: now,
            interval: rekey_interval,
        }
    }

    /// Take the nonce for the next message, rekeying first if due. Seal the
    /// message with `seal` before calling this again.
    pub fn reserve(&mut self, now: Instant) -> Nonce {
        let mut rotated = false;
        if self.next_counter >= REKEY_AFTER_MESSAGES
            || now.duration_since(self.born) >= self.interval
        {
            (self.secret, self.key) = ratchet(&self.secret);
            self.epoch = self.epoch.wrapping_add(1);
            self.next_counter = 0;
            self.born = now;
            rotated = true;
        }
        let counter = self.next_counter;
        self.next_counter += 1;
        Nonce {
            epoch: self.epoch as u8,
            counter,
            rotated,
        }
    }

    /// The epoch of the key the next message is sealed under (unless a
    /// rekey falls due first).
    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// Encrypt `in_out` in place; returns the tag to append.
    pub fn seal(&self, n: Nonce, aad: &[u8], in_out: &mut [u8]) -> [u8; TAG_LEN] {
        let mut tag = [0u8; TAG_LEN];
        // ring fails only for inputs beyond AES-GCM's 64 GiB limit.
        if let Ok(t) =
            self.key
                .seal_in_place_separate_tag(nonce(n.counter), aead::Aad::from(aad), in_out)
        {
            tag.copy_from_slice(t.as_ref());
        }
        tag
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("authentication failed")]
    AuthFailed,
    #[error("replayed")]
    Replayed,
    #[error("sealed under a key no longer held")]
    StaleKey,
}

/// One key's receiving state.
struct RxKey {
    secret: Secret,
    key: LessSafeKey,
    window: ReplayWindow,
}

impl RxKey {
    fn new(secret: Secret) -> RxKey {
        RxKey {
            key: aead_key(&secret),
            secret,
            window: ReplayWindow::new(),
        }
    }

    fn open<'a>(
        &mut self,
        counter: u64,
        aad: &[u8],
        in_out: &'a mut [u8],
    ) -> Result<&'a mut [u8], OpenError> {
        self.window.check(counter).map_err(|e| match e {
            ReplayError::Replayed | ReplayError::TooOld => OpenError::Replayed,
        })?;
        let plain = self
            .key
            .open_in_place(nonce(counter), aead::Aad::from(aad), in_out)
            .map_err(|_| OpenError::AuthFailed)?;
        self.window.commit(counter);
        Ok(plain)
    }
}

/// What `Receiver::resync` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resync {
    /// Already at that epoch, or past it: nothing to do.
    Current,
    /// Moved forward this many epochs.
    Followed(u32),
    /// Further ahead than allowed: the caller should start a new session.
    TooFar,
}

/// The receiving half of one direction of datagrams: out of order, with a
/// replay window per key.
pub struct Receiver {
    current: RxKey,
    epoch: u32,
    previous: Option<(RxKey, Instant)>,
}

/// What `Receiver::open` returns: the plaintext and whether the sender had
/// moved to a new key.
pub struct Opened<'a> {
    pub plain: &'a mut [u8],
    pub rotated: bool,
}

impl Receiver {
    pub fn new(secret: Secret) -> Receiver {
        Receiver {
            current: RxKey::new(secret),
            epoch: 0,
            previous: None,
        }
    }

    /// Authenticate and decrypt `in_out` (ciphertext and tag) in place.
    pub fn open<'a>(
        &mut self,
        now: Instant,
        n: (u8, u64),
        aad: &[u8],
        in_out: &'a mut [u8],
    ) -> Result<Opened<'a>, OpenError> {
        let (epoch, counter) = n;
        if epoch == self.epoch as u8 {
            let plain = self.current.open(counter, aad, in_out)?;
            return Ok(Opened {
                plain,
                rotated: false,
            });
        }
        if epoch == self.epoch.wrapping_add(1) as u8 {
            let (secret, key) = ratchet(&self.current.secret);
            let mut next = RxKey {
                secret,
                key,
                window: ReplayWindow::new(),
            };
            let plain = next.open(counter, aad, in_out)?;
            let old = std::mem::replace(&mut self.current, next);
            self.previous = Some((old, now));
            self.epoch = self.epoch.wrapping_add(1);
            return Ok(Opened {
                plain,
                rotated: true,
            });
        }
        if epoch == self.epoch.wrapping_sub(1) as u8 {
            if let Some((prev, retired)) = &mut self.previous {
                if now.duration_since(*retired) <= PREVIOUS_KEY_GRACE {
                    let plain = prev.open(counter, aad, in_out)?;
                    return Ok(Opened {
                        plain,
                        rotated: false,
                    });
                }
                self.previous = None;
            }
        }
        Err(OpenError::StaleKey)
    }
}

impl Receiver {
    /// The sender says, over the authenticated control channel, that it
    /// seals under `epoch` now. A datagram can only move the receiver one
    /// epoch on; after a long UDP outage the sender may have rekeyed many
    /// times, so follow it here, by up to `max_steps` ratchet steps (each an
    /// HKDF). The key just before `epoch` is kept as the previous one, for
    /// datagrams still in flight.
    pub fn resync(&mut self, epoch: u32, now: Instant, max_steps: u32) -> Resync {
        let ahead = epoch.wrapping_sub(self.epoch);
        if ahead == 0 || ahead > u32::MAX / 2 {
            return Resync::Current;
        }
        if ahead > max_steps {
            return Resync::TooFar;
        }
        // The secret of epoch - 1: `ahead - 1` steps from ours.
        let mut secret = self.current.secret.clone();
        for _ in 1..ahead {
            secret = derive(&secret, b"rekey");
        }
        let (next, key) = ratchet(&secret);
        let superseded = std::mem::replace(
            &mut self.current,
            RxKey {
                secret: next,
                key,
                window: ReplayWindow::new(),
            },
        );
        let previous = if ahead == 1 {
            superseded
        } else {
            RxKey::new(secret)
        };
        self.previous = Some((previous, now));
        self.epoch = epoch;
        Resync::Followed(ahead)
    }
}

/// The receiving half of an ordered stream (the control connection): the
/// counter is implicit, one more than the last message's.
pub struct StreamReceiver {
    secret: Secret,
    key: LessSafeKey,
    epoch: u32,
    next_counter: u64,
}

impl StreamReceiver {
    pub fn new(secret: Secret) -> StreamReceiver {
        StreamReceiver {
            key: aead_key(&secret),
            secret,
            epoch: 0,
            next_counter: 0,
        }
    }

    pub fn open<'a>(
        &mut self,
        epoch: u8,
        aad: &[u8],
        in_out: &'a mut [u8],
    ) -> Result<&'a mut [u8], OpenError> {
        if epoch == self.epoch.wrapping_add(1) as u8 {
            // The sender rekeyed: this message is the first under the next
            // key. Once authenticated there is no way back.
            let (secret, key) = ratchet(&self.secret);
            let plain = key
                .open_in_place(nonce(0), aead::Aad::from(aad), in_out)
                .map_err(|_| OpenError::AuthFailed)?;
            self.secret = secret;
            self.key = key;
            self.epoch = self.epoch.wrapping_add(1);
            self.next_counter = 1;
            return Ok(plain);
        }
        if epoch != self.epoch as u8 {
            return Err(OpenError::StaleKey);
        }
        let plain = self
            .key
            .open_in_place(nonce(self.next_counter), aead::Aad::from(aad), in_out)
            .map_err(|_| OpenError::AuthFailed)?;
        self.next_counter += 1;
        Ok(plain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    fn pair(interval: Duration) -> (Sender, Receiver, Instant) {
        let now = Instant::now();
        let secret = Zeroizing::new([7u8; KEY_LEN]);
        (
            Sender::new(secret.clone(), now, interval),
            Receiver::new(secret),
            now,
        )
    }

    fn seal(tx: &mut Sender, now: Instant, msg: &[u8]) -> (Nonce, Vec<u8>) {
        let n = tx.reserve(now);
        let aad = [n.epoch];
        let mut buf = msg.to_vec();
        let tag = tx.seal(n, &aad, &mut buf);
        buf.extend_from_slice(&tag);
        (n, buf)
    }

    fn open(
        rx: &mut Receiver,
        now: Instant,
        n: Nonce,
        sealed: &[u8],
    ) -> Result<Vec<u8>, OpenError> {
        let mut buf = sealed.to_vec();
        rx.open(now, (n.epoch, n.counter), &[n.epoch], &mut buf)
            .map(|o| o.plain.to_vec())
    }

    #[test]
    fn round_trip_out_of_order_and_replay() {
        let (mut tx, mut rx, now) = pair(HOUR);
        let a = seal(&mut tx, now, b"first");
        let b = seal(&mut tx, now, b"second");
        assert_ne!(a.1[..5], *b"first", "ciphertext must differ from plaintext");
        assert_eq!(open(&mut rx, now, b.0, &b.1).unwrap(), b"second");
        assert_eq!(open(&mut rx, now, a.0, &a.1).unwrap(), b"first");
        assert_eq!(open(&mut rx, now, a.0, &a.1), Err(OpenError::Replayed));
    }

    #[test]
    fn flipped_bits_and_wrong_keys_fail() {
        let (mut tx, mut rx, now) = pair(HOUR);
        let (n, sealed) = seal(&mut tx, now, b"payload");
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x10;
            assert_eq!(
                open(&mut rx, now, n, &bad),
                Err(OpenError::AuthFailed),
                "byte {i}"
            );
        }
        // A forgery did not burn the counter: the real message still opens.
        assert_eq!(open(&mut rx, now, n, &sealed).unwrap(), b"payload");
        let mut other = Receiver::new(Zeroizing::new([8u8; KEY_LEN]));
        let (n2, sealed2) = seal(&mut tx, now, b"x");
        assert_eq!(
            open(&mut other, now, n2, &sealed2),
            Err(OpenError::AuthFailed)
        );
    }

    #[test]
    fn rekey_by_time_keeps_late_datagrams() {
        let (mut tx, mut rx, t0) = pair(Duration::from_secs(2));
        let old = seal(&mut tx, t0, b"old key");
        let t1 = t0 + Duration::from_secs(3);
        let new = seal(&mut tx, t1, b"new key");
        assert!(new.0.rotated && new.0.epoch == 1 && new.0.counter == 0);
        assert_eq!(open(&mut rx, t1, new.0, &new.1).unwrap(), b"new key");
        // In flight across the rekey: still accepted, once.
        assert_eq!(open(&mut rx, t1, old.0, &old.1).unwrap(), b"old key");
        assert_eq!(open(&mut rx, t1, old.0, &old.1), Err(OpenError::Replayed));
        // After the grace period the old key is gone.
        let late = seal_with_epoch0_counter(5);
        assert_eq!(
            open(&mut rx, t1 + PREVIOUS_KEY_GRACE * 2, late.0, &late.1),
            Err(OpenError::StaleKey)
        );
    }

    fn seal_with_epoch0_counter(counter: u64) -> (Nonce, Vec<u8>) {
        let (mut tx, _, now) = pair(HOUR);
        for _ in 0..counter {
            tx.reserve(now);
        }
        seal(&mut tx, now, b"late")
    }

    #[test]
    fn many_rekeys_follow_and_epochs_wrap() {
        let (mut tx, mut rx, mut now) = pair(Duration::from_secs(1));
        for i in 0..600u32 {
            now += Duration::from_secs(1);
            let (n, sealed) = seal(&mut tx, now, &i.to_be_bytes());
            assert!(n.rotated);
            assert_eq!(open(&mut rx, now, n, &sealed).unwrap(), i.to_be_bytes());
        }
    }

    #[test]
    fn after_an_outage_of_many_rekeys_the_receiver_resyncs() {
        let (mut tx, mut rx, t0) = pair(Duration::from_secs(2));
        let before = seal(&mut tx, t0, b"before");
        assert_eq!(open(&mut rx, t0, before.0, &before.1).unwrap(), b"before");
        // UDP is cut: the sender keeps sealing (heartbeats) and rekeys 50
        // times; none of it arrives.
        let mut t = t0;
        for _ in 0..50 {
            t += Duration::from_secs(2);
            seal(&mut tx, t, b"lost");
        }
        assert_eq!(tx.epoch(), 50);
        let after = seal(&mut tx, t, b"after");
        // Datagrams alone cannot bridge the gap...
        assert_eq!(
            open(&mut rx, t, after.0, &after.1),
            Err(OpenError::StaleKey)
        );
        // ...the epoch told over the control channel does.
        assert_eq!(rx.resync(tx.epoch(), t, 1024), Resync::Followed(50));
        assert_eq!(open(&mut rx, t, after.0, &after.1).unwrap(), b"after");
        // Idempotent, and never backwards.
        assert_eq!(rx.resync(50, t, 1024), Resync::Current);
        assert_eq!(rx.resync(49, t, 1024), Resync::Current);
        // The next rekey follows as usual.
        t += Duration::from_secs(2);
        let next = seal(&mut tx, t, b"next");
        assert!(next.0.rotated);
        assert_eq!(open(&mut rx, t, next.0, &next.1).unwrap(), b"next");
        // A datagram sealed at epoch 49 and still in flight is not lost
        // (when the receiver resynced straight to 50).
        let (mut tx2, mut rx2, t2) = pair(Duration::from_secs(2));
        let mut t2b = t2;
        let mut late = None;
        for _ in 0..49 {
            t2b += Duration::from_secs(2);
            late = Some(seal(&mut tx2, t2b, b"late"));
        }
        assert_eq!(rx2.resync(50, t2b, 1024), Resync::Followed(50));
        let late = late.unwrap();
        assert_eq!(open(&mut rx2, t2b, late.0, &late.1).unwrap(), b"late");
    }

    #[test]
    fn resync_is_bounded() {
        let (_, mut rx, t) = pair(HOUR);
        assert_eq!(rx.resync(5000, t, 1024), Resync::TooFar);
        assert_eq!(rx.resync(1024, t, 1024), Resync::Followed(1024));
    }

    #[test]
    fn stream_receiver_follows_in_order_and_rekeys() {
        let now = Instant::now();
        let secret = Zeroizing::new([3u8; KEY_LEN]);
        let mut tx = Sender::new(secret.clone(), now, Duration::from_secs(5));
        let mut rx = StreamReceiver::new(secret);
        for step in 0..20u64 {
            let t = now + Duration::from_secs(step * 2);
            let n = tx.reserve(t);
            let mut buf = step.to_be_bytes().to_vec();
            let tag = tx.seal(n, &[n.epoch], &mut buf);
            buf.extend_from_slice(&tag);
            let mut replay = buf.clone();
            assert_eq!(
                rx.open(n.epoch, &[n.epoch], &mut buf).unwrap(),
                step.to_be_bytes()
            );
            assert!(rx.open(n.epoch, &[n.epoch], &mut replay).is_err());
        }
    }

    #[test]
    fn derived_keys_differ_by_label() {
        let s = [1u8; KEY_LEN];
        assert_ne!(*derive(&s, b"a"), *derive(&s, b"b"));
        assert_eq!(*derive(&s, b"a"), *derive(&s, b"a"));
    }
}
