//! The `syncStatus` subscription over a real WebSocket, in both protocols, with the key in
//! `connection_init`.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::helpers::*;

pub(crate) type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub(crate) const SUBSCRIPTION: &str = r#"subscription($loc: ID!) {
  syncStatus(locationId: $loc) { locationId job { id state mode stages { name state fetched } } freshness { stale syncing } }
}"#;

pub(crate) async fn open(app: &TestApp, protocol: &str) -> Socket {
    let url = app.base.replace("http://", "ws://") + "/graphql/ws";
    let mut request = url.into_client_request().unwrap();
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", protocol.parse().unwrap());
    let (socket, response) = tokio_tungstenite::connect_async(request)
        .await
        .expect("the upgrade succeeds");
    assert_eq!(response.headers()["sec-websocket-protocol"], protocol);
    socket
}

pub(crate) async fn send(socket: &mut Socket, message: Value) {
    socket
        .send(Message::Text(message.to_string().into()))
        .await
        .unwrap();
}

/// The next JSON message, skipping pings and keep-alives; `None` when the server closed.
pub(crate) async fn next(socket: &mut Socket) -> Option<Value> {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(60), socket.next())
            .await
            .expect("a message within a minute")?;
        match message.ok()? {
            Message::Text(text) => {
                let value: Value = serde_json::from_str(&text).unwrap();
                if matches!(value["type"].as_str(), Some("ka" | "ping" | "pong")) {
                    continue;
                }
                return Some(value);
            }
            Message::Close(frame) => {
                return Some(json!({ "type": "close", "code": frame.map(|f| u16::from(f.code)) }));
            }
            _ => continue,
        }
    }
}

/// Subscribes in `protocol`, checks the first event is the current state, starts a sync and
/// follows its events to SUCCEEDED. Returns the events' job states.
async fn follow_a_sync(protocol: &str, data_type: &str, subscribe_type: &str) {
    for db in databases().await {
        let sim = spawn_sim(600).await;
        sim.set_latency(10, 0);
        let app = spawn_app_with_sim(&db.url, &sim).await;
        let loc = sim.locations[0].id.clone();
        full_sync_to_end(&app, &loc).await;
        let first_job = app.store.last_job(&loc).await.unwrap().unwrap().id;

        let mut socket = open(&app, protocol).await;
        send(&mut socket, json!({ "type": "connection_init", "payload": { "Authorization": format!("Bearer {ADMIN_KEY}") } })).await;
        assert_eq!(next(&mut socket).await.unwrap()["type"], "connection_ack");
        send(&mut socket, json!({ "id": "1", "type": subscribe_type, "payload": { "query": SUBSCRIPTION, "variables": { "loc": loc } } })).await;
        let current = next(&mut socket).await.unwrap();
        assert_eq!(current["type"], data_type, "{current}");
        let event = &current["payload"]["data"]["syncStatus"];
        assert_eq!(
            event["job"]["id"],
            first_job.as_str(),
            "the first event is the current state: {current}"
        );
        assert_eq!(event["job"]["state"], "SUCCEEDED");

        let answer = app
            .graphql(
                "mutation($loc: ID!) { refreshLocation(locationId: $loc, mode: FULL) { id } }",
                json!({ "loc": loc }),
            )
            .await;
        let job = answer["data"]["refreshLocation"]["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let mut states = Vec::new();
        loop {
            let message = next(&mut socket)
                .await
                .expect("events until the end of the sync");
            assert_eq!(message["type"], data_type, "{message}");
            let event = &message["payload"]["data"]["syncStatus"];
            assert_eq!(event["job"]["id"], job.as_str());
            let state = event["job"]["state"].as_str().unwrap().to_owned();
            if states.last() != Some(&state) {
                states.push(state.clone());
            }
            if state == "SUCCEEDED" {
                assert_eq!(event["freshness"]["syncing"], false, "{event}");
                break;
            }
        }
        assert_eq!(states, ["RUNNING", "SUCCEEDED"], "{protocol}");
    }
}

#[tokio::test]
async fn events_flow_to_succeeded_over_graphql_transport_ws() {
    follow_a_sync("graphql-transport-ws", "next", "subscribe").await;
}

#[tokio::test]
async fn events_flow_to_succeeded_over_the_legacy_graphql_ws() {
    follow_a_sync("graphql-ws", "data", "start").await;
}

#[tokio::test]
async fn a_connection_without_a_valid_key_is_refused() {
    for db in databases().await {
        let app = spawn_app_with(&db.url, |c| c.http.auth.allow_anonymous = false).await;
        load_fixture(&app.store, "loc", 3).await;

        // graphql-transport-ws: closed with 4403 Forbidden.
        for payload in [
            json!({}),
            json!({ "Authorization": "Bearer ghlk_not-a-real-key-at-all-000000000000000000" }),
        ] {
            let mut socket = open(&app, "graphql-transport-ws").await;
            send(
                &mut socket,
                json!({ "type": "connection_init", "payload": payload }),
            )
            .await;
            let answer = next(&mut socket).await.unwrap();
            assert_eq!(
                answer,
                json!({ "type": "close", "code": 4403 }),
                "{payload}"
            );
        }
        // The legacy protocol answers connection_error.
        let mut socket = open(&app, "graphql-ws").await;
        send(
            &mut socket,
            json!({ "type": "connection_init", "payload": {} }),
        )
        .await;
        assert_eq!(next(&mut socket).await.unwrap()["type"], "connection_error");

        // Another location's key: the subscription answers like an unknown location.
        let key = ghl_gateway::auth::generate_key(None, &["elsewhere".to_owned()], 0);
        app.store.insert_api_key(key.row).await.unwrap();
        let mut socket = open(&app, "graphql-transport-ws").await;
        send(&mut socket, json!({ "type": "connection_init", "payload": { "Authorization": format!("Bearer {}", key.key) } })).await;
        assert_eq!(next(&mut socket).await.unwrap()["type"], "connection_ack");
        send(&mut socket, json!({ "id": "1", "type": "subscribe", "payload": { "query": SUBSCRIPTION, "variables": { "loc": "loc" } } })).await;
        let answer = next(&mut socket).await.unwrap();
        assert_eq!(answer["type"], "next", "{answer}");
        assert_eq!(answer["payload"]["data"], Value::Null);
        assert_eq!(
            answer["payload"]["errors"][0]["extensions"]["code"],
            "NOT_FOUND"
        );
        assert!(
            !answer.to_string().contains("Location loc"),
            "no foreign data"
        );
    }
}
