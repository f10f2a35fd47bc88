//! Seeded generation of a location: the same `(seed, index)` gives the same users, custom fields,
//! pipelines, contacts, tasks, conversations and opportunities, with timestamps spread over five
//! years before `SEED_EPOCH_MS`.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;

use super::records::{
    Contact, Conversation, CustomField, LocationMeta, Opportunity, Pipeline, Records,
    SEED_EPOCH_MS, Stage, Task, User, gen_id, iso,
};

const YEAR_MS: i64 = 365 * 86_400_000;

fn gen_uuid(rng: &mut ChaCha8Rng) -> String {
    let bytes: [u8; 16] = rng.random();
    uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .to_string()
}

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
            dnd_channels: Default::default(),
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
}
