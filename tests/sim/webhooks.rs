//! Webhooks as real GHL sends them (FACTS.md §9): every event type against the official schemas
//! (tests/fixtures/webhooks, the same CC0 mirror as the OpenAPI specs), the envelope, both
//! signatures over the delivered bytes, and the delivery knobs (redelivery, disorder, retries),
//! against a tiny receiver that records what arrives.

use std::collections::{BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ghl_gateway::sim::{Signatures, SimArgs, SimHandle, WebhookKnobs};
use serde_json::{Value, json};

use crate::helpers::*;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/webhooks");

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Delivery {
    ghl: Option<String>,
    legacy: Option<String>,
    body: Vec<u8>,
}

impl Delivery {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a webhook body is JSON")
    }
}

/// A receiver on port 0: records every request and answers the scripted statuses in turn, then
/// 200 for good.
struct Receiver {
    url: String,
    got: Arc<Mutex<Vec<Delivery>>>,
}

impl Receiver {
    fn deliveries(&self) -> Vec<Delivery> {
        self.got.lock().expect("lock").clone()
    }

    fn events(&self) -> Vec<Value> {
        self.deliveries().iter().map(Delivery::json).collect()
    }
}

async fn receiver(script: &[u16]) -> Receiver {
    let got: Arc<Mutex<Vec<Delivery>>> = Arc::default();
    let script = Arc::new(Mutex::new(
        script.iter().copied().collect::<VecDeque<u16>>(),
    ));
    let sink = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let (sink, script) = (sink.clone(), script.clone());
                async move {
                    let header = |n: &str| {
                        headers
                            .get(n)
                            .map(|v| v.to_str().expect("ASCII header").to_string())
                    };
                    sink.lock().expect("lock").push(Delivery {
                        ghl: header("x-ghl-signature"),
                        legacy: header("x-wh-signature"),
                        body: body.to_vec(),
                    });
                    let status = script.lock().expect("lock").pop_front().unwrap_or(200);
                    axum::http::StatusCode::from_u16(status).expect("status")
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    Receiver { url, got }
}

/// A small simulator whose webhooks go to `rx`, with `knobs`.
async fn sim_for(rx: &Receiver, knobs: WebhookKnobs) -> SimHandle {
    let sim = spawn(SimArgs {
        contacts: 20,
        webhook_url: Some(rx.url.clone()),
        ..SimArgs::default()
    })
    .await;
    sim.update_settings(|s| s.webhooks = knobs)
        .expect("valid knobs");
    sim
}

/// The schema file of an event `type`.
fn fixture(kind: &str) -> Value {
    let file = match kind {
        "ConversationUnreadUpdate" => "ConversationUnreadWebhook",
        "INSTALL" => "AppInstall",
        "UNINSTALL" => "AppUninstall",
        other => other,
    };
    let p = format!("{FIXTURES}/{file}.json");
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{p}: {e}")))
        .expect("fixture is JSON")
}

/// The docs write `"type": "Date"` (AppInstall's trialStartDate), which is no JSON Schema type:
/// an ISO string on the wire.
fn fix_types(v: &mut Value) {
    match v {
        Value::Object(m) => {
            if m.get("type") == Some(&json!("Date")) {
                m.insert("type".into(), json!("string"));
            }
            m.values_mut().for_each(fix_types);
        }
        Value::Array(a) => a.iter_mut().for_each(fix_types),
        _ => {}
    }
}

/// Every field the docs show for an event: the schema's properties (and its alternative
/// `schemas`), and the keys of its examples.
fn documented_keys(doc: &Value) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    let mut schemas = vec![&doc["schema"]];
    schemas.extend(doc["schemas"].as_array().into_iter().flatten());
    for s in schemas {
        keys.extend(
            s["properties"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, _)| k.clone()),
        );
    }
    let mut examples = vec![&doc["example"]];
    examples.extend(doc["examples"].as_array().into_iter().flatten());
    for e in examples {
        keys.extend(e.as_object().into_iter().flatten().map(|(k, _)| k.clone()));
    }
    keys
}

