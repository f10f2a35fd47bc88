//! A failed sync puts its location into a cooldown: reads and the scheduler start nothing until
//! it ends, a manual refresh tries at most once per step, and a success or a reconnect ends it.
//! Counted in GHL calls (the simulator's counters) and jobs, never timed: the passage of time is
//! simulated by moving the job rows back.

use std::time::Duration;

use ghl_gateway::domain::JobState;
use ghl_gateway::upstream::Credential;
use serde_json::{Value, json};

use crate::helpers::*;

const STATUS: &str = r#"query($loc: ID!) {
  syncStatus(locationId: $loc) {
    state consecutiveFailures lastError nextAttemptAt manualRetryAvailable
  }
}"#;

const REFRESH: &str = r#"mutation($loc: ID!) { refreshLocation(locationId: $loc) { id joined } }"#;

pub async fn set_token(app: &TestApp, location_id: &str, token: &str) {
    app.sync
        .client()
        .set_credential(
            location_id,
            Credential::PrivateIntegration {
                token: token.to_owned().into(),
            },
        )
        .await
        .expect("stores the credential");
}

async fn status(app: &TestApp, loc: &str) -> Value {
    let answer = app.graphql(STATUS, json!({ "loc": loc })).await;
    assert!(answer.get("errors").is_none(), "{answer}");
    answer["data"]["syncStatus"].clone()
}

fn ms(v: &Value) -> i64 {
    chrono::DateTime::parse_from_rfc3339(v.as_str().expect("a time"))
        .expect("RFC 3339")
        .timestamp_millis()
}

/// The end of the location's last job (ms); it must have failed.
async fn last_failure(app: &TestApp, loc: &str) -> i64 {
    let job = app.store.last_job(loc).await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Failed, "{job:?}");
    job.finished_at.unwrap().timestamp_millis()
}

async fn jobs(app: &TestApp, loc: &str) -> usize {
    app.store.jobs(loc, 100).await.unwrap().len()
}

#[tokio::test]
async fn refused_credentials_cool_the_location_down_instead_of_hammering_ghl() {
    for db in databases().await {
        let sim = spawn_sim(50).await;
        // Every read finds the data stale: without a cooldown, each would start a sync.
        let app = spawn_app_with_sim_and(&db.url, &sim, |c| c.graphql.max_age_secs = 0).await;
        let loc = sim.locations[0].id.clone();
        full_sync_to_end(&app, &loc).await;
        assert_eq!(status(&app, &loc).await["consecutiveFailures"], 0);
        time_passes(&app.store, &loc, 10).await;

        // GHL stops accepting the token. The first stale read starts a sync, which fails.
        set_token(&app, &loc, "pit-revoked").await;
        sim.reset_counters();
        read_contacts(&app, &loc, None, 50).await;
        assert!(app.sync.wait_idle(&loc, Duration::from_secs(60)).await);
        let failed_at = last_failure(&app, &loc).await;
        let calls = sim.total_requests();
        assert!(calls > 0, "{}: the failed sync called GHL", db.name);
        assert_eq!(jobs(&app, &loc).await, 2);

        // 30 reads later (some asking `maxAge: 0`), and the scheduler's round: no call, no job.
        for i in 0..30 {
            let page = read_contacts(&app, &loc, (i % 3 == 0).then_some(0), 50).await;
            assert_eq!(
                page["freshness"],
                json!({ "stale": true, "syncing": false })
            );
        }
        assert_eq!(app.sync.schedule_once().await.unwrap(), 0, "{}", db.name);
        assert_eq!(
            sim.total_requests(),
            calls,
            "{}: reads start nothing",
            db.name
        );
        assert_eq!(jobs(&app, &loc).await, 2, "{}", db.name);
        let cooling = status(&app, &loc).await;
        assert_eq!(cooling["state"], "FAILED");
        assert_eq!(cooling["consecutiveFailures"], 1, "{cooling}");
        assert!(
            cooling["lastError"]
                .as_str()
                .unwrap()
                .contains("refused the credentials"),
            "{cooling}"
        );
        assert_eq!(ms(&cooling["nextAttemptAt"]), failed_at + 60_000);
        assert_eq!(cooling["manualRetryAvailable"], true);

        // A manual refresh may try once in this step; its failure doubles the cooldown.
        let answer = app.graphql(REFRESH, json!({ "loc": loc })).await;
        assert_eq!(
            answer["data"]["refreshLocation"]["joined"], false,
            "{answer}"
        );
        assert!(app.sync.wait_idle(&loc, Duration::from_secs(60)).await);
        let failed_at = last_failure(&app, &loc).await;
        let calls = sim.total_requests();
        let cooling = status(&app, &loc).await;
        assert_eq!(cooling["consecutiveFailures"], 2, "{cooling}");
        assert_eq!(ms(&cooling["nextAttemptAt"]), failed_at + 120_000);
        assert_eq!(cooling["manualRetryAvailable"], false);
        // The step's one manual try is spent.
        let answer = app.graphql(REFRESH, json!({ "loc": loc })).await;
        assert_eq!(
            answer["errors"][0]["extensions"]["code"], "RATE_LIMITED",
            "{answer}"
        );
        assert!(answer["data"].is_null(), "{answer}");
        assert_eq!(sim.total_requests(), calls);
        assert_eq!(jobs(&app, &loc).await, 3);

        // Two minutes later the cooldown is over: the next read tries again, and fails again.
        time_passes(&app.store, &loc, 121).await;
        assert!(status(&app, &loc).await["nextAttemptAt"].is_null());
        let page = read_contacts(&app, &loc, None, 50).await;
        assert_eq!(
            page["freshness"]["syncing"], true,
            "the read started a sync"
        );
        assert!(app.sync.wait_idle(&loc, Duration::from_secs(60)).await);
        let failed_at = last_failure(&app, &loc).await;
        let cooling = status(&app, &loc).await;
        assert_eq!(cooling["consecutiveFailures"], 3, "{cooling}");
        assert_eq!(ms(&cooling["nextAttemptAt"]), failed_at + 240_000);
        assert_eq!(cooling["manualRetryAvailable"], true);
        let calls = sim.total_requests();
        read_contacts(&app, &loc, None, 50).await;
        assert_eq!(sim.total_requests(), calls);

        // A reconnect ends the cooldown at once; the next read syncs, and the success clears it.
        set_token(&app, &loc, &sim.locations[0].pit_token).await;
        app.store.reset_failures(&loc).await.unwrap();
        let reconnected = status(&app, &loc).await;
        assert_eq!(reconnected["consecutiveFailures"], 0, "{reconnected}");
        assert!(reconnected["nextAttemptAt"].is_null());
        read_contacts(&app, &loc, None, 50).await;
        assert!(app.sync.wait_idle(&loc, Duration::from_secs(60)).await);
        let healthy = status(&app, &loc).await;
        assert_eq!(healthy["state"], "SUCCEEDED", "{healthy}");
        assert_eq!(healthy["consecutiveFailures"], 0);
        assert!(healthy["lastError"].is_null());
        assert_eq!(jobs(&app, &loc).await, 5, "{}", db.name);
    }
}

