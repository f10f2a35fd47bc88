//! Reliability (issue 19): freshness never claims more than was read; conversations sharing a
//! `lastMessageDate` across page boundaries all reach the cache; syncs killed at seeded random
//! points under GHL's faults, with GHL changing between kills, lose nothing (the harness is
//! `ghl_gateway::bench::reliability`, shared with `bench --only reliability`); a kill during a
//! page write leaves the page with its checkpoint or neither. Every test runs on both databases.
//!
//! A "process" here is a store or an engine on its own Tokio runtime: killing it drops the
//! runtime where it stands (`shutdown_background`), so no shutdown code runs and transactions in
//! flight are dropped, as after `kill -9`.

use ghl_gateway::bench::reliability::{Figures, Plan, killed_syncs_converge};
use ghl_gateway::domain::{Contact, JobSnapshot, JobState, Resource, SyncJob, SyncMode, SyncStage};
use ghl_gateway::domain::{from_ms, to_ms};
use ghl_gateway::sim::{FaultConfig, FaultSpec, SimHandle};
use ghl_gateway::store::entities::{contact, conversation};
use ghl_gateway::store::{DatabaseConfig, Page, Store};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter};
use serde_json::json;

use crate::helpers::*;
use crate::sync::assert_cache_equals_truth;

fn stage(snapshot: &JobSnapshot, resource: Resource) -> &SyncStage {
    snapshot
        .stages
        .iter()
        .find(|s| s.resource == resource)
        .expect("the job has the stage")
}

/// Makes every `conversations.search` of the simulator fail (500), or none.
fn conversations_fail(sim: &SimHandle, fail: bool) {
    let endpoints = if fail {
        let spec = FaultSpec {
            error500: 1.0,
            ..Default::default()
        };
        [("conversations.search".to_owned(), spec)].into()
    } else {
        Default::default()
    };
    sim.set_faults(FaultConfig {
        default: Default::default(),
        endpoints,
    })
    .unwrap();
}

