//! The response cache and the per-location data versions it is keyed on (DESIGN.md, "Response
//! cache and data versions").
//!
//! - [`DataVersions`]: a counter per location, bumped by the store after every committed change to
//!   the location's cached data or sync state (nothing else bumps it), plus a total that moves
//!   with every bump. A request takes a [`VersionSnapshot`] before it reads anything.
//! - [`ReadSet`]: what one request read (the locations, or "everything visible"), and until when
//!   its time-dependent fields (`ageSeconds`, `stale`, a `maxAge` decision) stay the same. The
//!   GraphQL resolvers fill it in; it is the entry's tag.
//! - [`ResponseCache`]: successful query answers as bytes, bounded by bytes (moka), keyed by the
//!   normalized document, operation name, variables, the caller's location scope and the
//!   response media type. An entry is served only while the versions it was read at are the
//!   current ones and its time-dependent fields have not moved.
//!
//! Imports nothing of the gateway: the HTTP layer decides what to cache, the store bumps versions.

mod key;
mod versions;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use tokio::sync::watch;

pub use key::normalize_document;
pub use versions::{DataVersions, VersionSnapshot};

/// Settings of the response cache.
#[derive(Clone, Debug, clap::Args)]
pub struct CacheConfig {
    /// Memory for cached query answers, in MiB (their bytes plus a small overhead each); 0 turns
    /// the response cache off.
    #[arg(long, env = "RESPONSE_CACHE_MB", default_value_t = 64)]
    pub response_cache_mb: u64,
    /// The longest an answer stays cached, in seconds, even when nothing this process knows of
    /// changed: the bound on how late a write made by another process (a `ghl-gateway sync` run
    /// beside `serve`, another replica) is seen.
    #[arg(long, env = "RESPONSE_CACHE_TTL_SECS", default_value_t = 10)]
    pub response_cache_ttl_secs: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        crate::config::defaults()
    }
}

/// Bytes an entry costs beyond its body and key: the entry, its tags, moka's bookkeeping.
const ENTRY_OVERHEAD: usize = 256;

/// What one request read, filled in by the resolvers while it executes.
#[derive(Debug)]
pub struct ReadSet {
    snapshot: VersionSnapshot,
    state: Mutex<ReadState>,
}

#[derive(Debug, Default)]
struct ReadState {
    locations: Vec<String>,
    all: bool,
    valid_until: Option<DateTime<Utc>>,
}

