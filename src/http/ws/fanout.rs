//! One stream per subscription shape, its events serialized once and fanned out to every socket
//! that asked for the same thing.
//!
//! A shape is the caller (its key and the locations it reaches), the document, the operation name
//! and the variables. The first subscriber of a shape starts a hub: a task that runs the operation
//! on async-graphql's executor and publishes each response as its JSON text ([`Payload`], shared,
//! never copied) on a bounded broadcast ring of [`RING`] events. Later subscribers of the shape
//! join the ring; first they run the operation with [`Joining`] in its data, which answers only
//! what the ring will not send them again (the current state of `syncStatus`). A socket that
//! reads too slowly falls behind the ring and skips the events it missed, as a lagging
//! subscriber always has; its memory does not grow. The hub stops when its last subscriber
//! leaves, and its entry leaves the registry with it.
//!
//! An [`Event`] is one allocation that every socket of the hub shares: the JSON, the key's
//! verdict, and the whole frames built from it ([`Event::frame`]: the first socket with a given
//! subscription id builds `{"type":"next","id":..,"payload":..}`, the others send the same
//! bytes). A socket reads its subscription through [`Events`], one layer over the ring.
//!
//! Only fields that honour [`Joining`] are shared ([`shared_field`]); every other operation gets
//! a stream of its own, serialized the same way.
//!
//! A hub of an API key also checks the key before it publishes each event ([`KeyCheck::fresh`],
//! one database read that starts after the event was produced) and sends the verdict with it
//! ([`Event::checked`]): its sockets judge that verdict instead of each reading the key again.
//! With thousands of sockets the per-socket checks were the fan-out's cost: every socket woken
//! twice per event (the event, then the shared read's end), and several reads per event where
//! the sockets' checks did not meet in one.
//!
//! Every operation runs in a task of its own ([`spawned`] and the hubs), never inside the socket's
//! loop: a resolver may hold a database connection between two polls, and a socket's loop stops
//! polling its streams while it waits (to send, or for a key check that needs a connection
//! itself). With a few hundred sockets that was a deadlock: every pooled connection held by a
//! paused stream, every loop waiting for one.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, ready};

use async_graphql::{Request, Response};
use axum::extract::ws::Utf8Bytes;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use serde_json::json;
use tokio::sync::broadcast;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;

use super::recheck::{KeyCheck, Verdict};
use crate::auth::{Authenticator, Caller};
use crate::graphql::AppSchema;
use crate::graphql::subscription::{Joining, shared_field};

/// One event of an operation: its GraphQL response as JSON text (`{"data":...}`).
pub(super) type Payload = Arc<str>;

/// An event as a socket receives it: one allocation shared by every socket of a hub (a clone is
/// a reference count), which holds the JSON, the key's verdict, and the frames built from it.
#[derive(Clone, Debug)]
pub(super) struct Event(Arc<Published>);

#[derive(Debug)]
struct Published {
    payload: Payload,
    checked: Option<Verdict>,
    /// The whole frames built so far for this event, one per frame kind and subscription id:
    /// sockets that use the same id (a dashboard's clients all do) send the same bytes.
    frames: Mutex<Vec<(&'static str, Box<str>, Utf8Bytes)>>,
}

/// Distinct frames of one event kept for the sockets that come after; a socket whose kind and
/// id are not among them (only when clients use many ids) builds its own.
const FRAMES: usize = 8;

impl Event {
    /// An event of `payload`; `checked`: the key's state read after the event was produced when
    /// the stream checked it (a hub of an API key), `None` when the socket checks the key itself
    /// (its own stream, the operator key, anonymous callers).
    pub(super) fn new(payload: Payload, checked: Option<Verdict>) -> Self {
        Self(Arc::new(Published {
            payload,
            checked,
            frames: Mutex::new(Vec::new()),
        }))
    }

    /// The response as JSON text (`{"data":...}`).
    #[cfg(test)]
    pub(super) fn payload(&self) -> &Payload {
        &self.0.payload
    }

    /// The key's verdict sent with the event, if its stream checked the key.
    pub(super) fn checked(&self) -> Option<&Verdict> {
        self.0.checked.as_ref()
    }

