//! The GHL rate limiter under mixed latencies, as a property: whatever the requests' round trips,
//! priorities and outcomes, at most `max` of them start in any sliding window of `interval`.
//! Runs on a paused tokio clock, so thousands of simulated seconds take no real time.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ghl_gateway::upstream::{RateLimiter, Window};
use proptest::prelude::*;
use tokio::time::Instant;

const MAX: u32 = 100;
const INTERVAL: Duration = Duration::from_secs(10);

/// One request of a case: when it is issued, how long it takes to reach GHL and to come back,
/// its priority, and whether an answer comes back at all.
#[derive(Clone, Debug)]
struct Request {
    issued_ms: u64,
    up_ms: u64,
    down_ms: u64,
    priority: u64,
    answered: bool,
}

fn request() -> impl Strategy<Value = Request> {
    (
        0..30_000u64,
        0..3_000u64,
        0..3_000u64,
        0..4u64,
        prop::bool::weighted(0.9),
    )
        .prop_map(|(issued_ms, up_ms, down_ms, priority, answered)| Request {
            issued_ms,
            up_ms,
            down_ms,
            priority,
            answered,
        })
}

/// GHL's counter, as the simulator keeps it: `MAX` per window, a window opening at the first
/// request after the previous one ended. Returns what remains after a request arriving now.
#[derive(Default)]
struct Server {
    start: Option<Instant>,
    count: u32,
}

impl Server {
    fn arrive(&mut self) -> u32 {
        let now = Instant::now();
        if self.start.is_none_or(|s| now - s >= INTERVAL) {
            self.start = Some(now);
            self.count = 0;
        }
        self.count += 1;
        MAX.saturating_sub(self.count)
    }
}

/// Runs every request through one limiter; returns the times they started, sorted.
fn starts(requests: Vec<Request>) -> Vec<Instant> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a paused runtime");
    runtime.block_on(async move {
        let limiter = Arc::new(RateLimiter::new(MAX, INTERVAL));
        let server = Arc::new(Mutex::new(Server::default()));
        let starts = Arc::new(Mutex::new(Vec::new()));
        let origin = Instant::now();
        let tasks: Vec<_> = requests
            .into_iter()
            .map(|r| {
                let (limiter, server, starts) = (limiter.clone(), server.clone(), starts.clone());
                tokio::spawn(async move {
                    tokio::time::sleep_until(origin + Duration::from_millis(r.issued_ms)).await;
                    let permit = limiter.acquire(r.priority).await;
                    starts.lock().unwrap().push(Instant::now());
                    tokio::time::sleep(Duration::from_millis(r.up_ms)).await;
                    let remaining = server.lock().unwrap().arrive();
                    tokio::time::sleep(Duration::from_millis(r.down_ms)).await;
                    if r.answered {
                        let window = Window {
                            max: Some(MAX),
                            interval: Some(INTERVAL),
                            remaining: Some(remaining),
                            refused: false,
                        };
                        limiter.release(permit, window);
                    } else {
                        // A connection reset: the request was sent, no answer says anything.
                        drop(permit);
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("a request task does not panic");
        }
        let mut starts = std::mem::take(&mut *starts.lock().unwrap());
        starts.sort();
        starts
    })
}

/// The most starts in any window `[t, t + INTERVAL)` that opens at a start.
fn busiest_window(starts: &[Instant]) -> usize {
    let mut busiest = 0;
    let mut end = 0;
    for (i, from) in starts.iter().enumerate() {
        while end < starts.len() && starts[end] < *from + INTERVAL {
            end += 1;
        }
        busiest = busiest.max(end - i);
    }
    busiest
}

#[test]
fn the_busiest_window_counts_the_starts_in_it() {
    let t = Instant::now();
    let at = |ms: u64| t + Duration::from_millis(ms);
    assert_eq!(busiest_window(&[]), 0);
    assert_eq!(busiest_window(&[at(0), at(9_999), at(10_000)]), 2);
    assert_eq!(
        busiest_window(&[at(0), at(5_000), at(6_000), at(14_999)]),
        3
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn at_most_max_requests_start_in_any_sliding_window(
        requests in prop::collection::vec(request(), 1..400)
    ) {
        let n = requests.len();
        let starts = starts(requests);
        prop_assert_eq!(starts.len(), n, "every request starts");
        let busiest = busiest_window(&starts);
        prop_assert!(busiest <= MAX as usize, "{} requests started in one window", busiest);
    }
}
