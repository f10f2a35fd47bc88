//! The query root: locations, contacts (a Relay connection with keyset cursors), sync status.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_graphql::{Context, Enum, ID, InputObject, Object, SimpleObject};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};

use super::auth::{self, known_location, require_location};
use super::error::{ApiError, ApiResult};
use super::loaders::ContactId;
use super::prefetch::Via;
use super::reads;
use super::types::{Contact, Freshness, Location, SyncStatus, loader};
use crate::domain::to_ms;
use crate::store::{self, ContactKey, Store};

/// The largest `first` a page may ask for.
pub const MAX_PAGE: i32 = 500;
/// `first` when the query does not say.
pub const DEFAULT_PAGE: i32 = 50;

#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum ContactOrderField {
    DateAdded,
    DateUpdated,
    /// The display name, case-insensitive.
    Name,
}

#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum OrderDirection {
    Asc,
    Desc,
}

/// The order of a contacts page.
#[derive(InputObject, Clone, Debug)]
pub struct ContactOrder {
    #[graphql(default_with = "ContactOrderField::DateAdded")]
    pub field: ContactOrderField,
    #[graphql(default_with = "OrderDirection::Desc")]
    pub direction: OrderDirection,
}

/// Filters of a contacts page; all given filters must hold.
#[derive(InputObject, Clone, Debug, Default)]
pub struct ContactFilter {
    /// Case-insensitive text in the name, email or phone.
    pub query: Option<String>,
    /// Contacts with this tag.
    pub tag: Option<String>,
    /// Contacts assigned to this user.
    pub assigned_to: Option<ID>,
    /// Contacts updated at or after this time.
    pub updated_since: Option<DateTime<Utc>>,
}

impl ContactOrder {
    fn to_store(&self) -> store::ContactOrder {
        store::ContactOrder {
            field: match self.field {
                ContactOrderField::DateAdded => store::ContactOrderField::DateAdded,
                ContactOrderField::DateUpdated => store::ContactOrderField::DateUpdated,
                ContactOrderField::Name => store::ContactOrderField::Name,
            },
            direction: match self.direction {
                OrderDirection::Asc => store::SortDirection::Asc,
                OrderDirection::Desc => store::SortDirection::Desc,
            },
        }
    }
}

impl ContactFilter {
    fn to_store(&self) -> store::ContactFilter {
        store::ContactFilter {
            query: self.query.clone(),
            tag: self.tag.clone(),
            assigned_to: self.assigned_to.as_ref().map(|id| id.0.clone()),
            updated_since: self.updated_since.map(to_ms),
        }
    }
}

/// An opaque keyset cursor: the order it belongs to and the position in it.
#[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
struct Cursor {
    f: store::ContactOrderField,
    d: store::SortDirection,
    k: ContactKey,
}

fn encode_cursor(order: store::ContactOrder, key: ContactKey) -> String {
    let cursor = Cursor {
        f: order.field,
        d: order.direction,
        k: key,
    };
    // Serializing plain data into a Vec cannot fail.
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(&cursor).unwrap_or_default())
}

fn decode_cursor(text: &str, order: store::ContactOrder) -> ApiResult<ContactKey> {
    let malformed =
        || ApiError::BadUserInput(format!("`after` is not a cursor of this API: {text:?}"));
    let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|_| malformed())?;
    let cursor: Cursor = serde_json::from_slice(&bytes).map_err(|_| malformed())?;
    if cursor.f != order.field || cursor.d != order.direction || !cursor.k.fits(order.field) {
        return Err(ApiError::BadUserInput(
            "`after` is a cursor of another ordering: pass the same `orderBy` as the page it came from"
                .into(),
        ));
    }
    Ok(cursor.k)
}

#[derive(SimpleObject)]
pub struct PageInfo {
    pub has_next_page: bool,
    pub end_cursor: Option<String>,
}

#[derive(SimpleObject)]
pub struct ContactEdge {
    pub cursor: String,
    pub node: Contact,
}

/// A page of contacts.
pub struct ContactConnection {
    location_id: String,
    filter: store::ContactFilter,
    edges: Vec<(String, Arc<store::entities::contact::Model>)>,
    has_next_page: bool,
    /// Whether the page's relations were prefetched once already (by `edges` or `nodes`).
    prefetched: AtomicBool,
}

