//! The README's promises about reads, each as a test that counts (GHL calls through the
//! simulator's counters, jobs in the store), never times: reads never wait for GHL, concurrent
//! stale reads start one job and say so (`syncing: true`), `--auto-refresh false` is cache only,
//! and a FULL sync never marks deleted a row it skipped because it did not parse.

use std::sync::Arc;
use std::time::Duration;

use ghl_gateway::domain::JobState;
use ghl_gateway::store::entities::contact;
use ghl_gateway::sync::{SyncConfig, SyncEngine, SyncMode};
use ghl_gateway::upstream::{Client, Credential, UpstreamConfig};
use sea_orm::EntityTrait;
use serde_json::{Value, json};

use crate::helpers::*;

async fn jobs(app: &TestApp, loc: &str) -> usize {
    app.store.jobs(loc, 100).await.unwrap().len()
}

/// A synced location of 40 contacts behind `app`.
async fn synced(db: &TestDb, sim: &ghl_gateway::sim::SimHandle, auto_refresh: bool) -> TestApp {
    let app = spawn_app_with_sim_and(&db.url, sim, |c| c.graphql.auto_refresh = auto_refresh).await;
    let loc = &sim.locations[0].id;
    full_sync_to_end(&app, loc).await;
    app
}

#[tokio::test]
async fn reads_never_wait_for_ghl() {
    for db in databases().await {
        let sim = spawn_sim(40).await;
        let loc = sim.locations[0].id.clone();
        let app = synced(&db, &sim, true).await;

        // Fresh data: reads cost GHL nothing, `maxAge` within the data's age included.
        sim.reset_counters();
        for i in 0..20 {
            let page = read_contacts(&app, &loc, (i % 2 == 0).then_some(3_600), 40).await;
            assert_eq!(
                page["freshness"],
                json!({ "stale": false, "syncing": false })
            );
        }
        assert_eq!(sim.total_requests(), 0, "{}", db.name);
        assert_eq!(jobs(&app, &loc).await, 1);

        // Stale data (older than the 300 s max age) behind a GHL that takes 5 s per call: 50
        // concurrent reads answer from the cache while the one job they started is still on
        // its first calls (had any read waited for GHL, the job would be over).
        time_passes(&app.store, &loc, 400).await;
        sim.set_latency(5_000, 0);
        let mut events = app.sync.subscribe();
        let app = Arc::new(app);
        let reads: Vec<_> = (0..50)
            .map(|_| {
                let (app, loc) = (app.clone(), loc.clone());
                tokio::spawn(async move { read_contacts(&app, &loc, None, 40).await })
            })
            .collect();
        for page in reads {
            let page = page.await.unwrap();
            assert_eq!(
                page["freshness"],
                json!({ "stale": true, "syncing": true }),
                "{}: a read that starts or joins a refresh says so",
                db.name
            );
        }
        // The job's first event comes once its row is written.
        let event = events.recv().await.unwrap();
        assert_eq!(event.job.job.state, JobState::Running);
        assert!(app.sync.running(&loc).is_some(), "the job still runs");
        assert_eq!(
            jobs(&app, &loc).await,
            2,
            "{}: one job for 50 reads",
            db.name
        );
    }
}

#[tokio::test]
async fn auto_refresh_off_serves_the_cache_and_max_age_still_refreshes() {
    for db in databases().await {
        let sim = spawn_sim(40).await;
        let loc = sim.locations[0].id.clone();
        let app = synced(&db, &sim, false).await;
        time_passes(&app.store, &loc, 400).await;
        sim.reset_counters();
        for _ in 0..5 {
            let page = read_contacts(&app, &loc, None, 40).await;
            assert_eq!(
                page["freshness"],
                json!({ "stale": true, "syncing": false })
            );
        }
        assert_eq!(
            sim.total_requests(),
            0,
            "{}: a stale read starts nothing",
            db.name
        );
        assert_eq!(jobs(&app, &loc).await, 1);

        // `maxAge: 0` asks for fresh data all the same, and waits for it.
        let page = read_contacts(&app, &loc, Some(0), 40).await;
        assert_eq!(
            page["freshness"],
            json!({ "stale": false, "syncing": false })
        );
        assert!(sim.total_requests() > 0);
        assert_eq!(jobs(&app, &loc).await, 2, "{}", db.name);
    }
}

