//! The key checks of open sockets, shared by the sockets of one key.
//!
//! Every event for a socket of an API key is checked against the key first (revoked? fewer
//! locations?), and every open socket checks it every few seconds. Each check is a database read;
//! 10,000 sockets of one dashboard key receiving an event would make 10,000 reads of the same
//! row. A shared stream (`fanout`'s hub) checks once per event and hands the verdict to all its
//! sockets; the checks left (a socket's own stream, the periodic ones) are shared by the sockets
//! of a key here, without weakening what a check promises:
//! - before an event ([`KeyCheck::fresh`]), the answer comes from a read that started after the
//!   check was asked for: a socket that asks while an older read runs starts a new one, which
//!   every socket asking until it starts then waits for. A key revoked before the event is seen
//!   as revoked.
//! - the periodic check runs once per key, not once per socket: a task of the key reads it every
//!   [`RECHECK_INTERVAL`] ([`KeyCheck::recent`], which also accepts an answer read within
//!   [`RECENT`]) and publishes the verdict on a watch channel only when it differs from the last
//!   one ([`KeyCheck::watch`]). An idle socket is woken only when its key changed (no timer of
//!   its own); the task ends once no socket holds the key.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};

use crate::auth::{AuthError, Authenticator, Caller};

/// How old an answer the periodic check accepts.
pub(super) const RECENT: Duration = Duration::from_secs(1);
/// How often the key of open sockets is read again (revocation, scope), besides before each event.
pub(super) const RECHECK_INTERVAL: Duration = Duration::from_secs(2);

/// A check's answer: the locations the key reaches now, `None` once it is revoked or unknown;
/// `Err` when the database could not answer (the socket stays open; the check runs again).
pub(super) type Verdict = Result<Option<Arc<BTreeSet<String>>>, ()>;

/// The shared checks of every open key, by token; an entry lives while a socket holds it.
#[derive(Clone, Default)]
pub(in crate::http) struct KeyChecks {
    keys: Arc<Mutex<HashMap<String, Weak<KeyCheck>>>>,
}

impl KeyChecks {
    /// The shared check of `token`, for one socket to hold while it is open.
    pub(super) fn of(&self, token: &str) -> Arc<KeyCheck> {
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(check) = keys.get(token).and_then(Weak::upgrade) {
            return check;
        }
        // Entries of keys no socket holds any more go as new ones come.
        keys.retain(|_, check| check.strong_count() > 0);
        let check = Arc::new(KeyCheck {
            token: token.into(),
            asked: Arc::default(),
            state: Mutex::default(),
            verdicts: watch::Sender::new(None),
            watched: std::sync::Once::new(),
        });
        keys.insert(token.to_owned(), Arc::downgrade(&check));
        check
    }

    /// Keys with a socket open now.
    #[cfg(test)]
    fn open(&self) -> usize {
        let keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        keys.values().filter(|c| c.strong_count() > 0).count()
    }
}

/// One database read of a key, shared by every socket that waits for it: the checks it answers
/// (1..=n), when it started, its verdict.
type Read = Shared<BoxFuture<'static, (u64, Instant, Verdict)>>;

/// The checks of one key.
pub(super) struct KeyCheck {
    token: Arc<str>,
    /// Checks asked for so far: a read that starts when this is `n` answers checks 1..=n.
    asked: Arc<AtomicU64>,
    state: Mutex<ReadState>,
    /// The periodic check's latest verdict that differed from the one before (`None` before its
    /// first read).
    verdicts: watch::Sender<Option<Verdict>>,
    /// Starts the periodic check, with the first socket that watches it.
    watched: std::sync::Once,
}

#[derive(Default)]
struct ReadState {
    /// The newest finished read.
    last: Option<(u64, Instant, Verdict)>,
    /// The read running now, and the checks it answers ([`NOT_STARTED`] until its query starts:
    /// until then, any check may wait for it).
    running: Option<(Arc<AtomicU64>, Read)>,
}

impl KeyCheck {
    fn asked_handle(&self) -> Arc<AtomicU64> {
        self.asked.clone()
    }

