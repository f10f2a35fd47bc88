//! API keys in the database, and the start-up check for stored GHL tokens.
//!
//! The store sees only hashes: generating keys and hashing them is `auth`'s job. Nothing here
//! logs a hash or a key.

use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, EntityTrait, IntoActiveModel, PaginatorTrait,
    QueryFilter, QueryOrder,
};

use super::entities::credential;
use super::{Store, StoreError};

/// The `api_keys` table.
pub mod api_key {
    use sea_orm::entity::prelude::*;

    /// One API key. `hash` is the SHA-256 of the key (hex); `location_ids` a JSON array.
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "api_keys")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub name: Option<String>,
        pub hash: String,
        pub location_ids: String,
        pub created_at: i64,
        pub revoked_at: Option<i64>,
        pub last_used_at: Option<i64>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}
    impl ActiveModelBehavior for ActiveModel {}

    impl Model {
        /// The locations the key reaches (an unreadable list reaches none).
        pub fn locations(&self) -> Vec<String> {
            serde_json::from_str(&self.location_ids).unwrap_or_default()
        }
    }
}

impl Store {
    /// Stores a new key (its hash, never the key).
    pub async fn insert_api_key(&self, key: api_key::Model) -> Result<(), StoreError> {
        key.into_active_model().reset_all().insert(&self.db).await?;
        Ok(())
    }

    /// The key with this hash, revoked or not.
    pub async fn api_key_by_hash(&self, hash: &str) -> Result<Option<api_key::Model>, StoreError> {
        Ok(api_key::Entity::find()
            .filter(api_key::Column::Hash.eq(hash))
            .one(&self.db)
            .await?)
    }

    /// Every key, oldest first.
    pub async fn api_keys(&self) -> Result<Vec<api_key::Model>, StoreError> {
        Ok(api_key::Entity::find()
            .order_by_asc(api_key::Column::CreatedAt)
            .order_by_asc(api_key::Column::Id)
            .all(&self.db)
            .await?)
    }

    /// Revokes a key; `false` if there is no such key or it was already revoked.
    pub async fn revoke_api_key(&self, id: &str, now_ms: i64) -> Result<bool, StoreError> {
        let result = api_key::Entity::update_many()
            .col_expr(api_key::Column::RevokedAt, Expr::value(now_ms))
            .filter(api_key::Column::Id.eq(id))
            .filter(api_key::Column::RevokedAt.is_null())
            .exec(&self.db)
            .await?;
        Ok(result.rows_affected > 0)
    }

    /// Records a use of the key, at most once per `interval_ms` (a write per request would
    /// contend with the sync's writer on SQLite).
    pub async fn touch_api_key(
        &self,
        id: &str,
        now_ms: i64,
        interval_ms: i64,
    ) -> Result<(), StoreError> {
        api_key::Entity::update_many()
            .col_expr(api_key::Column::LastUsedAt, Expr::value(now_ms))
            .filter(api_key::Column::Id.eq(id))
            .filter(
                Condition::any()
                    .add(api_key::Column::LastUsedAt.is_null())
                    .add(api_key::Column::LastUsedAt.lt(now_ms - interval_ms)),
            )
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// Whether any GHL access or refresh token is stored. The app refuses to start without the
    /// secrets key when there are, since it could neither read nor write them.
    pub async fn has_stored_tokens(&self) -> Result<bool, StoreError> {
        let count = credential::Entity::find()
            .filter(
                Condition::any()
                    .add(credential::Column::AccessToken.is_not_null())
                    .add(credential::Column::RefreshToken.is_not_null()),
            )
            .count(&self.db)
            .await?;
        Ok(count > 0)
    }
}
