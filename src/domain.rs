//! Plain records of the GHL resources the gateway caches: what `upstream` produces, what `store`
//! writes and what `sync` moves between them; and the sync's own vocabulary (modes, job and stage
//! states, jobs, stages, events), which `sync` produces, `store` persists and `graphql` shows.
//! No I/O here, and no wire or column names: `store` maps these types to its rows, `graphql` to
//! its enums.
//!
//! Times are `DateTime<Utc>`; the store keeps them as UTC milliseconds.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A GHL sub-account.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Location {
    pub id: String,
    pub name: Option<String>,
    pub company_id: Option<String>,
    pub timezone: Option<String>,
    pub created_at: Option<DateTime<Utc>>,
}

/// A user of a location (the target of `assignedTo`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct User {
    pub id: String,
    pub location_id: String,
    pub name: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub email: Option<String>,
}

/// The definition of a custom field.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CustomField {
    pub id: String,
    pub location_id: String,
    pub name: Option<String>,
    pub field_key: Option<String>,
    pub data_type: Option<String>,
    /// `contact` or `opportunity`.
    pub model: Option<String>,
    pub position: i32,
}

/// One custom field value of a contact, as GHL sent it (string, number, array or object).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CustomFieldValue {
    pub field_id: String,
    pub value: serde_json::Value,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Contact {
    pub id: String,
    pub location_id: String,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub name: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub company_name: Option<String>,
    pub source: Option<String>,
    pub assigned_to: Option<String>,
    pub tags: Vec<String>,
    pub custom_fields: Vec<CustomFieldValue>,
    pub date_added: DateTime<Utc>,
    pub date_updated: DateTime<Utc>,
}

