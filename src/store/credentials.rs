//! The GHL credentials of each location. One row per location; a refresh replaces the row in one
//! statement, so the new refresh token is durable before the new access token is used.

use sea_orm::sea_query::{Expr, ExprTrait, OnConflict, Query};
use sea_orm::{
    ActiveValue, ConnectionTrait, DatabaseTransaction, DbBackend, EntityTrait, QueryFilter,
    TransactionTrait,
};

use super::entities::credential;
use super::{Store, StoreError};

/// Holds every other process off a location's credential renewal until dropped (PostgreSQL: a
/// transaction-level advisory lock, released when the transaction ends; safe through a
/// transaction-mode pooler). Nothing on SQLite, which is single-process.
pub struct RenewalLock {
    _transaction: Option<DatabaseTransaction>,
}

impl Store {
    /// Waits for, then takes, the renewal lock of `location_id`'s credential, so that two
    /// processes never spend one rotating OAuth refresh token: the one that waited reads the
    /// credential again and finds it renewed. Released when the lock drops.
    pub async fn lock_credential_renewal(
        &self,
        location_id: &str,
    ) -> Result<RenewalLock, StoreError> {
        if self.backend() != DbBackend::Postgres {
            return Ok(RenewalLock { _transaction: None });
        }
        let transaction = self.db.begin().await?;
        let key = super::cluster::lock_key("credential", location_id);
        transaction
            .execute_raw(sea_orm::Statement::from_sql_and_values(
                DbBackend::Postgres,
                "SELECT pg_advisory_xact_lock($1)",
                [key.into()],
            ))
            .await?;
        Ok(RenewalLock {
            _transaction: Some(transaction),
        })
    }

    /// The stored credential of a location; none once an `UNINSTALL` revoked it.
    pub async fn credential(
        &self,
        location_id: &str,
    ) -> Result<Option<credential::Model>, StoreError> {
        Ok(credential::Entity::find_by_id(location_id.to_owned())
            .filter(Expr::col("revoked_at").is_null())
            .one(&self.db)
            .await?)
    }

    /// Stores (inserts or replaces) the credential of a location.
    pub async fn save_credential(&self, model: credential::Model) -> Result<(), StoreError> {
        let location_id = model.location_id.clone();
        let active = credential::ActiveModel {
            location_id: ActiveValue::Set(model.location_id),
            kind: ActiveValue::Set(model.kind),
            access_token: ActiveValue::Set(model.access_token),
            refresh_token: ActiveValue::Set(model.refresh_token),
            expires_at: ActiveValue::Set(model.expires_at),
            company_id: ActiveValue::Set(model.company_id),
            updated_at: ActiveValue::Set(chrono::Utc::now().timestamp_millis()),
        };
        credential::Entity::insert(active)
            .on_conflict(
                OnConflict::column(credential::Column::LocationId)
                    .update_columns([
                        credential::Column::Kind,
                        credential::Column::AccessToken,
                        credential::Column::RefreshToken,
                        credential::Column::ExpiresAt,
                        credential::Column::CompanyId,
                        credential::Column::UpdatedAt,
                    ])
                    .to_owned(),
            )
            .exec(&self.db)
            .await?;
        // New credentials connect the location again, whatever an `UNINSTALL` revoked before.
        let reconnect = Query::update()
            .table("credentials")
            .value("revoked_at", Option::<i64>::None)
            .and_where(Expr::col("location_id").eq(location_id.as_str()))
            .and_where(Expr::col("revoked_at").is_not_null())
            .to_owned();
        self.db.execute(&reconnect).await?;
        self.bump(&location_id);
        Ok(())
    }

    /// The ids of the locations that have credentials (the ones a sync can reach), revoked ones
    /// excepted.
    pub async fn credentialed_locations(&self) -> Result<Vec<String>, StoreError> {
        Ok(credential::Entity::find()
            .filter(Expr::col("revoked_at").is_null())
            .all(&self.db)
            .await?
            .into_iter()
            .map(|c| c.location_id)
            .collect())
    }

    /// A location whose live credential is an agency credential of `company_id` (the agency
    /// token mints a token for any location of the company), if the gateway holds one.
    pub async fn agency_credential_of(
        &self,
        company_id: &str,
    ) -> Result<Option<String>, StoreError> {
        Ok(credential::Entity::find()
            .filter(Expr::col("revoked_at").is_null())
            .filter(Expr::col("kind").eq("agency"))
            .filter(Expr::col("company_id").eq(company_id))
            .one(&self.db)
            .await?
            .map(|c| c.location_id))
    }
}
