//! The GHL client against the simulator (and wiremock for what the simulator cannot do):
//! call counts, 429s, retries, token renewal. Counts, not timings.
//!
//! Credentials live in memory ([`MemoryCredentials`]) unless the test is about what reaches the
//! database (token rotation, agency location tokens): those go through the app's store.

use std::collections::HashSet;
use std::sync::Arc;

use futures::TryStreamExt;
use ghl_gateway::app::credentials::StoreCredentials;
use ghl_gateway::sim::{FaultConfig, FaultSpec};
use ghl_gateway::store::Store;
use ghl_gateway::upstream::{
    Client, Credential, CredentialStore, Cursor, FetchedPage, Listing, MemoryCredentials, Records,
    UpstreamError,
};
use serde_json::{Value, json};

use crate::helpers::*;

async fn all_pages(
    client: &Client,
    location: &str,
    listing: Listing,
) -> Result<Vec<FetchedPage>, UpstreamError> {
    client.pages(location, listing, None, 0).try_collect().await
}

fn ids_of(pages: &[FetchedPage]) -> Vec<String> {
    pages
        .iter()
        .flat_map(|p| p.records.ids().into_iter().map(str::to_owned))
        .collect()
}

fn truth_ids(truth: &Value, key: &str) -> HashSet<String> {
    truth[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().or(r["_id"].as_str()).unwrap().to_owned())
        .collect()
}

fn assert_exactly_once(got: Vec<String>, want: &HashSet<String>, what: &str) {
    let unique: HashSet<String> = got.iter().cloned().collect();
    assert_eq!(unique.len(), got.len(), "{what}: a record came twice");
    let missing: Vec<_> = want.difference(&unique).take(5).collect();
    let extra: Vec<_> = unique.difference(want).take(5).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{what}: {} fetched, {} in the ground truth; missing {missing:?}, extra {extra:?}",
        unique.len(),
        want.len()
    );
}

/// Credentials in memory only.
fn in_memory() -> Arc<dyn CredentialStore> {
    Arc::new(MemoryCredentials::new())
}

/// Credentials in `store`, as the gateway keeps them (without encryption at rest).
fn in_store(store: &Store) -> Arc<dyn CredentialStore> {
    Arc::new(StoreCredentials::new(store.clone(), None))
}

/// A client of the simulator (configured by `tweak`) holding `loc`'s private integration token.
async fn client_of(
    sim: &ghl_gateway::sim::SimHandle,
    loc: &ghl_gateway::sim::SimLocation,
    tweak: impl FnOnce(&mut ghl_gateway::upstream::UpstreamConfig),
) -> Client {
    let client = upstream_client(in_memory(), sim, tweak);
    client
        .set_credential(
            &loc.id,
            Credential::PrivateIntegration {
                token: loc.pit_token.clone().into(),
            },
        )
        .await
        .unwrap();
    client
}

fn pages_for(count: usize, size: usize) -> u64 {
    count.div_ceil(size) as u64
}

