//! Signing: CMS SignedData (RFC 5652) with the S/MIME signed attributes (RFC 8551 §2.5), as a
//! detached multipart/signed message or an opaque application/pkcs7-mime one.
//!
//! The message's top-level header fields (From, To, Subject, Date, Message-ID, ...) stay
//! outside; its Content-* fields and body form the signed entity. Before signing, 8-bit or
//! overlong content is given a 7-bit transfer encoding (quoted-printable for text, base64
//! otherwise, part by part inside multiparts) and line endings become CRLF, so the signature
//! survives any relay. The private key operation is the token's.

use hsm::{Hash, KeyKind, KeyRef, SignAlgorithm, Token};

use super::asn1::{self, algorithm, explicit, octets, oid, seq, set_of, uint};
use super::error::{Result, SmimeError};
use super::mime::{self, Entity};
use super::oid as ids;

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

/// Signs an RFC 5322 message; `now` (seconds since the Unix epoch) is the signingTime.
pub fn sign_message(
    message: &[u8],
    signer: &Signer<'_>,
    format: Format,
    now: u64,
) -> Result<Vec<u8>> {
    let entity = Entity::parse(message)?;
    let (outer, inner) = mime::split_content(&entity);
    let inner = to_7bit(&inner, 0)?;
    let inner = mime::canonical_crlf(&inner).into_owned();
    let mut out = Vec::with_capacity(inner.len() * 2 + 4096);
    out.extend_from_slice(&mime::canonical_crlf(&outer));
    out.extend_from_slice(b"MIME-Version: 1.0\r\n");
    match format {
        Format::Detached => {
            let cms = sign_cms(&inner, signer, true, now)?;
            let boundary = boundary_for(&inner, now);
            let micalg = match signer.hash {
                Hash::Sha1 => "sha-1",
                Hash::Sha256 => "sha-256",
                Hash::Sha384 => "sha-384",
                Hash::Sha512 => "sha-512",
            };
            out.extend_from_slice(
                format!(
                    "Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\";\r\n micalg={micalg}; boundary=\"{boundary}\"\r\n\r\n"
                )
                .as_bytes(),
            );
            out.extend_from_slice(b"This is an S/MIME signed message.\r\n\r\n");
            out.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
            out.extend_from_slice(&inner);
            out.extend_from_slice(format!("\r\n--{boundary}\r\n").as_bytes());
            out.extend_from_slice(
                b"Content-Type: application/pkcs7-signature; name=\"smime.p7s\"\r\n\
                  Content-Transfer-Encoding: base64\r\n\
                  Content-Disposition: attachment; filename=\"smime.p7s\"\r\n\
                  Content-Description: S/MIME Cryptographic Signature\r\n\r\n",
            );
            out.extend_from_slice(&mime::base64_encode(&cms));
            out.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        }
        Format::Opaque => {
            let cms = sign_cms(&inner, signer, false, now)?;
            out.extend_from_slice(
                b"Content-Type: application/pkcs7-mime; smime-type=signed-data;\r\n name=\"smime.p7m\"\r\n\
                  Content-Transfer-Encoding: base64\r\n\
                  Content-Disposition: attachment; filename=\"smime.p7m\"\r\n\r\n",
            );
            out.extend_from_slice(&mime::base64_encode(&cms));
        }
    }
    Ok(out)
}

/// Needs a 7-bit transfer encoding: bytes above 127, NUL, bare CR, or lines over 998 bytes.
fn needs_encoding(body: &[u8]) -> bool {
    if body.iter().any(|b| *b >= 0x80 || *b == 0) {
        return true;
    }
    body.split(|b| *b == b'\n').any(|line| {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        line.len() > 998 || line.contains(&b'\r')
    })
}

/// The entity with every leaf part 7-bit safe; entities that are already safe come back as is.
fn to_7bit(raw: &[u8], depth: usize) -> Result<Vec<u8>> {
    if depth > MAX_DEPTH {
        return Err(SmimeError::Malformed("multiparts nested too deeply".into()));
    }
    let entity = Entity::parse(raw)?;
    let ct = entity.content_type()?;
    if ct.mime.starts_with("multipart/") {
        let Some(boundary) = ct.param("boundary") else {
            return Err(SmimeError::Malformed(format!(
                "{} without a boundary",
                ct.mime
            )));
        };
        if !needs_encoding(entity.body) {
            return Ok(raw.to_vec());
        }
        let parts = mime::multipart_parts(entity.body, boundary)?;
        let mut out = entity.header.to_vec();
        for p in parts {
            out.extend_from_slice(format!("\r\n--{boundary}\r\n").as_bytes());
            out.extend_from_slice(&to_7bit(p, depth + 1)?);
        }
        out.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        return Ok(out);
    }
    if ct.mime == "message/rfc822" && needs_encoding(entity.body) {
        let mut out = entity.header.to_vec();
        out.extend_from_slice(&to_7bit(entity.body, depth + 1)?);
        return Ok(out);
    }
    if !needs_encoding(entity.body) {
        return Ok(raw.to_vec());
    }
    let decoded = entity.decoded_body()?;
    let (cte, body) = if ct.mime.starts_with("text/") {
        ("quoted-printable", qp_encode(&decoded))
    } else {
        ("base64", mime::base64_encode(&decoded))
    };
    let mut out = Vec::with_capacity(body.len() + entity.header.len() + 64);
    for f in &entity.fields {
        if !f.name.eq_ignore_ascii_case("Content-Transfer-Encoding") {
            out.extend_from_slice(f.raw);
        }
    }
    out.extend_from_slice(format!("Content-Transfer-Encoding: {cte}\r\n\r\n").as_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// Quoted-printable (RFC 2045 §6.7) for text: line breaks kept as CRLF, lines under 76.
pub fn qp_encode(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + data.len() / 8);
    let text = mime::canonical_crlf(data);
    let lines: Vec<&[u8]> = text.split(|b| *b == b'\n').collect();
    let last = lines.len() - 1;
    for (n, line) in lines.iter().enumerate() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let mut width = 0;
        for (i, &b) in line.iter().enumerate() {
            let at_end = i == line.len() - 1;
            let literal =
                (b == b' ' || b == b'\t') && !at_end || (0x21..=0x7e).contains(&b) && b != b'=';
            let piece: Vec<u8> = if literal {
                vec![b]
            } else {
                format!("={b:02X}").into_bytes()
            };
            if width + piece.len() > 75 {
                out.extend_from_slice(b"=\r\n");
                width = 0;
            }
            width += piece.len();
            out.extend_from_slice(&piece);
        }
        if n != last {
            out.extend_from_slice(b"\r\n");
        }
    }
    out
}

