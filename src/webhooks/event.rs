//! GHL webhook payloads (FACTS.md §9.1, `shared/ghl-api/webhooks/*.json`) read into the store's
//! [`EventWrite`]s. Payloads are flat JSON objects with a `type`; every event carries `timestamp`
//! (ISO 8601) and `webhookId`, app events also `appId` and `versionId`.
//!
//! What a payload lacks stays unknown (`None`), never guessed: contact events carry no
//! `dateUpdated`, so the event's `timestamp` is the contact's time of change; opportunity events
//! carry no `updatedAt` either; real `TaskCreate` payloads omit `contactId` and `body`.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::Value;

use crate::domain::{Contact, CustomFieldValue, Opportunity, Task};
use crate::store::EventWrite;

/// Why a body is not a GHL event (answered 400 with code `BAD_EVENT`).
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error("the body is not a JSON object")]
    NotAnObject,
    #[error("the event has no string `{0}`")]
    Missing(&'static str),
    #[error("`timestamp` is not an ISO 8601 time")]
    BadTimestamp,
    #[error("a `{kind}` event is malformed: {reason}")]
    Malformed { kind: String, reason: String },
}

/// The fields every event carries, read before anything else.
#[derive(Clone, Debug, PartialEq)]
pub struct Envelope {
    /// GHL's `type`: `ContactCreate`, `INSTALL`, ...
    pub kind: String,
    pub webhook_id: String,
    pub timestamp: DateTime<Utc>,
    /// Absent for agency-level `INSTALL` / `UNINSTALL`.
    pub location_id: Option<String>,
}

/// What an event asks of the gateway.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// A change to the cached records (or the location's credentials).
    Write(Box<EventWrite>),
    /// `INSTALL` of the app on the location, with the agency's `companyId` when the event has one.
    Install { company_id: Option<String> },
    /// A type the cache does not hold (notes, appointments, ...): acknowledged, recorded.
    Ignore,
}

/// Reads the envelope of `body`; the parsed JSON comes back for [`action`].
pub fn envelope(body: &[u8]) -> Result<(Envelope, Value), EventError> {
    let value: Value = serde_json::from_slice(body).map_err(|_| EventError::NotAnObject)?;
    let object = value.as_object().ok_or(EventError::NotAnObject)?;
    let text = |key: &'static str| {
        object
            .get(key)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    let kind = text("type").ok_or(EventError::Missing("type"))?;
    let webhook_id = text("webhookId").ok_or(EventError::Missing("webhookId"))?;
    let timestamp = text("timestamp").ok_or(EventError::Missing("timestamp"))?;
    let timestamp = DateTime::parse_from_rfc3339(&timestamp)
        .map_err(|_| EventError::BadTimestamp)?
        .with_timezone(&Utc);
    let location_id = text("locationId");
    Ok((
        Envelope {
            kind,
            webhook_id,
            timestamp,
            location_id,
        },
        value,
    ))
}

/// The fields of contact events (`Contact*`), as GHL names them.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ContactPayload {
    id: String,
    first_name: Option<String>,
    last_name: Option<String>,
    name: Option<String>,
    email: Option<String>,
    phone: Option<String>,
    company_name: Option<String>,
    source: Option<String>,
    assigned_to: Option<String>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    custom_fields: Vec<CustomValuePayload>,
    date_added: Option<String>,
    date_updated: Option<String>,
}

#[derive(Deserialize)]
struct CustomValuePayload {
    id: String,
    #[serde(default)]
    value: Value,
}

/// The fields of `Task*` events.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TaskPayload {
    id: String,
    contact_id: Option<String>,
    title: Option<String>,
    body: Option<String>,
    assigned_to: Option<String>,
    due_date: Option<String>,
    date_added: Option<String>,
    completed: Option<bool>,
}

/// The fields of `Opportunity*` events.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OpportunityPayload {
    id: String,
    contact_id: Option<String>,
    name: Option<String>,
    pipeline_id: Option<String>,
    pipeline_stage_id: Option<String>,
    status: Option<String>,
    monetary_value: Option<f64>,
    assigned_to: Option<String>,
    date_added: Option<String>,
}

/// The fields of `InboundMessage` / `OutboundMessage` that the cache keeps.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MessagePayload {
    conversation_id: String,
    body: Option<String>,
    message_type: Option<String>,
    date_added: Option<String>,
}

/// The fields of `ConversationUnreadUpdate`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UnreadPayload {
    id: String,
    unread_count: Option<i32>,
    #[serde(default)]
    deleted: bool,
}

fn time(text: Option<&str>) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text?)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// GHL's `messageType` of a message (`SMS`, `Email`, `CALL`) in the vocabulary of the
/// conversations' `lastMessageType` (`TYPE_SMS`, `TYPE_EMAIL`, `TYPE_CALL`).
fn conversation_message_type(message_type: &str) -> String {
    let upper = message_type.to_ascii_uppercase();
    if upper.starts_with("TYPE_") {
        upper
    } else {
        format!("TYPE_{upper}")
    }
}

