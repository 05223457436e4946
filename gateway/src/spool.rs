//! The durable spool: every accepted message is on disk, file and directory fsynced, before
//! the `250` that accepts it, and stays there until each recipient has a final result.
//!
//! Layout under `DATA/spool/`:
//! - `tmp/ID`: a message being received (deleted at start: never acknowledged);
//! - `queue/ID.eml`: the message as received, behind our `Received:` field; never changed;
//! - `queue/ID.env`: its envelope (JSON): sender, recipients with their DSN parameters and
//!   results, attempts, next try. Replaced whole (written aside, fsynced, renamed).
//!
//! The `.env` is the commit point: the `.eml` is renamed into `queue/` first, then the
//! envelope is written, then the directory is fsynced; only then is `250` sent. At start, an
//! `.eml` without `.env` was never acknowledged and is removed; an `.env` without `.eml`
//! cannot follow a completed commit and is reported and set aside.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// A spool error: what, where.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("spool {path}: envelope does not parse: {reason}")]
    Envelope { path: PathBuf, reason: String },
    #[error("no queued message {0}")]
    NotFound(String),
    #[error("{0}")]
    BadId(#[from] BadQueueId),
}

pub type Result<T> = std::result::Result<T, SpoolError>;

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A queue id as the spool makes them ([`Spool::incoming`]): 14 to 16 upper-case hex
/// digits (microseconds since the epoch). Ids that come from outside (the API, the pages,
/// the control socket) are parsed into this before they reach the spool, and the spool
/// builds file names only from it: nothing else (`..`, `/`, another extension) can name a
/// file.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct QueueId(String);

/// Shortest and longest queue id: `{:014X}` of a `u64`.
const ID_DIGITS: std::ops::RangeInclusive<usize> = 14..=16;

/// Text that is not a queue id (shown escaped and cut short: it came from outside).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no queued message {shown}: not a queue id (14 to 16 of 0-9 and A-F)")]
pub struct BadQueueId {
    shown: String,
}

impl QueueId {
    /// The id in `text`, or why it is not one.
    pub fn parse(text: &str) -> std::result::Result<QueueId, BadQueueId> {
        let ok = ID_DIGITS.contains(&text.len())
            && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'A'..=b'F'));
        if ok {
            Ok(QueueId(text.to_string()))
        } else {
            let shown: String = text
                .chars()
                .take(64)
                .flat_map(char::escape_default)
                .collect();
            Err(BadQueueId { shown })
        }
    }

    fn of(n: u64) -> QueueId {
        QueueId(format!("{n:014X}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for QueueId {
    type Err = BadQueueId;

    fn from_str(s: &str) -> std::result::Result<QueueId, BadQueueId> {
        QueueId::parse(s)
    }
}

impl std::fmt::Display for QueueId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for QueueId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// What became of one recipient.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "state")]
pub enum Status {
    /// Not yet delivered; `last` is the latest temporary failure, if any.
    Pending { last: Option<String> },
    /// Accepted by the next hop (its reply) or written to the Maildir.
    Delivered { reply: String },
    /// Refused for good (the reason): a DSN goes to the sender.
    Failed { reason: String },
}

/// One recipient of a queued message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipient {
    pub address: String,
    /// DSN NOTIFY (RFC 3461), as given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<String>,
    /// DSN ORCPT, as given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orcpt: Option<String>,
    pub status: Status,
}

/// A queued message's envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub id: String,
    /// When it was accepted (seconds since the epoch).
    pub received: u64,
    /// The reverse path; "" for the null sender (bounces).
    pub from: String,
    /// A delivery status notification we made: sent as is, and never bounced.
    #[serde(default)]
    pub report: bool,
    pub recipients: Vec<Recipient>,
    /// The client's address and EHLO name, for the logs and DSNs.
    pub client: String,
    pub helo: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authenticated: Option<String>,
    /// DSN RET=FULL (true) or HDRS (false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ret_full: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envid: Option<String>,
    #[serde(default)]
    pub smtputf8: bool,
    /// Message size in bytes, as spooled.
    pub size: u64,
    /// Delivery attempts so far.
    pub attempts: u32,
    /// Not before this time (seconds since the epoch).
    pub next_try: u64,
}

