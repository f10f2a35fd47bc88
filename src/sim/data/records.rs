//! The records of one location: the plain structs (not `serde_json::Value`, so 100k contacts stay
//! small), the `Records` maps with the indexes every write keeps in step, and the time and id
//! formats records use. What the searches read of a record (`field`, `matches_text`) is here too;
//! GHL's JSON shapes are in `render`, generation in `seed`.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::index::Index;
use super::lag::Lagging;

/// The moment seeded data ends: 2025-06-01T00:00:00Z. Seeded timestamps spread over five years
/// before it; admin writes use the wall clock (never earlier than the latest seeded time).
pub const SEED_EPOCH_MS: i64 = 1_748_736_000_000;

/// A time as GHL writes it: ISO 8601 in UTC with milliseconds.
pub fn iso(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Parses a time given as ms epoch (number or numeric string) or ISO 8601.
pub fn parse_time(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        Value::String(s) => s.parse::<i64>().ok().or_else(|| {
            DateTime::parse_from_rfc3339(s)
                .ok()
                .map(|d| d.timestamp_millis())
                .or_else(|| {
                    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
                        .ok()
                        .and_then(|d| d.and_hms_opt(0, 0, 0))
                        .map(|d| d.and_utc().timestamp_millis())
                })
        }),
        _ => None,
    }
}

/// A GHL-looking id: 20 ASCII alphanumerics.
pub fn gen_id(rng: &mut ChaCha8Rng) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    (0..20)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// A user of the location (the seeded owner is the first).
#[derive(Debug, Clone)]
pub struct User {
    pub id: String,
    pub first_name: String,
    pub last_name: String,
    pub email: String,
    pub phone: String,
    pub role: &'static str,
}

/// A custom field definition, of contacts or of opportunities.
#[derive(Debug, Clone)]
pub struct CustomField {
    pub id: String,
    pub name: String,
    pub key: String,
    pub data_type: &'static str,
    pub options: Vec<String>,
    pub model: &'static str,
    pub position: u32,
}

/// A stage of a pipeline.
#[derive(Debug, Clone)]
pub struct Stage {
    pub id: String,
    pub name: String,
    pub position: u32,
}

/// An opportunity pipeline and its stages, in order.
#[derive(Debug, Clone)]
pub struct Pipeline {
    pub id: String,
    pub name: String,
    pub stages: Vec<Stage>,
}

/// A contact; times are ms since the epoch.
#[derive(Debug, Clone, Default)]
pub struct Contact {
    pub id: String,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub company_name: Option<String>,
    pub source: Option<String>,
    pub kind: String,
    pub assigned_to: Option<String>,
    pub address1: Option<String>,
    pub city: Option<String>,
    pub state: Option<String>,
    pub country: Option<String>,
    pub postal_code: Option<String>,
    pub website: Option<String>,
    pub timezone: Option<String>,
    pub date_of_birth: Option<String>,
    pub dnd: bool,
    /// Per-channel DND set through the admin API (channel name, e.g. `SMS`, to its setting);
    /// a channel not here follows `dnd` (see [`Contact::dnd_channel`]).
    pub dnd_channels: BTreeMap<String, DndChannel>,
    pub tags: Vec<String>,
    pub custom_fields: Vec<(String, Value)>,
    pub date_added: i64,
    pub date_updated: i64,
}

/// The DND channels of `dndSettings`: the six `GET /contacts/{id}` renders (FACTS.md §2.3) and
/// `RCS`, which real `ContactDndUpdate` webhooks also carry (FACTS.md §9.1).
pub const DND_CHANNELS: [&str; 7] = ["Call", "Email", "SMS", "WhatsApp", "GMB", "FB", "RCS"];

/// One channel's DND setting: `status` is `active`, `inactive` or `permanent`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DndChannel {
    pub status: String,
    pub message: String,
    pub code: String,
}

/// A task of a contact.
#[derive(Debug, Clone, Default)]
pub struct Task {
    pub id: String,
    pub contact_id: String,
    pub title: String,
    pub body: Option<String>,
    pub assigned_to: Option<String>,
    pub due: i64,
    pub completed: bool,
    pub date_added: i64,
    pub date_updated: i64,
}

