//! Replicas on PostgreSQL: several gateways on one database share their work through it
//! (DESIGN.md, "Replicas on PostgreSQL"). PostgreSQL is the whole protocol:
//!
//! - **Location locks**: a session-level advisory lock per location (`pg_try_advisory_lock`),
//!   taken before a sync job starts and held for its life, on one connection of its own outside
//!   the pool (session locks through a transaction-pooling PgBouncer would be held by whoever
//!   gets the server connection next). A process that dies releases its locks with its session.
//!   If that connection fails, every lock it held is lost: [`LocationLock::lost`] fires, and the
//!   sync engine stops those jobs (another replica may resume them).
//! - **Notifications** on channel [`CHANNEL`], delivered by PostgreSQL at commit and in commit
//!   order: data-version bumps carry the location id; sync events and record changes are rows
//!   of `cluster_events` (payloads are capped at 8,000 bytes) and the notification carries the
//!   row's id, which every other replica reads. Each process tags what it publishes with its
//!   origin id and ignores its own.
//! - **The listener** has its own connection too. At start-up it sends itself a notification
//!   through the pool and refuses replica mode when it does not arrive (a pooler that drops
//!   `LISTEN`). When the connection is lost it suspends the data versions (the response cache
//!   serves nothing it cannot vouch for), reconnects, and resumes them moved on, so everything
//!   cached before is read again.
//!
//! Publishing is best effort, like `NOTIFY` itself: a statement that fails is logged and
//! counted; a subscriber of another replica then misses that event, and the data version's
//! time bound (`RESPONSE_CACHE_TTL_SECS`) still ends any cached answer.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use sea_orm::sqlx::postgres::{PgConnection, PgListener, PgPool};
use sea_orm::sqlx::{self, Connection as _};
use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use crate::cache::DataVersions;
use crate::domain::{ChangeEvent, SyncEvent};

/// The notification channel every replica listens on.
pub const CHANNEL: &str = "ghl_gateway";

/// How long a published sync event or change stays in `cluster_events` for replicas to read.
const KEEP_EVENTS_MS: i64 = 10 * 60 * 1000;

/// How often the lock connection is checked while it holds locks.
const HEARTBEAT: Duration = Duration::from_secs(2);

/// Why replica mode could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cannot open a dedicated PostgreSQL connection (DATABASE_DIRECT_URL or DATABASE_URL)")]
    Connect(#[source] sqlx::Error),
    #[error(
        "LISTEN/NOTIFY does not work through this connection: a notification sent to ourselves did not \
         arrive within 5 s. Behind PgBouncer in transaction mode, set DATABASE_DIRECT_URL to the \
         server itself (or to a session-mode pool)"
    )]
    NoNotifications,
    #[error("the location lock connection failed")]
    Lock(#[source] sqlx::Error),
}

/// One notification on [`CHANNEL`]; `o` is the publishing process.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
enum Note {
    /// The start-up round trip to ourselves.
    Ping { o: String },
    /// `l`'s data version moved.
    Bump { o: String, l: String },
    /// Every location's data version moved.
    BumpAll { o: String },
    /// A row of `cluster_events` to read.
    Event { o: String, id: i64 },
    /// Stop the sync of `l` wherever it runs, with `r` as the job's error (an `UNINSTALL`).
    Stop { o: String, l: String, r: String },
}

/// What the forwarder publishes, in the order it was handed over.
enum Outgoing {
    Bump(String),
    BumpAll,
    Stop {
        location_id: String,
        reason: String,
    },
    Event {
        location_id: String,
        kind: &'static str,
        body: String,
    },
}

const KIND_SYNC: &str = "sync";
const KIND_CHANGE: &str = "change";

/// Where a replica delivers what the others published.
pub(super) struct Sinks {
    pub versions: DataVersions,
    pub changes: broadcast::Sender<ChangeEvent>,
    pub sync_events: broadcast::Sender<SyncEvent>,
    /// Requests to stop a location's sync: (location id, reason).
    pub stops: broadcast::Sender<(String, String)>,
}

