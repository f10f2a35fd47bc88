//! The load generator outside the server's process: `wrk` (Debian's package), driven by a Lua
//! script that sends [`Bodies`] and prints its counts and percentiles in one line. Used when `wrk`
//! is on the PATH, so that the server's figures are not the generator's; otherwise the bench falls
//! back to the built-in generator (`super::load`) and says so.

use std::time::Duration;

use anyhow::Context as _;

use super::load::{Bodies, LoadResult, NONCE};

/// Whether `wrk` can be run.
pub fn available() -> bool {
    std::process::Command::new("wrk")
        .arg("--version")
        .output()
        .is_ok()
}

/// The Lua script: headers, the bodies, a unique token per request when asked, and a `RESULT`
/// line with requests, errors, duration (µs) and p50/p95/p99/max latency (µs).
/// `tag` starts every token, so that the warm-up run and the measured run never send the same one.
fn script(headers: &[(&str, String)], bodies: &Bodies, tag: &str) -> String {
    let (list, unique) = match bodies {
        Bodies::Same(body) => (vec![body.clone()], false),
        Bodies::Unique(list) => (list.clone(), true),
    };
    let mut lua = String::from("wrk.method = \"POST\"\n");
    for (name, value) in headers {
        lua.push_str(&format!("wrk.headers[\"{name}\"] = [==[{value}]==]\n"));
    }
    lua.push_str("local bodies = {\n");
    for body in &list {
        lua.push_str(&format!("  [==[{body}]==],\n"));
    }
    lua.push_str("}\n");
    lua.push_str(&format!(
        r#"local unique = {unique}
local counter = 0
local threads = {{}}
function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end
function request()
  counter = counter + 1
  local body = bodies[(counter % #bodies) + 1]
  if unique then
    body = (string.gsub(body, "{NONCE}", "{tag}-" .. tid .. "-" .. counter))
  end
  return wrk.format(nil, nil, nil, body)
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %d %d %d %d %d %d %d\n", summary.requests,
    e.connect + e.read + e.write + e.status + e.timeout, summary.duration,
    latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.max))
end
"#
    ));
    lua
}

/// One `wrk` run of `duration` after a `warmup` run of its own (both rounded up to whole
/// seconds, wrk's unit); `concurrency` connections on up to two threads.
pub async fn run(
    url: &str,
    headers: &[(&str, String)],
    bodies: &Bodies,
    concurrency: usize,
    warmup: Duration,
    duration: Duration,
) -> anyhow::Result<LoadResult> {
    let dir = std::env::temp_dir().join(format!("ghl-bench-wrk-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir)?;
    let threads = concurrency.clamp(1, 2);
    let once = |length: Duration, tag: &str| {
        let path = dir.join(format!("{tag}.lua"));
        let written = std::fs::write(&path, script(headers, bodies, tag));
        // wrk takes whole seconds (`2s`; no milliseconds).
        let secs = length.as_secs_f64().ceil().max(1.0) as u64;
        let output = tokio::process::Command::new("wrk")
            .arg(format!("-t{threads}"))
            .arg(format!("-c{concurrency}"))
            .arg(format!("-d{secs}s"))
            .arg("--timeout")
            .arg("30s")
            .arg("-s")
            .arg(&path)
            .arg(url)
            .output();
        async move {
            written?;
            output.await
        }
    };
    if !warmup.is_zero() {
        once(warmup, "warmup").await.context("cannot run wrk")?;
    }
    let output = once(duration, "run").await.context("cannot run wrk")?;
    let _ = std::fs::remove_dir_all(&dir);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .with_context(|| {
            format!(
                "wrk printed no result: {stdout} {}",
                String::from_utf8_lossy(&output.stderr)
            )
        })?;
    let n: Vec<u64> = line
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    anyhow::ensure!(n.len() == 7, "a malformed wrk result: {line}");
    let ms = |us: u64| us as f64 / 1000.0;
    Ok(LoadResult {
        concurrency,
        requests: n[0].saturating_sub(n[1]),
        errors: n[1],
        unfinished: 0,
        elapsed: Duration::from_micros(n[2]),
        p50_ms: ms(n[3]),
        p95_ms: ms(n[4]),
        p99_ms: ms(n[5]),
        max_ms: ms(n[6]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_carries_headers_bodies_and_the_nonce() {
        let lua = script(
            &[("authorization", "Bearer k".into())],
            &Bodies::Unique(vec![format!("{{\"n\":\"{NONCE}\"}}")]),
            "run",
        );
        assert!(lua.contains("wrk.headers[\"authorization\"] = [==[Bearer k]==]"));
        assert!(lua.contains("[==[{\"n\":\"__NONCE__\"}]==]"));
        assert!(lua.contains("local unique = true"));
        assert!(lua.contains("\"run-\" .. tid"));
        assert!(script(&[], &Bodies::Same("{}".into()), "x").contains("local unique = false"));
    }
}
