//! Signing: CMS SignedData (RFC 5652) with the S/MIME signed attributes (RFC 8551 §2.5), as a
//! detached multipart/signed message or an opaque application/pkcs7-mime one.
//!
//! The message's top-level header fields (From, To, Subject, Date, Message-ID, ...) stay
//! outside; its Content-* fields and body form the signed entity. Before signing, 8-bit or
//! overlong content is given a 7-bit transfer encoding (quoted-printable for text, base64
//! otherwise, part by part inside multiparts) and line endings become CRLF, so the signature
//! survives any relay. The private key operation is the token's.

use std::io::{BufRead, Cursor, Write};

use hsm::{Hash, KeyKind, KeyRef, SignAlgorithm, Token};

use super::asn1::{self, algorithm, explicit, octets, oid, seq, set_of, uint};
use super::error::{Result, SmimeError};
use super::mime::{self, Entity};
use super::oid as ids;
use super::stream::{self, B64Encoder, Digests, Source, Span};

/// How deep multiparts may nest when content is re-encoded.
const MAX_DEPTH: usize = 16;

/// Who signs, with what.
pub struct Signer<'a> {
    /// The signer's certificate (DER).
    pub cert: &'a [u8],
    /// Certificates to include after it (intermediates), DER.
    pub chain: &'a [Vec<u8>],
    pub token: &'a dyn Token,
    pub key: KeyRef,
    /// SHA-256, SHA-384 or SHA-512.
    pub hash: Hash,
    /// RSA-PSS instead of PKCS#1 v1.5 (RSA keys only).
    pub pss: bool,
}

impl std::fmt::Debug for Signer<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signer({}, {:?}, pss {})", self.key, self.hash, self.pss)
    }
}

/// Detached (multipart/signed) or opaque (application/pkcs7-mime; smime-type=signed-data).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Detached,
    Opaque,
}

/// Signs an RFC 5322 message in memory; see [`sign_stream`].
pub fn sign_message(
    message: &[u8],
    signer: &Signer<'_>,
    format: Format,
    now: u64,
) -> Result<Vec<u8>> {
    signer.prepare()?.sign_message(message, format, now)
}

/// Signs an RFC 5322 message read from `src`, writing the signed message to `out`; `now`
/// (seconds since the Unix epoch) is the signingTime. The content is read twice (once to
/// hash, once to write), never held in memory whole.
pub fn sign_stream(
    src: &mut dyn Source,
    signer: &Signer<'_>,
    format: Format,
    now: u64,
    out: &mut dyn Write,
) -> Result<()> {
    signer.prepare()?.sign_stream(src, format, now, out)
}

/// A signer checked once (the key belongs to the certificate, the algorithm suits the key)
/// and its fixed parts encoded, for signing many messages.
#[derive(Debug)]
pub struct Prepared<'a> {
    signer: &'a Signer<'a>,
    alg: SignAlgorithm,
    digest_alg: Vec<u8>,
    /// IssuerAndSerialNumber.
    ias: Vec<u8>,
    /// The `[0] certificates` element.
    certificates: Vec<u8>,
}

