//! The commands beyond `serve`: `demo` (everything on one machine), `sync` (one sync in the
//! terminal, with progress bars) and `connect` (store a location's GHL credentials).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use crate::app::{App, shutdown_signal};
use crate::cli::{ConnectCommand, DemoConfig, SyncCommand};
use crate::domain::Resource;
use crate::secrets::{Cipher, SecretsConfig};
use crate::sim::{Sim, SimArgs};
use crate::store::{DatabaseConfig, Store};
use crate::sync::{SyncEngine, SyncMode};
use crate::upstream::{self, Credential};

/// The tokens-at-rest key of the demo when none is configured. The demo's tokens are the
/// simulator's, so a published key protects nothing real; a real deployment sets its own.
const DEMO_SECRET_KEY: &str = "ZGVtby1vbmx5LWtleS1ub3QtZm9yLXByb2R1Y3Rpb24=";

async fn open_store(database: &DatabaseConfig) -> anyhow::Result<Store> {
    let store = Store::connect(database)
        .await
        .context("cannot open the database (DATABASE_URL)")?;
    store
        .migrate()
        .await
        .context("cannot apply the database migrations")?;
    Ok(store)
}

fn client(
    store: &Store,
    upstream: &upstream::UpstreamConfig,
    secrets: &SecretsConfig,
) -> anyhow::Result<upstream::Client> {
    let cipher = Cipher::from_config(secrets).context("GATEWAY_SECRET_KEY is not a usable key")?;
    let credentials = crate::app::credentials::StoreCredentials::new(store.clone(), cipher);
    Ok(upstream::Client::new(
        upstream.clone(),
        std::sync::Arc::new(credentials),
    )?)
}

/// `ghl-gateway demo`.
pub async fn demo(mut config: DemoConfig) -> anyhow::Result<()> {
    let sim = Sim::spawn(SimArgs {
        listen: config.sim_listen,
        seed: config.seed,
        locations: config.locations.max(1),
        contacts: config.contacts,
        latency_ms: config.latency_ms,
        jitter_ms: config.jitter_ms,
        ..SimArgs::default()
    })
    .await
    .context("cannot start the simulator")?;
    let serve = &mut config.serve;
    serve.upstream.base_url = sim.base_url.clone();
    if serve.secrets.secret_key.is_none() {
        tracing::warn!(
            "the demo encrypts its (simulated) tokens with a built-in key; set GATEWAY_SECRET_KEY for real ones"
        );
        serve.secrets.secret_key = Some(DEMO_SECRET_KEY.to_owned());
    }
    let app = App::build(config.serve).await?;
    let locations: Vec<String> = sim.locations.iter().map(|l| l.id.clone()).collect();
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
    println!(
        "simulator:  {} (GHL API v2, admin API at /_sim/)",
        sim.base_url
    );
    for location in &sim.locations {
        println!("location:   {} ({})", location.id, location.name);
    }
    println!("api key:    {}", key.key);
    println!("            (send `Authorization: Bearer <key>`; GraphiQL: add it under Headers)");
    println!(
        "first sync: FULL, running now for every location (GHL's real rate limits and latency)"
    );
    let result = app.run_until_stopped(shutdown_signal()).await;
    sim.shutdown().await;
    result
}

/// `ghl-gateway connect`.
pub async fn connect(command: ConnectCommand) -> anyhow::Result<()> {
    let store = open_store(&command.database).await?;
    let client = client(&store, &command.upstream, &command.secrets)?;
    let location = match (
        &command.private_token,
        &command.oauth_code,
        &command.agency_token,
    ) {
        (Some(token), None, None) => {
            let location = command
                .location
                .clone()
                .context("--location is required with --private-token")?;
            client
                .set_credential(
                    &location,
                    Credential::PrivateIntegration {
                        token: token.clone().into(),
                    },
                )
                .await?;
            location
        }
        (None, Some(code), None) => client.install_with_code(code).await?,
        (None, None, Some(token)) => {
            let location = command
                .location
                .clone()
                .context("--location is required with --agency-token")?;
            let company_id = command
                .company_id
                .clone()
                .context("--company-id is required with --agency-token")?;
            client
                .set_credential(
                    &location,
                    Credential::Agency {
                        agency_token: token.clone().into(),
                        company_id,
                        location_token: None,
                        expires_at: None,
                    },
                )
                .await?;
            location
        }
        _ => bail!("give exactly one of --private-token, --oauth-code or --agency-token"),
    };
    store.ensure_location(&location).await?;
    // One cheap call proves the credential works.
    match client.location(&location).await {
        Ok(details) => {
            store
                .upsert_location(&details, chrono::Utc::now().timestamp_millis())
                .await?;
            println!(
                "location:   {location} ({})",
                details.name.unwrap_or_default()
            );
            println!(
                "connected:  the credential works; `ghl-gateway sync --location {location} --full` fills the cache"
            );
        }
        Err(error) => {
            println!("location:   {location}");
            println!("stored, but GHL refused a test call: {error}");
        }
    }
    store.close().await;
    Ok(())
}

