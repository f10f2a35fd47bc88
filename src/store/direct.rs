//! Reads of an SQLite file on the caller's own thread, through read-only connections of their
//! own (`rusqlite` over the same `libsqlite3-sys` as sqlx), instead of through sqlx's pool.
//!
//! Why: sqlx-sqlite runs each pooled connection on a thread of its own and hands every command
//! and every result over a channel, so each statement costs two thread wake-ups. A cold
//! dashboard request runs a dozen statements; `perf` on the uncached page (10,000 contacts,
//! concurrency 8, 2026-12-01) put 43% of the gateway's samples on the `sqlx-sqlite-worker`
//! threads and 15-20% in the kernel's task switching (`finish_task_switch`,
//! `_raw_spin_unlock_irqrestore`), against a few percent of SQLite's own work. A read here is the
//! statement itself: no hop, no channel, no row copied into sqlx's types.
//!
//! The statements are SQLite's point and range reads of the cache (milliseconds at most for a
//! `first: 500` page), run where the request runs, as the API-key check already was. In WAL mode
//! a reader never waits for the writer; `busy_timeout` bounds the rare waits (WAL recovery). A
//! connection that fails is dropped (a new one is opened on the next read) and the caller reads
//! through the pool instead, so an error here costs time, never an answer.

use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rusqlite::OpenFlags;
use rusqlite::types::Value as SqlValue;
use sea_orm::{Statement, Value};

use super::lock;

/// Idle connections kept for the next reads. Reads run on the caller's thread without awaiting,
/// so no more are ever in use at once than threads that read (the runtime's workers and its
/// blocking threads); more are opened when needed and closed when they would exceed this.
const IDLE_CONNECTIONS: usize = 4;

/// Prepared statements each connection keeps (rusqlite's default is 16). A relation's statement
/// differs by the number of keys in its `IN` list, so a page of another size is another text.
const STATEMENT_CACHE: usize = 128;

/// Read-only connections to one SQLite file, checked out one per read.
pub(super) struct DirectReader {
    path: PathBuf,
    idle: Mutex<Vec<rusqlite::Connection>>,
    /// Statements read here, and reads that failed and went to the pool ([`Store::direct_reads`]).
    reads: AtomicU64,
    failures: AtomicU64,
}

/// Why a read did not run here: the caller then reads through the pool.
#[derive(Debug, thiserror::Error)]
pub(super) enum DirectError {
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    /// A bound value of a type the reads here do not bind.
    #[error("a value of an unsupported type is bound: {0:?}")]
    Unsupported(Box<Value>),
}

impl DirectReader {
    /// A reader of the database file `url` names (`sqlite://FILE?...`); `None` for PostgreSQL
    /// and in-memory databases (another connection would see another database).
    pub(super) fn for_url(url: &str) -> Option<Self> {
        Some(Self {
            path: super::sqlite_file(url)?.into(),
            idle: Mutex::new(Vec::new()),
            reads: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        })
    }

    /// Runs `read` on an idle connection (or a new one) and puts the connection back, unless the
    /// read failed.
    ///
    /// # Errors
    /// SQLite's, when the file cannot be opened (not created yet) or `read` fails.
    pub(super) fn with<T>(
        &self,
        read: impl FnOnce(&rusqlite::Connection) -> Result<T, DirectError>,
    ) -> Result<T, DirectError> {
        let idle = lock(&self.idle).pop();
        let connection = match idle {
            Some(connection) => connection,
            None => self.open()?,
        };
        let result = read(&connection);
        if result.is_ok() {
            let mut idle = lock(&self.idle);
            if idle.len() < IDLE_CONNECTIONS {
                idle.push(connection);
            }
        }
        result
    }

    fn open(&self) -> rusqlite::Result<rusqlite::Connection> {
        let connection = rusqlite::Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        connection.busy_timeout(Duration::from_millis(100))?;
        connection.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        Ok(connection)
    }

