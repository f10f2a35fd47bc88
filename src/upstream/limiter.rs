//! The rate limiter of one (app, location) bucket: GHL's counters are the truth.
//!
//! GHL allows `max` requests per `interval` (100 per 10 s) per app and location, counts a request
//! when it arrives, and says on every answer how much of the window is left
//! (`X-RateLimit-Remaining`, with `-Max` and `-Interval-Milliseconds`). The location's budget is
//! shared with whatever else spends it (another process, another replica, the app's other tools),
//! so our own count is only half of the picture. This limiter keeps:
//!
//! - **our requests**, by send time: a slot is held for `interval` from the *request*, as GHL
//!   counts it, plus a guard: two requests sent exactly one window apart may arrive less than one
//!   window apart when the first was slower. The guard of an answered request is how much slower
//!   than the fastest round trip seen its own round trip was (its trip to GHL was at most that
//!   much longer than the next one's can be, the way back taking as long); an unanswered one's
//!   is the whole spread of round trips seen;
//! - **the others' requests**: each answer says GHL counted `max - remaining` requests in its
//!   window; those that are not ours (our requests sent in the window up to that one) are the
//!   others'. Single answers miscount them both ways (a request of ours still on its way is
//!   taken as counted, one sent after that overtook it is taken for another client's, and an
//!   answer early in a fixed window counts our requests of the window before as ours), but the
//!   window's last answers see them all; and a client that spent part of one window is likely to
//!   spend it again. So each estimate stands for three windows from its request, and the
//!   highest standing one holds that many slots.
//!
//! Until GHL has answered once, at most a tenth of the window goes out ([`State::blind`]: 10 of
//! GHL's 100): the first page of every chain of a sync (nine), so that none of them starts a round
//! trip late. One request alone (a probe) made every chain but one wait for its answer: at 1,000
//! contacts one round trip in six, which the sync's bound does not count. Ten blind requests can
//! only trip the limit when something else has spent nine tenths of the window already; GHL does
//! not count a refused request, and the 429's own `X-RateLimit-*` headers then teach the limiter
//! the window as any answer does. (A process that has synced the location before sends on what it
//! last learned, up to the whole window once its estimates have expired: the blind tenth is the
//! cautious end of that.) A token bucket (GCRA, as in `governor`) lets twice the burst
//! through in one window after a burst and cannot take the server's word, hence this type.
//!
//! Waiting requests are served by **priority** (the longest chain of dependent pages first), then
//! in arrival order. Priority alone does not keep a window for the longest chain: between two of
//! its pages (a round trip) the shorter chains would take every free slot, and the window is
//! spent in a few seconds, with the longest chain stalled until it turns. So each chain registers
//! how many pages it has left ([`ChainLeft`]), and a request of a shorter chain may take a slot
//! only when the window keeps, beside it, the slots the longest chain can use before slots come
//! back (its pages left, at most one per mean round trip until then), and what every other
//! longer chain needs to come down to the requester's length (see `State::reserve`): the chains
//! end together, not one after the other. A list whose length GHL does not say (tasks) is
//! estimated ([`UNKNOWN_LENGTH`]).
//!
//! **The plan.** A slot taken at the start of a sync comes back a window later, so the first
//! seconds' sends make the last window's budget: what limits a sync that needs one window more
//! than it has is how many chains are still alive to use those slots, one page per round trip
//! each. From the chains' lengths (pages sent + left) the limiter takes the least end any
//! schedule can reach ([`joint_bound`]), `T = nW + a + L` from the first chain's first request.
//! When that is one window and a tail (`n = 1`: 10,000 contacts), in the head `[0, a]` and the
//! tail `[W, T)` every chain goes as fast as the slots allow; a short chain keeps its share of
//! the tail (half its pages, at most the tail's `a/L + 1`) until the tail opens, instead of
//! spending it all in the head and leaving the returning slots to the long chains alone; and in
//! the middle, whose slots come back only after the end, a request leaves every other chain the
//! pages it must send before the tail. The plan is taken again as lengths, the budget and the
//! round trip change. Longer syncs keep the reserve alone (see `State::phase`). It waits on
//! `tokio::time`, so tests can pause the clock.

use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// What one GHL answer said of the window (`X-RateLimit-*`); `None` when a header was absent.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Window {
    /// `X-RateLimit-Max`: requests per window.
    pub max: Option<u32>,
    /// `X-RateLimit-Interval-Milliseconds`: the window's length.
    pub interval: Option<Duration>,
    /// `X-RateLimit-Remaining`: requests left in the window when GHL counted this one.
    pub remaining: Option<u32>,
    /// The request was answered 429: GHL did not count it, so it holds no slot (had GHL counted
    /// it after all, the next answers' `X-RateLimit-Remaining` show it as spent elsewhere).
    pub refused: bool,
}

/// The pages a chain of dependent requests (one list's pages) still has to fetch, shared between
/// its fetcher, which updates it after each page, and the limiter, which reserves slots for it
/// while it lives.
pub type ChainLeft = Arc<AtomicU64>;

/// A [`ChainLeft`] of a list whose length GHL does not say (tasks): this flag, or'ed with the
/// pages read so far. The limiter takes such a list to be as long again as what it has read, and
/// at least half as long as the longest list whose length is known: assumed short, it would be
/// served last and end the sync alone after every other list (the sync's tail at 100,000
/// contacts, 500 pages of tasks, was 20 s), assumed as long as the longest, it would take the
/// slots the longest needs.
pub const UNKNOWN_LENGTH: u64 = 1 << 63;

/// A [`ChainLeft`] of one of two chains that read one list between them (conversations, from
/// both ends): this flag, or'ed with the chain's pages left. The chain has that many pages left,
/// but the list twice as many, and the estimate of a list of [`UNKNOWN_LENGTH`] goes by lists:
/// by chains, splitting the longest list in two would halve the estimate of the others (at
/// 100,000 contacts, tasks taken as 190 pages instead of 379 ended the sync alone, 20 s late).
pub const HALF_OF_LIST: u64 = 1 << 62;

/// The pages left of a chain whose counter holds `value`, given the most pages left of any
/// list whose length is known.
fn pages_left(value: u64, longest_known: u64) -> u64 {
    if value & UNKNOWN_LENGTH == 0 {
        return value & !HALF_OF_LIST;
    }
    (value & !UNKNOWN_LENGTH).max(longest_known / 2).max(1)
}

/// The pages left of the list a chain whose counter holds `value` reads, when GHL said them.
fn list_left(value: u64) -> Option<u64> {
    match (value & UNKNOWN_LENGTH != 0, value & HALF_OF_LIST != 0) {
        (true, _) => None,
        (false, true) => Some((value & !HALF_OF_LIST) * 2),
        (false, false) => Some(value),
    }
}

