//! The store API: migrations, bulk upserts, reconciliation of deleted rows.

use ghl_gateway::domain::{Contact, CustomFieldValue, JobState, Resource, SyncStage, from_ms};
use ghl_gateway::store::{ContactFilter, ContactOrder, Page};
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

#[tokio::test]
async fn a_page_is_written_with_a_constant_number_of_statements() {
    for db in databases().await {
        let store = &db.store;
        let mut counts = Vec::new();
        for (offset, size) in [(0, 10), (1_000, 100), (2_000, 500)] {
            let page: Vec<Contact> = (offset..offset + size)
                .map(|i| contact("loc", i, &["a", "b"]))
                .collect();
            let before = store.statements();
            store
                .write_page("loc", 1, Page::Contacts(&page), None)
                .await
                .unwrap();
            counts.push(store.statements() - before);
        }
        assert!(
            counts.iter().all(|c| *c == counts[0]),
            "{}: statements per page {counts:?}",
            db.name
        );
        // contacts, delete tags, delete values, insert tags, insert values
        assert_eq!(counts[0], 5, "{}: {counts:?}", db.name);
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
    for db in databases().await {
        let store = &db.store;
        let all: Vec<Contact> = (0..10).map(|i| contact("loc", i, &[])).collect();
        let other: Vec<Contact> = (0..4).map(|i| contact("other", i, &[])).collect();
        store
            .write_page("loc", 100, Page::Contacts(&all), None)
            .await
            .unwrap();
        store
            .write_page("other", 100, Page::Contacts(&other), None)
            .await
            .unwrap();
        // The next FULL run (mark 200) sees only the even contacts.
        let seen: Vec<Contact> = all.iter().step_by(2).cloned().collect();
        store
            .write_page("loc", 200, Page::Contacts(&seen), None)
            .await
            .unwrap();
        let marked = store
            .mark_unseen_deleted("loc", Resource::Contacts, 200)
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
            .write_page("loc", 300, Page::Contacts(&all[1..2]), None)
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
