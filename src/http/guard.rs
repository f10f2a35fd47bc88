//! The guard in front of `/graphql`: authenticates `Authorization: Bearer <key>`, applies the
//! per-key request rate, and hands the [`Caller`] to the handler in the request's extensions.
//!
//! Failures answer in the GraphQL error shape with `extensions.code`: 401 `UNAUTHENTICATED` (with
//! `WWW-Authenticate: Bearer`), 429 `RATE_LIMITED` (with `Retry-After`). The header and the key
//! are never logged; a failed login logs only its reason.

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{MediaType, negotiate};
use crate::auth::{AuthError, Authenticator, parse_authorization};

/// A GraphQL-shaped error response with a code.
pub(super) fn coded_error(
    status: StatusCode,
    media: MediaType,
    code: &str,
    message: &str,
) -> Response {
    let body = serde_json::json!({
        "errors": [{ "message": message, "extensions": { "code": code } }]
    });
    (
        status,
        [(header::CONTENT_TYPE, media.as_str())],
        body.to_string(),
    )
        .into_response()
}

/// Middleware of the GraphQL routes.
pub(super) async fn require_caller(
    State(auth): State<Authenticator>,
    mut request: Request,
    next: Next,
) -> Response {
    let media = negotiate(
        request
            .headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok()),
    )
    .unwrap_or(MediaType::Json);
    let bearer = match request.headers().get(header::AUTHORIZATION) {
        None => Ok(None),
        Some(value) => value
            .to_str()
            .map_err(|_| AuthError::Malformed)
            .and_then(parse_authorization)
            .map(Some),
    };
    let caller = match bearer {
        Ok(bearer) => auth.authenticate(bearer).await,
        Err(error) => Err(error),
    };
    let caller = match caller {
        Ok(caller) => caller,
        Err(AuthError::Store(error)) => {
            tracing::error!(error = %error, "cannot check an API key");
            return coded_error(
                StatusCode::SERVICE_UNAVAILABLE,
                media,
                "INTERNAL",
                "internal error",
            );
        }
        Err(error) => {
            let reason = match &error {
                AuthError::Missing => "no key",
                AuthError::Malformed => "malformed credentials",
                _ => "invalid key",
            };
            tracing::info!(reason, "request refused: not authenticated");
            let mut response = coded_error(
                StatusCode::UNAUTHORIZED,
                media,
                "UNAUTHENTICATED",
                &error.to_string(),
            );
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return response;
        }
    };
    if let Err(wait) = auth.check_rate(&caller) {
        let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        let seconds = seconds.max(1);
        tracing::info!(
            key_id = caller.key_id(),
            retry_after = seconds,
            "request refused: rate limited"
        );
        let mut response = coded_error(
            StatusCode::TOO_MANY_REQUESTS,
            media,
            "RATE_LIMITED",
            &format!("too many requests for this API key: retry after {seconds} s"),
        );
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        return response;
    }
    request.extensions_mut().insert(caller);
    next.run(request).await
}
