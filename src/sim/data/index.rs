//! The sorted indexes of records and the walk that serves a page out of one: keys `(ms, id)`, a
//! range of milliseconds, a cursor to start strictly after, a direction, a skip and a limit. Every
//! sort the API offers is backed by a `BTreeSet<(ms, id)>`, so a page costs O(log N + page),
//! whatever the location's size.

use std::collections::BTreeSet;
use std::ops::Bound;

/// Sort key of an index entry: (milliseconds since the epoch, record id).
pub type Key = (i64, String);
/// A sorted index of one collection by one time field.
pub type Index = BTreeSet<Key>;

/// A string larger than every id (ids are ASCII alphanumerics), for exclusive index bounds.
pub const ID_MAX: &str = "~";

/// Bounds on the time part of a key, from `range` filters.
#[derive(Debug, Clone)]
pub struct MsRange {
    pub lo: Bound<i64>,
    pub hi: Bound<i64>,
}

impl Default for MsRange {
    fn default() -> Self {
        MsRange {
            lo: Bound::Unbounded,
            hi: Bound::Unbounded,
        }
    }
}

impl MsRange {
    /// Whether `ms` is within the bounds.
    pub fn contains(&self, ms: i64) -> bool {
        (match self.lo {
            Bound::Included(l) => ms >= l,
            Bound::Excluded(l) => ms > l,
            Bound::Unbounded => true,
        }) && (match self.hi {
            Bound::Included(h) => ms <= h,
            Bound::Excluded(h) => ms < h,
            Bound::Unbounded => true,
        })
    }

    /// Narrows with another bound pair (intersection).
    pub fn narrow(&mut self, other: &MsRange) {
        self.lo = match (self.lo, other.lo) {
            (Bound::Unbounded, b) | (b, Bound::Unbounded) => b,
            (a, b) => {
                let (av, bv) = (bound_val(a), bound_val(b));
                if av > bv || (av == bv && matches!(a, Bound::Excluded(_))) {
                    a
                } else {
                    b
                }
            }
        };
        self.hi = match (self.hi, other.hi) {
            (Bound::Unbounded, b) | (b, Bound::Unbounded) => b,
            (a, b) => {
                let (av, bv) = (bound_val(a), bound_val(b));
                if av < bv || (av == bv && matches!(a, Bound::Excluded(_))) {
                    a
                } else {
                    b
                }
            }
        };
    }

    fn key_bounds(&self) -> (Bound<Key>, Bound<Key>) {
        let lo = match self.lo {
            Bound::Included(l) => Bound::Included((l, String::new())),
            Bound::Excluded(l) => Bound::Excluded((l, ID_MAX.to_string())),
            Bound::Unbounded => Bound::Unbounded,
        };
        let hi = match self.hi {
            Bound::Included(h) => Bound::Included((h, ID_MAX.to_string())),
            Bound::Excluded(h) => Bound::Excluded((h, String::new())),
            Bound::Unbounded => Bound::Unbounded,
        };
        (lo, hi)
    }
}

fn bound_val(b: Bound<i64>) -> i64 {
    match b {
        Bound::Included(v) | Bound::Excluded(v) => v,
        Bound::Unbounded => 0,
    }
}

/// One page out of an index: which keys, and (when asked) how many keys match overall.
pub struct Page<'a> {
    pub keys: Vec<&'a Key>,
    pub total: usize,
    pub more: bool,
}

/// Walks `index` in key order (or reverse), strictly after `after`, within `range`, keeping keys
/// whose record passes `pred`; skips `skip` of them and returns up to `limit`. The walk starts at
/// the cursor, so a page costs O(skip + limit) when `pred` is selective-free.
// The parameters are the independent knobs of one walk; a struct would only rename them.
#[allow(clippy::too_many_arguments)]
pub fn page<'a>(
    index: &'a Index,
    range: &MsRange,
    after: Option<&Key>,
    desc: bool,
    skip: usize,
    limit: usize,
    count_total: bool,
    pred: &dyn Fn(&str) -> bool,
) -> Page<'a> {
    let (mut lo, mut hi) = range.key_bounds();
    if let Some(c) = after {
        if desc {
            let tighter = match &hi {
                Bound::Unbounded => true,
                Bound::Included(h) => c <= h,
                Bound::Excluded(h) => c < h,
            };
            if tighter {
                hi = Bound::Excluded(c.clone());
            }
        } else {
            let tighter = match &lo {
                Bound::Unbounded => true,
                Bound::Included(l) => c >= l,
                Bound::Excluded(l) => c > l,
            };
            if tighter {
                lo = Bound::Excluded(c.clone());
            }
        }
    }
    let valid = match (&lo, &hi) {
        (Bound::Included(a) | Bound::Excluded(a), Bound::Included(b) | Bound::Excluded(b)) => {
            a < b
                || (a == b && matches!(lo, Bound::Included(_)) && matches!(hi, Bound::Included(_)))
        }
        _ => true,
    };
    let mut keys = Vec::new();
    let mut more = false;
    if valid {
        let it: Box<dyn Iterator<Item = &Key>> = if desc {
            Box::new(index.range((lo, hi)).rev())
        } else {
            Box::new(index.range((lo, hi)))
        };
        let mut it = it.filter(|k| pred(&k.1)).skip(skip);
        keys.extend(it.by_ref().take(limit));
        more = it.next().is_some();
    }
    let total = if count_total {
        let (lo, hi) = range.key_bounds();
        index.range((lo, hi)).filter(|k| pred(&k.1)).count()
    } else {
        0
    };
    Page { keys, total, more }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_walks_after_cursor_in_both_directions() {
        let mut idx = Index::new();
        for i in 0..10 {
            idx.insert((i / 2, format!("id{i}")));
        }
        let all = |_: &str| true;
        let p = page(&idx, &MsRange::default(), None, false, 0, 3, true, &all);
        assert_eq!(p.keys.len(), 3);
        assert_eq!(p.total, 10);
        assert!(p.more);
        let after = p.keys[2].clone();
        let p2 = page(
            &idx,
            &MsRange::default(),
            Some(&after),
            false,
            0,
            100,
            false,
            &all,
        );
        assert_eq!(p2.keys.len(), 7);
        let p3 = page(
            &idx,
            &MsRange::default(),
            Some(&after),
            true,
            0,
            100,
            false,
            &all,
        );
        assert_eq!(p3.keys.len(), 2);
        let range = MsRange {
            lo: Bound::Excluded(2),
            hi: Bound::Unbounded,
        };
        let p4 = page(&idx, &range, None, false, 0, 100, true, &all);
        assert_eq!(p4.total, 4);
    }
}
