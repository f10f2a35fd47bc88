//! API keys and who the caller is. Owns key generation and hashing, the [`Caller`] every entry
//! point checks, and the per-key abuse limits ([`RateLimiter`], [`ConnectionLimiter`]). Knows
//! nothing of GraphQL or HTTP: `http` turns a header into a [`Caller`], `graphql::auth` checks it.
//!
//! The two functions other entry points call:
//! - [`Authenticator::authenticate`] (or the free [`authenticate`]): a bearer token, as sent in
//!   `Authorization: Bearer <key>` or in a WebSocket `connection_init` payload, to a [`Caller`]:
//!   the operator (`GATEWAY_ADMIN_KEY`), an API key with its locations, or an anonymous caller when
//!   `--allow-anonymous` is on. A missing, malformed, unknown or revoked key is an [`AuthError`],
//!   whose message says what is wrong without echoing the key. [`parse_authorization`] takes the
//!   `Bearer ` prefix off a header value.
//! - `graphql::auth::require_location(ctx, location_id)`: inside a resolver, fails with the
//!   same `NOT_FOUND` as an unknown location when the caller may not read `location_id`.
//!
//! A key is `ghlk_` + 32 random bytes (base64url), shown once by `keys create` and stored only as
//! its SHA-256 hash. No function here logs a key, a hash or a header.

mod limiter;

use std::collections::BTreeSet;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};

pub use limiter::{ConnectionGuard, ConnectionLimiter, RateLimiter};

use crate::config::{self, Secret};
use crate::store::keys::api_key;
use crate::store::{Store, StoreError};

/// Every API key starts with this, so that secret scanners and people can recognise one.
pub const KEY_PREFIX: &str = "ghlk_";
/// Random bytes in a key.
const KEY_BYTES: usize = 32;
/// The shortest operator key accepted: as strong as a generated key.
pub const MIN_ADMIN_KEY_LEN: usize = 32;
/// A key's `last_used_at` is written at most this often.
const TOUCH_INTERVAL_MS: i64 = 60_000;

/// Settings of authentication and the per-key limits.
#[derive(Clone, Debug, clap::Args)]
pub struct AuthConfig {
    /// Operator key: reaches every location. At least 32 characters (`openssl rand -base64 32`).
    /// Prefer the environment variable: command-line arguments are visible to other users.
    #[arg(long, env = "GATEWAY_ADMIN_KEY", hide_env_values = true, value_parser = config::secret)]
    pub admin_key: Option<Secret>,
    /// Serve requests without an API key (they read every location). For local use only.
    #[arg(long, env = "ALLOW_ANONYMOUS")]
    pub allow_anonymous: bool,
    /// Requests per minute per API key (the operator key and anonymous callers count as one
    /// key each); over it, 429 with `Retry-After`. 0 turns the limit off.
    #[arg(long, env = "RATE_LIMIT_PER_MINUTE", default_value_t = 600)]
    pub rate_limit_per_minute: u32,
    /// Requests a key may send at once before the per-minute rate applies.
    #[arg(long, env = "RATE_LIMIT_BURST", default_value_t = 60)]
    pub rate_limit_burst: u32,
    /// Open WebSocket connections per API key.
    #[arg(long, env = "MAX_WS_CONNECTIONS_PER_KEY", default_value_t = 16)]
    pub max_ws_connections_per_key: usize,
}

impl Default for AuthConfig {
    fn default() -> Self {
        config::defaults()
    }
}

impl AuthConfig {
    /// Refuses an operator key weaker than a generated one.
    pub fn validate(&self) -> Result<(), String> {
        match self.admin_key.as_ref().map(ExposeSecret::expose_secret) {
            Some(key) if key.len() < MIN_ADMIN_KEY_LEN => Err(format!(
                "GATEWAY_ADMIN_KEY is too short ({} characters, at least {MIN_ADMIN_KEY_LEN}): \
                 make one with `openssl rand -base64 32`",
                key.len()
            )),
            _ => Ok(()),
        }
    }
}

/// Who is calling, as every entry point sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// The operator key: every location.
    Admin,
    /// No key, and `--allow-anonymous` is on: every location.
    Anonymous,
    /// An API key and the locations it reaches.
    Key {
        id: String,
        locations: Arc<BTreeSet<String>>,
    },
}

impl Caller {
    /// Whether the caller may read (and refresh, and watch) this location.
    pub fn may_read(&self, location_id: &str) -> bool {
        match self {
            Caller::Admin | Caller::Anonymous => true,
            Caller::Key { locations, .. } => locations.contains(location_id),
        }
    }

    /// What the caller may read, as a string for cache keys: callers with the same scope see
    /// the same answers, callers with different scopes never share one.
    pub fn scope(&self) -> String {
        match self {
            Caller::Admin => "admin".to_owned(),
            Caller::Anonymous => "anonymous".to_owned(),
            // Ids hold no newline; the set is sorted, so equal sets give equal scopes.
            Caller::Key { locations, .. } => {
                let mut scope = String::from("locations");
                for location in locations.iter() {
                    scope.push('\n');
                    scope.push_str(location);
                }
                scope
            }
        }
    }

