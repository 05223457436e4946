//! The queue manager: runs delivery attempts for due messages, at most `concurrency` at
//! once; records each recipient's result in the envelope; retries with exponential backoff;
//! bounces what fails for good or outlives the queue lifetime; removes what is done.

use std::collections::{BTreeSet, HashSet};
use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, Semaphore};

use crate::config::Route;
use crate::smtp::client::Transaction;
use crate::spool::{self, Envelope, QueueId, Recipient, Status};

use super::Relay;
use super::deliver::{self, Hop, Outcome};
use super::pipeline::{self, Context};

#[derive(Debug, Default)]
struct Sched {
    /// (not before, id).
    due: BTreeSet<(u64, String)>,
    running: HashSet<String>,
}

/// The queue's schedule (what is on disk is the truth; this is what runs when).
#[derive(Debug)]
pub struct Queue {
    sched: Mutex<Sched>,
    wake: Notify,
    slots: Arc<Semaphore>,
}

impl Queue {
    pub fn new(concurrency: usize) -> Queue {
        Queue {
            sched: Mutex::new(Sched::default()),
            wake: Notify::new(),
            slots: Arc::new(Semaphore::new(concurrency)),
        }
    }

    /// Runs `id` at `at` (seconds since the epoch; 0 = now).
    pub fn schedule(&self, id: &str, at: u64) {
        if let Ok(mut s) = self.sched.lock() {
            s.due.retain(|(_, i)| i != id);
            s.due.insert((at, id.to_string()));
        }
        self.wake.notify_one();
    }

    /// Makes every queued message due now (`smimegw queue retry`).
    pub fn retry_all(&self) {
        if let Ok(mut s) = self.sched.lock() {
            let ids: Vec<String> = s.due.iter().map(|(_, i)| i.clone()).collect();
            s.due = ids.into_iter().map(|i| (0, i)).collect();
        }
        self.wake.notify_one();
    }

    /// Takes `id` out of the schedule so the administrator can delete it; false when a
    /// delivery attempt is running (then nothing changes). Call [`Queue::release`] after.
    pub fn claim(&self, id: &str) -> bool {
        let Ok(mut s) = self.sched.lock() else {
            return false;
        };
        if s.running.contains(id) {
            return false;
        }
        s.due.retain(|(_, i)| i != id);
        s.running.insert(id.to_string());
        true
    }

    /// Ends a [`Queue::claim`].
    pub fn release(&self, id: &str) {
        self.finished(id);
    }

    /// Whether a delivery attempt of `id` is running now.
    pub fn is_running(&self, id: &str) -> bool {
        self.sched.lock().is_ok_and(|s| s.running.contains(id))
    }

    /// The next due id not running, or how long until one is due.
    fn take_due(&self, now: u64) -> Result<String, Option<u64>> {
        let Ok(mut s) = self.sched.lock() else {
            return Err(None);
        };
        let next = s
            .due
            .iter()
            .find(|(_, id)| !s.running.contains(id))
            .cloned();
        match next {
            Some((at, id)) if at <= now => {
                s.due.remove(&(at, id.clone()));
                s.running.insert(id.clone());
                Ok(id)
            }
            Some((at, _)) => Err(Some(at - now)),
            None => Err(None),
        }
    }

    fn finished(&self, id: &str) {
        if let Ok(mut s) = self.sched.lock() {
            s.running.remove(id);
        }
        self.wake.notify_one();
    }
}

/// The queue's main loop.
pub async fn run(relay: Arc<Relay>) {
    let q = &relay.queue;
    loop {
        let permit = match q.slots.clone().acquire_owned().await {
            Ok(p) => p,
            Err(_) => return,
        };
        match q.take_due(spool::now()) {
            Ok(id) => {
                let relay = relay.clone();
                tokio::spawn(async move {
                    attempt(&relay, &id).await;
                    relay.queue.finished(&id);
                    drop(permit);
                });
            }
            Err(wait) => {
                drop(permit);
                let sleep = Duration::from_secs(wait.unwrap_or(3600).min(3600));
                tokio::select! {
                    _ = q.wake.notified() => {}
                    _ = tokio::time::sleep(sleep) => {}
                }
            }
        }
    }
}

/// The wait before attempt `n + 1`: first_retry × 2^(n-1), at most max_retry.
fn backoff(relay: &Relay, attempts: u32) -> u64 {
    let q = &relay.config.queue;
    let first = q.first_retry.as_secs().max(1);
    let exp = attempts.saturating_sub(1).min(30);
    first
        .saturating_mul(1u64 << exp)
        .min(q.max_retry.as_secs().max(first))
}