/// Checks an event against its official schema and documented fields, and the envelope every
/// event carries (FACTS.md §9.1).
fn check_event(sim: &SimHandle, event: &Value) {
    let kind = event["type"].as_str().expect("type");
    let doc = fixture(kind);
    let mut schema = doc["schema"].clone();
    fix_types(&mut schema);
    let validator = jsonschema::options()
        .with_draft(jsonschema::Draft::Draft7)
        .build(&schema)
        .unwrap_or_else(|e| panic!("schema of {kind} compiles: {e}"));
    let errors: Vec<String> = validator
        .iter_errors(event)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{kind} does not match: {errors:?}\n{event}"
    );
    let documented = documented_keys(&doc);
    let envelope = [
        "type",
        "locationId",
        "timestamp",
        "webhookId",
        "appId",
        "versionId",
    ];
    for k in event.as_object().expect("object").keys() {
        assert!(
            documented.contains(k) || envelope.contains(&k.as_str()),
            "{kind} carries {k}, which GHL does not document\n{event}"
        );
    }
    assert_eq!(event["appId"].as_str(), Some(sim.app_id.as_str()), "{kind}");
    let version = event["versionId"].as_str().expect("versionId");
    assert!(
        !version.is_empty() && version != sim.app_id,
        "{kind}: {version}"
    );
    let ts = event["timestamp"].as_str().expect("timestamp");
    chrono::DateTime::parse_from_rfc3339(ts)
        .unwrap_or_else(|e| panic!("{kind} timestamp {ts}: {e}"));
    uuid::Uuid::parse_str(event["webhookId"].as_str().expect("webhookId")).expect("a UUID");
}

/// Creates a record of `kind` on the simulator's admin API and returns its id.
fn created(sim: &SimHandle, loc: &str, kind: &str, body: Value) -> String {
    let record = sim.create(loc, kind, body).expect(kind);
    record["id"].as_str().expect("an id").to_owned()
}

fn of_type<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["type"] == kind).collect()
}

