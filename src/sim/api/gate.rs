//! The gate every GHL route passes first: the `Version` header, the bearer token and its kind, and
//! the rate limit. What passes is a [`Ctx`]: the token, and the rate-limit headers every answer
//! carries.

// Handlers return `Result<_, Response>`: the error *is* the HTTP answer, built once per failed
// request, so boxing it would only add noise.
#![allow(clippy::result_large_err)]

use std::sync::Arc;

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use serde_json::{Value, json};

use super::layer::{bad_request, error, json_response, too_many, unauthorized, with_rate};
use crate::sim::auth::{Lookup, Token, TokenKind};
use crate::sim::control::RateInfo;
use crate::sim::{Location, Shared, lock, read};

/// `Version` values GHL accepts: the specs' two and the official SDK's default.
const VERSIONS: &[&str] = &["2021-07-28", "2021-04-15", "2023-02-21"];

/// The kind of token a route takes (GHL's security schemes).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Need {
    /// `bearer` / Location-Access: a PIT or an OAuth location token.
    Location,
    /// Location or agency token.
    Any,
    /// Agency-Access-Only.
    Agency,
}

/// What a request that passed the gate carries: its token and its rate-limit headers.
pub(super) struct Ctx {
    /// The bearer's token.
    pub(super) token: Token,
    rate: RateInfo,
    retry_after: bool,
}

impl Ctx {
    /// A JSON answer with this request's rate-limit headers.
    pub(super) fn reply(&self, status: StatusCode, body: Value) -> Response {
        with_rate(json_response(status, body), &self.rate, false)
    }

    /// An error answer with this request's rate-limit headers (and `Retry-After` when set).
    pub(super) fn fail(&self, r: Response) -> Response {
        with_rate(r, &self.rate, self.retry_after)
    }

    /// The location, if this token may read it: 403 otherwise, as GHL answers.
    pub(super) fn location(&self, s: &Shared, id: &str) -> Result<Arc<Location>, Response> {
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
    pub(super) fn own_location(&self, s: &Shared) -> Result<Arc<Location>, Response> {
        let id = self.token.location_id.clone().unwrap_or_default();
        self.location(s, &id)
    }
}

/// The bearer token of a request ("" when there is none).
fn bearer(headers: &HeaderMap) -> &str {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .unwrap_or("")
}

/// The rate-limit headers of the request's bucket as they stand, without counting the request;
/// `None` for an unknown token.
pub(super) fn peek_rate(s: &Shared, headers: &HeaderMap) -> Option<RateInfo> {
    let bucket = match lock(&s.auth).lookup(bearer(headers)) {
        Lookup::Valid(t) => t.bucket.clone(),
        _ => return None,
    };
    let settings = read(&s.settings).clone();
    Some(lock(&s.limiter).peek(&bucket, &settings))
}

/// Lets a request through, or answers it: 400 without a valid `Version`, 401 for a missing,
/// unknown, expired or wrong kind of token, 429 when its bucket is spent.
pub(super) fn gate(s: &Shared, headers: &HeaderMap, need: Need) -> Result<Ctx, Response> {
    match headers.get("version").map(|v| v.to_str().unwrap_or("")) {
        None => return Err(bad_request("Version header was not found")),
        Some(v) if !VERSIONS.contains(&v.trim()) => {
            return Err(bad_request("Version header is invalid"));
        }
        _ => {}
    }
    let token = match lock(&s.auth).lookup(bearer(headers)) {
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