/// One delivery attempt of a queued message.
async fn attempt(relay: &Arc<Relay>, id: &str) {
    // The queue has its ids from the spool; parsed all the same before a file is named.
    let qid = match QueueId::parse(id) {
        Ok(q) => q,
        Err(e) => {
            tracing::error!("not a queue id: {e}");
            return;
        }
    };
    let mut env = match relay.spool.read(&qid) {
        Ok(e) => e,
        Err(spool::SpoolError::NotFound(_)) => return,
        Err(e) => {
            tracing::error!(id, "cannot read the envelope: {e}");
            return;
        }
    };
    let message = relay.spool.message_file(&qid);
    let now = spool::now();
    let r = relay.clone();
    let env2 = env.clone();
    let planned = tokio::task::spawn_blocking(move || {
        let (anchors, intermediates) = r.trust();
        let policy = r.policy();
        let ctx = Context {
            config: &r.config,
            policy: &policy,
            keys: &r.keys,
            certs: &r.certs,
            anchors: &anchors,
            intermediates: &intermediates,
            now,
        };
        pipeline::process(&ctx, &env2, &message)
    })
    .await;
    let plan = match planned {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => {
            tracing::error!(id, "processing failed: {e}");
            retry_later(relay, &mut env, &format!("4.3.0 processing failed: {e}")).await;
            return;
        }
        Err(e) => {
            tracing::error!(id, "processing crashed: {e}");
            retry_later(relay, &mut env, "4.3.0 processing failed").await;
            return;
        }
    };
    let mut newly_failed: Vec<(String, String)> = Vec::new();
    for (i, why) in plan.failed {
        tracing::warn!(id, rcpt = %env.recipients[i].address, "failed: {why}");
        newly_failed.push((env.recipients[i].address.clone(), why.clone()));
        env.recipients[i].status = Status::Failed { reason: why };
    }
    for (i, why) in plan.deferred {
        tracing::info!(id, rcpt = %env.recipients[i].address, "deferred: {why}");
        env.recipients[i].status = Status::Pending { last: Some(why) };
    }
    for mut job in plan.jobs {
        let body = job.body.take();
        let outcomes = run_job(relay, &env, &relay.spool.message_file(&qid), &job, body).await;
        for (&i, o) in job.recipients.iter().zip(outcomes) {
            let rcpt = &env.recipients[i].address;
            match o {
                Outcome::Delivered(reply) => {
                    tracing::info!(id, rcpt = %rcpt, treatment = %job.treatment, "delivered: {reply}");
                    relay.stats.count(job.inbound, &job.treatment);
                    env.recipients[i].status = Status::Delivered { reply };
                }
                Outcome::Deferred(why) => {
                    tracing::info!(id, rcpt = %rcpt, "deferred: {why}");
                    env.recipients[i].status = Status::Pending { last: Some(why) };
                }
                Outcome::Failed(why) => {
                    tracing::warn!(id, rcpt = %rcpt, "failed: {why}");
                    newly_failed.push((rcpt.clone(), why.clone()));
                    env.recipients[i].status = Status::Failed { reason: why };
                }
            }
        }
    }
    env.attempts += 1;
    conclude(relay, &qid, &mut env, newly_failed, now).await;
}

/// After an attempt: past the lifetime, what is still pending fails; the sender hears of
/// failures; a finished message is removed, else scheduled again. Every attempt ends here,
/// whether processing worked or not, so every accepted message ends within its lifetime.
async fn conclude(
    relay: &Arc<Relay>,
    qid: &QueueId,
    env: &mut Envelope,
    mut newly_failed: Vec<(String, String)>,
    now: u64,
) {
    let id = qid.as_str();
    if !env.is_done() && now.saturating_sub(env.received) >= relay.config.queue.lifetime.as_secs() {
        for r in env.recipients.iter_mut() {
            if let Status::Pending { last } = &r.status {
                let why = format!(
                    "delivery time expired after {} attempts; last: {}",
                    env.attempts,
                    last.as_deref().unwrap_or("no attempt")
                );
                tracing::warn!(id, rcpt = %r.address, "failed: {why}");
                newly_failed.push((r.address.clone(), why.clone()));
                r.status = Status::Failed { reason: why };
            }
        }
    }
    if !newly_failed.is_empty() {
        bounce(relay, env, &relay.spool.message_file(qid), &newly_failed).await;
    }
    if env.is_done() {
        if let Err(e) = relay.spool.delete(qid) {
            tracing::error!(id, "cannot remove a delivered message: {e}");
        }
        return;
    }
    env.next_try = now + backoff(relay, env.attempts);
    if let Err(e) = relay.spool.update(env) {
        tracing::error!(id, "cannot record the results: {e}");
    }
    relay.queue.schedule(id, env.next_try);
}

/// Processing failed (not a verdict on any recipient): each pending recipient keeps `why`
/// as its last error, and the lifetime applies as after any attempt.
async fn retry_later(relay: &Arc<Relay>, env: &mut Envelope, why: &str) {
    for r in env.recipients.iter_mut() {
        if let Status::Pending { last } = &mut r.status {
            *last = Some(why.to_string());
        }
    }
    env.attempts += 1;
    match QueueId::parse(&env.id) {
        Ok(qid) => conclude(relay, &qid, env, Vec::new(), spool::now()).await,
        Err(e) => tracing::error!("not a queue id: {e}"),
    }
}

