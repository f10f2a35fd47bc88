//! Metrics: the names, labels and units of everything `/metrics` exports, and the one call each
//! place that counts makes. Recorded through the `metrics` facade; rendered in the Prometheus
//! text format by `metrics-exporter-prometheus` ([`install`] returns the handle `/metrics`
//! renders). Until [`install`] runs (commands without an HTTP server) every call is a no-op.
//!
//! Label values that come from outside (GraphQL operation names, webhook event types) go through
//! [`BoundedLabel`], so that a client cannot create series without end.
//!
//! The README's "Metrics" section lists every metric; keep the two in step.

use std::collections::HashSet;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// `ghl_gateway_http_requests_total{route, status, operation}`: HTTP requests answered.
pub const HTTP_REQUESTS: &str = "ghl_gateway_http_requests_total";
/// `ghl_gateway_http_request_duration_seconds{route}`: time to the response head, histogram.
pub const HTTP_DURATION: &str = "ghl_gateway_http_request_duration_seconds";
/// `ghl_gateway_response_cache_hits_total`: lookups served from the response cache.
pub const CACHE_HITS: &str = "ghl_gateway_response_cache_hits_total";
/// `ghl_gateway_response_cache_misses_total`: lookups the cache could not serve.
pub const CACHE_MISSES: &str = "ghl_gateway_response_cache_misses_total";
/// `ghl_gateway_response_cache_evictions_total`: entries removed to keep the byte bound.
pub const CACHE_EVICTIONS: &str = "ghl_gateway_response_cache_evictions_total";
/// `ghl_gateway_response_cache_bytes`: bytes the response cache holds now.
pub const CACHE_BYTES: &str = "ghl_gateway_response_cache_bytes";
/// `ghl_gateway_response_cache_entries`: answers the response cache holds now.
pub const CACHE_ENTRIES: &str = "ghl_gateway_response_cache_entries";
/// `ghl_gateway_sync_jobs_total{mode, outcome}`: sync jobs ended (`succeeded` or `failed`).
pub const SYNC_JOBS: &str = "ghl_gateway_sync_jobs_total";
/// `ghl_gateway_sync_stage_duration_seconds{stage, outcome}`: one run of a stage, histogram.
pub const SYNC_STAGE_DURATION: &str = "ghl_gateway_sync_stage_duration_seconds";
/// `ghl_gateway_sync_rows_written_total{resource}`: records written to the cache by syncs.
pub const SYNC_ROWS: &str = "ghl_gateway_sync_rows_written_total";
/// `ghl_gateway_ghl_requests_total{endpoint, status}`: HTTP requests sent to GHL, by answer.
pub const GHL_REQUESTS: &str = "ghl_gateway_ghl_requests_total";
/// `ghl_gateway_ghl_retries_total{endpoint}`: GHL calls tried again.
pub const GHL_RETRIES: &str = "ghl_gateway_ghl_retries_total";
/// `ghl_gateway_ghl_rate_limited_total{endpoint}`: 429 answers from GHL.
pub const GHL_RATE_LIMITED: &str = "ghl_gateway_ghl_rate_limited_total";
/// `ghl_gateway_ghl_limiter_wait_seconds{endpoint}`: time each GHL request waited for the
/// gateway's own rate limiter, histogram (`_sum` is the total wait).
pub const GHL_LIMITER_WAIT: &str = "ghl_gateway_ghl_limiter_wait_seconds";
/// `ghl_gateway_ghl_budget_remaining{location_id, window}`: what GHL last said is left of a
/// location's quota (`window="burst"`: `X-RateLimit-Remaining`; `"daily"`:
/// `X-RateLimit-Daily-Remaining`).
pub const GHL_BUDGET: &str = "ghl_gateway_ghl_budget_remaining";
/// `ghl_gateway_websocket_connections{protocol}`: WebSockets open now.
pub const WS_CONNECTIONS: &str = "ghl_gateway_websocket_connections";
/// `ghl_gateway_websocket_subscriptions{protocol}`: operations running on WebSockets now.
pub const WS_SUBSCRIPTIONS: &str = "ghl_gateway_websocket_subscriptions";
/// `ghl_gateway_db_pool_connections{state}`: database pool connections, `in_use` or `idle`.
pub const DB_POOL: &str = "ghl_gateway_db_pool_connections";
/// `ghl_gateway_webhook_events_total{type, outcome}`: GHL webhook events received.
pub const WEBHOOK_EVENTS: &str = "ghl_gateway_webhook_events_total";
/// `ghl_gateway_cluster_publish_failures_total`: notifications to the other replicas that
/// could not be sent (PostgreSQL replica mode).
pub const CLUSTER_PUBLISH_FAILURES: &str = "ghl_gateway_cluster_publish_failures_total";
/// `ghl_gateway_cluster_listener_connected`: 1 while the replica's notification connection is
/// up, 0 while it reconnects (and the response cache serves nothing).
pub const CLUSTER_CONNECTED: &str = "ghl_gateway_cluster_listener_connected";

