//! What GHL's `INSTALL` and `UNINSTALL` webhooks do beyond the cache ([`crate::webhooks::Lifecycle`]):
//! an uninstall stops the location's running sync; an install of a location the gateway holds no
//! credential for connects it with an agency credential of the same company, and starts its
//! first sync. Lives in `app` because it joins the sync engine and the credentials, which
//! `webhooks` may not call.

use futures::future::BoxFuture;

use crate::domain::SyncMode;
use crate::store::Store;
use crate::sync::SyncEngine;
use crate::upstream::{Credential, CredentialStore as _};

use super::credentials::StoreCredentials;

/// The gateway's [`crate::webhooks::Lifecycle`].
pub struct SyncLifecycle {
    pub sync: SyncEngine,
    pub store: Store,
    pub credentials: StoreCredentials,
}

impl crate::webhooks::Lifecycle for SyncLifecycle {
    fn uninstalled(&self, location_id: &str) {
        if self.sync.stop(
            location_id,
            "stopped: the app was uninstalled from the location",
        ) {
            tracing::info!(location_id, "sync stopped: the app was uninstalled");
        }
    }

    fn installed<'a>(
        &'a self,
        location_id: &'a str,
        company_id: Option<&'a str>,
    ) -> BoxFuture<'a, anyhow::Result<bool>> {
        Box::pin(async move {
            let Some(company_id) = company_id else {
                return Ok(false);
            };
            if self.store.credential(location_id).await?.is_some() {
                return Ok(false);
            }
            let Some(source) = self.store.agency_credential_of(company_id).await? else {
                return Ok(false);
            };
            let Some(Credential::Agency { agency_token, .. }) =
                self.credentials.load(&source).await?
            else {
                return Ok(false);
            };
            // The location token is minted on the first call (POST /oauth/locationToken).
            let credential = Credential::Agency {
                agency_token,
                company_id: company_id.to_owned(),
                location_token: None,
                expires_at: None,
            };
            self.sync
                .client()
                .set_credential(location_id, credential)
                .await?;
            tracing::info!(
                location_id,
                "location connected on install: an agency credential of its company"
            );
            self.sync.refresh(location_id, SyncMode::Full).await?;
            Ok(true)
        })
    }
}
