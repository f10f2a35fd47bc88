//! Builds the gateway from its settings: database, migrations, GHL client, sync engine, schema,
//! router, listener. The commands (`serve`, `demo`, `bench`) and the tests start it from here;
//! it knows nothing of the command line.

pub mod credentials;
pub mod lifecycle;

use std::net::SocketAddr;

use anyhow::Context as _;
use axum::serve::ListenerExt;
use tokio::net::TcpListener;

use crate::cache::{CacheConfig, ResponseCache};
use crate::graphql;
use crate::http::{self, HttpConfig};
use crate::secrets::{Cipher, SecretsConfig};
use crate::store::{DatabaseConfig, Store};
use crate::sync::{SyncConfig, SyncEngine};
use crate::upstream::{self, UpstreamConfig};

/// Settings of the gateway (`ghl-gateway serve`, and the gateway half of `demo`): one settings
/// struct per module, flattened into one command line.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct ServeConfig {
    #[command(flatten)]
    pub http: HttpConfig,
    #[command(flatten)]
    pub database: DatabaseConfig,
    #[command(flatten)]
    pub graphql: graphql::Settings,
    #[command(flatten)]
    pub upstream: UpstreamConfig,
    #[command(flatten)]
    pub sync: SyncConfig,
    #[command(flatten)]
    pub secrets: SecretsConfig,
    #[command(flatten)]
    pub cache: CacheConfig,
}

/// The gateway, bound and ready to serve.
pub struct App {
    listener: TcpListener,
    router: axum::Router,
    /// `/metrics` on a listener of its own (`--metrics-listen`), when set.
    metrics: Option<(TcpListener, axum::Router)>,
    store: Store,
    sync: SyncEngine,
    cache: Option<ResponseCache>,
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
        let store = Store::open(&config.database).await?;
        // SQLite is single-process: a second `serve` on the same file stops here.
        store.claim_single_process()?;
        // PostgreSQL: this gateway is one of the replicas (one sync per location among them,
        // their events and cache invalidations shared).
        store
            .start_cluster(config.database.database_direct_url.as_deref())
            .await
            .context("cannot join the other gateways on PostgreSQL (replica mode)")?;
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
        let schema = graphql::build(store.clone(), config.graphql.clone(), Some(sync.handle()));
        let cache = ResponseCache::new(&config.cache, store.versions().clone());
        let webhooks = crate::webhooks::Receiver::new(store.clone(), &config.http.webhooks)
            .context("cannot read the webhook keys")?;
        webhooks.set_lifecycle(std::sync::Arc::new(lifecycle::SyncLifecycle {
            sync: sync.clone(),
            store: store.clone(),
            credentials: credentials::StoreCredentials::new(store.clone(), cipher.clone()),
        }));
        let router = http::router(schema, store.clone(), cache.clone(), webhooks, &config.http);
        let listener = TcpListener::bind(&config.http.listen)
            .await
            .with_context(|| format!("cannot listen on {} (LISTEN_ADDR)", config.http.listen))?;
        let metrics = match &config.http.metrics_listen {
            Some(address) => {
                let listener = TcpListener::bind(address)
                    .await
                    .with_context(|| format!("cannot listen on {address} (METRICS_LISTEN)"))?;
                Some((listener, http::metrics_router(store.clone(), cache.clone())))
            }
            None => None,
        };
        Ok(Self {
            listener,
            router,
            metrics,
            store,
            sync,
            cache,
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

    /// Where `/metrics` is served when it has a listener of its own (`--metrics-listen`).
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics
            .as_ref()
            .map(|(l, _)| l.local_addr().expect("a bound listener has an address"))
    }

    /// The response cache, when it is on (`RESPONSE_CACHE_MB` > 0).
    pub fn cache(&self) -> Option<&ResponseCache> {
        self.cache.as_ref()
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
        println!("webhooks: {base}/webhooks/ghl");
        match self.metrics_addr() {
            Some(address) => println!("metrics:  http://{address}/metrics"),
            None => println!("metrics:  {base}/metrics"),
        }
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
        // One shutdown signal for both listeners.
        let stop = tokio_util::sync::CancellationToken::new();
        let metrics = self.metrics.map(|(listener, router)| {
            tracing::info!(address = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), "serving /metrics");
            tokio::spawn(
                axum::serve(listener, router)
                    .with_graceful_shutdown(stop.clone().cancelled_owned())
                    .into_future(),
            )
        });
        let stopping = stop.clone();
        // TCP_NODELAY on every accepted socket: a response or a burst of subscription frames
        // leaves at once, instead of its last segment waiting (Nagle, RFC 896) for the peer's
        // delayed ACK of the previous one (up to 40 ms on Linux).
        let listener = self.listener.tap_io(|socket| {
            if let Err(error) = socket.set_nodelay(true) {
                tracing::debug!(%error, "could not set TCP_NODELAY on an accepted socket");
            }
        });
        let served = axum::serve(listener, self.router)
            .with_graceful_shutdown(async move {
                shutdown.await;
                stopping.cancel();
            })
            .await;
        stop.cancel();
        if let Some(metrics) = metrics {
            let _ = metrics.await;
        }
        served.context("the HTTP server failed")?;
        // Running syncs stop at once (GHL calls dropped); their checkpoints let the next run resume.
        self.sync.shutdown().await;
        self.store.close().await;
        tracing::info!("stopped");
        Ok(())
    }
}
