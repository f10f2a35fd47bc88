//! What a request read, for the response cache: the resolvers note here which locations they
//! read and when a time-dependent value they answered changes. The HTTP layer puts a
//! [`ReadSet`] in the request's data; without one (a subscription, a test without HTTP) these do
//! nothing.
//!
//! Root fields note locations (nested fields stay inside their root's location); every
//! freshness a request computes notes when its whole-second age ticks over, which is also when
//! `stale` and a `maxAge` decision can change.

use std::sync::Arc;

use async_graphql::Context;
use chrono::{DateTime, Utc};

use super::types::Freshness;
use crate::cache::ReadSet;

fn read_set<'a>(ctx: &Context<'a>) -> Option<&'a Arc<ReadSet>> {
    ctx.data_opt::<Arc<ReadSet>>()
}

/// The request read data or sync state of `location_id`.
pub(super) fn location(ctx: &Context<'_>, location_id: &str) {
    if let Some(reads) = read_set(ctx) {
        reads.read(location_id);
    }
}

/// The request read something no single location names (the list of locations, a record by id
/// that was not found): any write invalidates its answer.
pub(super) fn everything(ctx: &Context<'_>) {
    if let Some(reads) = read_set(ctx) {
        reads.read_all();
    }
}

/// The answer holds a value that changes at `at` (a cooldown ends).
pub(super) fn until(ctx: &Context<'_>, at: DateTime<Utc>) {
    if let Some(reads) = read_set(ctx) {
        reads.valid_until(at);
    }
}

/// The request answered (or decided on) `freshness`, computed at `now`.
pub(super) fn freshness(ctx: &Context<'_>, freshness: &Freshness, now: DateTime<Utc>) {
    if let (Some(reads), Some(at)) = (read_set(ctx), next_tick(freshness, now)) {
        reads.valid_until(at);
    }
}

/// When the whole-second age of `freshness` (computed at `now`) next changes; `None` for a
/// location never synced, whose freshness does not change with time.
fn next_tick(freshness: &Freshness, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let synced_at = freshness.synced_at?;
    // Before `synced_at` (clocks apart) the age reads 0 until a second after it.
    let age = (now - synced_at).num_seconds().max(0);
    Some(synced_at + chrono::Duration::seconds(age + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_age_is_good_until_its_next_whole_second() {
        let now = Utc::now();
        let synced_at = now - chrono::Duration::milliseconds(4_300);
        let f = Freshness {
            synced_at: Some(synced_at),
            age_seconds: Some(4),
            stale: false,
            syncing: false,
        };
        let tick = next_tick(&f, now).unwrap();
        assert_eq!(tick, synced_at + chrono::Duration::seconds(5));
        assert!(tick > now && tick - now <= chrono::Duration::seconds(1));
        let never = Freshness {
            synced_at: None,
            age_seconds: None,
            stale: true,
            syncing: false,
        };
        assert_eq!(next_tick(&never, now), None);
    }
}
