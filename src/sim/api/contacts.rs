//! Contacts: `POST /contacts/search` (page and searchAfter windows, filters, sort),
//! `GET /contacts/` (legacy startAfter cursor pages), `GET /contacts/{id}` and its tasks.

// Handlers return `Result<_, Response>`: the error *is* the HTTP answer, built once per failed
// request, so boxing it would only add noise.
#![allow(clippy::result_large_err)]

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};

use super::gate::{Ctx, Need, gate};
use super::layer::{bad_request, unprocessable};
use super::paging::{Offset, Window, WindowRule, cursor, legacy_cursor, legacy_meta, urlencode};
use super::params::{body_location, json_body, query_int, query_str};
use super::search::{Selection, searched};
use super::{Q, Res, S};
use crate::sim::data::{self, Contact, MsRange};
use crate::sim::read;

/// The fields `filters` may name.
const CONTACT_FIELDS: &[&str] = &[
    "id",
    "firstName",
    "lastName",
    "firstNameLowerCase",
    "lastNameLowerCase",
    "fullNameLowerCase",
    "contactName",
    "email",
    "phone",
    "companyName",
    "source",
    "type",
    "assignedTo",
    "city",
    "state",
    "country",
    "postalCode",
    "tags",
    "dnd",
    "dateAdded",
    "dateUpdated",
];

/// The window of `POST /contacts/search`: `pageLimit` (required), `page`, `searchAfter`.
const SEARCH_WINDOW: WindowRule = WindowRule {
    limit_key: "pageLimit",
    default_limit: None,
    offset: Offset::Page,
    counts_total: true,
};

/// `POST /contacts/search`: filters, free text, sort by dateAdded or dateUpdated.
pub(super) async fn contacts_search(State(s): S, headers: HeaderMap, bytes: Bytes) -> Res {
    let ctx = gate(&s, &headers, Need::Location)?;
    let body = json_body(
        &ctx,
        &bytes,
        &[
            "locationId",
            "pageLimit",
            "page",
            "searchAfter",
            "query",
            "filters",
            "sort",
        ],
    )?;
    let loc = body_location(&ctx, &s, &body)?;
    let window = Window::read(&ctx, &body, SEARCH_WINDOW)?;
    let query = match body.get("query") {
        None | Some(Value::Null) => None,
        Some(Value::String(q)) if q.chars().count() <= 75 => {
            Some(q.clone()).filter(|q| !q.is_empty())
        }
        Some(_) => {
            return Err(ctx.fail(unprocessable(vec![
                "query must be a string of at most 75 characters".into(),
            ])));
        }
    };
    let sel = Selection::read(
        &ctx,
        &body,
        CONTACT_FIELDS,
        ["dateAdded", "dateUpdated"],
        query,
    )?;
    let rec = searched(&loc);
    let pred = |id: &str| {
        sel.passes(
            rec.searched_contact(id),
            Contact::matches_text,
            Contact::field,
        )
    };
    let index = sel.index(&rec.contacts_by_added, &rec.contacts_by_updated);
    let p = window.walk(&ctx, index, &sel.range, sel.desc, &pred)?;
    let contacts: Vec<Value> = p
        .keys
        .iter()
        .filter_map(|key| {
            let mut v = rec.searched_contact(&key.1)?.to_json(&loc.meta.id);
            v["searchAfter"] = cursor(key);
            Some(v)
        })
        .collect();
    Ok(ctx.reply(
        StatusCode::OK,
        json!({"contacts": contacts, "total": p.total}),
    ))
}

/// `GET /contacts/` (deprecated by GHL, still served): legacy cursor pages by dateAdded, newest
/// first. A `startAfter` without its `startAfterId` is not a cursor to GHL: it answers the first
/// page again, the quirk clients that echo only `startAfter` have looped on.
pub(super) async fn contacts_list(State(s): S, headers: HeaderMap, Query(q): Q) -> Res {
    let ctx = gate(&s, &headers, Need::Location)?;
    let loc_id = query_str(&ctx, &q, "locationId")?;
    let loc = ctx.location(&s, &loc_id)?;
    let limit = query_int(&ctx, &q, "limit", 100)?.unwrap_or(20).max(1) as usize;
    let page = query_int(&ctx, &q, "page", u64::MAX)?.unwrap_or(1).max(1);
    let after = legacy_cursor(&ctx, &q)?.filter(|_| q.contains_key("startAfterId"));
    let text = q.get("query").filter(|t| !t.is_empty()).cloned();
    let rec = searched(&loc);
    let pred = |id: &str| {
        text.as_deref()
            .is_none_or(|t| rec.searched_contact(id).is_some_and(|c| c.matches_text(t)))
    };
    let p = data::page(
        &rec.contacts_by_added,
        &MsRange::default(),
        after.as_ref(),
        true,
        0,
        limit,
        true,
        &pred,
    );
    let contacts: Vec<Value> = p
        .keys
        .iter()
        .filter_map(|(_, id)| Some(rec.searched_contact(id)?.to_json(&loc.meta.id)))
        .collect();
    let mut pq = format!("/contacts/?locationId={loc_id}&limit={limit}");
    if let Some(t) = &text {
        pq.push_str(&format!("&query={}", urlencode(t)));
    }
    let meta = legacy_meta(&s, pq, &p.keys, p.total, p.more, page);
    Ok(ctx.reply(StatusCode::OK, json!({"contacts": contacts, "meta": meta})))
}

fn contact_not_found(ctx: &Ctx, id: &str) -> Response {
    ctx.fail(bad_request(format!("Contact with id {id} not found")))
}

/// `GET /contacts/{id}` in the token's own location.
pub(super) async fn contact_get(State(s): S, headers: HeaderMap, Path(id): Path<String>) -> Res {
    let ctx = gate(&s, &headers, Need::Location)?;
    let loc = ctx.own_location(&s)?;
    let rec = read(&loc.records);
    let c = rec
        .contacts
        .get(&id)
        .ok_or_else(|| contact_not_found(&ctx, &id))?;
    Ok(ctx.reply(StatusCode::OK, json!({"contact": c.to_json(&loc.meta.id)})))
}

/// `GET /contacts/{id}/tasks`: every task of the contact, unpaged.
pub(super) async fn contact_tasks(State(s): S, headers: HeaderMap, Path(id): Path<String>) -> Res {
    let ctx = gate(&s, &headers, Need::Location)?;
    let loc = ctx.own_location(&s)?;
    let rec = read(&loc.records);
    if !rec.contacts.contains_key(&id) {
        return Err(contact_not_found(&ctx, &id));
    }
    let tasks: Vec<Value> = rec
        .tasks_by_contact
        .get(&id)
        .into_iter()
        .flatten()
        .filter_map(|t| Some(rec.tasks.get(t)?.to_json()))
        .collect();
    Ok(ctx.reply(StatusCode::OK, json!({"tasks": tasks})))
}
