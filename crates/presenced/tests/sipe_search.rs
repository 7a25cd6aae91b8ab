//! The directory as the real Pidgin SIPE client uses it: "Contact search..." (SOAP
//! `directorySearch` over SIP SERVICE), adding a colleague from the results, and Get
//! Info, against a server whose users come from a directory file. The harness
//! (`tests/sipe/harness.c`, driven by `common/sipe.rs`) fills in SIPE's search dialog,
//! prints the results window and the Get Info window, and presses their buttons as a
//! user would.
//!
//! Needs what `sipe.rs` needs (Debian's `pidgin-sipe libpurple-dev libxml2-dev`).

mod common;

use common::sipe::*;
use common::*;
use serde_json::json;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// One `[[user]]` of the directory file.
#[derive(Clone, Default)]
struct Person {
    user: String,
    display_name: String,
    given_name: String,
    surname: String,
    email: String,
    title: &'static str,
    department: &'static str,
    company: &'static str,
    office: &'static str,
    work_phone: &'static str,
    city: &'static str,
    state: &'static str,
    country: &'static str,
    enabled: bool,
}

impl Person {
    /// An enabled user with a name, and an e-mail address of the form
    /// given.surname@example.com.
    fn new(user: &str, given: &str, surname: &str) -> Person {
        Person {
            user: user.to_string(),
            display_name: format!("{given} {surname}"),
            given_name: given.to_string(),
            surname: surname.to_string(),
            email: format!("{}.{}@example.com", ascii(given), ascii(surname)),
            enabled: true,
            ..Default::default()
        }
    }

    fn toml(&self) -> String {
        let q = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
        let mut out = format!(
            "[[user]]\nuri = {}\nenabled = {}\n",
            q(&self.user),
            self.enabled
        );
        for (key, value) in [
            ("display_name", self.display_name.as_str()),
            ("given_name", &self.given_name),
            ("surname", &self.surname),
            ("email", &self.email),
            ("title", self.title),
            ("department", self.department),
            ("company", self.company),
            ("office", self.office),
            ("work_phone", self.work_phone),
            ("city", self.city),
            ("state", self.state),
            ("country", self.country),
        ] {
            if !value.is_empty() {
                out.push_str(&format!("{key} = {}\n", q(value)));
            }
        }
        out + "\n"
    }

    /// The row SIPE shows for this user in its results window, to a colleague who may
    /// see the directory details: user name, name, company, country, e-mail.
    fn row(&self) -> Row {
        Row {
            user: self.user.clone(),
            name: self.display_name.clone(),
            company: self.company.to_string(),
            country: self.country.to_string(),
            email: self.email.clone(),
        }
    }
}

/// Lower case, without accents (for the e-mail addresses of the test users).
fn ascii(s: &str) -> String {
    s.to_lowercase()
        .replace('á', "a")
        .replace('é', "e")
        .replace('ö', "o")
}

const COMPANY: &str = "Example Corp";
/// How many users share the given name "Many": more than the server's 50 results.
const MANY: usize = 60;
/// Most rows the server returns (SIPE asks for 100).
const MAX_ROWS: usize = 50;

/// The directory: colleagues with names that begin alike, one disabled user, and
/// [`MANY`] users called "Many".
fn people() -> Vec<Person> {
    let alice = Person {
        title: "Engineer",
        department: "R&D",
        company: COMPANY,
        office: "B1 2.14",
        work_phone: "+1 (425) 555-0100",
        city: "Redmond",
        state: "WA",
        country: "US",
        ..Person::new("alice@example.com", "Alice", "Anders")
    };
    let alicia = Person {
        title: "Designer",
        company: COMPANY,
        office: "C3 1.01",
        city: "Stockholm",
        country: "SE",
        ..Person::new("alicia@example.com", "Alicia", "Berg")
    };
    let alida = Person {
        company: COMPANY,
        country: "ES",
        ..Person::new("alida@example.com", "Álida", "Castro")
    };
    // "Ali" is his surname, not his given name.
    let bob = Person {
        company: COMPANY,
        ..Person::new("bob@example.com", "Bob", "Ali")
    };
    let dora = Person {
        title: "Product Manager",
        department: "Sales",
        company: COMPANY,
        office: "A2 0.42",
        work_phone: "+1 (425) 555-0142",
        city: "Redmond",
        state: "WA",
        country: "US",
        ..Person::new("dora@example.com", "Dora", "Andersson")
    };
    // "anders" is inside his surname, not at its start.
    let eve = Person {
        company: COMPANY,
        ..Person::new("eve@example.com", "Eve", "Sanders")
    };
    // Disabled in the directory: never found.
    let alistair = Person {
        company: COMPANY,
        enabled: false,
        ..Person::new("alistair@example.com", "Alistair", "Frank")
    };
    let mut people = vec![alice, alicia, alida, bob, dora, eve, alistair];
    for i in 0..MANY {
        people.push(Person {
            company: "Bulk Co",
            ..Person::new(
                &format!("many{i:02}@example.com"),
                "Many",
                &format!("Member{i:02}"),
            )
        });
    }
    people
}

