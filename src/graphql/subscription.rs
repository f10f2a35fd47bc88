//! The subscription root: a location's sync, live.

use async_graphql::{Context, ID, Subscription};
use futures::StreamExt;
use futures::stream::BoxStream;
use tokio_stream::wrappers::BroadcastStream;

use super::auth::known_location;
use super::error::{ApiError, sync_handle};
use super::types::{SyncEvent, SyncJob};
use crate::store::Store;

pub struct Subscription;

#[Subscription]
impl Subscription {
    /// The location's sync: the first event is the current state (the running or last job; none
    /// for a location never synced), then one event per change until the client leaves. A client
    /// that reads too slowly skips events; the next one it gets is complete.
    async fn sync_status(
        &self,
        ctx: &Context<'_>,
        location_id: ID,
    ) -> async_graphql::Result<BoxStream<'static, SyncEvent>> {
        super::auth::require_location(ctx, &location_id)?;
        let store = ctx.data_unchecked::<Store>().clone();
        let sync = sync_handle(ctx)?.clone();
        known_location(&store, &location_id).await?;
        let location_id = location_id.0;
        // Subscribe before reading the current state, so that no change falls in between.
        let changes = BroadcastStream::new(sync.subscribe());
        let current = match sync.running(&location_id) {
            Some(snapshot) => Some(snapshot),
            None => store
                .last_snapshot(&location_id)
                .await
                .map_err(ApiError::from)?,
        };
        let first = current.map(|snapshot| SyncEvent {
            location_id: location_id.clone(),
            job: SyncJob::from_snapshot(snapshot, false),
        });
        let live = changes.filter_map(move |event| {
            let wanted = match event {
                Ok(event) if event.location_id == location_id => Some(SyncEvent {
                    location_id: event.location_id,
                    job: SyncJob::from_snapshot(event.job, false),
                }),
                // Lagged: the skipped events are superseded by the next one.
                _ => None,
            };
            std::future::ready(wanted)
        });
        Ok(futures::stream::iter(first).chain(live).boxed())
    }
}
