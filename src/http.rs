//! The HTTP surface: GraphQL over HTTP, GraphiQL, health checks, and the layers around them
//! (tracing, request body limit, timeout).
//!
//! `/graphql` follows the GraphQL-over-HTTP specification rather than whatever the library does:
//! content negotiation between `application/graphql-response+json` and `application/json`, 4xx
//! without a `data` entry for a document that fails to parse or validate (when the response is
//! `application/graphql-response+json`), 400 for a POST without a JSON body, 405 for a mutation
//! over GET.
//!
//! Access control: `/graphql` sits behind [`guard`] (API key, per-key rate); `/graphiql`, the
//! dashboard page ([`dashboard`], which holds no key of its own), the health checks and
//! `/metrics` (no data, only counts; `--metrics-listen` moves it off the public listener) are
//! open. [`observe`] wraps every route: request ids, trace spans, request metrics.
//! CORS answers only the configured origins. The trace layer logs method, path and status, never
//! headers (so never `Authorization`).

mod dashboard;
mod encoding;
mod graphiql;
mod guard;
mod observe;
mod persisted;
mod ws;

pub use observe::metrics_router;

use std::sync::Arc;
use std::time::Duration;

use async_graphql::parser::types::OperationType;
use async_graphql::{BatchRequest, BatchResponse, Value};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Extension, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tower_http::compression::CompressionLayer;
use tower_http::compression::predicate::{DefaultPredicate, Predicate, SizeAbove};
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::decompression::RequestDecompressionLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;

use crate::auth::{AuthConfig, Authenticator, Caller, ConnectionLimiter};
use crate::cache::{self, CacheKey, Flight, ReadSet, ResponseCache};
use crate::graphql::{self, AppSchema};
use crate::store::Store;
use encoding::Coding;

/// Settings of the HTTP server.
#[derive(Clone, Debug, clap::Args)]
pub struct HttpConfig {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long = "listen", env = "LISTEN_ADDR", default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// Seconds a request may take before it is answered with 503.
    #[arg(long, env = "REQUEST_TIMEOUT_SECS", default_value_t = 30)]
    pub request_timeout_secs: u64,
    /// Largest request body, in bytes; larger ones get 413.
    #[arg(long, env = "MAX_BODY_BYTES", default_value_t = 1 << 20)]
    pub max_body_bytes: usize,
    /// Most operations in one batched request (a JSON array of requests).
    #[arg(long, env = "MAX_BATCH_OPERATIONS", default_value_t = 10)]
    pub max_batch_operations: usize,
    /// A browser origin allowed to call the API (CORS), e.g. `https://app.example.com`;
    /// repeat the flag, or separate origins with commas in the variable. None: same origin only.
    #[arg(
        long = "cors-origin",
        env = "CORS_ORIGINS",
        value_delimiter = ',',
        value_parser = parse_origin
    )]
    pub cors_origins: Vec<String>,
    /// Seconds a WebSocket may stay open without `connection_init`; then it is closed (4408).
    #[arg(
        long = "ws-init-timeout",
        env = "WS_INIT_TIMEOUT_SECS",
        default_value_t = 10
    )]
    pub ws_init_timeout_secs: u64,
    /// WebSocket connections that have not sent `connection_init` yet, across every client; an
    /// upgrade beyond it gets 503, so idle unauthenticated sockets cannot pile up.
    #[arg(long, env = "MAX_WS_PENDING", default_value_t = 1024)]
    pub max_ws_pending: usize,
    /// Serve `/metrics` on this address of its own (e.g. `127.0.0.1:9100`, kept internal)
    /// instead of on `--listen`; port 0 picks a free port.
    #[arg(long = "metrics-listen", env = "METRICS_LISTEN")]
    pub metrics_listen: Option<String>,
    /// Memory for automatic persisted queries' documents, in MiB (Apollo's protocol: clients send
    /// a document's SHA-256 instead of the document); 0 turns them off.
    #[arg(long, env = "PERSISTED_QUERIES_MB", default_value_t = 16)]
    pub persisted_queries_mb: u64,
    #[command(flatten)]
    pub auth: AuthConfig,
    /// `POST /webhooks/ghl`: its keys, timestamp window and body limit.
    #[command(flatten)]
    pub webhooks: crate::webhooks::WebhookConfig,
}