fn person<'a>(people: &'a [Person], user: &str) -> &'a Person {
    people.iter().find(|p| p.user == user).unwrap()
}

fn write_directory(file: &Path, people: &[Person]) {
    let text: String = people.iter().map(Person::toml).collect();
    let tmp = file.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    // The server reads the file at every sync: it must never see half of it.
    std::fs::rename(&tmp, file).unwrap();
}

/// A server whose users come from a directory file (`[directory] source = "file"`,
/// synced every second), with unauthenticated SIP. Alice and dora also have local
/// passwords ("pw"), for the API. The file is imported before the server starts, so
/// the search index holds everyone from the start.
struct DirectoryServer {
    server: Server,
    file: PathBuf,
    _dir: tempfile::TempDir,
}

fn start_server(people: &[Person]) -> DirectoryServer {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    for user in ["alice@example.com", "dora@example.com"] {
        add_user(&data, user, &person(people, user).display_name, "pw");
    }
    let file = dir.path().join("users.toml");
    write_directory(&file, people);
    let (ok, out, err) = run(
        &["directory", "import", file.to_str().unwrap()],
        &data,
        None,
    );
    assert!(ok, "directory import: {out}{err}");
    let config = dir.path().join("presenced.toml");
    std::fs::write(
        &config,
        format!(
            "[directory]\nsource = \"file\"\nfile = \"{}\"\nsync_interval = 1\n",
            file.display()
        ),
    )
    .unwrap();
    let server = Server::start_with(
        &data,
        &[
            "--config",
            config.to_str().unwrap(),
            "--sip",
            "127.0.0.1:0",
            "--sip-allow-unauthenticated",
        ],
    );
    DirectoryServer {
        server,
        file,
        _dir: dir,
    }
}

/// One row of SIPE's search results window.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Row {
    /// "User name": the SIP address without `sip:`.
    user: String,
    name: String,
    company: String,
    country: String,
    email: String,
}

/// What a search showed: a results window, or a message (SIPE's "No contacts found").
#[derive(Debug)]
enum Outcome {
    Results {
        rows: Vec<Row>,
        /// The text above the rows: "Found 50 contacts (more matched your query):".
        text: String,
    },
    Message(String),
}

/// The columns of SIPE's results window.
const COLUMNS: &str = "User name|Name|Company|Country|Email";

/// SIPE's text when the server had more than it returned.
const MORE: &str = "more matched your query";

impl Outcome {
    fn rows(&self) -> &[Row] {
        match self {
            Outcome::Results { rows, .. } => rows,
            Outcome::Message(m) => panic!("no results window but the message {m:?}"),
        }
    }

    fn text(&self) -> &str {
        match self {
            Outcome::Results { text, .. } => text,
            Outcome::Message(m) => panic!("no results window but the message {m:?}"),
        }
    }

    /// The rows, sorted by user (the server ranks them; the tests compare sets).
    fn sorted(&self) -> Vec<Row> {
        let mut rows = self.rows().to_vec();
        rows.sort();
        rows
    }

    fn users(&self) -> BTreeSet<String> {
        self.rows().iter().map(|r| r.user.clone()).collect()
    }

    fn is_no_contacts(&self) -> bool {
        matches!(self, Outcome::Message(m) if m.contains("No contacts found"))
    }
}

