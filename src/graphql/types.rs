//! The GraphQL object types, thin views over the store's models and the sync's `domain` types
//! (jobs, stages, events). Nested fields go through the
//! [`CacheLoader`](super::loaders::CacheLoader); nothing here calls GHL or the sync.

use std::sync::Arc;

use async_graphql::{Context, Enum, ID, Json, Object, SimpleObject};
use chrono::{DateTime, Utc};

use super::Settings;
use super::auth::may_read;
use super::error::{ApiError, ApiResult};
use super::loaders::*;
use crate::domain::{self, JobSnapshot, JobState, Resource, from_ms};
use crate::store::entities::{
    contact, contact_custom_value, conversation, custom_field, location, opportunity, pipeline,
    pipeline_stage, task, user,
};
use crate::store::{self, Store};

pub(super) fn loader<'a>(ctx: &Context<'a>) -> &'a Loaders {
    // Every request gets one from the `RequestLoader` extension.
    ctx.data_unchecked::<Loaders>()
}

fn time(ms: Option<i64>) -> Option<DateTime<Utc>> {
    ms.map(from_ms)
}

async fn user_of(
    ctx: &Context<'_>,
    location_id: &str,
    user_id: Option<&str>,
) -> ApiResult<Option<User>> {
    let Some(user_id) = user_id else {
        return Ok(None);
    };
    let key = UserKey {
        location_id: location_id.to_owned(),
        user_id: user_id.to_owned(),
    };
    Ok(loader(ctx).load_one(key).await?.flatten().map(User))
}

async fn contact_of(ctx: &Context<'_>, contact_id: Option<&str>) -> ApiResult<Option<Contact>> {
    let Some(id) = contact_id else {
        return Ok(None);
    };
    // A child's contact is in the child's location; the check holds even if GHL says otherwise.
    Ok(loader(ctx)
        .load_one(ContactId(id.to_owned()))
        .await?
        .flatten()
        .filter(|c| may_read(ctx, &c.location_id))
        .map(Contact))
}

/// How old the cached data of a location is, and whether a sync is running.
#[derive(SimpleObject, Clone, Debug)]
pub struct Freshness {
    /// When the oldest data the last successful sync relied on was read from GHL (the oldest
    /// stage it kept), not when that sync finished; null if the location was never synced.
    pub synced_at: Option<DateTime<Utc>>,
    /// Seconds since `syncedAt`; null if never synced.
    pub age_seconds: Option<i64>,
    /// Whether the data is older than the gateway's max age (or was never synced).
    pub stale: bool,
    /// Whether a sync of the location is queued or running.
    pub syncing: bool,
}

impl Freshness {
    pub fn from_store(f: Option<&store::Freshness>, max_age_secs: u64, now: DateTime<Utc>) -> Self {
        let synced_at = f.and_then(|f| f.synced_at).map(from_ms);
        let age_seconds = synced_at.map(|t| (now - t).num_seconds().max(0));
        Self {
            synced_at,
            age_seconds,
            // Data of a location whose credentials GHL refuses cannot be refreshed: stale.
            stale: age_seconds.is_none_or(|age| age > max_age_secs as i64)
                || f.is_some_and(|f| f.auth_error.is_some()),
            syncing: f.is_some_and(|f| f.active > 0),
        }
    }

    pub(super) async fn of(ctx: &Context<'_>, location_id: &str) -> ApiResult<Self> {
        let settings = ctx.data_unchecked::<Settings>();
        let row = loader(ctx)
            .load_one(FreshnessOf(location_id.to_owned()))
            .await?;
        let now = Utc::now();
        let freshness = Self::from_store(row.as_ref(), settings.max_age_secs, now);
        super::reads::freshness(ctx, &freshness, now);
        Ok(freshness)
    }
}

/// A GHL sub-account.
pub struct Location(pub location::Model);

