//! GHL's routes as the simulator serves them: the paths, methods, query and body keys, status codes
//! and shapes of FACTS.md §2-§8 (quirks included), behind a layer that adds latency, rolls faults
//! and counts requests by endpoint and status. Map of the module:
//!
//! - `layer`: the latency/fault/counting middleware and GHL's error responses
//! - `gate`: `Version` header, bearer token, rate limit; the [`gate::Ctx`] of a request that passed
//! - `params`: parsers of query and body parameters, with GHL's validation answers
//! - `paging`: the one search window (page size, `page`/`skip`, `searchAfter`) and legacy cursors
//! - `search`: filters, free text and sort of the two filter searches (contacts, opportunities)
//! - `contacts`, `tasks`, `conversations`, `opportunities`: the record routes
//! - `directory`: users, pipelines, custom fields and the location
//! - `oauth`: tokens, location tokens and installed locations
//!
//! The endpoint names live in `sim::endpoints`; the admin API (`/_sim/`) is not here.

mod contacts;
mod conversations;
mod directory;
mod gate;
mod layer;
mod oauth;
mod opportunities;
mod paging;
mod params;
mod search;
mod tasks;

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Query, State};
use axum::response::Response;
use axum::routing::{get, post};

use super::Shared;

/// The state every route reads.
type S = State<Arc<Shared>>;
/// A route's answer: `Err` is an answer too (GHL's error shape), built once per failed request.
type Res = Result<Response, Response>;
/// A route's query string, as pairs.
type Q = Query<HashMap<String, String>>;

/// GHL's routes, behind the fault/latency/counting layer; anything else is GHL's 404.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/contacts/search", post(contacts::contacts_search))
        .route("/contacts/", get(contacts::contacts_list))
        .route("/contacts", get(contacts::contacts_list))
        .route("/contacts/{contact_id}", get(contacts::contact_get))
        .route("/contacts/{contact_id}/tasks", get(contacts::contact_tasks))
        .route(
            "/locations/{location_id}/tasks/search",
            post(tasks::tasks_search),
        )
        .route(
            "/conversations/search",
            get(conversations::conversations_search),
        )
        .route(
            "/opportunities/search",
            post(opportunities::opportunities_search_post)
                .get(opportunities::opportunities_search_get),
        )
        .route("/opportunities/pipelines", get(directory::pipelines))
        .route("/users/", get(directory::users_list))
        .route("/users", get(directory::users_list))
        .route("/users/search", get(directory::users_search))
        .route(
            "/locations/{location_id}/customFields",
            get(directory::custom_fields),
        )
        .route("/locations/{location_id}", get(directory::location_get))
        .route("/oauth/token", post(oauth::oauth_token))
        .route("/oauth/locationToken", post(oauth::oauth_location_token))
        .route("/oauth/installedLocations", get(oauth::installed_locations))
        .route_layer(axum::middleware::from_fn_with_state(
            shared.clone(),
            layer::ghl_layer,
        ))
        .fallback(layer::not_found)
        .method_not_allowed_fallback(layer::not_found)
        .with_state(shared)
}
