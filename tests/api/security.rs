//! Access control and abuse limits over HTTP: every root field and nested path with every kind of
//! bad caller, one test per limit (the error at the limit, success just below), CORS, the secrets
//! key at start-up, and logs free of keys.

use std::sync::{Arc, Mutex};

use ghl_gateway::app::App;
use ghl_gateway::auth::{self, AuthConfig};
use ghl_gateway::domain::{Contact, CustomFieldValue, Opportunity, Task};
use ghl_gateway::store::{Page, Store};
use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use serde_json::{Value, json};

use crate::helpers::*;

/// Strings only location B's rows hold: none may reach a caller of location A.
const FOREIGN: [&str; 5] = [
    "loc-b-c0",
    "loc-b-user",
    "loc-b-pipe",
    "loc-b-cf",
    "Location loc-b",
];

fn foreign_in(text: &str) -> Vec<&'static str> {
    FOREIGN.into_iter().filter(|m| text.contains(m)).collect()
}

struct Reply {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    text: String,
    json: Value,
}

async fn post(app: &TestApp, authorization: Option<&str>, body: &Value) -> Reply {
    let mut request = app
        .client
        .post(format!("{}/graphql", app.base))
        .header(CONTENT_TYPE, "application/json")
        .body(body.to_string());
    if let Some(value) = authorization {
        request = request.header(AUTHORIZATION, value);
    }
    let response = request.send().await.expect("the gateway answers");
    let status = response.status();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap();
    let json = serde_json::from_str(&text).unwrap_or(Value::Null);
    Reply {
        status,
        headers,
        text,
        json,
    }
}

async fn query(app: &TestApp, key: &str, query: &str, variables: Value) -> Reply {
    post(
        app,
        Some(&format!("Bearer {key}")),
        &json!({ "query": query, "variables": variables }),
    )
    .await
}

