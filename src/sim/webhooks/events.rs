//! The payloads of GHL's webhook events, field for field as FACTS.md §9.1 and the official
//! schemas (`shared/ghl-api/webhooks/*.json`) describe them, with what real deliveries do where
//! the docs differ: `TaskCreate` carries neither `contactId` nor `body`, `ContactDndUpdate` has
//! `dndSettings` for `RCS` too. Absent values are left out, never sent as null. The envelope
//! (`type`, `locationId`, `timestamp`, `webhookId`, `appId`, `versionId`) is added on emit
//! (`webhooks::emit`). Pure functions of the records; no I/O.

use serde_json::{Map, Value, json};

use crate::sim::data::{Contact, Conversation, DND_CHANNELS, Opportunity, Task, iso, put};

/// `ContactCreate`, `ContactUpdate`, `ContactDelete`, `ContactTagUpdate` (ContactCreate.json):
/// no `dateUpdated`, as documented.
pub fn contact(c: &Contact) -> Value {
    let mut m = Map::new();
    m.insert("id".into(), json!(c.id));
    put(&mut m, "firstName", &c.first_name);
    put(&mut m, "lastName", &c.last_name);
    put(&mut m, "name", &c.name());
    put(&mut m, "email", &c.email);
    put(&mut m, "phone", &c.phone);
    put(&mut m, "companyName", &c.company_name);
    put(&mut m, "address1", &c.address1);
    put(&mut m, "city", &c.city);
    put(&mut m, "state", &c.state);
    put(&mut m, "country", &c.country);
    put(&mut m, "postalCode", &c.postal_code);
    put(&mut m, "website", &c.website);
    put(&mut m, "source", &c.source);
    m.insert("dateAdded".into(), json!(iso(c.date_added)));
    put(&mut m, "dateOfBirth", &c.date_of_birth);
    m.insert("dnd".into(), json!(c.dnd));
    m.insert("tags".into(), json!(c.tags));
    m.insert("attachments".into(), json!([]));
    put(&mut m, "assignedTo", &c.assigned_to);
    m.insert(
        "customFields".into(),
        Value::Array(
            c.custom_fields
                .iter()
                .map(|(id, v)| json!({"id": id, "value": v}))
                .collect(),
        ),
    );
    Value::Object(m)
}

/// `ContactDndUpdate` (ContactDndUpdate.json): the contact fields plus `dndSettings` for every
/// channel, `RCS` included (FACTS.md §9.1: "`RCS` also seen").
pub fn contact_dnd(c: &Contact) -> Value {
    let mut v = contact(c);
    v["dndSettings"] = c.dnd_settings_json(&DND_CHANNELS);
    v
}

/// `TaskComplete` and `TaskDelete` (TaskComplete.json): `id, assignedTo, body, contactId, title,
/// dateAdded, dueDate`. There is no `completed` field and no `TaskUpdate` event.
pub fn task(t: &Task) -> Value {
    let mut m = Map::new();
    m.insert("id".into(), json!(t.id));
    put(&mut m, "assignedTo", &t.assigned_to);
    put(&mut m, "body", &t.body);
    m.insert("contactId".into(), json!(t.contact_id));
    m.insert("title".into(), json!(t.title));
    m.insert("dateAdded".into(), json!(iso(t.date_added)));
    m.insert("dueDate".into(), json!(iso(t.due)));
    Value::Object(m)
}

/// `TaskCreate` as real GHL sends it: without `contactId` and `body` (FACTS.md §9.1, [I #332]),
/// although the documented schema lists both.
pub fn task_create(t: &Task) -> Value {
    let mut v = task(t);
    if let Value::Object(m) = &mut v {
        m.remove("contactId");
        m.remove("body");
    }
    v
}

/// Every `Opportunity*` event (OpportunityCreate.json): `id, assignedTo, contactId,
/// monetaryValue, name, pipelineId, pipelineStageId, source, status, dateAdded`.
pub fn opportunity(o: &Opportunity) -> Value {
    let mut m = Map::new();
    m.insert("id".into(), json!(o.id));
    put(&mut m, "assignedTo", &o.assigned_to);
    m.insert("contactId".into(), json!(o.contact_id));
    m.insert("monetaryValue".into(), json!(o.monetary_value));
    m.insert("name".into(), json!(o.name));
    m.insert("pipelineId".into(), json!(o.pipeline_id));
    m.insert("pipelineStageId".into(), json!(o.stage_id));
    put(&mut m, "source", &o.source);
    m.insert("status".into(), json!(o.status));
    m.insert("dateAdded".into(), json!(iso(o.created)));
    Value::Object(m)
}

/// The webhook's `messageType` for a conversation's `lastMessageType` (`TYPE_SMS` → `SMS`,
/// `TYPE_EMAIL` → `Email`, `TYPE_CALL` → `CALL`, as the schema examples spell them).
fn message_type(last_message_type: &str) -> String {
    match last_message_type {
        "TYPE_SMS" => "SMS".into(),
        "TYPE_EMAIL" => "Email".into(),
        "TYPE_CALL" => "CALL".into(),
        "TYPE_FACEBOOK" => "FB".into(),
        "TYPE_WEBCHAT" => "Live_Chat".into(),
        other => other.strip_prefix("TYPE_").unwrap_or(other).to_string(),
    }
}

