//! The local cache: sea-orm entities, the migrations runner, bulk writes and the read queries.
//!
//! `store` knows nothing of GraphQL or of GHL's wire format: it takes and returns `domain` records
//! and entity models. Every write of a page happens in one transaction with multi-row
//! `INSERT ... ON CONFLICT` statements; every read that the GraphQL layer batches takes a slice of
//! keys and issues one statement per [`IN_CHUNK`] keys.

pub mod cluster;
mod credentials;
mod direct;
pub mod entities;
mod jobs;
mod json_rows;
pub mod keys;
mod lists;
mod migrate;
mod read;
mod webhooks;
mod write;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DatabaseTransaction, DbBackend,
    DbErr, TransactionTrait,
};

use tokio::sync::broadcast;
use tokio_util::task::AbortOnDropHandle;

use crate::cache::DataVersions;
use crate::domain::{ChangeEvent, ChangeKind, ChangeOp, ChangeSource, SyncEvent};

use self::cluster::{Cluster, ClusterError, LocationLock};

pub use credentials::RenewalLock;
pub use jobs::{Watermarks, job_state_name, sync_mode_name};
pub use lists::{
    ListKey, ListOrder, OpportunityFilter, OpportunityOrderField, OpportunitySummary, SortValue,
    SummaryBy, TaskFilter, TaskOrderField,
};
pub use read::{
    ContactFilter, ContactKey, ContactOrder, ContactOrderField, Freshness, SortDirection,
};
pub use webhooks::{Applied, Delivery, EventWrite, Receipt};
pub use write::Page;

/// Folds text for the contacts' text filter: Unicode lower case, then the two full case foldings
/// lower case leaves apart (final sigma `ς` to `σ`, `ß` to `ss`), so "ΟΔΥΣ" finds "Οδυσσεύς"
/// and "STRASSE" finds "Straße". Written at upsert and applied to the query, the same in Rust
/// for SQLite and PostgreSQL.
pub fn fold(text: &str) -> String {
    let mut folded = String::with_capacity(text.len());
    for c in text.to_lowercase().chars() {
        match c {
            'ς' => folded.push('σ'),
            'ß' => folded.push_str("ss"),
            other => folded.push(other),
        }
    }
    folded
}

/// Keys per `IN (...)` list. Far below SQLite's 32,766 and PostgreSQL's 65,535 bind parameters,
/// and above the largest page (500), so a page's batch is always one statement.
pub const IN_CHUNK: usize = 5_000;

/// Bind parameters per multi-row `INSERT`, under both databases' limits.
const MAX_BINDS: usize = 30_000;

/// Settings of the cache database.
#[derive(Clone, Debug, clap::Args)]
pub struct DatabaseConfig {
    /// Database URL: `sqlite://FILE?mode=rwc` (embedded, the default) or `postgres://...`.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "sqlite://ghl-gateway.db?mode=rwc"
    )]
    pub database_url: String,
    /// Connections in the pool. SQLite runs in WAL mode, so readers work beside the one writer.
    #[arg(long, env = "DATABASE_MAX_CONNECTIONS", default_value_t = 8)]
    pub database_max_connections: u32,
    /// PostgreSQL replicas: a URL that reaches the server itself (or a session-mode pool) for
    /// the two connections a replica keeps outside its pool, the notification listener and the
    /// holder of location locks. Needed when `DATABASE_URL` goes through a transaction-mode
    /// pooler such as PgBouncer; `DATABASE_URL` by default.
    #[arg(long, env = "DATABASE_DIRECT_URL")]
    pub database_direct_url: Option<String>,
}

impl DatabaseConfig {
    /// The settings of `database_url`, with every other setting at its default.
    pub fn new(database_url: impl Into<String>) -> Self {
        Self {
            database_url: database_url.into(),
            ..crate::config::defaults()
        }
    }
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        crate::config::defaults()
    }
}