/// Histogram buckets of request latencies, in seconds: the cache's sub-millisecond hits to the
/// 30 s request timeout.
const HTTP_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Histogram buckets of limiter waits, in seconds: none to a whole 10 s window and beyond.
const WAIT_BUCKETS: &[f64] = &[
    0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
/// Histogram buckets of sync stage durations, in seconds: a one-page stage to a long FULL sync.
const STAGE_BUCKETS: &[f64] = &[
    0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
];

/// Distinct GraphQL operation names counted before the rest count as `(other)`.
pub const MAX_OPERATION_NAMES: usize = 100;
/// Distinct webhook event types counted before the rest count as `(other)`.
pub const MAX_WEBHOOK_TYPES: usize = 100;
/// The label of values past a [`BoundedLabel`]'s cap. Parentheses cannot occur in a GraphQL
/// name, so it never collides with an operation's own.
pub const OTHER: &str = "(other)";

/// Installs the process-wide Prometheus recorder (once; later calls return the same handle)
/// and starts the upkeep that drains histogram samples every 5 s, so memory stays bounded
/// whether or not anything scrapes.
pub fn install() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(HTTP_DURATION.into()), HTTP_BUCKETS)
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(SYNC_STAGE_DURATION.into()),
                        STAGE_BUCKETS,
                    )
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full(GHL_LIMITER_WAIT.into()), WAIT_BUCKETS)
                })
                .expect("the bucket lists are not empty")
                .build_recorder();
            let handle = recorder.handle();
            // Another recorder (a test harness's) may already be installed: the handle still
            // renders this one's metrics, which are then simply not fed.
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics stays empty");
            }
            describe();
            let upkeep = handle.clone();
            let _ = std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(Duration::from_secs(5));
                        upkeep.run_upkeep();
                    }
                });
            handle
        })
        .clone()
}

/// `# HELP` lines, so that a reader of `/metrics` needs no README.
fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        HTTP_REQUESTS,
        "HTTP requests answered, by route, status and GraphQL operation name"
    );
    describe_histogram!(
        HTTP_DURATION,
        Unit::Seconds,
        "HTTP request latency to the response head, by route"
    );
    describe_counter!(CACHE_HITS, "response cache lookups served from memory");
    describe_counter!(CACHE_MISSES, "response cache lookups that executed");
    describe_counter!(
        CACHE_EVICTIONS,
        "response cache entries removed to keep its byte bound"
    );
    describe_gauge!(CACHE_BYTES, Unit::Bytes, "bytes the response cache holds");
    describe_gauge!(CACHE_ENTRIES, "answers the response cache holds");
    describe_counter!(SYNC_JOBS, "sync jobs ended, by mode and outcome");
    describe_histogram!(
        SYNC_STAGE_DURATION,
        Unit::Seconds,
        "duration of one run of a sync stage, by stage and outcome"
    );
    describe_counter!(
        SYNC_ROWS,
        "records written to the cache by syncs, by resource"
    );
    describe_counter!(
        GHL_REQUESTS,
        "HTTP requests sent to GHL, by endpoint and status (error: no answer)"
    );
    describe_counter!(GHL_RETRIES, "GHL calls tried again, by endpoint");
    describe_counter!(GHL_RATE_LIMITED, "429 answers from GHL, by endpoint");
    describe_histogram!(
        GHL_LIMITER_WAIT,
        Unit::Seconds,
        "time each GHL request waited for the gateway's own rate limiter, by endpoint"
    );
    describe_gauge!(
        GHL_BUDGET,
        "requests GHL last said a location has left, by window (burst, daily)"
    );
    describe_gauge!(WS_CONNECTIONS, "WebSocket connections open, by subprotocol");
    describe_gauge!(
        WS_SUBSCRIPTIONS,
        "operations running on WebSockets, by subprotocol"
    );
    describe_gauge!(
        DB_POOL,
        "database pool connections, by state (in_use, idle)"
    );
    describe_counter!(
        WEBHOOK_EVENTS,
        "GHL webhook events received, by type and outcome"
    );
    describe_counter!(
        CLUSTER_PUBLISH_FAILURES,
        "notifications to the other replicas that could not be sent"
    );
    describe_gauge!(
        CLUSTER_CONNECTED,
        "1 while the notification connection to the other replicas is up, else 0"
    );
}

