//! Many subscribers of one location on a gateway process (`ghl-gateway serve`): a few hundred
//! sockets with one API key, half in graphql-transport-ws and half in the legacy graphql-ws,
//! each subscribed to `syncStatus` and `changes`, see the same events in the same order during a
//! FULL sync (identical subscriptions share one stream); once they close, the gateway's gauges of
//! connections and subscriptions are back at zero and the key's connection slots are all free.
//!
//! A process of its own, because the gauges are process-wide (as in `metrics.rs`).

use std::time::Duration;

use futures::future::join_all;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

use crate::helpers::*;
use crate::metrics::{Gateway, connect_location, settles, spawn_gateway, value};
use crate::subscription::{Socket, next, send};

/// Sockets in the test; the key may hold exactly this many.
const SOCKETS: usize = 200;
const STATUS: &str = "subscription($loc: ID!) { syncStatus(locationId: $loc) { locationId job { id state stages { name state fetched } } } }";
const CHANGES: &str =
    "subscription($loc: ID!) { changes(locationId: $loc) { kind op ids source dataVersion } }";

/// The protocol of socket `i`: its name, the subscribe message type, the event type.
fn protocol(i: usize) -> (&'static str, &'static str, &'static str) {
    if i.is_multiple_of(2) {
        ("graphql-transport-ws", "subscribe", "next")
    } else {
        ("graphql-ws", "start", "data")
    }
}

