//! The key checks of open sockets, shared by the sockets of one key.
//!
//! Every open socket of an API key checks it again before each event and every few seconds
//! (revoked? fewer locations?). Each check is a database read; 10,000 sockets of one dashboard key
//! receiving an event would make 10,000 reads of the same row. Here the sockets of a key share
//! them, without weakening what a check promises:
//! - before an event ([`KeyCheck::fresh`]), the answer comes from a read that started after the
//!   check was asked for: a socket waiting while a read runs takes the next one, which answers
//!   every socket that asked meanwhile. A key revoked before the event is seen as revoked.
//! - the periodic check ([`KeyCheck::recent`]) also accepts an answer read within
//!   [`RECENT`], well inside its own interval.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::time::Instant;

use crate::auth::{AuthError, Authenticator, Caller};

/// How old an answer the periodic check accepts.
pub(super) const RECENT: Duration = Duration::from_secs(1);

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
            token: token.to_owned(),
            asked: AtomicU64::new(0),
            last: tokio::sync::Mutex::new(None),
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

/// The checks of one key.
pub(super) struct KeyCheck {
    token: String,
    /// Checks asked for so far: a read that starts when this is `n` answers checks 1..=n.
    asked: AtomicU64,
    /// The last read: the checks it answers, when it started, and its verdict. Held while a read
    /// runs, so that the sockets asking meanwhile wait for it and then share the next one.
    last: tokio::sync::Mutex<Option<(u64, Instant, Verdict)>>,
}

impl KeyCheck {
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
        let mut last = self.last.lock().await;
        if let Some((answered, started, verdict)) = &*last {
            let young = max_age.is_some_and(|age| started.elapsed() <= age);
            if *answered >= ticket || young {
                return verdict.clone();
            }
        }
        // Answers every check asked for until now, this one included.
        let answered = self.asked.load(Ordering::SeqCst);
        let started = Instant::now();
        let verdict = match auth.authenticate(Some(&self.token)).await {
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
        *last = Some((answered, started, verdict.clone()));
        verdict
    }
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
