//! The location-wide lists: `tasks` and `opportunities` (filters, keyset paging in every order,
//! nested contacts), the stage and pipeline summaries against SQL of our own over the same rows,
//! a constant number of statements per request, input errors, key scope and the response cache.

use std::collections::HashMap;

use async_graphql::{Request, Variables};
use chrono::{DateTime, TimeZone, Utc};
use ghl_gateway::domain::Opportunity;
use ghl_gateway::store::{Page, Store};
use sea_orm::{ConnectionTrait, Statement};
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

fn code(response: &Value) -> &str {
    response["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or("<none>")
}

/// The fixture's clock: `load_fixture` dates its tasks from here.
fn day(days: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2022, 1, 1, 0, 0, 0).unwrap() + chrono::Duration::days(days)
}

const STATUSES: [&str; 4] = ["open", "won", "lost", "abandoned"];

/// `n` opportunities over the fixture's contacts, both pipelines, every stage and status; some
/// without a value or an update time, some sharing an update time (the id breaks the tie).
async fn load_opportunities(
    store: &Store,
    loc: &str,
    contacts: usize,
    n: usize,
) -> Vec<Opportunity> {
    let rows: Vec<Opportunity> = (0..n)
        .map(|j| {
            let pipe = j % 2;
            Opportunity {
                id: format!("{loc}-o{j:04}"),
                location_id: loc.into(),
                contact_id: Some(format!("{loc}-c{:06}", j % contacts)),
                pipeline_id: Some(format!("{loc}-pipe-{pipe}")),
                stage_id: Some(format!("{loc}-pipe-{pipe}-stage-{}", (j / 2) % 3)),
                name: Some(format!("Board deal {j}")),
                status: Some(STATUSES[(j / 3) % 4].into()),
                monetary_value: (j % 7 != 0).then_some(10.5 * j as f64),
                assigned_to: Some(format!("{loc}-user-{}", j % 4)),
                created_at: Some(day(30) + chrono::Duration::minutes(j as i64)),
                updated_at: (j % 11 != 0)
                    .then(|| day(40) + chrono::Duration::hours((j / 3) as i64)),
            }
        })
        .collect();
    store
        .write_page(loc, 1, Page::Opportunities(&rows), None)
        .await
        .unwrap();
    rows
}

const TASKS: &str = r#"query($loc: ID!, $first: Int, $after: String, $filter: TaskFilter, $order: TaskOrder) {
  tasks(locationId: $loc, first: $first, after: $after, filter: $filter, orderBy: $order) {
    totalCount
    pageInfo { hasNextPage endCursor }
    edges { cursor node { id dueDate completed assignedTo { id } contact { id } } }
  }
}"#;

const OPPORTUNITIES: &str = r#"query($loc: ID!, $first: Int, $after: String, $filter: OpportunityFilter, $order: OpportunityOrder) {
  opportunities(locationId: $loc, first: $first, after: $after, filter: $filter, orderBy: $order) {
    totalCount
    pageInfo { hasNextPage endCursor }
    nodes { id status monetaryValue pipeline { id } stage { id } contact { id } }
  }
}"#;

/// Every page of a list, `first` at a time: the ids in order, and the totalCount of each page.
async fn walk(
    schema: &ghl_gateway::graphql::AppSchema,
    query: &str,
    field: &str,
    mut vars: Value,
    first: usize,
) -> (Vec<String>, Vec<u64>) {
    let mut ids = Vec::new();
    let mut totals = Vec::new();
    vars["first"] = json!(first);
    loop {
        let response = run(schema, query, vars.clone()).await;
        assert!(response.get("errors").is_none(), "{response}");
        let page = &response["data"][field];
        totals.push(page["totalCount"].as_u64().unwrap());
        let nodes: Vec<Value> = match page.get("edges") {
            Some(edges) => edges
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["node"].clone())
                .collect(),
            None => page["nodes"].as_array().unwrap().clone(),
        };
        assert!(nodes.len() <= first);
        ids.extend(nodes.iter().map(|n| n["id"].as_str().unwrap().to_owned()));
        if !page["pageInfo"]["hasNextPage"].as_bool().unwrap() {
            break;
        }
        vars["after"] = page["pageInfo"]["endCursor"].clone();
    }
    (ids, totals)
}