impl<'a> Signer<'a> {
    /// Checks the key against the certificate (one token round trip) and encodes what every
    /// signature repeats.
    pub fn prepare(&'a self) -> Result<Prepared<'a>> {
        let cert =
            hsm::cert_summary(self.cert).map_err(|e| SmimeError::Certificate(e.to_string()))?;
        let spki = super::signed::spki_of(self.cert)?;
        let kind = hsm::public::public_key_kind(&spki)?;
        let token_spki = self.token.public_key(&self.key)?;
        if token_spki != spki {
            return Err(SmimeError::Certificate(
                "the key does not belong to the signer's certificate".into(),
            ));
        }
        let mut certs = self.cert.to_vec();
        for c in self.chain {
            if c.as_slice() != self.cert {
                certs.extend_from_slice(c);
            }
        }
        Ok(Prepared {
            signer: self,
            alg: sign_algorithm(self, kind)?,
            digest_alg: algorithm(hash_oid(self.hash), None),
            ias: seq(&[&cert.issuer_der, &cert.serial_der]),
            certificates: asn1::tlv(0xa0, &certs),
        })
    }
}

impl Prepared<'_> {
    /// Signs a message in memory; see [`Prepared::sign_stream`].
    pub fn sign_message(&self, message: &[u8], format: Format, now: u64) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(message.len() * 2 + 4096);
        self.sign_stream(&mut Cursor::new(message), format, now, &mut out)?;
        Ok(out)
    }

    /// Signs the message read from `src`, writing the signed message to `out`; see
    /// [`sign_stream`].
    pub fn sign_stream(
        &self,
        src: &mut dyn Source,
        format: Format,
        now: u64,
        out: &mut dyn Write,
    ) -> Result<()> {
        let signer = self.signer;
        let (outer, plan) = content_plan(src, true)?;
        // Pass 1: the digest (and length) of the canonical content.
        let mut digests = Digests::new(&[signer.hash]);
        let len = emit_canonical(src, &plan, &mut digests)?;
        let digest = digests.finish().pop().map(|(_, d)| d).unwrap_or_default();

        out.write_all(&outer)?;
        out.write_all(b"MIME-Version: 1.0\r\n")?;
        match format {
            Format::Detached => {
                let (cms, _) = self.signed_data(&digest, None, now)?;
                let boundary = boundary_for(&digest, now);
                let micalg = match signer.hash {
                    Hash::Sha1 => "sha-1",
                    Hash::Sha256 => "sha-256",
                    Hash::Sha384 => "sha-384",
                    Hash::Sha512 => "sha-512",
                };
                write!(
                    out,
                    "Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\";\r\n micalg={micalg}; boundary=\"{boundary}\"\r\n\r\n"
                )?;
                out.write_all(b"This is an S/MIME signed message.\r\n\r\n")?;
                write!(out, "--{boundary}\r\n")?;
                let written = emit_canonical(src, &plan, &mut *out)?;
                unchanged(written, len)?;
                write!(out, "\r\n--{boundary}\r\n")?;
                out.write_all(
                    b"Content-Type: application/pkcs7-signature; name=\"smime.p7s\"\r\n\
                  Content-Transfer-Encoding: base64\r\n\
                  Content-Disposition: attachment; filename=\"smime.p7s\"\r\n\
                  Content-Description: S/MIME Cryptographic Signature\r\n\r\n",
                )?;
                out.write_all(&mime::base64_encode(&cms))?;
                write!(out, "\r\n--{boundary}--\r\n")?;
            }
            Format::Opaque => {
                let (prefix, suffix) = self.signed_data(&digest, Some(len), now)?;
                out.write_all(
                b"Content-Type: application/pkcs7-mime; smime-type=signed-data;\r\n name=\"smime.p7m\"\r\n\
                  Content-Transfer-Encoding: base64\r\n\
                  Content-Disposition: attachment; filename=\"smime.p7m\"\r\n\r\n",
            )?;
                let mut b64 = B64Encoder::new(&mut *out);
                b64.write_all(&prefix)?;
                let written = emit_canonical(src, &plan, &mut b64)?;
                unchanged(written, len)?;
                b64.write_all(&suffix)?;
                b64.finish()?;
            }
        }
        Ok(())
    }
}

/// The second read of the content must give what the first did (a spool file does not
/// change under us; if it did, the output would be wrong, so it is refused).
pub(crate) fn unchanged(written: u64, expected: u64) -> Result<()> {
    if written != expected {
        return Err(SmimeError::Io(std::io::Error::other(
            "the message changed while it was being processed",
        )));
    }
    Ok(())
}

/// One piece of the entity to protect, as it will be written.
#[derive(Debug)]
pub(crate) enum Piece {
    /// Bytes made here (header fields, delimiters).
    Bytes(Vec<u8>),
    /// A range of the input, as is.
    Raw(Span),
    /// A range of the input, its transfer encoding undone and redone as 7-bit.
    Encode { span: Span, from: Cte, to: Cte },
}

/// Transfer encodings read and written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cte {
    Identity,
    Base64,
    QuotedPrintable,
}

