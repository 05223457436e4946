//! What happens to one queued message before delivery: policy decides, per recipient, and
//! the S/MIME engine runs. Blocking (token and file work): run it on a blocking thread.
//!
//! Outbound (external recipients of an internal sender): signed unless the destination or a
//! header is an exception, or the sender's rules say never; encrypted when the rules allow and
//! the recipient's certificate is known, and always when the rules (or the subject tag) demand
//! it: then a recipient without a certificate fails with the reason, and nothing goes out in
//! clear. The archive copy is sent as received. Recipients treated alike share one output.
//!
//! Inbound (internal recipients): the message is opened (decrypted with the recipient's key,
//! signatures verified), the signer's certificate harvested, and the result recorded in
//! `Authentication-Results` and `X-SMIME-Status`; such fields that came from outside are
//! removed first.

use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::Path;

use hsm::{AesOffload, Hash, KeyRef};

use crate::config::{CbcHtml, CipherName, Config, Encrypt, HashName, SignatureFormat};
use crate::mailbox::{self, Address, FromProblem};
use crate::policy::decide;
use crate::smime::encrypt::{Cipher, encrypt_stream};
use crate::smime::envelope::Recipient as KeyHolder;
use crate::smime::error::SmimeError;
use crate::smime::mime::Entity;
use crate::smime::open::{Layer, open_stream};
use crate::smime::sign::{Format, Signer};
use crate::smime::stream::{self, Span};
use crate::smime::trust;
use crate::spool::{Envelope, Status};
use crate::store::CertInfo;

use super::annotate::{self, SmimeResult, Verdict};
use crate::keys::{CertProblem, CertStore, Keys, Trust};

/// A message ready for one route and some of the recipients.
#[derive(Debug)]
pub struct Job {
    /// Indices into the envelope's recipients.
    pub recipients: Vec<usize>,
    pub inbound: bool,
    /// The bytes to send, or `None` for the spooled message as is.
    pub body: Option<Body>,
    /// What was done, for the log: "signed", "signed, encrypted", "as received (...)".
    pub treatment: String,
}

/// The pipeline's verdict on a message.
#[derive(Debug, Default)]
pub struct Plan {
    pub jobs: Vec<Job>,
    /// Recipients that fail for good, with the reason (a DSN tells the sender).
    pub failed: Vec<(usize, String)>,
    /// Recipients to retry later, with the reason.
    pub deferred: Vec<(usize, String)>,
}

/// What the pipeline needs.
#[derive(Debug)]
pub struct Context<'a> {
    pub config: &'a Config,
    /// The policy in force when the message was picked up.
    pub policy: &'a crate::config::Policy,
    pub keys: &'a Keys,
    pub certs: &'a CertStore,
    /// Trust anchors for inbound signatures (DER).
    pub anchors: &'a [Vec<u8>],
    /// Intermediate CA certificates the administrators imported, for path building (DER).
    pub intermediates: &'a [Vec<u8>],
    pub now: u64,
}

/// The signer's certificate and the intermediates of its path are neither revoked nor (when
/// that is refused) of unknown status.
fn not_revoked(ctx: &Context<'_>, cert: &[u8], chain: &[Vec<u8>]) -> Result<(), String> {
    let rev = ctx.certs.revocation();
    for (i, der) in std::iter::once(cert)
        .chain(chain.iter().map(Vec::as_slice))
        .enumerate()
    {
        let Some(info) = CertInfo::parse(der) else {
            continue;
        };
        rev.check(&info, ctx.now).map_err(|why| {
            if i == 0 {
                why
            } else {
                format!("its CA {}: {why}", info.short_name())
            }
        })?;
    }
    Ok(())
}

fn scratch() -> std::io::Result<File> {
    tempfile::tempfile()
}

/// Messages up to this size are signed and encrypted in memory; larger ones through a
/// temporary file (memory stays flat whatever the size).
const IN_MEMORY: u64 = 1 << 20;

/// A message made for delivery: in memory when small, else a temporary file.
#[derive(Debug)]
pub enum Body {
    File(File),
    Memory(std::io::Cursor<Vec<u8>>),
}