impl Sipe {
    /// "Contact search..." with the dialog filled in (`given=Ali surname=Berg`), and
    /// what SIPE shows for it.
    async fn search(&mut self, fields: &str) -> Outcome {
        self.command(&format!("search {fields}")).await;
        let what = format!("the results of the search {fields}");
        let mut rows = Vec::new();
        loop {
            let line = self
                .expect_line(&what, |l| {
                    l.starts_with("results-columns ")
                        || l.starts_with("result ")
                        || l.starts_with("results-end ")
                        || l.starts_with("notify ")
                })
                .await;
            if let Some(columns) = line.strip_prefix("results-columns ") {
                assert_eq!(columns, COLUMNS, "{}", self.label);
            } else if let Some(row) = line.strip_prefix("result ") {
                let cells: Vec<&str> = row.split('|').collect();
                assert_eq!(cells.len(), 5, "{}: {line}", self.label);
                rows.push(Row {
                    user: cells[0].to_string(),
                    name: cells[1].to_string(),
                    company: cells[2].to_string(),
                    country: cells[3].to_string(),
                    email: cells[4].to_string(),
                });
            } else if let Some(end) = line.strip_prefix("results-end ") {
                let (count, text) = end.split_once(' ').unwrap_or((end, ""));
                assert_eq!(count, rows.len().to_string(), "{}: {line}", self.label);
                return Outcome::Results {
                    rows,
                    text: text.to_string(),
                };
            } else {
                return Outcome::Message(line["notify ".len()..].to_string());
            }
        }
    }

    /// Get Info on `user`: the (label, value) pairs of the window, in order.
    async fn info(&mut self, user: &str) -> Vec<(String, String)> {
        self.command(&format!("info {user}")).await;
        let what = format!("the Get Info window of {user}");
        let mut pairs = Vec::new();
        loop {
            let line = self
                .expect_line(&what, |l| {
                    l.starts_with("info ") || l.starts_with("info-end ")
                })
                .await;
            if let Some(who) = line.strip_prefix("info-end ") {
                assert_eq!(who, format!("sip:{user}"), "{}", self.label);
                return pairs;
            }
            let pair = &line["info ".len()..];
            let (label, value) = pair.split_once('=').unwrap_or((pair, ""));
            pairs.push((label.to_string(), value.to_string()));
        }
    }

    /// Whether the buddy list has `user` in the default group.
    async fn has_buddy(&mut self, user: &str) -> bool {
        let (_, members) = self.groups().await;
        members
            .iter()
            .any(|(name, group, _)| name == &format!("sip:{user}") && group == DEFAULT_GROUP)
    }
}

fn rows(people: &[Person], users: &[&str]) -> Vec<Row> {
    let mut rows: Vec<Row> = users.iter().map(|u| person(people, u).row()).collect();
    rows.sort();
    rows
}

#[tokio::test]
async fn sipe_finds_colleagues_by_name_email_and_sip_id_and_says_when_more_matched() {
    let people = people();
    let ds = start_server(&people);
    let mut alice = Sipe::sign_in(&ds.server, "alice@example.com").await;

    // By given name: every given name that begins with "ali", whatever its case and
    // accents; not bob, whose surname is Ali; not alistair, who is disabled.
    let found = alice.search("given=ali").await;
    assert_eq!(
        found.sorted(),
        rows(
            &people,
            &[
                "alice@example.com",
                "alicia@example.com",
                "alida@example.com"
            ]
        ),
        "{found:?}"
    );
    assert!(!found.text().contains(MORE), "{found:?}");
    assert!(found.text().contains("Found 3 contacts"), "{found:?}");

    // By surname: prefixes of the surname ("Anders", "Andersson"), not eve Sanders.
    let found = alice.search("surname=ANDERS").await;
    assert_eq!(
        found.sorted(),
        rows(&people, &["alice@example.com", "dora@example.com"]),
        "{found:?}"
    );
    let found = alice.search("surname=ali").await;
    assert_eq!(
        found.sorted(),
        rows(&people, &["bob@example.com"]),
        "{found:?}"
    );

    // Every field filled in must match: given name and surname.
    let found = alice.search("given=ali surname=berg").await;
    assert_eq!(
        found.sorted(),
        rows(&people, &["alicia@example.com"]),
        "{found:?}"
    );
    // An accented query finds the unaccented name and the other way round.
    let found = alice.search("given=Álic").await;
    assert_eq!(
        found.users(),
        ["alice@example.com", "alicia@example.com"]
            .map(String::from)
            .into(),
        "{found:?}"
    );

    // By e-mail: exactly one.
    let found = alice.search("email=dora.andersson@example.com").await;
    assert_eq!(
        found.sorted(),
        rows(&people, &["dora@example.com"]),
        "{found:?}"
    );
    // By SIP ID (SIPE sends it as a sip: URI).
    let found = alice.search("sipid=alicia@example.com").await;
    assert_eq!(
        found.sorted(),
        rows(&people, &["alicia@example.com"]),
        "{found:?}"
    );
    // By company and country together.
    let found = alice.search("company=example country=us").await;
    assert_eq!(
        found.sorted(),
        rows(&people, &["alice@example.com", "dora@example.com"]),
        "{found:?}"
    );

    // Nothing matches: SIPE says so.
    let found = alice.search("surname=nobody").await;
    assert!(found.is_no_contacts(), "{found:?}");

    // More matches than the server returns: SIPE asks for 100, the server sends 50
    // and says that more are available, which SIPE shows above the rows.
    let found = alice.search("given=many").await;
    let rows = found.rows();
    assert_eq!(rows.len(), MAX_ROWS, "{found:?}");
    assert_eq!(found.users().len(), MAX_ROWS, "each user once: {found:?}");
    for row in rows {
        let i: usize = row
            .user
            .strip_prefix("many")
            .and_then(|u| u.strip_suffix("@example.com"))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("not a Many user: {row:?}"));
        assert!(i < MANY, "{row:?}");
        assert_eq!(*row, person(&people, &row.user).row());
    }
    assert!(
        found.text().contains(&format!("Found {MAX_ROWS} contacts")) && found.text().contains(MORE),
        "{found:?}"
    );
    alice.quit().await;
}

