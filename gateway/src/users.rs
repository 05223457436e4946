//! SMTP AUTH accounts for clients outside `internal_networks` (laptops, phones): one file,
//! `address:$argon2id$...` per line, mode 0600, never a password in clear. The address is
//! the user name, and the only sender an authenticated session may use.
//!
//! The relay reads the file again when it changes, so `smimegw users add` takes effect
//! without a restart.
//!
//! Every Argon2id hash and check in the process (SMTP AUTH, web sign-ins, confirmations,
//! password changes) runs on a fixed pool of [`HASHING_AT_ONCE`] threads with a queue of
//! [`HASHING_QUEUE`]: each costs 19 MiB, and attempts need no credentials, so the memory
//! they can take is bounded here, before the work. A caller beyond the queue, or one that
//! waited [`HASHING_WAIT`], gets [`UsersError::Busy`] (a temporary failure).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use argon2::password_hash::phc::{Output, ParamsString, PasswordHash, Salt};
use argon2::{Algorithm, Argon2, Block, Params, Version};

/// What went wrong with the accounts file.
#[derive(Debug, thiserror::Error)]
pub enum UsersError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: line {line}: {reason}")]
    Line {
        path: String,
        line: usize,
        reason: String,
    },
    #[error("{0:?} is not a user name: use the user's email address (user@domain)")]
    BadName(String),
    #[error("{0:?} is not a login name: 1 to 32 of a-z, 0-9, '.', '_', '-'")]
    BadLogin(String),
    #[error("the password is empty")]
    EmptyPassword,
    #[error("password hashing failed: {0}")]
    Hash(String),
    #[error("too many password checks at once; try again in a moment")]
    Busy,
    #[error("too many failed attempts from this address; try again in {0} s")]
    Locked(u64),
}

impl UsersError {
    /// Whether trying again later may succeed (the hashing pool was full, or the address
    /// is locked out for a while).
    pub fn is_temporary(&self) -> bool {
        matches!(self, UsersError::Busy | UsersError::Locked(_))
    }
}

/// Argon2id computations (19 MiB each) that run at once in the whole process.
pub const HASHING_AT_ONCE: usize = 2;
/// Computations that may wait for a hashing thread; more are refused at once.
pub const HASHING_QUEUE: usize = 16;
/// A computation that waited this long for a hashing thread is dropped, its caller refused.
pub const HASHING_WAIT: Duration = Duration::from_secs(10);

type Job = Box<dyn FnOnce() + Send>;

/// A fixed set of hashing threads behind a bounded queue. Fixed threads also keep the
/// memory flat: each thread's allocator reuses its own 19 MiB, where hashes on ever other
/// threads would leave a block behind in each allocator arena they touched.
struct Hashers {
    /// `None` when no thread could be started.
    queue: Option<SyncSender<Job>>,
    wait: Duration,
}

impl Hashers {
    fn start(threads: usize, queue: usize, wait: Duration) -> Hashers {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Job>(queue);
        let rx: Arc<Mutex<Receiver<Job>>> = Arc::new(Mutex::new(rx));
        let mut started = 0;
        for i in 0..threads {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("argon2-{i}"))
                .spawn(move || {
                    loop {
                        let job = rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
                        match job {
                            Ok(job) => job(),
                            Err(_) => return,
                        }
                    }
                });
            match spawned {
                Ok(_) => started += 1,
                Err(e) => tracing::error!("cannot start a password hashing thread: {e}"),
            }
        }
        Hashers {
            queue: (started > 0).then_some(tx),
            wait,
        }
    }

    /// Runs `work` on a hashing thread and waits for it; `Busy` when the queue is full or
    /// the turn did not come within the wait.
    fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, UsersError> {
        let queue = self.queue.as_ref().ok_or(UsersError::Busy)?;
        let (done, result) = std::sync::mpsc::sync_channel(1);
        let (queued, wait) = (Instant::now(), self.wait);
        let job: Job = Box::new(move || {
            // Its caller has given up: the work would be for no one.
            if queued.elapsed() <= wait {
                let _ = done.send(work());
            }
        });
        match queue.try_send(job) {
            Ok(()) => result.recv().map_err(|_| UsersError::Busy),
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => Err(UsersError::Busy),
        }
    }
}

