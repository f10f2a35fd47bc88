//! Access control: no entry point lets a caller past its locations, and keys made by the
//! command line work until revoked.

use super::*;

/// Every root field, and the nested paths that lead from one object to another. `$id` is the
/// target: a location or contact of B, or an id that exists nowhere.
const CASES: [(&str, &str, &str, &str); 8] = [
    (
        "locations",
        "{ locations { id name pipelines { id } } }",
        "",
        "",
    ),
    (
        "location",
        "query($id: ID!) { location(id: $id) { id name freshness { stale } pipelines { id name stages { id name } } } }",
        "loc-b",
        "loc-nowhere",
    ),
    (
        "contacts",
        "query($id: ID!) { contacts(locationId: $id) { totalCount nodes { id name } } }",
        "loc-b",
        "loc-nowhere",
    ),
    (
        "contact",
        "query($id: ID!) { contact(id: $id) { id name assignedTo { id } customFields { name } tasks { id contact { id } } conversations { id contact { id } } opportunities { id pipeline { id } stage { id } contact { id } } } }",
        "loc-b-c000003",
        "nowhere-c000003",
    ),
    (
        "syncStatus",
        "query($id: ID!) { syncStatus(locationId: $id) { state lastJob { id } freshness { stale } } }",
        "loc-b",
        "loc-nowhere",
    ),
    (
        "references out of the caller's location",
        r#"{ contact(id: "loc-a-poisoned") { id assignedTo { id name } customFields { name fieldKey dataType }
             tasks { id assignedTo { id } contact { id } }
             opportunities { id assignedTo { id } contact { id } pipeline { id name stages { id } } stage { id name } } } }"#,
        "",
        "",
    ),
    (
        "refreshLocation",
        "mutation($id: ID!) { refreshLocation(locationId: $id, mode: FULL) { id joined stages { name } } }",
        "loc-b",
        "loc-nowhere",
    ),
    (
        "a page of the caller's location",
        r#"{ contacts(locationId: "loc-a", first: 50) { nodes { id assignedTo { id } customFields { name }
             tasks { assignedTo { id } contact { id } } opportunities { pipeline { id } stage { id } } } } }"#,
        "",
        "",
    ),
];

