//! Token encryption at rest: AES-256-GCM under `GATEHOUSE_ENCRYPTION_KEY`.
//!
//! The variable holds one or more base64 keys of 32 bytes, comma-separated. The first key
//! encrypts; every key decrypts, so a key is rotated by putting the new one first, re-encrypting
//! (every save re-encrypts with the first key), and dropping the old one later.
//!
//! Ciphertext layout (version 1):
//!
//! ```text
//! 0x01 | key id (8 bytes) | nonce (12 bytes, random per encryption) | AES-GCM ciphertext + tag
//! ```
//!
//! The key id is the first 8 bytes of SHA-256("gatehouse-key-id" ‖ key): it names the key without
//! revealing it, and lets decryption go straight to the right key instead of trying them all. The
//! key id and version byte are bound into the tag as associated data, so editing the prefix is
//! detected like any other tampering.

use std::fmt;

use access_core::keys::{KEY_ID_LEN, KeySpecError, key_id, parse_key_list};
use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::Engine as _;

/// The environment variable holding the keys.
pub const ENCRYPTION_KEY_ENV: &str = "GATEHOUSE_ENCRYPTION_KEY";

const VERSION: u8 = 1;
const NONCE_LEN: usize = 12;
const HEADER_LEN: usize = 1 + KEY_ID_LEN + NONCE_LEN;
/// GCM tag length: the shortest valid ciphertext is a header plus a tag.
const TAG_LEN: usize = 16;

/// Why a key list or a ciphertext was refused. Never carries key or plaintext bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    #[error("{ENCRYPTION_KEY_ENV} is not set")]
    NoKey,
    #[error("{ENCRYPTION_KEY_ENV}: key #{index} is not valid base64")]
    BadBase64 { index: usize },
    #[error("{ENCRYPTION_KEY_ENV}: key #{index} is {len} bytes; AES-256 needs 32")]
    BadLength { index: usize, len: usize },
    #[error("ciphertext is malformed (too short or unknown version)")]
    Malformed,
    #[error("ciphertext was encrypted with key id {key_id}, which is not configured")]
    UnknownKey { key_id: String },
    #[error("ciphertext failed authentication (wrong key or tampered)")]
    Tampered,
    #[error("decrypted token is not UTF-8")]
    NotUtf8,
    #[error("encryption failed")]
    Encrypt,
}

struct KeyEntry {
    id: [u8; KEY_ID_LEN],
    cipher: Aes256Gcm,
}

/// Encrypts and decrypts tokens. Cheap to share behind an `Arc`; `Debug` shows key ids only.
pub struct TokenCipher {
    keys: Vec<KeyEntry>,
}

impl fmt::Debug for TokenCipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ids: Vec<String> = self.keys.iter().map(|k| hex::encode(k.id)).collect();
        f.debug_struct("TokenCipher")
            .field("key_ids", &ids)
            .finish()
    }
}

