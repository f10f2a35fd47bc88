//! GHL's routes as the simulator serves them: the paths, methods, query and body keys, status codes
//! and shapes of FACTS.md §2-§8 (quirks included), behind a layer that adds latency, rolls faults
//! and counts requests by endpoint and status.

// Handlers return `Result<_, Response>`: the error *is* the HTTP answer, built once per failed
// request, so boxing it would only add noise.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{MatchedPath, Path, Query, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use rand::Rng;
use serde_json::{Map, Value, json};

use super::auth::{Lookup, Token, TokenKind};
use super::control::{Fault, RateInfo};
use super::data::{self, Key, MsRange, iso, parse_time};
use super::filters;
use super::{Location, Shared, lock, read};

/// Endpoint names used by counters and per-endpoint faults: (name, method, path).
pub const ENDPOINTS: &[(&str, &str, &str)] = &[
    ("contacts.search", "POST", "/contacts/search"),
    ("contacts.list", "GET", "/contacts/"),
    ("contacts.get", "GET", "/contacts/{contactId}"),
    ("contacts.tasks", "GET", "/contacts/{contactId}/tasks"),
    (
        "tasks.search",
        "POST",
        "/locations/{locationId}/tasks/search",
    ),
    ("conversations.search", "GET", "/conversations/search"),
    ("opportunities.search.post", "POST", "/opportunities/search"),
    ("opportunities.search.get", "GET", "/opportunities/search"),
    ("opportunities.pipelines", "GET", "/opportunities/pipelines"),
    ("users.list", "GET", "/users/"),
    ("users.search", "GET", "/users/search"),
    (
        "locations.customFields",
        "GET",
        "/locations/{locationId}/customFields",
    ),
    ("locations.get", "GET", "/locations/{locationId}"),
    ("oauth.token", "POST", "/oauth/token"),
    ("oauth.locationToken", "POST", "/oauth/locationToken"),
    (
        "oauth.installedLocations",
        "GET",
        "/oauth/installedLocations",
    ),
];

/// `Version` values GHL accepts: the specs' two and the official SDK's default.
pub const VERSIONS: &[&str] = &["2021-07-28", "2021-04-15", "2023-02-21"];

type S = State<Arc<Shared>>;
type Res = Result<Response, Response>;
type Q = Query<HashMap<String, String>>;

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/contacts/search", post(contacts_search))
        .route("/contacts/", get(contacts_list))
        .route("/contacts", get(contacts_list))
        .route("/contacts/{contact_id}", get(contact_get))
        .route("/contacts/{contact_id}/tasks", get(contact_tasks))
        .route("/locations/{location_id}/tasks/search", post(tasks_search))
        .route("/conversations/search", get(conversations_search))
        .route(
            "/opportunities/search",
            post(opportunities_search_post).get(opportunities_search_get),
        )
        .route("/opportunities/pipelines", get(pipelines))
        .route("/users/", get(users_list))
        .route("/users", get(users_list))
        .route("/users/search", get(users_search))
        .route("/locations/{location_id}/customFields", get(custom_fields))
        .route("/locations/{location_id}", get(location_get))
        .route("/oauth/token", post(oauth_token))
        .route("/oauth/locationToken", post(oauth_location_token))
        .route("/oauth/installedLocations", get(installed_locations))
        .route_layer(axum::middleware::from_fn_with_state(
            shared.clone(),
            ghl_layer,
        ))
        .fallback(not_found)
        .method_not_allowed_fallback(not_found)
        .with_state(shared)
}

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
    ENDPOINTS
        .iter()
        .find(|(_, m, p)| *m == method.as_str() && *p == path)
        .map(|(n, _, _)| *n)
        .unwrap_or("other")
}

// ---------------------------------------------------------------------------------------------
// The layer: latency, faults, counters

