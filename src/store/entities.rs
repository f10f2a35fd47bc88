//! sea-orm entities, one module per table of `migrations/`. Times are UTC milliseconds.
//!
//! The models the GraphQL reads load also derive `Deserialize`, with the column names as field
//! names: [`super::json_rows`] reads them as one JSON array per statement.

macro_rules! no_relations {
    () => {
        #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
        pub enum Relation {}
        impl ActiveModelBehavior for ActiveModel {}
    };
}

pub mod location {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, serde::Deserialize)]
    #[sea_orm(table_name = "locations")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub name: Option<String>,
        pub company_id: Option<String>,
        pub timezone: Option<String>,
        pub created_at: i64,
        pub deleted: bool,
        pub seen_at: i64,
        /// Why GHL refused the location's credentials, until a sync succeeds again.
        pub auth_error: Option<String>,
    }
    no_relations!();
}

pub mod user {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, serde::Deserialize)]
    #[sea_orm(table_name = "users")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub location_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub name: Option<String>,
        pub first_name: Option<String>,
        pub last_name: Option<String>,
        pub email: Option<String>,
        pub deleted: bool,
        pub seen_at: i64,
    }
    no_relations!();
}

pub mod custom_field {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, serde::Deserialize)]
    #[sea_orm(table_name = "custom_fields")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub location_id: String,
        pub name: Option<String>,
        pub field_key: Option<String>,
        pub data_type: Option<String>,
        pub model: Option<String>,
        pub position: i32,
        pub deleted: bool,
        pub seen_at: i64,
    }
    no_relations!();
}

pub mod contact {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, serde::Deserialize)]
    #[sea_orm(table_name = "contacts")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub location_id: String,
        pub first_name: Option<String>,
        pub last_name: Option<String>,
        pub name: Option<String>,
        pub sort_name: String,
        pub email: Option<String>,
        pub phone: Option<String>,
        pub company_name: Option<String>,
        pub source: Option<String>,
        pub assigned_to: Option<String>,
        /// JSON array of strings.
        pub tags: String,
        pub date_added: i64,
        pub date_updated: i64,
        pub deleted: bool,
        pub seen_at: i64,
        /// Name, e-mail and phone folded by [`crate::store::fold`], one per line: the text filter.
        pub search_text: String,
    }
    no_relations!();
}

pub mod contact_tag {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "contact_tags")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub contact_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub tag: String,
        pub location_id: String,
    }
    no_relations!();
}

pub mod contact_custom_value {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, serde::Deserialize)]
    #[sea_orm(table_name = "contact_custom_values")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub contact_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub field_id: String,
        pub location_id: String,
        /// The value as GHL sent it, JSON-encoded.
        pub value: String,
    }
    no_relations!();
}

pub mod task {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, serde::Deserialize)]
    #[sea_orm(table_name = "tasks")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub location_id: String,
        pub contact_id: Option<String>,
        pub title: Option<String>,
        pub body: Option<String>,
        pub due_date: Option<i64>,
        pub completed: bool,
        pub assigned_to: Option<String>,
        pub date_added: Option<i64>,
        pub date_updated: Option<i64>,
        pub deleted: bool,
        pub seen_at: i64,
    }
    no_relations!();
}

pub mod conversation {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, serde::Deserialize)]
    #[sea_orm(table_name = "conversations")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub location_id: String,
        pub contact_id: Option<String>,
        #[sea_orm(column_name = "type")]
        #[serde(rename = "type")]
        pub kind: Option<String>,
        pub last_message_body: Option<String>,
        pub last_message_type: Option<String>,
        pub last_message_date: Option<i64>,
        pub unread_count: i32,
        pub assigned_to: Option<String>,
        pub date_added: Option<i64>,
        pub date_updated: Option<i64>,
        pub deleted: bool,
        pub seen_at: i64,
    }
    no_relations!();
}

pub mod pipeline {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, serde::Deserialize)]
    #[sea_orm(table_name = "pipelines")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub location_id: String,
        pub name: Option<String>,
        pub deleted: bool,
        pub seen_at: i64,
    }
    no_relations!();
}

pub mod pipeline_stage {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, serde::Deserialize)]
    #[sea_orm(table_name = "pipeline_stages")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub pipeline_id: String,
        pub location_id: String,
        pub name: Option<String>,
        pub position: i32,
        pub deleted: bool,
        pub seen_at: i64,
    }
    no_relations!();
}

pub mod opportunity {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, serde::Deserialize)]
    #[sea_orm(table_name = "opportunities")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub location_id: String,
        pub contact_id: Option<String>,
        pub pipeline_id: Option<String>,
        pub stage_id: Option<String>,
        pub name: Option<String>,
        pub status: Option<String>,
        pub monetary_value: Option<f64>,
        pub assigned_to: Option<String>,
        pub created_at: Option<i64>,
        pub updated_at: Option<i64>,
        pub deleted: bool,
        pub seen_at: i64,
    }
    no_relations!();
}

pub mod sync_job {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "sync_jobs")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub location_id: String,
        pub mode: String,
        pub state: String,
        pub mark: i64,
        pub started_at: i64,
        pub finished_at: Option<i64>,
        pub error: Option<String>,
    }
    no_relations!();
}

pub mod sync_stage {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "sync_stages")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub job_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub name: String,
        pub state: String,
        pub fetched: i64,
        pub total: Option<i64>,
        pub pages: i64,
        pub checkpoint: Option<String>,
        pub error: Option<String>,
        pub updated_at: i64,
        pub calls: i64,
        pub retries: i64,
        pub rate_limited: i64,
        pub waited_ms: i64,
        /// When the oldest data the stage holds was read (UTC ms); NULL before migration 7.
        pub read_at: Option<i64>,
    }
    no_relations!();
}

pub mod credential {
    use sea_orm::entity::prelude::*;
    /// Tokens are secrets: `Debug` redacts them.
    #[derive(Clone, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "credentials")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub location_id: String,
        pub kind: String,
        pub access_token: Option<String>,
        pub refresh_token: Option<String>,
        pub expires_at: Option<i64>,
        pub company_id: Option<String>,
        pub updated_at: i64,
    }
    no_relations!();

    impl std::fmt::Debug for Model {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("Credential")
                .field("location_id", &self.location_id)
                .field("kind", &self.kind)
                .field(
                    "access_token",
                    &self.access_token.as_ref().map(|_| "[redacted]"),
                )
                .field(
                    "refresh_token",
                    &self.refresh_token.as_ref().map(|_| "[redacted]"),
                )
                .field("expires_at", &self.expires_at)
                .field("company_id", &self.company_id)
                .finish()
        }
    }
}