#[Object]
impl ContactConnection {
    async fn edges(&self, ctx: &Context<'_>) -> ApiResult<Vec<ContactEdge>> {
        super::prefetch::contacts(
            ctx,
            &self.contacts(),
            ctx.look_ahead().field("node"),
            self.prefetch_via(),
        )
        .await?;
        Ok(self
            .edges
            .iter()
            .map(|(cursor, c)| ContactEdge {
                cursor: cursor.clone(),
                node: Contact(c.clone()),
            })
            .collect())
    }
    async fn nodes(&self, ctx: &Context<'_>) -> ApiResult<Vec<Contact>> {
        super::prefetch::contacts(ctx, &self.contacts(), ctx.look_ahead(), self.prefetch_via())
            .await?;
        Ok(self.edges.iter().map(|(_, c)| Contact(c.clone())).collect())
    }
    async fn page_info(&self) -> PageInfo {
        PageInfo {
            has_next_page: self.has_next_page,
            end_cursor: self.edges.last().map(|(cursor, _)| cursor.clone()),
        }
    }
    /// Contacts matching the filter in the whole location (not just this page).
    async fn total_count(&self, ctx: &Context<'_>) -> ApiResult<u64> {
        let store = ctx.data_unchecked::<Store>();
        Ok(store
            .count_contacts(&self.location_id, &self.filter)
            .await?)
    }
    async fn freshness(&self, ctx: &Context<'_>) -> ApiResult<Freshness> {
        Freshness::of(ctx, &self.location_id).await
    }
}

impl ContactConnection {
    /// The first prefetch of the page reads the store; a second one finds it in the cache.
    fn prefetch_via(&self) -> Via {
        if self.prefetched.swap(true, Ordering::Relaxed) {
            Via::Cache
        } else {
            Via::Store
        }
    }

    fn contacts(&self) -> Vec<Arc<store::entities::contact::Model>> {
        self.edges.iter().map(|(_, c)| c.clone()).collect()
    }
}

pub struct Query;

#[Object]
impl Query {
    /// The locations in the cache that the caller may read.
    async fn locations(&self, ctx: &Context<'_>) -> ApiResult<Vec<Location>> {
        let caller = auth::caller(ctx)?;
        let store = ctx.data_unchecked::<Store>();
        reads::everything(ctx);
        Ok(store
            .locations()
            .await?
            .into_iter()
            .filter(|l| caller.may_read(&l.id))
            .map(Location)
            .collect())
    }

    /// A location by id, or null (also when the caller may not read it).
    async fn location(&self, ctx: &Context<'_>, id: ID) -> ApiResult<Option<Location>> {
        if !auth::caller(ctx)?.may_read(&id) {
            return Ok(None);
        }
        let store = ctx.data_unchecked::<Store>();
        reads::location(ctx, &id);
        Ok(store.location(&id).await?.map(Location))
    }

