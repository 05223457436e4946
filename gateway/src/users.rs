//! SMTP AUTH accounts for clients outside `internal_networks` (laptops, phones): one file,
//! `address:$argon2id$...` per line, mode 0600, never a password in clear. The address is
//! the user name, and the only sender an authenticated session may use.
//!
//! The relay reads the file again when it changes, so `smimegw users add` takes effect
//! without a restart.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};

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
}

struct Loaded {
    stamp: Option<(SystemTime, u64)>,
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

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
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
pub fn hash(password: &str) -> Result<String, UsersError> {
    if password.is_empty() {
        return Err(UsersError::EmptyPassword);
    }
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| UsersError::Hash(e.to_string()))
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
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether `password` is `user`'s; the user's stored name when it is. Slow on purpose
    /// (Argon2id): call it from a blocking thread.
    pub fn verify(&self, user: &str, password: &str) -> Result<Option<String>, UsersError> {
        let (name, stored) = {
            let mut l = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
            let now = stamp(&self.path);
            if now != l.stamp {
                match read_as(&self.path, self.names) {
                    Ok(users) => {
                        tracing::info!(file = %self.path.display(), users = users.len(), "accounts reloaded");
                        l.users = users;
                        l.stamp = now;
                    }
                    // Keep the accounts we have; say why the new file is refused.
                    Err(e) => return Err(e),
                }
            }
            let name = self.names.normalize(user).ok();
            let stored = name.as_ref().and_then(|n| l.users.get(n).cloned());
            (name, stored)
        };
        let hash_text = stored.as_deref().unwrap_or(&self.decoy);
        let ok = PasswordHash::new(hash_text).is_ok_and(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        });
        Ok(match (ok, stored, name) {
            (true, Some(_), Some(n)) => Some(n),
            _ => None,
        })
    }
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
}
