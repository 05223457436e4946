//! `smimegw serve`: the relay. With `--dev`, on the embedded defaults (see
//! [`smimegw::config::Config::dev`]); otherwise on a configuration file.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use hsm::Token;
use smimegw::config::{Config, TokenConfig};
use smimegw::relay::Relay;

use crate::error::CliError;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Run on the embedded defaults: data in ./var (or --data), SMTP on 127.0.0.1:2525,
    /// internal domain example.com, the software token, the built-in CA, delivery into
    /// Maildirs under DATA/outbox and DATA/inbox.
    #[arg(long, conflicts_with = "config")]
    dev: bool,

    /// The configuration file (TOML).
    #[arg(long, short, value_name = "FILE", required_unless_present = "dev")]
    config: Option<PathBuf>,

    /// Data directory (spool, token, certificates), overriding the configuration's.
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,

    /// Listen here instead of the configured addresses (address:port).
    #[arg(long, value_name = "ADDR")]
    listen: Vec<SocketAddr>,

    /// Serve the web console here instead of the configured addresses (address:port).
    #[arg(long, value_name = "ADDR")]
    web: Vec<SocketAddr>,
}

pub fn run(args: ServeArgs, out: &mut dyn Write) -> Result<(), CliError> {
    let mut config = if args.dev {
        Config::dev(
            args.data
                .as_deref()
                .unwrap_or(std::path::Path::new("./var")),
        )
    } else {
        let path = args.config.as_deref().unwrap_or(std::path::Path::new(""));
        Config::load(path, args.data.as_deref()).map_err(|e| CliError::Usage(e.to_string()))?
    };
    if !args.listen.is_empty() {
        config.server.listen = args.listen.clone();
    }
    if !args.web.is_empty() {
        config.web.listen = args.web.clone();
    }
    let (uri, pin, raw) = match &config.token {
        TokenConfig::Software { pin } => (None, pin.as_deref(), false),
        TokenConfig::Pkcs11 {
            uri,
            pin,
            allow_raw_rsa,
        } => (Some(uri.as_str()), pin.as_deref(), *allow_raw_rsa),
    };
    let token: Arc<dyn Token> =
        Arc::from(super::token::open_token(uri, pin, &config.data_dir, raw)?);
    let relay = Arc::new(Relay::open(config, token).map_err(|e| CliError::Usage(e.to_string()))?);
    print_summary(&relay, args.dev, out)?;
    if args.dev {
        dev_admin(&relay.config.data_dir, out)?;
    }
    out.flush()?;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(CliError::Output)?;
    rt.block_on(async move {
        let shutdown = async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = async {
                    match term.as_mut() {
                        Some(t) => { t.recv().await; }
                        None => std::future::pending::<()>().await,
                    }
                } => {}
            }
            tracing::info!("shutting down");
        };
        relay.run(shutdown).await
    })
    .map_err(|e| CliError::Usage(e.to_string()))
}

fn print_summary(relay: &Relay, dev: bool, out: &mut dyn Write) -> Result<(), CliError> {
    let c = &relay.config;
    let listen: Vec<String> = c.server.listen.iter().map(|a| a.to_string()).collect();
    let networks: Vec<String> = c
        .server
        .internal_networks
        .iter()
        .map(|n| format!("{}/{}", n.addr, n.prefix))
        .collect();
    writeln!(
        out,
        "smimegw {} serving{}",
        env!("CARGO_PKG_VERSION"),
        if dev {
            " on the embedded defaults (--dev)"
        } else {
            ""
        }
    )?;
    writeln!(out, "  SMTP         {} (STARTTLS)", listen.join(", "))?;
    writeln!(
        out,
        "  internal     domains {}; clients {}",
        c.server.internal_domains.join(", "),
        networks.join(", ")
    )?;
    writeln!(out, "  data         {}", c.data_dir.display())?;
    writeln!(out, "  spool        {}", relay.spool.queue_dir().display())?;
    if let Some(_ca) = relay.keys.ca_cert() {
        writeln!(
            out,
            "  CA           {} (trust it to verify signed mail)",
            c.data_dir.join("ca.pem").display()
        )?;
    }
    for a in &c.web.listen {
        let host = if a.ip().is_unspecified() {
            c.server.hostname.clone()
        } else {
            a.ip().to_string()
        };
        writeln!(out, "  web console  https://{host}:{}/", a.port())?;
    }
    writeln!(out, "  outbound to  {}", c.outbound)?;
    writeln!(out, "  inbound to   {}", c.inbound)?;
    if let (true, Some(addr)) = (dev, c.server.listen.first()) {
        writeln!(
            out,
            "Try: swaks --server {addr} --from alice@example.com --to bob@example.net"
        )?;
    }
    Ok(())
}

/// `--dev` with no administrator yet: one is made with a random password, shown here once
/// (kept only as an Argon2id hash) and marked expired: signed in with it, the web console
/// and the serial console allow nothing but choosing a new one.
fn dev_admin(data: &std::path::Path, out: &mut dyn Write) -> Result<(), CliError> {
    use smimegw::users::{self, Names};
    let path = data.join("admins");
    let mut admins =
        users::read_as(&path, Names::Logins).map_err(|e| CliError::Usage(e.to_string()))?;
    if !admins.is_empty() {
        return Ok(());
    }
    let password: String = smimegw::web::auth::token()
        .map_err(|e| CliError::Usage(e.to_string()))?
        .chars()
        .take(20)
        .collect();
    let hash = users::hash(&password).map_err(|e| CliError::Usage(e.to_string()))?;
    // Expired before it is written: there is never a moment it could be used for more.
    users::expire(&data.join(users::EXPIRED_FILE), "admin", &hash)
        .map_err(|e| CliError::Usage(e.to_string()))?;
    admins.insert("admin".into(), hash);
    users::write_as(&path, &admins, Names::Logins).map_err(|e| CliError::Usage(e.to_string()))?;
    writeln!(
        out,
        "Web console: sign in as admin with the one-time password {password}\n\
         (shown only now; it must be changed at the first sign-in, and nothing else is \
         allowed until then. `smimegw console` uses the same account.)"
    )?;
    Ok(())
}
