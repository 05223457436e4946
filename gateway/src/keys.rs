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

use crate::ca::{CA_LABEL, Ca};
use crate::mailbox::Address;
use crate::revocation::Revocation;
use crate::smime::trust;
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

impl KeyEntry {
    fn valid_at(&self, now: u64) -> bool {
        self.not_before <= now && now < self.not_after
    }
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
    /// Where internal users' certificates are listed with their key's URI.
    store: Option<Arc<dyn Store>>,
    /// Every key of an address, the signing one first (see [`Keys::reload`]).
    index: RwLock<HashMap<String, Vec<KeyEntry>>>,
    /// Serialises issuing, so two sessions do not make two keys for one sender.
    issuing: Mutex<()>,
}

/// The PKCS#11 URI of a private key: the token's label and the key's.
pub fn key_uri(token_label: &str, key_label: &str) -> String {
    hsm::Pkcs11Uri {
        token: Some(token_label.to_string()),
        object: Some(key_label.to_string()),
        object_type: Some(ObjectType::Private),
        ..Default::default()
    }
    .to_string()
}

impl Keys {
    /// Indexes the token's keys by their certificates' addresses, and lists them in `store`.
    pub fn load(
        token: Arc<dyn Token>,
        ca: Option<Ca>,
        issue_on_first_use: bool,
        store: Option<Arc<dyn Store>>,
    ) -> hsm::Result<Keys> {
        let keys = Keys {
            token,
            ca,
            issue_on_first_use,
            store,
            index: RwLock::new(HashMap::new()),
            issuing: Mutex::new(()),
        };
        keys.reload()?;
        Ok(keys)
    }

    /// Reads the token's keys again (after an import or a deletion). An address may have
    /// several keys (a renewal keeps the old one, so old mail still decrypts): the newest
    /// certificate (latest start of validity) comes first and signs while valid.
    pub fn reload(&self) -> hsm::Result<()> {
        let token_label = self.token.info().map(|i| i.label).unwrap_or_default();
        let mut index: HashMap<String, Vec<KeyEntry>> = HashMap::new();
        for o in self.token.list()? {
            if o.class != ObjectType::Private || o.label == CA_LABEL {
                continue;
            }
            let chain = self.token.certificates(&o.label).unwrap_or_default();
            let Some(leaf) = chain.first() else { continue };
            let Some(info) = CertInfo::parse(leaf) else {
                continue;
            };
            self.list_in_store(&token_label, &o.label, &info);
            let (not_before, not_after) = (info.not_before, info.not_after);
            for a in info.addresses {
                index.entry(a).or_default().push(KeyEntry {
                    label: o.label.clone(),
                    chain: chain.clone(),
                    not_before,
                    not_after,
                });
            }
        }
        for v in index.values_mut() {
            v.sort_by(|a, b| {
                (b.not_before, b.not_after, &b.label).cmp(&(a.not_before, a.not_after, &a.label))
            });
        }
        if let Ok(mut i) = self.index.write() {
            *i = index;
        }
        Ok(())
    }

    fn list_in_store(&self, token_label: &str, key_label: &str, info: &CertInfo) {
        if let Some(store) = &self.store {
            let uri = key_uri(token_label, key_label);
            if let Err(e) = store.add_with_key(Kind::Internal, info, "token", Some(&uri)) {
                tracing::error!("certificate store: {e}");
            }
        }
    }

    pub fn token(&self) -> &Arc<dyn Token> {
        &self.token
    }

