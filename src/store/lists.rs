//! Location-wide lists of tasks and opportunities (keyset pages, counts) and the per-stage and
//! per-pipeline sums of opportunities, computed with `GROUP BY` in the database.
//!
//! Sort columns that may be NULL (a task without a due date, an opportunity without a value) are
//! ordered through `COALESCE(column, sentinel)`, the sentinel chosen by direction so that rows
//! without a value come last either way. SQLite and PostgreSQL order NULLs differently; the
//! sentinel makes both agree, and lets a cursor name every row's position. Deleted rows are never
//! returned.

use sea_orm::sea_query::{Expr, ExprTrait, Func, Order, Query};
use sea_orm::{
    ColumnTrait, Condition, EntityTrait, FromQueryResult, PaginatorTrait, QueryFilter, QueryOrder,
    QuerySelect,
};

use super::entities::{opportunity, task};
use super::read::{SortDirection, chunked};
use super::{Store, StoreError};

/// The keyset orders of a tasks page.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum TaskOrderField {
    /// The due date; tasks without one come last.
    DueDate,
    /// When the task was created in GHL; tasks without the date come last.
    DateAdded,
}

/// The keyset orders of an opportunities page.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum OpportunityOrderField {
    UpdatedAt,
    CreatedAt,
    /// The monetary value; opportunities without one come last.
    MonetaryValue,
}

/// The order of a list page: a field and a direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListOrder<F> {
    pub field: F,
    pub direction: SortDirection,
}

impl Default for ListOrder<TaskOrderField> {
    /// The soonest due first, as a to-do list reads.
    fn default() -> Self {
        Self {
            field: TaskOrderField::DueDate,
            direction: SortDirection::Asc,
        }
    }
}

impl Default for ListOrder<OpportunityOrderField> {
    /// The most recently updated first.
    fn default() -> Self {
        Self {
            field: OpportunityOrderField::UpdatedAt,
            direction: SortDirection::Desc,
        }
    }
}

/// A row's sort value in a list order, NULL already replaced by its sentinel.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
pub enum SortValue {
    Int(i64),
    Float(f64),
}

/// The position of a row in a list order: its sort value and its id (the tie-breaker).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ListKey {
    pub v: SortValue,
    pub id: String,
}

/// What a sort column holds, for its sentinel and for checking a cursor's value.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Int,
    Float,
}

/// The value NULL sorts as in `direction`: after every real value.
fn sentinel(kind: Kind, direction: SortDirection) -> SortValue {
    match (kind, direction) {
        (Kind::Int, SortDirection::Asc) => SortValue::Int(i64::MAX),
        (Kind::Int, SortDirection::Desc) => SortValue::Int(i64::MIN),
        (Kind::Float, SortDirection::Asc) => SortValue::Float(f64::MAX),
        (Kind::Float, SortDirection::Desc) => SortValue::Float(f64::MIN),
    }
}

fn value_expr(v: SortValue) -> Expr {
    match v {
        SortValue::Int(i) => Expr::val(i),
        SortValue::Float(f) => Expr::val(f),
    }
}

/// `COALESCE(column, sentinel)`, the expression a list is ordered by.
fn sort_expr(column: Expr, kind: Kind, direction: SortDirection) -> Expr {
    Func::coalesce([column, value_expr(sentinel(kind, direction))]).into()
}

fn order_of(direction: SortDirection) -> Order {
    match direction {
        SortDirection::Asc => Order::Asc,
        SortDirection::Desc => Order::Desc,
    }
}

/// `(sort, id)` after `key` in `direction`.
fn after_key(sort: Expr, id: Expr, key: &ListKey, direction: SortDirection) -> Expr {
    let here = Expr::tuple([sort, id]);
    let there = Expr::tuple([value_expr(key.v), Expr::val(key.id.clone())]);
    match direction {
        SortDirection::Asc => here.gt(there),
        SortDirection::Desc => here.lt(there),
    }
}

impl TaskOrderField {
    fn column(self) -> task::Column {
        match self {
            TaskOrderField::DueDate => task::Column::DueDate,
            TaskOrderField::DateAdded => task::Column::DateAdded,
        }
    }
}

impl OpportunityOrderField {
    fn column(self) -> opportunity::Column {
        match self {
            OpportunityOrderField::UpdatedAt => opportunity::Column::UpdatedAt,
            OpportunityOrderField::CreatedAt => opportunity::Column::CreatedAt,
            OpportunityOrderField::MonetaryValue => opportunity::Column::MonetaryValue,
        }
    }

    fn kind(self) -> Kind {
        match self {
            OpportunityOrderField::MonetaryValue => Kind::Float,
            _ => Kind::Int,
        }
    }
}

impl ListKey {
    /// The key of task `t` in `order`.
    pub fn of_task(t: &task::Model, order: ListOrder<TaskOrderField>) -> Self {
        let value = match order.field {
            TaskOrderField::DueDate => t.due_date,
            TaskOrderField::DateAdded => t.date_added,
        };
        Self {
            v: value
                .map(SortValue::Int)
                .unwrap_or_else(|| sentinel(Kind::Int, order.direction)),
            id: t.id.clone(),
        }
    }

