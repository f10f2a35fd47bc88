//! One stage of a job: fetch one resource's pages and write each with its checkpoint.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use chrono::{DateTime, Utc};
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};

use super::{JobSnapshot, Running, SyncEngine, SyncMode, now_ms};
use crate::domain::Resource;
use crate::store::entities::{sync_job, sync_stage};
use crate::store::{Page, StageCheckpoint, StoreError};
use crate::upstream::{Cursor, Listing, Meter, Records, UpstreamError};

/// Why a stage failed.
#[derive(Debug, thiserror::Error)]
pub(super) enum StageError {
    #[error("{0}")]
    Upstream(#[from] UpstreamError),
    #[error("the cache database failed: {0}")]
    Store(#[from] StoreError),
    #[error("interrupted: the gateway is shutting down")]
    Interrupted,
}

impl StageError {
    pub(super) fn is_auth(&self) -> bool {
        matches!(self, StageError::Upstream(e) if e.is_auth())
    }
}

pub(super) fn checkpoint_of(stage: &sync_stage::Model) -> StageCheckpoint {
    StageCheckpoint {
        job_id: stage.job_id.clone(),
        stage: stage.name.clone(),
        state: stage.state.clone(),
        fetched: stage.fetched,
        total: stage.total,
        pages: stage.pages,
        checkpoint: stage.checkpoint.clone(),
        error: stage.error.clone(),
        calls: stage.calls,
        retries: stage.retries,
        rate_limited: stage.rate_limited,
        waited_ms: stage.waited_ms,
    }
}

pub(super) struct Context<'a> {
    pub engine: &'a SyncEngine,
    pub running: &'a Running,
    pub location_id: &'a str,
    pub job: &'a sync_job::Model,
    pub mode: SyncMode,
}

impl Context<'_> {
    fn stage(&self, resource: Resource) -> sync_stage::Model {
        let snapshot: JobSnapshot = super::lock(&self.running.snapshot).clone();
        snapshot
            .stages
            .into_iter()
            .find(|s| s.name == resource.as_str())
            .expect("every resource has a stage from the job's start")
    }

    /// Applies `update` to the stage, publishes the job, and returns the stage.
    fn update(
        &self,
        resource: Resource,
        update: impl FnOnce(&mut sync_stage::Model),
    ) -> sync_stage::Model {
        let snapshot = self.engine.publish(self.running, |s| {
            if let Some(stage) = s.stages.iter_mut().find(|st| st.name == resource.as_str()) {
                update(stage);
                stage.updated_at = now_ms();
            }
        });
        snapshot
            .stages
            .into_iter()
            .find(|s| s.name == resource.as_str())
            .expect("the stage exists")
    }

    /// Runs the stage to its end; returns its error, if any.
    pub(super) async fn run(
        &self,
        resource: Resource,
        since: Option<DateTime<Utc>>,
    ) -> Option<StageError> {
        let start = self.stage(resource);
        let meter = Arc::new(Meter::default());
        let running = self.update(resource, |s| s.state = "RUNNING".into());
        if let Err(error) = self
            .engine
            .inner
            .store
            .save_stage(&checkpoint_of(&running))
            .await
        {
            return Some(error.into());
        }
        let result = meter
            .clone()
            .scope(self.fetch(resource, since, &start, &meter))
            .await;
        let result = match result {
            // A complete list: what it did not return is gone from GHL.
            Ok(complete) if complete => self
                .engine
                .inner
                .store
                .mark_unseen_deleted(self.location_id, resource, self.job.mark)
                .await
                .map(|deleted| {
                    if deleted > 0 {
                        tracing::info!(
                            location_id = self.location_id,
                            stage = resource.as_str(),
                            deleted,
                            "marked rows deleted"
                        );
                    }
                })
                .map_err(StageError::from),
            Ok(_) => Ok(()),
            Err(error) => Err(error),
        };
        let (state, error) = match &result {
            Ok(()) => ("SUCCEEDED", None),
            Err(error) => ("FAILED", Some(error.to_string())),
        };
        if let Some(error) = &error {
            tracing::warn!(location_id = self.location_id, stage = resource.as_str(), error = %error, "sync stage failed");
        }
        let done = self.update(resource, |s| {
            s.state = state.into();
            s.error = error;
            metered(s, &start, &meter);
        });
        if let Err(error) = self
            .engine
            .inner
            .store
            .save_stage(&checkpoint_of(&done))
            .await
        {
            return Some(error.into());
        }
        result.err()
    }

