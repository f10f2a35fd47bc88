//! OAuth: `POST /oauth/token` (authorization codes, rotating refresh tokens),
//! `POST /oauth/locationToken` (an agency token's location token) and
//! `GET /oauth/installedLocations`.

// Handlers return `Result<_, Response>`: the error *is* the HTTP answer, built once per failed
// request, so boxing it would only add noise.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use serde_json::{Map, Value, json};

use super::gate::{Need, gate};
use super::layer::{bad_request, error, json_response, unprocessable};
use super::params::query_int;
use super::{Q, Res, S};
use crate::sim::data::{self, iso};
use crate::sim::{auth, lock};

fn form_body(headers: &HeaderMap, bytes: &Bytes) -> HashMap<String, String> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return serde_json::from_slice::<Map<String, Value>>(bytes)
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| {
                (
                    k,
                    v.as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| v.to_string()),
                )
            })
            .collect();
    }
    String::from_utf8_lossy(bytes)
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (form_decode(k), form_decode(v))
        })
        .collect()
}

/// Decodes `application/x-www-form-urlencoded` text (`+` is a space; a bad escape stays as is).
fn form_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The scopes every token the simulator mints carries.
const SCOPES: &str = "contacts.readonly conversations.readonly opportunities.readonly users.readonly locations.readonly locations/customFields.readonly locations/tasks.readonly oauth.readonly oauth.write";

/// An OAuth error answer (`error`, `error_description`) in GHL's envelope.
fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    json_response(
        status,
        json!({"statusCode": status.as_u16(), "error": error, "error_description": description, "message": description}),
    )
}

/// `POST /oauth/token`: exchanges an authorization code or a refresh token (which is spent) for
/// an access token and a new refresh token.
pub(super) async fn oauth_token(State(s): S, headers: HeaderMap, bytes: Bytes) -> Response {
    let f = form_body(&headers, &bytes);
    let missing: Vec<String> = ["client_id", "client_secret", "grant_type"]
        .iter()
        .filter(|k| f.get(**k).is_none_or(|v| v.is_empty()))
        .map(|k| format!("{k} should not be empty"))
        .collect();
    if !missing.is_empty() {
        return unprocessable(missing);
    }
    if f["client_id"] != s.client_id || f["client_secret"] != s.client_secret {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "Invalid client credentials",
        );
    }
    let mut rng = lock(&s.rng);
    let mut auth = lock(&s.auth);
    let grant = match f["grant_type"].as_str() {
        "authorization_code" => {
            let code = f.get("code").cloned().unwrap_or_default();
            match auth.codes.remove(&code) {
                Some(g) => g,
                None => return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", "Invalid grant: authorization code is invalid"),
            }
        }
        "refresh_token" => {
            // Rotation: the refresh token is spent by this call, whatever happens next.
            let rt = f.get("refresh_token").cloned().unwrap_or_default();
            match auth.refresh.remove(&rt) {
                Some(g) => g,
                None => return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", "Invalid grant: refresh token is invalid"),
            }
        }
        "client_credentials" => {
            return oauth_error(StatusCode::BAD_REQUEST, "unsupported_grant_type", "client_credentials is not supported by the simulator");
        }
        _ => return unprocessable(vec!["grant_type must be one of the following values: authorization_code, refresh_token, client_credentials".into()]),
    };
    if let Some(ut) = f.get("user_type").filter(|v| !v.is_empty())
        && *ut != grant.user_type
    {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "user_type does not match the grant",
        );
    }
    let access = auth.mint_access(&mut rng, &grant, &s.client_id, s.token_ttl);
    let refresh = auth.mint_refresh(&mut rng, grant.clone());
    let mut body = json!({
        "access_token": access,
        "token_type": "Bearer",
        "expires_in": s.token_ttl.as_secs(),
        "refresh_token": refresh,
        "scope": SCOPES,
        "userType": grant.user_type,
        "companyId": grant.company_id,
        "userId": grant.user_id,
        "planId": "sim-plan",
        "isBulkInstallation": false,
        "installToFutureLocations": true,
        "approveAllLocations": true,
    });
    if let Some(l) = &grant.location_id {
        body["locationId"] = json!(l);
    } else {
        body["approvedLocations"] = json!(
            s.locations
                .iter()
                .map(|l| l.meta.id.clone())
                .collect::<Vec<_>>()
        );
    }
    json_response(StatusCode::OK, body)
}

