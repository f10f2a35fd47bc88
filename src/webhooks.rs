//! GHL's signed webhook events (`POST /webhooks/ghl`, FACTS.md §9): verified over the raw body,
//! de-duplicated by `webhookId` in the database, applied to the cache order-safely.
//!
//! Owns the endpoint's answers, the timestamp window and the replay table's pruning; the writes
//! themselves are the store's ([`Store::apply_webhook`]), which bumps the location's data version
//! and publishes the change. Must not call GHL or the sync: what a payload lacks waits for the
//! next sync, and installs and uninstalls reach the sync only through the [`Lifecycle`] the app
//! sets. Logs only an event's type, location and ids, never its body.
//!
//! Answers (JSON `{"outcome": ..., "message": ...}`):
//! - 401 `MISSING_SIGNATURE` / `BAD_SIGNATURE`, or `STALE_TIMESTAMP` outside the window;
//! - 400 `BAD_EVENT` for a body that is not a GHL event; 413 above the body limit (the router's);
//! - 200 `duplicate` (the `webhookId` was seen: GHL must not retry it), `unknown_location`
//!   (neither cached nor connected: counted, ignored), `ignored` (a type the cache does not hold),
//!   `unchanged` (the cache holds newer data), `applied`;
//! - 503 `STORE_UNAVAILABLE` when the write fails, so that GHL retries.

mod event;
mod verify;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use futures::future::BoxFuture;
use tracing::Instrument as _;

pub use event::{Action, Envelope, EventError};
pub use verify::{
    GHL_ED25519_PUBLIC_KEY, GHL_RSA_PUBLIC_KEY, KeyError, Scheme, SignatureError, Verifier,
};

use crate::store::{Applied, Receipt, Store};

/// Settings of the webhook endpoint.
#[derive(Clone, Debug, clap::Args)]
pub struct WebhookConfig {
    /// Ed25519 public key that verifies `X-GHL-Signature`: a PEM (SubjectPublicKeyInfo) or the
    /// path of a PEM file. Default: GHL's published key.
    #[arg(
        long,
        env = "WEBHOOK_PUBLIC_KEY",
        default_value = GHL_ED25519_PUBLIC_KEY,
        hide_default_value = true
    )]
    pub webhook_public_key: String,
    /// RSA public key that verifies the legacy `X-WH-Signature` (PKCS#1 v1.5, SHA-256): a PEM or
    /// the path of a PEM file. Default: GHL's published key.
    #[arg(
        long,
        env = "WEBHOOK_LEGACY_PUBLIC_KEY",
        default_value = GHL_RSA_PUBLIC_KEY,
        hide_default_value = true
    )]
    pub webhook_legacy_public_key: String,
    /// Seconds an event's `timestamp` may differ from this machine's clock (either way).
    #[arg(long, env = "WEBHOOK_TOLERANCE_SECS", default_value_t = 300)]
    pub webhook_tolerance_secs: u64,
    /// Largest webhook body, in bytes; larger ones get 413.
    #[arg(long, env = "WEBHOOK_MAX_BODY_BYTES", default_value_t = 1 << 20)]
    pub webhook_max_body_bytes: usize,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        crate::config::defaults()
    }
}

/// What happened to one delivery: the answer's status and its `outcome`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    MissingSignature,
    BadSignature,
    StaleTimestamp,
    BadEvent,
    Duplicate,
    UnknownLocation,
    Ignored,
    Unchanged,
    Applied,
    StoreUnavailable,
}