/// Which fixture tasks a filter should keep.
type TaskTest = Box<dyn Fn(&ghl_gateway::domain::Task) -> bool>;

#[tokio::test]
async fn tasks_filter_and_page_in_every_order() {
    for db in databases().await {
        let fixture = load_fixture(&db.store, "loc", 90).await;
        let schema = schema(&db.store);
        let all: Vec<_> = fixture.tasks.values().flatten().cloned().collect();
        let loc = json!({ "loc": "loc" });

        // Soonest due first, undated last, the id breaking ties; 7 at a time.
        let mut want: Vec<_> = all.clone();
        want.sort_by_key(|t| {
            (
                t.due_date.map_or(i64::MAX, |d| d.timestamp_millis()),
                t.id.clone(),
            )
        });
        let want: Vec<String> = want.into_iter().map(|t| t.id).collect();
        let (ids, totals) = walk(&schema, TASKS, "tasks", loc.clone(), 7).await;
        assert_eq!(ids, want, "{}", db.name);
        assert!(totals.iter().all(|t| *t as usize == all.len()));

        // Latest due first: undated still last.
        let mut want_desc: Vec<_> = all.clone();
        want_desc.sort_by_key(|t| {
            (
                std::cmp::Reverse(t.due_date.map_or(i64::MIN, |d| d.timestamp_millis())),
                std::cmp::Reverse(t.id.clone()),
            )
        });
        let want_desc: Vec<String> = want_desc.into_iter().map(|t| t.id).collect();
        let vars = json!({ "loc": "loc", "order": { "field": "DUE_DATE", "direction": "DESC" } });
        let (ids, _) = walk(&schema, TASKS, "tasks", vars, 11).await;
        assert_eq!(ids, want_desc, "{}", db.name);
        assert!(
            all.iter()
                .filter(|t| t.due_date.is_none())
                .all(|t| want_desc
                    [want_desc.len() - all.iter().filter(|t| t.due_date.is_none()).count()..]
                    .contains(&t.id)),
            "undated tasks come last"
        );

        // Filters, each against the fixture.
        let cases: Vec<(Value, TaskTest)> = vec![
            (json!({ "completed": false }), Box::new(|t| !t.completed)),
            (json!({ "completed": true }), Box::new(|t| t.completed)),
            (
                json!({ "dueBefore": day(501).to_rfc3339() }),
                Box::new(|t| t.due_date.is_some_and(|d| d < day(501))),
            ),
            (
                json!({ "dueAfter": day(501).to_rfc3339() }),
                Box::new(|t| t.due_date.is_some_and(|d| d >= day(501))),
            ),
            (
                json!({ "dueAfter": day(500).to_rfc3339(), "dueBefore": day(501).to_rfc3339(), "completed": false }),
                Box::new(|t| {
                    !t.completed && t.due_date.is_some_and(|d| d >= day(500) && d < day(501))
                }),
            ),
            (
                json!({ "assignedTo": "loc-user-1" }),
                Box::new(|t| t.assigned_to.as_deref() == Some("loc-user-1")),
            ),
        ];
        for (filter, keep) in cases {
            let mut want: Vec<String> = all
                .iter()
                .filter(|t| keep(t))
                .map(|t| t.id.clone())
                .collect();
            assert!(!want.is_empty(), "{filter}: the fixture has matching tasks");
            want.sort();
            let vars = json!({ "loc": "loc", "filter": filter });
            let (mut ids, totals) = walk(&schema, TASKS, "tasks", vars, 50).await;
            assert_eq!(totals[0] as usize, want.len(), "{}: {filter}", db.name);
            ids.sort();
            assert_eq!(ids, want, "{}: {filter}", db.name);
        }

        // Nested: each task's contact and user are its own.
        let response = run(&schema, TASKS, json!({ "loc": "loc", "first": 500 })).await;
        for edge in response["data"]["tasks"]["edges"].as_array().unwrap() {
            let node = &edge["node"];
            let task = all.iter().find(|t| t.id == node["id"]).unwrap();
            assert_eq!(node["contact"]["id"].as_str(), task.contact_id.as_deref());
            assert_eq!(
                node["assignedTo"]["id"].as_str(),
                task.assigned_to.as_deref()
            );
        }
    }
}

