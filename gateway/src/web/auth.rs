//! Who may use the web console: accounts (`DATA/admins`: administrators, `DATA/auditors`:
//! read-only; Argon2id hashes, the same files the serial console uses), sessions (a random
//! token in a Secure, HttpOnly, SameSite=Strict cookie; ended after `web.session_idle`
//! without a request), a CSRF token per session (every form and every changing API call
//! carries it), and throttling per address and account ([`crate::throttle`]).
//!
//! A session is bound to the account's password hash at sign-in: when the account is
//! removed, changes role, or gets a new password (a change, a reset by another
//! administrator, the serial console's `passwd`, an edited file), every one of its sessions
//! ends at its next request. The session that changes its own password is the exception:
//! it is kept, bound to the new hash.
//!
//! A password marked as expired (`DATA/password-expired`: `serve --dev`'s one-time
//! password) signs in to a session that may only change it ([`Session::must_change`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::throttle::{self, Throttle};
use crate::users::{self, Names, UserStore, UsersError};

pub use crate::throttle::{FIRST_LOCKOUT, MAX_FAILURES, MAX_FAILURES_ADDRESS, MAX_LOCKOUT};

pub const COOKIE: &str = "smimegw_session";
/// The sign-in form's own CSRF cookie (before there is a session).
pub const PRE_COOKIE: &str = "smimegw_signin";
/// The file of passwords that must be changed at sign-in, in the data directory.
pub use crate::users::EXPIRED_FILE;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads and changes.
    Admin,
    /// Reads only.
    Auditor,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Auditor => "auditor",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "admin" => Some(Role::Admin),
            "auditor" => Some(Role::Auditor),
            _ => None,
        }
    }
}

/// A signed-in user.
#[derive(Debug, Clone)]
pub struct Session {
    pub user: String,
    pub role: Role,
    pub csrf: String,
    /// "web 127.0.0.1" for the audit log.
    pub origin: String,
    /// Signed in with an expired (one-time) password: only changing it is allowed.
    pub must_change: bool,
    /// The account's password hash at sign-in (or at its own change).
    credential: String,
    last_seen: Instant,
}