/// Splits a message into the header fields that stay outside (canonical CRLF, MIME-Version
/// dropped) and the plan of the entity that is protected: its Content-* fields and body,
/// with every leaf part given a 7-bit transfer encoding when `seven_bit` asks for it.
pub(crate) fn content_plan(src: &mut dyn Source, seven_bit: bool) -> Result<(Vec<u8>, Vec<Piece>)> {
    let span = stream::whole(src)?;
    let (header, body_start) = stream::read_header(src, span)?;
    let entity = Entity::parse(&header)?;
    let (outer, inner_header) = mime::split_content(&entity);
    let body = Span {
        start: body_start,
        end: span.end,
    };
    let mut plan = Vec::new();
    if seven_bit {
        plan_7bit(src, inner_header, body, 0, &mut plan)?;
    } else {
        plan.push(Piece::Bytes(inner_header));
        plan.push(Piece::Raw(body));
    }
    Ok((mime::canonical_crlf(&outer).into_owned(), plan))
}

/// Writes the plan through CRLF canonicalisation; returns the bytes written.
pub(crate) fn emit_canonical(
    src: &mut dyn Source,
    plan: &[Piece],
    out: &mut dyn Write,
) -> Result<u64> {
    let mut counted = Counted { inner: out, n: 0 };
    let mut w = stream::Crlf::new(&mut counted);
    for piece in plan {
        match piece {
            Piece::Bytes(b) => w.write_all(b)?,
            Piece::Raw(span) => stream::copy_span(src, *span, &mut w)?,
            Piece::Encode { span, from, to } => {
                let mut r = stream::reader(src, *span)?;
                match to {
                    Cte::QuotedPrintable => {
                        let enc = stream::QpEncoder::new(&mut w);
                        decode_into(&mut r, *from, enc, |e| e.finish())?;
                    }
                    _ => {
                        let enc = B64Encoder::new(&mut w);
                        decode_into(&mut r, *from, enc, |e| e.finish())?;
                    }
                }
            }
        }
    }
    w.flush()?;
    Ok(counted.n)
}

/// Copies `r` into `enc` with the transfer encoding `from` undone, then finishes `enc`.
fn decode_into<W: Write, X>(
    r: &mut dyn std::io::Read,
    from: Cte,
    mut enc: W,
    finish: impl FnOnce(W) -> std::io::Result<X>,
) -> Result<()> {
    match from {
        Cte::Identity => {
            std::io::copy(r, &mut enc)?;
        }
        Cte::Base64 => {
            std::io::copy(&mut stream::B64Reader::new(r), &mut enc)?;
        }
        Cte::QuotedPrintable => {
            let mut dec = stream::QpDecoder::new(&mut enc);
            std::io::copy(r, &mut dec)?;
            dec.finish()?;
        }
    }
    finish(enc)?;
    Ok(())
}

struct Counted<'a> {
    inner: &'a mut dyn Write,
    n: u64,
}

impl Write for Counted<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.inner.write_all(buf)?;
        self.n += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Needs a 7-bit transfer encoding: bytes above 127, NUL, bare CR, or lines over 998 bytes.
fn needs_encoding(src: &mut dyn Source, span: Span) -> Result<bool> {
    let mut r = stream::reader(src, span)?;
    let (mut line, mut cr) = (0usize, false);
    loop {
        let buf = r.fill_buf()?;
        if buf.is_empty() {
            return Ok(false);
        }
        for &b in buf {
            if b >= 0x80 || b == 0 {
                return Ok(true);
            }
            if b == b'\n' {
                line = 0;
                cr = false;
                continue;
            }
            if cr {
                return Ok(true); // a CR not followed by LF
            }
            if b == b'\r' {
                cr = true;
                continue;
            }
            line += 1;
            if line > 998 {
                return Ok(true);
            }
        }
        let n = buf.len();
        r.consume(n);
    }
}

