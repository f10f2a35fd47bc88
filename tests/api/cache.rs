//! The response cache over HTTP: a write to a location makes its next read a miss while other
//! locations stay hits; scopes never share an entry; revoked keys are refused even when their
//! answer is cached; time-dependent fields stay exact; mutations and errors are never cached;
//! ETags and 304; a warm hit runs no SQL beyond the key check.

use chrono::Utc;
use ghl_gateway::auth;
use ghl_gateway::domain::{JobState, SyncJob, SyncMode};
use ghl_gateway::store::{Page, Store};
use reqwest::StatusCode;
use reqwest::header::{ACCEPT, CONTENT_TYPE, ETAG, IF_NONE_MATCH};
use serde_json::{Value, json};

use crate::helpers::*;

/// One answer of `/graphql`: status, `x-cache`, `ETag` and the JSON body.
struct Answer {
    status: StatusCode,
    cache: String,
    etag: Option<String>,
    json: Value,
}

async fn ask(app: &TestApp, key: &str, query: &str, variables: Value) -> Answer {
    let response = app
        .client
        .post(format!("{}/graphql", app.base))
        .bearer_auth(key)
        .header(CONTENT_TYPE, "application/json")
        .header(ACCEPT, "application/json")
        .body(json!({ "query": query, "variables": variables }).to_string())
        .send()
        .await
        .expect("the gateway answers");
    let status = response.status();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let cache = header("x-cache").unwrap_or_default();
    let etag = header(ETAG.as_str());
    let json = response.json().await.unwrap_or(Value::Null);
    Answer {
        status,
        cache,
        etag,
        json,
    }
}

/// A client API key for `locations`, stored; returns (id, key).
async fn key_for(store: &Store, locations: &[&str]) -> (String, String) {
    let locations: Vec<String> = locations.iter().map(|l| l.to_string()).collect();
    let new = auth::generate_key(Some("cache test".into()), &locations, 1);
    let id = new.row.id.clone();
    store.insert_api_key(new.row).await.unwrap();
    (id, new.key)
}

/// A finished job of `location_id` (the location then counts as synced at `finished`).
fn job(location_id: &str, state: JobState, finished_secs_ago: i64) -> SyncJob {
    let now = Utc::now();
    SyncJob {
        id: uuid::Uuid::new_v4().to_string(),
        location_id: location_id.into(),
        mode: SyncMode::Full,
        state,
        mark: 1,
        started_at: now - chrono::Duration::seconds(finished_secs_ago + 5),
        finished_at: state
            .is_finished()
            .then(|| now - chrono::Duration::seconds(finished_secs_ago)),
        error: None,
    }
}

const PAGE: &str = "query Page($loc: ID!) { contacts(locationId: $loc, first: 3, orderBy: {field: NAME, direction: ASC}) { totalCount nodes { id firstName tasks { title } } } }";

