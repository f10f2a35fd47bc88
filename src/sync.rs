//! The background sync: one job per location at a time, stages in parallel within the location's
//! rate budget, every page written with its checkpoint, progress broadcast to subscribers.
//!
//! `graphql` talks to it through [`SyncHandle`]: start or join a job, wait for one, subscribe to
//! events, see the running job; the handle reaches neither the GHL client nor the store. The
//! command line and the tests hold the [`SyncEngine`] itself. The engine uses `upstream` to read
//! GHL and `store` to write the cache; it knows nothing of GraphQL. Jobs, stages, their states and
//! events are `domain` types; `store` alone maps them to rows.
//!
//! - **Single flight**: `refresh` reserves the location under a lock before any I/O, so a hundred
//!   concurrent calls start one job and the other 99 join it. On PostgreSQL the job also holds
//!   the location's advisory lock (`store::cluster`): a refresh on another replica joins the job
//!   it finds in the database, and the next lock holder resumes the job of a replica that died.
//! - **Modes**: FULL reads every list and then marks the rows it did not see deleted (each upsert
//!   stamps rows with its pass's read time). INCREMENTAL reads what changed since the newest
//!   change in the cache, minus an overlap for GHL's index lag; deletions wait for the next FULL
//!   run.
//! - **Resume**: a job that failed or was interrupted is resumed by the next run (within the
//!   resume window): finished stages are not fetched again, the others restart from their last
//!   checkpoint keeping their pass's read time (so a FULL run still reconciles correctly), and a
//!   pass resumed mid-way reads what changed since it began before it reconciles.
//! - **Freshness**: every stage records when the data it holds began to be read (`read_at`); a
//!   job that succeeds claims the oldest of its stages' as its `synced_at`, never its end, so a
//!   resumed job owns up to the age of what it kept.
//! - **Cooldown**: after failed jobs, reads and the scheduler start nothing for a while that
//!   doubles with each failure (see [`cooldown`]); a manual refresh may try once per step.
//! - **Events** go through a bounded broadcast channel: a slow subscriber lags and skips events,
//!   it never slows the sync.

mod cooldown;
mod progress;
mod stage;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use self::progress::Progress;
use self::stage::{StageContext, StageError};
use crate::domain::{Cooldown, JobState, Resource, SyncJob, SyncStage, from_ms};
use crate::store::cluster::LocationLock;
use crate::store::{Store, StoreError, sync_mode_name};
use crate::upstream::{self, UpstreamError};

/// Rows a successful FULL job must have fetched before it refreshes the database's planner
/// statistics ([`Store::refresh_planner_statistics`]): a location's first sync, or its daily
/// FULL run, of some size. INCREMENTAL runs leave the statistics to autovacuum, which keeps up
/// with changes once the first statistics exist.
const STATISTICS_AFTER_ROWS: i64 = 1_000;
/// The order stages start in: the lists by their usual length in pages (FACTS.md §11:
/// conversations 100 a page, tasks and contacts 500, opportunities 500 and fewer rows), then
/// the single calls.
const STAGE_START_ORDER: [Resource; 7] = [
    Resource::Conversations,
    Resource::Tasks,
    Resource::Contacts,
    Resource::Opportunities,
    Resource::Users,
    Resource::CustomFields,
    Resource::Pipelines,
];

// What callers of the engine pass and get back, under the paths they already use.
pub use crate::domain::{JobSnapshot, SyncEvent, SyncMode};

