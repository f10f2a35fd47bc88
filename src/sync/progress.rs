//! The live state of a running job: the snapshot that [`super::SyncEngine::running`] reads, and
//! the broadcast of every change of it as a [`SyncEvent`].
//!
//! It owns no I/O: it must not touch the store or GHL (the engine and the stage runner write the
//! store first, then report here). The broadcast is bounded: a slow subscriber lags and skips
//! events, it never slows the sync.

use std::sync::Mutex;

use tokio::sync::broadcast;

use super::lock;
use crate::domain::{JobSnapshot, SyncEvent, SyncStage};
use crate::store::Relay;

/// A job's state as it stands, and the channels its changes go out on: this process's
/// subscribers, and the other replicas' (through the store's relay, a queue).
pub(super) struct Progress {
    snapshot: Mutex<JobSnapshot>,
    events: broadcast::Sender<SyncEvent>,
    relay: Relay,
}

impl Progress {
    pub(super) fn new(
        snapshot: JobSnapshot,
        events: broadcast::Sender<SyncEvent>,
        relay: Relay,
    ) -> Self {
        Self {
            snapshot: Mutex::new(snapshot),
            events,
            relay,
        }
    }

    /// The job as it stands.
    pub(super) fn snapshot(&self) -> JobSnapshot {
        lock(&self.snapshot).clone()
    }

    /// Changes the job without an event; the next [`Progress::publish`] carries the change.
    pub(super) fn update_silently(&self, update: impl FnOnce(&mut JobSnapshot)) -> JobSnapshot {
        let mut snapshot = lock(&self.snapshot);
        update(&mut snapshot);
        snapshot.clone()
    }

    /// Changes the job, broadcasts it, and returns it.
    pub(super) fn publish(&self, update: impl FnOnce(&mut JobSnapshot)) -> JobSnapshot {
        let snapshot = self.update_silently(update);
        let event = SyncEvent {
            location_id: snapshot.job.location_id.clone(),
            job: snapshot.clone(),
        };
        self.relay.sync_event(&event);
        // No subscriber is fine.
        let _ = self.events.send(event);
        snapshot
    }

    /// Replaces the job's stage of the same resource with `stage` and broadcasts the job.
    pub(super) fn put_stage(&self, stage: &SyncStage) {
        self.publish(|s| {
            if let Some(slot) = s.stages.iter_mut().find(|st| st.resource == stage.resource) {
                slot.clone_from(stage);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{JobState, Resource, SyncJob, SyncMode, from_ms};

    #[test]
    fn a_stage_report_replaces_its_stage_and_is_broadcast() {
        let at = from_ms(1_000);
        let job = SyncJob {
            id: "j".into(),
            location_id: "l".into(),
            mode: SyncMode::Full,
            state: JobState::Running,
            mark: 1_000,
            started_at: at,
            finished_at: None,
            error: None,
        };
        let stages = vec![
            SyncStage::queued("j", Resource::Users, at),
            SyncStage::queued("j", Resource::Contacts, at),
        ];
        let (events, mut receiver) = broadcast::channel(4);
        let progress = Progress::new(JobSnapshot { job, stages }, events, Relay::default());
        let mut contacts = SyncStage::queued("j", Resource::Contacts, at);
        contacts.fetched = 500;
        progress.put_stage(&contacts);
        let event = receiver.try_recv().expect("the change is broadcast");
        assert_eq!(event.location_id, "l");
        assert_eq!(event.job, progress.snapshot());
        assert_eq!(event.job.stages[0].fetched, 0);
        assert_eq!(event.job.stages[1].fetched, 500);
        progress.update_silently(|s| s.job.state = JobState::Succeeded);
        assert!(
            receiver.try_recv().is_err(),
            "a silent change sends nothing"
        );
        assert!(progress.snapshot().is_finished());
    }
}
