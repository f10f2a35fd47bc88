//! The background sync's promises that no other test proves: a slow subscriber skips events and
//! never holds the sync back, the `--sync-interval` loop runs by itself, and a record deleted in
//! GHL while a FULL job waits to be resumed is marked deleted when the resumed job completes.
//! Waits are on events and job ends, bounded by timeouts; nothing is timed.

use std::time::Duration;

use futures::StreamExt;
use ghl_gateway::auth::Caller;
use ghl_gateway::domain::JobState;
use ghl_gateway::store::entities::conversation;
use ghl_gateway::sync::SyncMode;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};

use crate::helpers::*;

#[tokio::test]
async fn a_slow_subscriber_skips_events_and_never_holds_the_sync_back() {
    for db in databases().await {
        let sim = spawn_sim(100).await;
        // Many jobs in a row: GHL's budget of 100 calls per 10 s would make this test wait.
        sim.update_settings(|s| s.burst_limit = 100_000).unwrap();
        let loc = sim.locations[0].id.clone();
        let app = spawn_app_with_sim(&db.url, &sim).await;
        full_sync_to_end(&app, &loc).await;

        // Two subscribers that read nothing while the syncs run: the engine's own receiver, and
        // the `syncStatus` subscription as a client gets it (its first event read, then no more).
        let mut slow = app.sync.subscribe();
        let schema = ghl_gateway::graphql::builder(app.store.clone(), Default::default())
            .data(app.sync.handle())
            .data(Caller::Admin)
            .finish();
        let mut stream = ghl_gateway::graphql::execute_stream(
            &schema,
            async_graphql::Request::new(format!(
                r#"subscription {{ syncStatus(locationId: "{loc}") {{ job {{ id state }} }} }}"#
            )),
        );
        let current = stream.next().await.unwrap().data.into_json().unwrap();
        assert_eq!(
            current["syncStatus"]["job"]["state"], "SUCCEEDED",
            "{current}"
        );

        // FULL syncs until more events were sent than the engine's channel keeps (1,024):
        // every job ends although nobody reads.
        let mut last_job = String::new();
        let mut jobs = 0;
        while slow.len() <= 1_100 {
            let (job, _) = app.sync.refresh(&loc, SyncMode::Full).await.unwrap();
            assert!(
                app.sync.wait_idle(&loc, Duration::from_secs(120)).await,
                "{}: job {jobs} ends with two subscribers reading nothing",
                db.name
            );
            let row = app.store.last_job(&loc).await.unwrap().unwrap();
            assert_eq!(
                (row.id.as_str(), row.state),
                (job.job.id.as_str(), JobState::Succeeded)
            );
            last_job = job.job.id;
            jobs += 1;
            assert!(jobs < 200, "{}: a job sends events", db.name);
        }

        // The engine's receiver: the oldest events were skipped, the newest kept, the last one
        // the end of the last job.
        let sent = slow.len();
        let skipped = match slow.try_recv() {
            Err(TryRecvError::Lagged(n)) => n as usize,
            other => panic!("{}: a lagging receiver is told so: {other:?}", db.name),
        };
        let mut kept = Vec::new();
        loop {
            match slow.try_recv() {
                Ok(event) => kept.push(event),
                Err(TryRecvError::Empty) => break,
                Err(other) => panic!("{other:?}"),
            }
        }
        assert!(skipped > 0 && !kept.is_empty(), "{}", db.name);
        assert_eq!(skipped + kept.len(), sent, "{}", db.name);
        let end = kept.last().unwrap();
        assert_eq!(
            (end.job.job.id.as_str(), end.job.job.state),
            (last_job.as_str(), JobState::Succeeded)
        );

        // The subscription skips the same events and carries on to the end of the last job.
        let mut received = 0;
        loop {
            let answer = tokio::time::timeout(Duration::from_secs(60), stream.next())
                .await
                .expect("the subscription carries on after skipping")
                .expect("the subscription does not end");
            assert!(answer.errors.is_empty(), "{:?}", answer.errors);
            received += 1;
            let json = answer.data.into_json().unwrap();
            let job = &json["syncStatus"]["job"];
            if job["id"] == last_job.as_str() && job["state"] == "SUCCEEDED" {
                break;
            }
        }
        assert_eq!(received, kept.len(), "{}", db.name);
        app.shutdown().await;
    }
}

