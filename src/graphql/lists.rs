//! Location-wide lists beside `contacts`: the `tasks` and `opportunities` connections (keyset
//! cursors, filters, `totalCount`, `freshness`), and the opportunity summaries of pipelines and
//! stages (`count` and summed `monetaryValue`, one `GROUP BY` per request).
//!
//! The connections follow `contacts` step by step: the caller's scope first (an unreadable
//! location is `NOT_FOUND`), the read noted for the response cache, the read policy, then one
//! statement for the page. A page's nested data (`contact`, `assignedTo`, `pipeline`, `stage`,
//! and the contact's own relations) is prefetched from the selection, one batch per relation, so
//! the statements per request do not grow with the page.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_graphql::dataloader::Loader;
use async_graphql::{Context, Enum, ID, InputObject, Lookahead, Object, SimpleObject};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::auth::{known_location, require_location};
use super::error::{ApiError, ApiResult};
use super::loaders::{CacheLoader, ContactId, PipelineId, StageId, StagesOf, UserKey};
use super::prefetch::{Via, load_all};
use super::query::{DEFAULT_PAGE, MAX_PAGE, OrderDirection, PageInfo};
use super::reads;
use super::types::{Freshness, Opportunity, OpportunityStatus, Task, loader};
use crate::domain::to_ms;
use crate::store::entities::{contact, opportunity, task};
use crate::store::{self, ListKey, ListOrder, SortDirection, Store, StoreError, SummaryBy};

#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum TaskOrderField {
    /// The due date; tasks without one come last in either direction.
    DueDate,
    /// When the task was created; tasks without the date come last.
    DateAdded,
}

/// The order of a tasks page (default: soonest due first).
#[derive(InputObject, Clone, Debug)]
pub struct TaskOrder {
    #[graphql(default_with = "TaskOrderField::DueDate")]
    pub field: TaskOrderField,
    #[graphql(default_with = "OrderDirection::Asc")]
    pub direction: OrderDirection,
}

/// Filters of a tasks page; all given filters must hold.
#[derive(InputObject, Clone, Debug, Default)]
pub struct TaskFilter {
    /// Only completed (true) or only open (false) tasks.
    pub completed: Option<bool>,
    /// Tasks due strictly before this time. Tasks without a due date never match a date filter.
    pub due_before: Option<DateTime<Utc>>,
    /// Tasks due at or after this time, so that `dueAfter: D, dueBefore: D + 1 day` is one day.
    pub due_after: Option<DateTime<Utc>>,
    /// Tasks assigned to this user.
    pub assigned_to: Option<ID>,
}

#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum OpportunityOrderField {
    UpdatedAt,
    CreatedAt,
    /// The monetary value; opportunities without one come last in either direction.
    MonetaryValue,
}

/// The order of an opportunities page (default: most recently updated first).
#[derive(InputObject, Clone, Debug)]
pub struct OpportunityOrder {
    #[graphql(default_with = "OpportunityOrderField::UpdatedAt")]
    pub field: OpportunityOrderField,
    #[graphql(default_with = "OrderDirection::Desc")]
    pub direction: OrderDirection,
}

/// Filters of an opportunities page; all given filters must hold.
#[derive(InputObject, Clone, Debug, Default)]
pub struct OpportunityFilter {
    /// Opportunities in this pipeline.
    pub pipeline_id: Option<ID>,
    /// Opportunities in this stage. With `pipelineId`, the stage must be one of its stages.
    pub stage_id: Option<ID>,
    pub status: Option<OpportunityStatus>,
    /// Opportunities assigned to this user.
    pub assigned_to: Option<ID>,
}

/// GHL's word for a status, as the cache holds it.
pub(super) fn status_word(status: OpportunityStatus) -> &'static str {
    match status {
        OpportunityStatus::Open => "open",
        OpportunityStatus::Won => "won",
        OpportunityStatus::Lost => "lost",
        OpportunityStatus::Abandoned => "abandoned",
    }
}

fn direction(d: OrderDirection) -> SortDirection {
    match d {
        OrderDirection::Asc => SortDirection::Asc,
        OrderDirection::Desc => SortDirection::Desc,
    }
}