#[tokio::test]
async fn opportunities_filter_and_page_in_every_order() {
    for db in databases().await {
        load_fixture(&db.store, "loc", 30).await;
        // The fixture's own opportunities (open, first stage) are there too: read them back.
        let schema = schema(&db.store);
        load_opportunities(&db.store, "loc", 30, 150).await;
        let all = all_opportunities(&db.store, "loc").await;
        assert!(all.len() > 150);

        let key = |o: &Row, field: &str, desc: bool| -> (f64, String) {
            let v = match field {
                "MONETARY_VALUE" => o.value,
                "CREATED_AT" => o.created.map(|v| v as f64),
                _ => o.updated.map(|v| v as f64),
            };
            let missing = if desc { f64::MIN } else { f64::MAX };
            (v.unwrap_or(missing), o.id.clone())
        };
        for field in ["UPDATED_AT", "CREATED_AT", "MONETARY_VALUE"] {
            for desc in [false, true] {
                let mut want = all.clone();
                want.sort_by(|a, b| {
                    let (ka, kb) = (key(a, field, desc), key(b, field, desc));
                    let order = ka.0.total_cmp(&kb.0).then(ka.1.cmp(&kb.1));
                    if desc { order.reverse() } else { order }
                });
                let want: Vec<String> = want.into_iter().map(|o| o.id).collect();
                let vars = json!({ "loc": "loc", "order": { "field": field, "direction": if desc { "DESC" } else { "ASC" } } });
                let (ids, _) = walk(&schema, OPPORTUNITIES, "opportunities", vars, 13).await;
                assert_eq!(ids, want, "{}: {field} desc={desc}", db.name);
            }
        }

        for filter in [
            json!({ "pipelineId": "loc-pipe-1" }),
            json!({ "stageId": "loc-pipe-0-stage-2" }),
            json!({ "status": "WON" }),
            json!({ "assignedTo": "loc-user-3" }),
            json!({ "pipelineId": "loc-pipe-1", "stageId": "loc-pipe-1-stage-0", "status": "OPEN" }),
        ] {
            let f = filter.clone();
            let mut want: Vec<String> = all
                .iter()
                .filter(|o| {
                    f.get("pipelineId").is_none_or(|p| p == o.pipeline.as_str())
                        && f.get("stageId").is_none_or(|s| s == o.stage.as_str())
                        && f.get("status")
                            .is_none_or(|s| s.as_str().unwrap().to_lowercase() == o.status)
                        && f.get("assignedTo")
                            .is_none_or(|u| Some(u.as_str().unwrap()) == o.assigned.as_deref())
                })
                .map(|o| o.id.clone())
                .collect();
            assert!(!want.is_empty(), "{filter}");
            want.sort();
            let vars = json!({ "loc": "loc", "filter": filter });
            let (mut ids, totals) = walk(&schema, OPPORTUNITIES, "opportunities", vars, 40).await;
            assert_eq!(totals[0] as usize, want.len(), "{}: {filter}", db.name);
            ids.sort();
            assert_eq!(ids, want, "{}: {filter}", db.name);
        }

        let response = run(
            &schema,
            OPPORTUNITIES,
            json!({ "loc": "loc", "first": 500 }),
        )
        .await;
        for node in response["data"]["opportunities"]["nodes"]
            .as_array()
            .unwrap()
        {
            let o = all.iter().find(|o| o.id == node["id"]).unwrap();
            assert_eq!(node["stage"]["id"], o.stage.as_str());
            assert_eq!(node["pipeline"]["id"], o.pipeline.as_str());
            assert_eq!(node["contact"]["id"].as_str(), o.contact.as_deref());
            assert_eq!(node["status"], o.status.to_uppercase());
        }
    }
}

