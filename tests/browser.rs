//! The dashboard page (`GET /`) served by a real gateway over the simulator, driven in headless
//! Chromium by `tests/browser/e2e.mjs` (playwright-core): the key form, the contacts table with
//! paging and search, the refresh button, the sync badge going to running (with its progress bar)
//! and then to synced, and the table reloading by itself. The driver saves a screenshot under
//! `target/`.
//!
//! `tests/browser/views.mjs` drives the other views with the simulator's signed webhooks pointed
//! at the gateway: a contact's panel checked against GraphQL, the pipeline's columns checked
//! against `opportunities` pages, an opportunity moved to another stage through the simulator's
//! admin API and the two columns' counts changing without a reload, what is due, and the badge
//! of a refused location. With `UPDATE_SCREENSHOTS=1` it writes the README's screenshots to
//! `docs/`.
//!
//! Without `/usr/bin/chromium`, `node` or `tests/browser/node_modules`, the browser test says why
//! it was skipped and passes, so that `cargo test` works on any machine; `.ci/run` installs them
//! and sets `REQUIRE_BROWSER_TEST=1`, which turns a missing one into a failure.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ghl_gateway::app::{App, ServeConfig};
use ghl_gateway::auth::AuthConfig;
use ghl_gateway::http::HttpConfig;
use ghl_gateway::sim::{Sim, SimArgs, SimHandle};
use ghl_gateway::store::{DatabaseConfig, Store};
use ghl_gateway::sync::{SyncEngine, SyncMode};
use ghl_gateway::upstream::{Credential, UpstreamConfig};

const CHROMIUM: &str = "/usr/bin/chromium";
/// The tokens-at-rest key of the test gateway (32 bytes, base64).
const TEST_SECRET_KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
/// A contact that reaches GHL after the first sync: only a later sync brings it to the page.
const NEWCOMER: &str = "Zebediah";

fn driver_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// Written straight to stderr, past the test harness's capture, so that a skip is seen.
fn say(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// Why the browser cannot be driven here, if it cannot.
fn missing_prerequisite() -> Option<String> {
    if !Path::new(CHROMIUM).exists() {
        return Some(format!(
            "{CHROMIUM} is missing (Debian: apt-get install chromium)"
        ));
    }
    let node = std::process::Command::new("node").arg("--version").output();
    if !node.is_ok_and(|o| o.status.success()) {
        return Some("node is not on PATH (Node.js 20 or later)".into());
    }
    if !driver_dir()
        .join("node_modules/playwright-core/package.json")
        .exists()
    {
        return Some(
            "tests/browser/node_modules/playwright-core is missing (npm ci --prefix tests/browser)"
                .into(),
        );
    }
    None
}

/// A gateway over `sim`, keys required, the simulator's locations connected.
async fn spawn_gateway(sim: &SimHandle, database_url: &str) -> (String, Store, SyncEngine) {
    spawn_gateway_with(sim, database_url, |_| {}).await
}

/// [`spawn_gateway`] with the config changed by `tweak` first.
async fn spawn_gateway_with(
    sim: &SimHandle,
    database_url: &str,
    tweak: impl FnOnce(&mut ServeConfig),
) -> (String, Store, SyncEngine) {
    let mut config = ServeConfig {
        http: HttpConfig {
            listen: "127.0.0.1:0".into(),
            auth: AuthConfig {
                allow_anonymous: false,
                ..AuthConfig::default()
            },
            ..HttpConfig::default()
        },
        database: DatabaseConfig::new(database_url),
        graphql: ghl_gateway::graphql::Settings::default(),
        upstream: UpstreamConfig::new(sim.base_url.clone()),
        sync: Default::default(),
        secrets: ghl_gateway::secrets::SecretsConfig {
            secret_key: Some(TEST_SECRET_KEY.into()),
        },
        cache: Default::default(),
    };
    tweak(&mut config);
    let app = App::build(config).await.expect("the gateway builds");
    let base = format!("http://127.0.0.1:{}", app.port());
    let store = app.store().clone();
    let sync = app.sync().clone();
    for location in &sim.locations {
        sync.client()
            .set_credential(
                &location.id,
                Credential::PrivateIntegration {
                    token: location.pit_token.clone().into(),
                },
            )
            .await
            .expect("stores the credential");
    }
    tokio::spawn(app.run_until_stopped(std::future::pending()));
    (base, store, sync)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_contacts_and_follows_a_sync_in_a_real_browser() {
    if let Some(why) = missing_prerequisite() {
        if std::env::var_os("REQUIRE_BROWSER_TEST").is_some() {
            panic!("REQUIRE_BROWSER_TEST is set but the browser test cannot run: {why}");
        }
        say(&format!(
            "SKIPPED the_dashboard_shows_contacts_and_follows_a_sync_in_a_real_browser: {why}"
        ));
        return;
    }

    // Latency on every GHL call, so that a sync lasts long enough for the badge to show it.
    let sim = Sim::spawn(SimArgs {
        contacts: 300,
        latency_ms: 30,
        ..SimArgs::default()
    })
    .await
    .expect("the simulator starts");
    let location = sim.locations[0].id.clone();
    let dir = tempfile::tempdir().expect("a temp dir");
    let database_url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("cache.db").display()
    );
    let (base, store, sync) = spawn_gateway(&sim, &database_url).await;

    sync.refresh(&location, SyncMode::Full)
        .await
        .expect("the first sync starts");
    assert!(
        sync.wait_idle(&location, Duration::from_secs(120)).await,
        "the first sync ends"
    );

    let now_ms = chrono::Utc::now().timestamp_millis();
    let key = ghl_gateway::auth::generate_key(
        Some("browser test".into()),
        std::slice::from_ref(&location),
        now_ms,
    );
    store.insert_api_key(key.row).await.expect("stores the key");

    let created = reqwest::Client::new()
        .post(format!(
            "{}/_sim/locations/{location}/contacts",
            sim.base_url
        ))
        .json(&serde_json::json!({
            "firstName": NEWCOMER,
            "lastName": "Quill",
            "email": "zebediah.quill@example.com",
            "phone": "+15550001234",
            "tags": ["vip", "new"],
        }))
        .send()
        .await
        .expect("the simulator answers");
    assert!(created.status().is_success(), "{}", created.status());

    let screenshot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    let started = Instant::now();
    let run = tokio::process::Command::new("node")
        .arg(driver_dir().join("e2e.mjs"))
        .args([&base, &key.key, &location])
        .arg(&screenshot)
        .env("NEWCOMER", NEWCOMER)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(180), run)
        .await
        .expect("the browser test ends within 3 minutes")
        .expect("node starts");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the browser test failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        output.status
    );
    assert!(screenshot.exists(), "the screenshot was saved");
    say(&format!(
        "browser test passed in {:.1} s; screenshot: {}\n{stdout}",
        started.elapsed().as_secs_f64(),
        screenshot.display()
    ));
}

