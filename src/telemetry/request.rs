//! What the layers around one HTTP request know of it: its id (`x-request-id`) and the GraphQL
//! operation it ran, kept in a task-local [`Scope`] that [`track`] opens around the handler.
//! The GraphQL executor (same task) reads the id for `extensions.requestId` and reports the
//! operation; [`track`] counts the request when it is answered.
//!
//! The `operation` label of `ghl_gateway_http_requests_total` is, per request:
//! - the name of the operation that ran, once the document parsed and validated (bounded to
//!   [`MAX_OPERATION_NAMES`](super::metrics::MAX_OPERATION_NAMES) distinct names, then `(other)`);
//! - `(unnamed)` for an anonymous operation;
//! - `(batch)` for a JSON array of operations that are not all the same one;
//! - `(none)` when no operation ran: another route, a document that failed to parse or
//!   validate, a request refused before execution.
//!
//! Parentheses cannot occur in a GraphQL name, so these never collide with a real one.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;

use super::metrics::{self, OPERATION_NAMES};

/// The request id header: taken from the client when it sends a usable one, generated otherwise
/// (tower-http's `SetRequestId`), and sent back on every response.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The longest request id taken from a client; a longer one is replaced.
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// Operation label: no operation ran.
pub const NO_OPERATION: &str = "(none)";
/// Operation label: an anonymous operation.
pub const UNNAMED: &str = "(unnamed)";
/// Operation label: a batch of operations in one request.
pub const BATCH: &str = "(batch)";

tokio::task_local! {
    static SCOPE: Arc<Scope>;
}

/// One request's id and the operation it ran.
#[derive(Debug)]
pub struct Scope {
    request_id: Option<String>,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// The label so far; `None` until an operation runs.
    operation: Option<String>,
    /// Hash of the last document parsed in this request, to remember its operation's name.
    document: Option<u64>,
}

/// The id of the request being served on this task, if any.
pub fn request_id() -> Option<String> {
    SCOPE.try_with(|s| s.request_id.clone()).ok().flatten()
}

/// Whether `value` may serve as a request id as the client sent it: short, and only characters
/// that are safe in a log line and a header (letters, digits, `-_.:/+=`).
pub fn is_usable_request_id(value: &HeaderValue) -> bool {
    let bytes = value.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_REQUEST_ID_LEN
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:/+=".contains(b))
}

/// Drops an `x-request-id` a client sent that is not [`is_usable_request_id`], so that a fresh
/// one is generated instead (an axum `map_request` step before `SetRequestId`).
pub async fn drop_unusable_request_id(mut request: Request) -> Request {
    if request
        .headers()
        .get(REQUEST_ID_HEADER)
        .is_some_and(|v| !is_usable_request_id(v))
    {
        request.headers_mut().remove(REQUEST_ID_HEADER);
    }
    request
}

fn with_state(f: impl FnOnce(&mut State)) {
    let _ = SCOPE.try_with(|s| f(&mut s.state.lock().unwrap_or_else(|e| e.into_inner())));
}

fn document_hash(query: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    query.hash(&mut hasher);
    hasher.finish()
}

/// Documents seen -> the name of the operation they ran without an `operationName` (`None`:
/// anonymous), so that an answer served from the response cache, which parses nothing, gets the
/// label its execution got. Bounded: emptied when full.
fn names() -> &'static Mutex<HashMap<u64, Option<String>>> {
    static NAMES: OnceLock<Mutex<HashMap<u64, Option<String>>>> = OnceLock::new();
    NAMES.get_or_init(Mutex::default)
}
const MAX_REMEMBERED_DOCUMENTS: usize = 10_000;

fn label(name: Option<&str>) -> String {
    name.map_or_else(|| UNNAMED.to_owned(), |n| OPERATION_NAMES.get(n))
}

fn set_operation(state: &mut State, label: String) {
    state.operation = Some(match &state.operation {
        Some(earlier) if *earlier != label => BATCH.to_owned(),
        _ => label,
    });
}

/// The executor parsed `query` (a GraphQL extension's `parse_query`, on success).
pub fn parsed(query: &str) {
    let hash = document_hash(query);
    with_state(|s| s.document = Some(hash));
}

