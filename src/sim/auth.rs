//! Tokens the simulator accepts: private integration tokens (PIT), OAuth location and agency
//! tokens that expire, refresh tokens that rotate, and single-use authorization codes.
//!
//! Expiry uses `tokio::time::Instant`, so a test can pause the clock and advance past a token's
//! lifetime instead of sleeping.

use std::collections::HashMap;
use std::time::Duration;

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use tokio::time::Instant;

/// What kind of bearer a token is; the GHL security schemes distinguish these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum TokenKind {
    /// A sub-account Private Integration Token: never expires.
    Pit,
    /// An OAuth sub-account (location) access token.
    Location,
    /// An OAuth agency (company) access token.
    Agency,
}

#[derive(Debug, Clone)]
pub struct Token {
    pub kind: TokenKind,
    /// The location a PIT or location token is for; `None` for agency tokens.
    pub location_id: Option<String>,
    pub company_id: String,
    /// Rate-limit bucket: GHL limits per app (or PIT) per resource (location or company).
    pub bucket: String,
    pub expires_at: Option<Instant>,
    pub user_id: String,
}

#[derive(Debug, Clone)]
pub struct Grant {
    /// "Location" or "Company".
    pub user_type: String,
    pub location_id: Option<String>,
    pub company_id: String,
    pub user_id: String,
}

/// Outcome of looking a bearer up.
pub enum Lookup<'a> {
    Valid(&'a Token),
    Expired,
    Unknown,
}

#[derive(Debug, Default)]
pub struct AuthStore {
    pub tokens: HashMap<String, Token>,
    pub refresh: HashMap<String, Grant>,
    pub codes: HashMap<String, Grant>,
}

pub fn random_token(rng: &mut ChaCha8Rng, prefix: &str) -> String {
    let a: u128 = rng.random();
    format!("{prefix}{a:032x}")
}

impl AuthStore {
    pub fn lookup(&self, token: &str) -> Lookup<'_> {
        match self.tokens.get(token) {
            None => Lookup::Unknown,
            Some(t) => match t.expires_at {
                Some(at) if Instant::now() >= at => Lookup::Expired,
                _ => Lookup::Valid(t),
            },
        }
    }

    /// Mints an access token for a grant, as `/oauth/token` and `/oauth/locationToken` do.
    pub fn mint_access(
        &mut self,
        rng: &mut ChaCha8Rng,
        grant: &Grant,
        client_id: &str,
        ttl: Duration,
    ) -> String {
        let (kind, bucket) = if grant.user_type == "Company" {
            (
                TokenKind::Agency,
                format!("{client_id}:{}", grant.company_id),
            )
        } else {
            (
                TokenKind::Location,
                format!(
                    "{client_id}:{}",
                    grant.location_id.clone().unwrap_or_default()
                ),
            )
        };
        let token = random_token(rng, "sim-at-");
        self.tokens.insert(
            token.clone(),
            Token {
                kind,
                location_id: grant.location_id.clone(),
                company_id: grant.company_id.clone(),
                bucket,
                expires_at: Some(Instant::now() + ttl),
                user_id: grant.user_id.clone(),
            },
        );
        token
    }

    pub fn mint_refresh(&mut self, rng: &mut ChaCha8Rng, grant: Grant) -> String {
        let token = random_token(rng, "sim-rt-");
        self.refresh.insert(token.clone(), grant);
        token
    }

    pub fn mint_code(&mut self, rng: &mut ChaCha8Rng, grant: Grant) -> String {
        let code = random_token(rng, "sim-code-");
        self.codes.insert(code.clone(), grant);
        code
    }

    /// Expires a token now; returns whether it existed.
    pub fn expire(&mut self, token: &str) -> bool {
        match self.tokens.get_mut(token) {
            Some(t) => {
                t.expires_at = Some(Instant::now());
                true
            }
            None => false,
        }
    }
}
