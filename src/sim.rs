//! A simulator of the HighLevel (GHL) API v2, for tests, the demo and benchmarks.
//!
//! It is an independent model of GHL built from the official OpenAPI specs and observed behaviour
//! (`shared/ghl-api/FACTS.md`), and it must not import the gateway's own client code: shared types
//! would let both sides be wrong the same way. Map of the module:
//!
//! - `data`: seeded records per location, their sorted indexes and their JSON shapes
//! - `filters`: GHL's search filters (groups, operators, ranges) over a record's fields
//! - `auth`: PITs, OAuth location/agency tokens, refresh rotation, authorization codes
//! - `endpoints`: the table of endpoint names (counters, per-endpoint faults); a leaf
//! - `control`: run-time settings, the rate limiter, faults, request counters
//! - `api`: GHL's routes (paths, keys, quirks, status codes) and the fault/latency layer
//! - `admin`: the `/_sim/` API (records, ground truth, counters, settings, webhooks)
//! - `webhooks`: GHL's event payloads, signed (Ed25519 and legacy RSA) and delivered with the
//!   knobs a receiver must survive (redelivery, disorder, delay, retries)
//!
//! Of the crate it uses only `config` (the one source of `SimArgs`' defaults).
//!
//! Use [`Sim::spawn`] in tests and [`run`] for the `sim` command.

mod admin;
mod api;
mod auth;
mod control;
mod data;
mod endpoints;
mod filters;
mod webhooks;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use auth::TokenKind;
pub use control::{
    Counters, FaultConfig, FaultSpec, Settings, Signatures, WebhookKnobs, WebhookStats,
};
pub use endpoints::ENDPOINTS;

