//! Limits on what one GraphQL document may ask: depth, complexity, aliases, and whether
//! introspection is served. Each limit answers a request error (HTTP 400, no `data`) whose
//! message names the limit, the value found and the flag that sets it, with
//! `extensions.code = BAD_USER_INPUT` and `extensions.limit`; turned-off introspection answers
//! `FORBIDDEN`.
//!
//! Depth and complexity are async-graphql's own measures (a field counts 1, `contacts` counts its
//! selection times `first`); they are checked here rather than with `limit_depth` /
//! `limit_complexity` so the error can say what was found. Operations per batch, `first`, body
//! size, timeout and the per-key rate are enforced elsewhere (`http`, `query`, `auth`).

use std::sync::Arc;

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextParseQuery, NextValidation,
};
use async_graphql::parser::types::{ExecutableDocument, Selection, SelectionSet};
use async_graphql::{ErrorExtensionValues, ServerError, ServerResult, ValidationResult, Variables};

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

/// Checks depth, complexity and aliases of every document.
pub(super) struct QueryLimits(pub Limits);

impl ExtensionFactory for QueryLimits {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(QueryLimits(self.0.clone()))
    }
}

#[async_graphql::async_trait::async_trait]
impl Extension for QueryLimits {
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let document = next.run(ctx, query, variables).await?;
        // async-graphql's own switch answers `__schema` with a silent null; say why instead.
        if self.0.disable_introspection && introspects(&document) {
            return Err(coded_error(
                "FORBIDDEN",
                "introspection",
                "introspection is turned off on this gateway (--disable-introspection)".into(),
            ));
        }
        let aliases = count_aliases(&document);
        if aliases > self.0.max_query_aliases {
            return Err(limit_error(
                "aliases",
                format!(
                    "the query has {aliases} aliases; the limit is {} (--max-query-aliases)",
                    self.0.max_query_aliases
                ),
            ));
        }
        Ok(document)
    }

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
        Ok(result)
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