#[Object]
impl Location {
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }
    async fn name(&self) -> Option<&str> {
        self.0.name.as_deref()
    }
    async fn company_id(&self) -> Option<&str> {
        self.0.company_id.as_deref()
    }
    async fn timezone(&self) -> Option<&str> {
        self.0.timezone.as_deref()
    }
    async fn freshness(&self, ctx: &Context<'_>) -> ApiResult<Freshness> {
        Freshness::of(ctx, &self.0.id).await
    }
    /// The location's opportunity pipelines, by name.
    async fn pipelines(&self, ctx: &Context<'_>) -> ApiResult<Vec<Pipeline>> {
        let rows = loader(ctx).load_one(PipelinesOf(self.0.id.clone())).await?;
        Ok(rows.unwrap_or_default().into_iter().map(Pipeline).collect())
    }
}

/// A CRM contact.
pub struct Contact(pub Arc<contact::Model>);

#[Object]
impl Contact {
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }
    async fn location_id(&self) -> ID {
        ID(self.0.location_id.clone())
    }
    async fn first_name(&self) -> Option<&str> {
        self.0.first_name.as_deref()
    }
    async fn last_name(&self) -> Option<&str> {
        self.0.last_name.as_deref()
    }
    /// The display name: GHL's name, else first and last name, else email or phone.
    async fn name(&self) -> Option<&str> {
        self.0.name.as_deref()
    }
    async fn email(&self) -> Option<&str> {
        self.0.email.as_deref()
    }
    async fn phone(&self) -> Option<&str> {
        self.0.phone.as_deref()
    }
    async fn company_name(&self) -> Option<&str> {
        self.0.company_name.as_deref()
    }
    async fn tags(&self) -> ApiResult<Vec<String>> {
        serde_json::from_str(&self.0.tags).map_err(|e| ApiError::internal(&e))
    }
    async fn source(&self) -> Option<&str> {
        self.0.source.as_deref()
    }
    async fn date_added(&self) -> DateTime<Utc> {
        from_ms(self.0.date_added)
    }
    async fn date_updated(&self) -> DateTime<Utc> {
        from_ms(self.0.date_updated)
    }
    async fn assigned_to(&self, ctx: &Context<'_>) -> ApiResult<Option<User>> {
        user_of(ctx, &self.0.location_id, self.0.assigned_to.as_deref()).await
    }
    async fn custom_fields(&self, ctx: &Context<'_>) -> ApiResult<Vec<CustomFieldValue>> {
        let rows = loader(ctx)
            .load_one(CustomValuesOf(self.0.id.clone()))
            .await?;
        Ok(rows
            .unwrap_or_default()
            .into_iter()
            .map(CustomFieldValue)
            .collect())
    }
    /// Open tasks by due date first, then completed ones.
    async fn tasks(&self, ctx: &Context<'_>) -> ApiResult<Vec<Task>> {
        let rows = loader(ctx).load_one(TasksOf(self.0.id.clone())).await?;
        Ok(rows.unwrap_or_default().into_iter().map(Task).collect())
    }
    /// Most recent message first.
    async fn conversations(&self, ctx: &Context<'_>) -> ApiResult<Vec<Conversation>> {
        let rows = loader(ctx)
            .load_one(ConversationsOf(self.0.id.clone()))
            .await?;
        Ok(rows
            .unwrap_or_default()
            .into_iter()
            .map(Conversation)
            .collect())
    }
    async fn opportunities(&self, ctx: &Context<'_>) -> ApiResult<Vec<Opportunity>> {
        let rows = loader(ctx)
            .load_one(OpportunitiesOf(self.0.id.clone()))
            .await?;
        Ok(rows
            .unwrap_or_default()
            .into_iter()
            .map(Opportunity)
            .collect())
    }
}

/// The value of one custom field on a contact.
pub struct CustomFieldValue(pub Arc<contact_custom_value::Model>);

impl CustomFieldValue {
    async fn definition(&self, ctx: &Context<'_>) -> ApiResult<Option<Arc<custom_field::Model>>> {
        Ok(loader(ctx)
            .load_one(CustomFieldId(self.0.field_id.clone()))
            .await?
            .flatten()
            .filter(|d| may_read(ctx, &d.location_id)))
    }
}

