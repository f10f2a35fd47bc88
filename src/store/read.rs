//! Read queries: keyset pages of contacts, and batch lookups by key for the GraphQL DataLoaders.
//! Deleted rows are never returned.

use std::collections::HashMap;

use sea_orm::sea_query::{Expr, ExprTrait, JoinType, LikeExpr, Order, Query};
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, EntityTrait, FromQueryResult, QueryFilter, QueryOrder,
    QuerySelect, QueryTrait,
};

use super::entities::{
    contact, contact_custom_value, custom_field, location, opportunity, pipeline, pipeline_stage,
    task, user,
};
use super::jobs::job_state_name;
use super::{IN_CHUNK, Store, StoreError};
use crate::domain::JobState;

/// The keyset orders of a contacts page.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ContactOrderField {
    DateAdded,
    DateUpdated,
    Name,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum SortDirection {
    Asc,
    Desc,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ContactOrder {
    pub field: ContactOrderField,
    pub direction: SortDirection,
}

impl Default for ContactOrder {
    /// Newest contacts first, as GHL's own contact list shows them.
    fn default() -> Self {
        Self {
            field: ContactOrderField::DateAdded,
            direction: SortDirection::Desc,
        }
    }
}

/// The position of a contact in a keyset order: its sort value and its id (the tie-breaker).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
pub enum ContactKey {
    Time { at: i64, id: String },
    Name { name: String, id: String },
}

impl ContactKey {
    /// The key of `c` in `field` order.
    pub fn of(c: &contact::Model, field: ContactOrderField) -> Self {
        match field {
            ContactOrderField::DateAdded => ContactKey::Time {
                at: c.date_added,
                id: c.id.clone(),
            },
            ContactOrderField::DateUpdated => ContactKey::Time {
                at: c.date_updated,
                id: c.id.clone(),
            },
            ContactOrderField::Name => ContactKey::Name {
                name: c.sort_name.clone(),
                id: c.id.clone(),
            },
        }
    }

    /// Whether this key can be a position in `field` order.
    pub fn fits(&self, field: ContactOrderField) -> bool {
        matches!(
            (self, field),
            (
                ContactKey::Time { .. },
                ContactOrderField::DateAdded | ContactOrderField::DateUpdated
            ) | (ContactKey::Name { .. }, ContactOrderField::Name)
        )
    }
}

/// Filters of a contacts page; all given filters must hold.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ContactFilter {
    /// Case-insensitive substring of the name, email or phone.
    pub query: Option<String>,
    pub tag: Option<String>,
    pub assigned_to: Option<String>,
    /// Contacts updated at or after this time (ms).
    pub updated_since: Option<i64>,
}

/// How long a memoized `totalCount` may be served while its location's data version is
/// unchanged: the bound on how late a count sees a write this process was not told of (another
/// process's `ghl-gateway sync` beside `serve` on SQLite; a replica's write while notifications
/// are late). Writes this process commits or hears of bump the version and end it at once.
pub const COUNT_MEMO_TTL: std::time::Duration = std::time::Duration::from_secs(1);

/// Memoized `totalCount`s: (location id, filter) -> (data version, count).
///
/// Why: counting a location's contacts walks its index, 0.47 ms of SQLite's work per request
/// at 10,000 contacts (README, cold path), while the page beside it costs a fraction of that;
/// a client paging through a list asks the same count with every page. Bounded in entries;
/// an entry counted at another version is a miss.
pub(super) struct CountMemo {
    entries: moka::sync::Cache<(String, String), (u64, u64)>,
    hits: std::sync::atomic::AtomicU64,
}

impl Default for CountMemo {
    fn default() -> Self {
        Self {
            entries: moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(COUNT_MEMO_TTL)
                .build(),
            hits: Default::default(),
        }
    }
}

impl CountMemo {
    fn get(&self, key: &(String, String), version: u64) -> Option<u64> {
        let (at, count) = self.entries.get(key)?;
        (at == version).then(|| {
            self.hits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            count
        })
    }

    fn insert(&self, key: (String, String), version: u64, count: u64) {
        self.entries.insert(key, (version, count));
    }
}

