//! Subscribers at scale: N open dashboards on one gateway while a FULL sync runs.
//!
//! The gateway runs as a child process (`ghl-gateway demo`: one location of 2,000 contacts, GHL's
//! latency and limits, SQLite), so that its resident memory (`VmRSS` of `/proc/PID/status`) is
//! its own. This process opens N graphql-transport-ws sockets with the demo's API key, each
//! subscribed to the location's `syncStatus` and `changes` (what the dashboard holds), then starts
//! a FULL sync and follows it on every socket. Measured: the time to connect (every socket
//! acknowledged and holding its first event), the events each socket received, the delivery delay
//! from commit to receipt (each `changes` event carries its commit time `at`; both processes read
//! the same clock), and the gateway's RSS before, idle, at its peak during the sync, right after
//! every socket closed and a minute later.

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use futures::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde::Deserialize;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{Semaphore, watch};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// Subscriber counts of a full run and of a quick one.
pub const COUNTS: [usize; 2] = [1_000, 10_000];
pub const QUICK_COUNTS: [usize; 1] = [1_000];
/// Contacts of the demo's location.
pub const CONTACTS: usize = 2_000;
/// Sockets connecting at once (below the gateway's `--max-ws-pending`).
const CONNECTING: usize = 256;
/// How long after the sockets close the last RSS is read.
const SETTLE: Duration = Duration::from_secs(60);

const STATUS: &str = "subscription($loc: ID!) { syncStatus(locationId: $loc) { locationId job { id state mode stages { name state fetched } } freshness { stale syncing } } }";
/// `at` and `dataVersion` first: a response's fields come in the order of the selection, so the
/// bench finds them at the start of the frame ([`scan`]).
const CHANGES: &str =
    "subscription($loc: ID!) { changes(locationId: $loc) { at dataVersion kind op ids source } }";

/// One run's figures.
#[derive(Clone, Debug)]
pub struct SubscribersResult {
    pub subscribers: usize,
    /// Until every socket was acknowledged and held the current state, seconds.
    pub connect_secs: f64,
    /// The FULL sync, from the mutation to the last socket's final event, seconds.
    pub sync_secs: f64,
    /// `syncStatus` events of the new job per socket: fewest, most.
    pub status_events: (usize, usize),
    /// `changes` events per socket: fewest, most.
    pub change_events: (usize, usize),
    /// Sockets that received as many events of both kinds as the most any socket received, in
    /// the same order as the most sockets received them.
    pub complete: usize,
    /// Sockets whose events came in another order than the most sockets' (counted in none of
    /// `complete`).
    pub reordered: usize,
    /// Commit-to-receipt delay of the `changes` events over every socket, ms.
    pub delay_p50_ms: f64,
    pub delay_p99_ms: f64,
    pub delay_max_ms: f64,
    /// The gateway's RSS, KiB: before any socket, with every socket idle, peak during the sync,
    /// right after every socket closed, and [`SETTLE`] later.
    pub rss_base_kib: u64,
    pub rss_idle_kib: u64,
    pub rss_peak_kib: u64,
    pub rss_closed_kib: u64,
    pub rss_settled_kib: u64,
    /// WebSocket connections the gateway's `/metrics` still counts after they all closed.
    pub open_after_close: f64,
    /// CPU time (user + system) spent during the sync, seconds: by the gateway's process, and by
    /// this one (the N client sockets). Both share the machine's cores: a bench that spends
    /// as much as the gateway delays receipts as much.
    pub gateway_cpu_secs: f64,
    pub client_cpu_secs: f64,
    /// The machine's 1-minute load average when the sockets started connecting.
    pub load_average: f64,
}

impl SubscribersResult {
    /// RSS per idle socket above the baseline, KiB.
    pub fn idle_kib_per_subscriber(&self) -> f64 {
        self.rss_idle_kib.saturating_sub(self.rss_base_kib) as f64 / self.subscribers as f64
    }

    /// RSS a minute after the sockets closed, as a ratio of the baseline.
    pub fn settled_ratio(&self) -> f64 {
        self.rss_settled_kib as f64 / self.rss_base_kib.max(1) as f64
    }
}

/// Raises this process's open-file limit to its hard limit (the gateway child inherits it).
/// Returns the soft limit now in force.
pub fn raise_open_files() -> u64 {
    // SAFETY: getrlimit/setrlimit read and write a plain struct we own.
    unsafe {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 0;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                return raised.rlim_cur;
            }
        }
        limit.rlim_cur
    }
}