/// The page and its assets come from the binary, with no address elsewhere in them (the page
/// must work offline), and the page's policy keeps its scripts and connections on this origin.
#[tokio::test]
async fn the_page_is_served_from_the_binary_and_loads_nothing_from_elsewhere() {
    let sim = Sim::spawn(SimArgs::default())
        .await
        .expect("the simulator starts");
    let dir = tempfile::tempdir().expect("a temp dir");
    let database_url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("cache.db").display()
    );
    let (base, _, _) = spawn_gateway(&sim, &database_url).await;
    let client = reqwest::Client::new();
    for (path, content_type) in [
        ("/", "text/html"),
        ("/dashboard.css", "text/css"),
        ("/dashboard.js", "text/javascript"),
    ] {
        // No key: the page is public, the data behind it is not.
        let response = client
            .get(format!("{base}{path}"))
            .send()
            .await
            .expect("the gateway answers");
        assert_eq!(response.status(), 200, "{path}");
        let headers = response.headers().clone();
        assert!(
            headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with(content_type),
            "{path}: {:?}",
            headers["content-type"]
        );
        let csp = headers["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("script-src 'self'") && csp.contains("connect-src 'self'"));
        let body = response.text().await.unwrap();
        for scheme in ["http://", "https://", "//cdn", "@import"] {
            assert!(!body.contains(scheme), "{path} refers to {scheme}…");
        }
    }
    let page = client
        .get(&base)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for needle in [
        r#"<link rel="stylesheet" href="/dashboard.css">"#,
        r#"<script src="/dashboard.js" defer></script>"#,
        r#"<label for="key-input">"#,
        r#"<label for="search">"#,
        r#"<label for="location">"#,
        r#"aria-live="polite""#,
    ] {
        assert!(page.contains(needle), "the page has {needle}");
    }
    // The data still needs a key.
    let data = client
        .post(format!("{base}/graphql"))
        .json(&serde_json::json!({ "query": "{ locations { id } }" }))
        .send()
        .await
        .unwrap();
    assert_eq!(data.status(), 401);
}

