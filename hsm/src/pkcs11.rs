//! The PKCS#11 backend: any module (network HSM, OpenSC for smartcards, SoftHSM2).
//!
//! - **Pool.** Up to `max_sessions` logged-in sessions (the token's own limit, a setting, and
//!   2 × CPUs, whichever is least). Callers lease one for an operation; `Session` is `Send` but
//!   not `Sync`, so a session is only ever used by one thread at a time.
//! - **Recovery.** When the module says the device is gone (removed, session closed or invalid,
//!   token absent, not logged in), the open context is retired and the caller gets
//!   [`Error::Unavailable`]. The next call re-initialises the module, finds the token by label
//!   again and logs in with the PIN read at start. A retired context is finalised only when its
//!   last session is back, so C_Finalize never pulls the rug from a running call.
//! - **Key handles** are cached per context; a stale handle drops the cache entry.
//! - **Raw RSA fallback** (off by default): where the token refuses a padding variant (SoftHSM2
//!   2.6 does OAEP only with SHA-1), CKM_RSA_X_509 runs in the token and the padding is built or
//!   checked on the host in constant time (`padding.rs`).

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};

use cryptoki::context::Function;
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::elliptic_curve::{EcKdf, Ecdh1DeriveParams};
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsOaepParams, PkcsOaepSource, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{
    Attribute, AttributeType, CertificateType, KeyType, ObjectClass, ObjectHandle,
};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use zeroize::Zeroizing;

use crate::aes::{AesMode, CipherDirection, CipherStream};
use crate::error::{Error, Result};
use crate::keymat::{KeyKind, cert_summary, key_id};
use crate::padding;
use crate::pin::{Pin, PinSource};
use crate::uri::Pkcs11Uri;
use crate::{
    AesOffload, Capabilities, ContentKey, ContentKeyInner, Hash, ImportBundle, ImportReport,
    KeyRef, KeyTransport, MechanismReport, ObjectInfo, ObjectType, SignAlgorithm, Token, TokenInfo,
    check_aes_len,
};

/// How to reach a PKCS#11 token.
#[derive(Debug, Clone)]
pub struct Pkcs11Options {
    pub module: PathBuf,
    /// Token label (`token=`); the first token present when neither label nor serial is given.
    pub token: Option<String>,
    pub serial: Option<String>,
    /// Where the user PIN comes from; `None` asks on the terminal.
    pub pin: Option<PinSource>,
    /// Upper bound on pooled sessions.
    pub max_sessions: usize,
    /// Allow CKM_RSA_X_509 with host-side padding where the token lacks a variant.
    pub allow_raw_rsa: bool,
}

impl Pkcs11Options {
    /// Options from a PKCS#11 URI: `module-path`/`module-name`, `token`, `serial`, `pin-source`.
    pub fn from_uri(uri: &Pkcs11Uri) -> Result<Self> {
        let module = uri.module().ok_or_else(|| {
            Error::Uri(
                "the URI names no PKCS#11 module (add ?module-path=/path/to/module.so)".into(),
            )
        })?;
        let cpus = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        Ok(Pkcs11Options {
            module,
            token: uri.token.clone(),
            serial: uri.serial.clone(),
            pin: uri.pin_source.clone(),
            max_sessions: (cpus * 2).max(2),
            allow_raw_rsa: false,
        })
    }
}

/// A PKCS#11 token behind a session pool.
#[derive(Clone)]
pub struct Pkcs11Token {
    pool: Arc<Pool>,
}

impl std::fmt::Debug for Pkcs11Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Pkcs11Token({}, {:?})",
            self.pool.opts.module.display(),
            self.pool.opts.token
        )
    }
}

struct Pool {
    opts: Pkcs11Options,
    pin: Pin,
    name: String,
    state: Mutex<State>,
    returned: Condvar,
    /// Secret for implicit rejection of host-placed content keys.
    rejection_secret: Zeroizing<Vec<u8>>,
}

#[derive(Default)]
struct State {
    ctx: Option<Arc<Ctx>>,
    retired: Option<Weak<Ctx>>,
}

struct Ctx {
    module: PathBuf,
    pkcs11: Pkcs11,
    slot: Slot,
    max: usize,
    sessions: Mutex<Sessions>,
    handles: Mutex<HashMap<(KeyRef, u64), ObjectHandle>>,
    /// Mechanism variants the token refused (so we go straight to the fallback).
    refused: Mutex<HashSet<String>>,
}

#[derive(Default)]
struct Sessions {
    idle: Vec<Session>,
    open: usize,
}

impl Drop for Ctx {
    fn drop(&mut self) {
        if let Ok(mut s) = self.sessions.lock() {
            s.idle.clear();
        }
        module_release(&self.module);
    }
}

/// Token object writes (generate, import, delete) one at a time per process: SoftHSM2's file
/// object store answers CKR_GENERAL_ERROR when several threads create token objects at once,
/// and these operations are rare enough that serialising them costs nothing.
static WRITES: Mutex<()> = Mutex::new(());

/// Modules initialised in this process, with how many contexts use each. C_Initialize and
/// C_Finalize act on the whole process, so the last user finalises.
static MODULES: Mutex<Vec<(PathBuf, Pkcs11, usize)>> = Mutex::new(Vec::new());

fn module_acquire(path: &PathBuf) -> Result<Pkcs11> {
    let mut m = MODULES.lock().map_err(poison)?;
    if let Some(entry) = m.iter_mut().find(|(p, _, _)| p == path) {
        entry.2 += 1;
        return Ok(entry.1.clone());
    }
    let pkcs11 = Pkcs11::new(path).map_err(|e| Error::Module {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    match pkcs11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => {
            return Err(Error::Module {
                path: path.clone(),
                reason: format!("C_Initialize: {e}"),
            });
        }
    }
    m.push((path.clone(), pkcs11.clone(), 1));
    Ok(pkcs11)
}

fn module_release(path: &PathBuf) {
    let Ok(mut m) = MODULES.lock() else { return };
    if let Some(i) = m.iter().position(|(p, _, _)| p == path) {
        m[i].2 -= 1;
        if m[i].2 == 0 {
            let (_, pkcs11, _) = m.remove(i);
            let _ = pkcs11.finalize();
        }
    }
}

/// Releases the module when `connect` fails half-way.
struct ReleaseOnError(Option<PathBuf>);

impl Drop for ReleaseOnError {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            module_release(&p);
        }
    }
}

/// One leased session; goes back to the pool on drop unless spoiled.
struct Lease {
    pool: Arc<Pool>,
    ctx: Arc<Ctx>,
    session: Option<Session>,
    spoiled: bool,
}

impl Lease {
    fn s(&self) -> &Session {
        // Invariant: `session` is Some until drop.
        self.session
            .as_ref()
            .expect("lease holds a session until dropped")
    }

    /// Runs a PKCS#11 call; classifies its error and retires the context when the token is gone.
    fn call<T>(
        &mut self,
        f: impl FnOnce(&Session) -> std::result::Result<T, CkError>,
    ) -> Result<T> {
        match f(self.s()) {
            Ok(v) => Ok(v),
            Err(e) => Err(self.fail(e)),
        }
    }

    fn fail(&mut self, e: CkError) -> Error {
        if let CkError::Pkcs11(rv, _) = &e {
            if gone(*rv) {
                self.spoiled = true;
                self.pool.retire(&self.ctx);
                return Error::Unavailable {
                    token: self.pool.name.clone(),
                    reason: format!("{rv:?}"),
                };
            }
            if matches!(rv, RvError::OperationActive) {
                self.spoiled = true;
            }
        }
        ck(e)
    }

