//! What the sync relies on beyond paging: the search index lags writes (`GET` by id does not),
//! and the legacy contact list's `startAfter` without `startAfterId` answers the first page again.

use std::time::{Duration, Instant};

use ghl_gateway::sim::SimArgs;
use serde_json::{Value, json};

use crate::helpers::{client, get, post, spawn};

const LAG: Duration = Duration::from_secs(3);

/// An admin write to the simulator (`method` on `/_sim/locations/{loc}/{path}`).
async fn admin(
    sim: &ghl_gateway::sim::SimHandle,
    method: reqwest::Method,
    path: String,
    body: Value,
) -> Value {
    client()
        .request(method, format!("{}/_sim/locations/{path}", sim.base_url))
        .json(&body)
        .send()
        .await
        .expect("the admin API answers")
        .error_for_status()
        .expect("the admin write succeeds")
        .json()
        .await
        .expect("JSON")
}

/// The ids and company names `POST /contacts/search` returns for the ids in `ids`.
async fn searched(
    sim: &ghl_gateway::sim::SimHandle,
    loc: &str,
    token: &str,
    ids: &[&str],
) -> Vec<(String, Value)> {
    let filters: Vec<Value> = ids
        .iter()
        .map(|id| json!({"field": "id", "operator": "eq", "value": id}))
        .collect();
    let (status, body) = post(
        sim,
        "/contacts/search",
        token,
        json!({"locationId": loc, "pageLimit": 100, "filters": [{"group": "OR", "filters": filters}]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let mut rows: Vec<(String, Value)> = body["contacts"]
        .as_array()
        .expect("contacts")
        .iter()
        .map(|c| {
            (
                c["id"].as_str().expect("id").to_owned(),
                c["companyName"].clone(),
            )
        })
        .collect();
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    rows
}

#[tokio::test]
async fn searches_see_a_write_only_after_the_index_lag_and_get_by_id_at_once() {
    let sim = spawn(SimArgs {
        contacts: 50,
        index_lag_ms: LAG.as_millis() as u64,
        ..SimArgs::default()
    })
    .await;
    let loc = &sim.locations[0];
    let (_, page) = post(
        &sim,
        "/contacts/search",
        &loc.pit_token,
        json!({"locationId": loc.id, "pageLimit": 2}),
    )
    .await;
    let seeded: Vec<String> = page["contacts"]
        .as_array()
        .expect("contacts")
        .iter()
        .map(|c| c["id"].as_str().expect("id").to_owned())
        .collect();
    let (changed, deleted) = (seeded[0].as_str(), seeded[1].as_str());
    let (_, before) = get(&sim, &format!("/contacts/{changed}"), &loc.pit_token).await;
    let old_company = before["contact"]["companyName"].clone();
    let (_, before) = get(&sim, &format!("/contacts/{deleted}"), &loc.pit_token).await;
    let deleted_company = before["contact"]["companyName"].clone();

    let written = Instant::now();
    let created = admin(
        &sim,
        reqwest::Method::POST,
        format!("{}/contacts", loc.id),
        json!({"firstName": "Lagging", "companyName": "New"}),
    )
    .await;
    let created = created["id"].as_str().expect("created id").to_owned();
    admin(
        &sim,
        reqwest::Method::PATCH,
        format!("{}/contacts/{changed}", loc.id),
        json!({"companyName": "Changed"}),
    )
    .await;
    admin(
        &sim,
        reqwest::Method::DELETE,
        format!("{}/contacts/{deleted}", loc.id),
        json!({}),
    )
    .await;

    // GET by id: at once.
    let (status, got) = get(&sim, &format!("/contacts/{created}"), &loc.pit_token).await;
    assert_eq!(status, 200, "{got}");
    let (_, got) = get(&sim, &format!("/contacts/{changed}"), &loc.pit_token).await;
    assert_eq!(got["contact"]["companyName"], "Changed");
    let (status, _) = get(&sim, &format!("/contacts/{deleted}"), &loc.pit_token).await;
    assert_eq!(status, 400, "a deleted contact is gone by id at once");

    // The search: the index as it was before the writes.
    let ids = [created.as_str(), changed, deleted];
    let inside = searched(&sim, &loc.id, &loc.pit_token, &ids).await;
    assert!(
        written.elapsed() < LAG,
        "the machine stalled past the lag; nothing to assert"
    );
    let mut expected = vec![
        (changed.to_owned(), old_company.clone()),
        (deleted.to_owned(), deleted_company),
    ];
    expected.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(inside, expected, "inside the lag: old versions, no new one");

    // After the lag: the index holds every write.
    tokio::time::sleep(LAG.saturating_sub(written.elapsed()) + Duration::from_millis(100)).await;
    let after = searched(&sim, &loc.id, &loc.pit_token, &ids).await;
    let mut expected = vec![
        (created.clone(), json!("New")),
        (changed.to_owned(), json!("Changed")),
    ];
    expected.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(after, expected);
    // The truth (admin dump) never lagged.
    let truth = crate::helpers::truth_ids(&sim, &loc.id, "contacts");
    assert!(truth.contains(&created) && !truth.contains(deleted));
}

#[tokio::test]
async fn a_conversation_moved_by_a_message_keeps_its_place_in_the_search_inside_the_lag() {
    let sim = spawn(SimArgs {
        contacts: 50,
        index_lag_ms: LAG.as_millis() as u64,
        ..SimArgs::default()
    })
    .await;
    let loc = &sim.locations[0];
    let path = format!("/conversations/search?locationId={}&limit=100", loc.id);
    let (_, first) = get(&sim, &path, &loc.pit_token).await;
    let oldest = first["conversations"]
        .as_array()
        .expect("conversations")
        .last()
        .expect("a conversation")
        .clone();
    let id = oldest["id"].as_str().expect("id");
    let written = Instant::now();
    admin(
        &sim,
        reqwest::Method::PATCH,
        format!("{}/conversations/{id}", loc.id),
        json!({"lastMessageBody": "a new message"}),
    )
    .await;
    let (_, inside) = get(&sim, &path, &loc.pit_token).await;
    assert!(written.elapsed() < LAG, "the machine stalled past the lag");
    let newest = &inside["conversations"][0];
    assert_ne!(newest["id"], oldest["id"], "not moved to the top yet");
    assert_eq!(inside["conversations"], first["conversations"]);
    tokio::time::sleep(LAG.saturating_sub(written.elapsed()) + Duration::from_millis(100)).await;
    let (_, after) = get(&sim, &path, &loc.pit_token).await;
    assert_eq!(after["conversations"][0]["id"], oldest["id"]);
    assert_eq!(
        after["conversations"][0]["lastMessageBody"],
        "a new message"
    );
}

#[tokio::test]
async fn the_legacy_contact_list_is_newest_first_and_start_after_alone_repeats_the_first_page() {
    let sim = spawn(SimArgs {
        contacts: 230,
        ..SimArgs::default()
    })
    .await;
    let loc = &sim.locations[0];
    let path = format!("/contacts/?locationId={}&limit=100", loc.id);
    let (status, first) = get(&sim, &path, &loc.pit_token).await;
    assert_eq!(status, 200, "{first}");
    let added: Vec<String> = first["contacts"]
        .as_array()
        .expect("contacts")
        .iter()
        .map(|c| c["dateAdded"].as_str().expect("dateAdded").to_owned())
        .collect();
    let mut newest_first = added.clone();
    newest_first.sort_by(|a, b| b.cmp(a));
    assert_eq!(added, newest_first, "newest first");
    let meta = &first["meta"];
    // `startAfter` alone: the first page again, which a client that echoes only it loops on.
    let (_, again) = get(
        &sim,
        &format!("{path}&startAfter={}", meta["startAfter"]),
        &loc.pit_token,
    )
    .await;
    assert_eq!(again["contacts"], first["contacts"]);
    // With `startAfterId` too: the next page, older than the first.
    let (_, next) = get(
        &sim,
        &format!(
            "{path}&startAfter={}&startAfterId={}",
            meta["startAfter"],
            meta["startAfterId"].as_str().expect("startAfterId")
        ),
        &loc.pit_token,
    )
    .await;
    let next_first = next["contacts"][0]["dateAdded"].as_str().expect("a row");
    assert!(next_first <= added.last().expect("a row").as_str());
    assert_ne!(next["contacts"][0]["id"], first["contacts"][0]["id"]);
}
