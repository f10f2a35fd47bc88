//! Limits on what one GraphQL document may ask: depth, complexity, aliases, and whether
//! introspection is served. Each limit answers a request error (HTTP 400, no `data`) whose
//! message names the limit, the value found and the flag that sets it, with
//! `extensions.code = BAD_USER_INPUT` and `extensions.limit`; turned-off introspection answers
//! `FORBIDDEN`.
//!
//! Depth and complexity are async-graphql's own measures (a field counts 1, `contacts` counts its
//! selection times `first`), checked by the schema's `limit_depth` / `limit_complexity`; a
//! document that fails one is measured again by [`Measure`] to give its error the figures.
//! Aliases and introspection are checked on the parsed document before it runs. Operations per batch, `first`, body
//! size, timeout and the per-key rate are enforced elsewhere (`http`, `query`, `auth`).

use std::sync::Arc;

use async_graphql::extensions::{Extension, ExtensionContext, ExtensionFactory, NextValidation};
use async_graphql::parser::types::{ExecutableDocument, Selection, SelectionSet};
use async_graphql::{ErrorExtensionValues, Response, ServerError, ValidationResult, Variables};

/// Query limits. The defaults admit GraphiQL's introspection query (depth 15 with graphql-js's
/// `typeDepth: 9`) and a dashboard page of 500 contacts with everything nested.
#[derive(Clone, Debug, clap::Args)]
pub struct Limits {
    /// Deepest nesting of fields a query may have.
    #[arg(long, env = "MAX_QUERY_DEPTH", default_value_t = 16)]
    pub max_query_depth: usize,
    /// Largest query complexity: each field counts 1, a `contacts` page counts its selection
    /// times `first`.
    #[arg(long, env = "MAX_QUERY_COMPLEXITY", default_value_t = 50_000)]
    pub max_query_complexity: usize,
    /// Most aliased fields in one document.
    #[arg(long, env = "MAX_QUERY_ALIASES", default_value_t = 30)]
    pub max_query_aliases: usize,
    /// Refuse introspection (`__schema`, `__type`); GraphiQL then cannot show the schema.
    #[arg(long, env = "DISABLE_INTROSPECTION")]
    pub disable_introspection: bool,
}

impl Default for Limits {
    fn default() -> Self {
        crate::config::defaults()
    }
}

/// The error of a limit: a request error with a stable code (`BAD_USER_INPUT`) and the limit's name.
pub fn limit_error(limit: &str, message: String) -> ServerError {
    coded_error("BAD_USER_INPUT", limit, message)
}

fn coded_error(code: &str, limit: &str, message: String) -> ServerError {
    let mut error = ServerError::new(message, None);
    let mut extensions = ErrorExtensionValues::default();
    extensions.set("code", code);
    extensions.set("limit", limit);
    error.extensions = Some(extensions);
    error
}

/// Checks what a parsed document shows before it is validated: introspection when it is turned
/// off (`FORBIDDEN`; async-graphql's own switch answers `__schema` with a silent null, this says
/// why) and the number of aliases (`BAD_USER_INPUT`, limit `aliases`).
pub(super) fn check_document(
    limits: &Limits,
    document: &ExecutableDocument,
) -> Result<(), ServerError> {
    if limits.disable_introspection && introspects(document) {
        return Err(coded_error(
            "FORBIDDEN",
            "introspection",
            "introspection is turned off on this gateway (--disable-introspection)".into(),
        ));
    }
    let aliases = count_aliases(document);
    if aliases > limits.max_query_aliases {
        return Err(limit_error(
            "aliases",
            format!(
                "the query has {aliases} aliases; the limit is {} (--max-query-aliases)",
                limits.max_query_aliases
            ),
        ));
    }
    Ok(())
}

/// async-graphql's messages for its depth and complexity limits (`limit_depth`,
/// `limit_complexity` on the schema), which measure as the library does (a field counts 1, a
/// `contacts` page counts its selection times `first`) but carry no code and no figure.
const TOO_DEEP: &str = "Query is nested too deep.";
const TOO_COMPLEX: &str = "Query is too complex.";

/// Whether `response` failed one of async-graphql's depth or complexity limits.
pub(super) fn failed_a_limit(response: &Response) -> bool {
    response
        .errors
        .iter()
        .any(|e| e.message == TOO_DEEP || e.message == TOO_COMPLEX)
}

/// What [`Measure`] needs of a request to measure it again.
pub(super) struct Document {
    pub query: String,
    pub operation_name: Option<String>,
    pub variables: Variables,
}