/// Resident memory of process `pid`, KiB (0 when it cannot be read).
fn rss_of(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// CPU time (user + system) of process `pid` (`self` for this one) so far, seconds; 0 when it
/// cannot be read.
fn cpu_secs_of(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // utime and stime: fields 14 and 15 of proc(5), 12 and 13 after the name.
    let ticks: u64 = fields
        .get(11..13)
        .map(|f| f.iter().filter_map(|v| v.parse::<u64>().ok()).sum())
        .unwrap_or(0);
    // SAFETY: sysconf reads a constant of the system.
    let per_sec = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    ticks as f64 / per_sec.max(1) as f64
}

/// The 1-minute load average (0 when it cannot be read).
fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

/// Where the sockets connect: the gateway's WebSocket URL, the demo's API key, its location.
#[derive(Clone, Debug)]
struct Target {
    ws: String,
    key: String,
    location: String,
}

/// The gateway in a child process (`ghl-gateway demo`); killed when dropped.
struct Gateway {
    child: Child,
    pid: u32,
    http: String,
    target: Target,
    dir: std::path::PathBuf,
}

impl Gateway {
    async fn start(subscribers: usize) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("ghl-subs-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir)?;
        let exe = std::env::current_exe().context("the bench finds its own executable")?;
        let mut child = Command::new(exe)
            .arg("demo")
            .args(["--listen", "127.0.0.1:0"])
            .arg("--database-url")
            .arg(format!(
                "sqlite://{}?mode=rwc",
                dir.join("subs.db").display()
            ))
            .args(["--demo-locations", "1"])
            .args(["--demo-contacts", &CONTACTS.to_string()])
            .args([
                "--max-ws-connections-per-key",
                &(subscribers + 16).to_string(),
            ])
            .args(["--max-ws-pending", &(CONNECTING * 4).to_string()])
            .env("RUST_LOG", "warn,sqlx=error")
            .env_remove("LISTEN_ADDR")
            .env_remove("DATABASE_URL")
            .env_remove("METRICS_LISTEN")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("cannot start `ghl-gateway demo`")?;
        let pid = child.id().context("the demo has a pid")?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut lines = BufReader::new(stdout).lines();
        let (mut http, mut ws, mut location) = (None, None, None);
        let read = async {
            while let Some(line) = lines.next_line().await? {
                let value = |prefix: &str| {
                    line.strip_prefix(prefix)
                        .and_then(|rest| rest.split_whitespace().next())
                        .map(str::to_owned)
                };
                if let Some(url) = value("graphql:") {
                    http = Some(url);
                } else if let Some(url) = value("graphql-ws:") {
                    ws = Some(url);
                } else if let Some(id) = value("location:") {
                    location = Some(id);
                } else if let Some(key) = value("api key:") {
                    return anyhow::Ok(key);
                }
            }
            anyhow::bail!("the demo exited before it printed its API key")
        };
        let key = tokio::time::timeout(Duration::from_secs(120), read)
            .await
            .context("the demo did not start within 2 minutes")??;
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Self {
            child,
            pid,
            http: http.context("the demo printed no graphql url")?,
            target: Target {
                ws: ws.context("the demo printed no graphql-ws url")?,
                key,
                location: location.context("the demo printed no location")?,
            },
            dir,
        })
    }

    fn rss_kib(&self) -> u64 {
        rss_of(self.pid)
    }

    /// Starts a FULL sync of the location; its job id.
    async fn refresh(&self) -> anyhow::Result<String> {
        let answer: serde_json::Value = reqwest::Client::new()
            .post(&self.http)
            .bearer_auth(&self.target.key)
            .json(&json!({
                "query": "mutation($loc: ID!) { refreshLocation(locationId: $loc, mode: FULL) { id } }",
                "variables": { "loc": self.target.location },
            }))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        answer["data"]["refreshLocation"]["id"]
            .as_str()
            .map(str::to_owned)
            .with_context(|| format!("refreshLocation answered {answer}"))
    }

    /// WebSocket connections the gateway's `/metrics` counts now.
    async fn open_sockets(&self) -> anyhow::Result<f64> {
        let url = self.http.trim_end_matches("/graphql").to_owned() + "/metrics";
        let text = reqwest::get(url).await?.error_for_status()?.text().await?;
        Ok(text
            .lines()
            .filter(|l| l.starts_with(crate::telemetry::metrics::WS_CONNECTIONS))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum())
    }

    async fn stop(mut self) {
        let _ = self.child.kill().await;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The parts of a server frame the bench reads.
#[derive(Deserialize)]
struct Frame {
    #[serde(rename = "type")]
    kind: String,
    id: Option<String>,
    payload: Option<FramePayload>,
}

#[derive(Deserialize)]
struct FramePayload {
    data: Option<FrameData>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FrameData {
    sync_status: Option<StatusData>,
}

#[derive(Deserialize)]
struct StatusData {
    job: Option<JobData>,
}

#[derive(Deserialize)]
struct JobData {
    id: String,
    state: String,
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// What one socket saw of the sync.
#[derive(Default)]
struct Seen {
    status: usize,
    changes: usize,
    /// Commit-to-receipt delays of its `changes` events, microseconds.
    delays_us: Vec<u64>,
    /// Hashes of its events of each subscription in the order they came (each status event's
    /// whole frame; each change event's commit time and data version): equal on sockets that
    /// saw the same events in the same order. The two subscriptions are ordered each on its
    /// own: how their events interleave may differ from socket to socket.
    order: (u64, u64),
}

/// Adds one event to the hash of a sequence of events.
fn then(order: &mut u64, event: impl std::hash::Hash) {
    use std::hash::{BuildHasher as _, BuildHasherDefault, DefaultHasher};
    *order = BuildHasherDefault::<DefaultHasher>::default().hash_one((*order, event));
}

/// What the bench reads of a frame during the sync, found by scanning its text rather than
/// parsing it: with 10,000 sockets a full parse of every frame (a change event lists up to a
/// hundred ids) was most of the bench's own time per frame. The frame is the gateway's
/// `{"type":"next","id":...,"payload":{"data":{...}}}`, and a response's fields come in the order
/// of the query's selection, so the values sit at known places near the start; the values read
/// (ids, states, timestamps) hold no escaped characters. A frame of any other form reads as
/// [`Scanned::Other`] and counts as no event.
#[derive(Debug, PartialEq)]
enum Scanned<'a> {
    /// A `syncStatus` event (subscription `s`) of job `job` (`None` for a location never
    /// synced), in state `state`.
    Status {
        job: Option<&'a str>,
        state: Option<&'a str>,
    },
    /// A `changes` event (subscription `c`): its commit time and data version, as written.
    Change { at: &'a str, data_version: &'a str },
    /// Anything else: keep-alives, errors, completes.
    Other,
}

/// The string value that follows `key` (which ends with the value's opening quote) in `text`.
fn string_after<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let start = text.find(key)? + key.len();
    let len = text[start..].find('"')?;
    Some(&text[start..start + len])
}

fn scan(text: &str) -> Scanned<'_> {
    const STATUS: &str = r#"{"type":"next","id":"s","payload":{"data":{"syncStatus":{"#;
    const CHANGE: &str = r#"{"type":"next","id":"c","payload":{"data":{"changes":{"at":""#;
    if let Some(body) = text.strip_prefix(STATUS) {
        // The job's fields come before its stages' (which have a `state` too).
        let Some(job) = body.find(r#""job":{"id":""#).map(|at| &body[at..]) else {
            return Scanned::Status {
                job: None,
                state: None,
            };
        };
        return Scanned::Status {
            job: string_after(job, r#""job":{"id":""#),
            state: string_after(job, r#""state":""#),
        };
    }
    if let Some(body) = text.strip_prefix(CHANGE) {
        let Some(len) = body.find('"') else {
            return Scanned::Other;
        };
        let (at, rest) = body.split_at(len);
        let Some(version) = rest.strip_prefix(r#"","dataVersion":"#) else {
            return Scanned::Other;
        };
        let digits = version
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(version.len());
        return Scanned::Change {
            at,
            data_version: &version[..digits],
        };
    }
    Scanned::Other
}

/// The next frame the bench reads (pings answered by tungstenite, keep-alives skipped); `None`
/// once the socket ended.
async fn next_frame(socket: &mut Socket) -> Option<(Frame, DateTime<Utc>)> {
    loop {
        match socket.next().await? {
            Ok(Message::Text(text)) => {
                let at = Utc::now();
                let frame: Frame = serde_json::from_str(&text).ok()?;
                if frame.kind == "ping" || frame.kind == "pong" {
                    continue;
                }
                return Some((frame, at));
            }
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => continue,
        }
    }
}

/// Opens a socket, acknowledged and subscribed to both fields; the job of the current state (the
/// first `syncStatus` event).
async fn connect(target: &Target) -> anyhow::Result<(Socket, Option<JobData>)> {
    let mut request = target.ws.as_str().into_client_request()?;
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", "graphql-transport-ws".parse()?);
    // Small buffers on this side too: 10,000 sockets of 128 KiB would not fit the machine.
    let config = WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0);
    let (mut socket, _) =
        tokio_tungstenite::connect_async_with_config(request, Some(config), false).await?;
    let text = |value: serde_json::Value| Message::Text(value.to_string().into());
    socket
        .send(text(json!({ "type": "connection_init", "payload": { "Authorization": format!("Bearer {}", target.key) } })))
        .await?;
    let (ack, _) = next_frame(&mut socket).await.context("no connection_ack")?;
    anyhow::ensure!(
        ack.kind == "connection_ack",
        "expected connection_ack, got {}",
        ack.kind
    );
    let variables = json!({ "loc": target.location });
    socket
        .send(text(json!({ "id": "s", "type": "subscribe", "payload": { "query": STATUS, "variables": variables } })))
        .await?;
    socket
        .send(text(json!({ "id": "c", "type": "subscribe", "payload": { "query": CHANGES, "variables": variables } })))
        .await?;
    let (first, _) = next_frame(&mut socket)
        .await
        .context("no first syncStatus event")?;
    anyhow::ensure!(
        first.kind == "next" && first.id.as_deref() == Some("s"),
        "expected the current state, got a {} frame",
        first.kind
    );
    let job = first
        .payload
        .and_then(|p| p.data)
        .and_then(|d| d.sync_status)
        .and_then(|s| s.job);
    Ok((socket, job))
}

/// Follows the sync on one socket until `stop`: events of jobs other than `before`, and the
/// delays of the `changes` events. Counts the socket in `finished` at the new job's last event.
async fn follow(
    mut socket: Socket,
    before: Option<String>,
    finished: Arc<AtomicUsize>,
    mut stop: watch::Receiver<bool>,
) -> Seen {
    let mut seen = Seen::default();
    // Waited on once for the whole loop: a wait made anew per frame would enter and leave the
    // one list of waiters that all N sockets share, twice per frame.
    let stopped = stop.wait_for(|stop| *stop);
    tokio::pin!(stopped);
    loop {
        let frame = tokio::select! {
            biased;
            frame = socket.next() => frame,
            _ = &mut stopped => break,
        };
        let text = match frame {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(_)) | Err(_)) | None => break,
            Some(Ok(_)) => continue,
        };
        // The clock is read as the frame comes off the socket, before it is read.
        let received = Utc::now();
        match scan(&text) {
            Scanned::Status {
                job: Some(job),
                state,
            } if Some(job) != before.as_deref() => {
                seen.status += 1;
                then(&mut seen.order.0, text.as_str());
                if matches!(state, Some("SUCCEEDED" | "FAILED")) {
                    finished.fetch_add(1, Ordering::SeqCst);
                }
            }
            Scanned::Change { at, data_version } => {
                seen.changes += 1;
                then(&mut seen.order.1, (at, data_version));
                let delay = DateTime::parse_from_rfc3339(at)
                    .map(|at| (received - at.with_timezone(&Utc)).num_microseconds())
                    .ok()
                    .flatten()
                    .unwrap_or(0)
                    .max(0);
                seen.delays_us.push(delay as u64);
            }
            _ => {}
        }
    }
    let _ = socket.close(None).await;
    seen
}

