//! Paging through GHL's lists, each in its own cursor style, at the largest page each allows:
//! contacts by `searchAfter` (500), tasks by `searchAfter` or `skip` (500), conversations by
//! `startAfterDate` (100), opportunities by `searchAfter` or `page` (500).
//!
//! A page says where the next one starts ([`Cursor`], serializable: the sync stores it as the
//! stage's checkpoint). A list ends on a short page or once `total` records are fetched; a cursor
//! that does not advance, or a page that repeats the previous one, ends it with an error.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use futures::Stream;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

mod ends;

use super::dto::{self, decode_rows};
use super::{CONVERSATIONS_VERSION, Call, Client, Result, UpstreamError, get, post, rows};
use crate::domain;

const CONTACTS_PAGE: usize = 500;
const TASKS_PAGE: usize = 500;
const CONVERSATIONS_PAGE: usize = 100;
const OPPORTUNITIES_PAGE: usize = 500;

/// Where the next page of a list starts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "style", rename_all = "camelCase")]
pub enum Cursor {
    /// The `searchAfter` of the previous page's last row (contacts, tasks, opportunities).
    SearchAfter { after: Vec<Value> },
    /// Rows to skip (task search without `searchAfter`).
    Skip { skip: u64 },
    /// `startAfterDate`, epoch ms (conversations, newest first), and the ids of rows already
    /// delivered that the page will return again (the cursor overlaps a run of equal dates).
    StartAfterDate {
        date: i64,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        seen: Vec<String>,
    },
    /// A 1-based page number (opportunity search without `searchAfter`).
    Page { page: u64 },
    /// Conversations read from both ends at once (a whole list, [`ends`]): how far the
    /// newest-first walk and the oldest-first walk have come, each `None` before its first page.
    Ends {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        newer: Option<ends::Edge>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        older: Option<ends::Edge>,
    },
}

/// A paged list of a location. With a time, only what changed after it (an incremental
/// sync): contacts through GHL's `dateUpdated` range filter, oldest change first; tasks,
/// conversations and opportunities newest change first, stopping at the first page that reaches
/// back to the time. Tasks are sorted with `sortKey`/`sortDirection` and opportunities by
/// `date_updated`, keys GHL's community uses but its spec does not document: when GHL refuses
/// them (4xx), the caller falls back to the full list.
#[derive(Clone, Debug, PartialEq)]
pub enum Listing {
    Contacts(Option<DateTime<Utc>>),
    Tasks(Option<DateTime<Utc>>),
    Conversations(Option<DateTime<Utc>>),
    Opportunities(Option<DateTime<Utc>>),
}

impl Listing {
    /// The same listing without its time: everything.
    pub fn full(&self) -> Listing {
        match self {
            Listing::Contacts(_) => Listing::Contacts(None),
            Listing::Tasks(_) => Listing::Tasks(None),
            Listing::Conversations(_) => Listing::Conversations(None),
            Listing::Opportunities(_) => Listing::Opportunities(None),
        }
    }

    /// Rows per page GHL gives this list.
    fn page_size(&self) -> usize {
        match self {
            Listing::Contacts(_) => CONTACTS_PAGE,
            Listing::Tasks(_) => TASKS_PAGE,
            Listing::Conversations(_) => CONVERSATIONS_PAGE,
            Listing::Opportunities(_) => OPPORTUNITIES_PAGE,
        }
    }

    pub fn is_incremental(&self) -> bool {
        match self {
            Listing::Contacts(t)
            | Listing::Tasks(t)
            | Listing::Conversations(t)
            | Listing::Opportunities(t) => t.is_some(),
        }
    }
}

/// Whether a newest-first page reached back to `since`: its last row's `field` is not after it.
fn reached(rows: &[Value], field: &str, since: Option<DateTime<Utc>>) -> bool {
    let Some(since) = since else { return false };
    rows.last()
        .and_then(|r| r.get(field))
        .and_then(dto::parse_time)
        .is_some_and(|t| t <= since)
}

