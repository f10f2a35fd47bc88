//! The record API of `/_sim/`: the ground truth of a location (as GHL renders it), and creating,
//! updating and deleting contacts, tasks, conversations and opportunities. Every write moves the
//! record's `dateUpdated` strictly forward and queues the webhooks GHL would send. It never
//! touches settings, counters or tokens (`knobs`).

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::{get, patch, post};
use serde_json::{Map, Value, json};

use super::{S, done, fail, location, object, parse_json};
use crate::sim::data::{
    self, Contact, Conversation, DND_CHANNELS, DndChannel, Opportunity, Records, Task, iso,
    parse_time,
};
use crate::sim::webhooks::{self, events};
use crate::sim::{Location, Shared, lock, read, write};

/// The record routes of `/_sim/`.
pub(super) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/_sim/locations/{loc}", get(dump_route))
        .route("/_sim/locations/{loc}/{kind}", post(create_route))
        .route(
            "/_sim/locations/{loc}/{kind}/{id}",
            patch(update_route).delete(delete_route),
        )
}

/// Everything a location holds, rendered as the GHL API renders it, sorted by id.
pub fn dump(s: &Shared, loc_id: &str) -> Result<Value, String> {
    let loc = location(s, loc_id)?;
    let m = &loc.meta;
    let rec = read(&loc.records);
    let mut contacts: Vec<&Contact> = rec.contacts.values().collect();
    contacts.sort_by(|a, b| a.id.cmp(&b.id));
    let mut tasks: Vec<&Task> = rec.tasks.values().collect();
    tasks.sort_by(|a, b| a.id.cmp(&b.id));
    let mut convs: Vec<&Conversation> = rec.conversations.values().collect();
    convs.sort_by(|a, b| a.id.cmp(&b.id));
    let mut opps: Vec<&Opportunity> = rec.opportunities.values().collect();
    opps.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(json!({
        "location": {"id": m.id, "companyId": m.company_id, "name": m.name},
        "users": m.users.iter().map(|u| u.to_json(&m.id)).collect::<Vec<_>>(),
        "customFields": m.custom_fields.iter().map(|c| c.to_json(&m.id)).collect::<Vec<_>>(),
        "pipelines": m.pipelines.iter().map(|p| p.to_json(&m.id)).collect::<Vec<_>>(),
        "contacts": contacts.iter().map(|c| c.to_json(&m.id)).collect::<Vec<_>>(),
        "tasks": tasks.iter().map(|t| task_json(t)).collect::<Vec<_>>(),
        "conversations": convs.iter().map(|c| conv_json(c)).collect::<Vec<_>>(),
        "opportunities": opps.iter().map(|o| o.to_json(&m.id, rec.contacts.get(&o.contact_id))).collect::<Vec<_>>(),
    }))
}

fn task_json(t: &Task) -> Value {
    let mut v = t.to_json();
    v["dateAdded"] = json!(iso(t.date_added));
    v["dateUpdated"] = json!(iso(t.date_updated));
    v
}

fn conv_json(c: &Conversation) -> Value {
    json!({
        "id": c.id, "contactId": c.contact_id, "type": c.kind,
        "lastMessageBody": c.last_message_body, "lastMessageType": c.last_message_type,
        "lastMessageDirection": c.last_message_direction, "lastMessageDate": c.last_message_date,
        "unreadCount": c.unread_count, "starred": c.starred, "inbox": c.inbox,
        "assignedTo": c.assigned_to, "dateAdded": c.date_added, "dateUpdated": c.date_updated,
    })
}

// ---------------------------------------------------------------------------------------------
// Record writes

fn opt_str(k: &str, v: &Value) -> Result<Option<String>, String> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) if s.is_empty() => Ok(None),
        Value::String(s) => Ok(Some(s.clone())),
        _ => Err(format!("{k} must be a string or null")),
    }
}