/// Plans the entity `header` + `body` with every leaf part 7-bit safe; entities that are
/// already safe are planned as they are.
fn plan_7bit(
    src: &mut dyn Source,
    header: Vec<u8>,
    body: Span,
    depth: usize,
    plan: &mut Vec<Piece>,
) -> Result<()> {
    if depth > MAX_DEPTH {
        return Err(SmimeError::Malformed("multiparts nested too deeply".into()));
    }
    let entity = Entity::parse(&header)?;
    let ct = entity.content_type()?;
    if !needs_encoding(src, body)? {
        plan.push(Piece::Bytes(header));
        plan.push(Piece::Raw(body));
        return Ok(());
    }
    if ct.mime.starts_with("multipart/") {
        let Some(boundary) = ct.param("boundary") else {
            return Err(SmimeError::Malformed(format!(
                "{} without a boundary",
                ct.mime
            )));
        };
        let boundary = boundary.to_string();
        let parts = stream::multipart_spans(src, body, &boundary)?;
        plan.push(Piece::Bytes(header));
        for p in parts {
            plan.push(Piece::Bytes(format!("\r\n--{boundary}\r\n").into_bytes()));
            let (h, start) = stream::read_header(src, p)?;
            plan_7bit(src, h, Span { start, end: p.end }, depth + 1, plan)?;
        }
        plan.push(Piece::Bytes(format!("\r\n--{boundary}--\r\n").into_bytes()));
        return Ok(());
    }
    if ct.mime == "message/rfc822" {
        plan.push(Piece::Bytes(header));
        let (h, start) = stream::read_header(src, body)?;
        return plan_7bit(
            src,
            h,
            Span {
                start,
                end: body.end,
            },
            depth + 1,
            plan,
        );
    }
    let from = match entity.transfer_encoding().as_str() {
        "base64" => Cte::Base64,
        "quoted-printable" => Cte::QuotedPrintable,
        "7bit" | "8bit" | "binary" => Cte::Identity,
        other => {
            return Err(SmimeError::Unsupported(format!(
                "Content-Transfer-Encoding {other}"
            )));
        }
    };
    let (name, to) = if ct.mime.starts_with("text/") {
        ("quoted-printable", Cte::QuotedPrintable)
    } else {
        ("base64", Cte::Base64)
    };
    let mut fields = Vec::with_capacity(header.len() + 64);
    for f in &entity.fields {
        if !f.name.eq_ignore_ascii_case("Content-Transfer-Encoding") {
            fields.extend_from_slice(f.raw);
        }
    }
    fields.extend_from_slice(format!("Content-Transfer-Encoding: {name}\r\n\r\n").as_bytes());
    plan.push(Piece::Bytes(fields));
    plan.push(Piece::Encode {
        span: body,
        from,
        to,
    });
    Ok(())
}

/// Quoted-printable (RFC 2045 §6.7) for text: line breaks kept as CRLF, lines under 76.
pub fn qp_encode(data: &[u8]) -> Vec<u8> {
    let mut enc = stream::QpEncoder::new(Vec::with_capacity(data.len() + data.len() / 8));
    let _ = enc.write_all(data);
    enc.finish().unwrap_or_default()
}

/// The boundary of a signed message: derived from the content's digest, so it cannot occur
/// in the content (that would take a content containing a function of its own hash).
fn boundary_for(digest: &[u8], now: u64) -> String {
    let mut seed = digest.to_vec();
    seed.extend_from_slice(&now.to_be_bytes());
    let d = Hash::Sha256.digest(&seed);
    format!("----=_smimegw_{}", hsm::hex(&d[..12]))
}

/// The signature algorithm for the signer's key.
fn sign_algorithm(signer: &Signer<'_>, kind: KeyKind) -> Result<SignAlgorithm> {
    if signer.hash == Hash::Sha1 {
        return Err(SmimeError::Unsupported("signing with SHA-1".into()));
    }
    Ok(match kind {
        KeyKind::Rsa { .. } if signer.pss => SignAlgorithm::RsaPss(signer.hash),
        KeyKind::Rsa { .. } => SignAlgorithm::RsaPkcs1(signer.hash),
        _ if signer.pss => {
            return Err(SmimeError::Unsupported("PSS with an EC key".into()));
        }
        _ => SignAlgorithm::Ecdsa(signer.hash),
    })
}

fn hash_oid(h: Hash) -> &'static [u8] {
    match h {
        Hash::Sha1 => ids::SHA1,
        Hash::Sha256 => ids::SHA256,
        Hash::Sha384 => ids::SHA384,
        Hash::Sha512 => ids::SHA512,
    }
}

