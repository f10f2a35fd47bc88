//! Replicas on PostgreSQL: the events one gateway publishes for the others.
//!
//! `cluster_events`: one row per sync event (a job's snapshot) or record-change batch that a
//! gateway published, in publication order (`id`); `body` is the event as JSON, `origin` the
//! publishing process. A `NOTIFY` carries only the row's id (payloads are capped at 8,000 bytes);
//! every other replica reads the row. Rows are pruned after a few minutes. Unused on SQLite,
//! which is single-process.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table("cluster_events")
                .if_not_exists()
                .col(big_pk_auto("id"))
                .col(string("origin"))
                .col(string("location_id"))
                .col(string("kind"))
                .col(text("body"))
                .col(big_integer("created_at"))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("cluster_events_created")
                .table("cluster_events")
                .col("created_at")
                .if_not_exists()
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table("cluster_events").if_exists().to_owned())
            .await
    }
}
