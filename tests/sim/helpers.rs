//! Shared helpers of the simulator tests: spawn a small sim and talk to it like a client would.

use std::collections::HashSet;

use ghl_gateway::sim::{Sim, SimArgs, SimHandle};
use reqwest::{Client, Method, Response};
use serde_json::Value;

pub const V: &str = "2021-07-28";

pub async fn spawn(args: SimArgs) -> SimHandle {
    Sim::spawn(args).await.expect("simulator starts")
}

pub async fn small() -> SimHandle {
    spawn(SimArgs {
        contacts: 230,
        locations: 2,
        ..SimArgs::default()
    })
    .await
}

pub fn client() -> Client {
    Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .expect("client builds")
}

/// A GHL call with bearer and Version headers (and the SDK's JSON content type, even on GETs).
pub async fn call(
    sim: &SimHandle,
    method: Method,
    path: &str,
    token: &str,
    version: &str,
    body: Option<Value>,
) -> Response {
    let mut rb = client()
        .request(method, format!("{}{}", sim.base_url, path))
        .header("Authorization", format!("Bearer {token}"))
        .header("Version", version)
        .header("Content-Type", "application/json");
    if let Some(b) = body {
        rb = rb.body(b.to_string());
    }
    rb.send().await.expect("request is answered")
}

pub async fn get(sim: &SimHandle, path: &str, token: &str) -> (u16, Value) {
    let r = call(sim, Method::GET, path, token, V, None).await;
    let status = r.status().as_u16();
    (status, r.json().await.expect("JSON body"))
}

pub async fn post(sim: &SimHandle, path: &str, token: &str, body: Value) -> (u16, Value) {
    let r = call(sim, Method::POST, path, token, V, Some(body)).await;
    let status = r.status().as_u16();
    (status, r.json().await.expect("JSON body"))
}

pub async fn form(
    sim: &SimHandle,
    path: &str,
    bearer: Option<&str>,
    pairs: &[(&str, &str)],
) -> (u16, Value) {
    let body: String = pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", v.replace('+', "%2B").replace(' ', "+")))
        .collect::<Vec<_>>()
        .join("&");
    let mut rb = client()
        .post(format!("{}{}", sim.base_url, path))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .header("Version", V)
        .body(body);
    if let Some(b) = bearer {
        rb = rb.header("Authorization", format!("Bearer {b}"));
    }
    let r = rb.send().await.expect("answered");
    let status = r.status().as_u16();
    (status, r.json().await.expect("JSON body"))
}

/// Ids of one collection in the location's ground truth.
pub fn truth_ids(sim: &SimHandle, loc: &str, kind: &str) -> HashSet<String> {
    sim.dump(loc).expect("location exists")[kind]
        .as_array()
        .expect("array")
        .iter()
        .map(|r| r["id"].as_str().expect("id").to_string())
        .collect()
}

/// Collects ids, failing on a duplicate.
pub fn add_unique(seen: &mut HashSet<String>, rows: &[Value], key: &str) {
    for r in rows {
        let id = r[key].as_str().expect("row id").to_string();
        assert!(seen.insert(id.clone()), "record {id} returned twice");
    }
}
