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
}

impl VersionSnapshot {
    /// Bumps of every location so far.
    pub fn total(&self) -> u64 {
        self.total
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
    }
}