impl std::io::Read for Body {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Body::File(f) => f.read(buf),
            Body::Memory(m) => m.read(buf),
        }
    }
}

impl Seek for Body {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        match self {
            Body::File(f) => f.seek(pos),
            Body::Memory(m) => m.seek(pos),
        }
    }
}

/// Where a step of the engine writes: memory for a message of at most [`IN_MEMORY`] bytes.
enum Out {
    File(BufWriter<File>),
    Memory(Vec<u8>),
}

impl Out {
    fn for_size(size: u64) -> std::io::Result<Out> {
        Ok(if size <= IN_MEMORY {
            Out::Memory(Vec::with_capacity(size as usize + 8 * 1024))
        } else {
            Out::File(BufWriter::new(scratch()?))
        })
    }

    /// The output, ready to read from the start.
    fn finish(self) -> Result<Body, SmimeError> {
        Ok(match self {
            Out::File(w) => {
                let mut f = w.into_inner().map_err(|e| SmimeError::Io(e.into_error()))?;
                f.seek(SeekFrom::Start(0))?;
                Body::File(f)
            }
            Out::Memory(v) => Body::Memory(std::io::Cursor::new(v)),
        })
    }
}

impl Write for Out {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Out::File(w) => w.write(buf),
            Out::Memory(v) => v.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Out::File(w) => w.flush(),
            Out::Memory(_) => Ok(()),
        }
    }
}

/// Plans and runs the work for the pending recipients of `env`.
pub fn process(ctx: &Context<'_>, env: &Envelope, message: &Path) -> std::io::Result<Plan> {
    let mut plan = Plan::default();
    let mut outbound = Vec::new();
    let mut inbound = Vec::new();
    for (i, r) in env.recipients.iter().enumerate() {
        if !matches!(r.status, Status::Pending { .. }) {
            continue;
        }
        if env.report {
            outbound.push(i);
        } else if ctx.config.is_internal_address(&r.address) {
            inbound.push(i);
        } else {
            outbound.push(i);
        }
    }
    if env.report {
        // Our own reports go out as they are.
        let (int, ext): (Vec<usize>, Vec<usize>) = outbound
            .into_iter()
            .partition(|&i| ctx.config.is_internal_address(&env.recipients[i].address));
        for (rs, inbound) in [(int, true), (ext, false)] {
            if !rs.is_empty() {
                plan.jobs.push(Job {
                    recipients: rs,
                    inbound,
                    body: None,
                    treatment: "delivery report".into(),
                });
            }
        }
        return Ok(plan);
    }
    if !outbound.is_empty() {
        outbound_plan(ctx, env, message, &outbound, &mut plan)?;
    }
    if !inbound.is_empty() {
        inbound_plan(ctx, env, message, &inbound, &mut plan)?;
    }
    Ok(plan)
}

/// The header fields of the spooled message, and where its body starts.
fn header_of(src: &mut File) -> Result<(Vec<u8>, u64), SmimeError> {
    let span = stream::whole(src)?;
    stream::read_header(src, span)
}

fn hash_of(h: HashName) -> Hash {
    match h {
        HashName::Sha256 => Hash::Sha256,
        HashName::Sha384 => Hash::Sha384,
        HashName::Sha512 => Hash::Sha512,
    }
}

fn cipher_of(c: CipherName) -> Cipher {
    match c {
        CipherName::Aes128Cbc => Cipher::Aes128Cbc,
        CipherName::Aes256Cbc => Cipher::Aes256Cbc,
        CipherName::Aes128Gcm => Cipher::Aes128Gcm,
        CipherName::Aes256Gcm => Cipher::Aes256Gcm,
    }
}

/// Whether the subject carries the tag (any case); returns the subject without it.
fn strip_tag(subject: &str, tag: &str) -> Option<String> {
    let lower = subject.to_lowercase();
    let at = lower.find(&tag.to_lowercase())?;
    let mut s = String::new();
    s.push_str(subject[..at].trim_end());
    let rest = subject[at + tag.len()..].trim_start();
    if !s.is_empty() && !rest.is_empty() {
        s.push(' ');
    }
    s.push_str(rest);
    Some(s)
}

