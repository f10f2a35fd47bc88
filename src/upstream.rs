//! The GHL API v2 client: the one way the gateway talks to GHL.
//!
//! Owns credentials (refresh, rotation, agency → location tokens), the rate limiter and the
//! in-flight bound of each location, retries with backoff, and paging in each of GHL's cursor
//! styles. Knows nothing of GraphQL nor of the store: credentials are kept through the
//! [`CredentialStore`] it defines, which the app implements on the database.
//!
//! Every call goes: in-flight slot (fair FIFO) → access token (renewed when due, one renewal at a
//! time per location) → rate-limit slot (the longest chain of pages first; GHL's `X-RateLimit-*`
//! counters correct our own) → HTTP → classification. 429s, 5xx, timeouts, connection errors and
//! unparseable bodies are retried with exponential backoff and jitter (`Retry-After` wins when
//! present; a 429 under the limit backs off briefly, a 429 with nothing left waits a window); a
//! 401 renews the token once and then fails; other 4xx fail at once.
//!
//! This file holds the [`Client`], its settings and errors, and the single-call endpoints;
//! `tokens.rs` holds token handling, `transport.rs` the request path, `paging.rs` the listings.

pub mod credentials;
pub mod dto;
pub mod limiter;
mod paging;
mod tokens;
mod transport;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::Semaphore;

pub use credentials::{
    Credential, CredentialStore, CredentialStoreError, MemoryCredentials, RenewalGuard,
};
pub use limiter::{RateLimiter, Window};
pub use paging::{Cursor, FetchedPage, Listing, Records};
pub use transport::{CallStats, Meter};

use crate::domain;
use transport::{Call, get, post};

/// The API version most endpoints expect.
const VERSION: &str = "2021-07-28";
/// The API version of `/conversations/*`.
const CONVERSATIONS_VERSION: &str = "2021-04-15";

/// Settings of the GHL client.
#[derive(Clone, Debug, clap::Args)]
pub struct UpstreamConfig {
    /// Base URL of the GHL API.
    #[arg(
        long = "ghl-base-url",
        env = "GHL_BASE_URL",
        default_value = "https://services.leadconnectorhq.com"
    )]
    pub base_url: String,
    /// Seconds before a GHL request times out (and is retried).
    #[arg(
        long = "ghl-timeout-secs",
        env = "GHL_TIMEOUT_SECS",
        default_value_t = 30
    )]
    pub timeout_secs: u64,
    /// OAuth client id of the marketplace app, for locations installed through OAuth.
    #[arg(long = "ghl-client-id", env = "GHL_CLIENT_ID")]
    pub client_id: Option<String>,
    /// OAuth client secret of the marketplace app.
    #[arg(
        long = "ghl-client-secret",
        env = "GHL_CLIENT_SECRET",
        hide_env_values = true,
        value_parser = crate::config::secret
    )]
    pub client_secret: Option<crate::config::Secret>,
    /// Retries of one call on 429, 5xx, timeouts and connection errors.
    #[arg(long = "ghl-max-retries", env = "GHL_MAX_RETRIES", default_value_t = 6)]
    pub max_retries: usize,
    /// First backoff delay in milliseconds (doubles on each retry, with jitter).
    #[arg(long = "ghl-backoff-ms", env = "GHL_BACKOFF_MS", default_value_t = 500)]
    pub backoff_ms: u64,
    /// Backoff in milliseconds after a 429 that came while GHL's `X-RateLimit-Remaining` said
    /// budget remained (a spurious 429), the same on each retry. A 429 with nothing remaining
    /// waits for the window instead; `Retry-After` wins over both. The retry costs a round trip
    /// anyway (about 150 ms), so a longer pause only stretches the sync: at 40% spurious 429s a
    /// Monte Carlo of a 1,000-contact sync gives 1.96x the fault-free time with 50 ms, 1.77x
    /// with 10 ms, 1.72x with none; a refused request is not counted by GHL either way.
    #[arg(
        long = "ghl-429-backoff-ms",
        env = "GHL_429_BACKOFF_MS",
        default_value_t = 10
    )]
    pub spurious_backoff_ms: u64,
    /// Requests a location may have in flight at once.
    #[arg(
        long = "ghl-max-in-flight",
        env = "GHL_MAX_IN_FLIGHT",
        default_value_t = 8
    )]
    pub max_in_flight: usize,
    /// Requests per window before GHL answers 429 (adjusted from `X-RateLimit-Max`).
    #[arg(
        long = "ghl-burst-limit",
        env = "GHL_BURST_LIMIT",
        default_value_t = 100
    )]
    pub burst_limit: u32,
    /// The rate-limit window in milliseconds (adjusted from `X-RateLimit-Interval-Milliseconds`).
    #[arg(
        long = "ghl-burst-window-ms",
        env = "GHL_BURST_WINDOW_MS",
        default_value_t = 10_000
    )]
    pub burst_window_ms: u64,
    /// Daily requests kept in reserve: below it, a location's sync stops with an error.
    #[arg(
        long = "ghl-daily-reserve",
        env = "GHL_DAILY_RESERVE",
        default_value_t = 1_000
    )]
    pub daily_reserve: i64,
}

