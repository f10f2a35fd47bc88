//! API keys in the database, and the start-up check for stored GHL tokens.
//!
//! The store sees only hashes: generating keys and hashing them is `auth`'s job. Nothing here
//! logs a hash or a key.

use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, DbErr, EntityTrait, IntoActiveModel, PaginatorTrait,
    QueryFilter, QueryOrder,
};

use std::sync::Mutex;

use rusqlite::OptionalExtension;

use super::direct::{DirectError, DirectReader};
use super::entities::credential;
use super::{Store, StoreError, lock};

/// API-key reads through the pool (PostgreSQL; an in-memory SQLite), shared by the requests
/// that wait at once. Every request needs its key read, so that a key revoked by another process
/// is refused on the very next request; on PostgreSQL each read is a round trip to the server,
/// and at concurrency 32 those reads capped cache hits at about 7,000 req/s (`bench --only read`,
/// 2026-11-30). A request joins the batch that has not started yet, never one in flight: its
/// read still begins after it arrived, so it sees every revocation committed before. One
/// statement (`hash IN (..)`) answers the batch; a lone request is a batch of one.
#[derive(Default)]
pub struct KeyBatches {
    state: Mutex<Batching>,
}

/// A key's row, or the database's error as text (one error answers a whole batch).
type KeyAnswer = Result<Option<api_key::Model>, String>;

#[derive(Default)]
struct Batching {
    /// A task is reading batches.
    reading: bool,
    /// Requests waiting for the next batch: their key's hash and where its row goes.
    waiting: Vec<(String, tokio::sync::oneshot::Sender<KeyAnswer>)>,
}

/// While set, the batch reader is running: dropped early (a panic, the runtime shutting down),
/// it lets the next request start another and fails the waiting ones instead of leaving them.
struct Reading<'a>(Option<&'a KeyBatches>);

impl Drop for Reading<'_> {
    fn drop(&mut self) {
        if let Some(batches) = self.0 {
            let mut state = lock(&batches.state);
            state.reading = false;
            // Dropping their senders answers them with an error.
            state.waiting.clear();
        }
    }
}

/// The `api_keys` table.
pub mod api_key {
    use sea_orm::entity::prelude::*;

    /// One API key. `hash` is the SHA-256 of the key (hex); `location_ids` a JSON array.
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "api_keys")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub name: Option<String>,
        pub hash: String,
        pub location_ids: String,
        pub created_at: i64,
        pub revoked_at: Option<i64>,
        pub last_used_at: Option<i64>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}
    impl ActiveModelBehavior for ActiveModel {}

    impl Model {
        /// The locations the key reaches (an unreadable list reaches none).
        pub fn locations(&self) -> Vec<String> {
            serde_json::from_str(&self.location_ids).unwrap_or_default()
        }
    }
}

impl Store {
    /// Stores a new key (its hash, never the key).
    pub async fn insert_api_key(&self, key: api_key::Model) -> Result<(), StoreError> {
        key.into_active_model().reset_all().insert(&self.db).await?;
        Ok(())
    }

    /// The key with this hash, revoked or not. One statement (counted in
    /// [`Store::statements`]); on SQLite it runs on the caller's thread
    /// ([`DirectReader::api_key_by_hash`]), else through the pool.
    pub async fn api_key_by_hash(&self, hash: &str) -> Result<Option<api_key::Model>, StoreError> {
        // The pool's connection reads it when the file's own read fails; nothing is lost but time.
        if let Some(row) = self.read_direct_with(|reader| reader.api_key_by_hash(hash)) {
            return Ok(row);
        }
        self.api_key_by_hash_batched(hash).await
    }

    /// [`Store::api_key_by_hash`] through the pool ([`KeyBatches`]): joins the requests waiting
    /// for the next read, or starts it.
    async fn api_key_by_hash_batched(
        &self,
        hash: &str,
    ) -> Result<Option<api_key::Model>, StoreError> {
        let (sender, answer) = tokio::sync::oneshot::channel();
        let start = {
            let mut state = lock(&self.key_batches.state);
            state.waiting.push((hash.to_owned(), sender));
            !std::mem::replace(&mut state.reading, true)
        };
        if start {
            // Its own task: a request dropped mid-read (its client went away) must not leave
            // the others waiting.
            let store = self.clone();
            tokio::spawn(async move { store.read_key_batches().await });
        }
        match answer.await {
            Ok(answer) => answer.map_err(|message| StoreError::Db(DbErr::Custom(message))),
            Err(_) => Err(StoreError::Db(DbErr::Custom(
                "the API-key reader stopped (the gateway is shutting down)".into(),
            ))),
        }
    }