impl TokenCipher {
    /// From raw 32-byte keys; the first encrypts.
    pub fn from_keys(keys: &[[u8; 32]]) -> Result<Self, CryptoError> {
        if keys.is_empty() {
            return Err(CryptoError::NoKey);
        }
        Ok(Self {
            keys: keys
                .iter()
                .map(|k| KeyEntry {
                    id: key_id(k),
                    cipher: Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(k)),
                })
                .collect(),
        })
    }

    /// Parses the value of `GATEHOUSE_ENCRYPTION_KEY` with the shared key-list parser
    /// ([`access_core::keys::parse_key_list`]): base64 keys, comma-separated.
    pub fn from_spec(spec: &str) -> Result<Self, CryptoError> {
        let keys = parse_key_list(ENCRYPTION_KEY_ENV, spec).map_err(|e| match e {
            KeySpecError::Empty { .. } => CryptoError::NoKey,
            KeySpecError::BadBase64 { index, .. } => CryptoError::BadBase64 { index },
            KeySpecError::BadLength { index, len, .. } => CryptoError::BadLength { index, len },
        })?;
        Self::from_keys(&keys)
    }

    /// Reads `GATEHOUSE_ENCRYPTION_KEY` through `get` (the server's snapshot of the environment;
    /// scripts the process environment); `Ok(None)` when it is unset or empty.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Option<Self>, CryptoError> {
        match get(ENCRYPTION_KEY_ENV) {
            Some(v) if !v.trim().is_empty() => Self::from_spec(&v).map(Some),
            _ => Ok(None),
        }
    }

    /// A fresh random key in the format `GATEHOUSE_ENCRYPTION_KEY` expects (for docs and setup).
    pub fn generate_key_b64() -> String {
        let key = Aes256Gcm::generate_key(&mut OsRng);
        base64::engine::general_purpose::STANDARD.encode(key)
    }

    /// Hex id of the key that encrypts.
    pub fn primary_key_id(&self) -> String {
        self.keys
            .first()
            .map(|k| hex::encode(k.id))
            .unwrap_or_default()
    }

    /// Encrypts with the first key and a fresh random nonce.
    pub fn encrypt(&self, plaintext: &str) -> Result<Vec<u8>, CryptoError> {
        let k = self.keys.first().ok_or(CryptoError::NoKey)?;
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let mut out = Vec::with_capacity(HEADER_LEN + plaintext.len() + TAG_LEN);
        out.push(VERSION);
        out.extend_from_slice(&k.id);
        let aad = out.clone();
        out.extend_from_slice(&nonce);
        let ct = k
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext.as_bytes(),
                    aad: &aad,
                },
            )
            .map_err(|_| CryptoError::Encrypt)?;
        out.extend_from_slice(&ct);
        Ok(out)
    }

    /// Decrypts with whichever configured key the prefix names.
    pub fn decrypt(&self, data: &[u8]) -> Result<String, CryptoError> {
        if data.len() < HEADER_LEN + TAG_LEN || data[0] != VERSION {
            return Err(CryptoError::Malformed);
        }
        let aad = &data[..1 + KEY_ID_LEN];
        let id = &data[1..1 + KEY_ID_LEN];
        let nonce = Nonce::from_slice(&data[1 + KEY_ID_LEN..HEADER_LEN]);
        let k = self
            .keys
            .iter()
            .find(|k| k.id == id)
            .ok_or_else(|| CryptoError::UnknownKey {
                key_id: hex::encode(id),
            })?;
        let pt = k
            .cipher
            .decrypt(
                nonce,
                Payload {
                    msg: &data[HEADER_LEN..],
                    aad,
                },
            )
            .map_err(|_| CryptoError::Tampered)?;
        String::from_utf8(pt).map_err(|_| CryptoError::NotUtf8)
    }

    /// Whether `data` was encrypted with a key other than the primary one (needs re-encrypting
    /// during a rotation).
    pub fn needs_reencrypt(&self, data: &[u8]) -> bool {
        match (self.keys.first(), data.get(1..1 + KEY_ID_LEN)) {
            (Some(k), Some(id)) => k.id != id,
            _ => true,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn b64(k: &[u8; 32]) -> String {
        base64::engine::general_purpose::STANDARD.encode(k)
    }

    #[test]
    fn round_trip_random_nonce_and_no_plaintext() {
        let c = TokenCipher::from_keys(&[[7u8; 32]]).unwrap();
        let a = c.encrypt("xoxb-secret-token").unwrap();
        let b = c.encrypt("xoxb-secret-token").unwrap();
        assert_ne!(a, b, "each encryption uses a fresh nonce");
        assert!(!a.windows(4).any(|w| w == b"xoxb"));
        assert_eq!(c.decrypt(&a).unwrap(), "xoxb-secret-token");
        assert_eq!(c.decrypt(&b).unwrap(), "xoxb-secret-token");
    }

    #[test]
    fn wrong_key_is_refused() {
        let a = TokenCipher::from_keys(&[[1u8; 32]]).unwrap();
        let b = TokenCipher::from_keys(&[[2u8; 32]]).unwrap();
        let ct = a.encrypt("xoxb-1").unwrap();
        assert!(matches!(
            b.decrypt(&ct),
            Err(CryptoError::UnknownKey { .. })
        ));
        // Same key id forged onto another key's ciphertext: authentication fails.
        let mut forged = b.encrypt("xoxb-2").unwrap();
        forged[1..9].copy_from_slice(&ct[1..9]);
        assert_eq!(a.decrypt(&forged), Err(CryptoError::Tampered));
    }

    #[test]
    fn tampering_anywhere_is_detected() {
        let c = TokenCipher::from_keys(&[[3u8; 32]]).unwrap();
        let ct = c.encrypt("xoxp-user-token").unwrap();
        for i in 0..ct.len() {
            let mut t = ct.clone();
            t[i] ^= 0x01;
            assert!(c.decrypt(&t).is_err(), "flip at byte {i} went unnoticed");
        }
        assert_eq!(c.decrypt(&ct[..10]), Err(CryptoError::Malformed));
        assert_eq!(c.decrypt(&[]), Err(CryptoError::Malformed));
    }

    #[test]
    fn rotation_first_encrypts_all_decrypt() {
        let old = [4u8; 32];
        let new = [5u8; 32];
        let before = TokenCipher::from_spec(&b64(&old)).unwrap();
        let ct_old = before.encrypt("xoxb-old").unwrap();
        let during = TokenCipher::from_spec(&format!("{} , {}", b64(&new), b64(&old))).unwrap();
        assert_eq!(during.decrypt(&ct_old).unwrap(), "xoxb-old");
        assert!(during.needs_reencrypt(&ct_old));
        let ct_new = during.encrypt("xoxb-old").unwrap();
        assert!(!during.needs_reencrypt(&ct_new));
        let after = TokenCipher::from_spec(&b64(&new)).unwrap();
        assert_eq!(after.decrypt(&ct_new).unwrap(), "xoxb-old");
        assert!(after.decrypt(&ct_old).is_err());
    }

    #[test]
    fn key_spec_errors_and_redaction() {
        assert_eq!(TokenCipher::from_spec("").unwrap_err(), CryptoError::NoKey);
        assert_eq!(
            TokenCipher::from_spec("not base64!").unwrap_err(),
            CryptoError::BadBase64 { index: 1 }
        );
        let short = base64::engine::general_purpose::STANDARD.encode([1u8; 16]);
        assert_eq!(
            TokenCipher::from_spec(&format!("{},{short}", b64(&[9u8; 32]))).unwrap_err(),
            CryptoError::BadLength { index: 2, len: 16 }
        );
        let generated = TokenCipher::generate_key_b64();
        let c = TokenCipher::from_spec(&generated).unwrap();
        let printed = format!("{c:?}");
        assert!(!printed.contains(&generated));
        assert!(printed.contains(&c.primary_key_id()));
    }
}
