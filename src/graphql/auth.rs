//! The guard every resolver goes through: who the caller is, and which locations it may read.
//!
//! The function the mutation and the subscription call:
//! - [`require_location`]`(ctx, location_id)`: `Ok(())` when the caller may read the location;
//!   otherwise the very error an unknown location gets ([`location_not_found`]: `NOT_FOUND`,
//!   `location "<id>" not found`), so that "forbidden" and "does not exist" cannot be told
//!   apart. Without a [`Caller`] in the request data (a request that bypassed the HTTP guard) it
//!   answers `UNAUTHENTICATED`: the schema fails closed.
//!
//! The HTTP layer (and the WebSocket `connection_init` handler) put the [`Caller`] into the
//! request data after [`crate::auth::Authenticator::authenticate`].

use async_graphql::Context;

use super::error::{ApiError, ApiResult};
use crate::auth::Caller;

/// The authenticated caller of this request.
pub fn caller<'a>(ctx: &Context<'a>) -> ApiResult<&'a Caller> {
    ctx.data_opt::<Caller>()
        .ok_or_else(|| ApiError::Unauthenticated("an API key is required".into()))
}

/// Whether the caller may read `location_id` (false without a caller).
pub fn may_read(ctx: &Context<'_>, location_id: &str) -> bool {
    ctx.data_opt::<Caller>()
        .is_some_and(|c| c.may_read(location_id))
}

/// Fails like an unknown location unless the caller may read `location_id`.
pub fn require_location(ctx: &Context<'_>, location_id: &str) -> ApiResult<()> {
    if caller(ctx)?.may_read(location_id) {
        Ok(())
    } else {
        Err(location_not_found(location_id))
    }
}

/// The one error of an unknown or unreadable location.
pub fn location_not_found(location_id: &str) -> ApiError {
    ApiError::NotFound(format!("location {location_id:?} not found"))
}
