//! GraphQL reads through `graphql::execute`: nested data, keyset pages, filters, error codes, and the
//! number of SQL statements per request.

use std::collections::HashSet;

use async_graphql::{Request, Variables};
use serde_json::{Value, json};

use crate::helpers::*;

async fn run(schema: &ghl_gateway::graphql::AppSchema, query: &str, vars: Value) -> Value {
    let response = ghl_gateway::graphql::execute(
        schema,
        Request::new(query).variables(Variables::from_json(vars)),
    )
    .await;
    serde_json::to_value(&response).unwrap()
}

fn error_code(response: &Value) -> &str {
    response["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or("<none>")
}

#[tokio::test]
async fn sql_statements_per_request_do_not_grow_with_the_page() {
    for db in databases().await {
        load_fixture(&db.store, "loc", 2_000).await;
        let schema = schema(&db.store);
        let mut counts = Vec::new();
        for first in [10, 100, 500] {
            let before = db.store.statements();
            let memo_before = db.store.count_memo_hits();
            let (direct_before, failed_before) = db.store.direct_reads();
            let response = run(
                &schema,
                DASHBOARD_QUERY,
                json!({ "loc": "loc", "first": first }),
            )
            .await;
            // A `totalCount` from the memo (the same location and filter, within a second)
            // stands for its statement.
            let memo_hits = db.store.count_memo_hits() - memo_before;
            counts.push(db.store.statements() - before + memo_hits);
            let (direct, failed) = db.store.direct_reads();
            // An SQLite file reads every statement of the page on the request's own thread
            // (no hop to sqlx's worker threads); PostgreSQL reads through its pool.
            let expected = if db.name == "sqlite" {
                db.store.statements() - before
            } else {
                0
            };
            assert_eq!(
                (direct - direct_before, failed - failed_before),
                (expected, 0),
                "{}: statements read on the request's thread, and failed there",
                db.name
            );
            assert!(response.get("errors").is_none(), "{response}");
            let edges = response["data"]["contacts"]["edges"].as_array().unwrap();
            assert_eq!(edges.len(), first);
        }
        assert!(
            counts.iter().all(|c| *c == counts[0]),
            "{}: statements {counts:?}",
            db.name
        );
        // location, page, count, freshness, and one per relation (custom values, fields, users,
        // tasks, conversations, opportunities, pipelines, stages) whatever the page size.
        assert_eq!(counts[0], 12, "{}: {counts:?}", db.name);
        eprintln!(
            "{}: SQL statements per dashboard request: {counts:?}",
            db.name
        );
    }
}

#[tokio::test]
async fn a_total_count_is_read_again_once_its_location_changes() {
    for db in databases().await {
        load_fixture(&db.store, "loc", 60).await;
        let all = ghl_gateway::store::ContactFilter::default();
        let before = db.store.statements();
        assert_eq!(db.store.count_contacts("loc", &all).await.unwrap(), 60);
        assert_eq!(db.store.count_contacts("loc", &all).await.unwrap(), 60);
        assert_eq!(
            db.store.statements() - before,
            1,
            "{}: the second count is the memo's",
            db.name
        );
        // Another filter is another count.
        let tagged = ghl_gateway::store::ContactFilter {
            tag: Some("vip".into()),
            ..Default::default()
        };
        let before = db.store.statements();
        let vip = db.store.count_contacts("loc", &tagged).await.unwrap();
        assert!(vip < 60, "{}: {vip}", db.name);
        assert_eq!(db.store.statements() - before, 1);
        // A write to the location ends the memo at once, well within its second.
        load_fixture(&db.store, "loc", 70).await;
        assert_eq!(
            db.store.count_contacts("loc", &all).await.unwrap(),
            70,
            "{}: the count after the write",
            db.name
        );
    }
}

#[tokio::test]
async fn nested_data_matches_what_was_stored() {
    for db in databases().await {
        let fixture = load_fixture(&db.store, "loc", 60).await;
        let schema = schema(&db.store);
        let response = run(
            &schema,
            DASHBOARD_QUERY,
            json!({ "loc": "loc", "first": 60 }),
        )
        .await;
        assert!(response.get("errors").is_none(), "{response}");
        let connection = &response["data"]["contacts"];
        assert_eq!(connection["totalCount"], 60);
        assert_eq!(connection["pageInfo"]["hasNextPage"], false);
        assert_eq!(connection["freshness"]["stale"], true, "never synced");
        assert_eq!(connection["freshness"]["syncedAt"], Value::Null);
        for edge in connection["edges"].as_array().unwrap() {
            let node = &edge["node"];
            let id = node["id"].as_str().unwrap();
            let c = fixture.contacts.iter().find(|c| c.id == id).unwrap();
            assert_eq!(node["name"], c.display_name());
            assert_eq!(node["tags"], json!(c.tags));
            assert_eq!(node["assignedTo"]["id"].as_str(), c.assigned_to.as_deref());
            let tasks = fixture.tasks.get(id).map_or(0, Vec::len);
            assert_eq!(
                node["tasks"].as_array().unwrap().len(),
                tasks,
                "tasks of {id}"
            );
            for t in node["tasks"].as_array().unwrap() {
                assert!(t["assignedTo"]["name"].is_string());
            }
            let convs = fixture.conversations.get(id).map_or(0, Vec::len);
            assert_eq!(node["conversations"].as_array().unwrap().len(), convs);
            let opps = fixture.opportunities.get(id).cloned().unwrap_or_default();
            assert_eq!(node["opportunities"].as_array().unwrap().len(), opps.len());
            for (o, want) in node["opportunities"].as_array().unwrap().iter().zip(&opps) {
                assert_eq!(o["pipeline"]["id"].as_str(), want.pipeline_id.as_deref());
                assert_eq!(o["stage"]["id"].as_str(), want.stage_id.as_deref());
                assert_eq!(o["status"], want.status.as_deref().unwrap().to_uppercase());
            }
            let fields = node["customFields"].as_array().unwrap();
            assert_eq!(fields.len(), 2);
            let score = fields
                .iter()
                .find(|f| f["fieldKey"] == "contact.score")
                .unwrap();
            assert_eq!(score["name"], "Score");
            assert_eq!(score["value"], c.custom_fields[0].value);
        }
        // Open tasks by due date, completed ones last.
        let c3 = &connection["edges"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["node"]["id"] == "loc-c000003")
            .unwrap()["node"];
        let completed: Vec<bool> = c3["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["completed"].as_bool().unwrap())
            .collect();
        assert_eq!(completed, [false, false, true]);
    }
}

const PAGE_QUERY: &str = r#"
query Page($loc: ID!, $first: Int, $after: String, $filter: ContactFilter, $order: ContactOrder) {
  contacts(locationId: $loc, first: $first, after: $after, filter: $filter, orderBy: $order) {
    totalCount
    pageInfo { hasNextPage endCursor }
    nodes { id name dateAdded dateUpdated }
  }
}"#;

/// Walks every page and returns the ids in order, checking `totalCount` on each page.
async fn walk(
    schema: &ghl_gateway::graphql::AppSchema,
    filter: Value,
    order: Value,
    first: usize,
) -> Vec<String> {
    let mut ids = Vec::new();
    let mut after = Value::Null;
    for _ in 0..1_000 {
        let response = run(
            schema,
            PAGE_QUERY,
            json!({ "loc": "loc", "first": first, "after": after, "filter": filter, "order": order }),
        )
        .await;
        assert!(response.get("errors").is_none(), "{response}");
        let connection = &response["data"]["contacts"];
        let nodes = connection["nodes"].as_array().unwrap();
        ids.extend(nodes.iter().map(|n| n["id"].as_str().unwrap().to_owned()));
        if connection["pageInfo"]["hasNextPage"] == false {
            assert_eq!(
                connection["totalCount"].as_u64().unwrap() as usize,
                ids.len()
            );
            return ids;
        }
        after = connection["pageInfo"]["endCursor"].clone();
    }
    panic!("pagination did not end");
}

#[tokio::test]
async fn keyset_pages_visit_every_contact_once_in_order() {
    for db in databases().await {
        let fixture = load_fixture(&db.store, "loc", 230).await;
        let schema = schema(&db.store);
        let key_of = |c: &ghl_gateway::domain::Contact, field: &str| match field {
            "DATE_ADDED" => format!("{:020}", c.date_added.timestamp_millis()),
            "DATE_UPDATED" => format!("{:020}", c.date_updated.timestamp_millis()),
            _ => c.display_name().to_lowercase(),
        };
        for field in ["DATE_ADDED", "DATE_UPDATED", "NAME"] {
            for direction in ["ASC", "DESC"] {
                let ids = walk(
                    &schema,
                    Value::Null,
                    json!({ "field": field, "direction": direction }),
                    17,
                )
                .await;
                let mut expected: Vec<&ghl_gateway::domain::Contact> =
                    fixture.contacts.iter().collect();
                expected.sort_by(|a, b| (key_of(a, field), &a.id).cmp(&(key_of(b, field), &b.id)));
                if direction == "DESC" {
                    expected.reverse();
                }
                let expected: Vec<String> = expected.into_iter().map(|c| c.id.clone()).collect();
                if field == "NAME" && db.name == "postgres" {
                    // PostgreSQL orders text by its collation; the set and uniqueness still hold.
                    assert_eq!(
                        ids.iter().collect::<HashSet<_>>(),
                        expected.iter().collect::<HashSet<_>>()
                    );
                    assert_eq!(ids.len(), expected.len());
                } else {
                    assert_eq!(ids, expected, "{} {field} {direction}", db.name);
                }
            }
        }
    }
}

#[tokio::test]
async fn filters_select_the_right_contacts() {
    for db in databases().await {
        let fixture = load_fixture(&db.store, "loc", 150).await;
        load_fixture(&db.store, "elsewhere", 20).await;
        let schema = schema(&db.store);
        let user = fixture.users[1].id.clone();
        let since = chrono::DateTime::parse_from_rfc3339("2023-03-01T00:00:00Z")
            .unwrap()
            .to_utc();
        type Keep = Box<dyn Fn(&ghl_gateway::domain::Contact) -> bool>;
        let cases: Vec<(Value, Keep)> = vec![
            (
                json!({ "query": "GRACE" }),
                Box::new(|c| c.first_name.as_deref() == Some("Grace")),
            ),
            (
                json!({ "query": "person12@" }),
                Box::new(|c| c.email.as_deref() == Some("person12@example.com")),
            ),
            (
                json!({ "query": "+15550000042" }),
                Box::new(|c| c.phone.as_deref() == Some("+15550000042")),
            ),
            (json!({ "query": "100%_" }), Box::new(|_| false)),
            (
                json!({ "tag": "vip" }),
                Box::new(|c| c.tags.iter().any(|t| t == "vip")),
            ),
            (
                json!({ "assignedTo": user.clone() }),
                Box::new(move |c| c.assigned_to.as_deref() == Some(user.as_str())),
            ),
            (
                json!({ "updatedSince": since.to_rfc3339() }),
                Box::new(move |c| c.date_updated >= since),
            ),
            (
                json!({ "tag": "lead", "query": "ada" }),
                Box::new(|c| {
                    c.tags.iter().any(|t| t == "lead") && c.first_name.as_deref() == Some("Ada")
                }),
            ),
        ];
        for (filter, keep) in cases {
            let mut ids = walk(&schema, filter.clone(), Value::Null, 40).await;
            let mut expected: Vec<String> = fixture
                .contacts
                .iter()
                .filter(|c| keep(c))
                .map(|c| c.id.clone())
                .collect();
            ids.sort();
            expected.sort();
            assert_eq!(ids, expected, "{} filter {filter}", db.name);
        }
    }
}

#[tokio::test]
async fn bad_input_gets_a_clear_error_code() {
    for db in databases().await {
        load_fixture(&db.store, "loc", 5).await;
        let schema = schema(&db.store);
        let cases = [
            (
                json!({ "loc": "loc", "first": 501 }),
                "BAD_USER_INPUT",
                "between 0 and 500",
            ),
            (
                json!({ "loc": "loc", "first": -1 }),
                "BAD_USER_INPUT",
                "between 0 and 500",
            ),
            (
                json!({ "loc": "loc", "after": "garbage!" }),
                "BAD_USER_INPUT",
                "not a cursor",
            ),
            (json!({ "loc": "nowhere" }), "NOT_FOUND", "not found"),
        ];
        for (vars, code, message) in cases {
            let response = run(&schema, PAGE_QUERY, vars.clone()).await;
            assert_eq!(error_code(&response), code, "{vars}: {response}");
            assert!(
                response["errors"][0]["message"]
                    .as_str()
                    .unwrap()
                    .contains(message),
                "{response}"
            );
        }
        // A cursor of one order is refused in another.
        let response = run(&schema, PAGE_QUERY, json!({ "loc": "loc", "first": 2 })).await;
        let cursor = response["data"]["contacts"]["pageInfo"]["endCursor"].clone();
        let response = run(
            &schema,
            PAGE_QUERY,
            json!({ "loc": "loc", "after": cursor, "order": { "field": "NAME" } }),
        )
        .await;
        assert_eq!(error_code(&response), "BAD_USER_INPUT", "{response}");
        // `first: 0` is a valid empty page that still counts.
        let response = run(&schema, PAGE_QUERY, json!({ "loc": "loc", "first": 0 })).await;
        assert_eq!(response["data"]["contacts"]["totalCount"], 5, "{response}");
        assert_eq!(response["data"]["contacts"]["nodes"], json!([]));
    }
}

#[tokio::test]
async fn locations_contact_and_sync_status_read_the_cache() {
    use ghl_gateway::store::entities::{sync_job, sync_stage};
    use sea_orm::{ActiveModelTrait, IntoActiveModel};
    for db in databases().await {
        load_fixture(&db.store, "loc", 3).await;
        load_fixture(&db.store, "two", 1).await;
        let schema = schema(&db.store);
        let response = run(
            &schema,
            "{ locations { id name freshness { stale syncing } pipelines { name stages { name position } } } }",
            Value::Null,
        )
        .await;
        let locations = response["data"]["locations"].as_array().unwrap();
        assert_eq!(locations.len(), 2, "{response}");
        assert_eq!(locations[0]["pipelines"][0]["stages"][2]["position"], 2);

        let response = run(&schema, r#"{ contact(id: "loc-c000001") { name tasks { id } } missing: contact(id: "nope") { id } }"#, Value::Null).await;
        assert_eq!(
            response["data"]["contact"]["tasks"]
                .as_array()
                .unwrap()
                .len(),
            1,
            "{response}"
        );
        assert_eq!(response["data"]["missing"], Value::Null);

        let status_query = r#"{ syncStatus(locationId: "loc") { state lastJob { id state mode error stages { name state fetched total pages } } freshness { syncedAt stale syncing } } }"#;
        let response = run(&schema, status_query, Value::Null).await;
        assert_eq!(
            response["data"]["syncStatus"]["state"], "IDLE",
            "{response}"
        );
        assert_eq!(response["data"]["syncStatus"]["lastJob"], Value::Null);

        // What the sync tables hold is what syncStatus and freshness say.
        let now = chrono::Utc::now().timestamp_millis();
        for (id, state, started, finished) in [
            ("job-a", "SUCCEEDED", now - 60_000, Some(now - 30_000)),
            ("job-b", "RUNNING", now - 1_000, None),
        ] {
            sync_job::Model {
                id: id.into(),
                location_id: "loc".into(),
                mode: "FULL".into(),
                state: state.into(),
                mark: started,
                started_at: started,
                finished_at: finished,
                error: None,
            }
            .into_active_model()
            .insert(db.store.connection())
            .await
            .unwrap();
        }
        sync_stage::Model {
            job_id: "job-b".into(),
            name: "contacts".into(),
            state: "RUNNING".into(),
            fetched: 500,
            total: Some(1200),
            pages: 1,
            checkpoint: None,
            error: None,
            updated_at: now,
            calls: 1,
            retries: 0,
            rate_limited: 0,
            waited_ms: 0,
            read_at: None,
        }
        .into_active_model()
        .insert(db.store.connection())
        .await
        .unwrap();
        let response = run(&schema, status_query, Value::Null).await;
        let status = &response["data"]["syncStatus"];
        assert_eq!(status["state"], "RUNNING", "{response}");
        assert_eq!(status["lastJob"]["id"], "job-b");
        assert_eq!(
            status["lastJob"]["stages"][0],
            json!({ "name": "contacts", "state": "RUNNING", "fetched": 500, "total": 1200, "pages": 1 })
        );
        assert_eq!(status["freshness"]["syncing"], true);
        assert_eq!(
            status["freshness"]["stale"], false,
            "synced 30 s ago, max age 300 s"
        );
        assert!(status["freshness"]["syncedAt"].is_string());

        let response = run(
            &schema,
            r#"{ syncStatus(locationId: "nowhere") { state } }"#,
            Value::Null,
        )
        .await;
        assert_eq!(error_code(&response), "NOT_FOUND");
    }
}
