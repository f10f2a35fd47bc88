//! Token handling: which access token a call sends, and how a location's credential is renewed.
//!
//! Owns loading a location's credential from the [`CredentialStore`](super::CredentialStore) on
//! first use, renewal (OAuth refresh with its rotating refresh token, agency location tokens) made
//! single-flight within the process, persisting every change before it is used, and the OAuth
//! code exchange of an install. Sends nothing but token requests: resource calls are the
//! transport's (`transport.rs`).

use secrecy::ExposeSecret as _;
use serde_json::Value;

use super::transport::error_message;
use super::{Client, Credential, LocationState, Result, UpstreamError, VERSION, lock};
use crate::config::Secret;

/// How long before its expiry an access token is renewed.
const RENEWAL_MARGIN_MS: i64 = 5 * 60 * 1000;

impl Client {
    /// Stores a credential for a location and uses it from the next call on.
    pub async fn set_credential(&self, location_id: &str, credential: Credential) -> Result<()> {
        self.persist(location_id, &credential).await?;
        *self.state(location_id).credential.lock().await = Some(credential);
        Ok(())
    }

    /// Exchanges an OAuth authorization code for a location's tokens and stores them.
    /// Returns the location id the code was for.
    pub async fn install_with_code(&self, code: &str) -> Result<String> {
        let answer = self
            .oauth_token(&[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("user_type", "Location"),
            ])
            .await?;
        let location_id = answer
            .get("locationId")
            .and_then(Value::as_str)
            .ok_or_else(|| UpstreamError::Decode("the token answer has no locationId".into()))?
            .to_owned();
        self.set_credential(&location_id, oauth_credential(&answer)?)
            .await?;
        Ok(location_id)
    }

    /// Saves a credential through the credential store.
    async fn persist(&self, location_id: &str, credential: &Credential) -> Result<()> {
        self.inner
            .credentials
            .save(location_id, credential)
            .await
            .map_err(|e| UpstreamError::Store(e.to_string()))
    }

    /// The credential in use, loaded from the credential store the first time.
    async fn current_credential(
        &self,
        location_id: &str,
        slot: &mut Option<Credential>,
    ) -> Result<Credential> {
        if slot.is_none() {
            *slot = self
                .inner
                .credentials
                .load(location_id)
                .await
                .map_err(|e| UpstreamError::Store(e.to_string()))?;
        }
        slot.clone()
            .ok_or_else(|| UpstreamError::NoCredentials(location_id.to_owned()))
    }

    /// The access token to send. `rejected` is a token GHL just refused with 401: unless another
    /// caller renewed it meanwhile, it is renewed now. Renewals are single-flight per location:
    /// callers queue on the lock and find the renewed token.
    pub(super) async fn access_token(
        &self,
        location_id: &str,
        state: &LocationState,
        rejected: Option<&Secret>,
    ) -> Result<Secret> {
        let mut slot = state.credential.lock().await;
        let credential = self.current_credential(location_id, &mut slot).await?;
        let now = chrono::Utc::now().timestamp_millis();
        let stale = match (rejected, credential.access_token()) {
            (Some(rejected), Some(current)) => rejected.expose_secret() == current.expose_secret(),
            _ => false,
        };
        let due = credential.needs_renewal(now, RENEWAL_MARGIN_MS);
        if !(stale || due) {
            return credential
                .access_token()
                .cloned()
                .ok_or_else(|| UpstreamError::NoCredentials(location_id.to_owned()));
        }
        // Other processes holding the same credential (replicas on one database) renew under
        // the same lock; the one that waited finds the credential renewed and uses it, instead
        // of spending a refresh token that was already rotated.
        let _renewal = self
            .inner
            .credentials
            .lock_renewal(location_id)
            .await
            .map_err(|e| UpstreamError::Store(e.to_string()))?;
        let stored = self
            .inner
            .credentials
            .load(location_id)
            .await
            .map_err(|e| UpstreamError::Store(e.to_string()))?;
        if let Some(stored) = stored
            && renewed_elsewhere(&credential, &stored, now)
        {
            tracing::info!(
                location_id,
                "another process renewed the GHL access token; using it"
            );
            let token = stored.access_token().cloned();
            *slot = Some(stored);
            return token.ok_or_else(|| UpstreamError::NoCredentials(location_id.to_owned()));
        }
        let renewed = self.renew(location_id, &credential).await?;
        // Persist first (under the lock): if the process dies now, the stored refresh token is
        // the live one.
        self.persist(location_id, &renewed).await?;
        lock(&state.stats).renewals += 1;
        tracing::info!(location_id, "renewed the GHL access token");
        let token = renewed.access_token().cloned();
        *slot = Some(renewed);
        token.ok_or_else(|| UpstreamError::NoCredentials(location_id.to_owned()))
    }

