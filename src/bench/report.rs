//! The benchmark report: the machine it ran on, and the Markdown of BENCHMARKS.md (every target
//! with its measured value, ratios side by side, and what is known of each miss).

use std::fmt::Write as _;
use std::time::Duration;

use super::load::LoadResult;
use super::read::{BackendResult, Point};
use super::sync::{self, FullCase, SeedResult};
use super::webhooks::WebhookResult;
use super::{CODINGS_CONCURRENCY, CONCURRENCIES, DURING_SYNC_CONCURRENCY, PAGE_SIZES};

/// The machine, as the report describes it.
pub(super) fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(str::trim)
        .unwrap_or("unknown")
        .to_owned();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_gib = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    let command = |program: &str, args: &[&str]| {
        std::process::Command::new(program)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_else(|| "unknown".into())
    };
    let load = std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ");
    format!(
        "- CPU: {model}, {cores} cores available\n- RAM: {mem_gib:.1} GiB\n- {}\n- commit {}, release build\n- load average at start: {load}\n- date: {}",
        command("rustc", &["--version"]),
        {
            let dirty = command("git", &["status", "--porcelain", "--untracked-files=no"]);
            let head = command("git", &["rev-parse", "--short", "HEAD"]);
            if dirty.is_empty() || dirty == "unknown" {
                head
            } else {
                format!("{head} with uncommitted changes")
            }
        },
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC"),
    )
}

/// Everything one run measured.
#[derive(Default)]
pub(super) struct Report {
    pub quick: bool,
    pub machine: String,
    pub read: Vec<BackendResult>,
    pub full: Vec<FullCase>,
    pub seed: Option<SeedResult>,
    pub webhooks: Vec<WebhookResult>,
    pub elapsed: Duration,
}

/// Whether a sync run ended in success.
fn succeeded(run: &sync::RunResult) -> bool {
    run.state == crate::store::job_state_name(crate::domain::JobState::Succeeded)
}

fn yes(met: bool) -> &'static str {
    if met { "met" } else { "**missed**" }
}

fn find<'a>(r: &'a BackendResult, design: &str, first: usize, c: usize) -> Option<&'a Point> {
    r.points
        .iter()
        .find(|p| p.design == design && p.first == first && p.load.concurrency == c)
}

/// `a / b` as `12.3x`, or `-` when `b` measured nothing.
fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 {
        format!("{:.1}x", a / b)
    } else {
        "-".into()
    }
}

/// The cold-path rate at `first: 500`, concurrency 32, before wave 2 (BENCHMARKS.md of commit
/// b16a12a, built-in load generator), which issue 12 asks to double.
fn before_first_500(backend: &str) -> f64 {
    if backend == "SQLite" { 18.9 } else { 22.5 }
}

/// Seconds with two decimals, comma-separated: `1.31, 1.42`.
fn secs_list(values: &[f64]) -> String {
    let parts: Vec<String> = values.iter().map(|v| format!("{v:.2}")).collect();
    parts.join(", ")
}

