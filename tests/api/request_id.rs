//! Request ids: every answer carries `x-request-id` (the client's when usable, a fresh UUID
//! otherwise), the log lines of the request carry it, and an `INTERNAL` GraphQL error carries it
//! in `extensions.requestId` so that a user can quote it.

use sea_orm::ConnectionTrait as _;
use serde_json::{Value, json};

use crate::helpers::*;
use crate::metrics::spawn_gateway;

async fn post(app: &TestApp, request_id: Option<&str>, query: &str) -> (String, Value) {
    let mut request = app
        .client
        .post(format!("{}/graphql", app.base))
        .json(&json!({ "query": query }));
    if let Some(id) = request_id {
        request = request.header("x-request-id", id);
    }
    let response = request.send().await.expect("the gateway answers");
    let id = response
        .headers()
        .get("x-request-id")
        .expect("every answer has x-request-id")
        .to_str()
        .unwrap()
        .to_owned();
    (id, response.json().await.expect("a JSON answer"))
}

#[tokio::test]
async fn every_answer_has_a_request_id_the_clients_when_usable() {
    let db = sqlite().await;
    let app = spawn_app(&db.url).await;
    let (generated, _) = post(&app, None, "{ locations { id } }").await;
    let (other, _) = post(&app, None, "{ locations { id } }").await;
    assert!(uuid::Uuid::parse_str(&generated).is_ok(), "{generated}");
    assert_ne!(generated, other, "one id per request");

    let (kept, _) = post(&app, Some("client-req:42/a.b_c"), "{ locations { id } }").await;
    assert_eq!(kept, "client-req:42/a.b_c");
    for unusable in ["has spaces", &"x".repeat(129), "quote\"d"] {
        let (replaced, _) = post(&app, Some(unusable), "{ locations { id } }").await;
        assert!(
            uuid::Uuid::parse_str(&replaced).is_ok(),
            "{unusable:?} -> {replaced}"
        );
    }

    // Not only GraphQL: every route, refusals included.
    for (path, status) in [
        ("/healthz", 200),
        ("/graphiql", 200),
        ("/no-such-page", 404),
    ] {
        let response = app
            .client
            .get(format!("{}{path}", app.base))
            .header("x-request-id", "probe-1")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status, "{path}");
        assert_eq!(response.headers()["x-request-id"], "probe-1", "{path}");
    }
    let unauthorized = app
        .client
        .post(format!("{}/graphql", app.base))
        .bearer_auth("ghlk_not-a-key")
        .json(&json!({ "query": "{ locations { id } }" }))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthorized.status(), 401);
    assert!(unauthorized.headers().contains_key("x-request-id"));
    app.shutdown().await;
}

/// Run as a real process, with JSON logs: the log lines are the ones an operator reads, and no
/// other test of this binary logs into them.
#[tokio::test]
async fn an_internal_error_carries_the_request_id_and_so_do_its_log_lines() {
    for db in databases().await {
        let sim = spawn_sim(3).await;
        let gateway = spawn_gateway(
            &db,
            &sim,
            &[("RUST_LOG", "info,sqlx=warn"), ("LOG_FORMAT", "json")],
        )
        .await;
        load_fixture(&db.store, "loc-a", 3).await;
        // The contacts table goes away under the gateway: the read fails inside, not the caller.
        db.store
            .connection()
            .execute_unprepared("ALTER TABLE contacts RENAME TO contacts_gone")
            .await
            .expect("the table is renamed");
        let response = gateway
            .client
            .post(format!("{}/graphql", gateway.base))
            .bearer_auth(ADMIN_KEY)
            .header("x-request-id", "quote-me-7")
            .json(&json!({ "query": r#"{ contacts(locationId: "loc-a") { totalCount } }"# }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.headers()["x-request-id"], "quote-me-7");
        let answer: Value = response.json().await.unwrap();
        let error = &answer["errors"][0];
        assert_eq!(
            error["extensions"]["code"], "INTERNAL",
            "{}: {answer}",
            db.name
        );
        assert_eq!(error["extensions"]["requestId"], "quote-me-7", "{answer}");
        assert_eq!(error["message"], "internal error", "no internals are sent");

        // A user error has no id to quote: it is the caller's to fix.
        let input = gateway
            .graphql(
                r#"{ contacts(locationId: "loc-a", first: 9999) { totalCount } }"#,
                json!({}),
            )
            .await;
        assert_eq!(
            input["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
            "{input}"
        );
        assert!(
            input["errors"][0]["extensions"]["requestId"].is_null(),
            "{input}"
        );

        // Every line the failed request logged names it.
        let logs = gateway.logs.lock().unwrap().clone();
        let lines: Vec<Value> = logs
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        let failed: Vec<&Value> = lines
            .iter()
            .filter(|l| l["fields"]["message"] == "request failed")
            .collect();
        assert!(
            !failed.is_empty(),
            "{}: the internal error was logged:\n{logs}",
            db.name
        );
        for line in failed {
            assert_eq!(line["span"]["request_id"], "quote-me-7", "{line}");
        }
        assert!(
            lines
                .iter()
                .filter(|l| l["span"]["request_id"] == "quote-me-7")
                .all(|l| l["span"]["path"] == "/graphql"),
            "the span is the request's"
        );
    }
}
