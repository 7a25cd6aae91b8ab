//! User accounts: creation, password changes and verification.
//!
//! Passwords are stored as argon2id hashes. Beside each hash the NT hash
//! (MD4 of the UTF-16LE password, MS-NLMP) is kept, sealed with ChaCha20-Poly1305
//! under a key that lives in the data directory (`secret.key`, mode 0600) and bound to
//! the user's URI, so SIP NTLM authentication can be offered without a password reset.
//! A copy of the database alone reveals neither.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use md4::{Digest, Md4};
use presence_model::{Timestamp, UserUri};
use presence_store::{Account, SessionRecord, StoreError, Stores};
use rand::RngCore;
use rand::rngs::OsRng;
use sha2::Sha256;
use std::path::Path;
use std::time::Duration;

/// Password checks (argon2id, 19 MiB each) running at once; past it sign-ins are
/// refused as busy rather than queued, so a flood cannot exhaust memory or starve
/// the threads everything else runs on.
pub const MAX_CONCURRENT_CHECKS: usize = 4;
/// Failed sign-ins of one user tolerated per [`FAILURE_WINDOW`], on every interface.
pub const MAX_FAILURES: u32 = 5;
pub const FAILURE_WINDOW: std::time::Duration = std::time::Duration::from_secs(60);
/// Users whose failures are tracked at most; the oldest windows are dropped past it.
const MAX_TRACKED_FAILURES: usize = 100_000;

/// Name of the sealing key file in the data directory.
pub const KEY_FILE: &str = "secret.key";
/// Longest accepted password, in bytes.
pub const MAX_PASSWORD_BYTES: usize = 1024;
/// Longest accepted display name, in bytes.
pub const MAX_DISPLAY_NAME_BYTES: usize = 256;
const NONCE_LEN: usize = 12;

#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("user {0} already exists")]
    Exists(UserUri),
    #[error("no such user {0}")]
    NotFound(UserUri),
    #[error("the password must be 1 to {MAX_PASSWORD_BYTES} bytes")]
    BadPassword,
    #[error("the display name must be at most {MAX_DISPLAY_NAME_BYTES} bytes")]
    BadDisplayName,
    #[error("the sealing key {path} is unusable: {reason}")]
    Key { path: String, reason: String },
    #[error("too many sign-ins are being checked; try again shortly")]
    Busy,
    #[error("too many failed sign-ins for this user; try again later")]
    TooManyFailures,
    #[error("{0} has no local password: the password lives only in the directory")]
    NoLocalPassword(UserUri),
    #[error("sealed credentials of {0} cannot be opened with this data directory's key")]
    Unseal(UserUri),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What callers may know about an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountInfo {
    pub uri: UserUri,
    pub display_name: String,
    pub created: Timestamp,
    /// Disabled by the directory.
    pub disabled: bool,
}

impl From<&Account> for AccountInfo {
    fn from(a: &Account) -> Self {
        AccountInfo {
            uri: a.uri.clone(),
            display_name: a.display_name.clone(),
            created: a.created,
            disabled: a.disabled,
        }
    }
}

/// Sign-in throttling shared by HTTP and SIP.
#[derive(Default)]
struct Limiter {
    inflight: std::sync::atomic::AtomicUsize,
    failures: std::sync::Mutex<std::collections::HashMap<UserUri, (u32, std::time::Instant)>>,
}

/// A running password check; dropping it frees its slot.
pub struct CheckSlot<'a>(&'a Limiter);