/// GraphiQL in headless Chromium with the outside network cut (`tests/browser/graphiql.mjs`):
/// the page loads from the gateway alone, a query with a key in its Headers tab shows data, and
/// a subscription runs over the WebSocket with the same key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graphiql_works_offline_in_a_real_browser() {
    if let Some(why) = missing_prerequisite() {
        if std::env::var_os("REQUIRE_BROWSER_TEST").is_some() {
            panic!("REQUIRE_BROWSER_TEST is set but the browser test cannot run: {why}");
        }
        say(&format!(
            "SKIPPED graphiql_works_offline_in_a_real_browser: {why}"
        ));
        return;
    }
    let sim = Sim::spawn(SimArgs {
        contacts: 40,
        ..SimArgs::default()
    })
    .await
    .expect("the simulator starts");
    let location = sim.locations[0].id.clone();
    let dir = tempfile::tempdir().expect("a temp dir");
    let database_url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("cache.db").display()
    );
    let (base, store, sync) = spawn_gateway(&sim, &database_url).await;
    sync.refresh(&location, SyncMode::Full)
        .await
        .expect("the sync starts");
    assert!(
        sync.wait_idle(&location, Duration::from_secs(120)).await,
        "the sync ends"
    );
    let key = ghl_gateway::auth::generate_key(
        Some("graphiql test".into()),
        std::slice::from_ref(&location),
        chrono::Utc::now().timestamp_millis(),
    );
    store.insert_api_key(key.row).await.expect("stores the key");

    let screenshot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("graphiql.png");
    let run = tokio::process::Command::new("node")
        .arg(driver_dir().join("graphiql.mjs"))
        .args([&base, &key.key, &location])
        .arg(&screenshot)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("the browser test ends within 2 minutes")
        .expect("node starts");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the GraphiQL browser test failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        output.status
    );
    say(&format!("GraphiQL browser test passed\n{stdout}"));
}