impl Recipient {
    /// A recipient still to deliver, without DSN parameters.
    pub fn new(address: &str) -> Recipient {
        Recipient {
            address: address.to_string(),
            notify: None,
            orcpt: None,
            status: Status::Pending { last: None },
        }
    }
}

impl Envelope {
    /// A new envelope received now; the id and size are set when it is committed.
    pub fn new(from: &str, recipients: Vec<Recipient>, client: &str, helo: &str) -> Envelope {
        Envelope {
            id: String::new(),
            received: now(),
            from: from.to_string(),
            report: false,
            recipients,
            client: client.to_string(),
            helo: helo.to_string(),
            authenticated: None,
            ret_full: None,
            envid: None,
            smtputf8: false,
            size: 0,
            attempts: 0,
            next_try: 0,
        }
    }

    pub fn pending(&self) -> impl Iterator<Item = &Recipient> {
        self.recipients
            .iter()
            .filter(|r| matches!(r.status, Status::Pending { .. }))
    }

    /// Every recipient has a final result.
    pub fn is_done(&self) -> bool {
        self.pending().next().is_none()
    }
}

/// The spool directory.
#[derive(Debug)]
pub struct Spool {
    tmp: PathBuf,
    queue: PathBuf,
    /// Emptied files of delivered messages, reused for new ones: creating and deleting a file
    /// per message costs the file system far more than renaming one (inode allocation).
    free: PathBuf,
    pool: std::sync::Mutex<Vec<PathBuf>>,
    free_seq: AtomicU64,
    last_id: AtomicU64,
}

/// Most emptied files kept for reuse.
const FREE_MAX: usize = 512;

/// A message being received into `tmp/`.
#[derive(Debug)]
pub struct Incoming {
    pub id: String,
    path: PathBuf,
    file: BufWriter<File>,
    size: u64,
}

impl Incoming {
    pub fn write(&mut self, data: &[u8]) -> Result<()> {
        self.size += data.len() as u64;
        self.file.write_all(data).map_err(io_at(&self.path))
    }

    pub fn size(&self) -> u64 {
        self.size
    }
}

impl Drop for Incoming {
    fn drop(&mut self) {
        // Committed files have moved away; this removes only what was never acknowledged.
        let _ = fs::remove_file(&self.path);
    }
}

fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(io_at(dir))
}