    fn find(&mut self, key: &KeyRef, class: ObjectClass) -> Result<ObjectHandle> {
        let cache_key = (key.clone(), class_code(class));
        if let Some(h) = self.ctx.handles.lock().map_err(poison)?.get(&cache_key) {
            return Ok(*h);
        }
        let mut tpl = vec![Attribute::Class(class)];
        if let Some(l) = &key.label {
            tpl.push(Attribute::Label(l.as_bytes().to_vec()));
        }
        if let Some(i) = &key.id {
            tpl.push(Attribute::Id(i.clone()));
        }
        let found = self.call(|s| s.find_objects(&tpl))?;
        let h = *found.first().ok_or_else(|| Error::NotFound {
            what: match class {
                ObjectClass::PRIVATE_KEY => "private key",
                ObjectClass::PUBLIC_KEY => "public key",
                _ => "certificate",
            },
            name: key.to_string(),
        })?;
        self.ctx
            .handles
            .lock()
            .map_err(poison)?
            .insert(cache_key, h);
        Ok(h)
    }

    fn forget(&self, key: &KeyRef, class: ObjectClass) {
        if let Ok(mut h) = self.ctx.handles.lock() {
            h.remove(&(key.clone(), class_code(class)));
        }
    }

    fn refused(&self, what: &str) -> bool {
        self.ctx
            .refused
            .lock()
            .map(|r| r.contains(what))
            .unwrap_or(false)
    }

    fn remember_refused(&self, what: &str) {
        if let Ok(mut r) = self.ctx.refused.lock() {
            r.insert(what.to_string());
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let Some(session) = self.session.take() else {
            return;
        };
        let current = self
            .pool
            .state
            .lock()
            .map(|s| s.ctx.as_ref().is_some_and(|c| Arc::ptr_eq(c, &self.ctx)))
            .unwrap_or(false);
        if let Ok(mut s) = self.ctx.sessions.lock() {
            if self.spoiled || !current {
                s.open = s.open.saturating_sub(1);
                drop(session);
            } else {
                s.idle.push(session);
            }
        }
        self.pool.returned.notify_one();
    }
}

/// C_CreateObject, retried a few times on CKR_GENERAL_ERROR: SoftHSM2 answers that now and then
/// when token objects are created while other sessions of the process use the token.
/// Creates the certificate objects of `chain` under `label`: the end entity with the key's
/// `id`, the others with ids of their own. `made` collects the handles, for undoing.
fn create_certificates(
    l: &mut Lease,
    label: &[u8],
    id: &[u8],
    chain: &[Vec<u8>],
    made: &mut Vec<ObjectHandle>,
) -> Result<()> {
    for (i, c) in chain.iter().enumerate() {
        let sum = cert_summary(c)?;
        let cid = if i == 0 {
            id.to_vec()
        } else {
            key_id(&[], Some(c))
        };
        made.push(create_object(
            l,
            &[
                Attribute::Class(ObjectClass::CERTIFICATE),
                Attribute::CertificateType(CertificateType::X_509),
                Attribute::Token(true),
                Attribute::Private(false),
                Attribute::Label(label.to_vec()),
                Attribute::Id(cid),
                Attribute::Subject(sum.subject_der),
                Attribute::Issuer(sum.issuer_der),
                Attribute::SerialNumber(sum.serial_der),
                Attribute::Value(c.clone()),
            ],
        )?);
    }
    Ok(())
}

fn create_object(l: &mut Lease, template: &[Attribute]) -> Result<ObjectHandle> {
    let mut tries = 0u32;
    loop {
        match l.call(|s| s.create_object(template)) {
            Err(Error::Pkcs11 { code, .. }) if code.contains("GeneralError") && tries < 5 => {
                tries += 1;
                tracing::debug!(tries, "C_CreateObject: general error, trying again");
                std::thread::sleep(std::time::Duration::from_millis(10 << tries));
            }
            other => return other,
        }
    }
}

fn class_code(c: ObjectClass) -> u64 {
    match c {
        ObjectClass::PRIVATE_KEY => 3,
        ObjectClass::PUBLIC_KEY => 2,
        ObjectClass::SECRET_KEY => 4,
        _ => 1,
    }
}

fn poison<T>(_: T) -> Error {
    Error::Crypto("internal lock poisoned")
}

/// Errors that mean the token or our sessions are gone.
fn gone(rv: RvError) -> bool {
    matches!(
        rv,
        RvError::DeviceRemoved
            | RvError::DeviceError
            | RvError::SessionClosed
            | RvError::SessionHandleInvalid
            | RvError::TokenNotPresent
            | RvError::TokenNotRecognized
            | RvError::CryptokiNotInitialized
            | RvError::UserNotLoggedIn
            | RvError::SlotIdInvalid
            // A key handle that stopped being valid: the token's objects changed under us
            // (SoftHSM2 reports a vanished token directory this way). Reopen and look again.
            | RvError::ObjectHandleInvalid
            | RvError::KeyHandleInvalid
    )
}

fn ck(e: CkError) -> Error {
    match e {
        CkError::Pkcs11(rv, f) => match rv {
            RvError::MechanismInvalid | RvError::MechanismParamInvalid => {
                Error::Unsupported(format!("this mechanism ({f:?}: {rv:?})"))
            }
            // Refusing the mechanism's parameters when the operation starts.
            RvError::ArgumentsBad
                if matches!(
                    f,
                    Function::DecryptInit
                        | Function::SignInit
                        | Function::EncryptInit
                        | Function::UnwrapKey
                ) =>
            {
                Error::Unsupported(format!("these mechanism parameters ({f:?}: {rv:?})"))
            }
            _ => Error::Pkcs11 {
                function: format!("C_{f:?}"),
                code: format!("{rv:?}"),
            },
        },
        other => Error::Pkcs11 {
            function: "cryptoki".into(),
            code: other.to_string(),
        },
    }
}

impl Pool {
    fn retire(&self, ctx: &Arc<Ctx>) {
        if let Ok(mut st) = self.state.lock()
            && st.ctx.as_ref().is_some_and(|c| Arc::ptr_eq(c, ctx))
        {
            tracing::warn!(token = %self.name, "token unavailable; sessions will be reopened on next use");
            st.retired = Some(Arc::downgrade(ctx));
            st.ctx = None;
        }
        Self::close_idle(ctx, false);
    }

    /// Closes the idle sessions of `ctx`, logging out first when asked (the login is the
    /// application's, so one C_Logout ends it for every session).
    fn close_idle(ctx: &Ctx, logout: bool) {
        if let Ok(mut s) = ctx.sessions.lock() {
            if logout && let Some(session) = s.idle.first() {
                let _ = session.logout();
            }
            let n = s.idle.len();
            s.idle.clear();
            s.open = s.open.saturating_sub(n);
        }
    }

    /// Retires the open context on purpose: logged out, idle sessions closed.
    fn logout(&self) -> Result<()> {
        let ctx = {
            let mut st = self.state.lock().map_err(poison)?;
            let ctx = st.ctx.take();
            if let Some(c) = &ctx {
                st.retired = Some(Arc::downgrade(c));
            }
            ctx
        };
        if let Some(ctx) = ctx {
            Self::close_idle(&ctx, true);
            tracing::info!(token = %self.name, "logged out of the token");
        }
        Ok(())
    }

    fn unavailable(&self, reason: impl Into<String>) -> Error {
        Error::Unavailable {
            token: self.name.clone(),
            reason: reason.into(),
        }
    }

