//! Subscriptions over WebSocket (`/graphql/ws`), in graphql-transport-ws and the legacy
//! graphql-ws protocol, authenticated by the key in `connection_init`.

use async_graphql_axum::{GraphQLProtocol, GraphQLWebSocket};
use axum::extract::State;
use axum::response::Response;

use axum::extract::ws::{CloseFrame, Message};
use futures::{SinkExt, StreamExt};

use super::AppState;

/// The prefix of the reason a refused `connection_init` carries.
const REFUSED: &str = "forbidden: ";

/// The bearer token of a WebSocket `connection_init` payload: `{"Authorization": "Bearer <key>"}`
/// (any case, also under `headers`), or `{"apiKey": "<key>"}`. `Err` for a malformed one.
fn init_token(payload: &serde_json::Value) -> Result<Option<String>, crate::auth::AuthError> {
    let find = |object: &serde_json::Value| {
        object.as_object().and_then(|map| {
            map.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("authorization"))
                .and_then(|(_, v)| v.as_str().map(str::to_owned))
        })
    };
    if let Some(header) = find(payload).or_else(|| payload.get("headers").and_then(find)) {
        return crate::auth::parse_authorization(&header).map(|t| Some(t.to_owned()));
    }
    Ok(payload
        .get("apiKey")
        .and_then(|k| k.as_str())
        .map(str::to_owned))
}

/// Subscriptions over WebSocket. The key travels in `connection_init`; a connection without a
/// valid one, or over its key's connection limit, is refused as the protocol says
/// (graphql-transport-ws closes with 4403; the legacy protocol sends `connection_error`).
pub(super) async fn graphql_ws(
    State(state): State<AppState>,
    protocol: GraphQLProtocol,
    upgrade: axum::extract::WebSocketUpgrade,
) -> Response {
    upgrade
        .protocols(async_graphql::http::ALL_WEBSOCKET_PROTOCOLS)
        .on_upgrade(move |socket| {
            let auth = state.auth.clone();
            let (sink, stream) = socket.split();
            // async-graphql closes a refused connection_init with 1002; graphql-transport-ws
            // asks for 4403 Forbidden, which clients read as "do not retry with this key".
            let sink = sink.with(|message: Message| async move {
                Ok::<_, axum::Error>(match message {
                    Message::Close(Some(frame))
                        if frame.code == 1002 && frame.reason.starts_with(REFUSED) =>
                    {
                        Message::Close(Some(CloseFrame {
                            code: 4403,
                            reason: "Forbidden".into(),
                        }))
                    }
                    other => other,
                })
            });
            GraphQLWebSocket::new_with_pair(sink, stream, state.schema.clone(), protocol)
                .on_connection_init(move |payload| async move {
                    let refused =
                        |message: &str| async_graphql::Error::new(format!("{REFUSED}{message}"));
                    let token = init_token(&payload).map_err(|e| refused(&e.to_string()))?;
                    let caller = match auth.authenticate(token.as_deref()).await {
                        Ok(caller) => caller,
                        Err(crate::auth::AuthError::Store(error)) => {
                            tracing::error!(error = %error, "cannot check a WebSocket key");
                            return Err(refused("internal error"));
                        }
                        Err(error) => return Err(refused(&error.to_string())),
                    };
                    let slot = auth
                        .connections()
                        .try_acquire(caller.limit_key())
                        .ok_or_else(|| refused("too many WebSocket connections for this key"))?;
                    let mut data = async_graphql::Data::default();
                    data.insert(caller);
                    // Held for the life of the connection.
                    data.insert(std::sync::Arc::new(slot));
                    Ok(data)
                })
                .serve()
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_key_comes_from_any_usual_place_in_the_payload() {
        assert_eq!(
            init_token(&json!({ "Authorization": "Bearer k1" }))
                .unwrap()
                .as_deref(),
            Some("k1")
        );
        assert_eq!(
            init_token(&json!({ "authorization": "bearer k2" }))
                .unwrap()
                .as_deref(),
            Some("k2")
        );
        assert_eq!(
            init_token(&json!({ "headers": { "Authorization": "Bearer k3" } }))
                .unwrap()
                .as_deref(),
            Some("k3")
        );
        assert_eq!(
            init_token(&json!({ "apiKey": "k4" })).unwrap().as_deref(),
            Some("k4")
        );
        assert_eq!(init_token(&json!({})).unwrap(), None);
        assert!(init_token(&json!({ "Authorization": "Basic xyz" })).is_err());
    }
}
