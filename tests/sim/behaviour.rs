//! Rate limits, auth, faults, the admin API and webhooks.

use std::sync::{Arc, Mutex};

use base64::Engine;
use ghl_gateway::sim::{FaultConfig, FaultSpec, SimArgs};
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::*;

fn rl(r: &reqwest::Response, name: &str) -> Option<u64> {
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(start_paused = true)]
async fn burst_limit_counts_down_refuses_the_101st_and_resets() {
    let sim = spawn(SimArgs {
        contacts: 5,
        locations: 2,
        ..SimArgs::default()
    })
    .await;
    let (a, b) = (&sim.locations[0], &sim.locations[1]);
    let path = format!("/users/?locationId={}", a.id);
    for i in 0..100u64 {
        let r = call(&sim, Method::GET, &path, &a.pit_token, V, None).await;
        assert_eq!(r.status(), 200);
        assert_eq!(rl(&r, "x-ratelimit-remaining"), Some(99 - i));
        assert_eq!(rl(&r, "x-ratelimit-max"), Some(100));
        assert_eq!(rl(&r, "x-ratelimit-interval-milliseconds"), Some(10_000));
        assert_eq!(rl(&r, "x-ratelimit-limit-daily"), Some(200_000));
        assert_eq!(rl(&r, "x-ratelimit-daily-remaining"), Some(199_999 - i));
    }
    let r = call(&sim, Method::GET, &path, &a.pit_token, V, None).await;
    assert_eq!(r.status(), 429);
    assert_eq!(rl(&r, "x-ratelimit-remaining"), Some(0));
    assert!(
        r.headers().get("retry-after").is_none(),
        "no Retry-After by default"
    );
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["statusCode"], 429);
    // Another location has its own bucket.
    let r = call(
        &sim,
        Method::GET,
        &format!("/users/?locationId={}", b.id),
        &b.pit_token,
        V,
        None,
    )
    .await;
    assert_eq!(r.status(), 200);
    tokio::time::advance(std::time::Duration::from_millis(10_000)).await;
    let r = call(&sim, Method::GET, &path, &a.pit_token, V, None).await;
    assert_eq!(r.status(), 200, "a new window");
    assert_eq!(rl(&r, "x-ratelimit-remaining"), Some(99));
    assert_eq!(rl(&r, "x-ratelimit-daily-remaining"), Some(199_899));
    assert_eq!(sim.count("users.list", "429"), 1);
    assert_eq!(
        sim.count("users.list", "200"),
        102,
        "100 + one for the other location + one after the reset"
    );
}

#[tokio::test]
async fn retry_after_flag_and_daily_quota() {
    let sim = spawn(SimArgs {
        contacts: 5,
        burst_limit: 1000,
        daily_limit: 3,
        retry_after: true,
        ..SimArgs::default()
    })
    .await;
    let loc = &sim.locations[0];
    let path = format!("/opportunities/pipelines?locationId={}", loc.id);
    for _ in 0..3 {
        assert_eq!(
            call(&sim, Method::GET, &path, &loc.pit_token, V, None)
                .await
                .status(),
            200
        );
    }
    let r = call(&sim, Method::GET, &path, &loc.pit_token, V, None).await;
    assert_eq!(r.status(), 429);
    assert_eq!(rl(&r, "x-ratelimit-daily-remaining"), Some(0));
    assert!(rl(&r, "retry-after").is_some_and(|s| s > 0));
}

#[tokio::test]
async fn version_header_is_required_and_three_values_are_accepted() {
    let sim = small().await;
    let loc = &sim.locations[0];
    let path = format!("/locations/{}", loc.id);
    for v in ["2021-07-28", "2021-04-15", "2023-02-21"] {
        assert_eq!(
            call(&sim, Method::GET, &path, &loc.pit_token, v, None)
                .await
                .status(),
            200,
            "{v}"
        );
    }
    let r = call(&sim, Method::GET, &path, &loc.pit_token, "2020-01-01", None).await;
    assert_eq!(r.status(), 400);
    let r = client()
        .get(format!("{}{}", sim.base_url, path))
        .bearer_auth(&loc.pit_token)
        .send()
        .await
        .expect("answered");
    assert_eq!(r.status(), 400);
    let b: Value = r.json().await.expect("json");
    assert_eq!(b["message"], "Version header was not found");
}

