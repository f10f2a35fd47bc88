//! Transport: one GHL request from its description to a JSON body or a classified error.
//!
//! Owns request building, the in-flight bound and the rate limiter around each send, retries with
//! backoff (`Retry-After` wins), the daily reserve check, call counters ([`CallStats`], [`Meter`]),
//! and the pure mapping of a status and body to an [`UpstreamError`]. Gets its access token from the token handling
//! (`tokens.rs`) and must not renew or store credentials itself.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use secrecy::ExposeSecret as _;
use serde_json::Value;

use super::{Client, LocationState, Result, UpstreamError, VERSION, Window, lock};
use crate::config::Secret;

/// One GHL request.
pub(super) struct Call {
    /// A name for logs and counters, e.g. `contacts.search`.
    pub(super) endpoint: &'static str,
    pub(super) method: Method,
    pub(super) path: String,
    pub(super) query: Vec<(&'static str, String)>,
    pub(super) body: Option<Value>,
    pub(super) version: &'static str,
}

/// A `GET` of the default API version.
pub(super) fn get(
    endpoint: &'static str,
    path: String,
    query: Vec<(&'static str, String)>,
) -> Call {
    Call {
        endpoint,
        method: Method::GET,
        path,
        query,
        body: None,
        version: VERSION,
    }
}

/// A `POST` of a JSON body, of the default API version.
pub(super) fn post(endpoint: &'static str, path: String, body: Value) -> Call {
    Call {
        endpoint,
        method: Method::POST,
        path,
        query: Vec::new(),
        body: Some(body),
        version: VERSION,
    }
}

/// Calls made for a location, for progress events, tests and benchmarks.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CallStats {
    /// HTTP requests sent (retries included).
    pub calls: u64,
    /// Calls that were retries.
    pub retries: u64,
    /// 429 answers received.
    pub rate_limited: u64,
    /// Time spent waiting for the rate limiter.
    pub limiter_wait: Duration,
    /// What GHL last said of the daily quota.
    pub daily_remaining: Option<i64>,
    /// Token renewals (OAuth refreshes and agency location tokens).
    pub renewals: u64,
}

/// Counters of the calls made inside one [`Meter::scope`] (one sync stage, say), whatever else
/// the location is doing at the same time.
#[derive(Debug, Default)]
pub struct Meter {
    /// HTTP requests sent (retries included).
    pub calls: AtomicU64,
    /// Calls that were retries.
    pub retries: AtomicU64,
    /// 429 answers received.
    pub rate_limited: AtomicU64,
    /// Microseconds spent waiting for the rate limiter.
    pub waited_us: AtomicU64,
    /// Pages the scope still has to fetch one after another (set by [`Client::pages`]): the
    /// rate limiter serves the longest chain first and keeps its slots from shorter ones.
    pub chain: super::limiter::ChainLeft,
}

tokio::task_local! {
    static METER: Arc<Meter>;
    /// The chain of pages a future's calls belong to, when a scope fetches more than one chain at
    /// once (conversations read from both ends): it takes the place of the meter's own.
    static CHAIN: super::limiter::ChainLeft;
}

/// `future` with its GHL calls counted as pages of `chain` (see [`Meter::chain`]) instead of the
/// current scope's own chain, and on the current scope's meter, which it takes along: the future
/// may be spawned. For a scope that fetches more than one chain at once (conversations read from
/// both ends).
pub(super) fn in_chain<F: Future>(
    chain: super::limiter::ChainLeft,
    future: F,
) -> impl Future<Output = F::Output> {
    let meter = METER.try_with(Arc::clone).ok();
    let future = CHAIN.scope(chain, future);
    async move {
        match meter {
            Some(meter) => METER.scope(meter, future).await,
            None => future.await,
        }
    }
}

impl Meter {
    /// Runs `future` with its GHL calls counted on `self`.
    pub async fn scope<F: Future>(self: Arc<Self>, future: F) -> F::Output {
        METER.scope(self, future).await
    }