#[tokio::test]
async fn the_sync_interval_loop_syncs_every_connected_location_by_itself() {
    for db in databases().await {
        let sim = spawn_sim(100).await;
        let loc = sim.locations[0].id.clone();
        let app = spawn_app_with_sim_and(&db.url, &sim, |c| c.sync.interval_secs = 1).await;
        let mut events = app.sync.subscribe();
        // Nobody asks for a sync: the loop's rounds start them. Each event wakes the check.
        let finished = loop {
            let jobs = app.store.jobs(&loc, 10).await.unwrap();
            let done: Vec<_> = jobs
                .iter()
                .filter(|j| j.state == JobState::Succeeded)
                .collect();
            if done.len() >= 2 {
                break jobs;
            }
            match tokio::time::timeout(Duration::from_secs(60), events.recv()).await {
                Ok(Ok(_) | Err(RecvError::Lagged(_))) => {}
                other => panic!("{}: the loop keeps syncing: {other:?}", db.name),
            }
        };
        // Newest first: a FULL run first, then INCREMENTAL ones (the FULL one is recent).
        let mut modes: Vec<_> = finished
            .iter()
            .filter(|j| j.state == JobState::Succeeded)
            .map(|j| j.mode)
            .collect();
        modes.reverse();
        assert_eq!(
            &modes[..2],
            [SyncMode::Full, SyncMode::Incremental],
            "{}",
            db.name
        );
        app.shutdown().await;
    }
}

async fn conversation_row(app: &TestApp, id: &str) -> conversation::Model {
    conversation::Entity::find_by_id(id.to_owned())
        .one(app.store.connection())
        .await
        .unwrap()
        .expect("the conversation is cached")
}

#[tokio::test]
async fn a_record_deleted_before_a_full_job_resumes_is_marked_deleted_when_it_completes() {
    for db in databases().await {
        let sim = spawn_sim(1_500).await;
        let loc = sim.locations[0].id.clone();
        let app = spawn_app_with_sim(&db.url, &sim).await;
        full_sync_to_end(&app, &loc).await;

        // A second FULL job fails after three pages of conversations.
        crate::sync::full_sync_until_conversations_fail(
            &app,
            &sim,
            &loc,
            ghl_gateway::sim::FaultSpec {
                error500: 1.0,
                ..Default::default()
            },
        )
        .await;
        assert!(app.sync.wait_idle(&loc, Duration::from_secs(300)).await);
        let failed = app.store.last_job(&loc).await.unwrap().unwrap();
        assert_eq!(
            (failed.mode, failed.state),
            (SyncMode::Full, JobState::Failed)
        );
        // Conversations it has not listed again yet still carry the first job's mark.
        // The ids of the location's conversations, split by whether this job has seen them.
        let (seen, unseen): (Vec<_>, Vec<_>) = conversation::Entity::find()
            .filter(conversation::Column::LocationId.eq(loc.as_str()))
            .all(app.store.connection())
            .await
            .unwrap()
            .into_iter()
            .partition(|c| c.seen_at >= failed.mark);
        let ids = |rows: Vec<conversation::Model>| -> Vec<String> {
            rows.into_iter().map(|c| c.id).collect()
        };
        let (seen, unseen) = (ids(seen), ids(unseen));
        assert!(
            unseen.len() > 2 && seen.len() > 2,
            "{}: {} unseen, {} seen",
            db.name,
            unseen.len(),
            seen.len()
        );

        // Meanwhile GHL deletes one conversation of each kind.
        let (gone, kept) = (&unseen[unseen.len() / 2], &unseen[0]);
        let gone_seen = &seen[seen.len() / 2];
        for id in [gone, gone_seen] {
            sim.delete(&loc, "conversations", id).unwrap();
        }

        // GHL recovers; the next run resumes the FULL job, and completes it.
        sim.set_faults(Default::default()).unwrap();
        app.sync.refresh(&loc, SyncMode::Incremental).await.unwrap();
        assert!(app.sync.wait_idle(&loc, Duration::from_secs(300)).await);
        let resumed = app.store.last_job(&loc).await.unwrap().unwrap();
        assert_eq!(
            (resumed.mode, resumed.state, resumed.mark),
            (SyncMode::Full, JobState::Succeeded, failed.mark),
            "{}: the FULL job resumed",
            db.name
        );
        assert!(
            conversation_row(&app, gone).await.deleted,
            "{}: deleted in GHL before the resumed job listed it",
            db.name
        );
        assert!(!conversation_row(&app, kept).await.deleted, "{}", db.name);
        // One the job had listed before its deletion stays until the next FULL run, which
        // reconciles it.
        assert!(!conversation_row(&app, gone_seen).await.deleted);
        full_sync_to_end(&app, &loc).await;
        assert!(
            conversation_row(&app, gone_seen).await.deleted,
            "{}",
            db.name
        );
        assert!(!conversation_row(&app, kept).await.deleted);
    }
}