fn code(reply: &Reply) -> &str {
    reply.json["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or("")
}

/// A key for `locations`, stored; returns (id, key).
async fn create_key(store: &Store, locations: &[&str]) -> (String, String) {
    let locations: Vec<String> = locations.iter().map(|l| l.to_string()).collect();
    let new = auth::generate_key(Some("test".into()), &locations, 1);
    let id = new.row.id.clone();
    store.insert_api_key(new.row).await.unwrap();
    (id, new.key)
}

/// Two locations, and in A a contact whose references point into B (as if GHL sent them): an
/// assignee, a custom field, a task assignee, an opportunity's pipeline and stage.
async fn two_locations(store: &Store) {
    load_fixture(store, "loc-a", 6).await;
    load_fixture(store, "loc-b", 6).await;
    let contact = Contact {
        id: "loc-a-poisoned".into(),
        location_id: "loc-a".into(),
        name: Some("Poisoned".into()),
        assigned_to: Some("loc-b-user-0".into()),
        custom_fields: vec![CustomFieldValue {
            field_id: "loc-b-cf-score".into(),
            value: json!(1),
        }],
        ..Contact::default()
    };
    store
        .write_page("loc-a", 1, Page::Contacts(&[contact]), None)
        .await
        .unwrap();
    let task = Task {
        id: "loc-a-poisoned-t".into(),
        location_id: "loc-a".into(),
        contact_id: Some("loc-a-poisoned".into()),
        assigned_to: Some("loc-b-user-1".into()),
        ..Task::default()
    };
    store
        .write_page("loc-a", 1, Page::Tasks(&[task]), None)
        .await
        .unwrap();
    let opportunity = Opportunity {
        id: "loc-a-poisoned-opp".into(),
        location_id: "loc-a".into(),
        contact_id: Some("loc-a-poisoned".into()),
        pipeline_id: Some("loc-b-pipe-0".into()),
        stage_id: Some("loc-b-pipe-0-stage-0".into()),
        assigned_to: Some("loc-b-user-0".into()),
        ..Opportunity::default()
    };
    store
        .write_page("loc-a", 1, Page::Opportunities(&[opportunity]), None)
        .await
        .unwrap();
}

/// Every root field, and the nested paths that lead from one object to another. `$id` is the
/// target: a location or contact of B, or an id that exists nowhere.
const CASES: [(&str, &str, &str, &str); 8] = [
    (
        "locations",
        "{ locations { id name pipelines { id } } }",
        "",
        "",
    ),
    (
        "location",
        "query($id: ID!) { location(id: $id) { id name freshness { stale } pipelines { id name stages { id name } } } }",
        "loc-b",
        "loc-nowhere",
    ),
    (
        "contacts",
        "query($id: ID!) { contacts(locationId: $id) { totalCount nodes { id name } } }",
        "loc-b",
        "loc-nowhere",
    ),
    (
        "contact",
        "query($id: ID!) { contact(id: $id) { id name assignedTo { id } customFields { name } tasks { id contact { id } } conversations { id contact { id } } opportunities { id pipeline { id } stage { id } contact { id } } } }",
        "loc-b-c000003",
        "nowhere-c000003",
    ),
    (
        "syncStatus",
        "query($id: ID!) { syncStatus(locationId: $id) { state lastJob { id } freshness { stale } } }",
        "loc-b",
        "loc-nowhere",
    ),
    (
        "references out of the caller's location",
        r#"{ contact(id: "loc-a-poisoned") { id assignedTo { id name } customFields { name fieldKey dataType }
             tasks { id assignedTo { id } contact { id } }
             opportunities { id assignedTo { id } contact { id } pipeline { id name stages { id } } stage { id name } } } }"#,
        "",
        "",
    ),
    (
        "refreshLocation",
        "mutation($id: ID!) { refreshLocation(locationId: $id, mode: FULL) { id joined stages { name } } }",
        "loc-b",
        "loc-nowhere",
    ),
    (
        "a page of the caller's location",
        r#"{ contacts(locationId: "loc-a", first: 50) { nodes { id assignedTo { id } customFields { name }
             tasks { assignedTo { id } contact { id } } opportunities { pipeline { id } stage { id } } } } }"#,
        "",
        "",
    ),
];