    /// The bucket of the per-key limits. Key ids start with `key_`, so they never collide with
    /// the two fixed names.
    pub fn limit_key(&self) -> &str {
        match self {
            Caller::Admin => "admin",
            Caller::Anonymous => "anonymous",
            Caller::Key { id, .. } => id,
        }
    }

    /// The API key's id, for logs (never the key itself).
    pub fn key_id(&self) -> Option<&str> {
        match self {
            Caller::Key { id, .. } => Some(id),
            _ => None,
        }
    }
}

/// Why a caller was not authenticated. Every variant but `Store` is answered `UNAUTHENTICATED`.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("an API key is required: send `Authorization: Bearer <key>`")]
    Missing,
    #[error("malformed credentials: expected `Authorization: Bearer <key>`")]
    Malformed,
    /// Unknown and revoked keys answer alike.
    #[error("invalid API key")]
    Invalid,
    #[error("cannot check the API key")]
    Store(#[from] StoreError),
}

/// Takes the token out of an `Authorization` header value (`Bearer <token>`, scheme in any case).
pub fn parse_authorization(value: &str) -> Result<&str, AuthError> {
    let value = value.trim();
    let (scheme, token) = value.split_once(' ').ok_or(AuthError::Malformed)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() || token.contains(' ') {
        return Err(AuthError::Malformed);
    }
    Ok(token)
}

/// A new API key: the key to show once, and the row to store.
pub struct NewKey {
    pub key: String,
    pub row: api_key::Model,
}

/// Generates a key for `locations`. The key itself is in `NewKey::key` only; the row holds its hash.
pub fn generate_key(name: Option<String>, locations: &[String], now_ms: i64) -> NewKey {
    let mut rng = rand::rng();
    let mut secret = [0u8; KEY_BYTES];
    rng.fill_bytes(&mut secret);
    let mut id = [0u8; 8];
    rng.fill_bytes(&mut id);
    let key = format!("{KEY_PREFIX}{}", URL_SAFE_NO_PAD.encode(secret));
    let locations: BTreeSet<&String> = locations.iter().collect();
    NewKey {
        row: api_key::Model {
            id: format!("key_{}", hex(&id)),
            name,
            hash: hash_key(&key),
            location_ids: serde_json::to_string(&locations).unwrap_or_else(|_| "[]".into()),
            created_at: now_ms,
            revoked_at: None,
            last_used_at: None,
        },
        key,
    }
}

