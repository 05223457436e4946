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

use crate::config::{CipherName, Config, Encrypt, HashName, Sign, SignatureFormat};
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

use super::keys::{CertProblem, CertStore, Keys};

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
                format!("its CA {}: {why}", crate::admin::short_name(&info))
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
    let rules = policy.rules_for(&env.from);
    let header_exception = policy.never_sign_headers.iter().find(|h| {
        entity
            .fields
            .iter()
            .any(|f| f.name.eq_ignore_ascii_case(&h.name) && h.pattern.is_match(&f.value))
    });
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
    let encrypt_mode = if forced {
        Encrypt::Required
    } else {
        rules.encrypt
    };

    let mut groups: std::collections::BTreeMap<Treatment, (Vec<usize>, Vec<Vec<u8>>)> =
        Default::default();
    for &i in rcpts {
        let addr = &env.recipients[i].address;
        // A sender not ours (relayed for an internal client) and the archive copy: as received.
        let archive = policy
            .archive_bcc
            .as_deref()
            .is_some_and(|a| a.eq_ignore_ascii_case(addr));
        if !sender_internal || archive {
            groups
                .entry(Treatment {
                    sign: false,
                    encrypt: false,
                })
                .or_default()
                .0
                .push(i);
            continue;
        }
        let sign =
            rules.sign == Sign::Always && !policy.never_sign_to(addr) && header_exception.is_none();
        let cert = match encrypt_mode {
            Encrypt::Never => None,
            _ => match ctx.certs.lookup(addr, ctx.now) {
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
        let t = Treatment {
            sign,
            encrypt: cert.is_some(),
        };
        let g = groups.entry(t).or_default();
        g.0.push(i);
        if let Some(c) = cert {
            g.1.push(c);
        }
    }

    let signer_key = if groups.keys().any(|t| t.sign) {
        match ctx.keys.signer(&env.from, ctx.now) {
            Ok(k) => Some(k),
            Err(problem) => {
                let (temporary, why) = match problem {
                    CertProblem::NotFound => {
                        (true, "4.7.1 S/MIME certificate is not found".to_string())
                    }
                    CertProblem::Expired => {
                        (true, "4.7.1 S/MIME certificate is expired".to_string())
                    }
                    CertProblem::Token(e) => (true, format!("4.7.1 key token: {e}")),
                };
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
                    cipher_of(rules.cipher),
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
            (false, false) => match header_exception {
                Some(h) => format!("not signed ({} matches a never-sign header rule)", h.name),
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
    let policy = ctx.policy;
    let rules = policy.rules_for(&env.from);
    let internal = ctx.config.is_internal_address(&env.from);
    let mut pass = Vec::new();
    for &i in rcpts {
        let addr = &env.recipients[i].address;
        let protect = internal
            && ((rules.sign == Sign::Always && !policy.never_sign_to(addr))
                || rules.encrypt == Encrypt::Required);
        if protect {
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

/// Header fields that only this gateway may write.
fn is_status_field(name: &str) -> bool {
    name.eq_ignore_ascii_case("X-SMIME-Status")
        || name.eq_ignore_ascii_case("Authentication-Results")
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
        Ok((body, status)) => plan.jobs.push(Job {
            recipients: rcpts.to_vec(),
            inbound: true,
            body: Some(Body::File(body)),
            treatment: status,
        }),
        Err(e) if e.is_temporary() => {
            for &i in rcpts {
                plan.deferred.push((i, format!("4.7.1 S/MIME: {e}")));
            }
        }
        Err(e) => {
            // Not S/MIME we can open (malformed): delivered as received, with the reason in
            // the status field, so mail is never lost to a parser.
            let why = format!("error ({e})");
            let body = annotate_only(ctx, &mut src, &why)
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            plan.jobs.push(Job {
                recipients: rcpts.to_vec(),
                inbound: true,
                body: Some(Body::File(body)),
                treatment: why,
            });
        }
    }
    Ok(())
}

/// The status fields for a result.
fn status_fields(hostname: &str, smime: &str, detail: &str) -> Vec<u8> {
    format!(
        "Authentication-Results: {hostname}; smime={smime}{}\r\nX-SMIME-Status: {smime}{}\r\n",
        if detail.is_empty() {
            String::new()
        } else {
            format!(" ({detail})")
        },
        if detail.is_empty() {
            String::new()
        } else {
            format!("; {detail}")
        },
    )
    .into_bytes()
}

/// The message as received, with our status fields in place of any that came with it.
fn annotate_only(ctx: &Context<'_>, src: &mut File, status: &str) -> Result<File, SmimeError> {
    let (header, body_start) = header_of(src)?;
    let fields = status_fields(&ctx.config.server.hostname, status, "");
    let mut keep =
        |f: &crate::smime::mime::Field<'_>| (!is_status_field(f.name)).then(|| f.raw.to_vec());
    rewrite(src, &header, body_start, &fields, &mut keep)
}

fn open_and_annotate(
    ctx: &Context<'_>,
    env: &Envelope,
    src: &mut File,
    holders: &[KeyHolder<'_>],
) -> Result<(File, String), SmimeError> {
    let (outer_header, _) = header_of(src)?;
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

    // The verdict.
    let from = outer
        .field("From")
        .and_then(trust::from_address)
        .unwrap_or_else(|| env.from.clone());
    let mut decrypted = false;
    // The best signer's result: (rank, RFC 7281 result, text); pass > neutral > fail.
    let mut signed = None::<(u8, &'static str, String)>;
    for layer in &opened.layers {
        match layer {
            Layer::Encrypted(_) => decrypted = true,
            Layer::Signed {
                signers,
                certificates,
                ..
            } => {
                for s in signers {
                    let verdict = match (&s.cert, s.valid) {
                        (Some(cert), true) => {
                            // The certificate of a valid signature is kept to encrypt replies,
                            // trusted or not, as mail clients do.
                            ctx.certs.harvest(&from, cert);
                            let mut path = certificates.clone();
                            path.extend_from_slice(ctx.intermediates);
                            match trust::check_signer_path(
                                cert,
                                &path,
                                ctx.anchors,
                                ctx.now,
                                Some(&from),
                            )
                            .and_then(|chain| not_revoked(ctx, cert, &chain))
                            {
                                Ok(()) => (2, "pass", format!("signed by {from}")),
                                Err(why) => (
                                    1,
                                    "neutral",
                                    format!("signature valid but not trusted: {why}"),
                                ),
                            }
                        }
                        (None, true) => (
                            1,
                            "neutral",
                            "the signer's certificate is not in the message".to_string(),
                        ),
                        (_, false) => (
                            0,
                            "fail",
                            format!("bad signature: {}", s.reason.clone().unwrap_or_default()),
                        ),
                    };
                    if signed.as_ref().is_none_or(|(rank, _, _)| *rank < verdict.0) {
                        signed = Some(verdict);
                    }
                }
            }
        }
    }
    let (smime, detail) = match (&opened.stopped, decrypted, signed) {
        (Some(e), _, _) => ("fail".to_string(), format!("not decrypted: {e}")),
        (None, _, Some((_, result, text))) => (
            result.to_string(),
            if decrypted {
                format!("decrypted; {text}")
            } else {
                text
            },
        ),
        (None, true, None) => ("none".to_string(), "decrypted; not signed".into()),
        (None, false, None) => ("none".to_string(), String::new()),
    };
    let fields = status_fields(&ctx.config.server.hostname, &smime, &detail);
    let summary = format!("{smime} {detail}").trim().to_string();

    if opened.layers.is_empty() || opened.stopped.is_some() && opened.layers.is_empty() {
        // Nothing was opened: the message as received, annotated.
        src.seek(SeekFrom::Start(0))?;
        let (header, body_start) = header_of(src)?;
        let mut keep =
            |f: &crate::smime::mime::Field<'_>| (!is_status_field(f.name)).then(|| f.raw.to_vec());
        return Ok((
            rewrite(src, &header, body_start, &fields, &mut keep)?,
            summary,
        ));
    }
    // The outer fields (From, To, Subject, Date, Received...) around the opened entity,
    // whose own Content-* fields describe it.
    let mut out = BufWriter::new(scratch()?);
    out.write_all(&fields)?;
    for f in &outer.fields {
        let n = f.name.to_ascii_lowercase();
        if is_status_field(f.name) || n.starts_with("content-") || n == "mime-version" {
            continue;
        }
        out.write_all(f.raw)?;
    }
    out.write_all(b"MIME-Version: 1.0\r\n")?;
    std::io::copy(&mut inner, &mut out)?;
    let mut f = out
        .into_inner()
        .map_err(|e| SmimeError::Io(e.into_error()))?;
    f.seek(SeekFrom::Start(0))?;
    Ok((f, summary))
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