/// ` (mean of N runs: a, b, ...)` after a mean of several runs; nothing after a single run.
fn mean_of(runs: &[f64]) -> String {
    match runs.len() {
        0 | 1 => String::new(),
        n => format!(" (mean of {n} runs: {})", secs_list(runs)),
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

impl Report {
    /// The report as Markdown.
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "# Benchmarks\n");
        let _ = writeln!(
            s,
            "Produced by `bench/run{}` (`ghl-gateway bench{}`) in {:.0} s: **{} mode**{}.\n",
            if self.quick { " --quick" } else { "" },
            if self.quick { " --quick" } else { "" },
            self.elapsed.as_secs_f64(),
            if self.quick { "quick" } else { "full" },
            if self.quick {
                " (1 s per load point, no 100k sync, the seed design at 200 contacts)"
            } else {
                " (3 s per load point after 0.5 s of warm-up)"
            }
        );
        let _ = writeln!(s, "## Machine\n\n{}\n", self.machine);
        self.targets(&mut s);
        self.read_tables(&mut s);
        self.sync_tables(&mut s);
        self.webhook_tables(&mut s);
        self.method(&mut s);
        s
    }

    fn targets(&self, s: &mut String) {
        let _ = writeln!(s, "## Targets (issues 7, 12 and 13)\n");
        let _ = writeln!(s, "| target | measured | status |\n| --- | --- | --- |");
        for r in &self.read {
            let b = &r.backend;
            let stmts: Vec<u64> = PAGE_SIZES
                .iter()
                .filter_map(|&f| find(r, "off", f, 1).map(|p| p.statements))
                .collect();
            let constant = stmts.windows(2).all(|w| w[0] == w[1]);
            let _ = writeln!(
                s,
                "| {b}: SQL statements per request constant in page size | {} at first 50 / 500 | {} |",
                stmts
                    .iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(" / "),
                yes(constant)
            );
            if let (Some(w32), Some(w1)) = (find(r, "warm", 50, 32), find(r, "warm", 50, 1)) {
                let rps = w32.load.rps();
                let _ = writeln!(
                    s,
                    "| {b}: warm, dashboard page (50) ≥ 10,000 req/s at concurrency 32 | {rps:.0} req/s | {} |",
                    yes(rps >= 10_000.0)
                );
                let _ = writeln!(
                    s,
                    "| {b}: warm, … with p99 ≤ 10 ms | p99 {:.2} ms | {} |",
                    w32.load.p99_ms,
                    yes(w32.load.p99_ms <= 10.0)
                );
                let _ = writeln!(
                    s,
                    "| {b}: warm, p50 ≤ 1 ms at concurrency 1 | p50 {:.2} ms | {} |",
                    w1.load.p50_ms,
                    yes(w1.load.p50_ms <= 1.0)
                );
            }
            let cold_target = if b == "SQLite" { 500.0 } else { 400.0 };
            if let Some(c32) = find(r, "cold", 50, 32) {
                let rps = c32.load.rps();
                let _ = writeln!(
                    s,
                    "| {b}: cold, dashboard page (50) ≥ {cold_target:.0} req/s at concurrency 32 | {rps:.0} req/s (hit ratio {:.0}%) | {} |",
                    c32.hit_ratio.unwrap_or(0.0) * 100.0,
                    yes(rps >= cold_target)
                );
            }
            if let Some(c1) = find(r, "cold", 50, 1) {
                let _ = writeln!(
                    s,
                    "| {b}: cold, p50 ≤ 3 ms at concurrency 1 | p50 {:.2} ms | {} |",
                    c1.load.p50_ms,
                    yes(c1.load.p50_ms <= 3.0)
                );
            }
            if let Some(c500) = find(r, "cold", 500, 32) {
                let before = before_first_500(b);
                let rps = c500.load.rps();
                let _ = writeln!(
                    s,
                    "| {b}: cold, first 500 ≥ 2x the rate before wave 2 (c=32) | {rps:.1} req/s vs {before:.1} ({}) | {} |",
                    ratio(rps, before),
                    yes(rps >= 2.0 * before)
                );
            }
            if let (Some(g), Some(n)) = (find(r, "cold", 50, 32), find(r, "n+1", 50, 32)) {
                let (rps, n_rps) = (g.load.rps(), n.load.rps());
                let _ = writeln!(
                    s,
                    "| {b}: cold ≥ 20x the N+1 baseline (c=32, first 50) | {} ({rps:.0} vs {n_rps:.1} req/s) | {} |",
                    ratio(rps, n_rps),
                    yes(n_rps > 0.0 && rps / n_rps >= 20.0)
                );
            }
            let rss = |design: &str| {
                r.points
                    .iter()
                    .filter(|p| p.design == design)
                    .map(|p| p.rss_kib)
                    .max()
                    .unwrap_or(0)
            };
            let _ = writeln!(
                s,
                "| {b}: the cache within its bound ({} MiB) | at most {:.1} MiB held right after a run; process RSS at most {:.0} MiB (warm) / {:.0} MiB (cold) | {} |",
                r.cache_bound_bytes >> 20,
                r.cache_bytes as f64 / 1_048_576.0,
                mib(rss("warm")),
                mib(rss("cold")),
                yes(r.cache_bytes <= r.cache_bound_bytes)
            );
            if let [identity, compressed @ ..] = r.codings.as_slice() {
                let worst = compressed
                    .iter()
                    .map(|c| c.load.rps() / identity.load.rps().max(f64::MIN_POSITIVE))
                    .fold(f64::INFINITY, f64::min);
                let _ = writeln!(
                    s,
                    "| {b}: compression keeps the warm gain (gzip and br warm req/s ≥ 0.8x identity, c={CODINGS_CONCURRENCY}) | {}; bytes at 50 contacts: {} | {} |",
                    r.codings
                        .iter()
                        .map(|c| format!("{} {:.0} req/s", c.coding, c.load.rps()))
                        .collect::<Vec<_>>()
                        .join(", "),
                    r.codings
                        .iter()
                        .map(|c| format!("{} {}", c.coding, c.bytes_50))
                        .collect::<Vec<_>>()
                        .join(", "),
                    yes(worst >= 0.8)
                );
            }
            let ratio = r.during_sync.p99_ms / r.idle.p99_ms.max(f64::MIN_POSITIVE);
            let _ = writeln!(
                s,
                "| {b}: reads during a FULL sync, p99 within 2x of idle (c={DURING_SYNC_CONCURRENCY}) | {:.1} ms vs {:.1} ms idle ({ratio:.2}x); hit ratio during the syncs {:.0}% | {} |",
                r.during_sync.p99_ms,
                r.idle.p99_ms,
                r.during_sync_hit_ratio * 100.0,
                yes(ratio <= 2.0)
            );
        }
        for c in &self.full {
            let n = c.contacts;
            let limit = c.minimum_calls as f64 * 1.02;
            let _ = writeln!(
                s,
                "| FULL {n}: calls ≤ minimum + 2% | {} calls, minimum {} (+{:.1}%) | {} |",
                c.sim_calls,
                c.minimum_calls,
                (c.sim_calls as f64 / c.minimum_calls as f64 - 1.0) * 100.0,
                yes(c.sim_calls as f64 <= limit)
            );
            let _ = writeln!(
                s,
                "| FULL {n}: zero 429s | {} | {} |",
                c.sim_429,
                yes(c.sim_429 == 0)
            );
            let expected =
                sync::gateway_calls(c.contacts as u64, c.tasks, c.conversations, c.opportunities);
            let _ = writeln!(
                s,
                "| FULL {n}: calls = the minimum | {} calls, the sync's minimum {expected} (§11's {} + the conversations' overlap + the location's details) | {} |",
                c.sim_calls,
                c.minimum_calls,
                yes(c.sim_calls == expected)
            );
            // Both bounds are what a run meets on average: where the fault-free run was
            // repeated (1k and 10k, beside the spurious case), the target takes their mean.
            let wall = c.fault_free_secs();
            let runs = mean_of(&c.fault_free_runs);
            let ratio = wall / c.bound_secs;
            let _ = writeln!(
                s,
                "| FULL {n}: wall time ≤ 1.10x the bound | {wall:.2} s{runs} vs {:.2} s ({ratio:.2}x; rate {:.1} s, chain of {} pages {:.1} s) | {} |",
                c.bound_secs,
                c.bound.rate_secs,
                c.longest_chain,
                c.bound.chain_secs,
                yes(ratio <= 1.10)
            );
            let joint = wall / c.bound.joint_secs;
            let _ = writeln!(
                s,
                "| FULL {n}: wall time ≤ 1.10x the joint bound (every chain under the sliding window at once) | {wall:.2} s{runs} vs {:.2} s ({joint:.2}x) | {} |",
                c.bound.joint_secs,
                yes(joint <= 1.10)
            );
            if let Some(v) = &c.shared {
                let ratio = v.wall_secs / v.bound.secs();
                let runs = mean_of(&v.runs);
                let _ = writeln!(
                    s,
                    "| FULL {n}, {}% of every window spent by another client: wall ≤ 1.10x the bound, calls = the minimum, 0 429s | {:.2} s{runs} vs {:.2} s ({ratio:.2}x; rate {:.1} s at {} a window, chain {:.1} s), {} calls, {} 429s | {} |",
                    sync::SHARED_PER_WINDOW,
                    v.wall_secs,
                    v.bound.secs(),
                    v.bound.rate_secs,
                    100 - sync::SHARED_PER_WINDOW,
                    v.bound.chain_secs,
                    v.sim_calls,
                    v.sim_429,
                    yes(ratio <= 1.10
                        && v.sim_calls == expected
                        && v.sim_429 == 0
                        && succeeded(&v.worker.full))
                );
                let joint = v.wall_secs / v.bound.joint_secs;
                let _ = writeln!(
                    s,
                    "| FULL {n}, {}% of every window spent by another client: wall ≤ 1.10x the joint bound | {:.2} s{runs} vs {:.2} s ({joint:.2}x) | {} |",
                    sync::SHARED_PER_WINDOW,
                    v.wall_secs,
                    v.bound.joint_secs,
                    yes(joint <= 1.10 && succeeded(&v.worker.full))
                );
            }
            if let Some(v) = &c.spurious {
                let ratio = v.wall_secs / c.fault_free_secs();
                let means = if v.runs.len() > 1 {
                    format!(
                        " (means of {} runs each: {} against {})",
                        v.runs.len(),
                        secs_list(&v.runs),
                        secs_list(&c.fault_free_runs)
                    )
                } else {
                    String::new()
                };
                let _ = writeln!(
                    s,
                    "| FULL {n}, {:.0}% spurious 429s: ≤ 2x the fault-free time | {:.2} s vs {:.2} s ({ratio:.2}x){means}; first run: {} 429s answered, {} retries, {} | {} |",
                    sync::SPURIOUS_429 * 100.0,
                    v.wall_secs,
                    c.fault_free_secs(),
                    v.sim_429,
                    v.worker.full.retries,
                    v.worker.full.state,
                    yes(ratio <= 2.0 && succeeded(&v.worker.full))
                );
            }
            if c.worker.full.state
                != crate::store::job_state_name(crate::domain::JobState::Succeeded)
            {
                let _ = writeln!(
                    s,
                    "| FULL {n}: the sync succeeds | {} ({}) | **missed** |",
                    c.worker.full.state,
                    c.worker.full.error.clone().unwrap_or_default()
                );
            }
        }
        if let (Some(seed), Some(c10)) =
            (&self.seed, self.full.iter().find(|c| c.contacts == 10_000))
        {
            let seed10 = sync::seed_calls(10_000, c10.conversations, c10.opportunities);
            let ratio = seed10 as f64 / c10.sim_calls as f64;
            let _ = writeln!(
                s,
                "| ≥ 20x fewer calls than the seed design at 10k | {} vs {seed10} (seed extrapolated from its exact call count; measured at {}: {} calls) → {ratio:.0}x | {} |",
                c10.sim_calls,
                seed.contacts,
                seed.calls,
                yes(ratio >= 20.0)
            );
            if let Some(inc) = &c10.worker.incremental_none {
                let _ = writeln!(
                    s,
                    "| INCREMENTAL, nothing changed: ≤ 8 calls (10k) | {} calls in {:.1} s | {} |",
                    inc.calls,
                    inc.wall_ms as f64 / 1000.0,
                    yes(inc.calls <= 8)
                );
            }
        }
        if let Some(c) = self.full.iter().find(|c| c.contacts == 100_000) {
            let peak = mib(c.worker.peak_rss_kib);
            let _ = writeln!(
                s,
                "| peak RSS while syncing 100k contacts ≤ 100 MB | {peak:.0} MiB (sync process alone; simulator in its own process) | {} |",
                yes(peak * 1.048_576 <= 100.0)
            );
        } else {
            let _ = writeln!(
                s,
                "| peak RSS while syncing 100k contacts ≤ 100 MB | not measured in quick mode | not run |"
            );
        }
        for w in &self.webhooks {
            let b = &w.backend;
            if b == "SQLite" {
                let _ = writeln!(
                    s,
                    "| {b}: webhook events ingested ≥ 2,000/s (issue 13) | {:.0} events/s, {} refused | {} |",
                    w.events_per_sec(),
                    w.refused,
                    yes(w.events_per_sec() >= 2_000.0 && w.refused == 0)
                );
            }
            let _ = writeln!(
                s,
                "| {b}: simulator admin write visible through GraphQL, p99 ≤ 1 s (issue 13) | p99 {:.0} ms over {} writes, {} not visible | {} |",
                w.visible_p99_ms,
                w.writes,
                w.invisible,
                yes(w.visible_p99_ms <= 1_000.0 && w.invisible == 0 && w.writes > 0)
            );
        }
        let _ = writeln!(s);
    }

    fn webhook_tables(&self, s: &mut String) {
        if self.webhooks.is_empty() {
            return;
        }
        let _ = writeln!(
            s,
            "## Webhooks: signed events ingested, and admin writes visible through GraphQL\n\n\
             `ContactUpdate` events, each newer than the row it updates (so each is a write), signed with Ed25519 \
             and delivered to `POST /webhooks/ghl` from {} keep-alive connections; every answer must be 200 `applied`. \
             Then simulator admin writes (a contact created) one after another, each timed until `contact(id)` \
             through GraphQL returns it (polled every millisecond). Gateway, simulator and client share this process.\n",
            super::webhooks::INGEST_CONCURRENCY
        );
        let _ = writeln!(
            s,
            "| database | commit | events | events/s | delivery p50 ms | delivery p99 ms | SQL statements / event | refused | writes | visible p50 ms | visible p99 ms | visible max ms | not visible in 10 s |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
        );
        for w in &self.webhooks {
            let ingest = |mode: &str, r: &WebhookResult| {
                format!(
                    "| {} | {mode} | {} | {:.0} | {:.2} | {:.2} | {:.1} | {} |",
                    w.backend,
                    r.events,
                    r.events_per_sec(),
                    r.p50_ms,
                    r.p99_ms,
                    r.statements_per_event,
                    r.refused,
                )
            };
            if let Some(alone) = &w.alone {
                let _ = writeln!(
                    s,
                    "{} | | | | |",
                    ingest("one transaction per event", alone)
                );
            }
            let _ = writeln!(
                s,
                "{} {} | {:.1} | {:.1} | {:.1} | {} |",
                ingest("group commit", w),
                w.writes,
                w.visible_p50_ms,
                w.visible_p99_ms,
                w.visible_max_ms,
                w.invisible
            );
        }
        let _ = writeln!(s);
    }

    fn read_tables(&self, s: &mut String) {
        for r in &self.read {
            let _ = writeln!(
                s,
                "## Read path: {} ({} contacts, filled by a real FULL sync from the simulator in {:.1} s)\n",
                r.backend, r.contacts, r.fill_secs
            );
            let _ = writeln!(
                s,
                "Load from {}; every request carries a client API key (per-key rate limit off).\n",
                if r.external {
                    "`wrk` (another process)"
                } else {
                    "the built-in generator (in the server's process: `wrk` was not installed)"
                }
            );
            let _ = writeln!(
                s,
                "| first | concurrency | design | req/s | p50 ms | p95 ms | p99 ms | cache hits | SQL / request | response bytes | RSS MiB | errors / unfinished | / N+1 |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
            );
            for first in PAGE_SIZES {
                for c in CONCURRENCIES {
                    let n = find(r, "n+1", first, c);
                    for design in super::read::DESIGNS {
                        let Some(p) = find(r, design, first, c) else {
                            continue;
                        };
                        let versus = match (design, n) {
                            ("n+1", _) | (_, None) => String::new(),
                            (_, Some(n)) => ratio(p.load.rps(), n.load.rps()),
                        };
                        let _ = writeln!(
                            s,
                            "| {first} | {c} | {design} | {:.1} | {:.2} | {:.2} | {:.2} | {} | {} | {} | {:.0} | {} / {} | {versus} |",
                            p.load.rps(),
                            p.load.p50_ms,
                            p.load.p95_ms,
                            p.load.p99_ms,
                            p.hit_ratio
                                .map_or("-".to_owned(), |h| format!("{:.0}%", h * 100.0)),
                            p.statements,
                            p.bytes,
                            mib(p.rss_kib),
                            p.load.errors,
                            p.load.unfinished,
                        );
                    }
                }
            }
            let row = |name: &str, l: &LoadResult| {
                format!(
                    "| {name} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} |",
                    l.rps(),
                    l.p50_ms,
                    l.p95_ms,
                    l.p99_ms,
                    l.max_ms
                )
            };
            if !r.codings.is_empty() {
                let _ = writeln!(
                    s,
                    "\nWarm answers by content coding (`Accept-Encoding`; the cached entry keeps its encoded forms), first 50, concurrency {CODINGS_CONCURRENCY}:\n"
                );
                let _ = writeln!(
                    s,
                    "| coding | bytes on the wire (50 contacts) | bytes (500 contacts) | req/s | p50 ms | p99 ms | / identity req/s |\n| --- | --- | --- | --- | --- | --- | --- |"
                );
                let identity = r.codings.first().map_or(0.0, |c| c.load.rps());
                for c in &r.codings {
                    let _ = writeln!(
                        s,
                        "| {} | {} | {} | {:.0} | {:.2} | {:.2} | {} |",
                        c.coding,
                        c.bytes_50,
                        c.bytes_500,
                        c.load.rps(),
                        c.load.p50_ms,
                        c.load.p99_ms,
                        ratio(c.load.rps(), identity)
                    );
                }
            }
            let _ = writeln!(
                s,
                "\nReads (first 50, concurrency {DURING_SYNC_CONCURRENCY}) while FULL syncs of the same location write it back to back ({} syncs ran during the measurement):\n",
                r.syncs_during
            );
            let _ = writeln!(
                s,
                "| reads | req/s | p50 ms | p95 ms | p99 ms | max ms |\n| --- | --- | --- | --- | --- | --- |\n{}\n{}\n",
                row("idle", &r.idle),
                row("during FULL sync", &r.during_sync)
            );
        }
    }

    fn sync_tables(&self, s: &mut String) {
        if self.full.is_empty() {
            return;
        }
        let _ = writeln!(
            s,
            "## Sync path: FULL sync against the simulator with GHL's limits (100 requests / 10 s, 200,000 a day) and 150 ± 100 ms latency\n"
        );
        let _ = writeln!(
            s,
            "| contacts | tasks | conversations | opportunities | calls (sim) | minimum §11 | 429s | retries | wall s | rate bound s | chain bound s (pages) | wall / bound | joint bound s | wall / joint bound | peak RSS MiB (sync process) | RSS after start MiB |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
        );
        for c in &self.full {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {:.1} | {:.1} | {:.1} ({}) | {:.2} | {:.2} | {:.2} | {:.0} | {:.0} |",
                c.contacts,
                c.tasks,
                c.conversations,
                c.opportunities,
                c.sim_calls,
                c.minimum_calls,
                c.sim_429,
                c.worker.full.retries,
                c.wall_secs,
                c.bound.rate_secs,
                c.bound.chain_secs,
                c.longest_chain,
                c.wall_secs / c.bound_secs,
                c.bound.joint_secs,
                c.wall_secs / c.bound.joint_secs,
                mib(c.worker.peak_rss_kib),
                mib(c.worker.start_rss_kib),
            );
        }
        let _ = writeln!(
            s,
            "\nThe same FULL syncs with another client spending {} requests of every window (the simulator's `otherClientPerWindow`: the rate bound counts {} a window), and with {:.0}% of the requests answered 429 under the limit (up to 10k contacts):\n",
            sync::SHARED_PER_WINDOW,
            100 - sync::SHARED_PER_WINDOW,
            sync::SPURIOUS_429 * 100.0
        );
        let _ = writeln!(
            s,
            "| contacts | case | state | calls (sim) | 429s | retries | wall s | rate bound s | chain bound s | wall / bound | joint bound s | wall / joint bound | wall / fault-free | peak RSS MiB |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
        );
        for c in &self.full {
            for v in c.shared.iter().chain(&c.spurious) {
                let case = match v.scenario {
                    sync::Scenario::Clean => "clean".to_owned(),
                    sync::Scenario::Shared { per_window } => {
                        format!("{per_window} a window spent elsewhere")
                    }
                    sync::Scenario::Spurious429 { fraction } => {
                        format!("{:.0}% spurious 429s", fraction * 100.0)
                    }
                };
                let _ = writeln!(
                    s,
                    "| {} | {case} | {} | {} | {} | {} | {:.1} | {:.1} | {:.1} | {:.2} | {:.2} | {:.2} | {:.2} | {:.0} |",
                    c.contacts,
                    v.worker.full.state,
                    v.sim_calls,
                    v.sim_429,
                    v.worker.full.retries,
                    v.wall_secs,
                    v.bound.rate_secs,
                    v.bound.chain_secs,
                    v.wall_secs / v.bound.secs(),
                    v.bound.joint_secs,
                    v.wall_secs / v.bound.joint_secs,
                    v.wall_secs / c.fault_free_secs(),
                    mib(v.worker.peak_rss_kib),
                );
            }
        }
        let _ = writeln!(
            s,
            "\nCalls per stage (client's count; `waited` = time spent waiting for the rate limiter):\n"
        );
        let _ = writeln!(
            s,
            "| contacts | stage | calls | pages | rows | waited s |\n| --- | --- | --- | --- | --- | --- |"
        );
        for c in &self.full {
            for (name, st) in &c.worker.full.stages {
                let _ = writeln!(
                    s,
                    "| {} | {name} | {} | {} | {} | {:.1} |",
                    c.contacts,
                    st.calls,
                    st.pages,
                    st.fetched,
                    st.waited_ms as f64 / 1000.0
                );
            }
        }
        if let Some(c) = self
            .full
            .iter()
            .find(|c| c.worker.incremental_none.is_some())
        {
            let _ = writeln!(
                s,
                "\n### INCREMENTAL sync ({} contacts, after the FULL sync, each run after a full rate-limit window)\n",
                c.contacts
            );
            let _ = writeln!(
                s,
                "| run | calls | 429s | wall s | calls per stage |\n| --- | --- | --- | --- | --- |"
            );
            let changed = format!("{} contacts changed (1%)", c.worker.changed);
            for (name, run) in [
                ("nothing changed", &c.worker.incremental_none),
                (changed.as_str(), &c.worker.incremental_changed),
            ] {
                if let Some(run) = run {
                    let stages = run
                        .stages
                        .iter()
                        .map(|(n, st)| format!("{n} {}", st.calls))
                        .collect::<Vec<_>>()
                        .join(", ");
                    let _ = writeln!(
                        s,
                        "| {name} | {} | {} | {:.2} | {stages} |",
                        run.calls,
                        run.rate_limited,
                        run.wall_ms as f64 / 1000.0
                    );
                }
            }
        }
        if let Some(seed) = &self.seed {
            let _ = writeln!(
                s,
                "\n### The seed's design, same run (stages one after another, one `GET /contacts/{{id}}/tasks` per contact)\n"
            );
            let _ = writeln!(
                s,
                "| contacts | calls | 429s | wall s | gateway FULL calls | gateway wall s | calls ratio | time ratio |\n| --- | --- | --- | --- | --- | --- | --- | --- |"
            );
            let ours = self.full.iter().find(|c| c.contacts == seed.contacts);
            let (oc, ow) = ours.map_or((String::from("-"), String::from("-")), |c| {
                (c.sim_calls.to_string(), format!("{:.1}", c.wall_secs))
            });
            let (cr, tr) = ours.map_or((String::from("-"), String::from("-")), |c| {
                (
                    format!("{:.0}x", seed.calls as f64 / c.sim_calls as f64),
                    format!("{:.0}x", seed.wall_secs / c.wall_secs),
                )
            });
            let _ = writeln!(
                s,
                "| {} (measured) | {} | {} | {:.1} | {oc} | {ow} | {cr} | {tr} |",
                seed.contacts, seed.calls, seed.rate_limited, seed.wall_secs
            );
            if let Some(c10) = self.full.iter().find(|c| c.contacts == 10_000) {
                let calls = sync::seed_calls(10_000, c10.conversations, c10.opportunities);
                let per_call = seed.wall_secs / seed.calls.max(1) as f64;
                let rate = sync::lower_bound_secs(calls, 100, 10.0, 0.15, 1);
                let secs = (per_call * calls as f64).max(rate);
                let _ = writeln!(
                    s,
                    "| 10000 (extrapolated) | {calls} | - | {secs:.0} | {} | {:.1} | {:.0}x | {:.0}x |",
                    c10.sim_calls,
                    c10.wall_secs,
                    calls as f64 / c10.sim_calls as f64,
                    secs / c10.wall_secs
                );
            }
        }
        let _ = writeln!(s);
    }

    fn method(&self, s: &mut String) {
        let _ = writeln!(
            s,
            "## How these numbers are made\n\n\
- **Read path.** One gateway (`App::build`, release build) on a fresh database; its location is filled by a real FULL sync from `ghl-gateway sim` (a child process, 10,000 contacts with the simulator's ratios of tasks, conversations and opportunities, no latency and a burst limit no sync reaches). A second gateway on the same database runs with the response cache off. Every request carries a client API key (the key lookup every client pays; the per-key rate limit is off). Designs: **warm** sends the dashboard query (`README.md`, `first` 50 or 500) again and again, so the response cache answers all but the first; **cold** sends it over the location's pages in turn with an unused variable that makes every request unique, so no two share a cache entry (the cache is on and misses); **off** sends the same request to the gateway without a cache; **n+1** is the seed's design. The load comes from `wrk` in another process when it is installed (`apt-get install wrk`), with up to 2 threads and `concurrency` keep-alive connections, a warm-up run first; otherwise from the built-in closed-loop generator in the server's process (the table says which). Clients and server share the machine's cores. Hit ratios are the response cache's own counters over the run; RSS is the gateway process's `VmRSS` after the run; SQL statements per request and response bytes come from one request alone (`Store::statements()` before and after, a `totalCount` answered from the store's memo counted as its statement; a cold probe is a miss)\n\
- **N+1 baseline (the seed's design).** An axum endpoint in the bench over the same store renders the same JSON: one query for the page and the count, then for every contact separate queries for its user, custom-field values and definitions, tasks and their users, conversations, opportunities and their pipelines and stages. It runs in the same run, right after the gateway at each point.\n\
- **Reads during a sync.** The 50-contact query at concurrency {DURING_SYNC_CONCURRENCY}, first idle, then while FULL syncs of the same 10k location run back to back against the unthrottled simulator (the fastest, hence harshest, writer).\n\
- **Sync path.** Each FULL sync runs in a child process (`ghl-gateway bench --worker`) on a fresh SQLite file against a fresh `ghl-gateway sim` process with GHL's limits (100 requests per 10 s, 200,000 a day) and 50 + U(0..200) ms latency (150 ± 100 ms). Calls and 429s are the simulator's own counters; peak RSS is the worker's `VmHWM` (the simulator's memory is not in it). INCREMENTAL runs wait out one rate-limit window first, so that they start with a full budget as a scheduled run would; the 1% change is made through the simulator's admin API (`PATCH /_sim/locations/{{loc}}/contacts/{{id}}`).\n\
- **Minimum calls** (FACTS.md §11): 3 (users, custom fields, pipelines) + ⌈N/500⌉ + ⌈T/500⌉ (+1 when T is a multiple of 500) + ⌈C/100⌉ + ⌈O/500⌉, from the simulator's ground truth (`GET /_sim/locations/{{id}}`); a run whose sync fetched other counts fails. The gateway's FULL sync also reads the location itself (`GET /locations/{{id}}`, for its name), one call that §11 does not count.\n\
- **The bound of wall time** (the target: ≤ 1.10x): the longer of (a) the rate limit's windows: the C-th call is counted no earlier than ((C−1) div M) windows of 10 s after the first, which arrives one mean latency (0.15 s) after the start, M being the requests a window leaves to the sync (100, or 70 when another client spends 30 of every window), and (b) the longest chain of dependent calls at the mean latency: a list's pages follow each other by cursor, so its pages × 0.15 s, the conversations counting 2 + ⌈(C−200)/99⌉ pages (one row of overlap a page, README *Ties at page boundaries*) in two chains, one from each end (README *Conversations from both ends*; before, one chain of 1 + ⌈(C−100)/99⌉). The simulator's latency is 50 ms plus a uniform 0..200 ms, so 0.15 s is its true mean; an earlier bound used the same mean but counted the conversations as ⌈C/100⌉. C in (a) is the §11 minimum. Both use the mean latency, so this is the bound a run meets on average, not a best case. (c) The **joint bound** (`bench::sync::joint_bound`, proof in its doc comment): the least end of any schedule of the sync's chains (contacts, tasks, the conversations' two walks with their overlap, opportunities, and the three single calls as chains of one page) when a page follows its chain's previous one by the mean latency and at most M requests are sent in any sliding 10 s window (GHL documents no fixed window, so the limiter obeys a sliding one). With T − 0.15 = n windows + a, n windows leave at least C − nM requests to the head [0, a] and as many to the tail [10n, 10n + a]; a chain sends one page per 0.15 s in each, and a short chain only its own pages in both together. At 10k that puts the end at 12.25 s, not 10.15 s (13.3 s and 11.55 s with the conversations read from one end): the issue's bound (the longer of (a) and (b)) is out of any schedule's reach there. The spurious-429 case is measured against the fault-free run of the same size (≤ 2x); at 1k both are the means of five runs (one 1 s run's ratio is mostly chance), at 10k of three (a 10k run varies by ±4% with the simulator's jitter), and the fault-free and shared-window wall times held against the bounds are the same means; its worker allows 12 retries a call instead of 6 (at 40%, 7 tries all fail once in 600 calls).\n\
- **The seed's sync.** Plain reqwest calls against its own simulator with the same limits: the legacy contact list (100 a page), then one `GET /contacts/{{id}}/tasks` per contact, then conversations (100 a page), then opportunities (GET, 100 a page), each call after the previous one, waiting 1 s on a 429. It skips users, custom fields and pipelines, which only flatters it. It runs at the same time as the FULL syncs (each has its own simulator and rate-limit bucket; both wait on latency, not CPU). At 10k contacts it would take tens of minutes, so its 10k figures are extrapolated: its calls are exact (⌈N/100⌉ + N + ⌈C/100⌉ + ⌈O/100⌉, with C and O from the gateway's 10k run), its time is the measured time per call times those calls (at least the rate-limit bound).\n"
        );
    }
}

