//! The real server on port 0: nested data over HTTP, and GraphQL over HTTP's rules.

use reqwest::StatusCode;
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use serde_json::{Value, json};

use crate::helpers::*;

const GQL_JSON: &str = "application/graphql-response+json";

#[tokio::test]
async fn nested_contacts_over_http_with_a_second_page() {
    for db in databases().await {
        let app = spawn_app(&db.url).await;
        let fixture = load_fixture(&app.store, "loc", 30).await;
        let post = |vars: Value| {
            app.client
                .post(format!("{}/graphql", app.base))
                .header(ACCEPT, GQL_JSON)
                .json(&json!({ "query": DASHBOARD_QUERY, "variables": vars }))
                .send()
        };
        let response = post(json!({ "loc": "loc", "first": 20 })).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert!(
            response.headers()[CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with(GQL_JSON)
        );
        let page1: Value = response.json().await.unwrap();
        let connection = &page1["data"]["contacts"];
        assert_eq!(connection["totalCount"], 30, "{page1}");
        assert_eq!(connection["pageInfo"]["hasNextPage"], true);

        let page2: Value = post(
            json!({ "loc": "loc", "first": 20, "after": connection["pageInfo"]["endCursor"] }),
        )
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
        let connection2 = &page2["data"]["contacts"];
        assert_eq!(connection2["pageInfo"]["hasNextPage"], false);
        let mut ids: Vec<String> = [connection, connection2]
            .iter()
            .flat_map(|c| c["edges"].as_array().unwrap().iter())
            .map(|e| e["node"]["id"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(ids.len(), 30);
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 30, "no contact twice");

        // Newest first: contact 29 leads page one, with its children.
        let node = &connection["edges"][0]["node"];
        assert_eq!(node["id"], "loc-c000029", "{page1}");
        assert_eq!(
            node["tasks"].as_array().unwrap().len(),
            fixture.tasks["loc-c000029"].len()
        );
        assert_eq!(node["conversations"][0]["lastMessageBody"], "Hello 29");
        assert_eq!(
            node["assignedTo"],
            Value::Null,
            "contact 29 has no assigned user"
        );
        assert_eq!(
            connection["edges"][1]["node"]["assignedTo"]["email"],
            "user0@agency.test"
        );
        assert_eq!(node["customFields"].as_array().unwrap().len(), 2);
        let with_opportunity = &connection["edges"][2]["node"];
        assert_eq!(with_opportunity["id"], "loc-c000027");
        assert_eq!(
            with_opportunity["opportunities"][0]["pipeline"]["name"],
            "Pipeline 1"
        );
        assert_eq!(
            with_opportunity["opportunities"][0]["stage"]["name"],
            "Stage 0"
        );
    }
}

#[tokio::test]
async fn graphql_over_http_rules() {
    let db = sqlite().await;
    let app = spawn_app(&db.url).await;
    load_fixture(&app.store, "loc", 3).await;
    let url = format!("{}/graphql", app.base);
    let client = &app.client;

    // A document that does not parse: 400 and no `data` entry with graphql-response+json...
    let response = client
        .post(&url)
        .header(ACCEPT, GQL_JSON)
        .json(&json!({ "query": "{ locations { id " }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = response.json().await.unwrap();
    assert!(
        body.get("data").is_none() && body["errors"].is_array(),
        "{body}"
    );
    // ...and one that fails validation, too.
    let response = client
        .post(&url)
        .header(ACCEPT, GQL_JSON)
        .json(&json!({ "query": "{ nope }" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    // A GET names the operation of a document with several in `operationName`.
    let response = client
        .get(&url)
        .header(ACCEPT, "application/json")
        .query(&[
            (
                "query",
                "query A { __typename } query B { locations { id } }",
            ),
            ("operationName", "B"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["data"]["locations"][0]["id"], "loc", "{body}");
    // With `Accept: application/json`, the same is a 200 with errors.
    let response = client
        .post(&url)
        .header(ACCEPT, "application/json")
        .json(&json!({ "query": "{ nope }" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()[CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    // An error in execution keeps 200 and `data`.
    let response = client
        .post(&url)
        .json(&json!({ "query": r#"{ contacts(locationId: "loc", first: 900) { totalCount } }"# }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert!(body.get("data").is_some(), "{body}");
    assert_eq!(body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT");

    // POST without a JSON content type, or with a body that is not JSON.
    let response = client
        .post(&url)
        .header(CONTENT_TYPE, "text/plain")
        .body("{ locations { id } }")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let response = client
        .post(&url)
        .header(CONTENT_TYPE, "application/json")
        .body("{ not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    // A client that accepts neither response type.
    let response = client
        .post(&url)
        .header(ACCEPT, "text/html")
        .json(&json!({ "query": "{ locations { id } }" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_ACCEPTABLE);

    // GET runs queries and refuses mutations with 405.
    let response = client
        .get(reqwest::Url::parse_with_params(&url, [("query", "{ locations { id } }")]).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["data"]["locations"][0]["id"], "loc");
    let response = client
        .get(
            reqwest::Url::parse_with_params(&url, [("query", "mutation { refreshLocation }")])
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(response.headers()["allow"], "POST");
    let response = client.get(&url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);

    // Batches of operations.
    let response = client
        .post(&url)
        .json(&json!([{ "query": "{ locations { id } }" }, { "query": "{ location(id: \"loc\") { name } }" }]))
        .send()
        .await
        .unwrap();
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body[1]["data"]["location"]["name"], "Location loc",
        "{body}"
    );

    // Bodies over the limit (64 KiB in tests) get 413.
    let huge = "x".repeat(100 * 1024);
    let response = client
        .post(&url)
        .json(&json!({ "query": huge }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn health_readiness_and_graphiql() {
    let db = sqlite().await;
    let app = spawn_app(&db.url).await;
    for (path, needle) in [
        ("/healthz", "ok"),
        ("/readyz", "ready"),
        ("/graphiql", "graphiql"),
    ] {
        let response = app
            .client
            .get(format!("{}{path}", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        assert!(
            response
                .text()
                .await
                .unwrap()
                .to_lowercase()
                .contains(needle),
            "{path}"
        );
    }
}

#[tokio::test]
async fn the_gateway_shuts_down_cleanly_and_stops_answering() {
    let db = sqlite().await;
    let app = spawn_app(&db.url).await;
    let health = format!("{}/healthz", app.base);
    let client = app.client.clone();
    assert_eq!(
        client.get(&health).send().await.unwrap().status(),
        StatusCode::OK
    );
    app.shutdown().await;
    // A fresh connection: the listener is closed once the gateway has stopped.
    let refused = reqwest::Client::new().get(&health).send().await;
    assert!(refused.is_err(), "still answering: {refused:?}");
}

/// The status line, `Content-Type` and body of a raw HTTP/1.1 POST of `body` with these extra
/// header lines: reqwest always adds `Accept`, and this needs a request without one.
async fn raw_post(base: &str, extra: &str, body: &str) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let request = format!(
        "POST /graphql HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\n{extra}\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    let status = head[9..12].parse().unwrap();
    let content_type = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-type")
                .then(|| value.trim().to_owned())
        })
        .unwrap_or_default();
    (status, content_type, body.to_owned())
}

#[tokio::test]
async fn legacy_clients_get_application_json() {
    let db = sqlite().await;
    let app = spawn_app(&db.url).await;
    let invalid = json!({ "query": "{ nope }" }).to_string();
    // No Accept, or only a wildcard: application/json, where a refused document is still a 200.
    for extra in ["", "Accept: */*\r\n", "Accept: application/*\r\n"] {
        let (status, content_type, body) = raw_post(&app.base, extra, &invalid).await;
        assert_eq!(status, 200, "{extra:?}: {body}");
        assert!(
            content_type.starts_with("application/json"),
            "{extra:?}: {content_type}"
        );
    }
    // Asked for: application/graphql-response+json, and its 400.
    let (status, content_type, _) = raw_post(
        &app.base,
        "Accept: application/graphql-response+json\r\n",
        &invalid,
    )
    .await;
    assert_eq!(status, 400);
    assert!(content_type.starts_with(GQL_JSON), "{content_type}");
}
