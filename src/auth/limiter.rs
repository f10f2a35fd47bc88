//! Per-key abuse limits: a request rate (GCRA, from `governor`) and a count of open WebSocket
//! connections. Both are keyed by [`Caller::limit_key`](super::Caller::limit_key), so their
//! memory is bounded by the number of keys, not of clients.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

/// Requests per minute per key, with a burst. `None` inside when the limit is off.
pub struct RateLimiter(Option<DefaultKeyedRateLimiter<String>>);

impl RateLimiter {
    /// `per_minute == 0` turns the limit off; a burst of 0 counts as 1.
    pub fn new(per_minute: u32, burst: u32) -> Self {
        Self(NonZeroU32::new(per_minute).map(|rate| {
            let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
            governor::RateLimiter::keyed(Quota::per_minute(rate).allow_burst(burst))
        }))
    }

    /// Counts one request of `key`; `Err(wait)`: over the rate, retry after `wait`.
    pub fn check(&self, key: &str) -> Result<(), Duration> {
        let Some(limiter) = &self.0 else {
            return Ok(());
        };
        limiter
            .check_key(&key.to_owned())
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }
}

/// Open WebSocket connections per key. The WebSocket handler holds the [`ConnectionGuard`] for
/// as long as the connection lives; dropping it frees the slot.
#[derive(Clone, Debug)]
pub struct ConnectionLimiter {
    max: usize,
    open: Arc<Mutex<HashMap<String, usize>>>,
}

impl ConnectionLimiter {
    pub fn new(max_per_key: usize) -> Self {
        Self {
            max: max_per_key,
            open: Arc::default(),
        }
    }

    /// A slot for one more connection of `key`, or `None` when it has `max` open already.
    pub fn try_acquire(&self, key: &str) -> Option<ConnectionGuard> {
        // A std Mutex: held for a map update, never across an await.
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let count = open.entry(key.to_owned()).or_default();
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(ConnectionGuard {
            key: key.to_owned(),
            open: self.open.clone(),
        })
    }

    /// Connections `key` has open.
    pub fn open(&self, key: &str) -> usize {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.get(key).copied().unwrap_or(0)
    }
}

/// One open connection; frees its slot when dropped.
#[derive(Debug)]
pub struct ConnectionGuard {
    key: String,
    open: Arc<Mutex<HashMap<String, usize>>>,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(&self.key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_allows_the_burst_then_refuses_with_a_wait() {
        let limiter = RateLimiter::new(60, 3);
        for _ in 0..3 {
            assert!(limiter.check("a").is_ok());
        }
        let wait = limiter.check("a").unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        assert!(limiter.check("b").is_ok(), "keys have their own buckets");
        let off = RateLimiter::new(0, 0);
        assert!((0..1000).all(|_| off.check("a").is_ok()));
    }

    #[test]
    fn connections_are_counted_per_key_and_freed_on_drop() {
        let limiter = ConnectionLimiter::new(2);
        let one = limiter.try_acquire("a").unwrap();
        let _two = limiter.try_acquire("a").unwrap();
        assert!(limiter.try_acquire("a").is_none());
        assert!(limiter.try_acquire("b").is_some());
        drop(one);
        assert_eq!(limiter.open("a"), 1);
        assert!(limiter.try_acquire("a").is_some());
    }
}
