//! The README's curl examples run as written: each `sh` block that calls `localhost:8080/graphql`
//! runs against a started gateway (its address in place of `localhost:8080`, a real key in place
//! of `ghlk_...` and in `$KEY`) and gets answers, not refusals.

use serde_json::json;

use crate::helpers::*;

/// The README's `sh` blocks that call the gateway's `/graphql`.
fn curl_blocks() -> Vec<String> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("the README is readable");
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in readme.lines() {
        match (&mut current, line.trim_end()) {
            (None, "```sh") => current = Some(String::new()),
            (Some(block), "```") => {
                if block.contains("localhost:8080/graphql") {
                    blocks.push(block.clone());
                }
                current = None;
            }
            (Some(block), line) => {
                block.push_str(line);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    blocks
}

#[tokio::test]
async fn the_readme_curl_examples_run_as_written() {
    let db = sqlite().await;
    let app = spawn_app_with(&db.url, |c| c.http.auth.allow_anonymous = false).await;
    load_fixture(&app.store, "loc", 3).await;
    let new = ghl_gateway::auth::generate_key(None, &["loc".to_owned()], 0);
    app.store.insert_api_key(new.row).await.unwrap();
    let address = app.base.trim_start_matches("http://").to_owned();

    let blocks = curl_blocks();
    assert!(
        blocks.len() >= 3,
        "the README's examples are found: {blocks:?}"
    );
    for block in blocks {
        let script = block
            .replace("localhost:8080", &address)
            .replace("ghlk_...", &new.key);
        let output = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(&script)
            .env("KEY", &new.key)
            .output()
            .await
            .expect("sh runs");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let context = format!(
            "{block}\n-> {stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(output.status.success(), "{context}");
        assert!(!stdout.contains("UNAUTHENTICATED"), "{context}");
        assert!(!stdout.contains("\"errors\""), "{context}");
        if block.contains("if-none-match") {
            assert!(stdout.contains("x-cache: miss"), "{context}");
            assert!(stdout.contains("304"), "{context}");
        } else if block.contains("persistedQuery") {
            // Not found first (a line of its own), then two answers: the document with its hash,
            // and the hash alone over GET.
            let (first, rest) = stdout.split_once('\n').expect("several outputs");
            assert_eq!(first, r#""code":"PERSISTED_QUERY_NOT_FOUND""#, "{context}");
            let answers: Vec<serde_json::Value> = serde_json::Deserializer::from_str(rest)
                .into_iter()
                .collect::<Result<_, _>>()
                .expect("JSON answers");
            assert_eq!(answers.len(), 2, "{context}");
            for answer in answers {
                assert_eq!(
                    answer["data"]["locations"][0]["id"],
                    json!("loc"),
                    "{context}"
                );
            }
        } else {
            let answer: serde_json::Value =
                serde_json::from_str(stdout.trim()).expect("a JSON answer");
            assert_eq!(
                answer["data"]["locations"][0]["id"],
                json!("loc"),
                "{context}"
            );
        }
    }
}
