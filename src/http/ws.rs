//! Subscriptions over WebSocket (`/graphql/ws`), in graphql-transport-ws and the legacy
//! graphql-ws protocol (subscriptions-transport-ws), authenticated by the key in
//! `connection_init`.
//!
//! The protocol layer is ours, a small state machine per socket, because async-graphql's
//! handler does not follow all of graphql-transport-ws's rules (close codes 4400/4401/4408/4409/
//! 4429, a short close reason, silence after the client's `complete`); the operations still run on
//! async-graphql's executor (`Schema::execute_stream`). The session also re-checks its key while
//! open: a revoked key, or one whose locations shrank, is closed with 4403 before any further event.
//! It owns nothing but its socket; the store is reached only through the [`Authenticator`].
//!
//! Sized for many idle subscribers: each socket reads into a small buffer ([`READ_BUFFER`]) and
//! writes its frames out as soon as they are sent (a send waits for the peer to take it), so an
//! idle socket holds a few KB. Events come from [`fanout`]: identical subscriptions share one
//! stream whose events are serialized once, after one check of the key; the whole frame of an
//! event is built once per subscription id and shared by the sockets that use that id (no copy
//! per socket but the socket's own write buffer), and the events ready together (a sync page's
//! status and its changes) leave in one write. A socket that reads too slowly skips events (the
//! shared ring moves on) instead of queueing them. An idle socket has no timer of its own: the
//! periodic check of its key runs once per key ([`recheck`]) and wakes the key's sockets only
//! when the key changed.
//! Closed sockets give their memory back to the system ([`trim_after_close`]).

mod fanout;
mod recheck;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use async_graphql::Request;
use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures::future::BoxFuture;
use futures::{FutureExt, SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_stream::StreamMap;

use self::fanout::{Event, Events, Fanout};
use self::recheck::{KeyCheck, KeyChecks, Verdict};
use super::AppState;
use crate::auth::{AuthError, Authenticator, Caller, ConnectionGuard};

/// What the sockets of one router share: one stream per subscription shape ([`fanout`]), the
/// checks of one key ([`recheck`]).
#[derive(Clone, Default)]
pub(super) struct Shared {
    fanout: Fanout,
    keys: KeyChecks,
}

/// Bytes each socket reads into at a time (tungstenite's default is 128 KiB). Client frames are
/// small (`connection_init`, `subscribe`, `ping`); a larger one grows the buffer while it lasts.
pub const READ_BUFFER: usize = 4 * 1024;
/// Bytes of outgoing frames a socket gathers before it writes them out without being asked to:
/// the events of a burst ([`BURST`]) are gathered, then written with one flush. Nothing is kept
/// allocated for it while the socket is idle beyond the largest burst it sent.
pub const WRITE_BUFFER: usize = 16 * 1024;
/// Bytes of outgoing frames a socket may hold unsent. Each burst is flushed before the socket
/// reads its next event, so no queue builds up here; the bound stops a runaway frame.
pub const MAX_WRITE_BUFFER: usize = 1 << 20;
/// Events a socket writes out together at most, when they are ready at once.
const BURST: usize = 16;

/// How often the legacy protocol's `ka` keep-alive is sent.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// The bucket of the sockets not yet past `connection_init` (process-wide, `--max-ws-pending`)
/// in the pending-socket limiter.
const PENDING: &str = "pending";

/// The two subprotocols, chosen by the client's `Sec-WebSocket-Protocol`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Protocol {
    /// graphql-transport-ws (the `graphql-ws` library).
    TransportWs,
    /// graphql-ws (the legacy subscriptions-transport-ws).
    Legacy,
}

impl Protocol {
    /// The subprotocol's name, as the client asks for it (the `protocol` label of metrics).
    fn name(self) -> &'static str {
        match self {
            Protocol::TransportWs => "graphql-transport-ws",
            Protocol::Legacy => "graphql-ws",
        }
    }

    /// The `type` of the frame that carries an operation's result.
    fn event_kind(self) -> &'static str {
        match self {
            Protocol::TransportWs => "next",
            Protocol::Legacy => "data",
        }
    }
}

/// Why the server ends a connection: a close code for graphql-transport-ws (its reason is short,
/// a close frame holds at most 123 bytes), a `connection_error` code for the legacy protocol.
#[derive(Debug, PartialEq, Eq)]
struct Violation {
    close: u16,
    reason: String,
    code: &'static str,
}

