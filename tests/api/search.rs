//! The contacts' text filter is case-insensitive for every script, on SQLite and PostgreSQL
//! alike: names, e-mails and phones in Latin with diacritics, Cyrillic and Greek, typed in upper,
//! lower and mixed case.

use chrono::{TimeZone, Utc};
use ghl_gateway::domain::{Contact, Location};
use ghl_gateway::store::Page;
use serde_json::json;

use crate::helpers::*;

fn contact(id: &str, name: &str, email: &str, phone: &str) -> Contact {
    let at = Utc.timestamp_opt(1_700_000_000, 0).single().unwrap();
    Contact {
        id: id.into(),
        location_id: "loc".into(),
        name: Some(name.into()),
        email: Some(email.into()),
        phone: Some(phone.into()),
        date_added: at,
        date_updated: at,
        ..Default::default()
    }
}

#[tokio::test]
async fn search_folds_case_in_every_script_on_both_databases() {
    for db in databases().await {
        let app = spawn_app(&db.url).await;
        let location = Location {
            id: "loc".into(),
            name: Some("Loc".into()),
            ..Default::default()
        };
        app.store.upsert_location(&location, 1).await.unwrap();
        let contacts = [
            contact(
                "latin",
                "Élodie Müller",
                "ÉLODIE.MÜLLER@EXEMPLE.FR",
                "+33 6 12 34 56 78",
            ),
            contact(
                "cyrillic",
                "Дмитрий Иванов",
                "ДМИТРИЙ@ПОЧТА.РФ",
                "+7 495 123 45 67",
            ),
            contact(
                "greek",
                "Οδυσσεύς Παπαδόπουλος",
                "ΟΔΥΣΣΕΥΣ@ΠΑΡΑΔΕΙΓΜΑ.ΕΛ",
                "+30 210 555 0100",
            ),
            contact(
                "ascii",
                "Ada Lovelace",
                "ada@example.com",
                "+44 20 7946 0000",
            ),
        ];
        app.store
            .write_page("loc", 1, Page::Contacts(&contacts), None)
            .await
            .unwrap();
        let cases = [
            // Latin with diacritics: name and e-mail, each case.
            ("élodie", "latin"),
            ("ÉLODIE", "latin"),
            ("éLoDiE mÜlLeR", "latin"),
            ("élodie.müller@exemple.fr", "latin"),
            ("ÉLODIE.MÜLLER@", "latin"),
            ("Müller@Exemple", "latin"),
            // Cyrillic.
            ("дмитрий иванов", "cyrillic"),
            ("ДМИТРИЙ ИВАНОВ", "cyrillic"),
            ("дМиТрИй", "cyrillic"),
            ("дмитрий@почта.рф", "cyrillic"),
            ("ДМИТРИЙ@ПОЧТА", "cyrillic"),
            // Greek, with the final sigma written either way.
            ("οδυσσεύς", "greek"),
            ("ΟΔΥΣΣΕΎΣ", "greek"),
            ("οΔυΣσΕύΣ παπαδόπουλος", "greek"),
            ("ΟΔΥΣ", "greek"),
            ("οδυσσευς@παραδειγμα", "greek"),
            ("Οδυσσευσ@", "greek"),
            // Phones, and ASCII as before.
            ("495 123", "cyrillic"),
            ("+30 210", "greek"),
            ("ADA@EXAMPLE", "ascii"),
            ("lovelace", "ascii"),
        ];
        for (query, expected) in cases {
            let answer = app
                .graphql(
                    "query($q: String) { contacts(locationId: \"loc\", filter: { query: $q }) { nodes { id } } }",
                    json!({ "q": query }),
                )
                .await;
            assert_eq!(
                answer["data"]["contacts"]["nodes"],
                json!([{ "id": expected }]),
                "{}: {query:?}: {answer}",
                db.name
            );
        }
    }
}