/// Why [`Store::open`] failed, each variant naming the setting or step to check.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot open the database (DATABASE_URL)")]
    Connect(#[source] StoreError),
    #[error("cannot apply the database migrations")]
    Migrate(#[source] StoreError),
}

/// Errors of the store. A caller can retry `Busy` (SQLite's writer lock); the rest are bugs or
/// an unreachable database.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error")]
    Db(#[from] DbErr),
    #[error("stored JSON is malformed")]
    Json(#[from] serde_json::Error),
    /// A column holds a value its row mapping does not know (e.g. an unknown job state).
    #[error("stored value is invalid: {0}")]
    Invalid(String),
    /// Replica coordination on PostgreSQL (locks, notifications) failed.
    #[error("replica coordination failed")]
    Cluster(#[from] ClusterError),
    /// Another process serves the same SQLite file.
    #[error(
        "another ghl-gateway process serves this SQLite database ({0}); SQLite is single-process: \
         stop the other one, or run several replicas on PostgreSQL (DATABASE_URL=postgres://...)"
    )]
    InUse(String),
}

/// The cache database, cheap to clone: one reference count (every request clones it a few
/// times, through axum's state and the DataLoaders; a dozen shared counters per clone were 4% of
/// a warm cache hit's CPU, measured with perf).
#[derive(Clone)]
pub struct Store {
    inner: Arc<StoreInner>,
}

impl std::ops::Deref for Store {
    type Target = StoreInner;

    fn deref(&self) -> &StoreInner {
        &self.inner
    }
}

/// What a [`Store`] shares between its clones.
pub struct StoreInner {
    db: DatabaseConnection,
    /// SQLite only: one writing transaction at a time, queued here in FIFO order. SQLite has a
    /// single writer; without the queue, concurrent writers (webhook deliveries, sync pages)
    /// wait for its lock in SQLite's busy handler, which sleeps in steps of milliseconds.
    write_gate: Option<Arc<tokio::sync::Mutex<()>>>,
    statements: Arc<AtomicU64>,
    /// SQLite files: reads on the caller's thread, without the pool ([`direct`]): API keys
    /// and the read queries of the GraphQL layer.
    direct: Option<direct::DirectReader>,
    /// Otherwise: key reads shared by the requests that wait at once ([`keys::KeyBatches`]).
    key_batches: keys::KeyBatches,
    /// Bumped after every committed change to a location's data or sync state: the store's
    /// write paths are the only ones that bump it.
    versions: DataVersions,
    /// `totalCount`s by location and filter, each with the data version it was counted at
    /// ([`read::CountMemo`]).
    counts: read::CountMemo,
    /// Committed batches of record changes, for the `changes` subscription. Bounded: a slow
    /// subscriber lags and skips events rather than holding a write back.
    changes: broadcast::Sender<ChangeEvent>,
    /// Sync events of jobs that other replicas run (PostgreSQL replica mode).
    remote_sync_events: broadcast::Sender<SyncEvent>,
    /// Other replicas' requests to stop a location's sync: (location id, reason).
    remote_stops: broadcast::Sender<(String, String)>,
    /// The URL the store connected with (replica mode opens connections of its own).
    url: Arc<str>,
    /// Replica mode, once [`Store::start_cluster`] ran.
    cluster: Arc<OnceLock<Arc<Cluster>>>,
    /// Webhook deliveries waiting to be committed together (group commit).
    webhooks: Arc<webhooks::WebhookBatches>,
    /// SQLite: gives a closed connection's memory back ([`trim_when_the_pool_shrinks`]).
    _trim_on_shrink: Option<AbortOnDropHandle<()>>,
}

/// How long an SQLite file's connection may stay idle before the pool closes it (it then opens
/// new ones up to its minimum, one). A FULL sync beside reads opens connections that a quiet
/// gateway does not need, and each keeps up to 2 MiB of page cache and its prepared statements:
/// measured in the demo, a FULL sync of 2,000 contacts left 3 more connections and 10 MiB more
/// RSS for good. Opening one again is a file open and four pragmas. PostgreSQL keeps sqlx's
/// default (10 minutes): its connections cost a server process and a handshake each.
pub const SQLITE_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// WAL frames (pages of 4 KiB) after which a commit checkpoints the WAL into the database file:
/// 16,000, a WAL of up to 64 MiB on disk (SQLite's default is 1,000, 4 MiB).
///
/// A sync page of 500 contacts lands on random leaves of the contacts table, its indexes, tags and
/// custom values: by our estimate a few thousand pages a commit at 100,000 contacts (not counted).
/// With the default, most such commits would run a checkpoint (copy those pages into the file,
/// `fsync`), and copy again the pages the next commits dirty again. A traced 100k FULL sync spent
/// 80-150 s of its 172 s with every page write at 250-450 ms (`perf`: `pwrite` 23% of the sync
/// process's samples, `fsync` 6%) and its chains waiting on the writer. With 16,000 frames, 160.5
/// and 159.5 s (172.1 and 179.5 s before, 173.5 s in the bench run), the 10k sync's page writes
/// 6.3 s in all instead of 9.1 s. A reader looks its pages up in the WAL's index (32 KiB of shared
/// memory per 4,096 frames) first; the read benchmarks were not rerun with this setting.
const WAL_AUTOCHECKPOINT_PAGES: u32 = 16_000;

/// How often the SQLite pool's size is looked at ([`trim_when_the_pool_shrinks`]).
const POOL_WATCH: Duration = Duration::from_secs(5);

/// Trims the heap ([`crate::telemetry::memory::trim_after`]) once the pool has fewer
/// connections than when last looked at: a closed connection's page cache went back to glibc's
/// arenas, not to the system.
async fn trim_when_the_pool_shrinks(pool: sea_orm::sqlx::SqlitePool) {
    let mut last = pool.size();
    while !pool.is_closed() {
        tokio::time::sleep(POOL_WATCH).await;
        let size = pool.size();
        if size < last {
            crate::telemetry::memory::trim_after(Duration::ZERO);
        }
        last = size;
    }
}

/// What the sync engine's progress reports go out through to the other replicas: a queue, no
/// I/O in the caller. Cheap to clone; the default relays nothing.
#[derive(Clone, Default)]
pub struct Relay {
    cluster: Arc<OnceLock<Arc<Cluster>>>,
}

impl Relay {
    /// Hands a sync event to the other replicas (nothing without replica mode).
    pub fn sync_event(&self, event: &SyncEvent) {
        if let Some(cluster) = self.cluster.get() {
            cluster.sync_event(event);
        }
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend())
            .finish()
    }
}

