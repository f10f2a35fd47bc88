//! Walking each cursor style returns every record exactly once, also while records change; the
//! three searches follow one window rule.

use std::collections::HashSet;

use ghl_gateway::sim::SimHandle;
use serde_json::{Value, json};

use crate::helpers::*;

#[tokio::test]
async fn contacts_search_page_style_returns_each_contact_once() {
    let sim = small().await;
    let loc = &sim.locations[0];
    let mut seen = HashSet::new();
    for page in 1.. {
        let (st, b) = post(
            &sim,
            "/contacts/search",
            &loc.pit_token,
            json!({"locationId": loc.id, "pageLimit": 50, "page": page}),
        )
        .await;
        assert_eq!(st, 200, "{b}");
        assert_eq!(b["total"], 230);
        let rows = b["contacts"].as_array().expect("contacts").clone();
        add_unique(&mut seen, &rows, "id");
        // A page that changes records it has not reached yet must not disturb the walk.
        if page == 2 {
            let ids: Vec<String> = truth_ids(&sim, &loc.id, "contacts")
                .into_iter()
                .take(10)
                .collect();
            for id in ids {
                sim.update(&loc.id, "contacts", &id, json!({"firstName": "Changed"}))
                    .expect("update");
            }
        }
        if rows.len() < 50 {
            break;
        }
    }
    assert_eq!(seen, truth_ids(&sim, &loc.id, "contacts"));
}

#[tokio::test]
async fn contacts_search_after_survives_updates_creates_and_deletes() {
    let sim = small().await;
    let loc = &sim.locations[0];
    let before = truth_ids(&sim, &loc.id, "contacts");
    let mut seen = HashSet::new();
    let mut deleted = HashSet::new();
    let mut after: Option<Value> = None;
    let mut pages = 0;
    loop {
        let mut body = json!({"locationId": loc.id, "pageLimit": 40});
        if let Some(a) = &after {
            body["searchAfter"] = a.clone();
        }
        let (st, b) = post(&sim, "/contacts/search", &loc.pit_token, body).await;
        assert_eq!(st, 200, "{b}");
        let rows = b["contacts"].as_array().expect("contacts").clone();
        add_unique(&mut seen, &rows, "id");
        pages += 1;
        // Between pages: update seen and unseen contacts, create one, delete an unseen one.
        let unseen: Vec<&String> = before
            .iter()
            .filter(|id| !seen.contains(*id) && !deleted.contains(*id))
            .collect();
        if let Some(id) = unseen.first() {
            sim.update(&loc.id, "contacts", id, json!({"tags": ["moved"]}))
                .expect("update");
        }
        if let Some(id) = unseen.get(1) {
            sim.delete(&loc.id, "contacts", id).expect("delete");
            deleted.insert(id.to_string());
        }
        sim.create(&loc.id, "contacts", json!({"firstName": "New"}))
            .expect("create");
        if rows.len() < 40 {
            break;
        }
        after = Some(rows.last().expect("row")["searchAfter"].clone());
    }
    assert!(pages >= 5);
    let expected: HashSet<String> = before.difference(&deleted).cloned().collect();
    assert!(expected.is_subset(&seen), "every surviving contact is seen");
    assert!(
        seen.iter().all(|id| before.contains(id)),
        "contacts created during the walk sort before the cursor"
    );
}

#[tokio::test]
async fn incremental_contacts_by_date_updated_range() {
    let sim = small().await;
    let loc = &sim.locations[0];
    let (_, b) = post(&sim, "/contacts/search", &loc.pit_token, json!({"locationId": loc.id, "pageLimit": 1, "sort": [{"field": "dateUpdated", "direction": "desc"}]})).await;
    let watermark = b["contacts"][0]["dateUpdated"]
        .as_str()
        .expect("iso")
        .to_string();
    let ids: Vec<String> = truth_ids(&sim, &loc.id, "contacts")
        .into_iter()
        .take(3)
        .collect();
    for id in &ids {
        sim.update(&loc.id, "contacts", id, json!({"city": "Elsewhere"}))
            .expect("update");
    }
    let mut seen = HashSet::new();
    let mut after: Option<Value> = None;
    loop {
        let mut body = json!({"locationId": loc.id, "pageLimit": 2,
            "filters": [{"field": "dateUpdated", "operator": "range", "value": {"gt": watermark}}],
            "sort": [{"field": "dateUpdated", "direction": "asc"}]});
        if let Some(a) = &after {
            body["searchAfter"] = a.clone();
        }
        let (st, b) = post(&sim, "/contacts/search", &loc.pit_token, body).await;
        assert_eq!(st, 200, "{b}");
        assert_eq!(b["total"], 3);
        let rows = b["contacts"].as_array().expect("rows").clone();
        add_unique(&mut seen, &rows, "id");
        if rows.len() < 2 {
            break;
        }
        after = Some(rows.last().expect("row")["searchAfter"].clone());
    }
    assert_eq!(seen, ids.into_iter().collect());
}