fn req_str(k: &str, v: &Value) -> Result<String, String> {
    opt_str(k, v)?.ok_or_else(|| format!("{k} must be a non-empty string"))
}

fn bool_of(k: &str, v: &Value) -> Result<bool, String> {
    v.as_bool().ok_or_else(|| format!("{k} must be a boolean"))
}

fn time_of(k: &str, v: &Value) -> Result<i64, String> {
    parse_time(v).ok_or_else(|| format!("{k} must be a time (ms epoch or ISO 8601)"))
}

fn custom_fields_of(k: &str, v: &Value, value_key: &str) -> Result<Vec<(String, Value)>, String> {
    v.as_array()
        .ok_or_else(|| format!("{k} must be an array of {{id, {value_key}}}"))?
        .iter()
        .map(|x| {
            let id = x
                .get("id")
                .and_then(Value::as_str)
                .ok_or_else(|| format!("each of {k} needs an id"))?;
            let val = x
                .get(value_key)
                .or_else(|| x.get("value"))
                .cloned()
                .unwrap_or(Value::Null);
            Ok((id.to_string(), val))
        })
        .collect()
}

fn apply_contact(c: &mut Contact, body: &Map<String, Value>, creating: bool) -> Result<(), String> {
    for (k, v) in body {
        match k.as_str() {
            "firstName" => c.first_name = opt_str(k, v)?,
            "lastName" => c.last_name = opt_str(k, v)?,
            "email" => c.email = opt_str(k, v)?,
            "phone" => c.phone = opt_str(k, v)?,
            "companyName" => c.company_name = opt_str(k, v)?,
            "source" => c.source = opt_str(k, v)?,
            "type" => c.kind = req_str(k, v)?,
            "assignedTo" => c.assigned_to = opt_str(k, v)?,
            "address1" => c.address1 = opt_str(k, v)?,
            "city" => c.city = opt_str(k, v)?,
            "state" => c.state = opt_str(k, v)?,
            "country" => c.country = opt_str(k, v)?,
            "postalCode" => c.postal_code = opt_str(k, v)?,
            "website" => c.website = opt_str(k, v)?,
            "timezone" => c.timezone = opt_str(k, v)?,
            "dateOfBirth" => c.date_of_birth = opt_str(k, v)?,
            "dnd" => c.dnd = bool_of(k, v)?,
            "dndSettings" => c.dnd_channels.extend(dnd_settings_of(v)?),
            "tags" => {
                c.tags = v
                    .as_array()
                    .and_then(|a| a.iter().map(|t| t.as_str().map(String::from)).collect())
                    .ok_or_else(|| "tags must be an array of strings".to_string())?
            }
            "customFields" => c.custom_fields = custom_fields_of(k, v, "value")?,
            "id" | "dateAdded" if creating => {}
            other => return Err(format!("unknown or read-only contact field {other}")),
        }
    }
    Ok(())
}

fn apply_task(t: &mut Task, body: &Map<String, Value>, creating: bool) -> Result<(), String> {
    for (k, v) in body {
        match k.as_str() {
            "title" => t.title = req_str(k, v)?,
            "body" => t.body = opt_str(k, v)?,
            "assignedTo" => t.assigned_to = opt_str(k, v)?,
            "dueDate" => t.due = time_of(k, v)?,
            "completed" => t.completed = bool_of(k, v)?,
            "id" | "contactId" | "dateAdded" if creating => {}
            other => return Err(format!("unknown or read-only task field {other}")),
        }
    }
    Ok(())
}