async fn ghl_layer(State(s): S, req: Request, next: Next) -> Response {
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
            let info = RateInfo {
                limit_daily: settings.daily_limit,
                daily_remaining: settings.daily_limit / 2,
                interval_ms: settings.burst_window_ms,
                max: settings.burst_limit,
                remaining: 0,
                retry_after: Some(Duration::from_millis(settings.burst_window_ms)),
            };
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

async fn not_found(State(s): S, method: Method, uri: axum::http::Uri) -> Response {
    s.count("other", "404");
    error(
        StatusCode::NOT_FOUND,
        json!(format!("Cannot {} {}", method, uri.path())),
        Some("Not Found"),
    )
}

// ---------------------------------------------------------------------------------------------
// Responses

fn trace_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn json_response(status: StatusCode, mut body: Value) -> Response {
    if let Value::Object(m) = &mut body {
        m.entry("traceId").or_insert_with(|| trace_id().into());
    }
    (status, axum::Json(body)).into_response()
}

/// GHL's error shape: `{statusCode, message, error?}`.
fn error(status: StatusCode, message: Value, error: Option<&str>) -> Response {
    let mut m = Map::new();
    m.insert("statusCode".into(), json!(status.as_u16()));
    m.insert("message".into(), message);
    if let Some(e) = error {
        m.insert("error".into(), json!(e));
    }
    json_response(status, Value::Object(m))
}

fn bad_request(msg: impl Into<String>) -> Response {
    error(StatusCode::BAD_REQUEST, json!(msg.into()), None)
}

/// 422 with an ARRAY `message`, as GHL's validation pipe answers.
fn unprocessable(msgs: Vec<String>) -> Response {
    error(
        StatusCode::UNPROCESSABLE_ENTITY,
        json!(msgs),
        Some("Unprocessable Entity"),
    )
}

fn unauthorized(msg: &str) -> Response {
    error(StatusCode::UNAUTHORIZED, json!(msg), Some("Unauthorized"))
}

fn with_rate(mut r: Response, info: &RateInfo, retry_after: bool) -> Response {
    for (k, v) in info.headers(retry_after) {
        if let Ok(v) = header::HeaderValue::from_str(&v) {
            r.headers_mut().insert(k, v);
        }
    }
    r
}

fn too_many(info: &RateInfo, retry_after: bool) -> Response {
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

// ---------------------------------------------------------------------------------------------
// Gate: Version header, bearer token, rate limit

#[derive(Clone, Copy, PartialEq, Eq)]
enum Need {
    /// `bearer` / Location-Access: a PIT or an OAuth location token.
    Location,
    /// Location or agency token.
    Any,
    /// Agency-Access-Only.
    Agency,
}

/// What a request that passed the gate carries: its token and its rate-limit headers.
struct Ctx {
    token: Token,
    rate: RateInfo,
    retry_after: bool,
}

impl Ctx {
    fn reply(&self, status: StatusCode, body: Value) -> Response {
        with_rate(json_response(status, body), &self.rate, false)
    }

    fn fail(&self, r: Response) -> Response {
        with_rate(r, &self.rate, self.retry_after)
    }

    /// The location, if this token may read it: 403 otherwise, as GHL answers.
    fn location(&self, s: &Shared, id: &str) -> Result<Arc<Location>, Response> {
        let allowed = match self.token.kind {
            TokenKind::Agency => s
                .location(id)
                .is_some_and(|l| l.meta.company_id == self.token.company_id),
            _ => self.token.location_id.as_deref() == Some(id),
        };
        match (allowed, s.location(id)) {
            (true, Some(l)) => Ok(l.clone()),
            _ => Err(self.fail(error(
                StatusCode::FORBIDDEN,
                json!("The token does not have access to this location"),
                None,
            ))),
        }
    }

    /// The token's own location (for routes that carry no location id, like `/contacts/{id}`).
    fn own_location(&self, s: &Shared) -> Result<Arc<Location>, Response> {
        let id = self.token.location_id.clone().unwrap_or_default();
        self.location(s, &id)
    }
}

fn gate(s: &Shared, headers: &HeaderMap, need: Need) -> Result<Ctx, Response> {
    match headers.get("version").map(|v| v.to_str().unwrap_or("")) {
        None => return Err(bad_request("Version header was not found")),
        Some(v) if !VERSIONS.contains(&v.trim()) => {
            return Err(bad_request("Version header is invalid"));
        }
        _ => {}
    }
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .unwrap_or("");
    let token = match lock(&s.auth).lookup(bearer) {
        Lookup::Valid(t) => t.clone(),
        Lookup::Expired => return Err(unauthorized("Invalid JWT")),
        Lookup::Unknown => return Err(unauthorized("Invalid token: access token is invalid")),
    };
    let kind_ok = match need {
        Need::Location => token.kind != TokenKind::Agency,
        Need::Any => true,
        Need::Agency => token.kind == TokenKind::Agency,
    };
    if !kind_ok {
        return Err(unauthorized(
            "This authClass type is not allowed to access this scope",
        ));
    }
    let settings = read(&s.settings).clone();
    match lock(&s.limiter).check(&token.bucket, &settings) {
        Ok(rate) => Ok(Ctx {
            token,
            rate,
            retry_after: settings.retry_after,
        }),
        Err(info) => Err(too_many(&info, settings.retry_after)),
    }
}

// ---------------------------------------------------------------------------------------------
// Input helpers

fn json_body(ctx: &Ctx, bytes: &Bytes) -> Result<Map<String, Value>, Response> {
    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(ctx.fail(bad_request("Request body must be a JSON object"))),
        Err(e) => Err(ctx.fail(bad_request(format!("Unexpected token in JSON body: {e}")))),
    }
}

/// GHL's validation pipe forbids unknown keys: 422 "property X should not exist".
fn check_keys(ctx: &Ctx, body: &Map<String, Value>, allowed: &[&str]) -> Result<(), Response> {
    let bad: Vec<String> = body
        .keys()
        .filter(|k| !allowed.contains(&k.as_str()))
        .map(|k| format!("property {k} should not exist"))
        .collect();
    if bad.is_empty() {
        Ok(())
    } else {
        Err(ctx.fail(unprocessable(bad)))
    }
}

/// An optional non-negative integer (JSON number or numeric string) bounded by `max`.
fn int_field(
    ctx: &Ctx,
    v: Option<&Value>,
    name: &str,
    min: u64,
    max: u64,
) -> Result<Option<u64>, Response> {
    let Some(v) = v else { return Ok(None) };
    let n = match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.parse::<f64>().ok(),
        Value::Null => return Ok(None),
        _ => None,
    };
    match n {
        None => Err(ctx.fail(unprocessable(vec![format!(
            "{name} must be a number conforming to the specified constraints"
        )]))),
        Some(n) if n < min as f64 => Err(ctx.fail(unprocessable(vec![format!(
            "{name} must not be less than {min}"
        )]))),
        Some(n) if n > max as f64 => Err(ctx.fail(unprocessable(vec![format!(
            "{name} must not be greater than {max}"
        )]))),
        Some(n) => Ok(Some(n as u64)),
    }
}

fn query_int(
    ctx: &Ctx,
    q: &HashMap<String, String>,
    name: &str,
    max: u64,
) -> Result<Option<u64>, Response> {
    int_field(ctx, q.get(name).map(|s| json!(s)).as_ref(), name, 0, max)
}

/// `searchAfter: [ms, id]`; the opportunity spec types the items as strings, so both are read.
fn search_after(ctx: &Ctx, v: Option<&Value>) -> Result<Option<Key>, Response> {
    let Some(v) = v else { return Ok(None) };
    let bad = || {
        ctx.fail(unprocessable(vec![
            "searchAfter must be an array of [sortValue, id]".into(),
        ]))
    };
    let arr = v.as_array().ok_or_else(bad)?;
    if arr.is_empty() {
        return Ok(None);
    }
    if arr.len() != 2 {
        return Err(bad());
    }
    let ms = parse_time(&arr[0]).ok_or_else(bad)?;
    let id = arr[1].as_str().ok_or_else(bad)?;
    Ok(Some((ms, id.to_string())))
}

/// `sort: [{field, direction}]` restricted to time fields; returns (field, desc).
fn sort_of(
    ctx: &Ctx,
    v: Option<&Value>,
    allowed: &[&str],
    default: (&'static str, bool),
) -> Result<(String, bool), Response> {
    let Some(first) = v.and_then(Value::as_array).and_then(|a| a.first()) else {
        if v.is_some_and(|v| !v.is_array()) {
            return Err(ctx.fail(unprocessable(vec!["sort must be an array".into()])));
        }
        return Ok((default.0.to_string(), default.1));
    };
    let field = first.get("field").and_then(Value::as_str).unwrap_or("");
    if !allowed.contains(&field) {
        return Err(ctx.fail(bad_request(format!("Invalid sort field {field}"))));
    }
    let desc = match first.get("direction").and_then(Value::as_str) {
        Some("desc") => true,
        Some("asc") | None => false,
        Some(d) => return Err(ctx.fail(bad_request(format!("Invalid sort direction {d}")))),
    };
    Ok((field.to_string(), desc))
}

fn query_str(ctx: &Ctx, q: &HashMap<String, String>, name: &str) -> Result<String, Response> {
    required_str(ctx, q.get(name).map(|v| json!(v)).as_ref(), name).map(str::to_string)
}

fn required_str<'a>(ctx: &Ctx, v: Option<&'a Value>, name: &str) -> Result<&'a str, Response> {
    match v.and_then(Value::as_str) {
        Some(s) if !s.is_empty() => Ok(s),
        _ => Err(ctx.fail(unprocessable(vec![
            format!("{name} should not be empty"),
            format!("{name} must be a string"),
        ]))),
    }
}

