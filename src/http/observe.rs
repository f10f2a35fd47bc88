//! What makes the gateway observable from outside: request ids, trace spans and request counts
//! around every route ([`layers`]), and `/metrics` ([`metrics_router`]), on the main listener or
//! on its own (`--metrics-listen`).
//!
//! `/metrics` renders the process-wide Prometheus recorder (`telemetry::metrics`); what other
//! modules know only as numbers (the response cache's stats, the database pool) is read at
//! scrape time rather than counted as it happens, so those modules stay free of metrics code.

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderName, Request, header};
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use sea_orm::DbBackend;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::cache::ResponseCache;
use crate::store::Store;
use crate::telemetry::{metrics, request};

/// The Prometheus text format, version 0.0.4 (what `metrics-exporter-prometheus` renders).
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Wraps every route of `router`, outermost first: an unusable client request id is dropped,
/// `SetRequestId` gives the request its `x-request-id` (the client's, or a UUID), the trace span
/// (INFO, so every log line of the request carries `request_id`), `PropagateRequestId` copies
/// it to the response, and [`request::track`] counts the request by route, status and
/// operation.
pub(super) fn layers(router: Router) -> Router {
    let header = HeaderName::from_static(request::REQUEST_ID_HEADER);
    router
        .layer(axum::middleware::from_fn(request::track))
        .layer(PropagateRequestIdLayer::new(header.clone()))
        // Spans carry method, path and the request id; headers stay out (they hold the API
        // key), and so does the query string (a GET's variables may hold personal data).
        .layer(
            TraceLayer::new_for_http().make_span_with(|request: &Request<_>| {
                let id = request
                    .headers()
                    .get(request::REQUEST_ID_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                tracing::info_span!(
                    "request",
                    method = %request.method(),
                    path = %request.uri().path(),
                    request_id = %id,
                )
            }),
        )
        .layer(SetRequestIdLayer::new(header, MakeRequestUuid))
        .layer(axum::middleware::map_request(
            request::drop_unusable_request_id,
        ))
}

#[derive(Clone)]
struct Scrape {
    handle: PrometheusHandle,
    store: Store,
    cache: Option<ResponseCache>,
}

/// `GET /metrics`: the Prometheus text format of every metric, with the response cache's and
/// the database pool's figures read now. Installs the recorder if nothing did yet.
pub fn metrics_router(store: Store, cache: Option<ResponseCache>) -> Router {
    let handle = metrics::install();
    Router::new()
        .route("/metrics", get(scrape))
        .with_state(Scrape {
            handle,
            store,
            cache,
        })
}

async fn scrape(State(scrape): State<Scrape>) -> impl IntoResponse {
    if let Some(cache) = &scrape.cache {
        let stats = cache.stats();
        metrics::response_cache(
            stats.hits,
            stats.misses,
            stats.evictions,
            stats.bytes,
            stats.entries,
        );
    }
    let (size, idle) = pool_size(&scrape.store);
    metrics::db_pool(size.saturating_sub(idle), idle);
    scrape.handle.run_upkeep();
    (
        [(header::CONTENT_TYPE, PROMETHEUS_TEXT)],
        scrape.handle.render(),
    )
}

/// Connections the pool holds now and how many of them are idle.
fn pool_size(store: &Store) -> (u64, u64) {
    let db = store.connection();
    match store.backend() {
        DbBackend::Postgres => {
            let pool = db.get_postgres_connection_pool();
            (u64::from(pool.size()), pool.num_idle() as u64)
        }
        DbBackend::Sqlite => {
            let pool = db.get_sqlite_connection_pool();
            (u64::from(pool.size()), pool.num_idle() as u64)
        }
        // Store::connect accepts only the two backends above.
        _ => (0, 0),
    }
}
