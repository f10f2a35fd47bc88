//! The cache schema: one table per GHL resource, the sync bookkeeping, and credentials.
//!
//! Conventions, which every later migration keeps:
//! - GHL ids are the primary keys (text); every row carries its `location_id`.
//! - Times are UTC milliseconds since the epoch in `BIGINT` columns: the same type and the same
//!   ordering on SQLite and PostgreSQL, and cheap keyset comparisons.
//! - Rows GHL no longer has are marked `deleted`, never dropped, so a FULL sync can reconcile;
//!   `seen_at` is the sync mark of the run that last saw the row.
//! - No foreign key from a child (task, conversation, opportunity) to its contact: stages run in
//!   parallel and GHL may return a child before (or without) its contact.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// Creates `name` unless it exists.
fn table(name: &'static str) -> TableCreateStatement {
    Table::create().table(name).if_not_exists().to_owned()
}

/// The columns every synced resource row has.
fn synced(mut t: TableCreateStatement) -> TableCreateStatement {
    t.col(boolean("deleted").default(false))
        .col(big_integer("seen_at").default(0));
    t
}

fn index(name: &'static str, table: &'static str, cols: &[&'static str]) -> IndexCreateStatement {
    let mut i = Index::create();
    i.name(name).table(table).if_not_exists();
    for c in cols {
        i.col(*c);
    }
    i.to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        let tables = [
            synced(
                table("locations")
                    .col(string("id").primary_key())
                    .col(string_null("name"))
                    .col(string_null("company_id"))
                    .col(string_null("timezone"))
                    .col(big_integer("created_at").default(0))
                    .to_owned(),
            ),
            synced(
                table("users")
                    .col(string("location_id"))
                    .col(string("id"))
                    .col(string_null("name"))
                    .col(string_null("first_name"))
                    .col(string_null("last_name"))
                    .col(string_null("email"))
                    .primary_key(Index::create().col("location_id").col("id"))
                    .to_owned(),
            ),
            synced(
                table("custom_fields")
                    .col(string("id").primary_key())
                    .col(string("location_id"))
                    .col(string_null("name"))
                    .col(string_null("field_key"))
                    .col(string_null("data_type"))
                    .col(string_null("model"))
                    .col(integer("position").default(0))
                    .to_owned(),
            ),
            synced(
                table("contacts")
                    .col(string("id").primary_key())
                    .col(string("location_id"))
                    .col(string_null("first_name"))
                    .col(string_null("last_name"))
                    .col(string_null("name"))
                    // Lower-cased display name: the NAME keyset order and the text filter.
                    .col(string("sort_name").default(""))
                    .col(string_null("email"))
                    .col(string_null("phone"))
                    .col(string_null("company_name"))
                    .col(string_null("source"))
                    .col(string_null("assigned_to"))
                    // JSON array of the tags, for display; `contact_tags` serves the tag filter.
                    .col(text("tags").default("[]"))
                    .col(big_integer("date_added"))
                    .col(big_integer("date_updated"))
                    .to_owned(),
            ),
            table("contact_tags")
                .col(string("contact_id"))
                .col(string("tag"))
                .col(string("location_id"))
                .primary_key(Index::create().col("contact_id").col("tag"))
                .foreign_key(
                    ForeignKey::create()
                        .from("contact_tags", "contact_id")
                        .to("contacts", "id")
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
            table("contact_custom_values")
                .col(string("contact_id"))
                .col(string("field_id"))
                .col(string("location_id"))
                // The value as GHL sent it, JSON-encoded (string, number, array or object).
                .col(text("value"))
                .primary_key(Index::create().col("contact_id").col("field_id"))
                .foreign_key(
                    ForeignKey::create()
                        .from("contact_custom_values", "contact_id")
                        .to("contacts", "id")
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
            synced(
                table("tasks")
                    .col(string("id").primary_key())
                    .col(string("location_id"))
                    .col(string_null("contact_id"))
                    .col(string_null("title"))
                    .col(text_null("body"))
                    .col(big_integer_null("due_date"))
                    .col(boolean("completed").default(false))
                    .col(string_null("assigned_to"))
                    .col(big_integer_null("date_added"))
                    .col(big_integer_null("date_updated"))
                    .to_owned(),
            ),
            synced(
                table("conversations")
                    .col(string("id").primary_key())
                    .col(string("location_id"))
                    .col(string_null("contact_id"))
                    .col(string_null("type"))
                    .col(text_null("last_message_body"))
                    .col(string_null("last_message_type"))
                    .col(big_integer_null("last_message_date"))
                    .col(integer("unread_count").default(0))
                    .col(string_null("assigned_to"))
                    .col(big_integer_null("date_added"))
                    .col(big_integer_null("date_updated"))
                    .to_owned(),
            ),
            synced(
                table("pipelines")
                    .col(string("id").primary_key())
                    .col(string("location_id"))
                    .col(string_null("name"))
                    .to_owned(),
            ),
            synced(
                table("pipeline_stages")
                    .col(string("id").primary_key())
                    .col(string("pipeline_id"))
                    .col(string("location_id"))
                    .col(string_null("name"))
                    .col(integer("position").default(0))
                    .foreign_key(
                        ForeignKey::create()
                            .from("pipeline_stages", "pipeline_id")
                            .to("pipelines", "id")
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            ),
            synced(
                table("opportunities")
                    .col(string("id").primary_key())
                    .col(string("location_id"))
                    .col(string_null("contact_id"))
                    .col(string_null("pipeline_id"))
                    .col(string_null("stage_id"))
                    .col(string_null("name"))
                    .col(string_null("status"))
                    .col(double_null("monetary_value"))
                    .col(string_null("assigned_to"))
                    .col(big_integer_null("created_at"))
                    .col(big_integer_null("updated_at"))
                    .to_owned(),
            ),
            table("sync_jobs")
                .col(string("id").primary_key())
                .col(string("location_id"))
                .col(string("mode"))
                .col(string("state"))
                // Rows upserted by this run carry this mark in `seen_at`; a FULL run marks the
                // location's rows with an older mark deleted.
                .col(big_integer("mark"))
                .col(big_integer("started_at"))
                .col(big_integer_null("finished_at"))
                .col(text_null("error"))
                .to_owned(),
            table("sync_stages")
                .col(string("job_id"))
                .col(string("name"))
                .col(string("state"))
                .col(big_integer("fetched").default(0))
                .col(big_integer_null("total"))
                .col(big_integer("pages").default(0))
                // The resume point of the stage (an opaque JSON cursor), written with every page.
                .col(text_null("checkpoint"))
                .col(text_null("error"))
                .col(big_integer("updated_at"))
                .primary_key(Index::create().col("job_id").col("name"))
                .foreign_key(
                    ForeignKey::create()
                        .from("sync_stages", "job_id")
                        .to("sync_jobs", "id")
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
            table("credentials")
                .col(string("location_id").primary_key())
                // `private_integration`, `oauth` or `agency`.
                .col(string("kind"))
                .col(text_null("access_token"))
                .col(text_null("refresh_token"))
                .col(big_integer_null("expires_at"))
                .col(string_null("company_id"))
                .col(big_integer("updated_at"))
                .to_owned(),
        ];
        for t in tables {
            m.create_table(t).await?;
        }

        let indexes = [
            index("users_location", "users", &["location_id", "deleted"]),
            index(
                "custom_fields_location",
                "custom_fields",
                &["location_id", "position"],
            ),
            index(
                "contacts_location_added",
                "contacts",
                &["location_id", "date_added", "id"],
            ),
            index(
                "contacts_location_updated",
                "contacts",
                &["location_id", "date_updated", "id"],
            ),
            index(
                "contacts_location_name",
                "contacts",
                &["location_id", "sort_name", "id"],
            ),
            index(
                "contacts_location_seen",
                "contacts",
                &["location_id", "seen_at"],
            ),
            index(
                "contact_tags_location_tag",
                "contact_tags",
                &["location_id", "tag", "contact_id"],
            ),
            index("tasks_contact", "tasks", &["contact_id"]),
            index("tasks_location_seen", "tasks", &["location_id", "seen_at"]),
            index("conversations_contact", "conversations", &["contact_id"]),
            index(
                "conversations_location_seen",
                "conversations",
                &["location_id", "seen_at"],
            ),
            index("opportunities_contact", "opportunities", &["contact_id"]),
            index(
                "opportunities_location_seen",
                "opportunities",
                &["location_id", "seen_at"],
            ),
            index("pipelines_location", "pipelines", &["location_id"]),
            index(
                "pipeline_stages_pipeline",
                "pipeline_stages",
                &["pipeline_id", "position"],
            ),
            index(
                "sync_jobs_location_started",
                "sync_jobs",
                &["location_id", "started_at"],
            ),
            index("sync_jobs_state", "sync_jobs", &["state"]),
        ];
        for i in indexes {
            m.create_index(i).await?;
        }
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for t in [
            "credentials",
            "sync_stages",
            "sync_jobs",
            "opportunities",
            "pipeline_stages",
            "pipelines",
            "conversations",
            "tasks",
            "contact_custom_values",
            "contact_tags",
            "contacts",
            "custom_fields",
            "users",
            "locations",
        ] {
            m.drop_table(Table::drop().table(t).if_exists().to_owned())
                .await?;
        }
        Ok(())
    }
}
