//! The simulator's ground truth: seeded records per location and their sorted indexes.
//!
//! Records are plain structs (not `serde_json::Value`) so 100k contacts stay small; they are
//! rendered to GHL's JSON shapes only when a page is served. Every sort the API offers is backed by
//! a `BTreeSet<(ms, id)>`, so a page costs O(log N + page), whatever the location's size.

use std::collections::{BTreeSet, HashMap};
use std::ops::Bound;

use chrono::{DateTime, SecondsFormat, Utc};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Map, Value, json};

/// Sort key of an index entry: (milliseconds since the epoch, record id).
pub type Key = (i64, String);
/// A sorted index of one collection by one time field.
pub type Index = BTreeSet<Key>;

/// The moment seeded data ends: 2025-06-01T00:00:00Z. Seeded timestamps spread over five years
/// before it; admin writes use the wall clock (never earlier than the latest seeded time).
pub const SEED_EPOCH_MS: i64 = 1_748_736_000_000;
const YEAR_MS: i64 = 365 * 86_400_000;

/// A string larger than every id (ids are ASCII alphanumerics), for exclusive index bounds.
pub const ID_MAX: &str = "~";

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

fn gen_uuid(rng: &mut ChaCha8Rng) -> String {
    let bytes: [u8; 16] = rng.random();
    uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .to_string()
}

#[derive(Debug, Clone)]
pub struct User {
    pub id: String,
    pub first_name: String,
    pub last_name: String,
    pub email: String,
    pub phone: String,
    pub role: &'static str,
}

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

#[derive(Debug, Clone)]
pub struct Stage {
    pub id: String,
    pub name: String,
    pub position: u32,
}

#[derive(Debug, Clone)]
pub struct Pipeline {
    pub id: String,
    pub name: String,
    pub stages: Vec<Stage>,
}

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
    pub tags: Vec<String>,
    pub custom_fields: Vec<(String, Value)>,
    pub date_added: i64,
    pub date_updated: i64,
}

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
#[derive(Debug, Default)]
pub struct Records {
    pub contacts: HashMap<String, Contact>,
    pub contacts_by_added: Index,
    pub contacts_by_updated: Index,
    pub tasks: HashMap<String, Task>,
    pub tasks_by_due: Index,
    pub tasks_by_contact: HashMap<String, Vec<String>>,
    pub conversations: HashMap<String, Conversation>,
    /// Unique key: GHL pages conversations by `startAfterDate` alone, so the simulator keeps
    /// `lastMessageDate` unique per location (a tie would make a real client skip rows).
    pub conversations_by_last: std::collections::BTreeMap<i64, String>,
    pub opportunities: HashMap<String, Opportunity>,
    pub opps_by_created: Index,
    pub opps_by_updated: Index,
    /// Latest time handed out, so admin writes move `dateUpdated` strictly forward.
    pub clock_ms: i64,
}

impl Records {
    /// A fresh write timestamp: the wall clock, but always later than every earlier one.
    pub fn tick(&mut self) -> i64 {
        let now = Utc::now().timestamp_millis();
        self.clock_ms = now.max(self.clock_ms + 1);
        self.clock_ms
    }

    pub fn insert_contact(&mut self, c: Contact) {
        self.remove_contact_index(&c.id);
        self.contacts_by_added.insert((c.date_added, c.id.clone()));
        self.contacts_by_updated
            .insert((c.date_updated, c.id.clone()));
        self.contacts.insert(c.id.clone(), c);
    }

    fn remove_contact_index(&mut self, id: &str) {
        if let Some(old) = self.contacts.get(id) {
            self.contacts_by_added
                .remove(&(old.date_added, old.id.clone()));
            self.contacts_by_updated
                .remove(&(old.date_updated, old.id.clone()));
        }
    }

    pub fn remove_contact(&mut self, id: &str) -> Option<Contact> {
        self.remove_contact_index(id);
        self.contacts.remove(id)
    }

    pub fn insert_task(&mut self, t: Task) {
        self.remove_task(&t.id);
        self.tasks_by_due.insert((t.due, t.id.clone()));
        self.tasks_by_contact
            .entry(t.contact_id.clone())
            .or_default()
            .push(t.id.clone());
        self.tasks.insert(t.id.clone(), t);
    }