#[tokio::test]
async fn every_event_type_is_shaped_as_ghl_sends_it() {
    let rx = receiver(&[]).await;
    let sim = sim_for(&rx, WebhookKnobs::default()).await;
    let loc = sim.locations[0].id.clone();
    let truth = sim.dump(&loc).expect("location");
    let pipeline = &truth["pipelines"][0];
    let stage = pipeline["stages"][1]["id"]
        .as_str()
        .expect("a second stage");
    let user = truth["users"][1]["id"].as_str().expect("a second user");

    let c = created(
        &sim,
        &loc,
        "contacts",
        json!({"firstName": "Ada", "email": "ada@example.com"}),
    );
    sim.update(&loc, "contacts", &c, json!({"tags": ["vip"]}))
        .expect("tags");
    sim.update(
        &loc,
        "contacts",
        &c,
        json!({"dnd": true, "dndSettings": {"RCS": {"status": "permanent", "message": "STOP", "code": "102"}}}),
    )
    .expect("dnd");
    let t = created(
        &sim,
        &loc,
        "tasks",
        json!({"contactId": c, "title": "Call", "body": "about the invoice"}),
    );
    sim.update(&loc, "tasks", &t, json!({"completed": true}))
        .expect("complete");
    sim.delete(&loc, "tasks", &t).expect("delete task");
    let o = created(
        &sim,
        &loc,
        "opportunities",
        json!({"contactId": c, "name": "Deal", "monetaryValue": 100}),
    );
    sim.update(
        &loc,
        "opportunities",
        &o,
        json!({"pipelineStageId": stage, "status": "won", "monetaryValue": 250, "assignedTo": user}),
    )
    .expect("opportunity update");
    let conv = created(
        &sim,
        &loc,
        "conversations",
        json!({"contactId": c, "lastMessageBody": "hi", "lastMessageDirection": "inbound"}),
    );
    sim.update(
        &loc,
        "conversations",
        &conv,
        json!({"lastMessageBody": "Your invoice", "lastMessageType": "TYPE_EMAIL", "lastMessageDirection": "outbound"}),
    )
    .expect("outbound");
    sim.update(&loc, "conversations", &conv, json!({"unreadCount": 3}))
        .expect("unread");
    sim.delete(&loc, "opportunities", &o).expect("delete opp");
    sim.delete(&loc, "contacts", &c).expect("delete contact");
    sim.uninstall(Some(&loc)).expect("uninstall");
    sim.install(Some(&loc)).expect("install");
    sim.uninstall(None).expect("agency uninstall");
    sim.install(None).expect("agency install");
    sim.webhooks_idle().await;

    let events = rx.events();
    for e in &events {
        check_event(&sim, e);
    }
    let kinds: BTreeSet<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
    let expected: BTreeSet<&str> = [
        "ContactCreate",
        "ContactUpdate",
        "ContactDelete",
        "ContactTagUpdate",
        "ContactDndUpdate",
        "TaskCreate",
        "TaskComplete",
        "TaskDelete",
        "OpportunityCreate",
        "OpportunityUpdate",
        "OpportunityDelete",
        "OpportunityStageUpdate",
        "OpportunityStatusUpdate",
        "OpportunityMonetaryValueUpdate",
        "OpportunityAssignedToUpdate",
        "InboundMessage",
        "OutboundMessage",
        "ConversationUnreadUpdate",
        "INSTALL",
        "UNINSTALL",
    ]
    .into();
    assert_eq!(kinds, expected);

    // Real TaskCreate payloads omit contactId and body (FACTS.md §9.1); the others carry them.
    let created = of_type(&events, "TaskCreate")[0];
    assert!(
        created.get("contactId").is_none() && created.get("body").is_none(),
        "{created}"
    );
    let completed = of_type(&events, "TaskComplete")[0];
    assert_eq!(completed["contactId"].as_str(), Some(c.as_str()));
    assert_eq!(completed["body"], "about the invoice");
    // dndSettings per channel, RCS included.
    let dnd = of_type(&events, "ContactDndUpdate")[0];
    for ch in ["Call", "Email", "SMS", "WhatsApp", "GMB", "FB", "RCS"] {
        assert!(
            dnd["dndSettings"][ch]["status"].is_string(),
            "{ch} in {dnd}"
        );
    }
    assert_eq!(dnd["dndSettings"]["RCS"]["status"], "permanent");
    assert_eq!(dnd["dndSettings"]["SMS"]["status"], "active");
    // Record events carry the location; agency app events carry the company instead.
    for e in events
        .iter()
        .filter(|e| e["type"] != "INSTALL" && e["type"] != "UNINSTALL")
    {
        assert_eq!(e["locationId"].as_str(), Some(loc.as_str()), "{e}");
    }
    let uninstalls = of_type(&events, "UNINSTALL");
    assert_eq!(uninstalls.len(), 2);
    assert_eq!(uninstalls[0]["locationId"].as_str(), Some(loc.as_str()));
    assert!(uninstalls[1].get("locationId").is_none());
    assert_eq!(
        uninstalls[1]["companyId"].as_str(),
        Some(sim.company_id.as_str())
    );
    let installs = of_type(&events, "INSTALL");
    assert_eq!(installs.len(), 2);
    assert_eq!(installs[0]["locationId"].as_str(), Some(loc.as_str()));
    assert!(installs[1].get("locationId").is_none());
    let email = of_type(&events, "OutboundMessage")[0];
    assert_eq!(
        (email["messageType"].as_str(), email["source"].as_str()),
        (Some("Email"), Some("app"))
    );
    assert_eq!(sim.webhook_stats().delivered, events.len() as u64);
}

/// `(ed25519, rsa)` verifiers from the public keys the simulator prints.
fn verifiers(
    sim: &SimHandle,
) -> (
    ed25519_dalek::VerifyingKey,
    rsa::pkcs1v15::VerifyingKey<rsa::sha2::Sha256>,
) {
    use rsa::pkcs8::DecodePublicKey;
    let b64: String = sim
        .webhook_public_key_pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let der = B64.decode(b64).expect("base64");
    let ed = ed25519_dalek::VerifyingKey::from_bytes(der[12..].try_into().expect("32 bytes"))
        .expect("an Ed25519 key");
    let pk = rsa::RsaPublicKey::from_public_key_pem(&sim.webhook_legacy_public_key_pem)
        .expect("an RSA SPKI PEM");
    (ed, rsa::pkcs1v15::VerifyingKey::new(pk))
}

fn verify_ed(key: &ed25519_dalek::VerifyingKey, body: &[u8], sig: &str) -> bool {
    use ed25519_dalek::Verifier;
    let sig =
        ed25519_dalek::Signature::from_slice(&B64.decode(sig).expect("base64")).expect("64 bytes");
    key.verify(body, &sig).is_ok()
}

fn verify_rsa(
    key: &rsa::pkcs1v15::VerifyingKey<rsa::sha2::Sha256>,
    body: &[u8],
    sig: &str,
) -> bool {
    use rsa::signature::Verifier;
    let sig = rsa::pkcs1v15::Signature::try_from(B64.decode(sig).expect("base64").as_slice())
        .expect("an RSA signature");
    key.verify(body, &sig).is_ok()
}