    /// Sets the chain of pages the current scope still has to fetch, if in a scope.
    pub(super) fn set_chain(pages: u64) {
        Meter::count(|m| m.chain.store(pages, Ordering::Relaxed));
    }

    /// Counts on the meter of the current scope, if any.
    fn count(f: impl FnOnce(&Meter)) {
        let _ = METER.try_with(|m| f(m));
    }
}

impl Client {
    /// Sends `call` for `location_id` with retries, and returns the JSON body.
    pub(super) async fn call(&self, location_id: &str, call: Call) -> Result<Value> {
        let state = self.state(location_id);
        let config = &self.inner.config;
        let backoff = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(config.backoff_ms.max(1)))
            .with_max_delay(Duration::from_secs(60))
            .with_max_times(config.max_retries)
            .with_jitter();
        let interval = Duration::from_millis(config.burst_window_ms);
        // A spurious 429 waits the same brief pause each time: GHL's headers said the window
        // has room, so a doubling pause would only stretch the sync (at 40% spurious 429s a
        // page's expected pause was twice its round trip).
        let spurious = Duration::from_millis(config.spurious_backoff_ms);
        (|| self.attempt(location_id, &state, &call))
            .retry(backoff)
            .sleep(tokio::time::sleep)
            .when(UpstreamError::is_retryable)
            .adjust(|error, delay| retry_delay(error, delay, interval, spurious))
            .notify(|error, delay| {
                lock(&state.stats).retries += 1;
                crate::telemetry::metrics::ghl_retry(call.endpoint);
                Meter::count(|m| {
                    m.retries.fetch_add(1, Ordering::Relaxed);
                });
                tracing::warn!(location_id, endpoint = call.endpoint, error = %error, delay_ms = delay.as_millis() as u64, "retrying a GHL call");
            })
            .await
    }

    /// One try of `call`, including one token renewal on 401.
    async fn attempt(
        &self,
        location_id: &str,
        state: &LocationState,
        call: &Call,
    ) -> Result<Value> {
        let _in_flight = state
            .in_flight
            .acquire()
            .await
            .map_err(|_| UpstreamError::Transient("the client is shutting down".into()))?;
        if let Some(remaining) = lock(&state.stats).daily_remaining
            && remaining < self.inner.config.daily_reserve
        {
            return Err(UpstreamError::DailyQuotaExhausted { remaining });
        }
        let mut rejected: Option<Secret> = None;
        loop {
            let token = self
                .access_token(location_id, state, rejected.as_ref())
                .await?;
            let (status, headers, body) = self.send(state, call, &token).await?;
            crate::telemetry::metrics::ghl_budget(
                location_id,
                header(&headers, "x-ratelimit-remaining"),
                header(&headers, "x-ratelimit-daily-remaining"),
            );
            if status == StatusCode::UNAUTHORIZED && rejected.is_none() {
                rejected = Some(token);
                continue;
            }
            return classify(call.endpoint, status, &headers, &body);
        }
    }