/// What the sync tables say about a location's data.
#[derive(Clone, Debug, Default, PartialEq, FromQueryResult)]
pub struct Freshness {
    pub location_id: String,
    /// When the oldest data the last successful sync kept was read (ms): the oldest `read_at`
    /// of its stages (see the README's freshness section), not when it finished.
    pub synced_at: Option<i64>,
    /// Jobs queued or running now.
    pub active: i64,
    /// Why GHL refused the location's credentials, if it did.
    pub auth_error: Option<String>,
}

fn like_pattern(text: &str) -> LikeExpr {
    let escaped = super::fold(text)
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    LikeExpr::new(format!("%{escaped}%")).escape('\\')
}

fn contact_condition(location_id: &str, filter: &ContactFilter) -> Condition {
    let mut cond = Condition::all()
        .add(contact::Column::LocationId.eq(location_id))
        .add(contact::Column::Deleted.eq(false));
    if let Some(text) = filter
        .query
        .as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty())
    {
        // Both sides folded in Rust: the database's own case rules (ASCII only in SQLite) play
        // no part.
        cond = cond.add(Expr::col(contact::Column::SearchText).like(like_pattern(text)));
    }
    if let Some(tag) = &filter.tag {
        let tagged = Query::select()
            .column("contact_id")
            .from("contact_tags")
            .and_where(Expr::col("location_id").eq(location_id))
            .and_where(Expr::col("tag").eq(tag.as_str()))
            .to_owned();
        cond = cond.add(contact::Column::Id.in_subquery(tagged));
    }
    if let Some(user) = &filter.assigned_to {
        cond = cond.add(contact::Column::AssignedTo.eq(user.as_str()));
    }
    if let Some(since) = filter.updated_since {
        cond = cond.add(contact::Column::DateUpdated.gte(since));
    }
    cond
}

/// Runs `query` once per [`IN_CHUNK`] of `keys` and concatenates the rows.
pub(super) async fn chunked<K, T, E, F, Fut>(keys: &[K], mut query: F) -> Result<Vec<T>, StoreError>
where
    F: FnMut(Vec<K>) -> Fut,
    K: Clone,
    Fut: Future<Output = Result<Vec<T>, E>>,
    StoreError: From<E>,
{
    let mut rows = Vec::new();
    for chunk in keys.chunks(IN_CHUNK) {
        rows.extend(query(chunk.to_vec()).await?);
    }
    Ok(rows)
}

impl Store {
    pub async fn locations(&self) -> Result<Vec<location::Model>, StoreError> {
        Ok(location::Entity::find()
            .filter(location::Column::Deleted.eq(false))
            .order_by_asc(location::Column::Id)
            .all(&self.db)
            .await?)
    }

    pub async fn location(&self, id: &str) -> Result<Option<location::Model>, StoreError> {
        // As a JSON array, which an SQLite file reads on the caller's thread (every query of a
        // location's data checks it first).
        let found = self
            .all_as_json(
                location::Entity::find_by_id(id.to_owned())
                    .filter(location::Column::Deleted.eq(false)),
                &[],
            )
            .await?;
        Ok(found.into_iter().next())
    }

    /// Up to `limit` contacts of a location after `after` in `order`.
    pub async fn contacts_page(
        &self,
        location_id: &str,
        filter: &ContactFilter,
        order: ContactOrder,
        after: Option<&ContactKey>,
        limit: u64,
    ) -> Result<Vec<contact::Model>, StoreError> {
        let sort_col = match order.field {
            ContactOrderField::DateAdded => contact::Column::DateAdded,
            ContactOrderField::DateUpdated => contact::Column::DateUpdated,
            ContactOrderField::Name => contact::Column::SortName,
        };
        let mut cond = contact_condition(location_id, filter);
        if let Some(key) = after {
            let (value, id) = match key {
                ContactKey::Time { at, id } => (Expr::val(*at), id.clone()),
                ContactKey::Name { name, id } => (Expr::val(name.clone()), id.clone()),
            };
            let here = Expr::tuple([Expr::col(sort_col), Expr::col(contact::Column::Id)]);
            let there = Expr::tuple([value, Expr::val(id)]);
            cond = cond.add(match order.direction {
                SortDirection::Asc => here.gt(there),
                SortDirection::Desc => here.lt(there),
            });
        }
        let direction = match order.direction {
            SortDirection::Asc => Order::Asc,
            SortDirection::Desc => Order::Desc,
        };
        let select = contact::Entity::find()
            .filter(cond)
            .order_by(sort_col, direction.clone())
            .order_by(contact::Column::Id, direction.clone())
            .limit(limit);
        self.all_as_json(
            select,
            &[
                (sort_col, direction.clone()),
                (contact::Column::Id, direction),
            ],
        )
        .await
    }

