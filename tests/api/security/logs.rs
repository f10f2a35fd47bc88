//! Logs free of secrets: failed logins and a full sync with retries and a token refresh log no
//! key, header or token.

use super::*;

// One thread: the app's tasks run where the capturing subscriber is installed.
#[tokio::test(flavor = "current_thread")]
async fn failed_logins_log_no_key_or_header() {
    let (captured, _guard) = capture_logs();

    let db = sqlite().await;
    let app = spawn_app_with(&db.url, |c| c.http.auth.allow_anonymous = false).await;
    two_locations(&app.store).await;
    let (revoked_id, revoked) = create_key(&app.store, &["loc-a"]).await;
    app.store.revoke_api_key(&revoked_id, 2).await.unwrap();
    let (_, good) = create_key(&app.store, &["loc-a"]).await;
    let unknown = format!("ghlk_{}", "Z".repeat(43));
    let wrong_admin = format!("{ADMIN_KEY}-wrong");
    let secrets = [
        revoked.as_str(),
        good.as_str(),
        unknown.as_str(),
        wrong_admin.as_str(),
        ADMIN_KEY,
    ];
    for token in [&revoked, &unknown, &wrong_admin] {
        let reply = query(&app, token, "{ locations { id } }", json!({})).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
        assert!(
            !reply.text.contains(token.as_str()),
            "the error echoes no key"
        );
    }
    for token in [&good, &ADMIN_KEY.to_owned()] {
        assert_ok(&query(&app, token, "{ locations { id } }", json!({})).await);
    }
    let logs = captured.text();
    assert!(
        logs.contains("request refused: not authenticated"),
        "the logs were captured: {logs}"
    );
    for secret in secrets {
        assert!(!logs.contains(secret), "a key is in the logs");
        assert!(
            !logs.contains(&secret[..20]),
            "a key's prefix is in the logs"
        );
    }
    assert!(
        !logs.to_ascii_lowercase().contains("bearer "),
        "an Authorization header is in the logs"
    );
}

// One thread: the sync's tasks run where the capturing subscriber is installed.
#[tokio::test(flavor = "current_thread")]
async fn a_full_sync_with_retries_and_a_token_refresh_logs_no_token() {
    let (captured, _guard) = capture_logs();

    let db = sqlite().await;
    let sim = spawn_sim(700).await;
    let loc = sim.locations[0].id.clone();
    // Faults make the client log its retries; OAuth makes it refresh a token.
    let spec = ghl_gateway::sim::FaultSpec {
        error503: 0.3,
        ..Default::default()
    };
    sim.set_faults(ghl_gateway::sim::FaultConfig {
        default: spec,
        endpoints: Default::default(),
    })
    .unwrap();
    let base_url = sim.base_url.clone();
    let (client_id, client_secret) = (sim.client_id.clone(), sim.client_secret.clone());
    let app = spawn_app_with(&db.url, |c| {
        c.upstream.base_url = base_url;
        c.upstream.backoff_ms = 5;
        // 30% of calls fail: a generous retry budget keeps a run of 503s on one call (0.3^21)
        // from failing the sync, which is not what this test is about.
        c.upstream.max_retries = 20;
        c.upstream.client_id = Some(client_id);
        c.upstream.client_secret = Some(client_secret.into());
    })
    .await;
    let code = sim.auth_code("Location", Some(&loc)).unwrap();
    app.sync.client().install_with_code(&code).await.unwrap();
    let (_, key) = create_key(&app.store, &[loc.as_str()]).await;
    let cipher = ghl_gateway::secrets::Cipher::from_key_text(TEST_SECRET_KEY).unwrap();
    let plaintext = |row: &ghl_gateway::store::entities::credential::Model| {
        [row.access_token.as_deref(), row.refresh_token.as_deref()]
            .into_iter()
            .flatten()
            .map(|t| cipher.decrypt(t).expect("tokens are encrypted at rest"))
            .collect::<Vec<_>>()
    };
    let issued = plaintext(&app.store.credential(&loc).await.unwrap().unwrap());
    // The access token expires: the sync must refresh it (and log that, without it).
    assert!(sim.expire_token(&issued[0]));
    let refresh = query(
        &app,
        &key,
        "mutation($loc: ID!) { refreshLocation(locationId: $loc, mode: FULL) { id } }",
        json!({ "loc": loc }),
    )
    .await;
    assert_ok(&refresh);
    assert!(
        app.sync
            .wait_idle(&loc, std::time::Duration::from_secs(120))
            .await
    );
    let job = app.store.last_job(&loc).await.unwrap().unwrap();
    assert_eq!(
        job.state,
        ghl_gateway::domain::JobState::Succeeded,
        "{job:?}"
    );

    let renewed = plaintext(&app.store.credential(&loc).await.unwrap().unwrap());
    assert_ne!(renewed, issued, "the sync refreshed the token");

    let logs = captured.text();
    assert!(
        logs.contains("retrying a GHL call"),
        "the retries were logged"
    );
    assert!(
        logs.contains("renewed the GHL access token"),
        "the refresh was logged"
    );
    // The job's own lines ("sync started", "sync finished") are not asserted: run beside the
    // whole suite, "sync finished" was once missing from the capture although the job had
    // succeeded (the capture is a thread-local subscriber; alone, the test always sees it). The
    // retry and renewal lines above, logged during the sync's calls, prove the capture worked.
    let mut secrets = vec![
        key.clone(),
        sim.locations[0].pit_token.clone(),
        sim.client_secret.clone(),
    ];
    secrets.extend(issued);
    secrets.extend(renewed);
    for secret in &secrets {
        assert!(!logs.contains(secret.as_str()), "a secret is in the logs");
    }
    for marker in ["sim-at-", "sim-rt-", "pit-", "Bearer "] {
        assert!(!logs.contains(marker), "{marker:?} is in the logs");
    }
}
