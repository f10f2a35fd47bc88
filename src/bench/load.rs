//! A closed-loop HTTP load generator: `concurrency` workers, each on its own keep-alive
//! connection, send POSTs ([`Bodies`]: the same one, or each a unique one) one after another for
//! a fixed time; every latency goes into an HDR histogram (microseconds, 3 significant digits), so
//! percentiles are exact to 0.1 %. It runs inside the bench process; `wrk` (see `super::wrk`)
//! is the one outside it, used when installed.
//!
//! Closed loop means a slow answer delays the next request of its worker, as a browser tab or a
//! dashboard backend does; it measures what clients see at that concurrency, not an open arrival
//! rate.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// The placeholder in a [`Bodies::Unique`] body that each request replaces with its own token.
pub const NONCE: &str = "__NONCE__";

/// What the workers send.
#[derive(Clone, Debug)]
pub enum Bodies {
    /// The same body every time (a warm cache answers all but the first).
    Same(String),
    /// Bodies taken in turn, each request's [`NONCE`] replaced by a token no other request of the
    /// run has, so that no two requests share a cache entry.
    Unique(Vec<String>),
}

impl Bodies {
    /// The body of request `n` of worker `worker`.
    pub fn nth(&self, worker: usize, n: u64) -> String {
        match self {
            Bodies::Same(body) => body.clone(),
            Bodies::Unique(bodies) => {
                bodies[(n as usize) % bodies.len().max(1)].replace(NONCE, &format!("{worker}-{n}"))
            }
        }
    }
}