/// Settings of the simulator; every flag has an environment variable too.
#[derive(clap::Args, Debug, Clone)]
pub struct SimArgs {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, env = "LISTEN_ADDR", default_value = "127.0.0.1:8090")]
    pub listen: SocketAddr,
    /// Seed of the generated data, ids and tokens: the same seed gives the same world.
    #[arg(long, env = "SIM_SEED", default_value_t = 42)]
    pub seed: u64,
    /// Number of locations (sub-accounts) to serve.
    #[arg(long, env = "SIM_LOCATIONS", default_value_t = 1)]
    pub locations: usize,
    /// Contacts per location (each with 0-5 tasks, most with a conversation, some with
    /// opportunities).
    #[arg(long, env = "SIM_CONTACTS", default_value_t = 1000)]
    pub contacts: usize,
    /// Users per location.
    #[arg(long, env = "SIM_USERS", default_value_t = 8)]
    pub users: usize,
    /// Fixed latency added to every GHL request, in milliseconds.
    #[arg(long, env = "SIM_LATENCY_MS", default_value_t = 0)]
    pub latency_ms: u64,
    /// Random extra latency, uniform in 0..=jitter, in milliseconds.
    #[arg(long, env = "SIM_JITTER_MS", default_value_t = 0)]
    pub jitter_ms: u64,
    /// Requests allowed per burst window, per app and location (GHL: 100).
    #[arg(long, env = "SIM_BURST_LIMIT", default_value_t = 100)]
    pub burst_limit: u32,
    /// Length of the burst window in milliseconds (GHL: 10000).
    #[arg(long, env = "SIM_BURST_WINDOW_MS", default_value_t = 10_000)]
    pub burst_window_ms: u64,
    /// Requests allowed per day, per app and location (GHL: 200000).
    #[arg(long, env = "SIM_DAILY_LIMIT", default_value_t = 200_000)]
    pub daily_limit: u32,
    /// Send `Retry-After` on 429 responses (GHL does not document one).
    #[arg(long, env = "SIM_RETRY_AFTER", default_value_t = false)]
    pub retry_after: bool,
    /// How long a created, changed or deleted record takes to show in the search endpoints, in
    /// milliseconds; `GET` by id sees it at once (GHL: a few seconds).
    #[arg(long, env = "SIM_INDEX_LAG_MS", default_value_t = 2_000)]
    pub index_lag_ms: u64,
    /// Lifetime of OAuth access tokens in seconds (GHL: 86399).
    #[arg(long, env = "SIM_TOKEN_TTL_SECS", default_value_t = 86_399)]
    pub token_ttl_secs: u64,
    /// URL that receives signed webhooks for changes made through the admin API.
    #[arg(long, env = "SIM_WEBHOOK_URL")]
    pub webhook_url: Option<String>,
    /// Signature headers on webhooks: both (as GHL's app events), ed25519 or legacy (RSA).
    #[arg(long, env = "SIM_WEBHOOK_SIGNATURES", value_enum, default_value_t = Signatures::Both)]
    pub webhook_signatures: Signatures,
    /// Fraction of webhook events delivered twice (same bytes, same `webhookId`).
    #[arg(long, env = "SIM_WEBHOOK_REDELIVER", default_value_t = 0.0)]
    pub webhook_redeliver: f64,
    /// Deliver webhooks in groups of this many, newest first (1: in order).
    #[arg(long, env = "SIM_WEBHOOK_REORDER", default_value_t = 1)]
    pub webhook_reorder: u32,
    /// Delay of each webhook after its change, in milliseconds.
    #[arg(long, env = "SIM_WEBHOOK_DELAY_MS", default_value_t = 0)]
    pub webhook_delay_ms: u64,
    /// Attempts per webhook when the receiver answers non-2xx or is unreachable (1: no retry).
    #[arg(long, env = "SIM_WEBHOOK_MAX_ATTEMPTS", default_value_t = 1)]
    pub webhook_max_attempts: u32,
    /// Wait before the first webhook retry, in milliseconds; doubles for each next one.
    #[arg(long, env = "SIM_WEBHOOK_RETRY_BASE_MS", default_value_t = 1000)]
    pub webhook_retry_base_ms: u64,
    /// Webhook deliveries in flight at once (1: one at a time, in order).
    #[arg(long, env = "SIM_WEBHOOK_CONCURRENCY", default_value_t = 1)]
    pub webhook_concurrency: u32,
    /// Fraction of requests answered 500.
    #[arg(long, env = "SIM_FAULT_500", default_value_t = 0.0)]
    pub fault_500: f64,
    /// Fraction of requests answered 502.
    #[arg(long, env = "SIM_FAULT_502", default_value_t = 0.0)]
    pub fault_502: f64,
    /// Fraction of requests answered 503.
    #[arg(long, env = "SIM_FAULT_503", default_value_t = 0.0)]
    pub fault_503: f64,
    /// Fraction of requests whose connection is dropped without a complete response.
    #[arg(long, env = "SIM_FAULT_RESET", default_value_t = 0.0)]
    pub fault_reset: f64,
    /// Fraction of requests that hang (see --fault-hang-ms).
    #[arg(long, env = "SIM_FAULT_HANG", default_value_t = 0.0)]
    pub fault_hang: f64,
    /// How long a hanging request hangs before it is answered 504, in milliseconds.
    #[arg(long, env = "SIM_FAULT_HANG_MS", default_value_t = 300_000)]
    pub fault_hang_ms: u64,
    /// Fraction of requests answered 200 with truncated JSON.
    #[arg(long, env = "SIM_FAULT_TRUNCATE", default_value_t = 0.0)]
    pub fault_truncate: f64,
    /// Fraction of requests answered 200 with a body that is not JSON.
    #[arg(long, env = "SIM_FAULT_MALFORMED", default_value_t = 0.0)]
    pub fault_malformed: f64,
    /// Fraction of requests answered 429 whatever the rate limit says (a 429 storm).
    #[arg(long, env = "SIM_FAULT_429", default_value_t = 0.0)]
    pub fault_429: f64,
    /// Limit the --fault-* flags to these endpoints (comma-separated names, e.g.
    /// `contacts.search,tasks.search`; see SIM.md). Empty: every endpoint.
    #[arg(long, env = "SIM_FAULT_ENDPOINTS", value_delimiter = ',')]
    pub fault_endpoints: Vec<String>,
}