/// A boundary that cannot occur in `content`: derived from its digest.
fn boundary_for(content: &[u8], now: u64) -> String {
    let mut seed = Hash::Sha256.digest(content);
    seed.extend_from_slice(&now.to_be_bytes());
    loop {
        let d = Hash::Sha256.digest(&seed);
        let hex: String = d[..12].iter().map(|b| format!("{b:02x}")).collect();
        let b = format!("----=_smimegw_{hex}");
        if !content.windows(b.len()).any(|w| w == b.as_bytes()) {
            return b;
        }
        seed = d;
    }
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

/// SignedData over `content` as a CMS ContentInfo (DER). Detached leaves the content out.
pub fn sign_cms(content: &[u8], signer: &Signer<'_>, detached: bool, now: u64) -> Result<Vec<u8>> {
    let cert =
        hsm::cert_summary(signer.cert).map_err(|e| SmimeError::Certificate(e.to_string()))?;
    let spki = super::signed::spki_of(signer.cert)?;
    let kind = hsm::public::public_key_kind(&spki)?;
    let token_spki = signer.token.public_key(&signer.key)?;
    if token_spki != spki {
        return Err(SmimeError::Certificate(
            "the key does not belong to the signer's certificate".into(),
        ));
    }
    let alg = sign_algorithm(signer, kind)?;
    let digest_alg = algorithm(hash_oid(signer.hash), None);
    let ias = seq(&[&cert.issuer_der, &cert.serial_der]);

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
        attr(ids::MESSAGE_DIGEST, &octets(&signer.hash.digest(content))),
        attr(ids::SMIME_CAPABILITIES, &capabilities),
        attr(
            ids::ENCRYPTION_KEY_PREFERENCE,
            &asn1::implicit_constructed(0, &ias),
        ),
        attr(ids::MS_ENCRYPTION_KEY_PREFERENCE, &ias),
    ];
    let signed_attrs = set_of(&attrs);
    let signature = signer
        .token
        .sign(&signer.key, alg, &signer.hash.digest(&signed_attrs))?;

    let signer_info = seq(&[
        &uint(1),
        &ias,
        &digest_alg,
        &asn1::implicit_constructed(0, &signed_attrs),
        &signature_algorithm_id(alg),
        &octets(&signature),
    ]);
    let encap = if detached {
        seq(&[&oid(ids::DATA)])
    } else {
        seq(&[&oid(ids::DATA), &explicit(0, &octets(content))])
    };
    let mut certs = signer.cert.to_vec();
    for c in signer.chain {
        if c.as_slice() != signer.cert {
            certs.extend_from_slice(c);
        }
    }
    let signed_data = seq(&[
        &uint(1),
        &set_of(std::slice::from_ref(&digest_alg)),
        &encap,
        &asn1::tlv(0xa0, &certs),
        &set_of(&[signer_info]),
    ]);
    Ok(seq(&[&oid(ids::SIGNED_DATA), &explicit(0, &signed_data)]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_printable_is_7bit_and_round_trips() {
        let text = "Grüße aus Köln = fünf\r\ntrailing space \r\n".repeat(20) + &"x".repeat(200);
        let enc = qp_encode(text.as_bytes());
        assert!(!needs_encoding(&enc));
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
        let msg = "Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nnaïve\r\n--b\r\nContent-Type: application/octet-stream\r\n\r\n\u{1}\u{2}ÿ\r\n--b--\r\n";
        let out = to_7bit(msg.as_bytes(), 0).unwrap();
        assert!(!needs_encoding(&out), "{}", String::from_utf8_lossy(&out));
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("Content-Transfer-Encoding: quoted-printable\r\n\r\nna=C3=AFve"));
        assert!(text.contains("Content-Transfer-Encoding: base64"));
        let plain = b"Content-Type: text/plain\r\n\r\nhello\r\n";
        assert_eq!(to_7bit(plain, 0).unwrap(), plain);
    }
}