impl TaskOrder {
    fn to_store(&self) -> ListOrder<store::TaskOrderField> {
        ListOrder {
            field: match self.field {
                TaskOrderField::DueDate => store::TaskOrderField::DueDate,
                TaskOrderField::DateAdded => store::TaskOrderField::DateAdded,
            },
            direction: direction(self.direction),
        }
    }
}

impl OpportunityOrder {
    fn to_store(&self) -> ListOrder<store::OpportunityOrderField> {
        ListOrder {
            field: match self.field {
                OpportunityOrderField::UpdatedAt => store::OpportunityOrderField::UpdatedAt,
                OpportunityOrderField::CreatedAt => store::OpportunityOrderField::CreatedAt,
                OpportunityOrderField::MonetaryValue => store::OpportunityOrderField::MonetaryValue,
            },
            direction: direction(self.direction),
        }
    }
}

impl TaskFilter {
    fn to_store(&self) -> ApiResult<store::TaskFilter> {
        if let (Some(after), Some(before)) = (self.due_after, self.due_before)
            && after > before
        {
            return Err(ApiError::BadUserInput(format!(
                "`dueAfter` ({after}) is later than `dueBefore` ({before}): no task can match"
            )));
        }
        Ok(store::TaskFilter {
            completed: self.completed,
            due_before: self.due_before.map(to_ms),
            due_after: self.due_after.map(to_ms),
            assigned_to: self.assigned_to.as_ref().map(|id| id.0.clone()),
        })
    }
}

impl OpportunityFilter {
    fn to_store(&self) -> ApiResult<store::OpportunityFilter> {
        for (name, id) in [
            ("pipelineId", &self.pipeline_id),
            ("stageId", &self.stage_id),
        ] {
            if id.as_ref().is_some_and(|id| id.trim().is_empty()) {
                return Err(ApiError::BadUserInput(format!(
                    "`{name}` must not be empty"
                )));
            }
        }
        Ok(store::OpportunityFilter {
            pipeline_id: self.pipeline_id.as_ref().map(|id| id.0.clone()),
            stage_id: self.stage_id.as_ref().map(|id| id.0.clone()),
            status: self.status.map(|s| status_word(s).to_owned()),
            assigned_to: self.assigned_to.as_ref().map(|id| id.0.clone()),
        })
    }
}

/// An opaque keyset cursor: the list and order it belongs to, and the position in it.
#[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
struct Cursor<F> {
    /// `t` for tasks, `o` for opportunities: a cursor of one list is refused by the other.
    l: char,
    f: F,
    d: SortDirection,
    k: ListKey,
}

fn encode_cursor<F: Serialize>(list: char, order: ListOrder<F>, key: ListKey) -> String {
    let cursor = Cursor {
        l: list,
        f: order.field,
        d: order.direction,
        k: key,
    };
    // Serializing plain data into a Vec cannot fail.
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(&cursor).unwrap_or_default())
}

fn decode_cursor<F: DeserializeOwned + PartialEq>(
    text: &str,
    list: char,
    order: ListOrder<F>,
    fits: impl Fn(&ListKey) -> bool,
) -> ApiResult<ListKey> {
    let malformed =
        || ApiError::BadUserInput(format!("`after` is not a cursor of this list: {text:?}"));
    let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|_| malformed())?;
    let cursor: Cursor<F> = serde_json::from_slice(&bytes).map_err(|_| malformed())?;
    if cursor.l != list {
        return Err(malformed());
    }
    if cursor.f != order.field || cursor.d != order.direction || !fits(&cursor.k) {
        return Err(ApiError::BadUserInput(
            "`after` is a cursor of another ordering: pass the same `orderBy` as the page it came from"
                .into(),
        ));
    }
    Ok(cursor.k)
}

/// Checks `first` and `maxAge` as `contacts` does.
fn check_page(first: i32, max_age: Option<i32>) -> ApiResult<()> {
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
    Ok(())
}