/// Runs an Argon2id computation on the process's hashing threads (started on first use).
fn hashing<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Result<T, UsersError> {
    static POOL: OnceLock<Hashers> = OnceLock::new();
    POOL.get_or_init(|| Hashers::start(HASHING_AT_ONCE, HASHING_QUEUE, HASHING_WAIT))
        .run(work)
}

fn io(path: &Path, source: std::io::Error) -> UsersError {
    UsersError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// The shortest administrator password the consoles accept.
pub const MIN_ADMIN_PASSWORD: usize = 10;

/// What an accounts file names its accounts by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Names {
    /// Email addresses (SMTP AUTH: the account is the sender).
    Addresses,
    /// Login names (administrators: `admin`, `ops.jane`).
    Logins,
}

impl Names {
    /// A name as stored (lower case), or why it is not one.
    pub fn normalize(self, name: &str) -> Result<String, UsersError> {
        match self {
            Names::Addresses => normalize(name),
            Names::Logins => {
                let n = name.trim().to_ascii_lowercase();
                let ok = (1..=32).contains(&n.len())
                    && n.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
                if ok {
                    Ok(n)
                } else {
                    Err(UsersError::BadLogin(name.to_string()))
                }
            }
        }
    }

    fn header(self) -> &'static str {
        match self {
            Names::Addresses => "# smimegw SMTP AUTH accounts: address:argon2id-hash\n",
            Names::Logins => "# smimegw administrators: login:argon2id-hash\n",
        }
    }
}

/// The accounts of one file, reloaded when the file changes.
pub struct UserStore {
    path: PathBuf,
    names: Names,
    loaded: Mutex<Loaded>,
    /// Checked against when the user is unknown, so the answer takes as long either way.
    decoy: String,
    /// Failed attempts per client address and account ([`UserStore::verify_from`]).
    throttle: Mutex<crate::throttle::Throttle>,
}

struct Loaded {
    stamp: Option<Stamp>,
    users: BTreeMap<String, String>,
}

/// A user name as stored: the address, lower case.
pub fn normalize(user: &str) -> Result<String, UsersError> {
    let u = user.trim().to_ascii_lowercase();
    let ok = u
        .split_once('@')
        .is_some_and(|(l, d)| !l.is_empty() && !d.is_empty() && !d.contains('@'))
        && !u.contains([':', '<', '>'])
        && !u.chars().any(|c| c.is_whitespace() || c.is_control());
    if ok {
        Ok(u)
    } else {
        Err(UsersError::BadName(user.to_string()))
    }
}

/// What tells a changed accounts file: written files are renamed into place (a new inode),
/// and a new hash has the old one's length, so the inode and change time count too.
type Stamp = (SystemTime, u64, u64, i64, i64);

fn stamp(path: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((
        m.modified().ok()?,
        m.len(),
        m.ino(),
        m.ctime(),
        m.ctime_nsec(),
    ))
}

/// Reads the SMTP accounts; a missing file has none.
pub fn read(path: &Path) -> Result<BTreeMap<String, String>, UsersError> {
    read_as(path, Names::Addresses)
}

/// Reads an accounts file of `names`; a missing file has none.
pub fn read_as(path: &Path, names: Names) -> Result<BTreeMap<String, String>, UsersError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(io(path, e)),
    };
    let mut users = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |reason: &str| UsersError::Line {
            path: path.display().to_string(),
            line: i + 1,
            reason: reason.into(),
        };
        let Some((user, hash)) = line.split_once(':') else {
            return Err(bad(match names {
                Names::Addresses => "want address:argon2id-hash",
                Names::Logins => "want login:argon2id-hash",
            }));
        };
        let user = names.normalize(user).map_err(|e| bad(&e.to_string()))?;
        if PasswordHash::new(hash).is_err() || !hash.starts_with("$argon2") {
            return Err(bad("the hash is not an Argon2 PHC string ($argon2id$...)"));
        }
        if users.insert(user.clone(), hash.to_string()).is_some() {
            return Err(bad(&format!("{user} appears twice")));
        }
    }
    Ok(users)
}

