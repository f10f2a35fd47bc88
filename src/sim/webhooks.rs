//! Webhook delivery as GHL does it (FACTS.md §9): flat JSON events (`events`) with `type`,
//! `locationId`, `timestamp`, `webhookId`, `appId` and `versionId`, signed over the raw body
//! bytes with Ed25519 (`X-GHL-Signature`) and with the legacy RSA PKCS#1 v1.5 + SHA-256
//! (`X-WH-Signature`), both base64. The knobs of `control::WebhookKnobs` make delivery as hostile
//! as a receiver must survive: redelivery of the same bytes, groups delivered newest first, a
//! delay, and retries with exponential backoff after a non-2xx.
//!
//! Keys: the Ed25519 keypair derives from the seed; the RSA keypair is a fixed, test-only 2048-bit
//! key shipped in `webhooks/legacy-rsa-2048.pem` (GHL's is 4096-bit). Both public keys are printed
//! on start. Neither protects anything: the simulator is not production crypto.
//!
//! It never touches records: the admin API builds the payloads (`events`) and calls [`emit`].

pub mod events;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use backon::{ExponentialBuilder, Retryable};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signer as _, SigningKey};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rsa::pkcs8::{DecodePrivateKey, EncodePublicKey, LineEnding};
use rsa::sha2::Sha256;
use rsa::signature::{SignatureEncoding, Signer as _};
use serde_json::Value;
use tokio::sync::mpsc::Receiver;
use tokio::time::Instant;

use super::control::{Signatures, WebhookKnobs};
use super::{Shared, lock, read};

/// DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410); the 32 key bytes follow.
const SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// The simulator's legacy signing key (PKCS#8 PEM, RSA 2048). Published in the source on
/// purpose: it signs simulated events only. Shipping it spares every start a 2048-bit key
/// generation, which takes seconds in a debug build.
const LEGACY_KEY_PEM: &str = include_str!("webhooks/legacy-rsa-2048.pem");

/// Queue size of events waiting for delivery; past it an event is dropped and counted.
pub const QUEUE: usize = 1024;

/// The two signing keys of the simulator's webhooks.
pub struct Signer {
    key: SigningKey,
    legacy: rsa::pkcs1v15::SigningKey<Sha256>,
    legacy_public_pem: String,
}

impl Signer {
    /// The Ed25519 key from `rng` (the seed's), the RSA key from the bundled PEM.
    pub fn from_seed(rng: &mut ChaCha8Rng) -> Self {
        let secret: [u8; 32] = rng.random();
        let private = rsa::RsaPrivateKey::from_pkcs8_pem(LEGACY_KEY_PEM)
            .expect("the bundled legacy webhook key is a valid PKCS#8 RSA key");
        let legacy_public_pem = private
            .to_public_key()
            .to_public_key_pem(LineEnding::LF)
            .expect("an RSA public key encodes as SPKI PEM");
        Signer {
            key: SigningKey::from_bytes(&secret),
            legacy: rsa::pkcs1v15::SigningKey::<Sha256>::new(private),
            legacy_public_pem,
        }
    }

    /// Base64 of the Ed25519 signature of `body`, the value of `X-GHL-Signature`.
    pub fn sign(&self, body: &[u8]) -> String {
        B64.encode(self.key.sign(body).to_bytes())
    }

    /// Base64 of the RSA PKCS#1 v1.5 SHA-256 signature of `body`, the value of `X-WH-Signature`.
    /// Slow in a debug build (big-integer arithmetic): call it off the async workers.
    pub fn sign_legacy(&self, body: &[u8]) -> String {
        B64.encode(self.legacy.sign(body).to_bytes())
    }

    /// The Ed25519 public key, SPKI PEM.
    pub fn public_pem(&self) -> String {
        let mut der = SPKI_PREFIX.to_vec();
        der.extend_from_slice(self.key.verifying_key().as_bytes());
        format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            B64.encode(der)
        )
    }

    /// The RSA public key of `X-WH-Signature`, SPKI PEM (`BEGIN PUBLIC KEY`, as GHL publishes its).
    pub fn legacy_public_pem(&self) -> String {
        self.legacy_public_pem.clone()
    }
}

