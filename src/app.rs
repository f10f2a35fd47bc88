//! Builds the gateway from its config: database, migrations, schema, router, listener.

pub mod credentials;

use std::net::SocketAddr;

use anyhow::Context as _;
use tokio::net::TcpListener;

use crate::auth;
use crate::cli::{KeysCommand, ServeConfig};
use crate::graphql;
use crate::http;
use crate::secrets::Cipher;
use crate::store::{DatabaseConfig, Store};
use crate::sync::SyncEngine;
use crate::upstream;

/// The gateway, bound and ready to serve.
pub struct App {
    listener: TcpListener,
    router: axum::Router,
    store: Store,
    sync: SyncEngine,
    cipher: Option<Cipher>,
    allow_anonymous: bool,
}

impl App {
    /// Connects to the database, applies migrations and binds the listener (port 0 picks one).
    pub async fn build(config: ServeConfig) -> anyhow::Result<Self> {
        config
            .http
            .auth
            .validate()
            .map_err(|message| anyhow::anyhow!(message))?;
        let cipher = Cipher::from_config(&config.secrets)?;
        let store = Store::connect(&config.database)
            .await
            .context("cannot open the database (DATABASE_URL)")?;
        store
            .migrate()
            .await
            .context("cannot apply the database migrations")?;
        if cipher.is_none()
            && store
                .has_stored_tokens()
                .await
                .context("cannot read the stored credentials")?
        {
            anyhow::bail!(
                "refusing to start: the database holds GHL tokens, which are encrypted at rest, \
                 and GATEWAY_SECRET_KEY is not set; start with the key they were stored with"
            );
        }
        if config.http.auth.allow_anonymous {
            tracing::warn!(
                "anonymous requests are allowed (--allow-anonymous): every location is readable without a key"
            );
        }
        let credentials = credentials::StoreCredentials::new(store.clone(), cipher.clone());
        let client =
            upstream::Client::new(config.upstream.clone(), std::sync::Arc::new(credentials))
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
            cipher,
            allow_anonymous: config.http.auth.allow_anonymous,
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

    /// The cipher of GHL tokens at rest, when `GATEWAY_SECRET_KEY` is set.
    pub fn cipher(&self) -> Option<&Cipher> {
        self.cipher.as_ref()
    }

    /// Prints what the gateway serves, one labelled line each.
    pub fn print_banner(&self) {
        let base = format!("http://{}", self.local_addr());
        println!("graphql:  {base}/graphql");
        println!("graphql-ws: ws://{}/graphql/ws", self.local_addr());
        println!("graphiql: {base}/graphiql");
        println!("health:   {base}/healthz {base}/readyz");
        if self.allow_anonymous {
            println!("auth:     none required (--allow-anonymous)");
        } else {
            println!(
                "auth:     Authorization: Bearer <key> (ghl-gateway keys create --location ID)"
            );
        }
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

/// `ghl-gateway keys create | list | revoke`.
pub async fn keys(command: KeysCommand) -> anyhow::Result<()> {
    let database = match &command {
        KeysCommand::Create(c) => &c.database,
        KeysCommand::List(c) => &c.database,
        KeysCommand::Revoke(c) => &c.database,
    };
    let store = Store::connect(database)
        .await
        .context("cannot open the database (DATABASE_URL)")?;
    store
        .migrate()
        .await
        .context("cannot apply the database migrations")?;
    let now = chrono::Utc::now().timestamp_millis();
    let result = match command {
        KeysCommand::Create(create) => {
            let new = auth::generate_key(create.name, &create.locations, now);
            let id = new.row.id.clone();
            let locations = new.row.locations().join(", ");
            store
                .insert_api_key(new.row)
                .await
                .context("cannot store the key")?;
            println!("key id:    {id}");
            println!("locations: {locations}");
            println!("key:       {}", new.key);
            println!("(the key is shown only now: store it; the gateway keeps only its hash)");
            Ok(())
        }
        KeysCommand::List(_) => {
            let keys = store.api_keys().await.context("cannot list the keys")?;
            let time = |ms: Option<i64>| {
                ms.map_or("-".to_owned(), |ms| {
                    crate::domain::from_ms(ms)
                        .format("%Y-%m-%d %H:%M")
                        .to_string()
                })
            };
            println!(
                "{:<22} {:<16} {:<17} {:<17} {:<8} locations",
                "id", "name", "created", "last used", "state"
            );
            for key in &keys {
                println!(
                    "{:<22} {:<16} {:<17} {:<17} {:<8} {}",
                    key.id,
                    key.name.as_deref().unwrap_or("-"),
                    time(Some(key.created_at)),
                    time(key.last_used_at),
                    if key.revoked_at.is_some() {
                        "revoked"
                    } else {
                        "active"
                    },
                    key.locations().join(",")
                );
            }
            Ok(())
        }
        KeysCommand::Revoke(revoke) => {
            if store
                .revoke_api_key(&revoke.id, now)
                .await
                .context("cannot revoke the key")?
            {
                println!("revoked:   {}", revoke.id);
                Ok(())
            } else {
                Err(anyhow::anyhow!("no active key with id {:?}", revoke.id))
            }
        }
    };
    store.close().await;
    result
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