/// The executor runs the operation `name` (`None`: anonymous) of the document last parsed: the
/// document parsed and validated (a GraphQL extension's `execute` hook).
pub fn executing(name: Option<&str>) {
    with_state(|s| {
        if let Some(hash) = s.document.take() {
            let mut names = names().lock().unwrap_or_else(|e| e.into_inner());
            if names.len() >= MAX_REMEMBERED_DOCUMENTS {
                names.clear();
            }
            names.insert(hash, name.map(str::to_owned));
        }
        set_operation(s, label(name));
    });
}

/// The answer to `query` (with the request's `operation_name`) comes from the response cache:
/// its operation ran before, in this process, when the answer was kept.
pub fn served_from_cache(query: &str, operation_name: Option<&str>) {
    let name = match operation_name {
        Some(name) => Some(Some(name.to_owned())),
        None => names()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&document_hash(query))
            .cloned(),
    };
    let label = match name {
        Some(name) => label(name.as_deref()),
        // Forgotten since (the memory was full): counted, but under no name.
        None => metrics::OTHER.to_owned(),
    };
    with_state(|s| set_operation(s, label));
}

/// The axum middleware around every route: opens the request's [`Scope`] (its id from the
/// `x-request-id` header `SetRequestId` put there), runs the request in it, and counts it in
/// `ghl_gateway_http_requests_total` and `ghl_gateway_http_request_duration_seconds` by its
/// route pattern (not its path, so ids in paths make no series), status and operation.
pub async fn track(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "(unmatched)".to_owned(), |p| p.as_str().to_owned());
    let request_id = request
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let scope = Arc::new(Scope {
        request_id,
        state: Mutex::default(),
    });
    let response = SCOPE.scope(scope.clone(), next.run(request)).await;
    let operation = scope
        .state
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .operation
        .take()
        .unwrap_or_else(|| NO_OPERATION.to_owned());
    metrics::http_request(
        &route,
        response.status().as_u16(),
        &operation,
        started.elapsed(),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usable_request_ids_are_short_and_plain() {
        let ok = |s: &str| is_usable_request_id(&HeaderValue::from_str(s).unwrap());
        assert!(ok("4f9c2a1e-7b7d-4c1e-9a55-0d3c2b1a0f00"));
        assert!(ok("req:abc/1+2=3_x.y"));
        assert!(!ok(""));
        assert!(!ok("has space"));
        assert!(!ok("quote\"d"));
        assert!(!ok(&"a".repeat(MAX_REQUEST_ID_LEN + 1)));
        assert!(ok(&"a".repeat(MAX_REQUEST_ID_LEN)));
    }

    #[tokio::test]
    async fn the_label_is_the_operation_that_ran_and_a_hit_gets_the_same() {
        let scope = || {
            Arc::new(Scope {
                request_id: Some("r1".into()),
                state: Mutex::default(),
            })
        };
        let query = "query Ops17LabelTest { a }";
        let first = scope();
        SCOPE
            .scope(first.clone(), async {
                assert_eq!(request_id().as_deref(), Some("r1"));
                parsed(query);
                executing(Some("Ops17LabelTest"));
            })
            .await;
        let ran = first.state.lock().unwrap().operation.clone();
        assert_eq!(ran.as_deref(), Some("Ops17LabelTest"));
        // Served from the cache, without operationName: the name its execution had.
        let hit = scope();
        SCOPE
            .scope(hit.clone(), async { served_from_cache(query, None) })
            .await;
        assert_eq!(hit.state.lock().unwrap().operation, ran);
        // Two different operations in one request: a batch.
        let batch = scope();
        SCOPE
            .scope(batch.clone(), async {
                executing(None);
                executing(Some("Ops17LabelTest"));
            })
            .await;
        assert_eq!(
            batch.state.lock().unwrap().operation.as_deref(),
            Some(BATCH)
        );
        // Outside a request nothing is recorded and there is no id.
        executing(Some("Elsewhere"));
        assert_eq!(request_id(), None);
    }
}
