//! Integration tests of the gateway: one binary, shared helpers.

mod background;
mod cache;
mod connect;
mod cooldown;
mod demo;
mod figures;
mod guards;
mod helpers;
mod http;
mod input_errors;
mod layering;
mod limiter;
mod metrics;
mod promises;
mod readme;
mod reads;
mod request_id;
mod schema_file;
mod search;
mod security;
mod store;
mod subscription;
mod sync;
mod upstream;
mod webhooks;
mod ws_protocol;
