//! The command line. One clap struct per command; each module gets only its own settings struct,
//! and every flag is also an environment variable.

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::graphql;
use crate::http::HttpConfig;
use crate::store::DatabaseConfig;

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

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the GraphQL API from the cache.
    Serve(ServeConfig),
    /// Apply the database migrations and exit.
    Migrate(MigrateConfig),
    /// Print the GraphQL schema (SDL) to stdout.
    Schema,
    /// Run the GHL API v2 simulator alone (for benchmarks and other clients).
    Sim(crate::sim::SimArgs),
}

/// Settings of `ghl-gateway serve`.
#[derive(Clone, Debug, Args)]
pub struct ServeConfig {
    #[command(flatten)]
    pub http: HttpConfig,
    #[command(flatten)]
    pub database: DatabaseConfig,
    #[command(flatten)]
    pub graphql: graphql::Settings,
    #[command(flatten)]
    pub upstream: crate::upstream::UpstreamConfig,
    #[command(flatten)]
    pub sync: crate::sync::SyncConfig,
}

/// Settings of `ghl-gateway migrate`.
#[derive(Clone, Debug, Args)]
pub struct MigrateConfig {
    #[command(flatten)]
    pub database: DatabaseConfig,
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
        let cli = Cli::command();
        for sub in cli.get_subcommands() {
            for arg in sub.get_arguments() {
                let id = arg.get_id().as_str();
                if id == "help" || id == "version" || arg.is_positional() {
                    continue;
                }
                assert!(
                    arg.get_env().is_some(),
                    "{} --{id} has no env var",
                    sub.get_name()
                );
                assert!(
                    arg.get_help().is_some(),
                    "{} --{id} has no help",
                    sub.get_name()
                );
            }
        }
    }
}
