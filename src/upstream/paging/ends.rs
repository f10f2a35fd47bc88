//! A whole list of conversations, read from both ends at once.
//!
//! GHL pages conversations by `startAfterDate` alone, 100 at a time, each page after the one
//! before: at 10,000 contacts that is 77 dependent pages, the sync's longest chain by far
//! (FACTS.md §4, §11). The search also sorts oldest first (`sort=asc`, `startAfterDate` then
//! meaning strictly after it), so a second walk from the oldest end halves the chain without a
//! call more: the newest-first walk pages as [`Client::conversations_page`] does (one row of
//! overlap, a full page of one date swept by `dateAdded`), the oldest-first walk the same way
//! up, and the list is complete where they meet.
//!
//! Each walk's [`Edge`] says what it has delivered: the newest-first walk every row at or after
//! its `date` and the ids `seen` at `date - 1`; the oldest-first walk every row at or before its
//! `date` and the ids `seen` at `date + 1`. A row either edge covers is dropped, so no row is
//! delivered twice, even where the walks meet, and the stage's counts stay exact. The walks have
//! met when no date lies strictly between the edges, or once either walk reaches the far end (a
//! short page).
//!
//! The pages of both walks are taken in one place, in the order GHL answers them, and each
//! carries both edges as its cursor ([`Cursor::Ends`]), so the stage's checkpoint after any page
//! resumes both walks. A second request goes out only while GHL's `total` says the rows left need
//! more than the page in flight brings, so the two walks make the calls one would. Each walk is
//! its own chain for the rate limiter ([`crate::upstream::limiter`]), with half the pages left.
//!
//! Oldest first is documented (FACTS.md §4: `sort=asc|desc`) but no GHL client is known to page that way: an
//! oldest-first page that is not in ascending order after its cursor ends that walk (its page
//! unused), and the newest-first walk reads the rest alone.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures::stream::FuturesUnordered;
use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio_util::task::AbortOnDropHandle;

use super::{CONVERSATIONS_PAGE, Cursor, FetchedPage, conversation_date, conversation_records};
use crate::upstream::limiter::{ChainLeft, HALF_OF_LIST, UNKNOWN_LENGTH};
use crate::upstream::transport::in_chain;
use crate::upstream::{Client, Result, UpstreamError};

/// How far one walk has come: see the module's doc for what each walk's edge covers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Edge {
    /// The walk's next `startAfterDate`, epoch ms.
    pub date: i64,
    /// Ids of rows delivered on the date next to `date`, which the walk's next page returns again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub seen: Vec<String>,
}

/// Which end a walk starts from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Way {
    NewestFirst,
    OldestFirst,
}

impl Way {
    fn index(self) -> usize {
        self as usize
    }
}

/// One answered page of a walk.
struct Step {
    rows: Vec<Value>,
    total: Option<u64>,
    /// GHL returned a full page: the list may go on past it.
    full: bool,
    /// The page was all of one date, whose whole run `rows` now holds.
    run: Option<i64>,
    /// Runs GHL gives no way to read whole (see [`Client::conversation_run`]).
    unreachable: Vec<String>,
    /// An oldest-first page that was not in ascending order after its cursor.
    misordered: bool,
}

impl Client {
    /// The next page of the walk `way` from `after` (none: from its end), its run swept when the
    /// page is full and all of one date.
    async fn conversations_step(
        &self,
        location_id: &str,
        way: Way,
        after: Option<i64>,
    ) -> Result<Step> {
        let oldest_first = way == Way::OldestFirst;
        let (rows, total) = self
            .conversations_call(location_id, after, None, oldest_first)
            .await?;
        let mut step = Step {
            full: rows.len() >= CONVERSATIONS_PAGE,
            rows,
            total,
            run: None,
            unreachable: Vec::new(),
            misordered: false,
        };
        if oldest_first && !ascending(&step.rows, after) {
            step.misordered = true;
            return Ok(step);
        }
        let first = step.rows.first().and_then(conversation_date);
        let last = step.rows.last().and_then(conversation_date);
        if let (true, Some(date)) = (step.full, last.filter(|_| first == last)) {
            let rows = std::mem::take(&mut step.rows);
            (step.rows, step.unreachable) = self.conversation_run(location_id, date, rows).await?;
            step.run = Some(date);
        }
        Ok(step)
    }
}

