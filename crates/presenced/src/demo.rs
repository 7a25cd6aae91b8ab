//! `--demo`: three users and a few publications, so a fresh server shows something.

use accounts::{AccountError, Accounts};
use anyhow::Result;
use presence_engine::Engine;
use presence_model::{ContainerId, ExpireType, Publication, UserUri};

pub const DEMO_PASSWORD: &str = "demo";
pub const DEMO_USERS: [(&str, &str, &str); 3] = [
    (
        "alice@example.com",
        "Alice Anders",
        "Working on the quarterly plan",
    ),
    ("bob@example.com", "Bob Berg", "In the lab all afternoon"),
    ("carol@example.com", "Carol Chen", "Back from vacation"),
];

fn note(text: &str) -> String {
    format!(
        "<note xmlns=\"http://schemas.microsoft.com/2006/09/sip/note\"><body type=\"personal\" uri=\"\">{}</body></note>",
        presence_model::xml::escape(text)
    )
}

/// Creates the demo users (if missing) and their notes (if they have none).
pub fn seed(engine: &Engine, accounts: &Accounts) -> Result<()> {
    for (user, name, text) in DEMO_USERS {
        let uri = UserUri::parse(user)?;
        match accounts.add(&uri, name, DEMO_PASSWORD) {
            Ok(_) | Err(AccountError::Exists(_)) => {}
            Err(e) => return Err(e.into()),
        }
        let has_note = engine
            .own_snapshot(&uri)?
            .instances
            .iter()
            .any(|i| &*i.key.category == "note");
        if has_note {
            continue;
        }
        let items: Vec<Publication> = [200u64, 300, 400]
            .iter()
            .map(|c| Publication {
                category: "note".into(),
                instance: 0,
                container: ContainerId::new(*c).expect("well-known"),
                version: 0,
                expire_type: ExpireType::Static,
                expires: None,
                value: Some(note(text)),
            })
            .collect();
        engine.publish(&uri, None, &items)?;
    }
    tracing::info!("demo users alice, bob and carol @example.com (password \"demo\") are ready");
    Ok(())
}
