//! The `ghl-gateway` binary: parse the command line, set up logging, run the command.

use clap::Parser;
use ghl_gateway::cli::{Cli, Command};
use ghl_gateway::telemetry;

fn main() -> anyhow::Result<()> {
    cap_malloc_arenas();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run())
}

/// Caps glibc's malloc arenas at the machine's cores (at least 2), before any thread starts,
/// unless `MALLOC_ARENA_MAX` says otherwise.
///
/// glibc gives each thread that meets a busy arena a new one, up to 8 per core, and keeps what
/// each arena once held: the sync's threads (tokio's workers and one per SQLite connection) each
/// kept a few MB, so a FULL sync of 100,000 contacts peaked at 110-114 MiB of RSS while its heap
/// never held more than 43 MB (heaptrack). With two arenas the same sync peaked at 92 MiB
/// (issue 15; `MALLOC_ARENA_MAX=2`, same machine). Threads still allocate without a lock from
/// their own small caches (glibc's tcache).
fn cap_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        // SAFETY: mallopt only sets a tunable of the allocator; no thread has started yet.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, cores.max(2) as libc::c_int);
        }
    }
}

async fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // `schema` prints data to stdout and logs nothing.
    if !matches!(cli.command, Command::Schema) {
        telemetry::init(cli.log_format);
    }
    cli.command.run().await
}