/// A whole list of conversations is read from both ends at once: both walks' edges show in the
/// pages' cursors, every conversation comes once, in as many calls as one walk would make; and a
/// read stopped after any page and resumed from that page's cursor fetches only the rest.
#[tokio::test]
async fn conversations_are_read_from_both_ends_and_resume_from_either_walk() {
    let sim = spawn_sim(1_000).await;
    let loc = sim.locations[0].clone();
    let client = client_of(&sim, &loc, |_| {}).await;
    let truth = sim.dump(&loc.id).unwrap();
    let want = truth_ids(&truth, "conversations");
    let pages_needed = crate::sync::conversation_pages(want.len()) as u64;
    assert!(pages_needed >= 6, "{} conversations", want.len());

    sim.reset_counters();
    let pages = all_pages(&client, &loc.id, Listing::Conversations(None))
        .await
        .unwrap();
    assert_eq!(sim.requests("conversations.search"), pages_needed);
    assert_exactly_once(ids_of(&pages), &want, "conversations");
    let both = pages.iter().any(|p| {
        matches!(
            &p.next,
            Some(Cursor::Ends {
                newer: Some(_),
                older: Some(_)
            })
        )
    });
    assert!(
        both,
        "both walks ran: {:?}",
        pages.iter().map(|p| &p.next).collect::<Vec<_>>()
    );
    assert!(pages.last().unwrap().next.is_none());

    for stop in [1, 2, pages.len() / 2, pages.len() - 1] {
        sim.reset_counters();
        let mut stream = Box::pin(client.pages(&loc.id, Listing::Conversations(None), None, 0));
        let mut first = Vec::new();
        while first.len() < stop {
            first.push(stream.try_next().await.unwrap().unwrap());
        }
        // Stopped there: the page in flight, if any, is dropped with the stream.
        drop(stream);
        sim.wait_idle().await;
        let spent = sim.requests("conversations.search");
        let cursor = first.last().unwrap().next.clone();
        let fetched: u64 = first.iter().map(|p| p.records.len() as u64).sum();
        let rest: Vec<FetchedPage> = client
            .pages(&loc.id, Listing::Conversations(None), cursor, fetched)
            .try_collect()
            .await
            .unwrap();
        let mut ids = ids_of(&first);
        ids.extend(ids_of(&rest));
        assert_exactly_once(ids, &want, &format!("stopped after {stop}"));
        let resumed = sim.requests("conversations.search") - spent;
        assert_eq!(
            stop as u64 + resumed,
            pages_needed,
            "stopped after {stop}: the resumed read fetched only the pages left"
        );
    }
}

#[tokio::test]
async fn every_resource_of_a_10k_location_in_the_minimal_number_of_calls() {
    let sim = spawn_sim(10_000).await;
    let loc = sim.locations[0].clone();
    let client = client_of(&sim, &loc, |_| {}).await;

    let (users, _) = client.users(&loc.id).await.unwrap();
    let (fields, _) = client.custom_fields(&loc.id).await.unwrap();
    let (pipelines, _) = client.pipelines(&loc.id).await.unwrap();
    let contacts = all_pages(&client, &loc.id, Listing::Contacts(None))
        .await
        .unwrap();
    let tasks = all_pages(&client, &loc.id, Listing::Tasks(None))
        .await
        .unwrap();
    let conversations = all_pages(&client, &loc.id, Listing::Conversations(None))
        .await
        .unwrap();
    let opportunities = all_pages(&client, &loc.id, Listing::Opportunities(None))
        .await
        .unwrap();

    let truth = sim.dump(&loc.id).unwrap();
    let count = |key: &str| truth[key].as_array().unwrap().len();
    let (n, t, c, o) = (
        count("contacts"),
        count("tasks"),
        count("conversations"),
        count("opportunities"),
    );
    assert_eq!(n, 10_000);
    assert_eq!(
        (users.len(), fields.len(), pipelines.len()),
        (count("users"), count("customFields"), count("pipelines"))
    );
    assert_exactly_once(
        ids_of(&contacts),
        &truth_ids(&truth, "contacts"),
        "contacts",
    );
    assert_exactly_once(ids_of(&tasks), &truth_ids(&truth, "tasks"), "tasks");
    assert_exactly_once(
        ids_of(&conversations),
        &truth_ids(&truth, "conversations"),
        "conversations",
    );
    assert_exactly_once(
        ids_of(&opportunities),
        &truth_ids(&truth, "opportunities"),
        "opportunities",
    );

    // FACTS.md §11: 3 + ⌈N/500⌉ + ⌈T/500⌉ (+1 when T is a multiple of 500: no total) + ⌈C/100⌉ + ⌈O/500⌉,
    // conversations with one row of overlap a page (a run of equal dates must not be cut).
    let minimal = 3
        + pages_for(n, 500)
        + (t / 500 + 1) as u64
        + crate::sync::conversation_pages(c) as u64
        + pages_for(o, 500);
    let stats = client.stats(&loc.id);
    eprintln!(
        "N={n} T={t} C={c} O={o}: {} calls, minimal {minimal}, {stats:?}",
        stats.calls
    );
    assert_eq!(stats.calls, minimal, "{stats:?}");
    assert_eq!(sim.total_requests(), minimal);
    assert_eq!(stats.rate_limited, 0);
    assert_eq!(
        sim.counters()
            .values()
            .filter_map(|m| m.get("429"))
            .sum::<u64>(),
        0,
        "no 429 at all"
    );
    assert_eq!(stats.retries, 0);
}

