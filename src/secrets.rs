//! Secrets at rest: the [`Cipher`] that encrypts GHL access and refresh tokens before they reach
//! the database, with a key from `GATEWAY_SECRET_KEY`.
//!
//! AES-256-GCM (RustCrypto's `aes-gcm`), a fresh random 96-bit nonce per value. A stored value is
//! `v1:` + base64(nonce | ciphertext | tag): the version names the algorithm, so a later key or
//! algorithm can be introduced beside it. Decryption fails on any change to the value (the tag
//! authenticates it) and on a value made with another key.
//!
//! Make a key with `openssl rand -base64 32` (or `openssl rand -hex 32`): 32 bytes, base64 or hex.
//! Losing the key loses the stored tokens (the locations must then be connected again).

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use rand::RngCore;
use secrecy::ExposeSecret;

use crate::config::{self, Secret};

/// The version prefix of values this cipher writes.
const V1: &str = "v1:";
const NONCE_BYTES: usize = 12;

/// Settings of secrets at rest.
#[derive(Clone, Debug, clap::Args)]
pub struct SecretsConfig {
    /// Key that encrypts GHL tokens in the database: 32 bytes, base64 or hex
    /// (`openssl rand -base64 32`). Required once tokens are stored.
    #[arg(
        long = "secret-key",
        env = "GATEWAY_SECRET_KEY",
        hide_env_values = true,
        value_parser = config::secret
    )]
    pub secret_key: Option<Secret>,
}

impl Default for SecretsConfig {
    fn default() -> Self {
        config::defaults()
    }
}

/// What can go wrong with a key or a stored value. No variant carries key or plaintext bytes.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretsError {
    #[error(
        "GATEWAY_SECRET_KEY must be 32 bytes in base64 or hex (make one with `openssl rand -base64 32`)"
    )]
    BadKey,
    #[error("the stored value is not an encrypted value of this gateway")]
    Malformed,
    #[error("the stored value was encrypted with a version this gateway does not know")]
    UnknownVersion,
    /// The value was changed, or encrypted with another key.
    #[error("the stored value does not decrypt with GATEWAY_SECRET_KEY (another key, or tampered)")]
    Undecryptable,
    #[error("the value is too large to encrypt")]
    TooLarge,
}

/// Encrypts and decrypts secrets at rest. Cheap to clone; `Debug` shows no key.
#[derive(Clone)]
pub struct Cipher {
    aead: Aes256Gcm,
}

impl std::fmt::Debug for Cipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Cipher(AES-256-GCM, key redacted)")
    }
}

impl Cipher {
    /// The cipher of the configured key; `Ok(None)` when no key is configured.
    pub fn from_config(config: &SecretsConfig) -> Result<Option<Self>, SecretsError> {
        config
            .secret_key
            .as_ref()
            .map(ExposeSecret::expose_secret)
            .filter(|k| !k.trim().is_empty())
            .map(Self::from_key_text)
            .transpose()
    }

    /// A cipher from 32 key bytes written in hex or base64 (standard or URL-safe, padded or not).
    pub fn from_key_text(text: &str) -> Result<Self, SecretsError> {
        let text = text.trim();
        let bytes = decode_hex(text)
            .or_else(|| {
                [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
                    .iter()
                    .find_map(|engine| engine.decode(text).ok())
            })
            .filter(|b| b.len() == 32)
            .ok_or(SecretsError::BadKey)?;
        let aead = Aes256Gcm::new_from_slice(&bytes).map_err(|_| SecretsError::BadKey)?;
        Ok(Self { aead })
    }

    /// `v1:` + base64(nonce | ciphertext | tag). Two encryptions of one value differ.
    pub fn encrypt(&self, plaintext: &str) -> Result<String, SecretsError> {
        let mut nonce = [0u8; NONCE_BYTES];
        rand::rng().fill_bytes(&mut nonce);
        let ciphertext = self
            .aead
            .encrypt(&Nonce::from(nonce), plaintext.as_bytes())
            .map_err(|_| SecretsError::TooLarge)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ciphertext);
        Ok(format!("{V1}{}", STANDARD.encode(out)))
    }