/// Waits until the demo's first FULL sync has ended, on a socket of its own.
async fn first_sync_done(gateway: &Gateway) -> anyhow::Result<()> {
    let (mut socket, job) = connect(&gateway.target).await?;
    let mut state = job.map(|j| j.state);
    let deadline = tokio::time::sleep(Duration::from_secs(600));
    tokio::pin!(deadline);
    while !matches!(state.as_deref(), Some("SUCCEEDED" | "FAILED")) {
        let (frame, _) = tokio::select! {
            frame = next_frame(&mut socket) => frame.context("the socket ended during the first sync")?,
            () = &mut deadline => anyhow::bail!("the demo's first sync took over 10 minutes"),
        };
        if frame.id.as_deref() != Some("s") {
            continue;
        }
        if let Some(job) = frame
            .payload
            .and_then(|p| p.data)
            .and_then(|d| d.sync_status)
            .and_then(|s| s.job)
        {
            state = Some(job.state);
        }
    }
    let _ = socket.close(None).await;
    Ok(())
}

/// One run with `subscribers` sockets on a fresh gateway.
pub async fn run_one(subscribers: usize) -> anyhow::Result<SubscribersResult> {
    let gateway = Gateway::start(subscribers).await?;
    let outcome = measure(&gateway, subscribers).await;
    gateway.stop().await;
    outcome
}

