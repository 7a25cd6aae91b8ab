//! The directory search index: every enabled directory user, searchable by name,
//! e-mail, title and department (the web page and the API), or attribute by
//! attribute (SIPE's `directorySearch`).
//!
//! Matching is case- and accent-insensitive ([`fold`]) and by word prefix: each word
//! of a query must begin some word of the user's fields ("ali and" finds "Alice
//! Anders"). The index is a sorted list of every (word, user) pair, so the users whose
//! words begin with a prefix are one contiguous run found by binary search; a query
//! starts from its rarest word and checks the others per candidate. It is rebuilt
//! from the directory after each sync and swapped in whole, so readers never wait for
//! a rebuild.

use crate::DirectoryEntry;
use presence_model::UserUri;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;
use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;

/// Most results one query may return.
pub const MAX_RESULTS: usize = 50;
/// Longest query, in bytes.
pub const MAX_QUERY_BYTES: usize = 256;
/// Most words in one query.
pub const MAX_QUERY_WORDS: usize = 8;
/// Default budget: queries one user may make in a burst, and how many more per
/// second after it (`[limits] directory_query_burst`, `directory_queries_per_second`).
pub const QUERY_BURST: f64 = 20.0;
pub const QUERIES_PER_SECOND: f64 = 10.0;
/// Users whose query budget is remembered; past it, full budgets are forgotten.
const MAX_THROTTLED_USERS: usize = 100_000;

/// Lowercase, without accents: "Ångström" and "angstrom" fold alike, and so do
/// "Bjørn" and "bjorn" (letters that do not decompose are spelled out).
pub fn fold(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text
        .nfkd()
        .filter(|c| !is_combining_mark(*c))
        .flat_map(char::to_lowercase)
    {
        match c {
            'ø' => out.push('o'),
            'æ' => out.push_str("ae"),
            'œ' => out.push_str("oe"),
            'ß' => out.push_str("ss"),
            'ł' => out.push('l'),
            'đ' | 'ð' => out.push('d'),
            'þ' => out.push_str("th"),
            'ı' => out.push('i'),
            _ => out.push(c),
        }
    }
    out
}

/// The fields a user is found by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Field {
    DisplayName,
    GivenName,
    Surname,
    Email,
    Title,
    Department,
    Company,
    Country,
}

impl Field {
    /// Fields that a free-text query looks at.
    fn free_text(self) -> bool {
        !matches!(self, Field::Company | Field::Country)
    }

    /// Names weigh more than the rest when ranking.
    fn is_name(self) -> bool {
        matches!(self, Field::DisplayName | Field::GivenName | Field::Surname)
    }

    fn of(self, e: &DirectoryEntry) -> &str {
        match self {
            Field::DisplayName => &e.display_name,
            Field::GivenName => &e.given_name,
            Field::Surname => &e.surname,
            // The identity card's e-mail: the SIP address when the directory has none.
            Field::Email => e.identity_email(),
            Field::Title => &e.title,
            Field::Department => &e.department,
            Field::Company => &e.company,
            Field::Country => &e.country,
        }
    }

    const ALL: [Field; 8] = [
        Field::DisplayName,
        Field::GivenName,
        Field::Surname,
        Field::Email,
        Field::Title,
        Field::Department,
        Field::Company,
        Field::Country,
    ];
}

/// The words of a field: whitespace-separated, and the parts of hyphenated ones
/// ("Jean-Luc" gives "jean-luc", "jean" and "luc"). An e-mail address is one word.
fn words(field: Field, text: &str) -> Vec<String> {
    let folded = fold(text);
    let mut out = Vec::new();
    for w in folded.split_whitespace() {
        out.push(w.to_string());
        if field != Field::Email && w.contains('-') {
            out.extend(w.split('-').filter(|p| !p.is_empty()).map(str::to_string));
        }
    }
    out
}

/// What a query found: the users in rank order, and whether more matched than were
/// returned.
#[derive(Debug, Clone, Default)]
pub struct Found {
    pub entries: Vec<Arc<DirectoryEntry>>,
    pub more: bool,
}