/// A label whose values come from outside: the first `cap` distinct values are kept, later
/// new ones become [`OTHER`], so the series of a metric stay bounded.
pub struct BoundedLabel {
    cap: usize,
    /// `None` until the first value (a `HashSet` cannot be built in a `const fn`).
    seen: Mutex<Option<HashSet<String>>>,
}

impl BoundedLabel {
    /// A label that keeps at most `cap` distinct values.
    pub const fn new(cap: usize) -> Self {
        Self {
            cap,
            seen: Mutex::new(None),
        }
    }

    /// `value` itself when it was seen before or there is room, else [`OTHER`].
    pub fn get(&self, value: &str) -> String {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let seen = seen.get_or_insert_with(HashSet::new);
        if seen.contains(value) {
            return value.to_owned();
        }
        if seen.len() < self.cap {
            seen.insert(value.to_owned());
            return value.to_owned();
        }
        OTHER.to_owned()
    }
}

/// The operation names `/metrics` counts, process-wide.
pub static OPERATION_NAMES: BoundedLabel = BoundedLabel::new(MAX_OPERATION_NAMES);
static WEBHOOK_TYPES: BoundedLabel = BoundedLabel::new(MAX_WEBHOOK_TYPES);

/// One HTTP request answered: `route` is the matched route pattern (e.g. `/graphql`),
/// `operation` the bounded operation label (see `telemetry::request`).
pub fn http_request(route: &str, status: u16, operation: &str, elapsed: Duration) {
    counter!(
        HTTP_REQUESTS,
        "route" => route.to_owned(),
        "status" => status.to_string(),
        "operation" => operation.to_owned()
    )
    .increment(1);
    histogram!(HTTP_DURATION, "route" => route.to_owned()).record(elapsed.as_secs_f64());
}

/// What the response cache says of itself (`cache::CacheStats`), set at scrape time.
pub fn response_cache(hits: u64, misses: u64, evictions: u64, bytes: u64, entries: u64) {
    counter!(CACHE_EVICTIONS).absolute(evictions);
    counter!(CACHE_HITS).absolute(hits);
    counter!(CACHE_MISSES).absolute(misses);
    gauge!(CACHE_BYTES).set(bytes as f64);
    gauge!(CACHE_ENTRIES).set(entries as f64);
}

/// The database pool now: connections in use and idle, set at scrape time.
pub fn db_pool(in_use: u64, idle: u64) {
    gauge!(DB_POOL, "state" => "in_use").set(in_use as f64);
    gauge!(DB_POOL, "state" => "idle").set(idle as f64);
}

/// A sync job ended. `mode`: `full` or `incremental`; `outcome`: `succeeded` or `failed`.
pub fn sync_job(mode: &'static str, outcome: &'static str) {
    counter!(SYNC_JOBS, "mode" => mode, "outcome" => outcome).increment(1);
}

/// One run of a sync stage ended after `elapsed`.
pub fn sync_stage(stage: &'static str, outcome: &'static str, elapsed: Duration) {
    histogram!(SYNC_STAGE_DURATION, "stage" => stage, "outcome" => outcome)
        .record(elapsed.as_secs_f64());
}