/// Puts `section` (which starts with `heading`) into the Markdown file at `path`: in place of the
/// section of that heading when the file has one (up to the next `## ` heading), else at its end.
/// Other sections are left as they are. The sections that `bench --only X` writes on their own
/// (subscribers, replicas) go in this way.
pub fn write_section(path: &std::path::Path, heading: &str, section: &str) -> anyhow::Result<()> {
    let old = std::fs::read_to_string(path).unwrap_or_default();
    let new = replace_section(&old, heading, section);
    std::fs::write(path, new).map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))
}

fn replace_section(old: &str, heading: &str, section: &str) -> String {
    let section = section.trim_end();
    let Some(start) = old.find(heading) else {
        let old = old.trim_end();
        return if old.is_empty() {
            format!("{section}\n")
        } else {
            format!("{old}\n\n{section}\n")
        };
    };
    let after = start + heading.len();
    let end = old[after..]
        .find("\n## ")
        .map_or(old.len(), |i| after + i + 1);
    let rest = &old[end..];
    if rest.is_empty() {
        format!("{}{section}\n", &old[..start])
    } else {
        format!("{}{section}\n\n{rest}", &old[..start])
    }
}

#[cfg(test)]
mod section_tests {
    use super::replace_section;

    #[test]
    fn a_section_replaces_its_own_heading_only() {
        let heading = "## S (issue 1)";
        let section = format!("{heading}\n\nnew\n");
        let file = format!("# B\n\n## A\n\na\n\n{heading}\n\nold\n\n## C\n\nc\n");
        assert_eq!(
            replace_section(&file, heading, &section),
            format!("# B\n\n## A\n\na\n\n{heading}\n\nnew\n\n## C\n\nc\n")
        );
        assert_eq!(
            replace_section("# B\n", heading, &section),
            format!("# B\n\n{heading}\n\nnew\n")
        );
        let last = replace_section(&format!("# B\n\n{heading}\n\nold\n"), heading, &section);
        assert_eq!(last, format!("# B\n\n{heading}\n\nnew\n"));
    }
}
