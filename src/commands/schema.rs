//! `ghl-gateway schema`: prints the GraphQL schema (SDL) that `schema.graphql` holds.

/// Prints the SDL to stdout (logs, if any, go to stderr).
pub fn run() {
    print!("{}", crate::graphql::sdl());
}
