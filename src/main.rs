//! The `ghl-gateway` binary: parse the command line, set up logging, run the command.

use clap::Parser;
use ghl_gateway::cli::{Cli, Command};
use ghl_gateway::telemetry;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // `schema` prints data to stdout and logs nothing.
    if !matches!(cli.command, Command::Schema) {
        telemetry::init(cli.log_format);
    }
    cli.command.run().await
}
