//! The WebSocket protocol rules of `/graphql/ws` over real sockets: graphql-transport-ws's close
//! codes (4400, 4401, 4403, 4408, 4409, 4429), silence after the client's `complete`, the legacy
//! graphql-ws's `ka`, `connection_error` and normal close, and sessions that end when their key
//! is revoked or loses its location, with the per-key connection slot freed however they end.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use sea_orm::ConnectionTrait;

use crate::helpers::*;
use crate::subscription::{SUBSCRIPTION, Socket, open, send};

const TRANSPORT: &str = "graphql-transport-ws";
const LEGACY: &str = "graphql-ws";

/// A frame from the server, keep-alives included.
#[derive(Debug, PartialEq)]
enum Frame {
    Json(Value),
    Close(u16, String),
    /// The connection ended without a close frame.
    Gone,
}

/// The next frame, within `secs` seconds.
async fn frame_within(socket: &mut Socket, secs: u64) -> Frame {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(secs), socket.next())
            .await
            .unwrap_or_else(|_| panic!("a frame within {secs} s"));
        match message {
            Some(Ok(Message::Text(text))) => {
                return Frame::Json(serde_json::from_str(&text).expect("frames are JSON"));
            }
            Some(Ok(Message::Close(frame))) => {
                return frame.map_or(Frame::Close(1005, String::new()), |f| {
                    Frame::Close(u16::from(f.code), f.reason.to_string())
                });
            }
            Some(Ok(_)) => continue,
            None | Some(Err(_)) => return Frame::Gone,
        }
    }
}

async fn frame(socket: &mut Socket) -> Frame {
    frame_within(socket, 30).await
}

/// The next frame that is not a keep-alive.
async fn message(socket: &mut Socket) -> Frame {
    loop {
        match frame(socket).await {
            Frame::Json(value)
                if matches!(value["type"].as_str(), Some("ka" | "ping" | "pong")) => {}
            other => return other,
        }
    }
}

fn init(key: &str) -> Value {
    json!({ "type": "connection_init", "payload": { "Authorization": format!("Bearer {key}") } })
}

fn subscribe(protocol: &str, id: &str, loc: &str) -> Value {
    let kind = if protocol == TRANSPORT {
        "subscribe"
    } else {
        "start"
    };
    json!({ "id": id, "type": kind, "payload": { "query": SUBSCRIPTION, "variables": { "loc": loc } } })
}

/// A socket past `connection_init` with `key`.
async fn acked(app: &TestApp, protocol: &str, key: &str) -> Socket {
    let mut socket = open(app, protocol).await;
    send(&mut socket, init(key)).await;
    let answer = message(&mut socket).await;
    assert_eq!(answer, Frame::Json(json!({ "type": "connection_ack" })));
    socket
}

/// Asserts the server ended the connection as `protocol` says: graphql-transport-ws closes with
/// `close` and a reason holding `reason`; the legacy protocol sends `connection_error` with the
/// message and `code`, then closes normally (1000).
async fn assert_ended(socket: &mut Socket, protocol: &str, close: u16, reason: &str, code: &str) {
    if protocol == TRANSPORT {
        match message(socket).await {
            Frame::Close(got, text) => {
                assert_eq!(got, close, "{text}");
                assert!(text.contains(reason), "{text:?} holds {reason:?}");
                assert!(text.len() <= 123, "a close reason fits its frame");
            }
            other => panic!("expected a close {close}, got {other:?}"),
        }
    } else {
        match message(socket).await {
            Frame::Json(error) => {
                assert_eq!(error["type"], "connection_error", "{error}");
                let text = error["payload"]["message"].as_str().unwrap_or_default();
                assert!(text.contains(reason), "{error} holds {reason:?}");
                assert_eq!(error["payload"]["extensions"]["code"], code, "{error}");
            }
            other => panic!("expected connection_error, got {other:?}"),
        }
        assert_eq!(message(socket).await, Frame::Close(1000, String::new()));
    }
}

