//! Webhook bookkeeping: the `webhookId`s already received (GHL may deliver an event twice, and a
//! replay must be refused by every replica and after a restart), each with its arrival time so
//! that ids older than the replay window can be pruned; and when a location's app was uninstalled
//! (`UNINSTALL`), which revokes its credentials until it is connected again.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table("webhook_events")
                .if_not_exists()
                .col(string("webhook_id").primary_key())
                // UTC milliseconds of the first arrival.
                .col(big_integer("received_at"))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("webhook_events_received")
                .table("webhook_events")
                .col("received_at")
                .if_not_exists()
                .to_owned(),
        )
        .await?;
        m.alter_table(
            Table::alter()
                .table("credentials")
                .add_column(big_integer_null("revoked_at"))
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table("credentials")
                .drop_column("revoked_at")
                .to_owned(),
        )
        .await?;
        m.drop_table(Table::drop().table("webhook_events").if_exists().to_owned())
            .await
    }
}