/// A query that cannot be run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error("the query is empty")]
    Empty,
    #[error("a query is at most {MAX_QUERY_BYTES} bytes and {MAX_QUERY_WORDS} words")]
    TooLong,
}

struct User {
    entry: Arc<DirectoryEntry>,
    /// Folded display name (a query equal to it ranks first).
    sort_name: String,
    /// The user's place in alphabetical order of folded display names: equal ranks
    /// are ordered by it, with integer comparisons only.
    name_rank: u32,
    /// Each word with the field it comes from (attribute searches check fields).
    words: Vec<(Box<str>, Field)>,
}

/// Which kinds of field a word occurs in for one user.
const IN_NAME: u8 = 1;
const IN_FREE_TEXT: u8 = 2;

/// One (word, user) pair.
#[derive(Clone, Copy)]
struct Posting {
    user: u32,
    /// [`IN_NAME`] and [`IN_FREE_TEXT`] bits.
    class: u8,
}

#[derive(Default)]
struct Index {
    users: Vec<User>,
    by_uri: HashMap<UserUri, u32>,
    /// Every distinct word, sorted.
    words: Vec<Box<str>>,
    /// Where each word's postings start in `postings` (one more entry at the end).
    starts: Vec<u32>,
    /// Postings grouped by word in `words` order, each group sorted by user.
    postings: Vec<Posting>,
}

/// The postings of the words that begin with a prefix: those of the word equal to it
/// (if any) come first.
struct Run<'a> {
    exact: &'a [Posting],
    longer: &'a [Posting],
}

impl Run<'_> {
    fn len(&self) -> usize {
        self.exact.len() + self.longer.len()
    }
}

impl Index {
    fn build(entries: impl IntoIterator<Item = DirectoryEntry>) -> Index {
        let mut users: Vec<User> = Vec::new();
        let mut by_uri = HashMap::new();
        for e in entries.into_iter().filter(|e| e.enabled) {
            if by_uri.contains_key(&e.uri) {
                continue;
            }
            let mut user_words: Vec<(Box<str>, Field)> = Vec::new();
            for f in Field::ALL {
                for w in words(f, f.of(&e)) {
                    user_words.push((w.into_boxed_str(), f));
                }
            }
            user_words.sort();
            user_words.dedup();
            by_uri.insert(e.uri.clone(), users.len() as u32);
            users.push(User {
                sort_name: fold(&e.display_name),
                name_rank: 0,
                entry: Arc::new(e),
                words: user_words,
            });
        }
        let mut order: Vec<u32> = (0..users.len() as u32).collect();
        order.sort_by(|a, b| {
            let (ua, ub) = (&users[*a as usize], &users[*b as usize]);
            ua.sort_name
                .cmp(&ub.sort_name)
                .then_with(|| ua.entry.uri.cmp(&ub.entry.uri))
        });
        for (rank, id) in order.into_iter().enumerate() {
            users[id as usize].name_rank = rank as u32;
        }
        // (word, user, class), merged per (word, user).
        let mut pairs: Vec<(&str, u32, u8)> = Vec::new();
        for (id, u) in users.iter().enumerate() {
            for (w, f) in &u.words {
                let class = if f.is_name() {
                    IN_NAME | IN_FREE_TEXT
                } else if f.free_text() {
                    IN_FREE_TEXT
                } else {
                    0
                };
                pairs.push((w, id as u32, class));
            }
        }
        pairs.sort_unstable();
        let mut index = Index {
            by_uri,
            ..Index::default()
        };
        for (w, user, class) in pairs {
            let new_word = index.words.last().is_none_or(|last| &**last != w);
            if new_word {
                index.words.push(Box::from(w));
                index.starts.push(index.postings.len() as u32);
            }
            match index.postings.last_mut() {
                // The same word in two fields of one user: one posting, both classes.
                Some(p) if !new_word && p.user == user => p.class |= class,
                _ => index.postings.push(Posting { user, class }),
            }
        }
        index.starts.push(index.postings.len() as u32);
        index.postings.shrink_to_fit();
        index.users = users;
        index
    }

