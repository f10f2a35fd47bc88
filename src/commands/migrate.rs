//! `ghl-gateway migrate`: applies the database migrations and exits.

use crate::store::{DatabaseConfig, Store};

/// Settings of `ghl-gateway migrate`.
#[derive(Clone, Debug, clap::Args)]
pub struct MigrateConfig {
    #[command(flatten)]
    pub database: DatabaseConfig,
}

/// Connects, migrates, closes.
pub async fn run(config: MigrateConfig) -> anyhow::Result<()> {
    let store = Store::open(&config.database).await?;
    tracing::info!("migrations applied");
    store.close().await;
    Ok(())
}
