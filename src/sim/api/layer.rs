//! The layer in front of every GHL route: added latency, rolled faults (status codes, resets,
//! hangs, broken bodies, 429 storms) and request counters by endpoint and status; and the error
//! responses in GHL's shapes that every route answers with. It reads settings and counters, never
//! records.

// Handlers return `Result<_, Response>`: the error *is* the HTTP answer, built once per failed
// request, so boxing it would only add noise.
#![allow(clippy::result_large_err)]

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rand::Rng;
use serde_json::{Map, Value, json};

use super::S;
use crate::sim::control::{Fault, RateInfo};
use crate::sim::{endpoints, lock, read};

/// The endpoint name of a matched route (axum's path syntax), for counters and faults; "other"
/// for a route the table does not name.
fn endpoint_name(method: &Method, path: &str) -> &'static str {
    let path = if path == "/contacts" {
        "/contacts/"
    } else if path == "/users" {
        "/users/"
    } else {
        path
    };
    let path = path
        .replace("{contact_id}", "{contactId}")
        .replace("{location_id}", "{locationId}");
    endpoints::name_of(method.as_str(), &path).unwrap_or("other")
}

/// The middleware of every GHL route: sleeps the configured latency (plus jitter), rolls a
/// fault for the endpoint, and counts the answer under the endpoint's name and its status.
pub(super) async fn ghl_layer(State(s): S, req: Request, next: Next) -> Response {
    s.in_flight.send_modify(|n| *n += 1);
    // Dropped when the answer is counted, or when the server drops the request unanswered.
    let _in_flight = InFlight(&s.in_flight);
    let path = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_default();
    let endpoint = endpoint_name(req.method(), &path);
    let (delay, fault, settings) = {
        let settings = read(&s.settings).clone();
        let mut rng = lock(&s.rng);
        let jitter = if settings.jitter_ms > 0 {
            rng.random_range(0..=settings.jitter_ms)
        } else {
            0
        };
        let roll: f64 = rng.random();
        let fault = settings.faults.for_endpoint(endpoint).pick(roll);
        (settings.latency_ms + jitter, fault, settings)
    };
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let (resp, label) = match fault {
        None => {
            let r = next.run(req).await;
            let l = r.status().as_str().to_string();
            (r, l)
        }
        Some(Fault::Status(code)) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let msg = status.canonical_reason().unwrap_or("Error");
            (error(status, json!(msg), Some(msg)), code.to_string())
        }
        Some(Fault::Reset) => {
            // Headers go out, then the body fails: hyper aborts the connection, which the client
            // sees as a connection error mid-response.
            let stream = futures::stream::once(async {
                Err::<Bytes, std::io::Error>(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "simulated connection reset",
                ))
            });
            let mut r = Response::new(Body::from_stream(stream));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("application/json"),
            );
            (r, "reset".to_string())
        }
        Some(Fault::Hang) => {
            s.count(endpoint, "hang");
            tokio::select! {
                _ = s.shutdown.cancelled() => {}
                _ = tokio::time::sleep(Duration::from_millis(settings.hang_ms)) => {}
            }
            return error(
                StatusCode::GATEWAY_TIMEOUT,
                json!("Gateway Timeout"),
                Some("Gateway Timeout"),
            );
        }
        Some(Fault::RateLimit) => {
            // GHL sometimes answers 429 under the limit: the headers say what the bucket really
            // has left (a refused request is not counted), and `Retry-After` is brief.
            let mut info = super::gate::peek_rate(&s, req.headers()).unwrap_or(RateInfo {
                limit_daily: settings.daily_limit,
                daily_remaining: settings.daily_limit,
                interval_ms: settings.burst_window_ms,
                max: settings.burst_limit,
                remaining: settings.burst_limit,
                retry_after: None,
            });
            info.retry_after = Some(Duration::from_secs(1));
            (too_many(&info, settings.retry_after), "429".to_string())
        }
        Some(f @ (Fault::Truncate | Fault::Malformed)) => {
            let r = next.run(req).await;
            let (mut parts, body) = r.into_parts();
            let bytes = axum::body::to_bytes(body, usize::MAX)
                .await
                .unwrap_or_default();
            let broken: Vec<u8> = if f == Fault::Truncate {
                bytes[..bytes.len() / 2].to_vec()
            } else {
                b"<html><body>upstream error</body></html>{\"contacts\":[".to_vec()
            };
            parts.headers.remove(header::CONTENT_LENGTH);
            parts.status = StatusCode::OK;
            let label = if f == Fault::Truncate {
                "truncate"
            } else {
                "malformed"
            };
            (
                Response::from_parts(parts, Body::from(broken)),
                label.into(),
            )
        }
    };
    s.count(endpoint, &label);
    resp
}