/// A contact's conversation, summarized by its last message.
#[derive(Debug, Clone, Default)]
pub struct Conversation {
    pub id: String,
    pub contact_id: String,
    pub kind: String,
    pub last_message_body: String,
    pub last_message_type: String,
    pub last_message_direction: String,
    pub last_message_date: i64,
    pub unread_count: u32,
    pub starred: bool,
    pub inbox: bool,
    pub assigned_to: Option<String>,
    pub date_added: i64,
    pub date_updated: i64,
}

/// An opportunity of a contact, in a pipeline stage.
#[derive(Debug, Clone, Default)]
pub struct Opportunity {
    pub id: String,
    pub contact_id: String,
    pub name: String,
    pub monetary_value: f64,
    pub pipeline_id: String,
    pub stage_id: String,
    pub assigned_to: Option<String>,
    pub status: String,
    pub source: Option<String>,
    pub custom_fields: Vec<(String, Value)>,
    pub last_status_change: i64,
    pub last_stage_change: i64,
    pub created: i64,
    pub updated: i64,
}

/// The fixed part of a location: who it is, its users, custom fields and pipelines.
#[derive(Debug, Clone)]
pub struct LocationMeta {
    pub id: String,
    pub company_id: String,
    pub name: String,
    pub city: String,
    pub state: String,
    pub timezone: String,
    pub email: String,
    pub phone: String,
    pub users: Vec<User>,
    pub custom_fields: Vec<CustomField>,
    pub pipelines: Vec<Pipeline>,
}

/// The mutable records of one location, with their indexes. Every write goes through the methods
/// below so the indexes never drift from the maps.
///
/// The maps are the truth (`GET` by id, the admin API); the sorted indexes are what the search
/// endpoints walk, and with an [`index_lag`](Records::index_lag) they take in each write only
/// once it has passed ([`Lagging`]; the searches read through [`Records::settle`] and the
/// `searched_*` lookups). `tasks_by_contact` serves `GET /contacts/{id}/tasks` and never lags.
#[derive(Debug, Default)]
pub struct Records {
    pub contacts: HashMap<String, Contact>,
    pub contacts_by_added: Index,
    pub contacts_by_updated: Index,
    pub tasks: HashMap<String, Task>,
    pub tasks_by_due: Index,
    pub tasks_by_contact: HashMap<String, Vec<String>>,
    pub conversations: HashMap<String, Conversation>,
    /// By `lastMessageDate`, ties allowed as in GHL (a campaign sent to many contacts at once):
    /// GHL pages conversations by `startAfterDate` alone, so a client that trusts it to be unique
    /// skips rows. Within a tie the order is by id, which a client must not rely on.
    pub conversations_by_last: Index,
    pub opportunities: HashMap<String, Opportunity>,
    pub opps_by_created: Index,
    pub opps_by_updated: Index,
    /// Latest time handed out, so admin writes move `dateUpdated` strictly forward.
    pub clock_ms: i64,
    /// How long a write takes to reach the search indexes (zero: at once). The admin API sets it
    /// from the run-time settings before each write.
    pub index_lag: Duration,
    pub(super) lag_contacts: Lagging<Contact>,
    pub(super) lag_tasks: Lagging<Task>,
    pub(super) lag_conversations: Lagging<Conversation>,
    pub(super) lag_opportunities: Lagging<Opportunity>,
}

impl Records {
    /// A fresh write timestamp: the wall clock, but always later than every earlier one.
    pub fn tick(&mut self) -> i64 {
        let now = Utc::now().timestamp_millis();
        self.clock_ms = now.max(self.clock_ms + 1);
        self.clock_ms
    }

    /// When the search indexes take in a write made now; `None` without a lag (then whatever
    /// still waits is taken in first, so an index never holds a version it cannot find again).
    fn index_due(&mut self) -> Option<Instant> {
        if self.index_lag.is_zero() {
            if self.lagging() {
                self.take_in(None);
            }
            None
        } else {
            Some(Instant::now() + self.index_lag)
        }
    }

