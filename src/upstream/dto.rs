//! GHL's wire format (serde DTOs) and its mapping into `domain` records, in one place.
//!
//! The DTOs tolerate what GHL is known to vary (shared/ghl-api/FACTS.md §10): `_id` or `id`,
//! ISO-8601 strings or epoch milliseconds for times, `value` or `fieldValue` for custom fields,
//! numeric or string conversation types, and fields GHL adds later (unknown fields are ignored).
//! Rows are decoded one by one: a row that does not parse is reported with its id and skipped,
//! it does not sink its page.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use crate::domain;

/// A time as GHL sends it: an ISO-8601 string, epoch milliseconds, or a numeric string.
pub fn parse_time(value: &Value) -> Option<DateTime<Utc>> {
    match value {
        Value::Number(n) => n.as_i64().and_then(DateTime::from_timestamp_millis),
        Value::String(s) if s.is_empty() => None,
        Value::String(s) => DateTime::parse_from_rfc3339(s)
            .map(|t| t.to_utc())
            .ok()
            .or_else(|| {
                s.parse::<i64>()
                    .ok()
                    .and_then(DateTime::from_timestamp_millis)
            })
            .or_else(|| {
                // "2024-01-05T10:00:00.000" without an offset, or a bare date: UTC.
                chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
                    .ok()
                    .or_else(|| {
                        chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
                            .ok()
                            .and_then(|d| d.and_hms_opt(0, 0, 0))
                    })
                    .map(|t| t.and_utc())
            }),
        _ => None,
    }
}

fn time<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
    Ok(parse_time(&Value::deserialize(d)?))
}

/// A string, or a number GHL sent where a string was expected.
fn lenient_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::String(s) => Some(s),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    })
}

fn lenient_i32<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i32>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Number(n) => n.as_i64().map(|n| n as i32),
        Value::String(s) => s.parse().ok(),
        _ => None,
    })
}

fn lenient_f64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    })
}

fn lenient_bool<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Bool(b) => b,
        Value::String(s) => s == "true" || s == "completed",
        Value::Number(n) => n.as_i64() == Some(1),
        _ => false,
    })
}

fn strings<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Array(items) => items
            .into_iter()
            .filter_map(|v| match v {
                Value::String(s) => Some(s),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    })
}

/// Gives a row that only has `_id` (task search, installed locations) an `id`.
pub fn normalize_id(row: &mut Value) {
    if let Some(map) = row.as_object_mut()
        && !map.contains_key("id")
        && let Some(id) = map.get("_id").cloned()
    {
        map.insert("id".into(), id);
    }
}

