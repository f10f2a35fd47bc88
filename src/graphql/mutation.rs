//! The mutation root: start (or join) a sync.

use async_graphql::{Context, ID, Object};

use super::auth::known_location;
use super::error::{ApiResult, sync_handle};
use super::types::{SyncJob, SyncMode};
use crate::store::Store;
use crate::sync::Trigger;

pub struct Mutation;

#[Object]
impl Mutation {
    /// Starts a background sync of the location and returns the job at once; when a sync of the
    /// location is already running, returns that job with `joined: true`. During a cooldown after
    /// failed syncs it may try once per cooldown step; otherwise it answers `RATE_LIMITED`.
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
        let mode = mode.unwrap_or(SyncMode::Incremental).into();
        let (snapshot, joined) = sync.refresh(&location_id, mode, Trigger::Manual).await?;
        Ok(SyncJob::from_snapshot(snapshot, joined))
    }
}