    /// A fresh credential: a refreshed OAuth pair, or a newly minted agency location token.
    async fn renew(&self, location_id: &str, credential: &Credential) -> Result<Credential> {
        match credential {
            Credential::PrivateIntegration { .. } => Err(UpstreamError::Unauthorized(
                "the private integration token was refused; create a new one in GHL".into(),
            )),
            Credential::OAuth { refresh_token, .. } => {
                let answer = self
                    .oauth_token(&[
                        ("grant_type", "refresh_token"),
                        ("refresh_token", refresh_token.expose_secret()),
                        ("user_type", "Location"),
                    ])
                    .await?;
                oauth_credential(&answer)
            }
            Credential::Agency {
                agency_token,
                company_id,
                ..
            } => {
                let response = self
                    .inner
                    .http
                    .post(format!(
                        "{}/oauth/locationToken",
                        self.inner.config.base_url
                    ))
                    .bearer_auth(agency_token.expose_secret())
                    .header("Version", VERSION)
                    .header("Accept", "application/json")
                    .form(&[
                        ("companyId", company_id.as_str()),
                        ("locationId", location_id),
                    ])
                    .send()
                    .await
                    .map_err(|e| UpstreamError::Transient(format!("locationToken: {e}")))?;
                let answer = read_auth_answer(response).await?;
                Ok(Credential::Agency {
                    agency_token: agency_token.clone(),
                    company_id: company_id.clone(),
                    location_token: Some(string_field(&answer, "access_token")?.into()),
                    expires_at: expires_at(&answer),
                })
            }
        }
    }

    /// `POST /oauth/token` with the app's client id and secret and `params`.
    async fn oauth_token(&self, params: &[(&str, &str)]) -> Result<Value> {
        let config = &self.inner.config;
        let (Some(client_id), Some(client_secret)) = (&config.client_id, &config.client_secret)
        else {
            return Err(UpstreamError::Unauthorized(
                "OAuth needs GHL_CLIENT_ID and GHL_CLIENT_SECRET".into(),
            ));
        };
        let mut form: Vec<(&str, &str)> = vec![
            ("client_id", client_id),
            ("client_secret", client_secret.expose_secret()),
        ];
        form.extend_from_slice(params);
        let response = self
            .inner
            .http
            .post(format!("{}/oauth/token", config.base_url))
            .header("Accept", "application/json")
            .form(&form)
            .send()
            .await
            .map_err(|e| UpstreamError::Transient(format!("oauth/token: {e}")))?;
        read_auth_answer(response).await
    }
}

/// Whether `stored` is a renewal of `held` made by another process: a different access token
/// that is not due itself.
fn renewed_elsewhere(held: &Credential, stored: &Credential, now: i64) -> bool {
    let token = |c: &Credential| c.access_token().map(|t| t.expose_secret().to_owned());
    token(stored).is_some()
        && token(stored) != token(held)
        && !stored.needs_renewal(now, RENEWAL_MARGIN_MS)
}