/// The joint lower bound: no schedule of `chains` (pages per chain of dependent requests) ends
/// sooner, when at most `max` requests may be sent in any window `[t, t + window)` and a page is
/// sent at least `latency` after its chain's previous page and answered `latency` after it is
/// sent. Times are in any one integer unit (the bench uses microseconds); the result is in it.
///
/// **Why a sliding window.** GHL documents `max` requests per interval and no reset header. The
/// simulator opens a fixed window at the first request after the last one ended, but a client
/// that counted on that (100 requests at the end of one window, 100 at the start of the next)
/// would trip 429s on a server that slides; this limiter obeys the sliding rule, so the bound is
/// taken under it.
///
/// **The model.** Chain `j` has `p_j` pages sent at `s_1 < … < s_p`, with `s_1 ≥ 0` and
/// `s_{i+1} ≥ s_i + L`; the schedule ends at `T = max s + L`; `C = Σ p_j`. So every send is in
/// `[0, T − L]`, and a chain sends at most `⌊x/L⌋ + 1` pages in any closed interval of length `x`.
///
/// **The cuts**, for a given `T`, with `T − L = nW + a`, `0 ≤ a < W`:
/// 1. *Chain*: `p_j ≤ ⌊(T−L)/L⌋ + 1` for every chain (the chain part).
/// 2. *Rate*: the `n + 1` windows `[kW, (k+1)W)` cover `[0, T − L]`, so `C ≤ (n+1)·max`.
/// 3. *Tail*: the `n` windows `[kW, (k+1)W)`, `k < n`, hold at most `n·max` sends, so the tail
///    `[nW, T − L]` (length `a`) holds at least `C − n·max`; chain `j` sends at most
///    `min(p_j, ⌊a/L⌋ + 1)` of them.
/// 4. *Head*: the `n` windows `(T−L−(k+1)W, T−L−kW]` (each is `[t, t+W)` for a `t` just above
///    its left end) leave the head `[0, a]`, which likewise holds at least `C − n·max`, at most
///    `min(p_j, ⌊a/L⌋ + 1)` per chain.
/// 5. *Head and tail*: adding 3 and 4, the two zones hold at least `2(C − n·max)` sends between
///    them (they are disjoint when `n ≥ 1`, as `a < W ≤ nW`), and chain `j` at most `p_j` and at
///    most the greatest number of points `L` apart in `[0, a] ∪ [nW, nW + a]` (placed greedily
///    from the left, which is optimal for points at a least spacing in a union of intervals).
///    This is the cut that binds at 10,000 contacts: a short chain (20 pages of contacts, a
///    single call) can help the head or the tail but only its own pages' worth of both, while
///    the long chains fill each zone at one page per round trip.
///
/// A schedule ending by `T` satisfies all five, so a `T` that fails one is out of reach, and so
/// is every shorter one. Each cut depends on `T` only through `⌊(T−L)/W⌋`, `⌊a/L⌋` and
/// `⌊(T−L)/L⌋` (the greedy count: `⌊(nW + a − s)/L⌋` with its start `s` a multiple of `L` or
/// `nW`), which are constant between the points `T − L ∈ {kL} ∪ {nW + kL : kL < W}`: the bound
/// is the first such point above the last one a cut rules out (0 for no chains). Tested against
/// an exhaustive search of small instances (never above it) and the sync's 10k and 100k
/// shapes in `bench::sync`'s tests.
pub fn joint_bound(chains: &[u64], max: u64, window: u64, latency: u64) -> u64 {
    let chains: Vec<u64> = chains.iter().copied().filter(|p| *p > 0).collect();
    let calls: u64 = chains.iter().sum();
    let Some(longest) = chains.iter().copied().max() else {
        return 0;
    };
    let (max, window, latency) = (max.max(1), window.max(1), latency.max(1));
    // Beyond this span every cut holds: the rate cut with n + 1 = ⌈C/max⌉ windows, and zones
    // as long as the longest chain.
    let last = calls.div_ceil(max) * window + longest * latency + window;
    let mut points: Vec<u64> = (0..=last / latency).map(|k| k * latency).collect();
    for n in 1..=last / window {
        points.extend(
            (0..)
                .map(|k| k * latency)
                .take_while(|x| *x < window)
                .map(|x| n * window + x),
        );
    }
    points.sort_unstable();
    points.dedup();
    let ruled_out = |span: u64| -> bool {
        if longest > span / latency + 1 {
            return true;
        }
        let (n, a) = (span / window, span % window);
        if calls > (n + 1).saturating_mul(max) {
            return true;
        }
        let need = calls.saturating_sub(n * max);
        if n == 0 || need == 0 {
            return false;
        }
        let zone = a / latency + 1;
        if chains.iter().map(|p| (*p).min(zone)).sum::<u64>() < need {
            return true;
        }
        // Greedy points L apart in [0, a] ∪ [nW, nW + a].
        let start = (n * window).max(zone * latency);
        let tail = if start <= n * window + a {
            (n * window + a - start) / latency + 1
        } else {
            0
        };
        let both = zone + tail;
        chains.iter().map(|p| (*p).min(both)).sum::<u64>() < 2 * need
    };
    match points.iter().rposition(|span| ruled_out(*span)) {
        Some(i) => points.get(i + 1).copied().unwrap_or(last) + latency,
        None => latency,
    }
}

/// How many windows, from its request, an estimate of the requests GHL counted that were not
/// ours stands (see `State::estimate`).
const ESTIMATE_WINDOWS: u32 = 3;

/// One of our requests holding a slot.
#[derive(Clone, Copy, Debug)]
struct Sent {
    at: Instant,
    /// Its round trip, once answered.
    rtt: Option<Duration>,
}

/// A chain that asked for a slot, while it lives.
#[derive(Debug)]
struct Chain {
    left: Weak<AtomicU64>,
    /// Slots it took: with its pages left, its length.
    sent: u64,
}

/// The sync's plan: the least end of its chains ([`joint_bound`]) as `n` windows and `a` from
/// its start, and each chain's share of the tail.
#[derive(Clone, Debug, PartialEq)]
struct Plan {
    /// The inputs it was taken from: every chain's length, the budget, the round trip in µs.
    key: (Vec<u64>, usize, u64),
    /// Whole windows before the tail.
    windows: u32,
    /// The head's and the tail's length.
    zone: Duration,
    /// Pages a chain can send in the tail, one per round trip.
    zone_pages: u64,
}

