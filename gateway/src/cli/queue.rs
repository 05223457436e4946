//! `smimegw queue`: look at and act on the running gateway's queue, through its control
//! socket (`DATA/control.sock`).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use clap::{Args, Subcommand};
use smimegw::config::Config;
use smimegw::relay::control::socket_path;

use crate::error::CliError;

#[derive(Debug, Args)]
pub struct QueueArgs {
    /// The running gateway's configuration file (for its data directory).
    #[arg(long, short, value_name = "FILE", global = true)]
    config: Option<PathBuf>,

    /// The running gateway's data directory (default: the configuration's, else ./var).
    #[arg(long, value_name = "DIR", global = true)]
    data: Option<PathBuf>,

    #[command(subcommand)]
    command: QueueCommand,
}

#[derive(Debug, Subcommand)]
enum QueueCommand {
    /// Every queued message: id, age, size, sender, recipients pending, attempts, next try,
    /// last error.
    List,
    /// One message's envelope and each recipient's state.
    Show { id: String },
    /// Try now: one message, or all of them.
    Retry { id: Option<String> },
    /// Remove a message from the queue, undelivered and without a bounce.
    Delete { id: String },
}

pub fn run(args: QueueArgs, out: &mut dyn Write) -> Result<(), CliError> {
    let data = match (&args.data, &args.config) {
        (Some(d), _) => d.clone(),
        (None, Some(c)) => {
            Config::load(c, None)
                .map_err(|e| CliError::Usage(e.to_string()))?
                .data_dir
        }
        (None, None) => PathBuf::from("./var"),
    };
    let request = match &args.command {
        QueueCommand::List => "list".to_string(),
        QueueCommand::Show { id } => format!("show {id}"),
        QueueCommand::Retry { id: None } => "retry".into(),
        QueueCommand::Retry { id: Some(id) } => format!("retry {id}"),
        QueueCommand::Delete { id } => format!("delete {id}"),
    };
    if request.contains('\n') {
        return Err(CliError::Usage("a queue id is one word".into()));
    }
    let answer = control_request(&data, &request)?;
    out.write_all(answer.as_bytes())?;
    Ok(())
}

/// One request to the running gateway's control socket (`DATA/control.sock`); its answer
/// (lines after `ok`), or the gateway's error.
pub fn control_request(data: &std::path::Path, request: &str) -> Result<String, CliError> {
    let path = socket_path(data);
    let conn = UnixStream::connect(&path).map_err(|e| unreachable(&path, &e))?;
    exchange(conn, request)
}

/// Like [`control_request`], but `None` when no gateway listens (no socket, or nobody
/// behind it): for what can be done without it.
pub fn try_control_request(
    data: &std::path::Path,
    request: &str,
) -> Result<Option<String>, CliError> {
    let path = socket_path(data);
    match UnixStream::connect(&path) {
        Ok(conn) => exchange(conn, request).map(Some),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(unreachable(&path, &e)),
    }
}

fn unreachable(path: &std::path::Path, e: &std::io::Error) -> CliError {
    CliError::Gateway(format!(
        "cannot reach the gateway through {} ({e}); is `smimegw serve` running with this data directory?",
        path.display()
    ))
}

fn exchange(mut conn: UnixStream, request: &str) -> Result<String, CliError> {
    conn.write_all(format!("{request}\n").as_bytes())
        .map_err(|e| CliError::Gateway(format!("control socket: {e}")))?;
    let mut lines = BufReader::new(conn).lines();
    let first = lines
        .next()
        .transpose()
        .map_err(|e| CliError::Gateway(format!("control socket: {e}")))?
        .unwrap_or_default();
    if let Some(reason) = first.strip_prefix("error: ") {
        return Err(CliError::Gateway(reason.to_string()));
    }
    if first != "ok" {
        return Err(CliError::Gateway(format!(
            "unexpected answer from the gateway: {first:?}"
        )));
    }
    let mut answer = String::new();
    for line in lines {
        let line = line.map_err(|e| CliError::Gateway(format!("control socket: {e}")))?;
        answer.push_str(&line);
        answer.push('\n');
    }
    Ok(answer)
}
