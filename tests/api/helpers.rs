//! Shared helpers of the integration tests: fresh databases on each backend, fixtures loaded
//! through the store API, and `spawn_app` for tests over HTTP.

use std::collections::HashMap;

use chrono::{DateTime, Duration, TimeZone, Utc};
use ghl_gateway::app::{App, ServeConfig};
use ghl_gateway::auth::{AuthConfig, Caller};
use ghl_gateway::domain::*;
use ghl_gateway::graphql::{self, AppSchema};
use ghl_gateway::http::HttpConfig;
use ghl_gateway::store::{DatabaseConfig, Page, Store};
use sea_orm::{ConnectionTrait, Database};

/// A fresh, migrated database that lives as long as the value.
pub struct TestDb {
    pub name: &'static str,
    pub url: String,
    pub store: Store,
    _dir: Option<tempfile::TempDir>,
    /// For PostgreSQL: the admin URL and the database to drop afterwards.
    drop_database: Option<(String, String)>,
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some((admin_url, db_name)) = self.drop_database.take() else {
            return;
        };
        // Drop runs outside async; a short-lived runtime on its own thread drops the database.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async {
                let admin = Database::connect(&admin_url).await.ok()?;
                let _ = admin
                    .execute_unprepared(&format!("DROP DATABASE IF EXISTS {db_name} WITH (FORCE)"))
                    .await;
                admin.close().await.ok()
            })
        })
        .join();
    }
}

/// One fresh database per backend: SQLite always, PostgreSQL when `TEST_DATABASE_URL` is set.
/// Each Postgres test gets its own database, so tests run in parallel.
pub async fn databases() -> Vec<TestDb> {
    init_test_logs();
    let mut dbs = vec![sqlite().await];
    if let Ok(admin_url) = std::env::var("TEST_DATABASE_URL") {
        dbs.push(postgres(&admin_url).await);
    }
    dbs
}

pub async fn sqlite() -> TestDb {
    let dir = tempfile::tempdir().expect("a temp dir");
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("cache.db").display()
    );
    let store = connect(&url).await;
    TestDb {
        name: "sqlite",
        url,
        store,
        _dir: Some(dir),
        drop_database: None,
    }
}

pub async fn postgres(admin_url: &str) -> TestDb {
    let admin = Database::connect(admin_url)
        .await
        .expect("TEST_DATABASE_URL answers");
    let db_name = format!("ghl_test_{}", uuid::Uuid::new_v4().simple());
    admin
        .execute_unprepared(&format!("CREATE DATABASE {db_name}"))
        .await
        .expect("can create a test database");
    admin.close().await.ok();
    let mut url = reqwest::Url::parse(admin_url).expect("TEST_DATABASE_URL is a URL");
    url.set_path(&db_name);
    let url = url.to_string();
    let store = connect(&url).await;
    TestDb {
        name: "postgres",
        url,
        store,
        _dir: None,
        drop_database: Some((admin_url.to_owned(), db_name)),
    }
}

async fn connect(url: &str) -> Store {
    Store::open(&DatabaseConfig::new(url))
        .await
        .expect("the database opens and migrates")
}

/// The schema, as the operator sees it (`schema.execute` bypasses the HTTP guard).
pub fn schema(store: &Store) -> AppSchema {
    graphql::builder(store.clone(), graphql::Settings::default())
        .data(Caller::Admin)
        .finish()
}

/// The operator key of the apps `spawn_app` starts.
pub const ADMIN_KEY: &str = "test-admin-key-0123456789abcdefghijklmnop";

/// A running gateway on port 0 over `url`; [`TestApp::shutdown`] stops it as SIGTERM would.
pub struct TestApp {
    pub base: String,
    pub store: Store,
    pub sync: ghl_gateway::sync::SyncEngine,
    pub client: reqwest::Client,
    stop: tokio_util::sync::CancellationToken,
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
}

/// `TEST_LOG=1 cargo test ...` prints the gateway's logs (`RUST_LOG` filters them as usual); by
/// default tests are quiet.
pub fn init_test_logs() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("TEST_LOG").is_some_and(|v| !v.is_empty() && v != "0") {
            ghl_gateway::telemetry::init(ghl_gateway::telemetry::LogFormat::Pretty);
        }
    });
}

