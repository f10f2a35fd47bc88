//! Abuse limits: depth, complexity, aliases, batches, page size, body size, request rate, and
//! GraphiQL's introspection under the defaults.

use super::*;

fn assert_limit(reply: &Reply, limit: &str, flag: &str) {
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text);
    assert_eq!(code(reply), "BAD_USER_INPUT", "{}", reply.text);
    assert!(reply.json.get("data").is_none(), "{}", reply.text);
    let message = reply.json["errors"][0]["message"].as_str().unwrap();
    assert!(message.contains(flag), "{message}");
    assert_eq!(reply.json["errors"][0]["extensions"]["limit"], limit);
}

#[tokio::test]
async fn query_depth_is_limited() {
    let (_db, app) = limited_app(|c| c.graphql.limits.max_query_depth = 5).await;
    // contacts > nodes > tasks > contact > id: 5 levels.
    let at_limit = r#"{ contacts(locationId: "loc-a") { nodes { tasks { contact { id } } } } }"#;
    assert_ok(&query(&app, ADMIN_KEY, at_limit, json!({})).await);
    let over =
        r#"{ contacts(locationId: "loc-a") { nodes { tasks { contact { tasks { id } } } } } }"#;
    let reply = query(&app, ADMIN_KEY, over, json!({})).await;
    assert_limit(&reply, "depth", "--max-query-depth");
    assert!(reply.text.contains("6 levels"), "{}", reply.text);
}

#[tokio::test]
async fn query_complexity_is_weighted_by_first() {
    // `contacts(first: N) { nodes { id } }` costs N * 2 + 1.
    let (_db, app) = limited_app(|c| c.graphql.limits.max_query_complexity = 201).await;
    let page = "query($n: Int) { contacts(locationId: \"loc-a\", first: $n) { nodes { id } } }";
    assert_ok(&query(&app, ADMIN_KEY, page, json!({ "n": 100 })).await);
    let reply = query(&app, ADMIN_KEY, page, json!({ "n": 101 })).await;
    assert_limit(&reply, "complexity", "--max-query-complexity");
    assert!(reply.text.contains("203"), "{}", reply.text);
    // The default admits the full dashboard at the largest page.
    let (_db, app) = limited_app(|_| {}).await;
    let reply = query(
        &app,
        ADMIN_KEY,
        DASHBOARD_QUERY,
        json!({ "loc": "loc-a", "first": 500 }),
    )
    .await;
    assert_ok(&reply);
}

#[tokio::test]
async fn aliases_are_limited() {
    let (_db, app) = limited_app(|c| c.graphql.limits.max_query_aliases = 3).await;
    let aliases = |n: usize| {
        let fields: Vec<String> = (0..n)
            .map(|i| format!("a{i}: locations {{ id }}"))
            .collect();
        format!("{{ {} }}", fields.join(" "))
    };
    assert_ok(&query(&app, ADMIN_KEY, &aliases(3), json!({})).await);
    let reply = query(&app, ADMIN_KEY, &aliases(4), json!({})).await;
    assert_limit(&reply, "aliases", "--max-query-aliases");
}

#[tokio::test]
async fn batches_are_limited() {
    let (_db, app) = limited_app(|c| c.http.max_batch_operations = 2).await;
    let batch = |n: usize| Value::Array(vec![json!({ "query": "{ locations { id } }" }); n]);
    let reply = post(&app, Some(&format!("Bearer {ADMIN_KEY}")), &batch(2)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.json.as_array().map(Vec::len), Some(2));
    let reply = post(&app, Some(&format!("Bearer {ADMIN_KEY}")), &batch(3)).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text);
    assert_eq!(code(&reply), "BAD_USER_INPUT");
    assert!(
        reply.text.contains("--max-batch-operations"),
        "{}",
        reply.text
    );
}

#[tokio::test]
async fn page_size_is_limited() {
    let (_db, app) = limited_app(|_| {}).await;
    let page = "query($n: Int) { contacts(locationId: \"loc-a\", first: $n) { totalCount } }";
    assert_ok(&query(&app, ADMIN_KEY, page, json!({ "n": 500 })).await);
    let reply = query(&app, ADMIN_KEY, page, json!({ "n": 501 })).await;
    assert_eq!(code(&reply), "BAD_USER_INPUT", "{}", reply.text);
    assert!(reply.text.contains("500"), "{}", reply.text);
}

