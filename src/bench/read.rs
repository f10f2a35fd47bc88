//! The read path: the gateway over HTTP keep-alive, against the seed's N+1 design in the same run.
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

use super::load::{self, LoadResult};
use crate::app::{App, ServeConfig};
use crate::auth::AuthConfig;
use crate::http::HttpConfig;
use crate::store::{ContactFilter, ContactOrder, DatabaseConfig, Store, StoreError};
use crate::sync::{SyncEngine, SyncMode};
use crate::upstream::{Credential, UpstreamConfig};

/// The dashboard query of the README: contacts with everything nested.
pub const DASHBOARD_QUERY: &str = r#"
query Dashboard($loc: ID!, $first: Int, $after: String) {
  contacts(locationId: $loc, first: $first, after: $after) {
    totalCount
    freshness { syncedAt ageSeconds stale syncing }
    pageInfo { hasNextPage endCursor }
    edges {
      cursor
      node {
        id name email phone tags dateAdded
        assignedTo { id name email }
        customFields { id name fieldKey value }
        tasks { id title dueDate completed assignedTo { id name } }
        conversations { id type lastMessageBody unreadCount }
        opportunities { id name status monetaryValue pipeline { id name } stage { id name position } assignedTo { id } }
      }
    }
  }
}"#;

const ADMIN_KEY: &str = "bench-admin-key-0123456789abcdefghijklmnop";

/// A gateway over one database, with the N+1 baseline beside it.
pub struct Setup {
    pub backend: String,
    pub location_id: String,
    pub store: Store,
    pub sync: SyncEngine,
    pub graphql_url: String,
    pub baseline_url: String,
    pub fill_secs: f64,
    pub contacts: u64,
}

/// One load point of one design.
#[derive(Clone, Debug)]
pub struct Point {
    pub design: &'static str,
    pub first: usize,
    pub load: LoadResult,
    pub statements: u64,
    pub bytes: usize,
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
}

pub struct Durations {
    pub warmup: Duration,
    pub run: Duration,
}

/// Builds the gateway on `database_url` and fills its location with a FULL sync from `sim_url`.
pub async fn setup(
    backend: &str,
    database_url: &str,
    sim_url: &str,
    location_id: &str,
    pit_token: &str,
) -> anyhow::Result<Setup> {
    let secret = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let mut upstream = UpstreamConfig::new(sim_url);
    upstream.burst_limit = 1_000_000;
    // The default limits (first: 500 fits the default complexity budget); cache only, so that a
    // read never starts a sync behind the benchmark's back.
    let graphql = crate::graphql::Settings {
        auto_refresh: false,
        ..Default::default()
    };
    let config = ServeConfig {
        http: HttpConfig {
            listen: "127.0.0.1:0".into(),
            auth: AuthConfig {
                admin_key: Some(ADMIN_KEY.into()),
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
    };
    let app = App::build(config).await?;
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
        graphql_url,
        baseline_url,
        fill_secs,
        contacts,
    })
}

impl Setup {
    fn body(&self, design: &str, first: usize) -> String {
        match design {
            "gateway" => json!({
                "query": DASHBOARD_QUERY,
                "variables": { "loc": self.location_id, "first": first },
            }),
            _ => json!({ "loc": self.location_id, "first": first }),
        }
        .to_string()
    }

    fn url(&self, design: &str) -> &str {
        if design == "gateway" {
            &self.graphql_url
        } else {
            &self.baseline_url
        }
    }

    fn headers() -> Vec<(&'static str, String)> {
        vec![
            ("content-type", "application/json".into()),
            ("accept", "application/json".into()),
            ("authorization", format!("Bearer {ADMIN_KEY}")),
        ]
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

    /// One request alone: its SQL statements and response bytes (and a check that it works).
    async fn probe(&self, design: &str, first: usize) -> anyhow::Result<(u64, usize)> {
        self.quiesce().await;
        let client = reqwest::Client::new();
        let mut request = client.post(self.url(design)).body(self.body(design, first));
        for (k, v) in Self::headers() {
            request = request.header(k, v);
        }
        let before = self.store.statements();
        let response = request.send().await?;
        let status = response.status();
        let bytes = response.bytes().await?;
        let statements = self.store.statements() - before;
        let value: Value = serde_json::from_slice(&bytes).context("a JSON answer")?;
        anyhow::ensure!(
            status.is_success() && value.get("errors").is_none(),
            "{design} first={first} failed ({status}): {}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(500)])
        );
        let nodes = value["data"]["contacts"]["edges"]
            .as_array()
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
        let load = load::run(
            self.url(design),
            &Self::headers(),
            self.body(design, first),
            concurrency,
            d.warmup,
            d.run,
        )
        .await;
        Ok(Point {
            design,
            first,
            load,
            statements,
            bytes,
        })
    }

    /// The 50-contact query at `concurrency`, idle and then while FULL syncs of the same location
    /// run back to back. Returns (idle, during, FULL syncs that ran).
    pub async fn during_sync(
        &self,
        concurrency: usize,
        d: &Durations,
    ) -> anyhow::Result<(LoadResult, LoadResult, u64)> {
        let url = self.graphql_url.clone();
        self.quiesce().await;
        let idle = load::run(
            &url,
            &Self::headers(),
            self.body("gateway", 50),
            concurrency,
            d.warmup,
            d.run,
        )
        .await;
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
        let during = load::run(
            &url,
            &Self::headers(),
            self.body("gateway", 50),
            concurrency,
            d.warmup,
            d.run,
        )
        .await;
        stop.store(true, Ordering::Relaxed);
        let runs = syncer.await??;
        Ok((idle, during, runs))
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