/// Settings of the background sync.
#[derive(Clone, Debug, clap::Args)]
pub struct SyncConfig {
    /// Seconds between scheduled syncs of every location with credentials; 0 turns the
    /// scheduler off.
    #[arg(
        long = "sync-interval",
        env = "SYNC_INTERVAL_SECS",
        default_value_t = 0
    )]
    pub interval_secs: u64,
    /// A scheduled sync is FULL (and reconciles deletions) when the last successful FULL sync is
    /// older than this many seconds.
    #[arg(
        long = "full-sync-interval",
        env = "FULL_SYNC_INTERVAL_SECS",
        default_value_t = 86_400
    )]
    pub full_interval_secs: u64,
    /// Seconds an INCREMENTAL sync reaches back before the newest change in the cache, because
    /// GHL's search index lags its writes.
    #[arg(
        long = "incremental-overlap",
        env = "INCREMENTAL_OVERLAP_SECS",
        default_value_t = 120
    )]
    pub overlap_secs: u64,
    /// A failed or interrupted job whose first attempt started less than this many seconds ago is
    /// resumed by the next run.
    #[arg(
        long = "resume-window",
        env = "RESUME_WINDOW_SECS",
        default_value_t = 86_400
    )]
    pub resume_window_secs: u64,
    /// Seconds a location cools down after a failed job: no read or scheduled run starts a sync
    /// before it has passed, and a manual refresh at most one. Doubles with each further failure
    /// in a row; 0 turns the cooldown off.
    #[arg(
        long = "failure-cooldown",
        env = "FAILURE_COOLDOWN_SECS",
        default_value_t = 60
    )]
    pub failure_cooldown_secs: u64,
    /// The longest cooldown, however many jobs failed in a row.
    #[arg(
        long = "failure-cooldown-max",
        env = "FAILURE_COOLDOWN_MAX_SECS",
        default_value_t = 3_600
    )]
    pub failure_cooldown_max_secs: u64,
}

impl SyncConfig {
    fn cooldown_policy(&self) -> cooldown::Policy {
        let secs = |s: u64| chrono::Duration::seconds(i64::try_from(s).unwrap_or(i64::MAX / 1000));
        cooldown::Policy {
            base: secs(self.failure_cooldown_secs),
            max: secs(self.failure_cooldown_max_secs),
        }
    }
}

impl Default for SyncConfig {
    fn default() -> Self {
        crate::config::defaults()
    }
}

/// Why a refresh could not start, or a job could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("the cache database failed")]
    Store(#[from] StoreError),
    #[error("location {0} has no GHL credentials")]
    NoCredentials(String),
    #[error("the gateway is shutting down")]
    ShuttingDown,
    /// Another replica holds the location's sync lock, yet no job of it shows in the database.
    #[error("another gateway holds the sync lock of location {0} but shows no job; try again")]
    LockedElsewhere(String),
    /// The location's last jobs failed: no sync starts before `until` (a manual refresh may try
    /// once per step, and this step's try is spent).
    #[error("location {location_id} cools down after {failures} failed sync(s) until {until}")]
    CoolingDown {
        location_id: String,
        failures: u32,
        until: DateTime<Utc>,
    },
}

/// Who asks for a sync: a manual request may retry once during a cooldown, nothing else may.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// A read, the scheduler.
    Automatic,
    /// `refreshLocation`, `ghl-gateway sync`.
    Manual,
}

