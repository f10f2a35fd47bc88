//! The GraphQL schema: the query root, its types, the DataLoader and the error codes.
//!
//! Resolvers read the cache through [`Store`] and never call GHL. The names are the contract of
//! `shared/DESIGN.md`; `schema.graphql` is this module's SDL, kept equal by a test.

pub mod error;
pub mod loaders;
pub mod query;
pub mod types;

use std::time::Duration;

use async_graphql::dataloader::DataLoader;
use async_graphql::{EmptyMutation, EmptySubscription, Schema};

use crate::store::Store;
use loaders::CacheLoader;

pub type AppSchema = Schema<query::Query, EmptyMutation, EmptySubscription>;

/// Settings of the GraphQL layer.
#[derive(Clone, Debug, clap::Args)]
pub struct Settings {
    /// Seconds after a successful sync before a location's data counts as stale.
    #[arg(long = "max-age", env = "MAX_AGE_SECS", default_value_t = 300)]
    pub max_age_secs: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Self { max_age_secs: 300 }
    }
}

/// Builds the schema over `store`.
pub fn build(store: Store, settings: Settings) -> AppSchema {
    // One loader for all requests: it caches nothing, it only batches, so concurrent requests
    // share batches too. The short delay lets a whole list of siblings enqueue their keys first;
    // a page holds at most 500 keys, under the batch size, so one page is one batch.
    let loader = DataLoader::new(CacheLoader::new(store.clone()), tokio::spawn)
        .delay(Duration::from_millis(2))
        .max_batch_size(2 * query::MAX_PAGE as usize);
    Schema::build(query::Query, EmptyMutation, EmptySubscription)
        .data(store)
        .data(settings)
        .data(loader)
        .finish()
}

/// The SDL of the schema, as committed in `schema.graphql`.
pub fn sdl() -> String {
    Schema::build(query::Query, EmptyMutation, EmptySubscription)
        .finish()
        .sdl()
}