/// An origin as browsers send it: `scheme://host[:port]`, nothing after.
fn parse_origin(text: &str) -> Result<String, String> {
    let text = text.trim().trim_end_matches('/');
    let valid = text.split_once("://").is_some_and(|(scheme, rest)| {
        matches!(scheme, "http" | "https") && !rest.is_empty() && !rest.contains('/')
    }) && HeaderValue::from_str(text).is_ok();
    if valid {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "{text:?} is not an origin: expected scheme://host[:port], e.g. https://app.example.com"
        ))
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        crate::config::defaults()
    }
}

/// What the routes share, behind one reference count: axum clones the state for every request.
#[derive(Clone)]
struct AppState(Arc<AppShared>);

impl std::ops::Deref for AppState {
    type Target = AppShared;

    fn deref(&self) -> &AppShared {
        &self.0
    }
}

struct AppShared {
    schema: AppSchema,
    store: Store,
    /// Query answers kept in memory; `None` when `RESPONSE_CACHE_MB=0`.
    cache: Option<ResponseCache>,
    /// Authenticates callers; the WebSocket route calls it with the `connection_init` token.
    auth: Authenticator,
    max_batch_operations: usize,
    /// Largest `/graphql` request body once decoded (`Content-Encoding: gzip` or `br`).
    max_body_bytes: usize,
    /// Documents of automatic persisted queries; `None` when turned off.
    persisted: Option<persisted::PersistedQueries>,
    /// WebSockets not yet past `connection_init`, counted process-wide.
    ws_pending: ConnectionLimiter,
    /// How long a WebSocket may wait before `connection_init`.
    ws_init_timeout: Duration,
    /// What WebSockets share: one stream per subscription shape, the checks of one key.
    ws_shared: ws::Shared,
}

/// The gateway's router; `cache` (when on) serves unchanged query answers from memory;
/// `webhooks` takes GHL's signed events.
pub fn router(
    schema: AppSchema,
    store: Store,
    cache: Option<ResponseCache>,
    webhooks: crate::webhooks::Receiver,
    config: &HttpConfig,
) -> Router {
    let auth = Authenticator::new(store.clone(), &config.auth);
    let guard = axum::middleware::from_fn_with_state(auth.clone(), guard::require_caller);
    // `/metrics` here unless it has a listener of its own.
    let metrics = match config.metrics_listen {
        None => observe::metrics_router(store.clone(), cache.clone()),
        Some(_) => Router::new(),
    };
    let router = Router::new()
        .route(
            "/graphql",
            get(graphql_get)
                .post(graphql_post)
                .route_layer(guard)
                // Request bodies in gzip or brotli are decoded before `graphql_post` reads them
                // (and applies the body limit to what they decode to); others get 415.
                .route_layer(RequestDecompressionLayer::new()),
        )
        // graphql-transport-ws and the legacy graphql-ws, chosen by the client's subprotocol.
        .route("/graphql/ws", get(ws::graphql_ws))
        // GraphiQL and its assets, and the dashboard page (`/`, `/dashboard.css`,
        // `/dashboard.js`), compiled in (they work offline); compressed when the browser asks.
        // `/graphql` answers encode themselves (`encoding`), so that cached ones stay encoded.
        .merge(graphiql::routes().merge(dashboard::routes()).layer(
            CompressionLayer::new().compress_when(
                DefaultPredicate::new().and(SizeAbove::new(encoding::MIN_BYTES as u16)),
            ),
        ))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        // Signed by GHL, not by an API key; the raw body is verified, so its own body limit.
        .route(
            "/webhooks/ghl",
            axum::routing::post(crate::webhooks::receive)
                .layer(axum::extract::DefaultBodyLimit::max(
                    webhooks.max_body_bytes(),
                ))
                .with_state(webhooks),
        )
        .with_state(AppState(Arc::new(AppShared {
            schema,
            store,
            cache,
            auth,
            max_batch_operations: config.max_batch_operations,
            max_body_bytes: config.max_body_bytes,
            persisted: (config.persisted_queries_mb > 0).then(|| {
                persisted::PersistedQueries::new(
                    config.persisted_queries_mb.saturating_mul(1 << 20),
                )
            }),
            ws_pending: ConnectionLimiter::new(config.max_ws_pending),
            ws_init_timeout: Duration::from_secs(config.ws_init_timeout_secs),
            ws_shared: ws::Shared::default(),
        })))
        .merge(metrics)
        .layer(RequestBodyLimitLayer::new(config.max_body_bytes))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            Duration::from_secs(config.request_timeout_secs),
        ))
        .layer(cors(&config.cors_origins));
    // Request ids, trace spans (never headers: they hold the API key), request metrics.
    observe::layers(router)
}

