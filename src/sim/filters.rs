//! The `filters` language of GHL's POST searches: leaves `{field, operator, value}` and groups
//! `{group: "AND"|"OR", filters: [...]}`; top-level filters are ANDed. Also used for the
//! opportunity search (snake_case fields, `contains_set`).

use std::ops::Bound;

use serde_json::Value;

use super::data::{MsRange, parse_time};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    NotEq,
    Contains,
    NotContains,
    Exists,
    NotExists,
    Range,
    ContainsSet,
}

#[derive(Debug, Clone)]
pub enum Filter {
    Leaf { field: String, op: Op, value: Value },
    Group { or: bool, filters: Vec<Filter> },
}

/// Parses a `filters` array; `known` says which fields exist. Errors are messages for a 400.
pub fn parse(v: &Value, known: &dyn Fn(&str) -> bool) -> Result<Vec<Filter>, String> {
    let arr = v
        .as_array()
        .ok_or_else(|| "filters must be an array".to_string())?;
    arr.iter().map(|f| parse_one(f, known)).collect()
}

fn parse_one(v: &Value, known: &dyn Fn(&str) -> bool) -> Result<Filter, String> {
    let obj = v
        .as_object()
        .ok_or_else(|| "each filter must be an object".to_string())?;
    if let Some(g) = obj.get("group") {
        let or = match g.as_str().map(|s| s.to_ascii_uppercase()) {
            Some(s) if s == "OR" => true,
            Some(s) if s == "AND" => false,
            _ => return Err(format!("Invalid group {g}")),
        };
        let inner = obj
            .get("filters")
            .ok_or_else(|| "a filter group needs filters".to_string())?;
        return Ok(Filter::Group {
            or,
            filters: parse(inner, known)?,
        });
    }
    let field = obj
        .get("field")
        .and_then(Value::as_str)
        .ok_or_else(|| "a filter needs a field".to_string())?;
    if !known(field) {
        return Err(format!("Invalid field {field}"));
    }
    let op = match obj.get("operator").and_then(Value::as_str).unwrap_or("") {
        "eq" => Op::Eq,
        "not_eq" => Op::NotEq,
        "contains" => Op::Contains,
        "not_contains" => Op::NotContains,
        "exists" => Op::Exists,
        "not_exists" => Op::NotExists,
        "range" => Op::Range,
        "contains_set" | "in" => Op::ContainsSet,
        other => return Err(format!("Invalid operator {other}")),
    };
    let value = obj.get("value").cloned().unwrap_or(Value::Null);
    if op == Op::Range {
        range_of(&value).ok_or_else(|| format!("Invalid range value for {field}"))?;
    }
    if op == Op::ContainsSet && !value.is_array() {
        return Err(format!("{field}: contains_set needs an array value"));
    }
    Ok(Filter::Leaf {
        field: field.to_string(),
        op,
        value,
    })
}

/// `{gt|gte|lt|lte}` with ms or ISO values.
pub fn range_of(v: &Value) -> Option<MsRange> {
    let o = v.as_object()?;
    let mut r = MsRange::default();
    let mut any = false;
    for (k, x) in o {
        let t = parse_time(x)?;
        any = true;
        match k.as_str() {
            "gt" => r.lo = Bound::Excluded(t),
            "gte" => r.lo = Bound::Included(t),
            "lt" => r.hi = Bound::Excluded(t),
            "lte" => r.hi = Bound::Included(t),
            _ => return None,
        }
    }
    any.then_some(r)
}

/// The bounds top-level `range` filters put on `field`, to narrow an index walk.
pub fn narrowing(filters: &[Filter], field: &str) -> MsRange {
    let mut r = MsRange::default();
    for f in filters {
        if let Filter::Leaf {
            field: fl,
            op: Op::Range,
            value,
        } = f
            && fl == field
            && let Some(x) = range_of(value)
        {
            r.narrow(&x);
        }
    }
    r
}