// ---------------------------------------------------------------------------------------------
// Contacts

const CONTACT_FIELDS: &[&str] = &[
    "id",
    "firstName",
    "lastName",
    "firstNameLowerCase",
    "lastNameLowerCase",
    "fullNameLowerCase",
    "contactName",
    "email",
    "phone",
    "companyName",
    "source",
    "type",
    "assignedTo",
    "city",
    "state",
    "country",
    "postalCode",
    "tags",
    "dnd",
    "dateAdded",
    "dateUpdated",
];

async fn contacts_search(State(s): S, headers: HeaderMap, bytes: Bytes) -> Res {
    let ctx = gate(&s, &headers, Need::Location)?;
    let body = json_body(&ctx, &bytes)?;
    check_keys(
        &ctx,
        &body,
        &[
            "locationId",
            "pageLimit",
            "page",
            "searchAfter",
            "query",
            "filters",
            "sort",
        ],
    )?;
    let loc = ctx.location(
        &s,
        required_str(&ctx, body.get("locationId"), "locationId")?,
    )?;
    let limit = int_field(&ctx, body.get("pageLimit"), "pageLimit", 1, 500)?.ok_or_else(|| {
        ctx.fail(unprocessable(vec![
            "pageLimit must not be less than 1".into(),
        ]))
    })? as usize;
    let page = int_field(&ctx, body.get("page"), "page", 1, u64::MAX)?;
    let after = search_after(&ctx, body.get("searchAfter"))?;
    let query = match body.get("query") {
        None | Some(Value::Null) => None,
        Some(Value::String(q)) if q.chars().count() <= 75 => {
            Some(q.clone()).filter(|q| !q.is_empty())
        }
        Some(_) => {
            return Err(ctx.fail(unprocessable(vec![
                "query must be a string of at most 75 characters".into(),
            ])));
        }
    };
    let fs = match body.get("filters") {
        None | Some(Value::Null) => Vec::new(),
        Some(v) => filters::parse(v, &|f| CONTACT_FIELDS.contains(&f))
            .map_err(|m| ctx.fail(bad_request(m)))?,
    };
    let (sort_field, desc) = sort_of(
        &ctx,
        body.get("sort"),
        &["dateAdded", "dateUpdated"],
        ("dateAdded", true),
    )?;
    let skip = match (after.is_some(), page) {
        (false, Some(p)) => {
            if p as usize * limit > 10_000 {
                return Err(ctx.fail(bad_request(
                    "page * pageLimit must not exceed 10000; use searchAfter to go further",
                )));
            }
            (p as usize - 1) * limit
        }
        _ => 0,
    };
    let range = filters::narrowing(&fs, &sort_field);
    let rec = super::read(&loc.records);
    let index = if sort_field == "dateUpdated" {
        &rec.contacts_by_updated
    } else {
        &rec.contacts_by_added
    };
    let plain = fs.is_empty() && query.is_none();
    let pred = |id: &str| {
        plain
            || rec.contacts.get(id).is_some_and(|c| {
                query.as_deref().is_none_or(|q| c.matches_text(q))
                    && filters::matches(&fs, &|f| c.field(f))
            })
    };
    let p = data::page(
        index,
        &range,
        after.as_ref(),
        desc,
        skip,
        limit,
        true,
        &pred,
    );
    let contacts: Vec<Value> = p
        .keys
        .iter()
        .filter_map(|(ms, id)| {
            let mut v = rec.contacts.get(id)?.to_json(&loc.meta.id);
            v["searchAfter"] = json!([ms, id]);
            Some(v)
        })
        .collect();
    Ok(ctx.reply(
        StatusCode::OK,
        json!({"contacts": contacts, "total": p.total}),
    ))
}

/// Legacy cursor pages (`GET /contacts/`, `GET /opportunities/search`): `meta.startAfter` and
/// `meta.startAfterId` name the last row; `nextPageUrl` repeats them.
fn legacy_meta(
    s: &Shared,
    path_and_query: String,
    keys: &[&Key],
    total: usize,
    more: bool,
    page: u64,
) -> Value {
    let last = keys.last();
    let next_url = match (more, last) {
        (true, Some((ms, id))) => json!(format!(
            "{}{}&startAfter={ms}&startAfterId={id}&page={}",
            s.base_url,
            path_and_query,
            page + 1
        )),
        _ => Value::Null,
    };
    json!({
        "total": total,
        "nextPageUrl": next_url,
        "startAfterId": last.map(|k| json!(k.1)).unwrap_or(Value::Null),
        "startAfter": last.map(|k| json!(k.0)).unwrap_or(Value::Null),
        "currentPage": page,
        "nextPage": if more { json!(page + 1) } else { Value::Null },
        "prevPage": if page > 1 { json!(page - 1) } else { Value::Null },
    })
}

/// The cursor of a legacy GET: `startAfter` (ms) and `startAfterId`. With `startAfter` alone,
/// every row at that millisecond counts as seen.
fn legacy_cursor(ctx: &Ctx, q: &HashMap<String, String>) -> Result<Option<Key>, Response> {
    match (q.get("startAfter"), q.get("startAfterId")) {
        (None, None) => Ok(None),
        (Some(ms), id) => {
            let ms = parse_time(&json!(ms)).ok_or_else(|| {
                ctx.fail(unprocessable(vec!["startAfter must be a number".into()]))
            })?;
            Ok(Some((
                ms,
                id.cloned().unwrap_or_else(|| data::ID_MAX.to_string()),
            )))
        }
        (None, Some(_)) => Err(ctx.fail(bad_request("startAfterId needs startAfter"))),
    }
}