#[tokio::test]
async fn no_entry_point_lets_a_caller_past_its_locations() {
    for db in databases().await {
        let app = spawn_app_with(&db.url, |c| c.http.auth.allow_anonymous = false).await;
        two_locations(&app.store).await;
        let (_, key_a) = create_key(&app.store, &["loc-a"]).await;
        let (revoked_id, revoked) = create_key(&app.store, &["loc-a", "loc-b"]).await;
        assert!(app.store.revoke_api_key(&revoked_id, 2).await.unwrap());
        let wrong = format!("ghlk_{}", "A".repeat(43));

        let refused: [(&str, Option<String>); 7] = [
            ("no key", None),
            ("not bearer", Some(format!("Basic {key_a}"))),
            ("malformed key", Some("Bearer not-a-key".into())),
            ("empty bearer", Some("Bearer ".into())),
            ("wrong key", Some(format!("Bearer {wrong}"))),
            ("revoked key", Some(format!("Bearer {revoked}"))),
            ("wrong admin key", Some(format!("Bearer {ADMIN_KEY}x"))),
        ];
        for (case, query_text, target, unknown) in CASES {
            let variables = json!({ "id": target });
            for (who, authorization) in &refused {
                let reply = post(
                    &app,
                    authorization.as_deref(),
                    &json!({ "query": query_text, "variables": variables }),
                )
                .await;
                let context = format!("{}: {case} with {who}: {}", db.name, reply.text);
                assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{context}");
                assert_eq!(code(&reply), "UNAUTHENTICATED", "{context}");
                assert!(reply.json.get("data").is_none(), "{context}");
                assert_eq!(reply.headers["www-authenticate"], "Bearer", "{context}");
                assert!(foreign_in(&reply.text).is_empty(), "{context}");
            }

            // Location A's key: nothing of B, and B answers exactly like an id that exists nowhere.
            let reply = query(&app, &key_a, query_text, variables.clone()).await;
            let context = format!("{}: {case} with A's key: {}", db.name, reply.text);
            assert_eq!(reply.status, StatusCode::OK, "{context}");
            assert_eq!(foreign_in(&reply.text), Vec::<&str>::new(), "{context}");
            if !target.is_empty() {
                let nowhere = query(&app, &key_a, query_text, json!({ "id": unknown })).await;
                assert_eq!(
                    reply.text,
                    nowhere.text.replace(unknown, target),
                    "{context}: B must answer like an unknown id"
                );
            }
            // The operator sees B: the checks above could have failed.
            let admin = query(&app, ADMIN_KEY, query_text, variables.clone()).await;
            let context = format!("{}: {case} as admin: {}", db.name, admin.text);
            assert_eq!(admin.status, StatusCode::OK, "{context}");
            if case == "refreshLocation" {
                // Past the guard, B has no GHL credentials to sync with.
                assert_eq!(code(&admin), "UPSTREAM_UNAVAILABLE", "{context}");
            } else if case == "syncStatus" {
                // A location never synced has nothing of its own to show but its state.
                assert_eq!(
                    admin.json["data"]["syncStatus"]["state"], "IDLE",
                    "{context}"
                );
            } else {
                assert!(!foreign_in(&admin.text).is_empty(), "{context}");
            }
        }

        // What A's key does see, and the codes of the refusals.
        let reply = query(&app, &key_a, CASES[0].1, json!({})).await;
        assert_eq!(
            reply.json["data"]["locations"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| l["id"].as_str().unwrap())
                .collect::<Vec<_>>(),
            ["loc-a"],
            "{}",
            reply.text
        );
        for (index, expected) in [(1, "null"), (2, "NOT_FOUND"), (3, "null"), (4, "NOT_FOUND")] {
            let reply = query(
                &app,
                &key_a,
                CASES[index].1,
                json!({ "id": CASES[index].2 }),
            )
            .await;
            if expected == "null" {
                assert!(reply.json["errors"].is_null(), "{}", reply.text);
                assert_eq!(reply.json["data"].as_object().unwrap().len(), 1);
                assert!(
                    reply.json["data"]
                        .as_object()
                        .unwrap()
                        .values()
                        .all(Value::is_null)
                );
            } else {
                assert_eq!(code(&reply), expected, "{}", reply.text);
            }
        }
        let poisoned = query(&app, &key_a, CASES[5].1, json!({})).await;
        let contact = &poisoned.json["data"]["contact"];
        assert_eq!(contact["id"], "loc-a-poisoned", "{}", poisoned.text);
        assert!(contact["assignedTo"].is_null());
        assert!(contact["opportunities"][0]["pipeline"].is_null());
        assert!(contact["opportunities"][0]["stage"].is_null());
        assert!(contact["customFields"][0]["name"].is_null());

        // GET is guarded like POST.
        let response = app
            .client
            .get(format!("{}/graphql?query={{locations{{id}}}}", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        let response = app
            .client
            .get(format!("{}/graphql?query={{locations{{id}}}}", app.base))
            .bearer_auth(&key_a)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
}

#[tokio::test]
async fn keys_made_by_the_command_line_work_until_revoked() {
    for db in databases().await {
        let app = spawn_app_with(&db.url, |c| c.http.auth.allow_anonymous = false).await;
        two_locations(&app.store).await;
        let cli = |args: &[&str]| {
            std::process::Command::new(env!("CARGO_BIN_EXE_ghl-gateway"))
                .args(args)
                .env("DATABASE_URL", &db.url)
                .env("RUST_LOG", "warn")
                .output()
                .expect("the binary runs")
        };
        let created = cli(&["keys", "create", "--location", "loc-b", "--name", "ci"]);
        assert!(created.status.success(), "{created:?}");
        let stdout = String::from_utf8(created.stdout).unwrap();
        let field = |name: &str| {
            stdout
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_owned())
                .unwrap_or_else(|| panic!("no {name} in {stdout}"))
        };
        let (id, key) = (field("key id:"), field("key:"));
        assert!(
            key.starts_with("ghlk_") && id.starts_with("key_"),
            "{stdout}"
        );

        let reply = query(&app, &key, "{ locations { id } }", json!({})).await;
        assert_eq!(reply.json["data"]["locations"], json!([{ "id": "loc-b" }]));

        let listed = cli(&["keys", "list"]);
        let listing = String::from_utf8(listed.stdout).unwrap();
        assert!(listing.contains(&id) && listing.contains("active") && listing.contains("loc-b"));
        assert!(!listing.contains(&key), "list never shows a key");

        assert!(cli(&["keys", "revoke", &id]).status.success());
        assert!(
            !cli(&["keys", "revoke", &id]).status.success(),
            "already revoked"
        );
        let reply = query(&app, &key, "{ locations { id } }", json!({})).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
        let listing = String::from_utf8(cli(&["keys", "list"]).stdout).unwrap();
        assert!(listing.contains("revoked"), "{listing}");
        // The key itself is stored nowhere: only its hash.
        let stored = app.store.api_keys().await.unwrap();
        assert!(
            stored
                .iter()
                .all(|k| k.hash != key && !k.hash.contains(&key[5..]))
        );
        // The last use is written off the request path: give that write a moment.
        let mut recorded = false;
        for _ in 0..100 {
            let keys = app.store.api_keys().await.unwrap();
            if keys.iter().any(|k| k.id == id && k.last_used_at.is_some()) {
                recorded = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert!(recorded, "the key's last use is recorded");
    }
}

/// A limit test: an app with `adjust`, the location of the fixture, and the admin key.
async fn limited_app(
    adjust: impl FnOnce(&mut ghl_gateway::cli::ServeConfig),
) -> (TestDb, TestApp) {
    let db = sqlite().await;
    let app = spawn_app_with(&db.url, adjust).await;
    load_fixture(&app.store, "loc-a", 3).await;
    (db, app)
}

fn assert_limit(reply: &Reply, limit: &str, flag: &str) {
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text);
    assert_eq!(code(reply), "BAD_USER_INPUT", "{}", reply.text);
    assert!(reply.json.get("data").is_none(), "{}", reply.text);
    let message = reply.json["errors"][0]["message"].as_str().unwrap();
    assert!(message.contains(flag), "{message}");
    assert_eq!(reply.json["errors"][0]["extensions"]["limit"], limit);
}

fn assert_ok(reply: &Reply) {
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert!(reply.json["errors"].is_null(), "{}", reply.text);
}

#[tokio::test]
async fn query_depth_is_limited() {
    let (_db, app) = limited_app(|c| c.graphql.limits.max_query_depth = 5).await;
    // contacts > nodes > tasks > contact > id: 5 levels.
    let at_limit = r#"{ contacts(locationId: "loc-a") { nodes { tasks { contact { id } } } } }"#;
    assert_ok(&query(&app, ADMIN_KEY, at_limit, json!({})).await);
    let over =
        r#"{ contacts(locationId: "loc-a") { nodes { tasks { contact { tasks { id } } } } } }"#;
    let reply = query(&app, ADMIN_KEY, over, json!({})).await;
    assert_limit(&reply, "depth", "--max-query-depth");
    assert!(reply.text.contains("6 levels"), "{}", reply.text);
}

#[tokio::test]
async fn query_complexity_is_weighted_by_first() {
    // `contacts(first: N) { nodes { id } }` costs N * 2 + 1.
    let (_db, app) = limited_app(|c| c.graphql.limits.max_query_complexity = 201).await;
    let page = "query($n: Int) { contacts(locationId: \"loc-a\", first: $n) { nodes { id } } }";
    assert_ok(&query(&app, ADMIN_KEY, page, json!({ "n": 100 })).await);
    let reply = query(&app, ADMIN_KEY, page, json!({ "n": 101 })).await;
    assert_limit(&reply, "complexity", "--max-query-complexity");
    assert!(reply.text.contains("203"), "{}", reply.text);
    // The default admits the full dashboard at the largest page.
    let (_db, app) = limited_app(|_| {}).await;
    let reply = query(
        &app,
        ADMIN_KEY,
        DASHBOARD_QUERY,
        json!({ "loc": "loc-a", "first": 500 }),
    )
    .await;
    assert_ok(&reply);
}

#[tokio::test]
async fn aliases_are_limited() {
    let (_db, app) = limited_app(|c| c.graphql.limits.max_query_aliases = 3).await;
    let aliases = |n: usize| {
        let fields: Vec<String> = (0..n)
            .map(|i| format!("a{i}: locations {{ id }}"))
            .collect();
        format!("{{ {} }}", fields.join(" "))
    };
    assert_ok(&query(&app, ADMIN_KEY, &aliases(3), json!({})).await);
    let reply = query(&app, ADMIN_KEY, &aliases(4), json!({})).await;
    assert_limit(&reply, "aliases", "--max-query-aliases");
}

#[tokio::test]
async fn batches_are_limited() {
    let (_db, app) = limited_app(|c| c.http.max_batch_operations = 2).await;
    let batch = |n: usize| Value::Array(vec![json!({ "query": "{ locations { id } }" }); n]);
    let reply = post(&app, Some(&format!("Bearer {ADMIN_KEY}")), &batch(2)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.json.as_array().map(Vec::len), Some(2));
    let reply = post(&app, Some(&format!("Bearer {ADMIN_KEY}")), &batch(3)).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text);
    assert_eq!(code(&reply), "BAD_USER_INPUT");
    assert!(
        reply.text.contains("--max-batch-operations"),
        "{}",
        reply.text
    );
}

#[tokio::test]
async fn page_size_is_limited() {
    let (_db, app) = limited_app(|_| {}).await;
    let page = "query($n: Int) { contacts(locationId: \"loc-a\", first: $n) { totalCount } }";
    assert_ok(&query(&app, ADMIN_KEY, page, json!({ "n": 500 })).await);
    let reply = query(&app, ADMIN_KEY, page, json!({ "n": 501 })).await;
    assert_eq!(code(&reply), "BAD_USER_INPUT", "{}", reply.text);
    assert!(reply.text.contains("500"), "{}", reply.text);
}

#[tokio::test]
async fn request_bodies_are_limited() {
    let (_db, app) = limited_app(|c| c.http.max_body_bytes = 1000).await;
    let body = |size: usize| {
        let base = json!({ "query": "{ locations { id } }" }).to_string();
        // JSON allows any amount of whitespace after the value.
        format!("{base}{}", " ".repeat(size - base.len()))
    };
    let send = |text: String| {
        app.client
            .post(format!("{}/graphql", app.base))
            .header(CONTENT_TYPE, "application/json")
            .bearer_auth(ADMIN_KEY)
            .body(text)
            .send()
    };
    assert_eq!(send(body(1000)).await.unwrap().status(), StatusCode::OK);
    assert_eq!(
        send(body(1001)).await.unwrap().status(),
        StatusCode::PAYLOAD_TOO_LARGE
    );
}

#[tokio::test]
async fn each_key_has_its_own_request_rate() {
    let (_db, app) = limited_app(|c| {
        c.http.auth.rate_limit_per_minute = 60;
        c.http.auth.rate_limit_burst = 3;
    })
    .await;
    let (_, key) = create_key(&app.store, &["loc-a"]).await;
    for _ in 0..3 {
        assert_ok(&query(&app, &key, "{ locations { id } }", json!({})).await);
    }
    let reply = query(&app, &key, "{ locations { id } }", json!({})).await;
    assert_eq!(
        reply.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        reply.text
    );
    assert_eq!(code(&reply), "RATE_LIMITED");
    let retry: u64 = reply.headers[RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    // Another key is not slowed down by the first.
    assert_ok(&query(&app, ADMIN_KEY, "{ locations { id } }", json!({})).await);
}

/// graphql-js's `getIntrospectionQuery({ inputValueDeprecation: true, typeDepth: 9 })`, the
/// largest variant GraphiQL sends.
const INTROSPECTION_QUERY: &str = r#"
    query IntrospectionQuery {
      __schema {
        queryType { name kind }
        mutationType { name kind }
        subscriptionType { name kind }
        types {
          ...FullType
        }
        directives {
          name
          description
          locations
          args(includeDeprecated: true) {
            ...InputValue
          }
        }
      }
    }

    fragment FullType on __Type {
      kind
      name
      description
      fields(includeDeprecated: true) {
        name
        description
        args(includeDeprecated: true) {
          ...InputValue
        }
        type {
          ...TypeRef
        }
        isDeprecated
        deprecationReason
      }
      inputFields(includeDeprecated: true) {
        ...InputValue
      }
      interfaces {
        ...TypeRef
      }
      enumValues(includeDeprecated: true) {
        name
        description
        isDeprecated
        deprecationReason
      }
      possibleTypes {
        ...TypeRef
      }
    }

    fragment InputValue on __InputValue {
      name
      description
      type { ...TypeRef }
      defaultValue
      isDeprecated
      deprecationReason
    }

    fragment TypeRef on __Type {
      kind
      name
      ofType {
        name
        kind
        ofType {
          name
          kind
          ofType {
            name
            kind
            ofType {
              name
              kind
              ofType {
                name
                kind
                ofType {
                  name
                  kind
                  ofType {
                    name
                    kind
                    ofType {
                      name
                      kind
                      ofType {
                        name
                        kind
                      }
                    }
                  }
                }
              }
            }
          }
        }
      }
    }
"#;

#[tokio::test]
async fn graphiql_introspection_passes_the_default_limits_and_can_be_turned_off() {
    let (_db, app) = limited_app(|_| {}).await;
    let reply = query(&app, ADMIN_KEY, INTROSPECTION_QUERY, json!({})).await;
    assert_ok(&reply);
    assert_eq!(reply.json["data"]["__schema"]["queryType"]["name"], "Query");

    let (_db, app) = limited_app(|c| c.graphql.limits.disable_introspection = true).await;
    let reply = query(&app, ADMIN_KEY, INTROSPECTION_QUERY, json!({})).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text);
    assert_eq!(code(&reply), "FORBIDDEN", "{}", reply.text);
    assert!(
        reply.text.contains("--disable-introspection"),
        "{}",
        reply.text
    );
    let by_type = query(
        &app,
        ADMIN_KEY,
        "{ __type(name: \"Query\") { name } }",
        json!({}),
    )
    .await;
    assert_eq!(code(&by_type), "FORBIDDEN", "{}", by_type.text);
    // `__typename` is not introspection of the schema: clients add it everywhere.
    assert_ok(
        &query(
            &app,
            ADMIN_KEY,
            "{ __typename locations { __typename id } }",
            json!({}),
        )
        .await,
    );
    assert_ok(&query(&app, ADMIN_KEY, "{ locations { id } }", json!({})).await);
}

#[tokio::test]
async fn cors_answers_only_the_allowed_origins() {
    let (_db, app) =
        limited_app(|c| c.http.cors_origins = vec!["https://app.example.com".into()]).await;
    let preflight = |origin: &'static str| {
        app.client
            .request(reqwest::Method::OPTIONS, format!("{}/graphql", app.base))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization,content-type",
            )
            .send()
    };
    let allowed = preflight("https://app.example.com").await.unwrap();
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    let headers = allowed.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(headers.contains("authorization"), "{headers}");
    let other = preflight("https://evil.example.com").await.unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());

    let response = app
        .client
        .post(format!("{}/graphql", app.base))
        .header("origin", "https://app.example.com")
        .bearer_auth(ADMIN_KEY)
        .json(&json!({ "query": "{ locations { id } }" }))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
}