impl ReadSet {
    /// A read set over the versions as they were before the request read anything.
    pub fn new(snapshot: VersionSnapshot) -> Self {
        Self {
            snapshot,
            state: Mutex::default(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, ReadState> {
        // A panic while holding this lock leaves plain data behind; keep using it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The request read data of `location_id` (its records or its sync state).
    pub fn read(&self, location_id: &str) {
        let mut state = self.state();
        if !state.locations.iter().any(|l| l == location_id) {
            state.locations.push(location_id.to_owned());
        }
    }

    /// The request read something whose location it cannot name (the list of locations, a
    /// record looked up by id that does not exist): any write anywhere invalidates the answer.
    pub fn read_all(&self) {
        self.state().all = true;
    }

    /// The answer holds a time-dependent value that changes at `at` (an age in whole seconds
    /// ticks over, data turns stale): it may be served until then only.
    pub fn valid_until(&self, at: DateTime<Utc>) {
        let mut state = self.state();
        state.valid_until = Some(state.valid_until.map_or(at, |t| t.min(at)));
    }

    /// The entry's tag: the versions of what was read, as of before it was read.
    fn tag(&self) -> Tag {
        let state = self.state();
        Tag {
            total: state.all.then(|| self.snapshot.total()),
            locations: state
                .locations
                .iter()
                .map(|l| (l.clone(), self.snapshot.location(l)))
                .collect(),
            valid_until: state.valid_until,
        }
    }
}

/// The data an entry was read from, to compare with the versions now.
#[derive(Clone, Debug)]
struct Tag {
    /// Set when the answer depends on every location: the total version it was read at.
    total: Option<u64>,
    locations: Vec<(String, u64)>,
    valid_until: Option<DateTime<Utc>>,
}

impl Tag {
    fn is_current(&self, versions: &VersionSnapshot, now: DateTime<Utc>) -> bool {
        !versions.suspended()
            && self.valid_until.is_none_or(|t| now < t)
            && self.total.is_none_or(|total| total == versions.total())
            && self
                .locations
                .iter()
                .all(|(location, version)| versions.location(location) == *version)
    }
}

/// A cached answer: the body as sent, and its strong `ETag`.
#[derive(Clone, Debug)]
pub struct CachedAnswer {
    pub body: Bytes,
    /// `"<hex>"`: a strong validator of the body (RFC 9110 §8.8.3).
    pub etag: String,
    /// Other representations of the body (the HTTP layer's content codings), made on first use
    /// and kept when they are at most a quarter of the body, so the byte bound holds (the weigher
    /// counts half the body for them).
    alternates: [std::sync::OnceLock<Option<Bytes>>; ALTERNATES],
    tag: Tag,
    /// When moka should drop it at the latest (std clock: moka's own).
    expires: Instant,
}

/// How many other representations an entry keeps room for ([`CachedAnswer::alternate`]).
pub const ALTERNATES: usize = 2;

impl CachedAnswer {
    /// Representation `slot` (below [`ALTERNATES`]) of the body, as `make` builds it from the
    /// body: built once and kept when it is at most a quarter of the body's size, else built
    /// again on each call.
    pub fn alternate(&self, slot: usize, make: impl Fn(&[u8]) -> Bytes) -> Bytes {
        let kept = self.alternates[slot].get_or_init(|| {
            let made = make(&self.body);
            (made.len() <= self.body.len() / 4).then_some(made)
        });
        match kept {
            Some(bytes) => bytes.clone(),
            None => make(&self.body),
        }
    }
}

/// The strong entity tag of a body: the first 16 bytes of its SHA-256, in hex, quoted.
pub fn etag_of(body: &[u8]) -> String {
    let digest = Sha256::digest(body);
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("\"{hex}\"")
}

/// The identity of a request for the cache: everything its answer depends on besides the data.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CacheKey([u8; 32]);

impl CacheKey {
    /// The key of a request. `document` is normalized here; `variables` is the request's
    /// variables as JSON; `scope` names what the caller may read (two callers with different
    /// scopes never share a key); `media` is the response media type.
    pub fn new(
        document: &str,
        operation_name: Option<&str>,
        variables: &str,
        scope: &str,
        media: &str,
    ) -> Self {
        let mut hash = Sha256::new();
        // Length-prefixed parts: no two different tuples hash the same bytes.
        for part in [
            normalize_document(document).as_bytes(),
            operation_name.unwrap_or("").as_bytes(),
            variables.as_bytes(),
            scope.as_bytes(),
            media.as_bytes(),
        ] {
            hash.update((part.len() as u64).to_le_bytes());
            hash.update(part);
        }
        Self(hash.finalize().into())
    }
}

/// Drops an entry when its time-dependent fields move or the TTL ends, whichever comes first.
struct EntryExpiry;

impl moka::Expiry<CacheKey, Arc<CachedAnswer>> for EntryExpiry {
    fn expire_after_create(
        &self,
        _key: &CacheKey,
        value: &Arc<CachedAnswer>,
        created_at: Instant,
    ) -> Option<Duration> {
        Some(value.expires.saturating_duration_since(created_at))
    }
}

/// The response cache: query answers in memory, bounded by bytes. Cheap to clone.
#[derive(Clone)]
pub struct ResponseCache {
    entries: moka::sync::Cache<CacheKey, Arc<CachedAnswer>>,
    versions: DataVersions,
    ttl: Duration,
    stats: Arc<Stats>,
    /// Keys being executed now: concurrent misses of one key wait for the first (no herd when
    /// a popular entry expires).
    flights: Arc<Mutex<HashMap<CacheKey, watch::Receiver<()>>>>,
}

/// A miss's part in executing its key: the one that executes, or one that waits for it.
pub enum Flight {
    /// Execute, fill the cache, then drop the guard (which wakes the followers).
    Leader(FlightGuard),
    /// Another request executes this key: wait for it ([`Flight::wait`]), then look again.
    Follower(watch::Receiver<()>),
}

impl Flight {
    /// For a follower: waits until the leader is done (its guard dropped), at most `timeout`.
    pub async fn wait(self, timeout: Duration) {
        if let Flight::Follower(mut done) = self {
            // Err when the leader's sender is gone: that is the signal.
            let _ = tokio::time::timeout(timeout, done.changed()).await;
        }
    }
}

/// Held by the request that executes a key; dropping it ends the flight and wakes the waiters,
/// whatever happened (an answer kept, an error, a panic).
pub struct FlightGuard {
    key: CacheKey,
    flights: Arc<Mutex<HashMap<CacheKey, watch::Receiver<()>>>>,
    _done: watch::Sender<()>,
}

impl Drop for FlightGuard {
    fn drop(&mut self) {
        self.flights
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.key);
    }
}

/// Lookups since start: served from the cache, or not (absent or out of date).
#[derive(Debug, Default)]
struct Stats {
    hits: AtomicU64,
    misses: AtomicU64,
    /// Entries removed to keep the byte bound (not those that expired or were replaced).
    evictions: AtomicU64,
}

/// What the cache did so far (for benchmarks and metrics).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    /// Bytes held now (bodies plus per-entry overhead).
    pub bytes: u64,
    pub entries: u64,
    /// Entries removed to keep the byte bound since start.
    pub evictions: u64,
}

impl std::fmt::Debug for ResponseCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseCache")
            .field("entries", &self.entries.entry_count())
            .field("bytes", &self.entries.weighted_size())
            .finish_non_exhaustive()
    }
}