#[tokio::test]
async fn the_cooldown_caps_and_a_success_resets_it() {
    for db in databases().await {
        let sim = spawn_sim(50).await;
        let app = spawn_app_with_sim_and(&db.url, &sim, |c| {
            c.sync.failure_cooldown_secs = 10;
            c.sync.failure_cooldown_max_secs = 25;
        })
        .await;
        let loc = sim.locations[0].id.clone();
        set_token(&app, &loc, "pit-revoked").await;
        // Failures 1, 2, 3: 10 s, 20 s, then 25 s (the cap) instead of 40 s.
        for (failures, delay) in [(1, 10_000), (2, 20_000), (3, 25_000)] {
            app.sync
                .handle()
                .refresh(
                    &loc,
                    ghl_gateway::sync::SyncMode::Incremental,
                    ghl_gateway::sync::Trigger::Automatic,
                )
                .await
                .expect("no cooldown on: the sync starts");
            assert!(app.sync.wait_idle(&loc, Duration::from_secs(60)).await);
            let failed_at = last_failure(&app, &loc).await;
            let cooling = status(&app, &loc).await;
            assert_eq!(cooling["consecutiveFailures"], failures, "{cooling}");
            assert_eq!(ms(&cooling["nextAttemptAt"]), failed_at + delay);
            let refused = app
                .sync
                .handle()
                .refresh(
                    &loc,
                    ghl_gateway::sync::SyncMode::Incremental,
                    ghl_gateway::sync::Trigger::Automatic,
                )
                .await;
            assert!(
                matches!(
                    refused,
                    Err(ghl_gateway::sync::SyncError::CoolingDown { .. })
                ),
                "{refused:?}"
            );
            time_passes(&app.store, &loc, delay / 1000).await;
        }
        // A success (the token works again; no reconnect mark) ends the run of failures.
        set_token(&app, &loc, &sim.locations[0].pit_token).await;
        app.sync
            .refresh(&loc, ghl_gateway::sync::SyncMode::Incremental)
            .await
            .unwrap();
        assert!(app.sync.wait_idle(&loc, Duration::from_secs(60)).await);
        let healthy = status(&app, &loc).await;
        assert_eq!(healthy["state"], "SUCCEEDED", "{healthy}");
        assert_eq!(healthy["consecutiveFailures"], 0);
    }
}
