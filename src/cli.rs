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
    /// Everything on one machine: the simulator, the gateway on SQLite, credentials, a key, and
    /// a first sync.
    Demo(DemoConfig),
    /// Sync one location from the terminal, with a progress bar per stage.
    Sync(SyncCommand),
    /// Store the GHL credentials of a location (private integration token, OAuth code, or
    /// agency token).
    Connect(ConnectCommand),
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

/// Settings of `ghl-gateway demo`: the gateway's own, plus the simulator's.
#[derive(Clone, Debug, Args)]
pub struct DemoConfig {
    #[command(flatten)]
    pub serve: ServeConfig,
    /// Locations the demo's simulator serves.
    #[arg(long = "demo-locations", env = "DEMO_LOCATIONS", default_value_t = 2)]
    pub locations: usize,
    /// Contacts in each simulated location.
    #[arg(long = "demo-contacts", env = "DEMO_CONTACTS", default_value_t = 3_000)]
    pub contacts: usize,
    /// Latency of each simulated GHL call, in milliseconds (GHL's is 100-300).
    #[arg(
        long = "demo-latency-ms",
        env = "DEMO_LATENCY_MS",
        default_value_t = 150
    )]
    pub latency_ms: u64,
    /// Random extra or less latency, in milliseconds.
    #[arg(long = "demo-jitter-ms", env = "DEMO_JITTER_MS", default_value_t = 100)]
    pub jitter_ms: u64,
    /// Address of the demo's simulator; port 0 picks a free port.
    #[arg(
        long = "demo-sim-listen",
        env = "DEMO_SIM_LISTEN",
        default_value = "127.0.0.1:0"
    )]
    pub sim_listen: std::net::SocketAddr,
    /// Seed of the simulated data (the same seed, the same data).
    #[arg(long = "demo-seed", env = "DEMO_SEED", default_value_t = 42)]
    pub seed: u64,
}

/// `ghl-gateway sync`.
#[derive(Clone, Debug, Args)]
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

/// `ghl-gateway connect`: one of `--private-token`, `--oauth-code` or `--agency-token`.
#[derive(Clone, Debug, Args)]
pub struct ConnectCommand {
    /// The location (required with a private integration token or an agency token).
    #[arg(long, env = "CONNECT_LOCATION")]
    pub location: Option<String>,
    /// The location's private integration token (GHL: Settings > Private Integrations).
    #[arg(long, env = "GHL_PRIVATE_TOKEN", hide_env_values = true)]
    pub private_token: Option<String>,
    /// An OAuth authorization code from the marketplace app's redirect (needs GHL_CLIENT_ID and
    /// GHL_CLIENT_SECRET); the location comes from GHL's answer.
    #[arg(long, env = "GHL_OAUTH_CODE", hide_env_values = true)]
    pub oauth_code: Option<String>,
    /// An agency (company) token that mints location tokens through /oauth/locationToken.
    #[arg(long, env = "GHL_AGENCY_TOKEN", hide_env_values = true)]
    pub agency_token: Option<String>,
    /// The agency's company id (with --agency-token).
    #[arg(long, env = "GHL_COMPANY_ID")]
    pub company_id: Option<String>,
    #[command(flatten)]
    pub database: DatabaseConfig,
    #[command(flatten)]
    pub upstream: crate::upstream::UpstreamConfig,
    #[command(flatten)]
    pub secrets: SecretsConfig,
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