impl Violation {
    fn new(close: u16, reason: impl Into<String>, code: &'static str) -> Self {
        let mut reason = reason.into();
        if reason.len() > 123 {
            let mut end = 120;
            while !reason.is_char_boundary(end) {
                end -= 1;
            }
            reason.truncate(end);
            reason.push_str("...");
        }
        Self {
            close,
            reason,
            code,
        }
    }

    fn bad_request(reason: impl Into<String>) -> Self {
        Self::new(4400, reason, "BAD_REQUEST")
    }

    fn forbidden(reason: impl Into<String>) -> Self {
        Self::new(4403, reason, "FORBIDDEN")
    }
}

/// The bearer token of a WebSocket `connection_init` payload: `{"Authorization": "Bearer <key>"}`
/// (any case, also under `headers`), or `{"apiKey": "<key>"}`. `Err` for a malformed one.
fn init_token(payload: &Value) -> Result<Option<String>, AuthError> {
    let find = |object: &Value| {
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
    upgrade: WebSocketUpgrade,
) -> Response {
    let upgrade = upgrade
        .protocols(async_graphql::http::ALL_WEBSOCKET_PROTOCOLS)
        .read_buffer_size(READ_BUFFER)
        // Gather a burst's frames, not 128 KiB (tungstenite's default) before writing out.
        .write_buffer_size(WRITE_BUFFER)
        .max_write_buffer_size(MAX_WRITE_BUFFER)
        // A client's message is a GraphQL request: bounded like a POST body.
        .max_message_size(state.max_body_bytes)
        .max_frame_size(state.max_body_bytes);
    let protocol = match upgrade.selected_protocol().and_then(|p| p.to_str().ok()) {
        Some("graphql-transport-ws") => Protocol::TransportWs,
        Some("graphql-ws") => Protocol::Legacy,
        _ => {
            return (
                StatusCode::BAD_REQUEST,
                "expected the WebSocket subprotocol graphql-transport-ws or graphql-ws",
            )
                .into_response();
        }
    };
    let Some(pending) = state.ws_pending.try_acquire(PENDING) else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "too many WebSocket connections awaiting connection_init",
        )
            .into_response();
    };
    let session = Session {
        schema: state.schema.clone(),
        shared: state.ws_shared.clone(),
        auth: state.auth.clone(),
        protocol,
        init_timeout: state.ws_init_timeout,
        pending: Some(pending),
        caller: None,
        check: None,
        verdicts: None,
        allowed: None,
        slot: None,
    };
    // The socket's log lines keep the upgrade request's span (its request id).
    let span = tracing::Span::current();
    upgrade.on_upgrade(move |socket| tracing::Instrument::instrument(session.run(socket), span))
}

/// One socket's state: before `connection_init` (`caller` is `None`), then authenticated.
struct Session {
    schema: crate::graphql::AppSchema,
    /// The shared streams of identical subscriptions, the shared checks of keys.
    shared: Shared,
    auth: Authenticator,
    protocol: Protocol,
    init_timeout: Duration,
    /// The pending-socket slot, dropped at `connection_init`.
    pending: Option<ConnectionGuard>,
    caller: Option<Caller>,
    /// The API key's shared check, run again while the socket is open (`None` for the operator
    /// key and anonymous callers, which are not checked again).
    check: Option<std::sync::Arc<KeyCheck>>,
    /// The verdicts of the key's periodic check, from `connection_init` until the loop takes them.
    verdicts: Option<watch::Receiver<Option<Verdict>>>,
    /// The key's locations as the last verdict that allowed an event found them: a verdict
    /// holding this very set (the key's checks hand out one set while it does not change)
    /// allows the next event without comparing the sets again.
    allowed: Option<Arc<BTreeSet<String>>>,
    /// The per-key connection slot, freed when the session ends, however it ends.
    slot: Option<ConnectionGuard>,
}

/// What the loop does after a client frame.
enum Step {
    Continue,
    /// Send these frames, then go on.
    Send(Vec<Value>),
    /// Send this event frame (already JSON text, shared with other sockets), then go on.
    Event(Utf8Bytes),
    /// End the connection: a protocol violation, refusal, or revocation.
    End(Violation),
    /// The client left (`connection_terminate`, a close frame, or the socket dropped).
    Gone,
}

/// The running operations of a socket by id. The id is shared (the map hands out a copy of it
/// with each event).
type Subscriptions = StreamMap<Arc<str>, Operation>;

