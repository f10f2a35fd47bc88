//! Sync bookkeeping: jobs, stage checkpoints, watermarks, and a location's credential status.
//!
//! This is the row mapping of the sync's domain types ([`SyncJob`], [`SyncStage`]): the one
//! place where job and stage states and sync modes become the names stored in `sync_jobs` and
//! `sync_stages` (`QUEUED`, `RUNNING`, ..., `FULL`, `INCREMENTAL`) and back. Nothing else in the
//! crate writes those names.

use sea_orm::sea_query::{Expr, ExprTrait, Query};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, FromQueryResult, IntoActiveModel,
    QueryFilter, QueryOrder, QuerySelect,
};

use super::entities::{contact, conversation, location, opportunity, sync_job, sync_stage, task};
use super::read::chunked;
use super::{Store, StoreError};
use crate::domain::{
    JobSnapshot, JobState, Resource, SyncJob, SyncMode, SyncStage, from_ms, to_ms,
};

/// The stored name of a job or stage state (the GraphQL `SyncState` uses the same names).
pub fn job_state_name(state: JobState) -> &'static str {
    match state {
        JobState::Queued => "QUEUED",
        JobState::Running => "RUNNING",
        JobState::Succeeded => "SUCCEEDED",
        JobState::Failed => "FAILED",
    }
}

fn job_state(name: &str) -> Result<JobState, StoreError> {
    [
        JobState::Queued,
        JobState::Running,
        JobState::Succeeded,
        JobState::Failed,
    ]
    .into_iter()
    .find(|s| job_state_name(*s) == name)
    .ok_or_else(|| StoreError::Invalid(format!("sync state {name:?}")))
}

/// The stored name of a sync mode (the GraphQL `SyncMode` uses the same names).
pub fn sync_mode_name(mode: SyncMode) -> &'static str {
    match mode {
        SyncMode::Incremental => "INCREMENTAL",
        SyncMode::Full => "FULL",
    }
}

fn sync_mode(name: &str) -> Result<SyncMode, StoreError> {
    [SyncMode::Incremental, SyncMode::Full]
        .into_iter()
        .find(|m| sync_mode_name(*m) == name)
        .ok_or_else(|| StoreError::Invalid(format!("sync mode {name:?}")))
}

fn job_row(job: &SyncJob) -> sync_job::Model {
    sync_job::Model {
        id: job.id.clone(),
        location_id: job.location_id.clone(),
        mode: sync_mode_name(job.mode).to_owned(),
        state: job_state_name(job.state).to_owned(),
        mark: job.mark,
        started_at: to_ms(job.started_at),
        finished_at: job.finished_at.map(to_ms),
        error: job.error.clone(),
    }
}

fn job_of(row: sync_job::Model) -> Result<SyncJob, StoreError> {
    Ok(SyncJob {
        mode: sync_mode(&row.mode)?,
        state: job_state(&row.state)?,
        started_at: from_ms(row.started_at),
        finished_at: row.finished_at.map(from_ms),
        id: row.id,
        location_id: row.location_id,
        mark: row.mark,
        error: row.error,
    })
}

fn stage_of(row: sync_stage::Model) -> Result<SyncStage, StoreError> {
    Ok(SyncStage {
        resource: Resource::from_name(&row.name)
            .ok_or_else(|| StoreError::Invalid(format!("sync stage {:?}", row.name)))?,
        state: job_state(&row.state)?,
        updated_at: from_ms(row.updated_at),
        job_id: row.job_id,
        fetched: row.fetched,
        total: row.total,
        pages: row.pages,
        checkpoint: row.checkpoint,
        error: row.error,
        calls: row.calls,
        retries: row.retries,
        rate_limited: row.rate_limited,
        waited_ms: row.waited_ms,
        read_at: row.read_at.map(from_ms),
    })
}

/// The newest change the cache holds of each paged resource (ms): where an incremental sync
/// starts looking.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Watermarks {
    pub contacts: Option<i64>,
    pub tasks: Option<i64>,
    pub conversations: Option<i64>,
    pub opportunities: Option<i64>,
}

/// One optional number, whatever the statement computes.
#[derive(FromQueryResult)]
struct MaxValue {
    value: Option<i64>,
}

fn unfinished_states() -> [&'static str; 2] {
    [
        job_state_name(JobState::Queued),
        job_state_name(JobState::Running),
    ]
}