/// A process's membership of the replicas on one PostgreSQL database.
pub struct Cluster {
    origin: String,
    url: String,
    pool: PgPool,
    outgoing: mpsc::UnboundedSender<Outgoing>,
    locks: Mutex<LockConnection>,
    connected: AtomicBool,
    listener_pid: AtomicU32,
    stop: CancellationToken,
    /// The forwarder's task, awaited by [`Cluster::close`] so that what was queued before a
    /// process ends still reaches the other replicas.
    forwarder: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// The connection that holds this process's location locks, and the token that fires when
/// the locks it held are lost with it.
struct LockConnection {
    connection: Option<PgConnection>,
    lost: CancellationToken,
    held: usize,
}

/// A location's sync lock, held until dropped. [`LocationLock::lost`] fires if the lock was lost
/// before (its connection failed).
pub struct LocationLock {
    inner: Option<(Arc<Cluster>, i64)>,
    lost: CancellationToken,
}

impl std::fmt::Debug for LocationLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocationLock")
            .field("shared", &self.inner.is_some())
            .finish()
    }
}

impl LocationLock {
    /// A lock that only this process needs (SQLite, or PostgreSQL without replica mode): the
    /// sync engine's in-process single flight is the whole guarantee.
    pub(super) fn local() -> Self {
        Self {
            inner: None,
            lost: CancellationToken::new(),
        }
    }

    /// Whether other processes honour the lock (replica mode), so that a queued or running job
    /// of the location found in the database while holding it is an orphan.
    pub fn is_shared(&self) -> bool {
        self.inner.is_some()
    }

    /// Fires when the lock was lost (its connection to PostgreSQL failed): another replica may
    /// take the location from then on.
    pub fn lost(&self) -> CancellationToken {
        self.lost.clone()
    }
}

impl Drop for LocationLock {
    fn drop(&mut self) {
        let Some((cluster, key)) = self.inner.take() else {
            return;
        };
        let lost = self.lost.clone();
        // Unlocking is a statement: in a task, as a drop cannot wait. A runtime going away
        // (a test's end, a crash) ends the session, which releases the lock all the same.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move { cluster.unlock(key, &lost).await });
        }
    }
}

/// The advisory-lock key of a name: the first 8 bytes of its SHA-256, the same in every
/// process and build (a 64-bit key makes a collision between two locations negligible).
pub(super) fn lock_key(namespace: &str, name: &str) -> i64 {
    use sha2::Digest as _;
    let digest = sha2::Sha256::new()
        .chain_update(namespace.as_bytes())
        .chain_update([0u8])
        .chain_update(name.as_bytes())
        .finalize();
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(bytes)
}

