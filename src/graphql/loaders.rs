//! The DataLoader behind every nested field. One `CacheLoader` implements `Loader` for one key
//! type per relation, so a request makes one statement per relation and depth, whatever the page
//! size. It caches nothing: each batch reads the database, so answers are never older than the
//! cache itself.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Arc;

use async_graphql::dataloader::{DataLoader, HashMapCache, Loader};

use crate::store::entities::{
    contact, contact_custom_value, conversation, custom_field, opportunity, pipeline,
    pipeline_stage, task, user,
};
use crate::store::{Freshness, Store, StoreError};

/// The DataLoader a request resolves through, with a cache that lives as long as the request.
pub type Loaders = DataLoader<CacheLoader, HashMapCache>;

pub struct CacheLoader {
    store: Store,
}

impl CacheLoader {
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    /// The store it reads, for loaders implemented beside the fields they serve.
    pub(super) fn store(&self) -> &Store {
        &self.store
    }
}

type LoadResult<K, V> = Result<HashMap<K, V>, Arc<StoreError>>;

fn ids<K: AsRef<str>>(keys: &[K]) -> Vec<String> {
    keys.iter().map(|k| k.as_ref().to_owned()).collect()
}

/// One value per requested key: `None` where there is no row, so that the request's cache
/// remembers the miss instead of loading the key again. Rows are shared (`Arc`): the request's
/// cache hands out a row to every field that asks for it, and a deep copy per field (a dozen
/// strings a row) cost more than the rest of the field's resolution.
fn by_one<K: Eq + Hash + Clone, V>(
    keys: &[K],
    rows: Vec<V>,
    key: impl Fn(&V) -> K,
) -> HashMap<K, Option<Arc<V>>> {
    let mut map: HashMap<K, Option<Arc<V>>> = keys.iter().map(|k| (k.clone(), None)).collect();
    for row in rows {
        map.insert(key(&row), Some(Arc::new(row)));
    }
    map
}

/// The rows of each requested key, an empty list where there are none (cached like the rest).
fn by_many<K: Eq + Hash + Clone, V>(
    keys: &[K],
    rows: Vec<V>,
    key: impl Fn(&V) -> Option<K>,
) -> HashMap<K, Vec<Arc<V>>> {
    let mut map: HashMap<K, Vec<Arc<V>>> = keys.iter().map(|k| (k.clone(), Vec::new())).collect();
    for row in rows {
        if let Some(k) = key(&row) {
            map.entry(k).or_default().push(Arc::new(row));
        }
    }
    map
}

macro_rules! key {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash)]
        pub struct $name(pub String);
        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

key!(/// A contact by id.
    ContactId);
key!(/// The tasks of a contact.
    TasksOf);
key!(/// The conversations of a contact.
    ConversationsOf);
key!(/// The opportunities of a contact.
    OpportunitiesOf);
key!(/// The custom field values of a contact.
    CustomValuesOf);
key!(/// A custom field definition by id.
    CustomFieldId);
key!(/// A pipeline by id.
    PipelineId);
key!(/// A pipeline stage by id.
    StageId);
key!(/// The stages of a pipeline.
    StagesOf);
key!(/// The pipelines of a location.
    PipelinesOf);
key!(/// The freshness of a location.
    FreshnessOf);

/// A user of a location (user ids are per location in the cache).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct UserKey {
    pub location_id: String,
    pub user_id: String,
}

impl Loader<ContactId> for CacheLoader {
    type Value = Option<Arc<contact::Model>>;
    type Error = Arc<StoreError>;
    async fn load(&self, keys: &[ContactId]) -> LoadResult<ContactId, Self::Value> {
        let rows = self.store.contacts_by_ids(&ids(keys)).await?;
        Ok(by_one(keys, rows, |c| ContactId(c.id.clone())))
    }
}

impl Loader<TasksOf> for CacheLoader {
    type Value = Vec<Arc<task::Model>>;
    type Error = Arc<StoreError>;
    async fn load(&self, keys: &[TasksOf]) -> LoadResult<TasksOf, Self::Value> {
        let mut rows = self.store.tasks_by_contacts(&ids(keys)).await?;
        // Open tasks by due date first; undated ones last (SQL NULL order differs by database).
        rows.sort_by(|a, b| {
            (a.completed, a.due_date.is_none(), a.due_date, &a.id).cmp(&(
                b.completed,
                b.due_date.is_none(),
                b.due_date,
                &b.id,
            ))
        });
        Ok(by_many(keys, rows, |t| t.contact_id.clone().map(TasksOf)))
    }
}

impl Loader<ConversationsOf> for CacheLoader {
    type Value = Vec<Arc<conversation::Model>>;
    type Error = Arc<StoreError>;
    async fn load(&self, keys: &[ConversationsOf]) -> LoadResult<ConversationsOf, Self::Value> {
        let mut rows = self.store.conversations_by_contacts(&ids(keys)).await?;
        // Most recent message first.
        rows.sort_by(|a, b| {
            b.last_message_date
                .cmp(&a.last_message_date)
                .then(a.id.cmp(&b.id))
        });
        Ok(by_many(keys, rows, |c| {
            c.contact_id.clone().map(ConversationsOf)
        }))
    }
}