fn apply_conversation(
    c: &mut Conversation,
    body: &Map<String, Value>,
    creating: bool,
) -> Result<bool, String> {
    let mut new_message = false;
    for (k, v) in body {
        match k.as_str() {
            "type" => c.kind = req_str(k, v)?,
            "lastMessageBody" => {
                c.last_message_body = req_str(k, v)?;
                new_message = true;
            }
            "lastMessageType" => {
                c.last_message_type = req_str(k, v)?;
                new_message = true;
            }
            "lastMessageDirection" => {
                let d = req_str(k, v)?;
                if d != "inbound" && d != "outbound" {
                    return Err("lastMessageDirection must be inbound or outbound".into());
                }
                c.last_message_direction = d;
                new_message = true;
            }
            "lastMessageDate" => c.last_message_date = time_of(k, v)?,
            "unreadCount" => {
                c.unread_count = v
                    .as_u64()
                    .ok_or_else(|| "unreadCount must be a non-negative integer".to_string())?
                    as u32
            }
            "starred" => c.starred = bool_of(k, v)?,
            "assignedTo" => c.assigned_to = opt_str(k, v)?,
            "id" | "contactId" | "dateAdded" if creating => {}
            other => return Err(format!("unknown or read-only conversation field {other}")),
        }
    }
    Ok(new_message && !body.contains_key("lastMessageDate"))
}

fn apply_opportunity(
    o: &mut Opportunity,
    body: &Map<String, Value>,
    creating: bool,
    loc: &Location,
) -> Result<(), String> {
    for (k, v) in body {
        match k.as_str() {
            "name" => o.name = req_str(k, v)?,
            "monetaryValue" => {
                o.monetary_value = v
                    .as_f64()
                    .ok_or_else(|| "monetaryValue must be a number".to_string())?
            }
            "pipelineId" => o.pipeline_id = req_str(k, v)?,
            "pipelineStageId" => o.stage_id = req_str(k, v)?,
            "assignedTo" => o.assigned_to = opt_str(k, v)?,
            "status" => {
                let st = req_str(k, v)?;
                if !["open", "won", "lost", "abandoned"].contains(&st.as_str()) {
                    return Err("status must be open, won, lost or abandoned".into());
                }
                o.status = st;
            }
            "source" => o.source = opt_str(k, v)?,
            "customFields" => o.custom_fields = custom_fields_of(k, v, "fieldValue")?,
            "id" | "contactId" | "createdAt" if creating => {}
            other => return Err(format!("unknown or read-only opportunity field {other}")),
        }
    }
    let pipe = loc
        .meta
        .pipelines
        .iter()
        .find(|p| p.id == o.pipeline_id)
        .ok_or_else(|| format!("no pipeline {}", o.pipeline_id))?;
    if !pipe.stages.iter().any(|s| s.id == o.stage_id) {
        return Err(format!(
            "stage {} is not in pipeline {}",
            o.stage_id, pipe.id
        ));
    }
    Ok(())
}

fn new_id(
    s: &Shared,
    body: &Map<String, Value>,
    rec: &Records,
    kind: &str,
) -> Result<String, String> {
    if let Some(v) = body.get("id") {
        let id = req_str("id", v)?;
        if !id.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err("id must be ASCII letters and digits".into());
        }
        let taken = match kind {
            "contacts" => rec.contacts.contains_key(&id),
            "tasks" => rec.tasks.contains_key(&id),
            "conversations" => rec.conversations.contains_key(&id),
            _ => rec.opportunities.contains_key(&id),
        };
        if taken {
            return Err(format!("id {id} already exists"));
        }
        return Ok(id);
    }
    Ok(data::gen_id(&mut lock(&s.rng)))
}

fn contact_of(body: &Map<String, Value>, rec: &Records) -> Result<String, String> {
    let id = req_str("contactId", body.get("contactId").unwrap_or(&Value::Null))?;
    if !rec.contacts.contains_key(&id) {
        return Err(format!("no contact {id}"));
    }
    Ok(id)
}

/// The message event of a conversation's last message, with fresh message and thread ids.
fn message_event(s: &Shared, c: &Conversation, rec: &Records) -> (String, Value) {
    let ids = {
        let mut rng = lock(&s.rng);
        (data::gen_id(&mut rng), data::gen_id(&mut rng))
    };
    let email = rec
        .contacts
        .get(&c.contact_id)
        .and_then(|k| k.email.as_deref());
    let (kind, v) = events::message(c, email, ids);
    (kind.to_string(), v)
}

