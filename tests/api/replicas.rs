//! Replicas on PostgreSQL (issue 14): several gateways on one database, each with its own pool,
//! sync engine, GHL client and response cache, as several processes behind a load balancer
//! would be. They run where `TEST_DATABASE_URL` is set (CI sets it); SQLite is single-process.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use ghl_gateway::domain::{ChangeSource, JobSnapshot, JobState, Resource};
use ghl_gateway::sim::SimHandle;
use serde_json::{Value, json};

use crate::helpers::*;

/// The admin URL of the PostgreSQL server, when the tests have one.
fn postgres_url() -> Option<String> {
    std::env::var("TEST_DATABASE_URL").ok()
}

/// `n` gateways on `db`, each connected to the simulator's locations, trusting its webhooks.
async fn replicas(db: &TestDb, sim: &SimHandle, n: usize) -> Vec<Arc<TestApp>> {
    let mut apps = Vec::new();
    for _ in 0..n {
        let pem = sim.webhook_public_key_pem.clone();
        let app = spawn_app_with_sim_and(&db.url, sim, |c| {
            c.http.webhooks.webhook_public_key = pem;
        })
        .await;
        apps.push(Arc::new(app));
    }
    apps
}

async fn refresh(app: &TestApp, location_id: &str) -> Value {
    let answer = app
        .graphql(
            "mutation($loc: ID!) { refreshLocation(locationId: $loc, mode: FULL) { id joined state } }",
            json!({ "loc": location_id }),
        )
        .await;
    answer["data"]["refreshLocation"].clone()
}