async fn measure(gateway: &Gateway, subscribers: usize) -> anyhow::Result<SubscribersResult> {
    first_sync_done(gateway).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_base_kib = gateway.rss_kib();
    let load_average = load_average();

    let started = Instant::now();
    let gate = Arc::new(Semaphore::new(CONNECTING));
    let mut connecting = Vec::with_capacity(subscribers);
    for _ in 0..subscribers {
        let gate = gate.clone();
        let target = gateway.target.clone();
        connecting.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await?;
            connect(&target).await
        }));
    }
    let mut sockets = Vec::with_capacity(subscribers);
    for task in connecting {
        sockets.push(task.await??);
    }
    let connect_secs = started.elapsed().as_secs_f64();
    eprintln!("bench: {subscribers} subscribers connected in {connect_secs:.1} s");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_idle_kib = gateway.rss_kib();

    let finished = Arc::new(AtomicUsize::new(0));
    let (stop, stopped) = watch::channel(false);
    let followers: Vec<_> = sockets
        .into_iter()
        .map(|(socket, before)| {
            let before = before.map(|job| job.id);
            tokio::spawn(follow(socket, before, finished.clone(), stopped.clone()))
        })
        .collect();
    let sync_started = Instant::now();
    let gateway_pid = gateway.pid.to_string();
    let cpu_before = (cpu_secs_of(&gateway_pid), cpu_secs_of("self"));
    gateway.refresh().await?;
    let mut rss_peak_kib = gateway.rss_kib();
    let deadline = sync_started + Duration::from_secs(600);
    while finished.load(Ordering::SeqCst) < subscribers && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        rss_peak_kib = rss_peak_kib.max(gateway.rss_kib());
    }
    let sync_secs = sync_started.elapsed().as_secs_f64();
    let gateway_cpu_secs = cpu_secs_of(&gateway_pid) - cpu_before.0;
    let client_cpu_secs = cpu_secs_of("self") - cpu_before.1;
    // Change events committed before the final status event may still be on their way.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let _ = stop.send(true);
    let mut seen = Vec::with_capacity(subscribers);
    for task in followers {
        seen.push(task.await?);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_closed_kib = gateway.rss_kib();
    let open_after_close = gateway.open_sockets().await.unwrap_or(f64::NAN);
    eprintln!(
        "bench: {subscribers} subscribers closed; waiting {} s for the gateway's memory",
        SETTLE.as_secs()
    );
    tokio::time::sleep(SETTLE).await;
    let rss_settled_kib = gateway.rss_kib();

    let range = |f: fn(&Seen) -> usize| {
        let min = seen.iter().map(f).min().unwrap_or(0);
        let max = seen.iter().map(f).max().unwrap_or(0);
        (min, max)
    };
    let status_events = range(|s| s.status);
    let change_events = range(|s| s.changes);
    let all = |s: &&Seen| s.status == status_events.1 && s.changes == change_events.1;
    // The order the most sockets with every event saw.
    let mut orders = std::collections::HashMap::<(u64, u64), usize>::new();
    for s in seen.iter().filter(all) {
        *orders.entry(s.order).or_default() += 1;
    }
    let order = orders.into_iter().max_by_key(|&(_, n)| n).map(|(o, _)| o);
    let complete = seen
        .iter()
        .filter(all)
        .filter(|s| Some(s.order) == order)
        .count();
    let reordered = seen.iter().filter(all).count() - complete;
    let mut delays = Histogram::<u64>::new(3)?;
    for s in &seen {
        for &d in &s.delays_us {
            delays.record(d.max(1))?;
        }
    }
    let ms = |us: u64| us as f64 / 1000.0;
    Ok(SubscribersResult {
        subscribers,
        connect_secs,
        sync_secs,
        status_events,
        change_events,
        complete,
        reordered,
        delay_p50_ms: ms(delays.value_at_quantile(0.50)),
        delay_p99_ms: ms(delays.value_at_quantile(0.99)),
        delay_max_ms: ms(delays.max()),
        rss_base_kib,
        rss_idle_kib,
        rss_peak_kib,
        rss_closed_kib,
        rss_settled_kib,
        open_after_close,
        gateway_cpu_secs,
        client_cpu_secs,
        load_average,
    })
}