#[tokio::test]
async fn sipe_adds_a_colleague_from_the_search_results() {
    let people = people();
    let ds = start_server(&people);
    let mut alice = Sipe::sign_in(&ds.server, "alice@example.com").await;
    let api = Api::new(
        &ds.server,
        &ds.server.login("alice@example.com", "pw").await,
    );

    let found = alice.search("given=dora").await;
    assert_eq!(
        found.sorted(),
        rows(&people, &["dora@example.com"]),
        "{found:?}"
    );
    // Add, with dora's row selected: SIPE opens Pidgin's Add Buddy dialog for her in
    // the default group, and the user presses Add. SIPE sends setContact and
    // subscribes to her presence.
    alice.command("search-add 0").await;
    // (The dialog opens from within the button's callback, before the answer.)
    let dialog = format!("request add-buddy dora@example.com|{DEFAULT_GROUP}|");
    assert!(
        alice.log.contains(&dialog),
        "no Add Buddy dialog; events:\n{}",
        alice.log.join("\n")
    );
    alice
        .expect_line("dora added", |l| {
            l == "buddy-added dora@example.com" || l == "buddy-added sip:dora@example.com"
        })
        .await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while !alice.has_buddy("dora@example.com").await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "dora is not in alice's buddy list: {:?}",
            alice.groups().await
        );
        tokio::time::sleep(POLL).await;
    }
    // The server has her on alice's contact list, subscribed.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (status, list) = api.get("/v1/me/contacts").await;
        assert_eq!(status, 200, "{list}");
        let dora = list["contacts"].as_array().unwrap().iter().find(|c| {
            c["uri"]
                .as_str()
                .is_some_and(|u| u.trim_start_matches("sip:") == "dora@example.com")
        });
        if let Some(dora) = dora {
            assert_eq!(dora["subscribed"], true, "{list}");
            let default_group = list["groups"]
                .as_array()
                .unwrap()
                .iter()
                .find(|g| g["name"] == "~")
                .unwrap_or_else(|| panic!("no default group: {list}"))["id"]
                .clone();
            assert_eq!(dora["groups"], json!([default_group]), "{list}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "dora is not on alice's contact list: {list}"
        );
        tokio::time::sleep(POLL).await;
    }

    // Her presence is shown: offline, then as she signs in and changes it.
    alice
        .expect_buddy("dora@example.com", "offline", None)
        .await;
    let mut dora = Sipe::sign_in(&ds.server, "dora@example.com").await;
    expect_live_presence(&mut dora, &mut [&mut alice]).await;
    expect_offline_after_sign_out(dora, &mut [&mut alice]).await;
    alice.quit().await;
}

