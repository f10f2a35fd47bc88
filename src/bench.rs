//! The benchmark suite (`ghl-gateway bench`, `bench/run`): the read path and the sync path,
//! each side by side with the seed's original design in the same run, so that ratios hold on a
//! noisy machine. Prints a Markdown report and writes it to `BENCHMARKS.md`.
//!
//! - `load`: a closed-loop keep-alive HTTP load generator with HDR-histogram percentiles
//! - `read`: the gateway and the N+1 baseline over one cache (SQLite, and PostgreSQL when there)
//! - `sync`: FULL/INCREMENTAL syncs in worker processes against `ghl-gateway sim` with GHL's real
//!   limits, and the seed's sequential per-contact sync
//! - `webhooks`: signed GHL events ingested per second, and simulator admin writes timed until
//!   GraphQL shows them
//! - `simproc`: the simulator as a child process
//! - `report`: the machine's description and the Markdown report (BENCHMARKS.md)
//! - `reliability`: FULL syncs killed at seeded random points under GHL's faults, GHL changing
//!   between kills (the harness the CI test runs small)
//! - `subscribers`: N WebSocket subscribers on a gateway in a child process during a FULL sync
//!   (connect time, events per socket, delivery delay, the gateway's memory per socket)
//!
//! This is a command, not a test: it takes minutes and its numbers depend on the machine.

pub mod load;
pub mod read;
pub mod reliability;
pub mod replicas;
mod report;
pub mod simproc;
pub mod subscribers;
pub mod sync;
pub mod webhooks;
pub mod wrk;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use self::read::{BackendResult, Durations};
use self::report::{Report, machine};
use self::simproc::{SimProcess, SimSpec};
use self::sync::{FullCase, SeedResult};

