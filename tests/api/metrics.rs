//! `/metrics` of a real gateway process after a sync and a few queries, read with a Prometheus
//! text-format parser: the counters moved by what the simulator (the ground truth of GHL calls)
//! and the test itself (the queries it sent) say they should.
//!
//! The gateway runs as its own process (`ghl-gateway serve`), because the metrics recorder is
//! process-wide: the other tests of this binary run beside this one and would move its
//! counters.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use ghl_gateway::app::credentials::StoreCredentials;
use ghl_gateway::secrets::{Cipher, SecretsConfig};
use ghl_gateway::sim::{SimArgs, SimHandle};
use ghl_gateway::upstream::Credential;
use prometheus_parse::{Scrape, Value};
use serde_json::{Value as Json, json};
use tokio::io::{AsyncBufReadExt as _, BufReader};

use crate::helpers::*;

/// A `ghl-gateway serve` process over `db`, its GHL the simulator; killed when dropped.
pub(crate) struct Gateway {
    pub(crate) base: String,
    /// Where `/metrics` is: the main listener, or `--metrics-listen`'s.
    pub(crate) metrics: String,
    pub(crate) client: reqwest::Client,
    /// What the process wrote to stderr (its logs) so far.
    pub(crate) logs: Arc<std::sync::Mutex<String>>,
    _child: tokio::process::Child,
}

/// Stores the simulator's first location's private integration token in `db`, encrypted as the
/// gateway will read it.
pub(crate) async fn connect_location(db: &TestDb, sim: &SimHandle) {
    let cipher = Cipher::from_config(&SecretsConfig {
        secret_key: Some(TEST_SECRET_KEY.into()),
    })
    .expect("the test key is a key");
    let credentials = StoreCredentials::new(db.store.clone(), cipher);
    upstream_client(Arc::new(credentials), sim, |_| {})
        .set_credential(
            &sim.locations[0].id,
            Credential::PrivateIntegration {
                token: sim.locations[0].pit_token.clone().into(),
            },
        )
        .await
        .expect("stores the credential");
}

/// Starts `ghl-gateway serve` on a free port over `db` and `sim`, the operator key
/// [`ADMIN_KEY`], `env` added to its environment; returns once it printed its banner.
pub(crate) async fn spawn_gateway(db: &TestDb, sim: &SimHandle, env: &[(&str, &str)]) -> Gateway {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_ghl-gateway"));
    command
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env_clear()
        .env("DATABASE_URL", &db.url)
        .env("GHL_BASE_URL", &sim.base_url)
        .env("GATEWAY_SECRET_KEY", TEST_SECRET_KEY)
        .env("GATEWAY_ADMIN_KEY", ADMIN_KEY)
        .env("GHL_BACKOFF_MS", "20")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command.spawn().expect("the binary starts");
    let logs = Arc::new(std::sync::Mutex::new(String::new()));
    let mut stderr = BufReader::new(child.stderr.take().expect("stderr is piped")).lines();
    let sink = logs.clone();
    tokio::spawn(async move {
        while let Ok(Some(line)) = stderr.next_line().await {
            let mut logs = sink.lock().unwrap();
            logs.push_str(&line);
            logs.push('\n');
        }
    });
    let mut lines = BufReader::new(child.stdout.take().expect("stdout is piped")).lines();
    let mut banner = HashMap::new();
    while let Some(line) = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
        .await
        .unwrap_or_else(|_| {
            panic!(
                "no banner within a minute; stderr:\n{}",
                logs.lock().unwrap()
            )
        })
        .expect("stdout reads")
    {
        if let Some((label, value)) = line.split_once(':') {
            banner.insert(label.trim().to_owned(), value.trim().to_owned());
        }
        if line.starts_with("auth:") {
            break;
        }
    }
    let base = banner["graphql"]
        .strip_suffix("/graphql")
        .expect("the banner names /graphql")
        .to_owned();
    let metrics = banner["metrics"].clone();
    // The rest of stdout is not read: keep the pipe drained so the process never blocks.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Gateway {
        base,
        metrics,
        client: reqwest::Client::new(),
        logs,
        _child: child,
    }
}

impl Gateway {
    /// POSTs a GraphQL request with the operator key; the answer must carry `x-request-id`.
    pub(crate) async fn graphql(&self, query: &str, variables: Json) -> Json {
        let response = self
            .client
            .post(format!("{}/graphql", self.base))
            .bearer_auth(ADMIN_KEY)
            .json(&json!({ "query": query, "variables": variables }))
            .send()
            .await
            .expect("the gateway answers");
        assert!(
            response.headers().contains_key("x-request-id"),
            "every answer has an id"
        );
        response.json().await.expect("a JSON answer")
    }