/// A gateway that serves anonymous requests too (the foundation's tests send no key).
pub async fn spawn_app(url: &str) -> TestApp {
    spawn_app_with(url, |_| {}).await
}

/// The tokens-at-rest key of test gateways (32 bytes, base64).
pub const TEST_SECRET_KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

/// A running gateway whose config `tweak` adjusts (e.g. to point it at a simulator).
pub async fn spawn_app_with(url: &str, tweak: impl FnOnce(&mut ServeConfig)) -> TestApp {
    let mut config = ServeConfig {
        http: HttpConfig {
            listen: "127.0.0.1:0".into(),
            max_body_bytes: 64 * 1024,
            auth: AuthConfig {
                admin_key: Some(ADMIN_KEY.into()),
                allow_anonymous: true,
                ..AuthConfig::default()
            },
            ..HttpConfig::default()
        },
        database: DatabaseConfig::new(url),
        graphql: graphql::Settings::default(),
        upstream: ghl_gateway::upstream::UpstreamConfig::new("http://127.0.0.1:9"),
        sync: Default::default(),
        secrets: ghl_gateway::secrets::SecretsConfig {
            secret_key: Some(TEST_SECRET_KEY.into()),
        },
        cache: Default::default(),
    };
    tweak(&mut config);
    init_test_logs();
    let app = App::build(config).await.expect("the app builds");
    let base = format!("http://127.0.0.1:{}", app.port());
    let store = app.store().clone();
    let sync = app.sync().clone();
    let stop = tokio_util::sync::CancellationToken::new();
    let server = tokio::spawn(app.run_until_stopped(stop.clone().cancelled_owned()));
    TestApp {
        base,
        store,
        sync,
        client: reqwest::Client::new(),
        stop,
        server,
    }
}

impl TestApp {
    /// Stops the gateway as SIGTERM does (requests in flight finish, running syncs stop at their
    /// next page, the database closes) and waits until it has.
    pub async fn shutdown(self) {
        self.stop.cancel();
        self.server
            .await
            .expect("the server task does not panic")
            .expect("the gateway stops cleanly");
    }

    /// POSTs a GraphQL request and returns the JSON answer.
    pub async fn graphql(&self, query: &str, variables: serde_json::Value) -> serde_json::Value {
        self.client
            .post(format!("{}/graphql", self.base))
            .json(&serde_json::json!({ "query": query, "variables": variables }))
            .send()
            .await
            .expect("the gateway answers")
            .json()
            .await
            .expect("a JSON answer")
    }
}

/// A gateway whose GHL is `sim`, with the simulator's first location connected by its private
/// integration token.
pub async fn spawn_app_with_sim(url: &str, sim: &ghl_gateway::sim::SimHandle) -> TestApp {
    spawn_app_with_sim_and(url, sim, |_| {}).await
}

/// [`spawn_app_with_sim`] with the gateway's settings changed by `tweak` first.
pub async fn spawn_app_with_sim_and(
    url: &str,
    sim: &ghl_gateway::sim::SimHandle,
    tweak: impl FnOnce(&mut ServeConfig),
) -> TestApp {
    let base_url = sim.base_url.clone();
    let app = spawn_app_with(url, |c| {
        c.upstream.base_url = base_url;
        c.upstream.backoff_ms = 20;
        // The single-flight test sends 100 requests at once, over the default burst of 60.
        c.http.auth.rate_limit_burst = 200;
        tweak(c);
    })
    .await;
    for location in &sim.locations {
        app.sync
            .client()
            .set_credential(
                &location.id,
                ghl_gateway::upstream::Credential::PrivateIntegration {
                    token: location.pit_token.clone().into(),
                },
            )
            .await
            .expect("stores the credential");
    }
    app
}

/// What a fixture location holds, for assertions.
#[derive(Default)]
pub struct Fixture {
    pub contacts: Vec<Contact>,
    pub tasks: HashMap<String, Vec<Task>>,
    pub conversations: HashMap<String, Vec<Conversation>>,
    pub opportunities: HashMap<String, Vec<Opportunity>>,
    pub users: Vec<User>,
}