#[derive(Debug)]
struct State {
    max: usize,
    interval: Duration,
    /// Our requests still holding a slot, by send time.
    sent: VecDeque<Sent>,
    /// The others' estimates that may still be the highest, as (until, estimate): until in
    /// ascending order, estimates in descending order (see [`State::estimate`]); the first one
    /// standing is how many slots the others hold, and until when ([`State::foreign`]).
    estimates: VecDeque<(Instant, usize)>,
    /// Whether GHL has told us its counters yet.
    known: bool,
    /// Our requests sent and not answered yet.
    in_flight: usize,
    /// Shortest and longest round trip seen: their spread is the guard of each slot.
    rtt: Option<(Duration, Duration)>,
    /// Mean round trip (moving average): the pace of a chain.
    rtt_mean: Option<Duration>,
    /// Chains that asked for a slot, by the address of their counter, until they end.
    chains: HashMap<usize, Chain>,
    /// When the first of the live chains asked for its first slot: the plan's origin.
    origin: Option<Instant>,
    plan: Option<Plan>,
    /// Waiting callers: (higher priority first, then arrival order).
    waiters: BTreeSet<(Reverse<u64>, u64)>,
    /// Waiters that keep their pages for the tail: the others do not wait behind them.
    parked: BTreeSet<(Reverse<u64>, u64)>,
    next_ticket: u64,
}

/// Where a chain's request stands in the plan.
enum Phase {
    /// No plan (everything fits one window, or the sync needs more than two): the reserve
    /// applies.
    Reserve,
    /// The head or the tail: any free slot.
    Free,
    /// A short chain keeping its pages for the tail, which opens then.
    Keep(Instant),
    /// The middle of the plan: `keep` slots are kept for the other chains until the `tail`.
    Middle { keep: usize, tail: Instant },
}

/// When a slot may be taken.
enum Next {
    Now,
    At(Instant),
    /// When an answer comes back (the blind requests are in flight).
    Answer,
    /// When the plan's tail opens: the chain keeps its pages for it, or leaves the middle's
    /// free slots to the chains they are kept for, and the waiters behind it do not wait for it.
    Keep(Instant),
}

impl State {
    /// Requests that may be in flight before GHL has answered once (its counters unknown): a
    /// tenth of the window, at least one.
    fn blind(&self) -> usize {
        (self.max / 10).max(1)
    }

    /// The pages one chain can send within `horizon`, one per mean round trip; `None` before a
    /// round trip is known.
    fn pages_within(&self, horizon: Duration) -> Option<u64> {
        let pace = self.rtt_mean.filter(|p| !p.is_zero())?;
        Some((horizon.as_secs_f64() / pace.as_secs_f64()).ceil() as u64)
    }

    /// The guard of a request whose round trip is not known: the spread of those seen.
    fn guard(&self) -> Duration {
        self.rtt
            .map(|(low, high)| (high - low).min(self.interval / 20))
            .unwrap_or_default()
    }

    /// When the slot of `sent` comes back: a window after it, plus its guard.
    fn until(&self, sent: &Sent) -> Instant {
        let guard = match (sent.rtt, self.rtt) {
            (Some(rtt), Some((low, _))) => rtt.saturating_sub(low).min(self.interval / 20),
            _ => self.guard(),
        };
        sent.at + self.interval + guard
    }

    /// When our first slot comes back.
    fn first_back(&self) -> Option<Instant> {
        self.sent.iter().map(|s| self.until(s)).min()
    }

    /// Drops our requests whose slot is free again, and the others' once their window is over.
    fn prune(&mut self, now: Instant) {
        let sent = std::mem::take(&mut self.sent);
        self.sent = sent.into_iter().filter(|s| self.until(s) > now).collect();
        while self
            .estimates
            .front()
            .is_some_and(|(until, _)| *until <= now)
        {
            self.estimates.pop_front();
        }
    }

    /// Requests GHL counted that were not ours (the highest estimate standing, once pruned).
    fn foreign(&self) -> usize {
        self.estimates.front().map_or(0, |(_, estimate)| *estimate)
    }

    /// Records that an answer to a request sent at `sent_at` counted `foreign` requests that
    /// were not ours.
    ///
    /// Each estimate stands for [`ESTIMATE_WINDOWS`] windows from its request, and the highest
    /// standing one counts:
    /// - an answer early in a window counts our requests of the window before it as ours
    ///   (GHL's window may be fixed, opened by the first request after the last one ended,
    ///   where ours slides), so it under-counts the others, and only the window's last answers
    ///   count them all, or all but the one or two of ours that were sent in the window before
    ///   but GHL counted in the one before that;
    /// - a client that spent part of the last window is likely to spend it again from the next
    ///   window's first moment, before an answer of that window can say so.
    ///
    /// A lower estimate that stands longer is kept too: once only the highest was kept (for
    /// one window, carried into one more), and when it was one request too high and expired,
    /// the 30s the window's last answers said had been dropped behind it; the 0 that followed
    /// sent 100 requests into a window of 70 (14 429s a run in the paused-clock model of
    /// 100,000 contacts with 30% of every window spent elsewhere; with every estimate standing
    /// two windows, one 429 in 12 runs; three windows, none).
    fn estimate(&mut self, sent_at: Instant, foreign: usize, now: Instant) {
        let until = sent_at + self.interval * ESTIMATE_WINDOWS;
        if until <= now
            || self
                .estimates
                .iter()
                .any(|(u, e)| *u >= until && *e >= foreign)
        {
            return;
        }
        self.estimates
            .retain(|(u, e)| !(*u <= until && *e <= foreign));
        let at = self.estimates.partition_point(|(u, _)| *u < until);
        self.estimates.insert(at, (until, foreign));
    }

    /// Slots to keep for the other chains, beside a request of `priority` (its chain's pages
    /// left) that is not theirs (`own`). Each chain may use one slot per mean round trip until
    /// our oldest slot comes back (a whole window when none is held), and no more than its pages
    /// left.
    ///
    /// Every request keeps the longest chain's slots, so that it never waits while the window
    /// lasts. A request of a chain (`priority` > 0) also keeps, for every other chain longer than
    /// its own, what that chain needs to come down to the requester's length: the window's other
    /// slots go to the longer chains until they are level, then to all of them alike (longest
    /// remaining first), so that no chain is left to end the sync alone. Any other request (a
    /// single call, or a chain's first page, whose length is not known yet) keeps the longest
    /// chain's slots only: keeping every chain's would starve it for a window.
    fn reserve(&mut self, now: Instant, priority: u64, own: Option<usize>) -> usize {
        let horizon = self
            .first_back()
            .map_or(self.interval, |t| t.saturating_duration_since(now));
        let Some(uses) = self.pages_within(horizon) else {
            return 0;
        };
        let longer = self
            .lengths()
            .into_iter()
            .filter(|(key, _)| Some(*key) != own)
            .map(|(_, left)| left)
            .filter(|left| *left > priority);
        let mut longer: Vec<u64> = longer.collect();
        longer.sort_unstable_by(|a, b| b.cmp(a));
        let kept = if priority > 0 {
            longer
                .iter()
                .enumerate()
                .map(|(i, left)| match i {
                    0 => (*left).min(uses),
                    _ => (left - priority).min(uses),
                })
                .sum()
        } else {
            longer.first().map_or(0, |left| (*left).min(uses))
        };
        usize::try_from(kept).unwrap_or(usize::MAX)
    }