/// An opportunity as the database holds it, read with SQL of this test's own.
#[derive(Clone, Debug)]
struct Row {
    id: String,
    pipeline: String,
    stage: String,
    status: String,
    value: Option<f64>,
    created: Option<i64>,
    updated: Option<i64>,
    assigned: Option<String>,
    contact: Option<String>,
}

async fn all_opportunities(store: &Store, loc: &str) -> Vec<Row> {
    let db = store.connection();
    let rows = db
        .query_all_raw(Statement::from_string(
            db.get_database_backend(),
            format!(
                "SELECT id, pipeline_id, stage_id, status, monetary_value, created_at, updated_at, \
                 assigned_to, contact_id FROM opportunities WHERE location_id = '{loc}' AND deleted = false"
            ),
        ))
        .await
        .unwrap();
    rows.iter()
        .map(|r| Row {
            id: r.try_get("", "id").unwrap(),
            pipeline: r.try_get("", "pipeline_id").unwrap(),
            stage: r.try_get("", "stage_id").unwrap(),
            status: r.try_get("", "status").unwrap(),
            value: r.try_get("", "monetary_value").unwrap(),
            created: r.try_get("", "created_at").unwrap(),
            updated: r.try_get("", "updated_at").unwrap(),
            assigned: r.try_get("", "assigned_to").unwrap(),
            contact: r.try_get("", "contact_id").unwrap(),
        })
        .collect()
}

/// `(count, sum)` per stage (or pipeline) of the rows with `status` (or any), by SQL's GROUP BY.
async fn sql_sums(
    store: &Store,
    loc: &str,
    column: &str,
    status: Option<&str>,
) -> HashMap<String, (i64, f64)> {
    let db = store.connection();
    let status = status.map_or(String::new(), |s| format!(" AND status = '{s}'"));
    let rows = db
        .query_all_raw(Statement::from_string(
            db.get_database_backend(),
            format!(
                "SELECT {column} AS g, COUNT(*) AS n, SUM(monetary_value) AS v FROM opportunities \
                 WHERE location_id = '{loc}' AND deleted = false{status} GROUP BY {column}"
            ),
        ))
        .await
        .unwrap();
    rows.iter()
        .map(|r| {
            let v: Option<f64> = r.try_get("", "v").unwrap();
            (
                r.try_get("", "g").unwrap(),
                (r.try_get("", "n").unwrap(), v.unwrap_or(0.0)),
            )
        })
        .collect()
}

const SUMMARIES: &str = r#"query($loc: ID!) {
  location(id: $loc) {
    pipelines {
      id
      open: summary { count monetaryValue }
      any: summary(status: null) { count monetaryValue }
      stages {
        id
        open: summary { count monetaryValue }
        won: summary(status: WON) { count monetaryValue }
        any: summary(status: null) { count monetaryValue }
      }
    }
  }
}"#;

