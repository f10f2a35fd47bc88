//! The knobs of `/_sim/`: request counters, run-time settings (latency, limits, webhook URL and
//! delivery knobs), faults, rate-limit resets, budget spent by another client, authorization
//! codes, token expiry, custom webhooks, app install/uninstall (`INSTALL`/`UNINSTALL` events),
//! webhook delivery stats and the webhook public keys. It never touches records (`records`).

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::{S, done, fail, location, object, ok, parse_json, reply};
use crate::sim::control::{FaultConfig, Settings, WebhookStats};
use crate::sim::webhooks::{self, events};
use crate::sim::{Shared, auth, lock, read, write};

/// The knob routes of `/_sim/`.
pub(super) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/_sim/counters", get(counters).delete(reset_counters))
        .route("/_sim/settings", get(settings).patch(patch_settings))
        .route("/_sim/faults", get(faults).put(put_faults))
        .route("/_sim/rate-limits/reset", post(reset_limits))
        .route("/_sim/rate-limits/spend", post(spend_route))
        .route("/_sim/oauth/codes", post(code_route))
        .route("/_sim/tokens/expire", post(expire_route))
        .route("/_sim/webhooks", post(webhook_route))
        .route("/_sim/webhooks/public-key", get(public_key))
        .route("/_sim/webhooks/legacy-public-key", get(legacy_public_key))
        .route(
            "/_sim/webhooks/stats",
            get(webhook_stats).delete(reset_webhook_stats),
        )
        .route("/_sim/app/install", post(install_route))
        .route("/_sim/app/uninstall", post(uninstall_route))
}

/// Mints a single-use authorization code: `user_type` "Location" with a location id, or
/// "Company" without one.
pub fn auth_code(s: &Shared, user_type: &str, loc_id: Option<&str>) -> Result<String, String> {
    let owner = s
        .locations
        .first()
        .and_then(|l| l.meta.users.first())
        .map(|u| u.id.clone())
        .unwrap_or_default();
    let grant = match (user_type, loc_id) {
        ("Location", Some(l)) => {
            location(s, l)?;
            auth::Grant {
                user_type: "Location".into(),
                location_id: Some(l.to_string()),
                company_id: s.company_id.clone(),
                user_id: owner,
            }
        }
        ("Company", None) => auth::Grant {
            user_type: "Company".into(),
            location_id: None,
            company_id: s.company_id.clone(),
            user_id: owner,
        },
        _ => {
            return Err("userType must be Location (with locationId) or Company (without)".into());
        }
    };
    let mut rng = lock(&s.rng);
    Ok(lock(&s.auth).mint_code(&mut rng, grant))
}

async fn counters(State(s): S) -> Response {
    ok(json!({"counters": *lock(&s.counters)}))
}

async fn reset_counters(State(s): S) -> Response {
    lock(&s.counters).clear();
    ok(json!({"reset": true}))
}

async fn settings(State(s): S) -> Response {
    ok(json!({"settings": *read(&s.settings)}))
}

/// Merges the given top-level keys into the current settings; `webhooks` is merged key by key
/// too, so `{"webhooks":{"redeliver":1}}` leaves the other webhook knobs as they are.
async fn patch_settings(State(s): S, bytes: Bytes) -> Response {
    let patch = match parse_json(&bytes).and_then(|v| object(&v).cloned()) {
        Ok(p) => p,
        Err(m) => return fail(m),
    };
    let mut current = match serde_json::to_value(&*read(&s.settings)) {
        Ok(Value::Object(m)) => m,
        _ => return fail("settings could not be read"),
    };
    for (k, v) in patch {
        match (current.get_mut(&k), v) {
            (Some(Value::Object(old)), Value::Object(new)) if k == "webhooks" => old.extend(new),
            (_, v) => {
                current.insert(k, v);
            }
        }
    }
    let new: Settings = match serde_json::from_value(Value::Object(current)) {
        Ok(n) => n,
        Err(e) => return fail(format!("invalid settings: {e}")),
    };
    if let Err(m) = new.validate() {
        return fail(m);
    }
    *write(&s.settings) = new.clone();
    ok(json!({"settings": new}))
}

async fn faults(State(s): S) -> Response {
    ok(json!({"faults": read(&s.settings).faults}))
}

async fn put_faults(State(s): S, bytes: Bytes) -> Response {
    let faults: FaultConfig = match serde_json::from_slice(&bytes) {
        Ok(f) => f,
        Err(e) => return fail(format!("invalid faults: {e}")),
    };
    if let Err(m) = faults.validate() {
        return fail(m);
    }
    write(&s.settings).faults = faults.clone();
    ok(json!({"faults": faults}))
}

async fn reset_limits(State(s): S) -> Response {
    lock(&s.limiter).reset();
    ok(json!({"reset": true}))
}

/// Spends up to `requests` of the window of `token`'s bucket, as another client of the same app
/// and location would (another process, another replica); answers what was counted and what
/// the window has left.
pub fn spend(s: &Shared, token: &str, requests: u32) -> Result<Value, String> {
    let bucket = match lock(&s.auth).lookup(token) {
        auth::Lookup::Valid(t) => t.bucket.clone(),
        _ => return Err("not found: no such valid token".into()),
    };
    let settings = read(&s.settings).clone();
    let mut limiter = lock(&s.limiter);
    let spent = limiter.spend(&bucket, requests, &settings);
    let remaining = limiter.peek(&bucket, &settings).remaining;
    Ok(json!({"spent": spent, "remaining": remaining}))
}

