//! The tamper state: once the chassis is opened the gateway logs out of the token and stops
//! signing and decrypting until an administrator clears it. Mail keeps being accepted and
//! waits in the queue (deliveries that need the keys are deferred with a 4.7.1 reason);
//! nothing is bounced and nothing leaves unsigned.
//!
//! - [`Tamper`]: the latch, kept on the data disk (`DATA/tamper`) so a reboot, or pulling
//!   the power, does not clear it;
//! - [`Guarded`]: the token as the relay sees it. While tampered, every operation (sign,
//!   decrypt, key agreement, key and certificate changes, reading keys and certificates) is
//!   refused as temporarily unavailable, so nothing logs in again; information comes from
//!   what the token said at start (for the health probe and the status). Only while the
//!   gateway starts may the certificates be read, so that a tampered gateway still knows its
//!   users and accepts their mail.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use hsm::{
    AesOffload, Capabilities, ContentKey, Error, ImportBundle, ImportReport, KeyRef, KeyTransport,
    ObjectInfo, SignAlgorithm, Token, TokenInfo,
};

/// The latch.
#[derive(Debug)]
pub struct Tamper {
    mark: PathBuf,
    /// What happened and when, while tampered.
    state: RwLock<Option<String>>,
}

impl Tamper {
    /// The latch as the data disk left it (`DATA/tamper`).
    pub fn load(data_dir: &Path) -> Tamper {
        let mark = data_dir.join("tamper");
        let state = std::fs::read_to_string(&mark)
            .ok()
            .map(|s| s.trim().to_string())
            .map(|s| if s.is_empty() { "tamper".into() } else { s });
        Tamper {
            mark,
            state: RwLock::new(state),
        }
    }

    /// What happened, while tampered.
    pub fn state(&self) -> Option<String> {
        match self.state.read() {
            Ok(s) => s.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    pub fn is_tripped(&self) -> bool {
        self.state().is_some()
    }

    /// Latches `what`: at once in memory, then on disk (an error writing the mark is
    /// returned, the latch holds anyway). Returns false when already tripped.
    pub fn trip(&self, what: &str) -> std::io::Result<bool> {
        let text = format!(
            "{what} at {}",
            super::dsn::rfc5322_date(crate::spool::now())
        );
        {
            let mut st = match self.state.write() {
                Ok(st) => st,
                Err(p) => p.into_inner(),
            };
            if st.is_some() {
                return Ok(false);
            }
            *st = Some(text.clone());
        }
        crate::fsutil::replace_file(&self.mark, format!("{text}\n").as_bytes(), 0o600)?;
        Ok(true)
    }

    /// An administrator inspected the machine. Returns what was cleared.
    pub fn clear(&self) -> std::io::Result<Option<String>> {
        let mut st = self
            .state
            .write()
            .map_err(|_| std::io::Error::other("poisoned"))?;
        match std::fs::remove_file(&self.mark) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        Ok(st.take())
    }
}

/// The relay's token: refuses private-key work while tampered.
#[derive(Debug)]
pub struct Guarded {
    inner: Arc<dyn Token>,
    tamper: Arc<Tamper>,
    name: String,
    /// What the token said at start: answered while tampered, so that asking does not log
    /// in again.
    info: Option<TokenInfo>,
    /// The gateway is starting: reading certificates is allowed even while tampered.
    opening: AtomicBool,
}

impl Guarded {
    pub fn new(inner: Arc<dyn Token>, tamper: Arc<Tamper>) -> Guarded {
        let info = inner.info().ok();
        let name = info.as_ref().map_or("token".into(), |i| i.label.clone());
        Guarded {
            inner,
            tamper,
            name,
            info,
            opening: AtomicBool::new(true),
        }
    }

    /// The gateway has read what it needs: from now on a tamper stops every use.
    pub fn opened(&self) {
        self.opening.store(false, Ordering::SeqCst);
    }

    /// For reads: allowed while starting.
    fn check_read(&self) -> hsm::Result<()> {
        if self.opening.load(Ordering::SeqCst) {
            Ok(())
        } else {
            self.check()
        }
    }

    fn check(&self) -> hsm::Result<()> {
        match self.tamper.state() {
            None => Ok(()),
            Some(what) => Err(Error::Unavailable {
                token: self.name.clone(),
                reason: format!(
                    "{what}: signing and decrypting are stopped until an administrator \
                     clears the tamper"
                ),
            }),
        }
    }
}

impl Token for Guarded {
    fn info(&self) -> hsm::Result<TokenInfo> {
        match &self.info {
            Some(i) if self.tamper.is_tripped() => Ok(i.clone()),
            _ => self.inner.info(),
        }
    }

    fn capabilities(&self) -> hsm::Result<Capabilities> {
        self.check_read()?;
        self.inner.capabilities()
    }

    fn list(&self) -> hsm::Result<Vec<ObjectInfo>> {
        self.check_read()?;
        self.inner.list()
    }

    fn generate_rsa(&self, label: &str, bits: usize) -> hsm::Result<ObjectInfo> {
        self.check()?;
        self.inner.generate_rsa(label, bits)
    }

    fn import(&self, label: &str, bundle: &ImportBundle) -> hsm::Result<ImportReport> {
        self.check()?;
        self.inner.import(label, bundle)
    }

    fn delete(&self, label: &str) -> hsm::Result<usize> {
        self.check()?;
        self.inner.delete(label)
    }

    fn public_key(&self, key: &KeyRef) -> hsm::Result<Vec<u8>> {
        self.check_read()?;
        self.inner.public_key(key)
    }

    fn certificates(&self, label: &str) -> hsm::Result<Vec<Vec<u8>>> {
        self.check_read()?;
        self.inner.certificates(label)
    }

    fn set_certificates(&self, label: &str, chain: &[Vec<u8>]) -> hsm::Result<()> {
        self.check()?;
        self.inner.set_certificates(label, chain)
    }

    fn sign(&self, key: &KeyRef, alg: SignAlgorithm, digest: &[u8]) -> hsm::Result<Vec<u8>> {
        self.check()?;
        self.inner.sign(key, alg, digest)
    }

    fn unwrap_key(
        &self,
        key: &KeyRef,
        alg: &KeyTransport,
        blob: &[u8],
        key_len: usize,
        place: AesOffload,
    ) -> hsm::Result<ContentKey> {
        self.check()?;
        self.inner.unwrap_key(key, alg, blob, key_len, place)
    }

    fn content_key(&self, bytes: &[u8], place: AesOffload) -> hsm::Result<ContentKey> {
        self.check()?;
        self.inner.content_key(bytes, place)
    }

    fn ecdh(&self, key: &KeyRef, peer_point: &[u8]) -> hsm::Result<zeroize::Zeroizing<Vec<u8>>> {
        self.check()?;
        self.inner.ecdh(key, peer_point)
    }

    fn logout(&self) -> hsm::Result<()> {
        self.inner.logout()
    }
}
