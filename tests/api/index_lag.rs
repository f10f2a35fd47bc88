//! GHL's search index lags its writes (the simulator's `--index-lag-ms`): an INCREMENTAL run made
//! while a change is still invisible to the search must not lose it, even when the cache already
//! holds a newer change (a webhook's) that moves the watermark past it. The overlap
//! (`--incremental-overlap`) is what covers it; without one the change is missed.

use std::time::{Duration, Instant};

use ghl_gateway::sim::{SimArgs, SimHandle};
use ghl_gateway::sync::SyncMode;
use serde_json::json;

use crate::helpers::{
    TestApp, TestDb, databases, full_sync_to_end, spawn_app_with_sim_and, spawn_sim_with,
};

const LAG: Duration = Duration::from_secs(2);

/// A location of 30 contacts behind a 2 s search index lag, synced FULL by a gateway with the
/// given INCREMENTAL overlap that takes the simulator's signed webhooks.
async fn lagging(db: &TestDb, overlap_secs: u64) -> (SimHandle, TestApp, String) {
    let sim = spawn_sim_with(SimArgs {
        contacts: 30,
        index_lag_ms: LAG.as_millis() as u64,
        ..SimArgs::default()
    })
    .await;
    let pem = sim.webhook_public_key_pem.clone();
    let app = spawn_app_with_sim_and(&db.url, &sim, |c| {
        c.http.webhooks.webhook_public_key = pem;
        c.sync.overlap_secs = overlap_secs;
    })
    .await;
    let loc = sim.locations[0].id.clone();
    full_sync_to_end(&app, &loc).await;
    (sim, app, loc)
}

async fn incremental_to_end(app: &TestApp, loc: &str) {
    app.sync
        .refresh(loc, SyncMode::Incremental)
        .await
        .expect("the sync starts");
    assert!(
        app.sync.wait_idle(loc, Duration::from_secs(60)).await,
        "the sync ends"
    );
    let job = app.store.last_job(loc).await.unwrap().unwrap();
    assert_eq!(
        (job.mode, job.state),
        (
            SyncMode::Incremental,
            ghl_gateway::domain::JobState::Succeeded
        ),
        "{job:?}"
    );
}

async fn company(app: &TestApp, id: &str) -> Option<String> {
    let rows = app.store.contacts_by_ids(&[id.to_owned()]).await.unwrap();
    rows.first().and_then(|c| c.company_name.clone())
}

/// Changes contact `quiet` (no webhook reaches the gateway), then contact `loud` (its webhook
/// does, so the cache's newest change is now later than `quiet`'s), runs an INCREMENTAL sync
/// inside the index lag, waits the lag out and runs the next one. Returns `quiet`'s company in
/// the cache after each run.
async fn change_inside_the_lag(
    sim: &SimHandle,
    app: &TestApp,
    loc: &str,
) -> (Option<String>, Option<String>) {
    let truth = sim.dump(loc).unwrap();
    let ids: Vec<String> = truth["contacts"]
        .as_array()
        .unwrap()
        .iter()
        .take(2)
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect();
    let (quiet, loud) = (&ids[0], &ids[1]);
    let written = Instant::now();
    sim.update(
        loc,
        "contacts",
        quiet,
        json!({"companyName": "Changed quietly"}),
    )
    .unwrap();
    sim.update_settings(|s| s.webhook_url = Some(format!("{}/webhooks/ghl", app.base)))
        .unwrap();
    sim.update(
        loc,
        "contacts",
        loud,
        json!({"companyName": "Changed loudly"}),
    )
    .unwrap();
    sim.webhooks_idle().await;
    assert_eq!(
        company(app, loud).await.as_deref(),
        Some("Changed loudly"),
        "the webhook reached the cache"
    );
    incremental_to_end(app, loc).await;
    assert!(
        written.elapsed() < LAG,
        "the machine stalled past the index lag; the run was not inside it"
    );
    let inside = company(app, quiet).await;
    tokio::time::sleep(LAG.saturating_sub(written.elapsed()) + Duration::from_millis(200)).await;
    incremental_to_end(app, loc).await;
    (inside, company(app, quiet).await)
}

#[tokio::test]
async fn an_update_inside_the_index_lag_is_picked_up_by_the_next_incremental_run() {
    for db in databases().await {
        let (sim, app, loc) = lagging(&db, 120).await;
        let (inside, after) = change_inside_the_lag(&sim, &app, &loc).await;
        assert_ne!(
            inside.as_deref(),
            Some("Changed quietly"),
            "{}: the search cannot show it inside the lag",
            db.name
        );
        assert_eq!(after.as_deref(), Some("Changed quietly"), "{}", db.name);
        app.shutdown().await;
    }
}

#[tokio::test]
async fn without_an_overlap_the_index_lag_loses_the_update() {
    // The simulator's lag is real: the same sequence with no overlap misses the change (the
    // watermark, moved by the webhook, is past it), which the test above relies on.
    let db = crate::helpers::sqlite().await;
    let (sim, app, loc) = lagging(&db, 0).await;
    let (_, after) = change_inside_the_lag(&sim, &app, &loc).await;
    assert_ne!(after.as_deref(), Some("Changed quietly"));
    app.shutdown().await;
}
