//! The certificate store and the audit log: what the administrators manage and the relay
//! reads. [`Store`] is the interface (so a PostgreSQL backend can later serve a cluster of
//! appliances); [`SqliteStore`] is the one appliance's embedded database,
//! `DATA/store.sqlite` (WAL, so the console and the web console write while the relay reads).
//!
//! Held today: trust anchors and intermediate CA certificates, correspondents' certificates
//! (imported, later harvested and looked up), and the audit log of administrators' actions.
//! Private keys never come here: they stay in the token.

use std::path::Path;
use std::sync::Mutex;

use der::Decode;
use rusqlite::{Connection, OptionalExtension, params};
use x509_cert::ext::pkix::{BasicConstraints, KeyUsage, KeyUsages};

use crate::smime::trust;

/// What a certificate is to the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A root CA trusted for inbound signatures.
    Anchor,
    /// A CA certificate between a root and the signers (offered for path building only).
    Intermediate,
    /// A correspondent's certificate, to encrypt to them.
    External,
    /// An internal user's certificate; its private key is in the token (`Stored::key`).
    Internal,
    /// A correspondent's certificate from signed mail whose path did not validate: shown to
    /// administrators, who may approve it (it becomes `External`); never encrypted to.
    Candidate,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Anchor => "anchor",
            Kind::Intermediate => "intermediate",
            Kind::External => "external",
            Kind::Internal => "internal",
            Kind::Candidate => "candidate",
        }
    }

    fn parse(s: &str) -> Option<Kind> {
        Some(match s {
            "anchor" => Kind::Anchor,
            "intermediate" => Kind::Intermediate,
            "external" => Kind::External,
            "internal" => Kind::Internal,
            "candidate" => Kind::Candidate,
            _ => return None,
        })
    }
}

/// What a certificate says, read once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// SHA-256 of the DER, lower-case hex.
    pub fingerprint: String,
    pub subject: String,
    pub issuer: String,
    pub serial: String,
    /// Seconds since the epoch.
    pub not_before: u64,
    pub not_after: u64,
    /// basicConstraints cA.
    pub is_ca: bool,
    pub self_issued: bool,
    /// Email addresses it names (SAN rfc822Name, subject emailAddress), lower case.
    pub addresses: Vec<String>,
    /// The key usage, if present, allows key encipherment or key agreement (encrypting to it).
    pub can_encrypt: bool,
    pub der: Vec<u8>,
}

impl CertInfo {
    /// The subject's common name, else the whole subject: what lists show.
    pub fn short_name(&self) -> String {
        self.subject
            .split(',')
            .find_map(|p| p.trim().strip_prefix("CN="))
            .unwrap_or(&self.subject)
            .to_string()
    }

    /// Reads a DER certificate; `None` when it does not parse.
    pub fn parse(der: &[u8]) -> Option<CertInfo> {
        // Strict DER, nothing after it.
        let c = x509_cert::Certificate::from_der(der).ok()?;
        let tbs = c.tbs_certificate();
        let v = tbs.validity();
        let is_ca = matches!(
            tbs.get_extension::<BasicConstraints>(),
            Ok(Some((_, bc))) if bc.ca
        );
        let can_encrypt = match tbs.get_extension::<KeyUsage>() {
            Ok(Some((_, ku))) => {
                ku.0.contains(KeyUsages::KeyEncipherment) || ku.0.contains(KeyUsages::KeyAgreement)
            }
            Ok(None) => true,
            Err(_) => false,
        };
        let mut addresses: Vec<String> = trust::addresses(&c)
            .into_iter()
            .map(|a| a.to_ascii_lowercase())
            .collect();
        addresses.sort();
        addresses.dedup();
        Some(CertInfo {
            fingerprint: hsm::hex(
                aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der).as_ref(),
            ),
            subject: tbs.subject().to_string(),
            issuer: tbs.issuer().to_string(),
            serial: hsm::hex(tbs.serial_number().as_bytes()),
            not_before: v.not_before.to_unix_duration().as_secs(),
            not_after: v.not_after.to_unix_duration().as_secs(),
            is_ca,
            self_issued: tbs.subject() == tbs.issuer(),
            addresses,
            can_encrypt,
            der: der.to_vec(),
        })
    }
}