    /// The event as the whole text frame `{"type":kind,"id":id,"payload":...}`, built once per
    /// `kind` and `id` and shared by the sockets that send it (the payload is not parsed again).
    pub(super) fn frame(&self, kind: &'static str, id: &str) -> Utf8Bytes {
        let mut frames = self.0.frames.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, _, text)) = frames.iter().find(|(k, i, _)| *k == kind && &**i == id) {
            return text.clone();
        }
        let quoted = serde_json::Value::from(id);
        let payload = &self.0.payload;
        let text = Utf8Bytes::from(format!(
            r#"{{"type":"{kind}","id":{quoted},"payload":{payload}}}"#
        ));
        if frames.len() < FRAMES {
            frames.push((kind, id.into(), text.clone()));
        }
        text
    }
}

/// Events a hub keeps for subscribers that have not read them yet (a ring, shared by all of them):
/// a socket further behind than this skips to the oldest event still kept. A FULL sync of one
/// location sends about fifty.
pub(super) const RING: usize = 256;

/// What makes two subscriptions identical: the same answers, event for event.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Shape {
    /// The caller's limit key and, for an API key, the locations it reaches now.
    caller: String,
    query: String,
    operation_name: Option<String>,
    /// The variables as JSON text.
    variables: String,
}

impl Shape {
    /// The shape of `request` by `caller`, or `None` when its operation is not shared.
    fn of(caller: &Caller, request: &Request) -> Option<Self> {
        if !shared_field(&request.query, request.operation_name.as_deref()) {
            return None;
        }
        let caller = match caller {
            Caller::Key { id, locations } => {
                let locations: Vec<&str> = locations.iter().map(String::as_str).collect();
                format!("key:{id}:{}", locations.join(","))
            }
            other => other.limit_key().to_owned(),
        };
        Some(Self {
            caller,
            query: request.query.clone(),
            operation_name: request.operation_name.clone(),
            variables: serde_json::to_string(&request.variables).ok()?,
        })
    }
}

type Hubs = Mutex<HashMap<Shape, Weak<Hub>>>;

/// The running shared streams of one router, by shape.
#[derive(Clone, Default)]
pub(in crate::http) struct Fanout {
    hubs: Arc<Hubs>,
}

/// One shared stream: its task, and a way to join its ring while it runs. Subscribers hold it;
/// the last one to leave stops the task and removes the entry.
struct Hub {
    shape: Shape,
    /// Weak, so that the ring closes (and its subscribers see the end) when the task ends.
    sender: broadcast::WeakSender<Event>,
    /// Whether the hub has published an event: a subscriber that joins the ring before that
    /// receives everything the hub sends and runs nothing of its own (no state twice). Held by
    /// the task while it publishes, by a joiner while it joins.
    published: Arc<Mutex<bool>>,
    task: tokio::task::AbortHandle,
    hubs: Weak<Hubs>,
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.task.abort();
        if let Some(hubs) = self.hubs.upgrade() {
            let mut hubs = hubs.lock().unwrap_or_else(|e| e.into_inner());
            // A newer hub of the same shape may have taken the entry: leave that one.
            if hubs.get(&self.shape).is_some_and(|w| w.strong_count() == 0) {
                hubs.remove(&self.shape);
            }
        }
    }
}