    /// The pages left of every live chain, by the address of its counter, with the lengths that
    /// GHL does not say estimated ([`pages_left`]).
    fn lengths(&mut self) -> Vec<(usize, u64)> {
        self.chains.retain(|_, chain| chain.left.strong_count() > 0);
        let values: Vec<(usize, u64)> = self
            .chains
            .iter()
            .filter_map(|(key, chain)| Some((*key, chain.left.upgrade()?.load(Ordering::Relaxed))))
            .collect();
        let longest_known = values
            .iter()
            .filter_map(|(_, value)| list_left(*value))
            .max()
            .unwrap_or(0);
        values
            .into_iter()
            .map(|(key, value)| (key, pages_left(value, longest_known)))
            .collect()
    }

    /// The pages left of the chain `own` (0 without one, or before its first page is read).
    fn own_left(&mut self, own: Option<usize>) -> u64 {
        let Some(own) = own else { return 0 };
        self.lengths()
            .into_iter()
            .find_map(|(key, left)| (key == own).then_some(left))
            .unwrap_or(0)
    }

    /// The plan of the live chains, taken again when their lengths, the budget or the round
    /// trip (to the millisecond) changed; `None` without chains or an answer yet.
    fn plan(&mut self) -> Option<Plan> {
        let pace = self.rtt_mean.filter(|p| !p.is_zero())?;
        let lengths = self.lengths();
        if lengths.is_empty() {
            return None;
        }
        let mut totals: Vec<u64> = lengths
            .iter()
            .map(|(key, left)| (self.chains.get(key).map_or(0, |c| c.sent) + left).max(1))
            .collect();
        totals.sort_unstable();
        let budget = self.max.saturating_sub(self.foreign()).max(1);
        let latency = (pace.as_millis() as u64).max(1) * 1000;
        let calls: u64 = totals.iter().sum();
        let window = (self.interval.as_micros() as u64).max(1);
        // The plan serves a sync that needs one window more than it has (`State::phase`); for
        // any other, and for windows of thousands of round trips, none is taken (the bound
        // would scan that many points for nothing).
        if calls <= budget as u64 || calls > 2 * budget as u64 || window / latency > 10_000 {
            return None;
        }
        let key = (totals, budget, latency);
        if let Some(plan) = self.plan.as_ref().filter(|p| p.key == key) {
            return Some(plan.clone());
        }
        let end = joint_bound(&key.0, budget as u64, window, latency);
        let span = end.saturating_sub(latency);
        let zone = span % window;
        let plan = Plan {
            windows: u32::try_from(span / window).unwrap_or(u32::MAX),
            zone: Duration::from_micros(zone),
            zone_pages: zone / latency + 1,
            key,
        };
        self.plan = Some(plan.clone());
        Some(plan)
    }

    /// Where a request of the chain `own` stands in the plan at `now`.
    fn phase(&mut self, now: Instant, own: Option<usize>) -> Phase {
        let (Some(own), Some(origin)) = (own, self.origin) else {
            return Phase::Reserve;
        };
        let Some(plan) = self.plan() else {
            return Phase::Reserve;
        };
        if plan.windows != 1 {
            // Everything fits one window: the chains' own pace is the limit. Beyond two windows
            // the plan, anchored at the sync's start, drifts from the run (each window's guard
            // adds up): the paused-clock model of 100,000 contacts ended 9 s later with it, so
            // the reserve alone schedules those.
            return Phase::Reserve;
        }
        let tail = origin + self.interval * plan.windows;
        if now >= tail {
            return Phase::Free;
        }
        let share = |total: u64| {
            if total >= 2 * plan.zone_pages {
                plan.zone_pages
            } else {
                total / 2
            }
        };
        // What a chain can send before the tail (a plan implies a mean round trip).
        let uses = self.pages_within(tail - now).unwrap_or(u64::MAX);
        let mut left = 0;
        let mut others = 0;
        for (key, chain_left) in self.lengths() {
            let total = self.chains.get(&key).map_or(0, |c| c.sent) + chain_left;
            if key == own {
                left = chain_left;
                if chain_left > 0 && chain_left <= share(total) {
                    return Phase::Keep(tail);
                }
            } else {
                others += chain_left.saturating_sub(share(total)).min(uses);
            }
        }
        if now <= origin + plan.zone || left == 0 {
            Phase::Free
        } else {
            // The middle: its slots come back only after the tail, so each other chain keeps
            // what it has to send before the tail opens (its pages beyond its tail share), as
            // far as it can send them by then, one a round trip: slots kept beyond that would
            // be kept for no one, and its tail would carry them.
            Phase::Middle {
                keep: usize::try_from(others).unwrap_or(usize::MAX),
                tail,
            }
        }
    }

    fn next(&mut self, now: Instant, priority: u64, own: Option<usize>) -> Next {
        self.prune(now);
        let priority = if own.is_some() {
            self.own_left(own)
        } else {
            priority
        };
        if !self.known && self.in_flight >= self.blind() {
            return Next::Answer;
        }
        let held = self.sent.len() + self.foreign();
        let free = match self.phase(now, own) {
            Phase::Keep(until) => return Next::Keep(until),
            Phase::Free => held < self.max,
            Phase::Middle { keep, tail } => {
                if held < self.max && held.saturating_add(keep) >= self.max {
                    // The free slots are the other chains': this request steps aside for them
                    // (first in line, it would hold them back) until they take them, or the
                    // tail opens.
                    return Next::Keep(tail);
                }
                held < self.max
            }
            Phase::Reserve => {
                held < self.max && held.saturating_add(self.reserve(now, priority, own)) < self.max
            }
        };
        if free {
            return Next::Now;
        }
        let ours = self.first_back();
        let theirs = self
            .estimates
            .front()
            .filter(|(_, estimate)| *estimate > 0)
            .map(|(until, _)| *until);
        match ours.into_iter().chain(theirs).min() {
            Some(at) => Next::At(at),
            // Nothing held: only the reserve stands in the way, which shrinks as the longer
            // chains take their slots or end (each answer wakes the waiters).
            None => Next::Answer,
        }
    }
}

