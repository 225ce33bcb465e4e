//! Micro-benchmarks of encryption (`--password`): datagram sealing and
//! opening, the cipher choice, the replay window, the Noise handshake and
//! the password KDF.
//!
//!     cargo bench --bench crypto              (full run)
//!     cargo bench --bench crypto -- --quick   (a few seconds)

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use ring::aead::{self, Aad, LessSafeKey, UnboundKey};
use zeroize::Zeroizing;

use weave_rs::core::crypto::keys::{Receiver, Sender, TAG_LEN};
use weave_rs::core::crypto::noise::{Handshake, StaticKey};
use weave_rs::core::crypto::psk::derive_psk;
use weave_rs::core::crypto::replay::ReplayWindow;
use weave_rs::core::wire::sealed::{DatagramHeader, HEADER_LEN};

/// Plaintext bytes per datagram: a sleeve datagram carrying a full frame.
const PLAIN_LEN: usize = 1400;
/// Datagrams per batch (one batch of recvmmsg/sendmmsg).
const BATCH: usize = 64;
const SESSION: u32 = 0x5eed;

/// A sealed datagram's buffer: header (the associated data), payload, tag.
fn datagram_buf() -> Vec<u8> {
    let mut d = vec![0u8; HEADER_LEN + PLAIN_LEN + TAG_LEN];
    for (i, b) in d[HEADER_LEN..HEADER_LEN + PLAIN_LEN].iter_mut().enumerate() {
        *b = i as u8;
    }
    d
}

/// Seal `d`'s payload in place as the router does: reserve a nonce, write
/// the header, seal under it as associated data, append the tag.
fn seal_one(tx: &mut Sender, now: Instant, d: &mut [u8]) {
    let n = tx.reserve(now);
    let h = DatagramHeader {
        epoch: n.epoch,
        session: SESSION,
        counter: n.counter,
    }
    .emit();
    let (head, rest) = d.split_at_mut(HEADER_LEN);
    head.copy_from_slice(&h);
    let (payload, tag) = rest.split_at_mut(PLAIN_LEN);
    tag.copy_from_slice(&tx.seal(n, &h, payload));
}