impl Drop for CheckSlot<'_> {
    fn drop(&mut self) {
        self.0
            .inflight
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// How long a checked API token is trusted without asking the store again. A token
/// revoked through this process (sign-out, password change, removal, directory
/// disable) stops working at once; one revoked through another cluster node within
/// this time.
pub const TOKEN_CACHE_TTL: Duration = Duration::from_secs(5);
/// Checked tokens remembered at most; the cache is emptied when it is full.
const MAX_CACHED_TOKENS: usize = 100_000;

/// Tokens checked recently: hash -> (account, session expiry, when checked).
type TokenCache = parking_lot::Mutex<
    std::collections::HashMap<[u8; 32], (AccountInfo, Timestamp, std::time::Instant)>,
>;

pub struct Accounts {
    limiter: Limiter,
    tokens: TokenCache,
    store: Stores,
    cipher: ChaCha20Poly1305,
    /// Verified against when the user does not exist, so an unknown user costs the
    /// same time as a wrong password.
    dummy_hash: String,
}

fn load_or_create_key(data_dir: &Path) -> Result<[u8; 32], AccountError> {
    let path = data_dir.join(KEY_FILE);
    let err = |reason: String| AccountError::Key {
        path: path.display().to_string(),
        reason,
    };
    match std::fs::read(&path) {
        Ok(bytes) => bytes
            .try_into()
            .map_err(|b: Vec<u8>| err(format!("expected 32 bytes, found {}", b.len()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut key = [0u8; 32];
            OsRng.fill_bytes(&mut key);
            write_private(&path, &key).map_err(|e| err(e.to_string()))?;
            Ok(key)
        }
        Err(e) => Err(err(e.to_string())),
    }
}

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, bytes)
}

/// MD4 of the UTF-16LE password: the NT one-way function of MS-NLMP.
pub fn nt_hash(password: &str) -> [u8; 16] {
    let utf16: Vec<u8> = password.encode_utf16().flat_map(u16::to_le_bytes).collect();
    Md4::digest(&utf16).into()
}

fn check_password(password: &str) -> Result<(), AccountError> {
    if password.is_empty() || password.len() > MAX_PASSWORD_BYTES {
        return Err(AccountError::BadPassword);
    }
    Ok(())
}

fn hash_password(password: &str) -> String {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .expect("argon2 with default parameters")
        .to_string()
}

fn now() -> Timestamp {
    Timestamp::from_millis(chrono::Utc::now().timestamp_millis())
}

impl Accounts {
    pub fn open(store: Stores, data_dir: &Path) -> Result<Self, AccountError> {
        let key = load_or_create_key(data_dir)?;
        Ok(Accounts {
            limiter: Limiter::default(),
            tokens: TokenCache::default(),
            store,
            cipher: ChaCha20Poly1305::new(Key::from_slice(&key)),
            dummy_hash: hash_password("presenced-dummy-password"),
        })
    }

    fn seal(&self, uri: &UserUri, secret: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        OsRng.fill_bytes(&mut nonce);
        let sealed = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: secret,
                    aad: uri.as_str().as_bytes(),
                },
            )
            .expect("sealing cannot fail");
        [nonce.as_slice(), &sealed].concat()
    }

    pub fn add(
        &self,
        uri: &UserUri,
        display_name: &str,
        password: &str,
    ) -> Result<AccountInfo, AccountError> {
        check_password(password)?;
        if display_name.len() > MAX_DISPLAY_NAME_BYTES {
            return Err(AccountError::BadDisplayName);
        }
        let account = Account {
            uri: uri.clone(),
            display_name: display_name.to_string(),
            password_hash: hash_password(password),
            nt_hash_sealed: self.seal(uri, &nt_hash(password)),
            created: now(),
            disabled: false,
        };
        if !self.store.accounts.insert(&account)? {
            return Err(AccountError::Exists(uri.clone()));
        }
        Ok(AccountInfo::from(&account))
    }

    /// Creates or updates the accounts of directory users (URI, display name,
    /// enabled), one independent write per user (a sync cut short is completed by
    /// the next): no local password for new ones (it lives in the directory); a local
    /// account with the same URI keeps its password and follows the directory from
    /// then on. Disabled users lose their sessions at once. Returns how many accounts
    /// were created.
    pub fn ensure_directory_users(
        &self,
        users: &[(UserUri, String, bool)],
    ) -> Result<usize, AccountError> {
        let mut created = 0;
        for (uri, name, enabled) in users {
            let mut name = name.clone();
            while name.len() > MAX_DISPLAY_NAME_BYTES {
                name.pop();
            }
            match self.store.accounts.get(uri)? {
                None => {
                    let account = Account {
                        uri: uri.clone(),
                        display_name: name,
                        password_hash: String::new(),
                        nt_hash_sealed: Vec::new(),
                        created: now(),
                        disabled: !enabled,
                    };
                    if self.store.accounts.insert(&account)? {
                        created += 1;
                    }
                }
                Some(mut account) => {
                    if account.display_name != name || account.disabled == *enabled {
                        account.display_name = name;
                        account.disabled = !enabled;
                        self.store.accounts.update(&account)?;
                    }
                }
            }
            if !enabled {
                self.forget_tokens_of(uri);
                self.store.sessions.delete_of(uri)?;
            }
        }
        Ok(created)
    }

    /// The directory DN of an enabled user (for a password check by LDAP bind).
    pub fn directory_dn(&self, uri: &UserUri) -> Result<Option<String>, AccountError> {
        match self.store.accounts.get(uri)? {
            Some(a) if !a.disabled => Ok(self.store.directory.dn(uri)?),
            _ => Ok(None),
        }
    }

    pub fn set_password(&self, uri: &UserUri, password: &str) -> Result<(), AccountError> {
        check_password(password)?;
        let mut account = self
            .store
            .accounts
            .get(uri)?
            .ok_or_else(|| AccountError::NotFound(uri.clone()))?;
        account.password_hash = hash_password(password);
        account.nt_hash_sealed = self.seal(uri, &nt_hash(password));
        if !self.store.accounts.update(&account)? {
            return Err(AccountError::NotFound(uri.clone()));
        }
        // A new password ends every session opened with the old one.
        self.forget_tokens_of(uri);
        self.store.sessions.delete_of(uri)?;
        Ok(())
    }

    /// Removes the account, then its API sessions and its presentity document (each
    /// its own write; a document left behind by a crash in between is an orphan the
    /// server deletes at its next start).
    pub fn remove(&self, uri: &UserUri) -> Result<(), AccountError> {
        self.forget_tokens_of(uri);
        if !self.store.accounts.delete(uri)? {
            return Err(AccountError::NotFound(uri.clone()));
        }
        self.store.sessions.delete_of(uri)?;
        self.store.documents.delete(uri)?;
        Ok(())
    }

    pub fn list(&self) -> Result<Vec<AccountInfo>, AccountError> {
        Ok(self
            .store
            .accounts
            .list()?
            .iter()
            .map(AccountInfo::from)
            .collect())
    }

    pub fn get(&self, uri: &UserUri) -> Result<Option<AccountInfo>, AccountError> {
        Ok(self
            .store
            .accounts
            .get(uri)?
            .as_ref()
            .map(AccountInfo::from))
    }

    /// Takes one of the [`MAX_CONCURRENT_CHECKS`] password-check slots.
    pub fn check_slot(&self) -> Result<CheckSlot<'_>, AccountError> {
        use std::sync::atomic::Ordering;
        let before = self.limiter.inflight.fetch_add(1, Ordering::SeqCst);
        let slot = CheckSlot(&self.limiter);
        if before >= MAX_CONCURRENT_CHECKS {
            return Err(AccountError::Busy);
        }
        Ok(slot)
    }

    /// Whether `uri` has had [`MAX_FAILURES`] failed sign-ins within the window.
    pub fn sign_in_blocked(&self, uri: &UserUri) -> bool {
        let map = self.limiter.failures.lock().expect("not poisoned");
        matches!(map.get(uri), Some((n, since)) if *n >= MAX_FAILURES && since.elapsed() < FAILURE_WINDOW)
    }

    /// Counts a failed sign-in of an existing user.
    pub fn record_failure(&self, uri: &UserUri) {
        let mut map = self.limiter.failures.lock().expect("not poisoned");
        if map.len() >= MAX_TRACKED_FAILURES {
            map.retain(|_, (_, since)| since.elapsed() < FAILURE_WINDOW);
        }
        if map.len() >= MAX_TRACKED_FAILURES {
            return;
        }
        let entry = map
            .entry(uri.clone())
            .or_insert((0, std::time::Instant::now()));
        if entry.1.elapsed() >= FAILURE_WINDOW {
            *entry = (0, std::time::Instant::now());
        }
        entry.0 += 1;
    }

    pub fn clear_failures(&self, uri: &UserUri) {
        self.limiter
            .failures
            .lock()
            .expect("not poisoned")
            .remove(uri);
    }

    /// Checks a password. Unknown users and wrong passwords both answer `Ok(None)`
    /// after the same argon2 work. This is CPU-heavy: call it off the async runtime.
    pub fn verify(&self, user: &str, password: &str) -> Result<Option<AccountInfo>, AccountError> {
        let uri = UserUri::parse(user).ok();
        if uri.as_ref().is_some_and(|u| self.sign_in_blocked(u)) {
            return Err(AccountError::TooManyFailures);
        }
        let _slot = self.check_slot()?;
        let account = match &uri {
            Some(uri) if password.len() <= MAX_PASSWORD_BYTES => self.store.accounts.get(uri)?,
            _ => None,
        };
        // Unknown, disabled and directory-only users cost the same work as a wrong
        // password.
        let account = account.filter(|a| !a.disabled && !a.password_hash.is_empty());
        let hash = account
            .as_ref()
            .map_or(self.dummy_hash.as_str(), |a| &a.password_hash);
        let ok = PasswordHash::new(hash)
            .map(|h| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &h)
                    .is_ok()
            })
            .unwrap_or(false);
        match account {
            Some(a) if ok => {
                self.clear_failures(&a.uri);
                Ok(Some(AccountInfo::from(&a)))
            }
            Some(a) => {
                self.record_failure(&a.uri);
                Ok(None)
            }
            None => Ok(None),
        }
    }

    /// Opens an API session for a verified user: a random 32-byte token (base64url)
    /// of which only the SHA-256 is stored, so sessions survive restarts and a copy of
    /// the database grants nothing.
    pub fn issue_token(
        &self,
        uri: &UserUri,
        ttl: Duration,
    ) -> Result<(String, Timestamp), AccountError> {
        let mut raw = [0u8; 32];
        OsRng.fill_bytes(&mut raw);
        let token = URL_SAFE_NO_PAD.encode(raw);
        let expires = Timestamp::from_millis(now().millis() + ttl.as_millis() as i64);
        self.store.sessions.insert(
            &Sha256::digest(token.as_bytes()),
            &SessionRecord {
                uri: uri.clone(),
                expires,
            },
        )?;
        Ok((token, expires))
    }

    /// The account behind a live token; `None` for unknown, expired or revoked tokens
    /// and for users removed since.
    pub fn check_token(&self, token: &str) -> Result<Option<AccountInfo>, AccountError> {
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some((info, expires, at)) = self.tokens.lock().get(&hash)
            && at.elapsed() < TOKEN_CACHE_TTL
            && *expires > now()
        {
            return Ok(Some(info.clone()));
        }
        let Some(session) = self.store.sessions.get(&hash)? else {
            return Ok(None);
        };
        if session.expires <= now() {
            return Ok(None);
        }
        let info = self
            .store
            .accounts
            .get(&session.uri)?
            .filter(|a| !a.disabled)
            .as_ref()
            .map(AccountInfo::from);
        if let Some(info) = &info {
            let mut cache = self.tokens.lock();
            if cache.len() >= MAX_CACHED_TOKENS {
                cache.clear();
            }
            cache.insert(
                hash,
                (info.clone(), session.expires, std::time::Instant::now()),
            );
        }
        Ok(info)
    }

    pub fn revoke_token(&self, token: &str) -> Result<bool, AccountError> {
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        self.tokens.lock().remove(&hash);
        Ok(self.store.sessions.delete(&hash)?)
    }

    /// Forgets the checked tokens of a user whose sessions just ended.
    fn forget_tokens_of(&self, uri: &UserUri) {
        self.tokens
            .lock()
            .retain(|_, (info, _, _)| &info.uri != uri);
    }

    /// Forgets expired sessions; returns how many.
    pub fn prune_tokens(&self) -> Result<usize, AccountError> {
        Ok(self.store.sessions.delete_expired(now())?)
    }

    /// The NT hash of the user's password, for SIP NTLM. `None` for unknown users.
    pub fn nt_hash(&self, uri: &UserUri) -> Result<Option<[u8; 16]>, AccountError> {
        let Some(account) = self.store.accounts.get(uri)? else {
            return Ok(None);
        };
        let sealed = &account.nt_hash_sealed;
        if sealed.is_empty() {
            return Err(AccountError::NoLocalPassword(uri.clone()));
        }
        if sealed.len() < NONCE_LEN {
            return Err(AccountError::Unseal(uri.clone()));
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let plain = self
            .cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: body,
                    aad: uri.as_str().as_bytes(),
                },
            )
            .map_err(|_| AccountError::Unseal(uri.clone()))?;
        plain
            .try_into()
            .map(Some)
            .map_err(|_| AccountError::Unseal(uri.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use presence_store::Stores;

    fn setup() -> (tempfile::TempDir, Stores, Accounts) {
        let dir = tempfile::tempdir().unwrap();
        let store = Stores::sqlite(dir.path()).unwrap();
        let accounts = Accounts::open(store.clone(), dir.path()).unwrap();
        (dir, store, accounts)
    }

    #[test]
    fn nt_hash_matches_ms_nlmp_vector() {
        // MS-NLMP 4.2.1: NTOWFv1("Password") = a4f49c406510bdcab6824ee7c30fd852
        let h = nt_hash("Password");
        let hex: String = h.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "a4f49c406510bdcab6824ee7c30fd852");
    }

    #[test]
    fn add_verify_change_remove() {
        let (dir, store, accounts) = setup();
        let alice = UserUri::parse("alice@example.com").unwrap();
        accounts.add(&alice, "Alice", "s3cret").unwrap();
        assert!(matches!(
            accounts.add(&alice, "A", "x"),
            Err(AccountError::Exists(_))
        ));
        assert_eq!(
            accounts
                .verify("sip:Alice@example.com", "s3cret")
                .unwrap()
                .unwrap()
                .display_name,
            "Alice"
        );
        assert_eq!(accounts.verify("alice@example.com", "wrong").unwrap(), None);
        assert_eq!(
            accounts.verify("nobody@example.com", "s3cret").unwrap(),
            None
        );
        assert_eq!(accounts.verify("not a uri", "s3cret").unwrap(), None);
        assert_eq!(accounts.nt_hash(&alice).unwrap(), Some(nt_hash("s3cret")));

        accounts.set_password(&alice, "n3w").unwrap();
        assert!(
            accounts
                .verify("alice@example.com", "s3cret")
                .unwrap()
                .is_none()
        );
        assert!(
            accounts
                .verify("alice@example.com", "n3w")
                .unwrap()
                .is_some()
        );
        assert_eq!(accounts.nt_hash(&alice).unwrap(), Some(nt_hash("n3w")));

        // The stored record holds neither the password nor the plain NT hash.
        let raw = store.accounts.get(&alice).unwrap().unwrap();
        assert!(!raw.password_hash.contains("n3w"));
        assert!(raw.password_hash.starts_with("$argon2id$"));
        let plain = nt_hash("n3w");
        assert!(!raw.nt_hash_sealed.windows(16).any(|w| w == plain));

        // Another data directory's key cannot open it.
        let other = tempfile::tempdir().unwrap();
        let foreign = Accounts::open(store.clone(), other.path()).unwrap();
        assert!(matches!(
            foreign.nt_hash(&alice),
            Err(AccountError::Unseal(_))
        ));

        // Reopening with the same directory keeps the key.
        let again = Accounts::open(store.clone(), dir.path()).unwrap();
        assert_eq!(again.nt_hash(&alice).unwrap(), Some(nt_hash("n3w")));

        accounts.remove(&alice).unwrap();
        assert!(matches!(
            accounts.remove(&alice),
            Err(AccountError::NotFound(_))
        ));
        assert!(accounts.list().unwrap().is_empty());
    }

    #[test]
    fn tokens_survive_reopen_and_die_with_the_account() {
        let (dir, store, accounts) = setup();
        let u = UserUri::parse("carol@example.com").unwrap();
        accounts.add(&u, "Carol", "pw").unwrap();
        let (token, _) = accounts.issue_token(&u, Duration::from_secs(60)).unwrap();
        assert_eq!(accounts.check_token(&token).unwrap().unwrap().uri, u);
        assert_eq!(accounts.check_token("forged").unwrap(), None);
        let again = Accounts::open(store.clone(), dir.path()).unwrap();
        assert!(
            again.check_token(&token).unwrap().is_some(),
            "stored, not in memory"
        );
        let (short, _) = accounts.issue_token(&u, Duration::ZERO).unwrap();
        assert_eq!(accounts.check_token(&short).unwrap(), None, "expired");
        assert_eq!(accounts.prune_tokens().unwrap(), 1);
        assert!(accounts.revoke_token(&token).unwrap());
        assert_eq!(accounts.check_token(&token).unwrap(), None);
        // Checked tokens are cached (TOKEN_CACHE_TTL); ending sessions here forgets
        // them at once.
        let (t1, _) = accounts.issue_token(&u, Duration::from_secs(60)).unwrap();
        assert!(accounts.check_token(&t1).unwrap().is_some());
        accounts.set_password(&u, "new-pw").unwrap();
        assert_eq!(
            accounts.check_token(&t1).unwrap(),
            None,
            "a password change ends sessions"
        );
        let (t2, _) = accounts.issue_token(&u, Duration::from_secs(60)).unwrap();
        assert!(accounts.check_token(&t2).unwrap().is_some());
        accounts.remove(&u).unwrap();
        assert_eq!(accounts.check_token(&t2).unwrap(), None);
    }

    #[test]
    fn directory_users_have_no_local_password_and_can_be_disabled() {
        let (_dir, _store, accounts) = setup();
        let u = UserUri::parse("dora@example.com").unwrap();
        let dora = |name: &str, enabled| {
            accounts.ensure_directory_users(&[(u.clone(), name.to_string(), enabled)])
        };
        assert_eq!(dora("Dora", true).unwrap(), 1);
        assert_eq!(dora("Dora E", true).unwrap(), 0);
        assert_eq!(accounts.get(&u).unwrap().unwrap().display_name, "Dora E");
        assert_eq!(accounts.verify("dora@example.com", "").unwrap(), None);
        assert!(matches!(
            accounts.nt_hash(&u),
            Err(AccountError::NoLocalPassword(_))
        ));
        let (token, _) = accounts.issue_token(&u, Duration::from_secs(60)).unwrap();
        assert!(accounts.check_token(&token).unwrap().is_some());
        dora("Dora E", false).unwrap();
        assert_eq!(
            accounts.check_token(&token).unwrap(),
            None,
            "disabled: sessions end"
        );
        assert!(accounts.get(&u).unwrap().unwrap().disabled);
        // A local user the directory disables cannot sign in with the local password.
        let l = UserUri::parse("lee@example.com").unwrap();
        accounts.add(&l, "Lee", "pw").unwrap();
        accounts
            .ensure_directory_users(&[(l.clone(), "Lee".into(), false)])
            .unwrap();
        assert_eq!(accounts.verify("lee@example.com", "pw").unwrap(), None);
        accounts
            .ensure_directory_users(&[(l.clone(), "Lee".into(), true)])
            .unwrap();
        assert!(accounts.verify("lee@example.com", "pw").unwrap().is_some());
    }

    #[test]
    fn failed_sign_ins_are_limited_and_checks_bounded() {
        let (_dir, _store, accounts) = setup();
        let u = UserUri::parse("frank@example.com").unwrap();
        accounts.add(&u, "Frank", "right").unwrap();
        for _ in 0..MAX_FAILURES {
            assert_eq!(accounts.verify("frank@example.com", "wrong").unwrap(), None);
        }
        assert!(matches!(
            accounts.verify("frank@example.com", "right"),
            Err(AccountError::TooManyFailures)
        ));
        accounts.clear_failures(&u);
        assert!(
            accounts
                .verify("frank@example.com", "right")
                .unwrap()
                .is_some()
        );
        // Unknown users are not tracked (no memory per made-up name).
        for _ in 0..MAX_FAILURES + 1 {
            assert_eq!(accounts.verify("ghost@example.com", "x").unwrap(), None);
        }
        let slots: Vec<_> = (0..MAX_CONCURRENT_CHECKS)
            .map(|_| accounts.check_slot().unwrap())
            .collect();
        assert!(matches!(accounts.check_slot(), Err(AccountError::Busy)));
        drop(slots);
        assert!(accounts.check_slot().is_ok());
    }

    #[test]
    fn password_limits() {
        let (_dir, _store, accounts) = setup();
        let u = UserUri::parse("bob@example.com").unwrap();
        assert!(matches!(
            accounts.add(&u, "B", ""),
            Err(AccountError::BadPassword)
        ));
        let long = "p".repeat(MAX_PASSWORD_BYTES + 1);
        assert!(matches!(
            accounts.add(&u, "B", &long),
            Err(AccountError::BadPassword)
        ));
        accounts
            .add(&u, "B", &"p".repeat(MAX_PASSWORD_BYTES))
            .unwrap();
    }
}
