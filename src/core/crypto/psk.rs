//! The mesh password, stretched into the Noise pre-shared key.
//!
//! Argon2id makes each guess at the password cost real memory and time, so
//! that a recorded handshake (which an active attacker can obtain, see
//! docs/DESIGN.md) cannot be brute-forced cheaply. The salt is fixed: every
//! router of a mesh must derive the same key with no exchange beforehand.

use argon2::{Algorithm, Argon2, Params, Version};
use zeroize::Zeroizing;

use super::keys::{Secret, KEY_LEN};

/// OWASP's first recommended Argon2id setting: 19 MiB, 2 passes, 1 lane
/// (about 15 ms here, paid once at launch).
const M_COST_KIB: u32 = 19 * 1024;
const T_COST: u32 = 2;
const SALT: &[u8] = b"weave-rs mesh password v1";
/// Longer passwords are refused rather than silently truncated.
pub const MAX_PASSWORD_LEN: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    #[error("password is empty")]
    Empty,
    #[error("password is longer than {MAX_PASSWORD_LEN} bytes")]
    TooLong,
    #[error("key derivation failed: {0}")]
    Kdf(String),
}

pub fn derive_psk(password: &[u8]) -> Result<Secret, PasswordError> {
    if password.is_empty() {
        return Err(PasswordError::Empty);
    }
    if password.len() > MAX_PASSWORD_LEN {
        return Err(PasswordError::TooLong);
    }
    let params = Params::new(M_COST_KIB, T_COST, 1, Some(KEY_LEN))
        .map_err(|e| PasswordError::Kdf(e.to_string()))?;
    let mut out = Zeroizing::new([0u8; KEY_LEN]);
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_into(password, SALT, &mut out[..])
        .map_err(|e| PasswordError::Kdf(e.to_string()))?;
    Ok(out)
}

/// A password read from a file or the environment: one trailing newline
/// (as `echo` writes) is not part of it.
pub fn trim_newline(s: &[u8]) -> &[u8] {
    let s = s.strip_suffix(b"\n").unwrap_or(s);
    s.strip_suffix(b"\r").unwrap_or(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_password_same_key_and_different_otherwise() {
        let a = derive_psk(b"correct horse").unwrap();
        assert_eq!(*a, *derive_psk(b"correct horse").unwrap());
        assert_ne!(*a, *derive_psk(b"correct horsf").unwrap());
    }

    #[test]
    fn empty_and_huge_passwords_refused() {
        assert_eq!(derive_psk(b""), Err(PasswordError::Empty));
        assert_eq!(
            derive_psk(&vec![b'x'; MAX_PASSWORD_LEN + 1]),
            Err(PasswordError::TooLong)
        );
    }

    #[test]
    fn trailing_newline_trimmed_once() {
        assert_eq!(trim_newline(b"pw\n"), b"pw");
        assert_eq!(trim_newline(b"pw\r\n"), b"pw");
        assert_eq!(trim_newline(b"pw\n\n"), b"pw\n");
        assert_eq!(trim_newline(b"pw"), b"pw");
    }
}
