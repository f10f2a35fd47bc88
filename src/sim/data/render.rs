//! GHL's JSON shapes of the records, as the routes answer them (`to_json`). Rendering happens
//! only when a page is served; it reads records and never changes them.

use serde_json::{Map, Value, json};

use super::records::{Contact, CustomField, DND_CHANNELS, Opportunity, Pipeline, Task, User, iso};

/// Sets `k` when `v` is some: GHL leaves empty fields out rather than sending null.
pub fn put(m: &mut Map<String, Value>, k: &str, v: &Option<String>) {
    if let Some(v) = v {
        m.insert(k.to_string(), Value::String(v.clone()));
    }
}

impl Contact {
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
        // GET renders the six channels FACTS.md §2.3 lists; webhooks add RCS (`webhooks::events`).
        m.insert(
            "dndSettings".into(),
            self.dnd_settings_json(&DND_CHANNELS[..6]),
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
    /// The opportunity object of the searches, with a summary of its contact when given.
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
}

impl User {
    /// The user object of `/users/` and `/users/search`.
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
    /// The custom field object of `/locations/{id}/customFields`.
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
    /// The pipeline object of `/opportunities/pipelines`, with its stages.
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