    /// Up to `limit` rows of `statement` (sea-query's SQLite rendering), each mapped by `map`.
    ///
    /// # Errors
    /// [`DirectError::Unsupported`] for a bound value that is not a boolean, integer, float or
    /// string; SQLite's otherwise.
    pub(super) fn rows<T>(
        &self,
        statement: &Statement,
        limit: usize,
        mut map: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>, DirectError> {
        let values = match &statement.values {
            Some(values) => values
                .0
                .iter()
                .map(sql_value)
                .collect::<Result<Vec<_>, _>>()?,
            None => Vec::new(),
        };
        self.with(|connection| {
            let mut prepared = connection.prepare_cached(&statement.sql)?;
            let mut rows = prepared.query(rusqlite::params_from_iter(values))?;
            let mut mapped = Vec::new();
            while mapped.len() < limit {
                match rows.next()? {
                    Some(row) => mapped.push(map(row)?),
                    None => break,
                }
            }
            Ok(mapped)
        })
    }
}

/// `value` as SQLite binds it (sea-query binds booleans as integers on SQLite).
fn sql_value(value: &Value) -> Result<SqlValue, DirectError> {
    let unsupported = || DirectError::Unsupported(Box::new(value.clone()));
    Ok(match value {
        Value::Bool(v) => v.map_or(SqlValue::Null, |b| SqlValue::Integer(b.into())),
        Value::TinyInt(v) => v.map_or(SqlValue::Null, |n| SqlValue::Integer(n.into())),
        Value::SmallInt(v) => v.map_or(SqlValue::Null, |n| SqlValue::Integer(n.into())),
        Value::Int(v) => v.map_or(SqlValue::Null, |n| SqlValue::Integer(n.into())),
        Value::BigInt(v) => v.map_or(SqlValue::Null, SqlValue::Integer),
        Value::TinyUnsigned(v) => v.map_or(SqlValue::Null, |n| SqlValue::Integer(n.into())),
        Value::SmallUnsigned(v) => v.map_or(SqlValue::Null, |n| SqlValue::Integer(n.into())),
        Value::Unsigned(v) => v.map_or(SqlValue::Null, |n| SqlValue::Integer(n.into())),
        Value::BigUnsigned(v) => match v {
            None => SqlValue::Null,
            Some(n) => SqlValue::Integer(i64::try_from(*n).map_err(|_| unsupported())?),
        },
        Value::Float(v) => v.map_or(SqlValue::Null, |n| SqlValue::Real(n.into())),
        Value::Double(v) => v.map_or(SqlValue::Null, SqlValue::Real),
        Value::String(v) => v
            .as_ref()
            .map_or(SqlValue::Null, |s| SqlValue::Text(s.clone())),
        _ => return Err(unsupported()),
    })
}

impl super::Store {
    /// Statements read on the caller's thread so far ([`DirectReader`], SQLite files only), and
    /// those that failed there and were read through the pool instead: `(reads, failures)`.
    /// Tests diff it around a request; `(0, 0)` on PostgreSQL and in-memory SQLite.
    pub fn direct_reads(&self) -> (u64, u64) {
        self.direct.as_ref().map_or((0, 0), |reader| {
            (
                reader.reads.load(Ordering::Relaxed),
                reader.failures.load(Ordering::Relaxed),
            )
        })
    }

    /// The first column of the first row of `statement`, read on the caller's thread when this
    /// is an SQLite file ([`DirectReader`]) and counted as one statement. `None` when there is
    /// no such reader or the read failed (logged): the caller then reads through the pool.
    pub(super) fn read_direct<T: rusqlite::types::FromSql>(
        &self,
        statement: &impl sea_orm::StatementBuilder,
    ) -> Option<Option<T>> {
        self.read_direct_rows(statement, 1, |row| row.get(0))
            .map(|mut first| first.pop())
    }

    /// Up to `limit` rows of `statement`, each mapped by `map`, read as [`Store::read_direct`]
    /// reads.
    pub(super) fn read_direct_rows<T>(
        &self,
        statement: &impl sea_orm::StatementBuilder,
        limit: usize,
        map: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> Option<Vec<T>> {
        let statement = self.backend().build(statement);
        self.read_direct_with(|reader| reader.rows(&statement, limit, map))
    }

    /// Runs one statement through `read` on this SQLite file's [`DirectReader`], counted as one
    /// statement (and one direct read). `None` when there is no such reader or the read failed
    /// (logged and counted): the caller then reads through the pool.
    pub(super) fn read_direct_with<T>(
        &self,
        read: impl FnOnce(&DirectReader) -> Result<T, DirectError>,
    ) -> Option<T> {
        let reader = self.direct.as_ref()?;
        match read(reader) {
            Ok(value) => {
                self.statements.fetch_add(1, Ordering::Relaxed);
                reader.reads.fetch_add(1, Ordering::Relaxed);
                Some(value)
            }
            Err(error) => {
                reader.failures.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(error = %error, "direct read failed: reading through the pool");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_bind_as_sqlite_stores_them() {
        assert_eq!(
            sql_value(&Value::Bool(Some(true))).unwrap(),
            SqlValue::Integer(1)
        );
        assert_eq!(
            sql_value(&Value::String(Some("a".into()))).unwrap(),
            SqlValue::Text("a".into())
        );
        assert_eq!(sql_value(&Value::BigInt(None)).unwrap(), SqlValue::Null);
        assert!(matches!(
            sql_value(&Value::Bytes(Some(vec![1]))),
            Err(DirectError::Unsupported(_))
        ));
    }
}