/// `InboundMessage` or `OutboundMessage` (by the last message's direction) for the
/// conversation's last message (InboundMessage.json, OutboundMessage.json): `conversationId,
/// contactId, messageId, messageType, direction, status, body, contentType, attachments,
/// dateAdded`; calls carry `callDuration` and `callStatus` instead of a body, emails add
/// `emailMessageId`, `threadId`, `from`, `to` and `subject`, outbound messages add `source`.
/// `ids` are two fresh ids: the message's, and the email thread's.
pub fn message(
    c: &Conversation,
    contact_email: Option<&str>,
    ids: (String, String),
) -> (&'static str, Value) {
    let inbound = c.last_message_direction == "inbound";
    let kind = if inbound {
        "InboundMessage"
    } else {
        "OutboundMessage"
    };
    let msg_type = message_type(&c.last_message_type);
    let mut m = Map::new();
    m.insert("conversationId".into(), json!(c.id));
    m.insert("contactId".into(), json!(c.contact_id));
    m.insert("messageId".into(), json!(ids.0));
    m.insert("messageType".into(), json!(msg_type));
    m.insert("direction".into(), json!(c.last_message_direction));
    m.insert("attachments".into(), json!([]));
    m.insert("dateAdded".into(), json!(iso(c.last_message_date)));
    match msg_type.as_str() {
        "CALL" => {
            m.insert("status".into(), json!("completed"));
            m.insert("callDuration".into(), json!(60));
            m.insert("callStatus".into(), json!("completed"));
        }
        "Email" => {
            m.insert("body".into(), json!(c.last_message_body));
            m.insert("emailMessageId".into(), json!(ids.0));
            m.insert("threadId".into(), json!(ids.1));
            let contact = contact_email.unwrap_or("contact@example.com");
            let location = "Simulated Location <location@example.com>";
            let (from, to) = if inbound {
                (contact, location)
            } else {
                (location, contact)
            };
            m.insert("from".into(), json!(from));
            m.insert("to".into(), json!([to]));
            m.insert("subject".into(), json!(c.last_message_body));
        }
        _ => {
            m.insert("status".into(), json!("delivered"));
            m.insert("body".into(), json!(c.last_message_body));
            m.insert("contentType".into(), json!("text/plain"));
        }
    }
    if !inbound {
        m.insert("source".into(), json!("app"));
    }
    (kind, Value::Object(m))
}

/// `ConversationUnreadUpdate` (ConversationUnreadWebhook.json): `id` (the conversation),
/// `contactId, unreadCount, inbox, starred, deleted`.
pub fn conversation_unread(c: &Conversation, deleted: bool) -> Value {
    json!({"id": c.id, "contactId": c.contact_id, "unreadCount": c.unread_count,
           "inbox": c.inbox, "starred": c.starred, "deleted": deleted})
}

/// `INSTALL` (AppInstall.json): a location install carries `locationId`; an agency (company)
/// install does not. `appId` and `versionId` come with the envelope.
pub fn install(company_id: &str, company_name: &str, user_id: &str) -> Value {
    json!({
        "companyId": company_id,
        "userId": user_id,
        "planId": "sim-plan",
        "trial": {"onTrial": false, "trialDuration": 0, "trialStartDate": iso(crate::sim::data::SEED_EPOCH_MS)},
        "isWhitelabelCompany": false,
        "whitelabelDetails": {},
        "companyName": company_name,
    })
}

/// `UNINSTALL` (AppUninstall.json): `appId` plus `locationId` (a location uninstall) or
/// `companyId` (the agency's).
pub fn uninstall(company_id: Option<&str>) -> Value {
    match company_id {
        Some(c) => json!({"companyId": c}),
        None => json!({}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_create_lacks_contact_and_body_but_complete_has_them() {
        let t = Task {
            id: "t1".into(),
            contact_id: "c1".into(),
            title: "Call".into(),
            body: Some("notes".into()),
            ..Default::default()
        };
        let created = task_create(&t);
        assert!(created.get("contactId").is_none() && created.get("body").is_none());
        assert_eq!(created["title"], "Call");
        let done = task(&t);
        assert_eq!(
            (done["contactId"].as_str(), done["body"].as_str()),
            (Some("c1"), Some("notes"))
        );
        assert!(done.get("completed").is_none(), "not a documented field");
    }

    #[test]
    fn dnd_update_has_every_channel_including_rcs_and_absent_fields_are_left_out() {
        let mut c = Contact {
            id: "c1".into(),
            dnd: true,
            ..Default::default()
        };
        c.dnd_channels.insert(
            "RCS".into(),
            crate::sim::data::DndChannel {
                status: "permanent".into(),
                message: "opted out".into(),
                code: "102".into(),
            },
        );
        let v = contact_dnd(&c);
        let s = &v["dndSettings"];
        for ch in DND_CHANNELS {
            assert!(s[ch]["status"].is_string(), "{ch} missing");
        }
        assert_eq!(s["RCS"]["status"], "permanent");
        assert_eq!(s["SMS"]["status"], "active");
        assert_eq!(s["FB"]["status"], "inactive");
        assert!(v.get("email").is_none(), "no null for an absent email");
    }
}