/// Measures a document that failed a limit, to say by how much: a schema of the same types
/// whose one extension reads depth and complexity at validation and never lets the document run.
/// Only requests that failed a limit pay for it; the schema that executes has no extension (see
/// [`super::builder`]).
#[derive(Clone)]
pub(super) struct Measure(super::AppSchema);

impl Measure {
    pub(super) fn new(limits: &Limits) -> Self {
        Self(
            async_graphql::Schema::build(
                super::query::Query,
                super::mutation::Mutation,
                super::subscription::Subscription,
            )
            .extension(Measuring(limits.clone()))
            .finish(),
        )
    }

    /// `response` with async-graphql's depth and complexity errors replaced by coded ones that
    /// give the figure found, the limit and the flag that sets it.
    pub(super) async fn code_errors(&self, document: Document, mut response: Response) -> Response {
        if !failed_a_limit(&response) {
            return response;
        }
        let request = async_graphql::Request::new(document.query).variables(document.variables);
        let request = match document.operation_name {
            Some(name) => request.operation_name(name),
            None => request,
        };
        let measured = self.0.execute(request).await;
        let coded: Vec<ServerError> = measured
            .errors
            .into_iter()
            .filter(|e| {
                e.extensions
                    .as_ref()
                    .is_some_and(|x| x.get("limit").is_some())
            })
            .collect();
        if !coded.is_empty() {
            response.errors = coded;
        }
        response
    }
}

/// The extension of [`Measure`]'s schema: turns the validation result into the limit's error, and
/// fails every document (one within the limits gets a plain error, and [`Measure`] keeps the
/// executor's own).
struct Measuring(Limits);

impl ExtensionFactory for Measuring {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(Measuring(self.0.clone()))
    }
}

#[async_graphql::async_trait::async_trait]
impl Extension for Measuring {
    async fn validation(
        &self,
        ctx: &ExtensionContext<'_>,
        next: NextValidation<'_>,
    ) -> Result<ValidationResult, Vec<ServerError>> {
        let result = next.run(ctx).await?;
        if result.depth > self.0.max_query_depth {
            return Err(vec![limit_error(
                "depth",
                format!(
                    "the query is nested {} levels deep; the limit is {} (--max-query-depth)",
                    result.depth, self.0.max_query_depth
                ),
            )]);
        }
        if result.complexity > self.0.max_query_complexity {
            return Err(vec![limit_error(
                "complexity",
                format!(
                    "the query's complexity is {}; the limit is {} (--max-query-complexity): \
                     ask for smaller pages (`first`) or fewer fields",
                    result.complexity, self.0.max_query_complexity
                ),
            )]);
        }
        Err(vec![ServerError::new("within the limits", None)])
    }
}

/// Whether the document asks for `__schema` or `__type` (not `__typename`) anywhere.
fn introspects(document: &ExecutableDocument) -> bool {
    fn walk(set: &SelectionSet) -> bool {
        set.items.iter().any(|item| match &item.node {
            Selection::Field(field) => {
                matches!(field.node.name.node.as_str(), "__schema" | "__type")
                    || walk(&field.node.selection_set.node)
            }
            Selection::InlineFragment(fragment) => walk(&fragment.node.selection_set.node),
            Selection::FragmentSpread(_) => false,
        })
    }
    document
        .operations
        .iter()
        .any(|(_, op)| walk(&op.node.selection_set.node))
        || document
            .fragments
            .values()
            .any(|f| walk(&f.node.selection_set.node))
}

/// Aliased fields in the document: in its operations and in each fragment definition once.
/// (A fragment spread many times is paid for by the complexity limit, which counts spreads.)
pub fn count_aliases(document: &ExecutableDocument) -> usize {
    fn walk(set: &SelectionSet) -> usize {
        set.items
            .iter()
            .map(|item| match &item.node {
                Selection::Field(field) => {
                    usize::from(field.node.alias.is_some()) + walk(&field.node.selection_set.node)
                }
                Selection::InlineFragment(fragment) => walk(&fragment.node.selection_set.node),
                Selection::FragmentSpread(_) => 0,
            })
            .sum()
    }
    document
        .operations
        .iter()
        .map(|(_, op)| walk(&op.node.selection_set.node))
        .chain(
            document
                .fragments
                .values()
                .map(|f| walk(&f.node.selection_set.node)),
        )
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_are_counted_everywhere_once() {
        let document = async_graphql::parser::parse_query(
            "query { a: x { b: y } z ... on Q { c: w } ...F } fragment F on Q { d: v e: u }",
        )
        .unwrap();
        assert_eq!(count_aliases(&document), 5);
    }
}
