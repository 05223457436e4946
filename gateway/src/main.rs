//! `smimegw`: the S/MIME gateway's command.
//!
//! This file holds the top-level command line and the dispatch to subcommands; each subcommand
//! lives in `cli/`. Errors end here: they are printed as `smimegw: <error>` on stderr and the
//! process exits with 1, or 2 when the input or the command line is at fault (clap exits with 2
//! on usage errors). Logs go to stderr through
//! `tracing`, filtered by `RUST_LOG` (default `warn`, `info` for `serve`, without cryptoki's complaints about
//! mechanisms it cannot name).

mod cli;
mod error;

use std::io::Write;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use crate::error::CliError;

/// The smimegw S/MIME email gateway.
#[derive(Debug, Parser)]
#[command(name = "smimegw", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Manage the key token: the PKCS#11 token or the software token that holds private keys.
    Token(cli::token::TokenArgs),
    /// Sign, verify, encrypt or decrypt one message with the S/MIME engine (troubleshooting).
    Message(cli::message::MessageArgs),
    /// Run the gateway: SMTP in, S/MIME per policy, delivery out.
    Serve(cli::serve::ServeArgs),
    /// The running gateway's queue: list, show, retry, delete.
    Queue(cli::queue::QueueArgs),
    /// SMTP AUTH accounts for clients outside the internal networks: add, remove, list.
    Users(cli::users::UsersArgs),
    /// The administration console on this terminal (the appliance's serial console).
    Console(cli::console::ConsoleArgs),
    /// Ask NTP servers for the time; with --set, set the clock from it.
    Sntp(cli::sntp::SntpArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The daemon reports what it does; the one-shot commands only what goes wrong.
    init_logging(if matches!(cli.command, Command::Serve(_)) {
        "info"
    } else {
        "warn"
    });
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let result: Result<(), CliError> = match cli.command {
        Command::Token(args) => cli::token::run(args, &mut out),
        Command::Message(args) => cli::message::run(args, &mut out),
        Command::Serve(args) => cli::serve::run(args, &mut out),
        Command::Queue(args) => cli::queue::run(args, &mut out),
        Command::Users(args) => cli::users::run(args, &mut out),
        Command::Console(args) => cli::console::run(args, &mut out),
        Command::Sntp(args) => cli::sntp::run(args, &mut out),
    };
    let flushed = out.flush();
    match result.and(flushed.map_err(CliError::Output)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("smimegw: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

fn init_logging(default: &str) {
    // cryptoki logs an ERROR for every mechanism it has no name for while listing a token's
    // mechanisms; that is noise to an administrator, so the default leaves it out.
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("{default},cryptoki::mechanism=off")));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