/// `POST /oauth/locationToken`: an agency token's access token for one of its locations.
pub(super) async fn oauth_location_token(State(s): S, headers: HeaderMap, bytes: Bytes) -> Res {
    let ctx = gate(&s, &headers, Need::Agency)?;
    let f = form_body(&headers, &bytes);
    let missing: Vec<String> = ["companyId", "locationId"]
        .iter()
        .filter(|k| f.get(**k).is_none_or(|v| v.is_empty()))
        .map(|k| format!("{k} should not be empty"))
        .collect();
    if !missing.is_empty() {
        return Err(ctx.fail(unprocessable(missing)));
    }
    if f["companyId"] != ctx.token.company_id {
        return Err(ctx.fail(error(
            StatusCode::FORBIDDEN,
            json!("The token does not have access to this company"),
            None,
        )));
    }
    let loc = ctx.location(&s, &f["locationId"])?;
    let grant = auth::Grant {
        user_type: "Location".into(),
        location_id: Some(loc.meta.id.clone()),
        company_id: ctx.token.company_id.clone(),
        user_id: ctx.token.user_id.clone(),
    };
    let access = {
        let mut rng = lock(&s.rng);
        lock(&s.auth).mint_access(&mut rng, &grant, &s.client_id, s.token_ttl)
    };
    Ok(ctx.reply(
        StatusCode::OK,
        json!({
            "access_token": access, "token_type": "Bearer", "expires_in": s.token_ttl.as_secs(),
            "scope": SCOPES, "locationId": loc.meta.id, "planId": "sim-plan",
            "userId": grant.user_id, "appId": s.app_id, "versionId": s.version_id,
        }),
    ))
}

/// `GET /oauth/installedLocations`: the app's installed locations, with skip/limit.
pub(super) async fn installed_locations(State(s): S, headers: HeaderMap, Query(q): Q) -> Res {
    let ctx = gate(&s, &headers, Need::Agency)?;
    let mut missing = Vec::new();
    for k in ["companyId", "appId"] {
        if q.get(k).is_none_or(|v| v.is_empty()) {
            missing.push(format!("{k} should not be empty"));
        }
    }
    if !missing.is_empty() {
        return Err(ctx.fail(unprocessable(missing)));
    }
    if q["companyId"] != ctx.token.company_id {
        return Err(ctx.fail(error(
            StatusCode::FORBIDDEN,
            json!("The token does not have access to this company"),
            None,
        )));
    }
    if q["appId"] != s.app_id {
        return Err(ctx.fail(bad_request("App not found")));
    }
    let skip = query_int(&ctx, &q, "skip", u64::MAX)?.unwrap_or(0) as usize;
    let limit = query_int(&ctx, &q, "limit", 1000)?.unwrap_or(20) as usize;
    let installed = q.get("isInstalled").map(|v| v == "true");
    let text = q
        .get("query")
        .filter(|v| !v.is_empty())
        .map(|v| v.to_lowercase());
    let only = q.get("locationId").filter(|v| !v.is_empty());
    // Locations uninstalled through `/_sim/app/uninstall` are listed with `isInstalled: false`.
    let gone = lock(&s.uninstalled).clone();
    let rows: Vec<Value> = s
        .locations
        .iter()
        .filter(|l| installed.is_none_or(|want| want != gone.contains(&l.meta.id)))
        .filter(|l| text.as_deref().is_none_or(|t| l.meta.name.to_lowercase().contains(t)))
        .filter(|l| only.is_none_or(|o| *o == l.meta.id))
        .map(|l| json!({
            "_id": l.meta.id, "name": l.meta.name, "address": format!("1 Main St, {}, {}", l.meta.city, l.meta.state),
            "isInstalled": !gone.contains(&l.meta.id), "versionId": s.version_id, "installedAt": iso(data::SEED_EPOCH_MS),
        }))
        .collect();
    let count = rows.len();
    let rows: Vec<Value> = rows.into_iter().skip(skip).take(limit).collect();
    Ok(ctx.reply(
        StatusCode::OK,
        json!({"locations": rows, "count": count, "installToFutureLocations": true}),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_decoding() {
        assert_eq!(form_decode("a+b%20c%2Fd"), "a b c/d");
        assert_eq!(form_decode("100%"), "100%");
    }
}
