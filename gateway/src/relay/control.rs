//! The control socket, `DATA/control.sock` (owner only): how `smimegw queue` and the
//! serial console talk to the running gateway. One request line per connection (`status`, `token`,
//! `certificates`, `tamper`, `tamper-clear`, `list`, `show ID`, `retry`, `retry ID`,
//! `delete ID`, `key-import JSON`, `key-delete JSON`, `policy-apply`, `ca-issue JSON`,
//! `crl-refresh JSON`, `crl-reload`); the answer is text,
//! its first line `ok` or `error: REASON`.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;

use crate::smime::asn1::day;
use crate::spool::{self, Envelope, QueueId, SpoolError, Status};

use super::Relay;

/// The socket's path under the data directory.
pub fn socket_path(data_dir: &Path) -> std::path::PathBuf {
    data_dir.join("control.sock")
}

/// Binds the socket (replacing a stale one), owner-only.
pub fn bind(data_dir: &Path) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    let path = socket_path(data_dir);
    let _ = std::fs::remove_file(&path);
    let l = UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok(l)
}

pub async fn serve(relay: Arc<Relay>, listener: UnixListener) {
    loop {
        let Ok((conn, _)) = listener.accept().await else {
            continue;
        };
        let relay = relay.clone();
        tokio::spawn(async move {
            let (r, mut w) = conn.into_split();
            let mut line = String::new();
            let mut r = BufReader::new(r).take(8192);
            if r.read_line(&mut line).await.is_err() {
                return;
            }
            let answer = match handle(&relay, line.trim()).await {
                Ok(text) => format!("ok\n{text}"),
                Err(e) => format!("error: {e}\n"),
            };
            let _ = w.write_all(answer.as_bytes()).await;
        });
    }
}

fn age(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// The gateway at a glance: what the consoles show first.
async fn status(relay: &Arc<Relay>) -> Result<String, String> {
    let r = relay.clone();
    let queued = tokio::task::spawn_blocking(move || r.spool.recover_list())
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?
        .len();
    let token = relay.keys.token().clone();
    let info = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        tokio::task::spawn_blocking(move || token.info()),
    )
    .await;
    let token = match info {
        Ok(Ok(Ok(i))) => format!("{} ({}, {}): answering", i.label, i.backend, i.model),
        Ok(Ok(Err(e))) => format!("NOT ANSWERING: {e}"),
        _ => "NOT ANSWERING: no reply within 5 s".into(),
    };
    let c = &relay.config;
    let up = relay.started.elapsed().map(|d| d.as_secs()).unwrap_or(0);
    let mut out = String::new();
    let _ = writeln!(out, "version:    {}", env!("CARGO_PKG_VERSION"));
    let _ = writeln!(out, "gateway:    running for {}", age(up));
    let listen: Vec<String> = c.server.listen.iter().map(|a| a.to_string()).collect();
    let _ = writeln!(
        out,
        "smtp:       {} ({})",
        listen.join(", "),
        c.server.hostname
    );
    let _ = writeln!(out, "queue:      {queued} message(s)");
    let _ = writeln!(out, "token:      {token}");
    let _ = writeln!(out, "keys:       {} address(es)", relay.keys.addresses());
    let _ = writeln!(
        out,
        "tamper:     {}",
        relay.tamper.state().map_or("none".to_string(), |w| format!(
            "{w}: SIGNING AND DECRYPTING STOPPED (tamper clear)"
        ))
    );
    let _ = writeln!(out, "outbound:   {}", c.outbound);
    let _ = writeln!(out, "inbound:    {}", c.inbound);
    let _ = writeln!(
        out,
        "watchdog:   {}",
        c.board
            .watchdog
            .as_ref()
            .map_or("none".to_string(), |p| p.display().to_string())
    );
    Ok(out)
}