#[tokio::test]
async fn wrong_kind_other_location_unknown_and_expired_tokens() {
    let sim = small().await;
    let (a, b) = (&sim.locations[0], &sim.locations[1]);
    let body = json!({"locationId": a.id, "pageLimit": 10});
    let (st, e) = post(&sim, "/contacts/search", &sim.agency_token, body.clone()).await;
    assert_eq!(
        (st, e["message"].as_str()),
        (
            401,
            Some("This authClass type is not allowed to access this scope")
        )
    );
    let (st, e) = post(&sim, "/contacts/search", &b.pit_token, body.clone()).await;
    assert_eq!(
        (st, e["message"].as_str()),
        (403, Some("The token does not have access to this location"))
    );
    let (st, e) = post(&sim, "/contacts/search", "nope", body.clone()).await;
    assert_eq!((st, e["error"].as_str()), (401, Some("Unauthorized")));
    // A PIT cannot use agency-only routes.
    let (st, _) = form(
        &sim,
        "/oauth/locationToken",
        Some(&a.pit_token),
        &[("companyId", &sim.company_id), ("locationId", &a.id)],
    )
    .await;
    assert_eq!(st, 401);
    // Agency token -> location token, which works until it expires.
    let (st, t) = form(
        &sim,
        "/oauth/locationToken",
        Some(&sim.agency_token),
        &[("companyId", &sim.company_id), ("locationId", &a.id)],
    )
    .await;
    assert_eq!(st, 200, "{t}");
    assert!(t.get("refresh_token").is_none());
    let token = t["access_token"].as_str().expect("token").to_string();
    assert_eq!(
        post(&sim, "/contacts/search", &token, body.clone()).await.0,
        200
    );
    assert!(sim.expire_token(&token));
    let (st, e) = post(&sim, "/contacts/search", &token, body.clone()).await;
    assert_eq!((st, e["statusCode"].as_u64()), (401, Some(401)));
    // Unknown contact id: 400, not 404.
    let (st, e) = get(&sim, "/contacts/doesnotexist", &a.pit_token).await;
    assert_eq!(
        (st, e["message"].as_str()),
        (400, Some("Contact with id doesnotexist not found"))
    );
    let (st, e) = get(&sim, "/nowhere", &a.pit_token).await;
    assert_eq!(
        (st, e["message"].as_str()),
        (404, Some("Cannot GET /nowhere"))
    );
}

#[tokio::test(start_paused = true)]
async fn oauth_tokens_expire_on_the_clock() {
    let sim = spawn(SimArgs {
        contacts: 5,
        token_ttl_secs: 60,
        ..SimArgs::default()
    })
    .await;
    let loc = &sim.locations[0];
    let (st, t) = form(
        &sim,
        "/oauth/token",
        None,
        &[
            ("client_id", &sim.client_id),
            ("client_secret", &sim.client_secret),
            ("grant_type", "authorization_code"),
            ("code", &loc.auth_code),
        ],
    )
    .await;
    assert_eq!(st, 200, "{t}");
    assert_eq!(t["expires_in"], 60);
    let token = t["access_token"].as_str().expect("token").to_string();
    let path = format!("/locations/{}/customFields?model=all", loc.id);
    assert_eq!(get(&sim, &path, &token).await.0, 200);
    tokio::time::advance(std::time::Duration::from_secs(61)).await;
    assert_eq!(get(&sim, &path, &token).await.0, 401);
}

