//! Honest freshness: when each stage's data was read, and what a successful job may claim.
//!
//! - `sync_stages.read_at`: when the oldest data the stage holds was read, in UTC ms: the start
//!   of the attempt that began the stage's current pass (a stage resumed from its checkpoint
//!   keeps the time of the attempt that read its first pages; a stage inherited finished keeps
//!   its own). NULL on rows written before this migration.
//! - `sync_jobs.synced_at`: set when a job succeeds, to the oldest `read_at` of the stages it
//!   kept: the location's `syncedAt`. NULL on jobs before this migration, which are then read as
//!   their `mark` (the start of their first attempt, before any of their data was read).

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table("sync_stages")
                .add_column(big_integer_null("read_at"))
                .to_owned(),
        )
        .await?;
        m.alter_table(
            Table::alter()
                .table("sync_jobs")
                .add_column(big_integer_null("synced_at"))
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table("sync_stages")
                .drop_column("read_at")
                .to_owned(),
        )
        .await?;
        m.alter_table(
            Table::alter()
                .table("sync_jobs")
                .drop_column("synced_at")
                .to_owned(),
        )
        .await
    }
}