#[tokio::test]
async fn request_bodies_are_limited() {
    let (_db, app) = limited_app(|c| c.http.max_body_bytes = 1000).await;
    let body = |size: usize| {
        let base = json!({ "query": "{ locations { id } }" }).to_string();
        // JSON allows any amount of whitespace after the value.
        format!("{base}{}", " ".repeat(size - base.len()))
    };
    let send = |text: String| {
        app.client
            .post(format!("{}/graphql", app.base))
            .header(CONTENT_TYPE, "application/json")
            .bearer_auth(ADMIN_KEY)
            .body(text)
            .send()
    };
    assert_eq!(send(body(1000)).await.unwrap().status(), StatusCode::OK);
    assert_eq!(
        send(body(1001)).await.unwrap().status(),
        StatusCode::PAYLOAD_TOO_LARGE
    );
}

#[tokio::test]
async fn each_key_has_its_own_request_rate() {
    let (_db, app) = limited_app(|c| {
        c.http.auth.rate_limit_per_minute = 60;
        c.http.auth.rate_limit_burst = 3;
    })
    .await;
    let (_, key) = create_key(&app.store, &["loc-a"]).await;
    for _ in 0..3 {
        assert_ok(&query(&app, &key, "{ locations { id } }", json!({})).await);
    }
    let reply = query(&app, &key, "{ locations { id } }", json!({})).await;
    assert_eq!(
        reply.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        reply.text
    );
    assert_eq!(code(&reply), "RATE_LIMITED");
    let retry: u64 = reply.headers[RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    // Another key is not slowed down by the first.
    assert_ok(&query(&app, ADMIN_KEY, "{ locations { id } }", json!({})).await);
}

/// graphql-js's `getIntrospectionQuery({ inputValueDeprecation: true, typeDepth: 9 })`, the
/// largest variant GraphiQL sends.
const INTROSPECTION_QUERY: &str = r#"
    query IntrospectionQuery {
      __schema {
        queryType { name kind }
        mutationType { name kind }
        subscriptionType { name kind }
        types {
          ...FullType
        }
        directives {
          name
          description
          locations
          args(includeDeprecated: true) {
            ...InputValue
          }
        }
      }
    }

    fragment FullType on __Type {
      kind
      name
      description
      fields(includeDeprecated: true) {
        name
        description
        args(includeDeprecated: true) {
          ...InputValue
        }
        type {
          ...TypeRef
        }
        isDeprecated
        deprecationReason
      }
      inputFields(includeDeprecated: true) {
        ...InputValue
      }
      interfaces {
        ...TypeRef
      }
      enumValues(includeDeprecated: true) {
        name
        description
        isDeprecated
        deprecationReason
      }
      possibleTypes {
        ...TypeRef
      }
    }

    fragment InputValue on __InputValue {
      name
      description
      type { ...TypeRef }
      defaultValue
      isDeprecated
      deprecationReason
    }

    fragment TypeRef on __Type {
      kind
      name
      ofType {
        name
        kind
        ofType {
          name
          kind
          ofType {
            name
            kind
            ofType {
              name
              kind
              ofType {
                name
                kind
                ofType {
                  name
                  kind
                  ofType {
                    name
                    kind
                    ofType {
                      name
                      kind
                      ofType {
                        name
                        kind
                      }
                    }
                  }
                }
              }
            }
          }
        }
      }
    }
"#;

#[tokio::test]
async fn graphiql_introspection_passes_the_default_limits_and_can_be_turned_off() {
    let (_db, app) = limited_app(|_| {}).await;
    let reply = query(&app, ADMIN_KEY, INTROSPECTION_QUERY, json!({})).await;
    assert_ok(&reply);
    assert_eq!(reply.json["data"]["__schema"]["queryType"]["name"], "Query");

    let (_db, app) = limited_app(|c| c.graphql.limits.disable_introspection = true).await;
    let reply = query(&app, ADMIN_KEY, INTROSPECTION_QUERY, json!({})).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text);
    assert_eq!(code(&reply), "FORBIDDEN", "{}", reply.text);
    assert!(
        reply.text.contains("--disable-introspection"),
        "{}",
        reply.text
    );
    let by_type = query(
        &app,
        ADMIN_KEY,
        "{ __type(name: \"Query\") { name } }",
        json!({}),
    )
    .await;
    assert_eq!(code(&by_type), "FORBIDDEN", "{}", by_type.text);
    // `__typename` is not introspection of the schema: clients add it everywhere.
    assert_ok(
        &query(
            &app,
            ADMIN_KEY,
            "{ __typename locations { __typename id } }",
            json!({}),
        )
        .await,
    );
    assert_ok(&query(&app, ADMIN_KEY, "{ locations { id } }", json!({})).await);
}
