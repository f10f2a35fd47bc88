//! Data versions: a counter per location, bumped after every committed change to its cached data
//! or sync state, and a total that moves with every bump. The store owns the bumps (its write
//! paths call [`DataVersions::bump`] after they commit); readers take a [`VersionSnapshot`].

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// The versions of every location this process has seen change. Cheap to clone (shared).
#[derive(Clone, Debug, Default)]
pub struct DataVersions {
    current: Arc<RwLock<VersionSnapshot>>,
}

/// The versions at one moment: an immutable map, shared until the next bump.
#[derive(Clone, Debug, Default)]
pub struct VersionSnapshot {
    total: u64,
    /// Added to every location's count: [`DataVersions::bump_all`] moves it.
    floor: u64,
    locations: Arc<HashMap<String, u64>>,
    /// Set while this process cannot vouch for the versions (a replica that lost its
    /// notification connection may miss other replicas' bumps): nothing is current then.
    suspended: bool,
}

impl VersionSnapshot {
    /// Bumps of every location so far.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Whether the versions cannot be vouched for now ([`DataVersions::suspend`]): a cached
    /// answer must not be served.
    pub fn suspended(&self) -> bool {
        self.suspended
    }

    /// The version of `location_id`: 0 until its first change (or the first `bump_all`).
    pub fn location(&self, location_id: &str) -> u64 {
        self.floor + self.locations.get(location_id).copied().unwrap_or(0)
    }
}

impl DataVersions {
    /// The versions now; O(1): a snapshot shares the map until the next bump.
    pub fn snapshot(&self) -> VersionSnapshot {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Records a committed change to `location_id`'s data or sync state.
    pub fn bump(&self, location_id: &str) {
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        current.total += 1;
        // Copy-on-write: snapshots taken before keep the map they saw.
        *Arc::make_mut(&mut current.locations)
            .entry(location_id.to_owned())
            .or_default() += 1;
    }

    /// Records a committed change to every location at once (e.g. jobs interrupted at start-up).
    pub fn bump_all(&self) {
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        current.total += 1;
        current.floor += 1;
    }

    /// Stops vouching for the versions until [`DataVersions::resume`]: every version moves
    /// (so nothing read before is current again) and every snapshot says `suspended`. Used by a
    /// replica whose notifications from the other replicas may be missing.
    pub fn suspend(&self) {
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        current.total += 1;
        current.floor += 1;
        current.suspended = true;
    }

    /// Vouches for the versions again, every version moved once more (what was read while
    /// suspended may be older than what other replicas wrote meanwhile).
    pub fn resume(&self) {
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        current.total += 1;
        current.floor += 1;
        current.suspended = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_keeps_the_versions_it_saw() {
        let versions = DataVersions::default();
        let before = versions.snapshot();
        versions.bump("a");
        versions.bump("a");
        versions.bump("b");
        let after = versions.snapshot();
        assert_eq!((before.total(), before.location("a")), (0, 0));
        assert_eq!(
            (after.total(), after.location("a"), after.location("b")),
            (3, 2, 1)
        );
        versions.bump_all();
        assert_eq!(after.location("a"), 2);
        assert_eq!(versions.snapshot().location("a"), 3);
        assert_eq!(versions.snapshot().location("never"), 1);
        assert_eq!(before.location("never"), 0);
        versions.suspend();
        let suspended = versions.snapshot();
        assert!(suspended.suspended() && !after.suspended());
        assert_eq!(suspended.location("a"), 4);
        versions.resume();
        assert!(!versions.snapshot().suspended());
        assert_eq!(versions.snapshot().location("a"), 5);
    }
}