impl Fanout {
    /// The events of `request` (which carries `caller` in its data) as JSON payloads, shared
    /// with identical subscriptions where the operation allows it. `check`: the key's shared
    /// check, which a new hub runs before each event it publishes.
    pub(super) fn subscribe(
        &self,
        schema: &AppSchema,
        caller: Option<&Caller>,
        check: Option<(Arc<KeyCheck>, Authenticator)>,
        request: Request,
    ) -> Events {
        let Some(shape) = caller.and_then(|caller| Shape::of(caller, &request)) else {
            return Events {
                own: Some(spawned(crate::graphql::execute_stream(schema, request))),
                ring: None,
            };
        };
        let mut hubs = self.hubs.lock().unwrap_or_else(|e| e.into_inner());
        let existing = hubs.get(&shape).and_then(Weak::upgrade);
        let joined = existing.as_ref().and_then(|hub| {
            let sender = hub.sender.upgrade()?;
            let published = hub.published.lock().unwrap_or_else(|e| e.into_inner());
            Some((sender.subscribe(), *published))
        });
        let stale = match (existing, joined) {
            // Nothing published yet: the ring brings this subscriber all the hub will send.
            (Some(hub), Some((receiver, false))) => {
                drop(hubs);
                return ring(hub, receiver);
            }
            (Some(hub), Some((receiver, true))) => {
                drop(hubs);
                // Joined before the current state is read: no change falls in between (one may
                // come twice, once in the state and once as itself, as it always could).
                let own = spawned(crate::graphql::execute_stream(
                    schema,
                    request.data(Joining),
                ));
                return Events {
                    own: Some(own),
                    ..ring(hub, receiver)
                };
            }
            // A hub whose stream has ended, still held by subscribers reading its last events:
            // dropped only once the lock is released (its drop takes the lock).
            (stale, _) => stale,
        };
        let (sender, receiver) = broadcast::channel(RING);
        let weak = sender.downgrade();
        let published = Arc::new(Mutex::new(false));
        let publishing = published.clone();
        let events = crate::graphql::execute_stream(schema, request);
        let task = tokio::spawn(async move {
            let mut events = events;
            while let Some(response) = events.next().await {
                let payload = serialize(&response);
                // The read starts now, after the event: a key revoked before it is seen revoked.
                let checked = match &check {
                    Some((check, auth)) => Some(check.fresh(auth).await),
                    None => None,
                };
                let sent = {
                    let mut published = publishing.lock().unwrap_or_else(|e| e.into_inner());
                    *published = true;
                    sender.send(Event::new(payload, checked))
                };
                // No receiver left: the last subscriber is leaving and drops the hub.
                if sent.is_err() {
                    break;
                }
            }
            // `sender` drops here: the ring closes, and each subscriber ends its stream.
        })
        .abort_handle();
        let hub = Arc::new(Hub {
            shape: shape.clone(),
            sender: weak,
            published,
            task,
            hubs: Arc::downgrade(&self.hubs),
        });
        hubs.insert(shape, Arc::downgrade(&hub));
        drop(hubs);
        drop(stale);
        ring(hub, receiver)
    }

    /// Shared streams running now (one per distinct shape with a subscriber).
    #[cfg(test)]
    fn running(&self) -> usize {
        let hubs = self.hubs.lock().unwrap_or_else(|e| e.into_inner());
        hubs.values().filter(|w| w.strong_count() > 0).count()
    }
}

/// A subscriber's view of a hub's ring; it keeps the hub running while it lives.
fn ring(hub: Arc<Hub>, receiver: broadcast::Receiver<Event>) -> Events {
    Events {
        own: None,
        ring: Some((BroadcastStream::new(receiver), hub)),
    }
}

/// The events of one subscription, as its socket reads them: the events of its own operation
/// (`own`: all of them for an operation that is not shared; for a subscriber that joined a
/// running hub, what the hub will not send it again), then those of the hub's ring. One layer
/// over the ring's receiver, polled directly by the socket: with thousands of sockets, each
/// stream adapter between the ring and the socket was paid once per event and socket.
pub(super) struct Events {
    own: Option<BoxStream<'static, Event>>,
    /// The ring, and the hub it keeps running while this subscriber lives.
    ring: Option<(BroadcastStream<Event>, Arc<Hub>)>,
}

impl Stream for Events {
    type Item = Event;

    /// The next event; events of the ring this subscriber was too slow to read are skipped (the
    /// ring reports how many; the next one is complete).
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        let this = &mut *self;
        if let Some(own) = &mut this.own {
            match ready!(own.poll_next_unpin(cx)) {
                Some(event) => return Poll::Ready(Some(event)),
                None => this.own = None,
            }
        }
        let Some((ring, _)) = &mut this.ring else {
            return Poll::Ready(None);
        };
        loop {
            match ready!(ring.poll_next_unpin(cx)) {
                Some(Ok(event)) => return Poll::Ready(Some(event)),
                Some(Err(BroadcastStreamRecvError::Lagged(_))) => continue,
                None => {
                    // The ring closed: the hub's stream ended. Let the hub go now.
                    this.ring = None;
                    return Poll::Ready(None);
                }
            }
        }
    }
}

