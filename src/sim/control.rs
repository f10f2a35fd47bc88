//! Run-time knobs of the simulator (latency, rate limits, faults, webhook delivery), the rate
//! limiter itself and the request counters. All of it can be changed while the simulator serves, through the admin
//! API or `SimHandle`.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

/// Fractions (0.0 to 1.0) of requests that fail in each way. They are rolled in order, once per
/// request, so their sum is the fraction of requests that fail.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct FaultSpec {
    /// Answer 500 Internal Server Error.
    pub error500: f64,
    /// Answer 502 Bad Gateway.
    pub error502: f64,
    /// Answer 503 Service Unavailable.
    pub error503: f64,
    /// Drop the connection without a complete response.
    pub reset: f64,
    /// Never answer (until `hangMs` passes or the simulator stops).
    pub hang: f64,
    /// Answer 200 with the JSON body cut in half.
    pub truncate: f64,
    /// Answer 200 with a body that is not JSON.
    pub malformed: f64,
    /// Answer 429 whatever the bucket says (a "429 storm").
    pub rate_limit: f64,
}

/// The kind of fault rolled for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Status(u16),
    Reset,
    Hang,
    Truncate,
    Malformed,
    RateLimit,
}

impl FaultSpec {
    pub fn validate(&self) -> Result<(), String> {
        let all = [
            ("error500", self.error500),
            ("error502", self.error502),
            ("error503", self.error503),
            ("reset", self.reset),
            ("hang", self.hang),
            ("truncate", self.truncate),
            ("malformed", self.malformed),
            ("rateLimit", self.rate_limit),
        ];
        for (name, v) in all {
            if !(0.0..=1.0).contains(&v) || v.is_nan() {
                return Err(format!("fault {name} must be between 0 and 1, got {v}"));
            }
        }
        let sum: f64 = all.iter().map(|(_, v)| v).sum();
        if sum > 1.0 + 1e-9 {
            return Err(format!("fault fractions add up to {sum}, more than 1"));
        }
        Ok(())
    }

    /// Maps a uniform roll in [0, 1) to a fault, if any.
    pub fn pick(&self, roll: f64) -> Option<Fault> {
        let mut acc = 0.0;
        for (p, f) in [
            (self.error500, Fault::Status(500)),
            (self.error502, Fault::Status(502)),
            (self.error503, Fault::Status(503)),
            (self.reset, Fault::Reset),
            (self.hang, Fault::Hang),
            (self.truncate, Fault::Truncate),
            (self.malformed, Fault::Malformed),
            (self.rate_limit, Fault::RateLimit),
        ] {
            acc += p;
            if roll < acc {
                return Some(f);
            }
        }
        None
    }
}

/// Faults for every endpoint (`default`) and overrides by endpoint name (see `endpoints`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct FaultConfig {
    pub default: FaultSpec,
    pub endpoints: BTreeMap<String, FaultSpec>,
}

impl FaultConfig {
    pub fn for_endpoint(&self, endpoint: &str) -> &FaultSpec {
        self.endpoints.get(endpoint).unwrap_or(&self.default)
    }

    pub fn validate(&self) -> Result<(), String> {
        self.default.validate()?;
        for (name, spec) in &self.endpoints {
            if !super::endpoints::is_known(name) {
                return Err(format!("unknown endpoint {name:?} in faults"));
            }
            spec.validate()?;
        }
        Ok(())
    }
}

/// Everything that may change while the simulator runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Settings {
    pub latency_ms: u64,
    pub jitter_ms: u64,
    pub burst_limit: u32,
    pub burst_window_ms: u64,
    pub daily_limit: u32,
    pub retry_after: bool,
    pub hang_ms: u64,
    /// How long a created, changed or deleted record takes to show in the search endpoints, in
    /// milliseconds (`GET` by id sees it at once). GHL: a few seconds.
    #[serde(default)]
    pub index_lag_ms: u64,
    /// Requests another client of the same app and location (another process, a replica, the
    /// app's other tools) spends at the opening of every window of every bucket: the share of
    /// the burst limit a sync does not get. The one-off kind is `POST /_sim/rate-limits/spend`.
    #[serde(default)]
    pub other_client_per_window: u32,
    pub webhook_url: Option<String>,
    /// How webhooks are delivered: signatures, redelivery, order, delay, retries.
    #[serde(default)]
    pub webhooks: WebhookKnobs,
    pub faults: FaultConfig,
}