    pub fn remove_task(&mut self, id: &str) -> Option<Task> {
        let old = self.tasks.remove(id)?;
        self.tasks_by_due.remove(&(old.due, old.id.clone()));
        if let Some(list) = self.tasks_by_contact.get_mut(&old.contact_id) {
            list.retain(|x| x != id);
        }
        Some(old)
    }

    /// The next free `lastMessageDate` at or after `ms`.
    pub fn free_message_ms(&self, mut ms: i64) -> i64 {
        while self.conversations_by_last.contains_key(&ms) {
            ms += 1;
        }
        ms
    }

    pub fn insert_conversation(&mut self, mut c: Conversation) {
        self.remove_conversation(&c.id);
        c.last_message_date = self.free_message_ms(c.last_message_date);
        self.conversations_by_last
            .insert(c.last_message_date, c.id.clone());
        self.conversations.insert(c.id.clone(), c);
    }

    pub fn remove_conversation(&mut self, id: &str) -> Option<Conversation> {
        let old = self.conversations.remove(id)?;
        self.conversations_by_last.remove(&old.last_message_date);
        Some(old)
    }

    pub fn insert_opportunity(&mut self, o: Opportunity) {
        self.remove_opportunity(&o.id);
        self.opps_by_created.insert((o.created, o.id.clone()));
        self.opps_by_updated.insert((o.updated, o.id.clone()));
        self.opportunities.insert(o.id.clone(), o);
    }

    pub fn remove_opportunity(&mut self, id: &str) -> Option<Opportunity> {
        let old = self.opportunities.remove(id)?;
        self.opps_by_created.remove(&(old.created, old.id.clone()));
        self.opps_by_updated.remove(&(old.updated, old.id.clone()));
        Some(old)
    }
}

// ---------------------------------------------------------------------------------------------
// Index walking

/// Bounds on the time part of a key, from `range` filters.
#[derive(Debug, Clone)]
pub struct MsRange {
    pub lo: Bound<i64>,
    pub hi: Bound<i64>,
}

impl Default for MsRange {
    fn default() -> Self {
        MsRange {
            lo: Bound::Unbounded,
            hi: Bound::Unbounded,
        }
    }
}

impl MsRange {
    pub fn contains(&self, ms: i64) -> bool {
        (match self.lo {
            Bound::Included(l) => ms >= l,
            Bound::Excluded(l) => ms > l,
            Bound::Unbounded => true,
        }) && (match self.hi {
            Bound::Included(h) => ms <= h,
            Bound::Excluded(h) => ms < h,
            Bound::Unbounded => true,
        })
    }

    /// Narrows with another bound pair (intersection).
    pub fn narrow(&mut self, other: &MsRange) {
        self.lo = match (self.lo, other.lo) {
            (Bound::Unbounded, b) | (b, Bound::Unbounded) => b,
            (a, b) => {
                let (av, bv) = (bound_val(a), bound_val(b));
                if av > bv || (av == bv && matches!(a, Bound::Excluded(_))) {
                    a
                } else {
                    b
                }
            }
        };
        self.hi = match (self.hi, other.hi) {
            (Bound::Unbounded, b) | (b, Bound::Unbounded) => b,
            (a, b) => {
                let (av, bv) = (bound_val(a), bound_val(b));
                if av < bv || (av == bv && matches!(a, Bound::Excluded(_))) {
                    a
                } else {
                    b
                }
            }
        };
    }

    fn key_bounds(&self) -> (Bound<Key>, Bound<Key>) {
        let lo = match self.lo {
            Bound::Included(l) => Bound::Included((l, String::new())),
            Bound::Excluded(l) => Bound::Excluded((l, ID_MAX.to_string())),
            Bound::Unbounded => Bound::Unbounded,
        };
        let hi = match self.hi {
            Bound::Included(h) => Bound::Included((h, ID_MAX.to_string())),
            Bound::Excluded(h) => Bound::Excluded((h, String::new())),
            Bound::Unbounded => Bound::Unbounded,
        };
        (lo, hi)
    }
}

fn bound_val(b: Bound<i64>) -> i64 {
    match b {
        Bound::Included(v) | Bound::Excluded(v) => v,
        Bound::Unbounded => 0,
    }
}

/// One page out of an index: which keys, and (when asked) how many keys match overall.
pub struct Page<'a> {
    pub keys: Vec<&'a Key>,
    pub total: usize,
    pub more: bool,
}