/// Copies the message to a new file with a header block changed by `edit`, which sees each
/// field and returns what to write instead (or nothing).
fn rewrite(
    src: &mut File,
    header: &[u8],
    body_start: u64,
    prepend: &[u8],
    edit: &mut dyn FnMut(&crate::smime::mime::Field<'_>) -> Option<Vec<u8>>,
) -> Result<File, SmimeError> {
    let entity = Entity::parse(header)?;
    let mut out = BufWriter::new(scratch()?);
    out.write_all(prepend)?;
    for f in &entity.fields {
        if let Some(b) = edit(f) {
            out.write_all(&b)?;
        }
    }
    // The empty line that ends the header, as it was written.
    let sep = if header.ends_with(b"\r\n\r\n") || header == b"\r\n" {
        &b"\r\n"[..]
    } else {
        &b"\n"[..]
    };
    out.write_all(sep)?;
    let end = src.seek(SeekFrom::End(0))?;
    stream::copy_span(
        src,
        Span {
            start: body_start,
            end,
        },
        &mut out,
    )?;
    let mut f = out
        .into_inner()
        .map_err(|e| SmimeError::Io(e.into_error()))?;
    f.seek(SeekFrom::Start(0))?;
    Ok(f)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Treatment {
    sign: bool,
    encrypt: bool,
    /// AES-GCM (AuthEnvelopedData) instead of the policy's CBC: every recipient of the
    /// group announced it.
    gcm: bool,
}

fn outbound_plan(
    ctx: &Context<'_>,
    env: &Envelope,
    message: &Path,
    rcpts: &[usize],
    plan: &mut Plan,
) -> std::io::Result<()> {
    let mut src = File::open(message)?;
    let policy = ctx.policy;
    let sender_internal = ctx.config.is_internal_address(&env.from);
    // A message whose header cannot be read cannot be signed: it fails with the reason when
    // policy would sign it, else it goes as it came.
    let malformed = |e: SmimeError| format!("the message is malformed: {e}");
    let (header, body_start) = match header_of(&mut src) {
        Ok(h) => h,
        Err(e) => return fail_or_pass(ctx, env, rcpts, plan, &malformed(e)),
    };
    let entity = match Entity::parse(&header) {
        Ok(e) => e,
        Err(e) => return fail_or_pass(ctx, env, rcpts, plan, &malformed(e)),
    };
    // The signing identity is the one recipients see: the From field, read strictly. An
    // authenticated user signs only as herself (or as what policy grants her).
    let from = mailbox::sender(entity.fields.iter().map(|f| (f.name, f.value.as_str())));
    if let Some(user) = env.authenticated.as_deref() {
        let allowed = from
            .as_ref()
            .is_ok_and(|a| policy.may_send_as(user, a.as_str()));
        if !allowed {
            let why = match &from {
                Ok(_) => format!(
                    "5.7.1 the From address is not one that user {user} may send as; the message was not sent"
                ),
                Err(p) => format!("5.7.1 {p}; the message was not sent"),
            };
            for &i in rcpts {
                plan.failed.push((i, why.clone()));
            }
            return Ok(());
        }
    }
    // Mail from the internal MTA: the key is chosen by From, never by the envelope sender.
    let (identity, sender_internal) = match &from {
        Ok(a) => (
            a.as_str().to_string(),
            ctx.config.is_internal_address(a.as_str()),
        ),
        Err(_) => (env.from.clone(), sender_internal),
    };
    let rules = policy.rules_for(&identity);
    let fields: Vec<(&str, &str)> = entity
        .fields
        .iter()
        .map(|f| (f.name, f.value.as_str()))
        .collect();
    // The subject tag forces encryption and is removed from what is sent.
    let mut tagged: Option<File> = None;
    if sender_internal && let Some(tag) = &policy.encrypt_subject_tag {
        let subject = entity.field("Subject").unwrap_or("").to_string();
        if let Some(new_subject) = strip_tag(&subject, tag) {
            let mut edit = |f: &crate::smime::mime::Field<'_>| {
                if f.name.eq_ignore_ascii_case("Subject") {
                    Some(format!("Subject: {new_subject}\r\n").into_bytes())
                } else {
                    Some(f.raw.to_vec())
                }
            };
            match rewrite(&mut src, &header, body_start, b"", &mut edit) {
                Ok(f) => tagged = Some(f),
                Err(e) => return Err(std::io::Error::other(e.to_string())),
            }
        }
    }
    let forced = tagged.is_some();
    // The never-sign header rule that matched, for the log.
    let mut header_exception: Option<String> = None;

    let mut groups: std::collections::BTreeMap<Treatment, (Vec<usize>, Vec<Vec<u8>>)> =
        Default::default();
    for &i in rcpts {
        let addr = &env.recipients[i].address;
        let d = decide(
            policy,
            &identity,
            sender_internal,
            addr,
            Some(&fields),
            forced,
        );
        // A sender not ours (relayed for an internal client) and the archive copy: as received.
        if d.as_received.is_some() {
            groups
                .entry(Treatment {
                    sign: false,
                    encrypt: false,
                    gcm: false,
                })
                .or_default()
                .0
                .push(i);
            continue;
        }
        if d.header_exception.is_some() {
            header_exception.clone_from(&d.header_exception);
        }
        let (sign, encrypt_mode) = (d.sign, d.encrypt);
        let cert = match encrypt_mode {
            Encrypt::Never => None,
            _ => match ctx.certs.lookup(
                addr,
                ctx.now,
                &Trust {
                    anchors: ctx.anchors,
                    intermediates: ctx.intermediates,
                },
            ) {
                Ok(c) => c,
                // The directory could not say: the message waits rather than going out
                // unencrypted (or bouncing) on a guess.
                Err(why) => {
                    plan.deferred.push((i, format!("4.4.3 {why}")));
                    continue;
                }
            },
        };
        if encrypt_mode == Encrypt::Required && cert.is_none() {
            plan.failed.push((
                i,
                format!(
                    "5.7.1 policy requires encryption and no valid S/MIME certificate of {addr} is known; the message was not sent"
                ),
            ));
            continue;
        }
        // The policy's cipher, or AES-GCM when the recipient announced it (in a trusted
        // signature) and the policy's is CBC: content that cannot be altered unseen.
        let gcm = cert.is_some()
            && matches!(rules.cipher, CipherName::Aes128Cbc | CipherName::Aes256Cbc)
            && ctx.certs.announces_gcm(addr);
        let t = Treatment {
            sign,
            encrypt: cert.is_some(),
            gcm,
        };
        let g = groups.entry(t).or_default();
        g.0.push(i);
        if let Some(c) = cert {
            g.1.push(c);
        }
    }

    // The key of the From address; without one, the groups that sign wait (4.7.1: the
    // token or the certificate may come) or fail (5.7.1: no From to sign as).
    let signer_key = if groups.keys().any(|t| t.sign) {
        let key = match &from {
            Ok(a) => ctx.keys.signer(a.as_str(), ctx.now).map_err(|problem| {
                let why = match problem {
                    CertProblem::NotFound => "4.7.1 S/MIME certificate is not found".to_string(),
                    CertProblem::Expired => "4.7.1 S/MIME certificate is expired".to_string(),
                    CertProblem::Token(e) => format!("4.7.1 key token: {e}"),
                };
                (true, why)
            }),
            // Whose key would it be? Nobody's, and the message is not sent unsigned either.
            Err(p) => Err((
                false,
                format!("5.7.1 cannot sign: {p}; the message was not sent"),
            )),
        };
        match key {
            Ok(k) => Some(k),
            Err((temporary, why)) => {
                for (t, (rs, _)) in &groups {
                    if t.sign {
                        for &i in rs {
                            if temporary {
                                plan.deferred.push((i, why.clone()));
                            } else {
                                plan.failed.push((i, why.clone()));
                            }
                        }
                    }
                }
                groups.retain(|t, _| !t.sign);
                None
            }
        }
    } else {
        None
    };

    let token = ctx.keys.token().clone();
    for (t, (rs, certs)) in groups {
        let mut input: File = match &tagged {
            Some(f) => f.try_clone()?,
            None => File::open(message)?,
        };
        input.seek(SeekFrom::Start(0))?;
        let size = input.metadata().map(|m| m.len()).unwrap_or(u64::MAX);
        let result: Result<Option<Body>, SmimeError> = (|| {
            if !t.sign && !t.encrypt {
                return Ok(if forced {
                    Some(Body::File(input.try_clone()?))
                } else {
                    None
                });
            }
            let mut current = Body::File(input);
            if t.sign {
                let k = signer_key
                    .as_ref()
                    .ok_or_else(|| SmimeError::Certificate("no signing key".into()))?;
                let signer = Signer {
                    cert: &k.chain[0],
                    chain: &k.chain[1..],
                    token: token.as_ref(),
                    key: KeyRef::label(k.label.clone()),
                    hash: hash_of(rules.hash),
                    pss: false,
                };
                let format = match rules.format {
                    SignatureFormat::Detached => Format::Detached,
                    SignatureFormat::Opaque => Format::Opaque,
                };
                let mut out = Out::for_size(size)?;
                signer
                    .prepare()?
                    .sign_stream(&mut current, format, ctx.now, &mut out)?;
                current = out.finish()?;
            }
            if t.encrypt {
                let mut out = Out::for_size(size)?;
                encrypt_stream(
                    &mut current,
                    &certs,
                    match (t.gcm, rules.cipher) {
                        (true, CipherName::Aes128Cbc) => Cipher::Aes128Gcm,
                        (true, _) => Cipher::Aes256Gcm,
                        (false, c) => cipher_of(c),
                    },
                    false,
                    &mut out,
                )?;
                current = out.finish()?;
            }
            Ok(Some(current))
        })();
        let treatment = match (t.sign, t.encrypt) {
            (true, true) => "signed, encrypted".to_string(),
            (true, false) => "signed".into(),
            (false, true) => "encrypted".into(),
            (false, false) if !sender_internal => "as received (external sender)".into(),
            (false, false) => match &header_exception {
                Some(h) => format!("not signed ({h} matches a never-sign header rule)"),
                None => "not signed (destination or policy exception)".into(),
            },
        };
        match result {
            Ok(body) => plan.jobs.push(Job {
                recipients: rs,
                inbound: false,
                body,
                treatment,
            }),
            Err(e) if e.is_temporary() => {
                for i in rs {
                    plan.deferred.push((i, format!("4.7.1 S/MIME: {e}")));
                }
            }
            Err(e) => {
                for i in rs {
                    plan.failed.push((i, format!("5.7.1 S/MIME: {e}")));
                }
            }
        }
    }
    Ok(())
}

/// A message that cannot be parsed: recipients whose policy would sign or encrypt it fail
/// with `why`; the others get it as received.
fn fail_or_pass(
    ctx: &Context<'_>,
    env: &Envelope,
    rcpts: &[usize],
    plan: &mut Plan,
    why: &str,
) -> std::io::Result<()> {
    let internal = ctx.config.is_internal_address(&env.from);
    let mut pass = Vec::new();
    for &i in rcpts {
        let addr = &env.recipients[i].address;
        // The header could not be read: no header exception can be known.
        if decide(ctx.policy, &env.from, internal, addr, None, false).protects() {
            plan.failed.push((i, format!("5.6.0 {why}")));
        } else {
            pass.push(i);
        }
    }
    if !pass.is_empty() {
        plan.jobs.push(Job {
            recipients: pass,
            inbound: false,
            body: None,
            treatment: "as received (unparsable)".into(),
        });
    }
    Ok(())
}

fn inbound_plan(
    ctx: &Context<'_>,
    env: &Envelope,
    message: &Path,
    rcpts: &[usize],
    plan: &mut Plan,
) -> std::io::Result<()> {
    let token = ctx.keys.token().clone();
    // Every key of these recipients may be the one the message was encrypted for.
    let entries: Vec<_> = rcpts
        .iter()
        .flat_map(|&i| ctx.keys.all(&env.recipients[i].address))
        .collect();
    let holders: Vec<KeyHolder<'_>> = entries
        .iter()
        .map(|e| KeyHolder {
            cert: &e.chain[0],
            token: token.as_ref(),
            key: KeyRef::label(e.label.clone()),
            offload: AesOffload::Host,
        })
        .collect();
    let mut src = File::open(message)?;
    let result = open_and_annotate(ctx, env, &mut src, &holders);
    match result {
        Ok(Inbound::Deliver(body, verdict)) => plan.jobs.push(Job {
            recipients: rcpts.to_vec(),
            inbound: true,
            body: Some(Body::File(body)),
            treatment: verdict.summary(),
        }),
        Ok(Inbound::Refuse(why)) => {
            tracing::warn!(id = %env.id, "inbound message refused by policy: {why}");
            for &i in rcpts {
                plan.failed.push((i, format!("5.7.1 {why}")));
            }
        }
        Err(e) if e.is_temporary() => {
            for &i in rcpts {
                plan.deferred.push((i, format!("4.7.1 S/MIME: {e}")));
            }
        }
        Err(e) => {
            // Not S/MIME we can open (malformed): delivered as received, with a verdict of
            // our own words in the status field (the error, which may quote the message,
            // goes to the log only), so mail is never lost to a parser.
            tracing::info!(id = %env.id, "inbound message not opened: {e}");
            let verdict = Verdict::new(SmimeResult::PermError, not_opened(&e));
            let body = annotate_only(ctx, env, &mut src, &verdict)?;
            plan.jobs.push(Job {
                recipients: rcpts.to_vec(),
                inbound: true,
                body: Some(Body::File(body)),
                treatment: verdict.summary(),
            });
        }
    }
    Ok(())
}

/// What an inbound message becomes.
enum Inbound {
    Deliver(File, Verdict),
    /// Refused by policy, with the reason for the DSN.
    Refuse(String),
}

/// Our words for an error that stopped a message being opened.
fn not_opened(e: &SmimeError) -> &'static str {
    match e {
        SmimeError::Malformed(_) => "the message could not be opened: malformed MIME or CMS",
        SmimeError::Unsupported(_) => {
            "the message could not be opened: an unsupported algorithm or structure"
        }
        SmimeError::NotRecipient(_) => "not decrypted: not encrypted to a key of ours",
        SmimeError::Decrypt => "not decrypted: the decryption failed",
        SmimeError::Certificate(_) => "the message could not be opened: an unusable certificate",
        _ => "the message could not be opened",
    }
}

