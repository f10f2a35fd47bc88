//! `ghl-gateway demo`: everything on one machine: the simulator, the gateway on SQLite, the
//! simulator's credentials, an API key, a first FULL sync of every location, and the
//! simulator's signed webhooks pointed at the gateway's `/webhooks/ghl`.

use anyhow::Context as _;

use super::shutdown_signal;
use crate::app::{App, ServeConfig};
use crate::sim::{Sim, SimArgs};
use crate::sync::SyncMode;
use crate::upstream::Credential;

/// The tokens-at-rest key of the demo when none is configured. The demo's tokens are the
/// simulator's, so a published key protects nothing real; a real deployment sets its own.
const DEMO_SECRET_KEY: &str = "ZGVtby1vbmx5LWtleS1ub3QtZm9yLXByb2R1Y3Rpb24=";

/// Settings of `ghl-gateway demo`: the gateway's own, plus the simulator's.
#[derive(Clone, Debug, clap::Args)]
pub struct DemoConfig {
    #[command(flatten)]
    pub serve: ServeConfig,
    /// Locations the demo's simulator serves.
    #[arg(long = "demo-locations", env = "DEMO_LOCATIONS", default_value_t = 2)]
    pub locations: usize,
    /// Contacts in each simulated location.
    #[arg(long = "demo-contacts", env = "DEMO_CONTACTS", default_value_t = 3_000)]
    pub contacts: usize,
    /// Latency of each simulated GHL call, in milliseconds (GHL's is 100-300).
    #[arg(
        long = "demo-latency-ms",
        env = "DEMO_LATENCY_MS",
        default_value_t = 150
    )]
    pub latency_ms: u64,
    /// Random extra or less latency, in milliseconds.
    #[arg(long = "demo-jitter-ms", env = "DEMO_JITTER_MS", default_value_t = 100)]
    pub jitter_ms: u64,
    /// Address of the demo's simulator; port 0 picks a free port.
    #[arg(
        long = "demo-sim-listen",
        env = "DEMO_SIM_LISTEN",
        default_value = "127.0.0.1:0"
    )]
    pub sim_listen: std::net::SocketAddr,
    /// Seed of the simulated data (the same seed, the same data).
    #[arg(long = "demo-seed", env = "DEMO_SEED", default_value_t = 42)]
    pub seed: u64,
}

