//! The rate limiter of one (app, location) bucket: GHL's counters are the truth.
//!
//! GHL allows `max` requests per `interval` (100 per 10 s) per app and location, counts a request
//! when it arrives, and says on every answer how much of the window is left
//! (`X-RateLimit-Remaining`, with `-Max` and `-Interval-Milliseconds`). The location's budget is
//! shared with whatever else spends it (another process, another replica, the app's other tools),
//! so our own count is only half of the picture. This limiter keeps:
//!
//! - **our requests**, by send time: a slot is held for `interval` from the *request*, as GHL
//!   counts it, plus a guard as wide as the spread of round trips seen (two requests sent exactly
//!   one window apart may arrive less than one window apart when the first was slower);
//! - **the others' requests**: each answer says GHL counted `max - remaining` requests in its
//!   window; those that are not ours (our requests sent in the window up to that one) hold their
//!   slots until one `interval` after the answered request was sent, the latest their window can
//!   end. The highest estimate of the window is kept: requests that overtake each other on the
//!   way make single answers under-count, but the last one to arrive sees all of ours before it.
//!
//! Until GHL has answered once, one request goes at a time (a probe): a burst sent blind could
//! find the window spent elsewhere. A token bucket (GCRA, as in `governor`) lets twice the burst
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
//! estimated ([`UNKNOWN_LENGTH`]). It waits on `tokio::time`, so tests can pause the clock.

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

/// The pages left of a chain whose counter holds `value`, given the longest known chain.
fn pages_left(value: u64, longest_known: u64) -> u64 {
    if value & UNKNOWN_LENGTH == 0 {
        return value;
    }
    (value & !UNKNOWN_LENGTH).max(longest_known / 2).max(1)
}

#[derive(Debug)]
struct State {
    max: usize,
    interval: Duration,
    /// Send times of our requests still holding a slot, oldest first.
    sent: VecDeque<Instant>,
    /// Requests GHL counted that were not ours, and until when they hold their slots.
    foreign: usize,
    foreign_until: Instant,
    /// The others' count is last window's, carried into this one (for one window at most)
    /// until an answer of this one says at least as much.
    foreign_carried: bool,
    /// Whether GHL has told us its counters yet.
    known: bool,
    /// Our requests sent and not answered yet.
    in_flight: usize,
    /// Shortest and longest round trip seen: their spread is the guard of each slot.
    rtt: Option<(Duration, Duration)>,
    /// Mean round trip (moving average): the pace of a chain.
    rtt_mean: Option<Duration>,
    /// Chains that asked for a slot, by the address of their counter, until they end.
    chains: HashMap<usize, Weak<AtomicU64>>,
    /// Waiting callers: (higher priority first, then arrival order).
    waiters: BTreeSet<(Reverse<u64>, u64)>,
    next_ticket: u64,
}

/// When a slot may be taken.
enum Next {
    Now,
    At(Instant),
    /// When an answer comes back (the probe is in flight).
    Answer,
}

impl State {
    fn guard(&self) -> Duration {
        self.rtt
            .map(|(low, high)| (high - low).min(self.interval / 20))
            .unwrap_or_default()
    }