    pub(crate) async fn scrape(&self) -> Scrape {
        let response = self
            .client
            .get(&self.metrics)
            .send()
            .await
            .expect("/metrics answers");
        assert_eq!(response.status(), 200);
        let content_type = response.headers()["content-type"].to_str().unwrap();
        assert!(
            content_type.starts_with("text/plain; version=0.0.4"),
            "{content_type}"
        );
        let text = response.text().await.unwrap();
        Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("the Prometheus text format")
    }
}

/// The sum of the samples of `metric` whose labels include `labels` (a histogram's `_count`
/// and `_sum` are plain samples); 0 when there is none.
pub(crate) fn value(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == metric)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum()
}

/// Whether `metric` has a sample with `labels`.
fn has(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> bool {
    scrape
        .samples
        .iter()
        .any(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
}

const REFRESH: &str = r#"mutation MetricsRefresh($loc: ID!) {
  refreshLocation(locationId: $loc, mode: FULL) { id }
}"#;
const STATUS: &str = r#"query MetricsStatus($loc: ID!) {
  syncStatus(locationId: $loc) {
    lastJob { state stages { name fetched calls retries rateLimited } }
  }
}"#;
const CONTACTS: &str = r#"query MetricsContacts($loc: ID!) {
  contacts(locationId: $loc, first: 10) { totalCount nodes { id } }
}"#;

