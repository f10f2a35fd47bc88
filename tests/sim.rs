//! Integration tests of the GHL simulator: contract (OpenAPI schemas), paging in every cursor
//! style, rate limits, auth, faults, the admin API and webhooks.

#[path = "sim/behaviour.rs"]
mod behaviour;
#[path = "sim/contract.rs"]
mod contract;
#[path = "sim/helpers.rs"]
mod helpers;
#[path = "sim/paging.rs"]
mod paging;
