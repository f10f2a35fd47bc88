//! The GraphQL schema: the query root, its types, the DataLoader, the error codes and the read
//! policy.
//!
//! Resolvers read the cache through [`Store`] and ask the sync through
//! [`SyncHandle`](crate::sync::SyncHandle) (start or join, wait, subscribe); they never call GHL.
//! Helpers the roots share live in `auth` (who may read what, which locations exist) and `error`
//! (the error edge, the sync handle), never in a sibling root. The names are the contract of
//! `shared/DESIGN.md`; `schema.graphql` is this module's SDL, kept equal by a test.

pub mod auth;
pub mod error;
pub mod limits;
pub mod loaders;
mod metrics;
pub mod mutation;
mod prefetch;
pub mod query;
mod read_policy;
mod reads;
pub mod subscription;
pub mod types;

use std::sync::Arc;
use std::time::Duration;

use async_graphql::dataloader::{DataLoader, HashMapCache};
use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextPrepareRequest,
};
use async_graphql::{Request, Schema, SchemaBuilder, ServerResult};

use crate::store::Store;
use loaders::CacheLoader;

pub type AppSchema = Schema<query::Query, mutation::Mutation, subscription::Subscription>;

/// Settings of the GraphQL layer.
#[derive(Clone, Debug, clap::Args)]
pub struct Settings {
    /// Seconds after a successful sync before a location's data counts as stale.
    #[arg(long = "max-age", env = "MAX_AGE_SECS", default_value_t = 300)]
    pub max_age_secs: u64,
    /// Whether a read of stale data starts a background refresh of its location
    /// (stale-while-revalidate). `false` serves the cache only.
    #[arg(long = "auto-refresh", env = "AUTO_REFRESH", default_value_t = true, action = clap::ArgAction::Set)]
    pub auto_refresh: bool,
    /// Seconds a query with `maxAge` waits for a refresh before it answers from the cache.
    #[arg(long = "max-age-wait", env = "MAX_AGE_WAIT_SECS", default_value_t = 30)]
    pub max_age_wait_secs: u64,
    #[command(flatten)]
    pub limits: limits::Limits,
}

impl Default for Settings {
    fn default() -> Self {
        crate::config::defaults()
    }
}

/// Builds the schema over `store`; `sync` (when the process runs one) serves `refreshLocation`,
/// the subscription and the read policy. Every request needs a [`crate::auth::Caller`] in its
/// data (the HTTP layer puts it there); without one, resolvers answer `UNAUTHENTICATED`.
pub fn build(store: Store, settings: Settings, sync: Option<crate::sync::SyncHandle>) -> AppSchema {
    let mut builder = builder(store, settings);
    if let Some(sync) = sync {
        builder = builder.data(sync);
    }
    builder.finish()
}

/// The schema's builder, for callers that add schema-wide data (tests add a `Caller`).
pub fn builder(
    store: Store,
    settings: Settings,
) -> SchemaBuilder<query::Query, mutation::Mutation, subscription::Subscription> {
    let mut builder = Schema::build(query::Query, mutation::Mutation, subscription::Subscription)
        .data(store.clone())
        .extension(limits::QueryLimits(settings.limits.clone()))
        .extension(error::InputErrorCodes)
        .extension(metrics::OperationMetrics)
        .extension(RequestLoader(store));
    if settings.limits.disable_introspection {
        builder = builder.disable_introspection();
    }
    builder.data(settings)
}

/// Gives every request its own DataLoader. Its cache lives as long as the request, so a request
/// sees one consistent view and reuses what the prefetch of a page loaded; nothing outlives it.
struct RequestLoader(Store);

impl ExtensionFactory for RequestLoader {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(RequestLoader(self.0.clone()))
    }
}

#[async_graphql::async_trait::async_trait]
impl Extension for RequestLoader {
    async fn prepare_request(
        &self,
        ctx: &ExtensionContext<'_>,
        request: Request,
        next: NextPrepareRequest<'_>,
    ) -> ServerResult<Request> {
        // The short delay lets siblings outside a prefetched page (e.g. a list of locations)
        // enqueue their keys together; pages themselves are prefetched in whole batches.
        let loader = DataLoader::with_cache(
            CacheLoader::new(self.0.clone()),
            // Loads run in tasks of their own; they keep the request's span (its request id).
            |load| tokio::spawn(tracing::Instrument::in_current_span(load)),
            HashMapCache::default(),
        )
        .delay(Duration::from_millis(1))
        .max_batch_size(10_000);
        next.run(ctx, request.data(loader)).await
    }
}

/// The SDL of the schema, as committed in `schema.graphql`.
pub fn sdl() -> String {
    Schema::build(query::Query, mutation::Mutation, subscription::Subscription)
        .finish()
        .sdl()
}