/// The token: what it is, and each mechanism the gateway uses (supported or not).
async fn token(relay: &Arc<Relay>) -> Result<String, String> {
    let token = relay.keys.token().clone();
    let answer = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        tokio::task::spawn_blocking(move || {
            Ok::<_, hsm::Error>((token.info()?, token.capabilities()?))
        }),
    )
    .await
    .map_err(|_| "the token did not answer within 10 s".to_string())?
    .map_err(|e| e.to_string())?
    .map_err(|e| format!("the token does not answer: {e}"))?;
    let (info, caps) = answer;
    let mut out = String::new();
    let _ = writeln!(out, "label:      {}", info.label);
    let _ = writeln!(out, "backend:    {}", info.backend);
    let _ = writeln!(out, "model:      {}", info.model);
    let _ = writeln!(out, "mechanisms:");
    for m in &caps.mechanisms {
        let line = format!(
            "  {:<3} {:<24} {}",
            if m.supported { "yes" } else { "no" },
            m.name,
            m.detail
        );
        let _ = writeln!(out, "{}", line.chars().take(80).collect::<String>());
    }
    Ok(out)
}

fn last_error(e: &Envelope) -> String {
    e.recipients
        .iter()
        .find_map(|r| match &r.status {
            Status::Pending { last: Some(l) } => Some(l.clone()),
            _ => None,
        })
        .unwrap_or_default()
}

/// `key-import` and `key-delete`: the serial console's key management, done here because
/// the gateway holds the token session. The console has checked the administrator.
#[derive(serde::Deserialize)]
struct KeyRequest {
    who: String,
    origin: String,
    #[serde(default)]
    path: Option<std::path::PathBuf>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    fingerprint: Option<String>,
}

async fn key_request(relay: &Arc<Relay>, import: bool, json: &str) -> Result<String, String> {
    let req: KeyRequest =
        serde_json::from_str(json).map_err(|e| format!("bad key request: {e}"))?;
    let r = relay.clone();
    tokio::task::spawn_blocking(move || {
        let actor = crate::admin::Actor {
            who: req.who,
            origin: req.origin,
        };
        if import {
            let path = req.path.ok_or("no path")?;
            let bytes = crate::admin::read_limited(&path).map_err(|e| e.to_string())?;
            let password = hsm::Pin::new(req.password.unwrap_or_default());
            let name = path.display().to_string();
            let done = r
                .import_key(&actor, &name, &bytes, &password)
                .map_err(|e| e.to_string())?;
            let mut out = format!(
                "imported {} ({}), valid until {}\nkey: {}\n",
                done.cert.addresses.join(", "),
                &done.cert.fingerprint[..16],
                day(done.cert.not_after),
                done.uri
            );
            for c in &done.replaces {
                let _ = writeln!(
                    out,
                    "renews {} (its key stays, for mail encrypted to it)",
                    &c.fingerprint[..16]
                );
            }
            for c in &done.chain {
                let _ = writeln!(
                    out,
                    "chain: {} kept as an intermediate (not trusted by this)",
                    c.short_name()
                );
            }
            Ok(out)
        } else {
            let fp = req.fingerprint.ok_or("no fingerprint")?;
            let gone = crate::admin::keys::delete_key(r.store.as_ref(), &r.keys, &actor, &fp)
                .map_err(|e| e.to_string())?;
            Ok(format!(
                "deleted the key of {} ({})\n",
                gone.info.addresses.join(", "),
                &gone.info.fingerprint[..16]
            ))
        }
    })
    .await
    .map_err(|e| e.to_string())?
}

/// `ca-issue` and `crl-refresh`: the serial console's actions that need the token or the
/// relay's caches. The console has checked the administrator.
#[derive(serde::Deserialize)]
struct AdminRequest {
    who: String,
    origin: String,
    #[serde(default)]
    address: String,
    #[serde(default)]
    renew: bool,
}

enum AdminAction {
    Issue,
    RefreshCrls,
}