    /// The number of contacts of a location that `filter` keeps. Counted at most once per
    /// location, filter and data version within [`COUNT_MEMO_TTL`] ([`CountMemo`]).
    pub async fn count_contacts(
        &self,
        location_id: &str,
        filter: &ContactFilter,
    ) -> Result<u64, StoreError> {
        // The version is read before the count: a write committed meanwhile bumps it, so the
        // memo never pairs a count with a version newer than the data it counted.
        let versions = self.versions.snapshot();
        let version = (!versions.suspended()).then(|| versions.location(location_id));
        let key = (location_id.to_owned(), format!("{filter:?}"));
        if let Some(version) = version
            && let Some(count) = self.counts.get(&key, version)
        {
            return Ok(count);
        }
        let count = self.count_contacts_now(location_id, filter).await?;
        if let Some(version) = version {
            self.counts.insert(key, version, count);
        }
        Ok(count)
    }

    /// Times [`Store::count_contacts`] answered from its memo, without a statement.
    pub fn count_memo_hits(&self) -> u64 {
        self.counts.hits.load(std::sync::atomic::Ordering::Relaxed)
    }

    async fn count_contacts_now(
        &self,
        location_id: &str,
        filter: &ContactFilter,
    ) -> Result<u64, StoreError> {
        let select = contact::Entity::find().filter(contact_condition(location_id, filter));
        let count = Query::select()
            .expr(Expr::cust("COUNT(*)"))
            .from_subquery(select.into_query(), "sub")
            .to_owned();
        let count: Option<i64> = match self.read_direct::<i64>(&count) {
            Some(count) => count,
            None => match self.db.query_one(&count).await? {
                Some(row) => Some(row.try_get_by_index(0)?),
                None => None,
            },
        };
        Ok(count.unwrap_or(0).try_into().unwrap_or(0))
    }

    pub async fn contacts_by_ids(&self, ids: &[String]) -> Result<Vec<contact::Model>, StoreError> {
        chunked(ids, |chunk| {
            self.all_as_json(
                contact::Entity::find()
                    .filter(contact::Column::Id.is_in(chunk))
                    .filter(contact::Column::Deleted.eq(false)),
                &[(contact::Column::Id, Order::Asc)],
            )
        })
        .await
    }

    /// Tasks of the given contacts, in no particular order.
    pub async fn tasks_by_contacts(
        &self,
        contact_ids: &[String],
    ) -> Result<Vec<task::Model>, StoreError> {
        chunked(contact_ids, |chunk| {
            self.all_as_json(
                task::Entity::find()
                    .filter(task::Column::ContactId.is_in(chunk))
                    .filter(task::Column::Deleted.eq(false)),
                // No ORDER BY: the loader sorts them (an ordered aggregate costs SQLite an
                // ephemeral index of the JSON objects, 235 against 132 us for a page's tasks).
                &[],
            )
        })
        .await
    }

    /// Conversations of the given contacts, in no particular order.
    pub async fn conversations_by_contacts(
        &self,
        contact_ids: &[String],
    ) -> Result<Vec<conversation::Model>, StoreError> {
        chunked(contact_ids, |chunk| {
            self.all_as_json(
                conversation::Entity::find()
                    .filter(conversation::Column::ContactId.is_in(chunk))
                    .filter(conversation::Column::Deleted.eq(false)),
                // No ORDER BY: the loader sorts them (an ordered aggregate costs SQLite an
                // ephemeral index of the JSON objects, 235 against 132 us for a page's tasks).
                &[],
            )
        })
        .await
    }

