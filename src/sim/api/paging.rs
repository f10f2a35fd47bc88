//! The windows of GHL's paged endpoints. One rule for the three searches (contacts,
//! opportunities, tasks): a page size, an offset (`page` or `skip`) and a `searchAfter` cursor;
//! and the legacy cursor pages of the GETs (`startAfter`/`startAfterId` and their `meta`).

// Handlers return `Result<_, Response>`: the error *is* the HTTP answer, built once per failed
// request, so boxing it would only add noise.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;

use axum::response::Response;
use serde_json::{Map, Value, json};

use super::gate::Ctx;
use super::layer::{bad_request, unprocessable};
use super::params::{int_field, search_after};
use crate::sim::Shared;
use crate::sim::data::{self, Index, Key, MsRange, Page, parse_time};

/// GHL's cap on page-style paging: `page * limit` may not pass it; `searchAfter` goes further.
const DEEP_PAGING_CAP: usize = 10_000;

/// How one search names and bounds its window.
#[derive(Clone, Copy)]
pub(super) struct WindowRule {
    /// The body key of the page size (`pageLimit`, `limit`); from 1 to 500.
    pub limit_key: &'static str,
    /// The page size when the key is absent; `None`: the key is required.
    pub default_limit: Option<u64>,
    /// Where a page starts when there is no cursor.
    pub offset: Offset,
    /// Whether the answer reports how many records match overall (`total`).
    pub counts_total: bool,
}

/// The offset style of a search.
#[derive(Clone, Copy)]
pub(super) enum Offset {
    /// A 1-based `page` of `limit` rows, ignored after a `searchAfter` cursor; `page * limit` may
    /// not pass [`DEEP_PAGING_CAP`].
    Page,
    /// `skip` rows, counted after the cursor when there is one.
    Skip,
}

/// A search's window as the request gave it: page size, offset and `searchAfter` cursor.
pub(super) struct Window {
    rule: WindowRule,
    limit: usize,
    page: Option<u64>,
    skip: usize,
    after: Option<Key>,
}

impl Window {
    /// Reads the page size, the offset and `searchAfter` from `body`, in that order (the first
    /// bad one is the answer: 422).
    pub fn read(ctx: &Ctx, body: &Map<String, Value>, rule: WindowRule) -> Result<Self, Response> {
        let key = rule.limit_key;
        let limit = match (
            int_field(ctx, body.get(key), key, 1, 500)?,
            rule.default_limit,
        ) {
            (Some(limit), _) | (None, Some(limit)) => limit as usize,
            (None, None) => {
                return Err(ctx.fail(unprocessable(vec![format!(
                    "{key} must not be less than 1"
                )])));
            }
        };
        let (page, skip) = match rule.offset {
            Offset::Page => (int_field(ctx, body.get("page"), "page", 1, u64::MAX)?, 0),
            Offset::Skip => {
                let skip = int_field(ctx, body.get("skip"), "skip", 0, u64::MAX)?;
                (None, skip.unwrap_or(0) as usize)
            }
        };
        let after = search_after(ctx, body.get("searchAfter"))?;
        Ok(Window {
            rule,
            limit,
            page,
            skip,
            after,
        })
    }

    /// The window's page of `index` (in `range`, keys whose record passes `pred`, descending
    /// when `desc`). A page-style offset past the deep-paging cap is answered 400 here, after
    /// every other parameter was read, as GHL orders its checks.
    pub fn walk<'a>(
        &self,
        ctx: &Ctx,
        index: &'a Index,
        range: &MsRange,
        desc: bool,
        pred: &dyn Fn(&str) -> bool,
    ) -> Result<Page<'a>, Response> {
        let skip = match (self.after.is_some(), self.page) {
            (false, Some(p)) => {
                if p as usize * self.limit > DEEP_PAGING_CAP {
                    return Err(ctx.fail(bad_request(format!(
                        "page * {} must not exceed {DEEP_PAGING_CAP}; use searchAfter to go further",
                        self.rule.limit_key
                    ))));
                }
                (p as usize - 1) * self.limit
            }
            _ => self.skip,
        };
        Ok(data::page(
            index,
            range,
            self.after.as_ref(),
            desc,
            skip,
            self.limit,
            self.rule.counts_total,
            pred,
        ))
    }
}

/// A row's `searchAfter` cursor, `[ms, id]`, as the searches answer it.
pub(super) fn cursor((ms, id): &Key) -> Value {
    json!([ms, id])
}

/// Legacy cursor pages (`GET /contacts/`, `GET /opportunities/search`): `meta.startAfter` and
/// `meta.startAfterId` name the last row; `nextPageUrl` repeats them.
pub(super) fn legacy_meta(
    s: &Shared,
    path_and_query: String,
    keys: &[&Key],
    total: usize,
    more: bool,
    page: u64,
) -> Value {
    let last = keys.last();
    let next_url = match (more, last) {
        (true, Some((ms, id))) => json!(format!(
            "{}{}&startAfter={ms}&startAfterId={id}&page={}",
            s.base_url,
            path_and_query,
            page + 1
        )),
        _ => Value::Null,
    };
    json!({
        "total": total,
        "nextPageUrl": next_url,
        "startAfterId": last.map(|k| json!(k.1)).unwrap_or(Value::Null),
        "startAfter": last.map(|k| json!(k.0)).unwrap_or(Value::Null),
        "currentPage": page,
        "nextPage": if more { json!(page + 1) } else { Value::Null },
        "prevPage": if page > 1 { json!(page - 1) } else { Value::Null },
    })
}

/// The cursor of a legacy GET: `startAfter` (ms) and `startAfterId`. With `startAfter` alone,
/// every row at that millisecond counts as seen.
pub(super) fn legacy_cursor(
    ctx: &Ctx,
    q: &HashMap<String, String>,
) -> Result<Option<Key>, Response> {
    match (q.get("startAfter"), q.get("startAfterId")) {
        (None, None) => Ok(None),
        (Some(ms), id) => {
            let ms = parse_time(&json!(ms)).ok_or_else(|| {
                ctx.fail(unprocessable(vec!["startAfter must be a number".into()]))
            })?;
            Ok(Some((
                ms,
                id.cloned().unwrap_or_else(|| data::ID_MAX.to_string()),
            )))
        }
        (None, Some(_)) => Err(ctx.fail(bad_request("startAfterId needs startAfter"))),
    }
}

/// Percent-encodes a query value for a `nextPageUrl`.
pub(super) fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