/// `ghl-gateway demo`.
pub async fn run(mut config: DemoConfig) -> anyhow::Result<()> {
    let sim_args = SimArgs {
        listen: config.sim_listen,
        seed: config.seed,
        locations: config.locations.max(1),
        contacts: config.contacts,
        latency_ms: config.latency_ms,
        jitter_ms: config.jitter_ms,
        ..SimArgs::default()
    };
    let token_ttl_secs = sim_args.token_ttl_secs;
    let sim = Sim::spawn(sim_args)
        .await
        .context("cannot start the simulator")?;
    let serve = &mut config.serve;
    serve.upstream.base_url = sim.base_url.clone();
    if serve.secrets.secret_key.is_none() {
        tracing::warn!(
            "the demo encrypts its (simulated) tokens with a built-in key; set GATEWAY_SECRET_KEY for real ones"
        );
        serve.secrets.secret_key = Some(DEMO_SECRET_KEY.into());
    }
    // The demo's webhooks come from its own simulator, signed with the simulator's keys, not GHL's.
    serve.http.webhooks.webhook_public_key = sim.webhook_public_key_pem.clone();
    serve.http.webhooks.webhook_legacy_public_key = sim.webhook_legacy_public_key_pem.clone();
    let database_url = config.serve.database.database_url.clone();
    let app = App::build(config.serve).await?;
    // The simulator's admin writes reach the gateway as signed webhooks (both signatures, as GHL's
    // app events), retried after a failure as a receiver must expect.
    let webhook_url = format!("http://{}/webhooks/ghl", app.local_addr());
    sim.update_settings(|s| {
        s.webhook_url = Some(webhook_url.clone());
        s.webhooks.max_attempts = 3;
    })
    .map_err(anyhow::Error::msg)
    .context("cannot point the simulator's webhooks at the gateway")?;
    let locations: Vec<String> = sim.locations.iter().map(|l| l.id.clone()).collect();
    // Read before this run writes anything: what an earlier run left in the database.
    let reused = earlier_run(app.store(), &locations)
        .await
        .context("cannot read what the database holds")?;
    for location in &sim.locations {
        app.sync()
            .client()
            .set_credential(
                &location.id,
                Credential::PrivateIntegration {
                    token: location.pit_token.clone().into(),
                },
            )
            .await
            .context("cannot store the demo's credentials")?;
    }
    let now = chrono::Utc::now().timestamp_millis();
    let key = crate::auth::generate_key(Some("demo".into()), &locations, now);
    app.store()
        .insert_api_key(key.row)
        .await
        .context("cannot store the demo's API key")?;
    for location in &locations {
        app.sync().refresh(location, SyncMode::Full).await?;
    }

    let base = format!("http://{}", app.local_addr());
    println!("dashboard:  {base}/");
    println!("graphiql:   {base}/graphiql");
    println!("graphql:    {base}/graphql");
    println!("graphql-ws: ws://{}/graphql/ws", app.local_addr());
    match app.metrics_addr() {
        Some(address) => println!("metrics:    http://{address}/metrics"),
        None => println!("metrics:    {base}/metrics"),
    }
    println!(
        "simulator:  {} (GHL API v2, admin API at /_sim/)",
        sim.base_url
    );
    println!(
        "webhooks:   simulator -> {webhook_url} (signed; the simulator's admin writes are sent here)"
    );
    println!("sim company id:   {}", sim.company_id);
    println!(
        "sim agency token: {} (Company scope, expires in {token_ttl_secs} s; refresh token {})",
        sim.agency_token, sim.agency_refresh_token
    );
    for location in &sim.locations {
        println!("location:   {} ({})", location.id, location.name);
        println!(
            "  pit:      {} (its private integration token: `Authorization: Bearer <pit>` and `Version: 2021-07-28` on the simulator)",
            location.pit_token
        );
    }
    println!("database:   {database_url} ({reused})");
    println!("api key:    {}", key.key);
    println!("            (send `Authorization: Bearer <key>`; GraphiQL: add it under Headers)");
    println!(
        "first sync: FULL, running now for every location (GHL's real rate limits and latency)"
    );
    let result = app.run_until_stopped(shutdown_signal()).await;
    sim.shutdown().await;
    result
}

/// What an earlier run left in the database, in words for the banner: `new` when nothing.
async fn earlier_run(store: &crate::store::Store, locations: &[String]) -> anyhow::Result<String> {
    let mut cached = Vec::new();
    for location in locations {
        if let Some(job) = store.last_job(location).await? {
            cached.push(job.finished_at.unwrap_or(job.started_at));
        }
    }
    let others = store
        .credentialed_locations()
        .await?
        .into_iter()
        .filter(|l| !locations.contains(l))
        .count();
    let keys = store
        .api_keys()
        .await?
        .iter()
        .filter(|k| k.revoked_at.is_none())
        .count();
    if cached.is_empty() && others == 0 && keys == 0 {
        return Ok("new".into());
    }
    let mut parts = vec![format!(
        "reused from an earlier run: {} of {} locations cached",
        cached.len(),
        locations.len()
    )];
    if let Some(last) = cached.iter().max() {
        parts.push(format!(
            "last synced {}, refreshed now",
            last.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ));
    }
    if keys > 0 {
        parts.push(format!("{keys} earlier API key(s) still valid"));
    }
    if others > 0 {
        parts.push(format!(
            "{others} location(s) of another simulator seed kept, not synced"
        ));
    }
    Ok(parts.join("; "))
}
