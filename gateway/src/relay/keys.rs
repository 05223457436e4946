//! Who we can sign and decrypt as, and whom we can encrypt to.
//!
//! - [`Keys`]: the internal users' keys in the token, indexed by the addresses their
//!   certificates name. With the built-in CA, a sender without a certificate (or with an
//!   expired one) gets one on first use.
//! - [`CertStore`]: external correspondents' certificates, harvested from the signed mail
//!   they send or imported, in the [`Store`]; the best valid one is used to encrypt to them.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

use hsm::{ObjectType, Token};

use crate::admin;
use crate::ca::{CA_LABEL, Ca};
use crate::store::{Added, CertInfo, Kind, Store};

/// A key in the token with its certificate.
#[derive(Debug, Clone)]
pub struct KeyEntry {
    pub label: String,
    /// DER, end entity first.
    pub chain: Vec<Vec<u8>>,
    /// Validity of the end entity, seconds since the epoch.
    pub not_before: u64,
    pub not_after: u64,
}

/// Why a sender cannot sign.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertProblem {
    NotFound,
    Expired,
    /// The token could not be asked (temporary).
    Token(String),
}

/// The internal users' keys.
#[derive(Debug)]
pub struct Keys {
    token: Arc<dyn Token>,
    ca: Option<Ca>,
    issue_on_first_use: bool,
    index: RwLock<HashMap<String, KeyEntry>>,
    /// Serialises issuing, so two sessions do not make two keys for one sender.
    issuing: Mutex<()>,
}

impl Keys {
    /// Indexes the token's keys by their certificates' addresses.
    pub fn load(
        token: Arc<dyn Token>,
        ca: Option<Ca>,
        issue_on_first_use: bool,
    ) -> hsm::Result<Keys> {
        let keys = Keys {
            token,
            ca,
            issue_on_first_use,
            index: RwLock::new(HashMap::new()),
            issuing: Mutex::new(()),
        };
        keys.reload()?;
        Ok(keys)
    }

    /// Reads the token's keys again (after an import).
    pub fn reload(&self) -> hsm::Result<()> {
        let mut index = HashMap::new();
        for o in self.token.list()? {
            if o.class != ObjectType::Private || o.label == CA_LABEL {
                continue;
            }
            let chain = self.token.certificates(&o.label).unwrap_or_default();
            let Some(leaf) = chain.first() else { continue };
            let Some(info) = CertInfo::parse(leaf) else {
                continue;
            };
            let (not_before, not_after) = (info.not_before, info.not_after);
            for a in info.addresses {
                let e = KeyEntry {
                    label: o.label.clone(),
                    chain: chain.clone(),
                    not_before,
                    not_after,
                };
                // Of two keys for one address, the one valid longest signs.
                let keep = index
                    .get(&a)
                    .is_none_or(|old: &KeyEntry| old.not_after < not_after);
                if keep {
                    index.insert(a, e);
                }
            }
        }
        if let Ok(mut i) = self.index.write() {
            *i = index;
        }
        Ok(())
    }

    pub fn token(&self) -> &Arc<dyn Token> {
        &self.token
    }

