//! Builds the gateway from its config: database, migrations, schema, router, listener.

use std::net::SocketAddr;

use anyhow::Context as _;
use tokio::net::TcpListener;

use crate::config::ServeConfig;
use crate::graphql;
use crate::http;
use crate::store::{DatabaseConfig, Store};
use crate::sync::SyncEngine;
use crate::upstream;

/// The gateway, bound and ready to serve.
pub struct App {
    listener: TcpListener,
    router: axum::Router,
    store: Store,
    sync: SyncEngine,
}

impl App {
    /// Connects to the database, applies migrations and binds the listener (port 0 picks one).
    pub async fn build(config: ServeConfig) -> anyhow::Result<Self> {
        let store = Store::connect(&config.database)
            .await
            .context("cannot open the database (DATABASE_URL)")?;
        store
            .migrate()
            .await
            .context("cannot apply the database migrations")?;
        let client = upstream::Client::new(config.upstream.clone(), store.clone())
            .context("cannot build the GHL client")?;
        let sync = SyncEngine::start(store.clone(), client, config.sync.clone())
            .await
            .context("cannot start the sync engine")?;
        let schema = graphql::build(store.clone(), config.graphql.clone(), Some(sync.clone()));
        let router = http::router(schema, store.clone(), &config.http);
        let listener = TcpListener::bind(&config.http.listen)
            .await
            .with_context(|| format!("cannot listen on {} (LISTEN_ADDR)", config.http.listen))?;
        Ok(Self {
            listener,
            router,
            store,
            sync,
        })
    }

    /// The sync engine (to start syncs from the command line or tests).
    pub fn sync(&self) -> &SyncEngine {
        &self.sync
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    pub fn port(&self) -> u16 {
        self.local_addr().port()
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Prints what the gateway serves, one labelled line each.
    pub fn print_banner(&self) {
        let base = format!("http://{}", self.local_addr());
        println!("graphql:  {base}/graphql");
        println!("graphql-ws: ws://{}/graphql/ws", self.local_addr());
        println!("graphiql: {base}/graphiql");
        println!("health:   {base}/healthz {base}/readyz");
    }

    /// Serves until `shutdown` completes, then finishes the requests in flight.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        tracing::info!(address = %self.local_addr(), "listening");
        axum::serve(self.listener, self.router)
            .with_graceful_shutdown(shutdown)
            .await
            .context("the HTTP server failed")?;
        // Running syncs stop at their next page; their checkpoints let the next run resume.
        self.sync.shutdown().await;
        self.store.close().await;
        tracing::info!("stopped");
        Ok(())
    }
}

/// Applies the migrations and exits (`ghl-gateway migrate`).
pub async fn migrate(config: &DatabaseConfig) -> anyhow::Result<()> {
    let store = Store::connect(config)
        .await
        .context("cannot open the database (DATABASE_URL)")?;
    store
        .migrate()
        .await
        .context("cannot apply the database migrations")?;
    tracing::info!("migrations applied");
    store.close().await;
    Ok(())
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
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