    /// Whether a write waits for the search indexes.
    pub fn lagging(&self) -> bool {
        !(self.lag_contacts.is_empty()
            && self.lag_tasks.is_empty()
            && self.lag_conversations.is_empty()
            && self.lag_opportunities.is_empty())
    }

    /// Lets the search indexes take in every write whose lag has passed by `now`.
    pub fn settle(&mut self, now: Instant) {
        self.take_in(Some(now));
    }

    /// Moves the index entries of the writes due by `now` (all with `None`) from the version the
    /// index held to the record as it is now (none when it was deleted).
    fn take_in(&mut self, now: Option<Instant>) {
        for (id, old) in self.lag_contacts.ripe(now) {
            if let Some(o) = old {
                self.contacts_by_added.remove(&(o.date_added, id.clone()));
                self.contacts_by_updated
                    .remove(&(o.date_updated, id.clone()));
            }
            if let Some(c) = self.contacts.get(&id) {
                self.contacts_by_added.insert((c.date_added, id.clone()));
                self.contacts_by_updated
                    .insert((c.date_updated, id.clone()));
            }
        }
        for (id, old) in self.lag_tasks.ripe(now) {
            if let Some(o) = old {
                self.tasks_by_due.remove(&(o.due, id.clone()));
            }
            if let Some(t) = self.tasks.get(&id) {
                self.tasks_by_due.insert((t.due, id.clone()));
            }
        }
        for (id, old) in self.lag_conversations.ripe(now) {
            if let Some(o) = old {
                self.conversations_by_last
                    .remove(&(o.last_message_date, id.clone()));
            }
            if let Some(c) = self.conversations.get(&id) {
                self.conversations_by_last
                    .insert((c.last_message_date, id.clone()));
            }
        }
        for (id, old) in self.lag_opportunities.ripe(now) {
            if let Some(o) = old {
                self.opps_by_created.remove(&(o.created, id.clone()));
                self.opps_by_updated.remove(&(o.updated, id.clone()));
            }
            if let Some(o) = self.opportunities.get(&id) {
                self.opps_by_created.insert((o.created, id.clone()));
                self.opps_by_updated.insert((o.updated, id.clone()));
            }
        }
    }

    /// The contact as the search index holds it (a write within the lag is not there yet).
    pub fn searched_contact(&self, id: &str) -> Option<&Contact> {
        match self.lag_contacts.indexed(id) {
            Some(indexed) => indexed,
            None => self.contacts.get(id),
        }
    }

    /// The task as the search index holds it.
    pub fn searched_task(&self, id: &str) -> Option<&Task> {
        match self.lag_tasks.indexed(id) {
            Some(indexed) => indexed,
            None => self.tasks.get(id),
        }
    }

    /// The conversation as the search index holds it.
    pub fn searched_conversation(&self, id: &str) -> Option<&Conversation> {
        match self.lag_conversations.indexed(id) {
            Some(indexed) => indexed,
            None => self.conversations.get(id),
        }
    }

    /// The opportunity as the search index holds it.
    pub fn searched_opportunity(&self, id: &str) -> Option<&Opportunity> {
        match self.lag_opportunities.indexed(id) {
            Some(indexed) => indexed,
            None => self.opportunities.get(id),
        }
    }

    /// Inserts or replaces a contact, moving its index entries (after the lag).
    pub fn insert_contact(&mut self, c: Contact) {
        let due = self.index_due();
        let id = c.id.clone();
        let (added, updated) = (c.date_added, c.date_updated);
        let old = self.contacts.insert(id.clone(), c);
        match due {
            Some(due) => self.lag_contacts.note(&id, || old, due),
            None => {
                if let Some(o) = old {
                    self.contacts_by_added.remove(&(o.date_added, id.clone()));
                    self.contacts_by_updated
                        .remove(&(o.date_updated, id.clone()));
                }
                self.contacts_by_added.insert((added, id.clone()));
                self.contacts_by_updated.insert((updated, id));
            }
        }
    }

