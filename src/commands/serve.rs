//! `ghl-gateway serve`: the gateway against the real GHL API, until SIGINT or SIGTERM.

use crate::app::{App, ServeConfig};

/// Builds the gateway, prints what it serves, and serves until stopped.
pub async fn run(config: ServeConfig) -> anyhow::Result<()> {
    let app = App::build(config).await?;
    app.print_banner();
    app.run_until_stopped(super::shutdown_signal()).await
}
