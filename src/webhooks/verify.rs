//! Signature verification of GHL webhooks over the raw body bytes (FACTS.md §9.2), never over a
//! re-serialized JSON (which breaks signatures: key order, spacing and escapes differ).
//!
//! - `X-GHL-Signature`: base64 Ed25519 (RFC 8032, pure) signature of the body. When the header is
//!   present it decides alone: no fallback to the legacy header (as GHL's SDK does).
//! - `X-WH-Signature` (legacy): base64 RSA PKCS#1 v1.5 signature with SHA-256 (RFC 8017 §8.2).
//!
//! The keys are public keys in PEM (SubjectPublicKeyInfo), GHL's published ones by default.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::pkcs8::DecodePublicKey as _;
use rsa::pkcs8::DecodePublicKey as _;
use rsa::signature::Verifier as _;

/// GHL's published Ed25519 key for `X-GHL-Signature` (FACTS.md §9.2).
pub const GHL_ED25519_PUBLIC_KEY: &str = "-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAi2HR1srL4o18O8BRa7gVJY7G7bupbN3H9AwJrHCDiOg=
-----END PUBLIC KEY-----
";

/// GHL's published RSA key (4096 bits) for the legacy `X-WH-Signature` (FACTS.md §9.2, verbatim
/// from GHL's docs/oauth/WebhookAuthentication.md).
pub const GHL_RSA_PUBLIC_KEY: &str = "-----BEGIN PUBLIC KEY-----
MIICIjANBgkqhkiG9w0BAQEFAAOCAg8AMIICCgKCAgEAokvo/r9tVgcfZ5DysOSC
Frm602qYV0MaAiNnX9O8KxMbiyRKWeL9JpCpVpt4XHIcBOK4u3cLSqJGOLaPuXw6
dO0t6Q/ZVdAV5Phz+ZtzPL16iCGeK9po6D6JHBpbi989mmzMryUnQJezlYJ3DVfB
csedpinheNnyYeFXolrJvcsjDtfAeRx5ByHQmTnSdFUzuAnC9/GepgLT9SM4nCpv
uxmZMxrJt5Rw+VUaQ9B8JSvbMPpez4peKaJPZHBbU3OdeCVx5klVXXZQGNHOs8gF
3kvoV5rTnXV0IknLBXlcKKAQLZcY/Q9rG6Ifi9c+5vqlvHPCUJFT5XUGG5RKgOKU
J062fRtN+rLYZUV+BjafxQauvC8wSWeYja63VSUruvmNj8xkx2zE/Juc+yjLjTXp
IocmaiFeAO6fUtNjDeFVkhf5LNb59vECyrHD2SQIrhgXpO4Q3dVNA5rw576PwTzN
h/AMfHKIjE4xQA1SZuYJmNnmVZLIZBlQAF9Ntd03rfadZ+yDiOXCCs9FkHibELhC
HULgCsnuDJHcrGNd5/Ddm5hxGQ0ASitgHeMZ0kcIOwKDOzOU53lDza6/Y09T7sYJ
PQe7z0cvj7aE4B+Ax1ZoZGPzpJlZtGXCsu9aTEGEnKzmsFqwcSsnw3JB31IGKAyk
T1hhTiaCeIY/OwwwNUY2yvcCAwEAAQ==
-----END PUBLIC KEY-----
";

/// Why a configured key is unusable (a start-up error, naming the flag).
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read the key file {path} ({flag})")]
    Read {
        flag: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{flag} is not a PEM public key (SubjectPublicKeyInfo) of the expected algorithm: {reason}"
    )]
    Parse { flag: &'static str, reason: String },
}

/// Why a request's signature is refused (answered 401).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("neither X-GHL-Signature nor X-WH-Signature is present")]
    Missing,
    #[error("the signature is not base64 of a signature of the expected size")]
    Malformed,
    #[error("the signature does not match the body")]
    Invalid,
}

/// Which header verified a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    Ed25519,
    LegacyRsa,
}

/// The two public keys that authenticate GHL's webhooks.
#[derive(Clone, Debug)]
pub struct Verifier {
    ed25519: ed25519_dalek::VerifyingKey,
    rsa: rsa::pkcs1v15::VerifyingKey<sha2::Sha256>,
}

