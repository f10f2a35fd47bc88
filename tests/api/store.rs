//! The store API: migrations, bulk upserts, reconciliation of deleted rows.

use ghl_gateway::domain::{Contact, CustomFieldValue, JobState, Resource, SyncStage, from_ms};
use ghl_gateway::store::{ContactFilter, ContactOrder, DatabaseConfig, Page, Store};
use sea_orm::{EntityTrait, PaginatorTrait};

use crate::helpers::*;

#[tokio::test]
async fn migrations_are_idempotent() {
    for db in databases().await {
        db.store.migrate().await.expect("a second run is a no-op");
        db.store.ping().await.unwrap();
    }
}

fn contact(location: &str, i: usize, tags: &[&str]) -> Contact {
    Contact {
        id: format!("{location}-c{i}"),
        location_id: location.into(),
        first_name: Some(format!("First{i}")),
        email: Some(format!("c{i}@example.com")),
        tags: tags.iter().map(|t| t.to_string()).collect(),
        custom_fields: vec![CustomFieldValue {
            field_id: "cf".into(),
            value: serde_json::json!({ "i": i }),
        }],
        date_added: chrono::DateTime::from_timestamp_millis(1_700_000_000_000 + i as i64).unwrap(),
        date_updated: chrono::DateTime::from_timestamp_millis(1_700_000_000_000).unwrap(),
        ..Default::default()
    }
}

/// Statements a bulk write of `n` rows (or keys) takes: one per 128, then one per power of two
/// left (the store's few fixed statement shapes, so that sqlx's per-connection cache of prepared
/// statements stays bounded whatever the pages hold).
fn bulk_statements(n: u64) -> u64 {
    n / 128 + u64::from((n % 128).count_ones())
}

#[tokio::test]
async fn a_page_is_written_in_statements_of_a_few_fixed_shapes() {
    for db in databases().await {
        let store = &db.store;
        let mut counts = Vec::new();
        let mut expected = Vec::new();
        for (offset, size) in [(0u64, 10u64), (1_000, 100), (2_000, 500)] {
            let page: Vec<Contact> = (offset..offset + size)
                .map(|i| contact("loc", i as usize, &["a", "b"]))
                .collect();
            let before = store.statements();
            store
                .write_page("loc", 1, Page::Contacts(&page), None)
                .await
                .unwrap();
            counts.push(store.statements() - before);
            // contacts, delete their tags, delete their values, insert 2 tags each, insert values
            expected.push(4 * bulk_statements(size) + bulk_statements(2 * size));
        }
        assert_eq!(counts, expected, "{}: statements per page", db.name);
        assert_eq!(expected, [10, 15, 38]);
        let rows = ghl_gateway::store::entities::contact::Entity::find()
            .count(store.connection())
            .await
            .unwrap();
        assert_eq!(rows, 610, "{}", db.name);
    }
}