/// The caller's scope, the read noted, the location known, the read policy applied: what every
/// location-wide list does before it reads its page.
async fn before_page(ctx: &Context<'_>, location_id: &str, max_age: Option<i32>) -> ApiResult<()> {
    require_location(ctx, location_id)?;
    let store = ctx.data_unchecked::<Store>();
    reads::location(ctx, location_id);
    known_location(store, location_id).await?;
    let fed = super::read_policy::apply(ctx, location_id, max_age).await?;
    if !fed && ctx.look_ahead().field("freshness").exists() {
        super::read_policy::prefetch_freshness(ctx, location_id).await?;
    }
    Ok(())
}

/// Whether a page's nested data was prefetched already (by `edges` or `nodes`): the first
/// prefetch reads the store, a second one finds it in the loader's cache.
struct Prefetched(AtomicBool);

impl Prefetched {
    fn new() -> Self {
        Self(AtomicBool::new(false))
    }
    fn via(&self) -> Via {
        if self.0.swap(true, Ordering::Relaxed) {
            Via::Cache
        } else {
            Via::Store
        }
    }
}

/// Prefetches the contacts that `selection` (a `Task` or `Opportunity` selection) asks of
/// `contact_ids`, and what it asks of those contacts.
async fn prefetch_contacts(
    ctx: &Context<'_>,
    contact_ids: impl Iterator<Item = String>,
    selection: Lookahead<'_>,
    via: Via,
) -> ApiResult<()> {
    if !selection.exists() {
        return Ok(());
    }
    let found: Vec<Option<Arc<contact::Model>>> =
        load_all(loader(ctx), via, contact_ids.map(ContactId)).await?;
    let contacts: Vec<Arc<contact::Model>> = found
        .into_iter()
        .flatten()
        .filter(|c| super::auth::may_read(ctx, &c.location_id))
        .collect();
    super::prefetch::contacts(ctx, &contacts, selection, via).await
}

fn user_keys<'a>(
    rows: impl Iterator<Item = (&'a String, &'a Option<String>)>,
) -> impl Iterator<Item = UserKey> {
    rows.filter_map(|(location_id, user_id)| {
        user_id.as_ref().map(|u| UserKey {
            location_id: location_id.clone(),
            user_id: u.clone(),
        })
    })
}

async fn prefetch_tasks(
    ctx: &Context<'_>,
    tasks: &[Arc<task::Model>],
    selection: Lookahead<'_>,
    via: Via,
) -> ApiResult<()> {
    if tasks.is_empty() || !selection.exists() {
        return Ok(());
    }
    let users = selection.field("assignedTo");
    futures::try_join!(
        prefetch_contacts(
            ctx,
            tasks.iter().filter_map(|t| t.contact_id.clone()),
            selection.field("contact"),
            via,
        ),
        async {
            if users.exists() {
                let keys = user_keys(tasks.iter().map(|t| (&t.location_id, &t.assigned_to)));
                load_all::<_, Option<Arc<store::entities::user::Model>>>(loader(ctx), via, keys)
                    .await?;
            }
            Ok(())
        },
    )?;
    Ok(())
}

async fn prefetch_opportunities(
    ctx: &Context<'_>,
    rows: &[Arc<opportunity::Model>],
    selection: Lookahead<'_>,
    via: Via,
) -> ApiResult<()> {
    if rows.is_empty() || !selection.exists() {
        return Ok(());
    }
    let loader = loader(ctx);
    let pipeline = selection.field("pipeline");
    futures::try_join!(
        prefetch_contacts(
            ctx,
            rows.iter().filter_map(|o| o.contact_id.clone()),
            selection.field("contact"),
            via,
        ),
        async {
            if selection.field("assignedTo").exists() {
                let keys = user_keys(rows.iter().map(|o| (&o.location_id, &o.assigned_to)));
                load_all::<_, Option<Arc<store::entities::user::Model>>>(loader, via, keys).await?;
            }
            Ok(())
        },
        async {
            if selection.field("stage").exists() {
                let keys = rows.iter().filter_map(|o| o.stage_id.clone().map(StageId));
                load_all::<_, Option<Arc<store::entities::pipeline_stage::Model>>>(
                    loader, via, keys,
                )
                .await?;
            }
            Ok(())
        },
        async {
            if pipeline.exists() {
                let keys = rows
                    .iter()
                    .filter_map(|o| o.pipeline_id.clone().map(PipelineId));
                let found: Vec<Option<Arc<store::entities::pipeline::Model>>> =
                    load_all(loader, via, keys).await?;
                if pipeline.field("stages").exists() {
                    let stages = found.iter().flatten().map(|p| StagesOf(p.id.clone()));
                    load_all::<_, Vec<Arc<store::entities::pipeline_stage::Model>>>(
                        loader, via, stages,
                    )
                    .await?;
                }
            }
            Ok(())
        },
    )?;
    Ok(())
}

