//! The one parser for Gatehouse's key lists (`GATEHOUSE_ENCRYPTION_KEY`, `GATEHOUSE_AUDIT_KEY`).
//!
//! A key list is one or more base64 keys of 32 bytes (standard alphabet, padding optional),
//! comma-separated, whitespace ignored. The first key is the one in use; the others are kept so
//! that what they protected still verifies or decrypts, which is how a key is rotated: put the
//! new key first, and drop the old one once nothing needs it.
//!
//! A key is named by its key id, the first 8 bytes of SHA-256("gatehouse-key-id" ‖ key) in hex:
//! it says which key was used without revealing it.

use base64::Engine as _;
use sha2::{Digest, Sha256};

/// Length of a key id in bytes (16 hex characters).
pub const KEY_ID_LEN: usize = 8;

/// Why a key list was refused. Names the variable and the key's position, never key bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeySpecError {
    /// The variable is empty.
    #[error("{var} holds no key")]
    Empty {
        /// The variable read.
        var: &'static str,
    },
    /// A key is not base64.
    #[error("{var}: key #{index} is not valid base64")]
    BadBase64 {
        /// The variable read.
        var: &'static str,
        /// Its position in the list (from 1).
        index: usize,
    },
    /// A key does not decode to 32 bytes.
    #[error("{var}: key #{index} is {len} bytes; it must be 32")]
    BadLength {
        /// The variable read.
        var: &'static str,
        /// Its position in the list (from 1).
        index: usize,
        /// How many bytes it decodes to.
        len: usize,
    },
}

/// Parses a key list; `var` names the variable in errors.
pub fn parse_key_list(var: &'static str, spec: &str) -> Result<Vec<[u8; 32]>, KeySpecError> {
    let mut keys = Vec::new();
    for (i, part) in spec
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .enumerate()
    {
        let index = i + 1;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(part)
            .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(part))
            .map_err(|_| KeySpecError::BadBase64 { var, index })?;
        let key: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| KeySpecError::BadLength {
                var,
                index,
                len: bytes.len(),
            })?;
        keys.push(key);
    }
    if keys.is_empty() {
        return Err(KeySpecError::Empty { var });
    }
    Ok(keys)
}

/// The key id of `key`.
pub fn key_id(key: &[u8]) -> [u8; KEY_ID_LEN] {
    let mut h = Sha256::new();
    h.update(b"gatehouse-key-id");
    h.update(key);
    let d = h.finalize();
    let mut id = [0u8; KEY_ID_LEN];
    id.copy_from_slice(&d[..KEY_ID_LEN]);
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_list_and_names_bad_entries() {
        let a = base64::engine::general_purpose::STANDARD.encode([1u8; 32]);
        let keys = parse_key_list("V", &format!(" {a} , {a}")).unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!(
            parse_key_list("V", &format!("{a},!!")),
            Err(KeySpecError::BadBase64 { var: "V", index: 2 })
        );
        assert!(matches!(
            parse_key_list("V", "AAAA"),
            Err(KeySpecError::BadLength { len: 3, .. })
        ));
        assert_eq!(
            parse_key_list("V", " , "),
            Err(KeySpecError::Empty { var: "V" })
        );
    }
}