#[tokio::test]
async fn refresh_rotation_spends_the_old_refresh_token() {
    let sim = small().await;
    let loc = &sim.locations[0];
    let creds = [
        ("client_id", sim.client_id.as_str()),
        ("client_secret", sim.client_secret.as_str()),
    ];
    let with = |extra: &[(&'static str, String)]| {
        let mut v: Vec<(&str, String)> = creds.iter().map(|(k, v)| (*k, v.to_string())).collect();
        v.extend(extra.iter().cloned());
        v
    };
    let pairs = with(&[
        ("grant_type", "authorization_code".into()),
        ("code", loc.auth_code.clone()),
        ("user_type", "Location".into()),
    ]);
    let refs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (st, first) = form(&sim, "/oauth/token", None, &refs).await;
    assert_eq!(st, 200, "{first}");
    assert_eq!(first["locationId"].as_str(), Some(loc.id.as_str()));
    let (st, _) = form(&sim, "/oauth/token", None, &refs).await;
    assert_eq!(st, 400, "an authorization code is single-use");
    let old_rt = first["refresh_token"].as_str().expect("rt").to_string();
    let pairs = with(&[
        ("grant_type", "refresh_token".into()),
        ("refresh_token", old_rt.clone()),
    ]);
    let refs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (st, second) = form(&sim, "/oauth/token", None, &refs).await;
    assert_eq!(st, 200);
    assert_ne!(second["refresh_token"], first["refresh_token"]);
    let (st, e) = form(&sim, "/oauth/token", None, &refs).await;
    assert_eq!(
        (st, e["error"].as_str()),
        (400, Some("invalid_grant")),
        "the old refresh token is spent"
    );
    let new_token = second["access_token"].as_str().expect("at");
    assert_eq!(
        get(&sim, &format!("/users/?locationId={}", loc.id), new_token)
            .await
            .0,
        200
    );
    let (st, _) = form(
        &sim,
        "/oauth/token",
        None,
        &[
            ("client_id", &sim.client_id),
            ("client_secret", "wrong"),
            ("grant_type", "refresh_token"),
        ],
    )
    .await;
    assert_eq!(st, 401);
    // Agency flows: installed locations.
    let (st, b) = get(
        &sim,
        &format!(
            "/oauth/installedLocations?companyId={}&appId={}",
            sim.company_id, sim.app_id
        ),
        &sim.agency_token,
    )
    .await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["count"], 2);
    assert!(b["locations"][0]["_id"].is_string());
}

#[tokio::test]
async fn faults_reset_error_truncate_and_storm_are_counted() {
    let sim = small().await;
    let loc = &sim.locations[0];
    let path = format!("/users/?locationId={}", loc.id);
    let only = |spec: FaultSpec| FaultConfig {
        default: FaultSpec::default(),
        endpoints: [("users.list".to_string(), spec)].into(),
    };
    sim.set_faults(only(FaultSpec {
        reset: 1.0,
        ..Default::default()
    }))
    .expect("valid");
    let r = client()
        .get(format!("{}{}", sim.base_url, path))
        .bearer_auth(&loc.pit_token)
        .header("Version", V)
        .send()
        .await;
    let failed = match r {
        Err(_) => true,
        Ok(r) => r.bytes().await.is_err(),
    };
    assert!(failed, "a reset is a connection error for the client");
    sim.set_faults(only(FaultSpec {
        error502: 1.0,
        ..Default::default()
    }))
    .expect("valid");
    assert_eq!(get(&sim, &path, &loc.pit_token).await.0, 502);
    sim.set_faults(only(FaultSpec {
        truncate: 1.0,
        ..Default::default()
    }))
    .expect("valid");
    let r = call(&sim, Method::GET, &path, &loc.pit_token, V, None).await;
    assert_eq!(r.status(), 200);
    assert!(
        r.json::<Value>().await.is_err(),
        "truncated JSON does not parse"
    );
    sim.set_faults(only(FaultSpec {
        rate_limit: 1.0,
        ..Default::default()
    }))
    .expect("valid");
    assert_eq!(get(&sim, &path, &loc.pit_token).await.0, 429);
    // Other endpoints are untouched.
    assert_eq!(
        get(&sim, &format!("/locations/{}", loc.id), &loc.pit_token)
            .await
            .0,
        200
    );
    sim.set_faults(FaultConfig::default()).expect("valid");
    assert_eq!(get(&sim, &path, &loc.pit_token).await.0, 200);
    let c = sim.counters();
    let users = &c["users.list"];
    assert_eq!(
        (
            users["reset"],
            users["502"],
            users["truncate"],
            users["429"],
            users["200"]
        ),
        (1, 1, 1, 1, 1)
    );
    assert!(
        sim.set_faults(only(FaultSpec {
            hang: 2.0,
            ..Default::default()
        }))
        .is_err()
    );
}

