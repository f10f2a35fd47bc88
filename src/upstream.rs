//! The GHL API v2 client: the one way the gateway talks to GHL.
//!
//! Owns credentials (refresh, rotation, agency → location tokens), the rate limiter and the
//! in-flight bound of each location, retries with backoff, and paging in each of GHL's cursor
//! styles. Knows nothing of GraphQL; uses the store only to keep credentials.
//!
//! Every call goes: in-flight slot (fair FIFO) → access token (renewed when due, one renewal at a
//! time per location) → rate-limit slot → HTTP → classification. 429s, 5xx, timeouts, connection
//! errors and unparseable bodies are retried with exponential backoff and jitter (`Retry-After`
//! wins when present); a 401 renews the token once and then fails; other 4xx fail at once.

pub mod credentials;
pub mod dto;
pub mod limiter;
mod paging;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use tokio::sync::Semaphore;

pub use credentials::{Credential, Secret};
pub use limiter::RateLimiter;
pub use paging::{Cursor, FetchedPage, Listing, Records};

use crate::domain;
use crate::store::Store;

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
        hide_env_values = true
    )]
    pub client_secret: Option<String>,
    /// Retries of one call on 429, 5xx, timeouts and connection errors.
    #[arg(long = "ghl-max-retries", env = "GHL_MAX_RETRIES", default_value_t = 6)]
    pub max_retries: usize,
    /// First backoff delay in milliseconds (doubles on each retry, with jitter).
    #[arg(long = "ghl-backoff-ms", env = "GHL_BACKOFF_MS", default_value_t = 500)]
    pub backoff_ms: u64,
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
            timeout_secs: 30,
            client_id: None,
            client_secret: None,
            max_retries: 6,
            backoff_ms: 500,
            max_in_flight: 8,
            burst_limit: 100,
            burst_window_ms: 10_000,
            daily_reserve: 1_000,
        }
    }
}

/// What went wrong with a GHL call, as the caller can act on it.
#[derive(Clone, Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("GHL answered 429 Too Many Requests until the retry budget ran out")]
    RateLimited { retry_after: Option<Duration> },
    #[error("GHL is unavailable: {0}")]
    Transient(String),
    #[error("GHL refused the credentials of the location: {0}")]
    Unauthorized(String),
    #[error("GHL forbids this: {0}")]
    Forbidden(String),
    #[error("not found in GHL: {0}")]
    NotFound(String),
    #[error("GHL rejected the request ({status}): {message}")]
    BadRequest { status: u16, message: String },
    #[error("GHL sent a body that does not parse: {0}")]
    Decode(String),
    #[error("the daily GHL quota of the location is down to its reserve ({remaining} left)")]
    DailyQuotaExhausted { remaining: i64 },
    #[error("no usable credentials for location {0}")]
    NoCredentials(String),
    #[error("paging stopped advancing: {0}")]
    Stuck(String),
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

/// Calls made for a location, for progress events, tests and benchmarks.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CallStats {
    /// HTTP requests sent (retries included).
    pub calls: u64,
    /// Calls that were retries.
    pub retries: u64,
    /// 429 answers received.
    pub rate_limited: u64,
    /// Time spent waiting for the rate limiter.
    pub limiter_wait: Duration,
    /// What GHL last said of the daily quota.
    pub daily_remaining: Option<i64>,
    /// Token renewals (OAuth refreshes and agency location tokens).
    pub renewals: u64,
}

/// Counters of the calls made inside one [`Meter::scope`] (one sync stage, say), whatever else
/// the location is doing at the same time.
#[derive(Debug, Default)]
pub struct Meter {
    pub calls: std::sync::atomic::AtomicU64,
    pub retries: std::sync::atomic::AtomicU64,
    pub rate_limited: std::sync::atomic::AtomicU64,
    pub waited_us: std::sync::atomic::AtomicU64,
}

tokio::task_local! {
    static METER: Arc<Meter>;
}

impl Meter {
    /// Runs `future` with its GHL calls counted on `self`.
    pub async fn scope<F: Future>(self: Arc<Self>, future: F) -> F::Output {
        METER.scope(self, future).await
    }