impl ResponseCache {
    /// A cache of `config.response_cache_mb` MiB over `versions`; `None` when it is off (0).
    pub fn new(config: &CacheConfig, versions: DataVersions) -> Option<Self> {
        if config.response_cache_mb == 0 {
            return None;
        }
        Some(Self::with_capacity(
            config.response_cache_mb.saturating_mul(1 << 20),
            Duration::from_secs(config.response_cache_ttl_secs),
            versions,
        ))
    }

    /// A cache of `bytes` bytes whose entries live at most `ttl`.
    pub fn with_capacity(bytes: u64, ttl: Duration, versions: DataVersions) -> Self {
        let stats = Arc::<Stats>::default();
        let counted = stats.clone();
        let entries = moka::sync::Cache::builder()
            .max_capacity(bytes)
            .weigher(|_key: &CacheKey, answer: &Arc<CachedAnswer>| {
                // The body, room for its kept alternates (a quarter of it each), the rest.
                let body = answer.body.len();
                u32::try_from(body + body / 4 * ALTERNATES + ENTRY_OVERHEAD).unwrap_or(u32::MAX)
            })
            .expire_after(EntryExpiry)
            .eviction_listener(move |_key, _answer, cause| {
                if cause == moka::notification::RemovalCause::Size {
                    counted.evictions.fetch_add(1, Ordering::Relaxed);
                }
            })
            .build();
        Self {
            entries,
            versions,
            ttl,
            stats,
            flights: Arc::default(),
        }
    }

    /// The versions entries are checked against (requests snapshot them before they read).
    pub fn versions(&self) -> &DataVersions {
        &self.versions
    }

