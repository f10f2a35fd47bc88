//! Plain records of the GHL resources the gateway caches: what `upstream` produces, what `store`
//! writes and what `sync` moves between them. No I/O here.
//!
//! Times are `DateTime<Utc>`; the store keeps them as UTC milliseconds.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A GHL sub-account.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Location {
    pub id: String,
    pub name: Option<String>,
    pub company_id: Option<String>,
    pub timezone: Option<String>,
    pub created_at: Option<DateTime<Utc>>,
}

/// A user of a location (the target of `assignedTo`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct User {
    pub id: String,
    pub location_id: String,
    pub name: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub email: Option<String>,
}

/// The definition of a custom field.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CustomField {
    pub id: String,
    pub location_id: String,
    pub name: Option<String>,
    pub field_key: Option<String>,
    pub data_type: Option<String>,
    /// `contact` or `opportunity`.
    pub model: Option<String>,
    pub position: i32,
}

/// One custom field value of a contact, as GHL sent it (string, number, array or object).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CustomFieldValue {
    pub field_id: String,
    pub value: serde_json::Value,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Contact {
    pub id: String,
    pub location_id: String,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub name: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub company_name: Option<String>,
    pub source: Option<String>,
    pub assigned_to: Option<String>,
    pub tags: Vec<String>,
    pub custom_fields: Vec<CustomFieldValue>,
    pub date_added: DateTime<Utc>,
    pub date_updated: DateTime<Utc>,
}

impl Contact {
    /// The name to show: GHL's `name`, else first and last name, else the email or phone.
    pub fn display_name(&self) -> String {
        if let Some(name) = self
            .name
            .as_deref()
            .map(str::trim)
            .filter(|n| !n.is_empty())
        {
            return name.to_owned();
        }
        let joined = [self.first_name.as_deref(), self.last_name.as_deref()]
            .into_iter()
            .flatten()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        if !joined.is_empty() {
            return joined;
        }
        self.email
            .clone()
            .or_else(|| self.phone.clone())
            .unwrap_or_default()
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Task {
    pub id: String,
    pub location_id: String,
    pub contact_id: Option<String>,
    pub title: Option<String>,
    pub body: Option<String>,
    pub due_date: Option<DateTime<Utc>>,
    pub completed: bool,
    pub assigned_to: Option<String>,
    pub date_added: Option<DateTime<Utc>>,
    pub date_updated: Option<DateTime<Utc>>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Conversation {
    pub id: String,
    pub location_id: String,
    pub contact_id: Option<String>,
    /// GHL's conversation type, e.g. `TYPE_PHONE`.
    pub kind: Option<String>,
    pub last_message_body: Option<String>,
    pub last_message_type: Option<String>,
    pub last_message_date: Option<DateTime<Utc>>,
    pub unread_count: i32,
    pub assigned_to: Option<String>,
    pub date_added: Option<DateTime<Utc>>,
    pub date_updated: Option<DateTime<Utc>>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PipelineStage {
    pub id: String,
    pub name: Option<String>,
    pub position: i32,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Pipeline {
    pub id: String,
    pub location_id: String,
    pub name: Option<String>,
    pub stages: Vec<PipelineStage>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Opportunity {
    pub id: String,
    pub location_id: String,
    pub contact_id: Option<String>,
    pub pipeline_id: Option<String>,
    pub stage_id: Option<String>,
    pub name: Option<String>,
    /// `open`, `won`, `lost` or `abandoned`.
    pub status: Option<String>,
    pub monetary_value: Option<f64>,
    pub assigned_to: Option<String>,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
}

/// A kind of synced resource: one table, one sync stage.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Resource {
    Users,
    CustomFields,
    Pipelines,
    Contacts,
    Tasks,
    Conversations,
    Opportunities,
}

impl Resource {
    pub const ALL: [Resource; 7] = [
        Resource::Users,
        Resource::CustomFields,
        Resource::Pipelines,
        Resource::Contacts,
        Resource::Tasks,
        Resource::Conversations,
        Resource::Opportunities,
    ];

    /// The stage name used in `sync_stages` and in the GraphQL `SyncStage.name`.
    pub fn as_str(self) -> &'static str {
        match self {
            Resource::Users => "users",
            Resource::CustomFields => "customFields",
            Resource::Pipelines => "pipelines",
            Resource::Contacts => "contacts",
            Resource::Tasks => "tasks",
            Resource::Conversations => "conversations",
            Resource::Opportunities => "opportunities",
        }
    }
}

/// Milliseconds since the epoch, the store's time unit.
pub fn to_ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

/// The inverse of [`to_ms`]; out-of-range values clamp to the epoch.
pub fn from_ms(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_name_falls_back_in_order() {
        let mut c = Contact {
            first_name: Some("Ada".into()),
            last_name: Some(" Lovelace ".into()),
            email: Some("ada@example.com".into()),
            ..Default::default()
        };
        assert_eq!(c.display_name(), "Ada Lovelace");
        c.name = Some("  ".into());
        assert_eq!(c.display_name(), "Ada Lovelace");
        c.name = Some("Countess".into());
        assert_eq!(c.display_name(), "Countess");
        c.name = None;
        c.first_name = None;
        c.last_name = None;
        assert_eq!(c.display_name(), "ada@example.com");
    }

    #[test]
    fn ms_round_trip() {
        let t = from_ms(1_736_471_515_514);
        assert_eq!(to_ms(t), 1_736_471_515_514);
    }
}
