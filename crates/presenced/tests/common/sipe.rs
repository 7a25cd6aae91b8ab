//! The real Pidgin SIPE client, driven through the libpurple harness
//! (`tests/sipe/harness.c`, compiled here with `cc`): commands on its stdin, events on
//! its stdout. Used by `sipe.rs` and `sipe_search.rs`.
//!
//! Needs `cc`, `pkg-config` and the Debian packages `pidgin-sipe libpurple-dev
//! libxml2-dev` (scripts/test installs them). `SIPE_HARNESS_DEBUG=1` puts SIPE's debug
//! log, with every SIP message, on stderr.

use super::{Server, WAIT};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

const HARNESS_C: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sipe/harness.c");
const SHIM_C: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sipe/xml-shim.c");

/// The compiled harness and the libxml2 shim SIPE needs on Debian 12 (see xml-shim.c).
pub struct Tools {
    pub harness: PathBuf,
    pub shim: PathBuf,
}

pub fn pkg_config(packages: &[&str]) -> Vec<String> {
    let out = std::process::Command::new("pkg-config")
        .arg("--cflags")
        .arg("--libs")
        .args(packages)
        .output()
        .expect("pkg-config (install: pkg-config libpurple-dev libxml2-dev)");
    assert!(
        out.status.success(),
        "pkg-config {packages:?}: {} (install: pidgin-sipe libpurple-dev libxml2-dev)",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// Compiles one C source; the output appears atomically (renamed into place).
pub fn cc(source: &str, out: &Path, extra: &[&str], packages: &[&str]) {
    let tmp = out.with_extension(format!("tmp{}", std::process::id()));
    let status = std::process::Command::new("cc")
        .args(["-std=gnu11", "-O1", "-Wall", "-Wextra", "-o"])
        .arg(&tmp)
        .arg(source)
        .args(pkg_config(packages))
        .args(extra)
        .status()
        .expect("cc (install build-essential)");
    assert!(status.success(), "compiling {source}");
    std::fs::rename(&tmp, out).unwrap();
}

pub fn tools() -> &'static Tools {
    static TOOLS: OnceLock<Tools> = OnceLock::new();
    TOOLS.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("sipe");
        std::fs::create_dir_all(&dir).unwrap();
        let tools = Tools {
            harness: dir.join("sipe-harness"),
            shim: dir.join("libxml-sax1-shim.so"),
        };
        cc(HARNESS_C, &tools.harness, &[], &["purple", "glib-2.0"]);
        cc(
            SHIM_C,
            &tools.shim,
            &["-shared", "-fPIC", "-ldl"],
            &["libxml-2.0"],
        );
        tools
    })
}

/// What one SIPE client shows of a buddy: (status id, message).
pub type Shown = (String, String);

/// One real SIPE client, driven through the harness's stdin and stdout.
pub struct Sipe {
    pub user: String,
    /// USER/PID, as in the harness's debug log: tells two clients of one user apart.
    pub label: String,
    pub child: Child,
    pub stdin: ChildStdin,
    pub lines: Lines<BufReader<ChildStdout>>,
    /// Every line so far, for failure messages.
    pub log: Vec<String>,
    /// The latest status of each buddy (by SIP URI), from the buddy events.
    pub buddies: HashMap<String, Shown>,
    pub _dir: tempfile::TempDir,
}

impl Sipe {
    /// Starts the client and waits until it has signed in and has its contact list
    /// (SIPE loses buddies added before that: see the harness).
    pub async fn sign_in(server: &Server, user: &str) -> Sipe {
        Self::sign_in_with(server, user, "secret").await
    }

    pub async fn sign_in_with(server: &Server, user: &str, password: &str) -> Sipe {
        let mut sipe = Self::start(server, user, password);
        sipe.expect_line("signed-on", |l| l == "signed-on").await;
        sipe.expect_line("the contact list", |l| l == "group-added Other Contacts")
            .await;
        sipe
    }

