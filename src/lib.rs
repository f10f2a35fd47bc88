//! ghl-gateway: a cache-first GraphQL gateway for HighLevel (GoHighLevel) CRM data.
//!
//! The map of the crate, top down (`shared/DESIGN.md` has the same map):
//! `main -> cli -> { commands, app } -> { http, graphql, cache, webhooks, sync, upstream, auth,
//! secrets, store, sim, bench, config, telemetry } -> domain`.
//! - [`cli`]: the command line (clap): global flags, one subcommand per module of [`commands`].
//! - [`commands`]: `serve`, `demo`, `sync`, `connect`, `keys`, `migrate`, `sim`, `bench`, `schema`.
//! - [`app`]: builds the gateway from its settings ([`app::ServeConfig`]), binds, runs until stopped.
//! - [`http`]: the axum router: GraphQL over HTTP and WebSocket, GraphiQL, dashboard, health checks.
//! - [`graphql`]: the schema, DataLoaders, the read policy, error codes; reads only from [`store`].
//! - [`cache`]: the response cache and the per-location data versions it is keyed on.
//! - [`webhooks`]: GHL's signed webhook events: verified, de-duplicated, applied through [`store`].
//! - [`sync`]: the background sync behind a narrow `SyncHandle`: jobs, stages, checkpoints, events.
//! - [`upstream`]: the GHL API client: tokens, rate limiting, retries, paging, DTOs -> domain.
//! - [`auth`]: API keys (generated, hashed), the [`auth::Caller`], per-key rate and connections.
//! - [`secrets`]: the AEAD cipher that encrypts GHL tokens at rest.
//! - [`store`]: the cache database: entities, migrations, bulk writes, keyset pages.
//! - [`sim`]: a simulator of the GHL API v2, independent of everything else here.
//! - [`bench`]: the benchmark suite (`ghl-gateway bench`): read and sync paths against the seed.
//! - [`config`]: settings plumbing: one source of defaults, one secret type.
//! - [`telemetry`]: tracing set-up, the metrics (names, helpers, recorder) and the request scope.
//! - [`domain`]: plain records, ids, job and stage states; no I/O.
//!
//! The layering rules (checked by `tests/api/layering.rs`, no import cycle between modules):
//! 1. Nothing imports `cli` or `commands`; `app` knows nothing of the command line.
//! 2. `graphql` reads `store` and asks `sync` only through `SyncHandle`; it never calls `upstream`.
//! 3. `sync` uses `upstream` and `store`; `upstream` and `store` know nothing of each other or of
//!    GraphQL (upstream persists credentials through its own trait, which `app` implements).
//! 4. `sim` shares no code with the gateway path; `domain`, `config` and `telemetry` import nothing;
//!    `cache` imports only `config` (the store bumps its versions, `http` serves from it).

pub mod app;
pub mod auth;
pub mod bench;
pub mod cache;
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
pub mod webhooks;