impl Default for SimArgs {
    /// The command line's defaults (its clap attributes, the one source of them), except three
    /// that suit tests: port 0 (a free port), 100 contacts and no search index lag (a test that
    /// needs the lag sets it).
    fn default() -> Self {
        SimArgs {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            contacts: 100,
            index_lag_ms: 0,
            ..crate::config::defaults()
        }
    }
}

impl SimArgs {
    fn initial_settings(&self) -> anyhow::Result<Settings> {
        let spec = FaultSpec {
            error500: self.fault_500,
            error502: self.fault_502,
            error503: self.fault_503,
            reset: self.fault_reset,
            hang: self.fault_hang,
            truncate: self.fault_truncate,
            malformed: self.fault_malformed,
            rate_limit: self.fault_429,
        };
        let faults = if self.fault_endpoints.is_empty() {
            FaultConfig {
                default: spec,
                endpoints: Default::default(),
            }
        } else {
            FaultConfig {
                default: FaultSpec::default(),
                endpoints: self
                    .fault_endpoints
                    .iter()
                    .map(|e| (e.trim().to_string(), spec.clone()))
                    .collect(),
            }
        };
        let settings = Settings {
            latency_ms: self.latency_ms,
            jitter_ms: self.jitter_ms,
            burst_limit: self.burst_limit,
            burst_window_ms: self.burst_window_ms,
            daily_limit: self.daily_limit,
            retry_after: self.retry_after,
            hang_ms: self.fault_hang_ms,
            index_lag_ms: self.index_lag_ms,
            // Set at run time (`PATCH /_sim/settings`).
            other_client_per_window: 0,
            webhook_url: self.webhook_url.clone(),
            webhooks: WebhookKnobs {
                signatures: self.webhook_signatures,
                redeliver: self.webhook_redeliver,
                reorder: self.webhook_reorder,
                delay_ms: self.webhook_delay_ms,
                max_attempts: self.webhook_max_attempts,
                retry_base_ms: self.webhook_retry_base_ms,
                concurrency: self.webhook_concurrency,
                ..WebhookKnobs::default()
            },
            faults,
        };
        settings.validate().map_err(anyhow::Error::msg)?;
        Ok(settings)
    }
}

/// One simulated location and the credentials that reach it.
#[derive(Debug, Clone)]
pub struct SimLocation {
    pub id: String,
    pub name: String,
    pub company_id: String,
    /// Private integration token for this location (never expires).
    pub pit_token: String,
    /// A single-use OAuth authorization code for this location, for `/oauth/token`.
    pub auth_code: String,
}

/// A location: fixed meta data and records behind a lock. A std `RwLock` because no handler
/// holds it across an `.await`, and readers (the page handlers) vastly outnumber writers.
pub(crate) struct Location {
    pub meta: data::LocationMeta,
    pub records: RwLock<data::Records>,
}

/// State shared by every handler of one simulator.
pub(crate) struct Shared {
    pub base_url: String,
    pub company_id: String,
    pub client_id: String,
    pub client_secret: String,
    pub app_id: String,
    pub version_id: String,
    pub token_ttl: Duration,
    pub locations: Vec<Arc<Location>>,
    pub settings: RwLock<Settings>,
    pub auth: Mutex<auth::AuthStore>,
    pub limiter: Mutex<control::RateLimiter>,
    pub counters: Mutex<Counters>,
    /// GHL requests being answered now (entered the layer, not yet counted or dropped).
    pub in_flight: tokio::sync::watch::Sender<usize>,
    pub rng: Mutex<ChaCha8Rng>,
    pub signer: webhooks::Signer,
    pub webhooks: tokio::sync::mpsc::Sender<webhooks::Outgoing>,
    /// Webhook events queued and not yet done with (delivered, given up or skipped).
    pub webhooks_pending: tokio::sync::watch::Sender<usize>,
    pub webhook_stats: Mutex<WebhookStats>,
    /// Locations whose app was uninstalled (`POST /_sim/app/uninstall`) and not installed again.
    pub uninstalled: Mutex<std::collections::HashSet<String>>,
    pub shutdown: CancellationToken,
}