impl Loader<OpportunitiesOf> for CacheLoader {
    type Value = Vec<Arc<opportunity::Model>>;
    type Error = Arc<StoreError>;
    async fn load(&self, keys: &[OpportunitiesOf]) -> LoadResult<OpportunitiesOf, Self::Value> {
        let rows = self.store.opportunities_by_contacts(&ids(keys)).await?;
        Ok(by_many(keys, rows, |o| {
            o.contact_id.clone().map(OpportunitiesOf)
        }))
    }
}

impl Loader<CustomValuesOf> for CacheLoader {
    type Value = Vec<Arc<contact_custom_value::Model>>;
    type Error = Arc<StoreError>;
    async fn load(&self, keys: &[CustomValuesOf]) -> LoadResult<CustomValuesOf, Self::Value> {
        let rows = self.store.custom_values_by_contacts(&ids(keys)).await?;
        Ok(by_many(keys, rows, |v| {
            Some(CustomValuesOf(v.contact_id.clone()))
        }))
    }
}

impl Loader<CustomFieldId> for CacheLoader {
    type Value = Option<Arc<custom_field::Model>>;
    type Error = Arc<StoreError>;
    async fn load(&self, keys: &[CustomFieldId]) -> LoadResult<CustomFieldId, Self::Value> {
        let rows = self.store.custom_fields_by_ids(&ids(keys)).await?;
        Ok(by_one(keys, rows, |f| CustomFieldId(f.id.clone())))
    }
}

impl Loader<UserKey> for CacheLoader {
    type Value = Option<Arc<user::Model>>;
    type Error = Arc<StoreError>;
    async fn load(&self, keys: &[UserKey]) -> LoadResult<UserKey, Self::Value> {
        let pairs: Vec<(String, String)> = keys
            .iter()
            .map(|k| (k.location_id.clone(), k.user_id.clone()))
            .collect();
        let rows = self.store.users_by_keys(&pairs).await?;
        Ok(by_one(keys, rows, |u| UserKey {
            location_id: u.location_id.clone(),
            user_id: u.id.clone(),
        }))
    }
}

impl Loader<PipelineId> for CacheLoader {
    type Value = Option<Arc<pipeline::Model>>;
    type Error = Arc<StoreError>;
    async fn load(&self, keys: &[PipelineId]) -> LoadResult<PipelineId, Self::Value> {
        let rows = self.store.pipelines_by_ids(&ids(keys)).await?;
        Ok(by_one(keys, rows, |p| PipelineId(p.id.clone())))
    }
}

impl Loader<StageId> for CacheLoader {
    type Value = Option<Arc<pipeline_stage::Model>>;
    type Error = Arc<StoreError>;
    async fn load(&self, keys: &[StageId]) -> LoadResult<StageId, Self::Value> {
        let rows = self.store.stages_by_ids(&ids(keys)).await?;
        Ok(by_one(keys, rows, |s| StageId(s.id.clone())))
    }
}

impl Loader<StagesOf> for CacheLoader {
    type Value = Vec<Arc<pipeline_stage::Model>>;
    type Error = Arc<StoreError>;
    async fn load(&self, keys: &[StagesOf]) -> LoadResult<StagesOf, Self::Value> {
        let rows = self.store.stages_by_pipelines(&ids(keys)).await?;
        Ok(by_many(keys, rows, |s| {
            Some(StagesOf(s.pipeline_id.clone()))
        }))
    }
}

impl Loader<PipelinesOf> for CacheLoader {
    type Value = Vec<Arc<pipeline::Model>>;
    type Error = Arc<StoreError>;
    async fn load(&self, keys: &[PipelinesOf]) -> LoadResult<PipelinesOf, Self::Value> {
        let rows = self.store.pipelines_by_locations(&ids(keys)).await?;
        Ok(by_many(keys, rows, |p| {
            Some(PipelinesOf(p.location_id.clone()))
        }))
    }
}

impl Loader<FreshnessOf> for CacheLoader {
    type Value = Freshness;
    type Error = Arc<StoreError>;
    async fn load(&self, keys: &[FreshnessOf]) -> LoadResult<FreshnessOf, Self::Value> {
        let rows = self.store.freshness(&ids(keys)).await?;
        let mut map: HashMap<FreshnessOf, Freshness> =
            rows.into_iter().map(|(k, v)| (FreshnessOf(k), v)).collect();
        for k in keys {
            map.entry(k.clone()).or_insert_with(|| Freshness {
                location_id: k.0.clone(),
                ..Freshness::default()
            });
        }
        Ok(map)
    }
}
