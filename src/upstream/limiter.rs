//! The rate limiter of one (app, location) bucket.
//!
//! GHL allows `max` requests per `interval` (100 per 10 s) and counts a request when it arrives.
//! A token bucket (GCRA, as in `governor`) refills continuously and lets up to twice the burst
//! through in one window after a burst, so it cannot promise "never the 101st request in a
//! window". This limiter keeps `max` slots instead; a slot is reused only `interval` after the
//! *response* of its previous request arrived. The server saw that request before it answered,
//! and sees the next one after it is sent, so any two requests sharing a slot arrive at least
//! `interval` apart, whatever the network latency: at most `max` requests in any window.
//!
//! It waits on `tokio::time`, so tests can pause the clock.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::sync::{Mutex, Notify};
use tokio::time::Instant;

#[derive(Debug)]
struct Slots {
    /// When each free slot may be used again (oldest first).
    free: VecDeque<Instant>,
    /// Slots held by requests in flight.
    in_flight: usize,
    max: usize,
    interval: Duration,
}

/// A sliding-window limiter of `max` requests per `interval`.
#[derive(Debug)]
pub struct RateLimiter {
    slots: Mutex<Slots>,
    /// Signalled when a slot comes back from flight.
    returned: Notify,
}

/// A slot taken for one request; give it back with [`RateLimiter::release`].
#[derive(Debug)]
#[must_use = "release the permit when the response arrives"]
pub struct Permit {
    /// How long the caller waited for it.
    pub waited: Duration,
}

impl RateLimiter {
    pub fn new(max: u32, interval: Duration) -> Self {
        let max = max.max(1) as usize;
        let now = Instant::now();
        Self {
            slots: Mutex::new(Slots {
                free: std::iter::repeat_n(now, max).collect(),
                in_flight: 0,
                max,
                interval,
            }),
            returned: Notify::new(),
        }
    }

    /// Waits for a slot. Callers are served in arrival order (tokio's mutex is fair).
    pub async fn acquire(&self) -> Permit {
        let start = Instant::now();
        loop {
            let mut slots = self.slots.lock().await;
            if let Some(&ready_at) = slots.free.front() {
                let now = Instant::now();
                if ready_at <= now {
                    slots.free.pop_front();
                    slots.in_flight += 1;
                    return Permit {
                        waited: now - start,
                    };
                }
                // Holding the lock while sleeping keeps the order fair: the next caller waits
                // behind this one.
                tokio::time::sleep_until(ready_at).await;
                continue;
            }
            // Every slot is in flight: wait for one to come back (a permit stored by `Notify`
            // covers a release between the unlock and the wait).
            drop(slots);
            self.returned.notified().await;
        }
    }

    /// Returns the slot of a request whose response has arrived (or that failed).
    pub async fn release(&self, _permit: Permit) {
        let mut slots = self.slots.lock().await;
        slots.in_flight = slots.in_flight.saturating_sub(1);
        let ready_at = Instant::now() + slots.interval;
        if slots.free.len() + slots.in_flight < slots.max {
            slots.free.push_back(ready_at);
        }
        drop(slots);
        self.returned.notify_one();
    }

    /// Adjusts to what the server says: its window (`X-RateLimit-Max`, `-Interval-Milliseconds`)
    /// and, when it says nothing remains (`X-RateLimit-Remaining: 0`), that every slot is spent
    /// until a full interval from now.
    pub async fn observe(
        &self,
        max: Option<u32>,
        interval: Option<Duration>,
        remaining: Option<u32>,
    ) {
        let mut slots = self.slots.lock().await;
        let now = Instant::now();
        if let Some(interval) = interval.filter(|i| !i.is_zero()) {
            slots.interval = interval;
        }
        if let Some(max) = max.map(|m| m.max(1) as usize) {
            while slots.free.len() + slots.in_flight > max && !slots.free.is_empty() {
                slots.free.pop_back();
            }
            while slots.free.len() + slots.in_flight < max {
                let at = slots.free.back().copied().unwrap_or(now);
                slots.free.push_back(at);
            }
            slots.max = max;
        }
        if remaining == Some(0) {
            let until = now + slots.interval;
            for at in slots.free.iter_mut() {
                *at = (*at).max(until);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sends `n` requests through the limiter, each answered after `latency`, and returns the
    /// times the server would see them arrive (send time + half the latency).
    async fn arrivals(
        limiter: std::sync::Arc<RateLimiter>,
        n: usize,
        latency: Duration,
    ) -> Vec<Instant> {
        let mut tasks = Vec::new();
        for _ in 0..n {
            let limiter = limiter.clone();
            tasks.push(tokio::spawn(async move {
                let permit = limiter.acquire().await;
                let arrived = Instant::now() + latency / 2;
                tokio::time::sleep(latency).await;
                limiter.release(permit).await;
                arrived
            }));
        }
        let mut times = Vec::new();
        for t in tasks {
            times.push(t.await.unwrap());
        }
        times.sort();
        times
    }

    fn max_in_window(times: &[Instant], window: Duration) -> usize {
        (0..times.len())
            .map(|i| {
                times[i..]
                    .iter()
                    .take_while(|t| **t < times[i] + window)
                    .count()
            })
            .max()
            .unwrap_or(0)
    }

    #[tokio::test(start_paused = true)]
    async fn never_more_than_max_in_any_window() {
        let window = Duration::from_secs(10);
        let limiter = std::sync::Arc::new(RateLimiter::new(100, window));
        let start = Instant::now();
        let times = arrivals(limiter, 350, Duration::from_millis(150)).await;
        assert_eq!(max_in_window(&times, window), 100);
        // The first 100 go at once; the rest are paced one window (plus a response) apart.
        assert!(times[99] - start < Duration::from_secs(1));
        assert!(times[100] - times[0] >= window);
        assert!(Instant::now() - start < Duration::from_secs(35));
    }

    #[tokio::test(start_paused = true)]
    async fn a_server_with_nothing_remaining_holds_every_slot() {
        let window = Duration::from_secs(10);
        let limiter = RateLimiter::new(100, window);
        limiter.observe(Some(100), Some(window), Some(0)).await;
        let start = Instant::now();
        let permit = limiter.acquire().await;
        assert!(permit.waited >= window && Instant::now() - start >= window);
        limiter.release(permit).await;
    }

    #[tokio::test(start_paused = true)]
    async fn the_window_follows_the_server_headers() {
        let limiter = std::sync::Arc::new(RateLimiter::new(100, Duration::from_secs(10)));
        limiter
            .observe(Some(10), Some(Duration::from_secs(1)), None)
            .await;
        let times = arrivals(limiter, 30, Duration::from_millis(10)).await;
        assert_eq!(max_in_window(&times, Duration::from_secs(1)), 10);
    }
}