async fn admin_request(
    relay: &Arc<Relay>,
    json: &str,
    action: AdminAction,
) -> Result<String, String> {
    let req: AdminRequest = serde_json::from_str(json).map_err(|e| format!("bad request: {e}"))?;
    let r = relay.clone();
    tokio::task::spawn_blocking(move || {
        let actor = crate::admin::Actor {
            who: req.who,
            origin: req.origin,
        };
        match action {
            AdminAction::Issue => {
                let c = r
                    .issue_certificate(&actor, &req.address, req.renew)
                    .map_err(|e| e.to_string())?;
                Ok(format!(
                    "{} {}: valid until {}, fingerprint {}\n",
                    if req.renew { "renewed" } else { "issued" },
                    c.addresses.join(", "),
                    day(c.not_after),
                    &c.fingerprint[..16]
                ))
            }
            AdminAction::RefreshCrls => {
                let report =
                    crate::admin::crl::refresh(r.store.as_ref(), &actor, &r.config.revocation);
                r.certs.revocation().reload();
                let mut out = String::new();
                for (url, issuer) in &report.updated {
                    let _ = writeln!(out, "updated    {url}\n           ({issuer})");
                }
                for url in &report.unchanged {
                    let _ = writeln!(out, "unchanged  {url}");
                }
                for (url, e) in &report.failed {
                    let _ = writeln!(out, "FAILED     {url}\n           {e}");
                }
                if out.is_empty() {
                    out.push_str("No certificate held names a CRL distribution point.\n");
                }
                Ok(out)
            }
        }
    })
    .await
    .map_err(|e| e.to_string())?
}

/// `policy-apply`: the policy applied in the store (by the console, through
/// [`crate::admin::policy::apply`]) put in force here; none applied: the configuration
/// file's.
fn policy_apply(relay: &Relay) -> Result<String, String> {
    let policy = crate::policy::in_force(relay.store.as_ref(), &relay.config.policy)?.policy;
    relay.set_policy(policy);
    tracing::info!("policy: the one applied from the console is in force");
    Ok("Applied: the gateway uses the new policy from the next message on.\n".into())
}