    /// Loads the module, finds the token and logs in.
    fn connect(&self) -> Result<Arc<Ctx>> {
        let module = &self.opts.module;
        if !module.exists() {
            return Err(Error::Module {
                path: module.clone(),
                reason: "no such file".into(),
            });
        }
        let pkcs11 = module_acquire(module)?;
        let release = ReleaseOnError(Some(module.clone()));
        let slots = pkcs11.get_slots_with_token().map_err(ck)?;
        let mut present = Vec::new();
        let mut chosen = None;
        for slot in slots {
            let Ok(info) = pkcs11.get_token_info(slot) else {
                continue;
            };
            let label = info.label().trim().to_string();
            let serial = info.serial_number().trim().to_string();
            let matches = self.opts.token.as_ref().is_none_or(|t| *t == label)
                && self.opts.serial.as_ref().is_none_or(|s| *s == serial)
                && info.token_initialized();
            present.push(label);
            if matches && chosen.is_none() {
                let max = match info.max_rw_session_count() {
                    cryptoki::slot::Limit::Max(n) if n > 0 => n as usize,
                    _ => usize::MAX,
                };
                chosen = Some((slot, max, info.user_pin_locked()));
            }
        }
        let Some((slot, token_max, locked)) = chosen else {
            return Err(Error::TokenNotFound {
                label: self.opts.token.clone().unwrap_or_else(|| "(any)".into()),
                present: if present.is_empty() {
                    "none".into()
                } else {
                    present.join(", ")
                },
            });
        };
        if locked {
            return Err(Error::PinLocked {
                token: self.name.clone(),
            });
        }
        let session = pkcs11.open_rw_session(slot).map_err(ck)?;
        let pin = AuthPin::new(self.pin.expose().into());
        match session.login(UserType::User, Some(&pin)) {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
            Err(CkError::Pkcs11(RvError::PinIncorrect, _)) => {
                return Err(Error::WrongPin {
                    token: self.name.clone(),
                });
            }
            Err(CkError::Pkcs11(RvError::PinLocked, _)) => {
                return Err(Error::PinLocked {
                    token: self.name.clone(),
                });
            }
            Err(e) => return Err(ck(e)),
        }
        let max = token_max.min(self.opts.max_sessions).max(1);
        tracing::info!(token = %self.name, max_sessions = max, "PKCS#11 token opened");
        std::mem::forget(release);
        Ok(Arc::new(Ctx {
            module: module.clone(),
            pkcs11,
            slot,
            max,
            sessions: Mutex::new(Sessions {
                idle: vec![session],
                open: 1,
            }),
            handles: Mutex::new(HashMap::new()),
            refused: Mutex::new(HashSet::new()),
        }))
    }

    fn context(&self, st: &mut MutexGuard<'_, State>) -> Result<Arc<Ctx>> {
        if let Some(c) = &st.ctx {
            return Ok(c.clone());
        }
        if st.retired.as_ref().is_some_and(|w| w.strong_count() > 0) {
            return Err(self.unavailable("waiting for the previous sessions to close"));
        }
        // Once open, a token that vanished is temporary; at first open, a missing token, a
        // wrong PIN or a missing module is a configuration error.
        let was_open = st.retired.is_some();
        let ctx = self.connect().map_err(|e| match e {
            Error::TokenNotFound { .. } | Error::Pkcs11 { .. } if was_open => {
                self.unavailable(e.to_string())
            }
            other => other,
        })?;
        st.retired = None;
        st.ctx = Some(ctx.clone());
        Ok(ctx)
    }

    fn lease(self: &Arc<Self>) -> Result<Lease> {
        let mut st = self.state.lock().map_err(poison)?;
        loop {
            let ctx = self.context(&mut st)?;
            {
                let mut s = ctx.sessions.lock().map_err(poison)?;
                if let Some(session) = s.idle.pop() {
                    return Ok(Lease {
                        pool: self.clone(),
                        ctx: ctx.clone(),
                        session: Some(session),
                        spoiled: false,
                    });
                }
                if s.open < ctx.max {
                    s.open += 1;
                    drop(s);
                    match ctx.pkcs11.open_rw_session(ctx.slot) {
                        Ok(session) => {
                            return Ok(Lease {
                                pool: self.clone(),
                                ctx,
                                session: Some(session),
                                spoiled: false,
                            });
                        }
                        Err(e) => {
                            if let Ok(mut s) = ctx.sessions.lock() {
                                s.open -= 1;
                            }
                            if let CkError::Pkcs11(rv, _) = &e
                                && gone(*rv)
                            {
                                drop(st);
                                self.retire(&ctx);
                                return Err(self.unavailable(format!("{rv:?}")));
                            }
                            return Err(ck(e));
                        }
                    }
                }
            }
            let (g, _) = self
                .returned
                .wait_timeout(st, std::time::Duration::from_millis(100))
                .map_err(poison)?;
            st = g;
        }
    }
}

impl Pkcs11Token {
    /// Opens the token: loads the module, finds the token, reads the PIN and logs in.
    pub fn open(opts: Pkcs11Options) -> Result<Self> {
        let name = opts
            .token
            .clone()
            .unwrap_or_else(|| opts.module.display().to_string());
        let pin = match &opts.pin {
            Some(src) => src.read(&format!("PIN for token {name}"))?,
            None => PinSource::Prompt.read(&format!("PIN for token {name}"))?,
        };
        let mut secret = Zeroizing::new(vec![0u8; 32]);
        aws_lc_rs::rand::fill(&mut secret).map_err(|_| Error::Crypto("random"))?;
        let pool = Arc::new(Pool {
            opts,
            pin,
            name,
            state: Mutex::new(State::default()),
            returned: Condvar::new(),
            rejection_secret: secret,
        });
        {
            let mut st = pool.state.lock().map_err(poison)?;
            pool.context(&mut st)?;
        }
        Ok(Pkcs11Token { pool })
    }

    /// Opens the token a URI names.
    pub fn open_uri(uri: &Pkcs11Uri) -> Result<Self> {
        Self::open(Pkcs11Options::from_uri(uri)?)
    }

    fn modulus_bits(l: &mut Lease, h: ObjectHandle) -> Result<usize> {
        let attrs = l.call(|s| s.get_attributes(h, &[AttributeType::Modulus]))?;
        for a in attrs {
            if let Attribute::Modulus(m) = a {
                let m: Vec<u8> = m.into_iter().skip_while(|b| *b == 0).collect();
                let lead = m.first().copied().unwrap_or(0);
                return Ok(m.len() * 8 - lead.leading_zeros() as usize);
            }
        }
        Err(Error::KeyMaterial("the key has no readable modulus".into()))
    }

    /// Runs raw RSA (CKM_RSA_X_509) with the private key.
    fn raw_rsa(l: &mut Lease, h: ObjectHandle, block: &[u8], decrypt: bool) -> Result<Vec<u8>> {
        if decrypt {
            l.call(|s| s.decrypt(&Mechanism::RsaX509, h, block))
        } else {
            l.call(|s| s.sign(&Mechanism::RsaX509, h, block))
        }
    }

    fn host_or_token_key(
        &self,
        l: &mut Lease,
        bytes: &[u8],
        place: AesOffload,
    ) -> Result<ContentKey> {
        match place {
            AesOffload::Host => ContentKey::host(bytes),
            AesOffload::Token => {
                let tpl = secret_key_template(None);
                let mut tpl = tpl;
                tpl.push(Attribute::Value(bytes.to_vec()));
                let h = l.call(|s| s.create_object(&tpl))?;
                Ok(self.token_key(l, h, bytes.len()))
            }
        }
    }

    fn token_key(&self, l: &Lease, handle: ObjectHandle, len: usize) -> ContentKey {
        ContentKey {
            inner: ContentKeyInner::Token(TokenKey {
                pool: l.pool.clone(),
                ctx: l.ctx.clone(),
                handle,
            }),
            len,
        }
    }
}

fn secret_key_template(len: Option<usize>) -> Vec<Attribute> {
    let mut t = vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::Token(false),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Encrypt(true),
        Attribute::Decrypt(true),
    ];
    if let Some(n) = len {
        t.push(Attribute::ValueLen((n as u64).into()));
    }
    t
}