/// Poisoning only happens if a handler panicked mid-write; the simulator keeps serving with
/// whatever state the panic left, which is what a test inspecting the failure wants.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
pub(crate) fn read<T>(m: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(|e| e.into_inner())
}
pub(crate) fn write<T>(m: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    pub fn location(&self, id: &str) -> Option<&Arc<Location>> {
        self.locations.iter().find(|l| l.meta.id == id)
    }

    pub fn count(&self, endpoint: &str, status: &str) {
        *lock(&self.counters)
            .entry(endpoint.to_string())
            .or_default()
            .entry(status.to_string())
            .or_default() += 1;
    }
}

/// The simulator: [`Sim::spawn`] binds and serves in the background.
pub struct Sim;

impl Sim {
    /// Generates the data, binds `args.listen` (port 0 allowed) and serves until
    /// [`SimHandle::shutdown`] (or the handle is dropped).
    pub async fn spawn(args: SimArgs) -> anyhow::Result<SimHandle> {
        let settings = args.initial_settings()?;
        let listener = TcpListener::bind(args.listen).await?;
        let addr = listener.local_addr()?;
        let base_url = format!("http://{addr}");

        let mut rng = ChaCha8Rng::seed_from_u64(args.seed);
        let company_id = data::gen_id(&mut rng);
        let client_id = format!("{}-{}", data::gen_id(&mut rng), "sim");
        let client_secret = auth::random_token(&mut rng, "sim-secret-");
        let app_id = data::gen_id(&mut rng);
        // From its own stream, so the ids and tokens drawn after it stay what they were.
        let version_id = data::gen_id(&mut ChaCha8Rng::seed_from_u64(args.seed ^ 0x007E_251D));
        let signer = webhooks::Signer::from_seed(&mut rng);

        // Generation is CPU-bound: one blocking task per location, in parallel.
        let mut jobs = Vec::new();
        for i in 0..args.locations.max(1) {
            let (seed, cid, n, u) = (args.seed, company_id.clone(), args.contacts, args.users);
            jobs.push(tokio::task::spawn_blocking(move || {
                data::generate(seed, i, &cid, n, u)
            }));
        }
        let mut locations = Vec::new();
        for j in jobs {
            let (meta, records) = j.await?;
            locations.push(Arc::new(Location {
                meta,
                records: RwLock::new(records),
            }));
        }

        let token_ttl = Duration::from_secs(args.token_ttl_secs);
        let mut store = auth::AuthStore::default();
        let mut sim_locations = Vec::new();
        let owner = locations[0]
            .meta
            .users
            .first()
            .map(|u| u.id.clone())
            .unwrap_or_default();
        for loc in &locations {
            let pit = format!("pit-{}", uuid_from(&mut rng));
            store.tokens.insert(
                pit.clone(),
                auth::Token {
                    kind: TokenKind::Pit,
                    location_id: Some(loc.meta.id.clone()),
                    company_id: company_id.clone(),
                    bucket: format!("{pit}:{}", loc.meta.id),
                    expires_at: None,
                    user_id: owner.clone(),
                },
            );
            let code = store.mint_code(
                &mut rng,
                auth::Grant {
                    user_type: "Location".into(),
                    location_id: Some(loc.meta.id.clone()),
                    company_id: company_id.clone(),
                    user_id: owner.clone(),
                },
            );
            sim_locations.push(SimLocation {
                id: loc.meta.id.clone(),
                name: loc.meta.name.clone(),
                company_id: company_id.clone(),
                pit_token: pit,
                auth_code: code,
            });
        }
        let agency_grant = auth::Grant {
            user_type: "Company".into(),
            location_id: None,
            company_id: company_id.clone(),
            user_id: owner.clone(),
        };
        let agency_token = store.mint_access(&mut rng, &agency_grant, &client_id, token_ttl);
        let agency_refresh_token = store.mint_refresh(&mut rng, agency_grant);

        let shutdown = CancellationToken::new();
        let (tx, rx) = tokio::sync::mpsc::channel(webhooks::QUEUE);
        let shared = Arc::new(Shared {
            base_url: base_url.clone(),
            company_id: company_id.clone(),
            client_id: client_id.clone(),
            client_secret: client_secret.clone(),
            app_id: app_id.clone(),
            version_id,
            token_ttl,
            locations,
            settings: RwLock::new(settings),
            auth: Mutex::new(store),
            limiter: Mutex::new(control::RateLimiter::default()),
            counters: Mutex::new(Counters::new()),
            in_flight: tokio::sync::watch::Sender::new(0),
            rng: Mutex::new(ChaCha8Rng::seed_from_u64(args.seed ^ 0xFA17)),
            signer,
            webhooks: tx,
            webhooks_pending: tokio::sync::watch::Sender::new(0),
            webhook_stats: Mutex::new(WebhookStats::default()),
            uninstalled: Mutex::new(Default::default()),
            shutdown: shutdown.clone(),
        });
        let webhook_task = tokio::spawn(webhooks::deliver(shared.clone(), rx));
        let app = api::router(shared.clone()).merge(admin::router(shared.clone()));
        let stop = shutdown.clone();
        let task = tokio::spawn(async move {
            let serve = axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.cancelled().await });
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "simulator server failed");
            }
            webhook_task.abort();
        });
        tracing::info!(base_url = %base_url, "simulator listening");
        Ok(SimHandle {
            base_url,
            addr,
            company_id,
            client_id,
            client_secret,
            app_id,
            agency_token,
            agency_refresh_token,
            webhook_public_key_pem: shared.signer.public_pem(),
            webhook_legacy_public_key_pem: shared.signer.legacy_public_pem(),
            locations: sim_locations,
            shared,
            task: Some(task),
        })
    }
}