/// A sliding-window limiter of `max` requests per `interval`, corrected by GHL's counters.
#[derive(Debug)]
pub struct RateLimiter {
    state: Mutex<State>,
    /// Signalled when a slot is taken or an answer comes back.
    changed: Notify,
}

/// A slot taken for one request; give it back with [`RateLimiter::release`] when the answer
/// arrives (dropping it counts the request as sent but unanswered).
#[derive(Debug)]
#[must_use = "release the permit when the response arrives"]
pub struct Permit<'a> {
    limiter: &'a RateLimiter,
    /// How long the caller waited for it.
    pub waited: Duration,
    sent_at: Instant,
}

impl Permit<'_> {
    /// Time since the request took its slot (was sent).
    pub fn elapsed(&self) -> Duration {
        self.sent_at.elapsed()
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        let mut state = lock(&self.limiter.state);
        state.in_flight = state.in_flight.saturating_sub(1);
        drop(state);
        self.limiter.changed.notify_waiters();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The state is plain counters and times: a panic elsewhere leaves it usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Takes a caller off the waiting list however its wait ends (a cancelled call included).
struct Ticket<'a> {
    limiter: &'a RateLimiter,
    key: (Reverse<u64>, u64),
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        let mut state = lock(&self.limiter.state);
        let removed = state.waiters.remove(&self.key);
        state.parked.remove(&self.key);
        drop(state);
        if removed {
            self.limiter.changed.notify_waiters();
        }
    }
}

impl RateLimiter {
    /// A limiter of `max` requests per `interval` until GHL says otherwise.
    pub fn new(max: u32, interval: Duration) -> Self {
        Self {
            state: Mutex::new(State {
                max: max.max(1) as usize,
                interval,
                sent: VecDeque::new(),
                estimates: VecDeque::new(),
                known: false,
                in_flight: 0,
                rtt: None,
                rtt_mean: None,
                chains: HashMap::new(),
                origin: None,
                plan: None,
                waiters: BTreeSet::new(),
                parked: BTreeSet::new(),
                next_ticket: 0,
            }),
            changed: Notify::new(),
        }
    }