/// What one load run measured.
#[derive(Clone, Debug, Default)]
pub struct LoadResult {
    pub concurrency: usize,
    pub requests: u64,
    pub errors: u64,
    /// Requests abandoned at the hard stop (one run length after the end); their latency is
    /// recorded as the time they had waited, a lower bound.
    pub unfinished: u64,
    pub elapsed: Duration,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl LoadResult {
    pub fn rps(&self) -> f64 {
        rate(self.requests, self.elapsed)
    }
}

/// Requests per second; 0 for an empty run.
pub fn rate(requests: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs <= 0.0 {
        0.0
    } else {
        requests as f64 / secs
    }
}

/// Asks `seen` every millisecond until it answers `true`, for at most `within` after `since`.
/// Returns how long after `since` it first did, or `None` when it never did in time. Used to
/// time how long a change takes to show (a write visible through GraphQL, a cached answer
/// invalidated).
pub async fn time_until<F, Fut>(
    since: Instant,
    within: Duration,
    mut seen: F,
) -> anyhow::Result<Option<Duration>>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    loop {
        if seen().await? {
            return Ok(Some(since.elapsed()));
        }
        if since.elapsed() > within {
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Records one [`time_until`] outcome: its time in `h` (µs), or one more in `never`.
pub fn record_until(h: &mut Histogram<u64>, never: &mut u64, took: Option<Duration>) {
    match took {
        Some(took) => {
            let _ = h.record(took.as_micros().max(1) as u64);
        }
        None => *never += 1,
    }
}

/// A histogram of latencies in microseconds, from 1 µs to 10 min.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("static bounds are valid")
}

/// The latency at `quantile` (0..=1) in milliseconds.
pub fn quantile_ms(h: &Histogram<u64>, quantile: f64) -> f64 {
    if h.is_empty() {
        return 0.0;
    }
    h.value_at_quantile(quantile) as f64 / 1000.0
}

/// Sends `body` to `url` from `concurrency` workers for `duration` (after `warmup`, whose
/// requests are not recorded). A request fails when it does not answer 200.
///
/// The rate counts the answers that arrive between the end of the warm-up and the last answer;
/// latencies are those of the requests sent after the warm-up, plus those abandoned at the hard
/// stop (one run length after the end) with the time they had waited.
pub async fn run(
    url: &str,
    headers: &[(&str, String)],
    bodies: Bodies,
    concurrency: usize,
    warmup: Duration,
    duration: Duration,
) -> LoadResult {
    let mut default_headers = reqwest::header::HeaderMap::new();
    for (name, value) in headers {
        default_headers.insert(
            reqwest::header::HeaderName::from_bytes(name.as_bytes()).expect("a valid header name"),
            value.parse().expect("a valid header value"),
        );
    }
    let bodies = std::sync::Arc::new(bodies);
    let start_at = Instant::now() + warmup;
    let end_at = start_at + duration;
    // Requests still unanswered this long after the run are abandoned (and counted), so that a
    // design far slower than the run cannot stretch it to minutes.
    let hard_stop = end_at + duration;
    let mut workers = Vec::with_capacity(concurrency);
    for worker in 0..concurrency {
        // One client per worker: one keep-alive connection each, no pool contention.
        let client = reqwest::Client::builder()
            .http1_only()
            .pool_max_idle_per_host(1)
            .default_headers(default_headers.clone())
            .build()
            .expect("the HTTP client builds");
        let url = url.to_owned();
        let bodies = bodies.clone();
        workers.push(tokio::spawn(async move {
            let mut h = histogram();
            let mut errors = 0u64;
            // Answers that arrived inside the measured window, whenever their request left.
            let mut completed = 0u64;
            let mut last = start_at;
            let mut unfinished = 0u64;
            let mut n = 0u64;
            loop {
                n += 1;
                let body = bodies.nth(worker, n);
                let sent = Instant::now();
                if sent >= end_at {
                    break;
                }
                let request = async {
                    match client.post(&url).body(body).send().await {
                        Ok(response) => {
                            let ok = response.status().is_success();
                            ok && response.bytes().await.is_ok()
                        }
                        Err(_) => false,
                    }
                };
                let outcome = tokio::time::timeout_at(hard_stop.into(), request).await;
                let done = Instant::now();
                let Ok(ok) = outcome else {
                    // Still waiting at the hard stop: its latency is at least this long.
                    unfinished += 1;
                    h.saturating_record((done - sent.max(start_at)).as_micros().max(1) as u64);
                    break;
                };
                if done < start_at {
                    continue;
                }
                last = last.max(done);
                if !ok {
                    errors += 1;
                    continue;
                }
                completed += 1;
                if sent >= start_at {
                    h.saturating_record((done - sent).as_micros().max(1) as u64);
                }
            }
            (h, errors, completed, last, unfinished)
        }));
    }
    let mut total = histogram();
    let mut errors = 0;
    let mut completed = 0;
    let mut last = start_at;
    let mut unfinished = 0;
    for worker in workers {
        let (h, e, c, l, u) = worker.await.expect("a load worker does not panic");
        unfinished += u;
        total.add(&h).expect("same bounds");
        errors += e;
        completed += c;
        last = last.max(l);
    }
    // The window runs from the end of the warm-up to the last answer (at least `duration`).
    let elapsed = last.saturating_duration_since(start_at).max(duration);
    LoadResult {
        concurrency,
        requests: completed,
        errors,
        unfinished,
        elapsed,
        p50_ms: quantile_ms(&total, 0.50),
        p95_ms: quantile_ms(&total, 0.95),
        p99_ms: quantile_ms(&total, 0.99),
        max_ms: total.max() as f64 / 1000.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_from_the_whole_distribution() {
        let mut h = histogram();
        // 1..=1000 ms, one each: p50 = 500 ms, p99 = 990 ms (within the histogram's 0.1 %).
        for ms in 1..=1000u64 {
            h.record(ms * 1000).unwrap();
        }
        let close = |a: f64, b: f64| (a - b).abs() <= b * 0.001 + 0.001;
        assert!(
            close(quantile_ms(&h, 0.50), 500.0),
            "{}",
            quantile_ms(&h, 0.5)
        );
        assert!(close(quantile_ms(&h, 0.95), 950.0));
        assert!(close(quantile_ms(&h, 0.99), 990.0));
        assert_eq!(quantile_ms(&histogram(), 0.99), 0.0);
    }

    #[test]
    fn rate_of_an_empty_run_is_zero() {
        assert_eq!(rate(10, Duration::ZERO), 0.0);
        assert_eq!(rate(30, Duration::from_secs(3)), 10.0);
    }
}
