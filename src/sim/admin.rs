//! The `/_sim/` admin API: not part of GHL's surface (every response says so in the
//! `x-sim-admin` header and a `note` field). Bad input gets a 400 with a message. Map:
//!
//! - `records`: the record API: ground truth dumps, and writes of records (moving `dateUpdated`)
//!   with the webhooks GHL would send for them
//! - `knobs`: counters, run-time settings, faults, rate-limit resets, budget spent by another
//!   client, authorization codes, token expiry, custom webhooks, app install/uninstall and
//!   webhook delivery stats
//!
//! This module holds the router, the admin answer envelope and `GET /_sim/` (what the simulator
//! serves); it never touches GHL's routes (`api`).

mod knobs;
mod records;

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Map, Value, json};

use super::endpoints::ENDPOINTS;
use super::{Location, Shared};

pub use knobs::{auth_code, install, spend};
pub use records::{create, delete, dump, update};

/// What every admin answer says of itself.
const NOTE: &str = "simulator admin API: not part of the GHL API";

/// The `/_sim/` routes.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/_sim", get(info))
        .route("/_sim/", get(info))
        .merge(records::routes())
        .merge(knobs::routes())
        .with_state(shared)
}

/// The state every admin route reads.
type S = State<Arc<Shared>>;

/// An admin answer: the body with its `note`, and the `x-sim-admin` header.
fn reply(status: StatusCode, mut body: Value) -> Response {
    if let Value::Object(m) = &mut body {
        m.insert("note".into(), NOTE.into());
    }
    let mut r = (status, axum::Json(body)).into_response();
    r.headers_mut().insert(
        "x-sim-admin",
        header::HeaderValue::from_static("not part of the GHL API"),
    );
    r
}

/// 200 with `body`.
fn ok(body: Value) -> Response {
    reply(StatusCode::OK, body)
}

/// 400 with `message`.
fn fail(msg: impl Into<String>) -> Response {
    reply(
        StatusCode::BAD_REQUEST,
        json!({"statusCode": 400, "message": msg.into()}),
    )
}

/// The answer of a record call: 404 for a "not found: ..." error, 400 for any other.
fn done(r: Result<Value, String>) -> Response {
    match r {
        Ok(v) => ok(v),
        Err(m) if m.starts_with("not found:") => reply(
            StatusCode::NOT_FOUND,
            json!({"statusCode": 404, "message": m}),
        ),
        Err(m) => fail(m),
    }
}

/// A JSON body; an empty body reads as `{}`.
fn parse_json(bytes: &Bytes) -> Result<Value, String> {
    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        return Ok(json!({}));
    }
    serde_json::from_slice(bytes).map_err(|e| format!("body is not valid JSON: {e}"))
}

/// The body as an object.
fn object(v: &Value) -> Result<&Map<String, Value>, String> {
    v.as_object()
        .ok_or_else(|| "body must be a JSON object".to_string())
}

/// A location by id, or a "not found" error.
fn location<'a>(s: &'a Shared, id: &str) -> Result<&'a Arc<Location>, String> {
    s.location(id)
        .ok_or_else(|| format!("not found: no location {id}"))
}

/// `GET /_sim/`: where the simulator is, its app credentials, locations and endpoint names.
async fn info(State(s): S) -> Response {
    ok(json!({
        "baseUrl": s.base_url,
        "companyId": s.company_id,
        "clientId": s.client_id,
        "appId": s.app_id,
        "locations": s.locations.iter().map(|l| json!({"id": l.meta.id, "name": l.meta.name})).collect::<Vec<_>>(),
        "endpoints": ENDPOINTS.iter().map(|(n, m, p)| json!({"name": n, "method": m, "path": p})).collect::<Vec<_>>(),
    }))
}