#[tokio::test]
async fn legacy_contacts_start_after_and_next_page_url() {
    let sim = small().await;
    let loc = &sim.locations[0];
    let mut seen = HashSet::new();
    let mut path = format!("/contacts/?locationId={}&limit=100", loc.id);
    loop {
        let (st, b) = get(&sim, &path, &loc.pit_token).await;
        assert_eq!(st, 200, "{b}");
        add_unique(&mut seen, b["contacts"].as_array().expect("rows"), "id");
        let meta = &b["meta"];
        assert_eq!(meta["total"], 230);
        match meta["nextPageUrl"].as_str() {
            None => break,
            Some(_) => {
                path = format!(
                    "/contacts/?locationId={}&limit=100&startAfter={}&startAfterId={}",
                    loc.id,
                    meta["startAfter"],
                    meta["startAfterId"].as_str().expect("id")
                );
            }
        }
    }
    assert_eq!(seen, truth_ids(&sim, &loc.id, "contacts"));
    let (st, b) = get(
        &sim,
        &format!("/contacts/?locationId={}&limit=101", loc.id),
        &loc.pit_token,
    )
    .await;
    assert_eq!(st, 422, "limit is capped at 100: {b}");
}

#[tokio::test]
async fn tasks_search_skip_and_search_after() {
    let sim = small().await;
    let loc = &sim.locations[0];
    let truth = truth_ids(&sim, &loc.id, "tasks");
    assert!(truth.len() > 200);
    let path = format!("/locations/{}/tasks/search", loc.id);
    let mut by_skip = HashSet::new();
    for skip in (0..).step_by(100) {
        let (st, b) = post(
            &sim,
            &path,
            &loc.pit_token,
            json!({"limit": 100, "skip": skip}),
        )
        .await;
        assert_eq!(st, 201, "{b}");
        assert!(b.get("total").is_none(), "task search has no total");
        let rows = b["tasks"].as_array().expect("tasks").clone();
        add_unique(&mut by_skip, &rows, "_id");
        if rows.len() < 100 {
            break;
        }
    }
    assert_eq!(by_skip, truth);
    let mut by_cursor = HashSet::new();
    let mut after: Option<Value> = None;
    loop {
        let mut body = json!({"limit": 100});
        if let Some(a) = &after {
            body["searchAfter"] = a.clone();
        }
        let (st, b) = post(&sim, &path, &loc.pit_token, body).await;
        assert_eq!(st, 201);
        let rows = b["tasks"].as_array().expect("tasks").clone();
        add_unique(&mut by_cursor, &rows, "_id");
        // Completing a task (no move of dueDate) must not disturb the walk.
        if let Some(r) = rows.first() {
            sim.update(
                &loc.id,
                "tasks",
                r["_id"].as_str().expect("id"),
                json!({"completed": true}),
            )
            .expect("update");
        }
        if rows.len() < 100 {
            break;
        }
        after = Some(rows.last().expect("row")["searchAfter"].clone());
    }
    assert_eq!(by_cursor, truth);
}