impl Outcome {
    /// The `outcome` label of `ghl_gateway_webhook_events_total`: the answer in fewer values.
    fn metric_label(self) -> &'static str {
        match self {
            Outcome::MissingSignature
            | Outcome::BadSignature
            | Outcome::StaleTimestamp
            | Outcome::BadEvent => "refused",
            Outcome::Duplicate => "duplicate",
            Outcome::UnknownLocation | Outcome::Ignored => "ignored",
            Outcome::Unchanged => "unchanged",
            Outcome::Applied => "applied",
            Outcome::StoreUnavailable => "failed",
        }
    }

    /// The name in answers and counts.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::MissingSignature => "MISSING_SIGNATURE",
            Outcome::BadSignature => "BAD_SIGNATURE",
            Outcome::StaleTimestamp => "STALE_TIMESTAMP",
            Outcome::BadEvent => "BAD_EVENT",
            Outcome::Duplicate => "duplicate",
            Outcome::UnknownLocation => "unknown_location",
            Outcome::Ignored => "ignored",
            Outcome::Unchanged => "unchanged",
            Outcome::Applied => "applied",
            Outcome::StoreUnavailable => "STORE_UNAVAILABLE",
        }
    }

    /// The HTTP status of the answer.
    pub fn status(self) -> StatusCode {
        match self {
            Outcome::MissingSignature | Outcome::BadSignature | Outcome::StaleTimestamp => {
                StatusCode::UNAUTHORIZED
            }
            Outcome::BadEvent => StatusCode::BAD_REQUEST,
            Outcome::StoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::OK,
        }
    }
}

/// Receives GHL's webhooks; cheap to clone (shared).
#[derive(Clone)]
pub struct Receiver {
    inner: Arc<Inner>,
}

struct Inner {
    verifier: Verifier,
    store: Store,
    tolerance: chrono::Duration,
    max_body_bytes: usize,
    /// UTC ms of the last pruning of the replay table.
    pruned_at: AtomicI64,
    /// Deliveries by event type (`-` before the type is known) and outcome.
    counts: Mutex<BTreeMap<(String, Outcome), u64>>,
    /// What installs and uninstalls do beyond the cache; set once by the app.
    lifecycle: OnceLock<Arc<dyn Lifecycle>>,
}

/// What the gateway does beyond the cache when GHL says its app was installed on or uninstalled
/// from a location (FACTS.md §9.1, `INSTALL` / `UNINSTALL`). `app` implements it over the sync
/// engine and the credentials, which this module may not call itself.
pub trait Lifecycle: Send + Sync {
    /// After an `UNINSTALL` revoked `location_id`'s credentials: stop its running sync.
    fn uninstalled(&self, location_id: &str);

    /// An `INSTALL` on `location_id`, which has no usable credentials: connect it if the gateway
    /// can mint its own (an agency credential of `company_id`) and start its first sync. Whether
    /// it connected; an error answers 503 so that GHL retries.
    fn installed<'a>(
        &'a self,
        location_id: &'a str,
        company_id: Option<&'a str>,
    ) -> BoxFuture<'a, anyhow::Result<bool>>;
}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver")
            .field("tolerance", &self.inner.tolerance)
            .finish()
    }
}

/// Seconds between two prunings of the replay table.
const PRUNE_EVERY_MS: i64 = 60_000;

impl Receiver {
    /// Reads the keys of `config` (a bad key is a start-up error naming its flag).
    pub fn new(store: Store, config: &WebhookConfig) -> Result<Self, KeyError> {
        let verifier = Verifier::new(
            &config.webhook_public_key,
            &config.webhook_legacy_public_key,
        )?;
        let secs = i64::try_from(config.webhook_tolerance_secs).unwrap_or(i64::MAX / 1000);
        Ok(Self {
            inner: Arc::new(Inner {
                verifier,
                store,
                tolerance: chrono::Duration::seconds(secs.min(i64::MAX / 1000)),
                max_body_bytes: config.webhook_max_body_bytes,
                pruned_at: AtomicI64::new(0),
                counts: Mutex::new(BTreeMap::new()),
                lifecycle: OnceLock::new(),
            }),
        })
    }

    /// Sets what installs and uninstalls do beyond the cache (once; a second call is ignored).
    pub fn set_lifecycle(&self, lifecycle: Arc<dyn Lifecycle>) {
        let _ = self.inner.lifecycle.set(lifecycle);
    }