    /// Starts the client (it signs in on its own).
    pub fn start(server: &Server, user: &str, password: &str) -> Sipe {
        let tools = tools();
        let dir = tempfile::tempdir().unwrap();
        // A server with only SIP over TLS is reached over TLS.
        let (addr, transport) = match (&server.sip, &server.tls_sip) {
            (Some(a), _) => (a.as_str(), "tcp"),
            (None, Some(a)) => (a.as_str(), "tls"),
            (None, None) => panic!("SIP enabled"),
        };
        let mut child = Command::new(&tools.harness)
            .arg(user)
            .arg(addr)
            .env("SIPE_TRANSPORT", transport)
            .arg(dir.path())
            .arg(password)
            .env("LD_PRELOAD", &tools.shim)
            // No D-Bus: no session service, no NetworkManager "offline".
            .env(
                "DBUS_SESSION_BUS_ADDRESS",
                "unix:path=/nonexistent/presenced-test",
            )
            .env(
                "DBUS_SYSTEM_BUS_ADDRESS",
                "unix:path=/nonexistent/presenced-test",
            )
            .env_remove("DISPLAY")
            .env("HOME", dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("start the SIPE harness");
        let stdin = child.stdin.take().unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        Sipe {
            user: user.to_string(),
            label: format!("{user}/{}", child.id().unwrap_or_default()),
            child,
            stdin,
            lines,
            log: Vec::new(),
            buddies: HashMap::new(),
            _dir: dir,
        }
    }

    /// The next line (panics after [`WAIT`] or when the harness exits).
    pub async fn next_line(&mut self, deadline: tokio::time::Instant, what: &str) -> String {
        let line = tokio::time::timeout_at(deadline, self.lines.next_line())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "{}: timed out waiting for {what}; its events:\n{}",
                    self.label,
                    self.log.join("\n")
                )
            })
            .unwrap()
            .unwrap_or_else(|| {
                panic!(
                    "{}: the harness exited while waiting for {what}; its events:\n{}",
                    self.label,
                    self.log.join("\n")
                )
            });
        // The answers to `groups`, read over and over while waiting for a list, would
        // drown the events; a failure shows the list instead.
        let list_line =
            line.starts_with("group ") || line.starts_with("member ") || line == "ok groups";
        if !list_line {
            println!("[{}] {line}", self.label);
        }
        if let Some((event, rest)) = line.split_once(' ')
            && matches!(
                event,
                "buddy-status" | "buddy-signed-on" | "buddy-signed-off"
            )
        {
            let mut parts = rest.splitn(3, ' ');
            let name = parts.next().unwrap_or_default().to_string();
            let status = parts.next().unwrap_or_default().to_string();
            let message = parts.next().unwrap_or_default().to_string();
            self.buddies.insert(name, (status, message));
        }
        if !list_line {
            self.log.push(line.clone());
        }
        line
    }

    /// Panics on a connection error nobody waits for.
    pub fn no_error(&self, line: &str, what: &str) {
        assert!(
            !line.starts_with("connection-error"),
            "{}: {line} (waiting for {what}); its events:\n{}",
            self.label,
            self.log.join("\n")
        );
    }

    pub async fn expect_line(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let line = self.next_line(deadline, what).await;
            if pred(&line) {
                return line;
            }
            self.no_error(&line, what);
        }
    }

    pub async fn send(&mut self, cmd: &str) {
        let stdin = &mut self.stdin;
        let written = async {
            stdin.write_all(format!("{cmd}\n").as_bytes()).await?;
            stdin.flush().await
        }
        .await;
        if let Err(e) = written {
            // The harness is gone: how it ended (a signal: SIPE crashed) says why.
            let status = self.child.wait().await;
            panic!(
                "{}: sending {cmd:?}: {e}; the harness ended: {status:?}; its events:\n{}",
                self.label,
                self.log.join("\n")
            );
        }
    }

    /// Sends a command and waits for its `ok`.
    pub async fn command(&mut self, cmd: &str) {
        self.send(cmd).await;
        let verb = cmd.split(' ').next().unwrap();
        let answer = self
            .expect_line(&format!("the answer to {cmd:?}"), |l| {
                l.starts_with("ok ") || l.starts_with("error ")
            })
            .await;
        assert_eq!(answer, format!("ok {verb}"), "{}: {cmd}", self.label);
    }

    /// Waits until SIPE shows `buddy` with `status` and, if given, the `note`. SIPE's
    /// status message is the note, after the activity for some statuses ("Busy - note").
    pub async fn expect_buddy(&mut self, buddy: &str, status: &str, note: Option<&str>) {
        let uri = format!("sip:{buddy}");
        let what = format!("{uri} shown as {status} with note {note:?}");
        let matches = |s: Option<&Shown>| {
            s.is_some_and(|(st, msg)| {
                st == status && note.is_none_or(|n| msg == n || msg.ends_with(&format!(" - {n}")))
            })
        };
        let deadline = tokio::time::Instant::now() + WAIT;
        while !matches(self.buddies.get(&uri)) {
            let line = self.next_line(deadline, &what).await;
            self.no_error(&line, &what);
        }
    }

    /// The buddy list as this client shows it now: the groups, and each buddy node
    /// as (buddy name, group, alias or "").
    pub async fn groups(&mut self) -> (Vec<String>, Vec<(String, String, String)>) {
        self.send("groups").await;
        let (mut groups, mut members) = (Vec::new(), Vec::new());
        loop {
            let line = self
                .expect_line("the answer to groups", |l| {
                    l.starts_with("group ") || l.starts_with("member ") || l == "ok groups"
                })
                .await;
            if line == "ok groups" {
                return (groups, members);
            }
            if let Some(name) = line.strip_prefix("group ") {
                groups.push(name.to_string());
            } else if let Some(member) = line.strip_prefix("member ") {
                let mut fields = member.splitn(3, '|');
                let mut next = || fields.next().unwrap_or_default().to_string();
                members.push((next(), next(), next()));
            }
        }
    }

    /// Signs out and waits for the harness to exit.
    pub async fn quit(mut self) {
        self.command("quit").await;
        self.expect_line("signed-off", |l| l == "signed-off").await;
        let status = tokio::time::timeout(WAIT, self.child.wait())
            .await
            .expect("the harness exits after quit")
            .unwrap();
        assert!(status.success(), "{}: harness {status}", self.label);
    }
}

/// How often a list is read again while waiting for it to change.
pub const POLL: std::time::Duration = std::time::Duration::from_millis(200);

/// The default group: "~" on the wire and in the API, shown under this name by SIPE.
pub const DEFAULT_GROUP: &str = "Other Contacts";

/// The buddy's client goes through the statuses a user picks; every watcher shows each
/// one, the note included.
pub async fn expect_live_presence(buddy: &mut Sipe, watchers: &mut [&mut Sipe]) {
    let name = buddy.user.clone();
    for (status, note) in [
        ("available", None),
        ("away", Some("Gone fishing")),
        ("busy", Some("In a meeting")),
        ("available", Some("Back again")),
    ] {
        if let Some(note) = note {
            buddy.command(&format!("status {status} {note}")).await;
        }
        for w in watchers.iter_mut() {
            w.expect_buddy(&name, status, note).await;
        }
    }
}

/// Signs the buddy out: every watcher shows them offline.
pub async fn expect_offline_after_sign_out(buddy: Sipe, watchers: &mut [&mut Sipe]) {
    let name = buddy.user.clone();
    buddy.quit().await;
    for w in watchers.iter_mut() {
        w.expect_buddy(&name, "offline", None).await;
    }
}