#[tokio::test]
async fn upserts_replace_rows_and_their_tags() {
    for db in databases().await {
        let store = &db.store;
        let first: Vec<Contact> = (0..3)
            .map(|i| contact("loc", i, &["old", "both"]))
            .collect();
        store
            .write_page("loc", 1, Page::Contacts(&first), None)
            .await
            .unwrap();
        let mut second = first.clone();
        second[0].first_name = Some("Renamed".into());
        second[0].tags = vec!["both".into(), "new".into(), "new".into()];
        store
            .write_page("loc", 1, Page::Contacts(&second[..1]), None)
            .await
            .unwrap();

        let tagged = |tag: &str| ContactFilter {
            tag: Some(tag.into()),
            ..Default::default()
        };
        assert_eq!(
            store.count_contacts("loc", &tagged("old")).await.unwrap(),
            2,
            "{}",
            db.name
        );
        assert_eq!(
            store.count_contacts("loc", &tagged("new")).await.unwrap(),
            1,
            "{}",
            db.name
        );
        assert_eq!(
            store.count_contacts("loc", &tagged("both")).await.unwrap(),
            3,
            "{}",
            db.name
        );
        let renamed = store.contacts_by_ids(&[first[0].id.clone()]).await.unwrap();
        assert_eq!(renamed[0].first_name.as_deref(), Some("Renamed"));
        assert_eq!(renamed[0].tags, r#"["both","new","new"]"#);
        let values = store
            .custom_values_by_contacts(&[first[0].id.clone()])
            .await
            .unwrap();
        assert_eq!(values.len(), 1);
        assert_eq!(values[0].value, r#"{"i":0}"#);
    }
}

#[tokio::test]
async fn rows_a_full_run_did_not_see_are_marked_deleted_not_dropped() {
    // Marks are job start times in ms, after the rows' `date_updated` (1_700_000_000_000).
    const T: i64 = 1_800_000_000_000;
    for db in databases().await {
        let store = &db.store;
        let all: Vec<Contact> = (0..10).map(|i| contact("loc", i, &[])).collect();
        let other: Vec<Contact> = (0..4).map(|i| contact("other", i, &[])).collect();
        store
            .write_page("loc", T + 100, Page::Contacts(&all), None)
            .await
            .unwrap();
        store
            .write_page("other", T + 100, Page::Contacts(&other), None)
            .await
            .unwrap();
        // The next FULL run (mark T + 200) sees only the even contacts.
        let seen: Vec<Contact> = all.iter().step_by(2).cloned().collect();
        store
            .write_page("loc", T + 200, Page::Contacts(&seen), None)
            .await
            .unwrap();
        let marked = store
            .mark_unseen_deleted("loc", Resource::Contacts, T + 200)
            .await
            .unwrap();
        assert_eq!(marked, 5, "{}", db.name);

        let none = ContactFilter::default();
        assert_eq!(store.count_contacts("loc", &none).await.unwrap(), 5);
        assert_eq!(
            store.count_contacts("other", &none).await.unwrap(),
            4,
            "other locations untouched"
        );
        let page = store
            .contacts_page("loc", &none, ContactOrder::default(), None, 100)
            .await
            .unwrap();
        assert!(page.iter().all(|c| seen.iter().any(|s| s.id == c.id)));
        let rows = ghl_gateway::store::entities::contact::Entity::find()
            .count(store.connection())
            .await
            .unwrap();
        assert_eq!(rows, 14, "{}: deleted rows are kept", db.name);

        // A contact that comes back is live again.
        store
            .write_page("loc", T + 300, Page::Contacts(&all[1..2]), None)
            .await
            .unwrap();
        assert_eq!(store.count_contacts("loc", &none).await.unwrap(), 6);
    }
}

#[tokio::test]
async fn a_checkpoint_is_written_with_its_page() {
    use ghl_gateway::store::entities::{sync_job, sync_stage};
    use sea_orm::{ActiveModelTrait, IntoActiveModel};
    for db in databases().await {
        let store = &db.store;
        sync_job::Model {
            id: "job-1".into(),
            location_id: "loc".into(),
            mode: "FULL".into(),
            state: "RUNNING".into(),
            mark: 1,
            started_at: 1,
            finished_at: None,
            error: None,
        }
        .into_active_model()
        .insert(store.connection())
        .await
        .unwrap();
        let page: Vec<Contact> = (0..3).map(|i| contact("loc", i, &[])).collect();
        let mut checkpoint = SyncStage {
            state: JobState::Running,
            fetched: 3,
            total: Some(6),
            pages: 1,
            checkpoint: Some(r#"{"searchAfter":[1,"c2"]}"#.into()),
            ..SyncStage::queued("job-1", Resource::Contacts, from_ms(1))
        };
        store
            .write_page("loc", 1, Page::Contacts(&page), Some(&checkpoint))
            .await
            .unwrap();
        checkpoint.fetched = 6;
        checkpoint.pages = 2;
        store
            .write_page("loc", 1, Page::Contacts(&page), Some(&checkpoint))
            .await
            .unwrap();
        let stages = sync_stage::Entity::find()
            .all(store.connection())
            .await
            .unwrap();
        assert_eq!(stages.len(), 1, "{}", db.name);
        assert_eq!(
            (stages[0].fetched, stages[0].pages, stages[0].total),
            (6, 2, Some(6))
        );
        assert_eq!(stages[0].checkpoint, checkpoint.checkpoint);

        // A page whose checkpoint cannot be written (unknown job) leaves no rows behind.
        checkpoint.job_id = "no-such-job".into();
        let more: Vec<Contact> = (10..12).map(|i| contact("loc", i, &[])).collect();
        let failed = store
            .write_page("loc", 1, Page::Contacts(&more), Some(&checkpoint))
            .await;
        assert!(
            failed.is_err(),
            "{}: the foreign key refuses the checkpoint",
            db.name
        );
        assert_eq!(
            store
                .count_contacts("loc", &ContactFilter::default())
                .await
                .unwrap(),
            3
        );
    }
}

/// Issue 13, point 4: webhooks write rows while a sync job runs; a page read before an event
/// never undoes it (an update, a delete, a completed task), and the next job still reconciles.
#[tokio::test]
async fn a_sync_page_never_makes_a_row_older_than_a_webhook_wrote_it() {
    use ghl_gateway::domain::Task;
    use ghl_gateway::store::entities::{contact, contact_tag, task};
    use ghl_gateway::store::{EventWrite, Receipt};
    use sea_orm::{ColumnTrait, QueryFilter};

    let at = |ms: i64| chrono::DateTime::from_timestamp_millis(ms).unwrap();
    // The rows' GHL time (D0), the job's start (mark M), the events (E), the next job (M2).
    const D0: i64 = 1_800_000_000_000;
    const M: i64 = D0 + 60_000;
    const E: i64 = M + 5_000;
    const M2: i64 = E + 60_000;
    let task_at = |id: &str, completed: bool, updated: Option<i64>| Task {
        id: id.into(),
        location_id: "loc".into(),
        contact_id: Some("loc-c0".into()),
        title: Some(format!("task {id}")),
        completed,
        date_updated: updated.map(at),
        ..Default::default()
    };
    for db in databases().await {
        let store = &db.store;
        // A webhook of a location the gateway does not know is ignored.
        store.ensure_location("loc").await.unwrap();
        let mut before: Vec<Contact> = (0..5).map(|i| contact("loc", i, &["old"])).collect();
        for c in &mut before {
            c.date_updated = at(D0);
        }
        store
            .write_page("loc", D0, Page::Contacts(&before), None)
            .await
            .unwrap();
        store
            .write_page("loc", D0, Page::Tasks(&[task_at("t0", false, None)]), None)
            .await
            .unwrap();

        // While job M runs: c0 renamed and tagged, c1 deleted, c5 created, t0 completed.
        let mut renamed = before[0].clone();
        renamed.first_name = Some("Webhook".into());
        renamed.tags = vec!["hot".into()];
        renamed.date_updated = at(E);
        let mut deleted = before[1].clone();
        deleted.date_updated = at(E);
        let mut created = contact("loc", 5, &["new"]);
        created.date_updated = at(E);
        let events = [
            EventWrite::Contact(renamed),
            EventWrite::ContactDeleted(deleted),
            EventWrite::Contact(created),
            EventWrite::Task(task_at("t0", true, Some(E))),
        ];
        for (n, event) in events.iter().enumerate() {
            let id = format!("wh-{n}");
            let receipt = Receipt {
                webhook_id: &id,
                received_at: at(E + 10),
                location_id: Some("loc"),
            };
            let applied = store.apply_webhook(receipt, Some(event)).await.unwrap();
            assert!(
                matches!(applied, ghl_gateway::store::Applied::Written { .. }),
                "{}: {applied:?}",
                db.name
            );
        }

        // Job M's pages, read before the events: c0..c3 as they were, c2 edited in GHL (no
        // webhook), t0 open and without a `dateUpdated` (GHL's task list may omit it).
        let mut page = before[..4].to_vec();
        page[2].first_name = Some("Edited".into());
        page[2].date_updated = at(M + 1_000);
        store
            .write_page("loc", M, Page::Contacts(&page), None)
            .await
            .unwrap();
        store
            .write_page("loc", M, Page::Tasks(&[task_at("t0", false, None)]), None)
            .await
            .unwrap();
        let marked = store
            .mark_unseen_deleted("loc", Resource::Contacts, M)
            .await
            .unwrap();

        let conn = store.connection();
        let row = |id: &str| {
            let id = id.to_owned();
            async move {
                contact::Entity::find_by_id(id)
                    .one(conn)
                    .await
                    .unwrap()
                    .unwrap()
            }
        };
        let tags = |id: &str| {
            let id = id.to_owned();
            async move {
                contact_tag::Entity::find()
                    .filter(contact_tag::Column::ContactId.eq(id))
                    .all(conn)
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|t| t.tag)
                    .collect::<Vec<_>>()
            }
        };
        let name = &db.name;
        let c0 = row("loc-c0").await;
        assert_eq!(c0.first_name.as_deref(), Some("Webhook"), "{name}");
        assert_eq!(tags("loc-c0").await, ["hot"], "{name}: the newer tags stay");
        assert!(row("loc-c1").await.deleted, "{name}: the delete stays");
        assert_eq!(row("loc-c2").await.first_name.as_deref(), Some("Edited"));
        assert!(
            !row("loc-c5").await.deleted,
            "{name}: created after the page"
        );
        assert_eq!(
            marked, 1,
            "{name}: only c4, unseen and unchanged, is marked"
        );
        assert!(row("loc-c4").await.deleted, "{name}");
        let t0 = task::Entity::find_by_id("t0".to_owned())
            .one(conn)
            .await
            .unwrap()
            .unwrap();
        assert!(t0.completed, "{name}: the completion stays");

        // The next job (after the events) reconciles: GHL's answer wins again.
        let mut again = before[0].clone();
        again.first_name = Some("Reconciled".into());
        store
            .write_page("loc", M2, Page::Contacts(&[again]), None)
            .await
            .unwrap();
        assert_eq!(
            row("loc-c0").await.first_name.as_deref(),
            Some("Reconciled"),
            "{name}"
        );
        assert_eq!(tags("loc-c0").await, ["old"], "{name}");
    }
}

/// On PostgreSQL every pooled connection plans a prepared statement once (`GENERIC_PLANS` in
/// `store.rs`), unless the URL chooses its own `plan_cache_mode`.
#[tokio::test]
async fn postgres_connections_plan_each_statement_once_unless_the_url_says_otherwise() {
    use sea_orm::ConnectionTrait;
    async fn mode(store: &Store) -> String {
        let statement =
            sea_orm::Statement::from_string(store.backend(), "SHOW plan_cache_mode".to_owned());
        // More than one connection: each statement may take another one of the pool.
        let (a, b) = tokio::join!(
            store.connection().query_one_raw(statement.clone()),
            store.connection().query_one_raw(statement)
        );
        let (a, b): (String, String) = (
            a.unwrap().unwrap().try_get_by_index(0).unwrap(),
            b.unwrap().unwrap().try_get_by_index(0).unwrap(),
        );
        assert_eq!(a, b);
        a
    }
    for db in databases().await {
        if db.name != "postgres" {
            continue;
        }
        assert_eq!(mode(&db.store).await, "force_generic_plan");
        let separator = if db.url.contains('?') { '&' } else { '?' };
        let chosen = format!("{}{separator}options=-c%20plan_cache_mode%3Dauto", db.url);
        let store = Store::open(&DatabaseConfig::new(&chosen)).await.unwrap();
        assert_eq!(mode(&store).await, "auto");
    }
}