#[tokio::test]
async fn hang_fault_answers_504_after_the_configured_time() {
    let sim = spawn(SimArgs {
        contacts: 5,
        fault_hang: 1.0,
        fault_hang_ms: 50,
        fault_endpoints: vec!["locations.get".into()],
        ..SimArgs::default()
    })
    .await;
    let loc = &sim.locations[0];
    assert_eq!(
        get(&sim, &format!("/locations/{}", loc.id), &loc.pit_token)
            .await
            .0,
        504
    );
    assert_eq!(sim.count("locations.get", "hang"), 1);
}

#[tokio::test]
async fn admin_api_over_http() {
    let sim = small().await;
    let loc = &sim.locations[0];
    let c = client();
    let url = |p: &str| format!("{}/_sim{}", sim.base_url, p);
    let r = c
        .post(url(&format!("/locations/{}/contacts", loc.id)))
        .body("{not json")
        .send()
        .await
        .expect("answered");
    assert_eq!(r.status(), 400);
    assert_eq!(r.headers()["x-sim-admin"], "not part of the GHL API");
    let e: Value = r.json().await.expect("json");
    assert!(e["message"].as_str().is_some_and(|m| m.contains("JSON")));
    let r = c
        .post(url(&format!("/locations/{}/contacts", loc.id)))
        .json(&json!({"shoeSize": 3}))
        .send()
        .await
        .expect("answered");
    assert_eq!(r.status(), 400);
    let r = c
        .post(url(&format!("/locations/{}/contacts", loc.id)))
        .json(&json!({"firstName": "Ada", "email": "ada@example.com"}))
        .send()
        .await
        .expect("answered");
    assert_eq!(r.status(), 200);
    let created: Value = r.json().await.expect("json");
    let id = created["id"].as_str().expect("id").to_string();
    let r = c
        .patch(url(&format!("/locations/{}/contacts/{id}", loc.id)))
        .json(&json!({"lastName": "Lovelace"}))
        .send()
        .await
        .expect("answered");
    let updated: Value = r.json().await.expect("json");
    assert!(
        updated["dateUpdated"].as_str() > created["dateUpdated"].as_str(),
        "dateUpdated moves"
    );
    let (st, b) = get(&sim, &format!("/contacts/{id}"), &loc.pit_token).await;
    assert_eq!(
        (st, b["contact"]["lastName"].as_str()),
        (200, Some("Lovelace"))
    );
    let dump: Value = c
        .get(url(&format!("/locations/{}", loc.id)))
        .send()
        .await
        .expect("answered")
        .json()
        .await
        .expect("json");
    assert_eq!(dump["contacts"].as_array().map(Vec::len), Some(231));
    let r = c
        .delete(url(&format!("/locations/{}/contacts/{id}", loc.id)))
        .send()
        .await
        .expect("answered");
    assert_eq!(r.status(), 200);
    assert_eq!(
        get(&sim, &format!("/contacts/{id}"), &loc.pit_token)
            .await
            .0,
        400
    );
    let counters: Value = c
        .get(url("/counters"))
        .send()
        .await
        .expect("answered")
        .json()
        .await
        .expect("json");
    assert_eq!(counters["counters"]["contacts.get"]["200"], 1);
    assert_eq!(
        c.delete(url("/counters"))
            .send()
            .await
            .expect("answered")
            .status(),
        200
    );
    assert_eq!(sim.total_requests(), 0);
    let r = c
        .patch(url("/settings"))
        .json(&json!({"latencyMs": 1, "burstLimit": 7}))
        .send()
        .await
        .expect("answered");
    assert_eq!(r.status(), 200);
    assert_eq!(sim.settings().burst_limit, 7);
    let r = c
        .patch(url("/settings"))
        .json(&json!({"latencyMs": "slow"}))
        .send()
        .await
        .expect("answered");
    assert_eq!(r.status(), 400);
    let r = c
        .put(url("/faults"))
        .json(&json!({"endpoints": {"nope": {"error500": 0.5}}}))
        .send()
        .await
        .expect("answered");
    assert_eq!(r.status(), 400);
    let r = c
        .put(url("/faults"))
        .json(&json!({"default": {"error503": 0.25}}))
        .send()
        .await
        .expect("answered");
    assert_eq!(r.status(), 200);
    let code: Value = c
        .post(url("/oauth/codes"))
        .json(&json!({"userType": "Location", "locationId": loc.id}))
        .send()
        .await
        .expect("answered")
        .json()
        .await
        .expect("json");
    assert!(
        code["code"]
            .as_str()
            .is_some_and(|c| c.starts_with("sim-code-"))
    );
}

