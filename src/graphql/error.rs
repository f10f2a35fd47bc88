//! The one conversion from internal errors to GraphQL errors: every error leaves with a stable
//! `extensions.code`; internal causes are logged here, once, and answered generically.

use async_graphql::ErrorExtensions;

use crate::store::StoreError;

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

impl From<ApiError> for async_graphql::Error {
    fn from(error: ApiError) -> Self {
        let code = error.code();
        async_graphql::Error::new(error.to_string()).extend_with(|_, e| e.set("code", code))
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
