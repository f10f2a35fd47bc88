//! What a frontend's GraphQL client expects over HTTP (issue 21): gzip and brotli answers that
//! decode to exactly the uncompressed one, kept encoded by the response cache; compressed request
//! bodies, with the body limit applied to what they decode to; and automatic persisted queries in
//! Apollo's protocol, over POST and GET.

use std::io::{Read, Write};

use reqwest::StatusCode;
use reqwest::header::{
    ACCEPT, ACCEPT_ENCODING, CONTENT_ENCODING, CONTENT_TYPE, ETAG, IF_NONE_MATCH, VARY,
};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::helpers::*;

const PAGE: &str = r#"query Page { contacts(locationId: "loc", first: 50) {
  nodes { id name email phone tags dateAdded } } }"#;

/// One answer, its body as sent (still encoded).
struct Raw {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
}

impl Raw {
    fn header(&self, name: impl reqwest::header::AsHeaderName) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }

    /// The body decoded as its `Content-Encoding` says.
    fn decoded(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self.header(CONTENT_ENCODING).as_deref() {
            None => out = self.body.clone(),
            Some("gzip") => {
                flate2::read::GzDecoder::new(&self.body[..])
                    .read_to_end(&mut out)
                    .unwrap();
            }
            Some("br") => {
                brotli::Decompressor::new(&self.body[..], 4096)
                    .read_to_end(&mut out)
                    .unwrap();
            }
            Some(other) => panic!("unexpected coding {other}"),
        }
        out
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.decoded()).unwrap_or(Value::Null)
    }
}

async fn raw(request: reqwest::RequestBuilder) -> Raw {
    let response = request.send().await.expect("the gateway answers");
    Raw {
        status: response.status(),
        headers: response.headers().clone(),
        body: response.bytes().await.unwrap().to_vec(),
    }
}

fn post(app: &TestApp, body: Value, accept_encoding: Option<&str>) -> reqwest::RequestBuilder {
    let request = app
        .client
        .post(format!("{}/graphql", app.base))
        .bearer_auth(ADMIN_KEY)
        .header(CONTENT_TYPE, "application/json")
        .header(ACCEPT, "application/json")
        .body(body.to_string());
    match accept_encoding {
        Some(value) => request.header(ACCEPT_ENCODING, value),
        None => request,
    }
}

