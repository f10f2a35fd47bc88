//! Every input error carries `extensions.code = BAD_USER_INPUT`, including values that fail to
//! coerce to their type (in variables or in literal arguments).

use serde_json::{Value, json};

use crate::helpers::*;

#[tokio::test]
async fn values_that_fail_to_coerce_are_bad_user_input() {
    let db = sqlite().await;
    let app = spawn_app(&db.url).await;
    load_fixture(&app.store, "loc", 2).await;
    let by_variable = "query($n: Int) { contacts(locationId: \"loc\", first: $n) { totalCount } }";
    let since = "query($t: DateTime) { contacts(locationId: \"loc\", filter: { updatedSince: $t }) { totalCount } }";
    let cases: [(&str, &str, Value); 6] = [
        (
            "Int out of range",
            by_variable,
            json!({ "n": 4_294_967_296_i64 }),
        ),
        ("a string for an Int", by_variable, json!({ "n": "ten" })),
        ("a bad DateTime", since, json!({ "t": "yesterday" })),
        (
            "a literal Int out of range",
            "{ contacts(locationId: \"loc\", first: 4294967296) { totalCount } }",
            json!({}),
        ),
        (
            "a literal string for an Int",
            "{ contacts(locationId: \"loc\", first: \"ten\") { totalCount } }",
            json!({}),
        ),
        (
            "a literal bad DateTime",
            "{ contacts(locationId: \"loc\", filter: { updatedSince: \"yesterday\" }) { totalCount } }",
            json!({}),
        ),
    ];
    for (case, query, variables) in cases {
        let answer = app.graphql(query, variables).await;
        let errors = answer["errors"].as_array().cloned().unwrap_or_default();
        assert!(!errors.is_empty(), "{case}: {answer}");
        for error in errors {
            assert_eq!(
                error["extensions"]["code"], "BAD_USER_INPUT",
                "{case}: {answer}"
            );
        }
    }
}
