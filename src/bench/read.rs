//! The read path: the gateway over HTTP keep-alive, against the seed's N+1 design in the same run,
//! in three designs of its own: **warm** (the same dashboard request, answered from the response
//! cache), **cold** (every request unique, so no two share a cache entry; cache on) and **off**
//! (a second gateway on the same database with `RESPONSE_CACHE_MB=0`). Requests carry a client API
//! key (the key lookup every client pays), with the per-key rate limit off.
//!
//! The location is filled by a real FULL sync of 10k contacts from the simulator (no latency, a
//! burst limit no sync reaches), so the cache holds the simulator's realistic data. The N+1
//! baseline is a small axum endpoint over the same store that, for each contact of the page,
//! runs separate queries for its user, custom fields, tasks (and their users), conversations and
//! opportunities (and their pipelines and stages), and renders the same JSON.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::load::{self, Bodies, LoadResult};
use crate::app::{App, ServeConfig};
use crate::auth::AuthConfig;
use crate::cache::{CacheStats, ResponseCache};
use crate::http::HttpConfig;
use crate::store::{ContactFilter, ContactOrder, DatabaseConfig, Store, StoreError};
use crate::sync::{SyncEngine, SyncMode};
use crate::upstream::{Credential, UpstreamConfig};

/// The dashboard query of the README, word for word (a test keeps them equal); the bench
/// replaces its `first: 50` with the page size it measures.
pub const DASHBOARD_QUERY: &str = r#"query Dashboard($loc: ID!, $after: String) {
  contacts(locationId: $loc, first: 50, after: $after,
           orderBy: { field: DATE_UPDATED, direction: DESC }) {
    totalCount
    freshness { syncedAt ageSeconds stale syncing }
    pageInfo { hasNextPage endCursor }
    nodes {
      id name email phone tags dateAdded
      assignedTo { name email }
      customFields { name fieldKey value }
      tasks { title dueDate completed assignedTo { name } }
      conversations { type lastMessageBody lastMessageDate unreadCount }
      opportunities { name status monetaryValue pipeline { name } stage { name position } }
    }
  }
}"#;

const ADMIN_KEY: &str = "bench-admin-key-0123456789abcdefghijklmnop";

/// The read designs, in report order.
pub const DESIGNS: [&str; 4] = ["warm", "cold", "off", "n+1"];

/// A gateway over one database, with the N+1 baseline beside it.
pub struct Setup {
    pub backend: String,
    pub location_id: String,
    pub store: Store,
    pub sync: SyncEngine,
    /// The response cache of the gateway at `graphql_url` (warm and cold runs).
    pub cache: ResponseCache,
    pub graphql_url: String,
    /// A second gateway on the same database with the response cache off, and its store.
    pub graphql_off_url: String,
    pub off_store: Store,
    pub baseline_url: String,
    /// A client API key of the location.
    pub key: String,
    pub fill_secs: f64,
    pub contacts: u64,
    /// Whether the load comes from `wrk` (another process) or the built-in generator.
    pub external: bool,
}

/// One load point of one design.
#[derive(Clone, Debug)]
pub struct Point {
    pub design: &'static str,
    pub first: usize,
    pub load: LoadResult,
    pub statements: u64,
    pub bytes: usize,
    /// Response-cache hits over lookups during the run (warm and cold).
    pub hit_ratio: Option<f64>,
    /// The bench process's resident memory after the run (server and cache), KiB.
    pub rss_kib: u64,
    /// Bytes the response cache held right after the run.
    pub cache_bytes: u64,
}

/// The read-path results of one backend.
#[derive(Clone, Debug)]
pub struct BackendResult {
    pub backend: String,
    pub contacts: u64,
    pub fill_secs: f64,
    pub points: Vec<Point>,
    pub idle: LoadResult,
    pub during_sync: LoadResult,
    pub syncs_during: u64,
    /// Response-cache hit ratio of the reads during the FULL syncs.
    pub during_sync_hit_ratio: f64,
    pub external: bool,
    /// The response cache's bound and the most it held right after any run, bytes.
    pub cache_bound_bytes: u64,
    pub cache_bytes: u64,
    /// Warm answers by content coding (issue 21): identity, gzip, br.
    pub codings: Vec<CodingPoint>,
}

