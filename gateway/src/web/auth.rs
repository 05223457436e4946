//! Who may use the web console: accounts (`DATA/admins`: administrators, `DATA/auditors`:
//! read-only; Argon2id hashes, the same files the serial console uses), sessions (a random
//! token in a Secure, HttpOnly, SameSite=Strict cookie; ended after `web.session_idle`
//! without a request), a CSRF token per session (every form and every changing API call
//! carries it), and throttling: after [`MAX_FAILURES`] wrong passwords for an account (or
//! [`MAX_FAILURES_ADDRESS`] from one address) within [`WINDOW`], sign-in is refused for
//! [`LOCKOUT`] even with the right password.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::users::{self, Names, UserStore, UsersError};

pub const COOKIE: &str = "smimegw_session";
/// The sign-in form's own CSRF cookie (before there is a session).
pub const PRE_COOKIE: &str = "smimegw_signin";
pub const MAX_FAILURES: u32 = 5;
/// From one address (several administrators may share one): more before it locks.
pub const MAX_FAILURES_ADDRESS: u32 = 20;
pub const WINDOW: Duration = Duration::from_secs(15 * 60);
pub const LOCKOUT: Duration = Duration::from_secs(5 * 60);

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
    last_seen: Instant,
}

#[derive(Debug)]
struct Failures {
    count: u32,
    first: Instant,
    locked_until: Option<Instant>,
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

/// Accounts, sessions and throttling.
#[derive(Debug)]
pub struct Auth {
    admins: UserStore,
    auditors: UserStore,
    idle: Duration,
    sessions: Mutex<HashMap<String, Session>>,
    failures: Mutex<HashMap<String, Failures>>,
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
            idle,
            sessions: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
        })
    }

    fn locked(&self, keys: &[String]) -> Option<u64> {
        let now = Instant::now();
        let f = lock(&self.failures);
        keys.iter()
            .filter_map(|k| f.get(k)?.locked_until)
            .filter(|&t| t > now)
            .map(|t| (t - now).as_secs().max(1))
            .max()
    }

    fn failed(&self, keys: &[String]) {
        let now = Instant::now();
        let mut f = lock(&self.failures);
        for k in keys {
            let e = f.entry(k.clone()).or_insert(Failures {
                count: 0,
                first: now,
                locked_until: None,
            });
            if now - e.first > WINDOW {
                *e = Failures {
                    count: 0,
                    first: now,
                    locked_until: None,
                };
            }
            e.count += 1;
            let max = if k.starts_with("ip:") {
                MAX_FAILURES_ADDRESS
            } else {
                MAX_FAILURES
            };
            if e.count >= max {
                e.locked_until = Some(now + LOCKOUT);
            }
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
        let (user, role) = self.authenticate(user, password, ip)?;
        let session = Session {
            user,
            role,
            csrf: token()?,
            origin: format!("web {ip}"),
            last_seen: Instant::now(),
        };
        let id = token()?;
        let mut sessions = lock(&self.sessions);
        sessions.retain(|_, v| v.last_seen.elapsed() < self.idle);
        sessions.insert(id.clone(), session.clone());
        Ok((id, session))
    }

    /// Checks a user name and password under the throttle (blocks): the account's name and
    /// role. For sign-in, and for requests that carry HTTP Basic credentials (the metrics).
    pub fn authenticate(
        &self,
        user: &str,
        password: &str,
        ip: &str,
    ) -> Result<(String, Role), SignInError> {
        let name = Names::Logins
            .normalize(user)
            .unwrap_or_else(|_| user.to_string());
        let keys = [format!("user:{name}"), format!("ip:{ip}")];
        if let Some(secs) = self.locked(&keys) {
            return Err(SignInError::Locked(secs));
        }
        let role = if let Some(n) = self.admins.verify(&name, password)? {
            Some((n, Role::Admin))
        } else {
            self.auditors
                .verify(&name, password)?
                .map(|n| (n, Role::Auditor))
        };
        let Some((user, role)) = role else {
            self.failed(&keys);
            if let Some(secs) = self.locked(&keys) {
                return Err(SignInError::Locked(secs));
            }
            return Err(SignInError::Wrong);
        };
        lock(&self.failures).remove(&keys[0]);
        Ok((user, role))
    }

    /// The session of a cookie value, refreshed; `None` when unknown or idle too long.
    pub fn session(&self, id: &str) -> Option<Session> {
        let mut s = lock(&self.sessions);
        let found = s.get_mut(id)?;
        if found.last_seen.elapsed() >= self.idle {
            s.remove(id);
            return None;
        }
        found.last_seen = Instant::now();
        Some(found.clone())
    }

    pub fn sign_out(&self, id: &str) {
        lock(&self.sessions).remove(id);
    }

    /// Whether `password` is the signed-in user's (a confirmation); blocks.
    pub fn confirm(&self, s: &Session, password: &str, ip: &str) -> Result<bool, SignInError> {
        let keys = [format!("user:{}", s.user), format!("ip:{ip}")];
        if let Some(secs) = self.locked(&keys) {
            return Err(SignInError::Locked(secs));
        }
        let store = match s.role {
            Role::Admin => &self.admins,
            Role::Auditor => &self.auditors,
        };
        let ok = store.verify(&s.user, password)?.is_some();
        if !ok {
            self.failed(&keys);
        }
        Ok(ok)
    }

    /// Changes the signed-in user's password (the old one checked first); blocks.
    pub fn change_password(
        &self,
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
        match self.confirm(s, old, ip) {
            Ok(true) => {}
            Ok(false) => return Err("the current password is wrong".into()),
            Err(e) => return Err(e.to_string()),
        }
        let path = match s.role {
            Role::Admin => self.admins.path(),
            Role::Auditor => self.auditors.path(),
        };
        let mut all = users::read_as(path, Names::Logins).map_err(|e| e.to_string())?;
        all.insert(s.user.clone(), users::hash(new).map_err(|e| e.to_string())?);
        users::write_as(path, &all, Names::Logins).map_err(|e| e.to_string())
    }

    /// Adds (or resets) an account; blocks.
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
        Ok(name)
    }

    /// Whether any administrator exists.
    pub fn has_admin(&self) -> bool {
        users::read_as(self.admins.path(), Names::Logins).is_ok_and(|a| !a.is_empty())
    }
}