async fn contacts_list(State(s): S, headers: HeaderMap, Query(q): Q) -> Res {
    let ctx = gate(&s, &headers, Need::Location)?;
    let loc_id = query_str(&ctx, &q, "locationId")?;
    let loc = ctx.location(&s, &loc_id)?;
    let limit = query_int(&ctx, &q, "limit", 100)?.unwrap_or(20).max(1) as usize;
    let page = query_int(&ctx, &q, "page", u64::MAX)?.unwrap_or(1).max(1);
    let after = legacy_cursor(&ctx, &q)?;
    let text = q.get("query").filter(|t| !t.is_empty()).cloned();
    let rec = super::read(&loc.records);
    let pred = |id: &str| {
        text.as_deref()
            .is_none_or(|t| rec.contacts.get(id).is_some_and(|c| c.matches_text(t)))
    };
    let p = data::page(
        &rec.contacts_by_added,
        &MsRange::default(),
        after.as_ref(),
        false,
        0,
        limit,
        true,
        &pred,
    );
    let contacts: Vec<Value> = p
        .keys
        .iter()
        .filter_map(|(_, id)| Some(rec.contacts.get(id)?.to_json(&loc.meta.id)))
        .collect();
    let mut pq = format!("/contacts/?locationId={loc_id}&limit={limit}");
    if let Some(t) = &text {
        pq.push_str(&format!("&query={}", urlencode(t)));
    }
    let meta = legacy_meta(&s, pq, &p.keys, p.total, p.more, page);
    Ok(ctx.reply(StatusCode::OK, json!({"contacts": contacts, "meta": meta})))
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn contact_not_found(ctx: &Ctx, id: &str) -> Response {
    ctx.fail(bad_request(format!("Contact with id {id} not found")))
}

async fn contact_get(State(s): S, headers: HeaderMap, Path(id): Path<String>) -> Res {
    let ctx = gate(&s, &headers, Need::Location)?;
    let loc = ctx.own_location(&s)?;
    let rec = super::read(&loc.records);
    let c = rec
        .contacts
        .get(&id)
        .ok_or_else(|| contact_not_found(&ctx, &id))?;
    Ok(ctx.reply(StatusCode::OK, json!({"contact": c.to_json(&loc.meta.id)})))
}

async fn contact_tasks(State(s): S, headers: HeaderMap, Path(id): Path<String>) -> Res {
    let ctx = gate(&s, &headers, Need::Location)?;
    let loc = ctx.own_location(&s)?;
    let rec = super::read(&loc.records);
    if !rec.contacts.contains_key(&id) {
        return Err(contact_not_found(&ctx, &id));
    }
    let tasks: Vec<Value> = rec
        .tasks_by_contact
        .get(&id)
        .into_iter()
        .flatten()
        .filter_map(|t| Some(rec.tasks.get(t)?.to_json()))
        .collect();
    Ok(ctx.reply(StatusCode::OK, json!({"tasks": tasks})))
}

// ---------------------------------------------------------------------------------------------
// Tasks

fn string_list(ctx: &Ctx, v: Option<&Value>, name: &str) -> Result<Option<Vec<String>>, Response> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| x.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .map(Some)
            .ok_or_else(|| {
                ctx.fail(unprocessable(vec![format!(
                    "each value in {name} must be a string"
                )]))
            }),
        Some(Value::String(s)) => Ok(Some(vec![s.clone()])),
        Some(_) => Err(ctx.fail(unprocessable(vec![format!("{name} must be an array")]))),
    }
}

fn bool_field(ctx: &Ctx, v: Option<&Value>, name: &str) -> Result<Option<bool>, Response> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(ctx.fail(unprocessable(vec![format!(
            "{name} must be a boolean value"
        )]))),
    }
}

async fn tasks_search(
    State(s): S,
    headers: HeaderMap,
    Path(loc_id): Path<String>,
    bytes: Bytes,
) -> Res {
    let ctx = gate(&s, &headers, Need::Location)?;
    let loc = ctx.location(&s, &loc_id)?;
    let body = json_body(&ctx, &bytes)?;
    check_keys(
        &ctx,
        &body,
        &[
            "contactId",
            "completed",
            "assignedTo",
            "query",
            "limit",
            "skip",
            "businessId",
            "searchAfter",
            "dueDate",
            "sortKey",
            "sortDirection",
            "overdue",
            "unAssigned",
        ],
    )?;
    let contact_ids = string_list(&ctx, body.get("contactId"), "contactId")?;
    let assigned = string_list(&ctx, body.get("assignedTo"), "assignedTo")?;
    let completed = bool_field(&ctx, body.get("completed"), "completed")?;
    let overdue = bool_field(&ctx, body.get("overdue"), "overdue")?.unwrap_or(false);
    let unassigned = bool_field(&ctx, body.get("unAssigned"), "unAssigned")?.unwrap_or(false);
    let query = body
        .get("query")
        .and_then(Value::as_str)
        .filter(|q| !q.is_empty())
        .map(str::to_lowercase);
    let business = body
        .get("businessId")
        .and_then(Value::as_str)
        .is_some_and(|b| !b.is_empty());
    let limit = int_field(&ctx, body.get("limit"), "limit", 1, 500)?.unwrap_or(25) as usize;
    let skip = int_field(&ctx, body.get("skip"), "skip", 0, u64::MAX)?.unwrap_or(0) as usize;
    let after = search_after(&ctx, body.get("searchAfter"))?;
    let due_range = match body.get("dueDate") {
        None | Some(Value::Null) => MsRange::default(),
        Some(v) => filters::range_of(v).ok_or_else(|| {
            ctx.fail(unprocessable(vec![
                "dueDate must be {gt,gte,lt,lte}".into(),
            ]))
        })?,
    };
    let sort_key = body
        .get("sortKey")
        .and_then(Value::as_str)
        .unwrap_or("dueDate");
    if !["dueDate", "dateAdded", "dateUpdated"].contains(&sort_key) {
        return Err(ctx.fail(unprocessable(vec![format!(
            "sortKey must be one of dueDate, dateAdded, dateUpdated"
        )])));
    }
    let desc = match body.get("sortDirection").and_then(Value::as_str) {
        None | Some("asc") => false,
        Some("desc") => true,
        Some(_) => {
            return Err(ctx.fail(unprocessable(vec![
                "sortDirection must be asc or desc".into(),
            ])));
        }
    };
    let now = chrono::Utc::now().timestamp_millis();
    let rec = super::read(&loc.records);
    let pred = |id: &str| {
        let Some(t) = rec.tasks.get(id) else {
            return false;
        };
        !business
            && contact_ids
                .as_ref()
                .is_none_or(|c| c.contains(&t.contact_id))
            && assigned
                .as_ref()
                .is_none_or(|a| t.assigned_to.as_ref().is_some_and(|x| a.contains(x)))
            && completed.is_none_or(|c| c == t.completed)
            && (!overdue || (!t.completed && t.due < now))
            && (!unassigned || t.assigned_to.is_none())
            && due_range.contains(t.due)
            && query.as_deref().is_none_or(|q| {
                t.title.to_lowercase().contains(q)
                    || t.body
                        .as_deref()
                        .is_some_and(|b| b.to_lowercase().contains(q))
            })
    };
    // dueDate has an index; the other keys are rare and get a temporary one.
    let built;
    let (index, range) = if sort_key == "dueDate" {
        (&rec.tasks_by_due, due_range.clone())
    } else {
        built = rec
            .tasks
            .values()
            .map(|t| {
                (
                    if sort_key == "dateAdded" {
                        t.date_added
                    } else {
                        t.date_updated
                    },
                    t.id.clone(),
                )
            })
            .collect::<data::Index>();
        (&built, MsRange::default())
    };
    let p = data::page(
        index,
        &range,
        after.as_ref(),
        desc,
        skip,
        limit,
        false,
        &pred,
    );
    let tasks: Vec<Value> = p
        .keys
        .iter()
        .filter_map(|(ms, id)| {
            let t = rec.tasks.get(id)?;
            let c = rec.contacts.get(&t.contact_id);
            let u = t
                .assigned_to
                .as_ref()
                .and_then(|a| loc.meta.users.iter().find(|u| &u.id == a));
            Some(json!({
                "_id": t.id,
                "title": t.title,
                "body": t.body,
                "assignedTo": t.assigned_to,
                "completed": t.completed,
                "status": if t.completed { "completed" } else { "incompleted" },
                "statusGroup": if t.completed { "completed" } else { "to_do" },
                "contactId": t.contact_id,
                "locationId": loc.meta.id,
                "dueDate": iso(t.due),
                "dateAdded": iso(t.date_added),
                "dateUpdated": iso(t.date_updated),
                "deleted": false,
                "contactDetails": {
                    "_id": t.contact_id,
                    "firstName": c.and_then(|c| c.first_name.clone()),
                    "lastName": c.and_then(|c| c.last_name.clone()),
                },
                "assignedToUserDetails": u.map(|u| json!({"id": u.id, "firstName": u.first_name, "lastName": u.last_name})),
                "searchAfter": [ms, id],
            }))
        })
        .collect();
    Ok(ctx.reply(StatusCode::CREATED, json!({"tasks": tasks})))
}