    /// The periodic check's verdicts, from the next one that differs from the current one (the
    /// current one was read before this socket authenticated: it is not judged again). Starts the
    /// key's periodic check on first use; it reads every [`RECHECK_INTERVAL`] while a socket
    /// holds this check.
    pub(super) fn watch(
        self: &Arc<Self>,
        auth: &Authenticator,
    ) -> watch::Receiver<Option<Verdict>> {
        self.watched.call_once(|| {
            let check = Arc::downgrade(self);
            let auth = auth.clone();
            tokio::spawn(async move {
                let start = Instant::now() + RECHECK_INTERVAL;
                let mut tick = tokio::time::interval_at(start, RECHECK_INTERVAL);
                tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    // No socket holds the key any more: the check is over.
                    let Some(check) = check.upgrade() else {
                        break;
                    };
                    let verdict = check.recent(&auth).await;
                    check.verdicts.send_if_modified(|last| {
                        let changed = last.as_ref() != Some(&verdict);
                        if changed {
                            *last = Some(verdict);
                        }
                        changed
                    });
                }
            });
        });
        self.verdicts.subscribe()
    }

    /// The key as a read started after this call finds it.
    pub(super) async fn fresh(&self, auth: &Authenticator) -> Verdict {
        self.check(auth, None).await
    }

    /// The key as a read started at most [`RECENT`] ago finds it.
    pub(super) async fn recent(&self, auth: &Authenticator) -> Verdict {
        self.check(auth, Some(RECENT)).await
    }

    async fn check(&self, auth: &Authenticator, max_age: Option<Duration>) -> Verdict {
        let ticket = self.asked.fetch_add(1, Ordering::SeqCst) + 1;
        let read = {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((answered, started, verdict)) = &state.last {
                let young = max_age.is_some_and(|age| started.elapsed() <= age);
                if *answered >= ticket || young {
                    return verdict.clone();
                }
            }
            match &state.running {
                // A read whose query starts after this check was asked: wait for it with the
                // others.
                Some((answers, read))
                    if matches!(answers.load(Ordering::SeqCst), NOT_STARTED)
                        || answers.load(Ordering::SeqCst) >= ticket =>
                {
                    read.clone()
                }
                // None, or one that started before: a new one.
                _ => {
                    let answers = Arc::new(AtomicU64::new(NOT_STARTED));
                    let read = read(
                        auth.clone(),
                        self.token.clone(),
                        answers.clone(),
                        self.asked_handle(),
                    )
                    .boxed()
                    .shared();
                    state.running = Some((answers, read.clone()));
                    read
                }
            }
        };
        // Every waiter is woken when the read ends (no hand-over from one socket to the next).
        let (answered, started, verdict) = read.await;
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        // The same locations as the last answer: the same set, so that a socket that judged it
        // once knows it again by its address (`Arc::ptr_eq`) instead of comparing the sets.
        let verdict = match (state.last.as_ref().map(|(_, _, last)| last), verdict) {
            (Some(Ok(Some(last))), Ok(Some(now))) if last == &now => Ok(Some(last.clone())),
            (_, verdict) => verdict,
        };
        if state.last.as_ref().is_none_or(|(a, ..)| *a < answered) {
            state.last = Some((answered, started, verdict.clone()));
        }
        if state
            .running
            .as_ref()
            .is_some_and(|(a, _)| (1..=answered).contains(&a.load(Ordering::SeqCst)))
        {
            state.running = None;
        }
        verdict
    }
}

/// `answers` of a read whose query has not started yet.
const NOT_STARTED: u64 = 0;

/// Reads the key. It first lets the other sockets woken by the same event ask (they wait for this
/// read, not one each), then records the checks it answers (every one asked so far: its query
/// starts after them) and queries.
async fn read(
    auth: Authenticator,
    token: Arc<str>,
    answers: Arc<AtomicU64>,
    asked: Arc<AtomicU64>,
) -> (u64, Instant, Verdict) {
    tokio::task::yield_now().await;
    let answered = asked.load(Ordering::SeqCst);
    answers.store(answered, Ordering::SeqCst);
    let started = Instant::now();
    let verdict = match auth.authenticate(Some(&token)).await {
        Ok(Caller::Key { locations, .. }) => Ok(Some(locations)),
        // The operator key and anonymous callers are not checked again; a token that now
        // stands for something else is no longer the key the socket opened with.
        Ok(_) => Ok(None),
        Err(AuthError::Store(error)) => {
            tracing::warn!(error = %error, "cannot re-check a WebSocket key");
            Err(())
        }
        Err(_) => Ok(None),
    };
    (answered, started, verdict)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockets_of_one_key_share_its_check_and_it_goes_with_them() {
        let checks = KeyChecks::default();
        let a = checks.of("k1");
        let b = checks.of("k1");
        assert!(Arc::ptr_eq(&a, &b));
        let c = checks.of("k2");
        assert_eq!(checks.open(), 2);
        drop((a, b, c));
        assert_eq!(checks.open(), 0);
        let _d = checks.of("k3");
        assert_eq!(
            checks.keys.lock().unwrap().len(),
            1,
            "dead entries were swept"
        );
    }
}
