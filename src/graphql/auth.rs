//! The guard every resolver goes through: who the caller is, and which locations it may read.
//!
//! The functions the roots call:
//! - [`require_location`]`(ctx, location_id)`: `Ok(())` when the caller may read the location;
//!   otherwise the very error an unknown location gets ([`location_not_found`]: `NOT_FOUND`,
//!   `location "<id>" not found`), so that "forbidden" and "does not exist" cannot be told
//!   apart. Without a [`Caller`] in the request data (a request that bypassed the HTTP guard) it
//!   answers `UNAUTHENTICATED`: the schema fails closed.
//! - [`known_location`]`(store, location_id)`: after the caller passed, whether the location
//!   exists for the gateway at all (cached, or with credentials to sync it); else the same
//!   `NOT_FOUND`.
//!
//! It reads the store (for [`known_location`]) and never the sync or GHL.
//!
//! The HTTP layer (and the WebSocket `connection_init` handler) put the [`Caller`] into the
//! request data after [`crate::auth::Authenticator::authenticate`].

use async_graphql::Context;

use super::error::{ApiError, ApiResult};
use crate::auth::Caller;
use crate::store::Store;

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

/// Checks that a location is known (cached, or with credentials to sync it), or answers
/// `NOT_FOUND`.
pub async fn known_location(store: &Store, id: &str) -> ApiResult<()> {
    if store.location(id).await?.is_some() || store.credential(id).await?.is_some() {
        Ok(())
    } else {
        Err(location_not_found(id))
    }
}