/// A sync wrote `rows` records of `resource` (`contacts`, `tasks`, ...) to the cache.
pub fn sync_rows(resource: &'static str, rows: usize) {
    counter!(SYNC_ROWS, "resource" => resource).increment(rows as u64);
}

/// One HTTP request to GHL: `status` is the answer's code, `None` when none came (connection
/// failed, timed out); `waited` is the time it queued at the gateway's limiter.
pub fn ghl_request(endpoint: &'static str, status: Option<u16>, waited: Duration) {
    if status == Some(429) {
        counter!(GHL_RATE_LIMITED, "endpoint" => endpoint).increment(1);
    }
    let status = status.map_or_else(|| "error".to_owned(), |s| s.to_string());
    counter!(GHL_REQUESTS, "endpoint" => endpoint, "status" => status).increment(1);
    histogram!(GHL_LIMITER_WAIT, "endpoint" => endpoint).record(waited.as_secs_f64());
}

/// A GHL call is tried again.
pub fn ghl_retry(endpoint: &'static str) {
    counter!(GHL_RETRIES, "endpoint" => endpoint).increment(1);
}

/// What GHL said is left of `location_id`'s quota: `burst` (`X-RateLimit-Remaining`) and
/// `daily` (`X-RateLimit-Daily-Remaining`); `None` leaves the gauge as it was.
pub fn ghl_budget(location_id: &str, burst: Option<u64>, daily: Option<i64>) {
    if let Some(burst) = burst {
        gauge!(GHL_BUDGET, "location_id" => location_id.to_owned(), "window" => "burst")
            .set(burst as f64);
    }
    if let Some(daily) = daily {
        gauge!(GHL_BUDGET, "location_id" => location_id.to_owned(), "window" => "daily")
            .set(daily as f64);
    }
}

/// Counts one open WebSocket of `protocol` (`graphql-transport-ws` or `graphql-ws`) until the
/// guard drops.
pub fn ws_connection(protocol: &'static str) -> GaugeGuard {
    GaugeGuard::new(WS_CONNECTIONS, protocol)
}

/// Counts one running WebSocket operation of `protocol` until the guard drops.
pub fn ws_subscription(protocol: &'static str) -> GaugeGuard {
    GaugeGuard::new(WS_SUBSCRIPTIONS, protocol)
}

/// One webhook event handled: `event_type` is GHL's `type` (e.g. `ContactCreate`; bounded to
/// [`MAX_WEBHOOK_TYPES`] distinct values), `outcome` one of `applied`, `unchanged` (older than
/// what the cache holds), `duplicate`, `ignored` (a location not connected, a type not applied),
/// `refused` (signature, timestamp or body) and `failed` (the write failed; GHL retries). The
/// webhook route calls it once per delivery.
pub fn webhook_event(event_type: &str, outcome: &'static str) {
    counter!(
        WEBHOOK_EVENTS,
        "type" => WEBHOOK_TYPES.get(event_type),
        "outcome" => outcome
    )
    .increment(1);
}

/// A notification to the other replicas could not be sent.
pub fn cluster_publish_failed() {
    counter!(CLUSTER_PUBLISH_FAILURES).increment(1);
}

/// The replica's notification connection went up (`true`) or down.
pub fn cluster_connected(up: bool) {
    gauge!(CLUSTER_CONNECTED).set(if up { 1.0 } else { 0.0 });
}

/// Adds one to a `{protocol}` gauge while it lives.
#[must_use = "the gauge goes back down when the guard drops"]
pub struct GaugeGuard {
    gauge: metrics::Gauge,
}

impl GaugeGuard {
    fn new(name: &'static str, protocol: &'static str) -> Self {
        let gauge = gauge!(name, "protocol" => protocol);
        gauge.increment(1.0);
        Self { gauge }
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.gauge.decrement(1.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bounded_label_keeps_its_first_values_and_folds_the_rest() {
        let label = BoundedLabel::new(2);
        assert_eq!(label.get("A"), "A");
        assert_eq!(label.get("B"), "B");
        assert_eq!(label.get("C"), OTHER);
        assert_eq!(label.get("A"), "A", "a value seen before stays itself");
        assert_eq!(label.get("D"), OTHER);
    }
}
