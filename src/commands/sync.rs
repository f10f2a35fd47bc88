//! `ghl-gateway sync`: one sync of one location from the terminal, with a progress bar per
//! stage; Ctrl-C stops it at the next page and the next run resumes.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::bail;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use super::shutdown_signal;
use crate::domain::Resource;
use crate::secrets::SecretsConfig;
use crate::store::{DatabaseConfig, Store};
use crate::sync::{SyncEngine, SyncMode};

/// `ghl-gateway sync`.
#[derive(Clone, Debug, clap::Args)]
pub struct SyncCommand {
    /// The location to sync.
    #[arg(long, env = "SYNC_LOCATION")]
    pub location: String,
    /// A FULL sync (every record; reconciles deletions) instead of an INCREMENTAL one.
    #[arg(long, env = "SYNC_FULL")]
    pub full: bool,
    #[command(flatten)]
    pub database: DatabaseConfig,
    #[command(flatten)]
    pub upstream: crate::upstream::UpstreamConfig,
    #[command(flatten)]
    pub sync: crate::sync::SyncConfig,
    #[command(flatten)]
    pub secrets: SecretsConfig,
}

fn bar_style() -> ProgressStyle {
    ProgressStyle::with_template("{prefix:>14} {bar:30} {pos:>7}/{len:7} {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
}

/// `ghl-gateway sync`.
pub async fn run(command: SyncCommand) -> anyhow::Result<()> {
    let store = Store::open(&command.database).await?;
    // PostgreSQL: respect the location lock of the gateways (replicas) on the same database.
    store
        .start_cluster(command.database.database_direct_url.as_deref())
        .await
        .map_err(anyhow::Error::from)?;
    let client = super::ghl_client(&store, &command.upstream, &command.secrets)?;
    let engine = SyncEngine::start(store.clone(), client.clone(), command.sync.clone()).await?;
    let mode = if command.full {
        SyncMode::Full
    } else {
        SyncMode::Incremental
    };
    let mut events = engine.subscribe();
    let started = Instant::now();
    let (job, joined) = engine.refresh(&command.location, mode).await?;
    let elsewhere = joined && engine.running(&command.location).is_none();
    if elsewhere {
        println!(
            "joined job {}, which another gateway on this database runs",
            job.job.id
        );
    }
    let mut check = tokio::time::interval(Duration::from_secs(2));
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
            _ = check.tick(), if elsewhere => {
                // The other gateway may have died: waiting marks its job interrupted then.
                engine.wait_idle(&command.location, Duration::from_millis(100)).await;
                if let Some(job) = store.job_snapshot(&last.job.id).await?
                    && job.is_finished()
                {
                    last = job;
                }
                continue;
            }
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
            if let Some(bar) = stage_bars.get(stage.resource.as_str()) {
                bar.set_length(stage.total.unwrap_or(stage.fetched).max(stage.fetched) as u64);
                bar.set_position(stage.fetched as u64);
                bar.set_message(format!(
                    "{} · {} pages · {} calls{}",
                    crate::store::job_state_name(stage.state).to_lowercase(),
                    stage.pages,
                    stage.calls,
                    stage
                        .error
                        .as_deref()
                        .map(|e| format!(" · {e}"))
                        .unwrap_or_default()
                ));
                if stage.state.is_finished() {
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
        last.job.id,
        crate::store::sync_mode_name(last.job.mode),
        crate::store::job_state_name(last.job.state)
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
    if last.job.state != crate::domain::JobState::Succeeded {
        bail!("the sync failed");
    }
    Ok(())
}