#[tokio::test]
async fn start_up_refuses_stored_tokens_without_the_secrets_key() {
    for db in databases().await {
        use ghl_gateway::store::entities::credential;
        use sea_orm::{ActiveModelTrait, IntoActiveModel};
        let config = |secret: Option<&str>| {
            let mut config = ghl_gateway::cli::ServeConfig {
                http: ghl_gateway::http::HttpConfig {
                    listen: "127.0.0.1:0".into(),
                    ..Default::default()
                },
                database: ghl_gateway::store::DatabaseConfig::new(&db.url),
                graphql: Default::default(),
                upstream: ghl_gateway::upstream::UpstreamConfig::new("http://127.0.0.1:9"),
                sync: Default::default(),
                secrets: Default::default(),
            };
            config.secrets.secret_key = secret.map(str::to_owned);
            config
        };
        // No tokens yet: starts without a key.
        assert!(App::build(config(None)).await.is_ok());
        credential::Model {
            location_id: "loc-a".into(),
            kind: "private_integration".into(),
            access_token: Some("v1:stored".into()),
            refresh_token: None,
            expires_at: None,
            company_id: None,
            updated_at: 1,
        }
        .into_active_model()
        .reset_all()
        .insert(db.store.connection())
        .await
        .unwrap();
        assert!(db.store.has_stored_tokens().await.unwrap());
        let error = App::build(config(None))
            .await
            .err()
            .expect("refused")
            .to_string();
        assert!(error.contains("GATEWAY_SECRET_KEY"), "{error}");
        let error = App::build(config(Some("too-short")))
            .await
            .err()
            .expect("refused");
        assert!(format!("{error:#}").contains("openssl rand"), "{error:#}");
        let app = App::build(config(Some("q83vASNFZ4mrze8BI0VniavN7wEjRWeJq83vASNFZ4k=")))
            .await
            .expect("starts with the key");
        let cipher = app.cipher().expect("a cipher");
        assert_eq!(cipher.decrypt(&cipher.encrypt("t").unwrap()).unwrap(), "t");
        // A weak operator key is refused too.
        let mut weak = config(Some("q83vASNFZ4mrze8BI0VniavN7wEjRWeJq83vASNFZ4k="));
        weak.http.auth = AuthConfig {
            admin_key: Some("admin".into()),
            ..AuthConfig::default()
        };
        assert!(App::build(weak).await.is_err());
    }
}