/// Settings of `ghl-gateway bench`.
#[derive(Clone, Debug, clap::Args)]
pub struct BenchArgs {
    /// A shorter run (about 5 minutes): 1 s per load point instead of 3, no 100k-contact sync,
    /// the seed design at 200 contacts instead of 1,000.
    #[arg(long, env = "BENCH_QUICK")]
    pub quick: bool,
    /// Where to write the Markdown report.
    #[arg(long, env = "BENCH_OUT", default_value = "BENCHMARKS.md")]
    pub out: PathBuf,
    /// Which part to run: `all`, `read`, `sync`, `webhooks`, `subscribers`, `reliability` or
    /// `replicas` (`subscribers`, `reliability` and `replicas` alone put their own section into
    /// `--out` and leave the others as they are; `all` does not run `reliability`, which takes
    /// minutes of its own).
    #[arg(long, env = "BENCH_ONLY", value_enum, default_value_t = Part::All)]
    pub only: Part,
    /// A PostgreSQL server to benchmark the read path on as well (a fresh database is created and
    /// dropped). Without it, a server answering on 127.0.0.1:5432 is used as the postgres user.
    #[arg(long, env = "TEST_DATABASE_URL")]
    pub postgres_url: Option<String>,
    /// Do not benchmark PostgreSQL even when a server answers.
    #[arg(long, env = "BENCH_NO_POSTGRES")]
    pub no_postgres: bool,
    /// Internal: run one sync worker from this JSON spec and print its result (the bench starts
    /// these child processes itself).
    #[arg(long, env = "BENCH_WORKER", hide = true)]
    pub worker: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Part {
    All,
    Read,
    Sync,
    Webhooks,
    Subscribers,
    Reliability,
    /// Three replicas on PostgreSQL (needs a server; writes its own section).
    Replicas,
}

/// The command: runs the worker when asked to, the suite otherwise.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    if let Some(spec) = &args.worker {
        return sync::worker(spec).await;
    }
    if args.only == Part::Subscribers {
        let results = subscribers::run(args.quick).await?;
        let section = subscribers::markdown(&results);
        println!("{section}");
        subscribers::write_section(&args.out, &section)?;
        eprintln!(
            "bench: wrote the subscribers section into {}",
            args.out.display()
        );
        return Ok(());
    }
    if args.only == Part::Reliability {
        let started = Instant::now();
        // Read before the run: the load average at its start.
        let machine = machine();
        let results = reliability::run_section(&args).await?;
        let section = reliability::markdown(&results, &machine);
        println!("{section}");
        report::write_section(&args.out, reliability::HEADING, &section)?;
        eprintln!(
            "bench: wrote the reliability section into {} in {:.0} s",
            args.out.display(),
            started.elapsed().as_secs_f64()
        );
        return Ok(());
    }
    if args.only == Part::Replicas {
        let section = replica_section(&args)
            .await?
            .context("the replicas section needs PostgreSQL (TEST_DATABASE_URL)")?;
        println!("{section}");
        replicas::write_section(&args.out, &section)?;
        eprintln!(
            "bench: wrote the replicas section into {}",
            args.out.display()
        );
        return Ok(());
    }
    let started = Instant::now();
    let machine = machine();
    eprintln!("bench: {}", machine.replace('\n', "; "));
    let mut report = Report {
        quick: args.quick,
        machine,
        ..Default::default()
    };
    let runs = |part: Part| args.only == Part::All || args.only == part;
    if runs(Part::Read) {
        report.read = read_path(&args).await?;
    }
    if runs(Part::Sync) {
        let (full, seed) = sync_path(&args).await?;
        report.full = full;
        report.seed = Some(seed);
    }
    if runs(Part::Webhooks) {
        report.webhooks = webhook_path(&args).await?;
    }
    let subscribers = if args.only == Part::All {
        Some(subscribers::run(args.quick).await?)
    } else {
        None
    };
    let replica = if args.only == Part::All {
        replica_section(&args).await?
    } else {
        None
    };
    report.elapsed = started.elapsed();
    let mut markdown = report.markdown();
    if let Some(results) = subscribers {
        markdown = format!(
            "{}

{}",
            markdown.trim_end(),
            subscribers::markdown(&results)
        );
    }
    if let Some(section) = replica {
        markdown = format!("{}\n\n{}", markdown.trim_end(), section.trim_end());
    }
    println!("{markdown}");
    std::fs::write(&args.out, &markdown)
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    eprintln!(
        "bench: wrote {} in {:.0} s",
        args.out.display(),
        report.elapsed.as_secs_f64()
    );
    Ok(())
}

fn durations(quick: bool) -> Durations {
    if quick {
        Durations {
            warmup: Duration::from_millis(300),
            run: Duration::from_secs(1),
        }
    } else {
        Durations {
            warmup: Duration::from_millis(500),
            run: Duration::from_secs(3),
        }
    }
}

pub const CONCURRENCIES: [usize; 4] = [1, 8, 32, 128];
pub const PAGE_SIZES: [usize; 2] = [50, 500];
/// Concurrency of the reads measured during a sync.
pub const DURING_SYNC_CONCURRENCY: usize = 8;
/// Concurrency of the warm runs by content coding.
pub const CODINGS_CONCURRENCY: usize = 32;
const READ_CONTACTS: usize = 10_000;

