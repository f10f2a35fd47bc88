//! Tracing set-up, in one place, and the metrics, request scope and heap trimming ([`metrics`],
//! [`request`], [`memory`]).
//! `RUST_LOG` overrides the default filter. Imports nothing of this crate: every other module
//! may call it.

pub mod memory;
pub mod metrics;
pub mod request;

use tracing_subscriber::EnvFilter;

/// Log output: human-readable lines or one JSON object per line (`--log-format`, `LOG_FORMAT`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Pretty,
    Json,
}

/// The default filter: our own info logs, and only warnings from the SQL layers, which log every
/// statement at info.
const DEFAULT_FILTER: &str = "info,sqlx=warn,sea_orm=warn,sea_orm_migration=warn";

/// Installs the global subscriber. Logs go to stderr so that stdout stays clean for commands
/// that print data (`schema`).
pub fn init(format: LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second init (tests) keeps the first subscriber.
    let _ = match format {
        LogFormat::Pretty => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