/// Whether `rows` are in ascending order of `lastMessageDate`, every one after `after`.
fn ascending(rows: &[Value], after: Option<i64>) -> bool {
    let mut previous = after.map(|a| a + 1);
    rows.iter().all(|row| {
        let Some(date) = conversation_date(row) else {
            return false;
        };
        let ok = previous.is_none_or(|p| date >= p);
        previous = Some(date);
        ok
    })
}

fn row_id(row: &Value) -> Option<&str> {
    row.get("id").and_then(Value::as_str)
}

/// The ids among `rows` whose date is `date`.
fn ids_at(rows: &[Value], date: i64) -> Vec<String> {
    rows.iter()
        .filter(|r| conversation_date(r) == Some(date))
        .filter_map(|r| row_id(r).map(str::to_owned))
        .collect()
}

type InFlight = AbortOnDropHandle<(Way, Result<Step>)>;

/// Both walks: their edges, the pages in flight, and what the list's `total` says is left.
struct Walks {
    client: Client,
    location_id: String,
    edges: [Option<Edge>; 2],
    /// The oldest-first walk may go on (GHL answered it in order).
    oldest_first: bool,
    /// Rows delivered so far, earlier attempts included.
    delivered: u64,
    /// GHL's latest `total` of the list.
    total: Option<u64>,
    flying: [bool; 2],
    in_flight: FuturesUnordered<InFlight>,
    chains: [ChainLeft; 2],
    /// Pages taken by this stream.
    pages: u64,
    done: bool,
}

impl Walks {
    /// Whether a row is delivered already: at or beyond either walk's edge.
    fn covered(&self, row: &Value) -> bool {
        let Some(date) = conversation_date(row) else {
            return false;
        };
        let seen = |edge: &Edge| row_id(row).is_some_and(|id| edge.seen.iter().any(|s| s == id));
        let [newest, oldest] = &self.edges;
        newest
            .as_ref()
            .is_some_and(|e| date >= e.date || (date == e.date - 1 && seen(e)))
            || oldest
                .as_ref()
                .is_some_and(|e| date <= e.date || (date == e.date + 1 && seen(e)))
    }

    /// Whether `row`, on a page of `way`, lies where the other walk has read every row: past its
    /// edge's date, not on the date next to it.
    fn beyond(&self, way: Way, row: &Value) -> bool {
        let Some(date) = conversation_date(row) else {
            return false;
        };
        match (way, &self.edges) {
            (Way::NewestFirst, [_, Some(oldest)]) => date <= oldest.date,
            (Way::OldestFirst, [Some(newest), _]) => date >= newest.date,
            _ => false,
        }
    }

    /// Whether the walks have met: no date lies strictly between their edges.
    fn met(&self) -> bool {
        match &self.edges {
            [Some(newest), Some(oldest)] => oldest.date >= newest.date - 1,
            _ => false,
        }
    }

    /// New rows a page of `way` brings at most: its first page 100, later ones 99 (one overlaps).
    fn brings(&self, way: Way) -> u64 {
        let page = CONVERSATIONS_PAGE as u64;
        if self.edges[way.index()].is_some() {
            page - 1
        } else {
            page
        }
    }