fn uuid_from(rng: &mut ChaCha8Rng) -> String {
    use rand::Rng;
    uuid::Builder::from_random_bytes(rng.random())
        .into_uuid()
        .to_string()
}

/// A running simulator: where it is, its credentials, and in-process access to its state.
pub struct SimHandle {
    /// `http://127.0.0.1:PORT`, to use instead of `https://services.leadconnectorhq.com`.
    pub base_url: String,
    pub addr: SocketAddr,
    pub company_id: String,
    /// OAuth app credentials for `/oauth/token`.
    pub client_id: String,
    pub client_secret: String,
    /// The app id `/oauth/installedLocations` expects.
    pub app_id: String,
    /// An agency (Company) access token, for `/oauth/locationToken` and installedLocations.
    pub agency_token: String,
    /// The refresh token paired with `agency_token`.
    pub agency_refresh_token: String,
    /// The Ed25519 public key of `X-GHL-Signature` (SPKI PEM).
    pub webhook_public_key_pem: String,
    /// The RSA public key of the legacy `X-WH-Signature` (SPKI PEM; a fixed test-only key).
    pub webhook_legacy_public_key_pem: String,
    pub locations: Vec<SimLocation>,
    shared: Arc<Shared>,
    task: Option<JoinHandle<()>>,
}

impl SimHandle {
    /// Base64 of the Ed25519 signature of `body` with the simulator's webhook key (the value of
    /// `X-GHL-Signature`), for benchmarks and tests that send events of their own.
    pub fn sign_webhook(&self, body: &[u8]) -> String {
        self.shared.signer.sign(body)
    }

    /// Request counters: endpoint name -> status ("200", "429", "reset", "hang") -> count.
    pub fn counters(&self) -> Counters {
        lock(&self.shared.counters).clone()
    }

    /// How many requests to `endpoint` were answered with `status` ("200", "429", ...).
    pub fn count(&self, endpoint: &str, status: &str) -> u64 {
        lock(&self.shared.counters)
            .get(endpoint)
            .and_then(|m| m.get(status))
            .copied()
            .unwrap_or(0)
    }

    /// All requests to `endpoint`, whatever their status.
    pub fn requests(&self, endpoint: &str) -> u64 {
        lock(&self.shared.counters)
            .get(endpoint)
            .map(|m| m.values().sum())
            .unwrap_or(0)
    }

    /// Requests to every GHL endpoint (admin calls are not counted).
    pub fn total_requests(&self) -> u64 {
        lock(&self.shared.counters)
            .iter()
            .filter(|(k, _)| k.as_str() != "webhook")
            .map(|(_, m)| m.values().sum::<u64>())
            .sum()
    }