#[tokio::test]
async fn summaries_equal_sql_over_the_same_rows() {
    for db in databases().await {
        load_fixture(&db.store, "loc", 40).await;
        let rows = load_opportunities(&db.store, "loc", 40, 200).await;
        // One deleted opportunity: it counts nowhere.
        let gone = rows[5].clone();
        db.store
            .write_page(
                "loc",
                2,
                Page::Opportunities(
                    &rows
                        .iter()
                        .filter(|o| o.id != gone.id)
                        .cloned()
                        .collect::<Vec<_>>(),
                ),
                None,
            )
            .await
            .unwrap();
        let marked = db
            .store
            .mark_unseen_deleted("loc", ghl_gateway::domain::Resource::Opportunities, 2)
            .await
            .unwrap();
        assert!(
            marked >= 1,
            "{}: the left-out opportunity is deleted",
            db.name
        );
        let schema = schema(&db.store);
        let response = run(&schema, SUMMARIES, json!({ "loc": "loc" })).await;
        assert!(response.get("errors").is_none(), "{response}");
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-6 * b.abs().max(1.0);
        let check = |got: &Value, want: Option<&(i64, f64)>, what: &str| {
            let (count, sum) = want.copied().unwrap_or((0, 0.0));
            assert_eq!(got["count"], count, "{}: {what}", db.name);
            let value = got["monetaryValue"].as_f64().unwrap();
            assert!(
                close(value, sum),
                "{}: {what}: {value} against {sum}",
                db.name
            );
        };
        let by_stage_open = sql_sums(&db.store, "loc", "stage_id", Some("open")).await;
        let by_stage_won = sql_sums(&db.store, "loc", "stage_id", Some("won")).await;
        let by_stage = sql_sums(&db.store, "loc", "stage_id", None).await;
        let by_pipe_open = sql_sums(&db.store, "loc", "pipeline_id", Some("open")).await;
        let by_pipe = sql_sums(&db.store, "loc", "pipeline_id", None).await;
        let mut open_total = 0;
        for pipeline in response["data"]["location"]["pipelines"]
            .as_array()
            .unwrap()
        {
            let id = pipeline["id"].as_str().unwrap();
            check(&pipeline["open"], by_pipe_open.get(id), id);
            check(&pipeline["any"], by_pipe.get(id), id);
            for stage in pipeline["stages"].as_array().unwrap() {
                let id = stage["id"].as_str().unwrap();
                check(&stage["open"], by_stage_open.get(id), id);
                check(&stage["won"], by_stage_won.get(id), id);
                check(&stage["any"], by_stage.get(id), id);
                open_total += stage["open"]["count"].as_i64().unwrap();
            }
        }
        // The SQL above agrees with the rows as the database holds them (the fixture's own
        // opportunities, unseen at mark 2, were deleted with the left-out one).
        let live = all_opportunities(&db.store, "loc").await;
        assert_eq!(
            open_total as usize,
            live.iter().filter(|o| o.status == "open").count(),
            "{}",
            db.name
        );
        assert!(open_total > 0);
    }
}

/// Tasks with their contacts (and the contacts' own relations), and opportunities with theirs,
/// in one request. (The stage summaries of a board are one `GROUP BY` whatever the page; they are
/// left out here because `location { pipelines { stages } }` would race the opportunities'
/// prefetched `pipeline { stages }` for the loader's cache, and the count with it.)
const BOARD_AND_DUE: &str = r#"query($loc: ID!, $first: Int) {
  tasks(locationId: $loc, first: $first, filter: { completed: false }) {
    totalCount
    freshness { stale }
    edges { cursor node { id title dueDate assignedTo { id name }
      contact { id name tags tasks { id } opportunities { id stage { id name } } } } }
  }
  opportunities(locationId: $loc, first: $first, orderBy: { field: MONETARY_VALUE, direction: DESC }) {
    totalCount
    nodes { id name status monetaryValue assignedTo { name } contact { id name email }
      pipeline { id name stages { id name } } stage { id name } }
  }
}"#;