#[tokio::test]
async fn five_hundred_calls_under_the_real_limit_see_no_429() {
    let sim = spawn_sim(10).await;
    let loc = sim.locations[0].clone();
    let client = client_of(&sim, &loc, |_| {}).await;
    // 25 callers of 20 calls each share the location's budget of 100 per 10 s.
    let mut callers = Vec::new();
    for _ in 0..25 {
        let client = client.clone();
        let loc = loc.id.clone();
        callers.push(tokio::spawn(async move {
            for _ in 0..20 {
                client.pipelines(&loc).await.unwrap();
            }
        }));
    }
    for caller in callers {
        caller.await.unwrap();
    }
    let stats = client.stats(&loc.id);
    assert_eq!(stats.calls, 500, "{stats:?}");
    assert_eq!(stats.rate_limited, 0, "{stats:?}");
    assert_eq!(sim.count("opportunities.pipelines", "429"), 0);
    assert_eq!(sim.count("opportunities.pipelines", "200"), 500);
}

#[tokio::test]
async fn paging_yields_every_record_once_through_5xx_and_resets() {
    let sim = spawn_sim(2_000).await;
    let loc = sim.locations[0].clone();
    let spec = FaultSpec {
        error500: 0.04,
        error502: 0.03,
        error503: 0.03,
        reset: 0.05,
        ..Default::default()
    };
    sim.set_faults(FaultConfig {
        default: spec,
        endpoints: Default::default(),
    })
    .unwrap();
    let client = client_of(&sim, &loc, |c| c.max_retries = 10).await;
    let truth = sim.dump(&loc.id).unwrap();
    for (listing, key) in [
        (Listing::Contacts(None), "contacts"),
        (Listing::Tasks(None), "tasks"),
        (Listing::Conversations(None), "conversations"),
        (Listing::Opportunities(None), "opportunities"),
    ] {
        let pages = all_pages(&client, &loc.id, listing).await.unwrap();
        assert_exactly_once(ids_of(&pages), &truth_ids(&truth, key), key);
    }
    let stats = client.stats(&loc.id);
    let faults: u64 = sim
        .counters()
        .values()
        .flat_map(|m| m.iter())
        .filter(|(status, _)| ["500", "502", "503", "reset"].contains(&status.as_str()))
        .map(|(_, n)| n)
        .sum();
    assert!(faults > 0, "the simulator injected faults");
    assert_eq!(stats.retries, faults, "one retry per fault: {stats:?}");
}

#[tokio::test]
async fn an_expired_oauth_token_is_refreshed_once_for_twenty_callers() {
    let db = sqlite().await;
    let sim = spawn_sim(10).await;
    let loc = sim.locations[0].id.clone();
    let client = upstream_client(in_store(&db.store), &sim, |_| {});
    let code = sim.auth_code("Location", Some(&loc)).unwrap();
    assert_eq!(client.install_with_code(&code).await.unwrap(), loc);
    let before = db.store.credential(&loc).await.unwrap().unwrap();
    assert!(sim.expire_token(before.access_token.as_deref().unwrap()));

    let mut callers = Vec::new();
    for _ in 0..20 {
        let client = client.clone();
        let loc = loc.clone();
        callers.push(tokio::spawn(async move {
            client.users(&loc).await.map(|(u, _)| u.len())
        }));
    }
    for caller in callers {
        assert!(caller.await.unwrap().unwrap() > 0);
    }
    let stats = client.stats(&loc);
    assert_eq!(stats.renewals, 1, "{stats:?}");
    // One code exchange and one refresh.
    assert_eq!(sim.requests("oauth.token"), 2);
    let after = db.store.credential(&loc).await.unwrap().unwrap();
    assert_ne!(
        after.refresh_token, before.refresh_token,
        "the rotated refresh token is stored"
    );
    assert_ne!(after.access_token, before.access_token);
    // The old refresh token is spent: a client that kept it would be locked out.
    let stale = upstream_client(in_store(&db.store), &sim, |_| {});
    stale
        .set_credential(
            &loc,
            Credential::OAuth {
                access_token: "expired".into(),
                refresh_token: before.refresh_token.clone().unwrap().into(),
                expires_at: Some(0),
            },
        )
        .await
        .unwrap();
    assert!(matches!(
        stale.users(&loc).await,
        Err(UpstreamError::Unauthorized(_))
    ));
}