/// The latest `dateAdded` a window of conversations reaches (ms): the end of year 9999.
const ADDED_MAX: i64 = 253_402_300_799_999;

/// A conversation row's `lastMessageDate` (ms).
fn conversation_date(row: &Value) -> Option<i64> {
    row.get("lastMessageDate")
        .and_then(dto::parse_time)
        .map(|t| t.timestamp_millis())
}

/// Splits the `dateAdded` window `from..=to`, which came back full with rows `added` (ms), into
/// smaller windows that together cover it; `None` when it cannot be split (one millisecond, or
/// rows without a `dateAdded`).
fn split_window(from: i64, to: i64, added: &mut Vec<i64>) -> Option<Vec<(i64, i64)>> {
    // Only what lies inside the window can split it into smaller ones.
    added.retain(|a| (from..=to).contains(a));
    added.sort_unstable();
    let (&low, &high) = (added.first()?, added.last()?);
    if low < high {
        // The median, but below the highest, so both halves are smaller than the window.
        let mut middle = added[(added.len() - 1) / 2];
        if middle == high {
            middle = *added.iter().rev().find(|&&a| a < high)?;
        }
        return Some(vec![(from, middle), (middle + 1, to)]);
    }
    if from == to {
        return None;
    }
    // Every row came from one millisecond: that one alone, and what lies either side of it.
    let mut parts = vec![(low, low)];
    if from < low {
        parts.push((from, low - 1));
    }
    if low < to {
        parts.push((low + 1, to));
    }
    Some(parts)
}

/// The conversations of `rows` that GHL has not deleted, and the ids of rows that did not parse.
fn conversation_records(location_id: &str, rows: Vec<Value>) -> (Records, Vec<String>) {
    let (records, skipped) = decode_rows::<dto::ConversationDto>(rows);
    let records = records
        .into_iter()
        .filter(|c| !c.deleted)
        .map(|c| c.into_domain(location_id))
        .collect();
    (Records::Conversations(records), skipped)
}

/// The records of one page.
#[derive(Clone, Debug, PartialEq)]
pub enum Records {
    Contacts(Vec<domain::Contact>),
    Tasks(Vec<domain::Task>),
    Conversations(Vec<domain::Conversation>),
    Opportunities(Vec<domain::Opportunity>),
}