    /// The largest body the endpoint takes.
    pub fn max_body_bytes(&self) -> usize {
        self.inner.max_body_bytes
    }

    /// Deliveries so far by event type and outcome (`-` for deliveries refused before their
    /// type was read).
    pub fn counts(&self) -> BTreeMap<(String, Outcome), u64> {
        self.inner
            .counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn count(&self, kind: &str, outcome: Outcome) -> Outcome {
        crate::telemetry::metrics::webhook_event(kind, outcome.metric_label());
        *self
            .inner
            .counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((kind.to_owned(), outcome))
            .or_default() += 1;
        outcome
    }

    /// Verifies, de-duplicates and applies one delivery: `ghl_signature` and `wh_signature` are
    /// the values of `X-GHL-Signature` and `X-WH-Signature`, `body` the raw bytes.
    pub async fn receive(
        &self,
        ghl_signature: Option<&[u8]>,
        wh_signature: Option<&[u8]>,
        body: &[u8],
    ) -> Outcome {
        if let Err(error) = self
            .inner
            .verifier
            .verify(ghl_signature, wh_signature, body)
        {
            tracing::warn!(reason = %error, "webhook refused: signature");
            let outcome = match error {
                SignatureError::Missing => Outcome::MissingSignature,
                _ => Outcome::BadSignature,
            };
            return self.count("-", outcome);
        }
        let (envelope, value) = match event::envelope(body) {
            Ok(parsed) => parsed,
            Err(error) => {
                tracing::warn!(reason = %error, "webhook refused: not an event");
                return self.count("-", Outcome::BadEvent);
            }
        };
        let kind = envelope.kind.clone();
        let location_id = envelope.location_id.as_deref().unwrap_or("-").to_owned();
        let record_id = event::record_id(&value).unwrap_or("-").to_owned();
        let span = tracing::info_span!(
            "webhook",
            event_type = %kind,
            location_id = %location_id,
            record_id = %record_id,
            webhook_id = %envelope.webhook_id,
        );
        let outcome = self.accept(envelope, value).instrument(span).await;
        self.count(&kind, outcome)
    }

    /// The part of [`Receiver::receive`] after the envelope is read, in the event's span.
    async fn accept(&self, envelope: Envelope, value: serde_json::Value) -> Outcome {
        let now = Utc::now();
        if (now - envelope.timestamp).abs() > self.inner.tolerance {
            tracing::warn!(timestamp = %envelope.timestamp, "webhook refused: outside the timestamp window");
            return Outcome::StaleTimestamp;
        }
        let action = match event::action(&envelope, value) {
            Ok(action) => action,
            Err(error) => {
                tracing::warn!(reason = %error, "webhook refused: malformed event");
                return Outcome::BadEvent;
            }
        };
        self.prune(now).await;
        let receipt = Receipt {
            webhook_id: &envelope.webhook_id,
            received_at: now,
            location_id: envelope.location_id.as_deref(),
        };
        let write = match &action {
            Action::Write(write) => Some(write.as_ref()),
            Action::Install { .. } | Action::Ignore => None,
        };
        let location_id = envelope.location_id.as_deref();
        let applied = self.inner.store.apply_webhook(receipt, write).await;
        let outcome = match (applied, &action) {
            (Ok(Applied::Duplicate), _) => Outcome::Duplicate,
            // An install is how a location the gateway does not know yet may become known.
            (Ok(Applied::UnknownLocation | Applied::Unchanged), Action::Install { company_id }) => {
                match self.install(location_id, company_id.as_deref()).await {
                    Ok(outcome) => outcome,
                    Err(error) => {
                        tracing::error!(error = %error, "webhook not applied: the install failed");
                        Outcome::StoreUnavailable
                    }
                }
            }
            (Ok(Applied::UnknownLocation), _) => Outcome::UnknownLocation,
            (Ok(Applied::Written { .. }), _) => Outcome::Applied,
            (Ok(Applied::Unchanged), Action::Ignore) => Outcome::Ignored,
            // An uninstall changes credentials, not records: it is applied all the same, and the
            // location's running sync stops (its token is no longer valid).
            (Ok(Applied::Unchanged), Action::Write(write))
                if matches!(**write, crate::store::EventWrite::Uninstalled { .. }) =>
            {
                if let (Some(lifecycle), Some(location_id)) =
                    (self.inner.lifecycle.get(), location_id)
                {
                    lifecycle.uninstalled(location_id);
                }
                Outcome::Applied
            }
            (Ok(Applied::Unchanged), _) => Outcome::Unchanged,
            (Err(error), _) => {
                tracing::error!(error = %error, "webhook not applied: the store failed");
                Outcome::StoreUnavailable
            }
        };
        tracing::info!(outcome = outcome.as_str(), "webhook received");
        outcome
    }

    /// `INSTALL` of a location: credentials the gateway can still use (an agency credential,
    /// which mints location tokens) are restored after an `UNINSTALL`; a location without any is
    /// connected by the [`Lifecycle`] when the gateway holds an agency credential of its company;
    /// others need `ghl-gateway connect`.
    async fn install(
        &self,
        location_id: Option<&str>,
        company_id: Option<&str>,
    ) -> anyhow::Result<Outcome> {
        let Some(location_id) = location_id else {
            return Ok(Outcome::Ignored);
        };
        if self.inner.store.reinstate_credential(location_id).await? {
            return Ok(Outcome::Applied);
        }
        let connected = match self.inner.lifecycle.get() {
            Some(lifecycle) => lifecycle.installed(location_id, company_id).await?,
            None => false,
        };
        Ok(if connected {
            Outcome::Applied
        } else {
            Outcome::Ignored
        })
    }

    /// Forgets the `webhookId`s older than twice the window, at most once a minute: an event
    /// accepted at time T has a timestamp after T - window, so a replay of it after
    /// T + 2 x window is refused on its timestamp alone.
    async fn prune(&self, now: chrono::DateTime<Utc>) {
        let now_ms = now.timestamp_millis();
        let last = self.inner.pruned_at.load(Ordering::Relaxed);
        if now_ms - last < PRUNE_EVERY_MS
            || self
                .inner
                .pruned_at
                .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        let before = now - self.inner.tolerance * 2;
        if let Err(error) = self.inner.store.prune_webhook_ids(before).await {
            tracing::warn!(error = %error, "cannot prune the seen webhook ids");
        }
    }
}

/// `POST /webhooks/ghl`: the raw body as sent (never re-serialized), its signature headers.
pub async fn receive(
    State(receiver): State<Receiver>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let ghl = headers.get("x-ghl-signature").map(|v| v.as_bytes());
    let wh = headers.get("x-wh-signature").map(|v| v.as_bytes());
    let outcome = receiver.receive(ghl, wh, &body).await;
    let message = match outcome {
        Outcome::MissingSignature => "an X-GHL-Signature or X-WH-Signature header is required",
        Outcome::BadSignature => "the signature does not verify the body",
        Outcome::StaleTimestamp => "the event's timestamp is outside the accepted window",
        Outcome::BadEvent => "the body is not a GHL webhook event",
        Outcome::Duplicate => "this webhookId was already received",
        Outcome::UnknownLocation => "the location is not connected; the event is ignored",
        Outcome::Ignored => "the event type is not cached; the event is ignored",
        Outcome::Unchanged => "the cache holds newer data",
        Outcome::Applied => "applied",
        Outcome::StoreUnavailable => "the event could not be stored; retry later",
    };
    let body = serde_json::json!({ "outcome": outcome.as_str(), "message": message });
    (
        outcome.status(),
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}