/// Socket `i`, acknowledged with `key`, subscribed to both fields of `loc` (ids `s` and `c`);
/// `Err` with the frame that refused it.
async fn subscriber(gateway: &Gateway, i: usize, key: &str, loc: &str) -> Result<Socket, Value> {
    let (name, subscribe, _) = protocol(i);
    let url = gateway.base.replace("http://", "ws://") + "/graphql/ws";
    let mut request = url.into_client_request().unwrap();
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", name.parse().unwrap());
    let (mut socket, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("the upgrade succeeds");
    send(&mut socket, json!({ "type": "connection_init", "payload": { "Authorization": format!("Bearer {key}") } })).await;
    let ack = next(&mut socket)
        .await
        .expect("an answer to connection_init");
    if ack["type"] != "connection_ack" {
        return Err(ack);
    }
    for (id, query) in [("s", STATUS), ("c", CHANGES)] {
        send(&mut socket, json!({ "id": id, "type": subscribe, "payload": { "query": query, "variables": { "loc": loc } } })).await;
    }
    Ok(socket)
}

/// Opens `SOCKETS` subscribers, all acknowledged.
async fn subscribers(gateway: &Gateway, key: &str, loc: &str) -> Vec<Socket> {
    let sockets = join_all((0..SOCKETS).map(|i| subscriber(gateway, i, key, loc))).await;
    sockets
        .into_iter()
        .enumerate()
        .map(|(i, s)| {
            s.unwrap_or_else(|frame| {
                panic!(
                    "socket {i} was refused: {frame}; the gateway's logs:\n{}",
                    gateway.logs.lock().unwrap()
                )
            })
        })
        .collect()
}

/// What socket `i` received until the sync's final status: the payloads of `syncStatus`, then
/// of `changes`, each in the order they came, then (after the final status) what came within a
/// second more.
async fn follow(i: usize, socket: &mut Socket) -> (Vec<Value>, Vec<Value>) {
    let (_, _, event) = protocol(i);
    let (mut status, mut changes) = (Vec::new(), Vec::new());
    let mut done = false;
    loop {
        let frame = if done {
            // The changes committed before the final status may still be on their way.
            match tokio::time::timeout(Duration::from_secs(1), next(socket)).await {
                Ok(frame) => frame,
                Err(_) => break,
            }
        } else {
            next(socket).await
        };
        let frame = frame.unwrap_or_else(|| panic!("socket {i} ended during the sync"));
        assert_eq!(frame["type"], event, "socket {i}: {frame}");
        let payload = frame["payload"].clone();
        assert!(payload["errors"].is_null(), "socket {i}: {frame}");
        match frame["id"].as_str() {
            Some("s") => {
                done = payload["data"]["syncStatus"]["job"]["state"] == "SUCCEEDED";
                status.push(payload);
            }
            Some("c") => changes.push(payload),
            _ => panic!("socket {i}: an event of no subscription: {frame}"),
        }
    }
    (status, changes)
}

async fn close_all(sockets: Vec<Socket>) {
    join_all(sockets.into_iter().map(|mut s| async move {
        let _ = s.close(None).await;
        // Read to the end, so that the close completes on both sides.
        while let Some(Ok(_)) = futures::StreamExt::next(&mut s).await {}
    }))
    .await;
}

#[tokio::test]
async fn hundreds_of_subscribers_see_the_same_events_and_leave_nothing_behind() {
    for db in databases().await {
        let sim = spawn_sim(600).await;
        sim.set_latency(10, 0);
        connect_location(&db, &sim).await;
        let loc = sim.locations[0].id.clone();
        let new = ghl_gateway::auth::generate_key(None, std::slice::from_ref(&loc), 1);
        db.store.insert_api_key(new.row).await.unwrap();
        let key = new.key;
        let gateway = spawn_gateway(
            &db,
            &sim,
            &[("MAX_WS_CONNECTIONS_PER_KEY", &SOCKETS.to_string())],
        )
        .await;

        let mut sockets = subscribers(&gateway, &key, &loc).await;
        // Every subscribe has reached the gateway once both of its operations run everywhere.
        settles(
            &gateway,
            "ghl_gateway_websocket_subscriptions",
            &[],
            (2 * SOCKETS) as f64,
        )
        .await;
        let scrape = gateway.scrape().await;
        assert_eq!(
            value(&scrape, "ghl_gateway_websocket_connections", &[]),
            SOCKETS as f64
        );
        let started = gateway
            .graphql(
                "mutation($loc: ID!) { refreshLocation(locationId: $loc, mode: FULL) { id } }",
                json!({ "loc": loc }),
            )
            .await;
        assert!(started["errors"].is_null(), "{started}");
        let job = started["data"]["refreshLocation"]["id"].clone();

        let seen = join_all(
            sockets
                .iter_mut()
                .enumerate()
                .map(|(i, socket)| follow(i, socket)),
        )
        .await;
        let (status, changes) = &seen[0];
        assert!(
            status
                .iter()
                .all(|p| p["data"]["syncStatus"]["job"]["id"] == job),
            "only the new job's events: {status:?}"
        );
        assert!(
            status.len() >= 2,
            "RUNNING and SUCCEEDED at least: {status:?}"
        );
        assert!(
            !changes.is_empty(),
            "a FULL sync of 600 contacts writes records"
        );
        let written: usize = changes
            .iter()
            .filter(|c| c["data"]["changes"]["kind"] == "CONTACT")
            .filter(|c| c["data"]["changes"]["op"] == "UPSERT")
            .map(|c| c["data"]["changes"]["ids"].as_array().unwrap().len())
            .sum();
        assert_eq!(written, 600, "every contact in some change event");
        for (i, (s, c)) in seen.iter().enumerate() {
            assert_eq!(s, status, "socket {i}'s syncStatus events");
            assert_eq!(c, changes, "socket {i}'s changes events");
        }

        close_all(sockets).await;
        settles(&gateway, "ghl_gateway_websocket_subscriptions", &[], 0.0).await;
        settles(&gateway, "ghl_gateway_websocket_connections", &[], 0.0).await;
        // The key's connection slots are all free again: as many sockets as it may hold open.
        let again = subscribers(&gateway, &key, &loc).await;
        settles(
            &gateway,
            "ghl_gateway_websocket_subscriptions",
            &[],
            (2 * SOCKETS) as f64,
        )
        .await;
        close_all(again).await;
        settles(&gateway, "ghl_gateway_websocket_connections", &[], 0.0).await;
        settles(&gateway, "ghl_gateway_websocket_subscriptions", &[], 0.0).await;
    }
}
