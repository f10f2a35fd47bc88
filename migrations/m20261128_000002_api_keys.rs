//! API keys: who may read which locations. A key is shown once when created and stored only as
//! its SHA-256 hash (`hash`, unique); `location_ids` is a JSON array of the locations it reaches.
//! Revoked keys keep their row (`revoked_at`), so `keys list` can still show them.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table("api_keys")
                .if_not_exists()
                .col(string("id").primary_key())
                .col(string_null("name"))
                .col(string("hash"))
                .col(text("location_ids"))
                .col(big_integer("created_at"))
                .col(big_integer_null("revoked_at"))
                .col(big_integer_null("last_used_at"))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("api_keys_hash")
                .table("api_keys")
                .col("hash")
                .unique()
                .if_not_exists()
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table("api_keys").if_exists().to_owned())
            .await
    }
}