    /// Waits for a slot. The waiting caller with the highest `priority` goes first, then the
    /// one that came first.
    pub async fn acquire(&self, priority: u64) -> Permit<'_> {
        self.wait(None, priority).await
    }

    /// [`acquire`](Self::acquire) for a request of `chain`, whose pages left (estimated when GHL
    /// does not say them, see [`UNKNOWN_LENGTH`]) are its priority; slots are kept for the
    /// longer chains from its requests, and for it from shorter chains', while it lives.
    pub async fn acquire_for(&self, chain: Option<&ChainLeft>) -> Permit<'_> {
        self.wait(chain, 0).await
    }

    async fn wait(&self, chain: Option<&ChainLeft>, priority: u64) -> Permit<'_> {
        let start = Instant::now();
        let own = chain.map(|c| Arc::as_ptr(c) as usize);
        let (key, priority) = {
            let mut state = lock(&self.state);
            let mut priority = priority;
            if let (Some(own), Some(chain)) = (own, chain) {
                state
                    .chains
                    .retain(|_, chain| chain.left.strong_count() > 0);
                if state.chains.is_empty() {
                    state.origin = Some(start);
                }
                state.chains.entry(own).or_insert_with(|| Chain {
                    left: Arc::downgrade(chain),
                    sent: 0,
                });
                priority = state.own_left(Some(own));
            }
            let key = (Reverse(priority), state.next_ticket);
            state.next_ticket += 1;
            state.waiters.insert(key);
            (key, priority)
        };
        let ticket = Ticket { limiter: self, key };
        loop {
            // Registered before the state is read, so that no signal falls between the two.
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let now = Instant::now();
            let (wake, unparked) = {
                let mut state = lock(&self.state);
                // The first waiter goes first, but not one that keeps its pages for the tail.
                let first = state
                    .waiters
                    .iter()
                    .take_while(|k| **k != key)
                    .all(|k| state.parked.contains(k));
                if first {
                    let next = state.next(now, priority, own);
                    let changed = if matches!(next, Next::Keep(_)) {
                        state.parked.insert(key)
                    } else {
                        state.parked.remove(&key)
                    };
                    match next {
                        Next::Now => {
                            state.waiters.remove(&key);
                            state.sent.push_back(Sent { at: now, rtt: None });
                            state.in_flight += 1;
                            if let Some(chain) = own.and_then(|own| state.chains.get_mut(&own)) {
                                chain.sent += 1;
                            }
                            drop(state);
                            std::mem::forget(ticket);
                            self.changed.notify_waiters();
                            return Permit {
                                limiter: self,
                                waited: now - start,
                                sent_at: now,
                            };
                        }
                        Next::At(at) | Next::Keep(at) => (Some(at), changed),
                        Next::Answer => (None, changed),
                    }
                } else {
                    (None, false)
                }
            };
            if unparked {
                // The waiters behind this one may go, or must wait for it again.
                self.changed.notify_waiters();
            }
            match wake {
                Some(at) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(at) => {}
                        _ = &mut changed => {}
                    }
                }
                None => changed.await,
            }
        }
    }

    /// Gives back the slot of a request whose answer arrived, with what the answer said of the
    /// window (all `None` when the request failed without an answer).
    pub fn release(&self, permit: Permit<'_>, window: Window) {
        let now = Instant::now();
        let sent_at = permit.sent_at;
        {
            let mut state = lock(&self.state);
            if let Some(interval) = window.interval.filter(|i| !i.is_zero()) {
                state.interval = interval;
            }
            if let Some(max) = window.max {
                state.max = max.max(1) as usize;
            }
            if let Some(remaining) = window.remaining {
                state.known = true;
                let rtt = now - sent_at;
                if let Some(at) = state.sent.iter().position(|s| s.at == sent_at) {
                    if window.refused {
                        state.sent.remove(at);
                    } else {
                        state.sent[at].rtt = Some(rtt);
                    }
                }
                state.rtt = Some(match state.rtt {
                    Some((low, high)) => (low.min(rtt), high.max(rtt)),
                    None => (rtt, rtt),
                });
                state.rtt_mean = Some(match state.rtt_mean {
                    Some(mean) => mean.mul_f64(0.8) + rtt.mul_f64(0.2),
                    None => rtt,
                });
                let from = sent_at.checked_sub(state.interval);
                let ours = state
                    .sent
                    .iter()
                    .filter(|s| from.is_none_or(|from| s.at > from) && s.at <= sent_at)
                    .count();
                let foreign = state
                    .max
                    .saturating_sub(remaining as usize)
                    .saturating_sub(ours);
                state.prune(now);
                state.estimate(sent_at, foreign, now);
            }
        }
        // Dropping the permit takes it out of flight and wakes the waiters.
        drop(permit);
    }

    /// Waits until GHL's counters have come back once (the first answer to the blind requests);
    /// at once if they have.
    pub async fn answered(&self) {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if lock(&self.state).known {
                return;
            }
            changed.await;
        }
    }

    /// Requests GHL counted in the current window that were not ours, as last estimated.
    pub fn foreign(&self) -> usize {
        let mut state = lock(&self.state);
        state.prune(Instant::now());
        state.foreign()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// A fixed-window server like GHL's (and the simulator's): `max` per window, a window opening
    /// at the first request after the previous one ended. Answers with what remains.
    struct Server {
        max: u32,
        window: Duration,
        start: Option<Instant>,
        count: u32,
        refused: u32,
        /// Requests another client spends at the opening of every window.
        other: u32,
    }

    impl Server {
        fn new(max: u32, window: Duration) -> Self {
            Self {
                max,
                window,
                start: None,
                count: 0,
                refused: 0,
                other: 0,
            }
        }

        /// Counts a request arriving now; `None` when it is refused (a 429).
        fn arrive(&mut self) -> Option<u32> {
            let now = Instant::now();
            if self.start.is_none_or(|s| now - s >= self.window) {
                self.start = Some(now);
                self.count = self.other;
            }
            if self.count >= self.max {
                self.refused += 1;
                return None;
            }
            self.count += 1;
            Some(self.max - self.count)
        }
    }

    /// Sends `n` requests through the limiter to `server`, each arriving after `latency` and
    /// answered at once. Returns the number of 429s.
    async fn run(
        limiter: Arc<RateLimiter>,
        server: Arc<std::sync::Mutex<Server>>,
        n: usize,
        latency: Duration,
    ) -> u32 {
        let mut tasks = Vec::new();
        for _ in 0..n {
            let (limiter, server) = (limiter.clone(), server.clone());
            tasks.push(tokio::spawn(async move {
                let permit = limiter.acquire(0).await;
                tokio::time::sleep(latency).await;
                let remaining = server.lock().unwrap().arrive();
                let window = Window {
                    max: Some(server.lock().unwrap().max),
                    interval: Some(Duration::from_secs(10)),
                    remaining: Some(remaining.unwrap_or(0)),
                    refused: remaining.is_none(),
                };
                limiter.release(permit, window);
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        server.lock().unwrap().refused
    }

    #[tokio::test(start_paused = true)]
    async fn never_over_the_limit_and_a_window_after_the_request() {
        let window = Duration::from_secs(10);
        let limiter = Arc::new(RateLimiter::new(100, window));
        let server = Arc::new(std::sync::Mutex::new(Server::new(100, window)));
        let start = Instant::now();
        let refused = run(limiter, server, 350, Duration::from_millis(150)).await;
        assert_eq!(refused, 0);
        // Ten blind, then 90 once answered, then three windows counted from the requests: the old
        // count from the answers would take at least 4 x 150 ms more.
        let took = Instant::now() - start;
        assert!(
            took >= Duration::from_secs(30) && took < Duration::from_millis(30_500),
            "{took:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn budget_spent_elsewhere_is_respected() {
        let window = Duration::from_secs(10);
        let limiter = Arc::new(RateLimiter::new(100, window));
        let server = Arc::new(std::sync::Mutex::new(Server::new(100, window)));
        // Another client spends 60 of the window first.
        for _ in 0..60 {
            server.lock().unwrap().arrive();
        }
        let refused = run(limiter.clone(), server, 100, Duration::from_millis(50)).await;
        assert_eq!(refused, 0, "our count alone would have sent 100 into 40");
    }

    #[tokio::test(start_paused = true)]
    async fn another_clients_share_of_every_window_is_expected_in_the_next() {
        // Another client spends 30 the moment each window opens; we learn of it only from the
        // window's first answer, so the last window's share is kept until then.
        let window = Duration::from_secs(10);
        let limiter = Arc::new(RateLimiter::new(100, window));
        let mut server = Server::new(100, window);
        server.other = 30;
        let server = Arc::new(std::sync::Mutex::new(server));
        let refused = run(limiter, server, 300, Duration::from_millis(150)).await;
        assert_eq!(refused, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn before_an_answer_a_tenth_of_the_window_goes_blind() {
        let limiter = Arc::new(RateLimiter::new(100, Duration::from_secs(10)));
        let mut blind = Vec::new();
        for _ in 0..10 {
            blind.push(limiter.acquire(0).await);
        }
        assert!(blind.iter().all(|p| p.waited.is_zero()), "ten go at once");
        let waiting = {
            let limiter = limiter.clone();
            tokio::spawn(async move {
                let permit = limiter.acquire(0).await;
                permit.waited
            })
        };
        let answered = {
            let limiter = limiter.clone();
            tokio::spawn(async move { limiter.answered().await })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            !waiting.is_finished(),
            "no eleventh request before an answer"
        );
        assert!(!answered.is_finished(), "no answer yet");
        limiter.release(
            blind.remove(0),
            Window {
                max: Some(100),
                interval: Some(Duration::from_secs(10)),
                remaining: Some(99),
                refused: false,
            },
        );
        assert_eq!(waiting.await.unwrap(), Duration::from_millis(300));
        tokio::time::timeout(Duration::from_millis(1), answered)
            .await
            .expect("the answer ends the wait for it")
            .unwrap();
        tokio::time::timeout(Duration::from_millis(1), limiter.answered())
            .await
            .expect("once answered, at once");
    }

    #[tokio::test(start_paused = true)]
    async fn a_window_spent_elsewhere_refuses_only_the_blind_requests() {
        // Another client has spent 95 of the window before the sync starts: the ten blind
        // requests find 5 slots, the 429s' headers say the window is spent, and nothing more
        // goes until it turns.
        let window = Duration::from_secs(10);
        let limiter = Arc::new(RateLimiter::new(100, window));
        let server = Arc::new(std::sync::Mutex::new(Server::new(100, window)));
        for _ in 0..95 {
            server.lock().unwrap().arrive();
        }
        let refused = run(limiter, server, 100, Duration::from_millis(150)).await;
        assert_eq!(
            refused, 5,
            "only the blind requests beyond the 5 slots left"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_server_with_nothing_remaining_holds_every_slot_for_a_window() {
        let window = Duration::from_secs(10);
        let limiter = RateLimiter::new(100, window);
        let permit = limiter.acquire(0).await;
        limiter.release(
            permit,
            Window {
                remaining: Some(0),
                ..Window::default()
            },
        );
        assert_eq!(limiter.foreign(), 99);
        let start = Instant::now();
        let permit = limiter.acquire(0).await;
        assert_eq!(Instant::now() - start, window);
        drop(permit);
    }

    #[tokio::test(start_paused = true)]
    async fn the_window_follows_the_server_headers() {
        let limiter = Arc::new(RateLimiter::new(100, Duration::from_secs(10)));
        let server = Arc::new(std::sync::Mutex::new(Server::new(
            10,
            Duration::from_secs(10),
        )));
        let refused = run(limiter, server, 30, Duration::from_millis(10)).await;
        assert_eq!(refused, 0);
    }

    /// Fetches `pages` one after another through `limiter` as one chain, each answered by
    /// `server` after `latency`; returns when the last answer came.
    async fn chain(
        limiter: Arc<RateLimiter>,
        server: Arc<std::sync::Mutex<Server>>,
        pages: u64,
        latency: Duration,
    ) -> Instant {
        let left: ChainLeft = Arc::new(AtomicU64::new(pages));
        for page in 0..pages {
            let permit = limiter.acquire_for(Some(&left)).await;
            tokio::time::sleep(latency).await;
            let remaining = server.lock().unwrap().arrive();
            left.store(pages - page - 1, Ordering::Relaxed);
            let max = server.lock().unwrap().max;
            limiter.release(
                permit,
                Window {
                    max: Some(max),
                    interval: Some(Duration::from_secs(10)),
                    remaining: Some(remaining.unwrap_or(0)),
                    refused: remaining.is_none(),
                },
            );
        }
        Instant::now()
    }

    #[tokio::test(start_paused = true)]
    async fn the_longest_chain_keeps_its_slots_in_the_window() {
        // GHL's 100 requests a window, 150 ms a request; a chain of 77 pages (11.55 s) and one
        // of 40 start together, 117 requests in all. By priority alone both go at once, the
        // window is spent after 8.9 s, and the long chain waits for it with 18 pages left (it
        // would end at 12.7 s). With its slots kept it never waits: the short chain gets the
        // window's other slots, then the next window's.
        let window = Duration::from_secs(10);
        let latency = Duration::from_millis(150);
        let limiter = Arc::new(RateLimiter::new(100, window));
        let server = Arc::new(std::sync::Mutex::new(Server::new(100, window)));
        let start = Instant::now();
        // A probe teaches the limiter the window and the round trip.
        let probe = limiter.acquire(0).await;
        tokio::time::sleep(latency).await;
        let remaining = server.lock().unwrap().arrive();
        limiter.release(
            probe,
            Window {
                max: Some(100),
                interval: Some(window),
                remaining,
                refused: false,
            },
        );
        let long = tokio::spawn(chain(limiter.clone(), server.clone(), 77, latency));
        let short = tokio::spawn(chain(limiter.clone(), server.clone(), 40, latency));
        let (long, short) = (long.await.unwrap(), short.await.unwrap());
        assert_eq!(server.lock().unwrap().refused, 0);
        assert!(
            long - start <= latency * 79,
            "{:?} (short: {:?})",
            long - start,
            short - start
        );
        assert!(
            short - start <= long - start + window,
            "{:?}",
            short - start
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_highest_priority_goes_first() {
        let limiter = Arc::new(RateLimiter::new(1, Duration::from_secs(1)));
        let first = limiter.acquire(0).await;
        limiter.release(
            first,
            Window {
                remaining: Some(0),
                ..Window::default()
            },
        );
        let order = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for priority in [1, 5, 3, 5] {
            let (limiter, order) = (limiter.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let permit = limiter.acquire(priority).await;
                order.lock().unwrap().push(priority);
                limiter.release(permit, Window::default());
            }));
            tokio::task::yield_now().await;
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), [5, 5, 3, 1]);
    }

    /// How a model list's chain tells its length: said by GHL, not said (tasks), or one of two
    /// chains reading one list whose length GHL said (conversations from both ends).
    #[derive(Clone, Copy, Debug)]
    enum Length {
        Known,
        Unknown,
        Half,
    }
    use Length::*;

    /// Latencies of 50 ms plus a uniform 0..=200 ms, the same on every run (an LCG).
    struct Latencies(u64);

    impl Latencies {
        fn next(&mut self) -> Duration {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            Duration::from_millis(50 + (self.0 >> 33) % 201)
        }
    }

    /// A FULL sync's shape: three single calls, the location's details once GHL has answered, one
    /// chain per list of `(pages, whether GHL says the list's total)`, each page answered by a
    /// fixed-window `server` after the next latency. Returns the chains (by index) in the order
    /// they fetched their last page, with when, and the 429s.
    async fn sync_shape(lists: &[(u64, Length)]) -> (Vec<(usize, Instant)>, u32) {
        let (order, refused, _) = sync_shape_shared(lists, 0, 1).await;
        (order, refused)
    }

    /// [`sync_shape`] with another client spending `other` at the opening of every window, and
    /// the latencies' seed; also returns how long the sync took.
    async fn sync_shape_shared(
        lists: &[(u64, Length)],
        other: u32,
        seed: u64,
    ) -> (Vec<(usize, Instant)>, u32, Duration) {
        let start = Instant::now();
        let window = Duration::from_secs(10);
        let limiter = Arc::new(RateLimiter::new(100, window));
        let mut server = Server::new(100, window);
        server.other = other;
        let server = Arc::new(std::sync::Mutex::new(server));
        let latencies = Arc::new(std::sync::Mutex::new(Latencies(seed)));
        let ended = Arc::new(std::sync::Mutex::new(Vec::new()));
        let counts = server.clone();
        let first = limiter.clone();
        let call = move |chain: Option<ChainLeft>, extra: u64| {
            let (limiter, server, latencies) = (limiter.clone(), server.clone(), latencies.clone());
            async move {
                let permit = limiter.acquire_for(chain.as_ref()).await;
                let latency = latencies.lock().unwrap().next() + Duration::from_millis(extra);
                tokio::time::sleep(latency).await;
                let remaining = server.lock().unwrap().arrive();
                limiter.release(
                    permit,
                    Window {
                        max: Some(100),
                        interval: Some(window),
                        remaining: Some(remaining.unwrap_or(0)),
                        refused: remaining.is_none(),
                    },
                );
            }
        };
        let mut tasks = Vec::new();
        for _ in 0..3 {
            tasks.push(tokio::spawn(call(None, 0)));
        }
        // The location's details go once GHL has answered, as in `SyncEngine`.
        let details = call.clone();
        tasks.push(tokio::spawn(async move {
            first.answered().await;
            details(None, 0).await
        }));
        // The model only: each list's pages take this much longer than the latency, in ms, in
        // list order (`MODEL_EXTRA=33,33,55,180,140`: the real answers' processing of 100k).
        let extras: Vec<u64> = std::env::var("MODEL_EXTRA")
            .unwrap_or_default()
            .split(',')
            .filter_map(|x| x.parse().ok())
            .collect();
        for (index, &(pages, known)) in lists.iter().enumerate() {
            let (call, ended) = (call.clone(), ended.clone());
            let extra = extras.get(index).copied().unwrap_or(0);
            tasks.push(tokio::spawn(async move {
                let left: ChainLeft = Arc::new(AtomicU64::new(0));
                for read in 1..=pages {
                    call(Some(left.clone()), extra).await;
                    let value = match (read == pages, known) {
                        (true, _) => 0,
                        (false, Known) => pages - read,
                        (false, Half) => (pages - read) | HALF_OF_LIST,
                        (false, Unknown) => UNKNOWN_LENGTH | read,
                    };
                    left.store(value, Ordering::Relaxed);
                }
                ended.lock().unwrap().push((index, Instant::now()));
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        let refused = counts.lock().unwrap().refused;
        let order = ended.lock().unwrap().clone();
        (order, refused, Instant::now() - start)
    }

    /// Not a test: the paused-clock model of the bench's FULL syncs, to iterate on the
    /// scheduler (`cargo test --lib limiter::tests::model -- --ignored --nocapture`). Prints
    /// the end of each shape (mean of 5 latency seeds) and the 429s.
    #[tokio::test(start_paused = true)]
    #[ignore]
    async fn model() {
        let only = std::env::var("MODEL").unwrap_or_default();
        // Conversations from one end, then from both (`paging::ends`, two `Half` chains).
        let shapes: [(&str, &[(u64, Length)]); 7] = [
            (
                "10k",
                &[(77, Known), (50, Unknown), (20, Known), (8, Known)],
            ),
            (
                "10k known",
                &[(77, Known), (50, Known), (20, Known), (8, Known)],
            ),
            (
                "100k",
                &[(758, Known), (500, Unknown), (200, Known), (81, Known)],
            ),
            (
                "10k ends",
                &[
                    (39, Half),
                    (38, Half),
                    (50, Unknown),
                    (20, Known),
                    (8, Known),
                ],
            ),
            (
                "10k ends known",
                &[(39, Half), (38, Half), (50, Known), (20, Known), (8, Known)],
            ),
            (
                "100k ends",
                &[
                    (379, Half),
                    (379, Half),
                    (500, Unknown),
                    (200, Known),
                    (81, Known),
                ],
            ),
            (
                "100k ends known",
                &[
                    (379, Half),
                    (379, Half),
                    (500, Known),
                    (200, Known),
                    (81, Known),
                ],
            ),
        ];
        for (name, lists) in shapes {
            if !only.is_empty() && !only.split(',').any(|o| o == name) {
                continue;
            }
            // The shape's joint bound: its lists and the four single calls.
            let chains: Vec<u64> = lists.iter().map(|l| l.0).chain([1, 1, 1, 1]).collect();
            println!(
                "{name}: joint bound {:.2} s",
                joint_bound(&chains, 100, 10_000_000, 150_000) as f64 / 1e6
            );
            for other in [0, 30] {
                let mut ends = Vec::new();
                let mut refused = 0;
                for seed in 1..=5 {
                    let (_, r, took) = sync_shape_shared(lists, other, seed).await;
                    ends.push(took.as_secs_f64());
                    refused += r;
                }
                let mean = ends.iter().sum::<f64>() / ends.len() as f64;
                println!("{name} other {other}: {mean:.2} s {ends:.2?}, {refused} 429s");
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_sync_of_100k_sees_no_429_when_another_client_spends_30_of_every_window() {
        // The window's last answers under-count the others by one or two now and then; a
        // limiter that dropped those estimates behind a higher one met 14 429s a run here.
        for seed in 1..=4 {
            let lists = [(758, Known), (500, Unknown), (200, Known), (81, Known)];
            let (order, refused, _) = sync_shape_shared(&lists, 30, seed).await;
            assert_eq!(order.len(), 4);
            assert_eq!(refused, 0, "seed {seed}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_list_of_unknown_length_is_not_left_for_last() {
        // The simulator's 10k and 100k locations: conversations, tasks (no total), contacts,
        // opportunities. Taken as one page long, tasks were served last and ended the sync
        // alone, 4.5 s after the others at 10k and 50 s at 100k.
        for lists in [
            [(77, Known), (50, Unknown), (20, Known), (8, Known)],
            [(758, Known), (500, Unknown), (200, Known), (81, Known)],
        ] {
            let (order, refused) = sync_shape(&lists).await;
            assert_eq!(refused, 0, "{lists:?}");
            assert_eq!(order.len(), 4);
            // The chains end about together (the plan): tasks may be last, but not alone for a
            // second (it was 4.5 s when it was served last).
            if let [.., (_, before), (1, tasks)] = order[..] {
                assert!(
                    tasks - before < Duration::from_secs(1),
                    "{lists:?}: tasks ended alone, {:?} after the others",
                    tasks - before
                );
            }
        }
    }

    #[test]
    fn an_unknown_length_is_what_was_read_and_half_the_longest_known() {
        assert_eq!(pages_left(7, 100), 7, "a known length is as said");
        assert_eq!(pages_left(UNKNOWN_LENGTH | 3, 100), 50);
        assert_eq!(pages_left(UNKNOWN_LENGTH | 80, 100), 80);
        assert_eq!(pages_left(UNKNOWN_LENGTH, 0), 1, "at least one page");
        assert_eq!(
            pages_left(HALF_OF_LIST | 40, 100),
            40,
            "half a list: its own pages"
        );
        assert_eq!(
            list_left(HALF_OF_LIST | 40),
            Some(80),
            "the list: both halves"
        );
        assert_eq!(list_left(40), Some(40));
        assert_eq!(list_left(UNKNOWN_LENGTH | 40), None);
    }
}
