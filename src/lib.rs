//! ghl-gateway: a cache-first GraphQL gateway for HighLevel (GoHighLevel) CRM data.
//!
//! The map of the crate (who may use whom is in `shared/DESIGN.md`):
//! - [`app`]: builds the whole gateway from its config, binds, runs until stopped.
//! - [`auth`]: API keys (generated, hashed), the [`auth::Caller`], per-key rate and connections.
//! - [`secrets`]: the AEAD cipher that encrypts GHL tokens at rest.
//! - [`commands`]: `demo`, `sync` and `connect`, on top of [`app`].
//! - [`config`]: the command line (clap), one settings struct per module.
//! - [`telemetry`]: tracing set-up in one place.
//! - [`http`]: the axum router: GraphQL over HTTP, GraphiQL, health checks.
//! - [`graphql`]: the schema, its DataLoaders and error codes; reads only from [`store`].
//! - [`sync`]: the background sync: jobs, stages, checkpoints, progress events.
//! - [`store`]: the cache database: entities, migrations, bulk writes, keyset pages.
//! - [`domain`]: plain records and ids; no I/O.
//! - [`upstream`]: the GHL API client: credentials, rate limiting, retries, paging.
//! - [`sim`]: a simulator of the GHL API v2, independent of everything else here.
//! - [`bench`]: the benchmark suite (`ghl-gateway bench`): read and sync paths against the seed.

pub mod app;
pub mod auth;
pub mod bench;
pub mod cli;
pub mod commands;
pub mod config;
pub mod domain;
pub mod graphql;
pub mod http;
pub mod secrets;
pub mod sim;
pub mod store;
pub mod sync;
pub mod telemetry;
pub mod upstream;