/// A certificate in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub kind: Kind,
    pub info: CertInfo,
    /// Where it came from ("console import of FILE", "FirstClass folder", ...).
    pub source: String,
    /// When it was added, seconds since the epoch.
    pub added: u64,
    /// For an internal user's certificate: the PKCS#11 URI of its private key in the token.
    pub key: Option<String>,
}

/// Whether a certificate was new.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Added {
    New,
    /// The same certificate (same fingerprint) was there already.
    Known,
}

/// One administrator's action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// Seconds since the epoch.
    pub at: u64,
    /// The administrator (or "system").
    pub who: String,
    /// Where from: "serial console", "web 192.0.2.1", ...
    pub origin: String,
    pub action: String,
    pub detail: String,
}

/// A CRL in the store (one per issuer: the newest held).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCrl {
    /// The issuer's name, as [`CertInfo::issuer`] prints it.
    pub issuer: String,
    /// Seconds since the epoch.
    pub this_update: u64,
    pub next_update: Option<u64>,
    /// cRLNumber, hex.
    pub number: Option<String>,
    /// How many certificates it lists.
    pub revoked: u64,
    /// SHA-256 of the DER, hex.
    pub fingerprint: String,
    /// "uploaded by NAME from ORIGIN", or the URL.
    pub source: String,
    /// The distribution point it was fetched from.
    pub url: Option<String>,
    pub added: u64,
    pub der: Vec<u8>,
}

/// The last attempt to fetch a CRL from a distribution point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrlFetch {
    pub url: String,
    pub at: u64,
    /// Why it failed, if it did.
    pub error: Option<String>,
}

/// The store could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("certificate store {path}: {reason}")]
    Open { path: String, reason: String },
    #[error("certificate store: {0}")]
    Db(String),
    #[error("no certificate's fingerprint starts with {0:?}")]
    NoMatch(String),
    #[error("{prefix:?} matches {count} certificates; give more of the fingerprint")]
    Ambiguous { prefix: String, count: usize },
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Db(e.to_string())
    }
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// The store's interface: the relay, the consoles and the REST API all go through it.
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Adds a certificate as `kind` (a certificate already held keeps its first kind and
    /// source).
    fn add(&self, kind: Kind, cert: &CertInfo, source: &str) -> Result<Added> {
        self.add_with_key(kind, cert, source, None)
    }
    /// Adds a certificate with the PKCS#11 URI of its private key (an internal user's).
    fn add_with_key(
        &self,
        kind: Kind,
        cert: &CertInfo,
        source: &str,
        key: Option<&str>,
    ) -> Result<Added>;
    /// The certificates of these kinds (all when empty), oldest first.
    fn list(&self, kinds: &[Kind]) -> Result<Vec<Stored>>;
    /// The certificates naming `address` (any kind), oldest first.
    fn for_address(&self, address: &str) -> Result<Vec<Stored>>;
    /// Removes the one certificate of these kinds whose fingerprint starts with `prefix` (at
    /// least 8 hex digits); what was removed.
    fn remove(&self, prefix: &str, kinds: &[Kind]) -> Result<Stored>;
    /// Changes the kind of the one certificate whose fingerprint starts with `prefix` and
    /// whose kind is `from` (a candidate approved, or found trusted), with `source` saying
    /// why: the certificate as it is now.
    fn set_kind(&self, prefix: &str, from: Kind, to: Kind, source: &str) -> Result<Stored>;
    /// Appends to the audit log.
    fn record(&self, entry: &AuditEntry) -> Result<()>;
    /// The newest `limit` audit entries, newest first.
    fn audit_log(&self, limit: usize) -> Result<Vec<AuditEntry>>;
    /// A setting (the staged and the applied policy, ...), if set.
    fn setting(&self, name: &str) -> Result<Option<String>>;
    /// Sets (or with `None` removes) a setting.
    fn set_setting(&self, name: &str, value: Option<&str>) -> Result<()>;
    /// The CRLs held, by issuer.
    fn crls(&self) -> Result<Vec<StoredCrl>>;
    /// Keeps `crl` as its issuer's (replacing the one held; the caller checked it is newer).
    fn put_crl(&self, crl: &StoredCrl) -> Result<()>;
    /// Removes the CRL whose fingerprint starts with `prefix` (at least 8 hex digits).
    fn remove_crl(&self, prefix: &str) -> Result<StoredCrl>;
    /// Notes an attempt to fetch from `url` (and why it failed).
    fn note_crl_fetch(&self, url: &str, at: u64, error: Option<&str>) -> Result<()>;
    /// The last attempt per distribution point.
    fn crl_fetches(&self) -> Result<Vec<CrlFetch>>;
}

