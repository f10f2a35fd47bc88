//! `ghl-gateway bench`: the benchmark suite ([`crate::bench`]), which writes BENCHMARKS.md.

pub use crate::bench::BenchArgs;

/// Runs the suite with `args`.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    crate::bench::run(args).await
}