/// The warm dashboard answer in one content coding: bytes on the wire at `first: 50` and
/// `first: 500`, and a load run at `first: 50`.
#[derive(Clone, Debug)]
pub struct CodingPoint {
    pub coding: &'static str,
    pub bytes_50: usize,
    pub bytes_500: usize,
    pub load: LoadResult,
}

/// The codings the bench asks for, with their `Accept-Encoding`.
pub const CODINGS: [(&str, Option<&str>); 3] = [
    ("identity", None),
    ("gzip", Some("gzip")),
    ("br", Some("br")),
];

pub struct Durations {
    pub warmup: Duration,
    pub run: Duration,
}

/// The resident memory of this process now, KiB (`VmRSS`).
pub fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The gateway the benchmarks measure over `database_url`, syncing from the simulator at
/// `sim_url`: port 0, `admin_key` as the operator key with no per-key rate limit, GHL's burst
/// limit lifted (the simulator has its own), and reads from the cache only, so that a read never
/// starts a sync behind the benchmark's back. The default limits otherwise (`first: 500` fits
/// the default complexity budget).
pub fn bench_serve_config(database_url: &str, sim_url: &str, admin_key: &str) -> ServeConfig {
    let secret = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let mut upstream = UpstreamConfig::new(sim_url);
    upstream.burst_limit = 1_000_000;
    let graphql = crate::graphql::Settings {
        auto_refresh: false,
        ..Default::default()
    };
    ServeConfig {
        http: HttpConfig {
            listen: "127.0.0.1:0".into(),
            auth: AuthConfig {
                admin_key: Some(admin_key.into()),
                rate_limit_per_minute: 0,
                ..AuthConfig::default()
            },
            ..HttpConfig::default()
        },
        database: DatabaseConfig::new(database_url),
        graphql,
        upstream,
        sync: Default::default(),
        secrets: crate::secrets::SecretsConfig {
            secret_key: Some(secret.into()),
        },
        cache: Default::default(),
    }
}

/// Builds the gateway on `database_url` and fills its location with a FULL sync from `sim_url`.
pub async fn setup(
    backend: &str,
    database_url: &str,
    sim_url: &str,
    location_id: &str,
    pit_token: &str,
) -> anyhow::Result<Setup> {
    let config = bench_serve_config(database_url, sim_url, ADMIN_KEY);
    let mut off = config.clone();
    off.cache.response_cache_mb = 0;
    let app = App::build(config).await?;
    let cache = app
        .cache()
        .cloned()
        .context("the response cache is on by default")?;
    let store = app.store().clone();
    let sync = app.sync().clone();
    sync.client()
        .set_credential(
            location_id,
            Credential::PrivateIntegration {
                token: pit_token.into(),
            },
        )
        .await?;
    let started = Instant::now();
    sync.refresh(location_id, SyncMode::Full).await?;
    anyhow::ensure!(
        sync.wait_idle(location_id, Duration::from_secs(900)).await,
        "the initial sync did not finish"
    );
    let fill_secs = started.elapsed().as_secs_f64();
    let job = store.last_job(location_id).await?.context("no job")?;
    anyhow::ensure!(
        job.state == crate::domain::JobState::Succeeded,
        "the initial sync failed: {:?}",
        job.error
    );
    let contacts = store
        .count_contacts(location_id, &ContactFilter::default())
        .await?;
    let graphql_url = format!("http://127.0.0.1:{}/graphql", app.port());
    tokio::spawn(app.run_until_stopped(std::future::pending()));
    let off = App::build(off).await?;
    let off_store = off.store().clone();
    let graphql_off_url = format!("http://127.0.0.1:{}/graphql", off.port());
    tokio::spawn(off.run_until_stopped(std::future::pending()));
    let key = crate::auth::generate_key(
        Some("bench".into()),
        &[location_id.to_owned()],
        chrono::Utc::now().timestamp_millis(),
    );
    store.insert_api_key(key.row).await?;

    let baseline = axum::Router::new()
        .route("/n1", axum::routing::post(n_plus_one))
        .with_state(store.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let baseline_url = format!("http://{}/n1", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, baseline).await });
    Ok(Setup {
        backend: backend.to_owned(),
        location_id: location_id.to_owned(),
        store,
        sync,
        cache,
        graphql_url,
        graphql_off_url,
        off_store,
        baseline_url,
        key: key.key,
        fill_secs,
        contacts,
        external: super::wrk::available(),
    })
}