/// Walks `index` in key order (or reverse), strictly after `after`, within `range`, keeping keys
/// whose record passes `pred`; skips `skip` of them and returns up to `limit`. The walk starts at
/// the cursor, so a page costs O(skip + limit) when `pred` is selective-free.
// The parameters are the independent knobs of one walk; a struct would only rename them.
#[allow(clippy::too_many_arguments)]
pub fn page<'a>(
    index: &'a Index,
    range: &MsRange,
    after: Option<&Key>,
    desc: bool,
    skip: usize,
    limit: usize,
    count_total: bool,
    pred: &dyn Fn(&str) -> bool,
) -> Page<'a> {
    let (mut lo, mut hi) = range.key_bounds();
    if let Some(c) = after {
        if desc {
            let tighter = match &hi {
                Bound::Unbounded => true,
                Bound::Included(h) => c <= h,
                Bound::Excluded(h) => c < h,
            };
            if tighter {
                hi = Bound::Excluded(c.clone());
            }
        } else {
            let tighter = match &lo {
                Bound::Unbounded => true,
                Bound::Included(l) => c >= l,
                Bound::Excluded(l) => c > l,
            };
            if tighter {
                lo = Bound::Excluded(c.clone());
            }
        }
    }
    let valid = match (&lo, &hi) {
        (Bound::Included(a) | Bound::Excluded(a), Bound::Included(b) | Bound::Excluded(b)) => {
            a < b
                || (a == b && matches!(lo, Bound::Included(_)) && matches!(hi, Bound::Included(_)))
        }
        _ => true,
    };
    let mut keys = Vec::new();
    let mut more = false;
    if valid {
        let it: Box<dyn Iterator<Item = &Key>> = if desc {
            Box::new(index.range((lo, hi)).rev())
        } else {
            Box::new(index.range((lo, hi)))
        };
        let mut it = it.filter(|k| pred(&k.1)).skip(skip);
        keys.extend(it.by_ref().take(limit));
        more = it.next().is_some();
    }
    let total = if count_total {
        let (lo, hi) = range.key_bounds();
        index.range((lo, hi)).filter(|k| pred(&k.1)).count()
    } else {
        0
    };
    Page { keys, total, more }
}

// ---------------------------------------------------------------------------------------------
// Rendering to GHL's JSON shapes

fn put(m: &mut Map<String, Value>, k: &str, v: &Option<String>) {
    if let Some(v) = v {
        m.insert(k.to_string(), Value::String(v.clone()));
    }
}

impl Contact {
    pub fn name(&self) -> Option<String> {
        match (&self.first_name, &self.last_name) {
            (Some(f), Some(l)) => Some(format!("{f} {l}")),
            (Some(f), None) => Some(f.clone()),
            (None, Some(l)) => Some(l.clone()),
            (None, None) => None,
        }
    }