fn hash_mech(h: Hash) -> (MechanismType, PkcsMgfType) {
    match h {
        Hash::Sha1 => (MechanismType::SHA1, PkcsMgfType::MGF1_SHA1),
        Hash::Sha256 => (MechanismType::SHA256, PkcsMgfType::MGF1_SHA256),
        Hash::Sha384 => (MechanismType::SHA384, PkcsMgfType::MGF1_SHA384),
        Hash::Sha512 => (MechanismType::SHA512, PkcsMgfType::MGF1_SHA512),
    }
}

/// ECDSA r||s (PKCS#11) to DER Ecdsa-Sig-Value (CMS).
fn ecdsa_to_der(raw: &[u8]) -> Result<Vec<u8>> {
    if raw.is_empty() || !raw.len().is_multiple_of(2) {
        return Err(Error::Crypto("ECDSA signature of odd length"));
    }
    let (r, s) = raw.split_at(raw.len() / 2);
    let int = |v: &[u8]| -> Result<Vec<u8>> {
        let v: Vec<u8> = v.iter().copied().skip_while(|b| *b == 0).collect();
        let v = if v.first().is_none_or(|b| b & 0x80 != 0) {
            [&[0u8][..], &v].concat()
        } else {
            v
        };
        der_tlv(0x02, &v)
    };
    der_tlv(0x30, &[int(r)?, int(s)?].concat())
}

fn der_tlv(tag: u8, v: &[u8]) -> Result<Vec<u8>> {
    let mut out = vec![tag];
    match v.len() {
        n if n < 0x80 => out.push(n as u8),
        n if n < 0x100 => out.extend([0x81, n as u8]),
        n if n < 0x10000 => out.extend([0x82, (n >> 8) as u8, n as u8]),
        _ => return Err(Error::Crypto("DER length")),
    }
    out.extend_from_slice(v);
    Ok(out)
}

fn label_of(attrs: &[Attribute]) -> (String, Vec<u8>) {
    let mut label = String::new();
    let mut id = Vec::new();
    for a in attrs {
        match a {
            Attribute::Label(l) => label = String::from_utf8_lossy(l).to_string(),
            Attribute::Id(i) => id = i.clone(),
            _ => {}
        }
    }
    (label, id)
}

impl Token for Pkcs11Token {
    fn info(&self) -> Result<TokenInfo> {
        let l = self.pool.lease()?;
        let info = l.ctx.pkcs11.get_token_info(l.ctx.slot).map_err(ck)?;
        Ok(TokenInfo {
            backend: "pkcs11",
            label: info.label().trim().to_string(),
            manufacturer: info.manufacturer_id().trim().to_string(),
            model: info.model().trim().to_string(),
            serial: info.serial_number().trim().to_string(),
            location: self.pool.opts.module.display().to_string(),
            max_sessions: l.ctx.max,
        })
    }

