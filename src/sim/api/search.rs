//! What the two filter searches (`POST /contacts/search`, `POST /opportunities/search`) ask for
//! besides their window: `filters` over known fields, free text, and `sort` over the record's two
//! time indexes (added, updated). One [`Selection`] reads them and answers which index to walk, in
//! which range and direction, and whether a record passes.

// Handlers return `Result<_, Response>`: the error *is* the HTTP answer, built once per failed
// request, so boxing it would only add noise.
#![allow(clippy::result_large_err)]

use axum::response::Response;
use serde_json::{Map, Value};

use super::gate::Ctx;
use super::params::{filters_of, sort_of};
use crate::sim::Location;
use crate::sim::data::{Index, MsRange, Records};
use crate::sim::filters::{self, Filter};
use crate::sim::{read, write};

/// The location's records as its search endpoints see them: first the indexes take in every
/// write whose index lag has passed; records are then read through the `searched_*` lookups.
pub(super) fn searched(loc: &Location) -> std::sync::RwLockReadGuard<'_, Records> {
    if read(&loc.records).lagging() {
        write(&loc.records).settle(tokio::time::Instant::now());
    }
    read(&loc.records)
}

/// The filters, free text and sort of one filter search.
pub(super) struct Selection {
    filters: Vec<Filter>,
    query: Option<String>,
    by_updated: bool,
    /// Whether the walk goes from the latest to the earliest.
    pub desc: bool,
    /// The range of the sort field that the filters allow.
    pub range: MsRange,
}

impl Selection {
    /// Reads `filters` (over the fields in `known`) and then `sort` (over `sort_fields`: the
    /// added field, the default, descending, and the updated field) from `body`; `query` is the
    /// free text the caller has already read (each search reads it its own way).
    pub fn read(
        ctx: &Ctx,
        body: &Map<String, Value>,
        known: &[&str],
        sort_fields: [&'static str; 2],
        query: Option<String>,
    ) -> Result<Self, Response> {
        let filters = filters_of(ctx, body.get("filters"), known)?;
        let (field, desc) = sort_of(ctx, body.get("sort"), &sort_fields, (sort_fields[0], true))?;
        Ok(Selection {
            range: filters::narrowing(&filters, &field),
            by_updated: field == sort_fields[1],
            filters,
            query,
            desc,
        })
    }

    /// The index the sort asks for: by date added or by date updated.
    pub fn index<'a>(&self, by_added: &'a Index, by_updated: &'a Index) -> &'a Index {
        if self.by_updated {
            by_updated
        } else {
            by_added
        }
    }

    /// Whether a record passes the free text (`text`) and every filter (on the fields `field`
    /// reads). With neither, every id passes, even one whose record is gone.
    pub fn passes<R>(
        &self,
        record: Option<&R>,
        text: impl Fn(&R, &str) -> bool,
        field: impl Fn(&R, &str) -> Option<Value>,
    ) -> bool {
        if self.filters.is_empty() && self.query.is_none() {
            return true;
        }
        record.is_some_and(|r| {
            self.query.as_deref().is_none_or(|q| text(r, q))
                && filters::matches(&self.filters, &|f| field(r, f))
        })
    }
}