    /// The full contact object, as `GET /contacts/{id}` and the searches return it.
    pub fn to_json(&self, location_id: &str) -> Value {
        let mut m = Map::new();
        m.insert("id".into(), json!(self.id));
        m.insert("locationId".into(), json!(location_id));
        put(&mut m, "name", &self.name());
        put(&mut m, "contactName", &self.name());
        put(&mut m, "firstName", &self.first_name);
        put(&mut m, "lastName", &self.last_name);
        put(
            &mut m,
            "firstNameLowerCase",
            &self.first_name.as_ref().map(|s| s.to_lowercase()),
        );
        put(
            &mut m,
            "lastNameLowerCase",
            &self.last_name.as_ref().map(|s| s.to_lowercase()),
        );
        put(
            &mut m,
            "fullNameLowerCase",
            &self.name().map(|s| s.to_lowercase()),
        );
        put(&mut m, "email", &self.email);
        put(
            &mut m,
            "emailLowerCase",
            &self.email.as_ref().map(|s| s.to_lowercase()),
        );
        put(&mut m, "phone", &self.phone);
        put(&mut m, "companyName", &self.company_name);
        put(&mut m, "source", &self.source);
        m.insert("type".into(), json!(self.kind));
        put(&mut m, "assignedTo", &self.assigned_to);
        put(&mut m, "address1", &self.address1);
        put(&mut m, "city", &self.city);
        put(&mut m, "state", &self.state);
        put(&mut m, "country", &self.country);
        put(&mut m, "postalCode", &self.postal_code);
        put(&mut m, "website", &self.website);
        put(&mut m, "timezone", &self.timezone);
        put(&mut m, "dateOfBirth", &self.date_of_birth);
        m.insert("dnd".into(), json!(self.dnd));
        let status = if self.dnd { "active" } else { "inactive" };
        m.insert(
            "dndSettings".into(),
            json!({
                "Call": {"status": status, "message": "", "code": ""},
                "Email": {"status": status, "message": "", "code": ""},
                "SMS": {"status": status, "message": "", "code": ""},
                "WhatsApp": {"status": "inactive", "message": "", "code": ""},
                "GMB": {"status": "inactive", "message": "", "code": ""},
                "FB": {"status": "inactive", "message": "", "code": ""}
            }),
        );
        m.insert("tags".into(), json!(self.tags));
        m.insert(
            "customFields".into(),
            Value::Array(
                self.custom_fields
                    .iter()
                    .map(|(id, v)| json!({"id": id, "value": v}))
                    .collect(),
            ),
        );
        m.insert("attributions".into(), json!([]));
        m.insert("followers".into(), json!([]));
        m.insert("dateAdded".into(), json!(iso(self.date_added)));
        m.insert("dateUpdated".into(), json!(iso(self.date_updated)));
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

impl Task {
    /// The shape of `GET /contacts/{id}/tasks`.
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("id".into(), json!(self.id));
        m.insert("title".into(), json!(self.title));
        put(&mut m, "body", &self.body);
        put(&mut m, "assignedTo", &self.assigned_to);
        m.insert("dueDate".into(), json!(iso(self.due)));
        m.insert("completed".into(), json!(self.completed));
        m.insert("contactId".into(), json!(self.contact_id));
        Value::Object(m)
    }
}

impl Opportunity {
    pub fn to_json(&self, location_id: &str, contact: Option<&Contact>) -> Value {
        let mut m = Map::new();
        m.insert("id".into(), json!(self.id));
        m.insert("name".into(), json!(self.name));
        m.insert("monetaryValue".into(), json!(self.monetary_value));
        m.insert("pipelineId".into(), json!(self.pipeline_id));
        m.insert("pipelineStageId".into(), json!(self.stage_id));
        put(&mut m, "assignedTo", &self.assigned_to);
        m.insert("status".into(), json!(self.status));
        put(&mut m, "source", &self.source);
        m.insert(
            "lastStatusChangeAt".into(),
            json!(iso(self.last_status_change)),
        );
        m.insert(
            "lastStageChangeAt".into(),
            json!(iso(self.last_stage_change)),
        );
        m.insert("lastActionDate".into(), json!(iso(self.updated)));
        m.insert("indexVersion".into(), json!(self.updated.to_string()));
        m.insert("createdAt".into(), json!(iso(self.created)));
        m.insert("updatedAt".into(), json!(iso(self.updated)));
        m.insert("contactId".into(), json!(self.contact_id));
        m.insert("locationId".into(), json!(location_id));
        if let Some(c) = contact {
            let mut cm = Map::new();
            cm.insert("id".into(), json!(c.id));
            put(&mut cm, "name", &c.name());
            put(&mut cm, "companyName", &c.company_name);
            put(&mut cm, "email", &c.email);
            put(&mut cm, "phone", &c.phone);
            cm.insert("tags".into(), json!(c.tags));
            m.insert("contact".into(), Value::Object(cm));
        }
        m.insert("notes".into(), json!([]));
        m.insert("tasks".into(), json!([]));
        m.insert("calendarEvents".into(), json!([]));
        m.insert(
            "customFields".into(),
            Value::Array(
                self.custom_fields
                    .iter()
                    .map(|(id, v)| json!({"id": id, "fieldValue": v}))
                    .collect(),
            ),
        );
        m.insert("followers".into(), json!([]));
        Value::Object(m)
    }

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

impl User {
    pub fn to_json(&self, location_id: &str) -> Value {
        let mut perms = Map::new();
        for p in [
            "campaignsEnabled",
            "contactsEnabled",
            "workflowsEnabled",
            "opportunitiesEnabled",
            "dashboardStatsEnabled",
            "appointmentsEnabled",
            "conversationsEnabled",
            "settingsEnabled",
            "tagsEnabled",
            "marketingEnabled",
        ] {
            perms.insert(p.into(), json!(true));
        }
        perms.insert("assignedDataOnly".into(), json!(self.role == "user"));
        json!({
            "id": self.id,
            "name": format!("{} {}", self.first_name, self.last_name),
            "firstName": self.first_name,
            "lastName": self.last_name,
            "email": self.email,
            "phone": self.phone,
            "extension": "",
            "permissions": perms,
            "roles": {"type": "account", "role": self.role, "locationIds": [location_id], "restrictSubAccount": false},
            "deleted": false,
            "platformLanguage": "en_US"
        })
    }
}

impl CustomField {
    pub fn to_json(&self, location_id: &str) -> Value {
        json!({
            "id": self.id,
            "name": self.name,
            "fieldKey": self.key,
            "placeholder": "",
            "dataType": self.data_type,
            "position": self.position,
            "picklistOptions": self.options,
            "picklistImageOptions": [],
            "isAllowedCustomOption": false,
            "isMultiFileAllowed": false,
            "maxFileLimit": 0,
            "locationId": location_id,
            "model": self.model
        })
    }
}

impl Pipeline {
    pub fn to_json(&self, location_id: &str) -> Value {
        json!({
            "id": self.id,
            "name": self.name,
            "stages": self.stages.iter().map(|s| json!({"id": s.id, "name": s.name, "position": s.position, "showInFunnel": true, "showInPieChart": true})).collect::<Vec<_>>(),
            "showInFunnel": true,
            "showInPieChart": true,
            "locationId": location_id,
            "colorRenderMode": "dot"
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Seeded generation

const FIRST: &[&str] = &[
    "James",
    "Mary",
    "Robert",
    "Patricia",
    "John",
    "Jennifer",
    "Michael",
    "Linda",
    "David",
    "Elizabeth",
    "William",
    "Barbara",
    "Richard",
    "Susan",
    "Joseph",
    "Jessica",
    "Thomas",
    "Sarah",
    "Charles",
    "Karen",
    "Alex",
    "Priya",
    "Wei",
    "Fatima",
    "Mateo",
    "Sofia",
    "Liam",
    "Olivia",
    "Noah",
    "Emma",
    "Lucas",
    "Mia",
    "Ethan",
    "Ava",
    "Omar",
    "Chloe",
];
const LAST: &[&str] = &[
    "Smith",
    "Johnson",
    "Williams",
    "Brown",
    "Jones",
    "Garcia",
    "Miller",
    "Davis",
    "Rodriguez",
    "Martinez",
    "Hernandez",
    "Lopez",
    "Gonzalez",
    "Wilson",
    "Anderson",
    "Thomas",
    "Taylor",
    "Moore",
    "Jackson",
    "Martin",
    "Lee",
    "Perez",
    "Thompson",
    "White",
    "Harris",
    "Clark",
    "Lewis",
    "Young",
    "Walker",
    "Hall",
    "Nguyen",
    "Patel",
    "Kim",
    "Chen",
    "Singh",
    "Okafor",
];
const CITIES: &[(&str, &str, &str)] = &[
    ("Austin", "TX", "America/Chicago"),
    ("Denver", "CO", "America/Denver"),
    ("Seattle", "WA", "America/Los_Angeles"),
    ("Miami", "FL", "America/New_York"),
    ("Boston", "MA", "America/New_York"),
    ("Phoenix", "AZ", "America/Phoenix"),
    ("Chicago", "IL", "America/Chicago"),
    ("Portland", "OR", "America/Los_Angeles"),
];
const COMPANIES: &[&str] = &[
    "Acme Roofing",
    "Blue Harbor Dental",
    "Summit Fitness",
    "Greenleaf Landscaping",
    "Northside Auto",
    "Bright Smile Ortho",
    "Peak Realty",
    "Cedar Law Group",
];
const SOURCES: &[&str] = &[
    "facebook form",
    "website",
    "google ads",
    "referral",
    "walk-in",
    "csv import",
];
const TAGS: &[&str] = &[
    "lead",
    "customer",
    "vip",
    "newsletter",
    "webinar",
    "cold",
    "warm",
    "hot",
    "follow-up",
    "referral",
    "churned",
    "trial",
];
const TASK_TITLES: &[&str] = &[
    "Call back",
    "Send quote",
    "Follow up on proposal",
    "Schedule demo",
    "Collect payment",
    "Send contract",
    "Check in after onboarding",
];
const MSG_TYPES: &[(&str, &str)] = &[
    ("TYPE_SMS", "TYPE_PHONE"),
    ("TYPE_EMAIL", "TYPE_EMAIL"),
    ("TYPE_CALL", "TYPE_PHONE"),
    ("TYPE_FACEBOOK", "TYPE_FB_MESSENGER"),
    ("TYPE_WEBCHAT", "TYPE_PHONE"),
];
const MSG_BODIES: &[&str] = &[
    "Thanks, see you then!",
    "Can you send me the price list?",
    "Is Tuesday at 3pm still good?",
    "Got it, thank you.",
    "Please call me back.",
    "What are your opening hours?",
];

fn pick<'a, T>(rng: &mut ChaCha8Rng, xs: &'a [T]) -> &'a T {
    &xs[rng.random_range(0..xs.len())]
}

/// Builds one location's meta data and records from `(seed, index)`, deterministically.
pub fn generate(
    seed: u64,
    index: usize,
    company_id: &str,
    contacts: usize,
    users: usize,
) -> (LocationMeta, Records) {
    let mut rng =
        ChaCha8Rng::seed_from_u64(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ index as u64);
    let (city, state, tz) = *pick(&mut rng, CITIES);
    let company = *pick(&mut rng, COMPANIES);
    let loc_id = gen_id(&mut rng);
    let users: Vec<User> = (0..users.max(1))
        .map(|i| {
            let f = *pick(&mut rng, FIRST);
            let l = *pick(&mut rng, LAST);
            User {
                id: gen_id(&mut rng),
                first_name: f.to_string(),
                last_name: l.to_string(),
                email: format!("{}.{}{}@example.com", f.to_lowercase(), l.to_lowercase(), i),
                phone: format!("+1555{:07}", rng.random_range(0..10_000_000)),
                role: if i == 0 { "admin" } else { "user" },
            }
        })
        .collect();
    let cf_specs: &[(&str, &str, &'static str, &'static str, &[&str])] = &[
        ("Pincode", "contact.pincode", "TEXT", "contact", &[]),
        (
            "Lead Score",
            "contact.lead_score",
            "NUMERICAL",
            "contact",
            &[],
        ),
        (
            "Preferred Channel",
            "contact.preferred_channel",
            "SINGLE_OPTIONS",
            "contact",
            &["SMS", "Email", "Phone"],
        ),
        ("Birthday", "contact.birthday", "DATE", "contact", &[]),
        (
            "Interests",
            "contact.interests",
            "MULTIPLE_OPTIONS",
            "contact",
            &["Product A", "Product B", "Service Plan"],
        ),
        ("Notes", "contact.notes", "LARGE_TEXT", "contact", &[]),
        (
            "Deal Source",
            "opportunity.deal_source",
            "SINGLE_OPTIONS",
            "opportunity",
            &["Inbound", "Outbound", "Partner"],
        ),
        (
            "Close Probability",
            "opportunity.close_probability",
            "NUMERICAL",
            "opportunity",
            &[],
        ),
    ];
    let custom_fields: Vec<CustomField> = cf_specs
        .iter()
        .enumerate()
        .map(|(i, (name, key, dt, model, opts))| CustomField {
            id: gen_id(&mut rng),
            name: name.to_string(),
            key: key.to_string(),
            data_type: dt,
            options: opts.iter().map(|s| s.to_string()).collect(),
            model,
            position: i as u32 * 50,
        })
        .collect();
    let pipe_specs: &[(&str, &[&str])] = &[
        (
            "Sales Pipeline",
            &[
                "New Lead",
                "Contacted",
                "Qualified",
                "Proposal Sent",
                "Negotiation",
                "Closed",
            ],
        ),
        ("Onboarding", &["Kickoff", "Setup", "Training", "Live"]),
        ("Renewals", &["Upcoming", "In Talks", "Renewed"]),
    ];
    let pipelines: Vec<Pipeline> = pipe_specs
        .iter()
        .map(|(name, stages)| Pipeline {
            id: gen_id(&mut rng),
            name: name.to_string(),
            stages: stages
                .iter()
                .enumerate()
                .map(|(i, s)| Stage {
                    id: gen_uuid(&mut rng),
                    name: s.to_string(),
                    position: i as u32,
                })
                .collect(),
        })
        .collect();

    let mut rec = Records {
        clock_ms: SEED_EPOCH_MS,
        ..Default::default()
    };
    rec.contacts.reserve(contacts);
    let contact_cf: Vec<&CustomField> = custom_fields
        .iter()
        .filter(|c| c.model == "contact")
        .collect();
    for n in 0..contacts {
        let added = SEED_EPOCH_MS - rng.random_range(0..5 * YEAR_MS);
        let updated = if rng.random_bool(0.3) {
            added
        } else {
            rng.random_range(added..=SEED_EPOCH_MS)
        };
        let f = *pick(&mut rng, FIRST);
        let l = *pick(&mut rng, LAST);
        let (city, state, tz) = *pick(&mut rng, CITIES);
        let has_email = rng.random_bool(0.9);
        let mut tags: Vec<String> = Vec::new();
        for _ in 0..rng.random_range(0..4) {
            let t = pick(&mut rng, TAGS).to_string();
            if !tags.contains(&t) {
                tags.push(t);
            }
        }
        let mut cfs = Vec::new();
        for cf in &contact_cf {
            if rng.random_bool(0.4) {
                // The spec types a contact custom field `value` as a string, whatever its type.
                let v = match cf.data_type {
                    "NUMERICAL" => json!(rng.random_range(0..100).to_string()),
                    "SINGLE_OPTIONS" | "MULTIPLE_OPTIONS" => json!(pick(&mut rng, &cf.options)),
                    "DATE" => json!(iso(SEED_EPOCH_MS - rng.random_range(0..40 * YEAR_MS))),
                    _ => json!(format!("{}", rng.random_range(10_000..99_999))),
                };
                cfs.push((cf.id.clone(), v));
            }
        }
        let c = Contact {
            id: gen_id(&mut rng),
            first_name: Some(f.to_string()),
            last_name: if rng.random_bool(0.95) {
                Some(l.to_string())
            } else {
                None
            },
            email: has_email
                .then(|| format!("{}.{}{}@example.com", f.to_lowercase(), l.to_lowercase(), n)),
            phone: rng
                .random_bool(0.8)
                .then(|| format!("+1555{:07}", rng.random_range(0..10_000_000))),
            company_name: rng
                .random_bool(0.3)
                .then(|| pick(&mut rng, COMPANIES).to_string()),
            source: Some(pick(&mut rng, SOURCES).to_string()),
            kind: if rng.random_bool(0.7) {
                "lead"
            } else {
                "customer"
            }
            .to_string(),
            assigned_to: rng
                .random_bool(0.7)
                .then(|| pick(&mut rng, &users).id.clone()),
            address1: rng
                .random_bool(0.5)
                .then(|| format!("{} Main St", rng.random_range(1..9999))),
            city: Some(city.to_string()),
            state: Some(state.to_string()),
            country: Some("US".to_string()),
            postal_code: Some(format!("{:05}", rng.random_range(10_000..99_999))),
            website: None,
            timezone: Some(tz.to_string()),
            date_of_birth: None,
            dnd: rng.random_bool(0.05),
            tags,
            custom_fields: cfs,
            date_added: added,
            date_updated: updated,
        };
        let cid = c.id.clone();
        // Tasks: 0 to 5 per contact.
        for _ in 0..rng.random_range(0..=5) {
            let due = added + rng.random_range(0..180 * 86_400_000i64);
            let t_added = rng.random_range(added..=SEED_EPOCH_MS.max(added));
            let t = Task {
                id: gen_id(&mut rng),
                contact_id: cid.clone(),
                title: pick(&mut rng, TASK_TITLES).to_string(),
                body: rng.random_bool(0.6).then(|| format!("Re: {f} {l}")),
                assigned_to: rng
                    .random_bool(0.8)
                    .then(|| pick(&mut rng, &users).id.clone()),
                due,
                completed: due < SEED_EPOCH_MS && rng.random_bool(0.6),
                date_added: t_added,
                date_updated: rng.random_range(t_added..=SEED_EPOCH_MS.max(t_added)),
            };
            rec.insert_task(t);
        }
        // Conversations: about three contacts in four have one.
        if rng.random_bool(0.75) {
            let (mt, ct) = *pick(&mut rng, MSG_TYPES);
            let conv_added = rng.random_range(added..=SEED_EPOCH_MS);
            let last = rng.random_range(conv_added..=SEED_EPOCH_MS);
            let conv = Conversation {
                id: gen_id(&mut rng),
                contact_id: cid.clone(),
                kind: ct.to_string(),
                last_message_body: pick(&mut rng, MSG_BODIES).to_string(),
                last_message_type: mt.to_string(),
                last_message_direction: if rng.random_bool(0.5) {
                    "inbound"
                } else {
                    "outbound"
                }
                .to_string(),
                last_message_date: last,
                unread_count: if rng.random_bool(0.3) {
                    rng.random_range(1..5)
                } else {
                    0
                },
                starred: rng.random_bool(0.05),
                inbox: true,
                assigned_to: rng
                    .random_bool(0.5)
                    .then(|| pick(&mut rng, &users).id.clone()),
                date_added: conv_added,
                date_updated: last,
            };
            rec.insert_conversation(conv);
        }
        // Opportunities: about 35% of contacts, a few with two.
        let n_opps = if rng.random_bool(0.35) {
            if rng.random_bool(0.15) { 2 } else { 1 }
        } else {
            0
        };
        for _ in 0..n_opps {
            let p = pick(&mut rng, &pipelines);
            let s = pick(&mut rng, &p.stages);
            let created = rng.random_range(added..=SEED_EPOCH_MS);
            let updated = rng.random_range(created..=SEED_EPOCH_MS);
            let status = *pick(
                &mut rng,
                &["open", "open", "open", "won", "lost", "abandoned"],
            );
            let o = Opportunity {
                id: gen_id(&mut rng),
                contact_id: cid.clone(),
                name: format!("{f} {l} - {}", p.name),
                monetary_value: (rng.random_range(0..5000) * 10) as f64,
                pipeline_id: p.id.clone(),
                stage_id: s.id.clone(),
                assigned_to: rng
                    .random_bool(0.7)
                    .then(|| pick(&mut rng, &users).id.clone()),
                status: status.to_string(),
                source: Some(pick(&mut rng, SOURCES).to_string()),
                custom_fields: Vec::new(),
                last_status_change: updated,
                last_stage_change: updated,
                created,
                updated,
            };
            rec.insert_opportunity(o);
        }
        rec.insert_contact(c);
    }

    let meta = LocationMeta {
        id: loc_id,
        company_id: company_id.to_string(),
        name: format!("{company} ({city})"),
        city: city.to_string(),
        state: state.to_string(),
        timezone: tz.to_string(),
        email: format!("office{index}@example.com"),
        phone: format!("+1555{:07}", rng.random_range(0..10_000_000)),
        users,
        custom_fields,
        pipelines,
    };
    (meta, rec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_is_deterministic_and_indexed() {
        let (m1, r1) = generate(7, 0, "c", 200, 5);
        let (m2, r2) = generate(7, 0, "c", 200, 5);
        assert_eq!(m1.id, m2.id);
        assert_eq!(r1.contacts.len(), 200);
        assert_eq!(r1.contacts_by_updated.len(), 200);
        let mut a: Vec<_> = r1.contacts.keys().collect();
        let mut b: Vec<_> = r2.contacts.keys().collect();
        a.sort();
        b.sort();
        assert_eq!(a, b);
        assert_eq!(r1.conversations.len(), r1.conversations_by_last.len());
        assert!(r1.tasks.len() <= 200 * 5);
        assert!(!r1.opportunities.is_empty());
    }

    #[test]
    fn page_walks_after_cursor_in_both_directions() {
        let mut idx = Index::new();
        for i in 0..10 {
            idx.insert((i / 2, format!("id{i}")));
        }
        let all = |_: &str| true;
        let p = page(&idx, &MsRange::default(), None, false, 0, 3, true, &all);
        assert_eq!(p.keys.len(), 3);
        assert_eq!(p.total, 10);
        assert!(p.more);
        let after = p.keys[2].clone();
        let p2 = page(
            &idx,
            &MsRange::default(),
            Some(&after),
            false,
            0,
            100,
            false,
            &all,
        );
        assert_eq!(p2.keys.len(), 7);
        let p3 = page(
            &idx,
            &MsRange::default(),
            Some(&after),
            true,
            0,
            100,
            false,
            &all,
        );
        assert_eq!(p3.keys.len(), 2);
        let range = MsRange {
            lo: Bound::Excluded(2),
            hi: Bound::Unbounded,
        };
        let p4 = page(&idx, &range, None, false, 0, 100, true, &all);
        assert_eq!(p4.total, 4);
    }
}