fn bar_style() -> ProgressStyle {
    ProgressStyle::with_template("{prefix:>14} {bar:30} {pos:>7}/{len:7} {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
}

/// `ghl-gateway sync`.
pub async fn sync(command: SyncCommand) -> anyhow::Result<()> {
    let store = open_store(&command.database).await?;
    let client = client(&store, &command.upstream, &command.secrets)?;
    let engine = SyncEngine::start(store.clone(), client.clone(), command.sync.clone()).await?;
    let mode = if command.full {
        SyncMode::Full
    } else {
        SyncMode::Incremental
    };
    let mut events = engine.subscribe();
    let started = Instant::now();
    let (job, _) = engine.refresh(&command.location, mode).await?;
    let bars = MultiProgress::new();
    let mut stage_bars: HashMap<String, ProgressBar> = HashMap::new();
    for resource in Resource::ALL {
        let bar = bars.add(ProgressBar::new(0));
        bar.set_style(bar_style());
        bar.set_prefix(resource.as_str());
        stage_bars.insert(resource.as_str().to_owned(), bar);
    }
    let mut last = job;
    let interrupted = shutdown_signal();
    tokio::pin!(interrupted);
    while !last.is_finished() {
        let event = tokio::select! {
            event = events.recv() => event,
            () = &mut interrupted => {
                engine.shutdown().await;
                bail!("interrupted; the next sync resumes where this one stopped");
            }
        };
        let event = match event {
            Ok(event) if event.job.job.id == last.job.id => event,
            Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
            Err(_) => break,
        };
        last = event.job;
        for stage in &last.stages {
            if let Some(bar) = stage_bars.get(&stage.name) {
                bar.set_length(stage.total.unwrap_or(stage.fetched).max(stage.fetched) as u64);
                bar.set_position(stage.fetched as u64);
                bar.set_message(format!(
                    "{} · {} pages · {} calls{}",
                    stage.state.to_lowercase(),
                    stage.pages,
                    stage.calls,
                    stage
                        .error
                        .as_deref()
                        .map(|e| format!(" · {e}"))
                        .unwrap_or_default()
                ));
                if matches!(stage.state.as_str(), "SUCCEEDED" | "FAILED") {
                    bar.finish();
                }
            }
        }
    }
    engine
        .wait_idle(&command.location, Duration::from_secs(5))
        .await;
    let stats = client.stats(&command.location);
    let rows: i64 = last.stages.iter().map(|s| s.fetched).sum();
    let retries: i64 = last.stages.iter().map(|s| s.retries).sum();
    let rate_limited: i64 = last.stages.iter().map(|s| s.rate_limited).sum();
    println!();
    println!(
        "job:        {} ({}, {})",
        last.job.id, last.job.mode, last.job.state
    );
    println!(
        "calls:      {} ({} retries, {} answered 429)",
        stats.calls, retries, rate_limited
    );
    println!("rows:       {rows}");
    println!(
        "time:       {:.1} s (waiting for the rate limiter: {:.1} s)",
        started.elapsed().as_secs_f64(),
        stats.limiter_wait.as_secs_f64()
    );
    if let Some(error) = &last.job.error {
        println!("error:      {error}");
    }
    engine.shutdown().await;
    store.close().await;
    if last.job.state != "SUCCEEDED" {
        bail!("the sync failed");
    }
    Ok(())
}