/// `dndSettings` of an admin write: `{Channel: {status, message?, code?}}` for the channels of
/// `DND_CHANNELS`; each given channel replaces that channel's setting.
fn dnd_settings_of(v: &Value) -> Result<Vec<(String, DndChannel)>, String> {
    let m = v
        .as_object()
        .ok_or_else(|| "dndSettings must be an object of channels".to_string())?;
    m.iter()
        .map(|(ch, x)| {
            if !DND_CHANNELS.contains(&ch.as_str()) {
                return Err(format!(
                    "unknown DND channel {ch} (one of {})",
                    DND_CHANNELS.join(", ")
                ));
            }
            let field = |k: &str| x.get(k).and_then(Value::as_str).unwrap_or("").to_string();
            let status = field("status");
            if !["active", "inactive", "permanent"].contains(&status.as_str()) {
                return Err(format!(
                    "dndSettings.{ch}.status must be active, inactive or permanent"
                ));
            }
            Ok((
                ch.clone(),
                DndChannel {
                    status,
                    message: field("message"),
                    code: field("code"),
                },
            ))
        })
        .collect()
}

/// Creates a record; `kind` is contacts, tasks, conversations or opportunities.
pub fn create(s: &Shared, loc_id: &str, kind: &str, body: &Value) -> Result<Value, String> {
    let loc = location(s, loc_id)?;
    let body = object(body)?;
    let mut rec = write(&loc.records);
    rec.index_lag = index_lag(s);
    let now = rec.tick();
    let id = new_id(s, body, &rec, kind)?;
    let added = match body.get("dateAdded").or_else(|| body.get("createdAt")) {
        Some(v) => time_of("dateAdded", v)?,
        None => now,
    };
    let (event, payload, out) = match kind {
        "contacts" => {
            let mut c = Contact {
                id,
                kind: "lead".into(),
                date_added: added,
                date_updated: now,
                ..Default::default()
            };
            apply_contact(&mut c, body, true)?;
            let out = c.to_json(loc_id);
            let ev = events::contact(&c);
            rec.insert_contact(c);
            ("ContactCreate".to_string(), ev, out)
        }
        "tasks" => {
            let contact_id = contact_of(body, &rec)?;
            let mut t = Task {
                id,
                contact_id,
                title: "Task".into(),
                due: now + 86_400_000,
                date_added: added,
                date_updated: now,
                ..Default::default()
            };
            apply_task(&mut t, body, true)?;
            let out = task_json(&t);
            let ev = events::task_create(&t);
            rec.insert_task(t);
            ("TaskCreate".to_string(), ev, out)
        }
        "conversations" => {
            let contact_id = contact_of(body, &rec)?;
            let mut c = Conversation {
                id,
                contact_id,
                kind: "TYPE_PHONE".into(),
                last_message_body: "".into(),
                last_message_type: "TYPE_SMS".into(),
                last_message_direction: "inbound".into(),
                last_message_date: now,
                inbox: true,
                date_added: added,
                date_updated: now,
                ..Default::default()
            };
            apply_conversation(&mut c, body, true)?;
            rec.insert_conversation(c.clone());
            let stored = rec.conversations.get(&c.id).cloned().unwrap_or(c);
            let (ev_kind, ev) = message_event(s, &stored, &rec);
            (ev_kind, ev, conv_json(&stored))
        }
        "opportunities" => {
            let contact_id = contact_of(body, &rec)?;
            let first = loc
                .meta
                .pipelines
                .first()
                .ok_or_else(|| "location has no pipelines".to_string())?;
            let mut o = Opportunity {
                id,
                contact_id,
                name: "New opportunity".into(),
                pipeline_id: first.id.clone(),
                stage_id: first
                    .stages
                    .first()
                    .map(|s| s.id.clone())
                    .unwrap_or_default(),
                status: "open".into(),
                created: added,
                updated: now,
                last_stage_change: now,
                last_status_change: now,
                ..Default::default()
            };
            apply_opportunity(&mut o, body, true, loc)?;
            let out = o.to_json(loc_id, rec.contacts.get(&o.contact_id));
            let ev = events::opportunity(&o);
            rec.insert_opportunity(o);
            ("OpportunityCreate".to_string(), ev, out)
        }
        other => {
            return Err(format!(
                "unknown record kind {other} (contacts, tasks, conversations, opportunities)"
            ));
        }
    };
    drop(rec);
    webhooks::emit(s, &event, Some(loc_id), payload);
    Ok(out)
}