/// The heading of this section in BENCHMARKS.md.
pub const HEADING: &str = "## Subscribers at scale (issue 20)";

/// Runs the section: a fresh gateway per subscriber count.
pub async fn run(quick: bool) -> anyhow::Result<Vec<SubscribersResult>> {
    let limit = raise_open_files();
    let counts: &[usize] = if quick { &QUICK_COUNTS } else { &COUNTS };
    let mut results = Vec::new();
    for &n in counts {
        // Two descriptors per socket in the gateway's process and in this one, plus room.
        if (limit as usize) < n + 256 {
            eprintln!("bench: {n} subscribers skipped: the open-file limit is {limit}");
            continue;
        }
        eprintln!(
            "bench: {n} subscribers on one location during a FULL sync of {CONTACTS} contacts"
        );
        let r = run_one(n).await?;
        eprintln!(
            "bench: {n} subscribers: connected in {:.1} s; events {:?} status, {:?} changes, {} complete, {} in another order; delay p50 {:.1} ms p99 {:.1} ms; CPU in the sync {:.1} s gateway, {:.1} s bench in {:.1} s (load average {:.2}); RSS {} -> {} -> {} -> {} -> {} MiB",
            r.connect_secs,
            r.status_events,
            r.change_events,
            r.complete,
            r.reordered,
            r.delay_p50_ms,
            r.delay_p99_ms,
            r.gateway_cpu_secs,
            r.client_cpu_secs,
            r.sync_secs,
            r.load_average,
            r.rss_base_kib / 1024,
            r.rss_idle_kib / 1024,
            r.rss_peak_kib / 1024,
            r.rss_closed_kib / 1024,
            r.rss_settled_kib / 1024,
        );
        results.push(r);
    }
    Ok(results)
}