/// CORS for the configured origins only; with none, no CORS headers (same origin only).
fn cors(origins: &[String]) -> CorsLayer {
    let origins: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|o| match HeaderValue::from_str(o) {
            Ok(value) => Some(value),
            Err(_) => {
                tracing::warn!(origin = %o, "ignoring a CORS origin that is not a header value");
                None
            }
        })
        .collect();
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_methods([axum::http::Method::GET, axum::http::Method::POST])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE, header::ACCEPT])
        .max_age(Duration::from_secs(600))
}

async fn readyz(State(state): State<AppState>) -> Response {
    match state.store.ping().await {
        Ok(()) => (StatusCode::OK, "ready").into_response(),
        Err(error) => {
            tracing::warn!(error = %error, "readiness check failed");
            (StatusCode::SERVICE_UNAVAILABLE, "database unavailable").into_response()
        }
    }
}

/// The two response media types of GraphQL over HTTP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MediaType {
    GraphqlResponseJson,
    Json,
}

impl MediaType {
    fn as_str(self) -> &'static str {
        match self {
            MediaType::GraphqlResponseJson => "application/graphql-response+json; charset=utf-8",
            MediaType::Json => "application/json; charset=utf-8",
        }
    }
}

/// Picks the response media type from `Accept`: the acceptable type with the highest quality,
/// `application/graphql-response+json` when both are named at the same quality. No header or
/// only a wildcard gets `application/json`, as GraphQL over HTTP asks for legacy clients (which
/// know only that type and send `*/*` or nothing). `None` if the client accepts neither.
pub fn negotiate(accept: Option<&str>) -> Option<MediaType> {
    let Some(accept) = accept.filter(|a| !a.trim().is_empty()) else {
        return Some(MediaType::Json);
    };
    let mut best: Option<(f32, MediaType)> = None;
    for range in accept.split(',') {
        let mut parts = range.split(';');
        let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let quality = parts
            .filter_map(|p| p.trim().strip_prefix("q="))
            .find_map(|q| q.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        let candidate = match media.as_str() {
            "application/graphql-response+json" => MediaType::GraphqlResponseJson,
            "application/json" | "application/*" | "*/*" => MediaType::Json,
            _ => continue,
        };
        if quality <= 0.0 {
            continue;
        }
        let better = match best {
            None => true,
            Some((q, m)) => {
                quality > q
                    || (quality == q
                        && m == MediaType::Json
                        && candidate == MediaType::GraphqlResponseJson)
            }
        };
        if better {
            best = Some((quality, candidate));
        }
    }
    best.map(|(_, m)| m)
}

fn error_response(status: StatusCode, media: MediaType, message: &str) -> Response {
    let body = serde_json::json!({ "errors": [{ "message": message }] });
    (
        status,
        [(header::CONTENT_TYPE, media.as_str())],
        body.to_string(),
    )
        .into_response()
}

fn not_acceptable() -> Response {
    error_response(
        StatusCode::NOT_ACCEPTABLE,
        MediaType::Json,
        "accept application/graphql-response+json or application/json",
    )
}

/// Whether a response is a request error: the document failed before execution (parse or
/// validation), so there is no data and no error has a path.
fn is_request_error(response: &async_graphql::Response) -> bool {
    response.data == Value::Null
        && !response.errors.is_empty()
        && response.errors.iter().all(|e| e.path.is_empty())
}

/// The status and body of an executed request. A request error (the document failed to parse
/// or validate) has no `data` entry at all, and is a 400 in `application/graphql-response+json`
/// (GraphQL-over-HTTP §7.1.2); everything else is a 200.
fn render(media: MediaType, response: &BatchResponse) -> (StatusCode, Vec<u8>) {
    let (status, body) = match response {
        BatchResponse::Single(single) if is_request_error(single) => {
            let mut body = serde_json::to_value(single).unwrap_or_default();
            if let Some(map) = body.as_object_mut() {
                map.remove("data");
            }
            let status = if media == MediaType::GraphqlResponseJson {
                StatusCode::BAD_REQUEST
            } else {
                StatusCode::OK
            };
            (status, serde_json::to_vec(&body))
        }
        // Straight to bytes: no intermediate JSON tree for the common case.
        BatchResponse::Single(single) => (StatusCode::OK, serde_json::to_vec(single)),
        batch @ BatchResponse::Batch(_) => (StatusCode::OK, serde_json::to_vec(batch)),
    };
    let body = body.unwrap_or_else(|_| br#"{"errors":[{"message":"internal error"}]}"#.to_vec());
    (status, body)
}

/// How long a miss waits for a concurrent execution of the same request before running its own.
const FLIGHT_WAIT: Duration = Duration::from_secs(5);

/// `x-cache` of an answer: served from the response cache, or executed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CacheStatus {
    Hit,
    Miss,
}

/// What a request says of the answer it wants: its method, its `If-None-Match` (GET only) and
/// the content coding its `Accept-Encoding` prefers.
#[derive(Clone, Copy, Debug)]
struct Wanted<'a> {
    /// A GET: it may not run a mutation, and may be conditional.
    get: bool,
    if_none_match: Option<&'a HeaderValue>,
    coding: Coding,
}