impl UpstreamConfig {
    /// Defaults for `base_url` (tests and the demo point it at the simulator).
    pub fn new(base_url: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            ..crate::config::defaults()
        }
    }
}

impl Default for UpstreamConfig {
    /// The flags' defaults: GHL's production API.
    fn default() -> Self {
        crate::config::defaults()
    }
}

/// What went wrong with a GHL call, as the caller can act on it.
#[derive(Clone, Debug, thiserror::Error)]
pub enum UpstreamError {
    /// 429s until the retry budget ran out; `retry_after` is GHL's last word on when to come back,
    /// `budget_left` whether its `X-RateLimit-Remaining` said the window still had budget (a
    /// spurious 429, retried after a brief backoff rather than a window).
    #[error("GHL answered 429 Too Many Requests until the retry budget ran out")]
    RateLimited {
        retry_after: Option<Duration>,
        budget_left: bool,
    },
    /// 5xx, a timeout or a connection failure: worth trying again later.
    #[error("GHL is unavailable: {0}")]
    Transient(String),
    /// GHL refused the location's credential (a 401 a renewal did not cure, a refused renewal,
    /// or OAuth without client id and secret): the location must be connected again.
    #[error("GHL refused the credentials of the location: {0}")]
    Unauthorized(String),
    /// 403: the credential may not do this.
    #[error("GHL forbids this: {0}")]
    Forbidden(String),
    /// 404, or GHL's 400 "... not found" for an unknown record id.
    #[error("not found in GHL: {0}")]
    NotFound(String),
    /// Any other 4xx: the request itself is wrong; trying again will not help.
    #[error("GHL rejected the request ({status}): {message}")]
    BadRequest { status: u16, message: String },
    /// A body that does not parse as the JSON expected; retried.
    #[error("GHL sent a body that does not parse: {0}")]
    Decode(String),
    /// The daily quota fell below `GHL_DAILY_RESERVE`: the location waits for tomorrow.
    #[error("the daily GHL quota of the location is down to its reserve ({remaining} left)")]
    DailyQuotaExhausted { remaining: i64 },
    /// The location has no credential (or none with a usable token).
    #[error("no usable credentials for location {0}")]
    NoCredentials(String),
    /// A cursor that does not move: paging stops rather than loop.
    #[error("paging stopped advancing: {0}")]
    Stuck(String),
    /// The [`CredentialStore`] could not load or save a credential.
    #[error("the credential store failed: {0}")]
    Store(String),
}

impl UpstreamError {
    /// Whether trying the same call again may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            UpstreamError::RateLimited { .. }
                | UpstreamError::Transient(_)
                | UpstreamError::Decode(_)
        )
    }

    /// Whether the location's credentials are the problem (the location is marked so).
    pub fn is_auth(&self) -> bool {
        matches!(
            self,
            UpstreamError::Unauthorized(_)
                | UpstreamError::Forbidden(_)
                | UpstreamError::NoCredentials(_)
        )
    }
}