    /// Removes a contact and its index entries (after the lag), not its tasks or other records.
    pub fn remove_contact(&mut self, id: &str) -> Option<Contact> {
        let due = self.index_due();
        let old = self.contacts.remove(id)?;
        match due {
            Some(due) => self.lag_contacts.note(id, || Some(old.clone()), due),
            None => {
                self.contacts_by_added
                    .remove(&(old.date_added, old.id.clone()));
                self.contacts_by_updated
                    .remove(&(old.date_updated, old.id.clone()));
            }
        }
        Some(old)
    }

    /// Inserts or replaces a task, moving its index entries (the due date's after the lag).
    pub fn insert_task(&mut self, t: Task) {
        let due = self.index_due();
        let (id, contact, due_ms) = (t.id.clone(), t.contact_id.clone(), t.due);
        let old = self.tasks.insert(id.clone(), t);
        if let Some(o) = &old
            && let Some(list) = self.tasks_by_contact.get_mut(&o.contact_id)
        {
            list.retain(|x| *x != id);
        }
        self.tasks_by_contact
            .entry(contact)
            .or_default()
            .push(id.clone());
        match due {
            Some(due) => self.lag_tasks.note(&id, || old, due),
            None => {
                if let Some(o) = old {
                    self.tasks_by_due.remove(&(o.due, id.clone()));
                }
                self.tasks_by_due.insert((due_ms, id));
            }
        }
    }

    /// Removes a task and its index entries (the due date's after the lag).
    pub fn remove_task(&mut self, id: &str) -> Option<Task> {
        let due = self.index_due();
        let old = self.tasks.remove(id)?;
        if let Some(list) = self.tasks_by_contact.get_mut(&old.contact_id) {
            list.retain(|x| x != id);
        }
        match due {
            Some(due) => self.lag_tasks.note(id, || Some(old.clone()), due),
            None => {
                self.tasks_by_due.remove(&(old.due, old.id.clone()));
            }
        }
        Some(old)
    }

    /// Inserts or replaces a conversation, moving its index entry (after the lag).
    pub fn insert_conversation(&mut self, c: Conversation) {
        let due = self.index_due();
        let (id, last) = (c.id.clone(), c.last_message_date);
        let old = self.conversations.insert(id.clone(), c);
        match due {
            Some(due) => self.lag_conversations.note(&id, || old, due),
            None => {
                if let Some(o) = old {
                    self.conversations_by_last
                        .remove(&(o.last_message_date, id.clone()));
                }
                self.conversations_by_last.insert((last, id));
            }
        }
    }

    /// Removes a conversation and its index entry (after the lag).
    pub fn remove_conversation(&mut self, id: &str) -> Option<Conversation> {
        let due = self.index_due();
        let old = self.conversations.remove(id)?;
        match due {
            Some(due) => self.lag_conversations.note(id, || Some(old.clone()), due),
            None => {
                self.conversations_by_last
                    .remove(&(old.last_message_date, old.id.clone()));
            }
        }
        Some(old)
    }

    /// Inserts or replaces an opportunity, moving its index entries (after the lag).
    pub fn insert_opportunity(&mut self, o: Opportunity) {
        let due = self.index_due();
        let (id, created, updated) = (o.id.clone(), o.created, o.updated);
        let old = self.opportunities.insert(id.clone(), o);
        match due {
            Some(due) => self.lag_opportunities.note(&id, || old, due),
            None => {
                if let Some(o) = old {
                    self.opps_by_created.remove(&(o.created, id.clone()));
                    self.opps_by_updated.remove(&(o.updated, id.clone()));
                }
                self.opps_by_created.insert((created, id.clone()));
                self.opps_by_updated.insert((updated, id));
            }
        }
    }

    /// Removes an opportunity and its index entries (after the lag).
    pub fn remove_opportunity(&mut self, id: &str) -> Option<Opportunity> {
        let due = self.index_due();
        let old = self.opportunities.remove(id)?;
        match due {
            Some(due) => self.lag_opportunities.note(id, || Some(old.clone()), due),
            None => {
                self.opps_by_created.remove(&(old.created, old.id.clone()));
                self.opps_by_updated.remove(&(old.updated, old.id.clone()));
            }
        }
        Some(old)
    }
}

