//! Tasks: `POST /locations/{locationId}/tasks/search` (skip and searchAfter windows, filters,
//! sort keys).

// Handlers return `Result<_, Response>`: the error *is* the HTTP answer, built once per failed
// request, so boxing it would only add noise.
#![allow(clippy::result_large_err)]

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};

use super::gate::{Need, gate};
use super::layer::unprocessable;
use super::paging::{Offset, Window, WindowRule, cursor};
use super::params::{bool_field, json_body, string_list};
use super::search::searched;
use super::{Res, S};
use crate::sim::data::{self, MsRange, iso};
use crate::sim::filters;

/// The window of the task search: `limit` (25 by default), `skip`, `searchAfter`; no total.
const SEARCH_WINDOW: WindowRule = WindowRule {
    limit_key: "limit",
    default_limit: Some(25),
    offset: Offset::Skip,
    counts_total: false,
};

/// `POST /locations/{locationId}/tasks/search`: filters, free text, sort by dueDate (indexed),
/// dateAdded or dateUpdated; answered 201, as GHL does.
pub(super) async fn tasks_search(
    State(s): S,
    headers: HeaderMap,
    Path(loc_id): Path<String>,
    bytes: Bytes,
) -> Res {
    let ctx = gate(&s, &headers, Need::Location)?;
    let loc = ctx.location(&s, &loc_id)?;
    let body = json_body(
        &ctx,
        &bytes,
        &[
            "contactId",
            "completed",
            "assignedTo",
            "query",
            "limit",
            "skip",
            "businessId",
            "searchAfter",
            "dueDate",
            "sortKey",
            "sortDirection",
            "overdue",
            "unAssigned",
        ],
    )?;
    let contact_ids = string_list(&ctx, body.get("contactId"), "contactId")?;
    let assigned = string_list(&ctx, body.get("assignedTo"), "assignedTo")?;
    let completed = bool_field(&ctx, body.get("completed"), "completed")?;
    let overdue = bool_field(&ctx, body.get("overdue"), "overdue")?.unwrap_or(false);
    let unassigned = bool_field(&ctx, body.get("unAssigned"), "unAssigned")?.unwrap_or(false);
    let query = body
        .get("query")
        .and_then(Value::as_str)
        .filter(|q| !q.is_empty())
        .map(str::to_lowercase);
    let business = body
        .get("businessId")
        .and_then(Value::as_str)
        .is_some_and(|b| !b.is_empty());
    let window = Window::read(&ctx, &body, SEARCH_WINDOW)?;
    let due_range = match body.get("dueDate") {
        None | Some(Value::Null) => MsRange::default(),
        Some(v) => filters::range_of(v).ok_or_else(|| {
            ctx.fail(unprocessable(vec![
                "dueDate must be {gt,gte,lt,lte}".into(),
            ]))
        })?,
    };
    let sort_key = body
        .get("sortKey")
        .and_then(Value::as_str)
        .unwrap_or("dueDate");
    if !["dueDate", "dateAdded", "dateUpdated"].contains(&sort_key) {
        return Err(ctx.fail(unprocessable(vec![format!(
            "sortKey must be one of dueDate, dateAdded, dateUpdated"
        )])));
    }
    let desc = match body.get("sortDirection").and_then(Value::as_str) {
        None | Some("asc") => false,
        Some("desc") => true,
        Some(_) => {
            return Err(ctx.fail(unprocessable(vec![
                "sortDirection must be asc or desc".into(),
            ])));
        }
    };
    let now = chrono::Utc::now().timestamp_millis();
    let rec = searched(&loc);
    let pred = |id: &str| {
        let Some(t) = rec.searched_task(id) else {
            return false;
        };
        !business
            && contact_ids
                .as_ref()
                .is_none_or(|c| c.contains(&t.contact_id))
            && assigned
                .as_ref()
                .is_none_or(|a| t.assigned_to.as_ref().is_some_and(|x| a.contains(x)))
            && completed.is_none_or(|c| c == t.completed)
            && (!overdue || (!t.completed && t.due < now))
            && (!unassigned || t.assigned_to.is_none())
            && due_range.contains(t.due)
            && query.as_deref().is_none_or(|q| {
                t.title.to_lowercase().contains(q)
                    || t.body
                        .as_deref()
                        .is_some_and(|b| b.to_lowercase().contains(q))
            })
    };
    // dueDate has an index; the other keys are rare and get a temporary one.
    let built;
    let (index, range) = if sort_key == "dueDate" {
        (&rec.tasks_by_due, due_range.clone())
    } else {
        built = rec
            .tasks_by_due
            .iter()
            .filter_map(|(_, id)| rec.searched_task(id))
            .map(|t| {
                (
                    if sort_key == "dateAdded" {
                        t.date_added
                    } else {
                        t.date_updated
                    },
                    t.id.clone(),
                )
            })
            .collect::<data::Index>();
        (&built, MsRange::default())
    };
    let p = window.walk(&ctx, index, &range, desc, &pred)?;
    let tasks: Vec<Value> = p
        .keys
        .iter()
        .filter_map(|key| {
            let t = rec.searched_task(&key.1)?;
            let c = rec.searched_contact(&t.contact_id);
            let u = t
                .assigned_to
                .as_ref()
                .and_then(|a| loc.meta.users.iter().find(|u| &u.id == a));
            Some(json!({
                "_id": t.id,
                "title": t.title,
                "body": t.body,
                "assignedTo": t.assigned_to,
                "completed": t.completed,
                "status": if t.completed { "completed" } else { "incompleted" },
                "statusGroup": if t.completed { "completed" } else { "to_do" },
                "contactId": t.contact_id,
                "locationId": loc.meta.id,
                "dueDate": iso(t.due),
                "dateAdded": iso(t.date_added),
                "dateUpdated": iso(t.date_updated),
                "deleted": false,
                "contactDetails": {
                    "_id": t.contact_id,
                    "firstName": c.and_then(|c| c.first_name.clone()),
                    "lastName": c.and_then(|c| c.last_name.clone()),
                },
                "assignedToUserDetails": u.map(|u| json!({"id": u.id, "firstName": u.first_name, "lastName": u.last_name})),
                "searchAfter": cursor(key),
            }))
        })
        .collect();
    Ok(ctx.reply(StatusCode::CREATED, json!({"tasks": tasks})))
}