#[derive(SimpleObject)]
pub struct TaskEdge {
    pub cursor: String,
    pub node: Task,
}

/// A page of a location's tasks.
pub struct TaskConnection {
    location_id: String,
    filter: store::TaskFilter,
    edges: Vec<(String, Arc<task::Model>)>,
    has_next_page: bool,
    prefetched: Prefetched,
}

impl TaskConnection {
    fn rows(&self) -> Vec<Arc<task::Model>> {
        self.edges.iter().map(|(_, t)| t.clone()).collect()
    }
}

#[Object]
impl TaskConnection {
    async fn edges(&self, ctx: &Context<'_>) -> ApiResult<Vec<TaskEdge>> {
        let selection = ctx.look_ahead().field("node");
        prefetch_tasks(ctx, &self.rows(), selection, self.prefetched.via()).await?;
        Ok(self
            .edges
            .iter()
            .map(|(cursor, t)| TaskEdge {
                cursor: cursor.clone(),
                node: Task(t.clone()),
            })
            .collect())
    }
    async fn nodes(&self, ctx: &Context<'_>) -> ApiResult<Vec<Task>> {
        prefetch_tasks(ctx, &self.rows(), ctx.look_ahead(), self.prefetched.via()).await?;
        Ok(self.edges.iter().map(|(_, t)| Task(t.clone())).collect())
    }
    async fn page_info(&self) -> PageInfo {
        PageInfo {
            has_next_page: self.has_next_page,
            end_cursor: self.edges.last().map(|(cursor, _)| cursor.clone()),
        }
    }
    /// Tasks matching the filter in the whole location (not just this page).
    async fn total_count(&self, ctx: &Context<'_>) -> ApiResult<u64> {
        let store = ctx.data_unchecked::<Store>();
        Ok(store.count_tasks(&self.location_id, &self.filter).await?)
    }
    async fn freshness(&self, ctx: &Context<'_>) -> ApiResult<Freshness> {
        Freshness::of(ctx, &self.location_id).await
    }
}

#[derive(SimpleObject)]
pub struct OpportunityEdge {
    pub cursor: String,
    pub node: Opportunity,
}

/// A page of a location's opportunities.
pub struct OpportunityConnection {
    location_id: String,
    filter: store::OpportunityFilter,
    edges: Vec<(String, Arc<opportunity::Model>)>,
    has_next_page: bool,
    prefetched: Prefetched,
}

impl OpportunityConnection {
    fn rows(&self) -> Vec<Arc<opportunity::Model>> {
        self.edges.iter().map(|(_, o)| o.clone()).collect()
    }
}

