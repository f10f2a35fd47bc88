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
pub mod lists;
pub mod loaders;
mod metrics;
pub mod mutation;
mod prefetch;
pub mod query;
mod read_policy;
mod reads;
pub mod subscription;
pub mod types;

use std::time::Duration;

use async_graphql::dataloader::{DataLoader, HashMapCache};
use async_graphql::{
    BatchRequest, BatchResponse, Request, Response, Schema, SchemaBuilder, ServerError,
};
use futures::StreamExt;
use futures::stream::BoxStream;

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
///
/// The schema has no extension. With any extension installed, async-graphql routes every field
/// through the extension chain (a registry lookup and a boxed future per extension and field);
/// a dashboard page resolves some 2,000 fields. What extensions would do runs around the
/// executor instead, in [`execute`], [`execute_batch`] and [`execute_stream`]: the document's
/// limits ([`limits`]), a DataLoader per request, and the codes of input errors.
pub fn builder(
    store: Store,
    settings: Settings,
) -> SchemaBuilder<query::Query, mutation::Mutation, subscription::Subscription> {
    let mut builder = Schema::build(query::Query, mutation::Mutation, subscription::Subscription)
        .data(store)
        .limit_depth(settings.limits.max_query_depth)
        .limit_complexity(settings.limits.max_query_complexity)
        .data(limits::Measure::new(&settings.limits));
    if settings.limits.disable_introspection {
        builder = builder.disable_introspection();
    }
    builder.data(settings)
}

/// Runs one request: checks its document's limits, gives it its own DataLoader, and codes its
/// errors. Every query and mutation goes through here (HTTP, WebSocket, tests), never through
/// `Schema::execute` alone, which would run without a DataLoader.
pub async fn execute(schema: &AppSchema, request: Request) -> Response {
    let document = limits::Document {
        query: request.query.clone(),
        operation_name: request.operation_name.clone(),
        variables: request.variables.clone(),
    };
    let mut request = request;
    let operation = match request.parsed_query() {
        Ok(parsed) => metrics::operation_name(parsed, document.operation_name.as_deref()),
        Err(_) => None,
    };
    match prepare(schema, request) {
        Ok(request) => {
            let response = schema.execute(request).await;
            metrics::report(&document.query, operation.as_deref(), &response);
            finish(schema, document, response).await
        }
        Err(error) => Response::from_errors(vec![error]),
    }
}

/// Runs a batch, one request after the other, each as [`execute`] does.
pub async fn execute_batch(schema: &AppSchema, batch: BatchRequest) -> BatchResponse {
    match batch {
        BatchRequest::Single(request) => BatchResponse::Single(execute(schema, request).await),
        BatchRequest::Batch(requests) => {
            let mut responses = Vec::with_capacity(requests.len());
            for request in requests {
                responses.push(execute(schema, request).await);
            }
            BatchResponse::Batch(responses)
        }
    }
}

/// Runs a subscription (or any operation, as the WebSocket protocols allow), as [`execute`] does.
pub fn execute_stream(schema: &AppSchema, request: Request) -> BoxStream<'static, Response> {
    let document = limits::Document {
        query: request.query.clone(),
        operation_name: request.operation_name.clone(),
        variables: request.variables.clone(),
    };
    match prepare(schema, request) {
        Ok(request) => {
            let finishing = schema.clone();
            let mut document = Some(document);
            schema
                .execute_stream(request)
                .then(move |response| {
                    // A limit fails the first (and only) response; later ones have nothing to measure.
                    let document = document
                        .take()
                        .filter(|_| limits::failed_a_limit(&response));
                    let schema = finishing.clone();
                    async move {
                        match document {
                            Some(document) => finish(&schema, document, response).await,
                            None => error::code_input_errors(response),
                        }
                    }
                })
                .boxed()
        }
        Err(error) => {
            futures::stream::once(async move { Response::from_errors(vec![error]) }).boxed()
        }
    }
}

/// Parses the document (kept in the request for the executor), checks the limits a parsed
/// document shows, and adds the request's DataLoader.
fn prepare(schema: &AppSchema, mut request: Request) -> Result<Request, ServerError> {
    let settings = schema
        .data::<Settings>()
        .expect("graphql::builder puts the settings in the schema");
    limits::check_document(&settings.limits, request.parsed_query()?)?;
    let store = schema
        .data::<Store>()
        .expect("graphql::builder puts the store in the schema")
        .clone();
    // The short delay lets siblings outside a prefetched page (e.g. a list of locations)
    // enqueue their keys together; pages themselves are prefetched in whole batches. Its cache
    // lives as long as the request, so a request sees one consistent view and nothing outlives it.
    let loader = DataLoader::with_cache(
        CacheLoader::new(store),
        // Loads run in tasks of their own; they keep the request's span (its request id).
        |load| tokio::spawn(tracing::Instrument::in_current_span(load)),
        HashMapCache::default(),
    )
    .delay(Duration::from_millis(1))
    .max_batch_size(10_000);
    Ok(request.data(loader))
}

/// Gives the executor's own errors the codes the API promises: depth and complexity limits
/// (measured again to give the figures), and values that failed to coerce.
async fn finish(schema: &AppSchema, document: limits::Document, response: Response) -> Response {
    let response = schema
        .data::<limits::Measure>()
        .expect("graphql::builder puts the measure in the schema")
        .code_errors(document, response)
        .await;
    error::code_input_errors(response)
}

/// The SDL of the schema, as committed in `schema.graphql`.
pub fn sdl() -> String {
    Schema::build(query::Query, mutation::Mutation, subscription::Subscription)
        .finish()
        .sdl()
}