/// One event waiting for delivery: its body is fixed when it is emitted, so every delivery and
/// retry of it sends the same bytes.
pub struct Outgoing {
    body: Bytes,
    kind: String,
    webhook_id: String,
    /// When the change happened (what `delayMs` counts from).
    at: Instant,
}

/// An event ready to send: its body and signature headers.
struct Signed {
    body: Bytes,
    kind: String,
    webhook_id: String,
    ghl: Option<String>,
    legacy: Option<String>,
}

/// Queues an event of `kind`: the payload's fields plus `type`, `locationId` (when given; agency
/// `INSTALL`/`UNINSTALL` events have none), `timestamp` (ISO 8601), a fresh `webhookId` (UUID),
/// `appId` and `versionId`. Returns the `webhookId`, or `None` when nothing was queued: no webhook
/// URL is set, or the queue is full (counted as `dropped`).
pub fn emit(
    shared: &Shared,
    kind: &str,
    location_id: Option<&str>,
    mut payload: Value,
) -> Option<String> {
    read(&shared.settings).webhook_url.as_ref()?;
    let webhook_id = uuid::Uuid::new_v4().to_string();
    if let Value::Object(m) = &mut payload {
        m.insert("type".into(), kind.into());
        if let Some(l) = location_id {
            m.insert("locationId".into(), l.into());
        }
        m.insert(
            "timestamp".into(),
            super::data::iso(chrono::Utc::now().timestamp_millis()).into(),
        );
        m.insert("webhookId".into(), webhook_id.clone().into());
        m.insert("appId".into(), shared.app_id.clone().into());
        m.insert("versionId".into(), shared.version_id.clone().into());
    }
    // Serializing a `Value` cannot fail (its keys are strings).
    let body = Bytes::from(serde_json::to_vec(&payload).unwrap_or_default());
    let out = Outgoing {
        body,
        kind: kind.to_string(),
        webhook_id: webhook_id.clone(),
        at: Instant::now(),
    };
    // Counted as pending before it is queued, so `SimHandle::webhooks_idle` never sees a gap.
    shared.webhooks_pending.send_modify(|n| *n += 1);
    if shared.webhooks.try_send(out).is_err() {
        shared.webhooks_pending.send_modify(|n| *n -= 1);
        lock(&shared.webhook_stats).dropped += 1;
        shared.count("webhook", "dropped");
        return None;
    }
    lock(&shared.webhook_stats).queued += 1;
    Some(webhook_id)
}

/// Delivers queued events until the simulator stops: in groups when `reorder` > 1 (newest
/// first), each after `delayMs`, retried after a failure, redelivered by chance right after its
/// first delivery. Up to `concurrency` events are in flight at once; at 1 (the default) they go
/// one at a time, in order, so a retrying event holds back the ones after it. Outcomes are
/// counted in `WebhookStats` and, per attempt, under the `webhook` endpoint ("200", "500",
/// "error", "skipped").
pub async fn deliver(shared: Arc<Shared>, mut rx: Receiver<Outgoing>) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap_or_default();
    // Dropped (and its tasks aborted) when the simulator stops.
    let mut in_flight = tokio::task::JoinSet::new();
    loop {
        let first = tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            next = rx.recv() => match next {
                Some(o) => o,
                None => return,
            },
        };
        let knobs = read(&shared.settings).webhooks.clone();
        let mut group = vec![first];
        if knobs.reorder > 1 {
            let deadline = Instant::now() + Duration::from_millis(knobs.reorder_wait_ms);
            while group.len() < knobs.reorder as usize {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(o)) => group.push(o),
                    Ok(None) | Err(_) => break,
                }
            }
            if group.len() > 1 {
                group.reverse();
                lock(&shared.webhook_stats).reordered_groups += 1;
            }
        }
        for out in group {
            while in_flight.len() >= knobs.concurrency.max(1) as usize {
                in_flight.join_next().await;
            }
            let (shared, client, knobs) = (shared.clone(), client.clone(), knobs.clone());
            in_flight.spawn(async move {
                tokio::time::sleep_until(out.at + Duration::from_millis(knobs.delay_ms)).await;
                let signed = sign(&shared, out, knobs.signatures).await;
                send_with_retries(&shared, &client, &signed, &knobs, false).await;
                let roll: f64 = lock(&shared.rng).random();
                if roll < knobs.redeliver {
                    send_with_retries(&shared, &client, &signed, &knobs, true).await;
                }
                shared.webhooks_pending.send_modify(|n| *n -= 1);
            });
        }
    }
}