// ---------------------------------------------------------------------------------------------
// Conversations

fn enum_param<'a>(
    ctx: &Ctx,
    q: &'a HashMap<String, String>,
    name: &str,
    allowed: &[&str],
) -> Result<Option<&'a str>, Response> {
    match q.get(name).map(String::as_str) {
        None | Some("") => Ok(None),
        Some(v) if allowed.contains(&v) => Ok(Some(v)),
        Some(_) => Err(ctx.fail(unprocessable(vec![format!(
            "{name} must be one of the following values: {}",
            allowed.join(", ")
        )]))),
    }
}

async fn conversations_search(State(s): S, headers: HeaderMap, Query(q): Q) -> Res {
    let ctx = gate(&s, &headers, Need::Location)?;
    let loc_id = query_str(&ctx, &q, "locationId")?;
    let loc = ctx.location(&s, &loc_id)?;
    let limit = query_int(&ctx, &q, "limit", 100)?.unwrap_or(20).max(1) as usize;
    let desc = enum_param(&ctx, &q, "sort", &["asc", "desc"])? != Some("asc");
    enum_param(
        &ctx,
        &q,
        "sortBy",
        &[
            "last_manual_message_date",
            "last_message_date",
            "score_profile",
            "overdue_at",
            "due_at",
        ],
    )?;
    let status = enum_param(
        &ctx,
        &q,
        "status",
        &["all", "read", "unread", "starred", "recents"],
    )?;
    let direction = enum_param(&ctx, &q, "lastMessageDirection", &["inbound", "outbound"])?;
    enum_param(&ctx, &q, "lastMessageAction", &["automated", "manual"])?;
    let after = match q.get("startAfterDate").filter(|v| !v.is_empty()) {
        None => None,
        Some(v) => Some(parse_time(&json!(v)).ok_or_else(|| {
            ctx.fail(unprocessable(vec![
                "startAfterDate must be a number".into(),
            ]))
        })?),
    };
    let start = query_int(&ctx, &q, "startDate", u64::MAX)?.map(|v| v as i64);
    let end = query_int(&ctx, &q, "endDate", u64::MAX)?.map(|v| v as i64);
    let assigned: Option<Vec<&str>> = q
        .get("assignedTo")
        .filter(|v| !v.is_empty())
        .map(|v| v.split(',').collect());
    let contact = q.get("contactId").filter(|v| !v.is_empty());
    let conv_id = q.get("id").filter(|v| !v.is_empty());
    let msg_type = q.get("lastMessageType").filter(|v| !v.is_empty());
    let text = q
        .get("query")
        .filter(|v| !v.is_empty())
        .map(|v| v.to_lowercase());
    let rec = super::read(&loc.records);
    let pred = |c: &data::Conversation| {
        contact.is_none_or(|x| *x == c.contact_id)
            && conv_id.is_none_or(|x| *x == c.id)
            && msg_type.is_none_or(|x| *x == c.last_message_type)
            && direction.is_none_or(|x| x == c.last_message_direction)
            && start.is_none_or(|x| c.date_added >= x)
            && end.is_none_or(|x| c.date_added <= x)
            && match status {
                Some("unread") => c.unread_count > 0,
                Some("read") => c.unread_count == 0,
                Some("starred") => c.starred,
                _ => true,
            }
            && assigned.as_ref().is_none_or(|a| match &c.assigned_to {
                None => a.contains(&"unassigned"),
                Some(u) => a.contains(&u.as_str()),
            })
            && text.as_deref().is_none_or(|t| {
                c.last_message_body.to_lowercase().contains(t)
                    || rec
                        .contacts
                        .get(&c.contact_id)
                        .is_some_and(|k| k.matches_text(t))
            })
    };
    let plain = contact.is_none()
        && conv_id.is_none()
        && msg_type.is_none()
        && direction.is_none()
        && start.is_none()
        && end.is_none()
        && matches!(status, None | Some("all") | Some("recents"))
        && assigned.is_none()
        && text.is_none();
    let iter: Box<dyn Iterator<Item = (&i64, &String)>> = match (after, desc) {
        (None, false) => Box::new(rec.conversations_by_last.iter()),
        (None, true) => Box::new(rec.conversations_by_last.iter().rev()),
        (Some(a), false) => Box::new(rec.conversations_by_last.range(a + 1..)),
        (Some(a), true) => Box::new(rec.conversations_by_last.range(..a).rev()),
    };
    let rows: Vec<Value> = iter
        .filter_map(|(_, id)| rec.conversations.get(id))
        .filter(|c| plain || pred(c))
        .take(limit)
        .map(|c| {
            let k = rec.contacts.get(&c.contact_id);
            let name = k.and_then(|k| k.name()).unwrap_or_default();
            json!({
                "id": c.id,
                "contactId": c.contact_id,
                "locationId": loc.meta.id,
                "lastMessageBody": c.last_message_body,
                "lastMessageType": c.last_message_type,
                "lastMessageDirection": c.last_message_direction,
                "lastMessageDate": c.last_message_date,
                "type": c.kind,
                "unreadCount": c.unread_count,
                "fullName": name,
                "contactName": name,
                "email": k.and_then(|k| k.email.clone()).unwrap_or_default(),
                "phone": k.and_then(|k| k.phone.clone()).unwrap_or_default(),
                "assignedTo": c.assigned_to,
                "inbox": c.inbox,
                "starred": c.starred,
                "deleted": false,
                "dateAdded": c.date_added,
                "dateUpdated": c.date_updated,
                "sort": [c.last_message_date],
            })
        })
        .collect();
    let total = if plain {
        rec.conversations.len()
    } else {
        rec.conversations.values().filter(|c| pred(c)).count()
    };
    Ok(ctx.reply(
        StatusCode::OK,
        json!({"conversations": rows, "total": total}),
    ))
}