/// Run on every new PostgreSQL connection (unless the URL sets `plan_cache_mode` itself, e.g.
/// `?options=-c%20plan_cache_mode%3Dauto`): plan each prepared statement once per connection.
///
/// Why: the gateway's statements have fixed shapes (a page's relations are `contact_id IN ($1 ..
/// $50)`), and PostgreSQL's default (`auto`) planned them again on every execution: its custom
/// plans never cost enough more than the generic one to be dropped. That was 0.2-2.3 ms of
/// planning per statement, about 2 ms of the server's CPU per dashboard page, and for the page's
/// opportunities a sequential scan of the location's 3,900 rows (1.6 ms) where the generic plan
/// probes the `contact_id` index (0.3 ms). Measured on PostgreSQL 15 with `log_min_duration_statement`
/// and `EXPLAIN ANALYZE` (README, Benchmarks: cold on PostgreSQL).
const GENERIC_PLANS: &str = "SET plan_cache_mode = force_generic_plan";

impl Store {
    /// Connects (creating an SQLite file when the URL says `mode=rwc`) and counts every statement.
    pub async fn connect(config: &DatabaseConfig) -> Result<Self, StoreError> {
        let mut options = ConnectOptions::new(config.database_url.clone());
        options
            .max_connections(config.database_max_connections.max(1))
            .min_connections(1)
            .connect_timeout(Duration::from_secs(10))
            .acquire_timeout(Duration::from_secs(30))
            .sqlx_logging(false)
            .map_sqlx_sqlite_opts(|o| {
                use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
                // WAL: readers never wait for the sync's writer. NORMAL is durable in WAL mode
                // except for the last transactions before a power loss, which a re-sync restores.
                o.journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Normal)
                    .foreign_keys(true)
                    .busy_timeout(Duration::from_secs(30))
                    .pragma("wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES.to_string())
            });
        if !config.database_url.contains("plan_cache_mode") {
            options.map_sqlx_postgres_pool_opts(|o| {
                o.after_connect(|connection, _| {
                    Box::pin(async move {
                        use sea_orm::sqlx::Executor;
                        connection.execute(GENERIC_PLANS).await.map(drop)
                    })
                })
            });
        }
        // Not for an in-memory database: its data lives and dies with the connections.
        if sqlite_file(&config.database_url).is_some() {
            options.idle_timeout(SQLITE_IDLE_TIMEOUT);
        }
        let mut db = Database::connect(options).await?;
        let statements = Arc::new(AtomicU64::new(0));
        let counter = statements.clone();
        db.set_metric_callback(move |_info| {
            counter.fetch_add(1, Ordering::Relaxed);
        });
        let trim_on_shrink = (db.get_database_backend() == DbBackend::Sqlite).then(|| {
            let pool = db.get_sqlite_connection_pool().clone();
            AbortOnDropHandle::new(tokio::spawn(trim_when_the_pool_shrinks(pool)))
        });
        let write_gate = (db.get_database_backend() == DbBackend::Sqlite)
            .then(|| Arc::new(tokio::sync::Mutex::new(())));
        Ok(Self {
            inner: Arc::new(StoreInner {
                db,
                write_gate,
                statements,
                direct: direct::DirectReader::for_url(&config.database_url),
                key_batches: keys::KeyBatches::default(),
                versions: DataVersions::default(),
                counts: read::CountMemo::default(),
                changes: broadcast::channel(1024).0,
                remote_sync_events: broadcast::channel(1024).0,
                remote_stops: broadcast::channel(64).0,
                url: config.database_url.as_str().into(),
                cluster: Arc::default(),
                webhooks: Default::default(),
                _trim_on_shrink: trim_on_shrink,
            }),
        })
    }