/// Signs `out` with the keys `signatures` asks for; RSA runs on a blocking thread.
async fn sign(shared: &Arc<Shared>, out: Outgoing, signatures: Signatures) -> Signed {
    let ghl = matches!(signatures, Signatures::Both | Signatures::Ed25519)
        .then(|| shared.signer.sign(&out.body));
    let legacy = if matches!(signatures, Signatures::Both | Signatures::Legacy) {
        let (s, body) = (shared.clone(), out.body.clone());
        tokio::task::spawn_blocking(move || s.signer.sign_legacy(&body))
            .await
            .ok()
    } else {
        None
    };
    Signed {
        body: out.body,
        kind: out.kind,
        webhook_id: out.webhook_id,
        ghl,
        legacy,
    }
}

/// Why one attempt did not count as delivered.
#[derive(Debug)]
enum AttemptError {
    /// The receiver answered this non-2xx status.
    Status(u16),
    /// The request failed (connection, timeout).
    Request(String),
    /// No URL is set any more: nothing to retry.
    NoUrl,
}

impl std::fmt::Display for AttemptError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AttemptError::Status(s) => write!(f, "answered {s}"),
            AttemptError::Request(e) => write!(f, "{e}"),
            AttemptError::NoUrl => write!(f, "no webhook URL"),
        }
    }
}

/// One delivery of `signed`, with up to `maxAttempts` attempts and doubling waits between them.
async fn send_with_retries(
    shared: &Shared,
    client: &reqwest::Client,
    signed: &Signed,
    knobs: &WebhookKnobs,
    redelivery: bool,
) {
    {
        let mut st = lock(&shared.webhook_stats);
        st.deliveries += 1;
        if redelivery {
            st.redeliveries += 1;
        }
    }
    let backoff = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(knobs.retry_base_ms.max(1)))
        .with_max_delay(Duration::from_secs(3600))
        .with_max_times(knobs.max_attempts.saturating_sub(1) as usize);
    let result = (|| attempt(shared, client, signed))
        .retry(backoff)
        .sleep(tokio::time::sleep)
        .when(|e| !matches!(e, AttemptError::NoUrl))
        .notify(|error, delay| {
            lock(&shared.webhook_stats).retries += 1;
            tracing::debug!(event = %signed.kind, webhook_id = %signed.webhook_id, error = %error, delay_ms = delay.as_millis() as u64, "retrying a simulator webhook");
        })
        .await;
    let mut st = lock(&shared.webhook_stats);
    match result {
        Ok(()) => st.delivered += 1,
        Err(AttemptError::NoUrl) => {}
        Err(error) => {
            st.failures += 1;
            drop(st);
            tracing::warn!(event = %signed.kind, webhook_id = %signed.webhook_id, error = %error, "simulator webhook not delivered");
        }
    }
}

/// One HTTP request of a delivery; counts it.
async fn attempt(
    shared: &Shared,
    client: &reqwest::Client,
    signed: &Signed,
) -> Result<(), AttemptError> {
    let Some(url) = read(&shared.settings).webhook_url.clone() else {
        shared.count("webhook", "skipped");
        return Err(AttemptError::NoUrl);
    };
    lock(&shared.webhook_stats).attempts += 1;
    let mut req = client
        .post(&url)
        .header("content-type", "application/json")
        .body(signed.body.clone());
    if let Some(s) = &signed.ghl {
        req = req.header("x-ghl-signature", s);
    }
    if let Some(s) = &signed.legacy {
        req = req.header("x-wh-signature", s);
    }
    let outcome = match req.send().await {
        Ok(r) => {
            shared.count("webhook", r.status().as_str());
            if r.status().is_success() {
                Ok(())
            } else {
                Err(AttemptError::Status(r.status().as_u16()))
            }
        }
        Err(e) => {
            shared.count("webhook", "error");
            Err(AttemptError::Request(e.to_string()))
        }
    };
    if outcome.is_err() {
        lock(&shared.webhook_stats).failed_attempts += 1;
    }
    outcome
}