impl Contact {
    /// The name to show: GHL's `name`, else first and last name, else the email or phone.
    pub fn display_name(&self) -> String {
        if let Some(name) = self
            .name
            .as_deref()
            .map(str::trim)
            .filter(|n| !n.is_empty())
        {
            return name.to_owned();
        }
        let joined = [self.first_name.as_deref(), self.last_name.as_deref()]
            .into_iter()
            .flatten()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        if !joined.is_empty() {
            return joined;
        }
        self.email
            .clone()
            .or_else(|| self.phone.clone())
            .unwrap_or_default()
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Task {
    pub id: String,
    pub location_id: String,
    pub contact_id: Option<String>,
    pub title: Option<String>,
    pub body: Option<String>,
    pub due_date: Option<DateTime<Utc>>,
    pub completed: bool,
    pub assigned_to: Option<String>,
    pub date_added: Option<DateTime<Utc>>,
    pub date_updated: Option<DateTime<Utc>>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Conversation {
    pub id: String,
    pub location_id: String,
    pub contact_id: Option<String>,
    /// GHL's conversation type, e.g. `TYPE_PHONE`.
    pub kind: Option<String>,
    pub last_message_body: Option<String>,
    pub last_message_type: Option<String>,
    pub last_message_date: Option<DateTime<Utc>>,
    pub unread_count: i32,
    pub assigned_to: Option<String>,
    pub date_added: Option<DateTime<Utc>>,
    pub date_updated: Option<DateTime<Utc>>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PipelineStage {
    pub id: String,
    pub name: Option<String>,
    pub position: i32,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Pipeline {
    pub id: String,
    pub location_id: String,
    pub name: Option<String>,
    pub stages: Vec<PipelineStage>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Opportunity {
    pub id: String,
    pub location_id: String,
    pub contact_id: Option<String>,
    pub pipeline_id: Option<String>,
    pub stage_id: Option<String>,
    pub name: Option<String>,
    /// `open`, `won`, `lost` or `abandoned`.
    pub status: Option<String>,
    pub monetary_value: Option<f64>,
    pub assigned_to: Option<String>,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
}

/// A kind of synced resource: one table, one sync stage.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Resource {
    Users,
    CustomFields,
    Pipelines,
    Contacts,
    Tasks,
    Conversations,
    Opportunities,
}

impl Resource {
    pub const ALL: [Resource; 7] = [
        Resource::Users,
        Resource::CustomFields,
        Resource::Pipelines,
        Resource::Contacts,
        Resource::Tasks,
        Resource::Conversations,
        Resource::Opportunities,
    ];

    /// The stage name used in `sync_stages` and in the GraphQL `SyncStage.name`.
    pub fn as_str(self) -> &'static str {
        match self {
            Resource::Users => "users",
            Resource::CustomFields => "customFields",
            Resource::Pipelines => "pipelines",
            Resource::Contacts => "contacts",
            Resource::Tasks => "tasks",
            Resource::Conversations => "conversations",
            Resource::Opportunities => "opportunities",
        }
    }

    /// The resource of a stage name ([`Resource::as_str`]), if it is one.
    pub fn from_name(name: &str) -> Option<Resource> {
        Resource::ALL.into_iter().find(|r| r.as_str() == name)
    }
}

/// How much a sync reads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SyncMode {
    /// What changed since the newest change in the cache (minus an overlap), where GHL can tell.
    #[default]
    Incremental,
    /// Every list; rows GHL no longer has are marked deleted.
    Full,
}

/// Where a sync job, or one of its stages, stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum JobState {
    Queued,
    Running,
    Succeeded,
    Failed,
}

impl JobState {
    /// Whether the job (or stage) has ended, well or not.
    pub fn is_finished(self) -> bool {
        matches!(self, JobState::Succeeded | JobState::Failed)
    }
}

/// A stage goes through the same states as its job.
pub type StageState = JobState;

/// One sync job of a location.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SyncJob {
    pub id: String,
    pub location_id: String,
    pub mode: SyncMode,
    pub state: JobState,
    /// The stamp (UTC ms) the job's upserts put on rows; a FULL job marks rows older than it
    /// deleted. A resumed job inherits the mark of the job it continues.
    pub mark: i64,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Why the job failed.
    pub error: Option<String>,
}

impl SyncJob {
    /// Whether the job failed only because its process stopped (a SIGTERM, a crash): not a
    /// failure of GHL or of the credentials, so it counts for no cooldown. Both texts that mark
    /// such a job (the store's and the stage's) start with `interrupted:`.
    pub fn interrupted(&self) -> bool {
        self.error
            .as_deref()
            .is_some_and(|e| e.starts_with("interrupted:"))
    }
}

/// A location's run of failed jobs and what it allows: after `failures` failed jobs in a row
/// (since the last success or the last reconnect), no automatic sync starts before
/// `next_attempt_at`, and a manual one at most once in that time.
#[derive(Clone, Debug, PartialEq)]
pub struct Cooldown {
    /// Failed jobs in a row, newest last success or reconnect excluded.
    pub failures: u32,
    /// When the last failed job ended.
    pub failed_at: DateTime<Utc>,
    /// When the cooldown of the last failure ends.
    pub next_attempt_at: DateTime<Utc>,
    /// Why the last job failed.
    pub last_error: Option<String>,
    /// Whether the last failed job was itself started during the previous cooldown (a manual
    /// retry): then this step's one manual retry is spent.
    pub retry_spent: bool,
}

impl Cooldown {
    /// Whether the location is still cooling down at `now`.
    pub fn active(&self, now: DateTime<Utc>) -> bool {
        now < self.next_attempt_at
    }
}

/// One stage of a job: the sync of one resource.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SyncStage {
    pub job_id: String,
    pub resource: Resource,
    pub state: StageState,
    /// Records fetched so far.
    pub fetched: i64,
    /// Records GHL says there are, when it says.
    pub total: Option<i64>,
    pub pages: i64,
    /// Where the stage resumes (an opaque JSON cursor of the stage).
    pub checkpoint: Option<String>,
    /// Why the stage failed.
    pub error: Option<String>,
    pub updated_at: DateTime<Utc>,
    /// GHL calls the stage made so far, their retries and 429s, and its wait for the limiter.
    pub calls: i64,
    pub retries: i64,
    pub rate_limited: i64,
    pub waited_ms: i64,
    /// When the oldest data the stage holds was read: the start of the attempt that began its
    /// current pass (a resumed stage keeps the earlier attempt's). `None` before it starts.
    pub read_at: Option<DateTime<Utc>>,
}

