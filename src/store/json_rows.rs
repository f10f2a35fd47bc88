//! A select's rows as one JSON array in one result row: SQLite's `json_group_array(json_object(..))`
//! or PostgreSQL's `json_agg(..)`, decoded with serde into the entity's models.
//!
//! Why: on SQLite every result row crosses sqlx's worker thread as a channel message (and often a
//! thread wake-up), with an allocation per column; a 50-contact dashboard page reads some 400 rows
//! across 9 statements, and a profile showed the channel, the wake-ups and the allocations above
//! SQLite's own work. One JSON text per statement crosses once; the database builds it in C, and
//! serde decodes it straight into the models. PostgreSQL gains less (one `DataRow` per row is
//! cheap), but the same code serves both.
//!
//! The JSON names are the column names (`conversations.type` decodes into `kind` through a serde
//! rename on the model). SQLite stores booleans as integers, so boolean columns are rendered as
//! JSON `true`/`false`; nullable booleans are not supported (no entity has one).

use sea_orm::sea_query::{Alias, Expr, Order, Query, SelectStatement};
use sea_orm::{
    ColumnTrait, ColumnType, ConnectionTrait, DbBackend, EntityTrait, IdenStatic, Iterable,
    QueryTrait, Select,
};
use serde::de::DeserializeOwned;

use super::{Store, StoreError};

/// The alias of the inner select in the aggregate's `FROM`.
const ROWS: &str = "r";

impl Store {
    /// The rows of `select` (whose own ORDER BY and LIMIT pick them) in `order`, read as one JSON
    /// array in one statement and one result row.
    ///
    /// Errors: [`StoreError::Db`] from the database, [`StoreError::Json`] if the array does not
    /// decode into `E::Model` (a column whose type the mapping does not render).
    pub(super) async fn all_as_json<E>(
        &self,
        select: Select<E>,
        order: &[(E::Column, Order)],
    ) -> Result<Vec<E::Model>, StoreError>
    where
        E: EntityTrait,
        E::Model: DeserializeOwned,
    {
        let inner = select.into_query();
        let statement = aggregate::<E>(self.backend(), inner, order);
        let text: Option<String> = match self.read_direct::<Option<String>>(&statement) {
            Some(text) => text.flatten(),
            None => match self.db.query_one(&statement).await? {
                Some(row) => row.try_get_by_index(0)?,
                None => None,
            },
        };
        match text {
            Some(text) => Ok(serde_json::from_str(&text)?),
            None => Ok(Vec::new()),
        }
    }
}

/// `SELECT <array of inner's rows in order> FROM (<inner>) AS r`.
fn aggregate<E: EntityTrait>(
    backend: DbBackend,
    inner: SelectStatement,
    order: &[(E::Column, Order)],
) -> SelectStatement {
    let quote = |name: &str| format!("\"{ROWS}\".\"{name}\"");
    let order_by = order
        .iter()
        .map(|(column, direction)| {
            let direction = match direction {
                Order::Desc => "DESC",
                _ => "ASC",
            };
            format!("{} {direction}", quote(column.as_str()))
        })
        .collect::<Vec<_>>()
        .join(", ");
    let order_by = if order_by.is_empty() {
        String::new()
    } else {
        format!(" ORDER BY {order_by}")
    };
    let array = match backend {
        DbBackend::Postgres => {
            format!("COALESCE(json_agg(\"{ROWS}\"{order_by}), '[]')::text")
        }
        _ => {
            let fields = E::Column::iter()
                .map(|column| {
                    let name = column.as_str();
                    let value = match column.def().get_column_type() {
                        ColumnType::Boolean => format!(
                            "json(CASE WHEN {} THEN 'true' ELSE 'false' END)",
                            quote(name)
                        ),
                        _ => quote(name),
                    };
                    format!("'{name}', {value}")
                })
                .collect::<Vec<_>>()
                .join(", ");
            format!("json_group_array(json_object({fields}){order_by})")
        }
    };
    Query::select()
        .expr(Expr::cust(array))
        .from_subquery(inner, Alias::new(ROWS))
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::entities::task;
    use sea_orm::QueryFilter;

    fn sql(backend: DbBackend) -> String {
        let inner = task::Entity::find()
            .filter(task::Column::Deleted.eq(false))
            .into_query();
        backend
            .build(&aggregate::<task::Entity>(
                backend,
                inner,
                &[(task::Column::Id, Order::Asc)],
            ))
            .to_string()
    }

    #[test]
    fn sqlite_renders_booleans_as_json_and_orders_inside_the_aggregate() {
        let sql = sql(DbBackend::Sqlite);
        assert!(
            sql.contains("'completed', json(CASE WHEN \"r\".\"completed\" THEN 'true'"),
            "{sql}"
        );
        assert!(sql.contains("ORDER BY \"r\".\"id\" ASC)"), "{sql}");
        assert!(
            sql.starts_with("SELECT json_group_array(json_object("),
            "{sql}"
        );
    }

    #[test]
    fn postgres_aggregates_whole_rows() {
        let sql = sql(DbBackend::Postgres);
        assert!(
            sql.starts_with(
                "SELECT COALESCE(json_agg(\"r\" ORDER BY \"r\".\"id\" ASC), '[]')::text FROM (SELECT"
            ),
            "{sql}"
        );
    }
}