pub const TAGS: [&str; 5] = ["vip", "lead", "customer", "newsletter", "cold"];

fn at(days: i64, minutes: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2022, 1, 1, 0, 0, 0).unwrap()
        + Duration::days(days)
        + Duration::minutes(minutes)
}

/// Loads a deterministic location of `n` contacts through the store API, in pages of 500.
/// Contact `i` has `i % 4` tasks, a conversation unless `i % 5 == 0`, an opportunity when
/// `i % 3 == 0`, tags and a custom field value; some share timestamps to exercise tie-breaks.
pub async fn load_fixture(store: &Store, location_id: &str, n: usize) -> Fixture {
    let mark = 1;
    store
        .upsert_location(
            &Location {
                id: location_id.into(),
                name: Some(format!("Location {location_id}")),
                company_id: Some("company-1".into()),
                timezone: Some("Europe/Paris".into()),
                created_at: Some(at(0, 0)),
            },
            mark,
        )
        .await
        .unwrap();
    let users: Vec<User> = (0..4)
        .map(|u| User {
            id: format!("{location_id}-user-{u}"),
            location_id: location_id.into(),
            name: Some(format!("User {u}")),
            first_name: Some("User".into()),
            last_name: Some(u.to_string()),
            email: Some(format!("user{u}@agency.test")),
        })
        .collect();
    store
        .write_page(location_id, mark, Page::Users(&users), None)
        .await
        .unwrap();
    let fields = vec![
        CustomField {
            id: format!("{location_id}-cf-score"),
            location_id: location_id.into(),
            name: Some("Score".into()),
            field_key: Some("contact.score".into()),
            data_type: Some("NUMERICAL".into()),
            model: Some("contact".into()),
            position: 0,
        },
        CustomField {
            id: format!("{location_id}-cf-colors"),
            location_id: location_id.into(),
            name: Some("Colors".into()),
            field_key: Some("contact.colors".into()),
            data_type: Some("MULTIPLE_OPTIONS".into()),
            model: Some("contact".into()),
            position: 1,
        },
    ];
    store
        .write_page(location_id, mark, Page::CustomFields(&fields), None)
        .await
        .unwrap();
    let pipelines: Vec<Pipeline> = (0..2)
        .map(|p| Pipeline {
            id: format!("{location_id}-pipe-{p}"),
            location_id: location_id.into(),
            name: Some(format!("Pipeline {p}")),
            stages: (0..3)
                .map(|s| PipelineStage {
                    id: format!("{location_id}-pipe-{p}-stage-{s}"),
                    name: Some(format!("Stage {s}")),
                    position: s,
                })
                .collect(),
        })
        .collect();
    store
        .write_page(location_id, mark, Page::Pipelines(&pipelines), None)
        .await
        .unwrap();

    let mut fixture = Fixture {
        users: users.clone(),
        ..Default::default()
    };
    let first_names = ["Ada", "Grace", "alan", "Edsger", "Barbara", "Donald", "Ken"];
    for start in (0..n).step_by(500) {
        let end = (start + 500).min(n);
        let mut contacts = Vec::new();
        let mut tasks = Vec::new();
        let mut conversations = Vec::new();
        let mut opportunities = Vec::new();
        for i in start..end {
            let id = format!("{location_id}-c{i:06}");
            let contact = Contact {
                id: id.clone(),
                location_id: location_id.into(),
                first_name: Some(first_names[i % first_names.len()].into()),
                last_name: Some(format!("Tester{:03}", i % 97)),
                name: None,
                email: Some(format!("person{i}@example.com")),
                phone: Some(format!("+1555{i:07}")),
                company_name: (i % 2 == 0).then(|| "Acme".to_owned()),
                source: Some("fixture".into()),
                assigned_to: (i % 6 != 5).then(|| users[i % users.len()].id.clone()),
                tags: vec![
                    TAGS[i % TAGS.len()].into(),
                    TAGS[(i / 2) % TAGS.len()].into(),
                ],
                custom_fields: vec![
                    CustomFieldValue {
                        field_id: fields[0].id.clone(),
                        value: serde_json::json!(i % 100),
                    },
                    CustomFieldValue {
                        field_id: fields[1].id.clone(),
                        value: serde_json::json!(["red", "blue"]),
                    },
                ],
                // Pairs of contacts share a dateAdded: the id must break the tie.
                date_added: at((i / 2) as i64, 0),
                date_updated: at(400 + (i % 50) as i64, i as i64 % 60),
            };
            for t in 0..(i % 4) {
                tasks.push(Task {
                    id: format!("{id}-t{t}"),
                    location_id: location_id.into(),
                    contact_id: Some(id.clone()),
                    title: Some(format!("Call back #{t}")),
                    body: Some("Ask about the renewal".into()),
                    due_date: (t != 2).then(|| at(500 + t as i64, 0)),
                    completed: t == 1,
                    assigned_to: Some(users[t % users.len()].id.clone()),
                    date_added: Some(at(10, 0)),
                    date_updated: Some(at(11, 0)),
                });
            }
            if i % 5 != 0 {
                conversations.push(Conversation {
                    id: format!("{id}-conv"),
                    location_id: location_id.into(),
                    contact_id: Some(id.clone()),
                    kind: Some("TYPE_PHONE".into()),
                    last_message_body: Some(format!("Hello {i}")),
                    last_message_type: Some("TYPE_SMS".into()),
                    last_message_date: Some(at(600, i as i64)),
                    unread_count: (i % 3) as i32,
                    assigned_to: None,
                    date_added: Some(at(12, 0)),
                    date_updated: Some(at(13, 0)),
                });
            }
            if i % 3 == 0 {
                let p = &pipelines[i % 2];
                opportunities.push(Opportunity {
                    id: format!("{id}-opp"),
                    location_id: location_id.into(),
                    contact_id: Some(id.clone()),
                    pipeline_id: Some(p.id.clone()),
                    stage_id: Some(p.stages[i % 3].id.clone()),
                    name: Some(format!("Deal {i}")),
                    status: Some(["open", "won", "lost"][i % 3].into()),
                    monetary_value: Some(100.0 * i as f64),
                    assigned_to: Some(users[0].id.clone()),
                    created_at: Some(at(20, 0)),
                    updated_at: Some(at(21, 0)),
                });
            }
            contacts.push(contact);
        }
        store
            .write_page(location_id, mark, Page::Contacts(&contacts), None)
            .await
            .unwrap();
        store
            .write_page(location_id, mark, Page::Tasks(&tasks), None)
            .await
            .unwrap();
        store
            .write_page(location_id, mark, Page::Conversations(&conversations), None)
            .await
            .unwrap();
        store
            .write_page(location_id, mark, Page::Opportunities(&opportunities), None)
            .await
            .unwrap();
        for t in tasks {
            fixture
                .tasks
                .entry(t.contact_id.clone().unwrap())
                .or_default()
                .push(t);
        }
        for c in conversations {
            fixture
                .conversations
                .entry(c.contact_id.clone().unwrap())
                .or_default()
                .push(c);
        }
        for o in opportunities {
            fixture
                .opportunities
                .entry(o.contact_id.clone().unwrap())
                .or_default()
                .push(o);
        }
        fixture.contacts.extend(contacts);
    }
    fixture
}