impl<'a> Wanted<'a> {
    fn of(headers: &'a HeaderMap, get: bool) -> Self {
        Self {
            get,
            if_none_match: headers.get(header::IF_NONE_MATCH).filter(|_| get),
            coding: encoding::negotiate(
                headers
                    .get(header::ACCEPT_ENCODING)
                    .and_then(|v| v.to_str().ok()),
            ),
        }
    }
}

/// An answer's body: as executed, or a cached entry (which keeps its encoded forms).
enum Body {
    Fresh(Bytes),
    Cached(Arc<cache::CachedAnswer>),
}

impl Body {
    fn identity(&self) -> &Bytes {
        match self {
            Body::Fresh(body) => body,
            Body::Cached(cached) => &cached.body,
        }
    }

    /// The body in `coding`; a cached entry encodes once and keeps the result.
    fn encoded(&self, coding: Coding) -> Bytes {
        let slot = match coding {
            Coding::Identity => return self.identity().clone(),
            Coding::Gzip => 0,
            Coding::Brotli => 1,
        };
        match self {
            Body::Fresh(body) => coding.encode(body),
            Body::Cached(cached) => cached.alternate(slot, |body| coding.encode(body)),
        }
    }
}

/// An answer of `/graphql`: its body in the coding the client prefers (bodies of at least
/// [`encoding::MIN_BYTES`]), its validator (one per coding), and the headers that keep shared
/// caches (CDNs, proxies) from serving one caller's answer to another (DESIGN.md, pitfalls).
fn answer(
    status: StatusCode,
    media: MediaType,
    body: Body,
    etag: Option<&str>,
    cache: CacheStatus,
    wanted: Wanted<'_>,
) -> Response {
    let coding = if body.identity().len() >= encoding::MIN_BYTES {
        wanted.coding
    } else {
        Coding::Identity
    };
    let etag = etag.map(|etag| coding.etag(etag));
    let not_modified = status == StatusCode::OK
        && etag.as_deref().is_some_and(|etag| {
            wanted
                .if_none_match
                .is_some_and(|inm| etag_matches(inm, etag))
        });
    let mut response = if not_modified {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut response = (
            status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(media.as_str()),
            )],
            body.encoded(coding),
        )
            .into_response();
        if let Some(name) = coding.header() {
            response
                .headers_mut()
                .insert(header::CONTENT_ENCODING, HeaderValue::from_static(name));
        }
        response
    };
    let headers = response.headers_mut();
    if let Some(etag) = etag.and_then(|e| HeaderValue::from_str(&e).ok()) {
        headers.insert(header::ETAG, etag);
    }
    headers.insert(
        "x-cache",
        HeaderValue::from_static(match cache {
            CacheStatus::Hit => "hit",
            CacheStatus::Miss => "miss",
        }),
    );
    // Clients may keep it but must revalidate (ETag); shared caches must not keep it at all.
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-cache"),
    );
    headers.insert(
        header::VARY,
        HeaderValue::from_static("Authorization, Accept, Accept-Encoding"),
    );
    response
}