    /// Waits until no GHL request is being answered: a request a client gave up on may still be
    /// sleeping its latency and be counted later, so tests that reset or read counters after
    /// stopping a client wait for this first.
    pub async fn wait_idle(&self) {
        let mut in_flight = self.shared.in_flight.subscribe();
        // The sender lives in `shared`, which `self` holds: the channel cannot close.
        let _ = in_flight.wait_for(|n| *n == 0).await;
    }

    pub fn reset_counters(&self) {
        lock(&self.shared.counters).clear();
    }

    /// Forgets every rate-limit bucket (a fresh window and day for everyone).
    pub fn reset_rate_limits(&self) {
        lock(&self.shared.limiter).reset();
    }

    /// Spends up to `requests` of the rate-limit window of `token`'s bucket, as another client
    /// of the same app and location would (like `POST /_sim/rate-limits/spend`); returns how
    /// many were counted.
    pub fn spend_budget(&self, token: &str, requests: u32) -> Result<u32, String> {
        let answer = admin::spend(&self.shared, token, requests)?;
        Ok(answer["spent"].as_u64().unwrap_or(0) as u32)
    }

    pub fn settings(&self) -> Settings {
        read(&self.shared.settings).clone()
    }

    /// Changes run-time settings; invalid fault fractions and webhook knobs are refused.
    pub fn update_settings(&self, f: impl FnOnce(&mut Settings)) -> Result<(), String> {
        let mut s = self.settings();
        f(&mut s);
        s.validate()?;
        *write(&self.shared.settings) = s;
        Ok(())
    }

    pub fn set_faults(&self, faults: FaultConfig) -> Result<(), String> {
        self.update_settings(|s| s.faults = faults)
    }

    pub fn set_latency(&self, latency_ms: u64, jitter_ms: u64) {
        let mut s = write(&self.shared.settings);
        s.latency_ms = latency_ms;
        s.jitter_ms = jitter_ms;
    }

    /// The ground truth of a location as JSON (the same as `GET /_sim/locations/{id}`).
    pub fn dump(&self, location_id: &str) -> Option<Value> {
        admin::dump(&self.shared, location_id).ok()
    }

    /// Creates a record (`kind`: contacts, tasks, conversations, opportunities) like
    /// `POST /_sim/locations/{id}/{kind}`; returns the record as GHL renders it.
    pub fn create(&self, location_id: &str, kind: &str, body: Value) -> Result<Value, String> {
        admin::create(&self.shared, location_id, kind, &body)
    }

    /// Updates a record, moving its `dateUpdated`, like `PATCH /_sim/locations/{id}/{kind}/{rid}`.
    pub fn update(
        &self,
        location_id: &str,
        kind: &str,
        id: &str,
        body: Value,
    ) -> Result<Value, String> {
        admin::update(&self.shared, location_id, kind, id, &body)
    }

    pub fn delete(&self, location_id: &str, kind: &str, id: &str) -> Result<Value, String> {
        admin::delete(&self.shared, location_id, kind, id)
    }

    /// A fresh single-use authorization code (`user_type` "Location" with a location id, or
    /// "Company").
    pub fn auth_code(&self, user_type: &str, location_id: Option<&str>) -> Result<String, String> {
        admin::auth_code(&self.shared, user_type, location_id)
    }

    /// Webhook delivery outcomes (like `GET /_sim/webhooks/stats`).
    pub fn webhook_stats(&self) -> WebhookStats {
        lock(&self.shared.webhook_stats).clone()
    }

    pub fn reset_webhook_stats(&self) {
        *lock(&self.shared.webhook_stats) = WebhookStats::default();
    }

    /// Waits until every webhook emitted so far is done with: delivered (with its redelivered
    /// copy and retries), given up, or skipped. Tests wait for this instead of sleeping.
    pub async fn webhooks_idle(&self) {
        let mut pending = self.shared.webhooks_pending.subscribe();
        // The sender lives in `shared`, which `self` holds: the channel cannot close.
        let _ = pending.wait_for(|n| *n == 0).await;
    }