    /// Fetches and writes the stage's records. Returns whether it read the complete list (so that
    /// rows it did not see can be marked deleted).
    async fn fetch(
        &self,
        resource: Resource,
        since: Option<DateTime<Utc>>,
        start: &sync_stage::Model,
        meter: &Arc<Meter>,
    ) -> Result<bool, StageError> {
        let client = &self.engine.inner.client;
        let store = &self.engine.inner.store;
        let (location_id, mark) = (self.location_id, self.job.mark);
        let single = |records: usize| {
            move |s: &mut sync_stage::Model| {
                s.fetched = records as i64;
                s.total = Some(records as i64);
                s.pages = 1;
            }
        };
        macro_rules! whole_list {
            ($fetch:expr, $page:path) => {{
                let (records, _skipped) = $fetch.await?;
                let stage = self.update(resource, |s| {
                    single(records.len())(s);
                    metered(s, start, meter);
                });
                store
                    .write_page(
                        location_id,
                        mark,
                        $page(&records),
                        Some(&checkpoint_of(&stage)),
                    )
                    .await?;
                return Ok(true);
            }};
        }
        let listing = match resource {
            Resource::Users => whole_list!(client.users(location_id), Page::Users),
            Resource::CustomFields => {
                whole_list!(client.custom_fields(location_id), Page::CustomFields)
            }
            Resource::Pipelines => whole_list!(client.pipelines(location_id), Page::Pipelines),
            Resource::Contacts => Listing::Contacts(since),
            Resource::Tasks => Listing::Tasks(since),
            Resource::Conversations => Listing::Conversations(since),
            Resource::Opportunities => Listing::Opportunities(since),
        };
        let resume: Option<Cursor> = start
            .checkpoint
            .as_deref()
            .and_then(|c| serde_json::from_str(c).ok());
        let mut fetched = if resume.is_some() { start.fetched } else { 0 };
        let mut pages = if resume.is_some() { start.pages } else { 0 };
        let mut listing = listing;
        let mut stream = read_ahead(
            client
                .pages(location_id, listing.clone(), resume.clone(), fetched as u64)
                .boxed(),
            meter.clone(),
        );
        let mut first = true;
        loop {
            if self.engine.inner.cancel.is_cancelled() {
                return Err(StageError::Interrupted);
            }
            let page = match stream.try_next().await {
                Ok(Some(page)) => page,
                Ok(None) => break,
                Err(UpstreamError::BadRequest { status, message })
                    if first && listing.is_incremental() =>
                {
                    // GHL refused the changed-since keys: read the whole list instead.
                    tracing::warn!(location_id, stage = resource.as_str(), status, message = %message, "incremental listing refused; reading the whole list");
                    listing = listing.full();
                    stream = read_ahead(
                        client.pages(location_id, listing.clone(), None, 0).boxed(),
                        meter.clone(),
                    );
                    fetched = 0;
                    pages = 0;
                    continue;
                }
                Err(error) => return Err(error.into()),
            };
            first = false;
            fetched += page.records.len() as i64;
            pages += 1;
            let cursor = page
                .next
                .as_ref()
                .map(|c| serde_json::to_string(c).unwrap_or_default());
            let stage = self.update(resource, |s| {
                s.fetched = fetched;
                s.total = page.total.map(|t| t as i64).or(s.total);
                s.pages = pages;
                s.checkpoint = cursor;
                metered(s, start, meter);
            });
            let checkpoint = checkpoint_of(&stage);
            let written = match &page.records {
                Records::Contacts(r) => {
                    store.write_page(location_id, mark, Page::Contacts(r), Some(&checkpoint))
                }
                Records::Tasks(r) => {
                    store.write_page(location_id, mark, Page::Tasks(r), Some(&checkpoint))
                }
                Records::Conversations(r) => {
                    store.write_page(location_id, mark, Page::Conversations(r), Some(&checkpoint))
                }
                Records::Opportunities(r) => {
                    store.write_page(location_id, mark, Page::Opportunities(r), Some(&checkpoint))
                }
            };
            written.await?;
        }
        Ok(self.mode == SyncMode::Full && !listing.is_incremental())
    }
}

/// The stage's cost: what it carried from an earlier attempt plus what this attempt metered.
fn metered(stage: &mut sync_stage::Model, start: &sync_stage::Model, meter: &Meter) {
    stage.calls = start.calls + meter.calls.load(Ordering::Relaxed) as i64;
    stage.retries = start.retries + meter.retries.load(Ordering::Relaxed) as i64;
    stage.rate_limited = start.rate_limited + meter.rate_limited.load(Ordering::Relaxed) as i64;
    stage.waited_ms = start.waited_ms + (meter.waited_us.load(Ordering::Relaxed) / 1000) as i64;
}

/// The pages of `pages`, fetched one ahead of the caller: the next page's request is in flight
/// while the caller writes this one, so a stage's time is its slower half, not the sum of both.
/// At most two pages wait in memory; dropping the stream stops the fetching.
fn read_ahead(
    pages: BoxStream<'static, PageResult>,
    meter: Arc<Meter>,
) -> BoxStream<'static, PageResult> {
    let (sender, receiver) = tokio::sync::mpsc::channel(1);
    // The fetching task counts its calls on the stage's meter, as the stage itself would.
    tokio::spawn(meter.scope(async move {
        let mut pages = pages;
        while let Some(page) = pages.next().await {
            let failed = page.is_err();
            if sender.send(page).await.is_err() || failed {
                break;
            }
        }
    }));
    tokio_stream::wrappers::ReceiverStream::new(receiver).boxed()
}

type PageResult = Result<crate::upstream::FetchedPage, UpstreamError>;