    /// The postings of the words that begin with `prefix`.
    fn run(&self, prefix: &str) -> Run<'_> {
        let first = self.words.partition_point(|w| &**w < prefix);
        let len = self.words[first..].partition_point(|w| w.starts_with(prefix));
        let at = |i: usize| self.starts[i] as usize;
        let exact_words = usize::from(self.words.get(first).is_some_and(|w| &**w == prefix));
        Run {
            exact: &self.postings[at(first)..at(first + exact_words)],
            longer: &self.postings[at(first + exact_words)..at(first + len)],
        }
    }

    /// The users with a word in `prefix`'s run, each once.
    fn candidates(&self, prefix: &str) -> Vec<u32> {
        let run = self.run(prefix);
        let mut ids: Vec<u32> = run.exact.iter().chain(run.longer).map(|p| p.user).collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// The best `limit` of `(score, user)` pairs: higher scores first, then by name.
    fn top(&self, mut scored: Vec<(u32, u32)>, limit: usize) -> Found {
        let key = |&(score, id): &(u32, u32)| {
            (u64::from(u32::MAX - score) << 32) | u64::from(self.users[id as usize].name_rank)
        };
        let more = scored.len() > limit;
        if more {
            scored.select_nth_unstable_by_key(limit, key);
            scored.truncate(limit);
        }
        scored.sort_unstable_by_key(key);
        Found {
            entries: scored
                .into_iter()
                .map(|(_, id)| self.users[id as usize].entry.clone())
                .collect(),
            more,
        }
    }
}

/// How well `word` matches one of `user`'s words in `fields`: an exact word beats a
/// prefix, and names beat other fields.
fn word_score(user: &User, word: &str, fields: impl Fn(Field) -> bool) -> Option<u32> {
    user.words
        .iter()
        .filter(|(_, f)| fields(*f))
        .filter_map(|(w, f)| {
            let base = if &**w == word {
                2
            } else if w.starts_with(word) {
                1
            } else {
                return None;
            };
            Some(base * if f.is_name() { 2 } else { 1 })
        })
        .max()
}

/// A free-text match's weight: exact 2, prefix 1; doubled in a name; 0 for a word
/// only in fields free text does not search.
fn posting_score(class: u8, exact: bool) -> u8 {
    if class & IN_FREE_TEXT == 0 {
        return 0;
    }
    let base = if exact { 2 } else { 1 };
    if class & IN_NAME != 0 { base * 2 } else { base }
}

/// A user asked too often; they may ask again after `retry_after`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many directory queries; try again in {} s", retry_after.as_secs().max(1))]
pub struct Throttled {
    pub retry_after: std::time::Duration,
}

/// Per-user query budgets (a token bucket each), shared by every front end.
struct Throttle {
    burst: f64,
    per_second: f64,
    budgets: Mutex<HashMap<UserUri, (f64, Instant)>>,
}

impl Throttle {
    fn new(burst: f64, per_second: f64) -> Throttle {
        Throttle {
            burst: burst.max(1.0),
            per_second: per_second.max(f64::MIN_POSITIVE),
            budgets: Mutex::default(),
        }
    }

    fn admit(&self, user: &UserUri, now: Instant) -> Result<(), Throttled> {
        let (burst, rate) = (self.burst, self.per_second);
        let refill = |tokens: f64, at: Instant| {
            (tokens + now.duration_since(at).as_secs_f64() * rate).min(burst)
        };
        let mut budgets = self.budgets.lock().expect("throttle lock");
        if budgets.len() >= MAX_THROTTLED_USERS {
            // Anyone whose budget has filled up again is as good as new.
            budgets.retain(|_, (tokens, at)| refill(*tokens, *at) < burst);
        }
        let (tokens, at) = budgets.entry(user.clone()).or_insert((burst, now));
        *tokens = refill(*tokens, *at);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(Throttled {
                retry_after: std::time::Duration::from_secs_f64((1.0 - *tokens) / rate),
            })
        }
    }
}

/// The search index, shared by every front end.
pub struct DirectoryIndex {
    current: RwLock<Arc<Index>>,
    throttle: Throttle,
}

impl Default for DirectoryIndex {
    fn default() -> Self {
        DirectoryIndex::with_query_budget(QUERY_BURST, QUERIES_PER_SECOND)
    }
}