/// The id of a row, `id` or `_id`, for reports about rows that do not parse.
pub fn row_id(row: &Value) -> String {
    row.get("id")
        .or_else(|| row.get("_id"))
        .and_then(Value::as_str)
        .unwrap_or("<no id>")
        .to_owned()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LocationDto {
    pub id: String,
    #[serde(default, deserialize_with = "lenient_string")]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    pub company_id: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    pub timezone: Option<String>,
    #[serde(default, deserialize_with = "time")]
    pub date_added: Option<DateTime<Utc>>,
    #[serde(default, deserialize_with = "time")]
    pub created_at: Option<DateTime<Utc>>,
}

impl LocationDto {
    pub fn into_domain(self) -> domain::Location {
        domain::Location {
            id: self.id,
            name: self.name,
            company_id: self.company_id,
            timezone: self.timezone,
            created_at: self.date_added.or(self.created_at),
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserDto {
    pub id: String,
    #[serde(default, deserialize_with = "lenient_string")]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    pub first_name: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    pub last_name: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    pub email: Option<String>,
    #[serde(default, deserialize_with = "lenient_bool")]
    pub deleted: bool,
}

impl UserDto {
    pub fn into_domain(self, location_id: &str) -> domain::User {
        domain::User {
            id: self.id,
            location_id: location_id.to_owned(),
            name: self.name,
            first_name: self.first_name,
            last_name: self.last_name,
            email: self.email,
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CustomFieldDto {
    pub id: String,
    #[serde(default, deserialize_with = "lenient_string")]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    pub field_key: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    pub data_type: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    pub model: Option<String>,
    #[serde(default, deserialize_with = "lenient_i32")]
    pub position: Option<i32>,
}

impl CustomFieldDto {
    pub fn into_domain(self, location_id: &str) -> domain::CustomField {
        domain::CustomField {
            id: self.id,
            location_id: location_id.to_owned(),
            name: self.name,
            field_key: self.field_key,
            data_type: self.data_type,
            model: self.model,
            position: self.position.unwrap_or(0),
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StageDto {
    pub id: String,
    #[serde(default, deserialize_with = "lenient_string")]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "lenient_i32")]
    pub position: Option<i32>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PipelineDto {
    pub id: String,
    #[serde(default, deserialize_with = "lenient_string")]
    pub name: Option<String>,
    #[serde(default)]
    pub stages: Vec<StageDto>,
}

impl PipelineDto {
    pub fn into_domain(self, location_id: &str) -> domain::Pipeline {
        domain::Pipeline {
            id: self.id,
            location_id: location_id.to_owned(),
            name: self.name,
            stages: self
                .stages
                .into_iter()
                .enumerate()
                .map(|(i, s)| domain::PipelineStage {
                    id: s.id,
                    name: s.name,
                    position: s.position.unwrap_or(i as i32),
                })
                .collect(),
        }
    }
}

#[derive(Deserialize)]
pub struct CustomValueDto {
    pub id: String,
    /// Contacts say `value`; opportunities say `fieldValue`.
    #[serde(default)]
    pub value: Value,
    #[serde(default, rename = "fieldValue")]
    pub field_value: Value,
}

impl CustomValueDto {
    fn into_value(self) -> Value {
        if self.value.is_null() {
            self.field_value
        } else {
            self.value
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContactDto {
    pub id: String,
    #[serde(default, deserialize_with = "lenient_string")]
    pub first_name: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    pub last_name: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    pub contact_name: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    pub email: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    pub phone: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    pub company_name: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    pub source: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    pub assigned_to: Option<String>,
    #[serde(default, deserialize_with = "strings")]
    pub tags: Vec<String>,
    #[serde(default)]
    pub custom_fields: Vec<CustomValueDto>,
    #[serde(default, deserialize_with = "time")]
    pub date_added: Option<DateTime<Utc>>,
    #[serde(default, deserialize_with = "time")]
    pub date_updated: Option<DateTime<Utc>>,
}

impl ContactDto {
    pub fn into_domain(self, location_id: &str) -> domain::Contact {
        let date_added = self.date_added.unwrap_or_default();
        domain::Contact {
            id: self.id,
            location_id: location_id.to_owned(),
            first_name: self.first_name,
            last_name: self.last_name,
            name: self.name.or(self.contact_name),
            email: self.email,
            phone: self.phone,
            company_name: self.company_name,
            source: self.source,
            assigned_to: self.assigned_to.filter(|a| !a.is_empty()),
            tags: self.tags,
            custom_fields: self
                .custom_fields
                .into_iter()
                .map(|v| domain::CustomFieldValue {
                    field_id: v.id.clone(),
                    value: v.into_value(),
                })
                .collect(),
            date_added,
            date_updated: self.date_updated.unwrap_or(date_added),
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskDto {
    pub id: String,
    #[serde(default, deserialize_with = "lenient_string")]
    pub contact_id: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    pub title: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    pub body: Option<String>,
    #[serde(default, deserialize_with = "time")]
    pub due_date: Option<DateTime<Utc>>,
    #[serde(default, deserialize_with = "lenient_bool")]
    pub completed: bool,
    #[serde(default, deserialize_with = "lenient_string")]
    pub assigned_to: Option<String>,
    #[serde(default, deserialize_with = "time")]
    pub date_added: Option<DateTime<Utc>>,
    #[serde(default, deserialize_with = "time")]
    pub date_updated: Option<DateTime<Utc>>,
    #[serde(default, deserialize_with = "lenient_bool")]
    pub deleted: bool,
}

impl TaskDto {
    pub fn into_domain(self, location_id: &str) -> domain::Task {
        domain::Task {
            id: self.id,
            location_id: location_id.to_owned(),
            contact_id: self.contact_id.filter(|c| !c.is_empty()),
            title: self.title,
            body: self.body,
            due_date: self.due_date,
            completed: self.completed,
            assigned_to: self.assigned_to.filter(|a| !a.is_empty()),
            date_added: self.date_added,
            date_updated: self.date_updated,
        }
    }
}

/// GHL's numeric conversation types (`GET /conversations/{id}`), as their names.
fn conversation_type<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::String(s) => Some(s),
        Value::Number(n) => match n.as_i64() {
            Some(1) => Some("TYPE_PHONE".into()),
            Some(2) => Some("TYPE_EMAIL".into()),
            Some(3) => Some("TYPE_FB_MESSENGER".into()),
            Some(4) => Some("TYPE_REVIEW".into()),
            Some(5) => Some("TYPE_GROUP_SMS".into()),
            _ => Some(n.to_string()),
        },
        _ => None,
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConversationDto {
    pub id: String,
    #[serde(default, deserialize_with = "lenient_string")]
    pub contact_id: Option<String>,
    #[serde(default, rename = "type", deserialize_with = "conversation_type")]
    pub kind: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    pub last_message_body: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    pub last_message_type: Option<String>,
    #[serde(default, deserialize_with = "time")]
    pub last_message_date: Option<DateTime<Utc>>,
    #[serde(default, deserialize_with = "lenient_i32")]
    pub unread_count: Option<i32>,
    #[serde(default, deserialize_with = "lenient_string")]
    pub assigned_to: Option<String>,
    #[serde(default, deserialize_with = "time")]
    pub date_added: Option<DateTime<Utc>>,
    #[serde(default, deserialize_with = "time")]
    pub date_updated: Option<DateTime<Utc>>,
    #[serde(default, deserialize_with = "lenient_bool")]
    pub deleted: bool,
}

impl ConversationDto {
    pub fn into_domain(self, location_id: &str) -> domain::Conversation {
        domain::Conversation {
            id: self.id,
            location_id: location_id.to_owned(),
            contact_id: self.contact_id.filter(|c| !c.is_empty()),
            kind: self.kind,
            last_message_body: self.last_message_body,
            last_message_type: self.last_message_type,
            last_message_date: self.last_message_date,
            unread_count: self.unread_count.unwrap_or(0),
            assigned_to: self.assigned_to.filter(|a| !a.is_empty()),
            date_added: self.date_added,
            date_updated: self.date_updated,
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OpportunityDto {
    pub id: String,
    #[serde(default, deserialize_with = "lenient_string")]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "lenient_f64")]
    pub monetary_value: Option<f64>,
    #[serde(default, deserialize_with = "lenient_string")]
    pub pipeline_id: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    pub pipeline_stage_id: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    pub assigned_to: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    pub status: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    pub contact_id: Option<String>,
    #[serde(default)]
    pub contact: Option<Value>,
    #[serde(default, deserialize_with = "time")]
    pub created_at: Option<DateTime<Utc>>,
    #[serde(default, deserialize_with = "time")]
    pub updated_at: Option<DateTime<Utc>>,
    #[serde(default, deserialize_with = "time")]
    pub date_added: Option<DateTime<Utc>>,
    #[serde(default, deserialize_with = "time")]
    pub date_updated: Option<DateTime<Utc>>,
}

impl OpportunityDto {
    pub fn into_domain(self, location_id: &str) -> domain::Opportunity {
        let contact_id = self.contact_id.filter(|c| !c.is_empty()).or_else(|| {
            self.contact
                .as_ref()
                .and_then(|c| c.get("id"))
                .and_then(Value::as_str)
                .map(str::to_owned)
        });
        domain::Opportunity {
            id: self.id,
            location_id: location_id.to_owned(),
            contact_id,
            pipeline_id: self.pipeline_id,
            stage_id: self.pipeline_stage_id,
            name: self.name,
            status: self.status,
            monetary_value: self.monetary_value,
            assigned_to: self.assigned_to.filter(|a| !a.is_empty()),
            created_at: self.created_at.or(self.date_added),
            updated_at: self.updated_at.or(self.date_updated),
        }
    }
}

/// Decodes the rows of a list, skipping (and returning the ids of) rows that do not parse.
pub fn decode_rows<T: serde::de::DeserializeOwned>(rows: Vec<Value>) -> (Vec<T>, Vec<String>) {
    let mut ok = Vec::with_capacity(rows.len());
    let mut skipped = Vec::new();
    for mut row in rows {
        normalize_id(&mut row);
        let id = row_id(&row);
        match serde_json::from_value::<T>(row) {
            Ok(item) => ok.push(item),
            Err(error) => {
                tracing::warn!(record_id = %id, error = %error, "skipping a record that does not parse");
                skipped.push(id);
            }
        }
    }
    (ok, skipped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn times_come_as_iso_or_milliseconds() {
        let iso = parse_time(&json!("2025-02-21T10:00:00.000Z")).unwrap();
        assert_eq!(iso.timestamp_millis(), 1_740_132_000_000);
        assert_eq!(parse_time(&json!(1_740_132_000_000_i64)), Some(iso));
        assert_eq!(parse_time(&json!("1740132000000")), Some(iso));
        assert_eq!(parse_time(&json!("2025-02-21T10:00:00.000")), Some(iso));
        assert_eq!(parse_time(&json!(null)), None);
        assert_eq!(parse_time(&json!("")), None);
    }

    #[test]
    fn task_rows_use_underscore_id_and_contacts_use_value() {
        let (tasks, _): (Vec<TaskDto>, _) = decode_rows(vec![json!({
            "_id": "t1", "title": "Call", "completed": false, "contactId": "c1",
            "dueDate": "2025-01-01T00:00:00Z", "statusGroup": "to_do", "searchAfter": [1, "t1"]
        })]);
        assert_eq!(tasks[0].id, "t1");
        let contact: ContactDto = serde_json::from_value(json!({
            "id": "c1", "tags": ["a", 3, "b"], "customFields": [{"id": "f", "value": ["x"]}],
            "dateAdded": "2024-01-01T00:00:00Z", "dnd": false
        }))
        .unwrap();
        let contact = contact.into_domain("loc");
        assert_eq!(contact.tags, ["a", "b"]);
        assert_eq!(contact.custom_fields[0].value, json!(["x"]));
        assert_eq!(contact.date_updated, contact.date_added);
        let opp: OpportunityDto = serde_json::from_value(json!({
            "id": "o1", "monetaryValue": "12.5", "contact": {"id": "c9"},
            "customFields": [{"id": "f", "fieldValue": {"a": 1}}], "createdAt": "2024-01-01T00:00:00Z"
        }))
        .unwrap();
        let opp = opp.into_domain("loc");
        assert_eq!(
            (opp.monetary_value, opp.contact_id.as_deref()),
            (Some(12.5), Some("c9"))
        );
    }

    #[test]
    fn both_spellings_of_a_field_may_come_together() {
        let (ok, skipped): (Vec<ContactDto>, _) = decode_rows(vec![json!({
            "id": "c1", "_id": "c1", "name": "Jo Doe", "contactName": "Jo Doe",
            "customFields": [{"id": "f", "value": "1", "fieldValue": "1"}]
        })]);
        assert!(skipped.is_empty());
        assert_eq!(ok[0].name.as_deref(), Some("Jo Doe"));
    }

    #[test]
    fn conversation_types_may_be_numbers() {
        let c: ConversationDto = serde_json::from_value(
            json!({"id": "x", "type": 2, "lastMessageDate": 1_700_000_000_000_i64}),
        )
        .unwrap();
        assert_eq!(c.kind.as_deref(), Some("TYPE_EMAIL"));
        assert!(c.last_message_date.is_some());
    }

    #[test]
    fn a_bad_row_is_skipped_with_its_id() {
        let (ok, skipped): (Vec<ContactDto>, _) = decode_rows(vec![
            json!({"id": "a"}),
            json!({"_id": "b", "tags": "x", "customFields": "nope"}),
            json!({"noid": 1}),
        ]);
        assert_eq!(ok.len(), 1);
        assert_eq!(skipped, ["b", "<no id>"]);
    }
}