impl Records {
    pub fn len(&self) -> usize {
        match self {
            Records::Contacts(r) => r.len(),
            Records::Tasks(r) => r.len(),
            Records::Conversations(r) => r.len(),
            Records::Opportunities(r) => r.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn ids(&self) -> Vec<&str> {
        match self {
            Records::Contacts(r) => r.iter().map(|x| x.id.as_str()).collect(),
            Records::Tasks(r) => r.iter().map(|x| x.id.as_str()).collect(),
            Records::Conversations(r) => r.iter().map(|x| x.id.as_str()).collect(),
            Records::Opportunities(r) => r.iter().map(|x| x.id.as_str()).collect(),
        }
    }

    /// Drops the records whose id is in `ids`.
    fn retain_not_in(&mut self, ids: &HashSet<String>) {
        match self {
            Records::Contacts(r) => r.retain(|x| !ids.contains(&x.id)),
            Records::Tasks(r) => r.retain(|x| !ids.contains(&x.id)),
            Records::Conversations(r) => r.retain(|x| !ids.contains(&x.id)),
            Records::Opportunities(r) => r.retain(|x| !ids.contains(&x.id)),
        }
    }
}

/// One fetched page.
#[derive(Clone, Debug, PartialEq)]
pub struct FetchedPage {
    pub records: Records,
    /// Ids of rows that did not parse (logged and skipped).
    pub skipped: Vec<String>,
    /// Rows GHL returned, parsed or not.
    pub rows: usize,
    /// Where the next page starts; `None` when this page was the last.
    pub next: Option<Cursor>,
    /// How many records GHL says the list holds, when it says.
    pub total: Option<u64>,
}

fn search_after(row: Option<&Value>) -> Option<Vec<Value>> {
    row?.get("searchAfter")?
        .as_array()
        .filter(|a| !a.is_empty())
        .cloned()
}

/// Puts a `searchAfter` or `page` cursor into the body of a POST search.
fn search_cursor(body: &mut Value, cursor: Option<&Cursor>, what: &str) -> Result<()> {
    match cursor {
        None => {}
        Some(Cursor::SearchAfter { after }) => body["searchAfter"] = json!(after),
        Some(Cursor::Page { page }) => body["page"] = json!(page),
        Some(other) => {
            return Err(UpstreamError::Stuck(format!(
                "{what} cannot resume from {other:?}"
            )));
        }
    }
    Ok(())
}

/// Where a POST search continues after a full page: its last row's `searchAfter`, or the next
/// page number when the rows carry none.
fn next_search_cursor(rows: &[Value], cursor: Option<&Cursor>) -> Cursor {
    match (search_after(rows.last()), cursor) {
        (Some(after), _) => Cursor::SearchAfter { after },
        (None, Some(Cursor::Page { page })) => Cursor::Page { page: page + 1 },
        (None, _) => Cursor::Page { page: 2 },
    }
}

impl Client {
    /// Fetches one page of `listing`, starting at `cursor` (the first page when `None`).
    pub async fn page(
        &self,
        location_id: &str,
        listing: &Listing,
        cursor: Option<&Cursor>,
    ) -> Result<FetchedPage> {
        match listing {
            Listing::Contacts(since) => self.contacts_page(location_id, *since, cursor).await,
            Listing::Tasks(since) => self.tasks_page(location_id, *since, cursor).await,
            Listing::Conversations(since) => {
                self.conversations_page(location_id, *since, cursor).await
            }
            Listing::Opportunities(since) => {
                self.opportunities_page(location_id, *since, cursor).await
            }
        }
    }

    async fn contacts_page(
        &self,
        location_id: &str,
        since: Option<DateTime<Utc>>,
        cursor: Option<&Cursor>,
    ) -> Result<FetchedPage> {
        let mut body = json!({ "locationId": location_id, "pageLimit": CONTACTS_PAGE });
        match &since {
            // Changed contacts, oldest change first, so the watermark only moves forward.
            Some(after) => {
                body["filters"] = json!([{
                    "field": "dateUpdated",
                    "operator": "range",
                    "value": { "gt": after.to_rfc3339_opts(chrono::SecondsFormat::Millis, true) }
                }]);
                body["sort"] = json!([{ "field": "dateUpdated", "direction": "asc" }]);
            }
            // Everything, oldest first: contacts created during the scan land after the cursor.
            None => body["sort"] = json!([{ "field": "dateAdded", "direction": "asc" }]),
        }
        search_cursor(&mut body, cursor, "contacts")?;
        let answer = self
            .call(
                location_id,
                post("contacts.search", "/contacts/search".into(), body),
            )
            .await?;
        let rows = rows(&answer, "contacts")?;
        let total = answer.get("total").and_then(Value::as_u64);
        let next = if rows.len() < CONTACTS_PAGE {
            None
        } else {
            Some(next_search_cursor(&rows, cursor))
        };
        let count = rows.len();
        let (records, skipped) = decode_rows::<dto::ContactDto>(rows);
        Ok(FetchedPage {
            records: Records::Contacts(
                records
                    .into_iter()
                    .map(|c| c.into_domain(location_id))
                    .collect(),
            ),
            skipped,
            rows: count,
            next,
            total,
        })
    }

    async fn tasks_page(
        &self,
        location_id: &str,
        since: Option<DateTime<Utc>>,
        cursor: Option<&Cursor>,
    ) -> Result<FetchedPage> {
        let mut body = json!({ "limit": TASKS_PAGE });
        if since.is_some() {
            body["sortKey"] = json!("dateUpdated");
            body["sortDirection"] = json!("desc");
        }
        match cursor {
            None => {}
            Some(Cursor::SearchAfter { after }) => body["searchAfter"] = json!(after),
            Some(Cursor::Skip { skip }) => body["skip"] = json!(skip),
            Some(other) => {
                return Err(UpstreamError::Stuck(format!(
                    "tasks cannot resume from {other:?}"
                )));
            }
        }
        let answer = self
            .call(
                location_id,
                post(
                    "tasks.search",
                    format!("/locations/{location_id}/tasks/search"),
                    body,
                ),
            )
            .await?;
        let rows = rows(&answer, "tasks")?;
        // No `total` here: only a short page ends the list.
        let next = if rows.len() < TASKS_PAGE || reached(&rows, "dateUpdated", since) {
            None
        } else {
            match (search_after(rows.last()), cursor) {
                (Some(after), _) => Some(Cursor::SearchAfter { after }),
                (None, Some(Cursor::Skip { skip })) => Some(Cursor::Skip {
                    skip: skip + rows.len() as u64,
                }),
                (None, _) => Some(Cursor::Skip {
                    skip: rows.len() as u64,
                }),
            }
        };
        let count = rows.len();
        let (records, skipped) = decode_rows::<dto::TaskDto>(rows);
        Ok(FetchedPage {
            records: Records::Tasks(
                records
                    .into_iter()
                    .filter(|t| !t.deleted)
                    .map(|t| t.into_domain(location_id))
                    .collect(),
            ),
            skipped,
            rows: count,
            next,
            total: None,
        })
    }

    /// One page of conversations, newest message first. GHL pages them by `startAfterDate`
    /// alone, strictly after it, and `lastMessageDate` is not unique: a run of equal dates cut
    /// at a page boundary would lose its rest. So after a full page the cursor stays one
    /// millisecond after the page's last date (the next page repeats the run's rows, which are
    /// dropped by id), and a page that is all one date is swept whole ([`Self::conversation_run`]).
    async fn conversations_page(
        &self,
        location_id: &str,
        since: Option<DateTime<Utc>>,
        cursor: Option<&Cursor>,
    ) -> Result<FetchedPage> {
        let (after, seen) = match cursor {
            None => (None, &[][..]),
            Some(Cursor::StartAfterDate { date, seen }) => (Some(*date), &seen[..]),
            Some(other) => {
                return Err(UpstreamError::Stuck(format!(
                    "conversations cannot resume from {other:?}"
                )));
            }
        };
        let (rows, total) = self
            .conversations_call(location_id, after, None, false)
            .await?;
        let first = rows.first().and_then(conversation_date);
        let last = rows.last().and_then(conversation_date);
        let mut unreachable = Vec::new();
        let (rows, next) =
            if rows.len() < CONVERSATIONS_PAGE || reached(&rows, "lastMessageDate", since) {
                (rows, None)
            } else {
                let last = last.ok_or_else(|| {
                    UpstreamError::Decode("the last conversation has no lastMessageDate".into())
                })?;
                if first == Some(last) {
                    // A whole page of one date: the run may go on past it.
                    let (run, left) = self.conversation_run(location_id, last, rows).await?;
                    unreachable = left;
                    let next = Cursor::StartAfterDate {
                        date: last,
                        seen: Vec::new(),
                    };
                    (run, Some(next))
                } else {
                    let seen = rows
                        .iter()
                        .filter(|r| conversation_date(r) == Some(last))
                        .filter_map(|r| r.get("id").and_then(Value::as_str).map(str::to_owned))
                        .collect();
                    let next = Cursor::StartAfterDate {
                        date: last + 1,
                        seen,
                    };
                    (rows, Some(next))
                }
            };
        let rows: Vec<Value> = rows
            .into_iter()
            .filter(|r| {
                r.get("id")
                    .and_then(Value::as_str)
                    .is_none_or(|id| !seen.iter().any(|s| s == id))
            })
            .collect();
        let count = rows.len();
        let (records, mut skipped) = conversation_records(location_id, rows);
        skipped.extend(unreachable);
        Ok(FetchedPage {
            records,
            skipped,
            rows: count,
            next,
            total,
        })
    }

    /// One `GET /conversations/search` by last message date, newest first and strictly before
    /// `after` (ms), or with `oldest_first` oldest first and strictly after it, within a window of
    /// `dateAdded` (ms, both ends included) when given.
    async fn conversations_call(
        &self,
        location_id: &str,
        after: Option<i64>,
        added: Option<(i64, i64)>,
        oldest_first: bool,
    ) -> Result<(Vec<Value>, Option<u64>)> {
        let sort = if oldest_first { "asc" } else { "desc" };
        let mut query = vec![
            ("locationId", location_id.to_owned()),
            ("limit", CONVERSATIONS_PAGE.to_string()),
            ("sortBy", "last_message_date".to_owned()),
            ("sort", sort.to_owned()),
        ];
        if let Some(after) = after {
            query.push(("startAfterDate", after.to_string()));
        }
        if let Some((from, to)) = added {
            query.push(("startDate", from.to_string()));
            query.push(("endDate", to.to_string()));
        }
        let call = Call {
            version: CONVERSATIONS_VERSION,
            ..get(
                "conversations.search",
                "/conversations/search".into(),
                query,
            )
        };
        let answer = self.call(location_id, call).await?;
        let total = answer.get("total").and_then(Value::as_u64);
        Ok((rows(&answer, "conversations")?, total))
    }

    /// Every conversation whose `lastMessageDate` is `date`, given `page`: a full page of them.
    /// GHL offers no tie-breaker after `startAfterDate`, but it filters on `dateAdded`
    /// (`startDate`/`endDate`): the run is read window by window of `dateAdded`, a window that
    /// comes back full of the run being split in two at the median `dateAdded` it returned, until
    /// every window comes back with room to spare. Returns the run's rows and, when more than a
    /// page of them share one `dateAdded` millisecond too (GHL gives no way to them), a note of
    /// each such window, so that the list counts as incomplete.
    async fn conversation_run(
        &self,
        location_id: &str,
        date: i64,
        page: Vec<Value>,
    ) -> Result<(Vec<Value>, Vec<String>)> {
        let mut run = Vec::new();
        let mut ids = HashSet::new();
        let mut unreachable = Vec::new();
        let mut windows = vec![(0, ADDED_MAX, Some(page))];
        while let Some((from, to, rows)) = windows.pop() {
            let rows = match rows {
                Some(rows) => rows,
                None => {
                    self.conversations_call(location_id, Some(date + 1), Some((from, to)), false)
                        .await?
                        .0
                }
            };
            let full = rows.len() >= CONVERSATIONS_PAGE;
            let mut only_run = true;
            let mut added = Vec::new();
            for row in rows {
                if conversation_date(&row) != Some(date) {
                    only_run = false;
                    continue;
                }
                added.extend(
                    row.get("dateAdded")
                        .and_then(dto::parse_time)
                        .map(|t| t.timestamp_millis()),
                );
                let id = row.get("id").and_then(Value::as_str).map(str::to_owned);
                if id.is_none_or(|id| ids.insert(id)) {
                    run.push(row);
                }
            }
            if !full || !only_run {
                continue;
            }
            match split_window(from, to, &mut added) {
                Some(parts) => windows.extend(parts.into_iter().map(|(a, b)| (a, b, None))),
                None => {
                    tracing::warn!(
                        location_id,
                        date,
                        from,
                        to,
                        "more conversations share one lastMessageDate and dateAdded than GHL pages"
                    );
                    unreachable.push(format!(
                        "conversations at lastMessageDate {date} added {from}..={to} past the first {CONVERSATIONS_PAGE}"
                    ));
                }
            }
        }
        Ok((run, unreachable))
    }

    async fn opportunities_page(
        &self,
        location_id: &str,
        since: Option<DateTime<Utc>>,
        cursor: Option<&Cursor>,
    ) -> Result<FetchedPage> {
        // Every key the official spec marks required, with neutral values (FACTS.md §5.2, §12:
        // real GHL and its SDK need only `locationId`): no text, the first page unless a cursor
        // says otherwise, no searchAfter, no extra details. The spec types `searchAfter` items as
        // strings; GHL's search parses a numeric string as the number it stands for.
        let mut body = json!({
            "locationId": location_id,
            "limit": OPPORTUNITIES_PAGE,
            "query": "",
            "page": 1,
            "searchAfter": [],
            "additionalDetails": {
                "notes": false,
                "tasks": false,
                "calendarEvents": false,
                "unReadConversations": false,
            },
        });
        if since.is_some() {
            body["sort"] = json!([{ "field": "date_updated", "direction": "desc" }]);
        }
        search_cursor(&mut body, cursor, "opportunities")?;
        if let Some(Value::Array(after)) = body.get_mut("searchAfter") {
            for item in after.iter_mut() {
                if let Value::Number(n) = item {
                    *item = Value::String(n.to_string());
                }
            }
        }
        let answer = self
            .call(
                location_id,
                post("opportunities.search", "/opportunities/search".into(), body),
            )
            .await?;
        let rows = rows(&answer, "opportunities")?;
        let total = answer
            .get("total")
            .or_else(|| answer.get("meta").and_then(|m| m.get("total")))
            .and_then(Value::as_u64);
        let next = if rows.len() < OPPORTUNITIES_PAGE || reached(&rows, "updatedAt", since) {
            None
        } else {
            Some(next_search_cursor(&rows, cursor))
        };
        let count = rows.len();
        let (records, skipped) = decode_rows::<dto::OpportunityDto>(rows);
        Ok(FetchedPage {
            records: Records::Opportunities(
                records
                    .into_iter()
                    .map(|o| o.into_domain(location_id))
                    .collect(),
            ),
            skipped,
            rows: count,
            next,
            total,
        })
    }

    /// Every page of `listing` from `start` on, as a stream. `fetched` is how many rows earlier
    /// pages already returned (when resuming), so that `total` ends the list at the right page.
    ///
    /// The whole list of conversations is read from both ends at once ([`ends`]), and so is any
    /// list resumed from a cursor of that walk.
    pub fn pages(
        &self,
        location_id: &str,
        listing: Listing,
        start: Option<Cursor>,
        fetched: u64,
    ) -> impl Stream<Item = Result<FetchedPage>> + Send + 'static {
        use futures::StreamExt;
        match (&listing, start) {
            (Listing::Conversations(None), None) => {
                ends::pages(self.clone(), location_id, None, None, fetched).left_stream()
            }
            (_, Some(Cursor::Ends { newer, older })) => {
                ends::pages(self.clone(), location_id, newer, older, fetched).left_stream()
            }
            (_, start) => self
                .one_way(location_id, listing, start, fetched)
                .right_stream(),
        }
    }

    /// [`Self::pages`] of a list read one page after another.
    fn one_way(
        &self,
        location_id: &str,
        listing: Listing,
        start: Option<Cursor>,
        fetched: u64,
    ) -> impl Stream<Item = Result<FetchedPage>> + Send + 'static {
        struct State {
            client: Client,
            location_id: String,
            listing: Listing,
            cursor: Option<Cursor>,
            fetched: u64,
            previous_ids: HashSet<String>,
            done: bool,
            /// Pages read by this stream.
            pages: u64,
        }
        let state = State {
            client: self.clone(),
            location_id: location_id.to_owned(),
            listing,
            cursor: start,
            fetched,
            previous_ids: HashSet::new(),
            done: false,
            pages: 0,
        };
        futures::stream::try_unfold(state, |mut s| async move {
            if s.done {
                return Ok(None);
            }
            let mut page = s
                .client
                .page(&s.location_id, &s.listing, s.cursor.as_ref())
                .await?;
            let ids: HashSet<String> = page.records.ids().into_iter().map(str::to_owned).collect();
            if !ids.is_empty() && ids == s.previous_ids {
                return Err(UpstreamError::Stuck(format!(
                    "{:?}: GHL returned the same page twice",
                    s.listing
                )));
            }
            if page.next.is_some() && page.next == s.cursor {
                return Err(UpstreamError::Stuck(format!(
                    "{:?}: the cursor did not advance",
                    s.listing
                )));
            }
            // Rows repeated from the previous page (an overlapping cursor) are not new.
            let overlap = page
                .records
                .ids()
                .iter()
                .filter(|id| s.previous_ids.contains(**id))
                .count();
            page.records.retain_not_in(&s.previous_ids);
            s.fetched += (page.rows - overlap) as u64;
            // `total` counts the whole list only when the list is not newest-first-until-a-time.
            let complete =
                !s.listing.is_incremental() && page.total.is_some_and(|total| s.fetched >= total);
            if complete {
                page.next = None;
            }
            s.done = page.next.is_none();
            // The pages still to fetch one after another: the rate limiter serves the longest
            // chain first. When GHL gives no total, the pages read so far, for the limiter to
            // estimate from.
            s.pages += 1;
            let left = match (s.done, page.total) {
                (true, _) => 0,
                (false, Some(total)) => {
                    (total.saturating_sub(s.fetched)).div_ceil(s.listing.page_size() as u64)
                }
                (false, None) => super::limiter::UNKNOWN_LENGTH | s.pages,
            };
            super::transport::Meter::set_chain(left);
            s.cursor = page.next.clone();
            s.previous_ids = ids;
            Ok(Some((page, s)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every split covers its window exactly, with windows smaller than it, so a sweep ends.
    fn assert_splits(from: i64, to: i64, added: &[i64]) {
        let parts = split_window(from, to, &mut added.to_vec()).expect("splits");
        let mut covered: Vec<(i64, i64)> = parts.clone();
        covered.sort_unstable();
        assert_eq!(covered.first().map(|p| p.0), Some(from), "{parts:?}");
        assert_eq!(covered.last().map(|p| p.1), Some(to), "{parts:?}");
        for pair in covered.windows(2) {
            assert_eq!(pair[0].1 + 1, pair[1].0, "{parts:?}");
        }
        for (a, b) in &parts {
            assert!(a <= b && (b - a) < (to - from), "{parts:?}");
        }
    }

    #[test]
    fn a_full_window_splits_at_the_median_below_its_highest() {
        assert_splits(0, 1_000, &[10, 20, 30, 40]);
        assert_eq!(
            split_window(0, 1_000, &mut vec![40, 10, 30, 20]),
            Some(vec![(0, 20), (21, 1_000)])
        );
        // Mostly the highest value: the split still leaves it on its own side.
        assert_splits(0, 1_000, &[5, 50, 50, 50]);
        assert_eq!(
            split_window(0, 1_000, &mut vec![5, 50, 50, 50]),
            Some(vec![(0, 5), (6, 1_000)])
        );
    }

    #[test]
    fn one_millisecond_of_rows_is_cut_out_and_cannot_split_further() {
        assert_splits(0, 1_000, &[50, 50]);
        assert_splits(50, 1_000, &[50]);
        assert_splits(0, 50, &[50]);
        assert_eq!(split_window(50, 50, &mut vec![50, 50]), None);
        // Rows outside the window (or without a dateAdded) give nothing to split by.
        assert_eq!(split_window(0, 10, &mut vec![50, 60]), None);
        assert_eq!(split_window(0, 10, &mut Vec::new()), None);
    }

    #[test]
    fn a_conversations_cursor_stored_before_the_overlap_still_resumes() {
        let old: Cursor = serde_json::from_str(r#"{"style":"startAfterDate","date":5}"#).unwrap();
        assert_eq!(
            old,
            Cursor::StartAfterDate {
                date: 5,
                seen: Vec::new()
            }
        );
        let cursor = Cursor::StartAfterDate {
            date: 7,
            seen: vec!["a".into()],
        };
        let text = serde_json::to_string(&cursor).unwrap();
        assert_eq!(serde_json::from_str::<Cursor>(&text).unwrap(), cursor);
    }
}