/// An Argon2id PHC string for `password` (random salt, the crate's default cost).
/// Blocks: call it from a blocking thread.
pub fn hash(password: &str) -> Result<String, UsersError> {
    if password.is_empty() {
        return Err(UsersError::EmptyPassword);
    }
    let salt = hsm::random(16).map_err(|e| UsersError::Hash(e.to_string()))?;
    let password = zeroize::Zeroizing::new(password.to_string());
    hashing(move || {
        let params = Params::default();
        let hash_err = |e: &dyn std::fmt::Display| UsersError::Hash(e.to_string());
        let salt = Salt::new(&salt).map_err(|e| hash_err(&e))?;
        let mut out = vec![0u8; params.output_len().unwrap_or(Params::DEFAULT_OUTPUT_LEN)];
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
        with_memory(params.block_count(), |blocks| {
            argon2.hash_password_into_with_memory(password.as_bytes(), &salt, &mut out, blocks)
        })?
        .map_err(|e| hash_err(&e))?;
        let phc = PasswordHash {
            algorithm: Algorithm::Argon2id.ident(),
            version: Some(Version::V0x13.into()),
            params: ParamsString::try_from(&params).map_err(|e| hash_err(&e))?,
            salt: Some(salt),
            hash: Some(Output::new(&out).map_err(|e| hash_err(&e))?),
        };
        Ok(phc.to_string())
    })?
}

/// Whether `password` matches the PHC string `stored` (on a hashing thread; blocks). A
/// hash that asks for more memory than [`HASH_MEMORY_BLOCKS`] is an error, not checked.
pub fn check(stored: &str, password: &str) -> Result<bool, UsersError> {
    let (stored, password) = (
        stored.to_string(),
        zeroize::Zeroizing::new(password.to_string()),
    );
    hashing(move || {
        let Ok(phc) = PasswordHash::new(&stored) else {
            return Ok(false);
        };
        let (Some(salt), Some(expected)) = (&phc.salt, &phc.hash) else {
            return Ok(false);
        };
        let algorithm = Algorithm::try_from(phc.algorithm.as_str());
        let version = phc.version.map(Version::try_from).transpose();
        let (Ok(algorithm), Ok(version), Ok(params)) = (algorithm, version, Params::try_from(&phc))
        else {
            return Ok(false);
        };
        let argon2 = Argon2::new(algorithm, version.unwrap_or_default(), params.clone());
        let mut out = vec![0u8; expected.len()];
        let done = with_memory(params.block_count(), |blocks| {
            argon2.hash_password_into_with_memory(password.as_bytes(), salt, &mut out, blocks)
        })?;
        // `Output` compares in constant time.
        Ok(done.is_ok() && Output::new(&out).is_ok_and(|o| &o == expected))
    })?
}

/// Argon2 memory (1 KiB blocks) a hashing thread holds: the default cost's 19 MiB. Made
/// once per thread and reused, so the allocator never sees the 19 MiB come and go.
pub const HASH_MEMORY_BLOCKS: usize = Params::DEFAULT_M_COST as usize;