#[Object]
impl CustomFieldValue {
    /// The custom field's id.
    async fn id(&self) -> ID {
        ID(self.0.field_id.clone())
    }
    async fn name(&self, ctx: &Context<'_>) -> ApiResult<Option<String>> {
        Ok(self.definition(ctx).await?.and_then(|d| d.name.clone()))
    }
    /// The field key, e.g. `contact.pincode`.
    async fn field_key(&self, ctx: &Context<'_>) -> ApiResult<Option<String>> {
        Ok(self
            .definition(ctx)
            .await?
            .and_then(|d| d.field_key.clone()))
    }
    /// GHL's data type, e.g. `TEXT`, `NUMERICAL`, `MULTIPLE_OPTIONS`.
    async fn data_type(&self, ctx: &Context<'_>) -> ApiResult<Option<String>> {
        Ok(self
            .definition(ctx)
            .await?
            .and_then(|d| d.data_type.clone()))
    }
    /// The value as GHL holds it: a string, number, list or object.
    async fn value(&self) -> ApiResult<Json<serde_json::Value>> {
        serde_json::from_str(&self.0.value)
            .map(Json)
            .map_err(|e| ApiError::internal(&e))
    }
}

pub struct Task(pub Arc<task::Model>);

#[Object]
impl Task {
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }
    async fn title(&self) -> Option<&str> {
        self.0.title.as_deref()
    }
    async fn body(&self) -> Option<&str> {
        self.0.body.as_deref()
    }
    async fn due_date(&self) -> Option<DateTime<Utc>> {
        time(self.0.due_date)
    }
    async fn completed(&self) -> bool {
        self.0.completed
    }
    async fn assigned_to(&self, ctx: &Context<'_>) -> ApiResult<Option<User>> {
        user_of(ctx, &self.0.location_id, self.0.assigned_to.as_deref()).await
    }
    async fn contact(&self, ctx: &Context<'_>) -> ApiResult<Option<Contact>> {
        contact_of(ctx, self.0.contact_id.as_deref()).await
    }
}

pub struct Conversation(pub Arc<conversation::Model>);

#[Object]
impl Conversation {
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }
    /// GHL's conversation type, e.g. `TYPE_PHONE`, `TYPE_EMAIL`.
    #[graphql(name = "type")]
    async fn kind(&self) -> Option<&str> {
        self.0.kind.as_deref()
    }
    async fn last_message_body(&self) -> Option<&str> {
        self.0.last_message_body.as_deref()
    }
    async fn last_message_type(&self) -> Option<&str> {
        self.0.last_message_type.as_deref()
    }
    async fn last_message_date(&self) -> Option<DateTime<Utc>> {
        time(self.0.last_message_date)
    }
    async fn unread_count(&self) -> i32 {
        self.0.unread_count
    }
    async fn contact(&self, ctx: &Context<'_>) -> ApiResult<Option<Contact>> {
        contact_of(ctx, self.0.contact_id.as_deref()).await
    }
}

#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum OpportunityStatus {
    Open,
    Won,
    Lost,
    Abandoned,
}

pub struct Opportunity(pub Arc<opportunity::Model>);

