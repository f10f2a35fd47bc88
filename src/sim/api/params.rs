//! Parsers of GHL's query and body parameters, with GHL's validation answers (400 for a malformed
//! body, 422 with a list of messages for a bad value or an unknown key). They read input only.

// Handlers return `Result<_, Response>`: the error *is* the HTTP answer, built once per failed
// request, so boxing it would only add noise.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::response::Response;
use serde_json::{Map, Value, json};

use super::gate::Ctx;
use super::layer::{bad_request, unprocessable};
use crate::sim::data::{Key, parse_time};
use crate::sim::filters::{self, Filter};
use crate::sim::{Location, Shared};

/// A JSON object body (an empty body reads as `{}`: 400 when it is not an object) holding only
/// the `allowed` keys (422 otherwise).
pub(super) fn json_body(
    ctx: &Ctx,
    bytes: &Bytes,
    allowed: &[&str],
) -> Result<Map<String, Value>, Response> {
    let body = json_object(ctx, bytes)?;
    check_keys(ctx, &body, allowed)?;
    Ok(body)
}

fn json_object(ctx: &Ctx, bytes: &Bytes) -> Result<Map<String, Value>, Response> {
    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(ctx.fail(bad_request("Request body must be a JSON object"))),
        Err(e) => Err(ctx.fail(bad_request(format!("Unexpected token in JSON body: {e}")))),
    }
}

/// GHL's validation pipe forbids unknown keys: 422 "property X should not exist".
fn check_keys(ctx: &Ctx, body: &Map<String, Value>, allowed: &[&str]) -> Result<(), Response> {
    let bad: Vec<String> = body
        .keys()
        .filter(|k| !allowed.contains(&k.as_str()))
        .map(|k| format!("property {k} should not exist"))
        .collect();
    if bad.is_empty() {
        Ok(())
    } else {
        Err(ctx.fail(unprocessable(bad)))
    }
}

/// An optional non-negative integer (JSON number or numeric string) bounded by `max`.
pub(super) fn int_field(
    ctx: &Ctx,
    v: Option<&Value>,
    name: &str,
    min: u64,
    max: u64,
) -> Result<Option<u64>, Response> {
    let Some(v) = v else { return Ok(None) };
    let n = match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.parse::<f64>().ok(),
        Value::Null => return Ok(None),
        _ => None,
    };
    match n {
        None => Err(ctx.fail(unprocessable(vec![format!(
            "{name} must be a number conforming to the specified constraints"
        )]))),
        Some(n) if n < min as f64 => Err(ctx.fail(unprocessable(vec![format!(
            "{name} must not be less than {min}"
        )]))),
        Some(n) if n > max as f64 => Err(ctx.fail(unprocessable(vec![format!(
            "{name} must not be greater than {max}"
        )]))),
        Some(n) => Ok(Some(n as u64)),
    }
}

/// An optional query parameter read like [`int_field`], from 0 to `max`.
pub(super) fn query_int(
    ctx: &Ctx,
    q: &HashMap<String, String>,
    name: &str,
    max: u64,
) -> Result<Option<u64>, Response> {
    int_field(ctx, q.get(name).map(|s| json!(s)).as_ref(), name, 0, max)
}

/// `searchAfter: [ms, id]`; the opportunity spec types the items as strings, so both are read.
pub(super) fn search_after(ctx: &Ctx, v: Option<&Value>) -> Result<Option<Key>, Response> {
    let Some(v) = v else { return Ok(None) };
    let bad = || {
        ctx.fail(unprocessable(vec![
            "searchAfter must be an array of [sortValue, id]".into(),
        ]))
    };
    let arr = v.as_array().ok_or_else(bad)?;
    if arr.is_empty() {
        return Ok(None);
    }
    if arr.len() != 2 {
        return Err(bad());
    }
    let ms = parse_time(&arr[0]).ok_or_else(bad)?;
    let id = arr[1].as_str().ok_or_else(bad)?;
    Ok(Some((ms, id.to_string())))
}