/// Runs `f` with `blocks` blocks of this thread's Argon2 memory.
fn with_memory<T>(blocks: usize, f: impl FnOnce(&mut [Block]) -> T) -> Result<T, UsersError> {
    thread_local! {
        static MEMORY: std::cell::RefCell<Vec<Block>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    if blocks > HASH_MEMORY_BLOCKS {
        return Err(UsersError::Hash(format!(
            "the hash asks for {blocks} KiB of memory, more than the {HASH_MEMORY_BLOCKS} KiB \
             a password check may use"
        )));
    }
    MEMORY.with(|m| {
        let mut m = m.borrow_mut();
        if m.len() < HASH_MEMORY_BLOCKS {
            *m = vec![Block::default(); HASH_MEMORY_BLOCKS];
        }
        let result = f(&mut m[..blocks]);
        // Nothing derived from a password stays behind.
        m[..blocks].fill(Block::default());
        Ok(result)
    })
}

/// Writes the SMTP accounts: see [`write_as`].
pub fn write(path: &Path, users: &BTreeMap<String, String>) -> Result<(), UsersError> {
    write_as(path, users, Names::Addresses)
}

/// Writes an accounts file: a new file beside the old one (0600), synced, then renamed over
/// it.
pub fn write_as(
    path: &Path,
    users: &BTreeMap<String, String>,
    names: Names,
) -> Result<(), UsersError> {
    let mut text = String::from(names.header());
    for (u, h) in users {
        text.push_str(&format!("{u}:{h}\n"));
    }
    crate::fsutil::replace_file(path, text.as_bytes(), 0o600).map_err(|e| io(path, e))
}

impl std::fmt::Debug for UserStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl UserStore {
    /// Opens the SMTP accounts file (it may not exist yet: no accounts until it does).
    pub fn open(path: &Path) -> Result<UserStore, UsersError> {
        UserStore::open_as(path, Names::Addresses)
    }

    /// Opens an accounts file of `names`.
    pub fn open_as(path: &Path, names: Names) -> Result<UserStore, UsersError> {
        let users = read_as(path, names)?;
        Ok(UserStore {
            names,
            path: path.to_path_buf(),
            loaded: Mutex::new(Loaded {
                stamp: stamp(path),
                users,
            }),
            decoy: hash("decoy password for unknown users")?,
            throttle: Mutex::default(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `user`'s stored name and hash as the file says now (read again when it changed);
    /// `None` when there is no such account.
    pub fn current(&self, user: &str) -> Result<Option<(String, String)>, UsersError> {
        let mut l = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        let now = stamp(&self.path);
        if now != l.stamp {
            // A file that does not read keeps the accounts we have from being used: the
            // error says why.
            let users = read_as(&self.path, self.names)?;
            tracing::info!(file = %self.path.display(), users = users.len(), "accounts reloaded");
            l.users = users;
            l.stamp = now;
        }
        let Ok(name) = self.names.normalize(user) else {
            return Ok(None);
        };
        Ok(l.users.get(&name).cloned().map(|h| (name, h)))
    }

    /// Whether `password` is `user`'s; the user's stored name when it is. Slow on purpose
    /// (Argon2id, on the hashing threads): call it from a blocking thread.
    pub fn verify(&self, user: &str, password: &str) -> Result<Option<String>, UsersError> {
        Ok(self.verify_account(user, password)?.map(|(name, _)| name))
    }

    /// [`UserStore::verify`] for a client at `address` (SMTP AUTH), under the throttle:
    /// [`UsersError::Locked`] before any hashing while the address (with this account, or
    /// with any) has failed too often.
    pub fn verify_from(
        &self,
        user: &str,
        password: &str,
        address: &str,
    ) -> Result<Option<String>, UsersError> {
        let lock = || self.throttle.lock().unwrap_or_else(|p| p.into_inner());
        let keys = crate::throttle::keys(self.names.normalize(user).ok().as_deref(), address);
        lock()
            .begin(&keys, Instant::now())
            .map_err(UsersError::Locked)?;
        let result = self.verify(user, password);
        match &result {
            Ok(found) => lock().end(&keys, found.is_some(), Instant::now()),
            // Our own trouble (the file, a full hashing queue) is no guess.
            Err(_) => lock().abandon(&keys),
        }
        result
    }

    /// [`UserStore::verify`], with the hash that matched (what a session is bound to).
    pub fn verify_account(
        &self,
        user: &str,
        password: &str,
    ) -> Result<Option<(String, String)>, UsersError> {
        let stored = self.current(user)?;
        let hash_text = stored.as_ref().map_or(self.decoy.as_str(), |(_, h)| h);
        let ok = check(hash_text, password)?;
        Ok(stored.filter(|_| ok))
    }
}

/// The file of passwords that must be changed at sign-in, in the data directory.
pub const EXPIRED_FILE: &str = "password-expired";

/// Passwords that must be changed before anything else (`DATA/password-expired`, 0600):
/// lines `login SHA-256-of-its-hash`. An entry holds only while the account's hash is that
/// one, so a new password ends it whoever sets it (web, serial console, a reset).
pub fn expire(path: &Path, login: &str, hash: &str) -> Result<(), UsersError> {
    let mut text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(io(path, e)),
    };
    text.push_str(&format!("{login} {}\n", expiry_mark(hash)));
    crate::fsutil::replace_file(path, text.as_bytes(), 0o600).map_err(|e| io(path, e))
}

/// Whether `login`'s password (whose hash is `hash`) must be changed. An unreadable file
/// counts as yes: the flag is a security property.
pub fn is_expired(path: &Path, login: &str, hash: &str) -> bool {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return false,
        Err(_) => return true,
    };
    let mark = expiry_mark(hash);
    text.lines()
        .any(|l| l.split_once(' ') == Some((login, mark.as_str())))
}

fn expiry_mark(hash: &str) -> String {
    hsm::hex(&hsm::Hash::Sha256.digest(hash.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accounts_round_trip_and_bad_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users");
        let store = UserStore::open(&path).unwrap();
        assert_eq!(store.verify("alice@example.com", "pw").unwrap(), None);

        let mut users = read(&path).unwrap();
        users.insert(
            normalize("Alice@Example.com").unwrap(),
            hash("s3cret").unwrap(),
        );
        write(&path, &users).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("alice@example.com:$argon2id$") && !text.contains("s3cret"));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        // Picked up without reopening.
        assert_eq!(
            store
                .verify("ALICE@example.com", "s3cret")
                .unwrap()
                .as_deref(),
            Some("alice@example.com")
        );
        assert_eq!(store.verify("alice@example.com", "wrong").unwrap(), None);
        assert_eq!(store.verify("bob@example.com", "s3cret").unwrap(), None);
        assert_eq!(store.verify("not a name", "s3cret").unwrap(), None);

        for (text, want) in [
            ("alice@example.com\n", "line 1: want address:argon2id-hash"),
            (
                "# c\nalice@example.com:plain\n",
                "line 2: the hash is not an Argon2",
            ),
            (
                "nobody:$argon2id$x\n",
                "line 1: \"nobody\" is not a user name",
            ),
        ] {
            std::fs::write(&path, text).unwrap();
            let e = read(&path).unwrap_err().to_string();
            assert!(e.contains(want), "{text:?}: {e}");
        }
        let e = store.verify("alice@example.com", "s3cret").unwrap_err();
        assert!(e.to_string().contains("line 1"), "{e}");
        assert!(matches!(hash(""), Err(UsersError::EmptyPassword)));
    }

    #[test]
    fn hashing_runs_a_bounded_number_at_once_and_refuses_beyond_its_queue() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        // A pool of its own, so the flood does not reach the other tests' hashes.
        let pool = Arc::new(Hashers::start(2, 3, Duration::from_secs(30)));
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let (release, gate) = std::sync::mpsc::channel::<()>();
        let gate = Arc::new(Mutex::new(gate));
        let callers: Vec<_> = (0..20)
            .map(|_| {
                let (pool, running, most, gate) =
                    (pool.clone(), running.clone(), most.clone(), gate.clone());
                std::thread::spawn(move || {
                    pool.run(move || {
                        let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        let _ = gate.lock().unwrap().recv();
                        running.fetch_sub(1, Ordering::SeqCst);
                    })
                })
            })
            .collect();
        // At most two run and three wait; every other caller is refused at once, so at
        // least 15 come back while the gate is still shut.
        let start = Instant::now();
        while callers.iter().filter(|c| c.is_finished()).count() < 15
            || running.load(Ordering::SeqCst) < 2
        {
            assert!(start.elapsed() < Duration::from_secs(30), "callers hang");
            std::thread::sleep(Duration::from_millis(10));
        }
        for _ in 0..20 {
            release.send(()).unwrap();
        }
        let results: Vec<_> = callers.into_iter().map(|c| c.join().unwrap()).collect();
        let refused = results
            .iter()
            .filter(|r| matches!(r, Err(UsersError::Busy)))
            .count();
        assert!((15..=18).contains(&refused), "{results:?}");
        assert_eq!(most.load(Ordering::SeqCst), 2);
        assert!(UsersError::Busy.is_temporary());
    }

    #[test]
    fn a_caller_that_waited_too_long_is_refused_and_its_work_skipped() {
        let pool = Hashers::start(1, 4, Duration::from_millis(50));
        let (release, gate) = std::sync::mpsc::channel::<()>();
        let blocker = {
            let pool = Arc::new(pool);
            let p = pool.clone();
            let h = std::thread::spawn(move || {
                p.run(move || {
                    let _ = gate.recv();
                })
            });
            (pool, h)
        };
        std::thread::sleep(Duration::from_millis(20));
        let waiter = {
            let p = blocker.0.clone();
            std::thread::spawn(move || p.run(|| "ran"))
        };
        std::thread::sleep(Duration::from_millis(150));
        release.send(()).unwrap();
        assert!(blocker.1.join().unwrap().is_ok());
        assert!(matches!(waiter.join().unwrap(), Err(UsersError::Busy)));
    }
}