impl Spool {
    /// Opens (creating) the spool under `dir`; what `tmp/` holds is discarded.
    pub fn open(dir: &Path) -> Result<Spool> {
        let tmp = dir.join("tmp");
        let queue = dir.join("queue");
        let free = dir.join("free");
        for d in [dir, &tmp, &queue, &free] {
            // Mail lies here (inbound, decrypted): the owner's only, whatever the umask.
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(d)
                .map_err(io_at(d))?;
        }
        for e in fs::read_dir(&tmp).map_err(io_at(&tmp))? {
            let e = e.map_err(io_at(&tmp))?;
            let _ = fs::remove_file(e.path());
        }
        let mut pool = Vec::new();
        let mut seq = 0u64;
        for e in fs::read_dir(&free).map_err(io_at(&free))? {
            let e = e.map_err(io_at(&free))?;
            match e.file_name().to_str().and_then(|n| n.parse::<u64>().ok()) {
                Some(n) if pool.len() < FREE_MAX => {
                    seq = seq.max(n + 1);
                    pool.push(e.path());
                }
                _ => {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
        Ok(Spool {
            tmp,
            queue,
            free,
            pool: std::sync::Mutex::new(pool),
            free_seq: AtomicU64::new(seq),
            last_id: AtomicU64::new(0),
        })
    }

    /// A new empty file at `path` (which must not exist): an emptied one moved there, or a
    /// new one.
    fn new_file(&self, path: &Path) -> Result<File> {
        let reused = self.pool.lock().ok().and_then(|mut p| p.pop());
        if let Some(old) = reused
            && fs::rename(&old, path).is_ok()
        {
            if let Ok(f) = OpenOptions::new().write(true).truncate(true).open(path)
                && f.set_permissions(fs::Permissions::from_mode(0o600)).is_ok()
            {
                return Ok(f);
            }
            let _ = fs::remove_file(path);
        }
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)
            .map_err(io_at(path))
    }

    /// Empties `path` into the pool of reusable files (or deletes it when the pool is full).
    /// Not found: `Ok(false)`.
    fn discard(&self, path: &Path) -> io::Result<bool> {
        let full = self
            .pool
            .lock()
            .map(|p| p.len() >= FREE_MAX)
            .unwrap_or(true);
        if full {
            return match fs::remove_file(path) {
                Ok(()) => Ok(true),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
                Err(e) => Err(e),
            };
        }
        let dst = self
            .free
            .join(self.free_seq.fetch_add(1, Ordering::Relaxed).to_string());
        match fs::rename(path, &dst) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        }
        // Emptied now, so delivered mail does not linger in free/.
        OpenOptions::new().write(true).open(&dst)?.set_len(0)?;
        if let Ok(mut p) = self.pool.lock() {
            p.push(dst);
        }
        Ok(true)
    }

    /// Writes `data` to `path` through a temporary file, fsynced, renamed into place.
    fn replace_file(&self, path: &Path, data: &[u8]) -> Result<()> {
        let tmp = path.with_extension("new");
        let mut f = self.new_file(&tmp)?;
        f.write_all(data).map_err(io_at(&tmp))?;
        f.sync_all().map_err(io_at(&tmp))?;
        fs::rename(&tmp, path).map_err(io_at(path))
    }

    pub fn queue_dir(&self) -> &Path {
        &self.queue
    }

    /// A new queue id: microseconds since the epoch in hex, made unique within the process
    /// (and checked against the disk, for clocks that go back).
    fn new_id(&self) -> QueueId {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        let mut last = self.last_id.load(Ordering::Relaxed);
        loop {
            let next = now.max(last + 1);
            match self
                .last_id
                .compare_exchange(last, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return QueueId::of(next),
                Err(l) => last = l,
            }
        }
    }

    /// Starts receiving a message.
    pub fn incoming(&self) -> Result<Incoming> {
        loop {
            let id = self.new_id();
            if self.envelope_path(&id).exists() {
                continue;
            }
            let path = self.tmp.join(id.as_str());
            if path.exists() {
                continue;
            }
            let f = self.new_file(&path)?;
            return Ok(Incoming {
                id: id.0,
                file: BufWriter::with_capacity(64 * 1024, f),
                path,
                size: 0,
            });
        }
    }

    /// Makes a received message durable with its envelope. When this returns Ok, the
    /// message survives any crash; answer `250` then, not before.
    pub fn commit(&self, mut incoming: Incoming, env: &mut Envelope) -> Result<()> {
        let id = QueueId::parse(&incoming.id)?;
        env.id = incoming.id.clone();
        env.size = incoming.size;
        let path = incoming.path.clone();
        incoming.file.flush().map_err(io_at(&path))?;
        incoming.file.get_ref().sync_all().map_err(io_at(&path))?;
        let eml = self.message_file(&id);
        fs::rename(&path, &eml).map_err(io_at(&eml))?;
        self.write_envelope(&id, env)?;
        fsync_dir(&self.queue)
    }

    fn envelope_path(&self, id: &QueueId) -> PathBuf {
        self.queue.join(format!("{id}.env"))
    }

    /// The message file of a queued id.
    pub fn message_file(&self, id: &QueueId) -> PathBuf {
        self.queue.join(format!("{id}.eml"))
    }

    /// Tests: the message file of a text id; text that is not an id names
    /// `queue/not-an-id`, which never exists (the spool makes no such file). Ids from
    /// outside go through [`QueueId::parse`] and [`Spool::message_file`].
    #[cfg(test)]
    pub fn message_path(&self, id: &str) -> PathBuf {
        match QueueId::parse(id) {
            Ok(id) => self.message_file(&id),
            Err(_) => self.queue.join("not-an-id"),
        }
    }

    fn write_envelope(&self, id: &QueueId, env: &Envelope) -> Result<()> {
        let path = self.envelope_path(id);
        let json = serde_json::to_vec_pretty(env).map_err(|e| SpoolError::Envelope {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        self.replace_file(&path, &json)
    }

    /// Records a changed envelope (results, attempts, next try).
    pub fn update(&self, env: &Envelope) -> Result<()> {
        self.write_envelope(&QueueId::parse(&env.id)?, env)
    }

    /// Tests: reads a queued envelope by a text id (parsed all the same:
    /// text that is not an id is [`SpoolError::BadId`]).
    #[cfg(test)]
    pub fn envelope(&self, id: &str) -> Result<Envelope> {
        self.read(&QueueId::parse(id)?)
    }

    /// Reads a queued envelope.
    pub fn read(&self, id: &QueueId) -> Result<Envelope> {
        let path = self.envelope_path(id);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(SpoolError::NotFound(id.to_string()));
            }
            Err(e) => return Err(io_at(&path)(e)),
        };
        let env: Envelope = serde_json::from_slice(&bytes).map_err(|e| SpoolError::Envelope {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        // The queue finds the message file by the envelope's id: it must be this one.
        if env.id != id.as_str() {
            return Err(SpoolError::Envelope {
                path,
                reason: format!("it names another id ({:?})", env.id),
            });
        }
        Ok(env)
    }

    /// Tests: removes a message by a text id (parsed all the same).
    #[cfg(test)]
    pub fn remove(&self, id: &str) -> Result<()> {
        self.delete(&QueueId::parse(id)?)
    }

    /// Removes a queued message (its recipients all have final results, or an
    /// administrator deletes it).
    pub fn delete(&self, id: &QueueId) -> Result<()> {
        // The envelope first: a crash in between leaves an orphan message file, which the
        // next start removes.
        let env = self.envelope_path(id);
        if !self.discard(&env).map_err(io_at(&env))? {
            return Err(SpoolError::NotFound(id.to_string()));
        }
        let eml = self.message_file(id);
        self.discard(&eml).map_err(io_at(&eml)).map(|_| ())
    }

    /// The queued ids named by `queue/` with `suffix` (`.env`, `.eml`); other names are
    /// not the spool's and are left alone.
    fn ids_with(&self, suffix: &str) -> Result<Vec<QueueId>> {
        let mut ids = Vec::new();
        for e in fs::read_dir(&self.queue).map_err(io_at(&self.queue))? {
            let e = e.map_err(io_at(&self.queue))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(Ok(id)) = name.strip_suffix(suffix).map(QueueId::parse) {
                ids.push(id);
            } else if suffix == ".env" && name.ends_with(".new") {
                // An envelope update that did not finish: the old one stands.
                let _ = fs::remove_file(e.path());
            }
        }
        Ok(ids)
    }

    /// Every queued message's envelope, in id order, read as it is now (no repairs).
    pub fn recover_list(&self) -> Result<Vec<Envelope>> {
        let mut envs = Vec::new();
        for e in fs::read_dir(&self.queue).map_err(io_at(&self.queue))? {
            let e = e.map_err(io_at(&self.queue))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(Ok(id)) = name.strip_suffix(".env").map(QueueId::parse) {
                match self.read(&id) {
                    Ok(env) => envs.push(env),
                    // Removed meanwhile (delivered).
                    Err(SpoolError::NotFound(_)) => {}
                    Err(err) => return Err(err),
                }
            }
        }
        envs.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(envs)
    }

    /// Every queued message, after a start: orphan message files removed, unreadable
    /// envelopes renamed to `ID.env.bad` and reported (never deleted). Names that are not
    /// the spool's are left alone.
    pub fn recover(&self) -> Result<(Vec<Envelope>, Vec<SpoolError>)> {
        let mut envs = Vec::new();
        let mut problems = Vec::new();
        for id in self.ids_with(".env")? {
            match self.read(&id) {
                Ok(env) if self.message_file(&id).exists() => envs.push(env),
                Ok(_) => {
                    let p = self.envelope_path(&id);
                    let _ = fs::rename(&p, p.with_extension("env.bad"));
                    problems.push(SpoolError::Envelope {
                        path: p,
                        reason: "its message file is missing".into(),
                    });
                }
                Err(err) => {
                    let p = self.envelope_path(&id);
                    let _ = fs::rename(&p, p.with_extension("env.bad"));
                    problems.push(err);
                }
            }
        }
        for id in self.ids_with(".eml")? {
            let set_aside = self.queue.join(format!("{id}.env.bad")).exists();
            if !set_aside && !self.envelope_path(&id).exists() {
                let _ = fs::remove_file(self.message_file(&id));
            }
        }
        envs.sort_by(|a, b| a.id.cmp(&b.id));
        // The clock may have gone back: ids issued from now on stay above the recovered.
        if let Some(max) = envs
            .iter()
            .filter_map(|e| u64::from_str_radix(&e.id, 16).ok())
            .max()
        {
            self.last_id.fetch_max(max, Ordering::Relaxed);
        }
        Ok((envs, problems))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn envelope(rcpts: &[&str]) -> Envelope {
        let rcpts = rcpts.iter().map(|a| Recipient::new(a)).collect();
        Envelope::new("alice@example.com", rcpts, "127.0.0.1", "client")
    }

    #[test]
    fn commit_recover_remove() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let mut a = spool.incoming().unwrap();
        a.write(b"Subject: a\r\n\r\nbody\r\n").unwrap();
        let mut env = envelope(&["bob@example.net"]);
        spool.commit(a, &mut env).unwrap();
        assert_eq!(env.size, 20);
        // Received but not committed: gone at the next start.
        let mut b = spool.incoming().unwrap();
        b.write(b"half").unwrap();
        std::mem::forget(b);
        // An orphan message file (crash between rename and envelope).
        fs::write(spool.message_path("0000000000000A"), b"x").unwrap();
        drop(spool);

        let spool = Spool::open(dir.path()).unwrap();
        let (envs, problems) = spool.recover().unwrap();
        assert!(problems.is_empty());
        assert_eq!(envs, vec![env.clone()]);
        assert!(!spool.message_path("0000000000000A").exists());
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
        assert_eq!(
            fs::read(spool.message_path(&env.id)).unwrap(),
            b"Subject: a\r\n\r\nbody\r\n"
        );
        // A new id sorts after the recovered one.
        let c = spool.incoming().unwrap();
        assert!(c.id > env.id);
        drop(c);

        env.recipients[0].status = Status::Delivered {
            reply: "250 ok".into(),
        };
        spool.update(&env).unwrap();
        assert_eq!(spool.envelope(&env.id).unwrap(), env);
        spool.remove(&env.id).unwrap();
        assert!(matches!(
            spool.envelope(&env.id),
            Err(SpoolError::NotFound(_))
        ));
        assert!(spool.recover().unwrap().0.is_empty());

        // The removed files wait, emptied, in free/ and carry the next message; a restart
        // keeps them.
        let free = || fs::read_dir(dir.path().join("free")).unwrap().count();
        assert_eq!(free(), 2);
        drop(spool);
        let spool = Spool::open(dir.path()).unwrap();
        assert_eq!(free(), 2);
        for f in fs::read_dir(dir.path().join("free")).unwrap() {
            assert_eq!(f.unwrap().metadata().unwrap().len(), 0);
        }
        let mut d = spool.incoming().unwrap();
        d.write(b"Subject: d\r\n\r\nnew\r\n").unwrap();
        let mut env = envelope(&["carol@example.net"]);
        spool.commit(d, &mut env).unwrap();
        assert_eq!(free(), 0);
        assert_eq!(
            fs::read(spool.message_path(&env.id)).unwrap(),
            b"Subject: d\r\n\r\nnew\r\n"
        );
        assert_eq!(spool.envelope(&env.id).unwrap(), env);
    }

    #[test]
    fn a_damaged_envelope_is_set_aside_not_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let mut a = spool.incoming().unwrap();
        a.write(b"x").unwrap();
        let mut env = envelope(&["bob@example.net"]);
        spool.commit(a, &mut env).unwrap();
        fs::write(
            spool.envelope_path(&QueueId::parse(&env.id).unwrap()),
            b"{ not json",
        )
        .unwrap();
        let (envs, problems) = spool.recover().unwrap();
        assert!(envs.is_empty());
        assert_eq!(problems.len(), 1);
        assert!(
            problems[0].to_string().contains("does not parse"),
            "{}",
            problems[0]
        );
        assert!(
            spool
                .queue_dir()
                .join(format!("{}.env.bad", env.id))
                .exists()
        );
        assert!(spool.message_path(&env.id).exists());
    }

    #[test]
    fn only_the_spools_own_ids_name_files() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(&dir.path().join("spool")).unwrap();
        let inc = spool.incoming().unwrap();
        assert_eq!(QueueId::parse(&inc.id).unwrap().as_str(), inc.id);
        drop(inc);
        assert!("0000000000000A".parse::<QueueId>().is_ok());
        assert!("FFFFFFFFFFFFFFFF".parse::<QueueId>().is_ok());
        for bad in [
            "",
            "0000000000000",
            "00000000000000000",
            "0000000000000a",
            "../../../victim",
            "..%2F..%2Fvictim",
            "0000000000000A/",
            "/etc/passwd",
            "0000000000000A.env",
            "00000000000\0A",
        ] {
            let e = QueueId::parse(bad).unwrap_err().to_string();
            assert!(e.contains("not a queue id"), "{bad:?}: {e}");
        }
        let e = QueueId::parse("a\nb\u{1b}").unwrap_err().to_string();
        assert!(!e.contains('\n') && !e.contains('\u{1b}'), "{e}");

        // A victim beside the spool: no text reaches it through the spool's functions.
        let victim = dir.path().join("victim");
        fs::write(victim.with_extension("env"), b"{}").unwrap();
        fs::write(victim.with_extension("eml"), b"precious").unwrap();
        let traversal = "../../victim";
        assert!(matches!(
            spool.envelope(traversal),
            Err(SpoolError::BadId(_))
        ));
        assert!(matches!(spool.remove(traversal), Err(SpoolError::BadId(_))));
        assert!(spool.message_path(traversal).starts_with(spool.queue_dir()));
        assert!(!spool.message_path(traversal).exists());
        assert_eq!(fs::read(victim.with_extension("eml")).unwrap(), b"precious");
        assert_eq!(fs::read(victim.with_extension("env")).unwrap(), b"{}");

        // Names in queue/ that are not ids are not the spool's: listed nowhere, left alone.
        fs::write(spool.queue_dir().join("notes.env"), b"x").unwrap();
        fs::write(spool.queue_dir().join("notes.eml"), b"x").unwrap();
        assert!(spool.recover_list().unwrap().is_empty());
        let (envs, problems) = spool.recover().unwrap();
        assert!(envs.is_empty() && problems.is_empty());
        assert!(spool.queue_dir().join("notes.env").exists());
        assert!(spool.queue_dir().join("notes.eml").exists());
    }
}
