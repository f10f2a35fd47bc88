//! `ghl-gateway sim`: the GHL API simulator alone, until SIGINT or SIGTERM.

pub use crate::sim::SimArgs;

/// Runs the simulator with `args` until stopped.
pub async fn run(args: SimArgs) -> anyhow::Result<()> {
    crate::sim::run(args, super::shutdown_signal()).await
}