/// The PostgreSQL admin URL to use, if any.
async fn postgres_admin_url(args: &BenchArgs) -> Option<String> {
    if args.no_postgres {
        return None;
    }
    if let Some(url) = &args.postgres_url {
        return Some(url.clone());
    }
    let probe = tokio::time::timeout(
        Duration::from_secs(1),
        tokio::net::TcpStream::connect("127.0.0.1:5432"),
    )
    .await;
    matches!(probe, Ok(Ok(_))).then(|| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

async fn read_path(args: &BenchArgs) -> anyhow::Result<Vec<BackendResult>> {
    let d = durations(args.quick);
    let sim = SimProcess::start(SimSpec::unthrottled(READ_CONTACTS)).await?;
    let mut results = Vec::new();

    let (dir, databases) = bench_databases(args, "read").await?;
    for db in databases {
        eprintln!(
            "bench: read path on {}: filling {READ_CONTACTS} contacts",
            db.backend
        );
        let outcome = read_backend(&db.backend, &db.url, &sim, &d).await;
        db.drop().await;
        results.push(outcome?);
    }
    let _ = std::fs::remove_dir_all(&dir);
    sim.stop().await;
    Ok(results)
}

/// A database the bench fills and then drops: SQLite in a temporary directory, and a fresh
/// PostgreSQL database when a server is there.
struct BenchDatabase {
    backend: String,
    url: String,
    /// The admin URL and name of a PostgreSQL database to drop afterwards.
    drop: Option<(String, String)>,
}

impl BenchDatabase {
    async fn drop(self) {
        use sea_orm::{ConnectionTrait, Database};
        if let Some((admin_url, name)) = self.drop
            && let Ok(admin) = Database::connect(&admin_url).await
        {
            let _ = admin
                .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .await;
        }
    }
}

/// The databases of one bench section (`name` names the SQLite file), and the temporary
/// directory to remove after them.
async fn bench_databases(
    args: &BenchArgs,
    name: &str,
) -> anyhow::Result<(PathBuf, Vec<BenchDatabase>)> {
    use sea_orm::{ConnectionTrait, Database};
    let dir = std::env::temp_dir().join(format!("ghl-bench-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir)?;
    let mut databases = vec![BenchDatabase {
        backend: "SQLite".to_owned(),
        url: format!(
            "sqlite://{}?mode=rwc",
            dir.join(format!("{name}.db")).display()
        ),
        drop: None,
    }];
    if let Some(admin_url) = postgres_admin_url(args).await {
        let db_name = format!("ghl_bench_{}", uuid::Uuid::new_v4().simple());
        match Database::connect(&admin_url).await {
            Ok(admin) => {
                admin
                    .execute_unprepared(&format!("CREATE DATABASE {db_name}"))
                    .await
                    .context("cannot create the PostgreSQL bench database")?;
                let _ = admin.close().await;
                let mut url = reqwest::Url::parse(&admin_url)?;
                url.set_path(&db_name);
                databases.push(BenchDatabase {
                    backend: "PostgreSQL".to_owned(),
                    url: url.to_string(),
                    drop: Some((admin_url, db_name)),
                });
            }
            Err(error) => eprintln!("bench: PostgreSQL skipped: {error}"),
        }
    }
    Ok((dir, databases))
}

/// The replicas section on a fresh PostgreSQL database, in Markdown; `None` without a server.
async fn replica_section(args: &BenchArgs) -> anyhow::Result<Option<String>> {
    let (dir, databases) = bench_databases(args, "replicas").await?;
    let mut section = None;
    for db in databases {
        if db.backend == "PostgreSQL" {
            eprintln!("bench: three replicas on PostgreSQL");
            let load = std::fs::read_to_string("/proc/loadavg")
                .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
                .unwrap_or_default();
            let outcome = replicas::run(&db.url, args.quick).await;
            db.drop().await;
            let r = outcome?;
            eprintln!(
                "bench: replicas: write on A to miss on C p50 {:.1} ms p99 {:.1} ms ({} never)",
                r.delay_p50_ms, r.delay_p99_ms, r.never
            );
            section = Some(replicas::markdown(&r, &load));
        } else {
            db.drop().await;
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(section)
}

/// The webhook section on each database: events ingested per second, and admin writes visible
/// through GraphQL.
async fn webhook_path(args: &BenchArgs) -> anyhow::Result<Vec<webhooks::WebhookResult>> {
    let (dir, databases) = bench_databases(args, "webhooks").await?;
    let mut results = Vec::new();
    for db in databases {
        eprintln!("bench: webhooks on {}", db.backend);
        let outcome = webhooks::backend(&db.backend, &db.url, args.quick).await;
        db.drop().await;
        let r = outcome?;
        eprintln!(
            "bench: {} webhooks: {:.0} events/s (p50 {:.2} ms, p99 {:.2} ms, {} refused); admin write visible p50 {:.1} ms p99 {:.1} ms ({} of {} not visible)",
            r.backend,
            r.events_per_sec(),
            r.p50_ms,
            r.p99_ms,
            r.refused,
            r.visible_p50_ms,
            r.visible_p99_ms,
            r.invisible,
            r.writes
        );
        results.push(r);
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(results)
}

async fn read_backend(
    backend: &str,
    url: &str,
    sim: &SimProcess,
    d: &Durations,
) -> anyhow::Result<BackendResult> {
    let setup = read::setup(
        backend,
        url,
        &sim.base_url,
        &sim.location_id,
        &sim.pit_token,
    )
    .await?;
    eprintln!(
        "bench: {backend}: {} contacts synced in {:.1} s",
        setup.contacts, setup.fill_secs
    );
    let mut points = Vec::new();
    for first in PAGE_SIZES {
        for concurrency in CONCURRENCIES {
            for design in read::DESIGNS {
                let p = setup.point(design, first, concurrency, d).await?;
                eprintln!(
                    "bench: {backend} {design:5} first={first:3} c={concurrency:3}: {:8.1} req/s p50 {:.2} ms p99 {:.2} ms, {} statements, hits {}",
                    p.load.rps(),
                    p.load.p50_ms,
                    p.load.p99_ms,
                    p.statements,
                    p.hit_ratio
                        .map_or("-".to_owned(), |r| format!("{:.0}%", r * 100.0)),
                );
                points.push(p);
            }
        }
    }
    let (idle, during, syncs, hit_ratio) = setup.during_sync(DURING_SYNC_CONCURRENCY, d).await?;
    eprintln!(
        "bench: {backend} reads during FULL syncs ({syncs} ran): p99 {:.2} ms vs {:.2} ms idle",
        during.p99_ms, idle.p99_ms
    );
    let codings = setup.codings(CODINGS_CONCURRENCY, d).await?;
    for c in &codings {
        eprintln!(
            "bench: {backend} warm {:8}: {} / {} bytes (50 / 500 contacts), {:.1} req/s p99 {:.2} ms",
            c.coding,
            c.bytes_50,
            c.bytes_500,
            c.load.rps(),
            c.load.p99_ms
        );
    }
    let cache_bytes = points.iter().map(|p| p.cache_bytes).max().unwrap_or(0);
    Ok(BackendResult {
        backend: backend.to_owned(),
        contacts: setup.contacts,
        fill_secs: setup.fill_secs,
        points,
        idle,
        during_sync: during,
        syncs_during: syncs,
        during_sync_hit_ratio: hit_ratio,
        external: setup.external,
        cache_bound_bytes: crate::cache::CacheConfig::default().response_cache_mb << 20,
        cache_bytes,
        codings,
    })
}

async fn sync_path(args: &BenchArgs) -> anyhow::Result<(Vec<FullCase>, SeedResult)> {
    let sizes: &[usize] = if args.quick {
        &[1_000, 10_000]
    } else {
        &[1_000, 10_000, 100_000]
    };
    let seed_size = if args.quick { 200 } else { 1_000 };
    // The seed design waits on latency, not on CPU: it runs beside the FULL syncs, each against
    // its own simulator (its own rate-limit bucket), which keeps the run under 15 minutes.
    let seed = tokio::spawn(async move {
        let r = sync::seed_case(seed_size).await;
        eprintln!("bench: seed design at {seed_size} contacts done");
        r
    });
    let mut cases = Vec::new();
    for &n in sizes {
        eprintln!("bench: FULL sync of {n} contacts against GHL's real limits");
        let case = sync::full_case(n, n == 10_000).await?;
        eprintln!(
            "bench: {n}: {} calls (minimum {}), {:.1} s (bound {:.1} s), {} 429s, peak RSS {} MiB",
            case.sim_calls,
            case.minimum_calls,
            case.wall_secs,
            case.bound_secs,
            case.sim_429,
            case.worker.peak_rss_kib / 1024
        );
        cases.push(case);
    }
    let seed = seed.await??;
    Ok((cases, seed))
}