/// Updates a record and moves its `dateUpdated` (`updatedAt`) to a fresh, later time.
pub fn update(
    s: &Shared,
    loc_id: &str,
    kind: &str,
    id: &str,
    body: &Value,
) -> Result<Value, String> {
    let loc = location(s, loc_id)?;
    let body = object(body)?;
    let mut rec = write(&loc.records);
    rec.index_lag = index_lag(s);
    let now = rec.tick();
    let missing = || format!("not found: no {kind} record {id}");
    let mut queued: Vec<(String, Value)> = Vec::new();
    let out = match kind {
        "contacts" => {
            let mut c = rec.contacts.get(id).cloned().ok_or_else(missing)?;
            let old = c.clone();
            apply_contact(&mut c, body, false)?;
            c.date_updated = now;
            if c.dnd != old.dnd || c.dnd_channels != old.dnd_channels {
                queued.push(("ContactDndUpdate".into(), events::contact_dnd(&c)));
            }
            if c.tags != old.tags {
                queued.push(("ContactTagUpdate".into(), events::contact(&c)));
            }
            queued.push(("ContactUpdate".into(), events::contact(&c)));
            let out = c.to_json(loc_id);
            rec.insert_contact(c);
            out
        }
        "tasks" => {
            let mut t = rec.tasks.get(id).cloned().ok_or_else(missing)?;
            let was_done = t.completed;
            apply_task(&mut t, body, false)?;
            t.date_updated = now;
            // GHL has no TaskUpdate event; completing a task is the one edit it reports.
            if t.completed && !was_done {
                queued.push(("TaskComplete".into(), events::task(&t)));
            }
            let out = task_json(&t);
            rec.insert_task(t);
            out
        }
        "conversations" => {
            let mut c = rec.conversations.get(id).cloned().ok_or_else(missing)?;
            let old_unread = c.unread_count;
            let moved = apply_conversation(&mut c, body, false)?;
            if moved {
                c.last_message_date = now;
            }
            c.date_updated = now;
            rec.insert_conversation(c.clone());
            let stored = rec.conversations.get(id).cloned().unwrap_or(c);
            if moved {
                queued.push(message_event(s, &stored, &rec));
            }
            if stored.unread_count != old_unread {
                queued.push((
                    "ConversationUnreadUpdate".into(),
                    events::conversation_unread(&stored, false),
                ));
            }
            conv_json(&stored)
        }
        "opportunities" => {
            let mut o = rec.opportunities.get(id).cloned().ok_or_else(missing)?;
            let old = o.clone();
            apply_opportunity(&mut o, body, false, loc)?;
            o.updated = now;
            if o.stage_id != old.stage_id {
                o.last_stage_change = now;
                queued.push(("OpportunityStageUpdate".into(), events::opportunity(&o)));
            }
            if o.status != old.status {
                o.last_status_change = now;
                queued.push(("OpportunityStatusUpdate".into(), events::opportunity(&o)));
            }
            if o.monetary_value != old.monetary_value {
                queued.push((
                    "OpportunityMonetaryValueUpdate".into(),
                    events::opportunity(&o),
                ));
            }
            if o.assigned_to != old.assigned_to {
                queued.push((
                    "OpportunityAssignedToUpdate".into(),
                    events::opportunity(&o),
                ));
            }
            queued.push(("OpportunityUpdate".into(), events::opportunity(&o)));
            let out = o.to_json(loc_id, rec.contacts.get(&o.contact_id));
            rec.insert_opportunity(o);
            out
        }
        other => return Err(format!("unknown record kind {other}")),
    };
    drop(rec);
    for (k, p) in queued {
        webhooks::emit(s, &k, Some(loc_id), p);
    }
    Ok(out)
}