/// The nested query a dashboard runs.
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

/// The simulator with `contacts` contacts in one location, no latency, GHL's real limits.
pub async fn spawn_sim(contacts: usize) -> ghl_gateway::sim::SimHandle {
    spawn_sim_with(ghl_gateway::sim::SimArgs {
        contacts,
        locations: 1,
        ..Default::default()
    })
    .await
}

pub async fn spawn_sim_with(args: ghl_gateway::sim::SimArgs) -> ghl_gateway::sim::SimHandle {
    ghl_gateway::sim::Sim::spawn(args)
        .await
        .expect("the simulator starts")
}

/// A GHL client for the simulator, with test-sized backoff.
pub fn upstream_client(
    credentials: std::sync::Arc<dyn ghl_gateway::upstream::CredentialStore>,
    sim: &ghl_gateway::sim::SimHandle,
    tweak: impl FnOnce(&mut ghl_gateway::upstream::UpstreamConfig),
) -> ghl_gateway::upstream::Client {
    let mut config = ghl_gateway::upstream::UpstreamConfig::new(sim.base_url.clone());
    config.client_id = Some(sim.client_id.clone());
    config.client_secret = Some(sim.client_secret.clone().into());
    config.backoff_ms = 20;
    tweak(&mut config);
    ghl_gateway::upstream::Client::new(config, credentials).expect("the client builds")
}