// ---------------------------------------------------------------------------------------------
// Opportunities

const OPP_FIELDS: &[&str] = &[
    "id",
    "pipeline_id",
    "pipeline_stage_id",
    "status",
    "assigned_to",
    "contact_id",
    "monetary_value",
    "date_added",
    "date_updated",
    "last_status_change_at",
    "last_stage_change_at",
    "name",
    "source",
];

fn opp_rows(rec: &data::Records, loc_id: &str, keys: &[&Key], with_cursor: bool) -> Vec<Value> {
    keys.iter()
        .filter_map(|(ms, id)| {
            let o = rec.opportunities.get(id)?;
            let mut v = o.to_json(loc_id, rec.contacts.get(&o.contact_id));
            if with_cursor {
                v["sort"] = json!([ms, id]);
                v["searchAfter"] = json!([ms, id]);
            }
            Some(v)
        })
        .collect()
}

async fn opportunities_search_post(State(s): S, headers: HeaderMap, bytes: Bytes) -> Res {
    let ctx = gate(&s, &headers, Need::Location)?;
    let body = json_body(&ctx, &bytes)?;
    check_keys(
        &ctx,
        &body,
        &[
            "locationId",
            "query",
            "limit",
            "page",
            "searchAfter",
            "additionalDetails",
            "filters",
            "sort",
        ],
    )?;
    let loc = ctx.location(
        &s,
        required_str(&ctx, body.get("locationId"), "locationId")?,
    )?;
    let limit = int_field(&ctx, body.get("limit"), "limit", 1, 500)?.unwrap_or(20) as usize;
    let page = int_field(&ctx, body.get("page"), "page", 1, u64::MAX)?;
    let after = search_after(&ctx, body.get("searchAfter"))?;
    let query = body
        .get("query")
        .and_then(Value::as_str)
        .filter(|q| !q.is_empty())
        .map(str::to_lowercase);
    let fs = match body.get("filters") {
        None | Some(Value::Null) => Vec::new(),
        Some(v) => {
            filters::parse(v, &|f| OPP_FIELDS.contains(&f)).map_err(|m| ctx.fail(bad_request(m)))?
        }
    };
    let (sort_field, desc) = sort_of(
        &ctx,
        body.get("sort"),
        &["date_added", "date_updated"],
        ("date_added", true),
    )?;
    let skip = match (after.is_some(), page) {
        (false, Some(p)) => {
            if p as usize * limit > 10_000 {
                return Err(ctx.fail(bad_request(
                    "page * limit must not exceed 10000; use searchAfter to go further",
                )));
            }
            (p as usize - 1) * limit
        }
        _ => 0,
    };
    let range = filters::narrowing(&fs, &sort_field);
    let rec = super::read(&loc.records);
    let index = if sort_field == "date_updated" {
        &rec.opps_by_updated
    } else {
        &rec.opps_by_created
    };
    let plain = fs.is_empty() && query.is_none();
    let pred = |id: &str| {
        plain
            || rec.opportunities.get(id).is_some_and(|o| {
                query.as_deref().is_none_or(|q| {
                    o.name.to_lowercase().contains(q)
                        || rec
                            .contacts
                            .get(&o.contact_id)
                            .is_some_and(|c| c.matches_text(q))
                }) && filters::matches(&fs, &|f| o.field(f))
            })
    };
    let p = data::page(
        index,
        &range,
        after.as_ref(),
        desc,
        skip,
        limit,
        true,
        &pred,
    );
    let rows = opp_rows(&rec, &loc.meta.id, &p.keys, true);
    Ok(ctx.reply(
        StatusCode::CREATED,
        json!({"opportunities": rows, "total": p.total, "aggregations": {}}),
    ))
}

/// "mm-dd-yyyy" as the opportunity GET takes it.
fn mdy(
    ctx: &Ctx,
    v: Option<&String>,
    name: &str,
    end_of_day: bool,
) -> Result<Option<i64>, Response> {
    let Some(v) = v.filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    let d = chrono::NaiveDate::parse_from_str(v, "%m-%d-%Y")
        .map_err(|_| ctx.fail(unprocessable(vec![format!("{name} must be mm-dd-yyyy")])))?;
    let t = if end_of_day {
        d.and_hms_milli_opt(23, 59, 59, 999)
    } else {
        d.and_hms_opt(0, 0, 0)
    };
    Ok(t.map(|t| t.and_utc().timestamp_millis()))
}

async fn opportunities_search_get(State(s): S, headers: HeaderMap, Query(q): Q) -> Res {
    let ctx = gate(&s, &headers, Need::Location)?;
    let loc_id = query_str(&ctx, &q, "location_id")?;
    let loc = ctx.location(&s, &loc_id)?;
    let limit = query_int(&ctx, &q, "limit", 100)?.unwrap_or(20).max(1) as usize;
    let page = query_int(&ctx, &q, "page", u64::MAX)?.unwrap_or(1).max(1);
    let desc = match q.get("order").map(String::as_str) {
        None | Some("") | Some("added_asc") => false,
        Some("added_desc") => true,
        Some(_) => {
            return Err(ctx.fail(unprocessable(vec![
                "order must be added_asc or added_desc".into(),
            ])));
        }
    };
    let status = enum_param(
        &ctx,
        &q,
        "status",
        &["open", "won", "lost", "abandoned", "all"],
    )?;
    let after = legacy_cursor(&ctx, &q)?;
    let skip = if after.is_none() {
        (page as usize - 1) * limit
    } else {
        0
    };
    let range = MsRange {
        lo: mdy(&ctx, q.get("date"), "date", false)?
            .map_or(std::ops::Bound::Unbounded, std::ops::Bound::Included),
        hi: mdy(&ctx, q.get("endDate"), "endDate", true)?
            .map_or(std::ops::Bound::Unbounded, std::ops::Bound::Included),
    };
    let eqp = |k: &str| q.get(k).filter(|v| !v.is_empty());
    let (pipe, stage, contact, assigned, id) = (
        eqp("pipeline_id"),
        eqp("pipeline_stage_id"),
        eqp("contact_id"),
        eqp("assigned_to"),
        eqp("id"),
    );
    let text = eqp("q").map(|t| t.to_lowercase());
    let rec = super::read(&loc.records);
    let pred = |oid: &str| {
        rec.opportunities.get(oid).is_some_and(|o| {
            pipe.is_none_or(|x| *x == o.pipeline_id)
                && stage.is_none_or(|x| *x == o.stage_id)
                && contact.is_none_or(|x| *x == o.contact_id)
                && assigned.is_none_or(|x| o.assigned_to.as_ref() == Some(x))
                && id.is_none_or(|x| *x == o.id)
                && status.is_none_or(|x| x == "all" || x == o.status)
                && text.as_deref().is_none_or(|t| {
                    o.name.to_lowercase().contains(t)
                        || rec
                            .contacts
                            .get(&o.contact_id)
                            .is_some_and(|c| c.matches_text(t))
                })
        })
    };
    let p = data::page(
        &rec.opps_by_created,
        &range,
        after.as_ref(),
        desc,
        skip,
        limit,
        true,
        &pred,
    );
    let rows = opp_rows(&rec, &loc.meta.id, &p.keys, false);
    let mut pq = format!("/opportunities/search?location_id={loc_id}&limit={limit}");
    for k in [
        "pipeline_id",
        "pipeline_stage_id",
        "contact_id",
        "assigned_to",
        "status",
        "order",
        "q",
        "date",
        "endDate",
    ] {
        if let Some(v) = eqp(k) {
            pq.push_str(&format!("&{k}={}", urlencode(v)));
        }
    }
    let meta = legacy_meta(&s, pq, &p.keys, p.total, p.more, page);
    Ok(ctx.reply(
        StatusCode::OK,
        json!({"opportunities": rows, "meta": meta, "aggregations": {}}),
    ))
}