    fn count(f: impl FnOnce(&Meter)) {
        let _ = METER.try_with(|m| f(m));
    }
}

struct LocationState {
    limiter: RateLimiter,
    in_flight: Semaphore,
    /// The credential in use; the lock makes renewals single-flight.
    credential: tokio::sync::Mutex<Option<Credential>>,
    stats: Mutex<CallStats>,
}

/// One GHL request.
struct Call {
    /// A name for logs and counters, e.g. `contacts.search`.
    endpoint: &'static str,
    method: Method,
    path: String,
    query: Vec<(&'static str, String)>,
    body: Option<Value>,
    version: &'static str,
}

/// The GHL client; cheap to clone.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    config: UpstreamConfig,
    store: Store,
    /// Encrypts tokens at rest when `GATEWAY_SECRET_KEY` is set.
    cipher: Option<crate::secrets::Cipher>,
    locations: Mutex<HashMap<String, Arc<LocationState>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding these locks leaves plain counters behind: keep going.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn header<T: std::str::FromStr>(headers: &reqwest::header::HeaderMap, name: &str) -> Option<T> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

/// The `message` of a GHL error body (a string, or an array of strings on 422).
fn error_message(body: &str) -> String {
    let parsed: Option<Value> = serde_json::from_str(body).ok();
    let message = parsed
        .as_ref()
        .and_then(|v| v.get("message"))
        .map(|m| match m {
            Value::Array(items) => items
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join("; "),
            Value::String(s) => s.clone(),
            other => other.to_string(),
        });
    let mut message = message.unwrap_or_else(|| body.chars().take(200).collect());
    message.truncate(300);
    message
}

impl Client {
    pub fn new(config: UpstreamConfig, store: Store) -> Result<Self> {
        Self::with_cipher(config, store, None)
    }