type Result<T, E = UpstreamError> = std::result::Result<T, E>;

struct LocationState {
    limiter: RateLimiter,
    in_flight: Semaphore,
    /// The credential in use; the lock makes renewals single-flight.
    credential: tokio::sync::Mutex<Option<Credential>>,
    stats: Mutex<CallStats>,
}

/// The GHL client; cheap to clone.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    config: UpstreamConfig,
    /// Where credentials are loaded from and saved to.
    credentials: Arc<dyn CredentialStore>,
    locations: Mutex<HashMap<String, Arc<LocationState>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding these locks leaves plain counters behind: keep going.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Client {
    /// A client of the GHL API that keeps the credentials of locations in `credentials`.
    pub fn new(config: UpstreamConfig, credentials: Arc<dyn CredentialStore>) -> Result<Self> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("ghl-gateway/", env!("CARGO_PKG_VERSION")))
            .timeout(Duration::from_secs(config.timeout_secs.max(1)))
            .connect_timeout(Duration::from_secs(10))
            .pool_idle_timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| UpstreamError::Transient(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                config,
                credentials,
                locations: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The settings the client was built with.
    pub fn config(&self) -> &UpstreamConfig {
        &self.inner.config
    }

    fn state(&self, location_id: &str) -> Arc<LocationState> {
        let config = &self.inner.config;
        lock(&self.inner.locations)
            .entry(location_id.to_owned())
            .or_insert_with(|| {
                Arc::new(LocationState {
                    limiter: RateLimiter::new(
                        config.burst_limit,
                        Duration::from_millis(config.burst_window_ms),
                    ),
                    in_flight: Semaphore::new(config.max_in_flight.max(1)),
                    credential: tokio::sync::Mutex::new(None),
                    stats: Mutex::new(CallStats::default()),
                })
            })
            .clone()
    }

    /// A snapshot of the calls made for a location.
    pub fn stats(&self, location_id: &str) -> CallStats {
        lock(&self.state(location_id).stats).clone()
    }

    /// Waits until GHL has answered a call of `location_id` with its rate-limit counters (at
    /// once if it has): the limiter's probe is over and requests go side by side.
    pub async fn answered(&self, location_id: &str) {
        self.state(location_id).limiter.answered().await;
    }

    // ---- resources -------------------------------------------------------------------------

    /// `GET /locations/{id}`.
    pub async fn location(&self, location_id: &str) -> Result<domain::Location> {
        let body = self
            .call(
                location_id,
                get("locations.get", format!("/locations/{location_id}"), vec![]),
            )
            .await?;
        let mut row = body.get("location").cloned().unwrap_or(body);
        dto::normalize_id(&mut row);
        let dto: dto::LocationDto = serde_json::from_value(row)
            .map_err(|e| UpstreamError::Decode(format!("location: {e}")))?;
        Ok(dto.into_domain())
    }

    /// `GET /users/?locationId=`: every user of the location in one call.
    pub async fn users(&self, location_id: &str) -> Result<(Vec<domain::User>, Vec<String>)> {
        let body = self
            .call(
                location_id,
                get(
                    "users.list",
                    "/users/".into(),
                    vec![("locationId", location_id.into())],
                ),
            )
            .await?;
        let (rows, skipped) = dto::decode_rows::<dto::UserDto>(rows(&body, "users")?);
        Ok((
            rows.into_iter()
                .filter(|u| !u.deleted)
                .map(|u| u.into_domain(location_id))
                .collect(),
            skipped,
        ))
    }

    /// `GET /locations/{id}/customFields?model=all`.
    pub async fn custom_fields(
        &self,
        location_id: &str,
    ) -> Result<(Vec<domain::CustomField>, Vec<String>)> {
        let body = self
            .call(
                location_id,
                get(
                    "customFields.list",
                    format!("/locations/{location_id}/customFields"),
                    vec![("model", "all".into())],
                ),
            )
            .await?;
        let (rows, skipped) = dto::decode_rows::<dto::CustomFieldDto>(rows(&body, "customFields")?);
        Ok((
            rows.into_iter()
                .map(|f| f.into_domain(location_id))
                .collect(),
            skipped,
        ))
    }

    /// `GET /opportunities/pipelines?locationId=`.
    pub async fn pipelines(
        &self,
        location_id: &str,
    ) -> Result<(Vec<domain::Pipeline>, Vec<String>)> {
        let body = self
            .call(
                location_id,
                get(
                    "opportunities.pipelines",
                    "/opportunities/pipelines".into(),
                    vec![("locationId", location_id.into())],
                ),
            )
            .await?;
        let (rows, skipped) = dto::decode_rows::<dto::PipelineDto>(rows(&body, "pipelines")?);
        Ok((
            rows.into_iter()
                .map(|p| p.into_domain(location_id))
                .collect(),
            skipped,
        ))
    }
}

