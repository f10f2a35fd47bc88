//! The gateway's [`CredentialStore`]: GHL credentials in the store's `credentials` table, their
//! tokens encrypted at rest with the [`Cipher`] when `GATEWAY_SECRET_KEY` is set.
//!
//! Owns the mapping between a [`Credential`] and its row, and the cipher around the tokens. Must
//! not log a token or put one in an error message; the start-up refusal to run without the key
//! while tokens are stored stays in [`App::build`](super::App::build).

use futures::future::BoxFuture;
use secrecy::ExposeSecret as _;

use crate::config::Secret;
use crate::secrets::Cipher;
use crate::store::Store;
use crate::store::entities::credential;
use crate::upstream::{Credential, CredentialStore, CredentialStoreError, RenewalGuard};

const KIND_PRIVATE_INTEGRATION: &str = "private_integration";
const KIND_OAUTH: &str = "oauth";
const KIND_AGENCY: &str = "agency";

/// Credentials kept in the database, tokens encrypted when a cipher is given. Cheap to clone.
#[derive(Clone)]
pub struct StoreCredentials {
    store: Store,
    /// Encrypts tokens at rest when `GATEWAY_SECRET_KEY` is set.
    cipher: Option<Cipher>,
}

impl StoreCredentials {
    /// Credentials in `store`, their tokens encrypted with `cipher` when there is one.
    pub fn new(store: Store, cipher: Option<Cipher>) -> Self {
        Self { store, cipher }
    }

    /// Writes a credential to the database, its tokens encrypted when a cipher is configured.
    async fn save_row(
        &self,
        location_id: &str,
        credential: &Credential,
    ) -> Result<(), CredentialStoreError> {
        let mut row = to_row(location_id, credential);
        if let Some(cipher) = &self.cipher {
            for token in [&mut row.access_token, &mut row.refresh_token]
                .into_iter()
                .flatten()
            {
                *token = cipher
                    .encrypt(token)
                    .map_err(|e| CredentialStoreError(format!("cannot encrypt a token: {e}")))?;
            }
        }
        self.store
            .save_credential(row)
            .await
            .map_err(|e| CredentialStoreError(e.to_string()))
    }

    /// Reads a location's credential from the database, decrypting its tokens.
    async fn load_row(
        &self,
        location_id: &str,
    ) -> Result<Option<Credential>, CredentialStoreError> {
        let Some(mut row) = self
            .store
            .credential(location_id)
            .await
            .map_err(|e| CredentialStoreError(e.to_string()))?
        else {
            return Ok(None);
        };
        for token in [&mut row.access_token, &mut row.refresh_token]
            .into_iter()
            .flatten()
        {
            if Cipher::is_encrypted(token) {
                let cipher = self.cipher.as_ref().ok_or_else(|| {
                    CredentialStoreError(
                        "the stored tokens are encrypted and GATEWAY_SECRET_KEY is not set".into(),
                    )
                })?;
                *token = cipher.decrypt(token).map_err(|e| {
                    CredentialStoreError(format!("cannot decrypt the stored token (is GATEWAY_SECRET_KEY the one it was stored with?): {e}"))
                })?;
            }
        }
        Ok(from_row(&row))
    }
}

impl CredentialStore for StoreCredentials {
    fn load<'a>(
        &'a self,
        location_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<Credential>, CredentialStoreError>> {
        Box::pin(self.load_row(location_id))
    }

    fn save<'a>(
        &'a self,
        location_id: &'a str,
        credential: &'a Credential,
    ) -> BoxFuture<'a, Result<(), CredentialStoreError>> {
        Box::pin(self.save_row(location_id, credential))
    }

    fn lock_renewal<'a>(
        &'a self,
        location_id: &'a str,
    ) -> BoxFuture<'a, Result<RenewalGuard, CredentialStoreError>> {
        Box::pin(async move {
            let lock = self
                .store
                .lock_credential_renewal(location_id)
                .await
                .map_err(|e| CredentialStoreError(format!("cannot lock the credential: {e}")))?;
            Ok(Box::new(lock) as RenewalGuard)
        })
    }
}

