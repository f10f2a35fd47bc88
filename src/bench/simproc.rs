//! The simulator in a child process (`ghl-gateway sim`), so that its data and CPU are not counted
//! in the memory of the process that syncs, and it keeps its own runtime.

use std::process::Stdio;
use std::time::Duration;

use anyhow::Context as _;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// What the simulator is asked to be.
#[derive(Clone, Debug)]
pub struct SimSpec {
    pub contacts: usize,
    pub latency_ms: u64,
    pub jitter_ms: u64,
    pub burst_limit: u32,
    pub burst_window_ms: u64,
    pub daily_limit: u32,
}

impl SimSpec {
    /// GHL's real limits (100 requests per 10 s, 200,000 a day) and 150 ± 100 ms per request:
    /// 50 ms fixed plus 0..=200 ms uniform.
    pub fn real(contacts: usize) -> Self {
        Self {
            contacts,
            latency_ms: 50,
            jitter_ms: 200,
            burst_limit: 100,
            burst_window_ms: 10_000,
            daily_limit: 200_000,
        }
    }

    /// No latency and a burst limit no sync reaches: the fastest a sync can write.
    pub fn unthrottled(contacts: usize) -> Self {
        Self {
            contacts,
            latency_ms: 0,
            jitter_ms: 0,
            burst_limit: 1_000_000,
            burst_window_ms: 10_000,
            daily_limit: 100_000_000,
        }
    }

    /// Mean latency of one request in milliseconds.
    pub fn mean_latency_ms(&self) -> f64 {
        self.latency_ms as f64 + self.jitter_ms as f64 / 2.0
    }
}

/// GHL requests (every endpoint but webhooks) and 429 answers a simulator has received, from its
/// admin API (`GET /_sim/counters`).
pub async fn totals(base_url: &str) -> anyhow::Result<(u64, u64)> {
    let answer: serde_json::Value = reqwest::get(format!("{base_url}/_sim/counters"))
        .await?
        .error_for_status()?
        .json()
        .await?;
    let mut total = 0;
    let mut limited = 0;
    for (endpoint, statuses) in answer["counters"].as_object().into_iter().flatten() {
        if endpoint == "webhook" {
            continue;
        }
        for (status, n) in statuses.as_object().into_iter().flatten() {
            let n = n.as_u64().unwrap_or(0);
            total += n;
            if status == "429" {
                limited += n;
            }
        }
    }
    Ok((total, limited))
}

/// A running `ghl-gateway sim`; killed when dropped.
pub struct SimProcess {
    pub base_url: String,
    pub location_id: String,
    pub pit_token: String,
    pub spec: SimSpec,
    child: Child,
}

impl SimProcess {
    pub async fn start(spec: SimSpec) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("the bench finds its own executable")?;
        let mut child = Command::new(exe)
            .arg("sim")
            .args(["--listen", "127.0.0.1:0"])
            .args(["--contacts", &spec.contacts.to_string()])
            .args(["--latency-ms", &spec.latency_ms.to_string()])
            .args(["--jitter-ms", &spec.jitter_ms.to_string()])
            .args(["--burst-limit", &spec.burst_limit.to_string()])
            .args(["--burst-window-ms", &spec.burst_window_ms.to_string()])
            .args(["--daily-limit", &spec.daily_limit.to_string()])
            .env("RUST_LOG", "warn")
            .env_remove("LISTEN_ADDR")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("cannot start `ghl-gateway sim`")?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut lines = BufReader::new(stdout).lines();
        let mut base_url = None;
        let read = async {
            while let Some(line) = lines.next_line().await? {
                if let Some(url) = line.strip_prefix("sim base url: ") {
                    base_url = Some(url.trim().to_owned());
                }
                if let Some(rest) = line.strip_prefix("sim location: ") {
                    let field = |name: &str| {
                        rest.split_whitespace()
                            .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
                            .map(str::to_owned)
                    };
                    return anyhow::Ok((field("id"), field("pit")));
                }
            }
            anyhow::bail!("the simulator exited before it printed its location")
        };
        // Generating 100k contacts takes a few seconds on a busy machine.
        let (id, pit) = tokio::time::timeout(Duration::from_secs(300), read)
            .await
            .context("the simulator did not start within 5 minutes")??;
        // Keep draining stdout so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Self {
            base_url: base_url.context("the simulator printed no base url")?,
            location_id: id.context("the simulator printed no location id")?,
            pit_token: pit.context("the simulator printed no PIT")?,
            spec,
            child,
        })
    }

    /// GHL requests (every endpoint but webhooks) and 429 answers so far.
    pub async fn totals(&self) -> anyhow::Result<(u64, u64)> {
        totals(&self.base_url).await
    }

    /// The simulator's ground truth of its location (`GET /_sim/locations/{id}`): how many
    /// contacts, tasks, conversations and opportunities it holds.
    pub async fn truth_counts(&self) -> anyhow::Result<[u64; 4]> {
        let truth: serde_json::Value = reqwest::get(format!(
            "{}/_sim/locations/{}",
            self.base_url, self.location_id
        ))
        .await?
        .error_for_status()?
        .json()
        .await?;
        let count = |key: &str| truth[key].as_array().map_or(0, |a| a.len() as u64);
        Ok([
            count("contacts"),
            count("tasks"),
            count("conversations"),
            count("opportunities"),
        ])
    }

    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}