async fn pipelines(State(s): S, headers: HeaderMap, Query(q): Q) -> Res {
    let ctx = gate(&s, &headers, Need::Location)?;
    let loc_id = query_str(&ctx, &q, "locationId")?;
    let loc = ctx.location(&s, &loc_id)?;
    let rows: Vec<Value> = loc
        .meta
        .pipelines
        .iter()
        .map(|p| p.to_json(&loc.meta.id))
        .collect();
    Ok(ctx.reply(StatusCode::OK, json!({"pipelines": rows})))
}

// ---------------------------------------------------------------------------------------------
// Users, custom fields, location

async fn users_list(State(s): S, headers: HeaderMap, Query(q): Q) -> Res {
    let ctx = gate(&s, &headers, Need::Location)?;
    let loc_id = query_str(&ctx, &q, "locationId")?;
    let loc = ctx.location(&s, &loc_id)?;
    let users: Vec<Value> = loc
        .meta
        .users
        .iter()
        .map(|u| u.to_json(&loc.meta.id))
        .collect();
    Ok(ctx.reply(StatusCode::OK, json!({"users": users})))
}

async fn users_search(State(s): S, headers: HeaderMap, Query(q): Q) -> Res {
    let ctx = gate(&s, &headers, Need::Any)?;
    let company = query_str(&ctx, &q, "companyId")?;
    if *company != ctx.token.company_id {
        return Err(ctx.fail(error(
            StatusCode::FORBIDDEN,
            json!("The token does not have access to this company"),
            None,
        )));
    }
    let skip = query_int(&ctx, &q, "skip", u64::MAX)?.unwrap_or(0) as usize;
    let limit = query_int(&ctx, &q, "limit", 1000)?.unwrap_or(25) as usize;
    let locs: Vec<Arc<Location>> = match (
        q.get("locationId").filter(|v| !v.is_empty()),
        ctx.token.kind,
    ) {
        (Some(l), _) => vec![ctx.location(&s, l)?],
        (None, TokenKind::Agency) => s.locations.clone(),
        (None, _) => vec![ctx.own_location(&s)?],
    };
    let text = q
        .get("query")
        .filter(|v| !v.is_empty())
        .map(|v| v.to_lowercase());
    let ids: Option<Vec<&str>> = q
        .get("ids")
        .filter(|v| !v.is_empty())
        .map(|v| v.split(',').collect());
    let role = q.get("role").filter(|v| !v.is_empty());
    let matching: Vec<Value> = locs
        .iter()
        .flat_map(|l| l.meta.users.iter().map(move |u| (l, u)))
        .filter(|(_, u)| {
            text.as_deref().is_none_or(|t| {
                format!("{} {} {}", u.first_name, u.last_name, u.email)
                    .to_lowercase()
                    .contains(t)
            }) && ids.as_ref().is_none_or(|i| i.contains(&u.id.as_str()))
                && role.is_none_or(|r| r == u.role)
        })
        .map(|(l, u)| u.to_json(&l.meta.id))
        .collect();
    let count = matching.len();
    let users: Vec<Value> = matching.into_iter().skip(skip).take(limit).collect();
    Ok(ctx.reply(StatusCode::OK, json!({"users": users, "count": count})))
}

async fn custom_fields(
    State(s): S,
    headers: HeaderMap,
    Path(loc_id): Path<String>,
    Query(q): Q,
) -> Res {
    let ctx = gate(&s, &headers, Need::Location)?;
    let loc = ctx.location(&s, &loc_id)?;
    let model = enum_param(&ctx, &q, "model", &["contact", "opportunity", "all"])?.unwrap_or("all");
    let rows: Vec<Value> = loc
        .meta
        .custom_fields
        .iter()
        .filter(|c| model == "all" || c.model == model)
        .map(|c| c.to_json(&loc.meta.id))
        .collect();
    Ok(ctx.reply(StatusCode::OK, json!({"customFields": rows})))
}

async fn location_get(State(s): S, headers: HeaderMap, Path(loc_id): Path<String>) -> Res {
    let ctx = gate(&s, &headers, Need::Any)?;
    let loc = ctx.location(&s, &loc_id)?;
    let m = &loc.meta;
    Ok(ctx.reply(
        StatusCode::OK,
        json!({"location": {
            "id": m.id, "companyId": m.company_id, "name": m.name, "address": "1 Main St",
            "city": m.city, "state": m.state, "country": "US", "postalCode": "00000",
            "website": "https://example.com", "timezone": m.timezone, "email": m.email, "phone": m.phone,
            "business": {"name": m.name, "address": "1 Main St", "city": m.city, "state": m.state, "country": "US", "timezone": m.timezone},
            "social": {},
            "settings": {"allowDuplicateContact": false, "allowDuplicateOpportunity": false, "allowFacebookNameMerge": false, "disableContactTimezone": false},
        }}),
    ))
}

// ---------------------------------------------------------------------------------------------
// OAuth

/// Reads a form (or, leniently, JSON) body into string pairs.
fn form_body(headers: &HeaderMap, bytes: &Bytes) -> HashMap<String, String> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return serde_json::from_slice::<Map<String, Value>>(bytes)
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| {
                (
                    k,
                    v.as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| v.to_string()),
                )
            })
            .collect();
    }
    String::from_utf8_lossy(bytes)
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (form_decode(k), form_decode(v))
        })
        .collect()
}

fn form_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