    /// PostgreSQL: joins the other gateways on the database as a replica (see [`cluster`]):
    /// location locks, and notifications of data versions, sync events and record changes both
    /// ways, over two connections of their own on `direct_url` (else `DATABASE_URL`). Returns
    /// whether replica mode is on; SQLite is single-process and returns `false`. Calling it
    /// again does nothing.
    ///
    /// # Errors
    /// [`ClusterError`] when the connections cannot be opened or a notification sent to
    /// ourselves does not come back (a pooler that drops `LISTEN`).
    pub async fn start_cluster(&self, direct_url: Option<&str>) -> Result<bool, ClusterError> {
        if self.backend() != DbBackend::Postgres {
            return Ok(false);
        }
        if self.cluster.get().is_some() {
            return Ok(true);
        }
        let sinks = cluster::Sinks {
            versions: self.versions.clone(),
            changes: self.changes.clone(),
            sync_events: self.remote_sync_events.clone(),
            stops: self.remote_stops.clone(),
        };
        let url = direct_url.unwrap_or(&self.url);
        let started =
            Cluster::start(url, self.db.get_postgres_connection_pool().clone(), sinks).await?;
        if let Err(started) = self.cluster.set(started) {
            started.shut_down();
        }
        Ok(true)
    }

    /// Replica mode, when it is on.
    pub fn cluster(&self) -> Option<&Arc<Cluster>> {
        self.cluster.get()
    }

    /// Where the sync engine's events go out to the other replicas.
    pub fn relay(&self) -> Relay {
        Relay {
            cluster: self.cluster.clone(),
        }
    }

    /// Sync events of the jobs other replicas run, as they publish them (none without replica
    /// mode).
    pub fn remote_sync_events(&self) -> broadcast::Receiver<SyncEvent> {
        self.remote_sync_events.subscribe()
    }

    /// Asks the other replicas to stop the location's sync (the one running it stops it, with
    /// `reason` as the job's error). Nothing without replica mode.
    pub fn publish_stop(&self, location_id: &str, reason: &str) {
        if let Some(cluster) = self.cluster.get() {
            cluster.stop(location_id, reason);
        }
    }

    /// The other replicas' requests to stop a location's sync: (location id, reason).
    pub fn remote_stops(&self) -> broadcast::Receiver<(String, String)> {
        self.remote_stops.subscribe()
    }

    /// Takes the location's sync lock for this process: `None` when another replica holds it
    /// (its job is running). Without replica mode the lock is this process's alone.
    pub async fn try_lock_location(
        &self,
        location_id: &str,
    ) -> Result<Option<LocationLock>, StoreError> {
        match self.cluster.get() {
            Some(cluster) => Ok(cluster
                .try_lock(cluster::lock_key("sync", location_id))
                .await?),
            None => Ok(Some(LocationLock::local())),
        }
    }