#[tokio::test]
async fn an_agency_token_mints_location_tokens() {
    let db = sqlite().await;
    let sim = spawn_sim(10).await;
    let loc = sim.locations[0].id.clone();
    let client = upstream_client(in_store(&db.store), &sim, |_| {});
    client
        .set_credential(
            &loc,
            Credential::Agency {
                agency_token: sim.agency_token.clone().into(),
                company_id: sim.company_id.clone(),
                location_token: None,
                expires_at: None,
            },
        )
        .await
        .unwrap();
    let (users, _) = client.users(&loc).await.unwrap();
    assert!(!users.is_empty());
    client.pipelines(&loc).await.unwrap();
    assert_eq!(sim.requests("oauth.locationToken"), 1);
    let stored = db.store.credential(&loc).await.unwrap().unwrap();
    assert_eq!(stored.kind, "agency");
    assert!(
        stored.access_token.is_some(),
        "the minted location token is stored"
    );
}

#[tokio::test]
async fn refused_credentials_fail_without_retries() {
    let sim = spawn_sim(10).await;
    let loc = sim.locations[0].id.clone();
    let client = upstream_client(in_memory(), &sim, |_| {});
    client
        .set_credential(
            &loc,
            Credential::PrivateIntegration {
                token: "pit-wrong".into(),
            },
        )
        .await
        .unwrap();
    let error = client.users(&loc).await.unwrap_err();
    assert!(matches!(error, UpstreamError::Unauthorized(_)), "{error:?}");
    assert!(error.is_auth());
    assert_eq!(sim.total_requests(), 1);
    let error = client.users("no-credentials-here").await.unwrap_err();
    assert!(
        matches!(error, UpstreamError::NoCredentials(_)),
        "{error:?}"
    );
}

#[tokio::test]
async fn the_daily_reserve_stops_a_location() {
    let sim = spawn_sim_with(ghl_gateway::sim::SimArgs {
        contacts: 10,
        locations: 1,
        daily_limit: 30,
        ..Default::default()
    })
    .await;
    let loc = sim.locations[0].clone();
    let client = client_of(&sim, &loc, |c| c.daily_reserve = 10).await;
    let mut ok = 0;
    let error = loop {
        match client.pipelines(&loc.id).await {
            Ok(_) => ok += 1,
            Err(e) => break e,
        }
        assert!(ok < 100, "the reserve never stopped the calls");
    };
    assert!(
        matches!(error, UpstreamError::DailyQuotaExhausted { remaining: 9 }),
        "{error:?}"
    );
    assert_eq!(
        ok, 21,
        "30 a day, 10 kept in reserve: the 21st answer leaves 9"
    );
    assert_eq!(sim.count("opportunities.pipelines", "429"), 0);
}