    fn capabilities(&self) -> Result<Capabilities> {
        let l = self.pool.lease()?;
        let (p, slot) = (&l.ctx.pkcs11, l.ctx.slot);
        let list: Vec<MechanismType> = p.get_mechanism_list(slot).map_err(ck)?;
        let mut caps = Capabilities::default();
        let mut row = |name: &'static str, m: MechanismType| -> bool {
            let info = list
                .contains(&m)
                .then(|| p.get_mechanism_info(slot, m).ok())
                .flatten();
            let detail = info
                .as_ref()
                .map(|i| {
                    let mut f = Vec::new();
                    if i.sign() {
                        f.push("sign")
                    }
                    if i.decrypt() {
                        f.push("decrypt")
                    }
                    if i.encrypt() {
                        f.push("encrypt")
                    }
                    if i.unwrap() {
                        f.push("unwrap")
                    }
                    if i.generate_key_pair() || i.generate() {
                        f.push("generate")
                    }
                    let sizes = if i.max_key_size() > 0 {
                        format!(" keys {}-{}", i.min_key_size(), i.max_key_size())
                    } else {
                        String::new()
                    };
                    format!("{}{sizes}", f.join(","))
                })
                .unwrap_or_else(|| "not offered".into());
            let ok = info.is_some();
            caps.mechanisms.push(MechanismReport {
                name,
                supported: ok,
                detail,
            });
            ok
        };
        let rsa = row("CKM_RSA_PKCS", MechanismType::RSA_PKCS);
        let pss = row("CKM_RSA_PKCS_PSS", MechanismType::RSA_PKCS_PSS);
        let oaep = row("CKM_RSA_PKCS_OAEP", MechanismType::RSA_PKCS_OAEP);
        let raw = row("CKM_RSA_X_509", MechanismType::RSA_X_509);
        let ecdsa = row("CKM_ECDSA", MechanismType::ECDSA);
        let keygen = row(
            "CKM_RSA_PKCS_KEY_PAIR_GEN",
            MechanismType::RSA_PKCS_KEY_PAIR_GEN,
        );
        let cbc = row("CKM_AES_CBC_PAD", MechanismType::AES_CBC_PAD);
        let gcm = row("CKM_AES_GCM", MechanismType::AES_GCM);
        row("CKM_AES_KEY_GEN", MechanismType::AES_KEY_GEN);
        let (min, max) = p
            .get_mechanism_info(slot, MechanismType::RSA_PKCS_KEY_PAIR_GEN)
            .map(|i| (i.min_key_size(), i.max_key_size()))
            .unwrap_or((0, 0));
        let unwrap = p
            .get_mechanism_info(slot, MechanismType::RSA_PKCS)
            .map(|i| i.unwrap())
            .unwrap_or(false);
        let allow_raw = self.pool.opts.allow_raw_rsa;
        caps.rsa_pkcs1_sign = rsa || (raw && allow_raw);
        caps.rsa_pss_sign = pss || (raw && allow_raw);
        caps.ecdsa_sign = ecdsa;
        caps.rsa_pkcs1_decrypt = rsa;
        caps.rsa_oaep_decrypt = oaep || (raw && allow_raw);
        caps.rsa_oaep_sha2 = if raw && allow_raw { Some(true) } else { None };
        caps.rsa_raw = raw;
        caps.unwrap = unwrap;
        caps.aes_cbc = cbc;
        caps.aes_gcm = gcm;
        caps.rsa_generate = keygen;
        caps.rsa_min_bits = min;
        caps.rsa_max_bits = max;
        Ok(caps)
    }

    fn list(&self) -> Result<Vec<ObjectInfo>> {
        let mut l = self.pool.lease()?;
        let mut out = Vec::new();
        let keys = l.call(|s| s.find_objects(&[Attribute::Class(ObjectClass::PRIVATE_KEY)]))?;
        for h in keys {
            let attrs = l.call(|s| {
                s.get_attributes(
                    h,
                    &[
                        AttributeType::Label,
                        AttributeType::Id,
                        AttributeType::KeyType,
                        AttributeType::Modulus,
                        AttributeType::EcParams,
                        AttributeType::Sensitive,
                        AttributeType::Extractable,
                    ],
                )
            })?;
            let (label, id) = label_of(&attrs);
            let mut desc = String::from("private key");
            let (mut sensitive, mut extractable) = (false, true);
            for a in &attrs {
                match a {
                    Attribute::Modulus(m) => {
                        desc = format!("RSA {}", m.iter().skip_while(|b| **b == 0).count() * 8)
                    }
                    Attribute::EcParams(p) => {
                        desc = KeyKind::from_ec_params(p)
                            .map(|k| k.to_string())
                            .unwrap_or_else(|| "EC".into())
                    }
                    Attribute::Sensitive(v) => sensitive = *v,
                    Attribute::Extractable(v) => extractable = *v,
                    _ => {}
                }
            }
            out.push(ObjectInfo {
                label,
                id,
                class: ObjectType::Private,
                description: desc,
                protected: Some(sensitive && !extractable),
            });
        }
        let certs = l.call(|s| s.find_objects(&[Attribute::Class(ObjectClass::CERTIFICATE)]))?;
        for h in certs {
            let attrs = l.call(|s| {
                s.get_attributes(
                    h,
                    &[
                        AttributeType::Label,
                        AttributeType::Id,
                        AttributeType::Value,
                    ],
                )
            })?;
            let (label, id) = label_of(&attrs);
            let desc = attrs
                .iter()
                .find_map(|a| match a {
                    Attribute::Value(v) => Some(
                        cert_summary(v)
                            .map(|s| s.subject)
                            .unwrap_or_else(|e| e.to_string()),
                    ),
                    _ => None,
                })
                .unwrap_or_default();
            out.push(ObjectInfo {
                label,
                id,
                class: ObjectType::Cert,
                description: desc,
                protected: None,
            });
        }
        out.sort_by(|a, b| {
            a.label
                .cmp(&b.label)
                .then((a.class as u8).cmp(&(b.class as u8)))
        });
        Ok(out)
    }

    fn generate_rsa(&self, label: &str, bits: usize) -> Result<ObjectInfo> {
        let _writing = WRITES.lock().map_err(poison)?;
        if ![2048, 3072, 4096].contains(&bits) {
            return Err(Error::Invalid(format!(
                "RSA key size {bits} (use 2048, 3072 or 4096)"
            )));
        }
        let mut l = self.pool.lease()?;
        if !l
            .call(|s| s.find_objects(&[Attribute::Label(label.as_bytes().to_vec())]))?
            .is_empty()
        {
            return Err(Error::Exists(label.into()));
        }
        let mut tmp_id = vec![0u8; 20];
        aws_lc_rs::rand::fill(&mut tmp_id).map_err(|_| Error::Crypto("random"))?;
        let lab = label.as_bytes().to_vec();
        let public = [
            Attribute::Token(true),
            Attribute::Private(false),
            Attribute::Label(lab.clone()),
            Attribute::Id(tmp_id.clone()),
            Attribute::ModulusBits((bits as u64).into()),
            Attribute::PublicExponent(vec![1, 0, 1]),
            Attribute::Verify(true),
            Attribute::Encrypt(true),
            Attribute::Wrap(true),
        ];
        let private = [
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Label(lab),
            Attribute::Id(tmp_id),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Sign(true),
            Attribute::Decrypt(true),
            Attribute::Unwrap(true),
        ];
        let (pubh, privh) =
            l.call(|s| s.generate_key_pair(&Mechanism::RsaPkcsKeyPairGen, &public, &private))?;
        let spki = self.public_key_of(&mut l, privh)?;
        let id = key_id(&spki, None);
        l.call(|s| s.update_attributes(pubh, &[Attribute::Id(id.clone())]))?;
        l.call(|s| s.update_attributes(privh, &[Attribute::Id(id.clone())]))?;
        Ok(ObjectInfo {
            label: label.into(),
            id,
            class: ObjectType::Private,
            description: format!("RSA {bits}"),
            protected: Some(true),
        })
    }

    fn import(&self, label: &str, bundle: &ImportBundle) -> Result<ImportReport> {
        let _writing = WRITES.lock().map_err(poison)?;
        let mut l = self.pool.lease()?;
        if !l
            .call(|s| s.find_objects(&[Attribute::Label(label.as_bytes().to_vec())]))?
            .is_empty()
        {
            return Err(Error::Exists(label.into()));
        }
        let key = &bundle.key;
        let id = key_id(key.spki(), bundle.chain.first().map(Vec::as_slice));
        let lab = label.as_bytes().to_vec();
        let common_priv = vec![
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Sign(true),
            Attribute::Label(lab.clone()),
            Attribute::Id(id.clone()),
        ];
        let common_pub = vec![
            Attribute::Class(ObjectClass::PUBLIC_KEY),
            Attribute::Token(true),
            Attribute::Private(false),
            Attribute::Verify(true),
            Attribute::Label(lab.clone()),
            Attribute::Id(id.clone()),
        ];
        let (priv_tpl, pub_tpl) = match key.kind() {
            KeyKind::Rsa { .. } => {
                let p = key.rsa_parts()?;
                let mut a = common_priv;
                a.extend([
                    Attribute::KeyType(KeyType::RSA),
                    Attribute::Decrypt(true),
                    Attribute::Unwrap(true),
                    Attribute::Modulus(p.modulus.clone()),
                    Attribute::PublicExponent(p.public_exponent.clone()),
                    Attribute::PrivateExponent(p.private_exponent.to_vec()),
                    Attribute::Prime1(p.prime1.to_vec()),
                    Attribute::Prime2(p.prime2.to_vec()),
                    Attribute::Exponent1(p.exponent1.to_vec()),
                    Attribute::Exponent2(p.exponent2.to_vec()),
                    Attribute::Coefficient(p.coefficient.to_vec()),
                ]);
                let mut b = common_pub;
                b.extend([
                    Attribute::KeyType(KeyType::RSA),
                    Attribute::Encrypt(true),
                    Attribute::Wrap(true),
                    Attribute::Modulus(p.modulus),
                    Attribute::PublicExponent(p.public_exponent),
                ]);
                (a, b)
            }
            kind => {
                let (scalar, point) = key.ec_parts()?;
                let params = kind.ec_params().ok_or(Error::Crypto("curve"))?;
                let mut a = common_priv;
                a.extend([
                    Attribute::KeyType(KeyType::EC),
                    Attribute::Derive(true),
                    Attribute::EcParams(params.clone()),
                    Attribute::Value(scalar.to_vec()),
                ]);
                let mut b = common_pub;
                b.extend([
                    Attribute::KeyType(KeyType::EC),
                    Attribute::EcParams(params),
                    Attribute::EcPoint(der_tlv(0x04, &point)?),
                ]);
                (a, b)
            }
        };
        let privh = create_object(&mut l, &priv_tpl)?;
        let rest = (|| -> Result<()> {
            create_object(&mut l, &pub_tpl)?;
            create_certificates(&mut l, &lab, &id, &bundle.chain, &mut Vec::new())
        })();
        if let Err(e) = rest {
            // Leave nothing half-imported.
            drop(l);
            if let Ok(mut l2) = self.pool.lease() {
                let tpl = [Attribute::Label(label.as_bytes().to_vec())];
                for h in l2.call(|s| s.find_objects(&tpl)).unwrap_or_default() {
                    let _ = l2.call(|s| s.destroy_object(h));
                }
            }
            let _ = privh;
            return Err(e);
        }
        Ok(ImportReport {
            label: label.into(),
            id,
            key: key.kind(),
            certificates: bundle.chain.len(),
        })
    }

    fn delete(&self, label: &str) -> Result<usize> {
        let _writing = WRITES.lock().map_err(poison)?;
        let mut l = self.pool.lease()?;
        let hs = l.call(|s| s.find_objects(&[Attribute::Label(label.as_bytes().to_vec())]))?;
        for h in &hs {
            l.call(|s| s.destroy_object(*h))?;
        }
        if let Ok(mut c) = l.ctx.handles.lock() {
            c.retain(|(k, _), _| k.label.as_deref() != Some(label));
        }
        Ok(hs.len())
    }

    fn set_certificates(&self, label: &str, chain: &[Vec<u8>]) -> Result<()> {
        let _writing = WRITES.lock().map_err(poison)?;
        let mut l = self.pool.lease()?;
        let key = KeyRef::label(label);
        let h = l.find(&key, ObjectClass::PRIVATE_KEY)?;
        let spki = self.public_key_of(&mut l, h)?;
        crate::keymat::check_chain_for(&spki, chain)?;
        let id = self.key_id_of(&mut l, &key)?;
        let lab = label.as_bytes().to_vec();
        let old = l.call(|s| {
            s.find_objects(&[
                Attribute::Class(ObjectClass::CERTIFICATE),
                Attribute::Label(lab.clone()),
            ])
        })?;
        // The new certificates go in before the old ones go out: a failure leaves the old.
        let mut made = Vec::new();
        if let Err(e) = create_certificates(&mut l, &lab, &id, chain, &mut made) {
            for h in made {
                let _ = l.call(|s| s.destroy_object(h));
            }
            return Err(e);
        }
        for h in old {
            l.call(|s| s.destroy_object(h))?;
        }
        Ok(())
    }

    fn public_key(&self, key: &KeyRef) -> Result<Vec<u8>> {
        let mut l = self.pool.lease()?;
        let h = l.find(key, ObjectClass::PRIVATE_KEY)?;
        self.public_key_of(&mut l, h)
    }

    fn certificates(&self, label: &str) -> Result<Vec<Vec<u8>>> {
        let mut l = self.pool.lease()?;
        let key_id = self.key_id_of(&mut l, &KeyRef::label(label)).ok();
        let hs = l.call(|s| {
            s.find_objects(&[
                Attribute::Class(ObjectClass::CERTIFICATE),
                Attribute::Label(label.as_bytes().to_vec()),
            ])
        })?;
        let mut certs = Vec::new();
        for h in hs {
            let attrs =
                l.call(|s| s.get_attributes(h, &[AttributeType::Id, AttributeType::Value]))?;
            let (_, id) = label_of(&attrs);
            if let Some(v) = attrs.into_iter().find_map(|a| {
                if let Attribute::Value(v) = a {
                    Some(v)
                } else {
                    None
                }
            }) {
                certs.push((Some(&id) != key_id.as_ref(), v));
            }
        }
        // End entity (the cert whose id is the key's) first, the rest in chain order.
        certs.sort_by_key(|(not_leaf, _)| *not_leaf);
        let mut out: Vec<Vec<u8>> = Vec::new();
        let mut rest: Vec<Vec<u8>> = certs.into_iter().map(|(_, c)| c).collect();
        if !rest.is_empty() {
            out.push(rest.remove(0));
            while !rest.is_empty() {
                let issuer = out
                    .last()
                    .and_then(|c| cert_summary(c).ok())
                    .map(|s| s.issuer_der);
                let next = rest
                    .iter()
                    .position(|c| cert_summary(c).ok().map(|s| s.subject_der) == issuer)
                    .unwrap_or(0);
                out.push(rest.remove(next));
            }
        }
        Ok(out)
    }

    fn sign(&self, key: &KeyRef, alg: SignAlgorithm, digest: &[u8]) -> Result<Vec<u8>> {
        let hash = alg.hash();
        if digest.len() != hash.output_len() {
            return Err(Error::Invalid(format!(
                "a {} digest is {} bytes, not {}",
                hash.name(),
                hash.output_len(),
                digest.len()
            )));
        }
        if hash == Hash::Sha1 {
            return Err(Error::Unsupported(
                "SHA-1 signatures (they are no longer made)".into(),
            ));
        }
        let mut l = self.pool.lease()?;
        let h = l.find(key, ObjectClass::PRIVATE_KEY)?;
        let raw_ok = self.pool.opts.allow_raw_rsa;
        let result = match alg {
            SignAlgorithm::RsaPkcs1(hash) => {
                let di = padding::digest_info(hash, digest)?;
                if l.refused("pkcs1-sign") && raw_ok {
                    let k = Self::modulus_bits(&mut l, h)?.div_ceil(8);
                    Self::raw_rsa(&mut l, h, &padding::emsa_pkcs1(hash, digest, k)?, false)
                } else {
                    l.call(|s| s.sign(&Mechanism::RsaPkcs, h, &di))
                }
            }
            SignAlgorithm::RsaPss(hash) => {
                let (hm, mgf) = hash_mech(hash);
                let params = PkcsPssParams {
                    hash_alg: hm,
                    mgf,
                    s_len: (hash.output_len() as u64).into(),
                };
                let tag = format!("pss-{}", hash.name());
                let native = if l.refused(&tag) {
                    Err(Error::Unsupported(format!("{alg}")))
                } else {
                    l.call(|s| s.sign(&Mechanism::RsaPkcsPss(params), h, digest))
                };
                match native {
                    Err(Error::Unsupported(_)) | Err(Error::Pkcs11 { .. }) if raw_ok => {
                        l.remember_refused(&tag);
                        let bits = Self::modulus_bits(&mut l, h)?;
                        Self::raw_rsa(&mut l, h, &padding::emsa_pss(hash, digest, bits)?, false)
                    }
                    other => other,
                }
            }
            SignAlgorithm::Ecdsa(_) => l
                .call(|s| s.sign(&Mechanism::Ecdsa, h, digest))
                .and_then(|raw| ecdsa_to_der(&raw)),
        };
        if let Err(Error::Pkcs11 { code, .. }) = &result
            && code.contains("HandleInvalid")
        {
            l.forget(key, ObjectClass::PRIVATE_KEY);
        }
        result.map_err(|e| match e {
            Error::Unsupported(_) => Error::Unsupported(format!("{alg} in this token")),
            other => other,
        })
    }

    fn unwrap_key(
        &self,
        key: &KeyRef,
        alg: &KeyTransport,
        blob: &[u8],
        key_len: usize,
        place: AesOffload,
    ) -> Result<ContentKey> {
        check_aes_len(key_len)?;
        let mut l = self.pool.lease()?;
        let h = l.find(key, ObjectClass::PRIVATE_KEY)?;
        let raw_ok = self.pool.opts.allow_raw_rsa;
        let fake = Zeroizing::new(padding::rejection_key(
            &self.pool.rejection_secret,
            blob,
            key_len,
        ));

        // The variant as a mechanism, unless the token refused it before.
        let tag = match alg {
            KeyTransport::RsaPkcs1 => "pkcs1".to_string(),
            KeyTransport::RsaOaep { hash, mgf1, .. } => {
                format!("oaep-{}-{}", hash.name(), mgf1.name())
            }
        };
        let label_buf = match alg {
            KeyTransport::RsaOaep {
                label: Some(lb), ..
            } => lb.clone(),
            _ => Vec::new(),
        };
        let mech = match alg {
            KeyTransport::RsaPkcs1 => Mechanism::RsaPkcs,
            KeyTransport::RsaOaep { hash, mgf1, .. } => {
                let source = if label_buf.is_empty() {
                    PkcsOaepSource::empty()
                } else {
                    PkcsOaepSource::data_specified(&label_buf)
                };
                Mechanism::RsaPkcsOaep(PkcsOaepParams::new(
                    hash_mech(*hash).0,
                    hash_mech(*mgf1).1,
                    source,
                ))
            }
        };
        let use_raw = l.refused(&tag);
        if use_raw && !raw_ok {
            return Err(Error::Unsupported(format!(
                "{alg} in this token (raw RSA fallback is off)"
            )));
        }

        if !use_raw && place == AesOffload::Token && !l.refused("value-len") {
            // Straight into the token: C_UnwrapKey.
            // CKA_VALUE_LEN may not be given for C_UnwrapKey (SoftHSM2: read-only), and some
            // tokens report 0 afterwards; a key of the wrong length then fails at cipher init,
            // which reads as Error::Decrypt like any other bad key.
            match l.call(|s| s.unwrap_key(&mech, h, blob, &secret_key_template(None))) {
                Ok(k) => {
                    let len = l
                        .call(|s| s.get_attributes(k, &[AttributeType::ValueLen]))?
                        .into_iter()
                        .find_map(|a| {
                            if let Attribute::ValueLen(v) = a {
                                Some(u64::from(v) as usize)
                            } else {
                                None
                            }
                        });
                    if len == Some(key_len) {
                        return Ok(self.token_key(&l, k, key_len));
                    }
                    let _ = l.call(|s| s.destroy_object(k));
                    if matches!(len, None | Some(0)) {
                        // The token does not say how long the unwrapped key is (SoftHSM2), so
                        // the length check of implicit rejection cannot run in it: decrypt the
                        // content key to the host, check it there, and create the token object.
                        l.remember_refused("value-len");
                        return self
                            .unwrap_host(&mut l, h, &mech, alg, blob, key_len, place, &fake, &tag);
                    }
                }
                Err(Error::Unsupported(_)) => {
                    l.remember_refused(&tag);
                    if !raw_ok {
                        return Err(Error::Unsupported(format!(
                            "{alg} in this token (raw RSA fallback is off)"
                        )));
                    }
                    return self.unwrap_raw(&mut l, h, alg, blob, key_len, place, &fake);
                }
                Err(e @ Error::Unavailable { .. }) => return Err(e),
                Err(Error::Pkcs11 { code, .. })
                    if code.contains("NotPermitted")
                        || code.contains("Inconsistent") && code.contains("KeyType") =>
                {
                    // Key not allowed to unwrap: decrypt to the host, then create the object.
                    return self
                        .unwrap_host(&mut l, h, &mech, alg, blob, key_len, place, &fake, &tag);
                }
                Err(e) => tracing::debug!(error = %e, "C_UnwrapKey failed; implicit rejection"),
            }
            // Implicit rejection in the token: a random key, same path as a good one.
            let k = l.call(|s| {
                s.generate_key(&Mechanism::AesKeyGen, &secret_key_template(Some(key_len)))
            })?;
            return Ok(self.token_key(&l, k, key_len));
        }
        if use_raw {
            return self.unwrap_raw(&mut l, h, alg, blob, key_len, place, &fake);
        }
        self.unwrap_host(&mut l, h, &mech, alg, blob, key_len, place, &fake, &tag)
    }

    fn content_key(&self, bytes: &[u8], place: AesOffload) -> Result<ContentKey> {
        check_aes_len(bytes.len())?;
        if place == AesOffload::Host {
            return ContentKey::host(bytes);
        }
        let mut l = self.pool.lease()?;
        self.host_or_token_key(&mut l, bytes, place)
    }

    fn ecdh(&self, key: &KeyRef, peer_point: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        let mut l = self.pool.lease()?;
        let h = l.find(key, ObjectClass::PRIVATE_KEY)?;
        // CKM_ECDH1_DERIVE without a KDF: the token gives Z as a session secret, read once
        // and destroyed; the X9.63 KDF and the key unwrap run on the host.
        let mech = Mechanism::Ecdh1Derive(Ecdh1DeriveParams::new(EcKdf::null(), peer_point));
        let template = [
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::GENERIC_SECRET),
            Attribute::Token(false),
            Attribute::Sensitive(false),
            Attribute::Extractable(true),
        ];
        let k = l.call(|s| s.derive_key(&mech, h, &template))?;
        let value = l.call(|s| s.get_attributes(k, &[AttributeType::Value]));
        let _ = l.call(|s| s.destroy_object(k));
        value?
            .into_iter()
            .find_map(|a| match a {
                Attribute::Value(v) => Some(Zeroizing::new(v)),
                _ => None,
            })
            .ok_or_else(|| {
                Error::Unsupported("ECDH: the token did not give the shared secret".into())
            })
    }

    fn logout(&self) -> Result<()> {
        self.pool.logout()
    }
}