#[tokio::test]
async fn conversations_start_after_date_both_directions() {
    let sim = small().await;
    let loc = &sim.locations[0];
    let truth = truth_ids(&sim, &loc.id, "conversations");
    assert!(
        !truth.is_empty() && truth.len() < 230,
        "some contacts have no conversation"
    );
    for sort in ["desc", "asc"] {
        let mut seen = HashSet::new();
        let mut after: Option<i64> = None;
        loop {
            let mut path = format!(
                "/conversations/search?locationId={}&limit=30&sort={sort}&sortBy=last_message_date",
                loc.id
            );
            if let Some(a) = after {
                path.push_str(&format!("&startAfterDate={a}"));
            }
            let r = call(
                &sim,
                reqwest::Method::GET,
                &path,
                &loc.pit_token,
                "2021-04-15",
                None,
            )
            .await;
            assert_eq!(r.status(), 200);
            let b: Value = r.json().await.expect("json");
            assert_eq!(b["total"].as_u64(), Some(truth.len() as u64));
            let rows = b["conversations"].as_array().expect("rows").clone();
            add_unique(&mut seen, &rows, "id");
            // Unread and star changes do not move lastMessageDate.
            if let Some(r) = rows.first() {
                sim.update(
                    &loc.id,
                    "conversations",
                    r["id"].as_str().expect("id"),
                    json!({"unreadCount": 3, "starred": true}),
                )
                .expect("update");
            }
            if rows.len() < 30 {
                break;
            }
            after = rows.last().expect("row")["lastMessageDate"].as_i64();
        }
        assert_eq!(seen, truth, "sort {sort}");
    }
}

#[tokio::test]
async fn opportunities_post_page_and_search_after_and_get_start_after() {
    let sim = small().await;
    let loc = &sim.locations[0];
    let truth = truth_ids(&sim, &loc.id, "opportunities");
    assert!(truth.len() > 40);
    // POST, page style.
    let mut seen = HashSet::new();
    for page in 1.. {
        let (st, b) = post(
            &sim,
            "/opportunities/search",
            &loc.pit_token,
            json!({"locationId": loc.id, "limit": 20, "page": page}),
        )
        .await;
        assert_eq!(st, 201, "{b}");
        let rows = b["opportunities"].as_array().expect("rows").clone();
        add_unique(&mut seen, &rows, "id");
        if let Some(r) = rows.last() {
            sim.update(
                &loc.id,
                "opportunities",
                r["id"].as_str().expect("id"),
                json!({"status": "won"}),
            )
            .expect("update");
        }
        if rows.len() < 20 {
            break;
        }
    }
    assert_eq!(seen, truth);
    // POST, searchAfter style.
    let mut seen = HashSet::new();
    let mut after: Option<Value> = None;
    loop {
        let mut body = json!({"locationId": loc.id, "limit": 25});
        if let Some(a) = &after {
            body["searchAfter"] = a.clone();
        }
        let (st, b) = post(&sim, "/opportunities/search", &loc.pit_token, body).await;
        assert_eq!(st, 201);
        let rows = b["opportunities"].as_array().expect("rows").clone();
        add_unique(&mut seen, &rows, "id");
        if rows.len() < 25 {
            break;
        }
        after = Some(rows.last().expect("row")["searchAfter"].clone());
    }
    assert_eq!(seen, truth);
    // GET, startAfter/startAfterId.
    let mut seen = HashSet::new();
    let mut path = format!("/opportunities/search?location_id={}&limit=30", loc.id);
    loop {
        let (st, b) = get(&sim, &path, &loc.pit_token).await;
        assert_eq!(st, 200, "{b}");
        let rows = b["opportunities"].as_array().expect("rows").clone();
        add_unique(&mut seen, &rows, "id");
        if b["meta"]["nextPageUrl"].is_null() {
            break;
        }
        path = format!(
            "/opportunities/search?location_id={}&limit=30&startAfter={}&startAfterId={}",
            loc.id,
            b["meta"]["startAfter"],
            b["meta"]["startAfterId"].as_str().expect("id")
        );
    }
    assert_eq!(seen, truth);
    // The page-size key is `limit`: pageLimit is refused like GHL does.
    let (st, b) = post(
        &sim,
        "/opportunities/search",
        &loc.pit_token,
        json!({"locationId": loc.id, "pageLimit": 20}),
    )
    .await;
    assert_eq!(st, 422);
    assert_eq!(b["message"], json!(["property pageLimit should not exist"]));
}