impl Settings {
    /// Refuses fault fractions and webhook knobs out of their ranges, with a message.
    pub fn validate(&self) -> Result<(), String> {
        self.faults.validate()?;
        self.webhooks.validate()
    }
}

/// Which signature headers a webhook carries. GHL sends both on OAuth app events and only
/// `X-GHL-Signature` to conversation-provider URLs (FACTS.md §9.2); `legacy` alone lets a
/// receiver's fallback path be tested.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Signatures {
    /// `X-GHL-Signature` (Ed25519) and `X-WH-Signature` (RSA-SHA256), as app events carry.
    #[default]
    Both,
    /// `X-GHL-Signature` only.
    Ed25519,
    /// `X-WH-Signature` only.
    Legacy,
}

/// What a webhook receiver must survive, as knobs: redelivery, disorder, delay, retries. GHL
/// documents no retry policy (FACTS.md §9.2), so the defaults deliver each event once, in order,
/// at once, without retries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct WebhookKnobs {
    /// Signature headers to send.
    pub signatures: Signatures,
    /// Fraction (0 to 1) of events delivered a second time: the same bytes, `webhookId` and
    /// signatures, right after the first delivery.
    pub redeliver: f64,
    /// Events are delivered in groups of this many, newest first (1: in order, up to 1000).
    pub reorder: u32,
    /// How long a group waits to fill before what it holds is delivered, in milliseconds.
    pub reorder_wait_ms: u64,
    /// Each delivery waits this long after its change was made, in milliseconds.
    pub delay_ms: u64,
    /// Attempts per delivery when the receiver answers non-2xx or cannot be reached (1: no
    /// retry; up to 20).
    pub max_attempts: u32,
    /// Wait before the first retry, in milliseconds; it doubles for each next one (no jitter).
    pub retry_base_ms: u64,
    /// Deliveries in flight at once (1: one at a time, in order; up to 64). Above 1, events
    /// may also arrive out of order on their own, as concurrent senders make them.
    pub concurrency: u32,
}

impl Default for WebhookKnobs {
    fn default() -> Self {
        WebhookKnobs {
            signatures: Signatures::Both,
            redeliver: 0.0,
            reorder: 1,
            reorder_wait_ms: 1000,
            delay_ms: 0,
            max_attempts: 1,
            retry_base_ms: 1000,
            concurrency: 1,
        }
    }
}

impl WebhookKnobs {
    pub fn validate(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.redeliver) || self.redeliver.is_nan() {
            return Err(format!(
                "webhooks.redeliver must be between 0 and 1, got {}",
                self.redeliver
            ));
        }
        if !(1..=1000).contains(&self.reorder) {
            return Err(format!(
                "webhooks.reorder must be between 1 and 1000, got {}",
                self.reorder
            ));
        }
        if !(1..=20).contains(&self.max_attempts) {
            return Err(format!(
                "webhooks.maxAttempts must be between 1 and 20, got {}",
                self.max_attempts
            ));
        }
        if !(1..=64).contains(&self.concurrency) {
            return Err(format!(
                "webhooks.concurrency must be between 1 and 64, got {}",
                self.concurrency
            ));
        }
        let hour = 3_600_000;
        for (name, v) in [
            ("reorderWaitMs", self.reorder_wait_ms),
            ("delayMs", self.delay_ms),
            ("retryBaseMs", self.retry_base_ms),
        ] {
            if v > hour {
                return Err(format!("webhooks.{name} must be at most {hour}, got {v}"));
            }
        }
        Ok(())
    }
}

/// Outcomes of webhook delivery since start (or the last reset), at `GET /_sim/webhooks/stats`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookStats {
    /// Events queued for delivery (one per event emitted while a URL is set).
    pub queued: u64,
    /// Deliveries started: queued events plus redelivered copies.
    pub deliveries: u64,
    /// Of those, the redelivered copies.
    pub redeliveries: u64,
    /// HTTP requests sent: first tries and retries.
    pub attempts: u64,
    /// Of those, the retries.
    pub retries: u64,
    /// Deliveries the receiver answered 2xx.
    pub delivered: u64,
    /// Attempts answered non-2xx or that could not reach the receiver.
    pub failed_attempts: u64,
    /// Deliveries given up after their last attempt failed.
    pub failures: u64,
    /// Events not queued because the queue (1024) was full.
    pub dropped: u64,
    /// Groups delivered newest first by the `reorder` knob (groups of two or more).
    pub reordered_groups: u64,
}