/// Why a sign-in failed.
#[derive(Debug, thiserror::Error)]
pub enum SignInError {
    #[error("wrong user name or password")]
    Wrong,
    #[error("too many failed sign-ins; try again in {0} s")]
    Locked(u64),
    #[error("{0}")]
    Accounts(#[from] UsersError),
    #[error("no random session token: {0}")]
    Random(#[from] hsm::Error),
}

/// An account whose password was just checked.
#[derive(Debug, Clone)]
pub struct Account {
    pub user: String,
    pub role: Role,
    /// Its password is expired (one-time): it must be changed before anything else.
    pub must_change: bool,
    credential: String,
}

/// Accounts, sessions and throttling.
#[derive(Debug)]
pub struct Auth {
    admins: UserStore,
    auditors: UserStore,
    expired: PathBuf,
    idle: Duration,
    sessions: Mutex<HashMap<String, Session>>,
    throttle: Mutex<Throttle>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A random token (32 bytes from the system's generator), hex.
pub fn token() -> Result<String, hsm::Error> {
    hsm::random(32).map(|b| hsm::hex(&b))
}

/// Equal without a timing difference in the contents.
pub fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

impl Auth {
    pub fn open(data: &Path, idle: Duration) -> Result<Auth, UsersError> {
        Ok(Auth {
            admins: UserStore::open_as(&data.join("admins"), Names::Logins)?,
            auditors: UserStore::open_as(&data.join("auditors"), Names::Logins)?,
            expired: data.join(EXPIRED_FILE),
            idle,
            sessions: Mutex::new(HashMap::new()),
            throttle: Mutex::new(Throttle::default()),
        })
    }

    fn store(&self, role: Role) -> &UserStore {
        match role {
            Role::Admin => &self.admins,
            Role::Auditor => &self.auditors,
        }
    }

    /// Runs a password check under the throttle of `user` from `ip`: refused before any
    /// hashing while locked; `check` says whether the password was right.
    fn throttled<T>(
        &self,
        user: &str,
        ip: &str,
        check: impl FnOnce() -> Result<Option<T>, SignInError>,
    ) -> Result<T, SignInError> {
        let keys = throttle::keys(Names::Logins.normalize(user).ok().as_deref(), ip);
        lock(&self.throttle)
            .begin(&keys, Instant::now())
            .map_err(SignInError::Locked)?;
        let result = check();
        let mut t = lock(&self.throttle);
        match &result {
            Ok(found) => t.end(&keys, found.is_some(), Instant::now()),
            // An error of our own (the accounts file, a full hashing queue) is neither a
            // failure nor a success.
            Err(_) => t.abandon(&keys),
        }
        match result? {
            Some(v) => Ok(v),
            None => match t.locked(&keys, Instant::now()) {
                0 => Err(SignInError::Wrong),
                secs => Err(SignInError::Locked(secs)),
            },
        }
    }

    /// Checks a password (Argon2id: blocks, call from a blocking thread) under the
    /// throttle; a new session (its cookie id and itself) when it is right.
    pub fn sign_in(
        &self,
        user: &str,
        password: &str,
        ip: &str,
    ) -> Result<(String, Session), SignInError> {
        let a = self.authenticate(user, password, ip)?;
        let session = Session {
            user: a.user,
            role: a.role,
            csrf: token()?,
            origin: format!("web {ip}"),
            must_change: a.must_change,
            credential: a.credential,
            last_seen: Instant::now(),
        };
        let id = token()?;
        let mut sessions = lock(&self.sessions);
        sessions.retain(|_, v| v.last_seen.elapsed() < self.idle);
        sessions.insert(id.clone(), session.clone());
        Ok((id, session))
    }

    /// Checks a user name and password under the throttle (blocks): the account. For
    /// sign-in, and for requests that carry HTTP Basic credentials (the metrics).
    pub fn authenticate(
        &self,
        user: &str,
        password: &str,
        ip: &str,
    ) -> Result<Account, SignInError> {
        self.throttled(user, ip, || {
            // One hash per attempt: against the store that has the account (the auditors'
            // decoy when neither has it).
            let role = match self.admins.current(user)? {
                Some(_) => Role::Admin,
                None => Role::Auditor,
            };
            let found = self
                .store(role)
                .verify_account(user, password)?
                .map(|a| (a, role));
            Ok(found.map(|((user, credential), role)| Account {
                must_change: users::is_expired(&self.expired, &user, &credential),
                user,
                role,
                credential,
            }))
        })
    }

    /// The session of a cookie value, refreshed; `None` when unknown, idle too long, or
    /// its account is gone or has another password than at sign-in.
    pub fn session(&self, id: &str) -> Option<Session> {
        let found = {
            let mut s = lock(&self.sessions);
            let found = s.get_mut(id)?;
            if found.last_seen.elapsed() >= self.idle {
                s.remove(id);
                return None;
            }
            found.last_seen = Instant::now();
            found.clone()
        };
        let current = self.store(found.role).current(&found.user);
        match current {
            Ok(Some((_, hash))) if same(&hash, &found.credential) => Some(found),
            _ => {
                // Unless its own password change bound it to the new hash meanwhile.
                let mut s = lock(&self.sessions);
                if s.get(id).is_some_and(|v| v.credential == found.credential) {
                    s.remove(id);
                    tracing::info!(user = %found.user, "web console: session ended (account removed or password changed)");
                }
                None
            }
        }
    }

    pub fn sign_out(&self, id: &str) {
        lock(&self.sessions).remove(id);
    }

    /// Ends every session of `user` (in `role`) but `keep`.
    fn end_sessions(&self, user: &str, role: Role, keep: Option<&str>) {
        lock(&self.sessions)
            .retain(|id, v| Some(id.as_str()) == keep || v.user != user || v.role != role);
    }

    /// Whether `password` is the signed-in user's (a confirmation); blocks.
    pub fn confirm(&self, s: &Session, password: &str, ip: &str) -> Result<bool, SignInError> {
        match self.throttled(&s.user, ip, || {
            Ok(self.store(s.role).verify(&s.user, password)?)
        }) {
            Ok(_) => Ok(true),
            Err(SignInError::Wrong) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Changes the password of the session `id` (the old one checked first); blocks. The
    /// account's other sessions end; this one is kept, bound to the new password, and may
    /// do everything again if it had to change an expired one.
    pub fn change_password(
        &self,
        id: &str,
        s: &Session,
        old: &str,
        new: &str,
        ip: &str,
    ) -> Result<(), String> {
        if new.chars().count() < users::MIN_ADMIN_PASSWORD {
            return Err(format!(
                "the new password is too short: at least {} characters",
                users::MIN_ADMIN_PASSWORD
            ));
        }
        if old == new {
            return Err("the new password must differ from the current one".into());
        }
        match self.confirm(s, old, ip) {
            Ok(true) => {}
            Ok(false) => return Err("the current password is wrong".into()),
            Err(e) => return Err(e.to_string()),
        }
        let path = self.store(s.role).path();
        let hash = users::hash(new).map_err(|e| e.to_string())?;
        let mut all = users::read_as(path, Names::Logins).map_err(|e| e.to_string())?;
        all.insert(s.user.clone(), hash.clone());
        // The sessions are held while the file changes, so no request of this session
        // sees the new file with the old binding.
        let mut sessions = lock(&self.sessions);
        users::write_as(path, &all, Names::Logins).map_err(|e| e.to_string())?;
        sessions.retain(|k, v| k == id || v.user != s.user || v.role != s.role);
        if let Some(me) = sessions.get_mut(id) {
            me.credential = hash;
            me.must_change = false;
        }
        Ok(())
    }

    /// Adds (or resets) an account; blocks. A reset ends every session of the account.
    pub fn set_account(&self, name: &str, role: Role, password: &str) -> Result<String, String> {
        let name = Names::Logins.normalize(name).map_err(|e| e.to_string())?;
        if password.chars().count() < users::MIN_ADMIN_PASSWORD {
            return Err(format!(
                "the password is too short: at least {} characters",
                users::MIN_ADMIN_PASSWORD
            ));
        }
        let (this, other) = match role {
            Role::Admin => (self.admins.path(), self.auditors.path()),
            Role::Auditor => (self.auditors.path(), self.admins.path()),
        };
        if users::read_as(other, Names::Logins)
            .map_err(|e| e.to_string())?
            .contains_key(&name)
        {
            return Err(format!("{name:?} exists with the other role"));
        }
        let mut all = users::read_as(this, Names::Logins).map_err(|e| e.to_string())?;
        all.insert(
            name.clone(),
            users::hash(password).map_err(|e| e.to_string())?,
        );
        users::write_as(this, &all, Names::Logins).map_err(|e| e.to_string())?;
        self.end_sessions(&name, role, None);
        Ok(name)
    }

    /// Whether any administrator exists.
    pub fn has_admin(&self) -> bool {
        users::read_as(self.admins.path(), Names::Logins).is_ok_and(|a| !a.is_empty())
    }
}