impl Setup {
    /// One request of `design` for a page of `first` after `after`; with `nonce`, the variables
    /// carry an unused entry that makes the request unique (its cache key is its own).
    fn body(&self, design: &str, first: usize, after: Option<&str>, nonce: bool) -> String {
        if design == "n+1" {
            return json!({ "loc": self.location_id, "first": first }).to_string();
        }
        let mut variables = json!({ "loc": self.location_id, "after": after });
        if nonce {
            variables["nonce"] = json!(super::load::NONCE);
        }
        let query = DASHBOARD_QUERY.replace("first: 50", &format!("first: {first}"));
        json!({ "query": query, "variables": variables }).to_string()
    }

    /// What `design` sends at `first`: the same request (warm, off, N+1), or for cold, every
    /// request unique, walking the location's pages in turn.
    async fn bodies(&self, design: &str, first: usize) -> anyhow::Result<Bodies> {
        if design != "cold" {
            return Ok(Bodies::Same(self.body(design, first, None, false)));
        }
        let mut cursors = vec![None];
        // The dashboard's order, so that its cursors fit the dashboard query.
        let pages = "query Pages($loc: ID!, $first: Int, $after: String) { contacts(locationId: $loc, first: $first, after: $after, orderBy: { field: DATE_UPDATED, direction: DESC }) { pageInfo { hasNextPage endCursor } } }";
        let client = reqwest::Client::new();
        while cursors.len() < 100 {
            let after = cursors.last().cloned().flatten();
            let mut request = client.post(&self.graphql_url).body(
                json!({ "query": pages, "variables": { "loc": self.location_id, "first": first, "after": after } })
                    .to_string(),
            );
            for (k, v) in self.headers() {
                request = request.header(k, v);
            }
            let page: Value = request.send().await?.json().await?;
            let info = &page["data"]["contacts"]["pageInfo"];
            match info["endCursor"].as_str() {
                Some(cursor) if info["hasNextPage"] == true => {
                    cursors.push(Some(cursor.to_owned()))
                }
                _ => break,
            }
        }
        Ok(Bodies::Unique(
            cursors
                .iter()
                .map(|after| self.body(design, first, after.as_deref(), true))
                .collect(),
        ))
    }

    fn url(&self, design: &str) -> &str {
        match design {
            "n+1" => &self.baseline_url,
            "off" => &self.graphql_off_url,
            _ => &self.graphql_url,
        }
    }

    fn headers(&self) -> Vec<(&'static str, String)> {
        vec![
            ("content-type", "application/json".into()),
            ("accept", "application/json".into()),
            ("authorization", format!("Bearer {}", self.key)),
        ]
    }

    /// A load run of `bodies` against `url`: `wrk` when installed, else the built-in generator.
    async fn load(
        &self,
        url: &str,
        bodies: Bodies,
        concurrency: usize,
        d: &Durations,
    ) -> anyhow::Result<LoadResult> {
        self.load_with(&self.headers(), url, bodies, concurrency, d)
            .await
    }