    /// Every (address, key) we hold, in address order, each address's signing key first.
    pub fn entries(&self) -> Vec<(String, KeyEntry)> {
        let mut all: Vec<(String, KeyEntry)> = self
            .index
            .read()
            .map(|i| {
                i.iter()
                    .flat_map(|(a, v)| v.iter().map(|e| (a.clone(), e.clone())))
                    .collect()
            })
            .unwrap_or_default();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// How many addresses have a key.
    pub fn addresses(&self) -> usize {
        self.index.read().map(|i| i.len()).unwrap_or(0)
    }

    /// The trust anchor of our own CA, if there is one.
    pub fn ca_cert(&self) -> Option<&[u8]> {
        self.ca.as_ref().map(|c| c.cert.as_slice())
    }

    /// Every key a user's mail may be encrypted to (expired and replaced ones too: old mail);
    /// the message's RecipientIdentifier picks the one.
    pub fn all(&self, address: &str) -> Vec<KeyEntry> {
        let a = address.to_ascii_lowercase();
        self.index
            .read()
            .ok()
            .and_then(|i| i.get(&a).cloned())
            .unwrap_or_default()
    }

    /// The key that signs for `address` at `now`: the newest certificate valid now.
    fn current(&self, address: &str, now: u64) -> (Option<KeyEntry>, bool) {
        let all = self.all(address);
        let held = !all.is_empty();
        (all.into_iter().find(|e| e.valid_at(now)), held)
    }

    /// Whether `address` can sign at `now`, from what is held, without asking the token:
    /// a certificate valid now, or the built-in CA that issues on first use (the queue then
    /// issues it, see [`Keys::signer`]).
    pub fn can_sign(&self, address: &str, now: u64) -> Result<(), CertProblem> {
        match self.current(address, now) {
            (Some(_), _) => Ok(()),
            _ if self.ca.is_some() && self.issue_on_first_use => Ok(()),
            (None, true) => Err(CertProblem::Expired),
            (None, false) => Err(CertProblem::NotFound),
        }
    }

    /// The key and certificate an internal sender signs with, valid `now`. With the
    /// built-in CA and issue-on-first-use, a missing or expired certificate is issued here
    /// (this blocks on the token: call it from a blocking thread).
    pub fn signer(&self, address: &str, now: u64) -> Result<KeyEntry, CertProblem> {
        let (current, held) = self.current(address, now);
        if let Some(e) = current {
            return Ok(e);
        }
        let Some(ca) = self.ca.as_ref().filter(|_| self.issue_on_first_use) else {
            return Err(if held {
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
        if let (Some(e), _) = self.current(address, now) {
            return Ok(e);
        }
        let address = address.to_ascii_lowercase();
        ca.issue_smime(self.token.as_ref(), &address)
            .map_err(|e| CertProblem::Token(e.to_string()))?;
        self.reload()
            .map_err(|e| CertProblem::Token(e.to_string()))?;
        match self.current(&address, now) {
            (Some(e), _) => Ok(e),
            _ => Err(CertProblem::NotFound),
        }
    }
}

impl Keys {
    /// Whether there is a built-in CA to issue from.
    pub fn can_issue(&self) -> bool {
        self.ca.is_some()
    }

    /// Issues `address` a certificate from the built-in CA now (an administrator asked): a
    /// new key in the token on first issue, the same key on renewal (so mail encrypted to
    /// the old certificate still decrypts). Unless `renew`, refused while a certificate valid
    /// `now` is held. Blocks on the token.
    pub fn issue(&self, address: &str, renew: bool, now: u64) -> Result<KeyEntry, String> {
        let ca = self
            .ca
            .as_ref()
            .ok_or("the built-in CA is off ([ca] enabled = false)")?;
        let _one = self.issuing.lock().map_err(|_| "lock".to_string())?;
        let address = address.to_ascii_lowercase();
        if !renew && let (Some(e), _) = self.current(&address, now) {
            return Err(format!(
                "{address} has a certificate valid until {}; renew it instead",
                crate::smime::asn1::day(e.not_after)
            ));
        }
        ca.issue_smime(self.token.as_ref(), &address)
            .map_err(|e| e.to_string())?;
        self.reload().map_err(|e| e.to_string())?;
        match self.current(&address, now) {
            (Some(e), _) => Ok(e),
            _ => Err("the new certificate is not in the token".into()),
        }
    }
}

/// External correspondents' certificates, kept in the [`Store`]: harvested from the signed
/// mail they send, or imported by an administrator.
#[derive(Debug)]
pub struct CertStore {
    store: Arc<dyn Store>,
    /// Asked when the store holds no usable certificate (`[ldap]`).
    directory: Option<crate::ldap::Directory>,
    /// Revoked certificates are not encrypted to.
    revocation: Arc<Revocation>,
}

impl CertStore {
    /// Over `store`; certificates harvested into `legacy_dir` (`DATA/certs/ADDRESS.der`, before
    /// the store existed) are moved into it, the directory renamed `certs.imported`.
    pub fn open(
        store: Arc<dyn Store>,
        legacy_dir: &Path,
        directory: Option<crate::ldap::Directory>,
        revocation: Arc<Revocation>,
    ) -> std::io::Result<CertStore> {
        if legacy_dir.is_dir() {
            let mut moved = 0;
            for e in std::fs::read_dir(legacy_dir)?.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if let Some(addr) = name.strip_suffix(".der")
                    && let Ok(der) = std::fs::read(e.path())
                    && let Some(info) = CertInfo::parse(&der)
                {
                    let source = format!("{HARVESTED} {addr}");
                    store
                        .add(Kind::External, &info, &source)
                        .map_err(std::io::Error::other)?;
                    moved += 1;
                }
            }
            std::fs::rename(legacy_dir, legacy_dir.with_extension("imported"))?;
            tracing::info!(moved, "harvested certificates moved into the store");
        }
        Ok(CertStore {
            store,
            directory,
            revocation,
        })
    }

    /// The CRLs, for checking signers too.
    pub fn revocation(&self) -> &Revocation {
        &self.revocation
    }

    /// Those of `candidates` not revoked (nor of unknown status, when that is refused).
    fn usable<'a>(
        &self,
        candidates: impl IntoIterator<Item = &'a CertInfo>,
        now: u64,
    ) -> Vec<&'a CertInfo> {
        candidates
            .into_iter()
            .filter(|c| match self.revocation.check(c, now) {
                Ok(()) => true,
                Err(why) => {
                    tracing::warn!(fingerprint = %&c.fingerprint[..16], "not encrypting to it: {why}");
                    false
                }
            })
            .collect()
    }

    /// The certificate to encrypt to `address` at `now`: the best of those held, else the
    /// best the directory has (looked up and cached there). `Err` when the directory could
    /// not be asked (temporary: the message waits).
    ///
    /// Only certificates an administrator put there (imported, uploaded) or whose path to
    /// one of `trust`'s anchors validates now are used: a certificate harvested from mail
    /// proves nothing by having come in a signed message.
    pub fn lookup(
        &self,
        address: &str,
        now: u64,
        trust: &Trust<'_>,
    ) -> Result<Option<Vec<u8>>, String> {
        let held = match self.store.for_address(address) {
            Ok(h) => h,
            Err(e) => return Err(format!("certificate store: {e}")),
        };
        let infos = self.usable(
            held.iter()
                .filter(|s| s.kind == Kind::External)
                .filter(|s| {
                    !s.source.starts_with(HARVESTED)
                        || trust::check_path(&s.info.der, trust.intermediates, trust.anchors, now)
                            .is_ok()
                })
                .map(|s| &s.info),
            now,
        );
        if let Some(c) = best_for_encryption(infos, address, now) {
            return Ok(Some(c.der.clone()));
        }
        let Some(dir) = &self.directory else {
            return Ok(None);
        };
        // Called from the queue's blocking threads, inside the runtime.
        let found = match tokio::runtime::Handle::try_current() {
            Ok(h) => h.block_on(dir.lookup(address)),
            Err(_) => return Ok(None),
        };
        match found {
            Ok(ders) => {
                let infos: Vec<CertInfo> = ders.iter().filter_map(|d| CertInfo::parse(d)).collect();
                let best = best_for_encryption(self.usable(&infos, now), address, now);
                if let Some(b) = best {
                    tracing::info!(address, fingerprint = %&b.fingerprint[..16], "certificate found in the directory");
                }
                Ok(best.map(|c| c.der.clone()))
            }
            Err(e) if e.is_temporary() => Err(format!("certificate directory: {e}")),
            Err(e) => {
                tracing::error!("certificate directory: {e}");
                Ok(None)
            }
        }
    }

    /// Keeps `cert`, the certificate of a valid signature on mail from `sender`, when it
    /// names `sender` (a certificate is harvested only for the address that sent it): as a
    /// correspondent's certificate when `trusted` (its path validated and it is not revoked),
    /// else as a candidate an administrator may approve. A candidate found trusted later is
    /// promoted. Returns whether it was new.
    pub fn harvest(&self, sender: &Address, cert: &[u8], trusted: bool) -> bool {
        let Some(info) = CertInfo::parse(cert) else {
            return false;
        };
        if !info.addresses.iter().any(|a| a == sender.as_str()) || info.is_ca {
            return false;
        }
        let (kind, source) = if trusted {
            (Kind::External, format!("{HARVESTED} {sender}"))
        } else {
            (
                Kind::Candidate,
                format!("{HARVESTED} {sender} (not trusted: awaits approval)"),
            )
        };
        match self.store.add(kind, &info, &source) {
            Ok(Added::New) => {
                if !trusted {
                    tracing::info!(sender = %sender, fingerprint = %&info.fingerprint[..16], "untrusted certificate kept as a candidate; not used to encrypt until approved");
                }
                true
            }
            Ok(Added::Known) => {
                if trusted {
                    let _ = self.store.set_kind(
                        &info.fingerprint,
                        Kind::Candidate,
                        Kind::External,
                        &source,
                    );
                }
                false
            }
            Err(e) => {
                tracing::error!("certificate store: {e}");
                false
            }
        }
    }
}

impl CertStore {
    /// Notes what `address` announced in a trusted signature: whether it reads
    /// AuthEnvelopedData with AES-GCM (its SMIMECapabilities). Kept in the store's settings.
    pub fn note_capabilities(&self, address: &Address, gcm: bool) {
        let name = format!("{CAPABILITIES}{address}");
        let value = if gcm { "aes-gcm" } else { "no-aes-gcm" };
        if self.store.setting(&name).ok().flatten().as_deref() != Some(value)
            && let Err(e) = self.store.set_setting(&name, Some(value))
        {
            tracing::error!("certificate store: {e}");
        }
    }