/// The issue's case: a FULL job reads contacts, fails in conversations; an hour later a contact
/// is edited in GHL and the job is resumed. It keeps the contacts it read an hour ago, so it
/// claims their age, not its end; a read with `maxAge: 60` does not take them for fresh.
#[tokio::test]
async fn a_resumed_job_claims_the_age_of_the_stages_it_kept() {
    for db in databases().await {
        let sim = spawn_sim(300).await;
        let app = spawn_app_with_sim_and(&db.url, &sim, |c| c.sync.failure_cooldown_secs = 0).await;
        let loc = sim.locations[0].id.clone();
        conversations_fail(&sim, true);
        full_sync_to_end(&app, &loc).await;
        let failed = app.store.last_snapshot(&loc).await.unwrap().unwrap();
        assert_eq!(failed.job.state, JobState::Failed, "{}", db.name);
        let contacts = stage(&failed, Resource::Contacts);
        assert_eq!(contacts.state, JobState::Succeeded);
        let read = to_ms(contacts.read_at.expect("a stage that ran has a read time"));
        assert!(
            read >= failed.job.mark,
            "read during the job: {read} {}",
            failed.job.mark
        );

        time_passes(&app.store, &loc, 3_600).await;
        let truth = sim.dump(&loc).unwrap();
        let edited = truth["contacts"][0]["id"].as_str().unwrap().to_owned();
        sim.update(&loc, "contacts", &edited, json!({ "firstName": "Edited" }))
            .unwrap();
        conversations_fail(&sim, false);
        sim.reset_counters();
        full_sync_to_end(&app, &loc).await;
        let resumed = app.store.last_snapshot(&loc).await.unwrap().unwrap();
        assert_eq!(
            (resumed.job.state, resumed.job.mark),
            (JobState::Succeeded, failed.job.mark - 3_600_000),
            "{}: resumed",
            db.name
        );
        assert_eq!(sim.requests("contacts.search"), 0, "contacts are kept");

        // The job claims when its oldest kept data was read: the contacts, an hour ago.
        let kept = to_ms(stage(&resumed, Resource::Contacts).read_at.unwrap());
        assert_eq!(kept, read - 3_600_000, "{}", db.name);
        let conversations = to_ms(stage(&resumed, Resource::Conversations).read_at.unwrap());
        assert!(conversations > kept + 3_500_000, "conversations read now");
        // The oldest read of all: the stages the failed job finished, the contacts among them.
        let oldest = resumed
            .stages
            .iter()
            .map(|s| to_ms(s.read_at.unwrap()))
            .min()
            .unwrap();
        assert!(oldest <= kept && oldest >= failed.job.mark - 3_600_000);
        let claimed = app.store.job_synced_at(&resumed.job.id).await.unwrap();
        assert_eq!(claimed, Some(oldest), "{}", db.name);
        let freshness = app
            .store
            .freshness(std::slice::from_ref(&loc))
            .await
            .unwrap();
        assert_eq!(freshness[&loc].synced_at, Some(oldest));
        // ... which is before the edit it does not hold.
        let edited_at = sim.dump(&loc).unwrap()["contacts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == edited.as_str())
            .and_then(|c| c["dateUpdated"].as_str())
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.timestamp_millis())
            .unwrap();
        assert!(kept < edited_at);
        let cached = contact::Entity::find_by_id(edited.clone())
            .one(app.store.connection())
            .await
            .unwrap()
            .unwrap();
        assert_ne!(cached.first_name.as_deref(), Some("Edited"));

        const STATUS: &str = r#"query($loc: ID!) { syncStatus(locationId: $loc) { freshness { syncedAt ageSeconds stale } } }"#;
        let status = app.graphql(STATUS, json!({ "loc": loc })).await;
        let freshness = &status["data"]["syncStatus"]["freshness"];
        assert!(
            freshness["ageSeconds"].as_i64().unwrap() >= 3_600,
            "{status}"
        );
        assert_eq!(freshness["stale"], true, "{status}");
        let synced_at =
            chrono::DateTime::parse_from_rfc3339(freshness["syncedAt"].as_str().unwrap())
                .unwrap()
                .timestamp_millis();
        assert_eq!(synced_at / 1000, oldest / 1000, "{status}");

        // A read that wants data at most a minute old waits for a refresh, which has the edit.
        const READ: &str = r#"query($loc: ID!) { contacts(locationId: $loc, first: 500, maxAge: 60) { nodes { id firstName } freshness { ageSeconds stale } } }"#;
        let page = app.graphql(READ, json!({ "loc": loc })).await;
        let contacts = &page["data"]["contacts"];
        assert!(
            contacts["freshness"]["ageSeconds"].as_i64().unwrap() < 60,
            "{page}"
        );
        assert_eq!(contacts["freshness"]["stale"], false, "{page}");
        let node = contacts["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["id"] == edited.as_str())
            .cloned();
        assert_eq!(node.unwrap()["firstName"], "Edited", "{page}");
    }
}

/// Creates, for each `(date, length)` of `runs`, `length` conversations whose `lastMessageDate`
/// is `date`, the i-th of a run added at `added(date, i)` (ms), spread over the location's
/// contacts. Returns the id of each run's first conversation.
fn create_runs(
    sim: &SimHandle,
    loc: &str,
    runs: &[(i64, usize)],
    added: impl Fn(i64, usize) -> i64,
) -> Vec<String> {
    let contacts: Vec<String> = sim.dump(loc).unwrap()["contacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect();
    let mut n = 0usize;
    let mut first_of_run = Vec::new();
    for &(date, length) in runs {
        for i in 0..length {
            let created = sim
                .create(
                    loc,
                    "conversations",
                    json!({
                        "contactId": contacts[n % contacts.len()],
                        "lastMessageBody": format!("Campaign {date}"),
                        "lastMessageDate": date,
                        "dateAdded": added(date, i),
                    }),
                )
                .unwrap();
            assert_eq!(created["lastMessageDate"], date);
            if i == 0 {
                first_of_run.push(created["id"].as_str().unwrap().to_owned());
            }
            n += 1;
        }
    }
    first_of_run
}

/// Runs of conversations with one `lastMessageDate` each, longer than GHL's page of 100 and cut
/// by page boundaries every way (a page all of one date, a run split between two pages, 60 that
/// share their `dateAdded` too): a FULL sync caches every one, and the list counts as complete
/// (the next FULL run reconciles a deletion).
#[tokio::test]
async fn hundreds_of_conversations_with_one_last_message_date_all_reach_the_cache() {
    for db in databases().await {
        let sim = spawn_sim(300).await;
        let loc = sim.locations[0].id.clone();
        // Newer than every seeded conversation, newest run first.
        let top: i64 = 4_000_000_000_000;
        let runs: [(i64, usize); 6] = [
            (top, 260),
            (top - 1_000, 150),
            (top - 2_000, 30),
            (top - 3_000, 120),
            (top - 4_000, 40),
            (top - 5_000, 80),
        ];
        // In the first run, 60 conversations were also added in the same millisecond.
        let first_of_run = create_runs(&sim, &loc, &runs, |date, i| {
            if date == top && i < 60 {
                date - 900_000
            } else {
                date - 1_000 * (i as i64 + 1)
            }
        });
        let app = spawn_app_with_sim(&db.url, &sim).await;
        full_sync_to_end(&app, &loc).await;
        let job = app.store.last_job(&loc).await.unwrap().unwrap();
        assert_eq!(job.state, JobState::Succeeded, "{}: {job:?}", db.name);
        assert_cache_equals_truth(&app, &sim, &loc).await;

        // Nothing was skipped: the next FULL run marks conversations GHL deleted as deleted.
        for id in &first_of_run {
            sim.delete(&loc, "conversations", id).unwrap();
        }
        full_sync_to_end(&app, &loc).await;
        assert_cache_equals_truth(&app, &sim, &loc).await;
        let gone = conversation::Entity::find()
            .filter(conversation::Column::Id.is_in(first_of_run.clone()))
            .filter(conversation::Column::Deleted.eq(true))
            .all(app.store.connection())
            .await
            .unwrap();
        assert_eq!(gone.len(), first_of_run.len(), "{}", db.name);
    }
}

/// Runs of one `lastMessageDate` where the two walks of a whole list meet (the middle of the
/// list, read newest first and oldest first at once): a run longer than a page, one that shares
/// its `dateAdded` too, and runs on the neighbouring dates. Every conversation reaches the cache
/// once: the stage counts exactly GHL's rows, none twice.
#[tokio::test]
async fn runs_of_one_last_message_date_where_the_two_walks_meet_all_reach_the_cache_once() {
    for db in databases().await {
        let sim = spawn_sim(400).await;
        let loc = sim.locations[0].id.clone();
        let mut dates: Vec<i64> = sim.dump(&loc).unwrap()["conversations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["lastMessageDate"].as_i64().unwrap())
            .collect();
        dates.sort_unstable();
        let middle = dates[dates.len() / 2];
        let runs: [(i64, usize); 4] = [
            (middle - 1, 120),
            (middle, 230),
            (middle + 1, 40),
            (middle + 2, 101),
        ];
        create_runs(&sim, &loc, &runs, |date, i| {
            if date == middle && i < 70 {
                middle - 500_000
            } else {
                middle - 1_000 * (i as i64 + 1)
            }
        });
        let app = spawn_app_with_sim(&db.url, &sim).await;
        full_sync_to_end(&app, &loc).await;
        let job = app.store.last_job(&loc).await.unwrap().unwrap();
        assert_eq!(job.state, JobState::Succeeded, "{}: {job:?}", db.name);
        assert_cache_equals_truth(&app, &sim, &loc).await;
        let stages = app
            .store
            .stages_of_jobs(std::slice::from_ref(&job.id))
            .await
            .unwrap();
        let conversations = stages
            .iter()
            .find(|s| s.resource == Resource::Conversations)
            .unwrap();
        let count = sim.dump(&loc).unwrap()["conversations"]
            .as_array()
            .unwrap()
            .len();
        assert_eq!(
            conversations.fetched as usize, count,
            "{}: every conversation delivered once: {conversations:?}",
            db.name
        );
    }
}

/// Asserts what a harness run must show: nothing lost or wrong, an honest `syncedAt`, and the
/// processes really killed mid-job.
fn assert_converged(name: &str, figures: &Figures, min_kills: usize, contacts: usize) {
    eprintln!("{name}: {figures:?}");
    assert_eq!(
        (figures.mismatches, figures.clean_mismatches),
        (0, 0),
        "{name}: rows not GHL as of the job's claims, or after the clean run: {:#?}",
        figures.mismatch_examples
    );
    assert!(figures.synced_at_honest, "{name}: {figures:?}");
    assert!(
        figures.kills >= min_kills,
        "{name}: the processes were killed mid-job: {figures:?}"
    );
    assert!(figures.rows_compared > contacts, "{name}: {figures:?}");
    assert!(figures.clean_rows > contacts, "{name}: {figures:?}");
    assert!(figures.calls > figures.clean_calls, "{name}: {figures:?}");
}

/// The short version of the harness (`ghl_gateway::bench::reliability`), in CI: four kills (at
/// least two of which must land mid-job: a resumed job with fewer pages left than its kill point,
/// or one that ends in the kill's last milliseconds, is not killed), 1,200 contacts, both
/// databases. The long one is `ghl-gateway bench --only reliability`.
#[tokio::test]
async fn syncs_killed_at_random_points_under_faults_lose_nothing() {
    for (i, db) in databases().await.into_iter().enumerate() {
        let plan = Plan {
            seed: 0x19 + i as u64,
            contacts: 1_200,
            kills: 4,
        };
        let figures = killed_syncs_converge(&db.url, &db.store, plan)
            .await
            .unwrap();
        assert_converged(db.name, &figures, 2, plan.contacts);
    }
}

/// The bench's plan as a test: 20 kills over 10,000 contacts (`-- --ignored`; minutes, not for
/// CI). `bench --only reliability` runs the same and writes its figures to BENCHMARKS.md.
#[tokio::test]
#[ignore]
async fn twenty_kills_over_ten_thousand_contacts_lose_nothing() {
    for (i, db) in databases().await.into_iter().enumerate() {
        let plan = ghl_gateway::bench::reliability::bench_plan(false, i);
        let figures = killed_syncs_converge(&db.url, &db.store, plan)
            .await
            .unwrap();
        assert_converged(db.name, &figures, 10, plan.contacts);
    }
}

/// A page of `n` contacts whose ids name the round that writes them.
fn round_page(round: usize, n: usize) -> Vec<Contact> {
    (0..n)
        .map(|i| Contact {
            id: format!("r{round}-c{i}"),
            location_id: "loc".into(),
            first_name: Some(format!("Round {round}")),
            email: Some(format!("c{i}@example.com")),
            tags: vec![format!("round{round}")],
            date_added: from_ms(1_700_000_000_000 + i as i64),
            date_updated: from_ms(1_700_000_000_000),
            ..Default::default()
        })
        .collect()
}

/// A kill while a page is being written (its runtime dropped at a seeded moment of the write)
/// leaves the page and its checkpoint both, or neither: never rows without the checkpoint that
/// covers them, nor a checkpoint past rows that are not there.
#[tokio::test]
async fn a_kill_during_a_page_write_leaves_the_page_and_its_checkpoint_or_neither() {
    const ROWS: usize = 2_000;
    for db in databases().await {
        let job = SyncJob {
            id: "job".into(),
            location_id: "loc".into(),
            mode: SyncMode::Full,
            state: JobState::Running,
            mark: 1,
            started_at: from_ms(1),
            finished_at: None,
            error: None,
        };
        db.store.insert_job(&job).await.unwrap();
        let checkpoint = |round: usize| SyncStage {
            state: JobState::Running,
            fetched: (round * ROWS) as i64,
            pages: round as i64,
            checkpoint: Some(format!("{{\"round\":{round}}}")),
            ..SyncStage::queued("job", Resource::Contacts, from_ms(1))
        };
        db.store.save_stage("loc", &checkpoint(0)).await.unwrap();
        // How long one page takes to write here, uninterrupted.
        let started = std::time::Instant::now();
        db.store
            .write_page("loc", 1, Page::Contacts(&round_page(0, ROWS)), None)
            .await
            .unwrap();
        let write = started.elapsed();
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let (mut whole, mut absent) = (0, 0);
        let mut at = 0;
        for round in 1..=8usize {
            // Kill points spread over the write, and one well after it.
            let fraction = if round == 8 {
                3.0
            } else {
                rng.random_range(0.05..1.0)
            };
            let delay = write.mul_f64(fraction);
            let url = db.url.clone();
            let page = round_page(round, ROWS);
            let stage = checkpoint(round);
            tokio::task::spawn_blocking(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(async move {
                    let store = Store::open(&DatabaseConfig::new(&url)).await.unwrap();
                    let writing = tokio::spawn(async move {
                        store
                            .write_page("loc", 1, Page::Contacts(&page), Some(&stage))
                            .await
                    });
                    tokio::time::sleep(delay).await;
                    drop(writing);
                });
                runtime.shutdown_background();
            })
            .await
            .unwrap();
            // The killed store's connections outlive its runtime (SQLite's worker thread, a
            // PostgreSQL backend with a COMMIT in its socket), so a COMMIT sent before the kill
            // may still land. It holds the stage row (and, on SQLite, the write lock) until it
            // does; a write to that row waits for it, after which nothing killed can commit.
            db.store
                .connection()
                .execute_unprepared(
                    "UPDATE sync_stages SET updated_at = updated_at WHERE job_id = 'job'",
                )
                .await
                .unwrap();
            // What the next process finds.
            let rows = contact::Entity::find()
                .filter(contact::Column::Id.starts_with(format!("r{round}-")))
                .all(db.store.connection())
                .await
                .unwrap()
                .len();
            let stages = db.store.stages_of_jobs(&["job".to_owned()]).await.unwrap();
            let saved = stages[0].checkpoint.clone();
            if saved == checkpoint(round).checkpoint {
                assert_eq!(
                    rows, ROWS,
                    "{}: round {round}: the checkpoint without its page",
                    db.name
                );
                assert_eq!(stages[0].fetched, (round * ROWS) as i64);
                whole += 1;
                at = round;
            } else {
                assert_eq!(
                    saved,
                    checkpoint(at).checkpoint,
                    "{}: round {round}",
                    db.name
                );
                assert_eq!(
                    rows, 0,
                    "{}: round {round}: rows without their checkpoint",
                    db.name
                );
                absent += 1;
            }
        }
        eprintln!(
            "{}: page write of {write:?}: {whole} whole, {absent} absent",
            db.name
        );
        assert_eq!(whole + absent, 8);
        assert!(
            whole >= 1,
            "the write left alone for three times its length commits"
        );
    }
}