/// Why a job's run failed; its text is what the job records as its `error`.
#[derive(Debug, thiserror::Error)]
enum JobError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Reading the location itself failed.
    #[error("location: {0}")]
    Location(#[source] UpstreamError),
    /// The first stage that failed.
    #[error(transparent)]
    Stage(#[from] StageError),
}

/// Frees a location's single-flight slot when its job ends, however it ends; then its lock
/// (dropped after `drop` runs), so that another replica may start the next job.
struct Release {
    engine: SyncEngine,
    location_id: String,
    running: Arc<Running>,
    _lock: LocationLock,
}

impl Drop for Release {
    fn drop(&mut self) {
        lock(&self.engine.inner.running).remove(&self.location_id);
        self.running.done.send_replace(true);
    }
}

/// A job in flight.
struct Running {
    progress: Progress,
    done: watch::Sender<bool>,
    /// Stops this job alone (a child of the engine's token, which stops them all).
    cancel: CancellationToken,
    /// Why [`SyncEngine::stop`] stopped the job, for its error.
    stopped: Mutex<Option<String>>,
}

struct Inner {
    store: Store,
    client: upstream::Client,
    config: SyncConfig,
    running: Mutex<HashMap<String, Arc<Running>>>,
    /// Starting a job is one step at a time in a process: between finding no job and
    /// registering one there are awaits (the database, the location lock).
    starting: tokio::sync::Mutex<()>,
    events: broadcast::Sender<SyncEvent>,
    tracker: TaskTracker,
    cancel: CancellationToken,
}

/// The sync engine; cheap to clone. `graphql` gets a [`SyncHandle`] of it instead.
#[derive(Clone)]
pub struct SyncEngine {
    inner: Arc<Inner>,
}

/// What `graphql` may ask of the sync: start or join a job, wait for a location's job, follow
/// events, see the running job. Cheap to clone; it gives no way to the GHL client or the store.
#[derive(Clone)]
pub struct SyncHandle {
    engine: SyncEngine,
}

impl SyncHandle {
    /// Starts a sync of the location, or joins the one running. Returns the job and whether it
    /// was joined. [`Trigger::Automatic`] starts nothing during a cooldown.
    pub async fn refresh(
        &self,
        location_id: &str,
        mode: SyncMode,
        trigger: Trigger,
    ) -> Result<(JobSnapshot, bool), SyncError> {
        self.engine.refresh_as(location_id, mode, trigger).await
    }

    /// The location's run of failed jobs, if its last finished job failed.
    pub async fn cooldown(&self, location_id: &str) -> Result<Option<Cooldown>, SyncError> {
        self.engine.cooldown(location_id).await
    }

    /// Waits until the location has no job running, at most `timeout`. Returns whether it
    /// finished in time.
    pub async fn wait_idle(&self, location_id: &str, timeout: Duration) -> bool {
        self.engine.wait_idle(location_id, timeout).await
    }

    /// Events of every location; filter by `location_id`.
    pub fn subscribe(&self) -> broadcast::Receiver<SyncEvent> {
        self.engine.subscribe()
    }

    /// The job running for a location, if any.
    pub fn running(&self, location_id: &str) -> Option<JobSnapshot> {
        self.engine.running(location_id)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// The time now, to the millisecond the store keeps, so that a job in memory and its row agree.
fn now() -> DateTime<Utc> {
    from_ms(now_ms())
}

/// When the oldest data of `stages` was read (ms): the `syncedAt` a job that kept them may
/// claim. `None` when a stage has no read time (it never ran).
fn synced_at(stages: &[SyncStage]) -> Option<i64> {
    stages
        .iter()
        .map(|s| s.read_at.map(crate::domain::to_ms))
        .collect::<Option<Vec<i64>>>()?
        .into_iter()
        .min()
}

/// The causes of `error`, outermost first, for the log line that reports it.
fn causes(error: &dyn std::error::Error) -> Vec<String> {
    std::iter::successors(error.source(), |e| e.source())
        .map(ToString::to_string)
        .collect()
}

impl SyncEngine {
    /// Builds the engine and marks jobs that a previous process left running as interrupted.
    pub async fn start(
        store: Store,
        client: upstream::Client,
        config: SyncConfig,
    ) -> Result<Self, SyncError> {
        let interrupted = store.interrupt_running_jobs().await?;
        if interrupted > 0 {
            tracing::warn!(
                jobs = interrupted,
                "marked jobs of a stopped process as interrupted; the next run resumes them"
            );
        }
        let (events, _) = broadcast::channel(1024);
        let engine = Self {
            inner: Arc::new(Inner {
                store,
                client,
                config,
                running: Mutex::new(HashMap::new()),
                starting: tokio::sync::Mutex::new(()),
                events,
                tracker: TaskTracker::new(),
                cancel: CancellationToken::new(),
            }),
        };
        // Replica mode: the events of jobs other replicas run reach this process's subscribers,
        // and their requests to stop a location's sync stop it here when it runs here.
        let mut remote = engine.inner.store.remote_sync_events();
        let mut stops = engine.inner.store.remote_stops();
        let forward = engine.clone();
        engine.inner.tracker.spawn(async move {
            loop {
                tokio::select! {
                    _ = forward.inner.cancel.cancelled() => return,
                    event = remote.recv() => match event {
                        Ok(event) => {
                            let _ = forward.inner.events.send(event);
                        }
                        Err(broadcast::error::RecvError::Lagged(_)) => {}
                        Err(broadcast::error::RecvError::Closed) => return,
                    },
                    stop = stops.recv() => match stop {
                        Ok((location_id, reason)) => {
                            forward.stop_here(&location_id, &reason);
                        }
                        Err(broadcast::error::RecvError::Lagged(_)) => {}
                        Err(broadcast::error::RecvError::Closed) => return,
                    },
                }
            }
        });
        if engine.inner.config.interval_secs > 0 {
            let scheduler = engine.clone();
            engine
                .inner
                .tracker
                .spawn(async move { scheduler.schedule().await });
        }
        Ok(engine)
    }

    /// The narrow view of the engine that the GraphQL layer gets.
    pub fn handle(&self) -> SyncHandle {
        SyncHandle {
            engine: self.clone(),
        }
    }

    /// The GHL client the engine syncs with (the command line stores credentials through it).
    pub fn client(&self) -> &upstream::Client {
        &self.inner.client
    }

    /// The cache the engine writes.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// Events of every location; filter by `location_id`.
    pub fn subscribe(&self) -> broadcast::Receiver<SyncEvent> {
        self.inner.events.subscribe()
    }

    /// The job running for a location, if any.
    pub fn running(&self, location_id: &str) -> Option<JobSnapshot> {
        lock(&self.inner.running)
            .get(location_id)
            .map(|r| r.progress.snapshot())
    }

    /// Starts a sync of the location as a manual request ([`Trigger::Manual`]), or joins the one
    /// running. Returns the job and whether it was joined.
    pub async fn refresh(
        &self,
        location_id: &str,
        mode: SyncMode,
    ) -> Result<(JobSnapshot, bool), SyncError> {
        self.refresh_as(location_id, mode, Trigger::Manual).await
    }

    /// The location's run of failed jobs, if its last finished job failed (whether or not its
    /// cooldown is still on).
    pub async fn cooldown(&self, location_id: &str) -> Result<Option<Cooldown>, SyncError> {
        let jobs = self
            .inner
            .store
            .jobs(location_id, cooldown::HISTORY)
            .await?;
        let reset_at = self.inner.store.failures_reset_at(location_id).await?;
        Ok(self
            .inner
            .config
            .cooldown_policy()
            .cooldown(&jobs, reset_at))
    }

    /// Starts a sync of the location, or joins the one running. Returns the job and whether it
    /// was joined. During a cooldown an automatic request starts nothing, a manual one at most
    /// one job per step.
    pub async fn refresh_as(
        &self,
        location_id: &str,
        mode: SyncMode,
        trigger: Trigger,
    ) -> Result<(JobSnapshot, bool), SyncError> {
        if self.inner.cancel.is_cancelled() {
            return Err(SyncError::ShuttingDown);
        }
        // Joining a running job costs GHL nothing, cooldown or not.
        if let Some(running) = lock(&self.inner.running).get(location_id) {
            return Ok((running.progress.snapshot(), true));
        }
        let _starting = self.inner.starting.lock().await;
        if let Some(running) = lock(&self.inner.running).get(location_id) {
            return Ok((running.progress.snapshot(), true));
        }
        if self.inner.store.credential(location_id).await?.is_none() {
            return Err(SyncError::NoCredentials(location_id.to_owned()));
        }
        if let Some(cooldown) = self.cooldown(location_id).await?
            && cooldown.active(now())
            && (trigger == Trigger::Automatic || cooldown.retry_spent)
        {
            return Err(SyncError::CoolingDown {
                location_id: location_id.to_owned(),
                failures: cooldown.failures,
                until: cooldown.next_attempt_at,
            });
        }
        let location_lock = match self.lock_location(location_id).await? {
            Ok(location_lock) => location_lock,
            Err(elsewhere) => return Ok((elsewhere, true)),
        };
        let store = &self.inner.store;
        if location_lock.is_shared() {
            // Holding the lock, a queued or running job of the location is an orphan of a
            // replica that died: interrupted, so that this job resumes it.
            let orphans = store.interrupt_jobs_of(location_id, None).await?;
            if orphans > 0 {
                tracing::warn!(
                    location_id,
                    "took over the sync of a gateway that stopped; resuming its job"
                );
            }
        }
        let now = now_ms();
        let job = SyncJob {
            id: uuid::Uuid::new_v4().to_string(),
            location_id: location_id.to_owned(),
            mode,
            state: JobState::Queued,
            mark: now,
            started_at: from_ms(now),
            finished_at: None,
            error: None,
        };
        // Written at once: the other replicas, finding the lock taken, answer `joined` with
        // this job.
        store.insert_job(&job).await?;
        let running = Arc::new(Running {
            progress: Progress::new(
                JobSnapshot {
                    job,
                    stages: Vec::new(),
                },
                self.inner.events.clone(),
                store.relay(),
            ),
            done: watch::channel(false).0,
            cancel: self.inner.cancel.child_token(),
            stopped: Mutex::new(None),
        });
        lock(&self.inner.running).insert(location_id.to_owned(), running.clone());
        let snapshot = running.progress.snapshot();
        let engine = self.clone();
        let location = location_id.to_owned();
        self.inner.tracker.spawn(async move {
            // A lost lock (its connection failed) stops the job: another replica may take over.
            let lost = location_lock.lost();
            let watch = {
                let running = running.clone();
                tokio::spawn(async move {
                    lost.cancelled().await;
                    *lock(&running.stopped) = Some(
                        "stopped: this gateway lost the location's lock (its PostgreSQL connection \
                         failed); the next run resumes the job"
                            .to_owned(),
                    );
                    running.cancel.cancel();
                })
            };
            // Even if the job panics, the location is freed and its waiters are woken.
            let _release = Release {
                engine: engine.clone(),
                location_id: location.clone(),
                running: running.clone(),
                _lock: location_lock,
            };
            engine.run_job(&location, running).await;
            watch.abort();
        });
        Ok((snapshot, false))
    }

    /// Takes the location's sync lock, or finds the job of the replica that holds it. The
    /// holder writes its job right after taking the lock; a job that ended meanwhile released
    /// it, so the lock is tried again.
    async fn lock_location(
        &self,
        location_id: &str,
    ) -> Result<Result<LocationLock, JobSnapshot>, SyncError> {
        const ATTEMPTS: u32 = 100;
        for _ in 0..ATTEMPTS {
            if let Some(location_lock) = self.inner.store.try_lock_location(location_id).await? {
                return Ok(Ok(location_lock));
            }
            if let Some(elsewhere) = self.inner.store.active_job(location_id).await? {
                return Ok(Err(elsewhere));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(SyncError::LockedElsewhere(location_id.to_owned()))
    }

    /// Waits until the location has no job running, at most `timeout`. Returns whether it
    /// finished in time.
    pub async fn wait_idle(&self, location_id: &str, timeout: Duration) -> bool {
        let Some(running) = lock(&self.inner.running).get(location_id).cloned() else {
            if self.inner.store.cluster().is_none() {
                return true;
            }
            return tokio::time::timeout(timeout, self.wait_elsewhere(location_id))
                .await
                .is_ok();
        };
        let mut done = running.done.subscribe();
        tokio::time::timeout(timeout, done.wait_for(|d| *d))
            .await
            .is_ok()
    }

    /// Replica mode: waits until no replica runs a job of the location. Woken by the job's
    /// events, and checks every second whether its replica died (its lock free: the job is an
    /// orphan, marked interrupted here).
    async fn wait_elsewhere(&self, location_id: &str) {
        let mut events = self.subscribe();
        let store = &self.inner.store;
        loop {
            match store.active_job(location_id).await {
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => return,
            }
            {
                // No job may start in this process meanwhile: its row would look orphaned, as
                // the lock is re-entrant within the process that holds it.
                let _starting = self.inner.starting.lock().await;
                let local = lock(&self.inner.running).get(location_id).cloned();
                if let Some(running) = local {
                    drop(_starting);
                    // A job of this process now: its own signal says when it ends.
                    let _ = running.done.subscribe().wait_for(|d| *d).await;
                    return;
                }
                if let Ok(Some(location_lock)) = store.try_lock_location(location_id).await {
                    let _ = store.interrupt_jobs_of(location_id, None).await;
                    drop(location_lock);
                    return;
                }
            }
            let finished = async {
                loop {
                    match events.recv().await {
                        Ok(event)
                            if event.location_id == location_id && event.job.is_finished() =>
                        {
                            return;
                        }
                        Err(broadcast::error::RecvError::Closed) => {
                            std::future::pending::<()>().await;
                        }
                        _ => {}
                    }
                }
            };
            let _ = tokio::time::timeout(Duration::from_secs(1), finished).await;
        }
    }

    /// Stops the location's running job, if any, as [`SyncEngine::shutdown`] stops them all (its
    /// GHL calls dropped, the page being written finished); the job ends FAILED with `reason` as
    /// its error. In replica mode the replica that runs it stops it. Whether a job was running in
    /// this process. Used when GHL says the app was uninstalled.
    pub fn stop(&self, location_id: &str, reason: &str) -> bool {
        self.inner.store.publish_stop(location_id, reason);
        self.stop_here(location_id, reason)
    }

    /// [`SyncEngine::stop`] in this process only.
    fn stop_here(&self, location_id: &str, reason: &str) -> bool {
        let Some(running) = lock(&self.inner.running).get(location_id).cloned() else {
            return false;
        };
        *lock(&running.stopped) = Some(reason.to_owned());
        running.cancel.cancel();
        true
    }

    /// Stops scheduling and stops running jobs, and waits for them: GHL calls in flight, their
    /// retries and backoff sleeps are dropped at once; a page being written is finished first,
    /// so each stage keeps its last checkpoint and the next run resumes there.
    pub async fn shutdown(&self) {
        self.inner.cancel.cancel();
        self.inner.tracker.close();
        self.inner.tracker.wait().await;
    }

    /// The previous job to resume, if the last one failed recently and can be continued in `mode`.
    async fn resumable(
        &self,
        location_id: &str,
        mode: SyncMode,
        current: &str,
    ) -> Result<Option<JobSnapshot>, StoreError> {
        let Some(last) = self
            .inner
            .store
            .previous_job(location_id, Some(current))
            .await?
        else {
            return Ok(None);
        };
        let window = self.inner.config.resume_window_secs as i64 * 1000;
        // Measured from the first attempt (whose start every resumption inherits as its mark),
        // not from the latest: else a FULL job that keeps failing would be resumed forever.
        let recent = now_ms() - last.mark <= window;
        // A FULL job carries on as FULL; an INCREMENTAL one only serves an INCREMENTAL request.
        let compatible = last.mode == SyncMode::Full || mode == SyncMode::Incremental;
        if last.state != JobState::Failed || !recent || !compatible {
            return Ok(None);
        }
        let stages = self
            .inner
            .store
            .stages_of_jobs(std::slice::from_ref(&last.id))
            .await?;
        Ok(Some(JobSnapshot { job: last, stages }))
    }

    async fn run_job(&self, location_id: &str, running: Arc<Running>) {
        let Err(error) = self.try_run_job(location_id, &running).await else {
            return;
        };
        tracing::error!(location_id, error = %error, causes = ?causes(&error), "sync job failed to run");
        let mut snapshot = running.progress.snapshot();
        snapshot.job.state = JobState::Failed;
        snapshot.job.error = Some(error.to_string());
        snapshot.job.finished_at = Some(now());
        crate::telemetry::metrics::sync_job(sync_mode_name(snapshot.job.mode), "failed");
        let _ = self.inner.store.update_job(&snapshot.job).await;
        running.progress.publish(|s| *s = snapshot);
    }

    async fn try_run_job(&self, location_id: &str, running: &Running) -> Result<(), SyncError> {
        let store = &self.inner.store;
        let current = running.progress.snapshot().job;
        let previous = self
            .resumable(location_id, current.mode, &current.id)
            .await?;
        let requested = current.mode;
        let watermarks = store.watermarks(location_id).await?;
        // Nothing cached yet: an incremental sync has nothing to start from.
        let mut mode = if watermarks.contacts.is_none() {
            SyncMode::Full
        } else {
            requested
        };
        // The next event announces the job running, with its stages.
        let job = running
            .progress
            .update_silently(|snapshot| {
                if let Some(previous) = &previous {
                    mode = previous.job.mode;
                    snapshot.job.mark = previous.job.mark;
                }
                snapshot.job.mode = mode;
                snapshot.job.state = JobState::Running;
            })
            .job;
        let stages: Vec<SyncStage> = Resource::ALL
            .into_iter()
            .map(|resource| {
                let carried = previous.as_ref().and_then(|p| {
                    let stage = p.stages.iter().find(|s| s.resource == resource)?;
                    Some((stage, p.job.mark))
                });
                match carried {
                    Some((stage, mark)) => SyncStage {
                        job_id: job.id.clone(),
                        // A stage that failed restarts from its checkpoint.
                        state: if stage.state == JobState::Succeeded {
                            JobState::Succeeded
                        } else {
                            JobState::Queued
                        },
                        error: None,
                        // The data it keeps is as old as it was. A stage stored before read
                        // times were kept was read no earlier than its job's first attempt.
                        read_at: stage.read_at.or(Some(from_ms(mark))),
                        ..stage.clone()
                    },
                    None => SyncStage::queued(&job.id, resource, now()),
                }
            })
            .collect();
        store.update_job(&job).await?;
        for stage in &stages {
            store.save_stage(location_id, stage).await?;
        }
        if let Some(previous) = &previous {
            tracing::info!(location_id, job_id = %job.id, resumed = %previous.job.id, "resuming an interrupted sync");
        }
        tracing::info!(location_id, job_id = %job.id, mode = sync_mode_name(mode), "sync started");
        running.progress.publish(|s| s.stages = stages.clone());

        let outcome = self
            .run_stages(location_id, running, &job, mode, &watermarks)
            .await;

        // The job's end is written before it is announced, so that a subscriber reading the
        // freshness on the last event sees the sync over.
        let mut finished = running.progress.snapshot().job;
        finished.finished_at = Some(now());
        match &outcome {
            Ok(()) => finished.state = JobState::Succeeded,
            Err(error) => {
                finished.state = JobState::Failed;
                let stopped = lock(&running.stopped).clone();
                finished.error = Some(stopped.unwrap_or_else(|| error.to_string()));
            }
        }
        // What the job may claim: the time its oldest kept data was read, never its end.
        let synced_at = outcome.is_ok().then(|| {
            let stages = running.progress.snapshot().stages;
            synced_at(&stages).unwrap_or(finished.mark)
        });
        // Planner statistics before the job says it is done, so that the first reads after a
        // large sync are planned for the tables as they now are. A stop (shutdown) does not wait
        // for them: autovacuum gets there later.
        let fetched: i64 = running
            .progress
            .snapshot()
            .stages
            .iter()
            .map(|s| s.fetched)
            .sum();
        if outcome.is_ok() && mode == SyncMode::Full && fetched >= STATISTICS_AFTER_ROWS {
            let refreshed = tokio::select! {
                biased;
                _ = running.cancel.cancelled() => Ok(()),
                refreshed = store.refresh_planner_statistics() => refreshed,
            };
            if let Err(error) = refreshed {
                tracing::warn!(location_id, %error, "could not refresh the planner's statistics");
            }
        }
        store.end_job(&finished, synced_at).await?;
        let ended = if outcome.is_ok() {
            "succeeded"
        } else {
            "failed"
        };
        crate::telemetry::metrics::sync_job(sync_mode_name(mode), ended);
        let finished = running.progress.publish(|s| s.job = finished);
        let calls: i64 = finished.stages.iter().map(|s| s.calls).sum();
        tracing::info!(location_id, job_id = %job.id, state = crate::store::job_state_name(finished.job.state), calls, "sync finished");
        Ok(())
    }

    /// Runs the stages that are not done yet, in parallel. Returns the first failure, if any.
    async fn run_stages(
        &self,
        location_id: &str,
        running: &Running,
        job: &SyncJob,
        mode: SyncMode,
        watermarks: &crate::store::Watermarks,
    ) -> Result<(), JobError> {
        let store = &self.inner.store;
        let existing = store.location_row(location_id).await?;
        store.ensure_location(location_id).await?;
        // The location's own row (its name): until GHL told us its name, then on a FULL run when
        // it is a week old; a call that FACTS.md's minimum does not count, so made rarely.
        const DETAILS_MAX_AGE_MS: i64 = 7 * 24 * 3600 * 1000;
        let details_due = existing.as_ref().is_none_or(|l| {
            l.name.is_none()
                || (mode == SyncMode::Full && job.mark - l.seen_at > DETAILS_MAX_AGE_MS)
        });
        let overlap = self.inner.config.overlap_secs as i64 * 1000;
        let since = |ms: Option<i64>| match mode {
            SyncMode::Full => None,
            SyncMode::Incremental => ms.map(|ms| from_ms(ms - overlap)),
        };
        let context = StageContext {
            client: &self.inner.client,
            store,
            progress: &running.progress,
            cancel: &running.cancel,
            job,
            mode,
            overlap: chrono::Duration::milliseconds(overlap),
        };
        let mut todo: Vec<SyncStage> = running
            .progress
            .snapshot()
            .stages
            .into_iter()
            .filter(|s| s.state != JobState::Succeeded)
            .collect();
        // The lists start first, the longest (conversations, FACTS.md §11) first of all: until
        // GHL has answered once the limiter sends only a tenth of the window (`limiter::State::
        // blind`), and the lists' first pages are the ones that must not start late.
        todo.sort_by_key(|stage| STAGE_START_ORDER.iter().position(|r| *r == stage.resource));
        let stages_done = CancellationToken::new();
        let stages = async {
            let results = futures::future::join_all(todo.into_iter().map(|stage| {
                let since = match stage.resource {
                    Resource::Contacts => since(watermarks.contacts),
                    Resource::Tasks => since(watermarks.tasks),
                    Resource::Conversations => since(watermarks.conversations),
                    Resource::Opportunities => since(watermarks.opportunities),
                    _ => None,
                };
                context.run(stage, since)
            }))
            .await;
            stages_done.cancel();
            results
        };
        // The location's details are on no chain: they wait for GHL's first answer (or for the
        // stages to end having sent nothing), so that the blind requests are the lists'. When
        // one request went alone, a 1,000-contact sync was one round trip (0.15 s of 1.35 s)
        // longer for sending them first.
        let details = async {
            if !details_due {
                return Ok(None);
            }
            tokio::select! {
                _ = self.inner.client.answered(location_id) => {}
                _ = stages_done.cancelled() => {}
            }
            tokio::select! {
                biased;
                _ = running.cancel.cancelled() => Ok(None),
                details = self.inner.client.location(location_id) => details.map(Some),
            }
        };
        let (results, details) = tokio::join!(stages, details);
        match details {
            Ok(Some(location)) => store.upsert_location(&location, job.mark).await?,
            Ok(None) => {}
            Err(error) => return Err(self.fail_location(location_id, error).await),
        }
        let mut first_error = None;
        for error in results.into_iter().filter_map(Result::err) {
            if error.is_auth() {
                let _ = store
                    .set_auth_error(location_id, Some(&error.to_string()))
                    .await;
            }
            first_error.get_or_insert(error);
        }
        match first_error {
            Some(error) => Err(error.into()),
            None => {
                store.set_auth_error(location_id, None).await?;
                Ok(())
            }
        }
    }

    /// Records a failure that stops the whole job; credentials refused mark the location.
    async fn fail_location(&self, location_id: &str, error: UpstreamError) -> JobError {
        if error.is_auth() {
            let _ = self
                .inner
                .store
                .set_auth_error(location_id, Some(&error.to_string()))
                .await;
        }
        JobError::Location(error)
    }

    /// Refreshes every location with credentials every `interval`; FULL when the last FULL run is
    /// older than the full interval.
    async fn schedule(&self) {
        let interval = Duration::from_secs(self.inner.config.interval_secs);
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = self.inner.cancel.cancelled() => return,
                _ = ticker.tick() => {}
            }
            if let Err(error) = self.schedule_once().await {
                tracing::error!(error = %error, causes = ?causes(&error), "scheduled sync round failed");
            }
        }
    }

    /// One round of the scheduler: a public step so that tests can drive it.
    pub async fn schedule_once(&self) -> Result<usize, SyncError> {
        let full_after = self.inner.config.full_interval_secs as i64 * 1000;
        let mut started = 0;
        for location_id in self.inner.store.credentialed_locations().await? {
            let last_full = self.inner.store.last_full_sync(&location_id).await?;
            let mode = if last_full.is_none_or(|t| now_ms() - t >= full_after) {
                SyncMode::Full
            } else {
                SyncMode::Incremental
            };
            match self
                .refresh_as(&location_id, mode, Trigger::Automatic)
                .await
            {
                Ok((_, joined)) => started += usize::from(!joined),
                Err(SyncError::CoolingDown { .. }) => {}
                Err(error) => return Err(error),
            }
        }
        Ok(started)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_the_command_lines() {
        let config = SyncConfig::default();
        assert_eq!(
            (
                config.interval_secs,
                config.full_interval_secs,
                config.overlap_secs,
                config.resume_window_secs,
                config.failure_cooldown_secs,
                config.failure_cooldown_max_secs
            ),
            (0, 86_400, 120, 86_400, 60, 3_600)
        );
    }

    #[test]
    fn a_job_error_records_the_text_it_did_before_and_keeps_its_cause() {
        let store = JobError::from(StoreError::Invalid("x".into()));
        assert_eq!(store.to_string(), "stored value is invalid: x");
        let stage = JobError::from(StageError::Interrupted);
        assert_eq!(
            stage.to_string(),
            "interrupted: the gateway is shutting down"
        );
        let nested = JobError::from(StageError::from(StoreError::Invalid("y".into())));
        assert_eq!(causes(&nested), ["stored value is invalid: y"]);
        // The cooldown ignores interrupted jobs by this text.
        let mut job = crate::domain::SyncJob {
            id: "j".into(),
            location_id: "l".into(),
            mode: SyncMode::Full,
            state: JobState::Failed,
            mark: 0,
            started_at: from_ms(0),
            finished_at: None,
            error: Some(stage.to_string()),
        };
        assert!(job.interrupted());
        job.error = Some(JobError::from(StoreError::Invalid("x".into())).to_string());
        assert!(!job.interrupted());
    }
}