/// Events a socket's own operation may have ready before the socket sends them; the task waits
/// while they are unsent (an operation of one socket, unlike a hub, can wait for its reader).
const OWN_QUEUE: usize = 16;

/// `events` run in a task of their own, serialized there; the task stops when the stream that
/// reads them is dropped.
fn spawned(events: BoxStream<'static, Response>) -> BoxStream<'static, Event> {
    let (sender, receiver) = tokio::sync::mpsc::channel::<Payload>(OWN_QUEUE);
    let task = tokio::spawn(async move {
        let mut events = events;
        while let Some(response) = events.next().await {
            if sender.send(serialize(&response)).await.is_err() {
                break;
            }
        }
    });
    let stop = AbortOnDrop(task.abort_handle());
    tokio_stream::wrappers::ReceiverStream::new(receiver)
        .map(move |payload| {
            let _ = &stop;
            Event::new(payload, None)
        })
        .boxed()
}

/// Stops a task when dropped.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A response as JSON text, once for every socket that sends it.
fn serialize(response: &Response) -> Payload {
    match serde_json::to_string(response) {
        Ok(text) => text.into(),
        Err(error) => {
            tracing::error!(error = %error, "cannot serialise a subscription event");
            json!({ "errors": [{ "message": "internal error", "extensions": { "code": "INTERNAL_SERVER_ERROR" } }] })
                .to_string()
                .into()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_subscriptions_have_one_shape_and_callers_do_not_mix() {
        let query = "subscription($l: ID!) { syncStatus(locationId: $l) { locationId } }";
        let request = |l: &str| {
            Request::new(query).variables(async_graphql::Variables::from_json(json!({ "l": l })))
        };
        let key = |locations: &[&str]| Caller::Key {
            id: "k1".into(),
            locations: Arc::new(locations.iter().map(|l| l.to_string()).collect()),
        };
        let a = Shape::of(&key(&["l1"]), &request("l1")).unwrap();
        assert_eq!(Some(&a), Shape::of(&key(&["l1"]), &request("l1")).as_ref());
        assert_ne!(Some(&a), Shape::of(&key(&["l1"]), &request("l2")).as_ref());
        assert_ne!(
            Some(&a),
            Shape::of(&key(&["l1", "l2"]), &request("l1")).as_ref()
        );
        assert_ne!(Some(&a), Shape::of(&Caller::Admin, &request("l1")).as_ref());
        assert_eq!(
            Shape::of(&Caller::Admin, &Request::new("query { __typename }")),
            None
        );
    }

    #[tokio::test]
    async fn a_hub_stops_and_leaves_the_registry_with_its_last_subscriber() {
        let database = crate::store::DatabaseConfig {
            database_url: "sqlite::memory:".into(),
            database_max_connections: 1,
            database_direct_url: None,
        };
        let store = crate::store::Store::open(&database).await.unwrap();
        let schema = crate::graphql::build(store, Default::default(), None);
        let fanout = Fanout::default();
        // No sync handle: the field answers an error, once, and the stream ends.
        let query = "subscription { changes(locationId: \"nowhere\") { ids } }";
        let first = fanout.subscribe(
            &schema,
            Some(&Caller::Admin),
            None,
            Request::new(query).data(Caller::Admin),
        );
        let second = fanout.subscribe(
            &schema,
            Some(&Caller::Admin),
            None,
            Request::new(query).data(Caller::Admin),
        );
        assert!(fanout.running() <= 1);
        let (a, b): (Vec<Event>, Vec<Event>) = tokio::join!(first.collect(), second.collect());
        let (a, b): (Vec<Payload>, Vec<Payload>) = (
            a.into_iter().map(|e| e.payload().clone()).collect(),
            b.into_iter().map(|e| e.payload().clone()).collect(),
        );
        assert!(!a.is_empty(), "the error reaches the first subscriber");
        assert!(a[0].contains("errors"), "{a:?}");
        assert!(b.iter().all(|p| p.contains("errors")), "{b:?}");
        assert_eq!(fanout.running(), 0);
        assert!(fanout.hubs.lock().unwrap().is_empty());
    }
}
