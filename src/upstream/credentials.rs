//! Credentials of a location: what kind, how to get a usable access token, when to renew it, and
//! the [`CredentialStore`] the client keeps them in.
//!
//! Owns the credential as the client sees it (plain tokens in [`Secret`]s) and the persistence
//! contract; knows nothing of where or how a store keeps them (rows, encryption at rest: the app's
//! business). Tokens are secrets: `Debug` prints `[REDACTED]`, and no log line carries one.

use std::collections::HashMap;
use std::sync::Mutex;

use futures::future::BoxFuture;

use crate::config::Secret;

/// How the gateway reaches one location.
#[derive(Clone, Debug)]
pub enum Credential {
    /// A sub-account Private Integration Token: no expiry, no refresh.
    PrivateIntegration { token: Secret },
    /// A location installed through the marketplace app's OAuth flow. The refresh token rotates:
    /// each refresh returns a new one and spends the old.
    OAuth {
        access_token: Secret,
        refresh_token: Secret,
        /// Milliseconds since the epoch.
        expires_at: Option<i64>,
    },
    /// An agency (company) token that mints location tokens through `/oauth/locationToken`.
    Agency {
        agency_token: Secret,
        company_id: String,
        location_token: Option<Secret>,
        expires_at: Option<i64>,
    },
}

impl Credential {
    /// The token to send now, if there is one.
    pub fn access_token(&self) -> Option<&Secret> {
        match self {
            Credential::PrivateIntegration { token } => Some(token),
            Credential::OAuth { access_token, .. } => Some(access_token),
            Credential::Agency { location_token, .. } => location_token.as_ref(),
        }
    }

    /// Whether the access token expires within `margin_ms` of `now_ms` (or is missing).
    pub fn needs_renewal(&self, now_ms: i64, margin_ms: i64) -> bool {
        match self {
            Credential::PrivateIntegration { .. } => false,
            Credential::OAuth { expires_at, .. } => {
                expires_at.is_some_and(|e| e - margin_ms <= now_ms)
            }
            Credential::Agency {
                location_token,
                expires_at,
                ..
            } => location_token.is_none() || expires_at.is_some_and(|e| e - margin_ms <= now_ms),
        }
    }
}

/// Why a [`CredentialStore`] could not load or save; the message never holds a token.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{0}")]
pub struct CredentialStoreError(pub String);

/// Where the client keeps the credential of each location: loaded on a location's first call,
/// saved on every change (a renewal is saved before its token is used, so the stored refresh
/// token is always the live one).
///
/// Object-safe (boxed futures), so a [`Client`](super::Client) holds an `Arc<dyn CredentialStore>`.
pub trait CredentialStore: Send + Sync {
    /// The stored credential of a location; `None` when it has none (or none usable).
    fn load<'a>(
        &'a self,
        location_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<Credential>, CredentialStoreError>>;

    /// Stores (inserts or replaces) the credential of a location.
    fn save<'a>(
        &'a self,
        location_id: &'a str,
        credential: &'a Credential,
    ) -> BoxFuture<'a, Result<(), CredentialStoreError>>;

    /// Waits for, then takes, the right to renew `location_id`'s credential, held until the
    /// guard drops: where several processes share the credentials (replicas on one database),
    /// the client renews only under it and reads the credential again first, so that a rotating
    /// OAuth refresh token is spent once. The default guards nothing (one process).
    fn lock_renewal<'a>(
        &'a self,
        location_id: &'a str,
    ) -> BoxFuture<'a, Result<RenewalGuard, CredentialStoreError>> {
        let _ = location_id;
        Box::pin(async { Ok(Box::new(()) as RenewalGuard) })
    }
}

/// What [`CredentialStore::lock_renewal`] returns: the lock is held until it drops.
pub type RenewalGuard = Box<dyn Send>;

/// A [`CredentialStore`] in memory, for tests and for embedding the client without a database.
/// Credentials live as long as the value.
#[derive(Debug, Default)]
pub struct MemoryCredentials {
    credentials: Mutex<HashMap<String, Credential>>,
}

impl MemoryCredentials {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Credential>> {
        // The map is only ever replaced entry by entry: a panic elsewhere leaves it consistent.
        self.credentials.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl CredentialStore for MemoryCredentials {
    fn load<'a>(
        &'a self,
        location_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<Credential>, CredentialStoreError>> {
        let credential = self.map().get(location_id).cloned();
        Box::pin(async move { Ok(credential) })
    }

    fn save<'a>(
        &'a self,
        location_id: &'a str,
        credential: &'a Credential,
    ) -> BoxFuture<'a, Result<(), CredentialStoreError>> {
        self.map()
            .insert(location_id.to_owned(), credential.clone());
        Box::pin(async { Ok(()) })
    }
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret as _;

    use super::*;

    fn every_kind() -> [Credential; 3] {
        [
            Credential::PrivateIntegration {
                token: "pit-123".into(),
            },
            Credential::OAuth {
                access_token: "at-123".into(),
                refresh_token: "rt-456".into(),
                expires_at: Some(1),
            },
            Credential::Agency {
                agency_token: "ag-789".into(),
                company_id: "co".into(),
                location_token: Some("lt-012".into()),
                expires_at: Some(1),
            },
        ]
    }

    #[test]
    fn secrets_never_print() {
        for c in every_kind() {
            let printed = format!("{c:?}");
            for token in ["pit-123", "at-123", "rt-456", "ag-789", "lt-012"] {
                assert!(!printed.contains(token), "{printed}");
            }
            assert!(printed.contains("REDACTED"), "{printed}");
        }
    }

    #[test]
    fn renewal_is_due_before_expiry() {
        let c = Credential::OAuth {
            access_token: "a".into(),
            refresh_token: "r".into(),
            expires_at: Some(10_000),
        };
        assert!(!c.needs_renewal(0, 5_000));
        assert!(c.needs_renewal(5_000, 5_000));
        assert!(!Credential::PrivateIntegration { token: "p".into() }.needs_renewal(i64::MAX, 0));
        let agency = Credential::Agency {
            agency_token: "ag".into(),
            company_id: "co".into(),
            location_token: None,
            expires_at: None,
        };
        assert!(agency.needs_renewal(0, 0), "no location token yet");
        assert!(agency.access_token().is_none());
    }

    #[tokio::test]
    async fn the_memory_store_keeps_the_last_save() {
        let store = MemoryCredentials::new();
        assert!(store.load("loc").await.unwrap().is_none());
        for c in every_kind() {
            store.save("loc", &c).await.unwrap();
            let loaded = store.load("loc").await.unwrap().expect("saved");
            assert_eq!(
                loaded.access_token().map(|s| s.expose_secret().to_owned()),
                c.access_token().map(|s| s.expose_secret().to_owned())
            );
        }
        assert!(store.load("other").await.unwrap().is_none());
    }
}