/// The SHA-256 of a key, in hex: what the database stores. A plain hash (no salt, no KDF) is
/// enough because keys are 256 random bits, not passwords.
pub fn hash_key(key: &str) -> String {
    hex(&Sha256::digest(key.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `token` has the shape of a generated key (it may still be unknown).
pub fn is_well_formed_key(token: &str) -> bool {
    token.strip_prefix(KEY_PREFIX).is_some_and(|rest| {
        rest.len() == URL_SAFE_NO_PAD.encode([0u8; KEY_BYTES]).len()
            && rest
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })
}

/// Turns bearer tokens into callers, and holds the per-key limits. Cheap to clone (one
/// reference count: the guard's state is cloned for every request).
#[derive(Clone)]
pub struct Authenticator {
    inner: Arc<AuthenticatorInner>,
}

impl std::ops::Deref for Authenticator {
    type Target = AuthenticatorInner;

    fn deref(&self) -> &AuthenticatorInner {
        &self.inner
    }
}

/// What an [`Authenticator`] shares between its clones.
pub struct AuthenticatorInner {
    store: Store,
    /// SHA-256 of the operator key: compared digest to digest, so the comparison's timing says
    /// nothing useful about the key.
    admin_hash: Option<[u8; 32]>,
    allow_anonymous: bool,
    rate: Arc<RateLimiter>,
    connections: ConnectionLimiter,
    /// When this process last recorded each key's use: the database is written at most once per
    /// key and interval, not on every request (each write would take SQLite's writer lock).
    touched: Arc<std::sync::Mutex<std::collections::HashMap<String, i64>>>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("admin_key", &self.admin_hash.map(|_| "[redacted]"))
            .field("allow_anonymous", &self.allow_anonymous)
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    pub fn new(store: Store, config: &AuthConfig) -> Self {
        let inner = AuthenticatorInner {
            store,
            admin_hash: config
                .admin_key
                .as_ref()
                .map(ExposeSecret::expose_secret)
                .filter(|k| !k.is_empty())
                .map(|k| Sha256::digest(k.as_bytes()).into()),
            allow_anonymous: config.allow_anonymous,
            rate: Arc::new(RateLimiter::new(
                config.rate_limit_per_minute,
                config.rate_limit_burst,
            )),
            connections: ConnectionLimiter::new(config.max_ws_connections_per_key),
            touched: Arc::default(),
        };
        Self {
            inner: Arc::new(inner),
        }
    }

    /// The caller a bearer token (without the `Bearer ` prefix) stands for. `None`: no key was
    /// sent, which is anonymous when allowed. A key that is sent must be valid, even when
    /// anonymous callers are allowed.
    pub async fn authenticate(&self, bearer: Option<&str>) -> Result<Caller, AuthError> {
        let Some(token) = bearer.map(str::trim) else {
            return if self.allow_anonymous {
                Ok(Caller::Anonymous)
            } else {
                Err(AuthError::Missing)
            };
        };
        if token.is_empty() {
            return Err(AuthError::Malformed);
        }
        if let Some(admin) = &self.admin_hash {
            let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
            if &digest == admin {
                return Ok(Caller::Admin);
            }
        }
        // The header was well formed (`Bearer <token>`); a token of the wrong shape is just
        // another key this gateway does not know.
        if !is_well_formed_key(token) {
            return Err(AuthError::Invalid);
        }
        let Some(row) = self.store.api_key_by_hash(&hash_key(token)).await? else {
            tracing::info!(reason = "unknown key", "authentication failed");
            return Err(AuthError::Invalid);
        };
        if row.revoked_at.is_some() {
            tracing::info!(key_id = %row.id, reason = "revoked key", "authentication failed");
            return Err(AuthError::Invalid);
        }
        let now = chrono::Utc::now().timestamp_millis();
        let due = {
            let mut touched = self.touched.lock().unwrap_or_else(|e| e.into_inner());
            let last = touched.get(&row.id).copied().unwrap_or(i64::MIN);
            let due = now.saturating_sub(last) >= TOUCH_INTERVAL_MS;
            if due {
                touched.insert(row.id.clone(), now);
            }
            due
        };
        if due {
            let store = self.store.clone();
            let id = row.id.clone();
            // Off the request path: the write may wait for SQLite's writer lock.
            tokio::spawn(async move {
                if let Err(error) = store.touch_api_key(&id, now, TOUCH_INTERVAL_MS).await {
                    tracing::warn!(key_id = %id, error = %error, "cannot record the key's last use");
                }
            });
        }
        Ok(Caller::Key {
            locations: Arc::new(row.locations().into_iter().collect()),
            id: row.id,
        })
    }

    /// Counts a request against the caller's rate; `Err(wait)` when over it.
    pub fn check_rate(&self, caller: &Caller) -> Result<(), std::time::Duration> {
        self.rate.check(caller.limit_key())
    }

    /// The per-key counter of open WebSocket connections.
    pub fn connections(&self) -> &ConnectionLimiter {
        &self.connections
    }
}

/// [`Authenticator::authenticate`] without keeping an authenticator: for one-off checks.
pub async fn authenticate(
    store: &Store,
    config: &AuthConfig,
    bearer: Option<&str>,
) -> Result<Caller, AuthError> {
    Authenticator::new(store.clone(), config)
        .authenticate(bearer)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_are_well_formed_random_and_stored_hashed() {
        let locations = vec!["b".to_owned(), "a".to_owned(), "a".to_owned()];
        let one = generate_key(Some("ci".into()), &locations, 1);
        let two = generate_key(None, &locations, 1);
        assert!(is_well_formed_key(&one.key), "{}", one.key.len());
        assert_ne!(one.key, two.key);
        assert_ne!(one.row.id, two.row.id);
        assert_eq!(one.row.hash, hash_key(&one.key));
        assert!(!one.row.hash.contains(&one.key[KEY_PREFIX.len()..]));
        assert_eq!(one.row.location_ids, r#"["a","b"]"#);
        assert_eq!(one.row.hash.len(), 64);
    }

    #[test]
    fn malformed_tokens_are_recognised() {
        assert!(!is_well_formed_key("ghlk_short"));
        assert!(!is_well_formed_key(&format!("ghlk_{}", "!".repeat(43))));
        assert!(!is_well_formed_key(&format!("xxxx_{}", "a".repeat(43))));
        assert!(is_well_formed_key(&format!("ghlk_{}", "a".repeat(43))));
    }

    #[test]
    fn authorization_headers_are_parsed() {
        assert_eq!(parse_authorization("Bearer abc").unwrap(), "abc");
        assert_eq!(parse_authorization("bearer  abc ").unwrap(), "abc");
        for bad in ["abc", "Basic abc", "Bearer ", "Bearer a b", ""] {
            assert!(
                matches!(parse_authorization(bad), Err(AuthError::Malformed)),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn callers_read_only_their_locations() {
        let key = Caller::Key {
            id: "key_1".into(),
            locations: Arc::new(["a".to_owned()].into_iter().collect()),
        };
        assert!(key.may_read("a") && !key.may_read("b"));
        assert!(Caller::Admin.may_read("b") && Caller::Anonymous.may_read("b"));
    }

    #[test]
    fn short_admin_keys_are_refused() {
        let mut config = AuthConfig {
            admin_key: Some("short".into()),
            ..AuthConfig::default()
        };
        assert!(config.validate().is_err());
        config.admin_key = Some("x".repeat(MIN_ADMIN_KEY_LEN).into());
        assert!(config.validate().is_ok());
        assert!(!format!("{config:?}").contains("xxxx"));
    }
}