mod wiremock_edges {
    use futures::future::BoxFuture;
    use ghl_gateway::upstream::CredentialStoreError;
    use secrecy::ExposeSecret as _;
    use wiremock::matchers::{body_string_contains, header, method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    use super::*;

    async fn client_for(
        server: &MockServer,
        tweak: impl FnOnce(&mut ghl_gateway::upstream::UpstreamConfig),
    ) -> Client {
        let mut config = ghl_gateway::upstream::UpstreamConfig::new(server.uri());
        config.backoff_ms = 5;
        config.burst_window_ms = 50;
        tweak(&mut config);
        let client = Client::new(config, in_memory()).unwrap();
        client
            .set_credential(
                "loc",
                Credential::PrivateIntegration {
                    token: "pit".into(),
                },
            )
            .await
            .unwrap();
        client
    }

    fn contact_rows(after: Value) -> Value {
        let rows: Vec<Value> = (0..500)
            .map(|i| json!({ "id": format!("c{i}"), "dateAdded": "2024-01-01T00:00:00Z", "searchAfter": after.clone() }))
            .collect();
        json!({ "contacts": rows, "total": 5000 })
    }

    #[tokio::test]
    async fn a_cursor_that_does_not_advance_ends_with_an_error() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/contacts/search"))
            .respond_with(
                ResponseTemplate::new(200).set_body_json(contact_rows(json!([1, "c499"]))),
            )
            .mount(&server)
            .await;
        let client = client_for(&server, |_| {}).await;
        let result = all_pages(&client, "loc", Listing::Contacts(None)).await;
        assert!(matches!(result, Err(UpstreamError::Stuck(_))), "{result:?}");
        assert_eq!(
            server.received_requests().await.unwrap().len(),
            2,
            "it stops at the repeat"
        );
    }