/// Whether `If-None-Match` names `etag` (RFC 9110 §13.1.2: weak comparison, `*` matches any).
/// A tag of another coding of the same answer matches too: the client's copy is current, and
/// decoding it gives the same answer.
fn etag_matches(if_none_match: &HeaderValue, etag: &str) -> bool {
    let Ok(list) = if_none_match.to_str() else {
        return false;
    };
    let answer = |tag: &str| {
        let tag = tag
            .trim()
            .trim_start_matches("W/")
            .trim_matches('"')
            .to_owned();
        ["-gzip", "-br"]
            .iter()
            .find_map(|suffix| tag.strip_suffix(suffix).map(str::to_owned))
            .unwrap_or(tag)
    };
    list.split(',')
        .any(|tag| tag.trim() == "*" || answer(tag) == answer(etag))
}

/// Runs one GraphQL request, from the response cache when it holds a current answer; keeps the
/// answer when it is a successful query. Resolves automatic persisted queries first.
async fn execute_single(
    state: &AppState,
    caller: Caller,
    media: MediaType,
    mut request: async_graphql::Request,
    wanted: Wanted<'_>,
) -> Response {
    let persisted = match &state.persisted {
        Some(store) => match store.resolve(&mut request) {
            Ok(persisted) => persisted,
            Err(refusal) => return refuse_persisted(media, &refusal),
        },
        None if request.extensions.contains_key("persistedQuery") => {
            return guard::coded_error(
                StatusCode::BAD_REQUEST,
                media,
                "PERSISTED_QUERY_NOT_SUPPORTED",
                "PersistedQueryNotSupported (--persisted-queries-mb is 0)",
            );
        }
        None => persisted::Persisted::No,
    };
    if request.query.is_empty() {
        let message = if wanted.get {
            "missing `query` parameter"
        } else {
            "missing `query`"
        };
        return error_response(StatusCode::BAD_REQUEST, media, message);
    }
    if wanted.get && is_mutation(&request.query, request.operation_name.as_deref()) {
        let mut response = error_response(
            StatusCode::METHOD_NOT_ALLOWED,
            media,
            "mutations are not allowed over GET: use POST",
        );
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return response;
    }
    // A document offered with its hash is kept once it proved valid: it parsed and validated.
    let keep_document = |request_error: bool, query: &str| {
        if let (false, persisted::Persisted::Offered(hash), Some(store)) =
            (request_error, &persisted, &state.persisted)
        {
            store.keep(hash.clone(), query);
        }
    };
    let uncached = |request: async_graphql::Request, caller: Caller| async move {
        let query = request.query.clone();
        let response = graphql::execute(&state.schema, request.data(caller)).await;
        keep_document(is_request_error(&response), &query);
        let response = BatchResponse::Single(response);
        let (status, body) = render(media, &response);
        let etag = (status == StatusCode::OK).then(|| cache::etag_of(&body));
        answer(
            status,
            media,
            Body::Fresh(body.into()),
            etag.as_deref(),
            CacheStatus::Miss,
            wanted,
        )
    };
    let Some(cache) = state.cache.as_ref() else {
        return uncached(request, caller).await;
    };
    let variables = serde_json::to_string(&request.variables).unwrap_or_default();
    let key = CacheKey::new(
        &request.query,
        request.operation_name.as_deref(),
        &variables,
        &caller.scope(),
        media.as_str(),
    );
    let hit = |request: &async_graphql::Request, hit: Arc<cache::CachedAnswer>| {
        crate::telemetry::request::served_from_cache(
            &request.query,
            request.operation_name.as_deref(),
        );
        // Only valid documents' answers are cached.
        keep_document(false, &request.query);
        let etag = hit.etag.clone();
        answer(
            StatusCode::OK,
            media,
            Body::Cached(hit),
            Some(&etag),
            CacheStatus::Hit,
            wanted,
        )
    };
    if let Some(cached) = cache.get(&key) {
        return hit(&request, cached);
    }
    // Only a miss parses the document to see whether its answer may be kept: a mutation or an
    // introspection is never inserted, so it never hits either.
    if !is_cacheable_document(&mut request) {
        return uncached(request, caller).await;
    }
    // Concurrent misses of one key (a popular answer that just expired) wait for the first
    // instead of all executing it.
    let _flight = match cache.join_flight(&key) {
        Flight::Leader(guard) => Some(guard),
        follower => {
            follower.wait(FLIGHT_WAIT).await;
            if let Some(cached) = cache.get(&key) {
                return hit(&request, cached);
            }
            None
        }
    };
    // The versions before anything is read: a write that lands while this executes makes the
    // answer out of date at once, so it is not kept.
    let reads = Arc::new(ReadSet::new(cache.versions().snapshot()));
    let query = request.query.clone();
    let response = graphql::execute(&state.schema, request.data(caller).data(reads.clone())).await;
    keep_document(is_request_error(&response), &query);
    let keep = response.is_ok();
    let response = BatchResponse::Single(response);
    let (status, body) = render(media, &response);
    let body = Bytes::from(body);
    let etag = (status == StatusCode::OK).then(|| cache::etag_of(&body));
    if let (true, StatusCode::OK, Some(etag)) = (keep, status, &etag) {
        cache.insert(key, body.clone(), etag.clone(), &reads);
    }
    answer(
        status,
        media,
        Body::Fresh(body),
        etag.as_deref(),
        CacheStatus::Miss,
        wanted,
    )
}