    /// Drops our requests whose slot is free again, and the others' once their window is over.
    fn prune(&mut self, now: Instant) {
        let hold = self.interval + self.guard();
        while self.sent.front().is_some_and(|t| *t + hold <= now) {
            self.sent.pop_front();
        }
        if self.foreign_until <= now && self.foreign > 0 {
            // A client that spent part of the last window is likely to spend it again, from the
            // window's first moment: without this, the first round trip of each window went out
            // as if it had the whole window, and met the others' share as 429s.
            if !self.foreign_carried && now < self.foreign_until + self.interval {
                self.foreign_carried = true;
                self.foreign_until += self.interval;
            } else {
                self.foreign = 0;
                self.foreign_carried = false;
            }
        }
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
        let Some(pace) = self.rtt_mean.filter(|p| !p.is_zero()) else {
            return 0;
        };
        let hold = self.interval + self.guard();
        let horizon = self.sent.front().map_or(self.interval, |t| {
            (*t + hold).saturating_duration_since(now)
        });
        let uses = (horizon.as_secs_f64() / pace.as_secs_f64()).ceil() as u64;
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
        self.chains.retain(|_, chain| chain.strong_count() > 0);
        let values: Vec<(usize, u64)> = self
            .chains
            .iter()
            .filter_map(|(key, chain)| Some((*key, chain.upgrade()?.load(Ordering::Relaxed))))
            .collect();
        let longest_known = values
            .iter()
            .map(|(_, value)| *value)
            .filter(|value| value & UNKNOWN_LENGTH == 0)
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

    fn next(&mut self, now: Instant, priority: u64, own: Option<usize>) -> Next {
        self.prune(now);
        let priority = if own.is_some() {
            self.own_left(own)
        } else {
            priority
        };
        if !self.known && self.in_flight > 0 {
            return Next::Answer;
        }
        let held = self.sent.len() + self.foreign;
        if held < self.max && held.saturating_add(self.reserve(now, priority, own)) < self.max {
            return Next::Now;
        }
        let hold = self.interval + self.guard();
        let ours = self.sent.front().map(|t| *t + hold);
        let theirs = (self.foreign > 0).then_some(self.foreign_until);
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
        let removed = lock(&self.limiter.state).waiters.remove(&self.key);
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
                foreign: 0,
                foreign_until: Instant::now(),
                foreign_carried: false,
                known: false,
                in_flight: 0,
                rtt: None,
                rtt_mean: None,
                chains: HashMap::new(),
                waiters: BTreeSet::new(),
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
                state.chains.insert(own, Arc::downgrade(chain));
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
            let wake = {
                let mut state = lock(&self.state);
                if state.waiters.first() == Some(&key) {
                    match state.next(now, priority, own) {
                        Next::Now => {
                            state.waiters.remove(&key);
                            state.sent.push_back(now);
                            state.in_flight += 1;
                            drop(state);
                            std::mem::forget(ticket);
                            self.changed.notify_waiters();
                            return Permit {
                                limiter: self,
                                waited: now - start,
                                sent_at: now,
                            };
                        }
                        Next::At(at) => Some(at),
                        Next::Answer => None,
                    }
                } else {
                    None
                }
            };
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
                if window.refused
                    && let Some(at) = state.sent.iter().position(|t| *t == sent_at)
                {
                    state.sent.remove(at);
                }
                let rtt = now - sent_at;
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
                    .filter(|t| from.is_none_or(|from| **t > from) && **t <= sent_at)
                    .count();
                let foreign = state
                    .max
                    .saturating_sub(remaining as usize)
                    .saturating_sub(ours);
                state.prune(now);
                // The highest estimate stands, the carried one too: an answer early in a window
                // counts our requests of the window before as ours and under-counts the others.
                if foreign >= state.foreign {
                    state.foreign = foreign;
                    state.foreign_until = sent_at + state.interval;
                    state.foreign_carried = false;
                }
            }
        }
        // Dropping the permit takes it out of flight and wakes the waiters.
        drop(permit);
    }

    /// Requests GHL counted in the current window that were not ours, as last estimated.
    pub fn foreign(&self) -> usize {
        let mut state = lock(&self.state);
        state.prune(Instant::now());
        state.foreign
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
        // A probe, then 99 at once, then three windows counted from the requests: the old
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
    async fn the_first_request_is_a_probe() {
        let limiter = Arc::new(RateLimiter::new(100, Duration::from_secs(10)));
        let first = limiter.acquire(0).await;
        let waiting = {
            let limiter = limiter.clone();
            tokio::spawn(async move {
                let permit = limiter.acquire(0).await;
                permit.waited
            })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!waiting.is_finished(), "no second request before an answer");
        limiter.release(
            first,
            Window {
                max: Some(100),
                interval: Some(Duration::from_secs(10)),
                remaining: Some(99),
                refused: false,
            },
        );
        assert_eq!(waiting.await.unwrap(), Duration::from_millis(300));
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

    /// A FULL sync's shape: the location's details (the probe), three single calls, then one
    /// chain per list of `(pages, whether GHL says the list's total)`, each page answered by a
    /// fixed-window `server` after the next latency. Returns the order in which the chains
    /// (by index) fetched their last page, and the 429s.
    async fn sync_shape(lists: &[(u64, bool)]) -> (Vec<usize>, u32) {
        let window = Duration::from_secs(10);
        let limiter = Arc::new(RateLimiter::new(100, window));
        let server = Arc::new(std::sync::Mutex::new(Server::new(100, window)));
        let latencies = Arc::new(std::sync::Mutex::new(Latencies(1)));
        let ended = Arc::new(std::sync::Mutex::new(Vec::new()));
        let probe = server.clone();
        let call = move |chain: Option<ChainLeft>| {
            let (limiter, server, latencies) = (limiter.clone(), server.clone(), latencies.clone());
            async move {
                let permit = limiter.acquire_for(chain.as_ref()).await;
                let latency = latencies.lock().unwrap().next();
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
        call(None).await;
        let mut tasks = Vec::new();
        for _ in 0..3 {
            tasks.push(tokio::spawn(call(None)));
        }
        for (index, &(pages, known)) in lists.iter().enumerate() {
            let (call, ended) = (call.clone(), ended.clone());
            tasks.push(tokio::spawn(async move {
                let left: ChainLeft = Arc::new(AtomicU64::new(0));
                for read in 1..=pages {
                    call(Some(left.clone())).await;
                    let value = match (read == pages, known) {
                        (true, _) => 0,
                        (false, true) => pages - read,
                        (false, false) => UNKNOWN_LENGTH | read,
                    };
                    left.store(value, Ordering::Relaxed);
                }
                ended.lock().unwrap().push(index);
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        let refused = probe.lock().unwrap().refused;
        let order = ended.lock().unwrap().clone();
        (order, refused)
    }

    #[tokio::test(start_paused = true)]
    async fn a_list_of_unknown_length_is_not_left_for_last() {
        // The simulator's 10k and 100k locations: conversations, tasks (no total), contacts,
        // opportunities. Taken as one page long, tasks were served last and ended the sync
        // alone, 4.5 s after the others at 10k and 50 s at 100k.
        for lists in [
            [(77, true), (50, false), (20, true), (8, true)],
            [(758, true), (500, false), (200, true), (81, true)],
        ] {
            let (order, refused) = sync_shape(&lists).await;
            assert_eq!(refused, 0, "{lists:?}");
            assert_eq!(order.len(), 4);
            assert_ne!(
                order.last(),
                Some(&1),
                "{lists:?}: tasks ended last ({order:?})"
            );
        }
    }

    #[test]
    fn an_unknown_length_is_what_was_read_and_half_the_longest_known() {
        assert_eq!(pages_left(7, 100), 7, "a known length is as said");
        assert_eq!(pages_left(UNKNOWN_LENGTH | 3, 100), 50);
        assert_eq!(pages_left(UNKNOWN_LENGTH | 80, 100), 80);
        assert_eq!(pages_left(UNKNOWN_LENGTH, 0), 1, "at least one page");
    }
}
