//! Automatic persisted queries in Apollo's protocol (the design of async-graphql's
//! `ApolloPersistedQueries` extension, at the HTTP layer so that the response cache keys and
//! ETags see the whole document): a request may send `extensions.persistedQuery =
//! {"version": 1, "sha256Hash": "<hex>"}` instead of its document. Unknown hashes answer
//! `PersistedQueryNotFound` (`extensions.code = PERSISTED_QUERY_NOT_FOUND`, HTTP 200, as Apollo
//! Server does); the client then sends the document with its hash once, and the gateway keeps it
//! when its SHA-256 matches and it parses and validates.
//!
//! Documents are kept in memory, bounded in bytes (`--persisted-queries-mb`); a restart or another
//! replica simply asks the client for the document again, which the protocol allows.

use std::sync::Arc;

use async_graphql::{Request, Value};
use sha2::{Digest, Sha256};

/// The documents known by hash.
#[derive(Clone)]
pub struct PersistedQueries {
    documents: moka::sync::Cache<String, Arc<str>>,
}

/// What a request's `persistedQuery` extension asks.
#[derive(Debug, PartialEq, Eq)]
pub enum Persisted {
    /// No extension: an ordinary request.
    No,
    /// A hash-only request whose document was found and filled in.
    Found,
    /// A document with its matching hash, to keep once it proves valid.
    Offered(String),
}

/// Why a persisted-query request is refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The hash names no known document: the client should send the document.
    NotFound,
    /// The extension is malformed, of another version, or its hash does not match the document.
    BadInput(String),
}

impl Refusal {
    /// The error's `(message, extensions.code)`.
    pub fn message_and_code(&self) -> (&str, &'static str) {
        match self {
            Refusal::NotFound => ("PersistedQueryNotFound", "PERSISTED_QUERY_NOT_FOUND"),
            Refusal::BadInput(message) => (message, "BAD_USER_INPUT"),
        }
    }
}

impl PersistedQueries {
    /// A store of at most `bytes` bytes of documents.
    pub fn new(bytes: u64) -> Self {
        Self {
            documents: moka::sync::Cache::builder()
                .max_capacity(bytes)
                .weigher(|hash: &String, document: &Arc<str>| {
                    u32::try_from(hash.len() + document.len()).unwrap_or(u32::MAX)
                })
                .build(),
        }
    }

    /// Reads `request`'s `persistedQuery` extension (and removes it): fills in the document of a
    /// hash-only request, checks the hash of a request that sends both.
    pub fn resolve(&self, request: &mut Request) -> Result<Persisted, Refusal> {
        let Some(extension) = request.extensions.remove("persistedQuery") else {
            return Ok(Persisted::No);
        };
        let (version, hash) = parse(&extension).ok_or_else(|| {
            Refusal::BadInput(
                "extensions.persistedQuery must be {\"version\": 1, \"sha256Hash\": \"<hex>\"}"
                    .into(),
            )
        })?;
        if version != 1 {
            return Err(Refusal::BadInput(format!(
                "persisted query version {version} is not supported; use version 1"
            )));
        }
        let hash = hash.to_ascii_lowercase();
        if request.query.is_empty() {
            let document = self.documents.get(&hash).ok_or(Refusal::NotFound)?;
            request.query = document.to_string();
            return Ok(Persisted::Found);
        }
        if sha256_hex(&request.query) != hash {
            return Err(Refusal::BadInput(
                "extensions.persistedQuery.sha256Hash is not the SHA-256 of the query".into(),
            ));
        }
        Ok(Persisted::Offered(hash))
    }

    /// Keeps `query` under `hash` (which [`Self::resolve`] checked): call it once the document
    /// parsed and validated.
    pub fn keep(&self, hash: String, query: &str) {
        self.documents.insert(hash, Arc::from(query));
    }
}

fn parse(extension: &Value) -> Option<(i64, String)> {
    let Value::Object(fields) = extension else {
        return None;
    };
    let version = match fields.get("version")? {
        Value::Number(n) => n.as_i64()?,
        _ => return None,
    };
    let hash = match fields.get("sha256Hash")? {
        Value::String(s) if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) => s.clone(),
        _ => return None,
    };
    Some((version, hash))
}

/// The lowercase hex SHA-256 of `text`, as Apollo's clients compute it.
pub fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(query: &str, hash: &str) -> Request {
        let mut request = Request::new(query);
        request.extensions.insert(
            "persistedQuery".into(),
            Value::from_json(serde_json::json!({ "version": 1, "sha256Hash": hash })).unwrap(),
        );
        request
    }

    #[test]
    fn the_round_trip_of_apollos_protocol() {
        let store = PersistedQueries::new(1 << 20);
        let query = "{ locations { id } }";
        let hash = sha256_hex(query);
        assert_eq!(
            store.resolve(&mut request("", &hash)),
            Err(Refusal::NotFound)
        );
        assert_eq!(
            store.resolve(&mut request(query, &hash)),
            Ok(Persisted::Offered(hash.clone()))
        );
        store.keep(hash.clone(), query);
        let mut hash_only = request("", &hash.to_ascii_uppercase());
        assert_eq!(store.resolve(&mut hash_only), Ok(Persisted::Found));
        assert_eq!(hash_only.query, query);
        assert!(!hash_only.extensions.contains_key("persistedQuery"));
    }

    #[test]
    fn a_mismatched_or_malformed_extension_is_bad_input() {
        let store = PersistedQueries::new(1 << 20);
        let other = sha256_hex("{ other }");
        assert!(matches!(
            store.resolve(&mut request("{ locations { id } }", &other)),
            Err(Refusal::BadInput(_))
        ));
        assert!(matches!(
            store.resolve(&mut request("", "not-a-hash")),
            Err(Refusal::BadInput(_))
        ));
        assert_eq!(store.resolve(&mut Request::new("{ a }")), Ok(Persisted::No));
    }
}
