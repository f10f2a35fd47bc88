//! `ghl-gateway keys create | list | revoke`: the API keys callers send as
//! `Authorization: Bearer <key>` (see [`crate::auth`]); a key is shown once, stored hashed.

use anyhow::Context as _;

use crate::store::{DatabaseConfig, Store};

/// `ghl-gateway keys ...`
#[derive(Debug, clap::Subcommand)]
pub enum KeysCommand {
    /// Create a key for one or more locations and print it (it is shown only this once).
    Create(KeysCreate),
    /// List the keys: id, name, locations, created, last used, revoked.
    List(KeysList),
    /// Revoke a key by id; requests with it are refused from then on.
    Revoke(KeysRevoke),
}

#[derive(Clone, Debug, clap::Args)]
pub struct KeysCreate {
    #[command(flatten)]
    pub database: DatabaseConfig,
    /// A location the key may read; repeat the flag (or separate ids with commas) for more.
    #[arg(
        long = "location",
        env = "KEY_LOCATIONS",
        value_delimiter = ',',
        required = true
    )]
    pub locations: Vec<String>,
    /// A name to recognise the key by in `keys list`.
    #[arg(long, env = "KEY_NAME")]
    pub name: Option<String>,
}

#[derive(Clone, Debug, clap::Args)]
pub struct KeysList {
    #[command(flatten)]
    pub database: DatabaseConfig,
}

#[derive(Clone, Debug, clap::Args)]
pub struct KeysRevoke {
    #[command(flatten)]
    pub database: DatabaseConfig,
    /// The key's id (`key_...`, from `keys create` or `keys list`).
    pub id: String,
}

/// `ghl-gateway keys create | list | revoke`.
pub async fn run(command: KeysCommand) -> anyhow::Result<()> {
    let database = match &command {
        KeysCommand::Create(c) => &c.database,
        KeysCommand::List(c) => &c.database,
        KeysCommand::Revoke(c) => &c.database,
    };
    let store = Store::open(database).await?;
    let now = chrono::Utc::now().timestamp_millis();
    let result = match command {
        KeysCommand::Create(create) => {
            let new = crate::auth::generate_key(create.name, &create.locations, now);
            let id = new.row.id.clone();
            let locations = new.row.locations().join(", ");
            store
                .insert_api_key(new.row)
                .await
                .context("cannot store the key")?;
            println!("key id:    {id}");
            println!("locations: {locations}");
            println!("key:       {}", new.key);
            println!("(the key is shown only now: store it; the gateway keeps only its hash)");
            Ok(())
        }
        KeysCommand::List(_) => {
            let keys = store.api_keys().await.context("cannot list the keys")?;
            let time = |ms: Option<i64>| {
                ms.map_or("-".to_owned(), |ms| {
                    crate::domain::from_ms(ms)
                        .format("%Y-%m-%d %H:%M")
                        .to_string()
                })
            };
            println!(
                "{:<22} {:<16} {:<17} {:<17} {:<8} locations",
                "id", "name", "created", "last used", "state"
            );
            for key in &keys {
                println!(
                    "{:<22} {:<16} {:<17} {:<17} {:<8} {}",
                    key.id,
                    key.name.as_deref().unwrap_or("-"),
                    time(Some(key.created_at)),
                    time(key.last_used_at),
                    if key.revoked_at.is_some() {
                        "revoked"
                    } else {
                        "active"
                    },
                    key.locations().join(",")
                );
            }
            Ok(())
        }
        KeysCommand::Revoke(revoke) => {
            if store
                .revoke_api_key(&revoke.id, now)
                .await
                .context("cannot revoke the key")?
            {
                println!("revoked:   {}", revoke.id);
                Ok(())
            } else {
                Err(anyhow::anyhow!("no active key with id {:?}", revoke.id))
            }
        }
    };
    store.close().await;
    result
}
