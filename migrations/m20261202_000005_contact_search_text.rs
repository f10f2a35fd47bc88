//! A folded search column on contacts: name, e-mail and phone case-folded with Unicode rules in
//! Rust, so the text filter is case-insensitive for every script on SQLite (whose `LOWER` and
//! `LIKE` fold ASCII only) and PostgreSQL alike. Existing rows are folded here; new ones at upsert.

use sea_orm::{ConnectionTrait, Statement};
use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// The fold of this migration's time, kept here so the migration never changes with the code's.
fn fold(text: &str) -> String {
    text.to_lowercase()
        .chars()
        .flat_map(|c| match c {
            'ς' => vec!['σ'],
            'ß' => vec!['s', 's'],
            other => vec![other],
        })
        .collect()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table("contacts")
                .add_column(text("search_text").default(""))
                .to_owned(),
        )
        .await?;
        let db = m.get_connection();
        let backend = db.get_database_backend();
        let rows = db
            .query_all_raw(Statement::from_string(
                backend,
                "SELECT id, sort_name, email, phone FROM contacts",
            ))
            .await?;
        for row in rows {
            let id: String = row.try_get("", "id")?;
            let parts: Vec<String> = ["sort_name", "email", "phone"]
                .iter()
                .map(|col| {
                    row.try_get::<Option<String>>("", col)
                        .map(|v| fold(&v.unwrap_or_default()))
                })
                .collect::<Result<_, _>>()?;
            let update = Query::update()
                .table("contacts")
                .value("search_text", parts.join("\n"))
                .and_where(Expr::col("id").eq(id))
                .to_owned();
            db.execute(&update).await?;
        }
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table("contacts")
                .drop_column("search_text")
                .to_owned(),
        )
        .await
    }
}