/// What the event `envelope` (with its parsed `value`) asks of the gateway.
pub fn action(envelope: &Envelope, value: Value) -> Result<Action, EventError> {
    let kind = envelope.kind.as_str();
    let at = envelope.timestamp;
    let location_id = envelope.location_id.clone().unwrap_or_default();
    // serde's message may quote a value of the body, which must not reach the logs.
    let malformed = |_: serde_json::Error| EventError::Malformed {
        kind: kind.to_owned(),
        reason: "a field is missing or has the wrong type".into(),
    };
    let needs_location = || {
        envelope
            .location_id
            .is_some()
            .then_some(())
            .ok_or(EventError::Missing("locationId"))
    };
    let write = match kind {
        "ContactCreate" | "ContactUpdate" | "ContactDelete" | "ContactTagUpdate"
        | "ContactDndUpdate" => {
            needs_location()?;
            let p: ContactPayload = serde_json::from_value(value).map_err(malformed)?;
            let updated = time(p.date_updated.as_deref()).unwrap_or(at);
            let contact = Contact {
                id: p.id,
                location_id,
                first_name: p.first_name,
                last_name: p.last_name,
                name: p.name,
                email: p.email,
                phone: p.phone,
                company_name: p.company_name,
                source: p.source,
                assigned_to: p.assigned_to,
                tags: p.tags,
                custom_fields: p
                    .custom_fields
                    .into_iter()
                    .map(|v| CustomFieldValue {
                        field_id: v.id,
                        value: v.value,
                    })
                    .collect(),
                // The column is required; a payload without `dateAdded` (none documented) is
                // refused rather than given a made-up creation time.
                date_added: time(p.date_added.as_deref()).ok_or_else(|| EventError::Malformed {
                    kind: kind.to_owned(),
                    reason: "no ISO 8601 `dateAdded`".into(),
                })?,
                date_updated: updated,
            };
            if kind == "ContactDelete" {
                // The row's version becomes the delete's time, so a sync page read before the
                // delete (holding the last update) does not bring the contact back.
                let date_updated = contact.date_updated.max(at);
                EventWrite::ContactDeleted(Contact {
                    date_updated,
                    ..contact
                })
            } else {
                EventWrite::Contact(contact)
            }
        }
        "TaskCreate" | "TaskComplete" | "TaskDelete" => {
            needs_location()?;
            let p: TaskPayload = serde_json::from_value(value).map_err(malformed)?;
            let task = Task {
                id: p.id,
                location_id,
                contact_id: p.contact_id,
                title: p.title,
                body: p.body,
                due_date: time(p.due_date.as_deref()),
                // A created task is open unless the payload says otherwise; a completed one is done.
                completed: kind == "TaskComplete" || p.completed.unwrap_or(false),
                assigned_to: p.assigned_to,
                date_added: time(p.date_added.as_deref()),
                date_updated: Some(at),
            };
            if kind == "TaskDelete" {
                EventWrite::TaskDeleted(task)
            } else {
                EventWrite::Task(task)
            }
        }
        "OpportunityCreate"
        | "OpportunityUpdate"
        | "OpportunityDelete"
        | "OpportunityStageUpdate"
        | "OpportunityStatusUpdate"
        | "OpportunityMonetaryValueUpdate"
        | "OpportunityAssignedToUpdate" => {
            needs_location()?;
            let p: OpportunityPayload = serde_json::from_value(value).map_err(malformed)?;
            let opportunity = Opportunity {
                id: p.id,
                location_id,
                contact_id: p.contact_id,
                pipeline_id: p.pipeline_id,
                stage_id: p.pipeline_stage_id,
                name: p.name,
                status: p.status,
                monetary_value: p.monetary_value,
                assigned_to: p.assigned_to,
                created_at: time(p.date_added.as_deref()),
                updated_at: Some(at),
            };
            if kind == "OpportunityDelete" {
                EventWrite::OpportunityDeleted(opportunity)
            } else {
                EventWrite::Opportunity(opportunity)
            }
        }
        "InboundMessage" | "OutboundMessage" => {
            needs_location()?;
            let p: MessagePayload = serde_json::from_value(value).map_err(malformed)?;
            EventWrite::Message {
                conversation_id: p.conversation_id,
                body: p.body,
                message_type: p.message_type.as_deref().map(conversation_message_type),
                date: time(p.date_added.as_deref()).unwrap_or(at),
            }
        }
        "ConversationUnreadUpdate" => {
            needs_location()?;
            let p: UnreadPayload = serde_json::from_value(value).map_err(malformed)?;
            let Some(unread_count) = p.unread_count else {
                return Err(EventError::Malformed {
                    kind: kind.to_owned(),
                    reason: "no `unreadCount`".into(),
                });
            };
            EventWrite::ConversationUnread {
                conversation_id: p.id,
                unread_count,
                deleted: p.deleted,
                at,
            }
        }
        "UNINSTALL" if envelope.location_id.is_some() => EventWrite::Uninstalled { at },
        "INSTALL" if envelope.location_id.is_some() => {
            let company_id = value.get("companyId").and_then(Value::as_str);
            return Ok(Action::Install {
                company_id: company_id.map(str::to_owned),
            });
        }
        _ => return Ok(Action::Ignore),
    };
    Ok(Action::Write(Box::new(write)))
}