#[tokio::test]
async fn sql_statements_per_list_request_do_not_grow_with_the_page() {
    for db in databases().await {
        load_fixture(&db.store, "loc", 800).await;
        load_opportunities(&db.store, "loc", 800, 600).await;
        let schema = schema(&db.store);
        let mut counts = Vec::new();
        for first in [10, 100, 400] {
            let before = db.store.statements();
            let response = run(
                &schema,
                BOARD_AND_DUE,
                json!({ "loc": "loc", "first": first }),
            )
            .await;
            counts.push(db.store.statements() - before);
            assert!(response.get("errors").is_none(), "{response}");
            assert_eq!(
                response["data"]["tasks"]["edges"].as_array().unwrap().len(),
                first
            );
            let nodes = response["data"]["opportunities"]["nodes"]
                .as_array()
                .unwrap();
            assert_eq!(nodes.len(), first);
            assert!(nodes.iter().all(|n| n["contact"]["id"].is_string()));
        }
        assert!(
            counts.iter().all(|c| *c == counts[0]),
            "{}: statements {counts:?}",
            db.name
        );
        // tasks: location, freshness, page, count, then contacts, their tasks, their
        // opportunities, those opportunities' stages, users; opportunities: location, page,
        // count, then contacts, users, stages, pipelines, the pipelines' stages.
        assert_eq!(counts[0], 17, "{}: {counts:?}", db.name);
        eprintln!(
            "{}: SQL statements per board-and-due request: {counts:?}",
            db.name
        );
    }
}

#[tokio::test]
async fn bad_cursors_and_filters_are_bad_user_input() {
    for db in databases().await {
        load_fixture(&db.store, "loc", 20).await;
        load_opportunities(&db.store, "loc", 20, 20).await;
        let schema = schema(&db.store);
        let task_page = run(&schema, TASKS, json!({ "loc": "loc", "first": 2 })).await;
        let task_cursor = task_page["data"]["tasks"]["pageInfo"]["endCursor"].clone();
        let opp_page = run(&schema, OPPORTUNITIES, json!({ "loc": "loc", "first": 2 })).await;
        let opp_cursor = opp_page["data"]["opportunities"]["pageInfo"]["endCursor"].clone();
        assert!(task_cursor.is_string() && opp_cursor.is_string());
        let cases = [
            (TASKS, json!({ "loc": "loc", "after": "not a cursor" })),
            (TASKS, json!({ "loc": "loc", "after": opp_cursor })),
            (OPPORTUNITIES, json!({ "loc": "loc", "after": task_cursor })),
            (
                TASKS,
                json!({ "loc": "loc", "after": task_cursor, "order": { "field": "DATE_ADDED" } }),
            ),
            (
                OPPORTUNITIES,
                json!({ "loc": "loc", "after": opp_cursor, "order": { "field": "MONETARY_VALUE" } }),
            ),
            (TASKS, json!({ "loc": "loc", "first": 501 })),
            (OPPORTUNITIES, json!({ "loc": "loc", "first": -1 })),
            (
                TASKS,
                json!({ "loc": "loc", "filter": { "dueAfter": day(3).to_rfc3339(), "dueBefore": day(2).to_rfc3339() } }),
            ),
            (
                TASKS,
                json!({ "loc": "loc", "filter": { "dueBefore": "next tuesday" } }),
            ),
            (
                OPPORTUNITIES,
                json!({ "loc": "loc", "filter": { "pipelineId": "loc-pipe-0", "stageId": "loc-pipe-1-stage-0" } }),
            ),
            (
                OPPORTUNITIES,
                json!({ "loc": "loc", "filter": { "stageId": " " } }),
            ),
            (
                OPPORTUNITIES,
                json!({ "loc": "loc", "filter": { "status": "MAYBE" } }),
            ),
        ];
        for (query, vars) in cases {
            let response = run(&schema, query, vars.clone()).await;
            assert_eq!(
                code(&response),
                "BAD_USER_INPUT",
                "{}: {vars}: {response}",
                db.name
            );
        }
        // An unknown location is NOT_FOUND, as for contacts.
        let response = run(&schema, TASKS, json!({ "loc": "nowhere" })).await;
        assert_eq!(code(&response), "NOT_FOUND", "{response}");
    }
}