    /// The plaintext of a value [`encrypt`](Self::encrypt) made with the same key.
    pub fn decrypt(&self, stored: &str) -> Result<String, SecretsError> {
        let Some(body) = stored.strip_prefix(V1) else {
            return Err(match stored.split_once(':') {
                Some((version, _))
                    if version.starts_with('v') && version[1..].parse::<u32>().is_ok() =>
                {
                    SecretsError::UnknownVersion
                }
                _ => SecretsError::Malformed,
            });
        };
        let bytes = STANDARD.decode(body).map_err(|_| SecretsError::Malformed)?;
        if bytes.len() < NONCE_BYTES + 16 {
            return Err(SecretsError::Malformed);
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_BYTES);
        let nonce: [u8; NONCE_BYTES] = nonce.try_into().map_err(|_| SecretsError::Malformed)?;
        let plaintext = self
            .aead
            .decrypt(&Nonce::from(nonce), ciphertext)
            .map_err(|_| SecretsError::Undecryptable)?;
        String::from_utf8(plaintext).map_err(|_| SecretsError::Malformed)
    }

    /// Whether a stored value looks encrypted (for a migration of plaintext rows).
    pub fn is_encrypted(stored: &str) -> bool {
        stored.starts_with(V1)
    }
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_B64: &str = "q83vASNFZ4mrze8BI0VniavN7wEjRWeJq83vASNFZ4k=";

    #[test]
    fn values_round_trip_and_differ_each_time() {
        let cipher = Cipher::from_key_text(KEY_B64).unwrap();
        let one = cipher.encrypt("pit-secret-token").unwrap();
        let two = cipher.encrypt("pit-secret-token").unwrap();
        assert!(one.starts_with("v1:") && !one.contains("pit-secret-token"));
        assert_ne!(one, two);
        assert_eq!(cipher.decrypt(&one).unwrap(), "pit-secret-token");
        assert_eq!(cipher.decrypt(&cipher.encrypt("").unwrap()).unwrap(), "");
    }

    #[test]
    fn tampering_and_other_keys_are_detected() {
        let cipher = Cipher::from_key_text(KEY_B64).unwrap();
        let stored = cipher.encrypt("refresh-token").unwrap();
        let mut bytes = STANDARD.decode(&stored[3..]).unwrap();
        for i in [0, NONCE_BYTES, bytes.len() - 1] {
            bytes[i] ^= 1;
            let tampered = format!("v1:{}", STANDARD.encode(&bytes));
            assert_eq!(cipher.decrypt(&tampered), Err(SecretsError::Undecryptable));
            bytes[i] ^= 1;
        }
        let other = Cipher::from_key_text(&"ab".repeat(32)).unwrap();
        assert_eq!(other.decrypt(&stored), Err(SecretsError::Undecryptable));
        assert_eq!(cipher.decrypt("plain"), Err(SecretsError::Malformed));
        assert_eq!(cipher.decrypt("v1:!!"), Err(SecretsError::Malformed));
        assert_eq!(cipher.decrypt("v1:AAAA"), Err(SecretsError::Malformed));
        assert_eq!(cipher.decrypt("v2:AAAA"), Err(SecretsError::UnknownVersion));
    }

    #[test]
    fn keys_are_32_bytes_of_base64_or_hex() {
        assert!(Cipher::from_key_text(&"0f".repeat(32)).is_ok());
        assert!(Cipher::from_key_text(KEY_B64.trim_end_matches('=')).is_ok());
        for bad in ["", "short", &"0f".repeat(16), "q83vASNFZ4mrze8BI0VniQ=="] {
            assert_eq!(
                Cipher::from_key_text(bad).unwrap_err(),
                SecretsError::BadKey,
                "{bad:?}"
            );
        }
        let config = SecretsConfig {
            secret_key: Some(KEY_B64.into()),
        };
        assert!(Cipher::from_config(&config).unwrap().is_some());
        assert!(!format!("{config:?}").contains("q83v"));
        assert!(!format!("{:?}", Cipher::from_config(&config).unwrap()).contains("q83v"));
        assert!(
            Cipher::from_config(&SecretsConfig::default())
                .unwrap()
                .is_none()
        );
    }
}