    /// The cached answer of `key`, if it is still current: the versions it was read at are the
    /// current ones and its time-dependent fields have not moved. A stale entry is dropped.
    pub fn get(&self, key: &CacheKey) -> Option<Arc<CachedAnswer>> {
        let found = self.entries.get(key);
        let current = match found {
            Some(answer) if answer.tag.is_current(&self.versions.snapshot(), Utc::now()) => {
                Some(answer)
            }
            Some(_) => {
                self.entries.invalidate(key);
                None
            }
            None => None,
        };
        let counter = if current.is_some() {
            &self.stats.hits
        } else {
            &self.stats.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        current
    }

    /// Joins the execution of `key` after a miss: the first miss leads (executes and fills the
    /// cache), later ones follow (wait, then look again).
    pub fn join_flight(&self, key: &CacheKey) -> Flight {
        let mut flights = self.flights.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(done) = flights.get(key) {
            return Flight::Follower(done.clone());
        }
        let (done, waiting) = watch::channel(());
        flights.insert(key.clone(), waiting);
        Flight::Leader(FlightGuard {
            key: key.clone(),
            flights: self.flights.clone(),
            _done: done,
        })
    }

    /// Keeps `body` as the answer of `key`, tagged with what `read` read. An answer already
    /// out of date (a write landed while it executed) is not kept. Returns whether it was kept.
    pub fn insert(&self, key: CacheKey, body: Bytes, etag: String, read: &ReadSet) -> bool {
        let tag = read.tag();
        let now = Utc::now();
        if !tag.is_current(&self.versions.snapshot(), now) {
            return false;
        }
        let life = tag
            .valid_until
            .and_then(|t| (t - now).to_std().ok())
            .map_or(self.ttl, |d| d.min(self.ttl));
        let answer = CachedAnswer {
            body,
            etag,
            alternates: Default::default(),
            tag,
            expires: Instant::now() + life,
        };
        self.entries.insert(key, Arc::new(answer));
        true
    }

    /// Hits and misses since start, and what is held now.
    pub fn stats(&self) -> CacheStats {
        self.entries.run_pending_tasks();
        CacheStats {
            hits: self.stats.hits.load(Ordering::Relaxed),
            misses: self.stats.misses.load(Ordering::Relaxed),
            bytes: self.entries.weighted_size(),
            entries: self.entries.entry_count(),
            evictions: self.stats.evictions.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(bytes: u64) -> ResponseCache {
        ResponseCache::with_capacity(bytes, Duration::from_secs(60), DataVersions::default())
    }

    fn key(n: usize) -> CacheKey {
        CacheKey::new(&format!("{{ a{n} }}"), None, "{}", "admin", "json")
    }

    #[test]
    fn an_entry_is_served_until_a_location_it_read_changes() {
        let cache = cache(1 << 20);
        let read = ReadSet::new(cache.versions().snapshot());
        read.read("a");
        assert!(cache.insert(key(1), Bytes::from_static(b"{}"), etag_of(b"{}"), &read));
        assert!(cache.get(&key(1)).is_some());
        cache.versions().bump("b");
        assert!(cache.get(&key(1)).is_some(), "another location changed");
        cache.versions().bump("a");
        assert!(cache.get(&key(1)).is_none(), "the location it read changed");
    }

    #[test]
    fn a_write_during_execution_keeps_the_answer_out() {
        let cache = cache(1 << 20);
        let read = ReadSet::new(cache.versions().snapshot());
        cache.versions().bump("a");
        read.read("a");
        assert!(!cache.insert(key(1), Bytes::from_static(b"{}"), etag_of(b"{}"), &read));
        assert!(cache.get(&key(1)).is_none());
    }

    #[test]
    fn read_all_answers_change_with_any_write_and_timed_ones_expire() {
        let cache = cache(1 << 20);
        let read = ReadSet::new(cache.versions().snapshot());
        read.read_all();
        assert!(cache.insert(key(1), Bytes::from_static(b"{}"), etag_of(b"{}"), &read));
        cache.versions().bump("anything");
        assert!(cache.get(&key(1)).is_none());

        let read = ReadSet::new(cache.versions().snapshot());
        read.valid_until(Utc::now() - chrono::Duration::milliseconds(1));
        assert!(!cache.insert(key(2), Bytes::from_static(b"{}"), etag_of(b"{}"), &read));
        let read = ReadSet::new(cache.versions().snapshot());
        read.valid_until(Utc::now() + chrono::Duration::seconds(30));
        read.valid_until(Utc::now() + chrono::Duration::seconds(60));
        assert!(cache.insert(key(3), Bytes::from_static(b"{}"), etag_of(b"{}"), &read));
        assert!(cache.get(&key(3)).is_some());
    }

    #[tokio::test]
    async fn concurrent_misses_of_a_key_wait_for_the_first() {
        let cache = cache(1 << 20);
        let Flight::Leader(guard) = cache.join_flight(&key(1)) else {
            panic!("the first miss leads");
        };
        let follower = cache.join_flight(&key(1));
        assert!(matches!(follower, Flight::Follower(_)));
        assert!(matches!(cache.join_flight(&key(2)), Flight::Leader(_)));
        let read = ReadSet::new(cache.versions().snapshot());
        assert!(cache.insert(key(1), Bytes::from_static(b"{}"), etag_of(b"{}"), &read));
        drop(guard);
        // Woken at once (not after the timeout), and the answer is there.
        tokio::time::timeout(
            Duration::from_secs(5),
            follower.wait(Duration::from_secs(60)),
        )
        .await
        .expect("the leader's end wakes the follower");
        assert!(cache.get(&key(1)).is_some());
        assert!(matches!(cache.join_flight(&key(1)), Flight::Leader(_)));
    }

    #[test]
    fn the_byte_bound_holds_when_more_answers_arrive_than_fit() {
        let capacity = 64 * 1024;
        let cache = cache(capacity);
        let body = Bytes::from(vec![b'x'; 4_000]);
        for n in 0..200 {
            let read = ReadSet::new(cache.versions().snapshot());
            read.read("a");
            cache.insert(key(n), body.clone(), etag_of(&body), &read);
        }
        let stats = cache.stats();
        assert!(stats.bytes <= capacity, "{stats:?}, bound {capacity}");
        assert!(stats.entries >= 10, "it still caches: {stats:?}");
        assert_eq!(
            stats.evictions + stats.entries,
            200,
            "every answer that did not stay was evicted for the bound: {stats:?}"
        );
    }

    #[test]
    fn keys_differ_by_every_part_and_not_by_layout() {
        let base = CacheKey::new("{ a b }", None, "{}", "key:a", "json");
        let same = |document: &str| CacheKey::new(document, None, "{}", "key:a", "json");
        assert_eq!(base, same("  {a   b}"));
        assert_eq!(base, same("{a,b}"));
        assert_eq!(base, same("{\n  a # the first\n  b\n}"));
        for other in [
            CacheKey::new("{ a c }", None, "{}", "key:a", "json"),
            CacheKey::new("{ a b }", Some("Op"), "{}", "key:a", "json"),
            CacheKey::new("{ a b }", None, r#"{"x":1}"#, "key:a", "json"),
            CacheKey::new("{ a b }", None, "{}", "key:b", "json"),
            CacheKey::new("{ a b }", None, "{}", "key:a", "graphql-response+json"),
        ] {
            assert_ne!(base, other);
        }
    }
}
