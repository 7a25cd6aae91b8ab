use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use presenced::bench::{BenchReport, FanoutArgs, run_fanout};
use presenced::bench_publish::{BenchStore, PublishArgs, run_publish};
use presenced::bench_search::{SearchArgs, run_search};
use presenced::config::Config;
use presenced::{server, users};
use std::path::PathBuf;

// The fan-out path allocates many small, short-lived objects; mimalloc handles that
// pattern far better than the system allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Presenced: an enhanced presence server.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve(ServeArgs),
    /// Manage user accounts (works whether or not the server runs).
    #[command(subcommand)]
    User(UserCommand),
    /// Benchmarks of the real engine.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Users from a directory file or LDAP (one-shot; a server with [directory]
    /// configured syncs by itself).
    #[command(subcommand)]
    Directory(DirectoryCommand),
}

#[derive(Subcommand)]
enum DirectoryCommand {
    /// Import users from a TOML, JSON or LDIF file.
    Import {
        file: PathBuf,
        #[command(flatten)]
        dir: DataDir,
    },
    /// Sync users from the directory configured in --config.
    Sync {
        #[command(flatten)]
        dir: DataDir,
    },
}

#[derive(Args)]
struct ServeArgs {
    /// TOML configuration file.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Data directory [default: ./presenced-data].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// HTTP listen address [default: 127.0.0.1:8080]; port 0 picks a free port.
    #[arg(long)]
    http: Option<std::net::SocketAddr>,
    /// Seed demo users alice, bob and carol @example.com (password "demo"); loopback only.
    #[arg(long)]
    demo: bool,
    /// SIP over TCP listen address [default: 127.0.0.1:5060], or "off".
    #[arg(long)]
    sip: Option<presenced::config::Listen>,
    /// Accept SIP REGISTER without authentication (tests and closed labs only).
    #[arg(long)]
    sip_allow_unauthenticated: bool,
    /// SIP over TLS listen address [default: off].
    #[arg(long)]
    sip_tls: Option<presenced::config::Listen>,
    /// PEM certificate chain for SIP over TLS.
    #[arg(long)]
    tls_cert: Option<PathBuf>,
    /// PEM private key for SIP over TLS.
    #[arg(long)]
    tls_key: Option<PathBuf>,
}

#[derive(Args)]
struct DataDir {
    /// Data directory [default: the configuration's, else ./presenced-data].
    #[arg(long, env = "PRESENCED_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// TOML configuration file to take the data directory from.
    #[arg(long)]
    config: Option<PathBuf>,
}