    async fn load_with(
        &self,
        headers: &[(&'static str, String)],
        url: &str,
        bodies: Bodies,
        concurrency: usize,
        d: &Durations,
    ) -> anyhow::Result<LoadResult> {
        if self.external {
            super::wrk::run(url, headers, &bodies, concurrency, d.warmup, d.run).await
        } else {
            Ok(load::run(url, headers, bodies, concurrency, d.warmup, d.run).await)
        }
    }

    /// The warm dashboard answer in each of [`CODINGS`]: its bytes on the wire (one request, the
    /// body as sent) at 50 and 500 contacts, and a load run at 50 and `concurrency`.
    pub async fn codings(
        &self,
        concurrency: usize,
        d: &Durations,
    ) -> anyhow::Result<Vec<CodingPoint>> {
        let client = reqwest::Client::new();
        let mut points = Vec::new();
        for (coding, accept) in CODINGS {
            let mut headers = self.headers();
            if let Some(accept) = accept {
                headers.push(("accept-encoding", accept.to_owned()));
            }
            let mut bytes = [0usize; 2];
            for (slot, first) in [50, 500].into_iter().enumerate() {
                let mut request = client
                    .post(&self.graphql_url)
                    .body(self.body("warm", first, None, false));
                for (k, v) in &headers {
                    request = request.header(*k, v);
                }
                let response = request.send().await?;
                let encoding = response
                    .headers()
                    .get("content-encoding")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                anyhow::ensure!(
                    response.status().is_success() && encoding.as_deref() == accept,
                    "{coding} first={first}: {} with coding {encoding:?}",
                    response.status()
                );
                bytes[slot] = response.bytes().await?.len();
            }
            self.quiesce().await;
            let warm = Bodies::Same(self.body("warm", 50, None, false));
            let load = self
                .load_with(&headers, &self.graphql_url, warm, concurrency, d)
                .await?;
            points.push(CodingPoint {
                coding,
                bytes_50: bytes[0],
                bytes_500: bytes[1],
                load,
            });
        }
        Ok(points)
    }

    /// Waits until the server is idle: requests a previous point abandoned still run to their
    /// end on the server, and must neither count in the next probe nor load the next point.
    async fn quiesce(&self) {
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut last = self.store.statements();
        while Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let now = self.store.statements();
            if now == last {
                return;
            }
            last = now;
        }
    }

    /// One request alone: its SQL statements (a memoized `totalCount` counted as one) and
    /// response bytes (and a check that it works).
    async fn probe(&self, design: &str, first: usize) -> anyhow::Result<(u64, usize)> {
        self.quiesce().await;
        let client = reqwest::Client::new();
        let nonce = design == "cold";
        let body = self
            .body(design, first, None, nonce)
            .replace(super::load::NONCE, "probe");
        let mut request = client.post(self.url(design)).body(body);
        for (k, v) in self.headers() {
            request = request.header(k, v);
        }
        // Each gateway counts the statements of its own store.
        let store = if design == "off" {
            &self.off_store
        } else {
            &self.store
        };
        let before = store.statements();
        let memo_before = store.count_memo_hits();
        let response = request.send().await?;
        let status = response.status();
        let bytes = response.bytes().await?;
        // A `totalCount` from the store's memo (same location and filter within a second, the
        // data unchanged) counts as the statement it stands for: whether the probe finds it
        // depends on the time since the last point, not on the page size.
        let statements = store.statements() - before + (store.count_memo_hits() - memo_before);
        let value: Value = serde_json::from_slice(&bytes).context("a JSON answer")?;
        anyhow::ensure!(
            status.is_success() && value.get("errors").is_none(),
            "{design} first={first} failed ({status}): {}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(500)])
        );
        let nodes = value["data"]["contacts"]["nodes"]
            .as_array()
            .or_else(|| value["data"]["contacts"]["edges"].as_array())
            .map_or(0, Vec::len);
        anyhow::ensure!(
            nodes == first.min(self.contacts as usize),
            "{design} first={first} answered {nodes} contacts"
        );
        Ok((statements, bytes.len()))
    }

    pub async fn point(
        &self,
        design: &'static str,
        first: usize,
        concurrency: usize,
        d: &Durations,
    ) -> anyhow::Result<Point> {
        let (statements, bytes) = self.probe(design, first).await?;
        let bodies = self.bodies(design, first).await?;
        let before = self.cache.stats();
        let load = self.load(self.url(design), bodies, concurrency, d).await?;
        let after = self.cache.stats();
        let hit_ratio = matches!(design, "warm" | "cold").then(|| hit_ratio(before, after));
        let cache_bytes = after.bytes;
        Ok(Point {
            design,
            first,
            load,
            statements,
            bytes,
            hit_ratio,
            rss_kib: rss_kib(),
            cache_bytes,
        })
    }

    /// The 50-contact warm request at `concurrency`, idle and then while FULL syncs of the same
    /// location run back to back. Returns (idle, during, FULL syncs that ran, the hit ratio
    /// during them).
    pub async fn during_sync(
        &self,
        concurrency: usize,
        d: &Durations,
    ) -> anyhow::Result<(LoadResult, LoadResult, u64, f64)> {
        let url = self.graphql_url.clone();
        let warm = Bodies::Same(self.body("warm", 50, None, false));
        self.quiesce().await;
        let idle = self.load(&url, warm.clone(), concurrency, d).await?;
        let stop = Arc::new(AtomicBool::new(false));
        let syncer = {
            let stop = stop.clone();
            let sync = self.sync.clone();
            let loc = self.location_id.clone();
            tokio::spawn(async move {
                let mut runs = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    sync.refresh(&loc, SyncMode::Full).await?;
                    sync.wait_idle(&loc, Duration::from_secs(900)).await;
                    runs += 1;
                }
                anyhow::Ok(runs)
            })
        };
        // Let the first sync get going before measuring.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let before = self.cache.stats();
        let during = self.load(&url, warm, concurrency, d).await?;
        let ratio = hit_ratio(before, self.cache.stats());
        stop.store(true, Ordering::Relaxed);
        let runs = syncer.await??;
        Ok((idle, during, runs, ratio))
    }
}