mod unparsable {
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    use super::*;

    /// A GHL whose contacts search answers `rows` (and nothing else: the other stages fail,
    /// which leaves the contacts stage's reconciliation on its own).
    async fn ghl_with_contacts(rows: Vec<Value>) -> MockServer {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/contacts/search"))
            .respond_with(
                ResponseTemplate::new(200)
                    .set_body_json(json!({ "contacts": rows, "total": rows.len() })),
            )
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path("/locations/loc"))
            .respond_with(
                ResponseTemplate::new(200)
                    .set_body_json(json!({ "location": { "id": "loc", "name": "L" } })),
            )
            .mount(&server)
            .await;
        server
    }

    fn good(id: &str) -> Value {
        json!({ "id": id, "locationId": "loc", "dateAdded": "2024-01-01T00:00:00Z",
                "dateUpdated": "2024-01-02T00:00:00Z", "tags": [], "searchAfter": [1, id] })
    }

    async fn full_sync(store: &ghl_gateway::store::Store, server: &MockServer) {
        let mut config = UpstreamConfig::new(server.uri());
        config.backoff_ms = 5;
        config.max_retries = 0;
        // The engine finds a location's credential in the store.
        let credentials = ghl_gateway::app::credentials::StoreCredentials::new(store.clone(), None);
        let client = Client::new(config, Arc::new(credentials)).unwrap();
        client
            .set_credential(
                "loc",
                Credential::PrivateIntegration {
                    token: "pit".into(),
                },
            )
            .await
            .unwrap();
        let config = SyncConfig {
            resume_window_secs: 0,
            failure_cooldown_secs: 0,
            ..SyncConfig::default()
        };
        let engine = SyncEngine::start(store.clone(), client, config)
            .await
            .unwrap();
        engine.refresh("loc", SyncMode::Full).await.unwrap();
        assert!(engine.wait_idle("loc", Duration::from_secs(60)).await);
        let job = store.last_snapshot("loc").await.unwrap().unwrap();
        let contacts = job
            .stages
            .iter()
            .find(|s| s.resource == ghl_gateway::domain::Resource::Contacts)
            .unwrap();
        assert_eq!(contacts.state, JobState::Succeeded, "{job:?}");
        engine.shutdown().await;
    }

    async fn deleted(store: &ghl_gateway::store::Store, id: &str) -> bool {
        contact::Entity::find_by_id(id.to_owned())
            .one(store.connection())
            .await
            .unwrap()
            .unwrap()
            .deleted
    }

    #[tokio::test]
    async fn a_full_sync_never_deletes_a_row_it_skipped_because_it_did_not_parse() {
        for db in databases().await {
            load_fixture(&db.store, "loc", 3).await;
            let [c0, c1, c2] = ["loc-c000000", "loc-c000001", "loc-c000002"];
            // GHL still has c1, in a form that does not parse; c2 is gone.
            let bad = json!({ "id": c1, "tags": "x", "customFields": "nope" });
            let server = ghl_with_contacts(vec![good(c0), bad]).await;
            full_sync(&db.store, &server).await;
            for id in [c0, c1, c2] {
                assert!(!deleted(&db.store, id).await, "{}: {id}", db.name);
            }

            // Once every row parses, the FULL run reconciles: c2 is marked deleted.
            let server = ghl_with_contacts(vec![good(c0), good(c1)]).await;
            full_sync(&db.store, &server).await;
            assert!(!deleted(&db.store, c1).await);
            assert!(deleted(&db.store, c2).await, "{}", db.name);
        }
    }
}
