//! The webhook path (`bench --only webhooks`): how many signed GHL events per second the gateway
//! ingests (Ed25519 signature verified over the raw body, `webhookId` recorded, the write applied
//! in one transaction, the data version bumped, the change published), and how long a change made
//! in the simulator takes to be visible through GraphQL (admin write -> the simulator's signed
//! webhook -> `POST /webhooks/ghl` -> the store -> a GraphQL read that sees it).
//!
//! Ingestion is measured twice in one run, on the same gateway: one transaction per event (group
//! commit off), then with group commit (the default: deliveries waiting for the writer commit
//! together), with the SQL statements per event of each.
//!
//! The gateway, the simulator and the generator share this process (and its 2 cores): the figures
//! are a floor, not the gateway's ceiling.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::json;

use super::load::{histogram, quantile_ms, rate, record_until, time_until};
use crate::app::App;
use crate::domain::SyncMode;
use crate::sim::{Sim, SimArgs, SimHandle};
use crate::upstream::Credential;

const ADMIN_KEY: &str = "bench-admin-key-0123456789abcdefghijklmnop";
/// Contacts of the simulated location (the rows the events update).
const CONTACTS: usize = 1_000;
/// Concurrent deliveries while measuring ingestion (GHL delivers in parallel).
pub const INGEST_CONCURRENCY: usize = 32;

/// What the webhook section measured on one database.
#[derive(Clone, Debug, Default)]
pub struct WebhookResult {
    pub backend: String,
    /// Events sent in the measured run (after a warm-up of their own).
    pub events: u64,
    pub concurrency: usize,
    pub elapsed: Duration,
    /// Events answered 200 `applied` (each one a real write: every event is newer than the row).
    pub applied: u64,
    /// Events answered anything else (the run is void unless 0).
    pub refused: u64,
    /// Latency of one delivery (`POST /webhooks/ghl` until its answer), ms.
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// SQL statements the store ran per event sent (transaction control included).
    pub statements_per_event: f64,
    /// The same measure with one transaction per event (group commit off), in the same run just
    /// before (`None` in a result that is itself that measure).
    pub alone: Option<Box<WebhookResult>>,
    /// Admin writes measured end to end, and those not visible within [`VISIBLE_WITHIN`].
    pub writes: u64,
    pub invisible: u64,
    /// From the simulator's admin write to the contact read through GraphQL, ms.
    pub visible_p50_ms: f64,
    pub visible_p99_ms: f64,
    pub visible_max_ms: f64,
}

impl WebhookResult {
    /// Events ingested per second.
    pub fn events_per_sec(&self) -> f64 {
        rate(self.applied, self.elapsed)
    }
}

/// How long an admin write may take to show before it counts as invisible.
pub const VISIBLE_WITHIN: Duration = Duration::from_secs(10);

/// The section on one database (`url`, created fresh by the caller).
pub async fn backend(backend: &str, url: &str, quick: bool) -> anyhow::Result<WebhookResult> {
    let sim = Sim::spawn(SimArgs {
        contacts: CONTACTS,
        latency_ms: 0,
        jitter_ms: 0,
        ..SimArgs::default()
    })
    .await
    .context("cannot start the simulator")?;
    let location_id = sim.locations[0].id.clone();
    let mut config = super::read::bench_serve_config(url, &sim.base_url, ADMIN_KEY);
    // The simulator's keys: it signs its own webhooks with them, and this bench signs its
    // events with the same Ed25519 key (a receiver cannot tell them from GHL's).
    config.http.webhooks.webhook_public_key = sim.webhook_public_key_pem.clone();
    config.http.webhooks.webhook_legacy_public_key = sim.webhook_legacy_public_key_pem.clone();
    let app = App::build(config).await?;
    let gateway = format!("http://{}", app.local_addr());
    let sync = app.sync().clone();
    let store = app.store().clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async move {
        let _ = stopped.await;
    }));
    sync.client()
        .set_credential(
            &location_id,
            Credential::PrivateIntegration {
                token: sim.locations[0].pit_token.clone().into(),
            },
        )
        .await?;
    sync.refresh(&location_id, SyncMode::Full).await?;
    anyhow::ensure!(
        sync.wait_idle(&location_id, Duration::from_secs(300)).await,
        "the initial sync did not finish"
    );
    let contacts = store
        .contacts_page(
            &location_id,
            &Default::default(),
            Default::default(),
            None,
            CONTACTS as u64,
        )
        .await?;
    anyhow::ensure!(!contacts.is_empty(), "the initial sync cached no contact");

    let (warmup, measured) = if quick { (500, 4_000) } else { (2_000, 20_000) };
    let url = format!("{gateway}/webhooks/ghl");
    let events = signed_events(&sim, &location_id, &contacts, warmup + 2 * measured);
    let (warm, events) = events.split_at(warmup);
    let (alone, grouped) = events.split_at(measured);
    ingest(&url, warm.to_vec(), INGEST_CONCURRENCY).await?;
    let measure = |events: &[(Vec<u8>, String)], group_commit: bool| {
        store.set_webhook_group_commit(group_commit);
        let (url, events, store) = (url.clone(), events.to_vec(), store.clone());
        async move {
            let before = store.statements();
            let mut result = ingest(&url, events, INGEST_CONCURRENCY).await?;
            result.statements_per_event =
                (store.statements() - before) as f64 / result.events.max(1) as f64;
            result.backend = backend.to_owned();
            anyhow::Ok(result)
        }
    };
    let alone = measure(alone, false).await?;
    eprintln!(
        "bench: {backend} webhooks, one transaction per event: {:.0} events/s (p99 {:.2} ms, {:.1} statements per event, {} refused)",
        alone.events_per_sec(),
        alone.p99_ms,
        alone.statements_per_event,
        alone.refused
    );
    let mut result = measure(grouped, true).await?;
    result.alone = Some(Box::new(alone));

    let writes = if quick { 50 } else { 200 };
    visible(&sim, &gateway, &location_id, writes, &mut result).await?;

    let _ = stop.send(());
    let _ = server.await;
    sim.shutdown().await;
    Ok(result)
}