    /// A page of a location's contacts, from the cache. `first`: page size, 0 to 500 (default
    /// 50). `after`: the `endCursor` of the previous page. `maxAge`: the oldest data, in seconds,
    /// the caller accepts.
    #[allow(clippy::too_many_arguments)]
    #[graphql(
        complexity = "first.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE) as usize * child_complexity + 1"
    )]
    async fn contacts(
        &self,
        ctx: &Context<'_>,
        location_id: ID,
        #[graphql(default = 50)] first: Option<i32>,
        after: Option<String>,
        filter: Option<ContactFilter>,
        order_by: Option<ContactOrder>,
        max_age: Option<i32>,
    ) -> ApiResult<ContactConnection> {
        let first = first.unwrap_or(DEFAULT_PAGE);
        if !(0..=MAX_PAGE).contains(&first) {
            return Err(ApiError::BadUserInput(format!(
                "`first` must be between 0 and {MAX_PAGE}, got {first}"
            )));
        }
        if max_age.is_some_and(|m| m < 0) {
            return Err(ApiError::BadUserInput(
                "`maxAge` must not be negative".into(),
            ));
        }
        let order = order_by.map(|o| o.to_store()).unwrap_or_default();
        let after = after
            .as_deref()
            .map(|c| decode_cursor(c, order))
            .transpose()?;
        let filter = filter.unwrap_or_default().to_store();
        require_location(ctx, &location_id)?;
        let store = ctx.data_unchecked::<Store>();
        reads::location(ctx, &location_id);
        known_location(store, &location_id).await?;
        let fed = super::read_policy::apply(ctx, &location_id, max_age).await?;
        if !fed && ctx.look_ahead().field("freshness").exists() {
            super::read_policy::prefetch_freshness(ctx, &location_id).await?;
        }

        let mut rows = store
            .contacts_page(
                &location_id,
                &filter,
                order,
                after.as_ref(),
                first as u64 + 1,
            )
            .await?;
        let has_next_page = rows.len() > first as usize;
        rows.truncate(first as usize);
        let edges = rows
            .into_iter()
            .map(|c| {
                let cursor = encode_cursor(order, ContactKey::of(&c, order.field));
                (cursor, Arc::new(c))
            })
            .collect();
        Ok(ContactConnection {
            location_id: location_id.0,
            filter,
            edges,
            has_next_page,
            prefetched: AtomicBool::new(false),
        })
    }

    /// A page of a location's tasks, from the cache (default order: soonest due first, undated
    /// last). `first`, `after` and `maxAge` as in `contacts`; a bad cursor or a date range that
    /// cannot match is `BAD_USER_INPUT`.
    #[allow(clippy::too_many_arguments)]
    #[graphql(
        complexity = "first.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE) as usize * child_complexity + 1"
    )]
    async fn tasks(
        &self,
        ctx: &Context<'_>,
        location_id: ID,
        #[graphql(default = 50)] first: Option<i32>,
        after: Option<String>,
        filter: Option<super::lists::TaskFilter>,
        order_by: Option<super::lists::TaskOrder>,
        max_age: Option<i32>,
    ) -> ApiResult<super::lists::TaskConnection> {
        super::lists::tasks(ctx, location_id, first, after, filter, order_by, max_age).await
    }

    /// A page of a location's opportunities, from the cache (default order: most recently
    /// updated first). `first`, `after` and `maxAge` as in `contacts`; a bad cursor, or a
    /// `stageId` outside the given `pipelineId`, is `BAD_USER_INPUT`.
    #[allow(clippy::too_many_arguments)]
    #[graphql(
        complexity = "first.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE) as usize * child_complexity + 1"
    )]
    async fn opportunities(
        &self,
        ctx: &Context<'_>,
        location_id: ID,
        #[graphql(default = 50)] first: Option<i32>,
        after: Option<String>,
        filter: Option<super::lists::OpportunityFilter>,
        order_by: Option<super::lists::OpportunityOrder>,
        max_age: Option<i32>,
    ) -> ApiResult<super::lists::OpportunityConnection> {
        super::lists::opportunities(ctx, location_id, first, after, filter, order_by, max_age).await
    }

    /// A contact by id, or null (also when the caller may not read its location).
    async fn contact(&self, ctx: &Context<'_>, id: ID) -> ApiResult<Option<Contact>> {
        let caller = auth::caller(ctx)?;
        let contact = loader(ctx)
            .load_one(ContactId(id.0))
            .await?
            .flatten()
            .filter(|c| caller.may_read(&c.location_id));
        // Found, the answer is the contact's location's; not found, any location could add it.
        match &contact {
            Some(c) => reads::location(ctx, &c.location_id),
            None => reads::everything(ctx),
        }
        Ok(contact.map(Contact))
    }

    /// What the location's sync is doing and how fresh its data is.
    async fn sync_status(&self, ctx: &Context<'_>, location_id: ID) -> ApiResult<SyncStatus> {
        require_location(ctx, &location_id)?;
        let store = ctx.data_unchecked::<Store>();
        reads::location(ctx, &location_id);
        known_location(store, &location_id).await?;
        let sync = ctx.data_opt::<crate::sync::SyncHandle>();
        let status = SyncStatus::load(store, sync, &location_id).await?;
        // `nextAttemptAt` and `manualRetryAvailable` change when the cooldown ends.
        if let Some(ends) = status.cooldown_ends() {
            reads::until(ctx, ends);
        }
        Ok(status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_refuse_other_orders() {
        let order = store::ContactOrder::default();
        let key = ContactKey::Time {
            at: 42,
            id: "c1".into(),
        };
        let text = encode_cursor(order, key.clone());
        assert_eq!(decode_cursor(&text, order).unwrap(), key);
        let by_name = store::ContactOrder {
            field: store::ContactOrderField::Name,
            direction: store::SortDirection::Desc,
        };
        assert!(matches!(
            decode_cursor(&text, by_name),
            Err(ApiError::BadUserInput(_))
        ));
        assert!(matches!(
            decode_cursor("not a cursor!", order),
            Err(ApiError::BadUserInput(_))
        ));
        assert!(matches!(
            decode_cursor("bm9wZQ", order),
            Err(ApiError::BadUserInput(_))
        ));
    }
}