    /// Sends the next page of each walk that is due: the newest-first one whenever nothing is in
    /// flight, and a second only when GHL's `total` leaves more rows than the one in flight brings.
    fn launch(&mut self) {
        for way in [Way::NewestFirst, Way::OldestFirst] {
            if self.done
                || self.flying[way.index()]
                || (way == Way::OldestFirst && !self.oldest_first)
            {
                continue;
            }
            let coming: u64 = [Way::NewestFirst, Way::OldestFirst]
                .into_iter()
                .filter(|w| self.flying[w.index()])
                .map(|w| self.brings(w))
                .sum();
            let due = self.in_flight.is_empty()
                || self
                    .total
                    .is_some_and(|total| total.saturating_sub(self.delivered) > coming);
            if !due {
                continue;
            }
            let after = self.edges[way.index()].as_ref().map(|e| e.date);
            let (client, location_id) = (self.client.clone(), self.location_id.clone());
            let chain = self.chains[way.index()].clone();
            let step = in_chain(chain, async move {
                (
                    way,
                    client.conversations_step(&location_id, way, after).await,
                )
            });
            self.in_flight
                .push(AbortOnDropHandle::new(tokio::spawn(step)));
            self.flying[way.index()] = true;
        }
        self.tell_chains();
    }

    /// Tells the rate limiter each walk's pages left: half the list's rest each (all of it to the
    /// newest-first walk once it reads alone), or, before GHL's `total`, the pages read so far.
    fn tell_chains(&self) {
        let left = match self.total {
            _ if self.done => 0,
            Some(total) => total
                .saturating_sub(self.delivered)
                .div_ceil(CONVERSATIONS_PAGE as u64 - 1),
            None => UNKNOWN_LENGTH | self.pages,
        };
        // Each walk half of the list (`HALF_OF_LIST`), so that the limiter still estimates a
        // list of unknown length (tasks) by this list's length, not by a walk's.
        let (newest, oldest) = match (left & UNKNOWN_LENGTH != 0, self.oldest_first) {
            (false, true) if left > 0 => {
                (left.div_ceil(2) | HALF_OF_LIST, (left / 2) | HALF_OF_LIST)
            }
            _ => (left, 0),
        };
        self.chains[0].store(newest, Ordering::Relaxed);
        self.chains[1].store(oldest, Ordering::Relaxed);
    }

    /// Takes a page of `way`: drops the rows either walk delivered, moves the walk's edge, and
    /// says where both walks stand. `None` when the page is not used (an oldest-first page out of
    /// order, which ends that walk).
    fn take(&mut self, way: Way, step: Step) -> Result<Option<FetchedPage>> {
        if step.misordered {
            tracing::warn!(
                location_id = self.location_id,
                "GHL answered conversations oldest first out of order; reading newest first alone"
            );
            self.oldest_first = false;
            return Ok(None);
        }
        self.total = step.total.or(self.total);
        let edge = if !step.full {
            // This walk reached the far end: every row is delivered once this page is.
            self.done = true;
            None
        } else if let Some(date) = step.run {
            // The whole run of `date` is in the page.
            Some(Edge {
                date,
                seen: Vec::new(),
            })
        } else {
            let last = step
                .rows
                .last()
                .and_then(conversation_date)
                .ok_or_else(|| {
                    UpstreamError::Decode("the last conversation has no lastMessageDate".into())
                })?;
            let date = match way {
                Way::NewestFirst => last + 1,
                Way::OldestFirst => last - 1,
            };
            Some(Edge {
                date,
                seen: ids_at(&step.rows, last),
            })
        };
        // A row the other walk's edge covers whole means this page read every row between the
        // two edges (it holds the rows in order up to that one): the walks have met.
        let crossed = step.rows.iter().any(|r| self.beyond(way, r));
        let rows: Vec<Value> = step.rows.into_iter().filter(|r| !self.covered(r)).collect();
        if let Some(edge) = edge {
            let advanced = match (&self.edges[way.index()], way) {
                (None, _) => true,
                (Some(old), Way::NewestFirst) => edge.date < old.date,
                (Some(old), Way::OldestFirst) => edge.date > old.date,
            };
            if !advanced {
                return Err(UpstreamError::Stuck(format!(
                    "conversations {way:?}: the cursor did not advance"
                )));
            }
            self.edges[way.index()] = Some(edge);
        }
        self.pages += 1;
        self.delivered += rows.len() as u64;
        // Or GHL's `total` is delivered, as a list read one way ends (the last rows of a run may
        // otherwise need a page more to tell).
        self.done = self.done
            || crossed
            || self.met()
            || self.total.is_some_and(|total| self.delivered >= total);
        let count = rows.len();
        let (records, mut skipped) = conversation_records(&self.location_id, rows);
        skipped.extend(step.unreachable);
        let next = (!self.done).then(|| {
            let [newer, older] = self.edges.clone();
            Cursor::Ends { newer, older }
        });
        self.tell_chains();
        Ok(Some(FetchedPage {
            records,
            skipped,
            rows: count,
            next,
            total: self.total,
        }))
    }
}

