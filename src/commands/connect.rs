//! `ghl-gateway connect`: stores a location's GHL credentials (private integration token, OAuth
//! code, or agency token), encrypted at rest, once one cheap call proved them. A credential GHL
//! refuses is not stored, and the command fails.

use std::sync::Arc;

use anyhow::{Context as _, bail};
use secrecy::ExposeSecret as _;

use crate::config;
use crate::secrets::SecretsConfig;
use crate::store::{DatabaseConfig, Store};
use crate::upstream::{Credential, CredentialStore as _, MemoryCredentials};

/// `ghl-gateway connect`: one of `--private-token`, `--oauth-code` or `--agency-token`.
#[derive(Clone, Debug, clap::Args)]
pub struct ConnectCommand {
    /// The location (required with a private integration token or an agency token).
    #[arg(long, env = "CONNECT_LOCATION")]
    pub location: Option<String>,
    /// The location's private integration token (GHL: Settings > Private Integrations).
    #[arg(long, env = "GHL_PRIVATE_TOKEN", hide_env_values = true, value_parser = config::secret)]
    pub private_token: Option<config::Secret>,
    /// An OAuth authorization code from the marketplace app's redirect (needs GHL_CLIENT_ID and
    /// GHL_CLIENT_SECRET); the location comes from GHL's answer.
    #[arg(long, env = "GHL_OAUTH_CODE", hide_env_values = true, value_parser = config::secret)]
    pub oauth_code: Option<config::Secret>,
    /// An agency (company) token that mints location tokens through /oauth/locationToken.
    #[arg(long, env = "GHL_AGENCY_TOKEN", hide_env_values = true, value_parser = config::secret)]
    pub agency_token: Option<config::Secret>,
    /// The agency's company id (with --agency-token).
    #[arg(long, env = "GHL_COMPANY_ID")]
    pub company_id: Option<String>,
    #[command(flatten)]
    pub database: DatabaseConfig,
    #[command(flatten)]
    pub upstream: crate::upstream::UpstreamConfig,
    #[command(flatten)]
    pub secrets: SecretsConfig,
}

/// `ghl-gateway connect`. Fails (a non-zero exit) and stores nothing when GHL refuses the
/// credential: it is tried first on a client whose credentials live in memory, and written to the
/// database (encrypted) only once a call with it succeeded.
pub async fn run(command: ConnectCommand) -> anyhow::Result<()> {
    // The database and the secrets key are checked before an OAuth code is spent.
    let store = Store::open(&command.database).await?;
    let client = super::ghl_client(&store, &command.upstream, &command.secrets)?;
    let outcome = try_connect(&command, &client, &store).await;
    store.close().await;
    outcome
}

async fn try_connect(
    command: &ConnectCommand,
    client: &crate::upstream::Client,
    store: &Store,
) -> anyhow::Result<()> {
    let trial_credentials = Arc::new(MemoryCredentials::new());
    let trial = crate::upstream::Client::new(command.upstream.clone(), trial_credentials.clone())?;
    let location = match (
        &command.private_token,
        &command.oauth_code,
        &command.agency_token,
    ) {
        (Some(token), None, None) => {
            let location = command
                .location
                .clone()
                .context("--location is required with --private-token")?;
            trial
                .set_credential(
                    &location,
                    Credential::PrivateIntegration {
                        token: token.clone(),
                    },
                )
                .await?;
            location
        }
        (None, Some(code), None) => trial.install_with_code(code.expose_secret()).await?,
        (None, None, Some(token)) => {
            let location = command
                .location
                .clone()
                .context("--location is required with --agency-token")?;
            let company_id = command
                .company_id
                .clone()
                .context("--company-id is required with --agency-token")?;
            trial
                .set_credential(
                    &location,
                    Credential::Agency {
                        agency_token: token.clone(),
                        company_id,
                        location_token: None,
                        expires_at: None,
                    },
                )
                .await?;
            location
        }
        _ => bail!("give exactly one of --private-token, --oauth-code or --agency-token"),
    };
    // One cheap call proves the credential works; a refused one is not stored.
    let details = trial.location(&location).await.with_context(|| {
        format!("GHL refused the credential of location {location}; nothing was stored")
    })?;
    // The credential as the call left it (an OAuth or agency token may have been minted).
    let credential = trial_credentials
        .load(&location)
        .await?
        .context("the tried credential is still in memory")?;
    client.set_credential(&location, credential).await?;
    store
        .upsert_location(&details, chrono::Utc::now().timestamp_millis())
        .await?;
    // A reconnect ends the cooldown of failed syncs: the next read or refresh syncs at once.
    store.reset_failures(&location).await?;
    println!(
        "location:   {location} ({})",
        details.name.unwrap_or_default()
    );
    println!(
        "connected:  the credential works; `ghl-gateway sync --location {location} --full` fills the cache"
    );
    Ok(())
}