    pub async fn opportunities_by_contacts(
        &self,
        contact_ids: &[String],
    ) -> Result<Vec<opportunity::Model>, StoreError> {
        chunked(contact_ids, |chunk| {
            self.all_as_json(
                opportunity::Entity::find()
                    .filter(opportunity::Column::ContactId.is_in(chunk))
                    .filter(opportunity::Column::Deleted.eq(false)),
                &[(opportunity::Column::Id, Order::Asc)],
            )
        })
        .await
    }

    pub async fn custom_values_by_contacts(
        &self,
        contact_ids: &[String],
    ) -> Result<Vec<contact_custom_value::Model>, StoreError> {
        chunked(contact_ids, |chunk| {
            self.all_as_json(
                contact_custom_value::Entity::find()
                    .filter(contact_custom_value::Column::ContactId.is_in(chunk)),
                &[(contact_custom_value::Column::FieldId, Order::Asc)],
            )
        })
        .await
    }

    pub async fn custom_fields_by_ids(
        &self,
        ids: &[String],
    ) -> Result<Vec<custom_field::Model>, StoreError> {
        chunked(ids, |chunk| {
            self.all_as_json(
                custom_field::Entity::find().filter(custom_field::Column::Id.is_in(chunk)),
                &[(custom_field::Column::Id, Order::Asc)],
            )
        })
        .await
    }

    /// Users by (location id, user id).
    pub async fn users_by_keys(
        &self,
        keys: &[(String, String)],
    ) -> Result<Vec<user::Model>, StoreError> {
        let mut locations: Vec<String> = keys.iter().map(|(l, _)| l.clone()).collect();
        locations.sort();
        locations.dedup();
        let ids: Vec<String> = keys.iter().map(|(_, u)| u.clone()).collect();
        let wanted: std::collections::HashSet<&(String, String)> = keys.iter().collect();
        let rows = chunked(&ids, |chunk| {
            self.all_as_json(
                user::Entity::find()
                    .filter(user::Column::LocationId.is_in(locations.clone()))
                    .filter(user::Column::Id.is_in(chunk))
                    .filter(user::Column::Deleted.eq(false)),
                &[(user::Column::Id, Order::Asc)],
            )
        })
        .await?;
        Ok(rows
            .into_iter()
            .filter(|u| wanted.contains(&(u.location_id.clone(), u.id.clone())))
            .collect())
    }

    pub async fn users_of_location(
        &self,
        location_id: &str,
    ) -> Result<Vec<user::Model>, StoreError> {
        Ok(user::Entity::find()
            .filter(user::Column::LocationId.eq(location_id))
            .filter(user::Column::Deleted.eq(false))
            .order_by_asc(user::Column::Name)
            .all(&self.db)
            .await?)
    }

    pub async fn pipelines_by_ids(
        &self,
        ids: &[String],
    ) -> Result<Vec<pipeline::Model>, StoreError> {
        chunked(ids, |chunk| {
            self.all_as_json(
                pipeline::Entity::find()
                    .filter(pipeline::Column::Id.is_in(chunk))
                    .filter(pipeline::Column::Deleted.eq(false)),
                &[
                    (pipeline::Column::Name, Order::Asc),
                    (pipeline::Column::Id, Order::Asc),
                ],
            )
        })
        .await
    }

    pub async fn pipelines_by_locations(
        &self,
        location_ids: &[String],
    ) -> Result<Vec<pipeline::Model>, StoreError> {
        chunked(location_ids, |chunk| {
            self.all_as_json(
                pipeline::Entity::find()
                    .filter(pipeline::Column::LocationId.is_in(chunk))
                    .filter(pipeline::Column::Deleted.eq(false)),
                &[
                    (pipeline::Column::Name, Order::Asc),
                    (pipeline::Column::Id, Order::Asc),
                ],
            )
        })
        .await
    }