impl Pkcs11Token {
    #[allow(clippy::too_many_arguments)]
    fn unwrap_host(
        &self,
        l: &mut Lease,
        h: ObjectHandle,
        mech: &Mechanism<'_>,
        alg: &KeyTransport,
        blob: &[u8],
        key_len: usize,
        place: AesOffload,
        fake: &[u8],
        tag: &str,
    ) -> Result<ContentKey> {
        let got = match l.call(|s| s.decrypt(mech, h, blob)) {
            Ok(v) => Some(Zeroizing::new(v)),
            Err(Error::Unsupported(_)) => {
                l.remember_refused(tag);
                if !self.pool.opts.allow_raw_rsa {
                    return Err(Error::Unsupported(format!(
                        "{alg} in this token (raw RSA fallback is off)"
                    )));
                }
                return self.unwrap_raw(l, h, alg, blob, key_len, place, fake);
            }
            Err(e @ Error::Unavailable { .. }) => return Err(e),
            Err(_) => None,
        };
        let ok = subtle::Choice::from(u8::from(got.as_ref().is_some_and(|g| g.len() == key_len)));
        let real = got
            .map(|g| g.to_vec())
            .filter(|g| g.len() == key_len)
            .unwrap_or_else(|| vec![0u8; key_len]);
        let chosen = Zeroizing::new(padding::ct_select(ok, &real, fake));
        self.host_or_token_key(l, &chosen, place)
    }

