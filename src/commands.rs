//! The commands of the `ghl-gateway` binary, one module each, each with its own arguments
//! struct (clap) and a `run` function. They sit on top of everything else ([`crate::app`],
//! [`crate::store`], [`crate::sync`], [`crate::sim`], [`crate::bench`]); nothing below imports
//! them, and the command line (`cli.rs`) gathers their arguments.

pub mod bench;
pub mod connect;
pub mod demo;
pub mod keys;
pub mod migrate;
pub mod schema;
pub mod serve;
pub mod sim;
pub mod sync;

use std::sync::Arc;

use anyhow::Context as _;

use crate::app::credentials::StoreCredentials;
use crate::secrets::{Cipher, SecretsConfig};
use crate::store::Store;
use crate::upstream::{self, UpstreamConfig};

/// The GHL client of the commands that run without the gateway (`sync`, `connect`), its
/// credentials kept in `store` and encrypted with `GATEWAY_SECRET_KEY` when set.
fn ghl_client(
    store: &Store,
    upstream: &UpstreamConfig,
    secrets: &SecretsConfig,
) -> anyhow::Result<upstream::Client> {
    let cipher = Cipher::from_config(secrets).context("GATEWAY_SECRET_KEY is not a usable key")?;
    let credentials = StoreCredentials::new(store.clone(), cipher);
    Ok(upstream::Client::new(
        upstream.clone(),
        Arc::new(credentials),
    )?)
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM: the commands that run until stopped wait on it.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down");
}
