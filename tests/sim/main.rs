//! Integration tests of the GHL simulator: one binary, shared helpers. Contract (OpenAPI schemas),
//! paging in every cursor style, rate limits, auth, faults, the admin API and webhooks (as GHL
//! sends them, with the delivery knobs).

mod behaviour;
mod contract;
mod helpers;
mod lag;
mod paging;
mod webhooks;