/// Takes one request off `Shared::in_flight` when dropped.
struct InFlight<'a>(&'a tokio::sync::watch::Sender<usize>);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// GHL's 404 for an unknown path or method, counted under "other".
pub(super) async fn not_found(State(s): S, method: Method, uri: axum::http::Uri) -> Response {
    s.count("other", "404");
    error(
        StatusCode::NOT_FOUND,
        json!(format!("Cannot {} {}", method, uri.path())),
        Some("Not Found"),
    )
}

fn trace_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// A JSON answer with GHL's `traceId` added to an object body.
pub(super) fn json_response(status: StatusCode, mut body: Value) -> Response {
    if let Value::Object(m) = &mut body {
        m.entry("traceId").or_insert_with(|| trace_id().into());
    }
    (status, axum::Json(body)).into_response()
}

/// GHL's error shape: `{statusCode, message, error?}`.
pub(super) fn error(status: StatusCode, message: Value, error: Option<&str>) -> Response {
    let mut m = Map::new();
    m.insert("statusCode".into(), json!(status.as_u16()));
    m.insert("message".into(), message);
    if let Some(e) = error {
        m.insert("error".into(), json!(e));
    }
    json_response(status, Value::Object(m))
}

/// 400 with a string `message`.
pub(super) fn bad_request(msg: impl Into<String>) -> Response {
    error(StatusCode::BAD_REQUEST, json!(msg.into()), None)
}

/// 422 with an ARRAY `message`, as GHL's validation pipe answers.
pub(super) fn unprocessable(msgs: Vec<String>) -> Response {
    error(
        StatusCode::UNPROCESSABLE_ENTITY,
        json!(msgs),
        Some("Unprocessable Entity"),
    )
}

/// 401, as GHL answers a missing, unknown or expired token.
pub(super) fn unauthorized(msg: &str) -> Response {
    error(StatusCode::UNAUTHORIZED, json!(msg), Some("Unauthorized"))
}

/// Adds the `X-RateLimit-*` headers (and `Retry-After` when asked) to an answer.
pub(super) fn with_rate(mut r: Response, info: &RateInfo, retry_after: bool) -> Response {
    for (k, v) in info.headers(retry_after) {
        if let Ok(v) = header::HeaderValue::from_str(&v) {
            r.headers_mut().insert(k, v);
        }
    }
    r
}

/// 429 with the rate-limit headers of the refused request.
pub(super) fn too_many(info: &RateInfo, retry_after: bool) -> Response {
    with_rate(
        error(
            StatusCode::TOO_MANY_REQUESTS,
            json!("Too Many Requests"),
            Some("Too Many Requests"),
        ),
        info,
        retry_after,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_names_cover_routes() {
        assert_eq!(
            endpoint_name(&Method::POST, "/contacts/search"),
            "contacts.search"
        );
        assert_eq!(endpoint_name(&Method::GET, "/contacts"), "contacts.list");
        assert_eq!(
            endpoint_name(&Method::GET, "/contacts/{contact_id}/tasks"),
            "contacts.tasks"
        );
        assert_eq!(
            endpoint_name(&Method::POST, "/locations/{location_id}/tasks/search"),
            "tasks.search"
        );
    }
}
