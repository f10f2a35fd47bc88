//! The `ghl-gateway` binary: parse the command line, set up logging, run the command.

use clap::Parser;
use ghl_gateway::cli::{Cli, Command};
use ghl_gateway::telemetry;
use ghl_gateway::telemetry::memory::Footprint;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Before the runtime's threads exist: glibc's arenas are set up per thread.
    let batch = match &cli.command {
        Command::Sync(_) => true,
        Command::Bench(args) => args.worker.is_some(),
        _ => false,
    };
    telemetry::memory::configure(if batch {
        Footprint::Batch
    } else {
        Footprint::Server
    });
    // `schema` prints data to stdout and logs nothing.
    if !matches!(cli.command, Command::Schema) {
        telemetry::init(cli.log_format);
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(cli.command.run())
}