/// The section as Markdown: a table of the figures, the targets and how they were met.
pub fn markdown(results: &[SubscribersResult]) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{HEADING}\n\nThe gateway in its own process (`ghl-gateway demo`: one location of {CONTACTS} \
         contacts, SQLite, GHL's latency and limits); N graphql-transport-ws sockets from the bench \
         process with the demo's API key, each subscribed to the location's `syncStatus` and \
         `changes`; then a FULL sync. Delay: a `changes` event's commit time (`at`, taken after the \
         commit, just before the event is published) to its receipt (the bench's clock read as the \
         frame comes off the socket, before it is read). Order: a socket counts among those with \
         every event when it got as many of each kind as the most any socket got, in the same \
         order (a hash of each subscription's events in arrival order) as the most sockets. CPU: \
         user + system time of the gateway's \
         process and of the bench's (which holds every client socket) during the sync; both share \
         the machine's cores. Load: the 1-minute load average as the sockets connect. RSS: the \
         gateway's `VmRSS`.\n"
    );
    let _ = writeln!(
        s,
        "| subscribers | load | connect | sync | CPU in the sync: gateway / bench | status events / socket | change events / socket | sockets with every event, in order | delay p50 / p99 / max | RSS before | idle | peak | closed | +{} s | per idle socket | open after close |",
        SETTLE.as_secs()
    );
    let _ = writeln!(
        s,
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    let mib = |kib: u64| format!("{:.0} MiB", kib as f64 / 1024.0);
    let range = |(min, max): (usize, usize)| {
        if min == max {
            format!("{max}")
        } else {
            format!("{min}-{max}")
        }
    };
    for r in results {
        let _ = writeln!(
            s,
            "| {} | {:.2} | {:.1} s | {:.1} s | {:.1} s / {:.1} s | {} | {} | {} | {:.1} / {:.1} / {:.1} ms | {} | {} | {} | {} | {} | {:.1} KiB | {} |",
            r.subscribers,
            r.load_average,
            r.connect_secs,
            r.sync_secs,
            r.gateway_cpu_secs,
            r.client_cpu_secs,
            range(r.status_events),
            range(r.change_events),
            r.complete,
            r.delay_p50_ms,
            r.delay_p99_ms,
            r.delay_max_ms,
            mib(r.rss_base_kib),
            mib(r.rss_idle_kib),
            mib(r.rss_peak_kib),
            mib(r.rss_closed_kib),
            mib(r.rss_settled_kib),
            r.idle_kib_per_subscriber(),
            r.open_after_close,
        );
    }
    let _ = writeln!(s, "\n| target | measured | status |\n| --- | --- | --- |");
    let status = |ok: bool| if ok { "met" } else { "**missed**" };
    for r in results {
        let n = r.subscribers;
        let per = r.idle_kib_per_subscriber();
        let _ = writeln!(
            s,
            "| {n}: RSS per idle subscriber <= 20 KiB above the baseline | {per:.1} KiB | {} |",
            status(per <= 20.0)
        );
        let ratio = r.settled_ratio();
        let _ = writeln!(
            s,
            "| {n}: RSS within 20% of the baseline {} s after the sockets close | {:.0}% of it | {} |",
            SETTLE.as_secs(),
            ratio * 100.0,
            status(ratio <= 1.2)
        );
        let _ = writeln!(
            s,
            "| {n}: delivery delay p99 <= 250 ms | {:.1} ms | {} |",
            r.delay_p99_ms,
            status(r.delay_p99_ms <= 250.0)
        );
        let _ = writeln!(
            s,
            "| {n}: every event to every socket, in the same order | {} of {n} sockets got all {} + {} in the same order | {} |",
            r.complete,
            r.status_events.1,
            r.change_events.1,
            status(r.complete == n && r.status_events.0 > 0)
        );
    }
    s
}

