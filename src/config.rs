//! The command line. One clap struct per command; each module gets only its own settings struct,
//! and every flag is also an environment variable.

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::graphql;
use crate::http::HttpConfig;
use crate::secrets::SecretsConfig;
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
    /// Manage API keys: create (shown once), list, revoke.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Benchmark the read path and the sync path against the seed's design; writes BENCHMARKS.md.
    Bench(crate::bench::BenchArgs),
}

/// `ghl-gateway keys ...`
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key for one or more locations and print it (it is shown only this once).
    Create(KeysCreate),
    /// List the keys: id, name, locations, created, last used, revoked.
    List(KeysList),
    /// Revoke a key by id; requests with it are refused from then on.
    Revoke(KeysRevoke),
}

#[derive(Clone, Debug, Args)]
pub struct KeysCreate {
    #[command(flatten)]
    pub database: DatabaseConfig,
    /// A location the key may read; repeat the flag (or separate ids with commas) for more.
    #[arg(
        long = "location",
        env = "KEY_LOCATIONS",
        value_delimiter = ',',
        required = true
    )]
    pub locations: Vec<String>,
    /// A name to recognise the key by in `keys list`.
    #[arg(long, env = "KEY_NAME")]
    pub name: Option<String>,
}

#[derive(Clone, Debug, Args)]
pub struct KeysList {
    #[command(flatten)]
    pub database: DatabaseConfig,
}

#[derive(Clone, Debug, Args)]
pub struct KeysRevoke {
    #[command(flatten)]
    pub database: DatabaseConfig,
    /// The key's id (`key_...`, from `keys create` or `keys list`).
    pub id: String,
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
    #[command(flatten)]
    pub secrets: SecretsConfig,
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
        let Command::Keys(KeysCommand::Create(create)) = cli.command else {
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