#[tokio::test]
async fn lists_keep_to_the_key_scope_and_go_through_the_response_cache() {
    for db in databases().await {
        load_fixture(&db.store, "loc-a", 12).await;
        load_fixture(&db.store, "loc-b", 12).await;
        let app = spawn_app(&db.url).await;
        let new = ghl_gateway::auth::generate_key(Some("lists".into()), &["loc-a".to_owned()], 1);
        let key = new.key.clone();
        app.store.insert_api_key(new.row).await.unwrap();
        let ask = |query: &'static str, loc: &'static str| {
            let app = &app;
            let key = key.clone();
            async move {
                let response = app
                    .client
                    .post(format!("{}/graphql", app.base))
                    .bearer_auth(key)
                    .header("accept", "application/json")
                    .json(&json!({ "query": query, "variables": { "loc": loc, "first": 5 } }))
                    .send()
                    .await
                    .unwrap();
                let cache = response
                    .headers()
                    .get("x-cache")
                    .map(|v| v.to_str().unwrap().to_owned())
                    .unwrap_or_default();
                (cache, response.json::<Value>().await.unwrap())
            }
        };
        for query in [TASKS, OPPORTUNITIES] {
            let (_, refused) = ask(query, "loc-b").await;
            assert_eq!(code(&refused), "NOT_FOUND", "{}: {refused}", db.name);
        }
        let (first, answer) = ask(TASKS, "loc-a").await;
        assert!(answer.get("errors").is_none(), "{answer}");
        assert_eq!(first, "miss");
        let (second, again) = ask(TASKS, "loc-a").await;
        assert_eq!((second.as_str(), &again), ("hit", &answer), "{}", db.name);
        // A write to loc-b leaves loc-a's answer cached; a write to loc-a does not.
        load_opportunities(&app.store, "loc-b", 12, 3).await;
        assert_eq!(ask(TASKS, "loc-a").await.0, "hit", "{}", db.name);
        load_opportunities(&app.store, "loc-a", 12, 3).await;
        let (after_write, fresh) = ask(OPPORTUNITIES, "loc-a").await;
        assert_eq!(after_write, "miss");
        assert_eq!(
            fresh["data"]["opportunities"]["totalCount"],
            3 + 4,
            "{fresh}"
        );
        assert_eq!(ask(TASKS, "loc-a").await.0, "miss", "{}", db.name);

        // An opportunity of loc-b naming a stage of loc-a counts in no summary of loc-a.
        let stray = Opportunity {
            id: "loc-b-stray".into(),
            location_id: "loc-b".into(),
            pipeline_id: Some("loc-a-pipe-0".into()),
            stage_id: Some("loc-a-pipe-0-stage-0".into()),
            status: Some("open".into()),
            monetary_value: Some(1_000_000.0),
            ..Opportunity::default()
        };
        app.store
            .write_page("loc-b", 1, Page::Opportunities(&[stray]), None)
            .await
            .unwrap();
        let (_, board) = ask(
            r#"query($loc: ID!) { location(id: $loc) { pipelines { id summary { count monetaryValue }
                 stages { id summary { count monetaryValue } } } } }"#,
            "loc-a",
        )
        .await;
        let by_stage = sql_sums(&app.store, "loc-a", "stage_id", Some("open")).await;
        let by_pipe = sql_sums(&app.store, "loc-a", "pipeline_id", Some("open")).await;
        let pipelines = board["data"]["location"]["pipelines"].as_array().unwrap();
        assert_eq!(pipelines.len(), 2, "{}: {board}", db.name);
        for pipeline in pipelines {
            let want = by_pipe
                .get(pipeline["id"].as_str().unwrap())
                .copied()
                .unwrap_or((0, 0.0));
            assert_eq!(pipeline["summary"]["count"], want.0, "{}: {board}", db.name);
            for stage in pipeline["stages"].as_array().unwrap() {
                let want = by_stage
                    .get(stage["id"].as_str().unwrap())
                    .copied()
                    .unwrap_or((0, 0.0));
                assert_eq!(stage["summary"]["count"], want.0, "{}: {board}", db.name);
                assert_eq!(
                    stage["summary"]["monetaryValue"], want.1,
                    "{}: {board}",
                    db.name
                );
            }
        }
        app.shutdown().await;
    }
}