    /// The key of opportunity `o` in `order`.
    pub fn of_opportunity(o: &opportunity::Model, order: ListOrder<OpportunityOrderField>) -> Self {
        let kind = order.field.kind();
        let value = match order.field {
            OpportunityOrderField::UpdatedAt => o.updated_at.map(SortValue::Int),
            OpportunityOrderField::CreatedAt => o.created_at.map(SortValue::Int),
            OpportunityOrderField::MonetaryValue => o.monetary_value.map(SortValue::Float),
        };
        Self {
            v: value.unwrap_or_else(|| sentinel(kind, order.direction)),
            id: o.id.clone(),
        }
    }

    /// Whether this key can be a position in a task order.
    pub fn fits_task(&self) -> bool {
        matches!(self.v, SortValue::Int(_))
    }

    /// Whether this key can be a position in `field` order of opportunities.
    pub fn fits_opportunity(&self, field: OpportunityOrderField) -> bool {
        match self.v {
            // A whole money value may come back from JSON as an integer: any order takes one.
            SortValue::Int(_) => true,
            SortValue::Float(_) => field.kind() == Kind::Float,
        }
    }

    /// The key with its value as the column's kind (a whole money value decodes as `Int`).
    fn as_kind(&self, kind: Kind) -> Self {
        let v = match (kind, self.v) {
            (Kind::Float, SortValue::Int(i)) => SortValue::Float(i as f64),
            (_, v) => v,
        };
        Self {
            v,
            id: self.id.clone(),
        }
    }
}

/// Filters of a tasks list; all given filters must hold.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TaskFilter {
    pub completed: Option<bool>,
    /// Tasks due before this time (ms), exclusive; undated tasks never match.
    pub due_before: Option<i64>,
    /// Tasks due at or after this time (ms); undated tasks never match.
    pub due_after: Option<i64>,
    pub assigned_to: Option<String>,
}

/// Filters of an opportunities list; all given filters must hold.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OpportunityFilter {
    pub pipeline_id: Option<String>,
    pub stage_id: Option<String>,
    /// GHL's status word: `open`, `won`, `lost` or `abandoned`.
    pub status: Option<String>,
    pub assigned_to: Option<String>,
}

fn task_condition(location_id: &str, filter: &TaskFilter) -> Condition {
    let mut cond = Condition::all()
        .add(task::Column::LocationId.eq(location_id))
        .add(task::Column::Deleted.eq(false));
    if let Some(completed) = filter.completed {
        cond = cond.add(task::Column::Completed.eq(completed));
    }
    if let Some(before) = filter.due_before {
        cond = cond.add(task::Column::DueDate.lt(before));
    }
    if let Some(after) = filter.due_after {
        cond = cond.add(task::Column::DueDate.gte(after));
    }
    if let Some(user) = &filter.assigned_to {
        cond = cond.add(task::Column::AssignedTo.eq(user.as_str()));
    }
    cond
}

fn opportunity_condition(location_id: &str, filter: &OpportunityFilter) -> Condition {
    let mut cond = Condition::all()
        .add(opportunity::Column::LocationId.eq(location_id))
        .add(opportunity::Column::Deleted.eq(false));
    if let Some(pipeline) = &filter.pipeline_id {
        cond = cond.add(opportunity::Column::PipelineId.eq(pipeline.as_str()));
    }
    if let Some(stage) = &filter.stage_id {
        cond = cond.add(opportunity::Column::StageId.eq(stage.as_str()));
    }
    if let Some(status) = &filter.status {
        cond = cond.add(opportunity::Column::Status.eq(status.as_str()));
    }
    if let Some(user) = &filter.assigned_to {
        cond = cond.add(opportunity::Column::AssignedTo.eq(user.as_str()));
    }
    cond
}

/// What a summary groups opportunities by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SummaryBy {
    Stage,
    Pipeline,
}

/// The count and summed value of one stage's (or pipeline's) opportunities in one location.
#[derive(Clone, Debug, PartialEq, FromQueryResult)]
pub struct OpportunitySummary {
    pub location_id: String,
    /// The stage or pipeline id.
    pub group_id: String,
    pub count: i64,
    /// The sum of `monetary_value`, opportunities without a value counting as 0.
    pub monetary_value: f64,
}

impl Store {
    /// Up to `limit` tasks of a location after `after` in `order`.
    pub async fn tasks_page(
        &self,
        location_id: &str,
        filter: &TaskFilter,
        order: ListOrder<TaskOrderField>,
        after: Option<&ListKey>,
        limit: u64,
    ) -> Result<Vec<task::Model>, StoreError> {
        let sort = sort_expr(Expr::col(order.field.column()), Kind::Int, order.direction);
        let mut cond = task_condition(location_id, filter);
        if let Some(key) = after {
            cond = cond.add(after_key(
                sort.clone(),
                Expr::col(task::Column::Id),
                key,
                order.direction,
            ));
        }
        Ok(task::Entity::find()
            .filter(cond)
            .order_by(sort, order_of(order.direction))
            .order_by(task::Column::Id, order_of(order.direction))
            .limit(limit)
            .all(&self.db)
            .await?)
    }