#[tokio::test]
async fn webhooks_are_signed_with_the_printed_ed25519_key() {
    use ed25519_dalek::{Signature, Verifier, VerifyingKey};
    type Got = Arc<Mutex<Vec<(String, Vec<u8>)>>>;
    let got: Got = Arc::default();
    let sink = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let sink = sink.clone();
                async move {
                    let sig = headers
                        .get("x-ghl-signature")
                        .map(|v| v.to_str().unwrap_or("").to_string())
                        .unwrap_or_default();
                    sink.lock().expect("lock").push((sig, body.to_vec()));
                    "ok"
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let hook = format!("http://{}/hook", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    let sim = spawn(SimArgs {
        contacts: 5,
        webhook_url: Some(hook),
        ..SimArgs::default()
    })
    .await;
    let loc = &sim.locations[0];
    sim.create(&loc.id, "contacts", json!({"firstName": "Hook"}))
        .expect("create");
    sim.webhooks_idle().await;
    let (sig, body) = got
        .lock()
        .expect("lock")
        .first()
        .cloned()
        .expect("a webhook arrived");
    let pem = sim
        .webhook_public_key_pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<String>();
    let der = base64::engine::general_purpose::STANDARD
        .decode(pem)
        .expect("base64");
    let key = VerifyingKey::from_bytes(der[12..].try_into().expect("32 bytes")).expect("key");
    let sig = Signature::from_slice(
        &base64::engine::general_purpose::STANDARD
            .decode(sig)
            .expect("b64"),
    )
    .expect("sig");
    key.verify(&body, &sig)
        .expect("signature verifies over the raw body");
    let event: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(event["type"], "ContactCreate");
    assert_eq!(event["locationId"].as_str(), Some(loc.id.as_str()));
    assert!(event["webhookId"].is_string() && event["timestamp"].is_string());
}

#[tokio::test]
async fn run_serves_until_shutdown() {
    let args = SimArgs {
        contacts: 3,
        ..SimArgs::default()
    };
    let stop = async { tokio::time::sleep(std::time::Duration::from_millis(200)).await };
    ghl_gateway::sim::run(args, stop)
        .await
        .expect("run returns cleanly after shutdown");
}
