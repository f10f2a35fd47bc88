//! Conversations: `GET /conversations/search`, paged by `startAfterDate` alone: GHL's one cursor
//! without an id tie-breaker. It is strict (a row whose `lastMessageDate` equals it is not
//! returned), and `lastMessageDate` is not unique, so a client that cuts a run of equal dates at
//! a page boundary and goes on from its date loses the rest of the run, as it would on GHL.

// Handlers return `Result<_, Response>`: the error *is* the HTTP answer, built once per failed
// request, so boxing it would only add noise.
#![allow(clippy::result_large_err)]

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};

use super::gate::{Need, gate};
use super::layer::unprocessable;
use super::params::{enum_param, query_int, query_str};
use super::search::searched;
use super::{Q, Res, S};
use crate::sim::data::{self, ID_MAX, parse_time};

/// `GET /conversations/search`: filters, free text, sort by last message date either way.
pub(super) async fn conversations_search(State(s): S, headers: HeaderMap, Query(q): Q) -> Res {
    let ctx = gate(&s, &headers, Need::Location)?;
    let loc_id = query_str(&ctx, &q, "locationId")?;
    let loc = ctx.location(&s, &loc_id)?;
    let limit = query_int(&ctx, &q, "limit", 100)?.unwrap_or(20).max(1) as usize;
    let desc = enum_param(&ctx, &q, "sort", &["asc", "desc"])? != Some("asc");
    enum_param(
        &ctx,
        &q,
        "sortBy",
        &[
            "last_manual_message_date",
            "last_message_date",
            "score_profile",
            "overdue_at",
            "due_at",
        ],
    )?;
    let status = enum_param(
        &ctx,
        &q,
        "status",
        &["all", "read", "unread", "starred", "recents"],
    )?;
    let direction = enum_param(&ctx, &q, "lastMessageDirection", &["inbound", "outbound"])?;
    enum_param(&ctx, &q, "lastMessageAction", &["automated", "manual"])?;
    let after = match q.get("startAfterDate").filter(|v| !v.is_empty()) {
        None => None,
        Some(v) => Some(parse_time(&json!(v)).ok_or_else(|| {
            ctx.fail(unprocessable(vec![
                "startAfterDate must be a number".into(),
            ]))
        })?),
    };
    let start = query_int(&ctx, &q, "startDate", u64::MAX)?.map(|v| v as i64);
    let end = query_int(&ctx, &q, "endDate", u64::MAX)?.map(|v| v as i64);
    let assigned: Option<Vec<&str>> = q
        .get("assignedTo")
        .filter(|v| !v.is_empty())
        .map(|v| v.split(',').collect());
    let contact = q.get("contactId").filter(|v| !v.is_empty());
    let conv_id = q.get("id").filter(|v| !v.is_empty());
    let msg_type = q.get("lastMessageType").filter(|v| !v.is_empty());
    let text = q
        .get("query")
        .filter(|v| !v.is_empty())
        .map(|v| v.to_lowercase());
    let rec = searched(&loc);
    let pred = |c: &data::Conversation| {
        contact.is_none_or(|x| *x == c.contact_id)
            && conv_id.is_none_or(|x| *x == c.id)
            && msg_type.is_none_or(|x| *x == c.last_message_type)
            && direction.is_none_or(|x| x == c.last_message_direction)
            && start.is_none_or(|x| c.date_added >= x)
            && end.is_none_or(|x| c.date_added <= x)
            && match status {
                Some("unread") => c.unread_count > 0,
                Some("read") => c.unread_count == 0,
                Some("starred") => c.starred,
                _ => true,
            }
            && assigned.as_ref().is_none_or(|a| match &c.assigned_to {
                None => a.contains(&"unassigned"),
                Some(u) => a.contains(&u.as_str()),
            })
            && text.as_deref().is_none_or(|t| {
                c.last_message_body.to_lowercase().contains(t)
                    || rec
                        .searched_contact(&c.contact_id)
                        .is_some_and(|k| k.matches_text(t))
            })
    };
    let plain = contact.is_none()
        && conv_id.is_none()
        && msg_type.is_none()
        && direction.is_none()
        && start.is_none()
        && end.is_none()
        && matches!(status, None | Some("all") | Some("recents"))
        && assigned.is_none()
        && text.is_none();
    let index = &rec.conversations_by_last;
    let iter: Box<dyn Iterator<Item = &(i64, String)>> = match (after, desc) {
        (None, false) => Box::new(index.iter()),
        (None, true) => Box::new(index.iter().rev()),
        (Some(a), false) => Box::new(index.range((a, ID_MAX.to_owned())..)),
        (Some(a), true) => Box::new(index.range(..(a, String::new())).rev()),
    };
    let rows: Vec<Value> = iter
        .filter_map(|(_, id)| rec.searched_conversation(id))
        .filter(|c| plain || pred(c))
        .take(limit)
        .map(|c| {
            let k = rec.searched_contact(&c.contact_id);
            let name = k.and_then(|k| k.name()).unwrap_or_default();
            json!({
                "id": c.id,
                "contactId": c.contact_id,
                "locationId": loc.meta.id,
                "lastMessageBody": c.last_message_body,
                "lastMessageType": c.last_message_type,
                "lastMessageDirection": c.last_message_direction,
                "lastMessageDate": c.last_message_date,
                "type": c.kind,
                "unreadCount": c.unread_count,
                "fullName": name,
                "contactName": name,
                "email": k.and_then(|k| k.email.clone()).unwrap_or_default(),
                "phone": k.and_then(|k| k.phone.clone()).unwrap_or_default(),
                "assignedTo": c.assigned_to,
                "inbox": c.inbox,
                "starred": c.starred,
                "deleted": false,
                "dateAdded": c.date_added,
                "dateUpdated": c.date_updated,
                "sort": [c.last_message_date],
            })
        })
        .collect();
    let total = if plain {
        index.len()
    } else {
        index
            .iter()
            .filter_map(|(_, id)| rec.searched_conversation(id))
            .filter(|c| pred(c))
            .count()
    };
    Ok(ctx.reply(
        StatusCode::OK,
        json!({"conversations": rows, "total": total}),
    ))
}