/// The update that marks unfinished jobs interrupted (the text [`SyncJob::interrupted`] knows).
fn interrupt_update() -> sea_orm::sea_query::UpdateStatement {
    Query::update()
        .table("sync_jobs")
        .value("state", job_state_name(JobState::Failed))
        .value("error", "interrupted: the gateway stopped during the sync")
        .value("finished_at", chrono::Utc::now().timestamp_millis())
        .and_where(Expr::col("state").is_in(unfinished_states()))
        .to_owned()
}

impl Store {
    pub async fn insert_job(&self, job: &SyncJob) -> Result<(), StoreError> {
        job_row(job).into_active_model().insert(&self.db).await?;
        self.bump(&job.location_id);
        Ok(())
    }

    /// Writes a job's state, mode, mark, end time and error.
    pub async fn update_job(&self, job: &SyncJob) -> Result<(), StoreError> {
        let update = Query::update()
            .table("sync_jobs")
            .value("state", job_state_name(job.state))
            .value("mode", sync_mode_name(job.mode))
            .value("mark", job.mark)
            .value("finished_at", job.finished_at.map(to_ms))
            .value("error", job.error.clone())
            .and_where(Expr::col("id").eq(job.id.clone()))
            .to_owned();
        self.db.execute(&update).await?;
        self.bump(&job.location_id);
        Ok(())
    }

    /// Writes the end of a job as [`Store::update_job`] does, and, for a job that succeeded, the
    /// `syncedAt` it may claim: `read_at` (ms), when the oldest data it kept was read.
    pub async fn end_job(&self, job: &SyncJob, read_at: Option<i64>) -> Result<(), StoreError> {
        let update = Query::update()
            .table("sync_jobs")
            .value("state", job_state_name(job.state))
            .value("mode", sync_mode_name(job.mode))
            .value("finished_at", job.finished_at.map(to_ms))
            .value("error", job.error.clone())
            .value("synced_at", read_at)
            .and_where(Expr::col("id").eq(job.id.clone()))
            .to_owned();
        self.db.execute(&update).await?;
        self.bump(&job.location_id);
        Ok(())
    }

    /// The `syncedAt` a job claimed when it succeeded (ms), if it recorded one.
    pub async fn job_synced_at(&self, job_id: &str) -> Result<Option<i64>, StoreError> {
        let select = Query::select()
            .expr_as(Expr::col("synced_at"), "value")
            .from("sync_jobs")
            .and_where(Expr::col("id").eq(job_id))
            .to_owned();
        let row = MaxValue::find_by_statement(self.db.get_database_backend().build(&select))
            .one(&self.db)
            .await?;
        Ok(row.and_then(|r| r.value))
    }

    /// Writes a stage's progress without a page (its start, its end, its failure) for a job of
    /// `location_id`.
    pub async fn save_stage(&self, location_id: &str, stage: &SyncStage) -> Result<(), StoreError> {
        super::write::save_checkpoint(&self.db, stage).await?;
        self.bump(location_id);
        Ok(())
    }

    /// Marks jobs left queued or running by a stopped process as failed, so that the next run
    /// resumes them. Returns how many there were. In replica mode only the jobs of locations
    /// whose lock this process can take (no live replica runs them) are marked.
    pub async fn interrupt_running_jobs(&self) -> Result<u64, StoreError> {
        if self.cluster().is_none() {
            let update = interrupt_update().to_owned();
            let interrupted = self.db.execute(&update).await?.rows_affected();
            if interrupted > 0 {
                self.bump_all();
            }
            return Ok(interrupted);
        }
        let unfinished = sync_job::Entity::find()
            .filter(sync_job::Column::State.is_in(unfinished_states()))
            .all(&self.db)
            .await?;
        let mut locations: Vec<String> = unfinished.into_iter().map(|j| j.location_id).collect();
        locations.sort();
        locations.dedup();
        let mut interrupted = 0;
        for location_id in locations {
            if let Some(_lock) = self.try_lock_location(&location_id).await? {
                interrupted += self.interrupt_jobs_of(&location_id, None).await?;
            }
        }
        Ok(interrupted)
    }

    /// Marks the location's queued or running jobs (but `except`) as interrupted: called by the
    /// holder of the location's lock, for whom any such job is an orphan of a process that
    /// died. Returns how many there were.
    pub async fn interrupt_jobs_of(
        &self,
        location_id: &str,
        except: Option<&str>,
    ) -> Result<u64, StoreError> {
        let mut update = interrupt_update();
        update.and_where(Expr::col("location_id").eq(location_id));
        if let Some(except) = except {
            update.and_where(Expr::col("id").ne(except));
        }
        let interrupted = self.db.execute(&update.to_owned()).await?.rows_affected();
        if interrupted > 0 {
            self.bump(location_id);
        }
        Ok(interrupted)
    }