    /// Whether `address` announced AES-GCM in its last trusted signature.
    pub fn announces_gcm(&self, address: &str) -> bool {
        let name = format!("{CAPABILITIES}{}", address.to_ascii_lowercase());
        self.store.setting(&name).ok().flatten().as_deref() == Some("aes-gcm")
    }
}

/// The settings that hold correspondents' announced capabilities, by address.
const CAPABILITIES: &str = "capabilities:";

/// The certificate to encrypt to `address` among `candidates`: valid at `now`, naming the
/// address, allowing encryption, not a CA; the newest (latest start, then latest end, then
/// fingerprint, so the choice is the same every time).
pub fn best_for_encryption<'a>(
    candidates: impl IntoIterator<Item = &'a CertInfo>,
    address: &str,
    now: u64,
) -> Option<&'a CertInfo> {
    let address = address.to_ascii_lowercase();
    candidates
        .into_iter()
        .filter(|c| {
            !c.is_ca
                && c.can_encrypt
                && c.not_before <= now
                && now < c.not_after
                && c.addresses.contains(&address)
        })
        .max_by(|a, b| {
            (a.not_before, a.not_after, &a.fingerprint).cmp(&(
                b.not_before,
                b.not_after,
                &b.fingerprint,
            ))
        })
}

/// The start of a harvested certificate's source in the store.
pub const HARVESTED: &str = "harvested from signed mail from";

/// The trust anchors and intermediates (DER) certificates are validated against.
#[derive(Debug, Clone, Copy)]
pub struct Trust<'a> {
    pub anchors: &'a [Vec<u8>],
    pub intermediates: &'a [Vec<u8>],
}