fn as_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.to_lowercase()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn scalar_eq(have: &Value, want: &Value) -> bool {
    match (have, want) {
        (Value::Number(h), w) => match (h.as_f64(), parse_time(w)) {
            (Some(h), Some(w)) => (h - w as f64).abs() < 1e-9 || h == w as f64,
            _ => w.as_f64().zip(h.as_f64()).is_some_and(|(a, b)| a == b),
        },
        (Value::Bool(h), Value::Bool(w)) => h == w,
        (Value::Bool(h), Value::String(w)) => h.to_string() == *w,
        (h, w) => as_text(h).is_some() && as_text(h) == as_text(w),
    }
}

fn any_of(have: &Value, f: impl Fn(&Value) -> bool) -> bool {
    match have {
        Value::Array(xs) => xs.iter().any(f),
        x => f(x),
    }
}

fn present(v: &Option<Value>) -> bool {
    match v {
        None | Some(Value::Null) => false,
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Array(a)) => !a.is_empty(),
        _ => true,
    }
}

/// Does a record (seen through `get`) pass every filter?
pub fn matches(filters: &[Filter], get: &dyn Fn(&str) -> Option<Value>) -> bool {
    filters.iter().all(|f| eval(f, get))
}

fn eval(f: &Filter, get: &dyn Fn(&str) -> Option<Value>) -> bool {
    match f {
        Filter::Group { or: true, filters } => filters.iter().any(|x| eval(x, get)),
        Filter::Group { or: false, filters } => filters.iter().all(|x| eval(x, get)),
        Filter::Leaf { field, op, value } => {
            let have = get(field);
            match op {
                Op::Exists => present(&have),
                Op::NotExists => !present(&have),
                _ => {
                    let Some(have) = have else {
                        return matches!(op, Op::NotEq | Op::NotContains);
                    };
                    let eq = |w: &Value| any_of(&have, |h| scalar_eq(h, w));
                    let contains = |w: &Value| {
                        let w = as_text(w).unwrap_or_default();
                        any_of(&have, |h| as_text(h).is_some_and(|h| h.contains(&w)))
                    };
                    match op {
                        Op::Eq => any_of(value, eq),
                        Op::NotEq => !any_of(value, eq),
                        Op::Contains => any_of(value, contains),
                        Op::NotContains => !any_of(value, contains),
                        Op::ContainsSet => value.as_array().is_some_and(|ws| ws.iter().any(eq)),
                        Op::Range => match (range_of(value), parse_time(&have)) {
                            (Some(r), Some(t)) => r.contains(t),
                            _ => false,
                        },
                        Op::Exists | Op::NotExists => unreachable!("handled above"),
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn leaves_groups_and_ranges() {
        let known = |f: &str| ["dateUpdated", "firstNameLowerCase", "tags"].contains(&f);
        let fs = parse(
            &json!([
                {"field": "dateUpdated", "operator": "range", "value": {"gte": "2025-01-01T00:00:00.000Z"}},
                {"group": "OR", "filters": [
                    {"field": "firstNameLowerCase", "operator": "eq", "value": "alex"},
                    {"field": "tags", "operator": "contains", "value": "vi"}
                ]}
            ]),
            &known,
        )
        .expect("valid filters");
        let rec = |name: &'static str, t: i64, tags: Value| {
            move |f: &str| match f {
                "dateUpdated" => Some(json!(t)),
                "firstNameLowerCase" => Some(json!(name)),
                "tags" => Some(tags.clone()),
                _ => None,
            }
        };
        assert!(matches(&fs, &rec("alex", 1_800_000_000_000, json!([]))));
        assert!(matches(&fs, &rec("bo", 1_800_000_000_000, json!(["vip"]))));
        assert!(!matches(&fs, &rec("bo", 1_800_000_000_000, json!(["x"]))));
        assert!(!matches(&fs, &rec("alex", 1_600_000_000_000, json!([]))));
        assert_eq!(
            parse(
                &json!([{"field": "nope", "operator": "eq", "value": 1}]),
                &known
            )
            .expect_err("unknown field"),
            "Invalid field nope"
        );
    }
}