    /// Sends one HTTP request under the rate limiter; returns status, headers and body.
    async fn send(
        &self,
        state: &LocationState,
        call: &Call,
        token: &Secret,
    ) -> Result<(StatusCode, HeaderMap, String)> {
        let url = format!("{}{}", self.inner.config.base_url, call.path);
        let mut request = self
            .inner
            .http
            .request(call.method.clone(), url)
            .bearer_auth(token.expose_secret())
            .header("Version", call.version)
            .header("Accept", "application/json")
            .query(&call.query);
        if let Some(body) = &call.body {
            request = request.json(body);
        }
        // The stage's remaining chain of pages: the longest goes first.
        let chain = CHAIN
            .try_with(Clone::clone)
            .ok()
            .or_else(|| METER.try_with(|m| m.chain.clone()).ok());
        let permit = state.limiter.acquire_for(chain.as_ref()).await;
        {
            let mut stats = lock(&state.stats);
            stats.calls += 1;
            stats.limiter_wait += permit.waited;
        }
        Meter::count(|m| {
            m.calls.fetch_add(1, Ordering::Relaxed);
            m.waited_us
                .fetch_add(permit.waited.as_micros() as u64, Ordering::Relaxed);
        });
        let outcome = async {
            let response = request.send().await?;
            let status = response.status();
            let headers = response.headers().clone();
            let body = response.text().await?;
            Ok::<_, reqwest::Error>((status, headers, body))
        }
        .await;
        let window = match &outcome {
            Ok((status, headers, _)) => Window {
                refused: *status == StatusCode::TOO_MANY_REQUESTS,
                max: header(headers, "x-ratelimit-max"),
                interval: header::<u64>(headers, "x-ratelimit-interval-milliseconds")
                    .map(Duration::from_millis),
                remaining: header(headers, "x-ratelimit-remaining"),
            },
            Err(_) => Window::default(),
        };
        let answered = outcome.as_ref().ok().map(|(status, _, _)| status.as_u16());
        // One line per request, for tracing a sync's schedule: it went out `rtt_ms` before this
        // line, after `waited_ms` in the rate limiter.
        tracing::debug!(
            endpoint = call.endpoint,
            waited_ms = permit.waited.as_secs_f64() * 1e3,
            rtt_ms = permit.elapsed().as_secs_f64() * 1e3,
            status = answered,
            remaining = window.remaining,
            "GHL answered"
        );
        crate::telemetry::metrics::ghl_request(call.endpoint, answered, permit.waited);
        state.limiter.release(permit, window);
        let (status, headers, body) = outcome.map_err(|e| {
            let kind = if e.is_timeout() {
                "timed out"
            } else {
                "connection failed"
            };
            UpstreamError::Transient(format!("{} {kind}: {e}", call.endpoint))
        })?;
        let mut stats = lock(&state.stats);
        if let Some(daily) = header(&headers, "x-ratelimit-daily-remaining") {
            stats.daily_remaining = Some(daily);
        }
        if status == StatusCode::TOO_MANY_REQUESTS {
            stats.rate_limited += 1;
            Meter::count(|m| {
                m.rate_limited.fetch_add(1, Ordering::Relaxed);
            });
        }
        Ok((status, headers, body))
    }
}

/// The wait before the next try, `None` once the retry budget is spent: GHL's own word on when
/// to come back wins; a spurious 429 (GHL's headers said budget remained) waits `spurious`;
/// any other 429 waits at least one rate-limit `window`, as
/// GHL's limits reset per window.
fn retry_delay(
    error: &UpstreamError,
    backoff: Option<Duration>,
    window: Duration,
    spurious: Duration,
) -> Option<Duration> {
    let backoff = backoff?;
    Some(match error {
        UpstreamError::RateLimited {
            retry_after: Some(after),
            ..
        } => *after,
        UpstreamError::RateLimited {
            budget_left: true, ..
        } => spurious,
        UpstreamError::RateLimited { .. } => backoff.max(window),
        _ => backoff,
    })
}

/// A header's value parsed as `T`; `None` when absent or malformed.
fn header<T: std::str::FromStr>(headers: &HeaderMap, name: &str) -> Option<T> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

/// The `message` of a GHL error body (a string, or an array of strings on 422).
pub(super) fn error_message(body: &str) -> String {
    let parsed: Option<Value> = serde_json::from_str(body).ok();
    let message = parsed
        .as_ref()
        .and_then(|v| v.get("message"))
        .map(|m| match m {
            Value::Array(items) => items
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join("; "),
            Value::String(s) => s.clone(),
            other => other.to_string(),
        });
    let mut message = message.unwrap_or_else(|| body.chars().take(200).collect());
    message.truncate(300);
    message
}