/// The answer to a refused persisted query: `PersistedQueryNotFound` is a 200 (the client's
/// next step, as Apollo Server answers it); a bad extension is a 400 `BAD_USER_INPUT`.
fn refuse_persisted(media: MediaType, refusal: &persisted::Refusal) -> Response {
    let (message, code) = refusal.message_and_code();
    let status = match refusal {
        persisted::Refusal::NotFound => StatusCode::OK,
        persisted::Refusal::BadInput(_) => StatusCode::BAD_REQUEST,
    };
    guard::coded_error(status, media, code, message)
}

/// Whether an answer to this document may be cached: a query (not a mutation or subscription)
/// that does not introspect the schema. A document that does not parse is not cached (its
/// answer is an error anyway). The parsed document stays in the request, so that execution does
/// not parse it again (a second parse was 2% of a cold request's samples).
fn is_cacheable_document(request: &mut async_graphql::Request) -> bool {
    let query = &request.query;
    if query.contains("__schema") || query.contains("__type(") || query.contains("__type (") {
        return false;
    }
    let operation_name = request.operation_name.clone();
    request
        .parsed_query()
        .ok()
        .and_then(|document| operation_type_of(document, operation_name.as_deref()))
        == Some(OperationType::Query)
}

fn accept(headers: &HeaderMap) -> Option<MediaType> {
    negotiate(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()))
}

async fn graphql_post(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    let Some(media) = accept(&headers) else {
        return not_acceptable();
    };
    // The limit applies to the body as decoded (a gzip or brotli body was decoded by the route's
    // layer), so a small compressed body cannot expand past it.
    let body = match axum::body::to_bytes(body, state.max_body_bytes).await {
        Ok(body) => body,
        Err(error) => {
            let too_large = error.into_inner().is::<http_body_util::LengthLimitError>();
            return if too_large {
                error_response(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    media,
                    &format!(
                        "the request body is larger than {} bytes (--max-body-bytes), once decoded",
                        state.max_body_bytes
                    ),
                )
            } else {
                error_response(
                    StatusCode::BAD_REQUEST,
                    media,
                    "the request body could not be read (a Content-Encoding that does not decode?)",
                )
            };
        }
    };
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase());
    if content_type.as_deref() != Some("application/json") {
        return error_response(
            StatusCode::BAD_REQUEST,
            media,
            "a POST to /graphql needs `Content-Type: application/json`",
        );
    }
    let request: BatchRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(error) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                media,
                &format!("the body is not a GraphQL request: {error}"),
            );
        }
    };
    if let BatchRequest::Batch(requests) = &request
        && requests.len() > state.max_batch_operations
    {
        return guard::coded_error(
            StatusCode::BAD_REQUEST,
            media,
            "BAD_USER_INPUT",
            &format!(
                "the batch has {} operations; the limit is {} (--max-batch-operations)",
                requests.len(),
                state.max_batch_operations
            ),
        );
    }
    match request {
        BatchRequest::Single(request) => {
            execute_single(&state, caller, media, request, Wanted::of(&headers, false)).await
        }
        batch @ BatchRequest::Batch(_) => {
            let response = graphql::execute_batch(&state.schema, batch.data(caller)).await;
            let (status, body) = render(media, &response);
            answer(
                status,
                media,
                Body::Fresh(body.into()),
                None,
                CacheStatus::Miss,
                Wanted::of(&headers, false),
            )
        }
    }
}