/// Hits over lookups between two readings of the cache's counters.
fn hit_ratio(before: CacheStats, after: CacheStats) -> f64 {
    let hits = after.hits - before.hits;
    let lookups = hits + (after.misses - before.misses);
    if lookups == 0 {
        0.0
    } else {
        hits as f64 / lookups as f64
    }
}

#[derive(Deserialize)]
struct N1Request {
    loc: String,
    first: usize,
}

/// The seed's design: a page of contacts, then separate queries per contact for each nested field.
async fn n_plus_one(
    State(store): State<Store>,
    Json(request): Json<N1Request>,
) -> Result<Json<Value>, StatusCode> {
    render_n_plus_one(&store, &request.loc, request.first)
        .await
        .map(Json)
        .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)
}

fn iso(ms: Option<i64>) -> Value {
    ms.and_then(chrono::DateTime::from_timestamp_millis)
        .map(|t| json!(t.to_rfc3339()))
        .unwrap_or(Value::Null)
}

async fn render_n_plus_one(store: &Store, loc: &str, first: usize) -> Result<Value, StoreError> {
    let filter = ContactFilter::default();
    let total = store.count_contacts(loc, &filter).await?;
    let freshness = store.freshness(&[loc.to_owned()]).await?;
    let synced_at = freshness.get(loc).and_then(|f| f.synced_at);
    let mut contacts = store
        .contacts_page(
            loc,
            &filter,
            ContactOrder::default(),
            None,
            first as u64 + 1,
        )
        .await?;
    let has_next = contacts.len() > first;
    contacts.truncate(first);
    let user_json = |u: &crate::store::entities::user::Model| json!({ "id": u.id, "name": u.name, "email": u.email });
    let mut edges = Vec::with_capacity(contacts.len());
    for c in &contacts {
        let id = std::slice::from_ref(&c.id);
        let assigned = match &c.assigned_to {
            Some(u) => store
                .users_by_keys(&[(loc.to_owned(), u.clone())])
                .await?
                .first()
                .map(user_json),
            None => None,
        };
        let values = store.custom_values_by_contacts(id).await?;
        let field_ids: Vec<String> = values.iter().map(|v| v.field_id.clone()).collect();
        let fields = if field_ids.is_empty() {
            Vec::new()
        } else {
            store.custom_fields_by_ids(&field_ids).await?
        };
        let custom_fields: Vec<Value> = values
            .iter()
            .map(|v| {
                let f = fields.iter().find(|f| f.id == v.field_id);
                json!({
                    "id": v.field_id,
                    "name": f.and_then(|f| f.name.clone()),
                    "fieldKey": f.and_then(|f| f.field_key.clone()),
                    "value": serde_json::from_str::<Value>(&v.value).unwrap_or(Value::Null),
                })
            })
            .collect();
        let tasks = store.tasks_by_contacts(id).await?;
        let task_users: Vec<(String, String)> = tasks
            .iter()
            .filter_map(|t| Some((loc.to_owned(), t.assigned_to.clone()?)))
            .collect();
        let task_users = if task_users.is_empty() {
            Vec::new()
        } else {
            store.users_by_keys(&task_users).await?
        };
        let conversations = store.conversations_by_contacts(id).await?;
        let opportunities = store.opportunities_by_contacts(id).await?;
        let (pipelines, stages) = if opportunities.is_empty() {
            (Vec::new(), Vec::new())
        } else {
            let p: Vec<String> = opportunities
                .iter()
                .filter_map(|o| o.pipeline_id.clone())
                .collect();
            let s: Vec<String> = opportunities
                .iter()
                .filter_map(|o| o.stage_id.clone())
                .collect();
            (
                store.pipelines_by_ids(&p).await?,
                store.stages_by_ids(&s).await?,
            )
        };
        let tags: Value = serde_json::from_str(&c.tags).unwrap_or(Value::Null);
        edges.push(json!({
            "cursor": c.id,
            "node": {
                "id": c.id, "name": c.name, "email": c.email, "phone": c.phone, "tags": tags,
                "dateAdded": iso(Some(c.date_added)),
                "assignedTo": assigned,
                "customFields": custom_fields,
                "tasks": tasks.iter().map(|t| json!({
                    "id": t.id, "title": t.title, "dueDate": iso(t.due_date), "completed": t.completed,
                    "assignedTo": task_users.iter().find(|u| Some(&u.id) == t.assigned_to.as_ref())
                        .map(|u| json!({ "id": u.id, "name": u.name })),
                })).collect::<Vec<_>>(),
                "conversations": conversations.iter().map(|v| json!({
                    "id": v.id, "type": v.kind, "lastMessageBody": v.last_message_body,
                    "unreadCount": v.unread_count,
                })).collect::<Vec<_>>(),
                "opportunities": opportunities.iter().map(|o| json!({
                    "id": o.id, "name": o.name, "status": o.status, "monetaryValue": o.monetary_value,
                    "pipeline": pipelines.iter().find(|p| Some(&p.id) == o.pipeline_id.as_ref())
                        .map(|p| json!({ "id": p.id, "name": p.name })),
                    "stage": stages.iter().find(|s| Some(&s.id) == o.stage_id.as_ref())
                        .map(|s| json!({ "id": s.id, "name": s.name, "position": s.position })),
                    "assignedTo": o.assigned_to.as_ref().map(|u| json!({ "id": u })),
                })).collect::<Vec<_>>(),
            }
        }));
    }
    let now = chrono::Utc::now().timestamp_millis();
    Ok(json!({
        "data": { "contacts": {
            "totalCount": total,
            "freshness": {
                "syncedAt": iso(synced_at),
                "ageSeconds": synced_at.map(|s| (now - s) / 1000),
                "stale": false,
                "syncing": freshness.get(loc).is_some_and(|f| f.active > 0),
            },
            "pageInfo": { "hasNextPage": has_next, "endCursor": contacts.last().map(|c| c.id.clone()) },
            "edges": edges,
        }}
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bench_sends_the_readme_dashboard_query() {
        let readme = include_str!("../../README.md");
        assert!(
            readme.contains(&format!("```graphql\n{DASHBOARD_QUERY}\n```")),
            "README.md's `query Dashboard` block and bench::read::DASHBOARD_QUERY differ"
        );
        assert!(DASHBOARD_QUERY.contains("first: 50"));
    }
}