#[tokio::test]
async fn no_entry_point_lets_a_caller_past_its_locations() {
    for db in databases().await {
        let app = spawn_app_with(&db.url, |c| c.http.auth.allow_anonymous = false).await;
        two_locations(&app.store).await;
        let (_, key_a) = create_key(&app.store, &["loc-a"]).await;
        let (revoked_id, revoked) = create_key(&app.store, &["loc-a", "loc-b"]).await;
        assert!(app.store.revoke_api_key(&revoked_id, 2).await.unwrap());
        let wrong = format!("ghlk_{}", "A".repeat(43));

        let refused: [(&str, Option<String>); 7] = [
            ("no key", None),
            ("not bearer", Some(format!("Basic {key_a}"))),
            ("malformed key", Some("Bearer not-a-key".into())),
            ("empty bearer", Some("Bearer ".into())),
            ("wrong key", Some(format!("Bearer {wrong}"))),
            ("revoked key", Some(format!("Bearer {revoked}"))),
            ("wrong admin key", Some(format!("Bearer {ADMIN_KEY}x"))),
        ];
        for (case, query_text, target, unknown) in CASES {
            let variables = json!({ "id": target });
            for (who, authorization) in &refused {
                let reply = post(
                    &app,
                    authorization.as_deref(),
                    &json!({ "query": query_text, "variables": variables }),
                )
                .await;
                let context = format!("{}: {case} with {who}: {}", db.name, reply.text);
                assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{context}");
                assert_eq!(code(&reply), "UNAUTHENTICATED", "{context}");
                assert!(reply.json.get("data").is_none(), "{context}");
                assert_eq!(reply.headers["www-authenticate"], "Bearer", "{context}");
                assert!(foreign_in(&reply.text).is_empty(), "{context}");
            }

            // Location A's key: nothing of B, and B answers exactly like an id that exists nowhere.
            let reply = query(&app, &key_a, query_text, variables.clone()).await;
            let context = format!("{}: {case} with A's key: {}", db.name, reply.text);
            assert_eq!(reply.status, StatusCode::OK, "{context}");
            assert_eq!(foreign_in(&reply.text), Vec::<&str>::new(), "{context}");
            if !target.is_empty() {
                let nowhere = query(&app, &key_a, query_text, json!({ "id": unknown })).await;
                assert_eq!(
                    reply.text,
                    nowhere.text.replace(unknown, target),
                    "{context}: B must answer like an unknown id"
                );
            }
            // The operator sees B: the checks above could have failed.
            let admin = query(&app, ADMIN_KEY, query_text, variables.clone()).await;
            let context = format!("{}: {case} as admin: {}", db.name, admin.text);
            assert_eq!(admin.status, StatusCode::OK, "{context}");
            if case == "refreshLocation" {
                // Past the guard, B has no GHL credentials to sync with.
                assert_eq!(code(&admin), "UPSTREAM_UNAVAILABLE", "{context}");
            } else if case == "syncStatus" {
                // A location never synced has nothing of its own to show but its state.
                assert_eq!(
                    admin.json["data"]["syncStatus"]["state"], "IDLE",
                    "{context}"
                );
            } else {
                assert!(!foreign_in(&admin.text).is_empty(), "{context}");
            }
        }

        // What A's key does see, and the codes of the refusals.
        let reply = query(&app, &key_a, CASES[0].1, json!({})).await;
        assert_eq!(
            reply.json["data"]["locations"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| l["id"].as_str().unwrap())
                .collect::<Vec<_>>(),
            ["loc-a"],
            "{}",
            reply.text
        );
        for (index, expected) in [(1, "null"), (2, "NOT_FOUND"), (3, "null"), (4, "NOT_FOUND")] {
            let reply = query(
                &app,
                &key_a,
                CASES[index].1,
                json!({ "id": CASES[index].2 }),
            )
            .await;
            if expected == "null" {
                assert!(reply.json["errors"].is_null(), "{}", reply.text);
                assert_eq!(reply.json["data"].as_object().unwrap().len(), 1);
                assert!(
                    reply.json["data"]
                        .as_object()
                        .unwrap()
                        .values()
                        .all(Value::is_null)
                );
            } else {
                assert_eq!(code(&reply), expected, "{}", reply.text);
            }
        }
        let poisoned = query(&app, &key_a, CASES[5].1, json!({})).await;
        let contact = &poisoned.json["data"]["contact"];
        assert_eq!(contact["id"], "loc-a-poisoned", "{}", poisoned.text);
        assert!(contact["assignedTo"].is_null());
        assert!(contact["opportunities"][0]["pipeline"].is_null());
        assert!(contact["opportunities"][0]["stage"].is_null());
        assert!(contact["customFields"][0]["name"].is_null());

        // GET is guarded like POST.
        let response = app
            .client
            .get(format!("{}/graphql?query={{locations{{id}}}}", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        let response = app
            .client
            .get(format!("{}/graphql?query={{locations{{id}}}}", app.base))
            .bearer_auth(&key_a)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
}

#[tokio::test]
async fn keys_made_by_the_command_line_work_until_revoked() {
    for db in databases().await {
        let app = spawn_app_with(&db.url, |c| c.http.auth.allow_anonymous = false).await;
        two_locations(&app.store).await;
        let cli = |args: &[&str]| {
            std::process::Command::new(env!("CARGO_BIN_EXE_ghl-gateway"))
                .args(args)
                .env("DATABASE_URL", &db.url)
                .env("RUST_LOG", "warn")
                .output()
                .expect("the binary runs")
        };
        let created = cli(&["keys", "create", "--location", "loc-b", "--name", "ci"]);
        assert!(created.status.success(), "{created:?}");
        let stdout = String::from_utf8(created.stdout).unwrap();
        let field = |name: &str| {
            stdout
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_owned())
                .unwrap_or_else(|| panic!("no {name} in {stdout}"))
        };
        let (id, key) = (field("key id:"), field("key:"));
        assert!(
            key.starts_with("ghlk_") && id.starts_with("key_"),
            "{stdout}"
        );

        let reply = query(&app, &key, "{ locations { id } }", json!({})).await;
        assert_eq!(reply.json["data"]["locations"], json!([{ "id": "loc-b" }]));

        let listed = cli(&["keys", "list"]);
        let listing = String::from_utf8(listed.stdout).unwrap();
        assert!(listing.contains(&id) && listing.contains("active") && listing.contains("loc-b"));
        assert!(!listing.contains(&key), "list never shows a key");

        assert!(cli(&["keys", "revoke", &id]).status.success());
        assert!(
            !cli(&["keys", "revoke", &id]).status.success(),
            "already revoked"
        );
        let reply = query(&app, &key, "{ locations { id } }", json!({})).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
        let listing = String::from_utf8(cli(&["keys", "list"]).stdout).unwrap();
        assert!(listing.contains("revoked"), "{listing}");
        // The key itself is stored nowhere: only its hash.
        let stored = app.store.api_keys().await.unwrap();
        assert!(
            stored
                .iter()
                .all(|k| k.hash != key && !k.hash.contains(&key[5..]))
        );
        // The last use is written off the request path: give that write a moment.
        wait_for_key_use(&app.store, &id).await;
    }
}