/// The message as received, with our status fields in place of any that came with it. Never
/// fails on the message's bytes (only on I/O).
fn annotate_only(
    ctx: &Context<'_>,
    env: &Envelope,
    src: &mut File,
    verdict: &Verdict,
) -> std::io::Result<File> {
    let io = |e: SmimeError| std::io::Error::other(e.to_string());
    let (header, body_start) = header_of(src).map_err(io)?;
    let fields = verdict.fields(&ctx.config.server.hostname);
    let composed = annotate::compose(&fields, &header, None, &env.from);
    let end = src.seek(SeekFrom::End(0))?;
    with_header(
        &composed,
        src,
        Span {
            start: body_start,
            end,
        },
    )
    .map_err(io)
}

/// A new message: `header`, then the bytes `body` of `src`; a scratch file, ready to read.
fn with_header(header: &[u8], src: &mut File, body: Span) -> Result<File, SmimeError> {
    let mut out = BufWriter::new(scratch()?);
    out.write_all(header)?;
    stream::copy_span(src, body, &mut out)?;
    let mut f = out
        .into_inner()
        .map_err(|e| SmimeError::Io(e.into_error()))?;
    f.seek(SeekFrom::Start(0))?;
    Ok(f)
}

/// The verdict on one signer: (rank, result, our text); pass > neutral > fail.
fn judge_signer(
    ctx: &Context<'_>,
    from: &Result<Address, FromProblem>,
    signer: &crate::smime::signed::SignerResult,
    certificates: &[Vec<u8>],
) -> (u8, SmimeResult, String) {
    let cert = match (&signer.cert, signer.valid) {
        (Some(cert), true) => cert,
        (None, true) => {
            return (
                1,
                SmimeResult::Neutral,
                "the signer's certificate is not in the message".into(),
            );
        }
        (_, false) => {
            return (0, SmimeResult::Fail, "bad signature".into());
        }
    };
    let mut path = certificates.to_vec();
    path.extend_from_slice(ctx.intermediates);
    // The path (and revocation), then the signer's address against the From field.
    let trusted = trust::check_signer_path(cert, &path, ctx.anchors, ctx.now, None)
        .and_then(|chain| not_revoked(ctx, cert, &chain));
    let names = |a: &Address| {
        der::Decode::from_der(cert)
            .map(|c: x509_cert::Certificate| {
                trust::addresses(&c)
                    .iter()
                    .any(|n| n.eq_ignore_ascii_case(a.as_str()))
            })
            .unwrap_or(false)
    };
    match from {
        Ok(addr) if names(addr) => {
            // Kept to encrypt replies: as a correspondent's certificate when trusted, else
            // as a candidate for an administrator to approve. What a trusted signer
            // announces (AES-GCM) chooses the cipher of replies; an untrusted one could
            // only use that to push them down to CBC.
            ctx.certs.harvest(addr, cert, trusted.is_ok());
            if trusted.is_ok()
                && let Some(gcm) = signer.announces_gcm
            {
                ctx.certs.note_capabilities(addr, gcm);
            }
            match trusted {
                Ok(()) => (2, SmimeResult::Pass, format!("signed by {addr}")),
                Err(why) => (
                    1,
                    SmimeResult::Neutral,
                    format!("signature valid but not trusted: {why}"),
                ),
            }
        }
        Ok(_) => (
            1,
            SmimeResult::Neutral,
            match trusted {
                Ok(()) => {
                    "signature valid but the certificate does not name the From address".to_string()
                }
                Err(why) => format!("signature valid but not trusted: {why}"),
            },
        ),
        Err(problem) => (
            1,
            SmimeResult::Neutral,
            format!("signature valid but {}", problem.describe()),
        ),
    }
}

