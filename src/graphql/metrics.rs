//! Tells the request scope (`telemetry::request`) which operation a request ran, for the
//! `operation` label of `/metrics`: only once its document parsed and validated, so a malformed
//! request cannot invent label values. Called by [`super::execute`] around the executor (the
//! schema has no extension; see [`super::builder`]).

use async_graphql::Response;
use async_graphql::parser::types::ExecutableDocument;

use crate::telemetry::request;

/// The name of the operation the executor runs: the one the request names, else the document's
/// only operation's name (`None`: anonymous, or no such operation), as async-graphql picks it.
pub(super) fn operation_name(
    document: &ExecutableDocument,
    requested: Option<&str>,
) -> Option<String> {
    match requested {
        Some(name) => Some(name.to_owned()),
        None => document
            .operations
            .iter()
            .next()
            .and_then(|(name, _)| name.map(|n| n.to_string())),
    }
}

/// Reports `query` parsed; then, unless `response` is a request error (the document failed
/// validation, so nothing ran), the operation `name` executed.
pub(super) fn report(query: &str, name: Option<&str>, response: &Response) {
    request::parsed(query);
    let failed_before_running = response.data == async_graphql::Value::Null
        && !response.errors.is_empty()
        && response.errors.iter().all(|e| e.path.is_empty());
    if !failed_before_running {
        request::executing(name);
    }
}
