//! The subscription root: a location's sync, live, and the changes to its cached records.
//!
//! Both fields can be shared between identical subscriptions (the WebSocket layer runs one stream
//! per shape and fans its serialized events out, `crate::http` `ws::fanout`): [`shared_field`]
//! says whether a document asks for one of them, and a request carrying [`Joining`] gets only what
//! a subscriber joining a running shared stream lacks (the current state, for `syncStatus`).

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

/// Request data marking a subscriber that joins a shared stream already running: the field answers
/// only what that stream will not send it again (`syncStatus`: the current state, then the stream
/// ends; `changes`: nothing), after the same checks as a fresh subscription.
#[derive(Clone, Copy, Debug)]
pub struct Joining;

/// The root field names whose streams may be shared between identical subscriptions: each honours
/// [`Joining`], and its events depend only on the document, the variables and the caller.
const SHARED_FIELDS: [&str; 2] = ["syncStatus", "changes"];

/// Whether the operation `operation_name` of `query` (the only one when `None`) is a subscription
/// to exactly one field of [`SHARED_FIELDS`], written out at its root (no fragment there), so that
/// identical subscriptions may share one stream. `false` for anything else, including a document
/// that does not parse (its own stream reports the error).
pub fn shared_field(query: &str, operation_name: Option<&str>) -> bool {
    use async_graphql::parser::types::{OperationType, Selection};
    let Ok(document) = async_graphql::parser::parse_query(query) else {
        return false;
    };
    let mut operations = document.operations.iter();
    let operation = match operation_name {
        Some(wanted) => operations
            .find(|(name, _)| name.is_some_and(|n| n.as_str() == wanted))
            .map(|(_, op)| op),
        None => match (operations.next(), operations.next()) {
            (Some((_, op)), None) => Some(op),
            _ => None,
        },
    };
    let Some(operation) = operation else {
        return false;
    };
    if operation.node.ty != OperationType::Subscription {
        return false;
    }
    match operation.node.selection_set.node.items.as_slice() {
        [item] => match &item.node {
            Selection::Field(field) => SHARED_FIELDS.contains(&field.node.name.node.as_str()),
            _ => false,
        },
        _ => false,
    }
}

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
        if ctx.data_opt::<Joining>().is_some() {
            // The shared stream brings the changes; this subscriber lacks only the current state.
            return Ok(futures::stream::iter(first).boxed());
        }
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
        if ctx.data_opt::<Joining>().is_some() {
            // No event stands for the current state: the shared stream brings all there is.
            return Ok(futures::stream::empty().boxed());
        }
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

#[cfg(test)]
mod tests {
    use super::shared_field;

    #[test]
    fn only_a_single_shared_root_field_of_a_subscription_is_shared() {
        let status = "subscription($l: ID!) { syncStatus(locationId: $l) { locationId } }";
        assert!(shared_field(status, None));
        assert!(shared_field(
            "subscription S($l: ID!) { c: changes(locationId: $l) { ids } } query Q { __typename }",
            Some("S")
        ));
        // Two operations and no name, a query, two root fields, a fragment, a bad document.
        assert!(!shared_field(
            "subscription A { syncStatus(locationId: \"l\") { locationId } } subscription B { changes(locationId: \"l\") { ids } }",
            None
        ));
        assert!(!shared_field("query { __typename }", None));
        assert!(!shared_field(
            "subscription { a: syncStatus(locationId: \"l\") { locationId } b: changes(locationId: \"l\") { ids } }",
            None
        ));
        assert!(!shared_field(
            "subscription { ... on Subscription { syncStatus(locationId: \"l\") { locationId } } }",
            None
        ));
        assert!(!shared_field("subscription {", None));
        assert!(!shared_field(status, Some("Other")));
    }
}
