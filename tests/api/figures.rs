//! The README's figures, asserted exactly as the README states them: the SQL statements of its
//! dashboard query through the whole gateway (HTTP, a client API key, the read policy, the
//! response cache missing), counted on the app's own store; and FACTS.md §11's minimum number of
//! GHL calls for a FULL sync of 10,000 contacts, made by the sync engine itself.

use reqwest::header::{ACCEPT, CONTENT_TYPE};
use serde_json::{Value, json};

use crate::helpers::*;

/// The `query Dashboard` block of the README, as a reader copies it.
fn readme_dashboard_query() -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("the README is readable");
    let start = readme
        .find("```graphql\nquery Dashboard")
        .expect("the README shows the dashboard query")
        + "```graphql\n".len();
    let len = readme[start..].find("```").expect("the block ends");
    readme[start..start + len].to_owned()
}

#[tokio::test]
async fn the_readme_dashboard_query_costs_the_statements_the_readme_states() {
    let query = readme_dashboard_query();
    assert!(query.contains("first: 50"), "{query}");
    for db in databases().await {
        let app = spawn_app_with(&db.url, |c| c.http.auth.allow_anonymous = false).await;
        load_fixture(&app.store, "loc", 2_000).await;
        // Synced a minute ago: fresh, so the read policy serves without starting a refresh.
        let now = chrono::Utc::now();
        app.store
            .insert_job(&ghl_gateway::domain::SyncJob {
                id: uuid::Uuid::new_v4().to_string(),
                location_id: "loc".into(),
                mode: ghl_gateway::domain::SyncMode::Full,
                state: ghl_gateway::domain::JobState::Succeeded,
                // A job's mark is the start of its first attempt: its data was read after it.
                mark: (now - chrono::Duration::seconds(65)).timestamp_millis(),
                started_at: now - chrono::Duration::seconds(65),
                finished_at: Some(now - chrono::Duration::seconds(60)),
                error: None,
            })
            .await
            .unwrap();
        let new = ghl_gateway::auth::generate_key(None, &["loc".to_owned()], 1);
        let (id, key) = (new.row.id.clone(), new.key);
        app.store.insert_api_key(new.row).await.unwrap();

        // Returns `x-cache` and whether the page holds an opportunity.
        let ask = |first: usize| {
            let body = json!({
                "query": query.replace("first: 50", &format!("first: {first}")),
                "variables": { "loc": "loc" },
            });
            let request = app
                .client
                .post(format!("{}/graphql", app.base))
                .bearer_auth(&key)
                .header(CONTENT_TYPE, "application/json")
                .header(ACCEPT, "application/json")
                .body(body.to_string());
            async move {
                let response = request.send().await.unwrap();
                let cache = response.headers()["x-cache"].to_str().unwrap().to_owned();
                let json: Value = response.json().await.unwrap();
                assert!(json.get("errors").is_none(), "{json}");
                let nodes = json["data"]["contacts"]["nodes"].as_array().unwrap();
                assert_eq!(nodes.len(), first);
                assert_eq!(json["data"]["contacts"]["freshness"]["stale"], false);
                let opportunities = nodes
                    .iter()
                    .any(|n| !n["opportunities"].as_array().unwrap().is_empty());
                (cache, opportunities)
            }
        };
        // A first request, so that the key's first use is written (once, off the request path)
        // before anything is counted; no event says when it lands.
        ask(1).await;
        wait_for_key_use(&app.store, &id).await;

        // Each page size is another document: a response-cache miss, a full execution.
        for first in [10, 50, 100, 500] {
            let before = app.store.statements();
            let memo_before = app.store.count_memo_hits();
            let (cache, opportunities) = ask(first).await;
            assert_eq!(cache, "miss");
            // A `totalCount` from the memo (same location and filter within a second) stands
            // for its statement.
            let count =
                app.store.statements() - before + (app.store.count_memo_hits() - memo_before);
            // 1 for the API key, then 12 for the query: the read policy's freshness row (handed
            // to the page's `freshness`), the location, the page, its count, and one batched
            // statement per relation: tasks, conversations, opportunities, custom values, users,
            // custom fields, pipelines, stages. A relation with nothing to load on the page costs
            // nothing: the newest 10 contacts have no opportunity, so no pipeline or stage.
            let expected = if opportunities { 1 + 12 } else { 1 + 10 };
            assert_eq!(count, expected, "{} at first: {first}", db.name);
            assert!(opportunities || first == 10);
        }
        app.shutdown().await;
    }
}

#[tokio::test]
async fn a_full_sync_of_10k_contacts_makes_facts_minimum_calls() {
    for db in databases().await {
        // GHL's shapes and paging; a burst limit the sync never reaches, so the test is quick.
        let sim = spawn_sim_with(ghl_gateway::sim::SimArgs {
            contacts: 10_000,
            locations: 1,
            burst_limit: 1_000_000,
            ..Default::default()
        })
        .await;
        let app = spawn_app_with_sim(&db.url, &sim).await;
        let loc = sim.locations[0].id.clone();
        sim.reset_counters();
        app.sync
            .refresh(&loc, ghl_gateway::sync::SyncMode::Full)
            .await
            .unwrap();
        assert!(
            app.sync
                .wait_idle(&loc, std::time::Duration::from_secs(600))
                .await
        );
        let truth = sim.dump(&loc).unwrap();
        let count = |key: &str| truth[key].as_array().unwrap().len() as u64;
        let minimum = ghl_gateway::bench::sync::minimum_calls(
            count("contacts"),
            count("tasks"),
            count("conversations"),
            count("opportunities"),
        );
        // + 1: a location's first FULL sync also reads its details (`GET /locations/{id}`),
        // which §11 does not count (the README says so); and conversations page with one row
        // of overlap, so that a run of equal dates is never cut (the README says so too).
        let conversations = count("conversations") as usize;
        let overlap = crate::sync::conversation_pages(conversations) - conversations.div_ceil(100);
        assert_eq!(
            sim.total_requests(),
            minimum + 1 + overlap as u64,
            "{}: calls of a FULL sync of {} contacts",
            db.name,
            count("contacts")
        );
        assert_eq!(sim.count("contacts.search", "429"), 0);
    }
}