fn datagrams(c: &mut Criterion) {
    let now = Instant::now();
    let secret = Zeroizing::new([7u8; 32]);
    // An interval longer than the run: no rekey while measuring.
    let hour = Duration::from_secs(3600);
    let mut g = c.benchmark_group("datagrams");
    g.throughput(Throughput::Bytes((BATCH * PLAIN_LEN) as u64));

    let mut tx = Sender::new(secret.clone(), now, hour);
    let mut bufs: Vec<Vec<u8>> = (0..BATCH).map(|_| datagram_buf()).collect();
    g.bench_function("seal_64x1400", |b| {
        b.iter(|| {
            for d in bufs.iter_mut() {
                seal_one(&mut tx, now, d);
            }
            black_box(&bufs);
        })
    });

    // Open needs fresh counters for the replay window: seal one batch, then
    // open copies of it with a fresh receiver each time (setup not timed).
    let mut tx = Sender::new(secret.clone(), now, hour);
    let mut sealed: Vec<Vec<u8>> = (0..BATCH).map(|_| datagram_buf()).collect();
    for d in sealed.iter_mut() {
        seal_one(&mut tx, now, d);
    }
    g.bench_function("open_64x1400", |b| {
        b.iter_batched_ref(
            || (Receiver::new(secret.clone()), sealed.clone()),
            |(rx, batch)| {
                for d in batch.iter_mut() {
                    let h = DatagramHeader::parse(d).expect("sealed datagram");
                    let (head, body) = d.split_at_mut(HEADER_LEN);
                    let opened = rx
                        .open(now, (h.epoch, h.counter), head, body)
                        .expect("authentic datagram");
                    black_box(opened.plain);
                }
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

/// ring's two AEADs on the same 1400-byte buffer, nothing else around them.
fn cipher_choice(c: &mut Criterion) {
    let mut g = c.benchmark_group("aead_seal_1400");
    g.throughput(Throughput::Bytes(PLAIN_LEN as u64));
    for (label, alg) in [
        ("AES_256_GCM", &aead::AES_256_GCM),
        ("CHACHA20_POLY1305", &aead::CHACHA20_POLY1305),
    ] {
        let key = LessSafeKey::new(UnboundKey::new(alg, &[7u8; 32]).expect("32-byte key"));
        let mut buf = vec![0x5au8; PLAIN_LEN];
        let aad = [0u8; HEADER_LEN];
        let mut counter = 0u64;
        g.bench_function(label, |b| {
            b.iter(|| {
                counter += 1;
                let mut n = [0u8; aead::NONCE_LEN];
                n[4..].copy_from_slice(&counter.to_be_bytes());
                // Returned: criterion keeps it from being optimised away.
                key.seal_in_place_separate_tag(
                    aead::Nonce::assume_unique_for_key(n),
                    Aad::from(&aad),
                    black_box(&mut buf[..]),
                )
                .expect("seal")
            })
        });
    }
    g.finish();
}

fn replay(c: &mut Criterion) {
    let mut g = c.benchmark_group("replay_window");
    // In order: every counter is new and slides the window.
    let mut w = ReplayWindow::new();
    let mut next = 0u64;
    g.bench_function("check_commit/in_order", |b| {
        b.iter(|| {
            next += 1;
            let ok = w.check(black_box(next)).is_ok();
            if ok {
                w.commit(next);
            }
            black_box(ok)
        })
    });
    // Reordered: pairs swapped (2, 1, 4, 3, ...), half the counters land
    // behind the top.
    let mut w = ReplayWindow::new();
    let mut i = 0u64;
    g.bench_function("check_commit/reordered", |b| {
        b.iter(|| {
            i += 1;
            let counter = i ^ 1;
            let ok = w.check(black_box(counter)).is_ok();
            if ok {
                w.commit(counter);
            }
            black_box(ok)
        })
    });
    // A replay: refused by check alone.
    let mut w = ReplayWindow::new();
    for c in 0..100 {
        w.commit(c);
    }
    g.bench_function("check/replayed", |b| {
        b.iter(|| black_box(w.check(black_box(50)).is_err()))
    });
    g.finish();
}

fn handshake(c: &mut Criterion) {
    let mut g = c.benchmark_group("noise");
    let a = StaticKey::generate().expect("key");
    let b_key = StaticKey::generate().expect("key");
    let psk = [9u8; 32];
    let prologue = b"weave-rs bench prologue";
    g.bench_function("handshake_xxpsk3", |b| {
        b.iter(|| {
            let mut i = Handshake::new(true, &a, &psk, prologue).expect("initiator");
            let mut r = Handshake::new(false, &b_key, &psk, prologue).expect("responder");
            let m1 = i.write(&[]).expect("m1");
            r.read(&m1).expect("read m1");
            let m2 = r.write(&[]).expect("m2");
            i.read(&m2).expect("read m2");
            let m3 = i.write(&[0u8; 8]).expect("m3");
            r.read(&m3).expect("read m3");
            let ki = i.finish().expect("initiator keys");
            let kr = r.finish().expect("responder keys");
            black_box((ki, kr))
        })
    });
    g.finish();
}

fn password(c: &mut Criterion) {
    let mut g = c.benchmark_group("psk");
    g.sample_size(10);
    g.bench_function("derive_psk_argon2id", |b| {
        b.iter(|| {
            black_box(
                derive_psk(black_box(b"correct horse battery staple"), "weave-rs").expect("psk"),
            )
        })
    });
    g.finish();
}

criterion_group!(
    benches,
    datagrams,
    cipher_choice,
    replay,
    handshake,
    password
);
criterion_main!(benches);