#[tokio::test]
async fn ten_thousand_contacts_walk_completely() {
    let sim = spawn(ghl_gateway::sim::SimArgs {
        contacts: 10_000,
        ..Default::default()
    })
    .await;
    let loc = &sim.locations[0];
    let mut seen = HashSet::new();
    let mut after: Option<Value> = None;
    let mut calls = 0;
    loop {
        let mut body = json!({"locationId": loc.id, "pageLimit": 500});
        if let Some(a) = &after {
            body["searchAfter"] = a.clone();
        }
        let (st, b) = post(&sim, "/contacts/search", &loc.pit_token, body).await;
        calls += 1;
        assert_eq!(st, 200);
        let rows = b["contacts"].as_array().expect("rows").clone();
        add_unique(&mut seen, &rows, "id");
        if rows.len() < 500 {
            break;
        }
        after = Some(rows.last().expect("row")["searchAfter"].clone());
    }
    assert_eq!(seen.len(), 10_000);
    assert_eq!(calls, 21, "20 full pages and one empty one");
    assert_eq!(sim.count("contacts.search", "200"), 21);
}

/// A POST search of the first location, its `locationId` added to `body`.
async fn search(sim: &SimHandle, path: &str, mut body: Value) -> (u16, Value) {
    let loc = &sim.locations[0];
    body["locationId"] = json!(loc.id);
    post(sim, path, &loc.pit_token, body).await
}

/// The ids of the rows of `list` in an answer.
fn ids(b: &Value, list: &str, key: &str) -> Vec<String> {
    b[list]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| r[key].as_str().expect("id").to_string())
        .collect()
}

/// The three searches share one window rule: a page size (required for contacts, 20 for
/// opportunities, 25 for tasks, at most 500), an offset (`page` ignored after a cursor and capped
/// at 10,000 rows, or `skip` counted after the cursor) and a `searchAfter` cursor.
#[tokio::test]
async fn search_windows_follow_one_rule() {
    let sim = small().await;
    let (contacts, opps) = ("/contacts/search", "/opportunities/search");
    let deep_message =
        |key: &str| format!("page * {key} must not exceed 10000; use searchAfter to go further");

    // Contacts: the page size is required and bounded.
    let (st, b) = search(&sim, contacts, json!({})).await;
    assert_eq!(
        (st, &b["message"]),
        (422, &json!(["pageLimit must not be less than 1"]))
    );
    let (st, b) = search(&sim, contacts, json!({"pageLimit": 501})).await;
    let too_big = json!(["pageLimit must not be greater than 500"]);
    assert_eq!((st, &b["message"]), (422, &too_big));
    // Page 2 of 10 is rows 11 to 20.
    let (_, first20) = search(&sim, contacts, json!({"pageLimit": 20})).await;
    let first20_ids = ids(&first20, "contacts", "id");
    let (_, page2) = search(&sim, contacts, json!({"pageLimit": 10, "page": 2})).await;
    assert_eq!(ids(&page2, "contacts", "id"), first20_ids[10..]);
    // Past the deep-paging cap: 400 naming the request's own page-size key, checked after the
    // other parameters; with a cursor, `page` is ignored.
    let deep = json!({"pageLimit": 100, "page": 101});
    let (st, b) = search(&sim, contacts, deep.clone()).await;
    assert_eq!(
        (st, &b["message"]),
        (400, &json!(deep_message("pageLimit")))
    );
    let mut bad_sort = deep.clone();
    bad_sort["sort"] = json!([{"field": "email"}]);
    let (st, b) = search(&sim, contacts, bad_sort).await;
    assert_eq!(
        (st, &b["message"]),
        (400, &json!("Invalid sort field email"))
    );
    let mut with_cursor = deep;
    with_cursor["pageLimit"] = json!(10);
    with_cursor["searchAfter"] = first20["contacts"][9]["searchAfter"].clone();
    let (st, b) = search(&sim, contacts, with_cursor).await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(ids(&b, "contacts", "id"), first20_ids[10..]);

    // Opportunities: 20 rows by default, the same cap under the key `limit`.
    let (st, b) = search(&sim, opps, json!({})).await;
    assert_eq!(st, 201, "{b}");
    assert!(b["total"].as_u64().expect("total") > 20);
    assert_eq!(ids(&b, "opportunities", "id").len(), 20);
    let (st, b) = search(&sim, opps, json!({"limit": 100, "page": 101})).await;
    assert_eq!((st, &b["message"]), (400, &json!(deep_message("limit"))));

    // Tasks: 25 rows by default, no total; `skip` counts after the cursor.
    let loc = &sim.locations[0];
    let path = format!("/locations/{}/tasks/search", loc.id);
    let tasks = async |body: Value| post(&sim, &path, &loc.pit_token, body).await;
    let (st, all) = tasks(json!({})).await;
    assert_eq!(st, 201, "{all}");
    assert!(all.get("total").is_none());
    let all = ids(&all, "tasks", "_id");
    assert_eq!(all.len(), 25);
    let (_, b) = tasks(json!({"limit": 5, "skip": 5})).await;
    assert_eq!(ids(&b, "tasks", "_id"), all[5..10]);
    let (_, first) = tasks(json!({"limit": 3})).await;
    let cursor = first["tasks"][2]["searchAfter"].clone();
    let (_, b) = tasks(json!({"limit": 5, "skip": 2, "searchAfter": cursor})).await;
    assert_eq!(ids(&b, "tasks", "_id"), all[5..10]);
}

