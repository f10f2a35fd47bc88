//! `schema.graphql` is the committed SDL; it must equal the code's schema.

#[test]
fn schema_file_matches_the_code() {
    let committed = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/schema.graphql"))
        .expect("schema.graphql is committed");
    let generated = ghl_gateway::graphql::sdl();
    assert!(
        committed == generated,
        "schema.graphql is out of date: run `cargo run -- schema > schema.graphql`"
    );
}

#[test]
fn the_contract_names_are_in_the_schema() {
    let sdl = ghl_gateway::graphql::sdl();
    for needle in [
        "locations: [Location!]!",
        "location(id: ID!): Location",
        "contacts(locationId: ID!, first: Int = 50, after: String, filter: ContactFilter, orderBy: ContactOrder, maxAge: Int): ContactConnection!",
        "contact(id: ID!): Contact",
        "syncStatus(locationId: ID!): SyncStatus!",
    ] {
        assert!(sdl.contains(needle), "missing `{needle}` in\n{sdl}");
    }
}