    /// Tasks of a location matching `filter`.
    pub async fn count_tasks(
        &self,
        location_id: &str,
        filter: &TaskFilter,
    ) -> Result<u64, StoreError> {
        Ok(task::Entity::find()
            .filter(task_condition(location_id, filter))
            .count(&self.db)
            .await?)
    }

    /// Up to `limit` opportunities of a location after `after` in `order`.
    pub async fn opportunities_page(
        &self,
        location_id: &str,
        filter: &OpportunityFilter,
        order: ListOrder<OpportunityOrderField>,
        after: Option<&ListKey>,
        limit: u64,
    ) -> Result<Vec<opportunity::Model>, StoreError> {
        let kind = order.field.kind();
        let sort = sort_expr(Expr::col(order.field.column()), kind, order.direction);
        let mut cond = opportunity_condition(location_id, filter);
        if let Some(key) = after {
            cond = cond.add(after_key(
                sort.clone(),
                Expr::col(opportunity::Column::Id),
                &key.as_kind(kind),
                order.direction,
            ));
        }
        Ok(opportunity::Entity::find()
            .filter(cond)
            .order_by(sort, order_of(order.direction))
            .order_by(opportunity::Column::Id, order_of(order.direction))
            .limit(limit)
            .all(&self.db)
            .await?)
    }

    /// Opportunities of a location matching `filter`.
    pub async fn count_opportunities(
        &self,
        location_id: &str,
        filter: &OpportunityFilter,
    ) -> Result<u64, StoreError> {
        Ok(opportunity::Entity::find()
            .filter(opportunity_condition(location_id, filter))
            .count(&self.db)
            .await?)
    }

    /// The count and summed value of the opportunities of each stage (or pipeline) in `ids`,
    /// those with `status` only when given, per location of `locations` (an opportunity counts
    /// only in its own location, whatever stage id it names): one `GROUP BY` statement per
    /// [`super::IN_CHUNK`] ids. Groups without opportunities are absent.
    pub async fn opportunity_summaries(
        &self,
        by: SummaryBy,
        locations: &[String],
        ids: &[String],
        status: Option<&str>,
    ) -> Result<Vec<OpportunitySummary>, StoreError> {
        let backend = self.backend();
        let group = match by {
            SummaryBy::Stage => "stage_id",
            SummaryBy::Pipeline => "pipeline_id",
        };
        chunked(ids, |chunk| {
            let mut select = Query::select()
                .expr_as(Expr::col("location_id"), "location_id")
                .expr_as(Expr::col(group), "group_id")
                .expr_as(Expr::cust("COUNT(*)"), "count")
                // SUM of no values is NULL, and SQLite's SUM of REALs that are all whole can
                // come back as an integer: both made a double here.
                .expr_as(
                    Expr::cust("CAST(COALESCE(SUM(monetary_value), 0) AS DOUBLE PRECISION)"),
                    "monetary_value",
                )
                .from("opportunities")
                .and_where(Expr::col("location_id").is_in(locations.iter().cloned()))
                .and_where(Expr::col(group).is_in(chunk))
                .and_where(Expr::col("deleted").eq(false))
                .group_by_col("location_id")
                .group_by_col(group)
                .to_owned();
            if let Some(status) = status {
                select.and_where(Expr::col("status").eq(status));
            }
            OpportunitySummary::find_by_statement(backend.build(&select)).all(&self.db)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_values_sort_last_in_both_directions() {
        let asc = sentinel(Kind::Int, SortDirection::Asc);
        let desc = sentinel(Kind::Int, SortDirection::Desc);
        assert_eq!(asc, SortValue::Int(i64::MAX));
        assert_eq!(desc, SortValue::Int(i64::MIN));
        assert_eq!(
            sentinel(Kind::Float, SortDirection::Desc),
            SortValue::Float(f64::MIN)
        );
    }

    #[test]
    fn keys_round_trip_through_json_and_fit_their_orders() {
        let money = ListKey {
            v: SortValue::Float(1250.5),
            id: "o1".into(),
        };
        let text = serde_json::to_string(&money).unwrap();
        let back: ListKey = serde_json::from_str(&text).unwrap();
        assert_eq!(back, money);
        assert!(back.fits_opportunity(OpportunityOrderField::MonetaryValue));
        assert!(!back.fits_opportunity(OpportunityOrderField::UpdatedAt));
        assert!(!back.fits_task());
        // A whole value reads back as an integer and still positions a value order.
        let whole: ListKey = serde_json::from_str(r#"{"v":300,"id":"o2"}"#).unwrap();
        assert_eq!(
            whole.as_kind(Kind::Float).v,
            SortValue::Float(300.0),
            "{whole:?}"
        );
    }
}
