//! Encryption for `--password`: the Noise handshake, the derived keys with
//! explicit counters and rekeying, the replay window, and the password KDF.
//! Pure computation; the daemon does the I/O.

pub mod keys;
pub mod noise;
pub mod psk;
pub mod replay;