    /// Every address we sign as, with its key, in address order.
    pub fn entries(&self) -> Vec<(String, KeyEntry)> {
        let mut all: Vec<(String, KeyEntry)> = self
            .index
            .read()
            .map(|i| i.iter().map(|(a, e)| (a.clone(), e.clone())).collect())
            .unwrap_or_default();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// The trust anchor of our own CA, if there is one.
    pub fn ca_cert(&self) -> Option<&[u8]> {
        self.ca.as_ref().map(|c| c.cert.as_slice())
    }

    /// The key a user's mail is decrypted with, if any (expired ones too: old mail).
    pub fn lookup(&self, address: &str) -> Option<KeyEntry> {
        let a = address.to_ascii_lowercase();
        self.index.read().ok()?.get(&a).cloned()
    }

    /// The key and certificate an internal sender signs with, valid `now`. With the
    /// built-in CA and issue-on-first-use, a missing or expired certificate is issued here
    /// (this blocks on the token: call it from a blocking thread).
    pub fn signer(&self, address: &str, now: u64) -> Result<KeyEntry, CertProblem> {
        let current = self.lookup(address);
        if let Some(e) = &current
            && e.not_before <= now
            && now < e.not_after
        {
            return Ok(e.clone());
        }
        let Some(ca) = self.ca.as_ref().filter(|_| self.issue_on_first_use) else {
            return Err(if current.is_some() {
                CertProblem::Expired
            } else {
                CertProblem::NotFound
            });
        };
        let _one = self
            .issuing
            .lock()
            .map_err(|_| CertProblem::Token("lock".into()))?;
        // Another session may have issued it meanwhile.
        if let Some(e) = self.lookup(address)
            && e.not_before <= now
            && now < e.not_after
        {
            return Ok(e);
        }
        let address = address.to_ascii_lowercase();
        let chain = ca
            .issue_smime(self.token.as_ref(), &address)
            .map_err(|e| CertProblem::Token(e.to_string()))?;
        let (not_before, not_after) =
            CertInfo::parse(&chain[0]).map_or((0, 0), |c| (c.not_before, c.not_after));
        let e = KeyEntry {
            label: address.clone(),
            chain,
            not_before,
            not_after,
        };
        if let Ok(mut i) = self.index.write() {
            i.insert(address, e.clone());
        }
        Ok(e)
    }
}

/// External correspondents' certificates, kept in the [`Store`]: harvested from the signed
/// mail they send, or imported by an administrator.
#[derive(Debug)]
pub struct CertStore {
    store: Arc<dyn Store>,
}

impl CertStore {
    /// Over `store`; certificates harvested into `legacy_dir` (`DATA/certs/ADDRESS.der`, before
    /// the store existed) are moved into it, the directory renamed `certs.imported`.
    pub fn open(store: Arc<dyn Store>, legacy_dir: &Path) -> std::io::Result<CertStore> {
        if legacy_dir.is_dir() {
            let mut moved = 0;
            for e in std::fs::read_dir(legacy_dir)?.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if let Some(addr) = name.strip_suffix(".der")
                    && let Ok(der) = std::fs::read(e.path())
                    && let Some(info) = CertInfo::parse(&der)
                {
                    let source = format!("harvested from signed mail from {addr}");
                    store
                        .add(Kind::External, &info, &source)
                        .map_err(std::io::Error::other)?;
                    moved += 1;
                }
            }
            std::fs::rename(legacy_dir, legacy_dir.with_extension("imported"))?;
            tracing::info!(moved, "harvested certificates moved into the store");
        }
        Ok(CertStore { store })
    }

    /// The certificate to encrypt to `address` at `now` (the best of those held).
    pub fn lookup(&self, address: &str, now: u64) -> Option<Vec<u8>> {
        let held = match self.store.for_address(address) {
            Ok(h) => h,
            Err(e) => {
                tracing::error!("certificate store: {e}");
                return None;
            }
        };
        let infos = held
            .iter()
            .filter(|s| s.kind == Kind::External)
            .map(|s| &s.info);
        admin::best_for_encryption(infos, address, now).map(|c| c.der.clone())
    }

    /// Keeps `cert` when it names `sender` (a certificate is harvested only for the address
    /// that sent it). Returns whether it was new.
    pub fn harvest(&self, sender: &str, cert: &[u8]) -> bool {
        let sender = sender.to_ascii_lowercase();
        let Some(info) = CertInfo::parse(cert) else {
            return false;
        };
        if !info.addresses.contains(&sender) || info.is_ca {
            return false;
        }
        let source = format!("harvested from signed mail from {sender}");
        match self.store.add(Kind::External, &info, &source) {
            Ok(Added::New) => true,
            Ok(Added::Known) => false,
            Err(e) => {
                tracing::error!("certificate store: {e}");
                false
            }
        }
    }
}