/// Delivers one job of `env`, whose spooled message is `message`.
async fn run_job(
    relay: &Arc<Relay>,
    env: &Envelope,
    message: &std::path::Path,
    job: &pipeline::Job,
    body: Option<pipeline::Body>,
) -> Vec<Outcome> {
    let n = job.recipients.len();
    let body = match body {
        Some(b) => Ok(b),
        None => File::open(message).map(pipeline::Body::File),
    };
    let mut body = match body {
        Ok(b) => b,
        Err(e) => return vec![Outcome::Deferred(format!("4.3.0 spool: {e}")); n],
    };
    let size = body
        .seek(SeekFrom::End(0))
        .and_then(|s| body.seek(SeekFrom::Start(0)).map(|_| s))
        .unwrap_or(env.size);
    let route = if job.inbound {
        &relay.config.inbound
    } else {
        &relay.config.outbound
    };
    let rcpts: Vec<&Recipient> = job.recipients.iter().map(|&i| &env.recipients[i]).collect();
    match route {
        Route::Maildir(dir) => {
            let dir = dir.clone();
            let addrs: Vec<String> = rcpts.iter().map(|r| r.address.clone()).collect();
            let id = env.id.clone();
            let res =
                tokio::task::spawn_blocking(move || deliver::maildir(&dir, &addrs, &mut body, &id))
                    .await;
            match res {
                Ok(Ok(name)) => vec![Outcome::Delivered(format!("Maildir {name}")); n],
                Ok(Err(e)) => vec![Outcome::Deferred(format!("4.3.0 Maildir: {e}")); n],
                Err(e) => vec![Outcome::Deferred(format!("4.3.0 Maildir: {e}")); n],
            }
        }
        Route::Smtp {
            host, port, tls, ..
        } => {
            let hop = Hop {
                host: host.clone(),
                port: *port,
                tls: *tls,
                tls_config: if job.inbound {
                    relay.tls_client_inbound.clone()
                } else {
                    relay.tls_client_outbound.clone()
                },
                hostname: relay.config.server.hostname.clone(),
                auth: if job.inbound {
                    relay.hop_auth_inbound.clone()
                } else {
                    relay.hop_auth_outbound.clone()
                },
            };
            let tx = Transaction {
                from: env.from.clone(),
                recipients: rcpts
                    .iter()
                    .map(|r| (r.address.clone(), r.notify.clone(), r.orcpt.clone()))
                    .collect(),
                size,
                eight_bit: true,
                smtputf8: env.smtputf8,
                ret_full: env.ret_full,
                envid: env.envid.clone(),
            };
            deliver::smtp(&relay.delivery, &hop, &tx, body).await
        }
    }
}

/// Queues a DSN to the sender for `failed`; never for the null sender or our own reports,
/// nor when the recipients asked for none (NOTIFY=NEVER, or a list without FAILURE).
async fn bounce(
    relay: &Arc<Relay>,
    env: &Envelope,
    message: &std::path::Path,
    failed: &[(String, String)],
) {
    if env.from.is_empty() || env.report {
        return;
    }
    let wanted: Vec<(String, String)> = failed
        .iter()
        .filter(|(a, _)| {
            env.recipients
                .iter()
                .find(|r| &r.address == a)
                .and_then(|r| r.notify.as_deref())
                .is_none_or(|n| n.to_ascii_uppercase().contains("FAILURE"))
        })
        .cloned()
        .collect();
    if wanted.is_empty() {
        return;
    }
    let r = relay.clone();
    let sender = env.from.clone();
    let env = env.clone();
    let message = message.to_path_buf();
    let res = tokio::task::spawn_blocking(move || -> Result<String, String> {
        // A message whose content is gone still gets its report (without the content).
        let mut original = File::open(&message)
            .or_else(|_| tempfile::tempfile())
            .map_err(|e| e.to_string())?;
        let mut incoming = r.spool.incoming().map_err(|e| e.to_string())?;
        let mut buf = Vec::new();
        let now = spool::now();
        super::dsn::write_report(
            &mut buf,
            &r.config.server.hostname,
            &env,
            &wanted,
            &mut original,
            now,
        )
        .map_err(|e| e.to_string())?;
        incoming.write(&buf).map_err(|e| e.to_string())?;
        let mut report = Envelope {
            report: true,
            ..Envelope::new(
                "",
                vec![Recipient::new(&env.from)],
                "localhost",
                &r.config.server.hostname,
            )
        };
        r.spool
            .commit(incoming, &mut report)
            .map_err(|e| e.to_string())?;
        Ok(report.id)
    })
    .await;
    match res {
        Ok(Ok(id)) => {
            tracing::info!(report = %id, to = %sender, "queued a delivery status notification");
            relay.queue.schedule(&id, 0);
        }
        Ok(Err(e)) => tracing::error!("cannot queue a delivery status notification: {e}"),
        Err(e) => tracing::error!("cannot queue a delivery status notification: {e}"),
    }
}
