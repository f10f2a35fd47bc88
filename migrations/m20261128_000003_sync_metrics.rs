//! What a sync stage cost (calls, retries, 429s, time waiting for the rate limiter), and whether
//! GHL refused a location's credentials.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        // SQLite adds one column per ALTER TABLE.
        for column in ["calls", "retries", "rate_limited", "waited_ms"] {
            m.alter_table(
                Table::alter()
                    .table("sync_stages")
                    .add_column(big_integer(column).default(0))
                    .to_owned(),
            )
            .await?;
        }
        // Set when GHL refuses the credentials; cleared by the next successful sync.
        m.alter_table(
            Table::alter()
                .table("locations")
                .add_column(text_null("auth_error"))
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for column in ["calls", "retries", "rate_limited", "waited_ms"] {
            m.alter_table(
                Table::alter()
                    .table("sync_stages")
                    .drop_column(column)
                    .to_owned(),
            )
            .await?;
        }
        m.alter_table(
            Table::alter()
                .table("locations")
                .drop_column("auth_error")
                .to_owned(),
        )
        .await
    }
}
