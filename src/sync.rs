//! The background sync: one job per location at a time, stages in parallel within the location's
//! rate budget, every page written with its checkpoint, progress broadcast to subscribers.
//!
//! `graphql` talks to it through [`SyncHandle`]: start or join a job, wait for one, subscribe to
//! events. The engine uses `upstream` to read GHL and `store` to write the cache; it knows nothing
//! of GraphQL.
//!
//! - **Single flight**: `refresh` reserves the location under a lock before any I/O, so a hundred
//!   concurrent calls start one job and the other 99 join it.
//! - **Modes**: FULL reads every list and then marks the rows it did not see deleted (each upsert
//!   stamps rows with the job's mark). INCREMENTAL reads what changed since the newest change in
//!   the cache, minus an overlap for GHL's index lag; deletions wait for the next FULL run.
//! - **Resume**: a job that failed or was interrupted is resumed by the next run (within the
//!   resume window): finished stages are not fetched again, the others restart from their last
//!   checkpoint, and the mark is inherited so a FULL run still reconciles correctly.
//! - **Events** go through a bounded broadcast channel: a slow subscriber lags and skips events,
//!   it never slows the sync.

mod stage;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::domain::Resource;
use crate::store::entities::{sync_job, sync_stage};
use crate::store::{Store, StoreError};
use crate::upstream::{self, UpstreamError};

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
    /// A failed or interrupted job younger than this many seconds is resumed by the next run.
    #[arg(
        long = "resume-window",
        env = "RESUME_WINDOW_SECS",
        default_value_t = 86_400
    )]
    pub resume_window_secs: u64,
}

impl Default for SyncConfig {
    fn default() -> Self {
        Self {
            interval_secs: 0,
            full_interval_secs: 86_400,
            overlap_secs: 120,
            resume_window_secs: 86_400,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncMode {
    Incremental,
    Full,
}

impl SyncMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SyncMode::Incremental => "INCREMENTAL",
            SyncMode::Full => "FULL",
        }
    }

    fn parse(s: &str) -> Self {
        if s == "FULL" {
            SyncMode::Full
        } else {
            SyncMode::Incremental
        }
    }
}

/// A job and its stages as they stand.
#[derive(Clone, Debug, PartialEq)]
pub struct JobSnapshot {
    pub job: sync_job::Model,
    pub stages: Vec<sync_stage::Model>,
}

impl JobSnapshot {
    pub fn is_finished(&self) -> bool {
        matches!(self.job.state.as_str(), "SUCCEEDED" | "FAILED")
    }
}

/// A change of a location's sync.
#[derive(Clone, Debug)]
pub struct SyncEvent {
    pub location_id: String,
    pub job: JobSnapshot,
}

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("the cache database failed")]
    Store(#[from] StoreError),
    #[error("location {0} has no GHL credentials")]
    NoCredentials(String),
    #[error("the gateway is shutting down")]
    ShuttingDown,
}

/// Frees a location's single-flight slot when its job ends, however it ends.
struct Release {
    engine: SyncEngine,
    location_id: String,
    running: Arc<Running>,
}

impl Drop for Release {
    fn drop(&mut self) {
        lock(&self.engine.inner.running).remove(&self.location_id);
        self.running.done.send_replace(true);
    }
}

/// A job in flight.
struct Running {
    snapshot: Mutex<JobSnapshot>,
    done: watch::Sender<bool>,
}

struct Inner {
    store: Store,
    client: upstream::Client,
    config: SyncConfig,
    running: Mutex<HashMap<String, Arc<Running>>>,
    events: broadcast::Sender<SyncEvent>,
    tracker: TaskTracker,
    cancel: CancellationToken,
}

/// The sync engine; cheap to clone. [`SyncHandle`] is the same thing seen from `graphql`.
#[derive(Clone)]
pub struct SyncEngine {
    inner: Arc<Inner>,
}