/// The JSON of a token answer, or what its status means for the credential.
async fn read_auth_answer(response: reqwest::Response) -> Result<Value> {
    let status = response.status();
    let body = response
        .text()
        .await
        .map_err(|e| UpstreamError::Transient(e.to_string()))?;
    auth_answer(status, &body)
}

/// Classifies a token answer: 5xx and 429 are transient, any other refusal means the refresh or
/// agency token is no longer valid.
fn auth_answer(status: reqwest::StatusCode, body: &str) -> Result<Value> {
    if status.is_success() {
        serde_json::from_str(body).map_err(|e| UpstreamError::Decode(format!("token answer: {e}")))
    } else if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
        Err(UpstreamError::Transient(format!(
            "token renewal got {status}"
        )))
    } else {
        // 400 invalid_grant, 401: the refresh token or agency token is no longer valid.
        Err(UpstreamError::Unauthorized(format!(
            "token renewal refused ({status}): {}",
            error_message(body)
        )))
    }
}

/// The OAuth credential of a token answer (a code exchange or a refresh).
fn oauth_credential(answer: &Value) -> Result<Credential> {
    Ok(Credential::OAuth {
        access_token: string_field(answer, "access_token")?.into(),
        refresh_token: string_field(answer, "refresh_token")?.into(),
        expires_at: expires_at(answer),
    })
}

fn string_field(body: &Value, key: &str) -> Result<String> {
    body.get(key)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| UpstreamError::Decode(format!("the token answer has no `{key}`")))
}

/// When a token answer's `expires_in` (seconds) runs out, in milliseconds since the epoch.
fn expires_at(body: &Value) -> Option<i64> {
    let seconds = body.get("expires_in")?.as_i64()?;
    Some(chrono::Utc::now().timestamp_millis() + seconds * 1000)
}

#[cfg(test)]
mod tests {
    use reqwest::StatusCode;
    use serde_json::json;

    use super::*;

    #[test]
    fn token_answers_are_classified() {
        let ok = auth_answer(StatusCode::OK, r#"{"access_token":"a"}"#).unwrap();
        assert_eq!(ok["access_token"], "a");
        assert!(matches!(
            auth_answer(StatusCode::OK, "nope"),
            Err(UpstreamError::Decode(m)) if m.starts_with("token answer: ")
        ));
        for status in [StatusCode::BAD_GATEWAY, StatusCode::TOO_MANY_REQUESTS] {
            let error = auth_answer(status, "").unwrap_err();
            assert!(error.is_retryable(), "{status}: {error:?}");
        }
        let error = auth_answer(
            StatusCode::BAD_REQUEST,
            r#"{"error":"invalid_grant","message":"Invalid grant: refresh token is invalid"}"#,
        )
        .unwrap_err();
        assert!(error.is_auth() && !error.is_retryable());
        assert_eq!(
            error.to_string(),
            "GHL refused the credentials of the location: token renewal refused (400 Bad Request): \
             Invalid grant: refresh token is invalid"
        );
    }

    #[test]
    fn an_oauth_answer_becomes_a_credential() {
        let before = chrono::Utc::now().timestamp_millis();
        let answer = json!({ "access_token": "at", "refresh_token": "rt", "expires_in": 86_399 });
        let Credential::OAuth {
            access_token,
            refresh_token,
            expires_at: Some(expires_at),
        } = oauth_credential(&answer).unwrap()
        else {
            panic!("an OAuth credential with an expiry");
        };
        assert_eq!(
            (access_token.expose_secret(), refresh_token.expose_secret()),
            ("at", "rt")
        );
        assert!(expires_at >= before + 86_399_000);
        let error = oauth_credential(&json!({ "access_token": "at" })).unwrap_err();
        assert_eq!(
            error.to_string(),
            "GHL sent a body that does not parse: the token answer has no `refresh_token`"
        );
    }
}