    /// SQLite: claims the database file for this process (an exclusive `flock`, held until the
    /// process ends), so that a second `serve` on the same file stops with a clear error instead
    /// of running a second sync beside the first. Gateways inside one process (tests, `demo`)
    /// share the claim. Nothing on PostgreSQL or in-memory SQLite.
    ///
    /// # Errors
    /// [`StoreError::InUse`] when another process holds it.
    pub fn claim_single_process(&self) -> Result<(), StoreError> {
        /// The files this process claimed, kept open (and locked) until it exits.
        static CLAIMED: std::sync::Mutex<Vec<(std::path::PathBuf, std::fs::File)>> =
            std::sync::Mutex::new(Vec::new());
        if self.backend() != DbBackend::Sqlite {
            return Ok(());
        }
        let Some(path) = sqlite_file(&self.url) else {
            return Ok(());
        };
        let canonical = std::fs::canonicalize(&path)
            .map_err(|e| StoreError::Invalid(format!("cannot open {path}: {e}")))?;
        let mut claimed = CLAIMED.lock().unwrap_or_else(|e| e.into_inner());
        if claimed.iter().any(|(p, _)| *p == canonical) {
            return Ok(());
        }
        let file = std::fs::OpenOptions::new()
            .read(true)
            .open(&path)
            .map_err(|e| StoreError::Invalid(format!("cannot open {path}: {e}")))?;
        match file.try_lock() {
            Ok(()) => {
                claimed.push((canonical, file));
                Ok(())
            }
            Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::InUse(path)),
            Err(std::fs::TryLockError::Error(e)) => {
                Err(StoreError::Invalid(format!("cannot lock {path}: {e}")))
            }
        }
    }

    /// Applies the migrations in `migrations/` that have not run yet.
    /// Connects and applies the migrations: what every command does first.
    pub async fn open(config: &DatabaseConfig) -> Result<Self, OpenError> {
        let store = Self::connect(config).await.map_err(OpenError::Connect)?;
        if let Err(error) = store.migrate().await {
            store.close().await;
            return Err(OpenError::Migrate(error));
        }
        Ok(store)
    }

    /// Applies the pending migrations. On PostgreSQL, replicas starting together take turns (an
    /// advisory lock on a connection of its own), so that one migrates and the others find it
    /// done.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        if self.backend() != DbBackend::Postgres {
            return migrate::run(&self.db).await;
        }
        use sea_orm::sqlx::Connection as _;
        let mut turn = sea_orm::sqlx::postgres::PgConnection::connect(&self.url)
            .await
            .map_err(|e| StoreError::Db(DbErr::Conn(sea_orm::RuntimeErr::SqlxError(e.into()))))?;
        let key = cluster::lock_key("migrate", "ghl-gateway");
        let locked = sea_orm::sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(key)
            .execute(&mut turn)
            .await;
        let migrated = migrate::run(&self.db).await;
        if locked.is_ok() {
            let _ = turn.close().await;
        }
        migrated
    }

    /// The data versions of the locations, which this store bumps after its writes commit (the
    /// response cache checks its entries against them).
    pub fn versions(&self) -> &DataVersions {
        &self.versions
    }

    /// Every committed batch of record changes from now on (sync pages and webhook events).
    pub fn subscribe_changes(&self) -> broadcast::Receiver<ChangeEvent> {
        self.changes.subscribe()
    }

    /// How many `changes` subscribers (receivers of [`Store::subscribe_changes`]) are listening.
    pub fn change_subscribers(&self) -> usize {
        self.changes.receiver_count()
    }

    /// Bumps `location_id`'s data version after a committed write of `ids`, then tells the
    /// `changes` subscribers (none listening is fine). An empty batch bumps only.
    /// Bumps `location_id`'s data version, here and (replica mode) in every other replica.
    fn bump(&self, location_id: &str) {
        self.versions.bump(location_id);
        if let Some(cluster) = self.cluster.get() {
            cluster.bump(location_id);
        }
    }

    /// Bumps every location's data version, here and in every other replica.
    fn bump_all(&self) {
        self.versions.bump_all();
        if let Some(cluster) = self.cluster.get() {
            cluster.bump_all();
        }
    }

    fn committed(
        &self,
        location_id: &str,
        kind: ChangeKind,
        op: ChangeOp,
        ids: Vec<String>,
        source: ChangeSource,
    ) {
        self.bump(location_id);
        if ids.is_empty() {
            return;
        }
        let event = ChangeEvent {
            location_id: location_id.to_owned(),
            kind,
            op,
            ids,
            source,
            at: chrono::Utc::now(),
            data_version: self.versions.snapshot().location(location_id),
        };
        if let Some(cluster) = self.cluster.get() {
            cluster.change(&event);
        }
        let _ = self.changes.send(event);
    }

    /// SQL statements executed through this store so far (tests diff it around a request).
    pub fn statements(&self) -> u64 {
        self.statements.load(Ordering::Relaxed)
    }

    pub fn backend(&self) -> DbBackend {
        self.db.get_database_backend()
    }

    /// Brings the query planner's statistics up to date after a sync rewrote many rows
    /// (PostgreSQL: `VACUUM (ANALYZE)` of the cached-data tables; SQLite: nothing).
    ///
    /// Why: right after a first sync PostgreSQL has no statistics yet (autovacuum gets to them
    /// about a minute later), so it plans for tables of a few rows: a sequential scan of `tasks`
    /// for 50 contacts' tasks and a sort of the whole location for a page of 50, 20-30 ms per
    /// statement for 10,000 contacts instead of 0.1-0.3 ms. The vacuum also marks the pages
    /// all-visible, which lets `totalCount` run as an index-only scan, and reclaims the dead rows
    /// a FULL sync's upserts leave. SQLite's planner picks the same indexes without statistics.
    ///
    /// Errors: [`StoreError::Db`] from the database (a role that does not own the tables gets a
    /// warning from PostgreSQL, not an error).
    pub async fn refresh_planner_statistics(&self) -> Result<(), StoreError> {
        if self.backend() != DbBackend::Postgres {
            return Ok(());
        }
        self.db
            .execute_unprepared(
                "VACUUM (ANALYZE) contacts, contact_tags, contact_custom_values, tasks, \
                 conversations, opportunities, users, custom_fields, pipelines, pipeline_stages",
            )
            .await?;
        Ok(())
    }

    /// Begins a writing transaction, after the writers queued before it on SQLite (see
    /// `write_gate`); hold the guard until the transaction ends.
    async fn begin_write(
        &self,
    ) -> Result<
        (
            Option<tokio::sync::OwnedMutexGuard<()>>,
            DatabaseTransaction,
        ),
        DbErr,
    > {
        let guard = match &self.write_gate {
            Some(gate) => Some(gate.clone().lock_owned().await),
            None => None,
        };
        Ok((guard, self.db.begin().await?))
    }

    /// The underlying connection, for the sync engine's own transactions.
    pub fn connection(&self) -> &DatabaseConnection {
        &self.db
    }

    /// Readiness: one round trip to the database.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.db
            .execute_unprepared("SELECT 1")
            .await
            .map(|_| ())
            .map_err(StoreError::from)
    }

    pub async fn close(self) {
        if let Some(cluster) = self.cluster.get() {
            cluster.close().await;
        }
        let _ = self.db.close_by_ref().await;
    }
}