fn get(app: &TestApp, params: &[(&str, String)]) -> reqwest::RequestBuilder {
    app.client
        .get(format!("{}/graphql", app.base))
        .bearer_auth(ADMIN_KEY)
        .header(ACCEPT, "application/json")
        .query(params)
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

fn sha256(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn persisted(hash: &str) -> Value {
    json!({ "persistedQuery": { "version": 1, "sha256Hash": hash } })
}

#[tokio::test]
async fn gzip_and_brotli_answers_decode_to_the_uncompressed_one() {
    for db in databases().await {
        let app = spawn_app(&db.url).await;
        load_fixture(&app.store, "loc", 50).await;
        let body = json!({ "query": PAGE });

        let plain = raw(post(&app, body.clone(), None)).await;
        assert_eq!(plain.status, StatusCode::OK);
        assert!(plain.header(CONTENT_ENCODING).is_none());
        assert!(plain.body.len() > 1024, "a page worth compressing");
        assert!(plain.json()["errors"].is_null(), "{}", plain.json());
        let plain_tag = plain.header(ETAG).unwrap();

        for (accept, coding) in [("gzip", "gzip"), ("gzip, deflate, br", "br")] {
            // The first asks the cache for the entry the plain request left; so does the second.
            for round in 0..2 {
                let answer = raw(post(&app, body.clone(), Some(accept))).await;
                assert_eq!(answer.status, StatusCode::OK);
                assert_eq!(answer.header("x-cache").as_deref(), Some("hit"), "{round}");
                assert_eq!(answer.header(CONTENT_ENCODING).as_deref(), Some(coding));
                assert!(
                    answer.body.len() * 3 < plain.body.len(),
                    "{coding} compresses"
                );
                assert_eq!(
                    answer.decoded(),
                    plain.body,
                    "{coding} decodes to the answer"
                );
                let vary = answer.header(VARY).unwrap();
                assert!(vary.contains("Accept-Encoding"), "{vary}");
                let tag = answer.header(ETAG).unwrap();
                assert_ne!(tag, plain_tag, "each coding is its own representation");
                assert!(tag.starts_with(plain_tag.trim_end_matches('"')), "{tag}");
            }
        }

        // A small answer stays as it is.
        let small = raw(post(
            &app,
            json!({ "query": "{ __typename }" }),
            Some("gzip, br"),
        ))
        .await;
        assert_eq!(small.status, StatusCode::OK);
        assert!(small.header(CONTENT_ENCODING).is_none());
        assert_eq!(small.json()["data"]["__typename"], "Query");

        // A GET revalidates its gzip copy with the tag it got: 304, no body.
        let params = [("query", PAGE.to_owned())];
        let first = raw(get(&app, &params).header(ACCEPT_ENCODING, "gzip")).await;
        assert_eq!(first.status, StatusCode::OK);
        let tag = first.header(ETAG).unwrap();
        let again = raw(get(&app, &params)
            .header(ACCEPT_ENCODING, "gzip")
            .header(IF_NONE_MATCH, tag))
        .await;
        assert_eq!(again.status, StatusCode::NOT_MODIFIED);
        assert!(again.body.is_empty());

        // The dashboard's script is compressed by the layer when the browser asks.
        let script = raw(app
            .client
            .get(format!("{}/dashboard.js", app.base))
            .header(ACCEPT_ENCODING, "gzip"))
        .await;
        assert_eq!(script.status, StatusCode::OK);
        assert_eq!(script.header(CONTENT_ENCODING).as_deref(), Some("gzip"));
        app.shutdown().await;
    }
}

#[tokio::test]
async fn a_gzip_request_body_is_read_and_a_bomb_is_refused() {
    for db in databases().await {
        let app = spawn_app(&db.url).await;
        let body = json!({ "query": "{ __typename }" }).to_string();
        let answer = raw(post(&app, Value::Null, None)
            .header("content-encoding", "gzip")
            .body(gzip(body.as_bytes())))
        .await;
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.json()["data"]["__typename"], "Query");

        // 1 MB of spaces compresses to about 1 KB, far under the test gateway's 64 KiB limit;
        // decoded, it is far over it.
        let padded = format!("{{\"query\": \"{{ __typename }}\"{}}}", " ".repeat(1 << 20));
        let bomb = gzip(padded.as_bytes());
        assert!(bomb.len() < 64 * 1024);
        let answer = raw(post(&app, Value::Null, None)
            .header("content-encoding", "gzip")
            .body(bomb))
        .await;
        assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
        let message = answer.json()["errors"][0]["message"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(message.contains("--max-body-bytes"), "{message}");

        // A body that claims gzip and is not: 400, not a 500.
        let answer = raw(post(&app, Value::Null, None)
            .header("content-encoding", "gzip")
            .body(body.clone()))
        .await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST);
        app.shutdown().await;
    }
}

#[tokio::test]
async fn automatic_persisted_queries_round_trip_over_post_and_get() {
    for db in databases().await {
        let app = spawn_app(&db.url).await;
        load_fixture(&app.store, "loc", 5).await;
        let hash = sha256(PAGE);

        // The hash alone, unknown: the client is asked for the document.
        let missing = raw(post(&app, json!({ "extensions": persisted(&hash) }), None)).await;
        assert_eq!(missing.status, StatusCode::OK);
        assert_eq!(
            missing.json()["errors"][0]["extensions"]["code"],
            "PERSISTED_QUERY_NOT_FOUND"
        );
        assert_eq!(
            missing.json()["errors"][0]["message"],
            "PersistedQueryNotFound"
        );

        // The document with its hash runs and is kept.
        let full = raw(post(
            &app,
            json!({ "query": PAGE, "extensions": persisted(&hash) }),
            None,
        ))
        .await;
        assert_eq!(full.status, StatusCode::OK);
        assert_eq!(
            full.json()["data"]["contacts"]["nodes"]
                .as_array()
                .unwrap()
                .len(),
            5
        );

        // Then the hash alone works, over POST and over GET (cached, with an ETag).
        let by_post = raw(post(&app, json!({ "extensions": persisted(&hash) }), None)).await;
        assert_eq!(by_post.json(), full.json());
        let params = [("extensions", persisted(&hash).to_string())];
        let by_get = raw(get(&app, &params)).await;
        assert_eq!(by_get.status, StatusCode::OK);
        assert_eq!(by_get.json(), full.json());
        assert!(by_get.header(ETAG).is_some());
        let again = raw(get(&app, &params)).await;
        assert_eq!(again.header("x-cache").as_deref(), Some("hit"));

        // A hash that is not the document's is refused, and keeps nothing under it.
        let other = sha256("{ locations { id } }");
        let mismatch = raw(post(
            &app,
            json!({ "query": PAGE, "extensions": persisted(&other) }),
            None,
        ))
        .await;
        assert_eq!(mismatch.status, StatusCode::BAD_REQUEST);
        assert_eq!(
            mismatch.json()["errors"][0]["extensions"]["code"],
            "BAD_USER_INPUT"
        );
        let still_missing = raw(post(&app, json!({ "extensions": persisted(&other) }), None)).await;
        assert_eq!(
            still_missing.json()["errors"][0]["extensions"]["code"],
            "PERSISTED_QUERY_NOT_FOUND"
        );

        // An invalid document, and one over the depth limit, with their right hashes: refused
        // as any query would be, and not kept.
        let deep = r#"{ contacts(locationId: "loc") { nodes { tasks { contact { tasks { contact { tasks { contact { tasks { contact { tasks { contact { tasks { contact { tasks { contact { id } } } } } } } } } } } } } } } }"#;
        for document in ["{ nope }", deep] {
            let hash = sha256(document);
            let refused = raw(post(
                &app,
                json!({ "query": document, "extensions": persisted(&hash) }),
                None,
            ))
            .await;
            assert!(refused.json()["data"].is_null(), "{}", refused.json());
            assert!(!refused.json()["errors"].is_null());
            let not_kept = raw(post(&app, json!({ "extensions": persisted(&hash) }), None)).await;
            assert_eq!(
                not_kept.json()["errors"][0]["extensions"]["code"],
                "PERSISTED_QUERY_NOT_FOUND",
                "{document}"
            );
        }

        // A persisted mutation is still refused over GET.
        let mutation = r#"mutation { refreshLocation(locationId: "loc") { joined } }"#;
        let hash = sha256(mutation);
        let params = [
            ("query", mutation.to_owned()),
            ("extensions", persisted(&hash).to_string()),
        ];
        assert_eq!(
            raw(get(&app, &params)).await.status,
            StatusCode::METHOD_NOT_ALLOWED
        );
        app.shutdown().await;
    }
}