/// The signatureAlgorithm AlgorithmIdentifier.
fn signature_algorithm_id(alg: SignAlgorithm) -> Vec<u8> {
    match alg {
        // rsaEncryption, as OpenSSL and NSS write it (RFC 3370 §3.2).
        SignAlgorithm::RsaPkcs1(_) => algorithm(ids::RSA_ENCRYPTION, Some(&asn1::null())),
        SignAlgorithm::RsaPss(h) => {
            let hash_alg = algorithm(hash_oid(h), Some(&asn1::null()));
            let mgf = algorithm(ids::MGF1, Some(&hash_alg));
            let params = seq(&[
                &explicit(0, &hash_alg),
                &explicit(1, &mgf),
                &explicit(2, &uint(h.output_len() as u64)),
            ]);
            algorithm(ids::RSASSA_PSS, Some(&params))
        }
        SignAlgorithm::Ecdsa(h) => algorithm(
            match h {
                Hash::Sha384 => ids::ECDSA_SHA384,
                Hash::Sha512 => ids::ECDSA_SHA512,
                _ => ids::ECDSA_SHA256,
            },
            None,
        ),
    }
}

/// SignedData over `content` as a CMS ContentInfo (DER), in memory. Detached leaves the
/// content out.
pub fn sign_cms(content: &[u8], signer: &Signer<'_>, detached: bool, now: u64) -> Result<Vec<u8>> {
    let digest = signer.hash.digest(content);
    let len = (!detached).then_some(content.len() as u64);
    let (mut out, suffix) = signer.prepare()?.signed_data(&digest, len, now)?;
    if !detached {
        out.extend_from_slice(content);
    }
    out.extend_from_slice(&suffix);
    Ok(out)
}