    #[allow(clippy::too_many_arguments)]
    fn unwrap_raw(
        &self,
        l: &mut Lease,
        h: ObjectHandle,
        alg: &KeyTransport,
        blob: &[u8],
        key_len: usize,
        place: AesOffload,
        fake: &[u8],
    ) -> Result<ContentKey> {
        let k = Self::modulus_bits(l, h)?.div_ceil(8);
        let em = if blob.len() == k {
            Self::raw_rsa(l, h, blob, true).ok().map(Zeroizing::new)
        } else {
            None
        };
        let em = em.filter(|e| e.len() <= k).map(|e| {
            // Left-pad to k bytes: raw RSA output may drop leading zeros.
            let mut full = Zeroizing::new(vec![0u8; k - e.len()]);
            full.extend_from_slice(&e);
            full
        });
        let (ok, m) = match (&em, alg) {
            (Some(em), KeyTransport::RsaPkcs1) => padding::eme_pkcs1_decode(em, key_len),
            (Some(em), KeyTransport::RsaOaep { hash, mgf1, label }) => {
                padding::eme_oaep_decode(em, *hash, *mgf1, label.as_deref().unwrap_or(&[]), key_len)
            }
            (None, _) => (subtle::Choice::from(0), vec![0u8; key_len]),
        };
        let m = Zeroizing::new(m);
        let chosen = Zeroizing::new(padding::ct_select(ok, &m, fake));
        self.host_or_token_key(l, &chosen, place)
    }

    fn key_id_of(&self, l: &mut Lease, key: &KeyRef) -> Result<Vec<u8>> {
        let h = l.find(key, ObjectClass::PRIVATE_KEY)?;
        let attrs = l.call(|s| s.get_attributes(h, &[AttributeType::Id]))?;
        Ok(label_of(&attrs).1)
    }