/// The record id an event names, for logs (never the body).
pub fn record_id(value: &Value) -> Option<&str> {
    ["id", "conversationId"]
        .into_iter()
        .find_map(|key| value.get(key).and_then(Value::as_str))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The official example of `name`, with the envelope fields real deliveries add.
    fn example(name: &str) -> Value {
        let path = format!(
            "{}/tests/fixtures/webhooks/{name}.json",
            env!("CARGO_MANIFEST_DIR")
        );
        let file: Value =
            serde_json::from_str(&std::fs::read_to_string(path).expect("the example exists"))
                .expect("the example is JSON");
        // The files hold GHL's `schema` and `example` of each event.
        let mut value = file["example"].clone();
        value["webhookId"] = "wh-1".into();
        value["timestamp"] = "2026-11-29T20:00:00.000Z".into();
        value
    }

    fn parse(value: Value) -> Action {
        let (envelope, value) = super::envelope(value.to_string().as_bytes()).unwrap();
        action(&envelope, value).unwrap()
    }

    #[test]
    fn a_contact_update_takes_the_event_time() {
        let Action::Write(write) = parse(example("ContactUpdate")) else {
            panic!("a write");
        };
        let EventWrite::Contact(c) = *write else {
            panic!("a contact write");
        };
        assert_eq!(c.id, "nmFmQEsNgz6AVpgLVUJ0");
        assert_eq!(c.location_id, "ve9EPM428h8vShlRW1KT");
        assert_eq!(c.tags.len(), 2);
        assert_eq!(c.custom_fields[0].value, Value::from("XYZ Corp"));
        assert_eq!(c.date_updated.to_rfc3339(), "2026-11-29T20:00:00+00:00");
    }

    #[test]
    fn a_real_task_create_leaves_contact_and_body_unknown() {
        let mut value = example("TaskCreate");
        let object = value.as_object_mut().unwrap();
        object.remove("contactId");
        object.remove("body");
        let Action::Write(write) = parse(value) else {
            panic!("a write");
        };
        let EventWrite::Task(t) = *write else {
            panic!("a task write");
        };
        assert_eq!((t.contact_id, t.body, t.completed), (None, None, false));
        let Action::Write(write) = parse(example("TaskComplete")) else {
            panic!("a write");
        };
        let EventWrite::Task(t) = *write else {
            panic!("a task write");
        };
        assert!(t.completed);
    }

    #[test]
    fn message_types_meet_the_conversations_vocabulary() {
        let Action::Write(write) = parse(example("InboundMessage")) else {
            panic!("a write");
        };
        let EventWrite::Message { message_type, .. } = *write else {
            panic!("a message write");
        };
        assert_eq!(message_type.as_deref(), Some("TYPE_SMS"));
        assert_eq!(conversation_message_type("Email"), "TYPE_EMAIL");
    }

    #[test]
    fn every_documented_type_is_understood() {
        for name in [
            "ContactCreate",
            "ContactDelete",
            "ContactDndUpdate",
            "ContactTagUpdate",
            "OpportunityAssignedToUpdate",
            "OpportunityCreate",
            "OpportunityDelete",
            "OpportunityMonetaryValueUpdate",
            "OpportunityStageUpdate",
            "OpportunityStatusUpdate",
            "OpportunityUpdate",
            "OutboundMessage",
            "ConversationUnreadWebhook",
            "TaskDelete",
            "AppUninstall",
            "AppInstall",
        ] {
            let action = parse(example(name));
            assert_ne!(action, Action::Ignore, "{name}");
        }
    }

    #[test]
    fn a_malformed_event_names_no_value_of_its_body() {
        let mut value = example("ConversationUnreadWebhook");
        value["unreadCount"] = "secret-value".into();
        let (envelope, value) = super::envelope(value.to_string().as_bytes()).unwrap();
        let error = action(&envelope, value).unwrap_err();
        assert!(matches!(error, EventError::Malformed { .. }));
        assert!(!error.to_string().contains("secret-value"), "{error}");
    }

    #[test]
    fn a_body_without_the_envelope_is_refused() {
        assert!(matches!(envelope(b"[1]"), Err(EventError::NotAnObject)));
        assert!(matches!(
            envelope(b"{\"type\":"),
            Err(EventError::NotAnObject)
        ));
        assert!(matches!(
            envelope(br#"{"type":"ContactCreate","timestamp":"2026-11-29T20:00:00Z"}"#),
            Err(EventError::Missing("webhookId"))
        ));
        assert!(matches!(
            envelope(br#"{"type":"X","webhookId":"a","timestamp":"yesterday"}"#),
            Err(EventError::BadTimestamp)
        ));
    }
}
