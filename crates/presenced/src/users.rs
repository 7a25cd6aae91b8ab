//! `presenced user ...`: account administration, with or without a running server.

use crate::config::Config;
use crate::startup::open_accounts;
use anyhow::{Context, Result, bail};
use presence_model::UserUri;
use std::io::Read;

fn read_password_stdin() -> Result<String> {
    let mut buf = String::new();
    std::io::stdin()
        .take(accounts::MAX_PASSWORD_BYTES as u64 + 2)
        .read_to_string(&mut buf)
        .context("reading the password from standard input")?;
    let password = buf.strip_suffix('\n').unwrap_or(&buf);
    let password = password.strip_suffix('\r').unwrap_or(password);
    if password.is_empty() {
        bail!("no password on standard input");
    }
    Ok(password.to_string())
}

pub fn add(
    config: &Config,
    user: &str,
    display_name: Option<&str>,
    password_stdin: bool,
) -> Result<()> {
    if !password_stdin {
        bail!("pass the password on standard input with --password-stdin");
    }
    let uri = UserUri::parse(user)?;
    let password = read_password_stdin()?;
    let (_, _, accounts) = open_accounts(config)?;
    let name = display_name.unwrap_or_else(|| uri.as_str().split('@').next().unwrap_or_default());
    accounts.add(&uri, name, &password)?;
    println!("added {uri}");
    Ok(())
}

pub fn passwd(config: &Config, user: &str, password_stdin: bool) -> Result<()> {
    if !password_stdin {
        bail!("pass the password on standard input with --password-stdin");
    }
    let uri = UserUri::parse(user)?;
    let password = read_password_stdin()?;
    let (_, _, accounts) = open_accounts(config)?;
    accounts.set_password(&uri, &password)?;
    println!("password changed for {uri}");
    Ok(())
}

pub fn remove(config: &Config, user: &str) -> Result<()> {
    let uri = UserUri::parse(user)?;
    let (_, _, accounts) = open_accounts(config)?;
    accounts.remove(&uri)?;
    println!("removed {uri}");
    Ok(())
}

pub fn list(config: &Config) -> Result<()> {
    let (_, _, accounts) = open_accounts(config)?;
    for a in accounts.list()? {
        let state = if a.disabled { "\tdisabled" } else { "" };
        println!(
            "{}\t{}\t{}{state}",
            a.uri,
            a.display_name,
            a.created.to_rfc3339()
        );
    }
    Ok(())
}