/// The PEM text of `value`: the value itself when it holds a PEM block, else the file it names.
fn pem_text(flag: &'static str, value: &str) -> Result<String, KeyError> {
    if value.contains("-----BEGIN") {
        return Ok(value.to_owned());
    }
    std::fs::read_to_string(value.trim()).map_err(|source| KeyError::Read {
        flag,
        path: value.trim().to_owned(),
        source,
    })
}

impl Verifier {
    /// Reads the Ed25519 key and the legacy RSA key, each a PEM or the path of a PEM file.
    pub fn new(ed25519_key: &str, rsa_key: &str) -> Result<Self, KeyError> {
        const ED: &str = "--webhook-public-key";
        const RSA: &str = "--webhook-legacy-public-key";
        let ed25519 =
            ed25519_dalek::VerifyingKey::from_public_key_pem(pem_text(ED, ed25519_key)?.trim())
                .map_err(|e| KeyError::Parse {
                    flag: ED,
                    reason: e.to_string(),
                })?;
        let rsa = rsa::RsaPublicKey::from_public_key_pem(pem_text(RSA, rsa_key)?.trim()).map_err(
            |e| KeyError::Parse {
                flag: RSA,
                reason: e.to_string(),
            },
        )?;
        Ok(Self {
            ed25519,
            rsa: rsa::pkcs1v15::VerifyingKey::new(rsa),
        })
    }

    /// Verifies `body` against the request's signature headers (their values as sent): the
    /// Ed25519 one when present, else the legacy RSA one.
    pub fn verify(
        &self,
        ghl_signature: Option<&[u8]>,
        wh_signature: Option<&[u8]>,
        body: &[u8],
    ) -> Result<Scheme, SignatureError> {
        if let Some(header) = ghl_signature {
            let bytes = decode(header)?;
            let signature = ed25519_dalek::Signature::from_slice(&bytes)
                .map_err(|_| SignatureError::Malformed)?;
            self.ed25519
                .verify_strict(body, &signature)
                .map_err(|_| SignatureError::Invalid)?;
            return Ok(Scheme::Ed25519);
        }
        let Some(header) = wh_signature else {
            return Err(SignatureError::Missing);
        };
        let bytes = decode(header)?;
        let signature = rsa::pkcs1v15::Signature::try_from(bytes.as_slice())
            .map_err(|_| SignatureError::Malformed)?;
        self.rsa
            .verify(body, &signature)
            .map_err(|_| SignatureError::Invalid)?;
        Ok(Scheme::LegacyRsa)
    }
}

fn decode(header: &[u8]) -> Result<Vec<u8>, SignatureError> {
    B64.decode(header.trim_ascii())
        .map_err(|_| SignatureError::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::Signer as _;

    #[test]
    fn the_published_keys_parse() {
        Verifier::new(GHL_ED25519_PUBLIC_KEY, GHL_RSA_PUBLIC_KEY).expect("GHL's keys are valid");
    }

    #[test]
    fn a_bad_key_names_its_flag() {
        let error = Verifier::new(
            "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----",
            GHL_RSA_PUBLIC_KEY,
        )
        .unwrap_err();
        assert!(
            error.to_string().contains("--webhook-public-key"),
            "{error}"
        );
        let error = Verifier::new(GHL_ED25519_PUBLIC_KEY, "/nonexistent/key.pem").unwrap_err();
        assert!(
            error.to_string().contains("--webhook-legacy-public-key"),
            "{error}"
        );
        // An RSA key where the Ed25519 one belongs is refused, not misread.
        assert!(Verifier::new(GHL_RSA_PUBLIC_KEY, GHL_RSA_PUBLIC_KEY).is_err());
    }

    #[test]
    fn ed25519_decides_alone_when_present() {
        use ed25519_dalek::pkcs8::EncodePublicKey as _;
        let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
        let pem = key
            .verifying_key()
            .to_public_key_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
            .unwrap();
        let verifier = Verifier::new(&pem, GHL_RSA_PUBLIC_KEY).unwrap();
        let body = br#"{"type":"ContactCreate"}"#;
        let good = B64.encode(key.sign(body).to_bytes());
        assert_eq!(
            verifier.verify(Some(good.as_bytes()), None, body),
            Ok(Scheme::Ed25519)
        );
        assert_eq!(
            verifier.verify(Some(good.as_bytes()), None, br#"{"type":"ContactDelete"}"#),
            Err(SignatureError::Invalid)
        );
        assert_eq!(
            verifier.verify(Some(b"not base64!"), Some(good.as_bytes()), body),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verifier.verify(None, None, body),
            Err(SignatureError::Missing)
        );
    }
}