#[Object]
impl OpportunityConnection {
    async fn edges(&self, ctx: &Context<'_>) -> ApiResult<Vec<OpportunityEdge>> {
        let selection = ctx.look_ahead().field("node");
        prefetch_opportunities(ctx, &self.rows(), selection, self.prefetched.via()).await?;
        Ok(self
            .edges
            .iter()
            .map(|(cursor, o)| OpportunityEdge {
                cursor: cursor.clone(),
                node: Opportunity(o.clone()),
            })
            .collect())
    }
    async fn nodes(&self, ctx: &Context<'_>) -> ApiResult<Vec<Opportunity>> {
        prefetch_opportunities(ctx, &self.rows(), ctx.look_ahead(), self.prefetched.via()).await?;
        Ok(self
            .edges
            .iter()
            .map(|(_, o)| Opportunity(o.clone()))
            .collect())
    }
    async fn page_info(&self) -> PageInfo {
        PageInfo {
            has_next_page: self.has_next_page,
            end_cursor: self.edges.last().map(|(cursor, _)| cursor.clone()),
        }
    }
    /// Opportunities matching the filter in the whole location (not just this page).
    async fn total_count(&self, ctx: &Context<'_>) -> ApiResult<u64> {
        let store = ctx.data_unchecked::<Store>();
        Ok(store
            .count_opportunities(&self.location_id, &self.filter)
            .await?)
    }
    async fn freshness(&self, ctx: &Context<'_>) -> ApiResult<Freshness> {
        Freshness::of(ctx, &self.location_id).await
    }
}