impl DataDir {
    /// The configuration file's settings, with the data directory given here.
    fn config(&self) -> Result<Config> {
        let mut config = Config::load(self.config.as_deref())?;
        if let Some(d) = &self.data_dir {
            config.server.data_dir = d.clone();
        }
        Ok(config)
    }
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create a user; the password is read from standard input.
    Add {
        user: String,
        #[arg(long)]
        display_name: Option<String>,
        #[arg(long)]
        password_stdin: bool,
        #[command(flatten)]
        dir: DataDir,
    },
    /// List users.
    List {
        #[command(flatten)]
        dir: DataDir,
    },
    /// Change a password (read from standard input).
    Passwd {
        user: String,
        #[arg(long)]
        password_stdin: bool,
        #[command(flatten)]
        dir: DataDir,
    },
    /// Delete a user and their presence data.
    Remove {
        user: String,
        #[command(flatten)]
        dir: DataDir,
    },
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Publication fan-out through the real engine.
    Fanout {
        #[arg(long, default_value_t = 100_000)]
        presentities: usize,
        #[arg(long, default_value_t = 50)]
        watchers: usize,
        #[arg(long, default_value_t = 200_000)]
        publications: usize,
        #[arg(long, default_value_t = 2)]
        publishers: usize,
        /// Print one JSON line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Durable publications from many users at once: in-process and over HTTP.
    Publish {
        #[arg(long, default_value_t = 10_000)]
        users: usize,
        /// Writers in flight at once (threads in-process, connections over HTTP).
        #[arg(long, default_value_t = 64)]
        writers: usize,
        /// Duration of each of the two runs.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Write to a NATS JetStream cluster at this URL (repeat for each server)
        /// instead of SQLite; fresh buckets are made and deleted afterwards.
        #[arg(long = "nats-url")]
        nats_urls: Vec<String>,
        /// Print one JSON line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Directory search over N users: in-process and over HTTP.
    Search {
        #[arg(long, default_value_t = 100_000)]
        users: usize,
        /// Queries run in-process.
        #[arg(long, default_value_t = 50_000)]
        queries: usize,
        /// Concurrent HTTP keep-alive connections.
        #[arg(long, default_value_t = 16)]
        connections: usize,
        /// How long the HTTP part runs.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Print one JSON line instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// Logs go to standard error: plain text, coloured only on a terminal, or one JSON
/// object per line with `PRESENCED_LOG_FORMAT=json` (for log shippers).
fn init_logs() -> Result<()> {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_env("PRESENCED_LOG")
        // The NATS client reports every (re)connection at info.
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,async_nats=warn"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match std::env::var("PRESENCED_LOG_FORMAT").as_deref() {
        Ok("json") => logs.json().init(),
        Ok("text") | Err(std::env::VarError::NotPresent) => {
            logs.with_ansi(std::io::stderr().is_terminal()).init()
        }
        Ok(other) => anyhow::bail!("PRESENCED_LOG_FORMAT is {other:?}; use \"text\" or \"json\""),
        Err(e) => anyhow::bail!("PRESENCED_LOG_FORMAT: {e}"),
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    init_logs()?;
    match Cli::parse().command {
        Command::Serve(a) => {
            let mut config = Config::load(a.config.as_deref())?;
            if let Some(d) = a.data_dir {
                config.server.data_dir = d;
            }
            if let Some(h) = a.http {
                config.server.http = h;
            }
            if let Some(s) = a.sip {
                config.server.sip = s;
            }
            config.server.sip_allow_unauthenticated |= a.sip_allow_unauthenticated;
            if let Some(s) = a.sip_tls {
                config.server.sip_tls = s;
            }
            if a.tls_cert.is_some() {
                config.server.tls_cert = a.tls_cert;
            }
            if a.tls_key.is_some() {
                config.server.tls_key = a.tls_key;
            }
            server::serve(config, a.demo).await
        }
        Command::User(u) => {
            tokio::task::spawn_blocking(move || match u {
                UserCommand::Add {
                    user,
                    display_name,
                    password_stdin,
                    dir,
                } => users::add(
                    &dir.config()?,
                    &user,
                    display_name.as_deref(),
                    password_stdin,
                ),
                UserCommand::List { dir } => users::list(&dir.config()?),
                UserCommand::Passwd {
                    user,
                    password_stdin,
                    dir,
                } => users::passwd(&dir.config()?, &user, password_stdin),
                UserCommand::Remove { user, dir } => users::remove(&dir.config()?, &user),
            })
            .await?
        }
        Command::Directory(cmd) => {
            let dir = match &cmd {
                DirectoryCommand::Import { dir, .. } | DirectoryCommand::Sync { dir } => dir,
            };
            let config = dir.config()?;
            let source = match &cmd {
                DirectoryCommand::Import { file, .. } => {
                    let attributes = config
                        .directory
                        .as_ref()
                        .map(|d| d.attributes())
                        .unwrap_or_default();
                    directory::Source::File(directory::file::FileSource::new(
                        file.clone(),
                        attributes,
                    ))
                }
                DirectoryCommand::Sync { .. } => {
                    let d = config.directory.as_ref().context(
                        "the configuration has no [directory] table (pass --config FILE)",
                    )?;
                    directory::Source::from_config(d)?
                }
            };
            let summary = presenced::directory_sync::one_shot(&config, source).await?;
            for e in &summary.errors {
                eprintln!("error: {e}");
            }
            println!("{summary}");
            Ok(())
        }
        Command::Bench(BenchCommand::Fanout {
            presentities,
            watchers,
            publications,
            publishers,
            json,
        }) => {
            let report = run_fanout(FanoutArgs {
                presentities,
                watchers,
                publications,
                publishers,
            })
            .await?;
            print_report(&report, json);
            Ok(())
        }
        Command::Bench(BenchCommand::Publish {
            users,
            writers,
            seconds,
            nats_urls,
            json,
        }) => {
            let report = run_publish(PublishArgs {
                store: if nats_urls.is_empty() {
                    BenchStore::Sqlite
                } else {
                    BenchStore::Nats(nats_urls)
                },
                users,
                writers,
                seconds,
            })
            .await?;
            print_report(&report, json);
            Ok(())
        }
        Command::Bench(BenchCommand::Search {
            users,
            queries,
            connections,
            seconds,
            json,
        }) => {
            let report = run_search(SearchArgs {
                users,
                queries,
                connections,
                seconds,
            })
            .await?;
            print_report(&report, json);
            Ok(())
        }
    }
}

/// A benchmark's figures as one JSON line or as a table.
fn print_report(report: &impl BenchReport, json: bool) {
    if json {
        println!("{}", report.json());
    } else {
        print!("{}", report.table());
    }
}
