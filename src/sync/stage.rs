//! One stage of a job: fetch one resource's pages and write each with its checkpoint.
//!
//! The runner gets everything it uses through [`StageContext`] (the GHL client, the store, the
//! job's [`Progress`], the cancellation token) and answers with a typed [`StageError`] that keeps
//! its cause. It must not reach into the engine: it neither starts jobs nor touches other stages.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use chrono::{DateTime, Utc};
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

use super::progress::Progress;
use super::{causes, now};
use crate::domain::{JobState, Resource, SyncJob, SyncMode, SyncStage};
use crate::store::{Page, Store, StoreError};
use crate::upstream::{self, Cursor, Listing, Meter, Records, UpstreamError};

/// How soon after a page is written the heap's free pages go back to the system (at most one
/// trim per this delay, [`crate::telemetry::memory`]): a 100,000-contact FULL sync otherwise kept
/// its freed page buffers in glibc's per-thread arenas, 112 MiB of RSS over a 43 MB heap.
const TRIM_DELAY: std::time::Duration = std::time::Duration::from_secs(1);

/// Why a stage failed. Its text is what the stage (and its job) record as their `error`.
#[derive(Debug, thiserror::Error)]
pub(super) enum StageError {
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error("the cache database failed: {0}")]
    Store(#[from] StoreError),
    #[error("interrupted: the gateway is shutting down")]
    Interrupted,
}

impl StageError {
    /// Whether GHL refused the location's credentials.
    pub(super) fn is_auth(&self) -> bool {
        matches!(self, StageError::Upstream(e) if e.is_auth())
    }
}

/// What a stage runs with.
pub(super) struct StageContext<'a> {
    pub client: &'a upstream::Client,
    pub store: &'a Store,
    /// Where the stage reports each change of itself.
    pub progress: &'a Progress,
    /// Cancelled when the gateway shuts down; the stage stops at once unless it is writing a page
    /// (then right after it).
    pub cancel: &'a CancellationToken,
    pub job: &'a SyncJob,
    /// The job's mode (the stage may still read an incremental list as a whole).
    pub mode: SyncMode,
    /// How far a changed-since listing reaches back before its time, for GHL's index lag.
    pub overlap: chrono::Duration,
}