/// A `Write` into a shared buffer, for capturing logs.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

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

// One thread: the app's tasks run where the capturing subscriber is installed.
#[tokio::test(flavor = "current_thread")]
async fn failed_logins_log_no_key_or_header() {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(captured.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let db = sqlite().await;
    let app = spawn_app_with(&db.url, |c| c.http.auth.allow_anonymous = false).await;
    two_locations(&app.store).await;
    let (revoked_id, revoked) = create_key(&app.store, &["loc-a"]).await;
    app.store.revoke_api_key(&revoked_id, 2).await.unwrap();
    let (_, good) = create_key(&app.store, &["loc-a"]).await;
    let unknown = format!("ghlk_{}", "Z".repeat(43));
    let wrong_admin = format!("{ADMIN_KEY}-wrong");
    let secrets = [
        revoked.as_str(),
        good.as_str(),
        unknown.as_str(),
        wrong_admin.as_str(),
        ADMIN_KEY,
    ];
    for token in [&revoked, &unknown, &wrong_admin] {
        let reply = query(&app, token, "{ locations { id } }", json!({})).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
        assert!(
            !reply.text.contains(token.as_str()),
            "the error echoes no key"
        );
    }
    for token in [&good, &ADMIN_KEY.to_owned()] {
        assert_ok(&query(&app, token, "{ locations { id } }", json!({})).await);
    }
    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("request refused: not authenticated"),
        "the logs were captured: {logs}"
    );
    for secret in secrets {
        assert!(!logs.contains(secret), "a key is in the logs");
        assert!(
            !logs.contains(&secret[..20]),
            "a key's prefix is in the logs"
        );
    }
    assert!(
        !logs.to_ascii_lowercase().contains("bearer "),
        "an Authorization header is in the logs"
    );
}