    /// The location's latest job that is queued or running (in this process or another
    /// replica), with its stages.
    pub async fn active_job(&self, location_id: &str) -> Result<Option<JobSnapshot>, StoreError> {
        let row = sync_job::Entity::find()
            .filter(sync_job::Column::LocationId.eq(location_id))
            .filter(sync_job::Column::State.is_in(unfinished_states()))
            .order_by_desc(sync_job::Column::StartedAt)
            .one(&self.db)
            .await?;
        self.snapshot_of(row).await
    }

    /// The job of `row` with its stages.
    async fn snapshot_of(
        &self,
        row: Option<sync_job::Model>,
    ) -> Result<Option<JobSnapshot>, StoreError> {
        let Some(row) = row else {
            return Ok(None);
        };
        let job = job_of(row)?;
        let stages = self.stages_of_jobs(std::slice::from_ref(&job.id)).await?;
        Ok(Some(JobSnapshot { job, stages }))
    }

    /// When the last successful FULL sync of a location started (ms).
    pub async fn last_full_sync(&self, location_id: &str) -> Result<Option<i64>, StoreError> {
        Ok(sync_job::Entity::find()
            .filter(sync_job::Column::LocationId.eq(location_id))
            .filter(sync_job::Column::Mode.eq(sync_mode_name(SyncMode::Full)))
            .filter(sync_job::Column::State.eq(job_state_name(JobState::Succeeded)))
            .order_by_desc(sync_job::Column::StartedAt)
            .one(&self.db)
            .await?
            .map(|j| j.started_at))
    }

    pub async fn watermarks(&self, location_id: &str) -> Result<Watermarks, StoreError> {
        async fn max<E: EntityTrait>(
            store: &Store,
            location: E::Column,
            column: E::Column,
            location_id: &str,
        ) -> Result<Option<i64>, StoreError> {
            Ok(E::find()
                .select_only()
                .column_as(column.max(), "value")
                .filter(location.eq(location_id))
                .into_model::<MaxValue>()
                .one(&store.db)
                .await?
                .and_then(|m| m.value))
        }
        Ok(Watermarks {
            contacts: max::<contact::Entity>(
                self,
                contact::Column::LocationId,
                contact::Column::DateUpdated,
                location_id,
            )
            .await?,
            tasks: max::<task::Entity>(
                self,
                task::Column::LocationId,
                task::Column::DateUpdated,
                location_id,
            )
            .await?,
            conversations: max::<conversation::Entity>(
                self,
                conversation::Column::LocationId,
                conversation::Column::LastMessageDate,
                location_id,
            )
            .await?,
            opportunities: max::<opportunity::Entity>(
                self,
                opportunity::Column::LocationId,
                opportunity::Column::UpdatedAt,
                location_id,
            )
            .await?,
        })
    }

    /// Records (or clears) that GHL refused the location's credentials.
    pub async fn set_auth_error(
        &self,
        location_id: &str,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        let update = Query::update()
            .table("locations")
            .value("auth_error", error.map(str::to_owned))
            .and_where(Expr::col("id").eq(location_id))
            .to_owned();
        self.db.execute(&update).await?;
        self.bump(location_id);
        Ok(())
    }

    /// Marks the location (re)connected now: the sync's cooldown forgets the jobs that failed
    /// before, and a refused-credentials mark is cleared.
    pub async fn reset_failures(&self, location_id: &str) -> Result<(), StoreError> {
        self.ensure_location(location_id).await?;
        let update = Query::update()
            .table("locations")
            .value("failures_reset_at", chrono::Utc::now().timestamp_millis())
            .value("auth_error", None::<String>)
            .and_where(Expr::col("id").eq(location_id))
            .to_owned();
        self.db.execute(&update).await?;
        self.bump(location_id);
        Ok(())
    }

    /// When the location was last (re)connected ([`Store::reset_failures`]), in ms.
    pub async fn failures_reset_at(&self, location_id: &str) -> Result<Option<i64>, StoreError> {
        let select = Query::select()
            .expr_as(Expr::col("failures_reset_at"), "value")
            .from("locations")
            .and_where(Expr::col("id").eq(location_id))
            .to_owned();
        let row = MaxValue::find_by_statement(self.db.get_database_backend().build(&select))
            .one(&self.db)
            .await?;
        Ok(row.and_then(|r| r.value))
    }