/// `sort: [{field, direction}]` restricted to time fields; returns (field, desc).
pub(super) fn sort_of(
    ctx: &Ctx,
    v: Option<&Value>,
    allowed: &[&str],
    default: (&'static str, bool),
) -> Result<(String, bool), Response> {
    let Some(first) = v.and_then(Value::as_array).and_then(|a| a.first()) else {
        if v.is_some_and(|v| !v.is_array()) {
            return Err(ctx.fail(unprocessable(vec!["sort must be an array".into()])));
        }
        return Ok((default.0.to_string(), default.1));
    };
    let field = first.get("field").and_then(Value::as_str).unwrap_or("");
    if !allowed.contains(&field) {
        return Err(ctx.fail(bad_request(format!("Invalid sort field {field}"))));
    }
    let desc = match first.get("direction").and_then(Value::as_str) {
        Some("desc") => true,
        Some("asc") | None => false,
        Some(d) => return Err(ctx.fail(bad_request(format!("Invalid sort direction {d}")))),
    };
    Ok((field.to_string(), desc))
}

/// `filters` (GHL's filter groups) over the fields in `known`; absent or null: none. A filter
/// the parser refuses is answered 400 with its message.
pub(super) fn filters_of(
    ctx: &Ctx,
    v: Option<&Value>,
    known: &[&str],
) -> Result<Vec<Filter>, Response> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(v) => filters::parse(v, &|f| known.contains(&f)).map_err(|m| ctx.fail(bad_request(m))),
    }
}

/// A required, non-empty query parameter.
pub(super) fn query_str(
    ctx: &Ctx,
    q: &HashMap<String, String>,
    name: &str,
) -> Result<String, Response> {
    required_str(ctx, q.get(name).map(|v| json!(v)).as_ref(), name).map(str::to_string)
}

/// The location a JSON body names in `locationId`: 422 when it is missing, 403 when the token
/// may not read it.
pub(super) fn body_location(
    ctx: &Ctx,
    s: &Shared,
    body: &Map<String, Value>,
) -> Result<Arc<Location>, Response> {
    ctx.location(s, required_str(ctx, body.get("locationId"), "locationId")?)
}

/// A required, non-empty string (422 with GHL's two messages otherwise).
pub(super) fn required_str<'a>(
    ctx: &Ctx,
    v: Option<&'a Value>,
    name: &str,
) -> Result<&'a str, Response> {
    match v.and_then(Value::as_str) {
        Some(s) if !s.is_empty() => Ok(s),
        _ => Err(ctx.fail(unprocessable(vec![
            format!("{name} should not be empty"),
            format!("{name} must be a string"),
        ]))),
    }
}

/// An optional list of strings; a lone string reads as a list of one.
pub(super) fn string_list(
    ctx: &Ctx,
    v: Option<&Value>,
    name: &str,
) -> Result<Option<Vec<String>>, Response> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| x.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .map(Some)
            .ok_or_else(|| {
                ctx.fail(unprocessable(vec![format!(
                    "each value in {name} must be a string"
                )]))
            }),
        Some(Value::String(s)) => Ok(Some(vec![s.clone()])),
        Some(_) => Err(ctx.fail(unprocessable(vec![format!("{name} must be an array")]))),
    }
}

/// An optional boolean.
pub(super) fn bool_field(
    ctx: &Ctx,
    v: Option<&Value>,
    name: &str,
) -> Result<Option<bool>, Response> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(ctx.fail(unprocessable(vec![format!(
            "{name} must be a boolean value"
        )]))),
    }
}

/// An optional query parameter restricted to `allowed` (empty reads as absent).
pub(super) fn enum_param<'a>(
    ctx: &Ctx,
    q: &'a HashMap<String, String>,
    name: &str,
    allowed: &[&str],
) -> Result<Option<&'a str>, Response> {
    match q.get(name).map(String::as_str) {
        None | Some("") => Ok(None),
        Some(v) if allowed.contains(&v) => Ok(Some(v)),
        Some(_) => Err(ctx.fail(unprocessable(vec![format!(
            "{name} must be one of the following values: {}",
            allowed.join(", ")
        )]))),
    }
}

/// "mm-dd-yyyy" as the opportunity GET takes it.
pub(super) fn mdy(
    ctx: &Ctx,
    v: Option<&String>,
    name: &str,
    end_of_day: bool,
) -> Result<Option<i64>, Response> {
    let Some(v) = v.filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    let d = chrono::NaiveDate::parse_from_str(v, "%m-%d-%Y")
        .map_err(|_| ctx.fail(unprocessable(vec![format!("{name} must be mm-dd-yyyy")])))?;
    let t = if end_of_day {
        d.and_hms_milli_opt(23, 59, 59, 999)
    } else {
        d.and_hms_opt(0, 0, 0)
    };
    Ok(t.map(|t| t.and_utc().timestamp_millis()))
}
