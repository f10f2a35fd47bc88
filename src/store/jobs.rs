//! Sync bookkeeping: jobs, stage checkpoints, watermarks, and a location's credential status.

use sea_orm::sea_query::{Expr, ExprTrait, Query};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, FromQueryResult, IntoActiveModel,
    QueryFilter, QueryOrder, QuerySelect,
};

use super::entities::{contact, conversation, location, opportunity, sync_job, task};
use super::write::StageCheckpoint;
use super::{Store, StoreError};

/// The newest change the cache holds of each paged resource (ms): where an incremental sync
/// starts looking.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Watermarks {
    pub contacts: Option<i64>,
    pub tasks: Option<i64>,
    pub conversations: Option<i64>,
    pub opportunities: Option<i64>,
}

#[derive(FromQueryResult)]
struct MaxValue {
    value: Option<i64>,
}

impl Store {
    pub async fn insert_job(&self, job: &sync_job::Model) -> Result<(), StoreError> {
        job.clone().into_active_model().insert(&self.db).await?;
        Ok(())
    }

    /// Writes a job's state, end time and error.
    pub async fn update_job(&self, job: &sync_job::Model) -> Result<(), StoreError> {
        let update = Query::update()
            .table("sync_jobs")
            .value("state", job.state.clone())
            .value("mode", job.mode.clone())
            .value("finished_at", job.finished_at)
            .value("error", job.error.clone())
            .and_where(Expr::col("id").eq(job.id.clone()))
            .to_owned();
        self.db.execute(&update).await?;
        Ok(())
    }

    /// Writes a stage's progress without a page (its start, its end, its failure).
    pub async fn save_stage(&self, checkpoint: &StageCheckpoint) -> Result<(), StoreError> {
        super::write::save_checkpoint(&self.db, checkpoint).await?;
        Ok(())
    }

    /// Marks jobs left queued or running by a stopped process as failed, so that the next run
    /// resumes them. Returns how many there were.
    pub async fn interrupt_running_jobs(&self) -> Result<u64, StoreError> {
        let update = Query::update()
            .table("sync_jobs")
            .value("state", "FAILED")
            .value("error", "interrupted: the gateway stopped during the sync")
            .value("finished_at", chrono::Utc::now().timestamp_millis())
            .and_where(Expr::col("state").is_in(["QUEUED", "RUNNING"]))
            .to_owned();
        Ok(self.db.execute(&update).await?.rows_affected())
    }

    /// When the last successful FULL sync of a location started (ms).
    pub async fn last_full_sync(&self, location_id: &str) -> Result<Option<i64>, StoreError> {
        Ok(sync_job::Entity::find()
            .filter(sync_job::Column::LocationId.eq(location_id))
            .filter(sync_job::Column::Mode.eq("FULL"))
            .filter(sync_job::Column::State.eq("SUCCEEDED"))
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
        Ok(())
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
        self.db.execute(&insert).await?;
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
    pub async fn jobs(
        &self,
        location_id: &str,
        limit: u64,
    ) -> Result<Vec<sync_job::Model>, StoreError> {
        Ok(sync_job::Entity::find()
            .filter(sync_job::Column::LocationId.eq(location_id))
            .order_by_desc(sync_job::Column::StartedAt)
            .limit(limit)
            .all(&self.db)
            .await?)
    }
}