    /// A client that keeps tokens encrypted with `cipher` in the database.
    pub fn with_cipher(
        config: UpstreamConfig,
        store: Store,
        cipher: Option<crate::secrets::Cipher>,
    ) -> Result<Self> {
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
                store,
                cipher,
                locations: Mutex::new(HashMap::new()),
            }),
        })
    }

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

    /// Writes a credential to the database, its tokens encrypted when a cipher is configured.
    async fn persist(&self, location_id: &str, credential: &Credential) -> Result<()> {
        let mut row = credential.to_row(location_id);
        if let Some(cipher) = &self.inner.cipher {
            for token in [&mut row.access_token, &mut row.refresh_token]
                .into_iter()
                .flatten()
            {
                *token = cipher
                    .encrypt(token)
                    .map_err(|e| UpstreamError::Store(format!("cannot encrypt a token: {e}")))?;
            }
        }
        self.inner
            .store
            .save_credential(row)
            .await
            .map_err(|e| UpstreamError::Store(e.to_string()))
    }

    /// Reads a location's credential from the database, decrypting its tokens.
    async fn load(&self, location_id: &str) -> Result<Option<Credential>> {
        let Some(mut row) = self
            .inner
            .store
            .credential(location_id)
            .await
            .map_err(|e| UpstreamError::Store(e.to_string()))?
        else {
            return Ok(None);
        };
        for token in [&mut row.access_token, &mut row.refresh_token]
            .into_iter()
            .flatten()
        {
            if crate::secrets::Cipher::is_encrypted(token) {
                let cipher = self.inner.cipher.as_ref().ok_or_else(|| {
                    UpstreamError::Store(
                        "the stored tokens are encrypted and GATEWAY_SECRET_KEY is not set".into(),
                    )
                })?;
                *token = cipher.decrypt(token).map_err(|e| {
                    UpstreamError::Store(format!("cannot decrypt the stored token (is GATEWAY_SECRET_KEY the one it was stored with?): {e}"))
                })?;
            }
        }
        Ok(Credential::from_row(&row))
    }

    /// Stores a credential for a location and uses it from the next call on.
    pub async fn set_credential(&self, location_id: &str, credential: Credential) -> Result<()> {
        self.persist(location_id, &credential).await?;
        *self.state(location_id).credential.lock().await = Some(credential);
        Ok(())
    }

    /// Exchanges an OAuth authorization code for a location's tokens and stores them.
    /// Returns the location id the code was for.
    pub async fn install_with_code(&self, code: &str) -> Result<String> {
        let answer = self
            .oauth_token(&[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("user_type", "Location"),
            ])
            .await?;
        let location_id = answer
            .get("locationId")
            .and_then(Value::as_str)
            .ok_or_else(|| UpstreamError::Decode("the token answer has no locationId".into()))?
            .to_owned();
        let credential = Credential::OAuth {
            access_token: Secret::new(string_field(&answer, "access_token")?),
            refresh_token: Secret::new(string_field(&answer, "refresh_token")?),
            expires_at: expires_at(&answer),
        };
        self.set_credential(&location_id, credential).await?;
        Ok(location_id)
    }

    /// The credential in use, loaded from the store the first time.
    async fn current_credential(
        &self,
        location_id: &str,
        slot: &mut Option<Credential>,
    ) -> Result<Credential> {
        if slot.is_none() {
            *slot = self.load(location_id).await?;
        }
        slot.clone()
            .ok_or_else(|| UpstreamError::NoCredentials(location_id.to_owned()))
    }

    /// The access token to send. `rejected` is a token GHL just refused with 401: unless another
    /// caller renewed it meanwhile, it is renewed now. Renewals are single-flight per location:
    /// callers queue on the lock and find the renewed token.
    async fn access_token(
        &self,
        location_id: &str,
        state: &LocationState,
        rejected: Option<&Secret>,
    ) -> Result<Secret> {
        let mut slot = state.credential.lock().await;
        let credential = self.current_credential(location_id, &mut slot).await?;
        let now = chrono::Utc::now().timestamp_millis();
        let stale = match (rejected, credential.access_token()) {
            (Some(rejected), Some(current)) => rejected == current,
            _ => false,
        };
        let due = credential.needs_renewal(now, 5 * 60 * 1000);
        if !(stale || due) {
            return credential
                .access_token()
                .cloned()
                .ok_or_else(|| UpstreamError::NoCredentials(location_id.to_owned()));
        }
        let renewed = self.renew(location_id, &credential).await?;
        // Persist first: if the process dies now, the stored refresh token is the live one.
        self.persist(location_id, &renewed).await?;
        lock(&state.stats).renewals += 1;
        tracing::info!(location_id, "renewed the GHL access token");
        let token = renewed.access_token().cloned();
        *slot = Some(renewed);
        token.ok_or_else(|| UpstreamError::NoCredentials(location_id.to_owned()))
    }

    /// A fresh credential: a refreshed OAuth pair, or a newly minted agency location token.
    async fn renew(&self, location_id: &str, credential: &Credential) -> Result<Credential> {
        match credential {
            Credential::PrivateIntegration { .. } => Err(UpstreamError::Unauthorized(
                "the private integration token was refused; create a new one in GHL".into(),
            )),
            Credential::OAuth { refresh_token, .. } => {
                let answer = self
                    .oauth_token(&[
                        ("grant_type", "refresh_token"),
                        ("refresh_token", refresh_token.expose()),
                        ("user_type", "Location"),
                    ])
                    .await?;
                Ok(Credential::OAuth {
                    access_token: Secret::new(string_field(&answer, "access_token")?),
                    refresh_token: Secret::new(string_field(&answer, "refresh_token")?),
                    expires_at: expires_at(&answer),
                })
            }
            Credential::Agency {
                agency_token,
                company_id,
                ..
            } => {
                let response = self
                    .inner
                    .http
                    .post(format!(
                        "{}/oauth/locationToken",
                        self.inner.config.base_url
                    ))
                    .bearer_auth(agency_token.expose())
                    .header("Version", VERSION)
                    .header("Accept", "application/json")
                    .form(&[
                        ("companyId", company_id.as_str()),
                        ("locationId", location_id),
                    ])
                    .send()
                    .await
                    .map_err(|e| UpstreamError::Transient(format!("locationToken: {e}")))?;
                let answer = Self::read_auth_answer(response).await?;
                Ok(Credential::Agency {
                    agency_token: agency_token.clone(),
                    company_id: company_id.clone(),
                    location_token: Some(Secret::new(string_field(&answer, "access_token")?)),
                    expires_at: expires_at(&answer),
                })
            }
        }
    }

    async fn oauth_token(&self, params: &[(&str, &str)]) -> Result<Value> {
        let config = &self.inner.config;
        let (Some(client_id), Some(client_secret)) = (&config.client_id, &config.client_secret)
        else {
            return Err(UpstreamError::Unauthorized(
                "OAuth needs GHL_CLIENT_ID and GHL_CLIENT_SECRET".into(),
            ));
        };
        let mut form: Vec<(&str, &str)> =
            vec![("client_id", client_id), ("client_secret", client_secret)];
        form.extend_from_slice(params);
        let response = self
            .inner
            .http
            .post(format!("{}/oauth/token", config.base_url))
            .header("Accept", "application/json")
            .form(&form)
            .send()
            .await
            .map_err(|e| UpstreamError::Transient(format!("oauth/token: {e}")))?;
        Self::read_auth_answer(response).await
    }

    async fn read_auth_answer(response: reqwest::Response) -> Result<Value> {
        let status = response.status();
        let body = response
            .text()
            .await
            .map_err(|e| UpstreamError::Transient(e.to_string()))?;
        if status.is_success() {
            serde_json::from_str(&body)
                .map_err(|e| UpstreamError::Decode(format!("token answer: {e}")))
        } else if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
            Err(UpstreamError::Transient(format!(
                "token renewal got {status}"
            )))
        } else {
            // 400 invalid_grant, 401: the refresh token or agency token is no longer valid.
            Err(UpstreamError::Unauthorized(format!(
                "token renewal refused ({status}): {}",
                error_message(&body)
            )))
        }
    }

    /// Sends `call` for `location_id` with retries, and returns the JSON body.
    async fn call(&self, location_id: &str, call: Call) -> Result<Value> {
        let state = self.state(location_id);
        let config = &self.inner.config;
        let backoff = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(config.backoff_ms.max(1)))
            .with_max_delay(Duration::from_secs(60))
            .with_max_times(config.max_retries)
            .with_jitter();
        let interval = Duration::from_millis(config.burst_window_ms);
        (|| self.attempt(location_id, &state, &call))
            .retry(backoff)
            .sleep(tokio::time::sleep)
            .when(UpstreamError::is_retryable)
            .adjust(|error, delay| match error {
                // GHL's own word on when to come back wins; without one, a 429 waits at least
                // one window, as GHL's limits reset per window.
                UpstreamError::RateLimited { retry_after: Some(after) } => Some(*after),
                UpstreamError::RateLimited { retry_after: None } => delay.map(|d| d.max(interval)),
                _ => delay,
            })
            .notify(|error, delay| {
                lock(&state.stats).retries += 1;
                Meter::count(|m| {
                    m.retries.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                });
                tracing::warn!(location_id, endpoint = call.endpoint, error = %error, delay_ms = delay.as_millis() as u64, "retrying a GHL call");
            })
            .await
    }

    /// One try of `call`, including one token renewal on 401.
    async fn attempt(
        &self,
        location_id: &str,
        state: &LocationState,
        call: &Call,
    ) -> Result<Value> {
        let _in_flight = state
            .in_flight
            .acquire()
            .await
            .map_err(|_| UpstreamError::Transient("the client is shutting down".into()))?;
        if let Some(remaining) = lock(&state.stats).daily_remaining
            && remaining < self.inner.config.daily_reserve
        {
            return Err(UpstreamError::DailyQuotaExhausted { remaining });
        }
        let mut rejected: Option<Secret> = None;
        loop {
            let token = self
                .access_token(location_id, state, rejected.as_ref())
                .await?;
            let (status, headers, body) = self.send(state, call, &token).await?;
            if status == StatusCode::UNAUTHORIZED && rejected.is_none() {
                rejected = Some(token);
                continue;
            }
            return classify(call, status, &headers, &body);
        }
    }

    /// Sends one HTTP request under the rate limiter; returns status, headers and body.
    async fn send(
        &self,
        state: &LocationState,
        call: &Call,
        token: &Secret,
    ) -> Result<(StatusCode, reqwest::header::HeaderMap, String)> {
        let url = format!("{}{}", self.inner.config.base_url, call.path);
        let mut request = self
            .inner
            .http
            .request(call.method.clone(), url)
            .bearer_auth(token.expose())
            .header("Version", call.version)
            .header("Accept", "application/json")
            .query(&call.query);
        if let Some(body) = &call.body {
            request = request.json(body);
        }
        let permit = state.limiter.acquire().await;
        {
            let mut stats = lock(&state.stats);
            stats.calls += 1;
            stats.limiter_wait += permit.waited;
        }
        Meter::count(|m| {
            m.calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            m.waited_us.fetch_add(
                permit.waited.as_micros() as u64,
                std::sync::atomic::Ordering::Relaxed,
            );
        });
        let outcome = async {
            let response = request.send().await?;
            let status = response.status();
            let headers = response.headers().clone();
            let body = response.text().await?;
            Ok::<_, reqwest::Error>((status, headers, body))
        }
        .await;
        state.limiter.release(permit).await;
        let (status, headers, body) = outcome.map_err(|e| {
            let kind = if e.is_timeout() {
                "timed out"
            } else {
                "connection failed"
            };
            UpstreamError::Transient(format!("{} {kind}: {e}", call.endpoint))
        })?;
        state
            .limiter
            .observe(
                header(&headers, "x-ratelimit-max"),
                header::<u64>(&headers, "x-ratelimit-interval-milliseconds")
                    .map(Duration::from_millis),
                header(&headers, "x-ratelimit-remaining"),
            )
            .await;
        let mut stats = lock(&state.stats);
        if let Some(daily) = header(&headers, "x-ratelimit-daily-remaining") {
            stats.daily_remaining = Some(daily);
        }
        if status == StatusCode::TOO_MANY_REQUESTS {
            stats.rate_limited += 1;
            Meter::count(|m| {
                m.rate_limited
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            });
        }
        Ok((status, headers, body))
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

fn get(endpoint: &'static str, path: String, query: Vec<(&'static str, String)>) -> Call {
    Call {
        endpoint,
        method: Method::GET,
        path,
        query,
        body: None,
        version: VERSION,
    }
}