/// What `graphql` may ask of the sync.
pub type SyncHandle = SyncEngine;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
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
                events,
                tracker: TaskTracker::new(),
                cancel: CancellationToken::new(),
            }),
        };
        if engine.inner.config.interval_secs > 0 {
            let scheduler = engine.clone();
            engine
                .inner
                .tracker
                .spawn(async move { scheduler.schedule().await });
        }
        Ok(engine)
    }

    pub fn client(&self) -> &upstream::Client {
        &self.inner.client
    }

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
            .map(|r| lock(&r.snapshot).clone())
    }

    /// Starts a sync of the location, or joins the one running. Returns the job and whether it
    /// was joined.
    pub async fn refresh(
        &self,
        location_id: &str,
        mode: SyncMode,
    ) -> Result<(JobSnapshot, bool), SyncError> {
        if self.inner.cancel.is_cancelled() {
            return Err(SyncError::ShuttingDown);
        }
        if self.inner.store.credential(location_id).await?.is_none() {
            return Err(SyncError::NoCredentials(location_id.to_owned()));
        }
        let running = {
            let mut map = lock(&self.inner.running);
            if let Some(running) = map.get(location_id) {
                return Ok((lock(&running.snapshot).clone(), true));
            }
            let now = now_ms();
            let job = sync_job::Model {
                id: uuid::Uuid::new_v4().to_string(),
                location_id: location_id.to_owned(),
                mode: mode.as_str().to_owned(),
                state: "QUEUED".to_owned(),
                mark: now,
                started_at: now,
                finished_at: None,
                error: None,
            };
            let running = Arc::new(Running {
                snapshot: Mutex::new(JobSnapshot {
                    job,
                    stages: Vec::new(),
                }),
                done: watch::channel(false).0,
            });
            map.insert(location_id.to_owned(), running.clone());
            running
        };
        let snapshot = lock(&running.snapshot).clone();
        let engine = self.clone();
        let location = location_id.to_owned();
        self.inner.tracker.spawn(async move {
            // Even if the job panics, the location is freed and its waiters are woken.
            let _release = Release {
                engine: engine.clone(),
                location_id: location.clone(),
                running: running.clone(),
            };
            engine.run_job(&location, running).await;
        });
        Ok((snapshot, false))
    }

    /// Waits until the location has no job running, at most `timeout`. Returns whether it
    /// finished in time.
    pub async fn wait_idle(&self, location_id: &str, timeout: Duration) -> bool {
        let Some(running) = lock(&self.inner.running).get(location_id).cloned() else {
            return true;
        };
        let mut done = running.done.subscribe();
        tokio::time::timeout(timeout, done.wait_for(|d| *d))
            .await
            .is_ok()
    }

    /// Stops scheduling, lets running jobs stop at their next page, and waits for them.
    pub async fn shutdown(&self) {
        self.inner.cancel.cancel();
        self.inner.tracker.close();
        self.inner.tracker.wait().await;
    }

    fn publish(&self, running: &Running, update: impl FnOnce(&mut JobSnapshot)) -> JobSnapshot {
        let snapshot = {
            let mut snapshot = lock(&running.snapshot);
            update(&mut snapshot);
            snapshot.clone()
        };
        // No subscriber is fine.
        let _ = self.inner.events.send(SyncEvent {
            location_id: snapshot.job.location_id.clone(),
            job: snapshot.clone(),
        });
        snapshot
    }

    /// The previous job to resume, if the last one failed recently and can be continued in `mode`.
    async fn resumable(
        &self,
        location_id: &str,
        mode: SyncMode,
    ) -> Result<Option<JobSnapshot>, StoreError> {
        let Some(last) = self.inner.store.last_job(location_id).await? else {
            return Ok(None);
        };
        let window = self.inner.config.resume_window_secs as i64 * 1000;
        let recent = now_ms() - last.started_at <= window;
        // A FULL job carries on as FULL; an INCREMENTAL one only serves an INCREMENTAL request.
        let compatible = last.mode == "FULL" || mode == SyncMode::Incremental;
        if last.state != "FAILED" || !recent || !compatible {
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
        let result = self.try_run_job(location_id, &running).await;
        let error = match result {
            Ok(()) => None,
            Err(error) => {
                tracing::error!(location_id, error = %error, "sync job failed to run");
                Some(error.to_string())
            }
        };
        let mut snapshot = lock(&running.snapshot).clone();
        if let Some(error) = error {
            snapshot.job.state = "FAILED".into();
            snapshot.job.error = Some(error);
            snapshot.job.finished_at = Some(now_ms());
            let _ = self.inner.store.update_job(&snapshot.job).await;
            self.publish(&running, |s| *s = snapshot);
        }
    }

    async fn try_run_job(&self, location_id: &str, running: &Running) -> Result<(), SyncError> {
        let store = &self.inner.store;
        let requested = SyncMode::parse(&lock(&running.snapshot).job.mode);
        let previous = self.resumable(location_id, requested).await?;
        let watermarks = store.watermarks(location_id).await?;
        // Nothing cached yet: an incremental sync has nothing to start from.
        let mut mode = if watermarks.contacts.is_none() {
            SyncMode::Full
        } else {
            requested
        };
        let mut stages: Vec<sync_stage::Model> = Vec::new();
        let job = {
            let mut snapshot = lock(&running.snapshot);
            if let Some(previous) = &previous {
                mode = SyncMode::parse(&previous.job.mode);
                snapshot.job.mark = previous.job.mark;
            }
            snapshot.job.mode = mode.as_str().to_owned();
            snapshot.job.state = "RUNNING".into();
            snapshot.job.clone()
        };
        for resource in Resource::ALL {
            let carried = previous
                .as_ref()
                .and_then(|p| p.stages.iter().find(|s| s.name == resource.as_str()));
            stages.push(match carried {
                Some(stage) => sync_stage::Model {
                    job_id: job.id.clone(),
                    // A stage that failed restarts from its checkpoint.
                    state: if stage.state == "SUCCEEDED" {
                        stage.state.clone()
                    } else {
                        "QUEUED".into()
                    },
                    error: None,
                    ..stage.clone()
                },
                None => sync_stage::Model {
                    job_id: job.id.clone(),
                    name: resource.as_str().to_owned(),
                    state: "QUEUED".into(),
                    fetched: 0,
                    total: None,
                    pages: 0,
                    checkpoint: None,
                    error: None,
                    updated_at: now_ms(),
                    calls: 0,
                    retries: 0,
                    rate_limited: 0,
                    waited_ms: 0,
                },
            });
        }
        store.insert_job(&job).await?;
        for stage in &stages {
            store.save_stage(&stage::checkpoint_of(stage)).await?;
        }
        if let Some(previous) = &previous {
            tracing::info!(location_id, job_id = %job.id, resumed = %previous.job.id, "resuming an interrupted sync");
        }
        tracing::info!(location_id, job_id = %job.id, mode = mode.as_str(), "sync started");
        self.publish(running, |s| s.stages = stages.clone());

        let outcome = self
            .run_stages(location_id, running, &job, mode, &watermarks)
            .await;

        // The job's end is written before it is announced, so that a subscriber reading the
        // freshness on the last event sees the sync over.
        let mut finished = lock(&running.snapshot).clone();
        finished.job.finished_at = Some(now_ms());
        match &outcome {
            Ok(()) => finished.job.state = "SUCCEEDED".into(),
            Err(error) => {
                finished.job.state = "FAILED".into();
                finished.job.error = Some(error.clone());
            }
        }
        store.update_job(&finished.job).await?;
        let finished = self.publish(running, |s| s.job = finished.job.clone());
        let calls: i64 = finished.stages.iter().map(|s| s.calls).sum();
        tracing::info!(location_id, job_id = %job.id, state = %finished.job.state, calls, "sync finished");
        Ok(())
    }

    /// Runs the stages that are not done yet, in parallel. Returns the first failure, if any.
    async fn run_stages(
        &self,
        location_id: &str,
        running: &Running,
        job: &sync_job::Model,
        mode: SyncMode,
        watermarks: &crate::store::Watermarks,
    ) -> Result<(), String> {
        let store = &self.inner.store;
        let existing = store
            .location_row(location_id)
            .await
            .map_err(|e| e.to_string())?;
        store
            .ensure_location(location_id)
            .await
            .map_err(|e| e.to_string())?;
        // The location's own row (its name): until GHL told us its name, then on a FULL run when
        // it is a week old; a call that FACTS.md's minimum does not count, so made rarely.
        const DETAILS_MAX_AGE_MS: i64 = 7 * 24 * 3600 * 1000;
        let details_due = existing.as_ref().is_none_or(|l| {
            l.name.is_none()
                || (mode == SyncMode::Full && job.mark - l.seen_at > DETAILS_MAX_AGE_MS)
        });
        if details_due {
            match self.inner.client.location(location_id).await {
                Ok(location) => store
                    .upsert_location(&location, job.mark)
                    .await
                    .map_err(|e| e.to_string())?,
                Err(error) => return Err(self.fail_location(location_id, &error).await),
            }
        }
        let overlap = self.inner.config.overlap_secs as i64 * 1000;
        let since = |ms: Option<i64>| match mode {
            SyncMode::Full => None,
            SyncMode::Incremental => ms.map(|ms| crate::domain::from_ms(ms - overlap)),
        };
        let context = stage::Context {
            engine: self,
            running,
            location_id,
            job,
            mode,
        };
        let stages = lock(&running.snapshot).stages.clone();
        let todo: Vec<_> = Resource::ALL
            .into_iter()
            .filter(|r| {
                stages
                    .iter()
                    .any(|s| s.name == r.as_str() && s.state != "SUCCEEDED")
            })
            .collect();
        let results = futures::future::join_all(todo.into_iter().map(|resource| {
            let since = match resource {
                Resource::Contacts => since(watermarks.contacts),
                Resource::Tasks => since(watermarks.tasks),
                Resource::Conversations => since(watermarks.conversations),
                Resource::Opportunities => since(watermarks.opportunities),
                _ => None,
            };
            context.run(resource, since)
        }))
        .await;
        let mut first_error = None;
        for error in results.into_iter().flatten() {
            if error.is_auth() {
                let _ = store
                    .set_auth_error(location_id, Some(&error.to_string()))
                    .await;
            }
            first_error.get_or_insert_with(|| error.to_string());
        }
        match first_error {
            Some(error) => Err(error),
            None => {
                store
                    .set_auth_error(location_id, None)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(())
            }
        }
    }

    /// Records a failure that stops the whole job; credentials refused mark the location.
    async fn fail_location(&self, location_id: &str, error: &UpstreamError) -> String {
        if error.is_auth() {
            let _ = self
                .inner
                .store
                .set_auth_error(location_id, Some(&error.to_string()))
                .await;
        }
        format!("location: {error}")
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
                tracing::error!(error = %error, "scheduled sync round failed");
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
            let (_, joined) = self.refresh(&location_id, mode).await?;
            started += usize::from(!joined);
        }
        Ok(started)
    }
}