const SCOPES: &str = "contacts.readonly conversations.readonly opportunities.readonly users.readonly locations.readonly locations/customFields.readonly locations/tasks.readonly oauth.readonly oauth.write";

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    json_response(
        status,
        json!({"statusCode": status.as_u16(), "error": error, "error_description": description, "message": description}),
    )
}

async fn oauth_token(State(s): S, headers: HeaderMap, bytes: Bytes) -> Response {
    let f = form_body(&headers, &bytes);
    let missing: Vec<String> = ["client_id", "client_secret", "grant_type"]
        .iter()
        .filter(|k| f.get(**k).is_none_or(|v| v.is_empty()))
        .map(|k| format!("{k} should not be empty"))
        .collect();
    if !missing.is_empty() {
        return unprocessable(missing);
    }
    if f["client_id"] != s.client_id || f["client_secret"] != s.client_secret {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "Invalid client credentials",
        );
    }
    let mut rng = lock(&s.rng);
    let mut auth = lock(&s.auth);
    let grant = match f["grant_type"].as_str() {
        "authorization_code" => {
            let code = f.get("code").cloned().unwrap_or_default();
            match auth.codes.remove(&code) {
                Some(g) => g,
                None => return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", "Invalid grant: authorization code is invalid"),
            }
        }
        "refresh_token" => {
            // Rotation: the refresh token is spent by this call, whatever happens next.
            let rt = f.get("refresh_token").cloned().unwrap_or_default();
            match auth.refresh.remove(&rt) {
                Some(g) => g,
                None => return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", "Invalid grant: refresh token is invalid"),
            }
        }
        "client_credentials" => {
            return oauth_error(StatusCode::BAD_REQUEST, "unsupported_grant_type", "client_credentials is not supported by the simulator");
        }
        _ => return unprocessable(vec!["grant_type must be one of the following values: authorization_code, refresh_token, client_credentials".into()]),
    };
    if let Some(ut) = f.get("user_type").filter(|v| !v.is_empty())
        && *ut != grant.user_type
    {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "user_type does not match the grant",
        );
    }
    let access = auth.mint_access(&mut rng, &grant, &s.client_id, s.token_ttl);
    let refresh = auth.mint_refresh(&mut rng, grant.clone());
    let mut body = json!({
        "access_token": access,
        "token_type": "Bearer",
        "expires_in": s.token_ttl.as_secs(),
        "refresh_token": refresh,
        "scope": SCOPES,
        "userType": grant.user_type,
        "companyId": grant.company_id,
        "userId": grant.user_id,
        "planId": "sim-plan",
        "isBulkInstallation": false,
        "installToFutureLocations": true,
        "approveAllLocations": true,
    });
    if let Some(l) = &grant.location_id {
        body["locationId"] = json!(l);
    } else {
        body["approvedLocations"] = json!(
            s.locations
                .iter()
                .map(|l| l.meta.id.clone())
                .collect::<Vec<_>>()
        );
    }
    json_response(StatusCode::OK, body)
}

async fn oauth_location_token(State(s): S, headers: HeaderMap, bytes: Bytes) -> Res {
    let ctx = gate(&s, &headers, Need::Agency)?;
    let f = form_body(&headers, &bytes);
    let missing: Vec<String> = ["companyId", "locationId"]
        .iter()
        .filter(|k| f.get(**k).is_none_or(|v| v.is_empty()))
        .map(|k| format!("{k} should not be empty"))
        .collect();
    if !missing.is_empty() {
        return Err(ctx.fail(unprocessable(missing)));
    }
    if f["companyId"] != ctx.token.company_id {
        return Err(ctx.fail(error(
            StatusCode::FORBIDDEN,
            json!("The token does not have access to this company"),
            None,
        )));
    }
    let loc = ctx.location(&s, &f["locationId"])?;
    let grant = super::auth::Grant {
        user_type: "Location".into(),
        location_id: Some(loc.meta.id.clone()),
        company_id: ctx.token.company_id.clone(),
        user_id: ctx.token.user_id.clone(),
    };
    let access = {
        let mut rng = lock(&s.rng);
        lock(&s.auth).mint_access(&mut rng, &grant, &s.client_id, s.token_ttl)
    };
    Ok(ctx.reply(
        StatusCode::OK,
        json!({
            "access_token": access, "token_type": "Bearer", "expires_in": s.token_ttl.as_secs(),
            "scope": SCOPES, "locationId": loc.meta.id, "planId": "sim-plan",
            "userId": grant.user_id, "appId": s.app_id, "versionId": s.version_id,
        }),
    ))
}

async fn installed_locations(State(s): S, headers: HeaderMap, Query(q): Q) -> Res {
    let ctx = gate(&s, &headers, Need::Agency)?;
    let mut missing = Vec::new();
    for k in ["companyId", "appId"] {
        if q.get(k).is_none_or(|v| v.is_empty()) {
            missing.push(format!("{k} should not be empty"));
        }
    }
    if !missing.is_empty() {
        return Err(ctx.fail(unprocessable(missing)));
    }
    if q["companyId"] != ctx.token.company_id {
        return Err(ctx.fail(error(
            StatusCode::FORBIDDEN,
            json!("The token does not have access to this company"),
            None,
        )));
    }
    if q["appId"] != s.app_id {
        return Err(ctx.fail(bad_request("App not found")));
    }
    let skip = query_int(&ctx, &q, "skip", u64::MAX)?.unwrap_or(0) as usize;
    let limit = query_int(&ctx, &q, "limit", 1000)?.unwrap_or(20) as usize;
    let installed = q.get("isInstalled").map(|v| v == "true");
    let text = q
        .get("query")
        .filter(|v| !v.is_empty())
        .map(|v| v.to_lowercase());
    let only = q.get("locationId").filter(|v| !v.is_empty());
    let rows: Vec<Value> = s
        .locations
        .iter()
        .filter(|_| installed != Some(false))
        .filter(|l| text.as_deref().is_none_or(|t| l.meta.name.to_lowercase().contains(t)))
        .filter(|l| only.is_none_or(|o| *o == l.meta.id))
        .map(|l| json!({
            "_id": l.meta.id, "name": l.meta.name, "address": format!("1 Main St, {}, {}", l.meta.city, l.meta.state),
            "isInstalled": true, "versionId": s.version_id, "installedAt": iso(data::SEED_EPOCH_MS),
        }))
        .collect();
    let count = rows.len();
    let rows: Vec<Value> = rows.into_iter().skip(skip).take(limit).collect();
    Ok(ctx.reply(
        StatusCode::OK,
        json!({"locations": rows, "count": count, "installToFutureLocations": true}),
    ))
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

    #[test]
    fn form_decoding() {
        assert_eq!(form_decode("a+b%20c%2Fd"), "a b c/d");
        assert_eq!(form_decode("100%"), "100%");
    }
}