#[tokio::test]
async fn invalid_json_and_unknown_types_close_with_4400_and_a_short_reason() {
    let db = sqlite().await;
    let app = spawn_app(&db.url).await;
    let long_garbage = format!("{{\"type\": {}", "x".repeat(500));
    for protocol in [TRANSPORT, LEGACY] {
        for before_init in [true, false] {
            for bad in [
                long_garbage.clone(),
                json!({ "type": "nonsense" }).to_string(),
            ] {
                let mut socket = if before_init {
                    open(&app, protocol).await
                } else {
                    acked(&app, protocol, ADMIN_KEY).await
                };
                socket.send(Message::Text(bad.into())).await.unwrap();
                assert_ended(
                    &mut socket,
                    protocol,
                    4400,
                    "Invalid message",
                    "BAD_REQUEST",
                )
                .await;
            }
        }
    }
}

#[tokio::test]
async fn subscribe_before_connection_ack_closes_with_4401() {
    let db = sqlite().await;
    let app = spawn_app(&db.url).await;
    load_fixture(&app.store, "loc", 1).await;
    for protocol in [TRANSPORT, LEGACY] {
        let mut socket = open(&app, protocol).await;
        send(&mut socket, subscribe(protocol, "1", "loc")).await;
        assert_ended(
            &mut socket,
            protocol,
            4401,
            "Unauthorized",
            "UNAUTHENTICATED",
        )
        .await;
    }
}

#[tokio::test]
async fn a_second_connection_init_closes_with_4429() {
    let db = sqlite().await;
    let app = spawn_app(&db.url).await;
    for protocol in [TRANSPORT, LEGACY] {
        let mut socket = acked(&app, protocol, ADMIN_KEY).await;
        send(&mut socket, init(ADMIN_KEY)).await;
        assert_ended(
            &mut socket,
            protocol,
            4429,
            "Too many initialisation",
            "BAD_REQUEST",
        )
        .await;
    }
}

#[tokio::test]
async fn no_connection_init_within_the_timeout_closes_with_4408() {
    let db = sqlite().await;
    let app = spawn_app_with(&db.url, |c| c.http.ws_init_timeout_secs = 1).await;
    for protocol in [TRANSPORT, LEGACY] {
        let mut socket = open(&app, protocol).await;
        assert_ended(&mut socket, protocol, 4408, "timeout", "TIMEOUT").await;
    }
    // An initialised socket is not closed by the timeout.
    let mut socket = acked(&app, TRANSPORT, ADMIN_KEY).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    send(&mut socket, json!({ "type": "ping" })).await;
    assert_eq!(
        frame(&mut socket).await,
        Frame::Json(json!({ "type": "pong" }))
    );
}

#[tokio::test]
async fn a_subscription_id_already_active_closes_with_4409() {
    let db = sqlite().await;
    let app = spawn_app(&db.url).await;
    load_fixture(&app.store, "loc", 1).await;
    for protocol in [TRANSPORT, LEGACY] {
        let mut socket = acked(&app, protocol, ADMIN_KEY).await;
        // A location that never synced: the subscription waits for its first job.
        send(&mut socket, subscribe(protocol, "a1", "loc")).await;
        send(&mut socket, subscribe(protocol, "a1", "loc")).await;
        assert_ended(
            &mut socket,
            protocol,
            4409,
            "Subscriber for a1 already exists",
            "BAD_REQUEST",
        )
        .await;
    }
}