    /// Reads the waiting requests' keys, one statement per batch, until none waits.
    async fn read_key_batches(&self) {
        let mut reading = Reading(Some(&self.key_batches));
        loop {
            let batch = {
                let mut state = lock(&self.key_batches.state);
                if state.waiting.is_empty() {
                    state.reading = false;
                    reading.0 = None;
                    return;
                }
                std::mem::take(&mut state.waiting)
            };
            let mut hashes: Vec<&str> = batch.iter().map(|(hash, _)| hash.as_str()).collect();
            hashes.sort_unstable();
            hashes.dedup();
            let rows = api_key::Entity::find()
                .filter(api_key::Column::Hash.is_in(hashes))
                .all(&self.db)
                .await;
            match rows {
                Ok(rows) => {
                    for (hash, sender) in batch {
                        let row = rows.iter().find(|row| row.hash == hash).cloned();
                        let _ = sender.send(Ok(row));
                    }
                }
                Err(error) => {
                    let message = error.to_string();
                    for (_, sender) in batch {
                        let _ = sender.send(Err(message.clone()));
                    }
                }
            }
        }
    }

    /// Every key, oldest first.
    pub async fn api_keys(&self) -> Result<Vec<api_key::Model>, StoreError> {
        Ok(api_key::Entity::find()
            .order_by_asc(api_key::Column::CreatedAt)
            .order_by_asc(api_key::Column::Id)
            .all(&self.db)
            .await?)
    }

    /// Revokes a key; `false` if there is no such key or it was already revoked.
    pub async fn revoke_api_key(&self, id: &str, now_ms: i64) -> Result<bool, StoreError> {
        let result = api_key::Entity::update_many()
            .col_expr(api_key::Column::RevokedAt, Expr::value(now_ms))
            .filter(api_key::Column::Id.eq(id))
            .filter(api_key::Column::RevokedAt.is_null())
            .exec(&self.db)
            .await?;
        Ok(result.rows_affected > 0)
    }

