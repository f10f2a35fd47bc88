//! Security over HTTP, one subject per module: access control (every root field and nested path
//! with every kind of bad caller), abuse limits (one test per limit: the error at the limit,
//! success just below), CORS, the secrets key at start-up, and logs free of keys and tokens.
//! The helpers they share (a raw request, its reply, keys) are here.

use ghl_gateway::app::App;
use ghl_gateway::auth::{self, AuthConfig};
use ghl_gateway::domain::{Contact, CustomFieldValue, Opportunity, Task};
use ghl_gateway::store::{Page, Store};
use reqwest::StatusCode;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use serde_json::{Value, json};

use crate::helpers::*;

mod access;
mod cors;
mod limits;
mod logs;
mod secrets;

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
        // The media type whose status codes say what happened (400 for a refused document).
        .header(ACCEPT, "application/graphql-response+json")
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

/// A limit test: an app with `adjust`, the location of the fixture, and the admin key.
async fn limited_app(adjust: impl FnOnce(&mut ghl_gateway::app::ServeConfig)) -> (TestDb, TestApp) {
    let db = sqlite().await;
    let app = spawn_app_with(&db.url, adjust).await;
    load_fixture(&app.store, "loc-a", 3).await;
    (db, app)
}

fn assert_ok(reply: &Reply) {
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert!(reply.json["errors"].is_null(), "{}", reply.text);
}