/// Every sync event of `location_id` a replica's subscribers get, until the job `job_id` ends.
fn collect_events(app: &TestApp, location_id: &str) -> tokio::task::JoinHandle<Vec<JobSnapshot>> {
    let mut events = app.sync.subscribe();
    let location_id = location_id.to_owned();
    tokio::spawn(async move {
        let mut seen = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        while let Ok(Ok(event)) = tokio::time::timeout_at(deadline, events.recv()).await {
            if event.location_id != location_id {
                continue;
            }
            let finished = event.job.is_finished();
            seen.push(event.job);
            if finished {
                break;
            }
        }
        seen
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_refreshes_over_three_replicas_start_one_job_whose_events_reach_every_replica() {
    let Some(admin) = postgres_url() else {
        return;
    };
    let db = postgres(&admin).await;
    let sim = spawn_sim(600).await;
    let apps = replicas(&db, &sim, 3).await;
    // GHL answers slowly while the refreshes arrive, so that the job they start is still
    // running when the last one lands, however loaded the machine.
    sim.set_latency(5_000, 0);
    let loc = sim.locations[0].id.clone();
    let listeners: Vec<_> = apps.iter().map(|a| collect_events(a, &loc)).collect();
    sim.reset_counters();

    let mut calls = Vec::new();
    for i in 0..100 {
        let app = apps[i % 3].clone();
        let loc = loc.clone();
        calls.push(tokio::spawn(async move { refresh(&app, &loc).await }));
    }
    let mut answers = Vec::new();
    for call in calls {
        answers.push(call.await.unwrap());
    }
    let started = answers.iter().filter(|j| j["joined"] == false).count();
    assert_eq!(started, 1, "exactly one refresh starts a job: {answers:?}");
    let ids: BTreeSet<&str> = answers.iter().map(|j| j["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 1, "the other 99 answers carry its id: {ids:?}");
    let job_id = ids.into_iter().next().unwrap().to_owned();
    sim.set_latency(0, 0);

    let mut seen = Vec::new();
    for listener in listeners {
        seen.push(listener.await.unwrap());
    }
    // Which replica ran the job does not matter: all three saw the same.
    let runner = 0;
    let last = seen[runner]
        .last()
        .expect("the job's events arrived")
        .clone();
    assert_eq!(last.job.id, job_id);
    assert_eq!(last.job.state, JobState::Succeeded, "{:?}", last.job.error);
    for (i, events) in seen.iter().enumerate() {
        assert!(
            events.len() > 10,
            "replica {i} saw the job's progress: {} events",
            events.len()
        );
        assert_eq!(
            events, &seen[runner],
            "replica {i} saw every event of the job, in order, as the runner published them"
        );
    }
    assert_eq!(
        db.store.jobs(&loc, 10).await.unwrap().len(),
        1,
        "one job in the shared history"
    );
    // One sync's worth of GHL calls, however many replicas were asked.
    let truth = sim.dump(&loc).unwrap();
    let count = |key: &str| truth[key].as_array().unwrap().len() as u64;
    let rows = count("contacts") + count("tasks") + count("conversations") + count("opportunities");
    assert!(rows > 600);
    let calls: i64 = last.stages.iter().map(|s| s.calls).sum();
    assert_eq!(
        sim.total_requests(),
        calls as u64 + 1,
        "the simulator saw the one job's calls (and its location read)"
    );
    for app in apps {
        Arc::into_inner(app).unwrap().shutdown().await;
    }
}

/// One `/graphql` answer on `app` with the admin key: its `x-cache` header and its body.
async fn ask(app: &TestApp, query: &str, variables: Value) -> (String, Value) {
    let response = app
        .client
        .post(format!("{}/graphql", app.base))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({ "query": query, "variables": variables }))
        .send()
        .await
        .unwrap();
    let cache = response
        .headers()
        .get("x-cache")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (cache, response.json().await.unwrap())
}

const CONTACT: &str = "query($id: ID!) { contact(id: $id) { id email } }";

/// Asks `app` until the contact's email is `email` (the webhook's write reached the replica),
/// at most 10 s; returns the `x-cache` of each answer.
async fn until_email(app: &TestApp, id: &str, email: &str) -> Vec<String> {
    let mut caches = Vec::new();
    for _ in 0..400 {
        let (cache, body) = ask(app, CONTACT, json!({ "id": id })).await;
        caches.push(cache);
        if body["data"]["contact"]["email"] == email {
            return caches;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the contact never showed {email}: {caches:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_webhook_applied_by_one_replica_reaches_the_subscribers_and_caches_of_the_others() {
    let Some(admin) = postgres_url() else {
        return;
    };
    let db = postgres(&admin).await;
    let sim = spawn_sim(30).await;
    let apps = replicas(&db, &sim, 3).await;
    let (a, b, c) = (&apps[0], &apps[1], &apps[2]);
    let loc = sim.locations[0].id.clone();
    full_sync_to_end(a, &loc).await;
    // The simulator's webhooks reach replica B only.
    a.client
        .patch(format!("{}/_sim/settings", sim.base_url))
        .json(&json!({ "webhookUrl": format!("{}/webhooks/ghl", b.base) }))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap();
    let contact = sim.dump(&loc).unwrap()["contacts"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // C caches the contact (once the notifications of A's sync have all arrived, which move
    // C's data versions as they come).
    let mut before = (String::new(), Value::Null);
    for _ in 0..400 {
        before = ask(c, CONTACT, json!({ "id": contact })).await;
        if before.0 == "hit" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let (cache, before) = before;
    assert_eq!(cache, "hit", "C serves the contact from its cache");
    let mut changes_on_c = c.store.subscribe_changes();

    sim.update(
        &loc,
        "contacts",
        &contact,
        json!({ "email": "moved-by-webhook@example.com" }),
    )
    .unwrap();
    let event = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let event = changes_on_c.recv().await.unwrap();
            if event.source == ChangeSource::Webhook && event.ids.contains(&contact) {
                return event;
            }
        }
    })
    .await
    .expect("C's changes subscribers hear of the webhook B applied");
    assert_eq!(event.location_id, loc);
    // C's cached answer is gone: the next read is a miss with the new email.
    let (cache, after) = ask(c, CONTACT, json!({ "id": contact })).await;
    assert_eq!(cache, "miss", "C's cached answer missed after B wrote");
    assert_eq!(
        after["data"]["contact"]["email"], "moved-by-webhook@example.com",
        "before: {before}"
    );
    assert_eq!(
        until_email(a, &contact, "moved-by-webhook@example.com")
            .await
            .len(),
        1
    );
    assert!(
        b.store.cluster().unwrap().connected() && c.store.cluster().unwrap().connected(),
        "the listeners are up"
    );
    for app in apps {
        Arc::into_inner(app).unwrap().shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_that_lost_its_listener_serves_nothing_cached_until_it_is_back() {
    let Some(admin) = postgres_url() else {
        return;
    };
    let db = postgres(&admin).await;
    let sim = spawn_sim(10).await;
    let apps = replicas(&db, &sim, 1).await;
    let app = &apps[0];
    let loc = sim.locations[0].id.clone();
    full_sync_to_end(app, &loc).await;
    let contact = sim.dump(&loc).unwrap()["contacts"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    ask(app, CONTACT, json!({ "id": contact })).await;
    assert_eq!(ask(app, CONTACT, json!({ "id": contact })).await.0, "hit");

    let cluster = app.store.cluster().unwrap().clone();
    let pid = cluster.listener_pid();
    assert!(pid > 0);
    let killer = sea_orm::Database::connect(db.url.as_str()).await.unwrap();
    use sea_orm::ConnectionTrait as _;
    killer
        .execute_unprepared(&format!("SELECT pg_terminate_backend({pid})"))
        .await
        .unwrap();
    // The listener notices the loss; from then on nothing cached is served, whether it is
    // still reconnecting or already back (what was cached before may be stale by then).
    for _ in 0..5_000 {
        if !cluster.connected() || cluster.listener_pid() != pid {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let (cache, body) = ask(app, CONTACT, json!({ "id": contact })).await;
    assert_eq!(
        cache, "miss",
        "nothing cached is served once the listener is lost"
    );
    assert_eq!(body["data"]["contact"]["id"], contact.as_str());
    for _ in 0..400 {
        if cluster.connected() && cluster.listener_pid() != pid {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(
        cluster.connected() && cluster.listener_pid() != pid,
        "the listener reconnected"
    );
    // Back: answers are cached again.
    ask(app, CONTACT, json!({ "id": contact })).await;
    assert_eq!(ask(app, CONTACT, json!({ "id": contact })).await.0, "hit");
    killer.close().await.unwrap();
    Arc::into_inner(apps.into_iter().next().unwrap())
        .unwrap()
        .shutdown()
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_renew_one_expired_oauth_token_once() {
    let Some(admin) = postgres_url() else {
        return;
    };
    let db = postgres(&admin).await;
    let sim = spawn_sim(10).await;
    let loc = sim.locations[0].id.clone();
    let mut apps = Vec::new();
    for _ in 0..2 {
        let (base_url, id, secret) = (
            sim.base_url.clone(),
            sim.client_id.clone(),
            sim.client_secret.clone(),
        );
        apps.push(
            spawn_app_with(&db.url, |c| {
                c.upstream.base_url = base_url;
                c.upstream.client_id = Some(id);
                c.upstream.client_secret = Some(secret.into());
                // Tokens in clear in the database, so that the test can expire the stored one.
                c.secrets.secret_key = None;
            })
            .await,
        );
    }
    let code = sim.auth_code("Location", Some(&loc)).unwrap();
    assert_eq!(
        apps[0]
            .sync
            .client()
            .install_with_code(&code)
            .await
            .unwrap(),
        loc
    );
    let before = db.store.credential(&loc).await.unwrap().unwrap();
    assert!(sim.expire_token(before.access_token.as_deref().unwrap()));
    sim.reset_counters();

    // Both replicas call GHL at once with the expired token (as two syncs or reads would).
    let mut callers = Vec::new();
    for app in &apps {
        for _ in 0..5 {
            let client = app.sync.client().clone();
            let loc = loc.clone();
            callers.push(tokio::spawn(async move { client.users(&loc).await }));
        }
    }
    for caller in callers {
        caller
            .await
            .unwrap()
            .expect("every call succeeds: no refresh token spent twice");
    }
    assert_eq!(
        sim.requests("oauth.token"),
        1,
        "one refresh at GHL for both processes"
    );
    assert_eq!(sim.count("oauth.token", "400"), 0, "no invalid_grant");
    for app in apps {
        app.shutdown().await;
    }
}

/// `ghl-gateway sync --full` of the simulator's first location over `db`, as another process.
fn sync_process(db: &TestDb, sim: &SimHandle) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_ghl-gateway"));
    command
        .args(["sync", "--full", "--location", &sim.locations[0].id])
        .env_clear()
        .env("DATABASE_URL", &db.url)
        .env("GHL_BASE_URL", &sim.base_url)
        .env("GHL_BACKOFF_MS", "20")
        .env("GATEWAY_SECRET_KEY", TEST_SECRET_KEY)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    command
}

/// The ids of the location's live records of `table` in the cache, and in the simulator.
async fn cache_and_truth(
    db: &TestDb,
    sim: &SimHandle,
    table: &str,
    key: &str,
) -> (BTreeSet<String>, BTreeSet<String>) {
    use sea_orm::{ConnectionTrait as _, Statement};
    let loc = &sim.locations[0].id;
    let rows = db
        .store
        .connection()
        .query_all_raw(Statement::from_sql_and_values(
            db.store.backend(),
            format!("SELECT id FROM {table} WHERE location_id = $1 AND deleted = false"),
            [loc.as_str().into()],
        ))
        .await
        .unwrap();
    let cache = rows
        .iter()
        .map(|r| r.try_get::<String>("", "id").unwrap())
        .collect();
    let truth = sim.dump(loc).unwrap()[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();
    (cache, truth)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sync_process_killed_mid_job_is_finished_by_another_replica_from_its_checkpoints() {
    let Some(admin) = postgres_url() else {
        return;
    };
    let db = postgres(&admin).await;
    let sim = spawn_sim(3_000).await;
    let loc = sim.locations[0].id.clone();
    let apps = replicas(&db, &sim, 1).await;
    let replica = &apps[0];
    // Slow enough that the process is killed mid-way, its pages and checkpoints partly written.
    sim.set_latency(60, 0);
    sim.reset_counters();
    let mut process = sync_process(&db, &sim).spawn().expect("the binary runs");
    let mut orphan = None;
    for _ in 0..1_200 {
        // Killed once the contacts and tasks stages have checkpoints a few pages in (and the
        // one-page stages are done), so that a resumed job has pages it need not fetch again.
        let pages = |job: &JobSnapshot, resource: Resource| {
            job.stages
                .iter()
                .find(|s| s.resource == resource)
                .map_or(0, |s| s.pages)
        };
        if let Some(job) = db.store.active_job(&loc).await.unwrap()
            && pages(&job, Resource::Contacts) >= 2
            && pages(&job, Resource::Tasks) >= 2
        {
            orphan = Some(job);
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let orphan = orphan.expect("the process's job made progress");
    process.start_kill().unwrap();
    process.wait().await.unwrap();
    let calls_before = sim.total_requests();

    // The replica's next refresh takes the lock the dead session released and resumes.
    sim.set_latency(0, 0);
    let answer = refresh(replica, &loc).await;
    assert_eq!(answer["joined"], false, "{answer}");
    assert!(replica.sync.wait_idle(&loc, Duration::from_secs(120)).await);
    let jobs = db.store.jobs(&loc, 10).await.unwrap();
    let killed = jobs.iter().find(|j| j.id == orphan.job.id).unwrap();
    assert!(
        killed.interrupted(),
        "the orphan is interrupted: {killed:?}"
    );
    let resumed = db.store.last_job(&loc).await.unwrap().unwrap();
    assert_eq!(resumed.state, JobState::Succeeded, "{:?}", resumed.error);
    assert_eq!(
        resumed.mark, orphan.job.mark,
        "the resumed job continues the killed one (its mark)"
    );
    let truth = sim.dump(&loc).unwrap();
    let count = |key: &str| truth[key].as_array().unwrap().len() as u64;
    let one_sync = 1
        + 3
        + count("contacts").div_ceil(500)
        + (count("tasks") / 500 + 1)
        + count("conversations").div_ceil(99)
        + count("opportunities").div_ceil(500);
    let after = sim.total_requests() - calls_before;
    assert!(
        after < one_sync,
        "the resumed job fetched only what was missing: {after} calls after the kill, {one_sync} for a whole sync"
    );
    for (table, key) in [
        ("contacts", "contacts"),
        ("tasks", "tasks"),
        ("conversations", "conversations"),
        ("opportunities", "opportunities"),
    ] {
        let (cache, truth) = cache_and_truth(&db, &sim, table, key).await;
        assert_eq!(cache.len(), truth.len(), "{table}: no row lost or extra");
        assert_eq!(cache, truth, "{table}");
    }
    Arc::into_inner(apps.into_iter().next().unwrap())
        .unwrap()
        .shutdown()
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sync_process_joins_the_job_a_replica_runs() {
    let Some(admin) = postgres_url() else {
        return;
    };
    let db = postgres(&admin).await;
    let sim = spawn_sim(300).await;
    let loc = sim.locations[0].id.clone();
    let apps = replicas(&db, &sim, 1).await;
    let replica = &apps[0];
    sim.set_latency(3_000, 0);
    sim.reset_counters();
    let started = refresh(replica, &loc).await;
    assert_eq!(started["joined"], false);
    let process = sync_process(&db, &sim).spawn().expect("the binary runs");
    let waiting = tokio::spawn(process.wait_with_output());
    tokio::time::sleep(Duration::from_secs(1)).await;
    sim.set_latency(0, 0);
    let output = tokio::time::timeout(Duration::from_secs(120), waiting)
        .await
        .expect("the process ends with the job")
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let id = started["id"].as_str().unwrap();
    assert!(
        stdout.contains(&format!("joined job {id}")),
        "the process joined the replica's job: {stdout}"
    );
    assert_eq!(
        db.store.jobs(&loc, 10).await.unwrap().len(),
        1,
        "one job ran"
    );
    Arc::into_inner(apps.into_iter().next().unwrap())
        .unwrap()
        .shutdown()
        .await;
}

#[tokio::test]
async fn a_second_gateway_process_on_one_sqlite_file_is_refused_with_a_clear_error() {
    let db = sqlite().await;
    let first = spawn_app(&db.url).await;
    let second = tokio::process::Command::new(env!("CARGO_BIN_EXE_ghl-gateway"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env_clear()
        .env("DATABASE_URL", &db.url)
        .env("GATEWAY_SECRET_KEY", TEST_SECRET_KEY)
        .env("GATEWAY_ADMIN_KEY", ADMIN_KEY)
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .output();
    let second = tokio::time::timeout(Duration::from_secs(60), second)
        .await
        .expect("the second process stops at once")
        .unwrap();
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success());
    assert!(
        stderr.contains("another ghl-gateway process serves this SQLite database")
            && stderr.contains("PostgreSQL"),
        "{stderr}"
    );
    first.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_sync_processes_on_one_expired_oauth_credential_renew_it_once() {
    let Some(admin) = postgres_url() else {
        return;
    };
    let db = postgres(&admin).await;
    let sim = spawn_sim(200).await;
    let loc = sim.locations[0].id.clone();
    // Connected with OAuth (tokens in clear: the processes run without GATEWAY_SECRET_KEY).
    let client = upstream_client(
        Arc::new(ghl_gateway::app::credentials::StoreCredentials::new(
            db.store.clone(),
            None,
        )),
        &sim,
        |_| {},
    );
    let code = sim.auth_code("Location", Some(&loc)).unwrap();
    assert_eq!(client.install_with_code(&code).await.unwrap(), loc);
    let before = db.store.credential(&loc).await.unwrap().unwrap();
    assert!(sim.expire_token(before.access_token.as_deref().unwrap()));
    sim.set_latency(100, 0);
    sim.reset_counters();

    let spawn = || {
        let mut command = sync_process(&db, &sim);
        command
            .env_remove("GATEWAY_SECRET_KEY")
            .env("GHL_CLIENT_ID", &sim.client_id)
            .env("GHL_CLIENT_SECRET", &sim.client_secret);
        command.spawn().expect("the binary runs")
    };
    let (first, second) = (spawn(), spawn());
    let (first, second) = tokio::join!(first.wait_with_output(), second.wait_with_output());
    let mut joined = 0;
    for output in [first.unwrap(), second.unwrap()] {
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        joined += usize::from(stdout.contains("joined job"));
    }
    assert!(
        joined <= 1,
        "one ran the job, the other joined it (or ran after it)"
    );
    assert_eq!(sim.requests("oauth.token"), 1, "one refresh at GHL");
    assert_eq!(sim.count("oauth.token", "400"), 0, "no invalid_grant");
    let after = db.store.credential(&loc).await.unwrap().unwrap();
    assert_ne!(
        after.refresh_token, before.refresh_token,
        "the rotated token is stored"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stop_on_one_replica_stops_the_job_another_runs() {
    let Some(admin) = postgres_url() else {
        return;
    };
    let db = postgres(&admin).await;
    let sim = spawn_sim(100).await;
    let loc = sim.locations[0].id.clone();
    let apps = replicas(&db, &sim, 2).await;
    sim.set_latency(5_000, 0);
    let started = refresh(&apps[0], &loc).await;
    assert_eq!(started["joined"], false);
    // B runs nothing: an UNINSTALL delivered to B stops A's job.
    let reason = "stopped: the app was uninstalled from the location";
    assert!(
        !apps[1].sync.stop(&loc, reason),
        "the job does not run on B"
    );
    assert!(
        apps[0].sync.wait_idle(&loc, Duration::from_secs(30)).await,
        "A stopped its job without waiting for GHL"
    );
    let job = db.store.last_job(&loc).await.unwrap().unwrap();
    assert_eq!(job.id, started["id"].as_str().unwrap());
    assert_eq!(job.state, JobState::Failed);
    assert_eq!(job.error.as_deref(), Some(reason));
    sim.set_latency(0, 0);
    for app in apps {
        Arc::into_inner(app).unwrap().shutdown().await;
    }
}

/// A command ends right after its last write: the notifications of that write still reach the
/// other replicas before its pool closes (they were lost, and the command logged "cannot notify
/// the other replicas", when closing the store did not wait for its forwarder).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sync_process_s_last_events_reach_the_replicas_before_it_exits() {
    let Some(admin) = postgres_url() else {
        return;
    };
    let db = postgres(&admin).await;
    let sim = spawn_sim(300).await;
    let loc = sim.locations[0].id.clone();
    let apps = replicas(&db, &sim, 1).await;
    let replica = &apps[0];
    let events = collect_events(replica, &loc);
    let output = tokio::time::timeout(Duration::from_secs(120), sync_process(&db, &sim).output())
        .await
        .expect("the process ends with its job")
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        !stderr.contains("cannot notify"),
        "every notification went out: {stderr}"
    );
    let seen = tokio::time::timeout(Duration::from_secs(10), events)
        .await
        .expect("the replica saw the job end")
        .unwrap();
    assert_eq!(
        seen.last().map(|job| job.job.state),
        Some(JobState::Succeeded),
        "the job's last state reached the replica: {seen:?}"
    );
    Arc::into_inner(apps.into_iter().next().unwrap())
        .unwrap()
        .shutdown()
        .await;
}