/// Moves every job of the location `secs` into the past, as if that much time had passed since
/// they ran (freshness, cooldowns and resume windows are all measured from the job rows).
pub async fn time_passes(store: &Store, location_id: &str, secs: i64) {
    let ms = secs * 1000;
    store
        .connection()
        .execute_unprepared(&format!(
            "UPDATE sync_jobs SET started_at = started_at - {ms}, mark = mark - {ms}, \
             finished_at = finished_at - {ms}, synced_at = synced_at - {ms} \
             WHERE location_id = '{location_id}'"
        ))
        .await
        .expect("the job rows move");
    store
        .connection()
        .execute_unprepared(&format!(
            "UPDATE sync_stages SET read_at = read_at - {ms} WHERE job_id IN \
             (SELECT id FROM sync_jobs WHERE location_id = '{location_id}')"
        ))
        .await
        .expect("the stage rows move");
    // A write past the store's own write paths, as another process's would be: say so, or the
    // response cache keeps answering with the freshness it read before.
    store.versions().bump(location_id);
}

/// A read of the first contacts of a location, with the page's freshness; asserts the total.
pub async fn read_contacts(
    app: &TestApp,
    location_id: &str,
    max_age: Option<i32>,
    total: usize,
) -> serde_json::Value {
    const READ: &str = r#"query($loc: ID!, $maxAge: Int) {
      contacts(locationId: $loc, first: 5, maxAge: $maxAge) { totalCount freshness { stale syncing } }
    }"#;
    let page = app
        .graphql(
            READ,
            serde_json::json!({ "loc": location_id, "maxAge": max_age }),
        )
        .await;
    assert_eq!(page["data"]["contacts"]["totalCount"], total, "{page}");
    page["data"]["contacts"].clone()
}

/// Starts a FULL sync of the location by hand and waits for its end.
pub async fn full_sync_to_end(app: &TestApp, location_id: &str) {
    app.sync
        .refresh(location_id, ghl_gateway::sync::SyncMode::Full)
        .await
        .expect("the sync starts");
    assert!(
        app.sync
            .wait_idle(location_id, std::time::Duration::from_secs(120))
            .await,
        "the sync ends"
    );
}

/// A `Write` into a shared buffer, for capturing logs.
#[derive(Clone, Default)]
pub struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl Captured {
    /// What was logged so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// Every log line of this thread, at every level, into a buffer; logging stops with the guard.
pub fn capture_logs() -> (Captured, tracing::subscriber::DefaultGuard) {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(captured.clone())
        .with_ansi(false)
        .finish();
    (captured, tracing::subscriber::set_default(subscriber))
}

/// Waits until the first use of key `id` is recorded (a write the gateway makes off the request
/// path) and counted, so that a test's statement window does not catch it. Panics when the row
/// does not show within about 5 s, or the counter does not settle within 10 s.
///
/// Seeing the row is not enough: the store counts a statement when its future completes, and on
/// a loaded machine the writing task can be polled after its commit is visible. So this also
/// waits for the statement counter to stay still for 250 ms.
pub async fn wait_for_key_use(store: &Store, id: &str) {
    let step = std::time::Duration::from_millis(50);
    let mut recorded = false;
    for _ in 0..100 {
        let keys = store.api_keys().await.unwrap();
        if keys.iter().any(|k| k.id == id && k.last_used_at.is_some()) {
            recorded = true;
            break;
        }
        tokio::time::sleep(step).await;
    }
    assert!(recorded, "the key's last use is recorded");
    let mut last = store.statements();
    let mut still = 0;
    for _ in 0..200 {
        tokio::time::sleep(step).await;
        let now = store.statements();
        still = if now == last { still + 1 } else { 0 };
        last = now;
        if still == 5 {
            return;
        }
    }
    panic!("statements kept running in the background: nothing to count a window against");
}