/// Counters of answered requests: endpoint -> status ("200", "429", "reset", "hang") -> count.
pub type Counters = BTreeMap<String, BTreeMap<String, u64>>;

/// One bucket's state: a fixed window for the burst limit and a 24 h window for the daily quota.
#[derive(Debug, Clone)]
struct Bucket {
    window_start: Instant,
    window_count: u32,
    day_start: Instant,
    day_count: u32,
}

impl Bucket {
    fn info(&self, s: &Settings) -> RateInfo {
        RateInfo {
            limit_daily: s.daily_limit,
            daily_remaining: s.daily_limit.saturating_sub(self.day_count),
            interval_ms: s.burst_window_ms,
            max: s.burst_limit,
            remaining: s.burst_limit.saturating_sub(self.window_count),
            retry_after: None,
        }
    }
}

/// The five `X-RateLimit-*` values for one response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateInfo {
    pub limit_daily: u32,
    pub daily_remaining: u32,
    pub interval_ms: u64,
    pub max: u32,
    pub remaining: u32,
    /// Set when the request was refused: time until the window that refused it resets.
    pub retry_after: Option<Duration>,
}

impl RateInfo {
    pub fn headers(&self, with_retry_after: bool) -> Vec<(&'static str, String)> {
        let mut h = vec![
            ("x-ratelimit-limit-daily", self.limit_daily.to_string()),
            (
                "x-ratelimit-daily-remaining",
                self.daily_remaining.to_string(),
            ),
            (
                "x-ratelimit-interval-milliseconds",
                self.interval_ms.to_string(),
            ),
            ("x-ratelimit-max", self.max.to_string()),
            ("x-ratelimit-remaining", self.remaining.to_string()),
        ];
        if let (true, Some(d)) = (with_retry_after, self.retry_after) {
            h.push(("retry-after", d.as_secs_f64().ceil().max(1.0).to_string()));
        }
        h
    }
}

const DAY: Duration = Duration::from_secs(86_400);

/// Fixed-window limiter per bucket, as GHL documents it: `max` requests per interval and a daily
/// quota, per app per location. A refused request does not count against either.
#[derive(Debug, Default)]
pub struct RateLimiter {
    buckets: HashMap<String, Bucket>,
}

impl RateLimiter {
    /// Counts a request on `bucket`: its rate-limit headers, or the refusal's (a 429).
    pub fn check(&mut self, bucket: &str, s: &Settings) -> Result<RateInfo, RateInfo> {
        let now = Instant::now();
        let window = Duration::from_millis(s.burst_window_ms.max(1));
        let b = self.bucket(bucket, s, now);
        let mut info = b.info(s);
        if b.day_count >= s.daily_limit {
            info.retry_after = Some(DAY.saturating_sub(now.duration_since(b.day_start)));
            return Err(info);
        }
        if b.window_count >= s.burst_limit {
            info.retry_after = Some(window.saturating_sub(now.duration_since(b.window_start)));
            return Err(info);
        }
        b.window_count += 1;
        b.day_count += 1;
        Ok(b.info(s))
    }

    /// The headers `bucket` would answer with now, without counting a request: what a 429 that
    /// GHL sends under the limit (a fault) carries.
    pub fn peek(&mut self, bucket: &str, s: &Settings) -> RateInfo {
        self.bucket(bucket, s, Instant::now()).info(s)
    }

    /// Spends up to `requests` of `bucket`'s window, as another client of the same app and
    /// location would; returns how many were counted (a spent window refuses the rest).
    pub fn spend(&mut self, bucket: &str, requests: u32, s: &Settings) -> u32 {
        (0..requests)
            .take_while(|_| self.check(bucket, s).is_ok())
            .count() as u32
    }