    /// Makes sure a location has a row (before GHL told its name), without touching one that does.
    pub async fn ensure_location(&self, location_id: &str) -> Result<(), StoreError> {
        let insert = Query::insert()
            .into_table("locations")
            .columns(["id", "created_at", "deleted", "seen_at"])
            .values_panic([location_id.into(), 0i64.into(), false.into(), 0i64.into()])
            .on_conflict(
                sea_orm::sea_query::OnConflict::column("id")
                    .do_nothing()
                    .to_owned(),
            )
            .to_owned();
        if self.db.execute(&insert).await?.rows_affected() > 0 {
            self.bump(location_id);
        }
        Ok(())
    }

    /// A location's row even if deleted, for the sync.
    pub async fn location_row(
        &self,
        location_id: &str,
    ) -> Result<Option<location::Model>, StoreError> {
        Ok(location::Entity::find_by_id(location_id.to_owned())
            .one(&self.db)
            .await?)
    }

    /// The jobs of a location, newest first.
    pub async fn jobs(&self, location_id: &str, limit: u64) -> Result<Vec<SyncJob>, StoreError> {
        sync_job::Entity::find()
            .filter(sync_job::Column::LocationId.eq(location_id))
            .order_by_desc(sync_job::Column::StartedAt)
            .limit(limit)
            .all(&self.db)
            .await?
            .into_iter()
            .map(job_of)
            .collect()
    }

    /// The most recent sync job of a location.
    pub async fn last_job(&self, location_id: &str) -> Result<Option<SyncJob>, StoreError> {
        self.previous_job(location_id, None).await
    }

    /// The most recent sync job of a location other than `except` (the job asking).
    pub async fn previous_job(
        &self,
        location_id: &str,
        except: Option<&str>,
    ) -> Result<Option<SyncJob>, StoreError> {
        let mut find = sync_job::Entity::find();
        if let Some(except) = except {
            find = find.filter(sync_job::Column::Id.ne(except));
        }
        find.filter(sync_job::Column::LocationId.eq(location_id))
            .order_by_desc(sync_job::Column::StartedAt)
            .order_by_desc(sync_job::Column::Id)
            .one(&self.db)
            .await?
            .map(job_of)
            .transpose()
    }

    /// The stages of the given jobs, in a stable order.
    pub async fn stages_of_jobs(&self, job_ids: &[String]) -> Result<Vec<SyncStage>, StoreError> {
        chunked(job_ids, |chunk| {
            sync_stage::Entity::find()
                .filter(sync_stage::Column::JobId.is_in(chunk))
                .order_by_asc(sync_stage::Column::Name)
                .all(&self.db)
        })
        .await?
        .into_iter()
        .map(stage_of)
        .collect()
    }

    /// A job with its stages, by id.
    pub async fn job_snapshot(&self, job_id: &str) -> Result<Option<JobSnapshot>, StoreError> {
        let row = sync_job::Entity::find_by_id(job_id.to_owned())
            .one(&self.db)
            .await?;
        self.snapshot_of(row).await
    }

    /// The most recent sync job of a location with its stages.
    pub async fn last_snapshot(
        &self,
        location_id: &str,
    ) -> Result<Option<JobSnapshot>, StoreError> {
        let Some(job) = self.last_job(location_id).await? else {
            return Ok(None);
        };
        let stages = self.stages_of_jobs(std::slice::from_ref(&job.id)).await?;
        Ok(Some(JobSnapshot { job, stages }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_names_round_trip() {
        for state in [
            JobState::Queued,
            JobState::Running,
            JobState::Succeeded,
            JobState::Failed,
        ] {
            assert_eq!(job_state(job_state_name(state)).unwrap(), state);
        }
        for mode in [SyncMode::Incremental, SyncMode::Full] {
            assert_eq!(sync_mode(sync_mode_name(mode)).unwrap(), mode);
        }
        assert!(matches!(job_state("IDLE"), Err(StoreError::Invalid(_))));
        assert!(matches!(sync_mode("full"), Err(StoreError::Invalid(_))));
    }

    #[test]
    fn a_job_survives_its_row() {
        let job = SyncJob {
            id: "j".into(),
            location_id: "l".into(),
            mode: SyncMode::Full,
            state: JobState::Running,
            mark: 1_736_471_515_514,
            started_at: from_ms(1_736_471_515_514),
            finished_at: Some(from_ms(1_736_471_600_000)),
            error: Some("boom".into()),
        };
        assert_eq!(job_of(job_row(&job)).unwrap(), job);
    }
}