impl SyncStage {
    /// A stage of `job_id` that has not started.
    pub fn queued(job_id: &str, resource: Resource, at: DateTime<Utc>) -> Self {
        Self {
            job_id: job_id.to_owned(),
            resource,
            state: JobState::Queued,
            fetched: 0,
            total: None,
            pages: 0,
            checkpoint: None,
            error: None,
            updated_at: at,
            calls: 0,
            retries: 0,
            rate_limited: 0,
            waited_ms: 0,
            read_at: None,
        }
    }
}

/// A job and its stages as they stand.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobSnapshot {
    pub job: SyncJob,
    pub stages: Vec<SyncStage>,
}

impl JobSnapshot {
    /// Whether the job has ended, well or not.
    pub fn is_finished(&self) -> bool {
        self.job.state.is_finished()
    }
}

/// A change of a location's sync: the job as it now stands.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SyncEvent {
    pub location_id: String,
    pub job: JobSnapshot,
}

/// What kind of record a [`ChangeEvent`] is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ChangeKind {
    Contact,
    Task,
    Conversation,
    Opportunity,
    User,
    Pipeline,
    CustomField,
}

impl ChangeKind {
    /// The kind of the records of `resource`.
    pub fn of(resource: Resource) -> Self {
        match resource {
            Resource::Users => ChangeKind::User,
            Resource::CustomFields => ChangeKind::CustomField,
            Resource::Pipelines => ChangeKind::Pipeline,
            Resource::Contacts => ChangeKind::Contact,
            Resource::Tasks => ChangeKind::Task,
            Resource::Conversations => ChangeKind::Conversation,
            Resource::Opportunities => ChangeKind::Opportunity,
        }
    }
}

/// Whether the records of a [`ChangeEvent`] were written or marked deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ChangeOp {
    Upsert,
    Delete,
}

/// Who wrote the records of a [`ChangeEvent`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ChangeSource {
    /// A page of a sync job.
    Sync,
    /// A GHL webhook event.
    Webhook,
}

/// One committed batch of changes to a location's cached records: what the `changes`
/// subscription streams. The store publishes it after the transaction commits and the
/// location's data version is bumped, so a reader that refetches sees at least this version.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChangeEvent {
    pub location_id: String,
    pub kind: ChangeKind,
    pub op: ChangeOp,
    /// GHL ids of the records written (or marked deleted).
    pub ids: Vec<String>,
    pub source: ChangeSource,
    pub at: DateTime<Utc>,
    /// The location's data version once the batch committed.
    pub data_version: u64,
}

/// Milliseconds since the epoch, the store's time unit.
pub fn to_ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

/// The inverse of [`to_ms`]; out-of-range values clamp to the epoch.
pub fn from_ms(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_name_falls_back_in_order() {
        let mut c = Contact {
            first_name: Some("Ada".into()),
            last_name: Some(" Lovelace ".into()),
            email: Some("ada@example.com".into()),
            ..Default::default()
        };
        assert_eq!(c.display_name(), "Ada Lovelace");
        c.name = Some("  ".into());
        assert_eq!(c.display_name(), "Ada Lovelace");
        c.name = Some("Countess".into());
        assert_eq!(c.display_name(), "Countess");
        c.name = None;
        c.first_name = None;
        c.last_name = None;
        assert_eq!(c.display_name(), "ada@example.com");
    }

    #[test]
    fn stage_names_round_trip() {
        for resource in Resource::ALL {
            assert_eq!(Resource::from_name(resource.as_str()), Some(resource));
        }
        assert_eq!(Resource::from_name("nope"), None);
    }

    #[test]
    fn ms_round_trip() {
        let t = from_ms(1_736_471_515_514);
        assert_eq!(to_ms(t), 1_736_471_515_514);
    }
}