/// The file of an SQLite URL (`sqlite://FILE?...`, `sqlite:FILE`), `None` for an in-memory one.
/// `mutex`'s guard, also after a panic elsewhere left it poisoned (the store's mutexes guard
/// lists and flags that no code panics while changing).
fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

fn sqlite_file(url: &str) -> Option<String> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let memory =
        path.is_empty() || path == ":memory:" || query.split('&').any(|p| p == "mode=memory");
    (!memory).then(|| path.to_owned())
}

/// Rows of `cols` columns per multi-row INSERT so that one statement stays under [`MAX_BINDS`].
fn rows_per_insert(cols: usize) -> usize {
    (MAX_BINDS / cols.max(1)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folding_is_unicode_case_folding() {
        assert_eq!(fold("ÉLODIE Müller"), "élodie müller");
        assert_eq!(fold("ДМИТРИЙ"), "дмитрий");
        // A final sigma folds like any other, wherever the text ends.
        assert_eq!(fold("ΟΔΥΣΣΕΥΣ"), "οδυσσευσ");
        assert_eq!(fold("ΟΔΥΣ"), fold("οδυσ"));
        assert_eq!(fold("Straße"), fold("STRASSE"));
    }

    #[test]
    fn sqlite_urls_name_their_file() {
        assert_eq!(
            sqlite_file("sqlite://ghl-gateway.db?mode=rwc").as_deref(),
            Some("ghl-gateway.db")
        );
        assert_eq!(
            sqlite_file("sqlite:/tmp/a.db").as_deref(),
            Some("/tmp/a.db")
        );
        assert_eq!(sqlite_file("sqlite::memory:"), None);
        assert_eq!(sqlite_file("sqlite://x.db?mode=memory&cache=shared"), None);
        assert_eq!(sqlite_file("postgres://localhost/db"), None);
    }

    #[test]
    fn inserts_stay_under_the_bind_limit() {
        for cols in 1..40 {
            let rows = rows_per_insert(cols);
            assert!(rows * cols <= MAX_BINDS);
            assert!(
                rows >= 500 || cols > MAX_BINDS / 500,
                "a page of 500 fits in one statement"
            );
        }
    }
}