/// Conversations sharing one `lastMessageDate` (a campaign sent to many contacts at once), as GHL
/// holds them: `startAfterDate` is strict and has no tie-breaker, so a client that goes on from
/// a page's last date loses the rest of a run longer than a page; `startDate`/`endDate` (on
/// `dateAdded`) reach every row of the run.
#[tokio::test]
async fn a_run_of_equal_last_message_dates_is_cut_by_start_after_date_as_on_ghl() {
    let sim = small().await;
    let loc = &sim.locations[0];
    let contacts: Vec<String> = truth_ids(&sim, &loc.id, "contacts").into_iter().collect();
    // Later than every seeded conversation: the run is the top of the newest-first list.
    let date: i64 = 4_000_000_000_000;
    let mut run = HashSet::new();
    for i in 0..250i64 {
        let created = sim
            .create(
                &loc.id,
                "conversations",
                json!({
                    "contactId": contacts[i as usize % contacts.len()],
                    "lastMessageDate": date,
                    "dateAdded": date - 1_000 * (i + 1),
                }),
            )
            .expect("create");
        assert_eq!(
            created["lastMessageDate"], date,
            "the date is kept, not moved"
        );
        run.insert(created["id"].as_str().expect("id").to_owned());
    }
    let search = |query: String| {
        let sim = &sim;
        async move {
            let path = format!(
                "/conversations/search?locationId={}&limit=100&sort=desc&sortBy=last_message_date{query}",
                loc.id
            );
            let r = call(
                sim,
                reqwest::Method::GET,
                &path,
                &loc.pit_token,
                "2021-04-15",
                None,
            )
            .await;
            assert_eq!(r.status(), 200);
            let b: Value = r.json().await.expect("json");
            b["conversations"].as_array().expect("rows").clone()
        }
    };
    let in_run = |rows: &[Value]| -> HashSet<String> {
        rows.iter()
            .filter(|r| r["lastMessageDate"] == date)
            .map(|r| r["id"].as_str().expect("id").to_owned())
            .collect()
    };

    // The naive walk: the first page is 100 rows of the run; after its date, the run is gone.
    let first = search(String::new()).await;
    assert_eq!(in_run(&first).len(), 100);
    let second = search(format!("&startAfterDate={date}")).await;
    assert!(in_run(&second).is_empty(), "startAfterDate is strict");
    // One millisecond later gives the same first 100 again: no way further by the date alone.
    let again = search(format!("&startAfterDate={}", date + 1)).await;
    assert_eq!(in_run(&again), in_run(&first));

    // Windows of dateAdded reach the whole run, each with its own newest-first order.
    let mut seen = HashSet::new();
    for (from, to) in [(date - 125_000, date), (date - 250_000, date - 125_001)] {
        let rows = search(format!(
            "&startAfterDate={}&startDate={from}&endDate={to}",
            date + 1
        ))
        .await;
        let got = in_run(&rows);
        // A full page of the run: the window holds 125 of it.
        assert_eq!((rows.len(), got.len()), (100, 100), "{from}..={to}");
        seen.extend(got);
    }
    assert_eq!(seen.len(), 200, "two full windows, 100 each");
    let mut rest = HashSet::new();
    for (from, to) in [
        (date - 62_000, date),
        (date - 125_000, date - 62_001),
        (date - 187_000, date - 125_001),
        (date - 250_000, date - 187_001),
    ] {
        let rows = search(format!(
            "&startAfterDate={}&startDate={from}&endDate={to}",
            date + 1
        ))
        .await;
        assert!(
            rows.len() < 100,
            "a window with room to spare holds all of its part"
        );
        rest.extend(in_run(&rows));
    }
    assert_eq!(rest, run, "every row of the run, by windows of dateAdded");
}
