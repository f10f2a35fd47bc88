//! The migrations runner. The migrations themselves live in the top-level `migrations/` folder,
//! one file per migration, named `mYYYYMMDD_NNNNNN_what.rs`; they are append-only.

use sea_orm::DatabaseConnection;
use sea_orm_migration::{MigrationTrait, MigratorTrait};

use super::StoreError;

#[path = "../../migrations/m20261128_000001_cache_schema.rs"]
mod m20261128_000001_cache_schema;
#[path = "../../migrations/m20261128_000002_api_keys.rs"]
mod m20261128_000002_api_keys;
#[path = "../../migrations/m20261128_000003_sync_metrics.rs"]
mod m20261128_000003_sync_metrics;
#[path = "../../migrations/m20261201_000004_failures_reset.rs"]
mod m20261201_000004_failures_reset;
#[path = "../../migrations/m20261202_000005_contact_search_text.rs"]
mod m20261202_000005_contact_search_text;
#[path = "../../migrations/m20261203_000006_webhook_events.rs"]
mod m20261203_000006_webhook_events;
#[path = "../../migrations/m20261204_000007_stage_read_times.rs"]
mod m20261204_000007_stage_read_times;
#[path = "../../migrations/m20261205_000008_cluster_events.rs"]
mod m20261205_000008_cluster_events;
#[path = "../../migrations/m20261206_000009_live_row_indexes.rs"]
mod m20261206_000009_live_row_indexes;

struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261128_000001_cache_schema::Migration),
            Box::new(m20261128_000002_api_keys::Migration),
            Box::new(m20261128_000003_sync_metrics::Migration),
            Box::new(m20261201_000004_failures_reset::Migration),
            Box::new(m20261202_000005_contact_search_text::Migration),
            Box::new(m20261203_000006_webhook_events::Migration),
            Box::new(m20261204_000007_stage_read_times::Migration),
            Box::new(m20261205_000008_cluster_events::Migration),
            Box::new(m20261206_000009_live_row_indexes::Migration),
        ]
    }
}

pub(super) async fn run(db: &DatabaseConnection) -> Result<(), StoreError> {
    Migrator::up(db, None).await?;
    Ok(())
}
