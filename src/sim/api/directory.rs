//! A location's directory: users (`/users/`, `/users/search`), pipelines
//! (`/opportunities/pipelines`), custom fields and the location itself. Read-only and unpaged
//! (skip/limit at most), from the location's fixed meta data.

// Handlers return `Result<_, Response>`: the error *is* the HTTP answer, built once per failed
// request, so boxing it would only add noise.
#![allow(clippy::result_large_err)]

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};

use super::gate::{Need, gate};
use super::layer::error;
use super::params::{enum_param, query_int, query_str};
use super::{Q, Res, S};
use crate::sim::Location;
use crate::sim::auth::TokenKind;

/// `GET /opportunities/pipelines`: the location's pipelines and their stages.
pub(super) async fn pipelines(State(s): S, headers: HeaderMap, Query(q): Q) -> Res {
    let ctx = gate(&s, &headers, Need::Location)?;
    let loc_id = query_str(&ctx, &q, "locationId")?;
    let loc = ctx.location(&s, &loc_id)?;
    let rows: Vec<Value> = loc
        .meta
        .pipelines
        .iter()
        .map(|p| p.to_json(&loc.meta.id))
        .collect();
    Ok(ctx.reply(StatusCode::OK, json!({"pipelines": rows})))
}

/// `GET /users/`: the location's users.
pub(super) async fn users_list(State(s): S, headers: HeaderMap, Query(q): Q) -> Res {
    let ctx = gate(&s, &headers, Need::Location)?;
    let loc_id = query_str(&ctx, &q, "locationId")?;
    let loc = ctx.location(&s, &loc_id)?;
    let users: Vec<Value> = loc
        .meta
        .users
        .iter()
        .map(|u| u.to_json(&loc.meta.id))
        .collect();
    Ok(ctx.reply(StatusCode::OK, json!({"users": users})))
}

/// `GET /users/search`: a company's users, by location, text, ids or role, with skip/limit.
pub(super) async fn users_search(State(s): S, headers: HeaderMap, Query(q): Q) -> Res {
    let ctx = gate(&s, &headers, Need::Any)?;
    let company = query_str(&ctx, &q, "companyId")?;
    if *company != ctx.token.company_id {
        return Err(ctx.fail(error(
            StatusCode::FORBIDDEN,
            json!("The token does not have access to this company"),
            None,
        )));
    }
    let skip = query_int(&ctx, &q, "skip", u64::MAX)?.unwrap_or(0) as usize;
    let limit = query_int(&ctx, &q, "limit", 1000)?.unwrap_or(25) as usize;
    let locs: Vec<Arc<Location>> = match (
        q.get("locationId").filter(|v| !v.is_empty()),
        ctx.token.kind,
    ) {
        (Some(l), _) => vec![ctx.location(&s, l)?],
        (None, TokenKind::Agency) => s.locations.clone(),
        (None, _) => vec![ctx.own_location(&s)?],
    };
    let text = q
        .get("query")
        .filter(|v| !v.is_empty())
        .map(|v| v.to_lowercase());
    let ids: Option<Vec<&str>> = q
        .get("ids")
        .filter(|v| !v.is_empty())
        .map(|v| v.split(',').collect());
    let role = q.get("role").filter(|v| !v.is_empty());
    let matching: Vec<Value> = locs
        .iter()
        .flat_map(|l| l.meta.users.iter().map(move |u| (l, u)))
        .filter(|(_, u)| {
            text.as_deref().is_none_or(|t| {
                format!("{} {} {}", u.first_name, u.last_name, u.email)
                    .to_lowercase()
                    .contains(t)
            }) && ids.as_ref().is_none_or(|i| i.contains(&u.id.as_str()))
                && role.is_none_or(|r| r == u.role)
        })
        .map(|(l, u)| u.to_json(&l.meta.id))
        .collect();
    let count = matching.len();
    let users: Vec<Value> = matching.into_iter().skip(skip).take(limit).collect();
    Ok(ctx.reply(StatusCode::OK, json!({"users": users, "count": count})))
}

/// `GET /locations/{locationId}/customFields`, optionally of one model.
pub(super) async fn custom_fields(
    State(s): S,
    headers: HeaderMap,
    Path(loc_id): Path<String>,
    Query(q): Q,
) -> Res {
    let ctx = gate(&s, &headers, Need::Location)?;
    let loc = ctx.location(&s, &loc_id)?;
    let model = enum_param(&ctx, &q, "model", &["contact", "opportunity", "all"])?.unwrap_or("all");
    let rows: Vec<Value> = loc
        .meta
        .custom_fields
        .iter()
        .filter(|c| model == "all" || c.model == model)
        .map(|c| c.to_json(&loc.meta.id))
        .collect();
    Ok(ctx.reply(StatusCode::OK, json!({"customFields": rows})))
}

/// `GET /locations/{locationId}`.
pub(super) async fn location_get(
    State(s): S,
    headers: HeaderMap,
    Path(loc_id): Path<String>,
) -> Res {
    let ctx = gate(&s, &headers, Need::Any)?;
    let loc = ctx.location(&s, &loc_id)?;
    let m = &loc.meta;
    Ok(ctx.reply(
        StatusCode::OK,
        json!({"location": {
            "id": m.id, "companyId": m.company_id, "name": m.name, "address": "1 Main St",
            "city": m.city, "state": m.state, "country": "US", "postalCode": "00000",
            "website": "https://example.com", "timezone": m.timezone, "email": m.email, "phone": m.phone,
            "business": {"name": m.name, "address": "1 Main St", "city": m.city, "state": m.state, "country": "US", "timezone": m.timezone},
            "social": {},
            "settings": {"allowDuplicateContact": false, "allowDuplicateOpportunity": false, "allowFacebookNameMerge": false, "disableContactTimezone": false},
        }}),
    ))
}