/// One running operation of a socket: its events, then one `None` when they end (the socket
/// says `complete`). Counted in the gauge of running operations until then, or until it is
/// removed.
struct Operation {
    events: Events,
    running: Option<crate::telemetry::metrics::GaugeGuard>,
}

impl futures::Stream for Operation {
    type Item = Option<Event>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Option<Event>>> {
        use std::task::Poll;
        if self.running.is_none() {
            return Poll::Ready(None);
        }
        match self.events.poll_next_unpin(cx) {
            Poll::Ready(Some(event)) => Poll::Ready(Some(Some(event))),
            Poll::Ready(None) => {
                self.running = None;
                Poll::Ready(Some(None))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Session {
    /// Runs the socket until either side ends it.
    async fn run(mut self, mut socket: WebSocket) {
        let _open = crate::telemetry::metrics::ws_connection(self.protocol.name());
        let mut subscriptions = Subscriptions::new();
        let reads = ReadGate::default();
        let init_deadline = tokio::time::sleep(self.init_timeout);
        tokio::pin!(init_deadline);
        // Ends once the key's periodic check finds it revoked or narrowed; set at
        // `connection_init` for an API key. One future for the socket's life: it waits in the
        // key's list of watchers, woken only when the key's state changes (no timer per socket).
        let mut revoked: BoxFuture<'static, Violation> = futures::future::pending().boxed();
        let mut keepalive =
            tokio::time::interval_at(Instant::now() + KEEPALIVE_INTERVAL, KEEPALIVE_INTERVAL);
        keepalive.set_missed_tick_behavior(MissedTickBehavior::Delay);

        let end = loop {
            if let (Some(verdicts), Some(Caller::Key { locations, .. })) =
                (self.verdicts.take(), &self.caller)
            {
                revoked = revocation(verdicts, locations.clone()).boxed();
            }
            let step = tokio::select! {
                frame = std::future::poll_fn(|cx| reads.poll_next(&mut socket, cx)) => match frame {
                    Some(Ok(Message::Text(text))) => self.on_text(text.as_str(), &mut subscriptions).await,
                    Some(Ok(Message::Binary(_))) => {
                        Step::End(Violation::bad_request("binary frames are not part of the protocol"))
                    }
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => Step::Gone,
                    Some(Ok(_)) => Step::Continue,
                },
                () = &mut init_deadline, if self.caller.is_none() => {
                    Step::End(Violation::new(4408, "Connection initialisation timeout", "TIMEOUT"))
                }
                Some((id, response)) = subscriptions.next(), if !subscriptions.is_empty() => {
                    match response {
                        Some(event) => match self.admit(event.checked()).await {
                            Ok(()) => Step::Event(event.frame(self.protocol.event_kind(), &id)),
                            Err(violation) => Step::End(violation),
                        },
                        // The stream ended on the server's side: say so once.
                        None => Step::Send(vec![json!({ "type": "complete", "id": &*id })]),
                    }
                }
                violation = &mut revoked => Step::End(violation),
                _ = keepalive.tick(), if self.caller.is_some() && self.protocol == Protocol::Legacy => {
                    Step::Send(vec![json!({ "type": "ka" })])
                }
            };
            match step {
                Step::Continue => {}
                Step::Send(frames) => {
                    for frame in frames {
                        if socket
                            .send(Message::Text(frame.to_string().into()))
                            .await
                            .is_err()
                        {
                            break;
                        }
                    }
                }
                Step::Event(frame) => {
                    // Events ready as well (a sync page's status and its changes come together)
                    // leave in the same write: one system call per socket for the burst.
                    let mut ended = None;
                    let mut next = Some(Message::Text(frame));
                    let mut queued = 0;
                    while let Some(message) = next.take() {
                        // A failed write means the socket is gone: the next read says so.
                        if socket.feed(message).await.is_err() {
                            break;
                        }
                        queued += 1;
                        if queued == BURST {
                            break;
                        }
                        next = match subscriptions.next().now_or_never() {
                            Some(Some((id, Some(event)))) => {
                                if event.checked().is_none() && self.check.is_some() {
                                    // This socket reads its key itself: what waits goes first.
                                    let _ = socket.flush().await;
                                }
                                match self.admit(event.checked()).await {
                                    Ok(()) => Some(Message::Text(
                                        event.frame(self.protocol.event_kind(), &id),
                                    )),
                                    Err(violation) => {
                                        ended = Some(violation);
                                        None
                                    }
                                }
                            }
                            Some(Some((id, None))) => Some(Message::Text(
                                json!({ "type": "complete", "id": &*id }).to_string().into(),
                            )),
                            // Nothing else ready (or no operation left).
                            _ => None,
                        };
                    }
                    let _ = socket.flush().await;
                    if let Some(violation) = ended {
                        break Some(violation);
                    }
                }
                Step::End(violation) => break Some(violation),
                Step::Gone => break None,
            }
        };
        if let Some(violation) = end {
            tracing::info!(
                close = violation.close,
                code = violation.code,
                key_id = self.caller.as_ref().and_then(Caller::key_id),
                "WebSocket connection ended by the server"
            );
            let frame = match self.protocol {
                Protocol::TransportWs => CloseFrame {
                    code: violation.close,
                    reason: violation.reason.into(),
                },
                Protocol::Legacy => {
                    let error = json!({
                        "type": "connection_error",
                        "payload": { "message": violation.reason, "extensions": { "code": violation.code } },
                    });
                    // Best effort: the close below follows either way.
                    let _ = socket.send(Message::Text(error.to_string().into())).await;
                    CloseFrame {
                        code: 1000,
                        reason: "".into(),
                    }
                }
            };
            let _ = socket.send(Message::Close(Some(frame))).await;
        }
        // `self.slot` drops here: the key's connection slot is free again.
        trim_after_close();
    }

    /// One text frame from the client.
    async fn on_text(&mut self, text: &str, subscriptions: &mut Subscriptions) -> Step {
        let Ok(message) = serde_json::from_str::<Value>(text) else {
            return Step::End(Violation::bad_request("Invalid message received: not JSON"));
        };
        let kind = message.get("type").and_then(Value::as_str).unwrap_or("");
        let id = message.get("id").and_then(Value::as_str);
        match (self.protocol, kind) {
            (_, "connection_init") => {
                if self.caller.is_some() {
                    return Step::End(Violation::new(
                        4429,
                        "Too many initialisation requests",
                        "BAD_REQUEST",
                    ));
                }
                let payload = message.get("payload").cloned().unwrap_or(Value::Null);
                match self.init(&payload).await {
                    Ok(()) if self.protocol == Protocol::Legacy => Step::Send(vec![
                        json!({ "type": "connection_ack" }),
                        json!({ "type": "ka" }),
                    ]),
                    Ok(()) => Step::Send(vec![json!({ "type": "connection_ack" })]),
                    Err(violation) => Step::End(violation),
                }
            }
            (Protocol::TransportWs, "subscribe") | (Protocol::Legacy, "start") => {
                if self.caller.is_none() {
                    return Step::End(Violation::new(4401, "Unauthorized", "UNAUTHENTICATED"));
                }
                let Some(id) = id.filter(|id| !id.is_empty()) else {
                    return Step::End(Violation::bad_request("Invalid message received: no id"));
                };
                if subscriptions.contains_key(id) {
                    return Step::End(Violation::new(
                        4409,
                        format!("Subscriber for {id} already exists"),
                        "BAD_REQUEST",
                    ));
                }
                let request = message
                    .get("payload")
                    .cloned()
                    .map(serde_json::from_value::<Request>);
                let Some(Ok(request)) = request else {
                    return Step::End(Violation::bad_request(
                        "Invalid message received: bad payload",
                    ));
                };
                self.subscribe(id.into(), request, subscriptions);
                Step::Continue
            }
            (Protocol::TransportWs, "complete") | (Protocol::Legacy, "stop") => {
                // The client is done with it: nothing more is sent for this id.
                if let Some(id) = id {
                    subscriptions.remove(id);
                }
                Step::Continue
            }
            (Protocol::TransportWs, "ping") => Step::Send(vec![json!({ "type": "pong" })]),
            (Protocol::TransportWs, "pong") => Step::Continue,
            (Protocol::Legacy, "connection_terminate") => Step::Gone,
            _ => Step::End(Violation::bad_request(
                "Invalid message received: unknown type",
            )),
        }
    }

    /// Authenticates `connection_init` and takes a connection slot of the key.
    async fn init(&mut self, payload: &Value) -> Result<(), Violation> {
        let refused = |error: AuthError| Violation::new(4403, error.to_string(), "UNAUTHENTICATED");
        let token = init_token(payload).map_err(refused)?;
        let caller = match self.auth.authenticate(token.as_deref()).await {
            Ok(caller) => caller,
            Err(AuthError::Store(error)) => {
                tracing::error!(error = %error, "cannot check a WebSocket key");
                return Err(Violation::new(
                    4500,
                    "Internal error",
                    "INTERNAL_SERVER_ERROR",
                ));
            }
            Err(error) => return Err(refused(error)),
        };
        let slot = self
            .auth
            .connections()
            .try_acquire(caller.limit_key())
            .ok_or_else(|| Violation::forbidden("too many WebSocket connections for this key"))?;
        self.slot = Some(slot);
        self.pending = None;
        if let (Caller::Key { .. }, Some(token)) = (&caller, &token) {
            let check = self.shared.keys.of(token);
            self.verdicts = Some(check.watch(&self.auth));
            self.check = Some(check);
        }
        self.caller = Some(caller);
        Ok(())
    }

    /// Starts an operation on async-graphql's executor; its end shows as a final `None`.
    fn subscribe(&self, id: Arc<str>, request: Request, subscriptions: &mut Subscriptions) {
        let mut request = request;
        if let Some(caller) = &self.caller {
            request = request.data(caller.clone());
        }
        // Counted while the stream lives: it ends, or the client stops it, or the socket closes.
        let running = crate::telemetry::metrics::ws_subscription(self.protocol.name());
        let check = self
            .check
            .as_ref()
            .map(|check| (check.clone(), self.auth.clone()));
        let events =
            self.shared
                .fanout
                .subscribe(&self.schema, self.caller.as_ref(), check, request);
        subscriptions.insert(
            id,
            Operation {
                events,
                running: Some(running),
            },
        );
    }

    /// Whether the key still holds, with at least the locations it had, as a read that started
    /// after this call finds it: `Err` (4403) once it was revoked or lost a location. The
    /// operator key and anonymous callers are not re-checked. The sockets of a key share the
    /// reads.
    async fn recheck(&mut self) -> Result<(), Violation> {
        let Some(check) = &self.check else {
            return Ok(());
        };
        let verdict = check.fresh(&self.auth).await;
        self.judge(&verdict)
    }

    /// Whether an event may be sent: judged on the key's state its stream read after producing
    /// it (`checked`, a hub of this key), or on a fresh read of this socket's own.
    async fn admit(&mut self, checked: Option<&Verdict>) -> Result<(), Violation> {
        match checked {
            Some(verdict) if self.check.is_some() => self.judge(verdict),
            _ => self.recheck().await,
        }
    }

    /// A key check's verdict for this socket: `Err` (4403) once the key was revoked or lost a
    /// location the socket opened with.
    fn judge(&mut self, verdict: &Verdict) -> Result<(), Violation> {
        let Some(Caller::Key { locations, .. }) = &self.caller else {
            return Ok(());
        };
        if let (Ok(Some(now)), Some(allowed)) = (verdict, &self.allowed)
            && Arc::ptr_eq(now, allowed)
        {
            return Ok(());
        }
        judge(locations, verdict)?;
        if let Ok(Some(now)) = verdict {
            self.allowed = Some(now.clone());
        }
        Ok(())
    }
}

/// A key check's verdict for a socket that opened with `locations`: `Err` (4403) once the key
/// was revoked or lost one of them.
fn judge(locations: &BTreeSet<String>, verdict: &Verdict) -> Result<(), Violation> {
    match verdict {
        Ok(Some(now)) if locations.is_subset(now) => Ok(()),
        Ok(Some(_)) => Err(Violation::forbidden("the key's locations changed")),
        Ok(None) => Err(Violation::new(
            4403,
            "the key was revoked",
            "UNAUTHENTICATED",
        )),
        // The database did not answer (logged): the check will run again; a hiccup does not
        // drop every socket.
        Err(()) => Ok(()),
    }
}

/// Waits until the key's periodic check (`verdicts`) finds it revoked, or without one of
/// `locations`: the violation that ends the socket. Pending forever once the check has ended.
async fn revocation(
    mut verdicts: watch::Receiver<Option<Verdict>>,
    locations: Arc<BTreeSet<String>>,
) -> Violation {
    while verdicts.changed().await.is_ok() {
        let verdict = verdicts.borrow_and_update().clone();
        if let Some(Err(violation)) = verdict.map(|v| judge(&locations, &v)) {
            return violation;
        }
    }
    std::future::pending().await
}

/// Polls a socket's read side only when something happened on it: after it gave a frame, or after
/// the waker its last read left behind fired. The session's loop runs once per event it sends,
/// and each pass polls every branch; tungstenite's read, polled again, zeroes its read buffer and
/// walks down to the TCP stream before it finds nothing there (with 10,000 subscribers during a
/// sync, `perf`: about 6% of the gateway's samples in `memset`, hyper's `Rewind::poll_read` and
/// tokio's readiness check).
#[derive(Default)]
struct ReadGate(Arc<ReadWake>);

/// The waker a [`ReadGate`] hands to the socket's read: it notes the wake, then wakes the task.
struct ReadWake {
    /// Starts set: the first poll reads.
    woken: std::sync::atomic::AtomicBool,
    task: futures::task::AtomicWaker,
}

impl Default for ReadWake {
    fn default() -> Self {
        ReadWake {
            woken: std::sync::atomic::AtomicBool::new(true),
            task: futures::task::AtomicWaker::new(),
        }
    }
}

impl std::task::Wake for ReadWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, std::sync::atomic::Ordering::Release);
        self.task.wake();
    }
}

impl ReadGate {
    /// `socket.poll_next`, skipped (pending) while nothing woke the read side since it was last
    /// pending.
    fn poll_next<S: futures::Stream + Unpin>(
        &self,
        socket: &mut S,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<S::Item>> {
        use std::sync::atomic::Ordering;
        self.0.task.register(cx.waker());
        if !self.0.woken.swap(false, Ordering::AcqRel) {
            return std::task::Poll::Pending;
        }
        let waker = std::task::Waker::from(self.0.clone());
        let polled = socket.poll_next_unpin(&mut std::task::Context::from_waker(&waker));
        if polled.is_ready() {
            // More frames may wait in the buffer: read again next time.
            self.0.woken.store(true, Ordering::Release);
        }
        polled
    }
}

/// How long after a socket closes the heap is trimmed: one trim for a burst of closes.
const TRIM_DELAY: Duration = Duration::from_secs(5);

/// Returns the heap's free pages to the system a little after sockets close
/// ([`crate::telemetry::memory`]): measured with 1,000 subscribers, the gateway stayed 30% above
/// its baseline a minute after they all closed, and a trim brought it back under the baseline.
fn trim_after_close() {
    crate::telemetry::memory::trim_after(TRIM_DELAY);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A socket's read side: counts its polls, answers what it holds, keeps the waker it got.
    struct Reads {
        polls: usize,
        held: std::collections::VecDeque<u32>,
        waker: Option<std::task::Waker>,
    }

    impl futures::Stream for Reads {
        type Item = u32;

        fn poll_next(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<u32>> {
            self.polls += 1;
            match self.held.pop_front() {
                Some(frame) => std::task::Poll::Ready(Some(frame)),
                None => {
                    self.waker = Some(cx.waker().clone());
                    std::task::Poll::Pending
                }
            }
        }
    }

    /// The session's task: counts its wakes.
    #[derive(Default)]
    struct Task(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for Task {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[test]
    fn the_read_gate_polls_the_socket_only_after_its_waker_fired() {
        use std::task::Poll;
        let gate = ReadGate::default();
        let mut socket = Reads {
            polls: 0,
            held: [1].into(),
            waker: None,
        };
        let task = Arc::new(Task::default());
        let waker = std::task::Waker::from(task.clone());
        let mut cx = std::task::Context::from_waker(&waker);
        assert_eq!(gate.poll_next(&mut socket, &mut cx), Poll::Ready(Some(1)));
        // A frame was read: the next pass reads again (more may be buffered), and finds none.
        assert_eq!(gate.poll_next(&mut socket, &mut cx), Poll::Pending);
        assert_eq!(socket.polls, 2);
        // The loop's passes for events sent meanwhile do not touch the socket.
        for _ in 0..3 {
            assert_eq!(gate.poll_next(&mut socket, &mut cx), Poll::Pending);
        }
        assert_eq!(socket.polls, 2);
        // A frame arrives: the socket's waker wakes the session, whose next pass reads it.
        socket.held.push_back(2);
        socket.waker.take().expect("the socket kept a waker").wake();
        assert_eq!(task.0.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(gate.poll_next(&mut socket, &mut cx), Poll::Ready(Some(2)));
        assert_eq!(socket.polls, 3);
    }

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