/// The value of the first pair with `label`.
fn value<'a>(pairs: &'a [(String, String)], label: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(l, _)| l == label)
        .map(|(_, v)| v.as_str())
}

#[tokio::test]
async fn sipe_get_info_shows_the_directory_details_a_colleague_may_see() {
    let people = people();
    let ds = start_server(&people);
    let mut alice = Sipe::sign_in(&ds.server, "alice@example.com").await;
    alice.command("add dora@example.com").await;
    alice
        .expect_buddy("dora@example.com", "offline", None)
        .await;

    // A colleague sees the details card: Get Info shows what the directory says.
    let dora = person(&people, "dora@example.com");
    let pairs = alice.info("dora@example.com").await;
    for (label, want) in [
        ("Display name", dora.display_name.as_str()),
        ("Job title", dora.title),
        ("Office", dora.office),
        ("Business phone", dora.work_phone),
        ("Company", dora.company),
        ("City", dora.city),
        ("State", dora.state),
        ("Country", dora.country),
        ("Email address", &dora.email),
    ] {
        assert_eq!(value(&pairs, label), Some(want), "{label}: {pairs:?}");
    }

    // Dora blocks alice (container 32000): alice may no longer see her details card.
    // Get Info and the search results keep only her name and e-mail.
    let dora_api = Api::new(&ds.server, &ds.server.login("dora@example.com", "pw").await);
    let (_, containers) = dora_api.get("/v1/me/containers").await;
    let version = containers
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == 32000)
        .unwrap_or_else(|| panic!("no container 32000: {containers}"))["version"]
        .clone();
    let (status, changed) = dora_api
        .send(
            reqwest::Method::PATCH,
            "/v1/me/containers",
            json!([{"id": 32000, "version": version,
                    "add": [{"type": "user", "value": "alice@example.com"}]}]),
        )
        .await;
    assert_eq!(status, 200, "{changed}");
    let pairs = alice.info("dora@example.com").await;
    assert_eq!(
        value(&pairs, "Display name"),
        Some(dora.display_name.as_str()),
        "{pairs:?}"
    );
    assert_eq!(
        value(&pairs, "Email address"),
        Some(dora.email.as_str()),
        "{pairs:?}"
    );
    for label in [
        "Job title",
        "Office",
        "Business phone",
        "Company",
        "City",
        "State",
        "Country",
    ] {
        assert_eq!(value(&pairs, label), None, "{label}: {pairs:?}");
    }
    let found = alice.search("given=dora").await;
    assert_eq!(
        found.rows(),
        [Row {
            company: String::new(),
            country: String::new(),
            ..dora.row()
        }],
        "{found:?}"
    );
    alice.quit().await;
}

#[tokio::test]
async fn sipe_never_finds_a_disabled_directory_user() {
    let mut people = people();
    let ds = start_server(&people);
    let mut alice = Sipe::sign_in(&ds.server, "alice@example.com").await;

    // Alistair is disabled in the directory: found by nothing.
    for query in [
        "given=alistair",
        "surname=frank",
        "email=alistair.frank@example.com",
        "sipid=alistair@example.com",
        "given=alistair surname=frank",
    ] {
        let found = alice.search(query).await;
        assert!(found.is_no_contacts(), "{query}: {found:?}");
    }
    let found = alice.search("given=al").await;
    assert_eq!(
        found.users(),
        [
            "alice@example.com",
            "alicia@example.com",
            "alida@example.com"
        ]
        .map(String::from)
        .into(),
        "{found:?}"
    );

    // Alicia is disabled in the directory file: after the server's next sync she
    // is no longer found either.
    people
        .iter_mut()
        .find(|p| p.user == "alicia@example.com")
        .unwrap()
        .enabled = false;
    write_directory(&ds.file, &people);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let found = alice.search("sipid=alicia@example.com").await;
        if found.is_no_contacts() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "alicia is still found after she was disabled: {found:?}"
        );
        // Well below the server's search budget of 10 a second.
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    for query in ["given=alicia", "email=alicia.berg@example.com"] {
        let found = alice.search(query).await;
        assert!(found.is_no_contacts(), "{query}: {found:?}");
    }
    let found = alice.search("given=al").await;
    assert_eq!(
        found.users(),
        ["alice@example.com", "alida@example.com"]
            .map(String::from)
            .into(),
        "{found:?}"
    );
    alice.quit().await;
}