    fn public_key_of(&self, l: &mut Lease, privh: ObjectHandle) -> Result<Vec<u8>> {
        use aws_lc_rs::encoding::AsDer;
        let attrs = l.call(|s| {
            s.get_attributes(
                privh,
                &[
                    AttributeType::KeyType,
                    AttributeType::Modulus,
                    AttributeType::PublicExponent,
                    AttributeType::EcParams,
                    AttributeType::Id,
                    AttributeType::Label,
                ],
            )
        })?;
        let (mut n, mut e, mut params) = (None, None, None);
        for a in &attrs {
            match a {
                Attribute::Modulus(v) => n = Some(v.clone()),
                Attribute::PublicExponent(v) => e = Some(v.clone()),
                Attribute::EcParams(v) => params = Some(v.clone()),
                _ => {}
            }
        }
        if let (Some(n), Some(e)) = (n, e) {
            let comps = aws_lc_rs::rsa::PublicKeyComponents {
                n: n.as_slice(),
                e: e.as_slice(),
            };
            return Ok(comps
                .as_der()
                .map_err(|_| Error::Crypto("RSA public key encoding"))?
                .as_ref()
                .to_vec());
        }
        // EC: the point lives on the public key object with the same id.
        let (label, id) = label_of(&attrs);
        let params =
            params.ok_or_else(|| Error::KeyMaterial("the key exposes no public part".into()))?;
        let kind = KeyKind::from_ec_params(&params)
            .ok_or_else(|| Error::KeyMaterial("EC curve other than P-256 or P-384".into()))?;
        let key = KeyRef {
            label: Some(label).filter(|l| !l.is_empty()),
            id: Some(id).filter(|i| !i.is_empty()),
        };
        let pubh = l.find(&key, ObjectClass::PUBLIC_KEY)?;
        let pattrs = l.call(|s| s.get_attributes(pubh, &[AttributeType::EcPoint]))?;
        let point = pattrs
            .into_iter()
            .find_map(|a| {
                if let Attribute::EcPoint(p) = a {
                    Some(p)
                } else {
                    None
                }
            })
            .ok_or_else(|| Error::KeyMaterial("the public key has no EC point".into()))?;
        // CKA_EC_POINT is a DER OCTET STRING around the point.
        let point = if point.first() == Some(&0x04)
            && point.len() > 2
            && point[1] as usize == point.len() - 2
        {
            point[2..].to_vec()
        } else {
            point
        };
        let oid_ec = der_tlv(0x06, &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01])?;
        let alg_id = der_tlv(
            0x30,
            &[oid_ec, kind.ec_params().ok_or(Error::Crypto("curve"))?].concat(),
        )?;
        let bits = der_tlv(0x03, &[&[0u8][..], &point].concat())?;
        der_tlv(0x30, &[alg_id, bits].concat())
    }
}

/// A content key inside the token: a sensitive, non-extractable session object, destroyed on drop.
pub(crate) struct TokenKey {
    pool: Arc<Pool>,
    ctx: Arc<Ctx>,
    handle: ObjectHandle,
}

impl Drop for TokenKey {
    fn drop(&mut self) {
        if let Ok(mut l) = self.pool.lease()
            && Arc::ptr_eq(&l.ctx, &self.ctx)
        {
            let h = self.handle;
            let _ = l.call(|s| s.destroy_object(h));
        }
    }
}

impl TokenKey {
    pub(crate) fn cipher(
        &self,
        dir: CipherDirection,
        mode: &AesMode,
    ) -> Result<Box<dyn CipherStream>> {
        mode.check()?;
        let mut l = self.pool.lease()?;
        if !Arc::ptr_eq(&l.ctx, &self.ctx) {
            return Err(self
                .pool
                .unavailable("the token was reopened; the message key is gone"));
        }
        let h = self.handle;
        let mut iv_buf: Vec<u8>;
        let mech = match mode {
            AesMode::LegacyDes3Cbc { .. } => {
                return Err(Error::Unsupported(
                    "triple-DES in the token (place the key on the host)".into(),
                ));
            }
            AesMode::Cbc { iv } => Mechanism::AesCbcPad(*iv),
            AesMode::Gcm {
                nonce,
                aad,
                tag_len,
            } => {
                iv_buf = nonce.clone();
                let p =
                    GcmParams::new(&mut iv_buf, aad, ((*tag_len * 8) as u64).into()).map_err(ck)?;
                Mechanism::AesGcm(p)
            }
        };
        match dir {
            CipherDirection::Encrypt => l.call(|s| s.encrypt_init(&mech, h))?,
            // A key that cannot start a decryption (wrong length after implicit rejection) is
            // a bad key like any other.
            CipherDirection::Decrypt => {
                l.call(|s| s.decrypt_init(&mech, h)).map_err(|e| match e {
                    Error::Pkcs11 { .. } => Error::Decrypt,
                    other => other,
                })?
            }
        }
        let tag_len = match mode {
            AesMode::Gcm { tag_len, .. } => Some(*tag_len),
            AesMode::Cbc { .. } | AesMode::LegacyDes3Cbc { .. } => None,
        };
        Ok(Box::new(TokenCipher {
            lease: l,
            dir,
            tag_len,
            done: false,
        }))
    }
}

struct TokenCipher {
    lease: Lease,
    dir: CipherDirection,
    tag_len: Option<usize>,
    done: bool,
}

impl TokenCipher {
    fn data_error(&mut self, e: Error) -> Error {
        // After a failed C_*Update/Final the operation is over; bad data reads as Decrypt.
        self.done = true;
        match e {
            // Tokens differ in what they return for bad padding or a bad tag (SoftHSM2 says
            // CKR_GENERAL_ERROR); all of it is "does not decrypt".
            Error::Pkcs11 { .. } if self.dir == CipherDirection::Decrypt => Error::Decrypt,
            other => other,
        }
    }
}

impl CipherStream for TokenCipher {
    fn update(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<()> {
        let r = match self.dir {
            CipherDirection::Encrypt => self.lease.call(|s| s.encrypt_update(input)),
            CipherDirection::Decrypt => self.lease.call(|s| s.decrypt_update(input)),
        };
        match r {
            Ok(v) => {
                out.extend_from_slice(&v);
                Ok(())
            }
            Err(e) => Err(self.data_error(e)),
        }
    }

    fn finish(
        mut self: Box<Self>,
        tag: Option<&[u8]>,
        out: &mut Vec<u8>,
    ) -> Result<Option<Vec<u8>>> {
        match self.dir {
            CipherDirection::Encrypt => {
                let r = self.lease.call(|s| s.encrypt_final());
                self.done = true;
                let last = r?;
                match self.tag_len {
                    // PKCS#11 GCM appends the tag to the ciphertext: split it off.
                    Some(t) => {
                        let mut all = std::mem::take(out);
                        all.extend_from_slice(&last);
                        if all.len() < t {
                            return Err(Error::Crypto("AES-GCM output shorter than its tag"));
                        }
                        let tagv = all.split_off(all.len() - t);
                        *out = all;
                        Ok(Some(tagv))
                    }
                    None => {
                        out.extend_from_slice(&last);
                        Ok(None)
                    }
                }
            }
            CipherDirection::Decrypt => {
                if self.tag_len.is_some() {
                    let t = tag.ok_or(Error::Invalid("AES-GCM decryption needs the tag".into()))?;
                    let t = t.to_vec();
                    match self.lease.call(|s| s.decrypt_update(&t)) {
                        Ok(v) => out.extend_from_slice(&v),
                        Err(e) => return Err(self.data_error(e)),
                    }
                }
                let r = self.lease.call(|s| s.decrypt_final());
                self.done = true;
                match r {
                    Ok(v) => {
                        out.extend_from_slice(&v);
                        Ok(None)
                    }
                    Err(e) => Err(self.data_error(e)),
                }
            }
        }
    }
}

impl Drop for TokenCipher {
    fn drop(&mut self) {
        if !self.done {
            // End the abandoned operation so the session can go back to the pool. Closing the
            // session instead would destroy the session objects (content keys) made in it.
            let r = match self.dir {
                CipherDirection::Encrypt => self.lease.s().encrypt_final().map(drop),
                CipherDirection::Decrypt => self.lease.s().decrypt_final().map(drop),
            };
            if let Err(CkError::Pkcs11(RvError::OperationActive, _)) = r {
                self.lease.spoiled = true;
            }
        }
    }
}