impl DirectoryIndex {
    /// An empty index with the default query budget.
    pub fn new() -> DirectoryIndex {
        DirectoryIndex::default()
    }

    /// An empty index whose users may each make `burst` queries at once and
    /// `per_second` more every second.
    pub fn with_query_budget(burst: f64, per_second: f64) -> DirectoryIndex {
        DirectoryIndex {
            current: RwLock::default(),
            throttle: Throttle::new(burst, per_second),
        }
    }

    /// Replaces the whole index with the enabled users among `entries`.
    pub fn replace(&self, entries: impl IntoIterator<Item = DirectoryEntry>) {
        let fresh = Arc::new(Index::build(entries));
        *self.current.write().expect("index lock") = fresh;
    }

    /// Counts one query of `user` against their budget.
    pub fn admit(&self, user: &UserUri) -> Result<(), Throttled> {
        self.throttle.admit(user, Instant::now())
    }

    fn snapshot(&self) -> Arc<Index> {
        self.current.read().expect("index lock").clone()
    }

    /// How many users can be found.
    pub fn len(&self) -> usize {
        self.snapshot().users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The enabled directory user with this address.
    pub fn get(&self, uri: &UserUri) -> Option<Arc<DirectoryEntry>> {
        let index = self.snapshot();
        index
            .by_uri
            .get(uri)
            .map(|id| index.users[*id as usize].entry.clone())
    }

    /// Free-text search over names, e-mail, title and department: every word of
    /// `query` must begin a word of the user's; exact words and names rank first.
    /// At most `limit` (capped at [`MAX_RESULTS`]) users.
    pub fn search(&self, query: &str, limit: usize) -> Result<Found, QueryError> {
        if query.len() > MAX_QUERY_BYTES {
            return Err(QueryError::TooLong);
        }
        let folded = fold(query);
        let mut qwords: Vec<&str> = folded.split_whitespace().collect();
        if qwords.is_empty() {
            return Err(QueryError::Empty);
        }
        if qwords.len() > MAX_QUERY_WORDS {
            return Err(QueryError::TooLong);
        }
        let whole = qwords.join(" ");
        qwords.sort_unstable();
        qwords.dedup();
        let limit = limit.min(MAX_RESULTS);
        let index = self.snapshot();
        // Rarest word first: later words only count for users every earlier one
        // matched. `matched[u]` is how many words user u matched so far, `total[u]`
        // the sum of their best weights, `best[u]` the current word's best weight.
        let mut runs: Vec<Run> = qwords.iter().map(|w| index.run(w)).collect();
        runs.sort_by_key(Run::len);
        let n = index.users.len();
        // Weights are at most 4 per word and 8 words: bytes suffice.
        let (mut matched, mut total, mut best) = (vec![0u8; n], vec![0u8; n], vec![0u8; n]);
        let mut touched: Vec<u32> = Vec::new();
        for (i, run) in runs.iter().enumerate() {
            let i = i as u8;
            let exact = run.exact.iter().map(|p| (p, true));
            let longer = run.longer.iter().map(|p| (p, false));
            for (p, is_exact) in exact.chain(longer) {
                let (u, score) = (p.user as usize, posting_score(p.class, is_exact));
                if score == 0 {
                    continue;
                }
                if matched[u] == i {
                    // The first posting of this word for this user.
                    matched[u] = i + 1;
                    best[u] = score;
                    total[u] += score;
                    if i == 0 {
                        touched.push(p.user);
                    }
                } else if matched[u] == i + 1 && score > best[u] {
                    total[u] += score - best[u];
                    best[u] = score;
                }
            }
        }
        let all = runs.len() as u8;
        let scored: Vec<(u32, u32)> = touched
            .into_iter()
            .filter(|u| matched[*u as usize] == all)
            .map(|u| {
                let user = &index.users[u as usize];
                // The whole query being the display name beats everything else.
                let bonus = if user.sort_name.len() == whole.len() && user.sort_name == whole {
                    100
                } else {
                    0
                };
                (u32::from(total[u as usize]) + bonus, u)
            })
            .collect();
        Ok(index.top(scored, limit))
    }

    /// Attribute-by-attribute search (SIPE's rows): every `(field, value)` must match,
    /// each value as word prefixes of that field. With `uri`, only that user is
    /// considered (a search by SIP address). At most `limit` users.
    pub fn search_fields(
        &self,
        uri: Option<&UserUri>,
        rows: &[(Field, String)],
        limit: usize,
    ) -> Result<Found, QueryError> {
        let limit = limit.min(MAX_RESULTS);
        if rows.iter().map(|(_, v)| v.len()).sum::<usize>() > MAX_QUERY_BYTES {
            return Err(QueryError::TooLong);
        }
        let wanted: Vec<(Field, Vec<String>)> = rows
            .iter()
            .map(|(f, v)| {
                let mut ws = words(*f, v);
                ws.sort_unstable();
                ws.dedup();
                (*f, ws)
            })
            .filter(|(_, ws)| !ws.is_empty())
            .collect();
        if wanted.iter().map(|(_, ws)| ws.len()).sum::<usize>() > MAX_QUERY_WORDS {
            return Err(QueryError::TooLong);
        }
        let index = self.snapshot();
        let candidates = match uri {
            Some(uri) => index.by_uri.get(uri).copied().into_iter().collect(),
            None => match wanted
                .iter()
                .flat_map(|(_, ws)| ws.iter())
                .min_by_key(|w| index.run(w).len())
            {
                Some(rarest) => index.candidates(rarest),
                None => return Ok(Found::default()),
            },
        };
        let scored = candidates
            .into_iter()
            .filter_map(|id| {
                let user = &index.users[id as usize];
                let mut total = 0;
                for (field, ws) in &wanted {
                    for w in ws {
                        total += word_score(user, w, |f| f == *field)?;
                    }
                }
                Some((total, id))
            })
            .collect();
        Ok(index.top(scored, limit))
    }

    /// Roughly how many bytes the index holds (users' entries, words and postings).
    pub fn heap_bytes(&self) -> usize {
        let index = self.snapshot();
        let entry_bytes = |e: &DirectoryEntry| {
            std::mem::size_of::<DirectoryEntry>()
                + [
                    &e.key,
                    &e.display_name,
                    &e.given_name,
                    &e.surname,
                    &e.email,
                    &e.title,
                    &e.department,
                    &e.company,
                    &e.office,
                    &e.work_phone,
                    &e.mobile,
                    &e.street,
                    &e.city,
                    &e.state,
                    &e.postal_code,
                    &e.country,
                ]
                .iter()
                .map(|s| s.capacity())
                .sum::<usize>()
                + e.uri.as_str().len()
                + e.dn.as_ref().map_or(0, String::capacity)
        };
        let users: usize = index
            .users
            .iter()
            .map(|u| {
                std::mem::size_of::<User>()
                    + entry_bytes(&u.entry)
                    + u.sort_name.capacity()
                    + u.words
                        .iter()
                        .map(|(w, _)| w.len() + std::mem::size_of::<(Box<str>, Field)>())
                        .sum::<usize>()
            })
            .sum();
        let words: usize = index
            .words
            .iter()
            .map(|w| w.len() + std::mem::size_of::<Box<str>>() + std::mem::size_of::<u32>())
            .sum();
        users
            + words
            + index.postings.capacity() * std::mem::size_of::<Posting>()
            + index.by_uri.capacity() * (std::mem::size_of::<(UserUri, u32)>() + 8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(uri: &str, name: &str, title: &str, department: &str) -> DirectoryEntry {
        let (given, sur) = name.split_once(' ').unwrap_or((name, ""));
        DirectoryEntry {
            key: uri.into(),
            dn: None,
            uri: UserUri::parse(uri).unwrap(),
            enabled: true,
            display_name: name.into(),
            given_name: given.into(),
            surname: sur.into(),
            email: uri.into(),
            title: title.into(),
            department: department.into(),
            company: "Contoso".into(),
            office: String::new(),
            work_phone: String::new(),
            mobile: String::new(),
            street: String::new(),
            city: String::new(),
            state: String::new(),
            postal_code: String::new(),
            country: "NO".into(),
        }
    }

    fn names(found: &Found) -> Vec<&str> {
        found
            .entries
            .iter()
            .map(|e| e.display_name.as_str())
            .collect()
    }

    fn sample() -> DirectoryIndex {
        let index = DirectoryIndex::new();
        let mut disabled = entry("dan@contoso.com", "Alice Disabled", "", "");
        disabled.enabled = false;
        index.replace([
            entry("alice@contoso.com", "Alice Anders", "Engineer", "Research"),
            entry("alicia@contoso.com", "Alicia Keys", "Pianist", "Music"),
            entry("bob@contoso.com", "Bob Ali", "Manager", "Sales"),
            entry("zoe@contoso.com", "Zoë Ångström", "Analyst", "Research"),
            entry("jl@contoso.com", "Jean-Luc Picard", "Captain", "Fleet"),
            disabled,
        ]);
        index
    }

    #[test]
    fn every_word_must_begin_a_word_of_the_user() {
        let index = sample();
        assert_eq!(
            names(&index.search("ali and", 10).unwrap()),
            vec!["Alice Anders"]
        );
        assert_eq!(
            names(&index.search("research", 10).unwrap()),
            vec!["Alice Anders", "Zoë Ångström"]
        );
        assert!(
            index.search("lice", 10).unwrap().entries.is_empty(),
            "prefixes only"
        );
        assert_eq!(
            names(&index.search("luc", 10).unwrap()),
            vec!["Jean-Luc Picard"]
        );
        assert_eq!(
            names(&index.search("bob@contoso", 10).unwrap()),
            vec!["Bob Ali"]
        );
    }

    #[test]
    fn accents_and_case_do_not_matter() {
        let index = sample();
        assert_eq!(
            names(&index.search("ZOE ANGSTROM", 10).unwrap()),
            vec!["Zoë Ångström"]
        );
        assert_eq!(
            names(&index.search("zoë", 10).unwrap()),
            vec!["Zoë Ångström"]
        );
        assert_eq!(fold("Ångström ÉCOLE"), "angstrom ecole");
        assert_eq!(fold("Bjørn Æsir Łódź Straße"), "bjorn aesir lodz strasse");
    }

    #[test]
    fn exact_words_and_names_rank_first() {
        let index = sample();
        // "ali" is a whole surname for Bob Ali, a prefix for Alice and Alicia.
        let found = index.search("ali", 10).unwrap();
        assert_eq!(
            names(&found),
            vec!["Bob Ali", "Alice Anders", "Alicia Keys"]
        );
        // A name match beats a title match of the same kind.
        let index2 = DirectoryIndex::new();
        index2.replace([
            entry("a@x.com", "Paula Smith", "Manager", ""),
            entry("b@x.com", "Manny Jones", "Clerk", ""),
        ]);
        assert_eq!(
            names(&index2.search("man", 10).unwrap()),
            vec!["Manny Jones", "Paula Smith"]
        );
    }

    #[test]
    fn disabled_users_are_not_found_and_limits_hold() {
        let index = sample();
        assert!(index.search("disabled", 10).unwrap().entries.is_empty());
        assert!(
            index
                .get(&UserUri::parse("dan@contoso.com").unwrap())
                .is_none()
        );
        let found = index.search("ali", 2).unwrap();
        assert_eq!((found.entries.len(), found.more), (2, true));
        let found = index.search("ali", 3).unwrap();
        assert_eq!((found.entries.len(), found.more), (3, false));
        let many = DirectoryIndex::new();
        many.replace((0..200).map(|i| entry(&format!("u{i}@x.com"), &format!("User {i}"), "", "")));
        let found = many.search("user", 1000).unwrap();
        assert_eq!((found.entries.len(), found.more), (MAX_RESULTS, true));
        assert_eq!(index.search("   ", 10).unwrap_err(), QueryError::Empty);
        assert_eq!(
            index.search(&"a ".repeat(9), 10).unwrap_err(),
            QueryError::TooLong
        );
        assert_eq!(
            index
                .search(&"a".repeat(MAX_QUERY_BYTES + 1), 10)
                .unwrap_err(),
            QueryError::TooLong
        );
    }

    #[test]
    fn attribute_rows_match_their_own_field_only() {
        let index = sample();
        let rows = |r: &[(Field, &str)]| -> Vec<(Field, String)> {
            r.iter().map(|(f, v)| (*f, v.to_string())).collect()
        };
        let found = index
            .search_fields(None, &rows(&[(Field::GivenName, "ali")]), 10)
            .unwrap();
        assert_eq!(
            names(&found),
            vec!["Alice Anders", "Alicia Keys"],
            "not Bob Ali"
        );
        let found = index
            .search_fields(
                None,
                &rows(&[(Field::GivenName, "ali"), (Field::Surname, "k")]),
                10,
            )
            .unwrap();
        assert_eq!(names(&found), vec!["Alicia Keys"]);
        let found = index
            .search_fields(None, &rows(&[(Field::Email, "bob@contoso.com")]), 10)
            .unwrap();
        assert_eq!(names(&found), vec!["Bob Ali"]);
        let found = index
            .search_fields(None, &rows(&[(Field::Company, "contoso")]), 1)
            .unwrap();
        assert_eq!((found.entries.len(), found.more), (1, true));
        assert!(
            index
                .search_fields(None, &rows(&[(Field::Country, "")]), 10)
                .unwrap()
                .entries
                .is_empty()
        );
        // By SIP address: that user only, and only if the other rows match too.
        let bob = UserUri::parse("bob@contoso.com").unwrap();
        assert_eq!(
            names(&index.search_fields(Some(&bob), &[], 10).unwrap()),
            vec!["Bob Ali"]
        );
        let by_surname = index
            .search_fields(Some(&bob), &rows(&[(Field::Surname, "al")]), 10)
            .unwrap();
        assert_eq!(names(&by_surname), vec!["Bob Ali"]);
        let by_given = index
            .search_fields(Some(&bob), &rows(&[(Field::GivenName, "al")]), 10)
            .unwrap();
        assert!(by_given.entries.is_empty());
        let dan = UserUri::parse("dan@contoso.com").unwrap();
        assert!(
            index
                .search_fields(Some(&dan), &[], 10)
                .unwrap()
                .entries
                .is_empty(),
            "disabled"
        );
        // Rows are bounded like free text: words in all, and bytes.
        let many = rows(&[(Field::Company, &"a b c d e f g h i ".repeat(2))]);
        assert_eq!(
            index.search_fields(None, &many, 10).unwrap_err(),
            QueryError::TooLong
        );
        let repeated = rows(&[(Field::Company, &"contoso ".repeat(20))]);
        assert!(
            index.search_fields(None, &repeated, 10).is_ok(),
            "repeats count once"
        );
        let long = rows(&[(Field::Company, &"x".repeat(MAX_QUERY_BYTES + 1))]);
        assert_eq!(
            index.search_fields(None, &long, 10).unwrap_err(),
            QueryError::TooLong
        );
    }

    #[test]
    fn each_user_has_a_query_budget() {
        let throttle = Throttle::new(QUERY_BURST, QUERIES_PER_SECOND);
        let (alice, bob) = (
            UserUri::parse("alice@x.com").unwrap(),
            UserUri::parse("bob@x.com").unwrap(),
        );
        let t0 = Instant::now();
        for _ in 0..QUERY_BURST as usize {
            throttle.admit(&alice, t0).unwrap();
        }
        let refused = throttle.admit(&alice, t0).unwrap_err();
        assert!(refused.retry_after > std::time::Duration::ZERO);
        assert!(throttle.admit(&bob, t0).is_ok(), "budgets are per user");
        let later = t0 + std::time::Duration::from_secs_f64(1.0 / QUERIES_PER_SECOND);
        assert!(throttle.admit(&alice, later).is_ok(), "refilled");
        assert!(throttle.admit(&alice, later).is_err());
    }

    #[test]
    fn a_rebuild_replaces_everything() {
        let index = sample();
        assert!(
            index
                .get(&UserUri::parse("bob@contoso.com").unwrap())
                .is_some()
        );
        index.replace([entry("new@contoso.com", "New Person", "", "")]);
        assert_eq!(index.len(), 1);
        assert!(
            index
                .get(&UserUri::parse("bob@contoso.com").unwrap())
                .is_none()
        );
        assert!(index.heap_bytes() > 0);
    }
}