#[tokio::test]
async fn metrics_count_a_sync_and_queries_by_what_happened() {
    for db in databases().await {
        // Some 429s from GHL, so that retries and rate limits have something to count.
        let sim = spawn_sim_with(SimArgs {
            contacts: 150,
            locations: 1,
            fault_429: 0.15,
            ..SimArgs::default()
        })
        .await;
        let loc = sim.locations[0].id.clone();
        connect_location(&db, &sim).await;
        sim.reset_counters();
        let gateway = spawn_gateway(&db, &sim, &[]).await;
        assert!(
            gateway.metrics.ends_with("/metrics") && gateway.metrics.starts_with(&gateway.base)
        );

        // A FULL sync, followed to its end.
        let started = gateway.graphql(REFRESH, json!({ "loc": loc })).await;
        assert!(started["errors"].is_null(), "{started}");
        let mut polls = 0;
        let job = loop {
            polls += 1;
            let status = gateway.graphql(STATUS, json!({ "loc": loc })).await;
            let job = status["data"]["syncStatus"]["lastJob"].clone();
            if job["state"] == "SUCCEEDED" {
                break job;
            }
            assert_ne!(job["state"], "FAILED", "{}: {status}", db.name);
            assert!(polls < 600, "the sync ends within a minute");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        sim.wait_idle().await;
        let before = gateway.scrape().await;

        // Sync: one FULL job, succeeded; each stage ran once; rows written as fetched.
        let jobs = [("mode", "FULL"), ("outcome", "succeeded")];
        assert_eq!(
            value(&before, "ghl_gateway_sync_jobs_total", &jobs),
            1.0,
            "{}",
            db.name
        );
        assert_eq!(
            value(
                &before,
                "ghl_gateway_sync_jobs_total",
                &[("outcome", "failed")]
            ),
            0.0
        );
        let stages = job["stages"].as_array().unwrap();
        assert_eq!(stages.len(), 7, "{job}");
        let (mut retries, mut rate_limited) = (0.0, 0.0);
        for stage in stages {
            let name = stage["name"].as_str().unwrap();
            let resource = [("resource", name)];
            assert_eq!(
                value(&before, "ghl_gateway_sync_rows_written_total", &resource),
                stage["fetched"].as_f64().unwrap(),
                "{}: rows written of {name}",
                db.name
            );
            let ran = [("stage", name), ("outcome", "succeeded")];
            assert_eq!(
                value(
                    &before,
                    "ghl_gateway_sync_stage_duration_seconds_count",
                    &ran
                ),
                1.0,
                "{name}"
            );
            retries += stage["retries"].as_f64().unwrap();
            rate_limited += stage["rateLimited"].as_f64().unwrap();
        }
        assert!(
            value(
                &before,
                "ghl_gateway_sync_rows_written_total",
                &[("resource", "contacts")]
            ) >= 150.0
        );

        // GHL calls: the simulator's own count, by status, is what the gateway counted.
        let counted: HashMap<String, u64> = sim
            .counters()
            .values()
            .flat_map(|by_status| by_status.iter().map(|(s, n)| (s.clone(), *n)))
            .fold(HashMap::new(), |mut sum, (status, n)| {
                *sum.entry(status).or_default() += n;
                sum
            });
        assert!(counted.get("429").is_some_and(|n| *n > 0), "{counted:?}");
        for (status, n) in &counted {
            assert_eq!(
                value(
                    &before,
                    "ghl_gateway_ghl_requests_total",
                    &[("status", status)]
                ),
                *n as f64,
                "{}: GHL answers {status}",
                db.name
            );
        }
        let requests = value(&before, "ghl_gateway_ghl_requests_total", &[]);
        assert_eq!(requests, counted.values().sum::<u64>() as f64);
        assert_eq!(
            value(&before, "ghl_gateway_ghl_rate_limited_total", &[]),
            counted["429"] as f64
        );
        // Every 429 was tried again (no other fault here); the stages saw all but the location
        // details call's.
        let all_retries = value(&before, "ghl_gateway_ghl_retries_total", &[]);
        assert_eq!(all_retries, counted["429"] as f64, "{}", db.name);
        assert!(retries <= all_retries && rate_limited <= counted["429"] as f64);
        assert_eq!(
            value(&before, "ghl_gateway_ghl_limiter_wait_seconds_count", &[]),
            requests,
            "one limiter wait per request"
        );
        for window in ["burst", "daily"] {
            let budget = value(
                &before,
                "ghl_gateway_ghl_budget_remaining",
                &[("location_id", &loc), ("window", window)],
            );
            assert!(budget > 0.0, "{window}: {budget}");
        }
        assert!(
            value(
                &before,
                "ghl_gateway_ghl_budget_remaining",
                &[("location_id", &loc), ("window", "daily")]
            ) < 200_000.0,
            "the daily budget went down"
        );

        // HTTP: the test's own requests, by route, status and operation.
        let graphql = |operation: &str| {
            value(
                &before,
                "ghl_gateway_http_requests_total",
                &[
                    ("route", "/graphql"),
                    ("status", "200"),
                    ("operation", operation),
                ],
            )
        };
        assert_eq!(graphql("MetricsRefresh"), 1.0);
        assert_eq!(graphql("MetricsStatus"), polls as f64);
        assert!(has(
            &before,
            "ghl_gateway_db_pool_connections",
            &[("state", "idle")]
        ));
        assert!(
            value(&before, "ghl_gateway_db_pool_connections", &[]) >= 1.0,
            "the pool holds a connection"
        );

        // Three reads of one page (one miss, two hits), one anonymous query, one document that
        // does not parse, one health check.
        for _ in 0..3 {
            let page = gateway.graphql(CONTACTS, json!({ "loc": loc })).await;
            assert_eq!(page["data"]["contacts"]["totalCount"], 150, "{page}");
        }
        let anonymous = gateway.graphql("{ locations { id } }", json!({})).await;
        assert!(anonymous["errors"].is_null(), "{anonymous}");
        let broken = gateway.graphql("{ locations { id ", json!({})).await;
        assert!(broken["errors"].is_array(), "{broken}");
        let health = gateway
            .client
            .get(format!("{}/healthz", gateway.base))
            .send()
            .await
            .unwrap();
        assert_eq!(health.status(), 200);
        let after = gateway.scrape().await;

        let moved = |metric: &str, labels: &[(&str, &str)]| {
            value(&after, metric, labels) - value(&before, metric, labels)
        };
        let graphql = |operation: &str| {
            moved(
                "ghl_gateway_http_requests_total",
                &[
                    ("route", "/graphql"),
                    ("status", "200"),
                    ("operation", operation),
                ],
            )
        };
        assert_eq!(graphql("MetricsContacts"), 3.0, "{}", db.name);
        assert_eq!(graphql("(unnamed)"), 1.0);
        assert_eq!(graphql("(none)"), 1.0, "the document that did not parse");
        assert_eq!(graphql("MetricsStatus"), 0.0);
        assert_eq!(
            moved(
                "ghl_gateway_http_requests_total",
                &[
                    ("route", "/healthz"),
                    ("status", "200"),
                    ("operation", "(none)")
                ]
            ),
            1.0
        );
        // The first scrape counted itself once it was answered.
        assert_eq!(
            moved("ghl_gateway_http_requests_total", &[("route", "/metrics")]),
            1.0
        );
        assert_eq!(
            moved(
                "ghl_gateway_http_request_duration_seconds_count",
                &[("route", "/graphql")]
            ),
            5.0
        );
        assert_eq!(moved("ghl_gateway_response_cache_hits_total", &[]), 2.0);
        assert_eq!(moved("ghl_gateway_response_cache_misses_total", &[]), 3.0);
        assert!(value(&after, "ghl_gateway_response_cache_bytes", &[]) > 0.0);
        assert!(value(&after, "ghl_gateway_response_cache_entries", &[]) >= 2.0);
        // Nothing new reached GHL.
        assert_eq!(moved("ghl_gateway_ghl_requests_total", &[]), 0.0);
    }
}

/// With `METRICS_LISTEN`, `/metrics` moves to a listener of its own and leaves the main one.
#[tokio::test]
async fn metrics_listen_moves_metrics_off_the_main_listener() {
    let db = sqlite().await;
    let sim = spawn_sim(5).await;
    let gateway = spawn_gateway(&db, &sim, &[("METRICS_LISTEN", "127.0.0.1:0")]).await;
    assert!(
        !gateway.metrics.starts_with(&gateway.base),
        "{} on its own port",
        gateway.metrics
    );
    let main = gateway
        .client
        .get(format!("{}/metrics", gateway.base))
        .send()
        .await
        .unwrap();
    assert_eq!(main.status(), 404);
    let scrape = gateway.scrape().await;
    // The main listener's 404 was counted, and the scrape shows it.
    assert_eq!(
        value(
            &scrape,
            "ghl_gateway_http_requests_total",
            &[("status", "404"), ("operation", "(none)")]
        ),
        1.0
    );
    assert!(
        scrape.docs.contains_key("ghl_gateway_http_requests_total"),
        "HELP lines"
    );
}

/// Scrapes until `metric{labels}` reads `want` (a socket's end is counted by the server a moment
/// after the client's frame); fails after 10 s.
pub(crate) async fn settles(gateway: &Gateway, metric: &str, labels: &[(&str, &str)], want: f64) {
    for _ in 0..200 {
        if value(&gateway.scrape().await, metric, labels) == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{metric}{labels:?} never read {want}");
}

#[tokio::test]
async fn websocket_connections_and_subscriptions_are_counted_by_protocol() {
    use crate::subscription::{Socket, next, send};
    use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

    let db = sqlite().await;
    let sim = spawn_sim(5).await;
    connect_location(&db, &sim).await;
    let loc = sim.locations[0].id.clone();
    let gateway = spawn_gateway(&db, &sim, &[]).await;
    let url = gateway.base.replace("http://", "ws://") + "/graphql/ws";
    let subscription = json!({
        "query": "subscription($loc: ID!) { syncStatus(locationId: $loc) { locationId } }",
        "variables": { "loc": loc },
    });
    for (protocol, start, stop, event, other) in [
        (
            "graphql-transport-ws",
            "subscribe",
            "complete",
            "next",
            "graphql-ws",
        ),
        (
            "graphql-ws",
            "start",
            "stop",
            "data",
            "graphql-transport-ws",
        ),
    ] {
        let mut request = url.as_str().into_client_request().unwrap();
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", protocol.parse().unwrap());
        let (mut socket, _) = tokio_tungstenite::connect_async(request)
            .await
            .expect("the upgrade succeeds");
        // The next frame of `kind`, skipping others (keep-alives, the legacy ack's `ka`).
        async fn next_of(socket: &mut Socket, kind: &str) -> Json {
            loop {
                let frame = next(socket).await.expect("the socket is open");
                if frame["type"] == kind {
                    return frame;
                }
            }
        }
        send(
            &mut socket,
            json!({ "type": "connection_init", "payload": { "Authorization": format!("Bearer {ADMIN_KEY}") } }),
        )
        .await;
        next_of(&mut socket, "connection_ack").await;
        let scrape = gateway.scrape().await;
        let open = [("protocol", protocol)];
        assert_eq!(
            value(&scrape, "ghl_gateway_websocket_connections", &open),
            1.0,
            "{protocol}"
        );
        assert_eq!(
            value(&scrape, "ghl_gateway_websocket_subscriptions", &open),
            0.0
        );
        assert_eq!(
            value(
                &scrape,
                "ghl_gateway_websocket_connections",
                &[("protocol", other)]
            ),
            0.0
        );

        send(
            &mut socket,
            json!({ "type": start, "id": "1", "payload": subscription }),
        )
        .await;
        // A never-synced location has no job to show yet: a sync gives the stream its events.
        let started = gateway
            .graphql(
                "mutation($loc: ID!) { refreshLocation(locationId: $loc) { id } }",
                json!({ "loc": loc }),
            )
            .await;
        assert!(started["errors"].is_null(), "{started}");
        let first = next_of(&mut socket, event).await;
        assert_eq!(
            first["payload"]["data"]["syncStatus"]["locationId"],
            loc.as_str(),
            "{first}"
        );
        let scrape = gateway.scrape().await;
        assert_eq!(
            value(&scrape, "ghl_gateway_websocket_subscriptions", &open),
            1.0,
            "{protocol}"
        );

        send(&mut socket, json!({ "type": stop, "id": "1" })).await;
        settles(&gateway, "ghl_gateway_websocket_subscriptions", &open, 0.0).await;
        socket.close(None).await.unwrap();
        settles(&gateway, "ghl_gateway_websocket_connections", &open, 0.0).await;
    }
}
