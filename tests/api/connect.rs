//! `ghl-gateway connect`, the real binary against the simulator: a credential GHL refuses fails
//! the command (non-zero exit) and stores nothing; one it accepts is stored and ends the
//! location's cooldown (a reconnect).

use std::process::Output;

use crate::helpers::*;

/// Runs `ghl-gateway connect --location LOC --private-token TOKEN` over `db` and `sim`.
async fn connect(db: &TestDb, sim: &ghl_gateway::sim::SimHandle, token: &str) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_ghl-gateway"))
        .args(["connect", "--location", &sim.locations[0].id])
        .args(["--private-token", token])
        .env_clear()
        .env("DATABASE_URL", &db.url)
        .env("GHL_BASE_URL", &sim.base_url)
        .env("GATEWAY_SECRET_KEY", TEST_SECRET_KEY)
        .env("RUST_LOG", "warn")
        .output()
        .await
        .expect("the binary runs")
}

#[tokio::test]
async fn connect_with_a_refused_token_fails_and_stores_nothing() {
    for db in databases().await {
        let sim = spawn_sim(5).await;
        let loc = sim.locations[0].id.clone();
        let refused = connect(&db, &sim, "pit-not-a-token").await;
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(!refused.status.success(), "{}: {refused:?}", db.name);
        assert!(
            stderr.contains("GHL refused the credential") && stderr.contains("nothing was stored"),
            "{stderr}"
        );
        assert!(
            !stderr.contains("pit-not-a-token"),
            "the token is not echoed"
        );
        assert!(
            db.store.credential(&loc).await.unwrap().is_none(),
            "{}",
            db.name
        );
        assert_eq!(db.store.credentialed_locations().await.unwrap().len(), 0);
        assert_eq!(sim.requests("locations.get"), 1, "one test call");

        // The right token: stored, and the location counts as reconnected.
        let accepted = connect(&db, &sim, &sim.locations[0].pit_token).await;
        assert!(accepted.status.success(), "{}: {accepted:?}", db.name);
        assert!(db.store.credential(&loc).await.unwrap().is_some());
        assert!(db.store.failures_reset_at(&loc).await.unwrap().is_some());
        let name = db.store.location_row(&loc).await.unwrap().unwrap().name;
        assert_eq!(name.as_deref(), Some(sim.locations[0].name.as_str()));
    }
}
