//! The mutation root: start (or join) a sync.

use async_graphql::{Context, ID, Object};

use super::error::{ApiError, ApiResult};
use super::query::known_location;
use super::types::{SyncJob, SyncMode};
use crate::store::Store;
use crate::sync::{self, SyncHandle};

pub struct Mutation;

/// The sync handle, or an error when this process runs without a sync.
pub(super) fn sync_handle<'a>(ctx: &Context<'a>) -> ApiResult<&'a SyncHandle> {
    ctx.data_opt::<SyncHandle>()
        .ok_or_else(|| ApiError::UpstreamUnavailable("this gateway runs without a GHL sync".into()))
}

pub(super) fn sync_error(error: sync::SyncError) -> ApiError {
    match error {
        sync::SyncError::NoCredentials(location) => ApiError::UpstreamUnavailable(format!(
            "location {location:?} has no GHL credentials: add them with `ghl-gateway connect`"
        )),
        sync::SyncError::ShuttingDown => {
            ApiError::UpstreamUnavailable("the gateway is shutting down".into())
        }
        sync::SyncError::Store(error) => error.into(),
    }
}

#[Object]
impl Mutation {
    /// Starts a background sync of the location and returns the job at once; when a sync of the
    /// location is already running, returns that job with `joined: true`.
    async fn refresh_location(
        &self,
        ctx: &Context<'_>,
        location_id: ID,
        #[graphql(default_with = "Some(SyncMode::Incremental)")] mode: Option<SyncMode>,
    ) -> ApiResult<SyncJob> {
        super::auth::require_location(ctx, &location_id)?;
        let store = ctx.data_unchecked::<Store>();
        let sync = sync_handle(ctx)?;
        known_location(store, &location_id).await?;
        let mode = match mode.unwrap_or(SyncMode::Incremental) {
            SyncMode::Incremental => sync::SyncMode::Incremental,
            SyncMode::Full => sync::SyncMode::Full,
        };
        let (snapshot, joined) = sync.refresh(&location_id, mode).await.map_err(sync_error)?;
        Ok(SyncJob::from_snapshot(snapshot, joined))
    }
}
