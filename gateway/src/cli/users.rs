//! `smimegw users`: the SMTP AUTH accounts (`server.auth_users`) of clients outside the
//! internal networks. Passwords are asked for (or read from stdin) and stored as Argon2id
//! hashes only; the running gateway picks up changes by itself.

use std::io::{BufRead, Write};
use std::path::PathBuf;

use clap::{Args, Subcommand};
use smimegw::config::Config;
use smimegw::users;
use zeroize::Zeroizing;

use crate::error::CliError;

#[derive(Debug, Args)]
pub struct UsersArgs {
    /// The gateway's configuration file (its `server.auth_users` names the accounts file).
    #[arg(long, short, value_name = "FILE", global = true)]
    config: Option<PathBuf>,

    /// The accounts file itself (instead of the configuration's).
    #[arg(long, value_name = "PATH", global = true)]
    file: Option<PathBuf>,

    #[command(subcommand)]
    command: UsersCommand,
}

#[derive(Debug, Subcommand)]
enum UsersCommand {
    /// Add an account, or set a new password for one. The user name is the address.
    Add {
        address: String,
        /// Read the password from the first line of stdin instead of asking twice.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Remove an account.
    Remove { address: String },
    /// The accounts' addresses.
    List,
}

fn users_error(e: users::UsersError) -> CliError {
    CliError::Usage(e.to_string())
}

pub fn run(args: UsersArgs, out: &mut dyn Write) -> Result<(), CliError> {
    let path = match (&args.file, &args.config) {
        (Some(f), _) => f.clone(),
        (None, Some(c)) => Config::load(c, None)
            .map_err(|e| CliError::Usage(e.to_string()))?
            .server
            .auth_users
            .ok_or_else(|| {
                CliError::Usage(format!(
                    "{}: no server.auth_users: set it to the accounts file first",
                    c.display()
                ))
            })?,
        (None, None) => {
            return Err(CliError::Usage(
                "which accounts? give --config FILE (its server.auth_users) or --file PATH".into(),
            ));
        }
    };
    let mut accounts = users::read(&path).map_err(users_error)?;
    match args.command {
        UsersCommand::List => {
            for name in accounts.keys() {
                writeln!(out, "{name}")?;
            }
        }
        UsersCommand::Add {
            address,
            password_stdin,
        } => {
            let name = users::normalize(&address).map_err(users_error)?;
            let password = if password_stdin {
                let mut line = Zeroizing::new(String::new());
                std::io::stdin()
                    .lock()
                    .read_line(&mut line)
                    .map_err(|e| CliError::Password(format!("cannot read stdin: {e}")))?;
                Zeroizing::new(line.trim_end_matches(['\r', '\n']).to_string())
            } else {
                let ask = |prompt: String| {
                    rpassword::prompt_password(prompt)
                        .map(Zeroizing::new)
                        .map_err(|e| CliError::Password(format!("cannot read the password: {e}")))
                };
                let first = ask(format!("New password for {name}: "))?;
                let again = ask("Again: ".into())?;
                if first != again {
                    return Err(CliError::Password("the passwords differ".into()));
                }
                first
            };
            let hash = users::hash(&password).map_err(users_error)?;
            let new = accounts.insert(name.clone(), hash).is_none();
            users::write(&path, &accounts).map_err(users_error)?;
            let what = if new { "added" } else { "password changed" };
            writeln!(out, "{name}: {what} ({})", path.display())?;
        }
        UsersCommand::Remove { address } => {
            let name = users::normalize(&address).map_err(users_error)?;
            if accounts.remove(&name).is_none() {
                return Err(CliError::Usage(format!(
                    "{name}: no such account in {}",
                    path.display()
                )));
            }
            users::write(&path, &accounts).map_err(users_error)?;
            writeln!(out, "{name}: removed ({})", path.display())?;
        }
    }
    Ok(())
}