#[Object]
impl Opportunity {
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }
    async fn name(&self) -> Option<&str> {
        self.0.name.as_deref()
    }
    /// null when GHL sent a status this gateway does not know.
    async fn status(&self) -> Option<OpportunityStatus> {
        match self.0.status.as_deref()? {
            "open" => Some(OpportunityStatus::Open),
            "won" => Some(OpportunityStatus::Won),
            "lost" => Some(OpportunityStatus::Lost),
            "abandoned" => Some(OpportunityStatus::Abandoned),
            _ => None,
        }
    }
    async fn monetary_value(&self) -> Option<f64> {
        self.0.monetary_value
    }
    async fn pipeline(&self, ctx: &Context<'_>) -> ApiResult<Option<Pipeline>> {
        let Some(id) = &self.0.pipeline_id else {
            return Ok(None);
        };
        Ok(loader(ctx)
            .load_one(PipelineId(id.clone()))
            .await?
            .flatten()
            .filter(|p| may_read(ctx, &p.location_id))
            .map(Pipeline))
    }
    async fn stage(&self, ctx: &Context<'_>) -> ApiResult<Option<PipelineStage>> {
        let Some(id) = &self.0.stage_id else {
            return Ok(None);
        };
        Ok(loader(ctx)
            .load_one(StageId(id.clone()))
            .await?
            .flatten()
            .filter(|s| may_read(ctx, &s.location_id))
            .map(PipelineStage))
    }
    async fn assigned_to(&self, ctx: &Context<'_>) -> ApiResult<Option<User>> {
        user_of(ctx, &self.0.location_id, self.0.assigned_to.as_deref()).await
    }
    async fn created_at(&self) -> Option<DateTime<Utc>> {
        time(self.0.created_at)
    }
    async fn updated_at(&self) -> Option<DateTime<Utc>> {
        time(self.0.updated_at)
    }
    async fn contact(&self, ctx: &Context<'_>) -> ApiResult<Option<Contact>> {
        contact_of(ctx, self.0.contact_id.as_deref()).await
    }
}

pub struct User(pub Arc<user::Model>);

#[Object]
impl User {
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }
    async fn name(&self) -> Option<String> {
        self.0.name.clone().or_else(|| {
            let parts: Vec<&str> = [self.0.first_name.as_deref(), self.0.last_name.as_deref()]
                .into_iter()
                .flatten()
                .collect();
            (!parts.is_empty()).then(|| parts.join(" "))
        })
    }
    async fn email(&self) -> Option<&str> {
        self.0.email.as_deref()
    }
}

pub struct Pipeline(pub Arc<pipeline::Model>);

#[Object]
impl Pipeline {
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }
    async fn name(&self) -> Option<&str> {
        self.0.name.as_deref()
    }
    /// The stages in board order.
    async fn stages(&self, ctx: &Context<'_>) -> ApiResult<Vec<PipelineStage>> {
        let rows = loader(ctx).load_one(StagesOf(self.0.id.clone())).await?;
        Ok(rows
            .unwrap_or_default()
            .into_iter()
            .map(PipelineStage)
            .collect())
    }
    /// How many opportunities the pipeline holds with `status` (default `OPEN`; `null`: any
    /// status), and their summed `monetaryValue`, computed in the database.
    async fn summary(
        &self,
        ctx: &Context<'_>,
        #[graphql(default_with = "Some(OpportunityStatus::Open)")] status: Option<
            OpportunityStatus,
        >,
    ) -> ApiResult<super::lists::OpportunitySummary> {
        super::lists::summary(
            ctx,
            store::SummaryBy::Pipeline,
            &self.0.location_id,
            &self.0.id,
            status,
        )
        .await
    }
}

pub struct PipelineStage(pub Arc<pipeline_stage::Model>);

#[Object]
impl PipelineStage {
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }
    async fn name(&self) -> Option<&str> {
        self.0.name.as_deref()
    }
    async fn position(&self) -> i32 {
        self.0.position
    }
    /// How many opportunities are in the stage with `status` (default `OPEN`; `null`: any
    /// status), and their summed `monetaryValue`: a board column's header. Computed in the
    /// database, one `GROUP BY` for every stage of the request.
    async fn summary(
        &self,
        ctx: &Context<'_>,
        #[graphql(default_with = "Some(OpportunityStatus::Open)")] status: Option<
            OpportunityStatus,
        >,
    ) -> ApiResult<super::lists::OpportunitySummary> {
        super::lists::summary(
            ctx,
            store::SummaryBy::Stage,
            &self.0.location_id,
            &self.0.id,
            status,
        )
        .await
    }
}

/// The state of a sync job; `IDLE` only in `SyncStatus.state`, for a location never synced.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum SyncState {
    Idle,
    Queued,
    Running,
    Succeeded,
    Failed,
}

