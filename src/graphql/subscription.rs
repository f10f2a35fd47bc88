//! The subscription root: a location's sync, live, and the changes to its cached records.

use async_graphql::{Context, Enum, ID, SimpleObject, Subscription};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use futures::stream::BoxStream;
use tokio_stream::wrappers::BroadcastStream;

use super::auth::known_location;
use super::error::{ApiError, sync_handle};
use super::types::{SyncEvent, SyncJob};
use crate::domain;
use crate::store::Store;

pub struct Subscription;

/// What kind of record changed.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum ChangeKind {
    Contact,
    Task,
    Conversation,
    Opportunity,
    User,
    Pipeline,
    CustomField,
}

/// Whether the records were written or marked deleted.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum ChangeOp {
    Upsert,
    Delete,
}

/// Who wrote the records: a sync page, or a GHL webhook event.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum ChangeSource {
    Sync,
    Webhook,
}

/// One committed batch of changes to a location's cached records. A client refetches what it
/// shows when one of `ids` is among it; a query made after the event sees at least `dataVersion`.
#[derive(SimpleObject, Clone, Debug)]
pub struct ChangeEvent {
    pub location_id: ID,
    pub kind: ChangeKind,
    pub op: ChangeOp,
    /// GHL ids of the records of `kind` that changed.
    pub ids: Vec<ID>,
    pub source: ChangeSource,
    /// When the batch committed.
    pub at: DateTime<Utc>,
    /// The location's data version once the batch committed (it only grows within a process).
    pub data_version: i64,
}

impl From<domain::ChangeEvent> for ChangeEvent {
    fn from(event: domain::ChangeEvent) -> Self {
        Self {
            location_id: ID(event.location_id),
            kind: match event.kind {
                domain::ChangeKind::Contact => ChangeKind::Contact,
                domain::ChangeKind::Task => ChangeKind::Task,
                domain::ChangeKind::Conversation => ChangeKind::Conversation,
                domain::ChangeKind::Opportunity => ChangeKind::Opportunity,
                domain::ChangeKind::User => ChangeKind::User,
                domain::ChangeKind::Pipeline => ChangeKind::Pipeline,
                domain::ChangeKind::CustomField => ChangeKind::CustomField,
            },
            op: match event.op {
                domain::ChangeOp::Upsert => ChangeOp::Upsert,
                domain::ChangeOp::Delete => ChangeOp::Delete,
            },
            ids: event.ids.into_iter().map(ID).collect(),
            source: match event.source {
                domain::ChangeSource::Sync => ChangeSource::Sync,
                domain::ChangeSource::Webhook => ChangeSource::Webhook,
            },
            at: event.at,
            data_version: i64::try_from(event.data_version).unwrap_or(i64::MAX),
        }
    }
}

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

    /// The location's record changes, one event per committed batch (a sync page, a webhook
    /// event), from now on; no event stands for the current state. The same rules as
    /// `syncStatus`: a location the key may not read answers like an unknown one. A client that
    /// reads too slowly skips events (then it refetches what it shows).
    async fn changes(
        &self,
        ctx: &Context<'_>,
        location_id: ID,
    ) -> async_graphql::Result<BoxStream<'static, ChangeEvent>> {
        super::auth::require_location(ctx, &location_id)?;
        let store = ctx.data_unchecked::<Store>().clone();
        known_location(&store, &location_id).await?;
        let location_id = location_id.0;
        let changes = BroadcastStream::new(store.subscribe_changes());
        let live = changes.filter_map(move |event| {
            let wanted = match event {
                Ok(event) if event.location_id == location_id => Some(ChangeEvent::from(event)),
                // Lagged: the client refetches on the next event it gets.
                _ => None,
            };
            std::future::ready(wanted)
        });
        Ok(live.boxed())
    }
}