    /// Records a use of the key, at most once per `interval_ms` (a write per request would
    /// contend with the sync's writer on SQLite).
    pub async fn touch_api_key(
        &self,
        id: &str,
        now_ms: i64,
        interval_ms: i64,
    ) -> Result<(), StoreError> {
        api_key::Entity::update_many()
            .col_expr(api_key::Column::LastUsedAt, Expr::value(now_ms))
            .filter(api_key::Column::Id.eq(id))
            .filter(
                Condition::any()
                    .add(api_key::Column::LastUsedAt.is_null())
                    .add(api_key::Column::LastUsedAt.lt(now_ms - interval_ms)),
            )
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// Whether any GHL access or refresh token is stored. The app refuses to start without the
    /// secrets key when there are, since it could neither read nor write them.
    pub async fn has_stored_tokens(&self) -> Result<bool, StoreError> {
        let count = credential::Entity::find()
            .filter(
                Condition::any()
                    .add(credential::Column::AccessToken.is_not_null())
                    .add(credential::Column::RefreshToken.is_not_null()),
            )
            .count(&self.db)
            .await?;
        Ok(count > 0)
    }
}

/// What [`DirectReader::api_key_by_hash`] reads: the columns of [`api_key::Model`], in its order.
const KEY_BY_HASH: &str = "SELECT id, name, hash, location_ids, created_at, revoked_at, \
                           last_used_at FROM api_keys WHERE hash = ?1";

impl DirectReader {
    /// The `api_keys` row with this hash, read on the caller's thread, revoked or not.
    ///
    /// Every authenticated request reads its key: a revocation made by `keys revoke` in another
    /// process must refuse the very next request, so the row cannot be kept in memory. Through the
    /// pool, that read is a hop to a pooled connection's worker thread (sqlx-sqlite runs each
    /// connection on a thread of its own) and back: on a warm response-cache hit it was the largest
    /// cost (the same hit answered 2.5x the requests a second with the admin key, which reads no
    /// row). Here it is one indexed point read (`api_keys_hash`) of a few microseconds. Any error
    /// drops the connection and the caller reads through the pool instead.
    ///
    /// # Errors
    /// SQLite's, when the file cannot be opened (not created yet), the table is missing (before
    /// the migrations ran) or the read fails.
    pub(super) fn api_key_by_hash(
        &self,
        hash: &str,
    ) -> Result<Option<api_key::Model>, DirectError> {
        self.with(|connection| {
            Ok(connection
                .prepare_cached(KEY_BY_HASH)?
                .query_row([hash], |row| {
                    Ok(api_key::Model {
                        id: row.get(0)?,
                        name: row.get(1)?,
                        hash: row.get(2)?,
                        location_ids: row.get(3)?,
                        created_at: row.get(4)?,
                        revoked_at: row.get(5)?,
                        last_used_at: row.get(6)?,
                    })
                })
                .optional()?)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::DatabaseConfig;

    fn key(id: &str, hash: &str) -> api_key::Model {
        api_key::Model {
            id: id.into(),
            name: Some("reader test".into()),
            hash: hash.into(),
            location_ids: r#"["loc-1"]"#.into(),
            created_at: 1,
            revoked_at: None,
            last_used_at: None,
        }
    }

    #[tokio::test]
    async fn an_sqlite_file_s_keys_are_read_on_the_caller_s_thread_and_see_other_connections_writes()
     {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("keys.db").display());
        let store = Store::open(&DatabaseConfig::new(url.clone()))
            .await
            .unwrap();
        let reader = store.direct.as_ref().expect("a file has a direct reader");
        store.insert_api_key(key("key_a", "hash-a")).await.unwrap();

        let before = store.statements();
        let found = store.api_key_by_hash("hash-a").await.unwrap();
        assert_eq!(found, Some(key("key_a", "hash-a")));
        assert_eq!(
            store.statements(),
            before + 1,
            "the read counts as one statement"
        );
        // Read by the reader itself, not by the pool after a failure.
        assert_eq!(
            reader.api_key_by_hash("hash-a").unwrap(),
            Some(key("key_a", "hash-a"))
        );
        assert_eq!(reader.api_key_by_hash("hash-b").unwrap(), None);

        // A revocation committed by another process's connection is seen by the next read.
        let other = Store::connect(&DatabaseConfig::new(url)).await.unwrap();
        assert!(other.revoke_api_key("key_a", 7).await.unwrap());
        let revoked = reader.api_key_by_hash("hash-a").unwrap().unwrap();
        assert_eq!(revoked.revoked_at, Some(7));
        assert_eq!(
            store
                .api_key_by_hash("hash-a")
                .await
                .unwrap()
                .unwrap()
                .revoked_at,
            Some(7)
        );
    }

    #[tokio::test]
    async fn key_reads_through_the_pool_share_a_statement_and_see_what_was_committed_before() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("keys.db").display());
        let store = Store::open(&DatabaseConfig::new(url.clone()))
            .await
            .unwrap();
        store.insert_api_key(key("key_a", "hash-a")).await.unwrap();
        store.insert_api_key(key("key_b", "hash-b")).await.unwrap();

        // 40 requests at once (PostgreSQL's path; the SQLite file's own reader is bypassed).
        let before = store.statements();
        let hashes = ["hash-a", "hash-b", "hash-unknown"];
        let reads = (0..40).map(|i| store.api_key_by_hash_batched(hashes[i % 3]));
        let rows = futures::future::join_all(reads).await;
        let read = store.statements() - before;
        assert!(
            (1..=2).contains(&read),
            "40 waiting requests are answered by one or two statements, not {read}"
        );
        for (i, row) in rows.into_iter().enumerate() {
            let row = row.unwrap();
            match hashes[i % 3] {
                "hash-a" => assert_eq!(row, Some(key("key_a", "hash-a"))),
                "hash-b" => assert_eq!(row, Some(key("key_b", "hash-b"))),
                _ => assert_eq!(row, None),
            }
        }

        // A revocation committed by another process is seen by the next request, and a lone
        // request is a batch of one statement.
        let other = Store::connect(&DatabaseConfig::new(url)).await.unwrap();
        assert!(other.revoke_api_key("key_a", 7).await.unwrap());
        let before = store.statements();
        let row = store.api_key_by_hash_batched("hash-a").await.unwrap();
        assert_eq!(row.unwrap().revoked_at, Some(7));
        assert_eq!(store.statements(), before + 1);
    }

    #[test]
    fn only_sqlite_files_get_a_direct_reader() {
        assert!(DirectReader::for_url("sqlite://cache.db?mode=rwc").is_some());
        assert!(DirectReader::for_url("sqlite::memory:").is_none());
        assert!(DirectReader::for_url("sqlite://x.db?mode=memory").is_none());
        assert!(DirectReader::for_url("postgres://postgres@127.0.0.1/db").is_none());
    }
}