impl From<JobState> for SyncState {
    fn from(state: JobState) -> Self {
        match state {
            JobState::Queued => SyncState::Queued,
            JobState::Running => SyncState::Running,
            JobState::Succeeded => SyncState::Succeeded,
            JobState::Failed => SyncState::Failed,
        }
    }
}

#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
#[graphql(remote = "crate::domain::SyncMode")]
pub enum SyncMode {
    /// Only what changed since the last sync, where GHL can tell.
    Incremental,
    /// Everything; rows GHL no longer has are marked deleted.
    Full,
}

/// One background sync of a location.
pub struct SyncJob {
    pub snapshot: JobSnapshot,
    /// Whether the caller attached to a job that was already running.
    pub joined: bool,
}

impl SyncJob {
    pub fn from_snapshot(snapshot: JobSnapshot, joined: bool) -> Self {
        Self { snapshot, joined }
    }
}

#[Object]
impl SyncJob {
    async fn id(&self) -> ID {
        ID(self.snapshot.job.id.clone())
    }
    async fn location_id(&self) -> ID {
        ID(self.snapshot.job.location_id.clone())
    }
    async fn mode(&self) -> SyncMode {
        self.snapshot.job.mode.into()
    }
    async fn state(&self) -> SyncState {
        self.snapshot.job.state.into()
    }
    async fn started_at(&self) -> DateTime<Utc> {
        self.snapshot.job.started_at
    }
    async fn finished_at(&self) -> Option<DateTime<Utc>> {
        self.snapshot.job.finished_at
    }
    async fn joined(&self) -> bool {
        self.joined
    }
    async fn error(&self) -> Option<&str> {
        self.snapshot.job.error.as_deref()
    }
    /// The stages in sync order: users, customFields, pipelines, contacts, tasks, conversations,
    /// opportunities.
    async fn stages(&self) -> Vec<SyncStage<'_>> {
        let mut stages: Vec<&domain::SyncStage> = self.snapshot.stages.iter().collect();
        stages.sort_by_key(|s| Resource::ALL.iter().position(|r| *r == s.resource));
        stages.into_iter().map(SyncStage).collect()
    }
}

pub struct SyncStage<'a>(&'a domain::SyncStage);

#[Object]
impl SyncStage<'_> {
    /// `users`, `customFields`, `pipelines`, `contacts`, `tasks`, `conversations`, `opportunities`.
    async fn name(&self) -> &str {
        self.0.resource.as_str()
    }
    async fn state(&self) -> SyncState {
        self.0.state.into()
    }
    /// Records fetched so far.
    async fn fetched(&self) -> i64 {
        self.0.fetched
    }
    /// Records GHL says there are, when it says.
    async fn total(&self) -> Option<i64> {
        self.0.total
    }
    async fn pages(&self) -> i64 {
        self.0.pages
    }
    async fn error(&self) -> Option<&str> {
        self.0.error.as_deref()
    }
    /// GHL calls the stage made, retries included.
    async fn calls(&self) -> i64 {
        self.0.calls
    }
    /// Calls that were retries (after a 429, a 5xx, a timeout or a dropped connection).
    async fn retries(&self) -> i64 {
        self.0.retries
    }
    /// 429 answers the stage received.
    async fn rate_limited(&self) -> i64 {
        self.0.rate_limited
    }
    /// Milliseconds the stage waited for the rate limiter.
    async fn waited_ms(&self) -> i64 {
        self.0.waited_ms
    }
}

/// A change of a location's sync: the job as it now stands, and the data's freshness.
pub struct SyncEvent {
    pub location_id: String,
    pub job: SyncJob,
}

#[Object]
impl SyncEvent {
    async fn location_id(&self) -> ID {
        ID(self.location_id.clone())
    }
    async fn job(&self) -> &SyncJob {
        &self.job
    }
    async fn freshness(&self, ctx: &Context<'_>) -> ApiResult<Freshness> {
        // Events outlive one request's loader cache: read the freshness as it is now.
        let store = ctx.data_unchecked::<Store>();
        let settings = ctx.data_unchecked::<Settings>();
        let rows = store
            .freshness(std::slice::from_ref(&self.location_id))
            .await?;
        Ok(Freshness::from_store(
            rows.get(&self.location_id),
            settings.max_age_secs,
            Utc::now(),
        ))
    }
}

