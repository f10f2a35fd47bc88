//! GHL's search index lag: a record created, changed or deleted shows in the search endpoints
//! only some seconds later (FACTS.md §2.2: "search results lag writes by a few seconds"), while
//! `GET` by id sees the write at once.
//!
//! The maps of [`super::Records`] are the truth (what `GET` by id and the admin API read); the
//! sorted indexes are what the search endpoints walk, and they take in a write only once its lag
//! has passed. Until then [`Lagging`] keeps the version of the record the index still holds
//! (`None`: the index does not hold it yet), which the searches render instead of the truth. A
//! record written again within the lag keeps its oldest indexed version until its latest write
//! is due (a real index may show the versions between; no client can rely on either).

use std::collections::{HashMap, VecDeque};

use tokio::time::Instant;

/// The writes of one kind of record the search index has not taken in yet.
#[derive(Debug)]
pub struct Lagging<R> {
    /// Per record written within the lag: the version the index holds, and when the index takes
    /// in its latest write.
    stale: HashMap<String, (Option<R>, Instant)>,
    /// (due, id) of every write, in the order they were made.
    due: VecDeque<(Instant, String)>,
}

impl<R> Default for Lagging<R> {
    fn default() -> Self {
        Lagging {
            stale: HashMap::new(),
            due: VecDeque::new(),
        }
    }
}

impl<R: Clone> Lagging<R> {
    /// Notes a write of record `id` that the index takes in at `due`; `indexed` is the record as
    /// it stood before the write (read only when the index holds no older version).
    pub fn note(&mut self, id: &str, indexed: impl FnOnce() -> Option<R>, due: Instant) {
        self.stale
            .entry(id.to_owned())
            .and_modify(|e| e.1 = due)
            .or_insert_with(|| (indexed(), due));
        self.due.push_back((due, id.to_owned()));
    }

    /// The version the index holds of `id`: `None` when the index is up to date with it,
    /// `Some(None)` when the index does not hold it yet.
    pub fn indexed(&self, id: &str) -> Option<Option<&R>> {
        self.stale.get(id).map(|(r, _)| r.as_ref())
    }

    /// Takes out the records whose latest write is due by `now` (all of them with `None`), each
    /// with the version the index held until now.
    pub fn ripe(&mut self, now: Option<Instant>) -> Vec<(String, Option<R>)> {
        let mut out = Vec::new();
        while let Some((due, _)) = self.due.front() {
            if now.is_some_and(|now| *due > now) {
                break;
            }
            let Some((due, id)) = self.due.pop_front() else {
                break;
            };
            // An earlier write of a record written again waits for the latest one.
            if (now.is_none() || self.stale.get(&id).is_some_and(|e| e.1 == due))
                && let Some((old, _)) = self.stale.remove(&id)
            {
                out.push((id, old));
            }
        }
        out
    }

    /// Whether any write waits for the index.
    pub fn is_empty(&self) -> bool {
        self.due.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_write_is_indexed_after_its_lag_and_a_rewrite_waits_for_the_latest() {
        let mut lag = Lagging::<u32>::default();
        let t0 = Instant::now();
        lag.note("a", || Some(1), t0 + Duration::from_secs(2));
        lag.note("b", || None, t0 + Duration::from_secs(2));
        assert_eq!(lag.indexed("a"), Some(Some(&1)));
        assert_eq!(lag.indexed("b"), Some(None));
        assert_eq!(lag.indexed("c"), None);
        lag.note("a", || Some(2), t0 + Duration::from_secs(3));
        assert_eq!(
            lag.indexed("a"),
            Some(Some(&1)),
            "the oldest indexed version"
        );
        assert!(lag.ripe(Some(t0 + Duration::from_secs(1))).is_empty());
        let ripe = lag.ripe(Some(t0 + Duration::from_secs(2)));
        assert_eq!(ripe, [("b".to_owned(), None)]);
        assert_eq!(lag.indexed("a"), Some(Some(&1)));
        let ripe = lag.ripe(Some(t0 + Duration::from_secs(3)));
        assert_eq!(ripe, [("a".to_owned(), Some(1))]);
        assert!(lag.is_empty());
    }
}