/// Deletes a queued message (not while it is being delivered).
pub async fn delete_queued(relay: &Arc<Relay>, id: &QueueId) -> Result<(), String> {
    if !relay.queue.claim(id.as_str()) {
        return Err(format!(
            "{id} is being delivered right now; try again in a moment"
        ));
    }
    let (r, id2) = (relay.clone(), id.clone());
    let res = tokio::task::spawn_blocking(move || r.spool.delete(&id2)).await;
    relay.queue.release(id.as_str());
    match res {
        Ok(Ok(())) => {
            tracing::warn!(%id, "deleted from the queue by the administrator");
            Ok(())
        }
        Ok(Err(SpoolError::NotFound(_))) => Err(format!("no queued message {id}")),
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

async fn handle(relay: &Arc<Relay>, line: &str) -> Result<String, String> {
    if let Some(json) = line.strip_prefix("key-import ") {
        return key_request(relay, true, json).await;
    }
    if let Some(json) = line.strip_prefix("key-delete ") {
        return key_request(relay, false, json).await;
    }
    if let Some(json) = line.strip_prefix("ca-issue ") {
        return admin_request(relay, json, AdminAction::Issue).await;
    }
    if let Some(json) = line.strip_prefix("crl-refresh ") {
        return admin_request(relay, json, AdminAction::RefreshCrls).await;
    }
    if line == "crl-reload" {
        relay.certs.revocation().reload();
        return Ok(String::new());
    }
    let mut words = line.split_whitespace();
    let cmd = words.next().unwrap_or("");
    let id = words.next();
    // An id from the request is parsed before anything looks it up.
    let queue_id = |id: &str| QueueId::parse(id).map_err(|e| e.to_string());
    let now = spool::now();
    let r = relay.clone();
    match (cmd, id) {
        ("list", None) => {
            let envs = tokio::task::spawn_blocking(move || r.spool.recover_list())
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
            let mut out = String::new();
            let _ = writeln!(
                out,
                "{:<14}  {:>5}  {:>8}  {:<28}  {:>7}  {:>8}  {:>8}  last error",
                "ID", "AGE", "SIZE", "FROM", "PENDING", "ATTEMPTS", "NEXT TRY"
            );
            for e in &envs {
                let next = if relay.queue.is_running(&e.id) {
                    "now".to_string()
                } else {
                    age(e.next_try.saturating_sub(now))
                };
                let _ = writeln!(
                    out,
                    "{:<14}  {:>5}  {:>8}  {:<28}  {:>7}  {:>8}  {:>8}  {}",
                    e.id,
                    age(now.saturating_sub(e.received)),
                    e.size,
                    if e.from.is_empty() { "<>" } else { &e.from },
                    e.pending().count(),
                    e.attempts,
                    next,
                    last_error(e)
                );
            }
            let _ = writeln!(out, "{} message(s) queued", envs.len());
            Ok(out)
        }
        ("show", Some(id)) => {
            let id = queue_id(id)?;
            let env = relay.spool.read(&id).map_err(|e| e.to_string())?;
            let mut out = String::new();
            let _ = writeln!(out, "id:         {}", env.id);
            let _ = writeln!(
                out,
                "received:   {} ({} ago)",
                super::dsn::rfc5322_date(env.received),
                age(now.saturating_sub(env.received))
            );
            let _ = writeln!(out, "from:       <{}>", env.from);
            let _ = writeln!(out, "client:     {} ({})", env.client, env.helo);
            let _ = writeln!(out, "size:       {}", env.size);
            let _ = writeln!(out, "attempts:   {}", env.attempts);
            let _ = writeln!(
                out,
                "next try:   in {}",
                age(env.next_try.saturating_sub(now))
            );
            if env.report {
                let _ = writeln!(out, "kind:       delivery status notification");
            }
            let _ = writeln!(
                out,
                "message:    {}",
                relay.spool.message_file(&id).display()
            );
            for r in &env.recipients {
                let status = match &r.status {
                    Status::Pending { last: None } => "pending".to_string(),
                    Status::Pending { last: Some(l) } => format!("pending: {l}"),
                    Status::Delivered { reply } => format!("delivered: {reply}"),
                    Status::Failed { reason } => format!("failed: {reason}"),
                };
                let _ = writeln!(out, "recipient:  <{}> {status}", r.address);
            }
            Ok(out)
        }
        ("retry", None) => {
            relay.queue.retry_all();
            Ok("every queued message is due now\n".into())
        }
        ("retry", Some(id)) => {
            let id = queue_id(id)?;
            relay.spool.read(&id).map_err(|e| e.to_string())?;
            relay.queue.schedule(id.as_str(), 0);
            Ok(format!("{id} is due now\n"))
        }
        ("delete", Some(id)) => {
            let id = queue_id(id)?;
            delete_queued(relay, &id).await?;
            Ok(format!("{id} deleted\n"))
        }
        ("status", None) => status(relay).await,
        ("token", None) => token(relay).await,
        ("policy-apply", None) => tokio::task::spawn_blocking(move || policy_apply(&r))
            .await
            .map_err(|e| e.to_string())?,
        ("certificates", None) => {
            let mut out = String::new();
            let _ = writeln!(
                out,
                "{:<36}  {:<10}  {:<10}  KEY",
                "ADDRESS", "FROM", "UNTIL"
            );
            let entries = relay.keys.entries();
            for (address, e) in &entries {
                let state = if e.not_after < now { " (expired)" } else { "" };
                let _ = writeln!(
                    out,
                    "{:<36}  {:<10}  {:<10}  {}{state}",
                    address,
                    day(e.not_before),
                    day(e.not_after),
                    e.label
                );
            }
            let _ = writeln!(out, "{} address(es) with a signing key", entries.len());
            Ok(out)
        }
        ("tamper", None) => Ok(match relay.tamper.state() {
            Some(w) => {
                format!("{w}\nsigning and decrypting are stopped; mail waits in the queue\n")
            }
            None => "no tamper\n".into(),
        }),
        ("tamper-clear", None) => {
            let r = relay.clone();
            let cleared = tokio::task::spawn_blocking(move || r.tamper.clear())
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("cannot remove the tamper mark: {e}"))?;
            match cleared {
                Some(w) => {
                    tracing::warn!("tamper cleared by the administrator (was: {w})");
                    // What waited for the keys goes now.
                    relay.queue.retry_all();
                    Ok(format!(
                        "cleared ({w}); signing and decrypting resume, the queue is retried\n"
                    ))
                }
                None => Ok("no tamper to clear\n".into()),
            }
        }
        _ => Err(format!(
            "unknown request {line:?} (status, certificates, tamper, tamper-clear, list, \
             show ID, retry [ID], delete ID, policy-apply)"
        )),
    }
}
