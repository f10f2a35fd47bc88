//! When a location was last (re)connected: the sync's cooldown counts only the jobs that failed
//! after it, so new credentials get a sync at once.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table("locations")
                .add_column(big_integer_null("failures_reset_at"))
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table("locations")
                .drop_column("failures_reset_at")
                .to_owned(),
        )
        .await
    }
}
