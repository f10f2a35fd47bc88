//! The HTTP surface's guards, each as a test that can fail: the per-key WebSocket cap, the 503
//! of the request timeout, `/readyz` when the database is gone, and a negative `maxAge`.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;
use crate::subscription::{Socket, next, open, send};

/// A client API key for `locations`, stored; returns the key.
async fn client_key(app: &TestApp, locations: &[&str]) -> String {
    let locations: Vec<String> = locations.iter().map(|l| l.to_string()).collect();
    let new = ghl_gateway::auth::generate_key(Some("guards".into()), &locations, 1);
    app.store.insert_api_key(new.row).await.unwrap();
    new.key
}

/// Opens a graphql-transport-ws connection with `key`; returns it with the server's first answer.
async fn connect_ws(app: &TestApp, key: &str) -> (Socket, Value) {
    let mut socket = open(app, "graphql-transport-ws").await;
    send(
        &mut socket,
        json!({ "type": "connection_init", "payload": { "Authorization": format!("Bearer {key}") } }),
    )
    .await;
    let answer = next(&mut socket)
        .await
        .expect("an answer to connection_init");
    (socket, answer)
}

#[tokio::test]
async fn a_key_gets_at_most_its_websocket_connections_and_a_closed_one_frees_its_slot() {
    for db in databases().await {
        let app = spawn_app_with(&db.url, |c| {
            c.http.auth.allow_anonymous = false;
            c.http.auth.max_ws_connections_per_key = 2;
        })
        .await;
        load_fixture(&app.store, "loc", 3).await;
        let key = client_key(&app, &["loc"]).await;
        let other = client_key(&app, &["loc"]).await;

        let (mut first, answer) = connect_ws(&app, &key).await;
        assert_eq!(answer["type"], "connection_ack", "{}: {answer}", db.name);
        let (_second, answer) = connect_ws(&app, &key).await;
        assert_eq!(answer["type"], "connection_ack", "{}: {answer}", db.name);
        // The third connection of the key is refused as graphql-transport-ws says (4403)...
        let (_third, answer) = connect_ws(&app, &key).await;
        assert_eq!(
            answer,
            json!({ "type": "close", "code": 4403 }),
            "{}",
            db.name
        );
        // ... in the legacy protocol with connection_error ...
        let mut legacy = open(&app, "graphql-ws").await;
        send(
            &mut legacy,
            json!({ "type": "connection_init", "payload": { "Authorization": format!("Bearer {key}") } }),
        )
        .await;
        assert_eq!(next(&mut legacy).await.unwrap()["type"], "connection_error");
        // ... while another key is not affected.
        let (_theirs, answer) = connect_ws(&app, &other).await;
        assert_eq!(answer["type"], "connection_ack", "{}: {answer}", db.name);

        // Closing a connection gives its slot back once the server has seen the close (no event
        // tells the client when: a bounded number of attempts).
        first.close(None).await.unwrap();
        while next(&mut first).await.is_some_and(|m| m["type"] != "close") {}
        let mut acked = false;
        for _ in 0..100 {
            let (_socket, answer) = connect_ws(&app, &key).await;
            if answer["type"] == "connection_ack" {
                acked = true;
                break;
            }
            assert_eq!(answer, json!({ "type": "close", "code": 4403 }));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            acked,
            "{}: the closed connection's slot is free again",
            db.name
        );
        app.shutdown().await;
    }
}

#[tokio::test]
async fn a_request_over_the_timeout_is_answered_503() {
    for db in databases().await {
        let sim = spawn_sim(20).await;
        let loc = sim.locations[0].id.clone();
        let app = spawn_app_with_sim_and(&db.url, &sim, |c| c.http.request_timeout_secs = 1).await;
        full_sync_to_end(&app, &loc).await;

        // A read from the cache answers well within the timeout.
        read_contacts(&app, &loc, None, 20).await;
        // Ten seconds later, `maxAge: 0` waits for a refresh (up to MAX_AGE_WAIT_SECS, 30 s)
        // whose GHL calls take 5 s each: the request is cut at 1 s with a 503.
        time_passes(&app.store, &loc, 10).await;
        sim.set_latency(5_000, 0);
        let response = app
            .client
            .post(format!("{}/graphql", app.base))
            .json(&json!({
                "query": "query($loc: ID!) { contacts(locationId: $loc, first: 1, maxAge: 0) { totalCount } }",
                "variables": { "loc": loc },
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::SERVICE_UNAVAILABLE,
            "{}",
            db.name
        );
        assert!(
            app.sync.running(&loc).is_some(),
            "{}: the refresh it started still runs (the timeout proves the request waited)",
            db.name
        );
        app.shutdown().await;
    }
}

#[tokio::test]
async fn readyz_answers_503_when_the_database_is_gone() {
    for db in databases().await {
        let app = spawn_app_with(&db.url, |c| c.http.request_timeout_secs = 60).await;
        let readyz = || async {
            let response = app
                .client
                .get(format!("{}/readyz", app.base))
                .send()
                .await
                .unwrap();
            (response.status(), response.text().await.unwrap())
        };
        assert_eq!(readyz().await, (StatusCode::OK, "ready".to_owned()));
        match db.name {
            // The database itself goes: dropped under the gateway's connections.
            "postgres" => {
                let admin_url = std::env::var("TEST_DATABASE_URL").unwrap();
                let admin = sea_orm::Database::connect(&admin_url).await.unwrap();
                let name = db.url.rsplit('/').next().unwrap().to_owned();
                sea_orm::ConnectionTrait::execute_unprepared(
                    &admin,
                    &format!("DROP DATABASE {name} WITH (FORCE)"),
                )
                .await
                .unwrap();
                admin.close().await.unwrap();
            }
            // An embedded file stays readable while it is open: the pool closes instead.
            _ => app.store.clone().close().await,
        }
        assert_eq!(
            readyz().await,
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "database unavailable".to_owned()
            ),
            "{}",
            db.name
        );
        // Liveness does not depend on the database.
        let live = app
            .client
            .get(format!("{}/healthz", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(live.status(), StatusCode::OK);
    }
}

#[tokio::test]
async fn a_negative_max_age_is_bad_user_input_and_starts_nothing() {
    for db in databases().await {
        let sim = spawn_sim(10).await;
        let loc = sim.locations[0].id.clone();
        let app = spawn_app_with_sim(&db.url, &sim).await;
        full_sync_to_end(&app, &loc).await;
        time_passes(&app.store, &loc, 3_600).await;
        sim.reset_counters();
        let answer = app
            .graphql(
                "query($loc: ID!) { contacts(locationId: $loc, maxAge: -1) { totalCount } }",
                json!({ "loc": loc }),
            )
            .await;
        assert_eq!(
            answer["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
            "{}: {answer}",
            db.name
        );
        assert!(
            answer["errors"][0]["message"]
                .as_str()
                .unwrap()
                .contains("maxAge"),
            "{answer}"
        );
        assert_eq!(answer["data"], Value::Null, "{answer}");
        // Refused before the read policy: the stale data started no refresh.
        assert!(app.sync.running(&loc).is_none());
        assert_eq!(app.store.jobs(&loc, 10).await.unwrap().len(), 1);
        assert_eq!(sim.total_requests(), 0, "{}", db.name);
        app.shutdown().await;
    }
}