/// `n` signed `ContactUpdate` events over `contacts` in turn, each newer than the last (so each
/// is a write, never `unchanged`): bodies and `X-GHL-Signature` values, signed before the clock
/// starts.
fn signed_events(
    sim: &SimHandle,
    location_id: &str,
    contacts: &[crate::store::entities::contact::Model],
    n: usize,
) -> Vec<(Vec<u8>, String)> {
    let start = chrono::Utc::now();
    (0..n)
        .map(|i| {
            let c = &contacts[i % contacts.len()];
            let updated = start + chrono::Duration::milliseconds(i as i64 + 1);
            let body = json!({
                "type": "ContactUpdate",
                "locationId": location_id,
                "id": c.id,
                "firstName": format!("Bench {i}"),
                "lastName": c.last_name,
                "email": c.email,
                "tags": ["bench"],
                "customFields": [],
                "dateAdded": crate::domain::from_ms(c.date_added).to_rfc3339(),
                "dateUpdated": updated.to_rfc3339(),
                "timestamp": chrono::Utc::now().to_rfc3339(),
                "webhookId": uuid::Uuid::new_v4().to_string(),
                "appId": sim.app_id,
                "versionId": "bench",
            });
            let body = serde_json::to_vec(&body).expect("a JSON value serializes");
            let signature = sim.sign_webhook(&body);
            (body, signature)
        })
        .collect()
}

/// Delivers `events` from `concurrency` workers, each with its own keep-alive connection, and
/// counts the answers.
async fn ingest(
    url: &str,
    events: Vec<(Vec<u8>, String)>,
    concurrency: usize,
) -> anyhow::Result<WebhookResult> {
    let events = Arc::new(events);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let client = reqwest::Client::builder()
            .http1_only()
            .pool_max_idle_per_host(1)
            .build()?;
        let (events, next, url) = (events.clone(), next.clone(), url.to_owned());
        workers.push(tokio::spawn(async move {
            let mut h = histogram();
            let (mut applied, mut refused) = (0u64, 0u64);
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((body, signature)) = events.get(i) else {
                    break;
                };
                let sent = Instant::now();
                let answer = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .header("x-ghl-signature", signature)
                    .body(body.clone())
                    .send()
                    .await;
                let outcome = match answer {
                    Ok(r) if r.status().is_success() => r
                        .json::<serde_json::Value>()
                        .await
                        .ok()
                        .and_then(|v| v["outcome"].as_str().map(str::to_owned)),
                    _ => None,
                };
                let _ = h.record(sent.elapsed().as_micros().max(1) as u64);
                if outcome.as_deref() == Some("applied") {
                    applied += 1;
                } else {
                    refused += 1;
                }
            }
            (h, applied, refused)
        }));
    }
    let mut h = histogram();
    let mut result = WebhookResult {
        concurrency,
        events: events.len() as u64,
        ..Default::default()
    };
    for worker in workers {
        let (wh, applied, refused) = worker.await?;
        h.add(wh).context("histograms of one shape add")?;
        result.applied += applied;
        result.refused += refused;
    }
    result.elapsed = started.elapsed();
    result.p50_ms = quantile_ms(&h, 0.50);
    result.p99_ms = quantile_ms(&h, 0.99);
    Ok(result)
}

/// Points the simulator's webhooks at the gateway, makes `writes` admin writes one after another
/// and measures each until a GraphQL read sees it (polled every millisecond).
async fn visible(
    sim: &SimHandle,
    gateway: &str,
    location_id: &str,
    writes: u64,
    result: &mut WebhookResult,
) -> anyhow::Result<()> {
    let hook = format!("{gateway}/webhooks/ghl");
    sim.update_settings(|s| s.webhook_url = Some(hook.clone()))
        .map_err(anyhow::Error::msg)?;
    let client = reqwest::Client::new();
    let mut h = histogram();
    for i in 0..writes {
        let started = Instant::now();
        let created: serde_json::Value = client
            .post(format!(
                "{}/_sim/locations/{location_id}/contacts",
                sim.base_url
            ))
            .json(&json!({"firstName": "Visible", "lastName": format!("{i}")}))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let id = created["id"]
            .as_str()
            .context("the simulator's create answers the record with its id")?;
        let query = json!({
            "query": "query Seen($id: ID!) { contact(id: $id) { id } }",
            "variables": {"id": id},
        });
        let graphql = format!("{gateway}/graphql");
        let (client, query) = (&client, &query);
        let took = time_until(started, VISIBLE_WITHIN, || {
            let graphql = graphql.clone();
            async move {
                let answer: serde_json::Value = client
                    .post(graphql)
                    .bearer_auth(ADMIN_KEY)
                    .json(query)
                    .send()
                    .await?
                    .json()
                    .await?;
                Ok(answer["data"]["contact"]["id"].as_str() == Some(id))
            }
        })
        .await?;
        record_until(&mut h, &mut result.invisible, took);
        result.writes += 1;
    }
    result.visible_p50_ms = quantile_ms(&h, 0.50);
    result.visible_p99_ms = quantile_ms(&h, 0.99);
    result.visible_max_ms = quantile_ms(&h, 1.0);
    Ok(())
}
