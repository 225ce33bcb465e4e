//! The mesh password, stretched into the Noise pre-shared key.
//!
//! Argon2id makes each guess at the password cost real memory and time, so
//! that a recorded handshake (which an active attacker can obtain, see
//! docs/DESIGN.md) cannot be brute-forced cheaply. Every router of a mesh
//! must derive the same key with no exchange beforehand, so the salt comes
//! from the mesh name the user sets (`--mesh-name`, default
//! [`DEFAULT_MESH_NAME`]): one table of guesses does not serve every mesh,
//! and two meshes with the same password do not accept each other.

use argon2::{Algorithm, Argon2, Params, Version};
use ring::digest::{Context, SHA256};
use zeroize::Zeroizing;

use super::keys::{Secret, KEY_LEN};

/// OWASP's first recommended Argon2id setting: 19 MiB, 2 passes, 1 lane
/// (about 15 ms here, paid once at launch).
const M_COST_KIB: u32 = 19 * 1024;
const T_COST: u32 = 2;
/// Hashed with the mesh name into the salt.
const SALT_LABEL: &[u8] = b"weave-rs mesh password salt v1\0";
/// Longer passwords are refused rather than silently truncated.
pub const MAX_PASSWORD_LEN: usize = 4096;
/// The mesh name when the user sets none.
pub const DEFAULT_MESH_NAME: &str = "weave-rs";
/// Longest mesh name, in bytes.
pub const MAX_MESH_NAME_LEN: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    #[error("password is empty")]
    Empty,
    #[error("password is longer than {MAX_PASSWORD_LEN} bytes")]
    TooLong,
    #[error("mesh name {0}")]
    MeshName(#[from] MeshNameError),
    #[error("key derivation failed: {0}")]
    Kdf(String),
}

/// Why a mesh name is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MeshNameError {
    #[error("is empty")]
    Empty,
    #[error("is longer than {MAX_MESH_NAME_LEN} bytes")]
    TooLong,
    #[error("contains a control character")]
    Control,
}

/// Accepts 1 to [`MAX_MESH_NAME_LEN`] bytes without control characters
/// (the name is shown by `status`).
pub fn check_mesh_name(name: &str) -> Result<(), MeshNameError> {
    if name.is_empty() {
        Err(MeshNameError::Empty)
    } else if name.len() > MAX_MESH_NAME_LEN {
        Err(MeshNameError::TooLong)
    } else if name.chars().any(char::is_control) {
        Err(MeshNameError::Control)
    } else {
        Ok(())
    }
}

/// The argon2 salt of mesh `mesh_name`: SHA-256 of a label and the name.
fn salt(mesh_name: &str) -> [u8; 32] {
    let mut h = Context::new(&SHA256);
    h.update(SALT_LABEL);
    h.update(mesh_name.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(h.finish().as_ref());
    out
}

/// The pre-shared key of the mesh `mesh_name` with `password`.
pub fn derive_psk(password: &[u8], mesh_name: &str) -> Result<Secret, PasswordError> {
    if password.is_empty() {
        return Err(PasswordError::Empty);
    }
    if password.len() > MAX_PASSWORD_LEN {
        return Err(PasswordError::TooLong);
    }
    check_mesh_name(mesh_name)?;
    let params = Params::new(M_COST_KIB, T_COST, 1, Some(KEY_LEN))
        .map_err(|e| PasswordError::Kdf(e.to_string()))?;
    let mut out = Zeroizing::new([0u8; KEY_LEN]);
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_into(password, &salt(mesh_name), &mut out[..])
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

    const MESH: &str = DEFAULT_MESH_NAME;

    #[test]
    fn same_password_same_key_and_different_otherwise() {
        let a = derive_psk(b"correct horse", MESH).unwrap();
        assert_eq!(*a, *derive_psk(b"correct horse", MESH).unwrap());
        assert_ne!(*a, *derive_psk(b"correct horsf", MESH).unwrap());
    }

    #[test]
    fn mesh_name_salts_the_key() {
        let prod = derive_psk(b"correct horse", "prod").unwrap();
        assert_eq!(*prod, *derive_psk(b"correct horse", "prod").unwrap());
        assert_ne!(*prod, *derive_psk(b"correct horse", "staging").unwrap());
        assert_ne!(*prod, *derive_psk(b"correct horse", MESH).unwrap());
        assert_ne!(salt("prod"), salt("prod "));
    }

    #[test]
    fn empty_and_huge_passwords_refused() {
        assert_eq!(derive_psk(b"", MESH), Err(PasswordError::Empty));
        assert_eq!(
            derive_psk(&vec![b'x'; MAX_PASSWORD_LEN + 1], MESH),
            Err(PasswordError::TooLong)
        );
    }

    #[test]
    fn bad_mesh_names_refused() {
        assert_eq!(check_mesh_name("prod-eu.1"), Ok(()));
        assert_eq!(check_mesh_name(&"m".repeat(MAX_MESH_NAME_LEN)), Ok(()));
        assert_eq!(check_mesh_name(""), Err(MeshNameError::Empty));
        assert_eq!(
            check_mesh_name(&"m".repeat(MAX_MESH_NAME_LEN + 1)),
            Err(MeshNameError::TooLong)
        );
        assert_eq!(check_mesh_name("a\x1b[31m"), Err(MeshNameError::Control));
        assert_eq!(
            derive_psk(b"pw", "").unwrap_err().to_string(),
            "mesh name is empty"
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