/// The stored row, tokens in plain text. For an agency credential the agency token is kept in
/// `refresh_token` (it is what renews the location token) and the minted location token in
/// `access_token`.
fn to_row(location_id: &str, credential: &Credential) -> credential::Model {
    let (kind, access, refresh, expires_at, company_id) = match credential {
        Credential::PrivateIntegration { token } => {
            (KIND_PRIVATE_INTEGRATION, Some(token), None, None, None)
        }
        Credential::OAuth {
            access_token,
            refresh_token,
            expires_at,
        } => (
            KIND_OAUTH,
            Some(access_token),
            Some(refresh_token),
            *expires_at,
            None,
        ),
        Credential::Agency {
            agency_token,
            company_id,
            location_token,
            expires_at,
        } => (
            KIND_AGENCY,
            location_token.as_ref(),
            Some(agency_token),
            *expires_at,
            Some(company_id.clone()),
        ),
    };
    credential::Model {
        location_id: location_id.to_owned(),
        kind: kind.to_owned(),
        access_token: access.map(|s| s.expose_secret().to_owned()),
        refresh_token: refresh.map(|s| s.expose_secret().to_owned()),
        expires_at,
        company_id,
        updated_at: 0,
    }
}

/// Reads a stored row (tokens in plain text); `None` for a row that lacks what its kind needs.
fn from_row(row: &credential::Model) -> Option<Credential> {
    let secret = |s: &Option<String>| s.clone().filter(|s| !s.is_empty()).map(Secret::from);
    match row.kind.as_str() {
        KIND_PRIVATE_INTEGRATION => Some(Credential::PrivateIntegration {
            token: secret(&row.access_token)?,
        }),
        KIND_OAUTH => Some(Credential::OAuth {
            access_token: secret(&row.access_token).unwrap_or_else(|| Secret::from("")),
            refresh_token: secret(&row.refresh_token)?,
            expires_at: row.expires_at,
        }),
        KIND_AGENCY => Some(Credential::Agency {
            agency_token: secret(&row.refresh_token)?,
            company_id: row.company_id.clone()?,
            location_token: secret(&row.access_token),
            expires_at: row.expires_at,
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_kind() -> [Credential; 4] {
        [
            Credential::PrivateIntegration {
                token: "pit".into(),
            },
            Credential::OAuth {
                access_token: "a".into(),
                refresh_token: "r".into(),
                expires_at: Some(5),
            },
            Credential::Agency {
                agency_token: "ag".into(),
                company_id: "co".into(),
                location_token: None,
                expires_at: None,
            },
            Credential::Agency {
                agency_token: "ag".into(),
                company_id: "co".into(),
                location_token: Some("lt".into()),
                expires_at: Some(7),
            },
        ]
    }

    #[test]
    fn rows_round_trip() {
        for c in every_kind() {
            let row = to_row("loc", &c);
            let back = from_row(&row).expect("a complete row");
            assert_eq!(to_row("loc", &back), row, "{c:?}");
        }
    }

    #[test]
    fn rows_redact_their_tokens() {
        let row = to_row(
            "loc",
            &Credential::OAuth {
                access_token: "at-123".into(),
                refresh_token: "rt-456".into(),
                expires_at: Some(1),
            },
        );
        let printed = format!("{row:?}");
        assert!(
            !printed.contains("at-123") && !printed.contains("rt-456"),
            "{printed}"
        );
    }

    #[test]
    fn incomplete_rows_are_no_credential() {
        let row = |kind: &str, access: Option<&str>, refresh: Option<&str>| credential::Model {
            location_id: "loc".into(),
            kind: kind.into(),
            access_token: access.map(str::to_owned),
            refresh_token: refresh.map(str::to_owned),
            expires_at: None,
            company_id: None,
            updated_at: 0,
        };
        assert!(from_row(&row(KIND_PRIVATE_INTEGRATION, Some(""), None)).is_none());
        assert!(from_row(&row(KIND_OAUTH, Some("a"), None)).is_none());
        assert!(
            from_row(&row(KIND_AGENCY, None, Some("ag"))).is_none(),
            "no company"
        );
        assert!(from_row(&row("smoke-signals", Some("a"), Some("r"))).is_none());
        let oauth = from_row(&row(KIND_OAUTH, None, Some("r"))).expect("a refresh token is enough");
        assert_eq!(oauth.access_token().map(|s| s.expose_secret()), Some(""));
    }
}
