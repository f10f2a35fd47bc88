//! The `ghl-gateway` binary: parse the command line, set up logging, run the command.

use clap::Parser;
use ghl_gateway::cli::{Cli, Command};
use ghl_gateway::{app, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Command::Schema = cli.command {
        print!("{}", ghl_gateway::graphql::sdl());
        return Ok(());
    }
    telemetry::init(cli.log_format);
    match cli.command {
        Command::Serve(config) => {
            let app = app::App::build(config).await?;
            app.print_banner();
            app.run_until_stopped(app::shutdown_signal()).await
        }
        Command::Migrate(config) => app::migrate(&config.database).await,
        Command::Keys(command) => app::keys(command).await,
        Command::Sim(args) => ghl_gateway::sim::run(args, app::shutdown_signal()).await,
        Command::Demo(config) => ghl_gateway::commands::demo(config).await,
        Command::Sync(command) => ghl_gateway::commands::sync(command).await,
        Command::Connect(command) => ghl_gateway::commands::connect(command).await,
        Command::Bench(args) => ghl_gateway::bench::run(args).await,
        Command::Schema => Ok(()),
    }
}