#[tokio::test]
async fn both_signatures_verify_over_the_delivered_bytes_with_the_printed_keys() {
    let rx = receiver(&[]).await;
    let sim = sim_for(&rx, WebhookKnobs::default()).await;
    let loc = sim.locations[0].id.clone();
    sim.create(&loc, "contacts", json!({"firstName": "Signed"}))
        .expect("create");
    sim.install(Some(&loc)).expect("install");
    sim.webhooks_idle().await;
    let (ed, rsa_key) = verifiers(&sim);
    let got = rx.deliveries();
    assert_eq!(got.len(), 2);
    for d in &got {
        let ghl = d.ghl.as_deref().expect("X-GHL-Signature on an app event");
        let legacy = d.legacy.as_deref().expect("X-WH-Signature on an app event");
        assert!(verify_ed(&ed, &d.body, ghl), "Ed25519 over the raw body");
        assert!(
            verify_rsa(&rsa_key, &d.body, legacy),
            "RSA-SHA256 over the raw body"
        );
        // The same event re-serialized (other bytes) does not verify: the signature is of the bytes.
        let mut other = serde_json::to_vec_pretty(&d.json()).expect("json");
        other.push(b'\n');
        assert!(!verify_ed(&ed, &other, ghl) && !verify_rsa(&rsa_key, &other, legacy));
    }
    // The admin API serves the same keys.
    let c = client();
    let legacy_pem = c
        .get(format!("{}/_sim/webhooks/legacy-public-key", sim.base_url))
        .send()
        .await
        .expect("answered")
        .text()
        .await
        .expect("text");
    assert_eq!(legacy_pem, sim.webhook_legacy_public_key_pem);
    assert!(legacy_pem.starts_with("-----BEGIN PUBLIC KEY-----"));
}

#[tokio::test]
async fn the_signatures_knob_sends_one_header_or_the_other() {
    let rx = receiver(&[]).await;
    let sim = sim_for(
        &rx,
        WebhookKnobs {
            signatures: Signatures::Legacy,
            ..Default::default()
        },
    )
    .await;
    let loc = sim.locations[0].id.clone();
    sim.create(&loc, "contacts", json!({"firstName": "Legacy"}))
        .expect("create");
    sim.webhooks_idle().await;
    sim.update_settings(|s| s.webhooks.signatures = Signatures::Ed25519)
        .expect("knob");
    sim.create(&loc, "contacts", json!({"firstName": "Modern"}))
        .expect("create");
    sim.webhooks_idle().await;
    let got = rx.deliveries();
    assert_eq!(got.len(), 2);
    assert!(got[0].ghl.is_none() && got[0].legacy.is_some());
    assert!(got[1].ghl.is_some() && got[1].legacy.is_none());
    let (ed, rsa_key) = verifiers(&sim);
    assert!(verify_rsa(
        &rsa_key,
        &got[0].body,
        got[0].legacy.as_deref().expect("legacy")
    ));
    assert!(verify_ed(
        &ed,
        &got[1].body,
        got[1].ghl.as_deref().expect("ghl")
    ));
}

#[tokio::test]
async fn redelivery_repeats_the_same_webhook_id_and_bytes() {
    let rx = receiver(&[]).await;
    let sim = sim_for(
        &rx,
        WebhookKnobs {
            redeliver: 1.0,
            ..Default::default()
        },
    )
    .await;
    let loc = sim.locations[0].id.clone();
    sim.create(&loc, "contacts", json!({"firstName": "Twice"}))
        .expect("create");
    sim.webhooks_idle().await;
    let got = rx.deliveries();
    assert_eq!(got.len(), 2, "delivered twice");
    assert_eq!(got[0].body, got[1].body, "the same bytes");
    assert_eq!(got[0].ghl, got[1].ghl);
    assert_eq!(got[0].legacy, got[1].legacy);
    assert_eq!(got[0].json()["webhookId"], got[1].json()["webhookId"]);
    let st = sim.webhook_stats();
    assert_eq!(
        (st.queued, st.deliveries, st.redeliveries, st.delivered),
        (1, 2, 1, 2)
    );
}

