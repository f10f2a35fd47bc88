//! The one conversion from internal errors to GraphQL errors: every error leaves with a stable
//! `extensions.code`; internal causes are logged here, once, and answered generically.
//!
//! Also the error of a process that runs without a sync ([`sync_handle`]), since that is the one
//! thing a resolver can miss in its schema data.

use async_graphql::{Context, ErrorExtensionValues, ErrorExtensions, Response};

use crate::store::StoreError;
use crate::sync::{SyncError, SyncHandle};

/// An error as the API reports it. The variant names the `extensions.code`.
#[derive(Clone, Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    BadUserInput(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    UpstreamUnavailable(String),
    #[error("{0}")]
    RateLimited(String),
    #[error("internal error")]
    Internal,
}

impl ApiError {
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Unauthenticated(_) => "UNAUTHENTICATED",
            ApiError::Forbidden(_) => "FORBIDDEN",
            ApiError::BadUserInput(_) => "BAD_USER_INPUT",
            ApiError::NotFound(_) => "NOT_FOUND",
            ApiError::UpstreamUnavailable(_) => "UPSTREAM_UNAVAILABLE",
            ApiError::RateLimited(_) => "RATE_LIMITED",
            ApiError::Internal => "INTERNAL",
        }
    }

    /// Logs an internal error with its cause chain and returns the generic answer.
    pub fn internal(error: &(dyn std::error::Error + 'static)) -> Self {
        let mut causes = Vec::new();
        let mut source = error.source();
        while let Some(cause) = source {
            causes.push(cause.to_string());
            source = cause.source();
        }
        tracing::error!(error = %error, causes = ?causes, "request failed");
        ApiError::Internal
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        ApiError::internal(&error)
    }
}

impl From<std::sync::Arc<StoreError>> for ApiError {
    fn from(error: std::sync::Arc<StoreError>) -> Self {
        ApiError::internal(error.as_ref())
    }
}

impl From<SyncError> for ApiError {
    fn from(error: SyncError) -> Self {
        match error {
            SyncError::NoCredentials(location) => ApiError::UpstreamUnavailable(format!(
                "location {location:?} has no GHL credentials: add them with `ghl-gateway connect`"
            )),
            SyncError::ShuttingDown => {
                ApiError::UpstreamUnavailable("the gateway is shutting down".into())
            }
            SyncError::CoolingDown {
                location_id,
                failures,
                until,
            } => ApiError::RateLimited(format!(
                "location {location_id:?} cools down after {failures} failed sync(s): the next \
                 attempt may start at {}",
                until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            )),
            SyncError::LockedElsewhere(location) => ApiError::UpstreamUnavailable(format!(
                "another gateway holds the sync of location {location:?} but shows no job; try again"
            )),
            SyncError::Store(error) => error.into(),
        }
    }
}

/// The sync handle, or `UPSTREAM_UNAVAILABLE` when this process runs without a sync.
pub fn sync_handle<'a>(ctx: &Context<'a>) -> ApiResult<&'a SyncHandle> {
    ctx.data_opt::<SyncHandle>()
        .ok_or_else(|| ApiError::UpstreamUnavailable("this gateway runs without a GHL sync".into()))
}

impl From<ApiError> for async_graphql::Error {
    fn from(error: ApiError) -> Self {
        let code = error.code();
        async_graphql::Error::new(error.to_string()).extend_with(|_, e| e.set("code", code))
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// Whether an error without a code is async-graphql's report of a value that failed to coerce:
/// an argument or variable of the wrong type, an `Int` out of range, a bad `DateTime`. The
/// library has no typed error for these, only its fixed messages.
fn is_coercion_error(message: &str) -> bool {
    message.starts_with("Failed to parse")
        || message.starts_with("Invalid value for argument")
        || message.starts_with("Invalid value for variable")
        || message.starts_with("Expected input type")
        || (message.starts_with("Variable \"") && message.contains("of type"))
}

/// Sets `extensions.code = BAD_USER_INPUT` on the errors of values that failed to coerce, which
/// async-graphql reports without a code, so that every input error carries one; gives
/// `INTERNAL` errors the request's id (`extensions.requestId`, the `x-request-id` of the HTTP
/// request and of its log lines) so that a user can quote it.
pub(super) fn code_input_errors(mut response: Response) -> Response {
    let request_id = crate::telemetry::request::request_id();
    for error in &mut response.errors {
        let code = error.extensions.as_ref().and_then(|e| e.get("code"));
        let internal =
            matches!(code, Some(async_graphql::Value::String(c)) if c == ApiError::Internal.code());
        if code.is_none() && is_coercion_error(&error.message) {
            error
                .extensions
                .get_or_insert_with(ErrorExtensionValues::default)
                .set("code", ApiError::BadUserInput(String::new()).code());
        }
        if let (true, Some(id)) = (internal, &request_id) {
            error
                .extensions
                .get_or_insert_with(ErrorExtensionValues::default)
                .set("requestId", id.as_str());
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coercion_messages_are_recognised() {
        assert!(is_coercion_error(
            "Failed to parse \"Int\": Only integers from -2147483648 to 2147483647 are accepted."
        ));
        assert!(is_coercion_error(
            "Invalid value for argument \"first\", expected type \"Int\""
        ));
        assert!(is_coercion_error(
            "Expected input type \"Int\", found \"ten\"."
        ));
        assert!(!is_coercion_error(
            "Unknown field \"nope\" on type \"Query\"."
        ));
        assert!(!is_coercion_error("internal error"));
    }
}