    /// The bucket, its window and day restarted when they are over. A window that opens counts
    /// what the other client spends in it (`other_client_per_window`) first.
    fn bucket(&mut self, bucket: &str, s: &Settings, now: Instant) -> &mut Bucket {
        let window = Duration::from_millis(s.burst_window_ms.max(1));
        let mut opened = false;
        let b = self.buckets.entry(bucket.to_string()).or_insert_with(|| {
            opened = true;
            Bucket {
                window_start: now,
                window_count: 0,
                day_start: now,
                day_count: 0,
            }
        });
        if now.duration_since(b.day_start) >= DAY {
            b.day_start = now;
            b.day_count = 0;
        }
        if now.duration_since(b.window_start) >= window {
            b.window_start = now;
            b.window_count = 0;
            opened = true;
        }
        if opened {
            let other = s
                .other_client_per_window
                .min(s.burst_limit)
                .min(s.daily_limit.saturating_sub(b.day_count));
            b.window_count = other;
            b.day_count += other;
        }
        b
    }

    pub fn reset(&mut self) {
        self.buckets.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            latency_ms: 0,
            jitter_ms: 0,
            burst_limit: 3,
            burst_window_ms: 1000,
            daily_limit: 5,
            retry_after: false,
            hang_ms: 0,
            index_lag_ms: 0,
            other_client_per_window: 0,
            webhook_url: None,
            webhooks: WebhookKnobs::default(),
            faults: FaultConfig::default(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn window_counts_down_refuses_then_resets() {
        let s = settings();
        let mut rl = RateLimiter::default();
        let rem: Vec<u32> = (0..3)
            .map(|_| rl.check("b", &s).expect("within limit").remaining)
            .collect();
        assert_eq!(rem, vec![2, 1, 0]);
        let refused = rl.check("b", &s).expect_err("4th is refused");
        assert_eq!(refused.remaining, 0);
        assert!(rl.check("other", &s).is_ok(), "buckets are independent");
        tokio::time::advance(Duration::from_millis(1000)).await;
        let ok = rl.check("b", &s).expect("new window");
        assert_eq!(ok.remaining, 2);
        assert_eq!(ok.daily_remaining, 1);
        rl.check("b", &s).expect("5th of the day");
        let daily = rl.check("b", &s).expect_err("daily quota spent");
        assert_eq!(daily.daily_remaining, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn another_client_spends_the_window_and_a_peek_counts_nothing() {
        let s = settings();
        let mut rl = RateLimiter::default();
        assert_eq!(rl.spend("b", 2, &s), 2);
        assert_eq!(rl.peek("b", &s).remaining, 1);
        assert_eq!(rl.peek("b", &s).remaining, 1, "a peek is not a request");
        assert_eq!(rl.spend("b", 5, &s), 1, "a spent window refuses the rest");
        assert!(rl.check("b", &s).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn another_client_takes_its_share_of_every_window() {
        let s = Settings {
            burst_limit: 10,
            daily_limit: 100,
            other_client_per_window: 3,
            ..settings()
        };
        let mut rl = RateLimiter::default();
        for window in 0..2 {
            let first = rl.check("b", &s).expect("room in the window");
            assert_eq!(
                first.remaining, 6,
                "window {window}: 3 spent by the other client"
            );
            assert_eq!(rl.spend("b", 10, &s), 6);
            assert!(rl.check("b", &s).is_err());
            tokio::time::advance(Duration::from_millis(s.burst_window_ms)).await;
        }
        assert_eq!(rl.peek("b", &s).daily_remaining, 100 - 2 * 10 - 3);
    }

    #[test]
    fn webhook_knobs_out_of_range_are_refused() {
        assert!(WebhookKnobs::default().validate().is_ok());
        let bad = [
            WebhookKnobs {
                redeliver: 1.5,
                ..Default::default()
            },
            WebhookKnobs {
                reorder: 0,
                ..Default::default()
            },
            WebhookKnobs {
                max_attempts: 0,
                ..Default::default()
            },
            WebhookKnobs {
                delay_ms: 3_600_001,
                ..Default::default()
            },
            WebhookKnobs {
                concurrency: 65,
                ..Default::default()
            },
        ];
        for k in bad {
            assert!(k.validate().is_err(), "{k:?} accepted");
        }
    }

    #[test]
    fn faults_pick_by_cumulative_fraction() {
        let f = FaultSpec {
            error500: 0.25,
            reset: 0.25,
            ..Default::default()
        };
        assert_eq!(f.pick(0.1), Some(Fault::Status(500)));
        assert_eq!(f.pick(0.3), Some(Fault::Reset));
        assert_eq!(f.pick(0.6), None);
        assert!(
            FaultSpec {
                hang: 1.5,
                ..Default::default()
            }
            .validate()
            .is_err()
        );
    }
}
