//! Replicas on PostgreSQL (`bench --only replicas`, issue 14): three gateways on one database,
//! each with its own pool, sync engine and response cache, as three processes behind a load
//! balancer would be.
//!
//! - **Reads**: the README's dashboard page (50 contacts, warm) from an external generator
//!   (`wrk` when installed) against one replica, then the same concurrency spread over three,
//!   while signed webhook events keep changing the location through replica A (so every
//!   replica's cache keeps being invalidated by the others' notifications). The machine has two
//!   cores and the three replicas share this process: a correctness-under-load run, not a
//!   scaling claim; it reports errors and the hit ratio beside the rates.
//! - **Invalidation delay**: a contact cached on replica C, a signed `ContactUpdate` applied by
//!   replica A; the time from A's answer (its write committed) to C's first `x-cache: miss` for
//!   that contact, polled every millisecond.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::json;

use super::load::{self, Bodies, LoadResult, histogram, quantile_ms, record_until, time_until};
use crate::app::App;
use crate::domain::SyncMode;
use crate::sim::{Sim, SimArgs, SimHandle};
use crate::upstream::Credential;

/// The section's heading in BENCHMARKS.md.
pub const HEADING: &str = "## Replicas on PostgreSQL (issue 14)";
const ADMIN_KEY: &str = "bench-admin-key-0123456789abcdefghijklmnop";
const REPLICAS: usize = 3;
/// Concurrent connections of the read load, in all (spread over the replicas in the second run).
const CONCURRENCY: usize = 24;
/// Webhook events per second sent to replica A during the read runs.
const WRITES_PER_SEC: u64 = 20;
/// The delay target (issue 14).
const TARGET_P99_MS: f64 = 200.0;

/// What the section measured.
#[derive(Clone, Debug, Default)]
pub struct ReplicaResult {
    pub contacts: usize,
    pub generator: &'static str,
    /// The read load against one replica, and against each of three (summed in the report).
    pub one: Option<LoadResult>,
    pub three: Vec<LoadResult>,
    /// Webhook writes through A during each read run.
    pub writes_one: u64,
    pub writes_three: u64,
    /// Invalidation delays measured, and those never seen within [`MISS_WITHIN`].
    pub delays: u64,
    pub never: u64,
    pub delay_p50_ms: f64,
    pub delay_p99_ms: f64,
    pub delay_max_ms: f64,
    pub elapsed: Duration,
}

/// How long C may keep serving the cached answer before the write counts as never seen.
const MISS_WITHIN: Duration = Duration::from_secs(10);