/// The embedded store: one SQLite file.
#[derive(Debug)]
pub struct SqliteStore {
    conn: Mutex<Connection>,
}

const SCHEMA: &str = "
PRAGMA journal_mode = WAL;
PRAGMA synchronous = FULL;
CREATE TABLE IF NOT EXISTS certificates (
    fingerprint TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    subject TEXT NOT NULL,
    issuer TEXT NOT NULL,
    serial TEXT NOT NULL,
    not_before INTEGER NOT NULL,
    not_after INTEGER NOT NULL,
    source TEXT NOT NULL,
    added INTEGER NOT NULL,
    der BLOB NOT NULL,
    key_uri TEXT
);
CREATE TABLE IF NOT EXISTS cert_addresses (
    fingerprint TEXT NOT NULL REFERENCES certificates(fingerprint) ON DELETE CASCADE,
    address TEXT NOT NULL,
    PRIMARY KEY (fingerprint, address)
);
CREATE INDEX IF NOT EXISTS cert_addresses_by_address ON cert_addresses(address);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at INTEGER NOT NULL,
    who TEXT NOT NULL,
    origin TEXT NOT NULL,
    action TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS settings (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS crls (
    issuer TEXT PRIMARY KEY,
    this_update INTEGER NOT NULL,
    next_update INTEGER,
    number TEXT,
    revoked INTEGER NOT NULL,
    fingerprint TEXT NOT NULL,
    source TEXT NOT NULL,
    url TEXT,
    added INTEGER NOT NULL,
    der BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS crl_fetches (
    url TEXT PRIMARY KEY,
    at INTEGER NOT NULL,
    error TEXT
);
PRAGMA user_version = 3;
";

/// The schema this version writes.
const SCHEMA_VERSION: i64 = 3;

/// Schema 1 to 2: the key URI of internal users' certificates, and settings. (2 to 3 only
/// adds tables, which `SCHEMA` creates.)
const MIGRATE_1: &str = "ALTER TABLE certificates ADD COLUMN key_uri TEXT;";

impl SqliteStore {
    /// Opens (creating) `DATA/store.sqlite`.
    pub fn open(path: &Path) -> Result<SqliteStore> {
        let err = |e: &dyn std::fmt::Display| StoreError::Open {
            path: path.display().to_string(),
            reason: e.to_string(),
        };
        let conn = Connection::open(path).map_err(|e| err(&e))?;
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
        }
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(|e| err(&e))?;
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| err(&e))?;
        if version > SCHEMA_VERSION {
            return Err(err(&format!(
                "made by a newer smimegw (schema {version}); this one reads schema \
                 {SCHEMA_VERSION}"
            )));
        }
        if version == 1 {
            conn.execute_batch(MIGRATE_1).map_err(|e| err(&e))?;
        }
        conn.execute_batch(SCHEMA).map_err(|e| err(&e))?;
        conn.execute_batch("PRAGMA foreign_keys = ON;")
            .map_err(|e| err(&e))?;
        Ok(SqliteStore {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        match self.conn.lock() {
            Ok(c) => c,
            Err(p) => p.into_inner(),
        }
    }

    fn rows(conn: &Connection, sql: &str, args: &[&dyn rusqlite::ToSql]) -> Result<Vec<Stored>> {
        let mut st = conn.prepare(sql)?;
        let rows = st.query_map(args, |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, Vec<u8>>(3)?,
                r.get::<_, Option<String>>(4)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (kind, source, added, der, key) = row?;
            // A row whose certificate no longer parses is skipped, not fatal.
            let (Some(kind), Some(info)) = (Kind::parse(&kind), CertInfo::parse(&der)) else {
                continue;
            };
            out.push(Stored {
                kind,
                info,
                source,
                added: added.max(0) as u64,
                key,
            });
        }
        Ok(out)
    }
}

/// A WHERE condition for these kinds (every kind when empty). Built from the fixed names,
/// never from input.
impl SqliteStore {
    /// The one certificate of `kinds` whose fingerprint starts with `prefix` (at least 8
    /// hex digits, colons allowed), inside a transaction.
    fn one_by_prefix(conn: &Connection, prefix: &str, kinds: &[Kind]) -> Result<Stored> {
        let prefix = prefix.trim().to_ascii_lowercase().replace(':', "");
        if prefix.len() < 8 || !prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(StoreError::NoMatch(prefix));
        }
        let mut found = Self::rows(
            conn,
            &format!(
                "SELECT kind, source, added, der, key_uri FROM certificates \
                 WHERE fingerprint LIKE ?1 || '%' AND {}",
                kind_filter(kinds)
            ),
            &[&prefix],
        )?;
        match found.len() {
            0 => Err(StoreError::NoMatch(prefix)),
            1 => found.pop().ok_or(StoreError::NoMatch(prefix)),
            count => Err(StoreError::Ambiguous { prefix, count }),
        }
    }
}

fn kind_filter(kinds: &[Kind]) -> String {
    if kinds.is_empty() {
        return "1".into();
    }
    let names: Vec<String> = kinds.iter().map(|k| format!("'{}'", k.as_str())).collect();
    format!("kind IN ({})", names.join(", "))
}

impl Store for SqliteStore {
    fn add_with_key(
        &self,
        kind: Kind,
        cert: &CertInfo,
        source: &str,
        key: Option<&str>,
    ) -> Result<Added> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let known: Option<String> = tx
            .query_row(
                "SELECT kind FROM certificates WHERE fingerprint = ?1",
                [&cert.fingerprint],
                |r| r.get(0),
            )
            .optional()?;
        if known.is_some() {
            return Ok(Added::Known);
        }
        tx.execute(
            "INSERT INTO certificates (fingerprint, kind, subject, issuer, serial, not_before, \
             not_after, source, added, der, key_uri) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            params![
                cert.fingerprint,
                kind.as_str(),
                cert.subject,
                cert.issuer,
                cert.serial,
                cert.not_before as i64,
                cert.not_after as i64,
                source,
                crate::spool::now() as i64,
                cert.der,
                key,
            ],
        )?;
        for a in &cert.addresses {
            tx.execute(
                "INSERT OR IGNORE INTO cert_addresses (fingerprint, address) VALUES (?1, ?2)",
                params![cert.fingerprint, a],
            )?;
        }
        tx.commit()?;
        Ok(Added::New)
    }

    fn list(&self, kinds: &[Kind]) -> Result<Vec<Stored>> {
        let conn = self.conn();
        Self::rows(
            &conn,
            &format!(
                "SELECT kind, source, added, der, key_uri FROM certificates WHERE {} \
                 ORDER BY added, fingerprint",
                kind_filter(kinds)
            ),
            &[],
        )
    }

    fn for_address(&self, address: &str) -> Result<Vec<Stored>> {
        let conn = self.conn();
        Self::rows(
            &conn,
            "SELECT c.kind, c.source, c.added, c.der, c.key_uri FROM certificates c \
             JOIN cert_addresses a ON a.fingerprint = c.fingerprint \
             WHERE a.address = ?1 ORDER BY c.added, c.fingerprint",
            &[&address.to_ascii_lowercase()],
        )
    }

    fn remove(&self, prefix: &str, kinds: &[Kind]) -> Result<Stored> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let found = Self::one_by_prefix(&tx, prefix, kinds)?;
        tx.execute(
            "DELETE FROM certificates WHERE fingerprint = ?1",
            [&found.info.fingerprint],
        )?;
        tx.commit()?;
        Ok(found)
    }

    fn set_kind(&self, prefix: &str, from: Kind, to: Kind, source: &str) -> Result<Stored> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let mut found = Self::one_by_prefix(&tx, prefix, &[from])?;
        tx.execute(
            "UPDATE certificates SET kind = ?1, source = ?2 WHERE fingerprint = ?3",
            params![to.as_str(), source, found.info.fingerprint],
        )?;
        tx.commit()?;
        found.kind = to;
        found.source = source.to_string();
        Ok(found)
    }

    fn record(&self, e: &AuditEntry) -> Result<()> {
        self.conn().execute(
            "INSERT INTO audit (at, who, origin, action, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![e.at as i64, e.who, e.origin, e.action, e.detail],
        )?;
        Ok(())
    }

    fn audit_log(&self, limit: usize) -> Result<Vec<AuditEntry>> {
        let conn = self.conn();
        let mut st = conn.prepare(
            "SELECT at, who, origin, action, detail FROM audit ORDER BY id DESC LIMIT ?1",
        )?;
        let rows = st.query_map([limit as i64], |r| {
            Ok(AuditEntry {
                at: r.get::<_, i64>(0)?.max(0) as u64,
                who: r.get(1)?,
                origin: r.get(2)?,
                action: r.get(3)?,
                detail: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    fn setting(&self, name: &str) -> Result<Option<String>> {
        Ok(self
            .conn()
            .query_row("SELECT value FROM settings WHERE name = ?1", [name], |r| {
                r.get(0)
            })
            .optional()?)
    }

    fn set_setting(&self, name: &str, value: Option<&str>) -> Result<()> {
        let conn = self.conn();
        match value {
            Some(v) => conn.execute(
                "INSERT INTO settings (name, value) VALUES (?1, ?2) \
                 ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                params![name, v],
            )?,
            None => conn.execute("DELETE FROM settings WHERE name = ?1", [name])?,
        };
        Ok(())
    }

    fn crls(&self) -> Result<Vec<StoredCrl>> {
        let conn = self.conn();
        let mut st = conn.prepare(&format!("{CRL_COLUMNS} ORDER BY issuer"))?;
        let rows = st.query_map([], crl_row)?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    fn put_crl(&self, c: &StoredCrl) -> Result<()> {
        self.conn().execute(
            "INSERT OR REPLACE INTO crls (issuer, this_update, next_update, number, revoked, \
             fingerprint, source, url, added, der) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            params![
                c.issuer,
                c.this_update as i64,
                c.next_update.map(|n| n as i64),
                c.number,
                c.revoked as i64,
                c.fingerprint,
                c.source,
                c.url,
                c.added as i64,
                c.der,
            ],
        )?;
        Ok(())
    }

    fn remove_crl(&self, prefix: &str) -> Result<StoredCrl> {
        let prefix = prefix.trim().to_ascii_lowercase().replace(':', "");
        if prefix.len() < 8 || !prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(StoreError::NoMatch(prefix));
        }
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let found: Vec<StoredCrl> = {
            let mut st = tx.prepare(&format!("{CRL_COLUMNS} WHERE fingerprint LIKE ?1 || '%'"))?;
            let rows = st.query_map([&prefix], crl_row)?;
            rows.collect::<std::result::Result<_, _>>()?
        };
        match found.len() {
            0 => Err(StoreError::NoMatch(prefix)),
            1 => {
                tx.execute("DELETE FROM crls WHERE issuer = ?1", [&found[0].issuer])?;
                tx.commit()?;
                Ok(found
                    .into_iter()
                    .next()
                    .ok_or(StoreError::NoMatch(prefix))?)
            }
            count => Err(StoreError::Ambiguous { prefix, count }),
        }
    }

    fn note_crl_fetch(&self, url: &str, at: u64, error: Option<&str>) -> Result<()> {
        self.conn().execute(
            "INSERT OR REPLACE INTO crl_fetches (url, at, error) VALUES (?1, ?2, ?3)",
            params![url, at as i64, error],
        )?;
        Ok(())
    }

    fn crl_fetches(&self) -> Result<Vec<CrlFetch>> {
        let conn = self.conn();
        let mut st = conn.prepare("SELECT url, at, error FROM crl_fetches ORDER BY url")?;
        let rows = st.query_map([], |r| {
            Ok(CrlFetch {
                url: r.get(0)?,
                at: r.get::<_, i64>(1)?.max(0) as u64,
                error: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }
}

const CRL_COLUMNS: &str = "SELECT issuer, this_update, next_update, number, revoked, \
     fingerprint, source, url, added, der FROM crls";

fn crl_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredCrl> {
    Ok(StoredCrl {
        issuer: r.get(0)?,
        this_update: r.get::<_, i64>(1)?.max(0) as u64,
        next_update: r.get::<_, Option<i64>>(2)?.map(|n| n.max(0) as u64),
        number: r.get(3)?,
        revoked: r.get::<_, i64>(4)?.max(0) as u64,
        fingerprint: r.get(5)?,
        source: r.get(6)?,
        url: r.get(7)?,
        added: r.get::<_, i64>(8)?.max(0) as u64,
        der: r.get(9)?,
    })
}