#[tokio::test]
async fn nothing_is_sent_for_an_id_after_the_clients_complete() {
    let db = sqlite().await;
    let sim = spawn_sim(200).await;
    let app = spawn_app_with_sim(&db.url, &sim).await;
    let loc = sim.locations[0].id.clone();
    full_sync_to_end(&app, &loc).await;
    for protocol in [TRANSPORT, LEGACY] {
        let (data, complete) = if protocol == TRANSPORT {
            ("next", "complete")
        } else {
            ("data", "stop")
        };
        let mut socket = acked(&app, protocol, ADMIN_KEY).await;
        send(&mut socket, subscribe(protocol, "gone", &loc)).await;
        send(&mut socket, subscribe(protocol, "kept", &loc)).await;
        let mut ids = Vec::new();
        for _ in 0..2 {
            match message(&mut socket).await {
                Frame::Json(v) if v["type"] == data => ids.push(v["id"].clone()),
                other => panic!("the current state, got {other:?}"),
            }
        }
        ids.sort_by_key(|id| id.to_string());
        assert_eq!(ids, [json!("gone"), json!("kept")]);
        send(&mut socket, json!({ "id": "gone", "type": complete })).await;

        app.graphql(
            "mutation($loc: ID!) { refreshLocation(locationId: $loc, mode: FULL) { id } }",
            json!({ "loc": loc }),
        )
        .await;
        loop {
            let Frame::Json(event) = message(&mut socket).await else {
                panic!("events until the sync ends");
            };
            assert_eq!(event["id"], "kept", "nothing for the completed id: {event}");
            assert_eq!(event["type"], data, "{event}");
            if event["payload"]["data"]["syncStatus"]["job"]["state"] == "SUCCEEDED" {
                break;
            }
        }
    }
}

#[tokio::test]
async fn the_legacy_protocol_sends_keep_alives_after_the_ack() {
    let db = sqlite().await;
    let app = spawn_app(&db.url).await;
    let mut socket = open(&app, LEGACY).await;
    send(&mut socket, init(ADMIN_KEY)).await;
    assert_eq!(
        frame(&mut socket).await,
        Frame::Json(json!({ "type": "connection_ack" }))
    );
    assert_eq!(
        frame(&mut socket).await,
        Frame::Json(json!({ "type": "ka" }))
    );
}