    /// Answers a POST search with a full page of 500 rows (each with its `searchAfter`) when the
    /// body asks for the first page, and an empty page otherwise: two requests per list, the
    /// first one and a cursor one.
    struct TwoPages(&'static str);

    impl wiremock::Respond for TwoPages {
        fn respond(&self, request: &wiremock::Request) -> ResponseTemplate {
            let body: Value = serde_json::from_slice(&request.body).unwrap_or_default();
            let first = body["searchAfter"].as_array().is_none_or(Vec::is_empty)
                && body["skip"].as_u64().unwrap_or(0) == 0
                && body["page"].as_u64().unwrap_or(1) == 1;
            let rows: Vec<Value> = (0..if first { 500 } else { 0 })
                .map(|i| {
                    json!({ "id": format!("r{i}"), "_id": format!("r{i}"), "dateAdded": "2024-01-01T00:00:00Z",
                        "createdAt": "2024-01-01T00:00:00Z", "searchAfter": [1_704_067_200_000_i64 + i, format!("r{i}")] })
                })
                .collect();
            ResponseTemplate::new(201).set_body_json(json!({ self.0: rows, "total": 1000 }))
        }
    }

    /// Every POST body the sync sends validates against the official request schema
    /// (`tests/fixtures/openapi`), first pages and cursor pages alike.
    #[tokio::test]
    async fn the_search_bodies_validate_against_the_official_request_schemas() {
        let server = MockServer::start().await;
        for (route, key) in [
            ("/contacts/search", "contacts"),
            ("/locations/loc/tasks/search", "tasks"),
            ("/opportunities/search", "opportunities"),
        ] {
            Mock::given(method("POST"))
                .and(path(route))
                .respond_with(TwoPages(key))
                .mount(&server)
                .await;
        }
        let client = client_for(&server, |_| {}).await;
        for listing in [
            Listing::Contacts(None),
            Listing::Tasks(None),
            Listing::Opportunities(None),
        ] {
            let pages = all_pages(&client, "loc", listing.clone()).await.unwrap();
            assert_eq!(pages.len(), 2, "{listing:?}");
        }
        let spec = |file: &str| -> Value {
            let path = format!(
                "{}/tests/fixtures/openapi/apps/{file}",
                env!("CARGO_MANIFEST_DIR")
            );
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
        };
        let schemas = [
            (
                "/contacts/search",
                spec("contacts.json"),
                "/contacts/search",
            ),
            (
                "/locations/loc/tasks/search",
                spec("locations.json"),
                "/locations/{locationId}/tasks/search",
            ),
            (
                "/opportunities/search",
                spec("opportunities.json"),
                "/opportunities/search",
            ),
        ];
        let requests = server.received_requests().await.unwrap();
        assert_eq!(requests.len(), 6);
        for request in requests {
            let (_, spec, spec_path) = schemas
                .iter()
                .find(|(route, _, _)| *route == request.url.path())
                .unwrap();
            let schema = &spec["paths"][spec_path]["post"]["requestBody"]["content"]["application/json"]
                ["schema"];
            let root = json!({ "$ref": schema["$ref"], "components": spec["components"] });
            let validator = jsonschema::options()
                .with_draft(jsonschema::Draft::Draft7)
                .build(&root)
                .unwrap();
            let body: Value = serde_json::from_slice(&request.body).unwrap();
            let errors: Vec<String> = validator
                .iter_errors(&body)
                .map(|e| format!("{e} at {}", e.instance_path()))
                .collect();
            assert!(errors.is_empty(), "{spec_path}: {errors:?}\n{body}");
        }
    }

    #[tokio::test]
    async fn a_429_storm_ends_with_rate_limited_after_the_retry_budget() {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/users/"))
            .respond_with(
                ResponseTemplate::new(429)
                    .set_body_json(json!({ "statusCode": 429, "message": "Too Many Requests" })),
            )
            .mount(&server)
            .await;
        let client = client_for(&server, |c| c.max_retries = 3).await;
        let error = client.users("loc").await.unwrap_err();
        assert!(
            matches!(error, UpstreamError::RateLimited { .. }),
            "{error:?}"
        );
        let stats = client.stats("loc");
        assert_eq!(
            (stats.calls, stats.retries, stats.rate_limited),
            (4, 3, 4),
            "{stats:?}"
        );
    }

    #[tokio::test]
    async fn retry_after_is_honoured_and_other_4xx_are_not_retried() {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/users/"))
            .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "0"))
            .up_to_n_times(1)
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path("/users/"))
            .respond_with(ResponseTemplate::new(200).set_body_json(
                json!({ "users": [{ "id": "u1", "name": "Ann", "extra": { "x": 1 } }] }),
            ))
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path("/opportunities/pipelines"))
            .respond_with(ResponseTemplate::new(422).set_body_json(json!({ "statusCode": 422, "message": ["property x should not exist"], "error": "Unprocessable Entity" })))
            .mount(&server)
            .await;
        let client = client_for(&server, |_| {}).await;
        let (users, _) = client.users("loc").await.unwrap();
        assert_eq!(users[0].name.as_deref(), Some("Ann"));
        let error = client.pipelines("loc").await.unwrap_err();
        match error {
            UpstreamError::BadRequest { status, message } => {
                assert_eq!(status, 422);
                assert!(message.contains("should not exist"));
            }
            other => panic!("{other:?}"),
        }
        let stats = client.stats("loc");
        assert_eq!((stats.calls, stats.retries), (3, 1), "{stats:?}");
    }

    #[tokio::test]
    async fn a_row_that_does_not_parse_is_skipped_not_fatal() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/locations/loc/tasks/search"))
            .respond_with(ResponseTemplate::new(201).set_body_json(json!({ "tasks": [
                { "_id": "t1", "title": "ok", "completed": false },
                { "_id": "t2", "title": ["not", "a", "string"], "customFields": 1, "dueDate": {"x": 1}, "completed": "true", "assignedTo": {} },
                { "title": "no id" }
            ] })))
            .mount(&server)
            .await;
        let client = client_for(&server, |_| {}).await;
        let pages = all_pages(&client, "loc", Listing::Tasks(None))
            .await
            .unwrap();
        assert_eq!(pages.len(), 1);
        let Records::Tasks(tasks) = &pages[0].records else {
            panic!()
        };
        assert_eq!(
            tasks.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(),
            ["t1", "t2"]
        );
        assert_eq!(pages[0].skipped, ["<no id>"]);
    }

    /// A GHL that refuses `at-old`, renews `rt-old` into `at-new`/`rt-new` (once), and answers
    /// `at-new`.
    async fn renewing_server() -> MockServer {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/users/"))
            .and(header("authorization", "Bearer at-old"))
            .respond_with(
                ResponseTemplate::new(401).set_body_json(json!({ "message": "Invalid JWT" })),
            )
            .mount(&server)
            .await;
        Mock::given(method("POST"))
            .and(path("/oauth/token"))
            .and(body_string_contains("refresh_token=rt-old"))
            .respond_with(ResponseTemplate::new(200).set_body_json(
                json!({ "access_token": "at-new", "refresh_token": "rt-new", "expires_in": 86_399 }),
            ))
            .expect(1)
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path("/users/"))
            .and(header("authorization", "Bearer at-new"))
            .respond_with(
                ResponseTemplate::new(200).set_body_json(json!({ "users": [{ "id": "u1" }] })),
            )
            .mount(&server)
            .await;
        server
    }

    /// The OAuth credential that `renewing_server` refuses, as stored before a restart.
    async fn store_old_credential(credentials: &MemoryCredentials) {
        let old = Credential::OAuth {
            access_token: "at-old".into(),
            refresh_token: "rt-old".into(),
            expires_at: None,
        };
        credentials.save("loc", &old).await.unwrap();
    }

    /// An OAuth client of `server`.
    fn oauth_client(server: &MockServer, credentials: Arc<dyn CredentialStore>) -> Client {
        let mut config = ghl_gateway::upstream::UpstreamConfig::new(server.uri());
        config.client_id = Some("client".into());
        config.client_secret = Some("secret".into());
        Client::new(config, credentials).unwrap()
    }

    #[tokio::test]
    async fn a_refused_token_is_renewed_once_and_saved() {
        let server = renewing_server().await;
        let memory = Arc::new(MemoryCredentials::new());
        store_old_credential(&memory).await;
        let client = oauth_client(&server, memory.clone());
        let (users, _) = client.users("loc").await.unwrap();
        assert_eq!(users.len(), 1);
        let stats = client.stats("loc");
        assert_eq!(
            (stats.calls, stats.retries, stats.renewals),
            (2, 0, 1),
            "{stats:?}"
        );
        let Some(Credential::OAuth {
            access_token,
            refresh_token,
            ..
        }) = memory.load("loc").await.unwrap()
        else {
            panic!("the renewed OAuth credential is saved");
        };
        assert_eq!(
            (access_token.expose_secret(), refresh_token.expose_secret()),
            ("at-new", "rt-new")
        );
    }

    /// Loads what it was given, refuses every save.
    struct FullDisk(MemoryCredentials);

    impl CredentialStore for FullDisk {
        fn load<'a>(
            &'a self,
            location_id: &'a str,
        ) -> BoxFuture<'a, Result<Option<Credential>, CredentialStoreError>> {
            self.0.load(location_id)
        }

        fn save<'a>(
            &'a self,
            _: &'a str,
            _: &'a Credential,
        ) -> BoxFuture<'a, Result<(), CredentialStoreError>> {
            Box::pin(async { Err(CredentialStoreError("the disk is full".into())) })
        }
    }

    #[tokio::test]
    async fn a_renewed_token_that_cannot_be_saved_is_never_used() {
        let server = renewing_server().await;
        let memory = MemoryCredentials::new();
        store_old_credential(&memory).await;
        let client = oauth_client(&server, Arc::new(FullDisk(memory)));
        let error = client.users("loc").await.unwrap_err();
        assert_eq!(
            error.to_string(),
            "the credential store failed: the disk is full"
        );
        let sent_new = server.received_requests().await.unwrap().iter().any(|r| {
            r.headers
                .get("authorization")
                .is_some_and(|v| v == "Bearer at-new")
        });
        assert!(
            !sent_new,
            "a token whose refresh token is not stored is not used"
        );
    }
}