/// What a location's sync is doing and how fresh its data is.
pub struct SyncStatus {
    pub location_id: String,
    pub last_job: Option<SyncJob>,
    /// The run of failed jobs, when the last finished job failed (asked of the sync, if any).
    pub cooldown: Option<domain::Cooldown>,
}

impl SyncStatus {
    pub async fn load(
        store: &Store,
        sync: Option<&crate::sync::SyncHandle>,
        location_id: &str,
    ) -> ApiResult<Self> {
        let last_job = store
            .last_snapshot(location_id)
            .await?
            .map(|snapshot| SyncJob::from_snapshot(snapshot, false));
        let cooldown = match sync {
            Some(sync) => sync.cooldown(location_id).await?,
            None => None,
        };
        Ok(Self {
            location_id: location_id.to_owned(),
            last_job,
            cooldown,
        })
    }

    /// When the cooldown shown ends (its fields change then), if one is on.
    pub(super) fn cooldown_ends(&self) -> Option<DateTime<Utc>> {
        self.active_cooldown().map(|c| c.next_attempt_at)
    }

    /// The cooldown, if it is still on.
    fn active_cooldown(&self) -> Option<&domain::Cooldown> {
        self.cooldown.as_ref().filter(|c| c.active(Utc::now()))
    }
}

#[Object]
impl SyncStatus {
    /// The last job's state, or `IDLE` if the location was never synced.
    async fn state(&self) -> SyncState {
        self.last_job
            .as_ref()
            .map_or(SyncState::Idle, |j| j.snapshot.job.state.into())
    }
    async fn last_job(&self) -> Option<&SyncJob> {
        self.last_job.as_ref()
    }
    async fn freshness(&self, ctx: &Context<'_>) -> ApiResult<Freshness> {
        Freshness::of(ctx, &self.location_id).await
    }
    /// Syncs that failed in a row since the last success or reconnect (0 when the last one
    /// succeeded).
    async fn consecutive_failures(&self) -> i32 {
        self.cooldown
            .as_ref()
            .map_or(0, |c| i32::try_from(c.failures).unwrap_or(i32::MAX))
    }
    /// Why the last sync failed, while the failures last (null once a sync succeeds).
    async fn last_error(&self) -> Option<&str> {
        self.cooldown.as_ref().and_then(|c| c.last_error.as_deref())
    }
    /// While the location cools down after failed syncs, when reads and the scheduler may start
    /// the next one; null when they may now. The cooldown doubles with each failure in a row.
    async fn next_attempt_at(&self) -> Option<DateTime<Utc>> {
        self.active_cooldown().map(|c| c.next_attempt_at)
    }
    /// Whether `refreshLocation` may start a sync now (false once the one manual retry of this
    /// cooldown step is spent).
    async fn manual_retry_available(&self) -> bool {
        self.active_cooldown().is_none_or(|c| !c.retry_spent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freshness_of_a_location_never_synced_is_stale() {
        let f = Freshness::from_store(None, 300, Utc::now());
        assert!(f.stale && !f.syncing && f.synced_at.is_none() && f.age_seconds.is_none());
    }

    #[test]
    fn freshness_goes_stale_after_max_age() {
        let now = Utc::now();
        let row = |age: i64| store::Freshness {
            location_id: "l".into(),
            synced_at: Some((now - chrono::Duration::seconds(age)).timestamp_millis()),
            active: 1,
            auth_error: None,
        };
        let fresh = Freshness::from_store(Some(&row(299)), 300, now);
        assert!(!fresh.stale && fresh.syncing);
        assert_eq!(fresh.age_seconds, Some(299));
        assert!(Freshness::from_store(Some(&row(301)), 300, now).stale);
        let refused = store::Freshness {
            auth_error: Some("401".into()),
            ..row(1)
        };
        assert!(Freshness::from_store(Some(&refused), 300, now).stale);
    }
}