impl Contact {
    /// "First Last", either alone, or none.
    pub fn name(&self) -> Option<String> {
        match (&self.first_name, &self.last_name) {
            (Some(f), Some(l)) => Some(format!("{f} {l}")),
            (Some(f), None) => Some(f.clone()),
            (None, Some(l)) => Some(l.clone()),
            (None, None) => None,
        }
    }

    /// The DND setting of `channel`: the one set through the admin API, else the one `dnd`
    /// implies (the seeded rule: `dnd` covers calls, email and SMS; other channels are off).
    pub fn dnd_channel(&self, channel: &str) -> DndChannel {
        if let Some(c) = self.dnd_channels.get(channel) {
            return c.clone();
        }
        let on = self.dnd && matches!(channel, "Call" | "Email" | "SMS");
        DndChannel {
            status: if on { "active" } else { "inactive" }.into(),
            message: String::new(),
            code: String::new(),
        }
    }

    /// `dndSettings` over `channels`: `{Channel: {status, message, code}}`.
    pub fn dnd_settings_json(&self, channels: &[&str]) -> Value {
        let mut m = serde_json::Map::new();
        for ch in channels {
            let c = self.dnd_channel(ch);
            m.insert(
                (*ch).to_string(),
                json!({"status": c.status, "message": c.message, "code": c.code}),
            );
        }
        Value::Object(m)
    }

    /// Searchable fields for `POST /contacts/search` filters (times as ms).
    pub fn field(&self, name: &str) -> Option<Value> {
        let s = |o: &Option<String>| o.as_ref().map(|v| json!(v));
        let lower = |o: &Option<String>| o.as_ref().map(|v| json!(v.to_lowercase()));
        match name {
            "id" => Some(json!(self.id)),
            "firstName" => s(&self.first_name),
            "lastName" => s(&self.last_name),
            "firstNameLowerCase" => lower(&self.first_name),
            "lastNameLowerCase" => lower(&self.last_name),
            "fullNameLowerCase" | "contactName" => self.name().map(|n| json!(n.to_lowercase())),
            "email" => lower(&self.email),
            "phone" => s(&self.phone),
            "companyName" => s(&self.company_name),
            "source" => s(&self.source),
            "type" => Some(json!(self.kind)),
            "assignedTo" => s(&self.assigned_to),
            "city" => s(&self.city),
            "state" => s(&self.state),
            "country" => s(&self.country),
            "postalCode" => s(&self.postal_code),
            "tags" => Some(json!(self.tags)),
            "dnd" => Some(json!(self.dnd)),
            "dateAdded" => Some(json!(self.date_added)),
            "dateUpdated" => Some(json!(self.date_updated)),
            _ => None,
        }
    }

    /// Whether the free text `q` occurs in the name, email, phone or company (any case).
    pub fn matches_text(&self, q: &str) -> bool {
        let q = q.to_lowercase();
        [
            self.name(),
            self.email.clone(),
            self.phone.clone(),
            self.company_name.clone(),
        ]
        .iter()
        .flatten()
        .any(|v| v.to_lowercase().contains(&q))
    }
}

impl Opportunity {
    /// Filterable fields of `POST /opportunities/search` (snake_case, times as ms).
    pub fn field(&self, name: &str) -> Option<Value> {
        match name {
            "id" => Some(json!(self.id)),
            "pipeline_id" => Some(json!(self.pipeline_id)),
            "pipeline_stage_id" => Some(json!(self.stage_id)),
            "status" => Some(json!(self.status)),
            "assigned_to" => self.assigned_to.as_ref().map(|v| json!(v)),
            "contact_id" => Some(json!(self.contact_id)),
            "monetary_value" => Some(json!(self.monetary_value)),
            "date_added" => Some(json!(self.created)),
            "date_updated" => Some(json!(self.updated)),
            "last_status_change_at" => Some(json!(self.last_status_change)),
            "last_stage_change_at" => Some(json!(self.last_stage_change)),
            "name" => Some(json!(self.name.to_lowercase())),
            "source" => self.source.as_ref().map(|v| json!(v)),
            _ => None,
        }
    }
}
