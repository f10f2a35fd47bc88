//! Webhook delivery: change events signed like GHL's, with Ed25519 over the raw body bytes
//! (`X-GHL-Signature`, base64). The keypair derives from the seed and its public key is printed
//! on start, so a client under test can trust it.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signer as _, SigningKey};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde_json::Value;
use tokio::sync::mpsc::Receiver;

use super::{Shared, read};

/// DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410); the 32 key bytes follow.
const SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

pub struct Signer {
    key: SigningKey,
}

impl Signer {
    pub fn from_seed(rng: &mut ChaCha8Rng) -> Self {
        let secret: [u8; 32] = rng.random();
        Signer {
            key: SigningKey::from_bytes(&secret),
        }
    }

    /// Base64 of the Ed25519 signature of `body`, the value of `X-GHL-Signature`.
    pub fn sign(&self, body: &[u8]) -> String {
        B64.encode(self.key.sign(body).to_bytes())
    }

    pub fn public_pem(&self) -> String {
        let mut der = SPKI_PREFIX.to_vec();
        der.extend_from_slice(self.key.verifying_key().as_bytes());
        format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            B64.encode(der)
        )
    }
}

/// Sends queued events to the configured URL, one at a time, counting outcomes under the
/// `webhook` endpoint. A delivery failure is counted and dropped (GHL's retry policy is not
/// documented).
pub async fn deliver(shared: Arc<Shared>, mut rx: Receiver<Value>) {
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .unwrap_or_default();
    while let Some(event) = rx.recv().await {
        let Some(url) = read(&shared.settings).webhook_url.clone() else {
            shared.count("webhook", "skipped");
            continue;
        };
        let body = match serde_json::to_vec(&event) {
            Ok(b) => b,
            Err(_) => continue,
        };
        let sig = shared.signer.sign(&body);
        let res = client
            .post(&url)
            .header("content-type", "application/json")
            .header("x-ghl-signature", sig)
            .body(body)
            .send()
            .await;
        match res {
            Ok(r) => shared.count("webhook", r.status().as_str()),
            Err(e) => {
                tracing::warn!(error = %e, "simulator webhook delivery failed");
                shared.count("webhook", "error");
            }
        }
    }
}

/// Queues an event (payload fields plus `type`, `locationId`, `timestamp`, `webhookId`,
/// `appId`, `versionId`). Without a webhook URL nothing is queued.
pub fn emit(shared: &Shared, kind: &str, location_id: &str, mut payload: Value) {
    if read(&shared.settings).webhook_url.is_none() {
        return;
    }
    if let Value::Object(m) = &mut payload {
        m.insert("type".into(), kind.into());
        m.insert("locationId".into(), location_id.into());
        m.insert(
            "timestamp".into(),
            super::data::iso(chrono::Utc::now().timestamp_millis()).into(),
        );
        m.insert("webhookId".into(), uuid::Uuid::new_v4().to_string().into());
        m.insert("appId".into(), shared.app_id.clone().into());
        m.insert("versionId".into(), shared.version_id.clone().into());
    }
    if shared.webhooks.try_send(payload).is_err() {
        shared.count("webhook", "dropped");
    }
}