/// The SignedData ContentInfo (DER) for content with this digest, split around where the
/// content goes: for detached signatures (`content_len` None) all of it is the first part;
/// for opaque ones the content's `content_len` bytes go between the two parts.
impl Prepared<'_> {
    /// The SignedData ContentInfo (DER) for content with this digest, split around where the
    /// content goes: for detached signatures (`content_len` None) all of it is the first
    /// part; for opaque ones the content's `content_len` bytes go between the two parts.
    fn signed_data(
        &self,
        digest: &[u8],
        content_len: Option<u64>,
        now: u64,
    ) -> Result<(Vec<u8>, Vec<u8>)> {
        let signer = self.signer;
        let (alg, digest_alg, ias) = (self.alg, &self.digest_alg, &self.ias);
        let attr = |kind: &[u8], value: &[u8]| seq(&[&oid(kind), &set_of(&[value.to_vec()])]);
        let capabilities = seq(&[
            &seq(&[&oid(ids::AES256_GCM)]),
            &seq(&[&oid(ids::AES128_GCM)]),
            &seq(&[&oid(ids::AES256_CBC)]),
            &seq(&[&oid(ids::AES128_CBC)]),
            &seq(&[&oid(ids::RSAES_OAEP)]),
        ]);
        let attrs = vec![
            attr(ids::CONTENT_TYPE, &oid(ids::DATA)),
            attr(ids::SIGNING_TIME, &asn1::time(now)),
            attr(ids::MESSAGE_DIGEST, &octets(digest)),
            attr(ids::SMIME_CAPABILITIES, &capabilities),
            attr(
                ids::ENCRYPTION_KEY_PREFERENCE,
                &asn1::implicit_constructed(0, ias),
            ),
            attr(ids::MS_ENCRYPTION_KEY_PREFERENCE, ias),
        ];
        let signed_attrs = set_of(&attrs);
        let signature = signer
            .token
            .sign(&signer.key, alg, &signer.hash.digest(&signed_attrs))?;

        let signer_info = seq(&[
            &uint(1),
            ias,
            digest_alg,
            &asn1::implicit_constructed(0, &signed_attrs),
            &signature_algorithm_id(alg),
            &octets(&signature),
        ]);
        let version = uint(1);
        let digest_algs = set_of(std::slice::from_ref(digest_alg));
        let after = [self.certificates.clone(), set_of(&[signer_info])].concat();
        let data_oid = oid(ids::DATA);
        // encapContentInfo: SEQUENCE { data, [0] EXPLICIT OCTET STRING (content) }, written as
        // headers around the content so that it can stream.
        let encap_head = match content_len {
            None => seq(&[&data_oid]),
            Some(n) => {
                let os = asn1::header(0x04, n);
                let e0_len = os.len() as u64 + n;
                let e0 = asn1::header(0xa0, e0_len);
                let encap_len = data_oid.len() as u64 + e0.len() as u64 + e0_len;
                [asn1::header(0x30, encap_len), data_oid, e0, os].concat()
            }
        };
        let content_in_encap = content_len.unwrap_or(0);
        let sd_len = (version.len() + digest_algs.len() + encap_head.len() + after.len()) as u64
            + content_in_encap;
        let sd_head = asn1::header(0x30, sd_len);
        let c0_len = sd_head.len() as u64 + sd_len;
        let c0_head = asn1::header(0xa0, c0_len);
        let sd_oid = oid(ids::SIGNED_DATA);
        let ci_len = sd_oid.len() as u64 + c0_head.len() as u64 + c0_len;
        let prefix = [
            asn1::header(0x30, ci_len),
            sd_oid,
            c0_head,
            sd_head,
            version,
            digest_algs,
            encap_head,
        ]
        .concat();
        match content_len {
            None => Ok(([prefix, after].concat(), Vec::new())),
            Some(_) => Ok((prefix, after)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The entity as it is signed.
    fn seven_bit(raw: &[u8]) -> Vec<u8> {
        let mut src = Cursor::new(raw);
        let span = stream::whole(&mut src).unwrap();
        let (h, start) = stream::read_header(&mut src, span).unwrap();
        let mut plan = Vec::new();
        plan_7bit(
            &mut src,
            h,
            Span {
                start,
                end: span.end,
            },
            0,
            &mut plan,
        )
        .unwrap();
        let mut out = Vec::new();
        emit_canonical(&mut src, &plan, &mut out).unwrap();
        out
    }

    fn is_7bit(data: &[u8]) -> bool {
        let mut src = Cursor::new(data);
        let span = stream::whole(&mut src).unwrap();
        !needs_encoding(&mut src, span).unwrap()
    }

    #[test]
    fn quoted_printable_is_7bit_and_round_trips() {
        let text = "Grüße aus Köln = fünf\r\ntrailing space \r\n".repeat(20) + &"x".repeat(200);
        let enc = qp_encode(text.as_bytes());
        assert!(is_7bit(&enc));
        assert!(enc.split(|b| *b == b'\n').all(|l| l.len() <= 77));
        let entity = [
            &b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"[..],
            &enc,
        ]
        .concat();
        let e = Entity::parse(&entity).unwrap();
        assert_eq!(e.decoded_body().unwrap().as_ref(), text.as_bytes());
    }

    #[test]
    fn eight_bit_parts_are_encoded_inside_multiparts() {
        let msg = "Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nnaïve\r\n--b\r\nContent-Type: application/octet-stream\r\n\r\n\u{1}\u{2}ÿ\r\n--b\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\nw6k=\r\n--b--\r\n";
        let out = seven_bit(msg.as_bytes());
        assert!(is_7bit(&out), "{}", String::from_utf8_lossy(&out));
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("Content-Transfer-Encoding: quoted-printable\r\n\r\nna=C3=AFve"));
        assert!(text.contains("Content-Transfer-Encoding: base64\r\n\r\nAQLDvw==\r\n"));
        // A part that is 7-bit already stays as it was.
        assert!(text.contains("Content-Transfer-Encoding: base64\r\n\r\nw6k=\r\n"));
        let plain = b"Content-Type: text/plain\r\n\r\nhello\r\n";
        assert_eq!(seven_bit(plain), plain);
        let long = format!("Content-Type: text/plain\r\n\r\n{}\r\n", "a".repeat(1200));
        let out = seven_bit(long.as_bytes());
        assert!(is_7bit(&out));
        assert!(String::from_utf8(out).unwrap().contains("quoted-printable"));
    }
}
