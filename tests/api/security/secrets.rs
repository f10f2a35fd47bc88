//! The secrets key at start-up: stored tokens without `GATEWAY_SECRET_KEY` refuse to start.

use super::*;

#[tokio::test]
async fn start_up_refuses_stored_tokens_without_the_secrets_key() {
    for db in databases().await {
        use ghl_gateway::store::entities::credential;
        use sea_orm::{ActiveModelTrait, IntoActiveModel};
        let config = |secret: Option<&str>| {
            let mut config = ghl_gateway::app::ServeConfig {
                http: ghl_gateway::http::HttpConfig {
                    listen: "127.0.0.1:0".into(),
                    ..Default::default()
                },
                database: ghl_gateway::store::DatabaseConfig::new(&db.url),
                graphql: Default::default(),
                upstream: ghl_gateway::upstream::UpstreamConfig::new("http://127.0.0.1:9"),
                sync: Default::default(),
                secrets: Default::default(),
                cache: Default::default(),
            };
            config.secrets.secret_key = secret.map(Into::into);
            config
        };
        // No tokens yet: starts without a key.
        assert!(App::build(config(None)).await.is_ok());
        credential::Model {
            location_id: "loc-a".into(),
            kind: "private_integration".into(),
            access_token: Some("v1:stored".into()),
            refresh_token: None,
            expires_at: None,
            company_id: None,
            updated_at: 1,
        }
        .into_active_model()
        .reset_all()
        .insert(db.store.connection())
        .await
        .unwrap();
        assert!(db.store.has_stored_tokens().await.unwrap());
        let error = App::build(config(None))
            .await
            .err()
            .expect("refused")
            .to_string();
        assert!(error.contains("GATEWAY_SECRET_KEY"), "{error}");
        let error = App::build(config(Some("too-short")))
            .await
            .err()
            .expect("refused");
        assert!(format!("{error:#}").contains("openssl rand"), "{error:#}");
        let app = App::build(config(Some("q83vASNFZ4mrze8BI0VniavN7wEjRWeJq83vASNFZ4k=")))
            .await
            .expect("starts with the key");
        let cipher = app.cipher().expect("a cipher");
        assert_eq!(cipher.decrypt(&cipher.encrypt("t").unwrap()).unwrap(), "t");
        // A weak operator key is refused too.
        let mut weak = config(Some("q83vASNFZ4mrze8BI0VniavN7wEjRWeJq83vASNFZ4k="));
        weak.http.auth = AuthConfig {
            admin_key: Some("admin".into()),
            ..AuthConfig::default()
        };
        assert!(App::build(weak).await.is_err());
    }
}