/// Turns a response of `endpoint` into the JSON body or a classified error.
fn classify(endpoint: &str, status: StatusCode, headers: &HeaderMap, body: &str) -> Result<Value> {
    if status.is_success() {
        return serde_json::from_str(body)
            .map_err(|e| UpstreamError::Decode(format!("{endpoint}: {e} ({} bytes)", body.len())));
    }
    let message = error_message(body);
    Err(match status {
        StatusCode::TOO_MANY_REQUESTS => UpstreamError::RateLimited {
            retry_after: header::<u64>(headers, "retry-after").map(Duration::from_secs),
            budget_left: header::<u32>(headers, "x-ratelimit-remaining").is_some_and(|r| r > 0),
        },
        StatusCode::UNAUTHORIZED => UpstreamError::Unauthorized(message),
        StatusCode::FORBIDDEN => UpstreamError::Forbidden(message),
        StatusCode::NOT_FOUND => UpstreamError::NotFound(message),
        // GHL answers 400 "... not found" for an unknown record id.
        StatusCode::BAD_REQUEST if message.to_lowercase().contains("not found") => {
            UpstreamError::NotFound(message)
        }
        s if s.is_server_error() => UpstreamError::Transient(format!("{endpoint} answered {s}")),
        s => UpstreamError::BadRequest {
            status: s.as_u16(),
            message,
        },
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn classified(status: u16, body: &str) -> Result<Value> {
        let status = StatusCode::from_u16(status).unwrap();
        classify("users.list", status, &HeaderMap::new(), body)
    }

    #[test]
    fn success_is_the_json_body_or_a_retryable_decode_error() {
        assert_eq!(
            classified(200, r#"{"users":[]}"#).unwrap(),
            json!({"users": []})
        );
        assert_eq!(classified(201, "{}").unwrap(), json!({}));
        let error = classified(200, "<html>").unwrap_err();
        assert!(
            matches!(&error, UpstreamError::Decode(m) if m.starts_with("users.list: ") && m.ends_with("(6 bytes)")),
            "{error:?}"
        );
        assert!(error.is_retryable() && !error.is_auth());
    }

    /// The variant's name and message, for table-driven assertions.
    fn kind(error: &UpstreamError) -> (&'static str, String) {
        match error {
            UpstreamError::Unauthorized(m) => ("Unauthorized", m.clone()),
            UpstreamError::Forbidden(m) => ("Forbidden", m.clone()),
            UpstreamError::NotFound(m) => ("NotFound", m.clone()),
            UpstreamError::BadRequest { status, message } => {
                ("BadRequest", format!("{status} {message}"))
            }
            UpstreamError::RateLimited { retry_after, .. } => {
                ("RateLimited", format!("{retry_after:?}"))
            }
            UpstreamError::Transient(m) => ("Transient", m.clone()),
            other => ("other", other.to_string()),
        }
    }

    #[test]
    fn statuses_map_to_what_the_caller_can_do() {
        let body = r#"{"statusCode":400,"message":"bad"}"#;
        for (status, want, message, retryable, auth) in [
            (401, "Unauthorized", "bad", false, true),
            (403, "Forbidden", "bad", false, true),
            (404, "NotFound", "bad", false, false),
            (400, "BadRequest", "400 bad", false, false),
            (422, "BadRequest", "422 bad", false, false),
            (429, "RateLimited", "None", true, false),
            (
                500,
                "Transient",
                "users.list answered 500 Internal Server Error",
                true,
                false,
            ),
            (
                503,
                "Transient",
                "users.list answered 503 Service Unavailable",
                true,
                false,
            ),
        ] {
            let error = classified(status, body).unwrap_err();
            assert_eq!(kind(&error), (want, message.to_owned()), "{status}");
            assert_eq!(error.is_retryable(), retryable, "{status}: {error:?}");
            assert_eq!(error.is_auth(), auth, "{status}: {error:?}");
        }
    }

    #[test]
    fn a_400_that_says_not_found_is_not_found() {
        let error = classified(400, r#"{"message":"Contact Not Found"}"#).unwrap_err();
        assert!(matches!(error, UpstreamError::NotFound(m) if m == "Contact Not Found"));
    }

    #[test]
    fn retry_after_is_read_from_the_429() {
        let mut headers = HeaderMap::new();
        headers.insert("retry-after", " 7 ".parse().unwrap());
        let error = classify("x", StatusCode::TOO_MANY_REQUESTS, &headers, "").unwrap_err();
        assert!(matches!(
            error,
            UpstreamError::RateLimited { retry_after: Some(d), budget_left: false } if d == Duration::from_secs(7)
        ));
        headers.insert("retry-after", "soon".parse().unwrap());
        let error = classify("x", StatusCode::TOO_MANY_REQUESTS, &headers, "").unwrap_err();
        assert!(matches!(
            error,
            UpstreamError::RateLimited {
                retry_after: None,
                budget_left: false
            }
        ));
        headers.insert("x-ratelimit-remaining", "37".parse().unwrap());
        let error = classify("x", StatusCode::TOO_MANY_REQUESTS, &headers, "").unwrap_err();
        assert!(matches!(
            error,
            UpstreamError::RateLimited {
                budget_left: true,
                ..
            }
        ));
    }

    #[test]
    fn the_retry_delay_honours_retry_after_and_the_window() {
        let window = Duration::from_secs(10);
        let backoff = Some(Duration::from_millis(500));
        let limited = |after, budget_left| UpstreamError::RateLimited {
            retry_after: after,
            budget_left,
        };
        assert_eq!(
            retry_delay(
                &limited(Some(Duration::ZERO), true),
                backoff,
                window,
                Duration::from_millis(100)
            ),
            Some(Duration::ZERO)
        );
        assert_eq!(
            retry_delay(
                &limited(None, false),
                backoff,
                window,
                Duration::from_millis(100)
            ),
            Some(window)
        );
        assert_eq!(
            retry_delay(
                &limited(None, true),
                backoff,
                window,
                Duration::from_millis(100)
            ),
            Some(Duration::from_millis(100)),
            "a spurious 429 backs off briefly"
        );
        for error in [limited(None, false), limited(Some(Duration::ZERO), false)] {
            assert_eq!(
                retry_delay(&error, None, window, Duration::from_millis(100)),
                None,
                "budget spent"
            );
        }
        let transient = UpstreamError::Transient("x".into());
        assert_eq!(
            retry_delay(&transient, backoff, window, Duration::from_millis(100)),
            backoff
        );
    }

    #[test]
    fn error_messages_come_from_ghl_bodies() {
        assert_eq!(
            error_message(r#"{"message":"Invalid token"}"#),
            "Invalid token"
        );
        assert_eq!(
            error_message(r#"{"message":["a should not exist","b must be a string"]}"#),
            "a should not exist; b must be a string"
        );
        assert_eq!(error_message(r#"{"message":{"code":1}}"#), r#"{"code":1}"#);
        assert_eq!(error_message("plain text"), "plain text");
        assert_eq!(
            error_message(&"x".repeat(1_000)).len(),
            200,
            "a raw body is cut"
        );
        let long = format!(r#"{{"message":"{}"}}"#, "y".repeat(1_000));
        assert_eq!(error_message(&long).len(), 300, "a message is cut");
    }

    #[test]
    fn headers_parse_or_are_absent() {
        let mut headers = HeaderMap::new();
        headers.insert("x-ratelimit-max", "100".parse().unwrap());
        headers.insert("x-ratelimit-remaining", "many".parse().unwrap());
        assert_eq!(header::<u32>(&headers, "x-ratelimit-max"), Some(100));
        assert_eq!(header::<u32>(&headers, "x-ratelimit-remaining"), None);
        assert_eq!(header::<u32>(&headers, "x-ratelimit-daily-remaining"), None);
    }
}