/// `Query.tasks`: a page of a location's tasks.
pub(super) async fn tasks(
    ctx: &Context<'_>,
    location_id: ID,
    first: Option<i32>,
    after: Option<String>,
    filter: Option<TaskFilter>,
    order_by: Option<TaskOrder>,
    max_age: Option<i32>,
) -> ApiResult<TaskConnection> {
    let first = first.unwrap_or(DEFAULT_PAGE);
    check_page(first, max_age)?;
    let order = order_by.map(|o| o.to_store()).unwrap_or_default();
    let after = after
        .as_deref()
        .map(|c| decode_cursor(c, 't', order, ListKey::fits_task))
        .transpose()?;
    let filter = filter.unwrap_or_default().to_store()?;
    before_page(ctx, &location_id, max_age).await?;
    let store = ctx.data_unchecked::<Store>();
    let mut rows = store
        .tasks_page(
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
        .map(|t| {
            (
                encode_cursor('t', order, ListKey::of_task(&t, order)),
                Arc::new(t),
            )
        })
        .collect();
    Ok(TaskConnection {
        location_id: location_id.0,
        filter,
        edges,
        has_next_page,
        prefetched: Prefetched::new(),
    })
}

/// `Query.opportunities`: a page of a location's opportunities.
pub(super) async fn opportunities(
    ctx: &Context<'_>,
    location_id: ID,
    first: Option<i32>,
    after: Option<String>,
    filter: Option<OpportunityFilter>,
    order_by: Option<OpportunityOrder>,
    max_age: Option<i32>,
) -> ApiResult<OpportunityConnection> {
    let first = first.unwrap_or(DEFAULT_PAGE);
    check_page(first, max_age)?;
    let order = order_by.map(|o| o.to_store()).unwrap_or_default();
    let after = after
        .as_deref()
        .map(|c| decode_cursor(c, 'o', order, |k| k.fits_opportunity(order.field)))
        .transpose()?;
    let filter = filter.unwrap_or_default().to_store()?;
    before_page(ctx, &location_id, max_age).await?;
    if let (Some(pipeline_id), Some(stage_id)) = (&filter.pipeline_id, &filter.stage_id) {
        let stage = loader(ctx)
            .load_one(StageId(stage_id.clone()))
            .await?
            .flatten();
        let elsewhere = stage.filter(|s| {
            &s.pipeline_id != pipeline_id && super::auth::may_read(ctx, &s.location_id)
        });
        if let Some(stage) = elsewhere {
            return Err(ApiError::BadUserInput(format!(
                "stage {:?} is in pipeline {:?}, not in `pipelineId` {pipeline_id:?}",
                stage.id, stage.pipeline_id
            )));
        }
    }
    let store = ctx.data_unchecked::<Store>();
    let mut rows = store
        .opportunities_page(
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
        .map(|o| {
            let key = ListKey::of_opportunity(&o, order);
            (encode_cursor('o', order, key), Arc::new(o))
        })
        .collect();
    Ok(OpportunityConnection {
        location_id: location_id.0,
        filter,
        edges,
        has_next_page,
        prefetched: Prefetched::new(),
    })
}

/// The opportunities of a stage or pipeline, summed in the database.
#[derive(SimpleObject, Clone, Debug, Default, PartialEq)]
pub struct OpportunitySummary {
    /// How many opportunities.
    pub count: i64,
    /// The sum of their `monetaryValue`, those without a value counting as 0.
    pub monetary_value: f64,
}

/// The summary of one stage's (or pipeline's) opportunities with one status (or any), counted
/// in the stage's own location.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SummaryOf {
    pub by: SummaryBy,
    pub location_id: String,
    pub id: String,
    pub status: Option<&'static str>,
}

/// The locations and the stage (or pipeline) ids of one statement of summaries.
type LocationsAndIds = (Vec<String>, Vec<String>);

impl Loader<SummaryOf> for CacheLoader {
    type Value = OpportunitySummary;
    type Error = Arc<StoreError>;
    async fn load(
        &self,
        keys: &[SummaryOf],
    ) -> Result<HashMap<SummaryOf, OpportunitySummary>, Self::Error> {
        // One statement per grouping and status asked in the batch (a page asks one).
        let mut groups: HashMap<(SummaryBy, Option<&'static str>), LocationsAndIds> =
            HashMap::new();
        for key in keys {
            let (locations, ids) = groups.entry((key.by, key.status)).or_default();
            if !locations.contains(&key.location_id) {
                locations.push(key.location_id.clone());
            }
            ids.push(key.id.clone());
        }
        let mut found: HashMap<SummaryOf, OpportunitySummary> = keys
            .iter()
            .map(|k| (k.clone(), OpportunitySummary::default()))
            .collect();
        for ((by, status), (locations, ids)) in groups {
            let rows = self
                .store()
                .opportunity_summaries(by, &locations, &ids, status)
                .await?;
            for row in rows {
                let key = SummaryOf {
                    by,
                    location_id: row.location_id,
                    id: row.group_id,
                    status,
                };
                // Only the keys asked for: a location asked for one stage has rows of others.
                if !found.contains_key(&key) {
                    continue;
                }
                found.insert(
                    key,
                    OpportunitySummary {
                        count: row.count,
                        monetary_value: row.monetary_value,
                    },
                );
            }
        }
        Ok(found)
    }
}

/// The summary behind `PipelineStage.summary` and `Pipeline.summary`.
pub(super) async fn summary(
    ctx: &Context<'_>,
    by: SummaryBy,
    location_id: &str,
    id: &str,
    status: Option<OpportunityStatus>,
) -> ApiResult<OpportunitySummary> {
    let key = SummaryOf {
        by,
        location_id: location_id.to_owned(),
        id: id.to_owned(),
        status: status.map(status_word),
    };
    Ok(loader(ctx).load_one(key).await?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SortValue;

    #[test]
    fn cursors_round_trip_and_refuse_other_lists_and_orders() {
        let order = ListOrder::<store::TaskOrderField>::default();
        let key = ListKey {
            v: SortValue::Int(42),
            id: "t1".into(),
        };
        let text = encode_cursor('t', order, key.clone());
        assert_eq!(
            decode_cursor(&text, 't', order, ListKey::fits_task).unwrap(),
            key
        );
        let by_added = ListOrder {
            field: store::TaskOrderField::DateAdded,
            ..order
        };
        assert!(matches!(
            decode_cursor(&text, 't', by_added, ListKey::fits_task),
            Err(ApiError::BadUserInput(_))
        ));
        let opportunities = ListOrder::<store::OpportunityOrderField>::default();
        assert!(matches!(
            decode_cursor(&text, 'o', opportunities, |_| true),
            Err(ApiError::BadUserInput(_))
        ));
        assert!(matches!(
            decode_cursor("not a cursor!", 't', order, ListKey::fits_task),
            Err(ApiError::BadUserInput(_))
        ));
    }

    #[test]
    fn a_date_range_that_cannot_match_is_refused() {
        let now = Utc::now();
        let filter = TaskFilter {
            due_after: Some(now),
            due_before: Some(now - chrono::Duration::days(1)),
            ..TaskFilter::default()
        };
        assert!(matches!(filter.to_store(), Err(ApiError::BadUserInput(_))));
    }
}
