//! The command line (clap): the global flags and one subcommand per module of
//! [`crate::commands`], whose arguments structs it gathers. Nothing but `main` imports it; every
//! flag is also an environment variable.

use clap::{Parser, Subcommand};

use crate::app::ServeConfig;
use crate::commands::{self, bench, connect, demo, keys, migrate, sim, sync};
use crate::telemetry::LogFormat;

/// A cache-first GraphQL gateway for HighLevel (GoHighLevel) CRM data.
#[derive(Debug, Parser)]
#[command(name = "ghl-gateway", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log output: human-readable `pretty` or one JSON object per line.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Pretty, global = true)]
    pub log_format: LogFormat,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the GraphQL API from the cache.
    Serve(ServeConfig),
    /// Apply the database migrations and exit.
    Migrate(migrate::MigrateConfig),
    /// Print the GraphQL schema (SDL) to stdout.
    Schema,
    /// Run the GHL API v2 simulator alone (for benchmarks and other clients).
    Sim(sim::SimArgs),
    /// Everything on one machine: the simulator, the gateway on SQLite, credentials, a key, and
    /// a first sync.
    Demo(demo::DemoConfig),
    /// Sync one location from the terminal, with a progress bar per stage.
    Sync(sync::SyncCommand),
    /// Store the GHL credentials of a location (private integration token, OAuth code, or
    /// agency token).
    Connect(connect::ConnectCommand),
    /// Manage API keys: create (shown once), list, revoke.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Benchmark the read path and the sync path against the seed's design; writes BENCHMARKS.md.
    Bench(bench::BenchArgs),
}

impl Command {
    /// Runs the command to its end.
    pub async fn run(self) -> anyhow::Result<()> {
        match self {
            Command::Serve(config) => commands::serve::run(config).await,
            Command::Migrate(config) => migrate::run(config).await,
            Command::Schema => {
                commands::schema::run();
                Ok(())
            }
            Command::Sim(args) => sim::run(args).await,
            Command::Demo(config) => demo::run(config).await,
            Command::Sync(command) => sync::run(command).await,
            Command::Connect(command) => connect::run(command).await,
            Command::Keys(command) => keys::run(command).await,
            Command::Bench(args) => bench::run(args).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_flag_has_an_environment_variable() {
        fn check(command: &clap::Command, path: &str) {
            for sub in command.get_subcommands() {
                let name = format!("{path} {}", sub.get_name());
                for arg in sub.get_arguments() {
                    let id = arg.get_id().as_str();
                    if id == "help" || id == "version" || arg.is_positional() {
                        continue;
                    }
                    assert!(arg.get_env().is_some(), "{name} --{id} has no env var");
                    assert!(arg.get_help().is_some(), "{name} --{id} has no help");
                }
                check(sub, &name);
            }
        }
        check(&Cli::command(), "ghl-gateway");
    }

    #[test]
    fn keys_commands_parse() {
        let cli = Cli::try_parse_from([
            "ghl-gateway",
            "keys",
            "create",
            "--location",
            "a",
            "--location",
            "b,c",
            "--name",
            "ci",
        ])
        .unwrap();
        let Command::Keys(keys::KeysCommand::Create(create)) = cli.command else {
            panic!("not keys create");
        };
        assert_eq!(create.locations, ["a", "b", "c"]);
        assert!(Cli::try_parse_from(["ghl-gateway", "keys", "create"]).is_err());
        assert!(Cli::try_parse_from(["ghl-gateway", "keys", "revoke", "key_1"]).is_ok());
    }

    #[test]
    fn security_flags_are_documented() {
        let mut command = Cli::command();
        let serve = command
            .find_subcommand_mut("serve")
            .expect("serve exists")
            .render_long_help()
            .to_string();
        assert!(serve.contains("GATEWAY_ADMIN_KEY") && serve.contains("GATEWAY_SECRET_KEY"));
        assert!(serve.contains("--allow-anonymous") && serve.contains("--cors-origin"));
    }
}