fn open_and_annotate(
    ctx: &Context<'_>,
    env: &Envelope,
    src: &mut File,
    holders: &[KeyHolder<'_>],
) -> Result<Inbound, SmimeError> {
    let (outer_header, outer_body) = header_of(src)?;
    let outer = Entity::parse(&outer_header)?;
    src.seek(SeekFrom::Start(0))?;
    let mut inner = BufWriter::new(scratch()?);
    let mut make =
        || -> std::io::Result<Box<dyn crate::smime::open::Buffer>> { Ok(Box::new(scratch()?)) };
    let mut opened = open_stream(src, holders, &mut make, &mut inner)?;
    // A token that cannot be asked now (gone, or stopped by a tamper) is no verdict on the
    // message: it waits in the queue rather than going out undecrypted.
    if opened
        .stopped
        .as_ref()
        .is_some_and(SmimeError::is_temporary)
        && let Some(e) = opened.stopped.take()
    {
        return Err(e);
    }
    let mut inner = inner
        .into_inner()
        .map_err(|e| SmimeError::Io(e.into_error()))?;
    inner.seek(SeekFrom::Start(0))?;

    // The verdict. The signer is tied to the one From field, read strictly.
    let from = mailbox::sender(outer.fields.iter().map(|f| (f.name, f.value.as_str())));
    let mut decrypted = false;
    // Content decrypted from CBC (EnvelopedData) has no integrity of its own.
    let mut unauthenticated = false;
    let mut signed = None::<(u8, SmimeResult, String)>;
    for layer in &opened.layers {
        match layer {
            Layer::Encrypted(info) => {
                decrypted = true;
                unauthenticated |= !info.authenticated;
            }
            Layer::Signed {
                signers,
                certificates,
                ..
            } => {
                for s in signers {
                    let verdict = judge_signer(ctx, &from, s, certificates);
                    if signed.as_ref().is_none_or(|(rank, _, _)| *rank < verdict.0) {
                        signed = Some(verdict);
                    }
                }
            }
        }
    }
    // A signature that verifies (trusted or not) covers the content: CBC gadgets would break
    // it. Without one, decrypted CBC content may have been rewritten on the way.
    let integrity_lost = decrypted
        && unauthenticated
        && !opened
            .layers
            .iter()
            .any(|l| matches!(l, Layer::Signed { signers, .. } if signers.iter().any(|s| s.valid)));
    let verdict = match (&opened.stopped, decrypted, signed) {
        (Some(e), _, _) => {
            tracing::info!(id = %env.id, "inbound message not decrypted: {e}");
            Verdict::new(SmimeResult::PermError, not_opened(e))
        }
        (None, _, Some((_, result, text))) => {
            let mut d = if decrypted {
                format!("decrypted; {text}")
            } else {
                text
            };
            if integrity_lost {
                d.push_str("; not integrity protected");
            }
            Verdict::new(result, &d)
        }
        (None, true, None) => Verdict::new(
            SmimeResult::None,
            if unauthenticated {
                "decrypted; not signed; not integrity protected"
            } else {
                "decrypted; not signed"
            },
        ),
        (None, false, None) => Verdict::new(SmimeResult::None, ""),
    };
    if integrity_lost
        && ctx.policy.unauthenticated_cbc_html == CbcHtml::Refuse
        && holds_html(&mut inner)?
    {
        return Ok(Inbound::Refuse(
            "the message was refused: HTML in CBC-encrypted content without a valid signature \
             (it could have been altered on the way; ask the sender to sign, or to use AES-GCM)"
                .into(),
        ));
    }
    let fields = verdict.fields(&ctx.config.server.hostname);

    let f = if opened.layers.is_empty() {
        // Nothing was opened: the message as received, annotated.
        let header = annotate::compose(&fields, &outer_header, None, &env.from);
        let end = src.seek(SeekFrom::End(0))?;
        with_header(
            &header,
            src,
            Span {
                start: outer_body,
                end,
            },
        )?
    } else {
        // The outer fields (From, To, Subject, Date, Received...) around the opened entity,
        // of whose own fields only the Content-* ones describe it.
        let whole = stream::whole(&mut inner)?;
        let (inner_header, inner_body) = stream::read_header(&mut inner, whole)?;
        let header = annotate::compose(&fields, &outer_header, Some(&inner_header), &env.from);
        with_header(
            &header,
            &mut inner,
            Span {
                start: inner_body,
                end: whole.end,
            },
        )?
    };
    Ok(Inbound::Deliver(f, verdict))
}

/// Whether decrypted content holds HTML that may reference anything remote. Deliberately
/// wide: an HTML part under a transfer encoding counts too, since CBC gadgets can write
/// encoded text as easily as plain.
fn holds_html(src: &mut File) -> std::io::Result<bool> {
    use std::io::Read;
    const MARKERS: &[&[u8]] = &[
        b"src=",
        b"href=",
        b"url(",
        b"://",
        b"srcset",
        b"background",
        b"action=",
        b"base64",
        b"quoted-printable",
        b"<link",
        b"<meta",
    ];
    src.seek(SeekFrom::Start(0))?;
    let mut html = false;
    let mut remote = false;
    let mut buf = vec![0u8; 64 * 1024];
    // The end of the previous chunk, so a marker split across reads is still found.
    let mut carry: Vec<u8> = Vec::new();
    loop {
        let n = src.read(&mut buf)?;
        if n == 0 {
            break;
        }
        let mut window = std::mem::take(&mut carry);
        window.extend(buf[..n].iter().map(u8::to_ascii_lowercase));
        html |= window.windows(9).any(|w| w == b"text/html");
        remote |= MARKERS
            .iter()
            .any(|m| window.windows(m.len()).any(|w| w == *m));
        if html && remote {
            break;
        }
        carry = window[window.len().saturating_sub(32)..].to_vec();
    }
    src.seek(SeekFrom::Start(0))?;
    Ok(html && remote)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_tag_is_removed() {
        assert_eq!(
            strip_tag("[encrypt] Salaries", "[encrypt]").as_deref(),
            Some("Salaries")
        );
        assert_eq!(
            strip_tag("Salaries [ENCRYPT]", "[encrypt]").as_deref(),
            Some("Salaries")
        );
        assert_eq!(
            strip_tag("Re: [Encrypt] x", "[encrypt]").as_deref(),
            Some("Re: x")
        );
        assert_eq!(strip_tag("Salaries", "[encrypt]"), None);
    }
}