async fn spend_route(State(s): S, bytes: Bytes) -> Response {
    let body = match parse_json(&bytes) {
        Ok(b) => b,
        Err(m) => return fail(m),
    };
    let (Some(token), Some(requests)) = (
        body.get("token").and_then(Value::as_str),
        body.get("requests").and_then(Value::as_u64),
    ) else {
        return fail("body needs a token and a number of requests");
    };
    done(spend(&s, token, requests.min(u64::from(u32::MAX)) as u32))
}

async fn code_route(State(s): S, bytes: Bytes) -> Response {
    let body = match parse_json(&bytes) {
        Ok(b) => b,
        Err(m) => return fail(m),
    };
    let user_type = body
        .get("userType")
        .and_then(Value::as_str)
        .unwrap_or("Location");
    let loc = body.get("locationId").and_then(Value::as_str);
    match auth_code(&s, user_type, loc) {
        Ok(code) => ok(json!({"code": code})),
        Err(m) => done(Err(m)),
    }
}

async fn expire_route(State(s): S, bytes: Bytes) -> Response {
    let body = match parse_json(&bytes) {
        Ok(b) => b,
        Err(m) => return fail(m),
    };
    let Some(token) = body.get("token").and_then(Value::as_str) else {
        return fail("body needs a token");
    };
    if lock(&s.auth).expire(token) {
        ok(json!({"expired": true}))
    } else {
        done(Err("not found: no such token".into()))
    }
}

/// Sends a custom event: the body is the payload; `type` and `locationId` are required.
async fn webhook_route(State(s): S, bytes: Bytes) -> Response {
    let body = match parse_json(&bytes) {
        Ok(b) => b,
        Err(m) => return fail(m),
    };
    let (Some(kind), Some(loc)) = (
        body.get("type").and_then(Value::as_str),
        body.get("locationId").and_then(Value::as_str),
    ) else {
        return fail("body needs type and locationId");
    };
    if read(&s.settings).webhook_url.is_none() {
        return fail("no webhook URL configured (--webhook-url or PATCH /_sim/settings)");
    }
    let (kind, loc) = (kind.to_string(), loc.to_string());
    let id = webhooks::emit(&s, &kind, Some(&loc), body);
    reply(
        StatusCode::ACCEPTED,
        json!({"queued": id.is_some(), "webhookId": id}),
    )
}

/// A PEM as plain text, marked as an admin answer.
fn pem(text: String) -> Response {
    let mut r = text.into_response();
    r.headers_mut().insert(
        "x-sim-admin",
        header::HeaderValue::from_static("not part of the GHL API"),
    );
    r
}

async fn public_key(State(s): S) -> Response {
    pem(s.signer.public_pem())
}

async fn legacy_public_key(State(s): S) -> Response {
    pem(s.signer.legacy_public_pem())
}

async fn webhook_stats(State(s): S) -> Response {
    let stats: WebhookStats = lock(&s.webhook_stats).clone();
    ok(json!({"stats": stats, "pending": *s.webhooks_pending.borrow()}))
}

async fn reset_webhook_stats(State(s): S) -> Response {
    *lock(&s.webhook_stats) = WebhookStats::default();
    ok(json!({"reset": true}))
}

/// Installs (`installed`) or uninstalls the app on one location, or without one on the agency
/// (every location), and sends `INSTALL` or `UNINSTALL` (AppInstall.json, AppUninstall.json):
/// a location event carries `locationId`, an agency one `companyId` alone. The state shows in
/// `GET /oauth/installedLocations` (`isInstalled`). Returns the event's `webhookId`, or `None`
/// when no webhook URL is set.
pub fn install(
    s: &Shared,
    loc_id: Option<&str>,
    installed: bool,
) -> Result<Option<String>, String> {
    let ids: Vec<String> = match loc_id {
        Some(l) => vec![location(s, l)?.meta.id.clone()],
        None => s.locations.iter().map(|l| l.meta.id.clone()).collect(),
    };
    {
        let mut gone = lock(&s.uninstalled);
        for id in ids {
            if installed {
                gone.remove(&id);
            } else {
                gone.insert(id);
            }
        }
    }
    let (kind, payload) = if installed {
        let owner = s
            .locations
            .first()
            .and_then(|l| l.meta.users.first())
            .map(|u| u.id.clone())
            .unwrap_or_default();
        (
            "INSTALL",
            events::install(&s.company_id, "Simulated Agency", &owner),
        )
    } else {
        let company = loc_id.is_none().then_some(s.company_id.as_str());
        ("UNINSTALL", events::uninstall(company))
    };
    Ok(webhooks::emit(s, kind, loc_id, payload))
}

/// `POST /_sim/app/install` and `/_sim/app/uninstall`: body `{"locationId": ...}` for one
/// location, `{}` for the agency.
async fn app_route(s: &Shared, bytes: &Bytes, installed: bool) -> Response {
    let body = match parse_json(bytes) {
        Ok(b) => b,
        Err(m) => return fail(m),
    };
    let loc = match body.get("locationId") {
        None | Some(Value::Null) => None,
        Some(Value::String(l)) => Some(l.as_str()),
        Some(_) => return fail("locationId must be a string"),
    };
    match install(s, loc, installed) {
        Ok(id) => ok(json!({"installed": installed, "locationId": loc, "webhookId": id})),
        Err(m) => done(Err(m)),
    }
}

async fn install_route(State(s): S, bytes: Bytes) -> Response {
    app_route(&s, &bytes, true).await
}

async fn uninstall_route(State(s): S, bytes: Bytes) -> Response {
    app_route(&s, &bytes, false).await
}