    /// Installs the app on a location (`Some`) or on the agency (`None`) and sends `INSTALL`,
    /// like `POST /_sim/app/install`; returns the `webhookId` when an event was queued.
    pub fn install(&self, location_id: Option<&str>) -> Result<Option<String>, String> {
        admin::install(&self.shared, location_id, true)
    }

    /// Uninstalls the app from a location (`Some`) or the agency (`None`) and sends `UNINSTALL`,
    /// like `POST /_sim/app/uninstall`.
    pub fn uninstall(&self, location_id: Option<&str>) -> Result<Option<String>, String> {
        admin::install(&self.shared, location_id, false)
    }

    /// Makes a token expire now; returns whether it existed.
    pub fn expire_token(&self, token: &str) -> bool {
        lock(&self.shared.auth).expire(token)
    }

    /// Stops serving and waits for the server task.
    pub async fn shutdown(mut self) {
        self.shared.shutdown.cancel();
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        self.shared.shutdown.cancel();
    }
}

/// The `sim` command: starts the simulator, prints where it is and how to reach it, and serves
/// until `shutdown` completes.
pub async fn run(
    args: SimArgs,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let ttl = args.token_ttl_secs;
    let h = Sim::spawn(args).await?;
    println!("sim base url: {}", h.base_url);
    println!("sim admin api: {}/_sim/", h.base_url);
    println!("sim company id: {}", h.company_id);
    println!("sim oauth client id: {}", h.client_id);
    println!("sim oauth client secret: {}", h.client_secret);
    println!("sim oauth app id: {}", h.app_id);
    println!("sim agency token (expires in {ttl} s): {}", h.agency_token);
    println!("sim agency refresh token: {}", h.agency_refresh_token);
    for l in &h.locations {
        println!(
            "sim location: id={} name={:?} pit={} auth_code={}",
            l.id, l.name, l.pit_token, l.auth_code
        );
    }
    println!(
        "sim webhook public key (Ed25519): {}",
        h.webhook_public_key_pem.replace('\n', " ")
    );
    println!(
        "sim webhook legacy public key (RSA, test-only): {}",
        h.webhook_legacy_public_key_pem
            .trim_end()
            .replace('\n', " ")
    );
    shutdown.await;
    h.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The values `SimArgs::default()` had when they were written out by hand: the CLI's
    /// defaults, but port 0 and 100 contacts.
    #[test]
    fn defaults_are_the_command_line_ones_but_port_0_and_100_contacts() {
        let d = SimArgs::default();
        assert_eq!(d.listen, SocketAddr::from(([127, 0, 0, 1], 0)));
        assert_eq!(d.contacts, 100);
        assert_eq!((d.seed, d.locations, d.users), (42, 1, 8));
        assert_eq!((d.latency_ms, d.jitter_ms), (0, 0));
        assert_eq!(
            (d.burst_limit, d.burst_window_ms, d.daily_limit),
            (100, 10_000, 200_000)
        );
        assert!(!d.retry_after);
        assert_eq!(d.token_ttl_secs, 86_399);
        assert!(d.webhook_url.is_none());
        assert_eq!(d.webhook_signatures, Signatures::Both);
        assert_eq!(d.webhook_redeliver, 0.0);
        assert_eq!((d.webhook_reorder, d.webhook_delay_ms), (1, 0));
        assert_eq!((d.webhook_max_attempts, d.webhook_retry_base_ms), (1, 1000));
        assert_eq!(d.webhook_concurrency, 1);
        let fractions = [
            d.fault_500,
            d.fault_502,
            d.fault_503,
            d.fault_reset,
            d.fault_hang,
            d.fault_truncate,
            d.fault_malformed,
            d.fault_429,
        ];
        assert_eq!(fractions, [0.0; 8]);
        assert_eq!(d.fault_hang_ms, 300_000);
        assert!(d.fault_endpoints.is_empty());

        let cli: SimArgs = crate::config::defaults();
        assert_eq!(cli.listen, SocketAddr::from(([127, 0, 0, 1], 8090)));
        assert_eq!(cli.contacts, 1000);
    }
}