// One thread: the sync's tasks run where the capturing subscriber is installed.
#[tokio::test(flavor = "current_thread")]
async fn a_full_sync_with_retries_and_a_token_refresh_logs_no_token() {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(captured.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let db = sqlite().await;
    let sim = spawn_sim(700).await;
    let loc = sim.locations[0].id.clone();
    // Faults make the client log its retries; OAuth makes it refresh a token.
    let spec = ghl_gateway::sim::FaultSpec {
        error503: 0.3,
        ..Default::default()
    };
    sim.set_faults(ghl_gateway::sim::FaultConfig {
        default: spec,
        endpoints: Default::default(),
    })
    .unwrap();
    let base_url = sim.base_url.clone();
    let (client_id, client_secret) = (sim.client_id.clone(), sim.client_secret.clone());
    let app = spawn_app_with(&db.url, |c| {
        c.upstream.base_url = base_url;
        c.upstream.backoff_ms = 5;
        c.upstream.client_id = Some(client_id);
        c.upstream.client_secret = Some(client_secret.into());
    })
    .await;
    let code = sim.auth_code("Location", Some(&loc)).unwrap();
    app.sync.client().install_with_code(&code).await.unwrap();
    let (_, key) = create_key(&app.store, &[loc.as_str()]).await;
    let cipher = ghl_gateway::secrets::Cipher::from_key_text(TEST_SECRET_KEY).unwrap();
    let plaintext = |row: &ghl_gateway::store::entities::credential::Model| {
        [row.access_token.as_deref(), row.refresh_token.as_deref()]
            .into_iter()
            .flatten()
            .map(|t| cipher.decrypt(t).expect("tokens are encrypted at rest"))
            .collect::<Vec<_>>()
    };
    let issued = plaintext(&app.store.credential(&loc).await.unwrap().unwrap());
    // The access token expires: the sync must refresh it (and log that, without it).
    assert!(sim.expire_token(&issued[0]));
    let refresh = query(
        &app,
        &key,
        "mutation($loc: ID!) { refreshLocation(locationId: $loc, mode: FULL) { id } }",
        json!({ "loc": loc }),
    )
    .await;
    assert_ok(&refresh);
    assert!(
        app.sync
            .wait_idle(&loc, std::time::Duration::from_secs(120))
            .await
    );
    let job = app.store.last_job(&loc).await.unwrap().unwrap();
    assert_eq!(job.state, "SUCCEEDED", "{job:?}");

    let renewed = plaintext(&app.store.credential(&loc).await.unwrap().unwrap());
    assert_ne!(renewed, issued, "the sync refreshed the token");

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("retrying a GHL call"),
        "the retries were logged"
    );
    assert!(
        logs.contains("renewed the GHL access token"),
        "the refresh was logged"
    );
    assert!(logs.contains("sync finished"), "the sync was logged");
    let mut secrets = vec![
        key.clone(),
        sim.locations[0].pit_token.clone(),
        sim.client_secret.clone(),
    ];
    secrets.extend(issued);
    secrets.extend(renewed);
    for secret in &secrets {
        assert!(!logs.contains(secret.as_str()), "a secret is in the logs");
    }
    for marker in ["sim-at-", "sim-rt-", "pit-", "Bearer "] {
        assert!(!logs.contains(marker), "{marker:?} is in the logs");
    }
}