#[tokio::test]
async fn reorder_delivers_each_group_newest_first() {
    let rx = receiver(&[]).await;
    let sim = sim_for(
        &rx,
        WebhookKnobs {
            reorder: 3,
            // Long enough that the three events below always fill the group.
            reorder_wait_ms: 60_000,
            ..Default::default()
        },
    )
    .await;
    let loc = sim.locations[0].id.clone();
    let c = sim
        .create(&loc, "contacts", json!({"firstName": "v1"}))
        .expect("create")["id"]
        .as_str()
        .expect("id")
        .to_string();
    sim.update(&loc, "contacts", &c, json!({"firstName": "v2"}))
        .expect("v2");
    sim.update(&loc, "contacts", &c, json!({"firstName": "v3"}))
        .expect("v3");
    sim.webhooks_idle().await;
    let seen: Vec<(String, String)> = rx
        .events()
        .iter()
        .map(|e| {
            (
                e["type"].as_str().expect("type").into(),
                e["firstName"].as_str().expect("name").into(),
            )
        })
        .collect();
    let want = [
        ("ContactUpdate", "v3"),
        ("ContactUpdate", "v2"),
        ("ContactCreate", "v1"),
    ];
    assert_eq!(seen, want.map(|(a, b)| (a.to_string(), b.to_string())));
    assert_eq!(sim.webhook_stats().reordered_groups, 1);
}

#[tokio::test]
async fn a_non_2xx_is_retried_until_accepted_or_the_attempts_run_out() {
    let rx = receiver(&[500, 503]).await;
    let sim = sim_for(
        &rx,
        WebhookKnobs {
            max_attempts: 5,
            retry_base_ms: 1,
            ..Default::default()
        },
    )
    .await;
    let loc = sim.locations[0].id.clone();
    sim.create(&loc, "contacts", json!({"firstName": "Retry"}))
        .expect("create");
    sim.webhooks_idle().await;
    let got = rx.deliveries();
    assert_eq!(got.len(), 3, "500, 503, then 200");
    assert!(
        got.iter()
            .all(|d| d.body == got[0].body && d.ghl == got[0].ghl)
    );
    let st = sim.webhook_stats();
    assert_eq!(
        (
            st.attempts,
            st.retries,
            st.failed_attempts,
            st.delivered,
            st.failures
        ),
        (3, 2, 2, 1, 0)
    );
    assert_eq!(sim.count("webhook", "500"), 1);
    assert_eq!(sim.count("webhook", "200"), 1);

    // Two attempts against a receiver that keeps failing: the delivery is given up.
    let rx = receiver(&[500, 500, 500]).await;
    let sim = sim_for(
        &rx,
        WebhookKnobs {
            max_attempts: 2,
            retry_base_ms: 1,
            ..Default::default()
        },
    )
    .await;
    sim.create(
        &sim.locations[0].id.clone(),
        "contacts",
        json!({"firstName": "Lost"}),
    )
    .expect("create");
    sim.webhooks_idle().await;
    assert_eq!(rx.deliveries().len(), 2);
    let st = sim.webhook_stats();
    assert_eq!((st.attempts, st.delivered, st.failures), (2, 0, 1));
}

#[tokio::test]
async fn uninstall_and_install_show_in_installed_locations() {
    let rx = receiver(&[]).await;
    let sim = sim_for(&rx, WebhookKnobs::default()).await;
    let loc = sim.locations[0].id.clone();
    let installed = |sim: &SimHandle| {
        let path = format!(
            "/oauth/installedLocations?companyId={}&appId={}",
            sim.company_id, sim.app_id
        );
        let (sim_url, token) = (sim.base_url.clone(), sim.agency_token.clone());
        async move {
            let r = client()
                .get(format!("{sim_url}{path}"))
                .bearer_auth(token)
                .header("Version", V)
                .send()
                .await
                .expect("answered");
            let v: Value = r.json().await.expect("json");
            v["locations"][0]["isInstalled"]
                .as_bool()
                .expect("isInstalled")
        }
    };
    assert!(installed(&sim).await);
    let c = client();
    let r: Value = c
        .post(format!("{}/_sim/app/uninstall", sim.base_url))
        .json(&json!({"locationId": loc}))
        .send()
        .await
        .expect("answered")
        .json()
        .await
        .expect("json");
    assert_eq!(r["installed"], false);
    assert!(!installed(&sim).await);
    let r = c
        .post(format!("{}/_sim/app/install", sim.base_url))
        .json(&json!({"locationId": "nope"}))
        .send()
        .await
        .expect("answered");
    assert_eq!(r.status(), 404, "an unknown location");
    sim.install(Some(&loc)).expect("install");
    assert!(installed(&sim).await);
    sim.webhooks_idle().await;
    let kinds: Vec<String> = rx
        .events()
        .iter()
        .map(|e| e["type"].as_str().expect("type").into())
        .collect();
    assert_eq!(kinds, ["UNINSTALL", "INSTALL"]);
}

