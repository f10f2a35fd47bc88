//! `ghl-gateway demo`, the real binary: it hands over everything another client needs (each
//! location's private integration token, the simulator's company id and agency token, which the
//! simulator then accepts), and a second run on the same `ghl-gateway.db` starts cleanly and says
//! what it reuses.

use std::collections::HashMap;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt as _, BufReader};

/// Runs `demo` in `dir` (its default database, `ghl-gateway.db`, lands there) until its banner
/// is printed; returns the banner's lines, label -> values, and the running process.
async fn demo(dir: &std::path::Path) -> (HashMap<String, Vec<String>>, tokio::process::Child) {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_ghl-gateway"))
        .args(["demo", "--listen", "127.0.0.1:0", "--demo-contacts", "30"])
        .args(["--demo-latency-ms", "0", "--demo-jitter-ms", "0"])
        .current_dir(dir)
        .env_clear()
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("the binary starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut banner: HashMap<String, Vec<String>> = HashMap::new();
    loop {
        let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
            .await
            .expect("the banner comes within a minute")
            .expect("stdout reads")
            .expect("the demo prints its banner before it serves");
        if let Some((label, value)) = line.split_once(':') {
            banner
                .entry(label.trim().to_owned())
                .or_default()
                .push(value.trim().to_owned());
        }
        if line.starts_with("first sync:") {
            break;
        }
    }
    (banner, child)
}

fn first_word(text: &str) -> &str {
    text.split_whitespace().next().unwrap_or("")
}

#[tokio::test]
async fn demo_hands_over_the_simulators_credentials_and_reuses_its_database() {
    let dir = tempfile::tempdir().unwrap();
    let (banner, first) = demo(dir.path()).await;
    assert_eq!(banner["database"].len(), 1);
    assert!(banner["database"][0].ends_with("(new)"), "{banner:?}");
    let simulator = first_word(&banner["simulator"][0]).to_owned();
    let company = banner["sim company id"][0].clone();
    let agency = first_word(&banner["sim agency token"][0]).to_owned();
    let locations: Vec<String> = banner["location"]
        .iter()
        .map(|l| first_word(l).to_owned())
        .collect();
    let pits: Vec<String> = banner["pit"]
        .iter()
        .map(|p| first_word(p).to_owned())
        .collect();
    assert_eq!(locations.len(), 2, "{banner:?}");
    assert_eq!(pits.len(), 2, "one token per location: {banner:?}");

    // Another client reaches the simulator with what was printed.
    let client = reqwest::Client::new();
    for (location, pit) in locations.iter().zip(&pits) {
        let answer: serde_json::Value = client
            .get(format!("{simulator}/locations/{location}"))
            .bearer_auth(pit)
            .header("Version", "2021-07-28")
            .send()
            .await
            .unwrap()
            .error_for_status()
            .expect("the simulator accepts the printed token")
            .json()
            .await
            .unwrap();
        assert_eq!(answer["location"]["id"], location.as_str(), "{answer}");
        assert_eq!(
            answer["location"]["companyId"],
            company.as_str(),
            "{answer}"
        );
    }
    let token = client
        .post(format!("{simulator}/oauth/locationToken"))
        .bearer_auth(&agency)
        .header("Version", "2021-07-28")
        .form(&[
            ("companyId", company.as_str()),
            ("locationId", &locations[0]),
        ])
        .send()
        .await
        .unwrap();
    assert!(
        token.status().is_success(),
        "the agency token works: {}",
        token.status()
    );
    drop(first);

    // The same directory again: the database of the first run is reused, and said so.
    let (again, second) = demo(dir.path()).await;
    let reuse = &again["database"][0];
    assert!(
        reuse.contains("reused from an earlier run: 2 of 2 locations cached")
            && reuse.contains("1 earlier API key(s) still valid"),
        "{reuse}"
    );
    assert_eq!(again["location"].len(), 2);
    let base = first_word(&again["graphql"][0]).to_owned();
    let key = first_word(&again["api key"][0]).to_owned();
    let answer: serde_json::Value = client
        .post(&base)
        .bearer_auth(&key)
        .json(&serde_json::json!({ "query": "{ locations { id } }" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        answer["data"]["locations"].as_array().map(Vec::len),
        Some(2),
        "{answer}"
    );
    drop(second);
}