fn post(endpoint: &'static str, path: String, body: Value) -> Call {
    Call {
        endpoint,
        method: Method::POST,
        path,
        query: Vec::new(),
        body: Some(body),
        version: VERSION,
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

fn string_field(body: &Value, key: &str) -> Result<String> {
    body.get(key)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| UpstreamError::Decode(format!("the token answer has no `{key}`")))
}

fn expires_at(body: &Value) -> Option<i64> {
    let seconds = body.get("expires_in")?.as_i64()?;
    Some(chrono::Utc::now().timestamp_millis() + seconds * 1000)
}

/// Turns a response into the JSON body or a classified error.
fn classify(
    call: &Call,
    status: StatusCode,
    headers: &reqwest::header::HeaderMap,
    body: &str,
) -> Result<Value> {
    if status.is_success() {
        return serde_json::from_str(body).map_err(|e| {
            UpstreamError::Decode(format!("{}: {e} ({} bytes)", call.endpoint, body.len()))
        });
    }
    let message = error_message(body);
    Err(match status {
        StatusCode::TOO_MANY_REQUESTS => UpstreamError::RateLimited {
            retry_after: header::<u64>(headers, "retry-after").map(Duration::from_secs),
        },
        StatusCode::UNAUTHORIZED => UpstreamError::Unauthorized(message),
        StatusCode::FORBIDDEN => UpstreamError::Forbidden(message),
        StatusCode::NOT_FOUND => UpstreamError::NotFound(message),
        // GHL answers 400 "... not found" for an unknown record id.
        StatusCode::BAD_REQUEST if message.to_lowercase().contains("not found") => {
            UpstreamError::NotFound(message)
        }
        s if s.is_server_error() => {
            UpstreamError::Transient(format!("{} answered {s}", call.endpoint))
        }
        s => UpstreamError::BadRequest {
            status: s.as_u16(),
            message,
        },
    })
}