/// Three replicas on the fresh PostgreSQL database `url`.
pub async fn run(url: &str, quick: bool) -> anyhow::Result<ReplicaResult> {
    let started = Instant::now();
    let contacts = if quick { 2_000 } else { 10_000 };
    let sim = Sim::spawn(SimArgs {
        contacts,
        latency_ms: 0,
        jitter_ms: 0,
        ..SimArgs::default()
    })
    .await
    .context("cannot start the simulator")?;
    let location_id = sim.locations[0].id.clone();
    let secret = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let mut gateways = Vec::new();
    let mut stops = Vec::new();
    let mut servers = Vec::new();
    let mut apps = Vec::new();
    for _ in 0..REPLICAS {
        let mut config = super::read::bench_serve_config(url, &sim.base_url, ADMIN_KEY);
        // One secret for all: they share the stored credentials.
        config.secrets.secret_key = Some(secret.clone().into());
        config.http.webhooks.webhook_public_key = sim.webhook_public_key_pem.clone();
        let app = App::build(config).await?;
        anyhow::ensure!(
            app.store().cluster().is_some(),
            "the gateway did not start in replica mode"
        );
        gateways.push(format!("http://{}", app.local_addr()));
        apps.push((app.sync().clone(), app.store().clone()));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        stops.push(stop);
        servers.push(tokio::spawn(app.run_until_stopped(async move {
            let _ = stopped.await;
        })));
    }
    let (sync, store) = apps[0].clone();
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
        sync.wait_idle(&location_id, Duration::from_secs(600)).await,
        "the initial sync did not finish"
    );
    let contacts_read: Vec<(String, i64)> = store
        .contacts_page(
            &location_id,
            &Default::default(),
            Default::default(),
            None,
            200,
        )
        .await?
        .into_iter()
        .map(|c| (c.id, c.date_added))
        .collect();
    anyhow::ensure!(
        !contacts_read.is_empty(),
        "the initial sync cached no contact"
    );

    let mut result = ReplicaResult {
        contacts,
        generator: if super::wrk::available() {
            "wrk"
        } else {
            "built-in"
        },
        ..Default::default()
    };
    let (warmup, length) = if quick {
        (Duration::from_millis(500), Duration::from_secs(2))
    } else {
        (Duration::from_secs(1), Duration::from_secs(5))
    };
    let body = json!({
        "query": super::read::DASHBOARD_QUERY,
        "variables": {"loc": location_id},
    })
    .to_string();
    let headers = vec![
        ("authorization", format!("Bearer {ADMIN_KEY}")),
        ("content-type", "application/json".to_owned()),
    ];
    let hook = format!("{}/webhooks/ghl", gateways[0]);

    // One replica under the load, writes through A.
    let budget = WRITES_PER_SEC * (warmup + length).as_secs().max(1) * 4;
    let signed = |base: u64| {
        (0..budget)
            .map(|n| {
                let contact = &contacts_read[n as usize % contacts_read.len()];
                contact_update(&sim, &location_id, contact, base + n)
            })
            .collect::<Vec<_>>()
    };
    let writer = spawn_writer(signed(1_000_000), hook.clone());
    result.one = Some(
        read_load(
            &gateways[0],
            &headers,
            &body,
            CONCURRENCY,
            warmup,
            length,
            result.generator,
        )
        .await?,
    );
    result.writes_one = writer.stop().await;

    // Three replicas under the same load in all, writes through A.
    let writer = spawn_writer(signed(2_000_000), hook.clone());
    let runs = gateways.iter().map(|gateway| {
        read_load(
            gateway,
            &headers,
            &body,
            CONCURRENCY / REPLICAS,
            warmup,
            length,
            result.generator,
        )
    });
    for run in futures::future::join_all(runs).await {
        result.three.push(run?);
    }
    result.writes_three = writer.stop().await;

    // Invalidation delay: written through A, missed on C.
    let writes = if quick { 50 } else { 200 };
    let client = reqwest::Client::new();
    let mut h = histogram();
    for i in 0..writes {
        let contact = &contacts_read[i % contacts_read.len()];
        let id = &contact.0;
        let query = json!({
            "query": "query Seen($id: ID!) { contact(id: $id) { id firstName } }",
            "variables": {"id": id},
        });
        let ask = || async {
            let answer = client
                .post(format!("{}/graphql", gateways[2]))
                .bearer_auth(ADMIN_KEY)
                .json(&query)
                .send()
                .await?;
            Ok::<_, anyhow::Error>(
                answer
                    .headers()
                    .get("x-cache")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned(),
            )
        };
        // Cached on C first (the notifications of earlier writes may still move its versions).
        let caching = Instant::now();
        while ask().await? != "hit" {
            anyhow::ensure!(
                caching.elapsed() < MISS_WITHIN,
                "C never served the contact from its cache"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        // Newer than every write of the read runs, so that each is applied (never `unchanged`).
        let (event, signature) = contact_update(&sim, &location_id, contact, 10_000_000 + i as u64);
        let answer = client
            .post(&hook)
            .header("content-type", "application/json")
            .header("x-ghl-signature", signature)
            .body(event)
            .send()
            .await?;
        anyhow::ensure!(
            answer.status().is_success(),
            "A refused a webhook: {}",
            answer.status()
        );
        let outcome: serde_json::Value = answer.json().await?;
        anyhow::ensure!(
            outcome["outcome"] == "applied",
            "A did not apply the update: {outcome}"
        );
        let took = time_until(Instant::now(), MISS_WITHIN, || async {
            Ok(ask().await? == "miss")
        })
        .await?;
        record_until(&mut h, &mut result.never, took);
        result.delays += 1;
    }
    result.delay_p50_ms = quantile_ms(&h, 0.50);
    result.delay_p99_ms = quantile_ms(&h, 0.99);
    result.delay_max_ms = quantile_ms(&h, 1.0);

    for stop in stops {
        let _ = stop.send(());
    }
    for server in servers {
        let _ = server.await;
    }
    sim.shutdown().await;
    result.elapsed = started.elapsed();
    Ok(result)
}

async fn read_load(
    gateway: &str,
    headers: &[(&'static str, String)],
    body: &str,
    concurrency: usize,
    warmup: Duration,
    length: Duration,
    generator: &str,
) -> anyhow::Result<LoadResult> {
    let url = format!("{gateway}/graphql");
    let bodies = Bodies::Same(body.to_owned());
    if generator == "wrk" {
        super::wrk::run(&url, headers, &bodies, concurrency, warmup, length).await
    } else {
        Ok(load::run(&url, headers, bodies, concurrency, warmup, length).await)
    }
}

/// A signed `ContactUpdate` of `(id, dateAdded ms)`, newer than any before it (`n` orders them).
fn contact_update(
    sim: &SimHandle,
    location_id: &str,
    (id, date_added): &(String, i64),
    n: u64,
) -> (Vec<u8>, String) {
    let now = chrono::Utc::now();
    let body = json!({
        "type": "ContactUpdate",
        "locationId": location_id,
        "id": id,
        "dateAdded": crate::domain::from_ms(*date_added).to_rfc3339(),
        "firstName": format!("Replica {n}"),
        "tags": ["bench"],
        "customFields": [],
        "dateUpdated": (now + chrono::Duration::milliseconds(n as i64)).to_rfc3339(),
        "timestamp": now.to_rfc3339(),
        "webhookId": uuid::Uuid::new_v4().to_string(),
        "appId": sim.app_id,
        "versionId": "bench",
    });
    let body = serde_json::to_vec(&body).expect("a JSON value serializes");
    let signature = sim.sign_webhook(&body);
    (body, signature)
}

/// Signed updates sent to replica A in the background.
struct Writer {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<u64>,
}

impl Writer {
    /// Stops it; the writes it made.
    async fn stop(self) -> u64 {
        let _ = self.stop.send(());
        self.task.await.unwrap_or(0)
    }
}

/// Sends the signed `events` in turn (at most [`WRITES_PER_SEC`]) until stopped or spent.
fn spawn_writer(events: Vec<(Vec<u8>, String)>, hook: String) -> Writer {
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let client = reqwest::Client::new();
        let mut ticker =
            tokio::time::interval(Duration::from_millis(1_000 / WRITES_PER_SEC.max(1)));
        let mut applied = 0u64;
        for (event, signature) in events {
            tokio::select! {
                _ = &mut stopped => return applied,
                _ = ticker.tick() => {}
            }
            let sent = client
                .post(&hook)
                .header("content-type", "application/json")
                .header("x-ghl-signature", signature)
                .body(event)
                .send()
                .await;
            if sent.is_ok_and(|r| r.status().is_success()) {
                applied += 1;
            }
        }
        applied
    });
    Writer { stop, task }
}

/// The section in Markdown, headed [`HEADING`].
pub fn markdown(r: &ReplicaResult, load: &str) -> String {
    let mut out = format!(
        "{HEADING}\n\nThree gateways on one PostgreSQL database (each its own pool, sync engine, \
         response cache and listener; all three in the bench process, on the machine's 2 cores), \
         one location of {} contacts filled by a FULL sync through replica A. Reads: the README's \
         dashboard page (50 contacts, warm) from `{}` with {CONCURRENCY} connections in all, \
         while {WRITES_PER_SEC} signed `ContactUpdate` webhooks a second change the location \
         through replica A (each one invalidates every replica's cached page through the \
         notifications). Load average at the start of the bench: {load}. This is a \
         correctness-under-load run, not a scaling claim: three replicas on two cores share \
         the same CPU.\n\n",
        r.contacts, r.generator
    );
    out.push_str(
        "| replicas | connections | req/s | p50 ms | p99 ms | errors | webhook writes during the run |\n\
         | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    if let Some(one) = &r.one {
        out.push_str(&format!(
            "| 1 | {} | {:.0} | {:.2} | {:.2} | {} | {} |\n",
            one.concurrency,
            one.rps(),
            one.p50_ms,
            one.p99_ms,
            one.errors + one.unfinished,
            r.writes_one
        ));
    }
    if !r.three.is_empty() {
        let rps: f64 = r.three.iter().map(LoadResult::rps).sum();
        let errors: u64 = r.three.iter().map(|l| l.errors + l.unfinished).sum();
        let connections: usize = r.three.iter().map(|l| l.concurrency).sum();
        let p50 = r.three.iter().map(|l| l.p50_ms).fold(0.0, f64::max);
        let p99 = r.three.iter().map(|l| l.p99_ms).fold(0.0, f64::max);
        out.push_str(&format!(
            "| 3 | {connections} | {rps:.0} | {p50:.2} | {p99:.2} | {errors} | {} |\n",
            r.writes_three
        ));
    }
    out.push_str(&format!(
        "\nInvalidation delay, from replica A's answer to a webhook (its write committed) to \
         replica C's first `x-cache: miss` for the contact it had cached (polled every \
         millisecond): {} writes, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; {} never missed \
         within {} s.\n\n",
        r.delays,
        r.delay_p50_ms,
        r.delay_p99_ms,
        r.delay_max_ms,
        r.never,
        MISS_WITHIN.as_secs()
    ));
    let status = |met: bool| if met { "met" } else { "**missed**" };
    let met = r.never == 0 && r.delays > 0 && r.delay_p99_ms <= TARGET_P99_MS;
    out.push_str(&format!(
        "| target | measured | status |\n| --- | --- | --- |\n\
         | a write on A misses on C, p99 <= {TARGET_P99_MS:.0} ms | p99 {:.1} ms ({} of {} never) | {} |\n\
         | no read fails while three replicas share the load | {} errors | {} |\n",
        r.delay_p99_ms,
        r.never,
        r.delays,
        status(met),
        r.three
            .iter()
            .chain(r.one.iter())
            .map(|l| l.errors + l.unfinished)
            .sum::<u64>(),
        status(
            r.three
                .iter()
                .chain(r.one.iter())
                .all(|l| l.errors + l.unfinished == 0)
        ),
    ));
    out.push_str(&format!(
        "\nRun in {:.0} s (`bench/run --only replicas`).\n",
        r.elapsed.as_secs_f64()
    ));
    out
}

/// Puts `section` (headed [`HEADING`]) into the Markdown file at `path`, replacing the one
/// there or appending it.
pub fn write_section(path: &std::path::Path, section: &str) -> anyhow::Result<()> {
    super::report::write_section(path, HEADING, section)
}