    pub async fn stages_by_ids(
        &self,
        ids: &[String],
    ) -> Result<Vec<pipeline_stage::Model>, StoreError> {
        chunked(ids, |chunk| {
            self.all_as_json(
                pipeline_stage::Entity::find()
                    .filter(pipeline_stage::Column::Id.is_in(chunk))
                    .filter(pipeline_stage::Column::Deleted.eq(false)),
                &[
                    (pipeline_stage::Column::Position, Order::Asc),
                    (pipeline_stage::Column::Id, Order::Asc),
                ],
            )
        })
        .await
    }

    pub async fn stages_by_pipelines(
        &self,
        pipeline_ids: &[String],
    ) -> Result<Vec<pipeline_stage::Model>, StoreError> {
        chunked(pipeline_ids, |chunk| {
            self.all_as_json(
                pipeline_stage::Entity::find()
                    .filter(pipeline_stage::Column::PipelineId.is_in(chunk))
                    .filter(pipeline_stage::Column::Deleted.eq(false)),
                &[
                    (pipeline_stage::Column::Position, Order::Asc),
                    (pipeline_stage::Column::Id, Order::Asc),
                ],
            )
        })
        .await
    }

    /// The last successful sync, the number of active jobs and the credential status of each
    /// location, in one statement.
    pub async fn freshness(
        &self,
        location_ids: &[String],
    ) -> Result<HashMap<String, Freshness>, StoreError> {
        let backend = self.backend();
        let rows = chunked(location_ids, |chunk| {
            let select = Query::select()
                .expr_as(Expr::col(("l", "id")), "location_id")
                .expr_as(Expr::col(("l", "auth_error")), "auth_error")
                // A job before migration 7 recorded no `synced_at`: its mark (the start of its
                // first attempt) is the latest time all its data can be said to be read at.
                .expr_as(
                    Expr::cust(format!(
                        "MAX(CASE WHEN j.state = '{}' THEN COALESCE(j.synced_at, j.mark) END)",
                        job_state_name(JobState::Succeeded)
                    )),
                    "synced_at",
                )
                .expr_as(
                    Expr::cust(format!(
                        "COALESCE(SUM(CASE WHEN j.state IN ('{}', '{}') THEN 1 ELSE 0 END), 0)",
                        job_state_name(JobState::Queued),
                        job_state_name(JobState::Running)
                    )),
                    "active",
                )
                .from_as("locations", "l")
                .join_as(
                    JoinType::LeftJoin,
                    "sync_jobs",
                    "j",
                    Expr::col(("j", "location_id")).equals(("l", "id")),
                )
                .and_where(Expr::col(("l", "id")).is_in(chunk))
                .group_by_columns([("l", "id"), ("l", "auth_error")])
                .to_owned();
            let direct = self.read_direct_rows(&select, usize::MAX, |row| {
                Ok(Freshness {
                    location_id: row.get(0)?,
                    auth_error: row.get(1)?,
                    synced_at: row.get(2)?,
                    active: row.get(3)?,
                })
            });
            async move {
                match direct {
                    Some(rows) => Ok(rows),
                    None => {
                        Freshness::find_by_statement(backend.build(&select))
                            .all(&self.db)
                            .await
                    }
                }
            }
        })
        .await?;
        Ok(rows
            .into_iter()
            .map(|f| (f.location_id.clone(), f))
            .collect())
    }
}

use super::entities::conversation;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_patterns_escape_wildcards() {
        let p = like_pattern("50%_OFF\\");
        assert_eq!(
            format!("{p:?}"),
            format!("{:?}", LikeExpr::new("%50\\%\\_off\\\\%").escape('\\'))
        );
    }

    #[test]
    fn keys_fit_their_orders() {
        let t = ContactKey::Time {
            at: 1,
            id: "a".into(),
        };
        let n = ContactKey::Name {
            name: "a".into(),
            id: "a".into(),
        };
        assert!(t.fits(ContactOrderField::DateAdded) && t.fits(ContactOrderField::DateUpdated));
        assert!(!t.fits(ContactOrderField::Name));
        assert!(n.fits(ContactOrderField::Name) && !n.fits(ContactOrderField::DateAdded));
    }
}