/// Puts `section` (which starts with [`HEADING`]) into the Markdown file at `path`, in place of
/// the section of that heading or at its end ([`super::report::write_section`]).
pub fn write_section(path: &std::path::Path, section: &str) -> anyhow::Result<()> {
    super::report::write_section(path, HEADING, section)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scan_reads_what_a_parse_would() {
        let status = r#"{"type":"next","id":"s","payload":{"data":{"syncStatus":{"locationId":"loc","job":{"id":"j1","state":"RUNNING","mode":"FULL","stages":[{"name":"contacts","state":"SUCCEEDED","fetched":3}]},"freshness":null}}}}"#;
        assert_eq!(
            scan(status),
            Scanned::Status {
                job: Some("j1"),
                state: Some("RUNNING")
            }
        );
        let never = r#"{"type":"next","id":"s","payload":{"data":{"syncStatus":{"locationId":"loc","job":null,"freshness":null}}}}"#;
        assert_eq!(
            scan(never),
            Scanned::Status {
                job: None,
                state: None
            }
        );
        let change = r#"{"type":"next","id":"c","payload":{"data":{"changes":{"at":"2026-11-30T05:00:00.123456Z","dataVersion":42,"kind":"CONTACT","op":"UPSERT","ids":["a"],"source":"SYNC"}}}}"#;
        assert_eq!(
            scan(change),
            Scanned::Change {
                at: "2026-11-30T05:00:00.123456Z",
                data_version: "42"
            }
        );
        // An error, another subscription's event, a protocol frame: no event.
        let error =
            r#"{"type":"next","id":"c","payload":{"data":null,"errors":[{"message":"x"}]}}"#;
        assert_eq!(scan(error), Scanned::Other);
        assert_eq!(scan(r#"{"type":"complete","id":"c"}"#), Scanned::Other);
        assert_eq!(scan(r#"{"type":"ping"}"#), Scanned::Other);
    }

    #[test]
    fn the_order_of_events_tells_sockets_apart() {
        let (mut a, mut b, mut c) = (0, 0, 0);
        for order in [&mut a, &mut b] {
            then(order, ("t1", "1"));
            then(order, ("t2", "2"));
        }
        then(&mut c, ("t2", "2"));
        then(&mut c, ("t1", "1"));
        assert_eq!(a, b);
        assert_ne!(a, c);
    }
}
