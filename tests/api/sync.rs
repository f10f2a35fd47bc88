//! The background sync against the simulator: the cache equals the ground truth, incremental and
//! full runs converge, single flight, resume after a crash, events over a real WebSocket.

use std::collections::BTreeSet;
use std::time::Duration;

use ghl_gateway::domain::{JobState, Resource};
use ghl_gateway::store::entities::{
    contact, contact_custom_value, conversation, opportunity, task, user,
};
use ghl_gateway::sync::{SyncEngine, SyncMode};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::{Value, json};

use crate::helpers::*;

const REFRESH: &str = r#"mutation($loc: ID!, $mode: SyncMode) {
  refreshLocation(locationId: $loc, mode: $mode) { id state mode joined stages { name state } }
}"#;

fn ms(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => chrono::DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|t| t.timestamp_millis()),
        _ => None,
    }
}

fn text(v: &Value) -> Option<String> {
    v.as_str().filter(|s| !s.is_empty()).map(str::to_owned)
}

/// Every field the gateway serves, compared between the cache and the simulator's ground truth.
pub(crate) async fn assert_cache_equals_truth(
    app: &TestApp,
    sim: &ghl_gateway::sim::SimHandle,
    location_id: &str,
) {
    let truth = sim.dump(location_id).unwrap();
    let db = app.store.connection();
    let rows = |key: &str| truth[key].as_array().unwrap().clone();

    let want: BTreeSet<_> = rows("contacts")
        .iter()
        .map(|c| {
            (
                text(&c["id"]),
                text(&c["firstName"]),
                text(&c["lastName"]),
                text(&c["email"]),
                text(&c["phone"]),
                text(&c["companyName"]),
                text(&c["assignedTo"]),
                serde_json::to_string(&c["tags"]).unwrap(),
                ms(&c["dateAdded"]),
                ms(&c["dateUpdated"]),
            )
        })
        .collect();
    let got: BTreeSet<_> = contact::Entity::find()
        .filter(contact::Column::LocationId.eq(location_id))
        .filter(contact::Column::Deleted.eq(false))
        .all(db)
        .await
        .unwrap()
        .into_iter()
        .map(|c| {
            (
                Some(c.id),
                c.first_name,
                c.last_name,
                c.email,
                c.phone,
                c.company_name,
                c.assigned_to,
                c.tags,
                Some(c.date_added),
                Some(c.date_updated),
            )
        })
        .collect();
    assert_eq!(got.len(), want.len(), "contacts");
    assert!(
        got == want,
        "contacts differ: {:?}",
        got.symmetric_difference(&want).take(3).collect::<Vec<_>>()
    );

    let want: BTreeSet<_> = rows("contacts")
        .iter()
        .flat_map(|c| {
            let id = c["id"].as_str().unwrap().to_owned();
            c["customFields"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(move |f| {
                    (
                        id.clone(),
                        f["id"].as_str().unwrap().to_owned(),
                        f["value"].to_string(),
                    )
                })
        })
        .collect();
    let got: BTreeSet<_> = contact_custom_value::Entity::find()
        .filter(contact_custom_value::Column::LocationId.eq(location_id))
        .all(db)
        .await
        .unwrap()
        .into_iter()
        .filter(|v| want.iter().any(|(c, _, _)| *c == v.contact_id))
        .map(|v| (v.contact_id, v.field_id, v.value))
        .collect();
    assert!(got == want, "custom field values differ");

    let want: BTreeSet<_> = rows("tasks")
        .iter()
        .map(|t| {
            (
                text(&t["id"]),
                text(&t["title"]),
                text(&t["body"]),
                t["completed"].as_bool().unwrap(),
                text(&t["contactId"]),
                text(&t["assignedTo"]),
                ms(&t["dueDate"]),
            )
        })
        .collect();
    let got: BTreeSet<_> = task::Entity::find()
        .filter(task::Column::LocationId.eq(location_id))
        .filter(task::Column::Deleted.eq(false))
        .all(db)
        .await
        .unwrap()
        .into_iter()
        .map(|t| {
            (
                Some(t.id),
                t.title,
                t.body,
                t.completed,
                t.contact_id,
                t.assigned_to,
                t.due_date,
            )
        })
        .collect();
    assert_eq!(got.len(), want.len(), "tasks");
    assert!(
        got == want,
        "tasks differ: {:?}",
        got.symmetric_difference(&want).take(3).collect::<Vec<_>>()
    );

    let want: BTreeSet<_> = rows("conversations")
        .iter()
        .map(|c| {
            (
                text(&c["id"]),
                text(&c["contactId"]),
                text(&c["type"]),
                text(&c["lastMessageBody"]),
                text(&c["lastMessageType"]),
                ms(&c["lastMessageDate"]),
                c["unreadCount"].as_i64().unwrap() as i32,
            )
        })
        .collect();
    let got: BTreeSet<_> = conversation::Entity::find()
        .filter(conversation::Column::LocationId.eq(location_id))
        .filter(conversation::Column::Deleted.eq(false))
        .all(db)
        .await
        .unwrap()
        .into_iter()
        .map(|c| {
            (
                Some(c.id),
                c.contact_id,
                c.kind,
                c.last_message_body,
                c.last_message_type,
                c.last_message_date,
                c.unread_count,
            )
        })
        .collect();
    assert_eq!(got.len(), want.len(), "conversations");
    assert!(
        got == want,
        "conversations differ: {:?}",
        got.symmetric_difference(&want).take(3).collect::<Vec<_>>()
    );

    let want: BTreeSet<_> = rows("opportunities")
        .iter()
        .map(|o| {
            (
                text(&o["id"]),
                text(&o["name"]),
                text(&o["status"]),
                o["monetaryValue"]
                    .as_f64()
                    .map(|v| (v * 100.0).round() as i64),
                text(&o["pipelineId"]),
                text(&o["pipelineStageId"]),
                text(&o["contactId"]),
                text(&o["assignedTo"]),
                ms(&o["updatedAt"]),
            )
        })
        .collect();
    let got: BTreeSet<_> = opportunity::Entity::find()
        .filter(opportunity::Column::LocationId.eq(location_id))
        .filter(opportunity::Column::Deleted.eq(false))
        .all(db)
        .await
        .unwrap()
        .into_iter()
        .map(|o| {
            (
                Some(o.id),
                o.name,
                o.status,
                o.monetary_value.map(|v| (v * 100.0).round() as i64),
                o.pipeline_id,
                o.stage_id,
                o.contact_id,
                o.assigned_to,
                o.updated_at,
            )
        })
        .collect();
    assert_eq!(got.len(), want.len(), "opportunities");
    assert!(
        got == want,
        "opportunities differ: {:?}",
        got.symmetric_difference(&want).take(3).collect::<Vec<_>>()
    );

    let want: BTreeSet<_> = rows("users")
        .iter()
        .map(|u| (text(&u["id"]), text(&u["email"])))
        .collect();
    let got: BTreeSet<_> = user::Entity::find()
        .filter(user::Column::LocationId.eq(location_id))
        .filter(user::Column::Deleted.eq(false))
        .all(db)
        .await
        .unwrap()
        .into_iter()
        .map(|u| (Some(u.id), u.email))
        .collect();
    assert!(got == want, "users differ");
}

async fn refresh(app: &TestApp, location_id: &str, mode: &str) -> Value {
    let answer = app
        .graphql(REFRESH, json!({ "loc": location_id, "mode": mode }))
        .await;
    assert!(answer.get("errors").is_none(), "{answer}");
    answer["data"]["refreshLocation"].clone()
}

async fn sync_to_end(app: &TestApp, location_id: &str, mode: &str) -> Value {
    refresh(app, location_id, mode).await;
    assert!(
        app.sync
            .wait_idle(location_id, Duration::from_secs(120))
            .await,
        "the sync ends"
    );
    let status = app
        .graphql(
            r#"query($loc: ID!) { syncStatus(locationId: $loc) { state lastJob { id mode state error stages { name state fetched pages calls retries rateLimited } } freshness { stale syncing syncedAt } } }"#,
            json!({ "loc": location_id }),
        )
        .await;
    status["data"]["syncStatus"].clone()
}

fn calls_of(status: &Value) -> i64 {
    status["lastJob"]["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["calls"].as_i64().unwrap())
        .sum()
}

/// Pages of `n` conversations with distinct `lastMessageDate`s, read from both ends at once:
/// 100 a page, but each page after a walk's first repeats that walk's previous last row (the
/// cursor overlaps the run of its date, which GHL's `startAfterDate` would otherwise cut), and
/// the walks meet without a page more than the rows need.
pub(crate) fn conversation_pages(n: usize) -> usize {
    match n {
        0..=100 => 1,
        101..=200 => 2,
        _ => 2 + (n - 200).div_ceil(99),
    }
}

/// FACTS.md §11's minimum of calls of a FULL sync of the location (without its own details),
/// conversations paged as [`conversation_pages`] says.
fn minimal_calls(sim: &ghl_gateway::sim::SimHandle, loc: &str) -> usize {
    let truth = sim.dump(loc).unwrap();
    let count = |key: &str| truth[key].as_array().unwrap().len();
    3 + count("contacts").div_ceil(500)
        + (count("tasks") / 500 + 1)
        + conversation_pages(count("conversations"))
        + count("opportunities").div_ceil(500)
}

fn sum_of(status: &Value, field: &str) -> i64 {
    status["lastJob"]["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s[field].as_i64().unwrap())
        .sum()
}

fn answered_429(sim: &ghl_gateway::sim::SimHandle) -> u64 {
    sim.counters().values().filter_map(|m| m.get("429")).sum()
}

#[tokio::test]
async fn another_client_spending_most_of_the_window_costs_no_429() {
    let db = sqlite().await;
    // GHL's limits scaled down: 20 per 10 s, of which another client of the same app and
    // location (another process, another replica) spends 12 before the sync starts.
    let sim = spawn_sim_with(ghl_gateway::sim::SimArgs {
        contacts: 300,
        burst_limit: 20,
        ..Default::default()
    })
    .await;
    let app = spawn_app_with_sim(&db.url, &sim).await;
    let loc = sim.locations[0].clone();
    assert_eq!(sim.spend_budget(&loc.pit_token, 12).unwrap(), 12);
    let status = sync_to_end(&app, &loc.id, "FULL").await;
    assert_eq!(status["lastJob"]["state"], "SUCCEEDED", "{status}");
    let minimal = minimal_calls(&sim, &loc.id);
    assert!(
        minimal + 1 > 8,
        "the sync needs more than the 8 left in the window"
    );
    assert_eq!(answered_429(&sim), 0, "{:?}", sim.counters());
    assert_eq!(sum_of(&status, "rateLimited"), 0, "{status}");
    // The location's details, then the minimum.
    assert_eq!(sim.total_requests(), minimal as u64 + 1);
    assert_eq!(calls_of(&status), minimal as i64, "{status}");
}

#[tokio::test]
async fn spurious_429s_with_budget_left_are_retried_after_a_brief_backoff() {
    let db = sqlite().await;
    // A window of an hour: a 429 that paused the location for a window would hang the sync.
    let sim = spawn_sim_with(ghl_gateway::sim::SimArgs {
        contacts: 300,
        burst_window_ms: 3_600_000,
        fault_429: 0.4,
        ..Default::default()
    })
    .await;
    let app = spawn_app_with_sim_and(&db.url, &sim, |c| {
        c.upstream.max_retries = 12;
        c.upstream.spurious_backoff_ms = 10;
    })
    .await;
    let loc = sim.locations[0].id.clone();
    let status = tokio::time::timeout(Duration::from_secs(120), sync_to_end(&app, &loc, "FULL"))
        .await
        .expect("no 429 under the limit waits for the window");
    assert_eq!(status["lastJob"]["state"], "SUCCEEDED", "{status}");
    let limited = answered_429(&sim);
    assert!(limited > 0, "the simulator answered spurious 429s");
    // The job's stages count theirs; the location's details call may have met some too.
    let staged = sum_of(&status, "rateLimited");
    assert!(staged > 0 && staged as u64 <= limited, "{status}");
    assert_eq!(sum_of(&status, "retries"), staged, "each 429 retried once");
    let minimal = minimal_calls(&sim, &loc);
    assert_eq!(calls_of(&status), minimal as i64 + staged, "{status}");
    assert_eq!(
        sim.total_requests(),
        minimal as u64 + 1 + limited,
        "every call once, plus one retry per 429"
    );
}

#[tokio::test]
async fn a_full_sync_makes_the_cache_equal_to_the_ground_truth() {
    for db in databases().await {
        let sim = spawn_sim(1_200).await;
        let app = spawn_app_with_sim(&db.url, &sim).await;
        let loc = sim.locations[0].id.clone();

        let job = refresh(&app, &loc, "FULL").await;
        assert_eq!(job["joined"], false);
        assert_eq!(job["mode"], "FULL");
        assert!(app.sync.wait_idle(&loc, Duration::from_secs(120)).await);
        // A second FULL run over a warm cache costs the same and changes nothing.
        sim.reset_counters();
        let status = sync_to_end(&app, &loc, "FULL").await;
        assert_eq!(status["state"], "SUCCEEDED", "{status}");
        assert_eq!(status["freshness"]["stale"], false);
        assert_cache_equals_truth(&app, &sim, &loc).await;

        // FACTS.md §11's minimum of calls exactly: the location's details were read by the first
        // run (the 100-refresh test counts that one) and are not read again within a week.
        let minimal = minimal_calls(&sim, &loc);
        assert_eq!(calls_of(&status), minimal as i64, "{}: {status}", db.name);
        assert_eq!(sim.total_requests(), minimal as u64, "{}", db.name);
        assert_eq!(answered_429(&sim), 0);

        // Served over GraphQL with the location's name.
        let page = app
            .graphql(r#"query($loc: ID!) { location(id: $loc) { name } contacts(locationId: $loc, first: 5) { totalCount nodes { tasks { id } } } }"#, json!({ "loc": loc }))
            .await;
        assert_eq!(page["data"]["contacts"]["totalCount"], 1_200, "{page}");
        assert!(page["data"]["location"]["name"].is_string());
    }
}

#[tokio::test]
async fn incremental_then_full_converge_after_changes_in_ghl() {
    for db in databases().await {
        let sim = spawn_sim(700).await;
        let app = spawn_app_with_sim(&db.url, &sim).await;
        let loc = sim.locations[0].id.clone();
        let status = sync_to_end(&app, &loc, "FULL").await;
        assert_eq!(status["state"], "SUCCEEDED");

        // Nothing changed: an incremental run costs a handful of calls.
        let status = sync_to_end(&app, &loc, "INCREMENTAL").await;
        assert_eq!(status["lastJob"]["mode"], "INCREMENTAL", "{status}");
        // The README's figure, exactly: the three whole lists and one page of each search.
        sim.reset_counters();
        let status = sync_to_end(&app, &loc, "INCREMENTAL").await;
        assert_eq!(calls_of(&status), 7, "{}: {status}", db.name);
        assert_eq!(sim.total_requests(), 7, "{}", db.name);

        // Changes in GHL.
        let truth = sim.dump(&loc).unwrap();
        let first = |key: &str, n: usize| truth[key][n]["id"].as_str().unwrap().to_owned();
        sim.update(
            &loc,
            "contacts",
            &first("contacts", 0),
            json!({ "firstName": "Renamed" }),
        )
        .unwrap();
        sim.create(
            &loc,
            "contacts",
            json!({ "firstName": "Newly", "lastName": "Added", "email": "new@example.com" }),
        )
        .unwrap();
        sim.delete(&loc, "contacts", &first("contacts", 1)).unwrap();
        sim.update(
            &loc,
            "tasks",
            &first("tasks", 0),
            json!({ "title": "Edited task" }),
        )
        .unwrap();
        sim.update(
            &loc,
            "opportunities",
            &first("opportunities", 0),
            json!({ "status": "won" }),
        )
        .unwrap();
        sim.delete(&loc, "tasks", &first("tasks", 1)).unwrap();

        let status = sync_to_end(&app, &loc, "INCREMENTAL").await;
        assert_eq!(status["state"], "SUCCEEDED", "{status}");
        let renamed = app
            .store
            .contacts_by_ids(&[first("contacts", 0)])
            .await
            .unwrap();
        assert_eq!(
            renamed[0].first_name.as_deref(),
            Some("Renamed"),
            "incremental picks up the update"
        );
        let answer = app
            .graphql(r#"query($loc: ID!) { contacts(locationId: $loc, filter: { query: "new@example.com" }) { totalCount } }"#, json!({ "loc": loc }))
            .await;
        assert_eq!(
            answer["data"]["contacts"]["totalCount"], 1,
            "incremental picks up the new contact: {answer}"
        );
        let edited = task::Entity::find_by_id(first("tasks", 0))
            .one(app.store.connection())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(edited.title.as_deref(), Some("Edited task"));
        let won = opportunity::Entity::find_by_id(first("opportunities", 0))
            .one(app.store.connection())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(won.status.as_deref(), Some("won"));

        // Deletions are invisible to search: the FULL run reconciles them.
        let status = sync_to_end(&app, &loc, "FULL").await;
        assert_eq!(status["state"], "SUCCEEDED", "{status}");
        assert_cache_equals_truth(&app, &sim, &loc).await;
        let gone = contact::Entity::find_by_id(first("contacts", 1))
            .one(app.store.connection())
            .await
            .unwrap()
            .unwrap();
        assert!(gone.deleted, "marked deleted, not dropped");
    }
}

#[tokio::test]
async fn a_hundred_concurrent_refreshes_start_one_job() {
    for db in databases().await {
        let sim = spawn_sim(600).await;
        let app = std::sync::Arc::new(spawn_app_with_sim(&db.url, &sim).await);
        let loc = sim.locations[0].id.clone();
        sim.reset_counters();
        let mut calls = Vec::new();
        for _ in 0..100 {
            let app = app.clone();
            let loc = loc.clone();
            calls.push(tokio::spawn(
                async move { refresh(&app, &loc, "FULL").await },
            ));
        }
        let mut jobs = Vec::new();
        for call in calls {
            jobs.push(call.await.unwrap());
        }
        let started = jobs.iter().filter(|j| j["joined"] == false).count();
        assert_eq!(started, 1, "exactly one call starts the job");
        let ids: BTreeSet<&str> = jobs.iter().map(|j| j["id"].as_str().unwrap()).collect();
        assert_eq!(ids.len(), 1, "every call gets the same job");
        assert!(app.sync.wait_idle(&loc, Duration::from_secs(120)).await);
        let truth = sim.dump(&loc).unwrap();
        let count = |key: &str| truth[key].as_array().unwrap().len();
        let one_sync = 1
            + 3
            + count("contacts").div_ceil(500)
            + (count("tasks") / 500 + 1)
            + conversation_pages(count("conversations"))
            + count("opportunities").div_ceil(500);
        assert_eq!(
            sim.total_requests(),
            one_sync as u64,
            "the simulator saw one sync's worth of calls"
        );
        assert_eq!(
            app.store.jobs(&loc, 10).await.unwrap().len(),
            1,
            "one job in the history"
        );
    }
}

/// Starts a FULL sync and, once its conversations stage has three pages, makes every further
/// `conversations.search` fail as `spec` says.
pub(crate) async fn full_sync_until_conversations_fail(
    app: &TestApp,
    sim: &ghl_gateway::sim::SimHandle,
    loc: &str,
    spec: ghl_gateway::sim::FaultSpec,
) {
    let mut events = app.sync.subscribe();
    refresh(app, loc, "FULL").await;
    loop {
        let event = events.recv().await.unwrap();
        let conv = event
            .job
            .stages
            .iter()
            .find(|s| s.resource == Resource::Conversations);
        if conv.is_some_and(|c| c.pages >= 3) {
            sim.set_faults(ghl_gateway::sim::FaultConfig {
                default: Default::default(),
                endpoints: [("conversations.search".to_owned(), spec)].into(),
            })
            .unwrap();
            return;
        }
    }
}

/// The conversations stage resumed at its checkpoint: it fetched only the pages after `done`.
fn assert_resumed_at(sim: &ghl_gateway::sim::SimHandle, loc: &str, done: i64) {
    let total_pages = conversation_pages(
        sim.dump(loc).unwrap()["conversations"]
            .as_array()
            .unwrap()
            .len(),
    ) as u64;
    // Plus one: the resumed pass reads what changed since it began before reconciling.
    assert_eq!(
        sim.requests("conversations.search"),
        total_pages - done as u64 + 1,
        "the interrupted stage resumes at its checkpoint"
    );
}

#[tokio::test]
async fn a_sync_stopped_mid_way_resumes_from_its_checkpoints() {
    for db in databases().await {
        let sim = spawn_sim(1_500).await;
        let app = spawn_app_with_sim(&db.url, &sim).await;
        let loc = sim.locations[0].id.clone();
        // Conversations start failing after their third page; the other stages finish.
        full_sync_until_conversations_fail(
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
        assert_eq!(failed.state, JobState::Failed);
        assert!(
            failed.error.as_deref().unwrap().contains("unavailable"),
            "{failed:?}"
        );
        let stages = app
            .store
            .stages_of_jobs(std::slice::from_ref(&failed.id))
            .await
            .unwrap();
        let conv = stages
            .iter()
            .find(|s| s.resource == Resource::Conversations)
            .unwrap()
            .clone();
        assert_eq!(conv.state, JobState::Failed);
        assert!(
            stages
                .iter()
                .filter(|s| s.resource != Resource::Conversations)
                .all(|s| s.state == JobState::Succeeded),
            "{stages:?}"
        );

        // GHL recovers; the next run fetches only what the failed stage had left.
        sim.set_faults(Default::default()).unwrap();
        sim.reset_counters();
        let status = sync_to_end(&app, &loc, "INCREMENTAL").await;
        assert_eq!(status["state"], "SUCCEEDED", "{status}");
        assert_eq!(
            status["lastJob"]["mode"], "FULL",
            "a resumed FULL job stays FULL"
        );
        assert_resumed_at(&sim, &loc, conv.pages);
        for endpoint in [
            "contacts.search",
            "tasks.search",
            "opportunities.search.post",
            "users.list",
        ] {
            assert_eq!(
                sim.requests(endpoint),
                0,
                "{endpoint} finished before and is not fetched again"
            );
        }
        assert_cache_equals_truth(&app, &sim, &loc).await;
    }
}

#[tokio::test]
async fn a_stop_during_hanging_ghl_calls_ends_at_once_and_resumes() {
    let db = sqlite().await;
    let sim = spawn_sim(1_500).await;
    let app = spawn_app_with_sim(&db.url, &sim).await;
    let loc = sim.locations[0].id.clone();
    // After the third page of conversations, GHL hangs (for 5 minutes, then a 504).
    full_sync_until_conversations_fail(
        &app,
        &sim,
        &loc,
        ghl_gateway::sim::FaultSpec {
            hang: 1.0,
            ..Default::default()
        },
    )
    .await;
    // Until the stage has written every page it got and waits on a hanging call (one or both of
    // the conversations' walks).
    let waiting = || {
        let job = app.sync.running(&loc).unwrap();
        let conv = job
            .stages
            .iter()
            .find(|s| s.resource == Resource::Conversations);
        sim.count("conversations.search", "hang") >= 1
            && conv.unwrap().pages as u64 == sim.count("conversations.search", "200")
    };
    while !waiting() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    // SIGTERM: a stop that waited for GHL would wait for its timeout (30 s), then retry into
    // the next hang. Not on a paused clock: tokio advances a paused clock whenever its tasks
    // wait, and they wait here on sockets and SQLite's worker thread, which it cannot see.
    tokio::time::timeout(Duration::from_secs(5), app.shutdown())
        .await
        .expect("the gateway stops within 5 s whatever GHL does");

    // The next process finds the job stopped with its checkpoints.
    sim.set_faults(Default::default()).unwrap();
    let app = spawn_app_with_sim(&db.url, &sim).await;
    let store = &app.store;
    let stopped = store.last_job(&loc).await.unwrap().unwrap();
    assert_eq!(stopped.state, JobState::Failed, "{stopped:?}");
    assert!(
        stopped.error.as_deref().unwrap().contains("interrupted"),
        "{stopped:?}"
    );
    let stages = store
        .stages_of_jobs(std::slice::from_ref(&stopped.id))
        .await
        .unwrap();
    let conv = stages
        .iter()
        .find(|s| s.resource == Resource::Conversations)
        .unwrap()
        .clone();
    assert!(conv.pages >= 3 && conv.checkpoint.is_some(), "{conv:?}");

    // It resumes: only the pages the stop left are fetched.
    sim.wait_idle().await;
    sim.reset_counters();
    let status = sync_to_end(&app, &loc, "FULL").await;
    assert_eq!(status["state"], "SUCCEEDED", "{status}");
    assert_resumed_at(&sim, &loc, conv.pages);
    for stage in stages.iter().filter(|s| s.state == JobState::Succeeded) {
        let endpoint = match stage.resource {
            Resource::Contacts => "contacts.search",
            Resource::Tasks => "tasks.search",
            Resource::Opportunities => "opportunities.search.post",
            Resource::Users => "users.list",
            _ => continue,
        };
        assert_eq!(sim.requests(endpoint), 0, "{endpoint} is not fetched again");
    }
    assert_cache_equals_truth(&app, &sim, &loc).await;
}

#[tokio::test]
async fn a_process_killed_mid_sync_resumes_on_the_next_start() {
    killed_mid_sync_resumes(false).await;
}

#[tokio::test]
async fn a_process_that_crashes_mid_sync_leaves_the_job_running_and_the_next_start_resumes_it() {
    killed_mid_sync_resumes(true).await;
}

/// A GHL client over `store`'s credentials, for the simulator.
fn store_client(
    store: &ghl_gateway::store::Store,
    sim_base_url: &str,
) -> ghl_gateway::upstream::Client {
    let mut config = ghl_gateway::upstream::UpstreamConfig::new(sim_base_url.to_owned());
    config.backoff_ms = 20;
    let credentials = ghl_gateway::app::credentials::StoreCredentials::new(store.clone(), None);
    ghl_gateway::upstream::Client::new(config, std::sync::Arc::new(credentials)).unwrap()
}

/// Waits until the jobs of `events` fetched `pages` pages in all.
async fn wait_pages(
    events: &mut tokio::sync::broadcast::Receiver<ghl_gateway::sync::SyncEvent>,
    pages: i64,
) {
    loop {
        let event = events.recv().await.unwrap();
        if event.job.stages.iter().map(|s| s.pages).sum::<i64>() >= pages {
            return;
        }
    }
}

/// A first process syncs a few pages and stops: gracefully (SIGTERM: the engine's shutdown) or
/// by crashing (its runtime dropped: no shutdown code runs, the job row stays RUNNING). A second
/// process resumes the job from its checkpoints.
async fn killed_mid_sync_resumes(crash: bool) {
    for db in databases().await {
        let sim = spawn_sim(1_500).await;
        sim.set_latency(20, 0);
        let loc = sim.locations[0].id.clone();
        let client = store_client(&db.store, &sim.base_url);
        client
            .set_credential(
                &loc,
                ghl_gateway::upstream::Credential::PrivateIntegration {
                    token: sim.locations[0].pit_token.clone().into(),
                },
            )
            .await
            .unwrap();
        if crash {
            let (url, base_url, location) = (db.url.clone(), sim.base_url.clone(), loc.clone());
            // The first process on its own runtime, beside the simulator's.
            tokio::task::spawn_blocking(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(async {
                    let config = ghl_gateway::store::DatabaseConfig::new(&url);
                    let store = ghl_gateway::store::Store::open(&config).await.unwrap();
                    let client = store_client(&store, &base_url);
                    let first = SyncEngine::start(store, client, Default::default())
                        .await
                        .unwrap();
                    let mut events = first.subscribe();
                    first.refresh(&location, SyncMode::Full).await.unwrap();
                    wait_pages(&mut events, 6).await;
                });
                // The crash: every task stops where it is, nothing runs the engine's shutdown.
                runtime.shutdown_background();
            })
            .await
            .unwrap();
            let left = db.store.last_job(&loc).await.unwrap().unwrap();
            assert_eq!(left.state, JobState::Running, "{}: {left:?}", db.name);
        } else {
            let first = SyncEngine::start(db.store.clone(), client.clone(), Default::default())
                .await
                .unwrap();
            let mut events = first.subscribe();
            first.refresh(&loc, SyncMode::Full).await.unwrap();
            wait_pages(&mut events, 6).await;
            first.shutdown().await;
        }
        let killed = db.store.last_job(&loc).await.unwrap().unwrap();
        let left_as = if crash {
            JobState::Running
        } else {
            JobState::Failed
        };
        assert_eq!(killed.state, left_as, "{killed:?}");
        let done_before: std::collections::HashMap<Resource, (JobState, i64)> = db
            .store
            .stages_of_jobs(std::slice::from_ref(&killed.id))
            .await
            .unwrap()
            .into_iter()
            .map(|s| (s.resource, (s.state, s.pages)))
            .collect();

        // A page request the first process gave up on may still be sleeping its latency.
        sim.wait_idle().await;
        sim.reset_counters();
        let second = SyncEngine::start(db.store.clone(), client, Default::default())
            .await
            .unwrap();
        second.refresh(&loc, SyncMode::Incremental).await.unwrap();
        assert!(second.wait_idle(&loc, Duration::from_secs(300)).await);
        let resumed = db.store.last_job(&loc).await.unwrap().unwrap();
        assert_eq!(
            (resumed.state, resumed.mode, resumed.mark),
            (JobState::Succeeded, SyncMode::Full, killed.mark)
        );
        // Finished stages are not fetched again; the others continue from their checkpoint.
        let truth = sim.dump(&loc).unwrap();
        let pages =
            |key: &str, size: usize| truth[key].as_array().unwrap().len().div_ceil(size) as u64;
        let expect = |stage: Resource, endpoint: &str, all: u64| {
            let (state, done) = done_before[&stage];
            // A pass resumed mid-way also reads what changed since it began (one page here); a
            // pass stopped after its last page (no cursor left to resume from) starts over.
            let left = if state == JobState::Succeeded {
                0
            } else if done > 0 && (done as u64) < all {
                all - done as u64 + 1
            } else {
                all
            };
            assert_eq!(
                sim.requests(endpoint),
                left,
                "{stage:?}: {state:?} after {done} pages"
            );
        };
        expect(
            Resource::Contacts,
            "contacts.search",
            pages("contacts", 500),
        );
        let conversations = truth["conversations"].as_array().unwrap().len();
        expect(
            Resource::Conversations,
            "conversations.search",
            conversation_pages(conversations) as u64,
        );
        expect(
            Resource::Opportunities,
            "opportunities.search.post",
            pages("opportunities", 500),
        );
        let tasks = truth["tasks"].as_array().unwrap().len() as u64 / 500 + 1;
        expect(Resource::Tasks, "tasks.search", tasks);
        let app = spawn_app(&db.url).await;
        assert_cache_equals_truth(&app, &sim, &loc).await;
    }
}

#[tokio::test]
async fn refused_credentials_keep_the_cache_served_as_stale() {
    for db in databases().await {
        let sim = spawn_sim(50).await;
        let app = spawn_app_with_sim(&db.url, &sim).await;
        let loc = sim.locations[0].id.clone();
        assert_eq!(sync_to_end(&app, &loc, "FULL").await["state"], "SUCCEEDED");
        app.sync
            .client()
            .set_credential(
                &loc,
                ghl_gateway::upstream::Credential::PrivateIntegration {
                    token: "pit-revoked".into(),
                },
            )
            .await
            .unwrap();
        let status = sync_to_end(&app, &loc, "INCREMENTAL").await;
        assert_eq!(status["state"], "FAILED", "{status}");
        assert!(
            status["lastJob"]["error"]
                .as_str()
                .unwrap()
                .contains("refused the credentials"),
            "{status}"
        );
        assert_eq!(
            status["freshness"]["stale"], true,
            "recently synced, but its credentials are refused"
        );
        let page = app
            .graphql(
                r#"query($loc: ID!) { contacts(locationId: $loc) { totalCount freshness { stale } } }"#,
                json!({ "loc": loc }),
            )
            .await;
        assert_eq!(
            page["data"]["contacts"]["totalCount"], 50,
            "the cache is still served: {page}"
        );
        assert_eq!(page["data"]["contacts"]["freshness"]["stale"], true);
    }
}

#[tokio::test]
async fn max_age_waits_for_fresh_data_and_stale_reads_revalidate() {
    for db in databases().await {
        let sim = spawn_sim(40).await;
        let app = spawn_app_with_sim(&db.url, &sim).await;
        let loc = sim.locations[0].id.clone();
        // Never synced: `maxAge: 0` waits for a sync and answers with its data.
        let page = app
            .graphql(r#"query($loc: ID!) { contacts(locationId: $loc, maxAge: 0) { totalCount freshness { stale syncing syncedAt } } }"#, json!({ "loc": loc }))
            .await;
        assert_eq!(page["data"]["contacts"]["totalCount"], 40, "{page}");
        assert_eq!(
            page["data"]["contacts"]["freshness"]["stale"], false,
            "{page}"
        );
        assert!(page["data"]["contacts"]["freshness"]["syncedAt"].is_string());

        // Data older than the max age (0 s here) is served at once and refreshed behind.
        let stale = spawn_app_with(&db.url, |c| {
            c.upstream.base_url = sim.base_url.clone();
            c.graphql.max_age_secs = 0;
        })
        .await;
        time_passes(&app.store, &loc, 2).await;
        let before = app.store.jobs(&loc, 10).await.unwrap().len();
        let page = stale
            .graphql(
                r#"query($loc: ID!) { contacts(locationId: $loc) { totalCount freshness { stale } } }"#,
                json!({ "loc": loc }),
            )
            .await;
        assert_eq!(page["data"]["contacts"]["totalCount"], 40, "{page}");
        assert!(stale.sync.wait_idle(&loc, Duration::from_secs(60)).await);
        assert_eq!(
            app.store.jobs(&loc, 10).await.unwrap().len(),
            before + 1,
            "one background refresh"
        );
    }
}

#[tokio::test]
async fn the_scheduler_runs_a_full_sync_first_then_incremental_ones() {
    for db in databases().await {
        let sim = spawn_sim(100).await;
        let app = spawn_app_with_sim(&db.url, &sim).await;
        let loc = sim.locations[0].id.clone();
        for expected in [SyncMode::Full, SyncMode::Incremental, SyncMode::Incremental] {
            assert_eq!(
                app.sync.schedule_once().await.unwrap(),
                1,
                "one job per connected location"
            );
            assert!(app.sync.wait_idle(&loc, Duration::from_secs(60)).await);
            let job = app.store.last_job(&loc).await.unwrap().unwrap();
            assert_eq!((job.mode, job.state), (expected, JobState::Succeeded));
        }
    }
}

/// A FULL job of `app` that fails (conversations answer 500), as its row says.
async fn failing_full_job(
    app: &TestApp,
    sim: &ghl_gateway::sim::SimHandle,
    loc: &str,
) -> ghl_gateway::domain::SyncJob {
    let spec = ghl_gateway::sim::FaultSpec {
        error500: 1.0,
        ..Default::default()
    };
    sim.set_faults(ghl_gateway::sim::FaultConfig {
        default: Default::default(),
        endpoints: [("conversations.search".to_owned(), spec)].into(),
    })
    .unwrap();
    sim.reset_counters();
    app.sync.refresh(loc, SyncMode::Full).await.unwrap();
    assert!(app.sync.wait_idle(loc, Duration::from_secs(120)).await);
    let job = app.store.last_job(loc).await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Failed, "{job:?}");
    job
}

#[tokio::test]
async fn the_resume_window_counts_from_the_first_attempt() {
    for db in databases().await {
        let sim = spawn_sim(300).await;
        let app = spawn_app_with_sim_and(&db.url, &sim, |c| {
            c.sync.resume_window_secs = 60;
            c.sync.failure_cooldown_secs = 0;
        })
        .await;
        let loc = sim.locations[0].id.clone();
        let first = failing_full_job(&app, &sim, &loc).await;
        time_passes(&app.store, &loc, 40).await;
        // 40 s after the first attempt: resumed (its mark inherited, contacts not fetched again).
        let second = failing_full_job(&app, &sim, &loc).await;
        assert_ne!(second.id, first.id);
        assert_eq!(second.mark, first.mark - 40_000, "{}: resumed", db.name);
        assert_eq!(sim.requests("contacts.search"), 0);
        // 70 s after the first attempt, 30 s after the latest: the window is over.
        time_passes(&app.store, &loc, 30).await;
        let third = failing_full_job(&app, &sim, &loc).await;
        assert!(
            third.mark > second.mark,
            "{}: restarted, not resumed",
            db.name
        );
        assert_eq!(sim.requests("contacts.search"), 1, "{}", db.name);
    }
}

#[tokio::test]
async fn a_resume_window_of_zero_never_resumes() {
    for db in databases().await {
        let sim = spawn_sim(300).await;
        let app = spawn_app_with_sim_and(&db.url, &sim, |c| {
            c.sync.resume_window_secs = 0;
            c.sync.failure_cooldown_secs = 0;
        })
        .await;
        let loc = sim.locations[0].id.clone();
        let first = failing_full_job(&app, &sim, &loc).await;
        time_passes(&app.store, &loc, 1).await;
        let second = failing_full_job(&app, &sim, &loc).await;
        assert!(
            second.mark > first.mark,
            "{}: restarted, not resumed",
            db.name
        );
        assert_eq!(sim.requests("contacts.search"), 1, "{}", db.name);
    }
}