/// Deletes a record; deleting a contact deletes its tasks, conversations and opportunities.
pub fn delete(s: &Shared, loc_id: &str, kind: &str, id: &str) -> Result<Value, String> {
    let loc = location(s, loc_id)?;
    let mut rec = write(&loc.records);
    rec.index_lag = index_lag(s);
    let missing = || format!("not found: no {kind} record {id}");
    let mut queued: Vec<(String, Value)> = Vec::new();
    match kind {
        "contacts" => {
            let c = rec.remove_contact(id).ok_or_else(missing)?;
            for t in rec.tasks_by_contact.remove(id).unwrap_or_default() {
                if let Some(t) = rec.remove_task(&t) {
                    queued.push(("TaskDelete".into(), events::task(&t)));
                }
            }
            let convs: Vec<String> = rec
                .conversations
                .values()
                .filter(|c| c.contact_id == id)
                .map(|c| c.id.clone())
                .collect();
            for cid in convs {
                rec.remove_conversation(&cid);
            }
            let opps: Vec<String> = rec
                .opportunities
                .values()
                .filter(|o| o.contact_id == id)
                .map(|o| o.id.clone())
                .collect();
            for oid in opps {
                if let Some(o) = rec.remove_opportunity(&oid) {
                    queued.push(("OpportunityDelete".into(), events::opportunity(&o)));
                }
            }
            queued.push(("ContactDelete".into(), events::contact(&c)));
        }
        "tasks" => {
            let t = rec.remove_task(id).ok_or_else(missing)?;
            queued.push(("TaskDelete".into(), events::task(&t)));
        }
        "conversations" => {
            rec.remove_conversation(id).ok_or_else(missing)?;
        }
        "opportunities" => {
            let o = rec.remove_opportunity(id).ok_or_else(missing)?;
            queued.push(("OpportunityDelete".into(), events::opportunity(&o)));
        }
        other => return Err(format!("unknown record kind {other}")),
    }
    drop(rec);
    for (k, p) in queued {
        webhooks::emit(s, &k, Some(loc_id), p);
    }
    Ok(json!({"deleted": true, "id": id}))
}

async fn dump_route(State(s): S, Path(loc): Path<String>) -> Response {
    done(dump(&s, &loc))
}

async fn create_route(
    State(s): S,
    Path((loc, kind)): Path<(String, String)>,
    bytes: Bytes,
) -> Response {
    match parse_json(&bytes) {
        Ok(body) => done(create(&s, &loc, &kind, &body)),
        Err(m) => fail(m),
    }
}

async fn update_route(
    State(s): S,
    Path((loc, kind, id)): Path<(String, String, String)>,
    bytes: Bytes,
) -> Response {
    match parse_json(&bytes) {
        Ok(body) => done(update(&s, &loc, &kind, &id, &body)),
        Err(m) => fail(m),
    }
}

async fn delete_route(
    State(s): S,
    Path((loc, kind, id)): Path<(String, String, String)>,
) -> Response {
    done(delete(&s, &loc, &kind, &id))
}

/// The search index lag the run-time settings ask for.
fn index_lag(s: &Shared) -> std::time::Duration {
    std::time::Duration::from_millis(read(&s.settings).index_lag_ms)
}
