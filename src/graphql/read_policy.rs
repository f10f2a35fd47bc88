//! The read policy: before a page of a location's data is read from the cache, how fresh it must
//! be and what the gateway does about it. One mechanism serves DESIGN's three behaviours:
//!
//! - **Default, stale-while-revalidate.** The read answers from the cache at once. When the
//!   location's data is stale (older than `MAX_AGE_SECS`, never synced, or its credentials are
//!   refused) and no sync of it runs, the read starts a background refresh; single flight in the
//!   sync engine makes concurrent reads start one job, and the answer says `syncing: true`.
//! - **`maxAge: N`.** When the data is older than N seconds (or was never synced), the read
//!   starts or joins a refresh and waits for it, at most `MAX_AGE_WAIT_SECS`, then answers from
//!   the cache as it then is; a timeout is logged, not an error. `maxAge: 0` means "fresh from
//!   GHL".
//! - **Cache only.** With `AUTO_REFRESH=false`, reads without `maxAge` never start a refresh.
//! - **Cooldown.** After failed syncs a location cools down (see `sync`): reads answer from the
//!   cache at once and start nothing, `maxAge` included.
//!
//! A process without a sync, and a location without credentials, are served from the cache as
//! they are. The policy reads the store (the freshness row, which it hands to the page's
//! `freshness` field so it is read once) and asks the sync through [`SyncHandle`]; it never calls
//! GHL. The decision itself ([`decide`]) is pure.

use async_graphql::Context;

use super::Settings;
use super::error::ApiResult;
use super::loaders::FreshnessOf;
use super::types::{Freshness, loader};
use crate::store::Store;
use crate::sync::{SyncError, SyncHandle, SyncMode, Trigger};

/// What a read does before it answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Action {
    /// Answer from the cache; nothing to do.
    Serve,
    /// Answer from the cache, and start a refresh in the background.
    Revalidate,
    /// Start or join a refresh and wait for it (bounded) before answering.
    RefreshAndWait,
}

/// Whether the decision needs the location's freshness: a cache-only read without `maxAge`
/// never refreshes, so it need not read it.
fn consults_freshness(max_age: Option<i32>, auto_refresh: bool) -> bool {
    max_age.is_some() || auto_refresh
}

/// The decision, from the request's `maxAge` (seconds) and the location's freshness.
fn decide(max_age: Option<i32>, freshness: &Freshness) -> Action {
    match max_age {
        Some(max_age) => {
            if freshness
                .age_seconds
                .is_none_or(|age| age > i64::from(max_age))
            {
                Action::RefreshAndWait
            } else {
                Action::Serve
            }
        }
        None if freshness.stale && !freshness.syncing => Action::Revalidate,
        None => Action::Serve,
    }
}

/// Reads the freshness row of `location_id` and leaves it in the request's loader cache, where
/// the page's `freshness` field finds it (without waiting for a DataLoader batch).
pub(super) async fn prefetch_freshness(
    ctx: &Context<'_>,
    location_id: &str,
) -> ApiResult<Option<crate::store::Freshness>> {
    let store = ctx.data_unchecked::<Store>();
    let row = store
        .freshness(&[location_id.to_owned()])
        .await?
        .remove(location_id);
    if let Some(row) = &row {
        loader(ctx)
            .feed_one(FreshnessOf(location_id.to_owned()), row.clone())
            .await;
    }
    Ok(row)
}

/// Applies the policy to a read of `location_id` with the request's `maxAge`. Returns whether
/// it left the location's freshness in the loader cache (for the page's `freshness` field).
pub(super) async fn apply(
    ctx: &Context<'_>,
    location_id: &str,
    max_age: Option<i32>,
) -> ApiResult<bool> {
    let Some(sync) = ctx.data_opt::<SyncHandle>() else {
        return Ok(false);
    };
    let settings = ctx.data_unchecked::<Settings>();
    if !consults_freshness(max_age, settings.auto_refresh) {
        return Ok(false);
    }
    let store = ctx.data_unchecked::<Store>();
    let row = store
        .freshness(&[location_id.to_owned()])
        .await?
        .remove(location_id);
    let now = chrono::Utc::now();
    let freshness = Freshness::from_store(row.as_ref(), settings.max_age_secs, now);
    // The decision holds until the age ticks over: an answer cached from it lives no longer.
    super::reads::freshness(ctx, &freshness, now);
    let action = decide(max_age, &freshness);
    let started = action != Action::Serve
        && match sync
            .refresh(location_id, SyncMode::Incremental, Trigger::Automatic)
            .await
        {
            Ok(_) => true,
            // A location without credentials is served from the cache as it is, and so is one
            // cooling down after failed syncs (so that reads never hammer GHL).
            Err(SyncError::NoCredentials(_) | SyncError::CoolingDown { .. }) => false,
            Err(error) => {
                tracing::warn!(location_id, error = %error, "could not start a refresh");
                false
            }
        };
    if started && action == Action::RefreshAndWait {
        let waited = std::time::Duration::from_secs(settings.max_age_wait_secs);
        if !sync.wait_idle(location_id, waited).await {
            tracing::info!(
                location_id,
                "maxAge wait timed out; answering from the cache"
            );
        }
        // The page's freshness must say how fresh the data is now: it is read again.
        loader(ctx).clear::<FreshnessOf>();
        return Ok(false);
    }
    // The page's `freshness` field reads the same row: hand it over instead of reading it twice,
    // counting the refresh this read started or joined (`syncing: true`).
    if let Some(mut row) = row {
        if started {
            row.active = row.active.max(1);
        }
        loader(ctx)
            .feed_one(FreshnessOf(location_id.to_owned()), row)
            .await;
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn freshness(age_seconds: Option<i64>, stale: bool, syncing: bool) -> Freshness {
        Freshness {
            synced_at: None,
            age_seconds,
            stale,
            syncing,
        }
    }

    #[test]
    fn by_default_stale_data_is_revalidated_in_the_background_once() {
        let stale = freshness(Some(400), true, false);
        assert_eq!(decide(None, &stale), Action::Revalidate);
        let never_synced = freshness(None, true, false);
        assert_eq!(decide(None, &never_synced), Action::Revalidate);
        // A sync already runs: nothing more to start.
        let stale_syncing = freshness(Some(400), true, true);
        assert_eq!(decide(None, &stale_syncing), Action::Serve);
        let fresh = freshness(Some(10), false, false);
        assert_eq!(decide(None, &fresh), Action::Serve);
    }

    #[test]
    fn max_age_waits_for_data_older_than_it_and_only_then() {
        let ten = freshness(Some(10), false, false);
        assert_eq!(decide(Some(10), &ten), Action::Serve);
        assert_eq!(decide(Some(9), &ten), Action::RefreshAndWait);
        assert_eq!(decide(Some(0), &ten), Action::RefreshAndWait);
        // `maxAge: 0` on data synced this second is fresh enough.
        assert_eq!(
            decide(Some(0), &freshness(Some(0), false, false)),
            Action::Serve
        );
        // Never synced: there is nothing young enough to answer with.
        assert_eq!(
            decide(Some(3600), &freshness(None, true, false)),
            Action::RefreshAndWait
        );
        // maxAge waits even while a sync runs (it joins it), and even when the data is not
        // stale by the gateway's own max age.
        assert_eq!(
            decide(Some(5), &freshness(Some(60), false, true)),
            Action::RefreshAndWait
        );
    }

    #[test]
    fn cache_only_reads_skip_the_freshness_unless_they_give_max_age() {
        assert!(!consults_freshness(None, false));
        assert!(consults_freshness(Some(30), false));
        assert!(consults_freshness(None, true));
    }
}