/// GraphiQL's page and assets come from the binary: the page names only this origin's files,
/// the vendored builds are served whole with long-lived caching, and the policy keeps scripts
/// and connections on this origin.
#[tokio::test]
async fn graphiql_is_served_from_the_binary() {
    let sim = Sim::spawn(SimArgs::default())
        .await
        .expect("the simulator starts");
    let dir = tempfile::tempdir().expect("a temp dir");
    let database_url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("cache.db").display()
    );
    let (base, _, _) = spawn_gateway(&sim, &database_url).await;
    let client = reqwest::Client::new();
    let page = client.get(format!("{base}/graphiql")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("script-src 'self';") && csp.contains("connect-src 'self';"));
    let html = page.text().await.unwrap();
    for scheme in ["http://", "https://", "//unpkg", "//cdn"] {
        assert!(!html.contains(scheme), "the page refers to {scheme}…");
    }
    let vendored = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/graphiql");
    let mut served = 0;
    for src in html
        .split(['"', '\''])
        .filter(|s| s.starts_with("/graphiql/assets/"))
    {
        let response = client.get(format!("{base}{src}")).send().await.unwrap();
        assert_eq!(response.status(), 200, "{src}");
        let name = src.trim_start_matches("/graphiql/assets/");
        let cache = response.headers()["cache-control"]
            .to_str()
            .unwrap()
            .to_owned();
        let body = response.bytes().await.unwrap();
        if let Ok(file) = std::fs::read(vendored.join(name)) {
            assert_eq!(body.as_ref(), file.as_slice(), "{name} is served unchanged");
            assert!(cache.contains("immutable"), "{name}: {cache}");
        } else {
            let text = String::from_utf8_lossy(&body);
            assert!(
                !text.contains("http://") && !text.contains("https://"),
                "{name}"
            );
        }
        served += 1;
    }
    assert_eq!(
        served, 6,
        "React, ReactDOM, GraphiQL's JS and CSS, our script and style"
    );
    for licence in ["LICENSE-graphiql", "LICENSE-react", "LICENSE-react-dom"] {
        assert!(
            vendored.join(licence).exists(),
            "{licence} is kept beside the builds"
        );
    }
    let missing = client
        .get(format!("{base}/graphiql/assets/nope.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
}

/// A task for the simulator's admin API, due `due`, on `contact_id`.
fn task_body(
    contact_id: &str,
    title: &str,
    due: chrono::DateTime<chrono::Utc>,
) -> serde_json::Value {
    serde_json::json!({
        "contactId": contact_id,
        "title": title,
        "body": "Created by the browser test",
        "dueDate": due.to_rfc3339(),
        "completed": false,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_views_stay_live_in_a_real_browser() {
    if let Some(why) = missing_prerequisite() {
        if std::env::var_os("REQUIRE_BROWSER_TEST").is_some() {
            panic!("REQUIRE_BROWSER_TEST is set but the browser test cannot run: {why}");
        }
        say(&format!(
            "SKIPPED the_dashboard_views_stay_live_in_a_real_browser: {why}"
        ));
        return;
    }
    let sim = Sim::spawn(SimArgs {
        contacts: 120,
        ..SimArgs::default()
    })
    .await
    .expect("the simulator starts");
    let location = sim.locations[0].id.clone();
    let dir = tempfile::tempdir().expect("a temp dir");
    let database_url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("cache.db").display()
    );
    let pem = sim.webhook_public_key_pem.clone();
    let (base, store, sync) = spawn_gateway_with(&sim, &database_url, |c| {
        c.http.webhooks.webhook_public_key = pem;
    })
    .await;
    let client = reqwest::Client::new();
    let admin = |path: String| format!("{}/_sim/{path}", sim.base_url);

    // Tasks due today, later this week and overdue, on the first contacts GHL holds: the seeded
    // ones are dated around the simulator's own epoch.
    let dump: serde_json::Value = client
        .get(admin(format!("locations/{location}")))
        .send()
        .await
        .expect("the simulator answers")
        .json()
        .await
        .expect("a dump");
    let contacts: Vec<String> = dump["contacts"]
        .as_array()
        .expect("the dump lists contacts")
        .iter()
        .take(3)
        .map(|c| c["id"].as_str().expect("an id").to_owned())
        .collect();
    let today_noon = chrono::Local::now()
        .date_naive()
        .and_hms_opt(12, 0, 0)
        .expect("noon exists")
        .and_local_timezone(chrono::Local)
        .earliest()
        .expect("noon is a local time")
        .with_timezone(&chrono::Utc);
    let days = chrono::Duration::days;
    for (i, contact) in contacts.iter().enumerate() {
        for (title, due) in [
            (format!("Call back today #{i}"), today_noon),
            (format!("Send the proposal #{i}"), today_noon + days(3)),
            (
                format!("Chase the invoice #{i}"),
                today_noon - days(2 + i as i64),
            ),
        ] {
            let created = client
                .post(admin(format!("locations/{location}/tasks")))
                .json(&task_body(contact, &title, due))
                .send()
                .await
                .expect("the simulator answers");
            assert!(created.status().is_success(), "{}", created.status());
        }
    }

    sync.refresh(&location, SyncMode::Full)
        .await
        .expect("the first sync starts");
    assert!(
        sync.wait_idle(&location, Duration::from_secs(120)).await,
        "the first sync ends"
    );
    // From now on the simulator's admin writes reach the gateway as signed webhooks.
    client
        .patch(admin("settings".into()))
        .json(&serde_json::json!({ "webhookUrl": format!("{base}/webhooks/ghl") }))
        .send()
        .await
        .expect("the simulator answers")
        .error_for_status()
        .expect("the webhook target is set");

    let key = ghl_gateway::auth::generate_key(
        Some("views test".into()),
        std::slice::from_ref(&location),
        chrono::Utc::now().timestamp_millis(),
    );
    store.insert_api_key(key.row).await.expect("stores the key");

    let shots = if std::env::var_os("UPDATE_SCREENSHOTS").is_some_and(|v| v == "1") {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("docs")
    } else {
        Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard-views")
    };
    let run = tokio::process::Command::new("node")
        .arg(driver_dir().join("views.mjs"))
        .args([&base, &key.key, &location, &sim.base_url])
        .arg(&shots)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(180), run)
        .await
        .expect("the browser test ends within 3 minutes")
        .expect("node starts");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the views browser test failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        output.status
    );
    for name in ["contacts", "contact", "pipeline", "due"] {
        let shot = shots.join(format!("dashboard-{name}.png"));
        let size = std::fs::metadata(&shot)
            .unwrap_or_else(|_| panic!("{} was saved", shot.display()))
            .len();
        assert!(size < 300 * 1024, "{}: {size} bytes", shot.display());
    }
    say(&format!("views browser test passed\n{stdout}"));
}