impl StageContext<'_> {
    /// Runs a GHL fetch until it ends or the gateway stops: a stop drops the call in flight, its
    /// retries and their backoff sleeps at once. Only fetches are cut short, never a write, so a
    /// stage's checkpoint is always the last page written.
    async fn fetching<T>(&self, fetch: impl Future<Output = T>) -> Result<T, StageError> {
        tokio::select! {
            biased;
            _ = self.cancel.cancelled() => Err(StageError::Interrupted),
            done = fetch => Ok(done),
        }
    }

    /// The mark the stage's pass stamps its rows with (`seen_at`), and below which its
    /// reconciliation calls a row deleted: the pass's read time. A pass resumed from its
    /// checkpoint keeps it, so what its earlier attempts saw counts as seen; a pass that starts
    /// over gets a new one, so what only an abandoned pass saw does not (with the job's mark it
    /// would, and a row GHL deleted in between would live on). Before read times were kept: the
    /// job's mark, as then.
    fn stamp(&self, stage: &SyncStage) -> i64 {
        stage
            .read_at
            .map(crate::domain::to_ms)
            .unwrap_or(self.job.mark)
    }

    /// Applies `update` to the stage, stamps it, and reports it.
    fn report(&self, stage: &mut SyncStage, update: impl FnOnce(&mut SyncStage)) {
        update(stage);
        stage.updated_at = now();
        self.progress.put_stage(stage);
    }

    /// Runs `stage`, as the job's start left it, to its end.
    pub(super) async fn run(
        &self,
        mut stage: SyncStage,
        since: Option<DateTime<Utc>>,
    ) -> Result<(), StageError> {
        let start = stage.clone();
        let resource = stage.resource;
        let location_id = self.job.location_id.as_str();
        let meter = Arc::new(Meter::default());
        let started = tokio::time::Instant::now();
        // The stage's data is as old as the attempt that read its first page: a pass resumed
        // from its checkpoint keeps the earlier attempt's time (a stage stored before read
        // times were kept: its job's first attempt), a new pass starts the clock now.
        let attempt = now();
        let mark = crate::domain::from_ms(self.job.mark);
        self.report(&mut stage, |s| {
            s.state = JobState::Running;
            s.read_at = match resume_point(s) {
                Some(_) => s.read_at.or(Some(mark)),
                None => Some(attempt),
            };
        });
        self.store.save_stage(&self.job.location_id, &stage).await?;
        let result = meter
            .clone()
            .scope(self.fetch(&mut stage, since, &start, &meter))
            .await;
        let result = match result {
            // A complete list: what it did not return is gone from GHL.
            Ok(true) => self
                .store
                .mark_unseen_deleted(location_id, resource, self.stamp(&stage))
                .await
                .map(|deleted| {
                    if deleted > 0 {
                        tracing::info!(
                            location_id,
                            stage = resource.as_str(),
                            deleted,
                            "marked rows deleted"
                        );
                    }
                })
                .map_err(StageError::from),
            Ok(false) => Ok(()),
            Err(error) => Err(error),
        };
        if let Err(error) = &result {
            tracing::warn!(location_id, stage = resource.as_str(), error = %error, causes = ?causes(error), "sync stage failed");
        }
        let outcome = if result.is_ok() {
            "succeeded"
        } else {
            "failed"
        };
        crate::telemetry::metrics::sync_stage(resource.as_str(), outcome, started.elapsed());
        self.report(&mut stage, |s| {
            s.state = match &result {
                Ok(()) => JobState::Succeeded,
                Err(_) => JobState::Failed,
            };
            s.error = result.as_ref().err().map(ToString::to_string);
            metered(s, &start, &meter);
        });
        self.store.save_stage(&self.job.location_id, &stage).await?;
        result
    }

    /// Fetches and writes the stage's records. Returns whether it read the complete list (so that
    /// rows it did not see can be marked deleted).
    async fn fetch(
        &self,
        stage: &mut SyncStage,
        since: Option<DateTime<Utc>>,
        start: &SyncStage,
        meter: &Arc<Meter>,
    ) -> Result<bool, StageError> {
        let (client, store) = (self.client, self.store);
        let resource = stage.resource;
        let (location_id, mark) = (self.job.location_id.as_str(), self.stamp(stage));
        let single = |records: usize| {
            move |s: &mut SyncStage| {
                s.fetched = records as i64;
                s.total = Some(records as i64);
                s.pages = 1;
            }
        };
        macro_rules! whole_list {
            ($fetch:expr, $page:path) => {{
                let (records, skipped) = self.fetching($fetch).await??;
                let mut next = stage.clone();
                single(records.len())(&mut next);
                metered(&mut next, start, meter);
                store
                    .write_page(location_id, mark, $page(&records), Some(&next))
                    .await?;
                self.report(stage, |s| *s = next);
                crate::telemetry::metrics::sync_rows(resource.as_str(), records.len());
                return Ok(complete(skipped.len()));
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
        let resume = resume_point(start);
        let resumed = resume.is_some();
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
        let mut skipped = 0;
        loop {
            let page = match self.fetching(stream.try_next()).await? {
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
            skipped += page.skipped.len();
            fetched += page.records.len() as i64;
            pages += 1;
            let cursor = page
                .next
                .as_ref()
                .map(|c| serde_json::to_string(c).unwrap_or_default());
            // The stage moves on only once the page is written: a failed write must not leave
            // a checkpoint past rows that are not in the cache (the failure saves the stage).
            let mut next = stage.clone();
            next.fetched = fetched;
            next.total = page.total.map(|t| t as i64).or(next.total);
            next.pages = pages;
            next.checkpoint = cursor;
            metered(&mut next, start, meter);
            let writing = tokio::time::Instant::now();
            self.write(&page.records, &next).await?;
            tracing::debug!(
                stage = resource.as_str(),
                page = pages,
                rows = page.records.len(),
                write_ms = writing.elapsed().as_secs_f64() * 1e3,
                "page written"
            );
            self.report(stage, |s| *s = next);
        }
        let whole = self.mode == SyncMode::Full && !listing.is_incremental();
        if whole && resumed {
            // The pass spanned attempts, and GHL changed meanwhile: a row whose sort key moved
            // behind the cursor (a conversation's new message, a task's new due date) was never
            // read by it. Read what changed since the pass began before anything is called
            // deleted; GHL's deletions since then stay unseen, which the stage's read time
            // (the pass's start) owns up to.
            match self.catch_up(stage, &listing, start, meter).await? {
                Some(more) => skipped += more,
                None => return Ok(false),
            }
        }
        Ok(whole && complete(skipped))
    }

    /// Writes one page of `records` with the stage as it stands after it (`next`).
    async fn write(&self, records: &Records, next: &SyncStage) -> Result<(), StageError> {
        let (store, location_id, mark) =
            (self.store, self.job.location_id.as_str(), self.stamp(next));
        let checkpoint = Some(next);
        let written = match records {
            Records::Contacts(r) => {
                store.write_page(location_id, mark, Page::Contacts(r), checkpoint)
            }
            Records::Tasks(r) => store.write_page(location_id, mark, Page::Tasks(r), checkpoint),
            Records::Conversations(r) => {
                store.write_page(location_id, mark, Page::Conversations(r), checkpoint)
            }
            Records::Opportunities(r) => {
                store.write_page(location_id, mark, Page::Opportunities(r), checkpoint)
            }
        };
        written.await?;
        crate::telemetry::metrics::sync_rows(next.resource.as_str(), records.len());
        // The page's buffers are freed now, in whichever thread's arena they were taken from.
        crate::telemetry::memory::trim_after(TRIM_DELAY);
        Ok(())
    }

    /// Reads and writes what changed in `listing`'s list since the stage's read time (minus the
    /// overlap for GHL's index lag). Returns the rows skipped as unparsable, or `None` when GHL
    /// refused the changed-since keys (then the list is not known to be complete).
    async fn catch_up(
        &self,
        stage: &mut SyncStage,
        listing: &Listing,
        start: &SyncStage,
        meter: &Arc<Meter>,
    ) -> Result<Option<usize>, StageError> {
        let location_id = self.job.location_id.as_str();
        let Some(read_at) = stage.read_at else {
            return Ok(None);
        };
        let since = Some(read_at - self.overlap);
        let changed = match listing {
            Listing::Contacts(_) => Listing::Contacts(since),
            Listing::Tasks(_) => Listing::Tasks(since),
            Listing::Conversations(_) => Listing::Conversations(since),
            Listing::Opportunities(_) => Listing::Opportunities(since),
        };
        let mut stream = read_ahead(
            self.client.pages(location_id, changed, None, 0).boxed(),
            meter.clone(),
        );
        let mut skipped = 0;
        loop {
            let page = match self.fetching(stream.try_next()).await? {
                Ok(Some(page)) => page,
                Ok(None) => return Ok(Some(skipped)),
                Err(UpstreamError::BadRequest { status, message }) => {
                    tracing::warn!(location_id, stage = stage.resource.as_str(), status, message = %message, "catch-up listing refused; no row is marked deleted this run");
                    return Ok(None);
                }
                Err(error) => return Err(error.into()),
            };
            skipped += page.skipped.len();
            let mut next = stage.clone();
            next.pages += 1;
            metered(&mut next, start, meter);
            self.write(&page.records, &next).await?;
            self.report(stage, |s| *s = next);
        }
    }
}

/// Where `stage` resumes: its checkpoint, when it holds a cursor (else it starts over).
fn resume_point(stage: &SyncStage) -> Option<Cursor> {
    stage
        .checkpoint
        .as_deref()
        .and_then(|c| serde_json::from_str(c).ok())
}

/// Whether a list read to its end may reconcile deletions: not when rows were skipped because
/// they did not parse, since those rows are still in GHL (their ids may not even be known).
fn complete(skipped: usize) -> bool {
    if skipped > 0 {
        tracing::warn!(
            skipped,
            "rows that did not parse were skipped; no row is marked deleted this run"
        );
    }
    skipped == 0
}

/// The stage's cost: what it carried from an earlier attempt plus what this attempt metered.
fn metered(stage: &mut SyncStage, start: &SyncStage, meter: &Meter) {
    stage.calls = start.calls + meter.calls.load(Ordering::Relaxed) as i64;
    stage.retries = start.retries + meter.retries.load(Ordering::Relaxed) as i64;
    stage.rate_limited = start.rate_limited + meter.rate_limited.load(Ordering::Relaxed) as i64;
    stage.waited_ms = start.waited_ms + (meter.waited_us.load(Ordering::Relaxed) / 1000) as i64;
}

/// The pages of `pages`, fetched one ahead of the caller: the next page's request is in flight
/// while the caller writes this one, so a stage's time is its slower half, not the sum of both.
/// At most two pages wait in memory; dropping the stream aborts the fetching task, with its call
/// in flight, retries and backoff sleeps (a stop must not wait for GHL).
///
/// The list's end is a message of its own: a fetching task that dies first (it panicked, or its
/// runtime is being torn down) ends the stream with an error, never as if the list were complete,
/// which would mark every row not read yet deleted.
fn read_ahead(
    pages: BoxStream<'static, PageResult>,
    meter: Arc<Meter>,
) -> BoxStream<'static, PageResult> {
    let (sender, receiver) = tokio::sync::mpsc::channel::<Option<PageResult>>(1);
    // The fetching task counts its calls on the stage's meter, as the stage itself would.
    let fetching = AbortOnDropHandle::new(tokio::spawn(meter.scope(async move {
        let mut pages = pages;
        while let Some(page) = pages.next().await {
            let failed = page.is_err();
            if sender.send(Some(page)).await.is_err() || failed {
                return;
            }
        }
        let _ = sender.send(None).await;
    })));
    let received =
        tokio_stream::wrappers::ReceiverStream::new(receiver).chain(futures::stream::once(async {
            Some(Err(UpstreamError::Stuck(
                "the page reader stopped before the end of the list".into(),
            )))
        }));
    received
        .take_while(|page| std::future::ready(page.is_some()))
        .filter_map(std::future::ready)
        .map(move |page| {
            // The stream owns the task: both end together.
            let _owner = &fetching;
            page
        })
        .boxed()
}

type PageResult = Result<upstream::FetchedPage, UpstreamError>;

#[cfg(test)]
mod tests {
    use super::*;

    fn empty_page() -> PageResult {
        Ok(upstream::FetchedPage {
            records: Records::Contacts(Vec::new()),
            skipped: Vec::new(),
            rows: 0,
            next: None,
            total: None,
        })
    }

    #[tokio::test]
    async fn a_page_reader_that_dies_is_an_error_not_the_end_of_the_list() {
        let ends = futures::stream::iter([empty_page(), empty_page()]).boxed();
        let pages: Vec<_> = read_ahead(ends, Arc::default()).collect().await;
        assert_eq!(pages.len(), 2);
        assert!(pages.iter().all(Result::is_ok), "a list that ends, ends");

        let dies = futures::stream::iter([empty_page()])
            .chain(futures::stream::poll_fn(
                |_| -> std::task::Poll<Option<PageResult>> { panic!("the reader dies") },
            ))
            .boxed();
        let pages: Vec<_> = read_ahead(dies, Arc::default()).collect().await;
        assert_eq!(pages.len(), 2, "{pages:?}");
        assert!(pages[0].is_ok());
        assert!(
            matches!(pages[1], Err(UpstreamError::Stuck(_))),
            "{pages:?}"
        );
    }

    #[test]
    fn a_stage_error_keeps_its_cause_and_its_recorded_text() {
        let error = StageError::from(StoreError::Invalid("x".into()));
        assert_eq!(
            error.to_string(),
            "the cache database failed: stored value is invalid: x"
        );
        assert!(std::error::Error::source(&error).is_some());
        assert!(!error.is_auth());
        assert!(!StageError::Interrupted.is_auth());
    }

    #[test]
    fn a_resumed_stage_adds_this_attempts_cost_to_the_earlier_one() {
        let mut start = SyncStage::queued("j", Resource::Contacts, crate::domain::from_ms(0));
        start.calls = 3;
        start.waited_ms = 10;
        let meter = Meter::default();
        meter.calls.store(2, Ordering::Relaxed);
        meter.waited_us.store(5_500, Ordering::Relaxed);
        let mut stage = start.clone();
        metered(&mut stage, &start, &meter);
        assert_eq!((stage.calls, stage.waited_ms), (5, 15));
    }
}
