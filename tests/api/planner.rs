//! The database's query planner sees the tables as a sync left them: on PostgreSQL a large
//! successful job ends with `VACUUM (ANALYZE)` (without it, the first reads after a first sync were
//! planned for empty tables: 20-30 ms statements instead of 0.1-0.3 ms at 10,000 contacts), and a
//! location's live rows are counted from an index.

use ghl_gateway::sync::SyncMode;
use sea_orm::{ConnectionTrait, DbBackend, Statement};
use std::time::Duration;

use crate::helpers::*;

/// Manual vacuums and analyzes of `contacts` so far (PostgreSQL's statistics views), from a fresh
/// snapshot of the statistics rather than one cached earlier.
async fn maintenance_of_contacts(app: &TestApp) -> (i64, i64) {
    app.store
        .connection()
        .execute_unprepared("SELECT pg_stat_clear_snapshot()")
        .await
        .unwrap();
    let row = app
        .store
        .connection()
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT vacuum_count, analyze_count FROM pg_stat_user_tables WHERE relname = 'contacts'",
        ))
        .await
        .unwrap()
        .unwrap();
    (
        row.try_get_by_index(0).unwrap(),
        row.try_get_by_index(1).unwrap(),
    )
}

/// The counters as another backend sees them: statistics reach the shared views within about a
/// second of the transaction that made them, so this waits up to 10 s for `wanted` to hold.
async fn maintenance_when(app: &TestApp, wanted: impl Fn((i64, i64)) -> bool) -> (i64, i64) {
    let mut seen = maintenance_of_contacts(app).await;
    for _ in 0..100 {
        if wanted(seen) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        seen = maintenance_of_contacts(app).await;
    }
    seen
}

#[tokio::test]
async fn a_large_sync_refreshes_postgres_statistics_and_a_small_one_does_not() {
    for db in databases().await {
        if db.name != "postgres" {
            continue;
        }
        let sim = spawn_sim(1_200).await;
        let app = spawn_app_with_sim(&db.url, &sim).await;
        let loc = sim.locations[0].id.clone();
        let before = maintenance_of_contacts(&app).await;

        full_sync_to_end(&app, &loc).await;
        let after_full = maintenance_when(&app, |(v, a)| v > before.0 && a > before.1).await;
        assert!(
            after_full.0 > before.0 && after_full.1 > before.1,
            "a FULL sync of 1,200 contacts vacuums and analyzes: {before:?} -> {after_full:?}"
        );

        // An INCREMENTAL run (it re-reads tasks and opportunities, over 1,000 rows here) leaves
        // the statistics to autovacuum.
        app.sync
            .refresh(&loc, SyncMode::Incremental)
            .await
            .expect("the sync starts");
        assert!(app.sync.wait_idle(&loc, Duration::from_secs(120)).await);
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        assert_eq!(maintenance_of_contacts(&app).await, after_full);
    }
}

#[tokio::test]
async fn a_location_s_live_rows_are_counted_from_an_index() {
    for db in databases().await {
        let app = spawn_app(&db.url).await;
        let backend = app.store.backend();
        let (sql, expected) = match backend {
            DbBackend::Postgres => (
                "EXPLAIN SELECT COUNT(*) FROM contacts WHERE location_id = 'loc' AND deleted = false",
                "Index Only Scan using contacts_location_live_seen",
            ),
            _ => (
                "EXPLAIN QUERY PLAN SELECT COUNT(*) FROM contacts WHERE location_id = 'loc' AND deleted = false",
                "COVERING INDEX contacts_location_live_seen",
            ),
        };
        if backend == DbBackend::Postgres {
            // PostgreSQL plans by its statistics: a location of some size among others,
            // vacuumed and analyzed as a sync leaves them.
            app.store
                .connection()
                .execute_unprepared(
                    "INSERT INTO contacts (id, location_id, date_added, date_updated) \
                     SELECT 'c' || g, CASE WHEN g % 10 = 0 THEN 'loc' ELSE 'other' END, g, g \
                     FROM generate_series(1, 20000) AS g",
                )
                .await
                .unwrap();
            app.store.refresh_planner_statistics().await.unwrap();
        }
        let rows = app
            .store
            .connection()
            .query_all_raw(Statement::from_string(backend, sql))
            .await
            .unwrap();
        let plan: Vec<String> = rows
            .iter()
            .map(|row| {
                row.try_get_by_index::<String>(0)
                    .or_else(|_| row.try_get_by_index::<String>(3))
                    .unwrap_or_default()
            })
            .collect();
        assert!(
            plan.iter().any(|line| line.contains(expected)),
            "{}: {plan:?}",
            db.name
        );
    }
}