impl Cluster {
    /// Joins the replicas: opens the lock connection and the listener on `url` (a direct
    /// connection, not through a transaction pooler), checks that a notification sent through
    /// `pool` comes back, and starts the listener and the forwarder.
    pub(super) async fn start(
        url: &str,
        pool: PgPool,
        sinks: Sinks,
    ) -> Result<Arc<Self>, ClusterError> {
        let origin = uuid::Uuid::new_v4().to_string();
        let lock_connection = PgConnection::connect(url)
            .await
            .map_err(ClusterError::Connect)?;
        let mut listener = listen(url).await.map_err(ClusterError::Connect)?;
        let (outgoing, queue) = mpsc::unbounded_channel();
        let cluster = Arc::new(Self {
            origin,
            url: url.to_owned(),
            pool,
            outgoing,
            locks: Mutex::new(LockConnection {
                connection: Some(lock_connection),
                lost: CancellationToken::new(),
                held: 0,
            }),
            connected: AtomicBool::new(true),
            listener_pid: AtomicU32::new(0),
            stop: CancellationToken::new(),
            forwarder: std::sync::Mutex::new(None),
        });
        cluster
            .listener_pid
            .store(backend_pid(&mut listener).await, Ordering::Relaxed);
        // The round trip: a pooler that drops LISTEN (PgBouncer in transaction mode) fails here.
        let ping = serde_json::to_string(&Note::Ping {
            o: cluster.origin.clone(),
        })
        .expect("a note serializes");
        notify(&cluster.pool, &ping)
            .await
            .map_err(ClusterError::Connect)?;
        let echoed = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                let notification = listener.recv().await?;
                if notification.payload() == ping {
                    return Ok::<_, sqlx::Error>(());
                }
            }
        })
        .await;
        if !matches!(echoed, Ok(Ok(()))) {
            return Err(ClusterError::NoNotifications);
        }
        crate::telemetry::metrics::cluster_connected(true);
        tokio::spawn(cluster.clone().listen_loop(listener, sinks));
        let forwarder = tokio::spawn(cluster.clone().forward(queue));
        *cluster.forwarder.lock().unwrap_or_else(|e| e.into_inner()) = Some(forwarder);
        tokio::spawn(cluster.clone().heartbeat());
        tracing::info!(origin = %cluster.origin, "replica mode: location locks and notifications on PostgreSQL");
        Ok(cluster)
    }

    /// This process's id among the replicas.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Whether the listener is connected (else this replica may be missing others' changes).
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// The server process id of the listener's connection (tests end it to simulate a loss).
    pub fn listener_pid(&self) -> u32 {
        self.listener_pid.load(Ordering::Relaxed)
    }

    /// Stops the listener, the forwarder and the heartbeat (the locks go with the process).
    pub(super) fn shut_down(&self) {
        self.stop.cancel();
    }

    /// [`shut_down`](Self::shut_down), then waits (at most 5 s) for the forwarder to publish what
    /// was queued: a `ghl-gateway sync` or `keys` command ends right after its last write, and
    /// closing the pool under the forwarder lost that write's notifications (the command logged
    /// "cannot notify the other replicas").
    pub(super) async fn close(&self) {
        self.shut_down();
        let forwarder = self
            .forwarder
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(forwarder) = forwarder {
            let _ = tokio::time::timeout(Duration::from_secs(5), forwarder).await;
        }
    }

    pub(super) fn bump(&self, location_id: &str) {
        let _ = self.outgoing.send(Outgoing::Bump(location_id.to_owned()));
    }

    pub(super) fn bump_all(&self) {
        let _ = self.outgoing.send(Outgoing::BumpAll);
    }

    pub(super) fn stop(&self, location_id: &str, reason: &str) {
        let _ = self.outgoing.send(Outgoing::Stop {
            location_id: location_id.to_owned(),
            reason: reason.to_owned(),
        });
    }

    pub(super) fn change(&self, event: &ChangeEvent) {
        self.event(&event.location_id, KIND_CHANGE, event);
    }

    pub(super) fn sync_event(&self, event: &SyncEvent) {
        self.event(&event.location_id, KIND_SYNC, event);
    }

    fn event(&self, location_id: &str, kind: &'static str, event: &impl Serialize) {
        match serde_json::to_string(event) {
            Ok(body) => {
                let _ = self.outgoing.send(Outgoing::Event {
                    location_id: location_id.to_owned(),
                    kind,
                    body,
                });
            }
            Err(error) => {
                tracing::error!(error = %error, "cannot serialize an event for the other replicas")
            }
        }
    }

    /// Tries to take `key`'s lock for this process: `None` when another process holds it.
    pub(super) async fn try_lock(
        self: &Arc<Self>,
        key: i64,
    ) -> Result<Option<LocationLock>, ClusterError> {
        let mut locks = self.locks.lock().await;
        if locks.connection.is_none() {
            let connection = PgConnection::connect(&self.url)
                .await
                .map_err(ClusterError::Lock)?;
            locks.connection = Some(connection);
            locks.lost = CancellationToken::new();
            locks.held = 0;
        }
        let connection = locks.connection.as_mut().expect("connected above");
        let taken = sqlx::query_scalar::<_, bool>("SELECT pg_try_advisory_lock($1)")
            .bind(key)
            .fetch_one(connection)
            .await;
        match taken {
            Ok(true) => {
                locks.held += 1;
                Ok(Some(LocationLock {
                    inner: Some((self.clone(), key)),
                    lost: locks.lost.clone(),
                }))
            }
            Ok(false) => Ok(None),
            Err(error) => {
                lose_locks(&mut locks);
                Err(ClusterError::Lock(error))
            }
        }
    }

    async fn unlock(&self, key: i64, lost: &CancellationToken) {
        let mut locks = self.locks.lock().await;
        // A lock of a connection that failed since went with it.
        if lost.is_cancelled() || locks.lost.is_cancelled() {
            return;
        }
        let Some(connection) = locks.connection.as_mut() else {
            return;
        };
        let unlocked = sqlx::query_scalar::<_, bool>("SELECT pg_advisory_unlock($1)")
            .bind(key)
            .fetch_one(connection)
            .await;
        match unlocked {
            Ok(_) => locks.held = locks.held.saturating_sub(1),
            Err(error) => {
                tracing::warn!(error = %error, "cannot release a location lock; closing its connection releases them all");
                lose_locks(&mut locks);
            }
        }
    }

    /// Checks the lock connection while it holds locks: a failure loses them (the engine stops
    /// their jobs) and the next lock reconnects.
    async fn heartbeat(self: Arc<Self>) {
        loop {
            tokio::select! {
                _ = self.stop.cancelled() => return,
                _ = tokio::time::sleep(HEARTBEAT) => {}
            }
            let mut locks = self.locks.lock().await;
            if locks.held == 0 {
                continue;
            }
            let Some(connection) = locks.connection.as_mut() else {
                continue;
            };
            if let Err(error) = sqlx::query("SELECT 1").execute(connection).await {
                tracing::error!(error = %error, held = locks.held, "the location lock connection failed: its locks are lost and their syncs stop");
                lose_locks(&mut locks);
            }
        }
    }

    /// Publishes what this process hands over, a batch (what queued meanwhile, up to 256) in two
    /// statements at most: first the notes (each location's bump once, stops in order), then the
    /// events (one multi-row insert whose rows are notified in order). Bumps go first, so that a
    /// replica that reads a change has already moved its version past it.
    async fn forward(self: Arc<Self>, mut queue: mpsc::UnboundedReceiver<Outgoing>) {
        let mut pruned_at = 0i64;
        let mut batch = Vec::new();
        loop {
            let (received, last) = tokio::select! {
                received = queue.recv_many(&mut batch, 256) => (received, false),
                // Stopping: what is queued already goes out, then nothing more.
                _ = self.stop.cancelled() => {
                    while let Ok(outgoing) = queue.try_recv() {
                        batch.push(outgoing);
                    }
                    (batch.len(), true)
                }
            };
            if received == 0 {
                return;
            }
            let (notes, events) = self.split(batch.drain(..));
            if let Err(error) = self.publish(&notes, &events).await {
                crate::telemetry::metrics::cluster_publish_failed();
                tracing::warn!(error = %error, notes = notes.len(), events = events.len(), "cannot notify the other replicas");
            }
            if last {
                return;
            }
            let now = chrono::Utc::now().timestamp_millis();
            if now - pruned_at > 60_000 {
                pruned_at = now;
                let _ = sqlx::query("DELETE FROM cluster_events WHERE created_at < $1")
                    .bind(now - KEEP_EVENTS_MS)
                    .execute(&self.pool)
                    .await;
            }
        }
    }

    /// A batch as the notes to send (bumps once per location) and the events to store.
    fn split(
        &self,
        batch: impl Iterator<Item = Outgoing>,
    ) -> (Vec<String>, Vec<(String, &'static str, String)>) {
        let o = || self.origin.clone();
        let mut notes = Vec::new();
        let mut bumped = std::collections::HashSet::new();
        let mut bumped_all = false;
        let mut events = Vec::new();
        for outgoing in batch {
            match outgoing {
                Outgoing::Bump(l) => {
                    if !bumped_all && bumped.insert(l.clone()) {
                        notes.push(note(&Note::Bump { o: o(), l }));
                    }
                }
                Outgoing::BumpAll => {
                    if !bumped_all {
                        bumped_all = true;
                        notes.push(note(&Note::BumpAll { o: o() }));
                    }
                }
                Outgoing::Stop {
                    location_id,
                    reason,
                } => notes.push(note(&Note::Stop {
                    o: o(),
                    l: location_id,
                    r: reason,
                })),
                Outgoing::Event {
                    location_id,
                    kind,
                    body,
                } => events.push((location_id, kind, body)),
            }
        }
        (notes, events)
    }

    async fn publish(
        &self,
        notes: &[String],
        events: &[(String, &'static str, String)],
    ) -> Result<(), sqlx::Error> {
        if !notes.is_empty() {
            // `unnest` yields the array in order, and a transaction's notifications are
            // delivered in the order they were sent.
            sqlx::query("SELECT pg_notify($1, n) FROM unnest($2::text[]) AS t(n)")
                .bind(CHANNEL)
                .bind(notes)
                .fetch_all(&self.pool)
                .await?;
        }
        if !events.is_empty() {
            let locations: Vec<&str> = events.iter().map(|e| e.0.as_str()).collect();
            let kinds: Vec<&str> = events.iter().map(|e| e.1).collect();
            let bodies: Vec<&str> = events.iter().map(|e| e.2.as_str()).collect();
            // The rows and their notifications in one statement: the notifications go out at
            // its commit, when the rows are there to read, in the rows' order.
            sqlx::query(
                "WITH e AS (INSERT INTO cluster_events (origin, location_id, kind, body, created_at) \
                 SELECT $1::text, l, k, b, $5::bigint FROM unnest($2::text[], $3::text[], $4::text[]) AS t(l, k, b) \
                 RETURNING id) \
                 SELECT pg_notify($6, '{\"t\":\"event\",\"o\":\"' || $1::text || '\",\"id\":' || e.id || '}') FROM e",
            )
            .bind(&self.origin)
            .bind(locations)
            .bind(kinds)
            .bind(bodies)
            .bind(chrono::Utc::now().timestamp_millis())
            .bind(CHANNEL)
            .fetch_all(&self.pool)
            .await?;
        }
        Ok(())
    }

    /// Delivers the other replicas' notifications; reconnects when the connection is lost,
    /// suspending the data versions meanwhile.
    async fn listen_loop(self: Arc<Self>, mut listener: PgListener, sinks: Sinks) {
        loop {
            let received = tokio::select! {
                _ = self.stop.cancelled() => return,
                received = listener.try_recv() => received,
            };
            match received {
                Ok(Some(notification)) => self.deliver(notification.payload(), &sinks).await,
                Ok(None) | Err(_) => {
                    self.connected.store(false, Ordering::Relaxed);
                    crate::telemetry::metrics::cluster_connected(false);
                    sinks.versions.suspend();
                    tracing::warn!(
                        "lost the notification connection to PostgreSQL: serving no cached answer until it is back"
                    );
                    let Some(reconnected) = self.reconnect().await else {
                        return;
                    };
                    listener = reconnected;
                    self.connected.store(true, Ordering::Relaxed);
                    crate::telemetry::metrics::cluster_connected(true);
                    sinks.versions.resume();
                    tracing::info!("the notification connection to PostgreSQL is back");
                }
            }
        }
    }

    async fn reconnect(&self) -> Option<PgListener> {
        let mut delay = Duration::from_millis(100);
        loop {
            tokio::select! {
                _ = self.stop.cancelled() => return None,
                _ = tokio::time::sleep(delay) => {}
            }
            match listen(&self.url).await {
                Ok(mut listener) => {
                    self.listener_pid
                        .store(backend_pid(&mut listener).await, Ordering::Relaxed);
                    return Some(listener);
                }
                Err(error) => {
                    tracing::warn!(error = %error, "cannot reconnect the notification connection yet");
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    async fn deliver(&self, payload: &str, sinks: &Sinks) {
        let Ok(note) = serde_json::from_str::<Note>(payload) else {
            tracing::warn!("ignored a notification that is not a gateway's");
            return;
        };
        match note {
            Note::Ping { .. } => {}
            Note::Bump { o, l } if o != self.origin => sinks.versions.bump(&l),
            Note::BumpAll { o } if o != self.origin => sinks.versions.bump_all(),
            Note::Stop { o, l, r } if o != self.origin => {
                let _ = sinks.stops.send((l, r));
            }
            Note::Event { o, id } if o != self.origin => {
                if let Err(error) = self.read_event(id, sinks).await {
                    tracing::warn!(error = %error, id, "cannot read another replica's event");
                }
            }
            _ => {}
        }
    }

    async fn read_event(&self, id: i64, sinks: &Sinks) -> Result<(), Box<dyn std::error::Error>> {
        let row: Option<(String, String)> =
            sqlx::query_as("SELECT kind, body FROM cluster_events WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        let Some((kind, body)) = row else {
            return Ok(());
        };
        match kind.as_str() {
            KIND_CHANGE => {
                let mut event: ChangeEvent = serde_json::from_str(&body)?;
                // The version this replica knows, its bump having arrived before.
                event.data_version = sinks.versions.snapshot().location(&event.location_id);
                let _ = sinks.changes.send(event);
            }
            KIND_SYNC => {
                let event: SyncEvent = serde_json::from_str(&body)?;
                let _ = sinks.sync_events.send(event);
            }
            _ => {}
        }
        Ok(())
    }
}

fn note(note: &Note) -> String {
    serde_json::to_string(note).expect("a note serializes")
}

fn lose_locks(locks: &mut LockConnection) {
    locks.lost.cancel();
    locks.connection = None;
    locks.held = 0;
}

async fn notify(pool: &PgPool, payload: &str) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(CHANNEL)
        .bind(payload)
        .execute(pool)
        .await
        .map(|_| ())
}

async fn listen(url: &str) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect(url).await?;
    listener.listen(CHANNEL).await?;
    Ok(listener)
}

async fn backend_pid(listener: &mut PgListener) -> u32 {
    sqlx::query_scalar::<_, i32>("SELECT pg_backend_pid()")
        .fetch_one(listener)
        .await
        .ok()
        .and_then(|pid| u32::try_from(pid).ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_keys_are_stable_and_apart() {
        // The same in every process and build: replicas of different versions must agree.
        assert_eq!(lock_key("sync", "loc-1"), lock_key("sync", "loc-1"));
        assert_ne!(lock_key("sync", "loc-1"), lock_key("sync", "loc-2"));
        assert_ne!(lock_key("sync", "loc-1"), lock_key("credential", "loc-1"));
        assert_eq!(lock_key("sync", "a"), -7_676_255_232_948_380_517);
    }

    #[test]
    fn notes_round_trip() {
        let text = note(&Note::Event {
            o: "x".into(),
            id: 7,
        });
        assert_eq!(text, r#"{"t":"event","o":"x","id":7}"#);
        assert!(matches!(
            serde_json::from_str::<Note>(&text).unwrap(),
            Note::Event { id: 7, .. }
        ));
    }
}
