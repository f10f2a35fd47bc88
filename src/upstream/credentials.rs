//! Credentials of a location: what kind, how to get a usable access token, how to renew it.
//!
//! Tokens are secrets: [`Secret`] never prints its value, and no log line carries one.

use std::fmt;

use crate::store::entities::credential;

/// A token; `Debug` and `Display` print `[redacted]`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The token itself, for the `Authorization` header and the database only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// How the gateway reaches one location.
#[derive(Clone, Debug, PartialEq)]
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

pub const KIND_PRIVATE_INTEGRATION: &str = "private_integration";
pub const KIND_OAUTH: &str = "oauth";
pub const KIND_AGENCY: &str = "agency";

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

    /// The stored row. For an agency credential the agency token is kept in `refresh_token`
    /// (it is what renews the location token) and the minted location token in `access_token`.
    pub fn to_row(&self, location_id: &str) -> credential::Model {
        let (kind, access, refresh, expires_at, company_id) = match self {
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
            access_token: access.map(|s| s.expose().to_owned()),
            refresh_token: refresh.map(|s| s.expose().to_owned()),
            expires_at,
            company_id,
            updated_at: 0,
        }
    }

    /// Reads a stored row; `None` for a row that lacks what its kind needs.
    pub fn from_row(row: &credential::Model) -> Option<Self> {
        let secret = |s: &Option<String>| s.clone().filter(|s| !s.is_empty()).map(Secret);
        match row.kind.as_str() {
            KIND_PRIVATE_INTEGRATION => Some(Credential::PrivateIntegration {
                token: secret(&row.access_token)?,
            }),
            KIND_OAUTH => Some(Credential::OAuth {
                access_token: secret(&row.access_token).unwrap_or_else(|| Secret::new("")),
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let c = Credential::OAuth {
            access_token: Secret::new("at-123"),
            refresh_token: Secret::new("rt-456"),
            expires_at: Some(1),
        };
        let printed = format!("{c:?} {}", Secret::new("x-789"));
        assert!(
            !printed.contains("at-123")
                && !printed.contains("rt-456")
                && !printed.contains("x-789")
        );
        let row = c.to_row("loc");
        assert!(
            !format!("{row:?}").contains("rt-456"),
            "the stored row redacts too"
        );
    }

    #[test]
    fn rows_round_trip() {
        for c in [
            Credential::PrivateIntegration {
                token: Secret::new("pit"),
            },
            Credential::OAuth {
                access_token: Secret::new("a"),
                refresh_token: Secret::new("r"),
                expires_at: Some(5),
            },
            Credential::Agency {
                agency_token: Secret::new("ag"),
                company_id: "co".into(),
                location_token: None,
                expires_at: None,
            },
        ] {
            assert_eq!(Credential::from_row(&c.to_row("loc")), Some(c));
        }
    }

    #[test]
    fn renewal_is_due_before_expiry() {
        let c = Credential::OAuth {
            access_token: Secret::new("a"),
            refresh_token: Secret::new("r"),
            expires_at: Some(10_000),
        };
        assert!(!c.needs_renewal(0, 5_000));
        assert!(c.needs_renewal(5_000, 5_000));
        assert!(
            !Credential::PrivateIntegration {
                token: Secret::new("p")
            }
            .needs_renewal(i64::MAX, 0)
        );
    }
}