#[tokio::test]
async fn an_unknown_key_is_invalid_not_malformed() {
    let db = sqlite().await;
    let app = spawn_app_with(&db.url, |c| c.http.auth.allow_anonymous = false).await;
    let unknown = format!("ghlk_{}", "A".repeat(43));
    for key in ["not-a-key", unknown.as_str()] {
        for protocol in [TRANSPORT, LEGACY] {
            let mut socket = open(&app, protocol).await;
            send(&mut socket, init(key)).await;
            assert_ended(
                &mut socket,
                protocol,
                4403,
                "invalid API key",
                "UNAUTHENTICATED",
            )
            .await;
        }
        let reply: Value = app
            .client
            .post(format!("{}/graphql", app.base))
            .bearer_auth(key)
            .json(&json!({ "query": "{ locations { id } }" }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let text = reply["errors"][0]["message"].as_str().unwrap_or_default();
        assert!(text.contains("invalid API key"), "{reply}");
    }
}

/// A key of `locations`: its id and the key.
async fn new_key(app: &TestApp, locations: &[&str]) -> (String, String) {
    let locations: Vec<String> = locations.iter().map(|l| l.to_string()).collect();
    let new = ghl_gateway::auth::generate_key(None, &locations, 1);
    let id = new.row.id.clone();
    app.store.insert_api_key(new.row).await.unwrap();
    (id, new.key)
}

#[tokio::test]
async fn a_revoked_key_s_sockets_close_with_4403_within_5_s() {
    for db in databases().await {
        let app = spawn_app(&db.url).await;
        load_fixture(&app.store, "loc", 1).await;
        for protocol in [TRANSPORT, LEGACY] {
            let (id, key) = new_key(&app, &["loc"]).await;
            let mut socket = acked(&app, protocol, &key).await;
            send(&mut socket, subscribe(protocol, "1", "loc")).await;
            // As `keys revoke` does from another process: a write to the database.
            assert!(app.store.revoke_api_key(&id, 2).await.unwrap());
            let ended = tokio::time::timeout(
                Duration::from_secs(5),
                assert_ended(&mut socket, protocol, 4403, "revoked", "UNAUTHENTICATED"),
            )
            .await;
            assert!(ended.is_ok(), "{}: closed within 5 s", db.name);
        }
    }
}

#[tokio::test]
async fn one_periodic_check_of_a_key_closes_all_of_its_idle_sockets_and_no_other() {
    let db = sqlite().await;
    let app = spawn_app(&db.url).await;
    load_fixture(&app.store, "loc", 1).await;
    let (id, key) = new_key(&app, &["loc"]).await;
    let (_, other_key) = new_key(&app, &["loc"]).await;
    // The key's sockets share one periodic check; another key's socket has its own.
    let mut sockets = Vec::new();
    for (i, protocol) in [TRANSPORT, LEGACY, TRANSPORT, LEGACY]
        .into_iter()
        .enumerate()
    {
        let mut socket = acked(&app, protocol, &key).await;
        send(&mut socket, subscribe(protocol, &i.to_string(), "loc")).await;
        sockets.push((protocol, socket));
    }
    let mut other = acked(&app, TRANSPORT, &other_key).await;
    send(&mut other, subscribe(TRANSPORT, "1", "loc")).await;
    assert!(app.store.revoke_api_key(&id, 2).await.unwrap());
    for (protocol, socket) in &mut sockets {
        let ended = tokio::time::timeout(
            Duration::from_secs(5),
            assert_ended(socket, protocol, 4403, "revoked", "UNAUTHENTICATED"),
        )
        .await;
        assert!(ended.is_ok(), "every socket of the key closed within 5 s");
    }
    // The other key's socket is still served, through at least one more periodic check.
    tokio::time::sleep(Duration::from_secs(3)).await;
    send(&mut other, json!({ "type": "ping" })).await;
    loop {
        match frame(&mut other).await {
            Frame::Json(value) if value["type"] == "pong" => break,
            Frame::Json(value) if value["type"] == "next" => continue,
            unexpected => panic!("the other key's socket is open: {unexpected:?}"),
        }
    }
}

#[tokio::test]
async fn a_key_that_loses_the_location_is_closed_with_4403() {
    for db in databases().await {
        let app = spawn_app(&db.url).await;
        load_fixture(&app.store, "loc", 1).await;
        for protocol in [TRANSPORT, LEGACY] {
            let (id, key) = new_key(&app, &["loc", "other"]).await;
            let mut socket = acked(&app, protocol, &key).await;
            send(&mut socket, subscribe(protocol, "1", "loc")).await;
            app.store
                .connection()
                .execute_unprepared(&format!(
                    "UPDATE api_keys SET location_ids = '[\"other\"]' WHERE id = '{id}'"
                ))
                .await
                .unwrap();
            let ended = tokio::time::timeout(
                Duration::from_secs(5),
                assert_ended(&mut socket, protocol, 4403, "locations", "FORBIDDEN"),
            )
            .await;
            assert!(ended.is_ok(), "{}: closed within 5 s", db.name);
        }
    }
}

#[tokio::test]
async fn no_event_reaches_a_key_after_its_revocation() {
    let db = sqlite().await;
    let sim = spawn_sim(200).await;
    sim.set_latency(10, 0);
    let app = spawn_app_with_sim(&db.url, &sim).await;
    let loc = sim.locations[0].id.clone();
    full_sync_to_end(&app, &loc).await;
    for protocol in [TRANSPORT, LEGACY] {
        let (id, key) = new_key(&app, &[&loc]).await;
        let mut socket = acked(&app, protocol, &key).await;
        send(&mut socket, subscribe(protocol, "1", &loc)).await;
        assert!(matches!(message(&mut socket).await, Frame::Json(v) if v["id"] == "1"));
        assert!(app.store.revoke_api_key(&id, 2).await.unwrap());
        app.graphql(
            "mutation($loc: ID!) { refreshLocation(locationId: $loc, mode: FULL) { id } }",
            json!({ "loc": loc }),
        )
        .await;
        // The sync's events come while the key is revoked: the next frame ends the session.
        assert_ended(&mut socket, protocol, 4403, "revoked", "UNAUTHENTICATED").await;
        // Let the sync finish before the next round starts another.
        full_sync_to_end(&app, &loc).await;
    }
}

#[tokio::test]
async fn the_per_key_connection_slot_is_freed_however_the_socket_closes() {
    let db = sqlite().await;
    let app = spawn_app_with(&db.url, |c| c.http.auth.max_ws_connections_per_key = 1).await;
    let (_, key) = new_key(&app, &["loc"]).await;

    // Over the limit: refused.
    let first = acked(&app, TRANSPORT, &key).await;
    let mut second = open(&app, LEGACY).await;
    send(&mut second, init(&key)).await;
    assert_ended(&mut second, LEGACY, 4403, "too many", "FORBIDDEN").await;

    // The client closes: the slot is free again.
    drop(first);
    let mut third = eventually_acked(&app, &key).await;

    // The server closes (a protocol error): free again.
    third.send(Message::Text("{".into())).await.unwrap();
    assert_ended(
        &mut third,
        TRANSPORT,
        4400,
        "Invalid message",
        "BAD_REQUEST",
    )
    .await;
    let fourth = eventually_acked(&app, &key).await;
    drop(fourth);
}

/// A socket acked for `key` once the server has noticed the previous one closed.
async fn eventually_acked(app: &TestApp, key: &str) -> Socket {
    for _ in 0..50 {
        let mut socket = open(app, TRANSPORT).await;
        send(&mut socket, init(key)).await;
        match message(&mut socket).await {
            Frame::Json(ack) if ack["type"] == "connection_ack" => return socket,
            Frame::Close(4403, _) => tokio::time::sleep(Duration::from_millis(100)).await,
            other => panic!("ack or refusal, got {other:?}"),
        }
    }
    panic!("the slot was never freed");
}

#[tokio::test]
async fn sockets_without_connection_init_count_against_a_global_cap() {
    let db = sqlite().await;
    let app = spawn_app_with(&db.url, |c| c.http.max_ws_pending = 2).await;
    let (_, key) = new_key(&app, &["loc-a"]).await;
    // Two idle sockets fill the cap, whoever opens them.
    let first = open(&app, "graphql-transport-ws").await;
    let _second = open(&app, "graphql-ws").await;
    let url = app.base.replace("http://", "ws://") + "/graphql/ws";
    let refused = |url: String| async move {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
        let mut request = url.into_client_request().unwrap();
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            "graphql-transport-ws".parse().unwrap(),
        );
        match tokio_tungstenite::connect_async(request).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status(),
            other => panic!(
                "the upgrade was not refused: {:?}",
                other.map(|(_, r)| r.status())
            ),
        }
    };
    assert_eq!(refused(url.clone()).await, 503);
    // A socket past `connection_init` no longer counts; one that closes gives its place back.
    let mut first = first;
    send(&mut first, init(&key)).await;
    assert_eq!(
        message(&mut first).await,
        Frame::Json(json!({ "type": "connection_ack" }))
    );
    let _third = open(&app, "graphql-transport-ws").await;
    assert_eq!(refused(url.clone()).await, 503);
    drop(_second);
    // The server sees the close a moment later: poll the upgrade until it is accepted.
    let mut accepted = false;
    for _ in 0..50 {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
        let mut request = url.clone().into_client_request().unwrap();
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", "graphql-ws".parse().unwrap());
        if tokio_tungstenite::connect_async(request).await.is_ok() {
            accepted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(accepted, "a closed idle socket frees its place");
}