#[tokio::test]
async fn webhook_knobs_are_settings_and_stats_are_readable() {
    let rx = receiver(&[]).await;
    let sim = sim_for(&rx, WebhookKnobs::default()).await;
    let c = client();
    let patch = |body: Value| {
        let req = c
            .patch(format!("{}/_sim/settings", sim.base_url))
            .json(&body);
        async move {
            let r = req.send().await.expect("answered");
            (r.status().as_u16(), r.json::<Value>().await.expect("json"))
        }
    };
    let (status, body) = patch(json!({"webhooks": {"maxAttempts": 4}})).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = patch(json!({"webhooks": {"redeliver": 0.5}})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["settings"]["webhooks"]["maxAttempts"], 4,
        "a partial patch keeps the rest"
    );
    assert_eq!(sim.settings().webhooks.redeliver, 0.5);
    let (status, body) = patch(json!({"webhooks": {"reorder": 0}})).await;
    assert_eq!(status, 400);
    assert!(
        body["message"]
            .as_str()
            .expect("message")
            .contains("reorder")
    );
    let (status, _) = patch(json!({"webhooks": {"resend": 1}})).await;
    assert_eq!(status, 400, "unknown knob");

    sim.update_settings(|s| s.webhooks.redeliver = 0.0)
        .expect("knob");
    sim.create(
        &sim.locations[0].id.clone(),
        "contacts",
        json!({"firstName": "Counted"}),
    )
    .expect("create");
    sim.webhooks_idle().await;
    let stats: Value = c
        .get(format!("{}/_sim/webhooks/stats", sim.base_url))
        .send()
        .await
        .expect("answered")
        .json()
        .await
        .expect("json");
    assert_eq!(stats["stats"]["queued"], 1);
    assert_eq!(stats["stats"]["delivered"], 1);
    assert_eq!(stats["stats"]["attempts"], 1);
    assert_eq!(stats["pending"], 0);
    assert_eq!(rx.deliveries().len(), 1);
}

#[tokio::test]
async fn a_delayed_event_is_held_back_and_still_pending() {
    let rx = receiver(&[]).await;
    let sim = sim_for(
        &rx,
        WebhookKnobs {
            delay_ms: 3_600_000,
            ..Default::default()
        },
    )
    .await;
    sim.create(
        &sim.locations[0].id.clone(),
        "contacts",
        json!({"firstName": "Later"}),
    )
    .expect("create");
    // Not a timing assertion: an event due in an hour must not arrive now, however slow the
    // machine; a broken delay delivers it at once.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(rx.deliveries().is_empty(), "delivered before its delay");
    let st = sim.webhook_stats();
    assert_eq!((st.queued, st.attempts), (1, 0));
    let stats: Value = client()
        .get(format!("{}/_sim/webhooks/stats", sim.base_url))
        .send()
        .await
        .expect("answered")
        .json()
        .await
        .expect("json");
    assert_eq!(stats["pending"], 1);
}

#[tokio::test]
async fn concurrency_puts_several_deliveries_in_flight_at_once() {
    // A receiver that answers nobody until three requests wait together: it can only finish if
    // three deliveries are in flight at once.
    let barrier = Arc::new(tokio::sync::Barrier::new(3));
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move || {
            let barrier = barrier.clone();
            async move {
                barrier.wait().await;
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    let sim = spawn(SimArgs {
        contacts: 5,
        webhook_url: Some(url),
        ..SimArgs::default()
    })
    .await;
    sim.update_settings(|s| s.webhooks.concurrency = 3)
        .expect("knob");
    let loc = sim.locations[0].id.clone();
    for name in ["a", "b", "c"] {
        sim.create(&loc, "contacts", json!({"firstName": name}))
            .expect("create");
    }
    // A guard against a hang, not a timing assertion: one at a time never gets past the barrier.
    tokio::time::timeout(std::time::Duration::from_secs(60), sim.webhooks_idle())
        .await
        .expect("three deliveries in flight together");
    assert_eq!(sim.webhook_stats().delivered, 3);
}