#[tokio::test]
async fn a_write_to_a_location_makes_its_next_read_a_miss_and_leaves_others_hits() {
    for db in databases().await {
        let app = spawn_app(&db.url).await;
        let a = load_fixture(&app.store, "loc-a", 6).await;
        load_fixture(&app.store, "loc-b", 6).await;
        let read = |loc: &'static str| ask(&app, ADMIN_KEY, PAGE, json!({ "loc": loc }));
        assert_eq!(read("loc-a").await.cache, "miss", "{}", db.name);
        assert_eq!(read("loc-b").await.cache, "miss");
        let warm = read("loc-a").await;
        assert_eq!(warm.cache, "hit");
        assert_eq!(read("loc-b").await.cache, "hit");

        // A sync page renames the first contact of loc-a.
        let first = warm.json["data"]["contacts"]["nodes"][0]["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let mut contact = a.contacts.iter().find(|c| c.id == first).unwrap().clone();
        contact.first_name = Some("Aaron-renamed".into());
        app.store
            .write_page("loc-a", 2, Page::Contacts(&[contact]), None)
            .await
            .unwrap();
        let after = read("loc-a").await;
        assert_eq!(after.cache, "miss", "a write to loc-a");
        assert_eq!(
            after.json["data"]["contacts"]["nodes"][0]["firstName"],
            "Aaron-renamed"
        );
        assert_ne!(after.etag, warm.etag);
        assert_eq!(read("loc-b").await.cache, "hit", "loc-b did not change");
        assert_eq!(read("loc-a").await.cache, "hit");

        // A job state change is a change of the location's sync state.
        let status = "query S($loc: ID!) { syncStatus(locationId: $loc) { state } }";
        let ask_status = || ask(&app, ADMIN_KEY, status, json!({ "loc": "loc-a" }));
        assert_eq!(
            ask_status().await.json["data"]["syncStatus"]["state"],
            "IDLE"
        );
        assert_eq!(ask_status().await.cache, "hit");
        app.store
            .insert_job(&job("loc-a", JobState::Running, 0))
            .await
            .unwrap();
        let running = ask_status().await;
        assert_eq!(running.cache, "miss");
        assert_eq!(running.json["data"]["syncStatus"]["state"], "RUNNING");
        assert_eq!(read("loc-b").await.cache, "hit", "{}", db.name);
    }
}

#[tokio::test]
async fn callers_with_different_scopes_never_share_an_entry_and_revoked_keys_are_refused() {
    for db in databases().await {
        let app = spawn_app_with(&db.url, |c| c.http.auth.allow_anonymous = false).await;
        load_fixture(&app.store, "loc-a", 2).await;
        load_fixture(&app.store, "loc-b", 2).await;
        let (id_a, key_a) = key_for(&app.store, &["loc-a"]).await;
        let (_, key_b) = key_for(&app.store, &["loc-b"]).await;
        let (_, key_a2) = key_for(&app.store, &["loc-a"]).await;
        let locations = "{ locations { id } }";
        let ids = |answer: &Answer| answer.json["data"]["locations"].to_string();
        for _ in 0..2 {
            assert_eq!(
                ids(&ask(&app, &key_a, locations, json!({})).await),
                r#"[{"id":"loc-a"}]"#
            );
            assert_eq!(
                ids(&ask(&app, &key_b, locations, json!({})).await),
                r#"[{"id":"loc-b"}]"#
            );
            assert_eq!(
                ids(&ask(&app, ADMIN_KEY, locations, json!({})).await),
                r#"[{"id":"loc-a"},{"id":"loc-b"}]"#
            );
        }
        // Another key of the same scope may share it: it sees exactly the same data.
        let same_scope = ask(&app, &key_a2, locations, json!({})).await;
        assert_eq!(same_scope.cache, "hit");
        assert_eq!(ids(&same_scope), r#"[{"id":"loc-a"}]"#);
        // A key refused a location gets the refusal, never a cached answer of that location.
        ask(&app, &key_a, PAGE, json!({ "loc": "loc-a" })).await;
        let refused = ask(&app, &key_b, PAGE, json!({ "loc": "loc-a" })).await;
        // (NOT_FOUND: a key does not learn which other locations exist.)
        assert_eq!(refused.json["errors"][0]["extensions"]["code"], "NOT_FOUND");
        assert!(refused.json["data"].is_null(), "{}", refused.json);
        assert_eq!(refused.cache, "miss");

        // Revoked by another process (the command line): refused at once, cache or not.
        assert_eq!(ask(&app, &key_a, locations, json!({})).await.cache, "hit");
        let revoke = std::process::Command::new(env!("CARGO_BIN_EXE_ghl-gateway"))
            .args(["keys", "revoke", &id_a])
            .env("DATABASE_URL", &db.url)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        assert!(revoke.status.success(), "{revoke:?}");
        let after = ask(&app, &key_a, locations, json!({})).await;
        assert_eq!(after.status, StatusCode::UNAUTHORIZED, "{}", db.name);
        assert_eq!(
            after.json["errors"][0]["extensions"]["code"],
            "UNAUTHENTICATED"
        );
    }
}

#[tokio::test]
async fn time_dependent_fields_in_a_cached_answer_equal_a_fresh_execution() {
    let db = sqlite().await;
    let app = spawn_app(&db.url).await;
    load_fixture(&app.store, "loc-a", 2).await;
    app.store
        .insert_job(&job("loc-a", JobState::Succeeded, 10))
        .await
        .unwrap();
    let query = "{ location(id: \"loc-a\") { freshness { ageSeconds stale syncing } } }";
    // The same fields under another alias each time: another cache key, a fresh execution.
    let fresh_query = |n: usize| {
        format!(
            "{{ location(id: \"loc-a\") {{ f{n}: freshness {{ ageSeconds stale syncing }} }} }}"
        )
    };
    let freshness = |a: &Answer, field: &str| a.json["data"]["location"][field].clone();
    let first = ask(&app, ADMIN_KEY, query, json!({})).await;
    assert_eq!(first.cache, "miss");
    let mut hits = 0;
    for n in 0..20 {
        let cached = ask(&app, ADMIN_KEY, query, json!({})).await;
        let fresh = ask(&app, ADMIN_KEY, &fresh_query(n), json!({})).await;
        assert_eq!(fresh.cache, "miss");
        let (c, f) = (
            freshness(&cached, "freshness"),
            freshness(&fresh, &format!("f{n}")),
        );
        // The fresh one runs after the cached one: its age is the same, or a second on when
        // the second ticked over in between; stale and syncing never differ.
        let (age_c, age_f) = (
            c["ageSeconds"].as_i64().unwrap(),
            f["ageSeconds"].as_i64().unwrap(),
        );
        assert!(age_f == age_c || age_f == age_c + 1, "{c} vs {f}");
        assert_eq!((&c["stale"], &c["syncing"]), (&f["stale"], &f["syncing"]));
        hits += usize::from(cached.cache == "hit");
    }
    assert!(hits > 0, "the answer was cached at all");
    // Past the next whole second of its age, the entry is not served again.
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    let later = ask(&app, ADMIN_KEY, query, json!({})).await;
    assert_eq!(later.cache, "miss");
    assert!(
        freshness(&later, "freshness")["ageSeconds"].as_i64()
            > freshness(&first, "freshness")["ageSeconds"].as_i64()
    );
    // A sync that starts turns `syncing` on at once.
    app.store
        .insert_job(&job("loc-a", JobState::Queued, 0))
        .await
        .unwrap();
    let syncing = ask(&app, ADMIN_KEY, query, json!({})).await;
    assert_eq!(syncing.cache, "miss");
    assert_eq!(freshness(&syncing, "freshness")["syncing"], true);
}

#[tokio::test]
async fn mutations_and_errors_are_never_cached_and_get_answers_304() {
    let db = sqlite().await;
    let app = spawn_app(&db.url).await;
    load_fixture(&app.store, "loc-a", 2).await;
    let too_many = "{ contacts(locationId: \"loc-a\", first: 501) { totalCount } }";
    for _ in 0..2 {
        let answer = ask(&app, ADMIN_KEY, too_many, json!({})).await;
        assert_eq!(
            answer.json["errors"][0]["extensions"]["code"],
            "BAD_USER_INPUT"
        );
        assert_eq!(answer.cache, "miss");
    }
    let refresh = "mutation { refreshLocation(locationId: \"loc-a\") { joined } }";
    for _ in 0..2 {
        assert_eq!(ask(&app, ADMIN_KEY, refresh, json!({})).await.cache, "miss");
    }
    let introspection = "{ __schema { queryType { name } } }";
    for _ in 0..2 {
        assert_eq!(
            ask(&app, ADMIN_KEY, introspection, json!({})).await.cache,
            "miss"
        );
    }

    let url = format!("{}/graphql?query={{locations{{id}}}}", app.base);
    let get = |etag: Option<String>| {
        let mut request = app.client.get(&url).bearer_auth(ADMIN_KEY);
        if let Some(etag) = etag {
            request = request.header(IF_NONE_MATCH, etag);
        }
        request.send()
    };
    let first = get(None).await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    let headers = first.headers().clone();
    let etag = headers[ETAG].to_str().unwrap().to_owned();
    assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");
    assert_eq!(headers["cache-control"], "private, no-cache");
    assert!(headers["vary"].to_str().unwrap().contains("Authorization"));
    let not_modified = get(Some(etag.clone())).await.unwrap();
    assert_eq!(not_modified.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(not_modified.headers()[ETAG], etag.as_str());
    assert!(not_modified.bytes().await.unwrap().is_empty());
    let other = get(Some("\"not-it\"".into())).await.unwrap();
    assert_eq!(other.status(), StatusCode::OK);
    // A change gives a new body and a new ETag: the old one no longer matches.
    load_fixture(&app.store, "loc-z", 1).await;
    let changed = get(Some(etag.clone())).await.unwrap();
    assert_eq!(changed.status(), StatusCode::OK);
    assert_ne!(changed.headers()[ETAG], etag.as_str());
}

#[tokio::test]
async fn a_warm_hit_runs_no_sql_beyond_the_key_check() {
    for db in databases().await {
        let app = spawn_app_with(&db.url, |c| c.http.auth.allow_anonymous = false).await;
        load_fixture(&app.store, "loc-a", 60).await;
        let (id, key) = key_for(&app.store, &["loc-a"]).await;
        let dashboard = "query Page($loc: ID!) { contacts(locationId: $loc, first: 50) { totalCount freshness { stale syncing } nodes { id name email tags assignedTo { name } customFields { value } tasks { title completed } conversations { unreadCount } opportunities { name stage { name } } } } }";
        let variables = json!({ "loc": "loc-a" });
        let cold_before = app.store.statements();
        assert_eq!(
            ask(&app, &key, dashboard, variables.clone()).await.cache,
            "miss"
        );
        let cold = app.store.statements() - cold_before;
        // The key's last use is written once, off the request path: let it land first.
        wait_for_key_use(&app.store, &id).await;
        let before = app.store.statements();
        for _ in 0..5 {
            let answer = ask(&app, &key, dashboard, variables.clone()).await;
            assert_eq!(answer.cache, "hit");
            assert_eq!(answer.json["data"]["contacts"]["totalCount"], 60);
        }
        let warm = app.store.statements() - before;
        assert_eq!(
            warm, 5,
            "one key lookup per hit, nothing else ({})",
            db.name
        );
        assert!(cold > 5, "the miss read the page: {cold} statements");
    }
}