/// The array under `key` of a list answer.
fn rows(body: &Value, key: &str) -> Result<Vec<Value>> {
    match body.get(key) {
        Some(Value::Array(rows)) => Ok(rows.clone()),
        Some(Value::Null) | None => Err(UpstreamError::Decode(format!(
            "the answer has no `{key}` list"
        ))),
        Some(_) => Err(UpstreamError::Decode(format!("`{key}` is not a list"))),
    }
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret as _;

    use super::*;

    #[test]
    fn the_config_never_prints_the_client_secret() {
        let mut config = UpstreamConfig::new("http://127.0.0.1:9");
        config.client_id = Some("client-id".into());
        config.client_secret = Some("client-secret-123".into());
        let printed = format!("{config:?}");
        assert!(!printed.contains("client-secret-123"), "{printed}");
        assert!(printed.contains("client-id") && printed.contains("REDACTED"));
        assert_eq!(
            config.client_secret.as_ref().map(|s| s.expose_secret()),
            Some("client-secret-123")
        );
    }

    #[test]
    fn new_keeps_the_flags_defaults() {
        let config = UpstreamConfig::new("http://sim");
        let defaults = UpstreamConfig::default();
        assert_eq!(config.base_url, "http://sim");
        assert_eq!(defaults.base_url, "https://services.leadconnectorhq.com");
        assert_eq!(
            (config.timeout_secs, config.max_retries, config.backoff_ms),
            (
                defaults.timeout_secs,
                defaults.max_retries,
                defaults.backoff_ms
            )
        );
        assert_eq!(
            (
                config.max_in_flight,
                config.burst_limit,
                config.burst_window_ms
            ),
            (8, 100, 10_000)
        );
        assert_eq!(config.daily_reserve, 1_000);
        assert_eq!(config.spurious_backoff_ms, 10);
        assert!(config.client_id.is_none() && config.client_secret.is_none());
    }

    #[test]
    fn errors_say_what_the_caller_can_do() {
        let store = UpstreamError::Store("cannot encrypt a token: x".into());
        assert_eq!(
            store.to_string(),
            "the credential store failed: cannot encrypt a token: x"
        );
        assert!(!store.is_retryable() && !store.is_auth());
        let none = UpstreamError::NoCredentials("loc".into());
        assert_eq!(none.to_string(), "no usable credentials for location loc");
        assert!(none.is_auth() && !none.is_retryable());
        let quota = UpstreamError::DailyQuotaExhausted { remaining: 9 };
        assert!(!quota.is_retryable() && !quota.is_auth());
        assert!(
            UpstreamError::Stuck("x".into())
                .to_string()
                .starts_with("paging stopped")
        );
    }

    #[test]
    fn list_answers_need_their_list() {
        let body = serde_json::json!({ "users": [1, 2], "other": 3, "none": null });
        assert_eq!(rows(&body, "users").unwrap().len(), 2);
        for key in ["other", "none", "missing"] {
            assert!(
                matches!(rows(&body, key), Err(UpstreamError::Decode(_))),
                "{key}"
            );
        }
    }
}
