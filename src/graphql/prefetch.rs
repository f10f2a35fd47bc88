//! Look-ahead prefetch of a page's nested data, one `load_many` per relation and depth.
//!
//! A DataLoader alone batches siblings by timing (keys that arrive within its delay share a
//! statement). Under load, or in a slow build, a page's siblings can straddle two batches and the
//! statement count starts to grow with the page. So a page of contacts reads the selection ahead,
//! loads every relation it asks for with one `load_many` (all keys at once, hence one batch), and
//! leaves the results in the request's loader cache, where each field's `load_one` then finds them.
//!
//! The first prefetch of a page calls the loader itself and feeds the DataLoader's cache: a
//! DataLoader batch waits its delay (1 ms) before it loads, and the relations of a page come in
//! three dependent levels, so going through it would sleep 2-3 ms per cold request. A second
//! prefetch of the same page (a selection with both `edges` and `nodes`) goes through the
//! DataLoader, whose cache then answers without a statement.

use std::collections::HashSet;
use std::hash::Hash;
use std::sync::Arc;

use async_graphql::dataloader::Loader;
use async_graphql::{Context, Lookahead};

use super::error::ApiResult;
use super::loaders::*;
use super::types::loader;
use crate::store::StoreError;
use crate::store::entities::contact;

/// How a prefetch loads: straight from the store (the page's first prefetch), or through the
/// DataLoader's cache (a later one, which finds what the first loaded).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    Store,
    Cache,
}

/// Loads `keys` (deduplicated) in one statement batch and returns the values found, leaving them
/// in the request's loader cache.
pub(super) async fn load_all<K, V>(
    loader: &Loaders,
    via: Via,
    keys: impl IntoIterator<Item = K>,
) -> ApiResult<Vec<V>>
where
    K: Send + Sync + Hash + Eq + Clone + 'static,
    V: Send + Sync + Clone + 'static,
    CacheLoader: Loader<K, Value = V, Error = std::sync::Arc<StoreError>>,
{
    let keys: HashSet<K> = keys.into_iter().collect();
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    match via {
        Via::Cache => Ok(loader.load_many(keys).await?.into_values().collect()),
        Via::Store => {
            let keys: Vec<K> = keys.into_iter().collect();
            let found = loader.loader().load(&keys).await?;
            let values = found.values().cloned().collect();
            loader.feed_many(found).await;
            Ok(values)
        }
    }
}

/// Prefetches what `selection` (a `Contact` selection) asks of `contacts`.
pub async fn contacts(
    ctx: &Context<'_>,
    contacts: &[Arc<contact::Model>],
    selection: Lookahead<'_>,
    via: Via,
) -> ApiResult<()> {
    if contacts.is_empty() || !selection.exists() {
        return Ok(());
    }
    let loader = loader(ctx);
    let ids = || contacts.iter().map(|c| c.id.clone());
    let tasks_sel = selection.field("tasks");
    let conversations_sel = selection.field("conversations");
    let opportunities_sel = selection.field("opportunities");
    let custom_sel = selection.field("customFields");

    // First level: every relation of the page at once.
    let (tasks, conversations, opportunities, values) = futures::try_join!(
        async {
            if tasks_sel.exists() {
                load_all(loader, via, ids().map(TasksOf)).await
            } else {
                Ok(Vec::new())
            }
        },
        async {
            if conversations_sel.exists() {
                load_all(loader, via, ids().map(ConversationsOf)).await
            } else {
                Ok(Vec::new())
            }
        },
        async {
            if opportunities_sel.exists() {
                load_all(loader, via, ids().map(OpportunitiesOf)).await
            } else {
                Ok(Vec::new())
            }
        },
        async {
            if custom_sel.exists() {
                load_all(loader, via, ids().map(CustomValuesOf)).await
            } else {
                Ok(Vec::new())
            }
        },
    )?;
    // Children pointing back at their contact find it in the page itself.
    if [&tasks_sel, &conversations_sel, &opportunities_sel]
        .iter()
        .any(|s| s.field("contact").exists())
    {
        loader
            .feed_many(
                contacts
                    .iter()
                    .map(|c| (ContactId(c.id.clone()), Some(c.clone()))),
            )
            .await;
    }
    drop(conversations);
    let tasks: Vec<_> = tasks.into_iter().flatten().collect();
    let opportunities: Vec<_> = opportunities.into_iter().flatten().collect();
    let values: Vec<_> = values.into_iter().flatten().collect();

    // Second level: users from every place that names one, in one batch; then the rest.
    let user_key = |location_id: &str, user_id: &Option<String>| {
        user_id.as_ref().map(|u| UserKey {
            location_id: location_id.to_owned(),
            user_id: u.clone(),
        })
    };
    let mut users = Vec::new();
    if selection.field("assignedTo").exists() {
        users.extend(
            contacts
                .iter()
                .filter_map(|c| user_key(&c.location_id, &c.assigned_to)),
        );
    }
    if tasks_sel.field("assignedTo").exists() {
        users.extend(
            tasks
                .iter()
                .filter_map(|t| user_key(&t.location_id, &t.assigned_to)),
        );
    }
    if opportunities_sel.field("assignedTo").exists() {
        users.extend(
            opportunities
                .iter()
                .filter_map(|o| user_key(&o.location_id, &o.assigned_to)),
        );
    }
    let definitions = custom_sel.field("name").exists()
        || custom_sel.field("fieldKey").exists()
        || custom_sel.field("dataType").exists();
    let pipeline_sel = opportunities_sel.field("pipeline");
    futures::try_join!(
        load_all(loader, via, users),
        async {
            if definitions {
                load_all(
                    loader,
                    via,
                    values.iter().map(|v| CustomFieldId(v.field_id.clone())),
                )
                .await?;
            }
            Ok(())
        },
        async {
            if pipeline_sel.exists() {
                let pipelines = load_all(
                    loader,
                    via,
                    opportunities
                        .iter()
                        .filter_map(|o| o.pipeline_id.clone().map(PipelineId)),
                )
                .await?;
                let pipelines: Vec<_> = pipelines.into_iter().flatten().collect();
                if pipeline_sel.field("stages").exists() {
                    load_all(
                        loader,
                        via,
                        pipelines.iter().map(|p| StagesOf(p.id.clone())),
                    )
                    .await?;
                }
            }
            Ok(())
        },
        async {
            if opportunities_sel.field("stage").exists() {
                load_all(
                    loader,
                    via,
                    opportunities
                        .iter()
                        .filter_map(|o| o.stage_id.clone().map(StageId)),
                )
                .await?;
            }
            Ok(())
        },
    )?;
    Ok(())
}