/// The pages of a location's whole list of conversations from both ends, resuming at the edges
/// `newer` and `older` (none: from that end). `fetched` is how many rows earlier attempts
/// delivered, so that GHL's `total` says how many are left.
pub(super) fn pages(
    client: Client,
    location_id: &str,
    newer: Option<Edge>,
    older: Option<Edge>,
    fetched: u64,
) -> impl Stream<Item = Result<FetchedPage>> + Send + 'static {
    let walks = Walks {
        client,
        location_id: location_id.to_owned(),
        edges: [newer, older],
        oldest_first: true,
        delivered: fetched,
        total: None,
        flying: [false; 2],
        in_flight: FuturesUnordered::new(),
        chains: [Arc::default(), Arc::default()],
        pages: 0,
        done: false,
    };
    futures::stream::try_unfold(walks, |mut walks| async move {
        loop {
            // (`met`: resumed where the walks had met, before the page that said so was taken.)
            if walks.done || walks.met() {
                return Ok(None);
            }
            walks.launch();
            let (way, step) = match walks.in_flight.next().await {
                Some(Ok(answered)) => answered,
                Some(Err(join)) => {
                    return Err(UpstreamError::Stuck(format!(
                        "a conversations page reader stopped: {join}"
                    )));
                }
                None => {
                    return Err(UpstreamError::Stuck(
                        "no conversations page in flight".into(),
                    ));
                }
            };
            walks.flying[way.index()] = false;
            if let Some(page) = walks.take(way, step?)? {
                return Ok(Some((page, walks)));
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row(id: &str, date: i64) -> Value {
        json!({ "id": id, "lastMessageDate": date })
    }

    /// Both walks before their first page, over a client that is never called.
    fn walks() -> Walks {
        let client = Client::new(
            crate::upstream::UpstreamConfig::new("http://127.0.0.1:9"),
            Arc::new(crate::upstream::MemoryCredentials::new()),
        )
        .unwrap();
        Walks {
            client,
            location_id: "loc".into(),
            edges: [None, None],
            oldest_first: true,
            delivered: 0,
            total: None,
            flying: [false; 2],
            in_flight: FuturesUnordered::new(),
            chains: [Arc::default(), Arc::default()],
            pages: 0,
            done: false,
        }
    }

    /// GHL's answer of `dates` (one row each, id `c{date}`), with the list's `total`.
    fn step(dates: impl Iterator<Item = i64>, total: u64) -> Step {
        answer(dates.map(|d| row(&format!("c{d}"), d)).collect(), total)
    }

    /// GHL's answer of `rows`, with the list's `total`.
    fn answer(rows: Vec<Value>, total: u64) -> Step {
        Step {
            full: rows.len() >= CONVERSATIONS_PAGE,
            rows,
            total: Some(total),
            run: None,
            unreachable: Vec::new(),
            misordered: false,
        }
    }

    fn ids(page: &FetchedPage) -> Vec<String> {
        page.records.ids().into_iter().map(str::to_owned).collect()
    }

    #[test]
    fn the_walks_meet_in_the_middle_and_deliver_every_row_once() {
        // 250 conversations dated 1..=250: newest first 250..=151, oldest first 1..=100, then
        // the newest-first walk's second page (151..=52, its first row seen already) brings only
        // 150..=101 and ends the list.
        let mut walks = walks();
        let newest = walks
            .take(Way::NewestFirst, step((151..=250).rev(), 250))
            .unwrap()
            .unwrap();
        assert_eq!(newest.records.len(), 100);
        assert_eq!(
            walks.edges[0],
            Some(Edge {
                date: 152,
                seen: vec!["c151".into()]
            })
        );
        assert!(!walks.done);
        let oldest = walks
            .take(Way::OldestFirst, step(1..=100, 250))
            .unwrap()
            .unwrap();
        assert_eq!(oldest.records.len(), 100);
        assert_eq!(walks.edges[1].as_ref().map(|e| e.date), Some(99));
        assert!(matches!(
            &oldest.next,
            Some(Cursor::Ends {
                newer: Some(_),
                older: Some(_)
            })
        ));
        let last = walks
            .take(Way::NewestFirst, step((52..=151).rev(), 250))
            .unwrap()
            .unwrap();
        let want: Vec<String> = (101..=150).rev().map(|d| format!("c{d}")).collect();
        assert_eq!(ids(&last), want, "only the rows between the edges");
        assert!(walks.done && last.next.is_none());
        assert_eq!(walks.delivered, 250);
    }

    #[test]
    fn a_run_where_the_walks_meet_is_delivered_once() {
        // Dates 1..=100 and 201..=300, and 50 rows all dated 150 between them.
        let mut walks = walks();
        walks
            .take(Way::NewestFirst, step((201..=300).rev(), 250))
            .unwrap();
        walks.take(Way::OldestFirst, step(1..=100, 250)).unwrap();
        // Both walks' next pages hold the run (each ends on the far side of the other's edge).
        let run = |from: i64, to: i64| -> Vec<Value> {
            (0..50)
                .map(|i| row(&format!("r{i}"), 150))
                .chain((from..=to).map(|d| row(&format!("c{d}"), d)))
                .collect()
        };
        let mut newer = run(51, 100);
        newer.sort_by_key(|r| std::cmp::Reverse(conversation_date(r)));
        let mut older = run(201, 250);
        older.sort_by_key(conversation_date);
        let (newer, older) = (answer(newer, 250), answer(older, 250));
        let first = walks.take(Way::NewestFirst, newer).unwrap().unwrap();
        assert_eq!(
            first.records.len(),
            50,
            "the run, not the oldest walk's rows"
        );
        assert!(walks.done, "the page reached past the oldest walk's edge");
        // The oldest-first page in flight meanwhile brings nothing new.
        let second = walks.take(Way::OldestFirst, older).unwrap().unwrap();
        assert_eq!(second.records.len(), 0);
    }

    #[test]
    fn an_oldest_first_page_out_of_order_ends_that_walk_only() {
        let mut walks = walks();
        walks
            .take(Way::NewestFirst, step((151..=250).rev(), 250))
            .unwrap();
        let mut bad = step((1..=100).rev(), 250);
        bad.misordered = !ascending(&bad.rows, None);
        assert!(bad.misordered);
        assert!(walks.take(Way::OldestFirst, bad).unwrap().is_none());
        assert!(!walks.oldest_first && !walks.done);
        walks.tell_chains();
        assert_eq!(
            walks.chains[1].load(Ordering::Relaxed),
            0,
            "the newest-first walk has every page left"
        );
        assert_eq!(walks.chains[0].load(Ordering::Relaxed), 2);
    }

    #[test]
    fn oldest_first_pages_must_ascend_after_their_cursor() {
        let rows = [row("a", 5), row("b", 5), row("c", 9)];
        assert!(ascending(&rows, None));
        assert!(ascending(&rows, Some(4)));
        assert!(!ascending(&rows, Some(5)), "strictly after the cursor");
        assert!(!ascending(&[row("a", 9), row("b", 5)], None));
        assert!(!ascending(&[json!({ "id": "x" })], None));
        assert!(ascending(&[], Some(7)));
    }

    #[test]
    fn an_ends_cursor_round_trips_and_omits_a_walk_not_started() {
        let cursor = Cursor::Ends {
            newer: Some(Edge {
                date: 10,
                seen: vec!["a".into()],
            }),
            older: None,
        };
        let text = serde_json::to_string(&cursor).unwrap();
        assert_eq!(text, r#"{"style":"ends","newer":{"date":10,"seen":["a"]}}"#);
        assert_eq!(serde_json::from_str::<Cursor>(&text).unwrap(), cursor);
    }
}