async fn graphql_get(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let Some(media) = accept(&headers) else {
        return not_acceptable();
    };
    // An empty `query` is the hash-only request of a persisted query, or a missing one
    // (`execute_single` tells them apart).
    let query = query.as_deref().unwrap_or("");
    let request = match async_graphql::http::parse_query_string(query) {
        // async-graphql's parser reads `operation_name`; GraphQL over HTTP names it
        // `operationName`.
        Ok(request) => match operation_name_param(query) {
            Some(name) if request.operation_name.is_none() => request.operation_name(name),
            _ => request,
        },
        Err(error) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                media,
                &format!("malformed request: {error}"),
            );
        }
    };
    execute_single(&state, caller, media, request, Wanted::of(&headers, true)).await
}

/// The `operationName` parameter of a GET's query string (GraphQL over HTTP §6.1.1).
fn operation_name_param(query: &str) -> Option<String> {
    serde_urlencoded::from_str::<Vec<(String, String)>>(query)
        .ok()?
        .into_iter()
        .find(|(name, _)| name == "operationName")
        .map(|(_, value)| value)
        .filter(|value| !value.is_empty())
}

/// Whether the operation a GET would run is a mutation. A document that does not parse is left
/// to the executor, which reports it as a request error.
fn is_mutation(query: &str, operation_name: Option<&str>) -> bool {
    operation_type(query, operation_name) == Some(OperationType::Mutation)
}

/// The type of the operation a request runs: the one named, or the first; `None` when the
/// document does not parse or has no such operation.
fn operation_type(query: &str, operation_name: Option<&str>) -> Option<OperationType> {
    let document = async_graphql::parser::parse_query(query).ok()?;
    operation_type_of(&document, operation_name)
}

/// The type of the operation `operation_name` picks in `document` (the first without a name).
fn operation_type_of(
    document: &async_graphql::parser::types::ExecutableDocument,
    operation_name: Option<&str>,
) -> Option<OperationType> {
    match operation_name {
        Some(name) => document
            .operations
            .iter()
            .find(|(n, _)| n.is_some_and(|n| n.as_str() == name))
            .map(|(_, op)| op.node.ty),
        None => document.operations.iter().next().map(|(_, op)| op.node.ty),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_follows_graphql_over_http() {
        use MediaType::*;
        assert_eq!(negotiate(None), Some(Json));
        assert_eq!(negotiate(Some("*/*")), Some(Json));
        assert_eq!(negotiate(Some("application/*")), Some(Json));
        assert_eq!(
            negotiate(Some("application/graphql-response+json")),
            Some(GraphqlResponseJson)
        );
        assert_eq!(
            negotiate(Some("application/graphql-response+json, */*;q=0.5")),
            Some(GraphqlResponseJson)
        );
        assert_eq!(negotiate(Some("application/json")), Some(Json));
        assert_eq!(
            negotiate(Some(
                "application/graphql-response+json, application/json;q=0.9"
            )),
            Some(GraphqlResponseJson)
        );
        assert_eq!(
            negotiate(Some(
                "application/graphql-response+json;q=0.5, application/json"
            )),
            Some(Json)
        );
        assert_eq!(
            negotiate(Some("application/json, multipart/mixed")),
            Some(Json)
        );
        assert_eq!(negotiate(Some("text/html")), None);
        assert_eq!(negotiate(Some("application/json;q=0")), None);
    }

    #[test]
    fn mutations_are_recognised_by_operation() {
        assert!(is_mutation("mutation { x }", None));
        assert!(!is_mutation("query { x }", None));
        assert!(!is_mutation("{ x }", None));
        assert!(is_mutation("query A { x } mutation B { y }", Some("B")));
        assert!(!is_mutation("query A { x } mutation B { y }", Some("A")));
        assert!(!is_mutation("not graphql", None));
    }
}
