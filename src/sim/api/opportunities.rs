//! Opportunities: `POST /opportunities/search` (page and searchAfter windows, filters, sort) and
//! `GET /opportunities/search` (legacy startAfter cursor pages).

// Handlers return `Result<_, Response>`: the error *is* the HTTP answer, built once per failed
// request, so boxing it would only add noise.
#![allow(clippy::result_large_err)]

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};

use super::gate::{Need, gate};
use super::layer::unprocessable;
use super::paging::{Offset, Window, WindowRule, cursor, legacy_cursor, legacy_meta, urlencode};
use super::params::{body_location, enum_param, json_body, mdy, query_int, query_str};
use super::search::{Selection, searched};
use super::{Q, Res, S};
use crate::sim::data::{self, Key, MsRange, Opportunity};

/// The fields `filters` may name (snake_case, as the search takes them).
const OPP_FIELDS: &[&str] = &[
    "id",
    "pipeline_id",
    "pipeline_stage_id",
    "status",
    "assigned_to",
    "contact_id",
    "monetary_value",
    "date_added",
    "date_updated",
    "last_status_change_at",
    "last_stage_change_at",
    "name",
    "source",
];

/// Renders the opportunities of `keys`, with their cursor (`sort`, `searchAfter`) when asked.
fn opp_rows(rec: &data::Records, loc_id: &str, keys: &[&Key], with_cursor: bool) -> Vec<Value> {
    keys.iter()
        .filter_map(|key| {
            let o = rec.searched_opportunity(&key.1)?;
            let mut v = o.to_json(loc_id, rec.searched_contact(&o.contact_id));
            if with_cursor {
                v["sort"] = cursor(key);
                v["searchAfter"] = cursor(key);
            }
            Some(v)
        })
        .collect()
}

/// The window of `POST /opportunities/search`: `limit` (20 by default), `page`, `searchAfter`.
const SEARCH_WINDOW: WindowRule = WindowRule {
    limit_key: "limit",
    default_limit: Some(20),
    offset: Offset::Page,
    counts_total: true,
};

/// `POST /opportunities/search`: filters, free text, sort by date_added or date_updated;
/// answered 201, as GHL does.
pub(super) async fn opportunities_search_post(
    State(s): S,
    headers: HeaderMap,
    bytes: Bytes,
) -> Res {
    let ctx = gate(&s, &headers, Need::Location)?;
    let body = json_body(
        &ctx,
        &bytes,
        &[
            "locationId",
            "query",
            "limit",
            "page",
            "searchAfter",
            "additionalDetails",
            "filters",
            "sort",
        ],
    )?;
    let loc = body_location(&ctx, &s, &body)?;
    let window = Window::read(&ctx, &body, SEARCH_WINDOW)?;
    let query = body
        .get("query")
        .and_then(Value::as_str)
        .filter(|q| !q.is_empty())
        .map(str::to_lowercase);
    let sel = Selection::read(
        &ctx,
        &body,
        OPP_FIELDS,
        ["date_added", "date_updated"],
        query,
    )?;
    let rec = searched(&loc);
    // Free text matches the opportunity's name or its contact.
    let text = |o: &Opportunity, q: &str| {
        o.name.to_lowercase().contains(q)
            || rec
                .searched_contact(&o.contact_id)
                .is_some_and(|c| c.matches_text(q))
    };
    let pred = |id: &str| sel.passes(rec.searched_opportunity(id), text, Opportunity::field);
    let index = sel.index(&rec.opps_by_created, &rec.opps_by_updated);
    let p = window.walk(&ctx, index, &sel.range, sel.desc, &pred)?;
    let rows = opp_rows(&rec, &loc.meta.id, &p.keys, true);
    Ok(ctx.reply(
        StatusCode::CREATED,
        json!({"opportunities": rows, "total": p.total, "aggregations": {}}),
    ))
}

/// `GET /opportunities/search`: equality filters, a date range and legacy cursor pages by
/// creation date.
pub(super) async fn opportunities_search_get(State(s): S, headers: HeaderMap, Query(q): Q) -> Res {
    let ctx = gate(&s, &headers, Need::Location)?;
    let loc_id = query_str(&ctx, &q, "location_id")?;
    let loc = ctx.location(&s, &loc_id)?;
    let limit = query_int(&ctx, &q, "limit", 100)?.unwrap_or(20).max(1) as usize;
    let page = query_int(&ctx, &q, "page", u64::MAX)?.unwrap_or(1).max(1);
    let desc = match q.get("order").map(String::as_str) {
        None | Some("") | Some("added_asc") => false,
        Some("added_desc") => true,
        Some(_) => {
            return Err(ctx.fail(unprocessable(vec![
                "order must be added_asc or added_desc".into(),
            ])));
        }
    };
    let status = enum_param(
        &ctx,
        &q,
        "status",
        &["open", "won", "lost", "abandoned", "all"],
    )?;
    let after = legacy_cursor(&ctx, &q)?;
    let skip = if after.is_none() {
        (page as usize - 1) * limit
    } else {
        0
    };
    let range = MsRange {
        lo: mdy(&ctx, q.get("date"), "date", false)?
            .map_or(std::ops::Bound::Unbounded, std::ops::Bound::Included),
        hi: mdy(&ctx, q.get("endDate"), "endDate", true)?
            .map_or(std::ops::Bound::Unbounded, std::ops::Bound::Included),
    };
    let eqp = |k: &str| q.get(k).filter(|v| !v.is_empty());
    let (pipe, stage, contact, assigned, id) = (
        eqp("pipeline_id"),
        eqp("pipeline_stage_id"),
        eqp("contact_id"),
        eqp("assigned_to"),
        eqp("id"),
    );
    let text = eqp("q").map(|t| t.to_lowercase());
    let rec = searched(&loc);
    let pred = |oid: &str| {
        rec.searched_opportunity(oid).is_some_and(|o| {
            pipe.is_none_or(|x| *x == o.pipeline_id)
                && stage.is_none_or(|x| *x == o.stage_id)
                && contact.is_none_or(|x| *x == o.contact_id)
                && assigned.is_none_or(|x| o.assigned_to.as_ref() == Some(x))
                && id.is_none_or(|x| *x == o.id)
                && status.is_none_or(|x| x == "all" || x == o.status)
                && text.as_deref().is_none_or(|t| {
                    o.name.to_lowercase().contains(t)
                        || rec
                            .searched_contact(&o.contact_id)
                            .is_some_and(|c| c.matches_text(t))
                })
        })
    };
    let p = data::page(
        &rec.opps_by_created,
        &range,
        after.as_ref(),
        desc,
        skip,
        limit,
        true,
        &pred,
    );
    let rows = opp_rows(&rec, &loc.meta.id, &p.keys, false);
    let mut pq = format!("/opportunities/search?location_id={loc_id}&limit={limit}");
    for k in [
        "pipeline_id",
        "pipeline_stage_id",
        "contact_id",
        "assigned_to",
        "status",
        "order",
        "q",
        "date",
        "endDate",
    ] {
        if let Some(v) = eqp(k) {
            pq.push_str(&format!("&{k}={}", urlencode(v)));
        }
    }
    let meta = legacy_meta(&s, pq, &p.keys, p.total, p.more, page);
    Ok(ctx.reply(
        StatusCode::OK,
        json!({"opportunities": rows, "meta": meta, "aggregations": {}}),
    ))
}
