//! Just enough MIME (RFC 2045/2046, RFC 5322 header syntax) for S/MIME, on exact bytes.
//!
//! An [`Entity`] borrows the input: its header block, its body and every header field as the
//! bytes received, so a signature is always checked over what arrived, never over a
//! re-serialised parse. Values are unfolded copies for reading only.

use std::borrow::Cow;

use std::io::Write;

use super::error::{Result, SmimeError};
use super::stream::{self, Span};

/// Header blocks larger than this are refused (a guard against hostile input, not a limit
/// real mail reaches).
pub(crate) const MAX_HEADER: usize = 1 << 20;

/// One header field as received.
#[derive(Debug, Clone)]
pub struct Field<'a> {
    /// The name as written.
    pub name: &'a str,
    /// The whole field: name, colon, value and folded continuation lines, with line endings.
    pub raw: &'a [u8],
    /// The value, unfolded, without the leading space.
    pub value: String,
}

/// A MIME entity (a whole message or one body part).
#[derive(Debug, Clone)]
pub struct Entity<'a> {
    /// The header block, up to and including the empty line that ends it.
    pub header: &'a [u8],
    /// Everything after the empty line.
    pub body: &'a [u8],
    pub fields: Vec<Field<'a>>,
}

/// A parsed Content-Type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentType {
    /// `type/subtype`, lower case.
    pub mime: String,
    /// Parameters, names in lower case, values unquoted.
    pub params: Vec<(String, String)>,
}

impl ContentType {
    /// A parameter's value.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn malformed(what: impl Into<String>) -> SmimeError {
    SmimeError::Malformed(what.into())
}

impl<'a> Entity<'a> {
    /// Splits `raw` into header fields and body. Accepts CRLF and bare LF line endings.
    pub fn parse(raw: &'a [u8]) -> Result<Self> {
        let (header, body) = split_header(raw);
        if header.len() > MAX_HEADER {
            return Err(malformed("the header block is larger than 1 MiB"));
        }
        let mut fields: Vec<Field<'a>> = Vec::new();
        let lines = line_spans(header);
        let mut i = 0;
        while i < lines.len() {
            let (ls, le) = lines[i];
            let line = &header[ls..le];
            if trim_eol(line).is_empty() {
                break; // the empty line that ends the header
            }
            if line[0] == b' ' || line[0] == b'\t' {
                return Err(malformed(format!(
                    "header line {} starts with white space but follows no field",
                    i + 1
                )));
            }
            // Gather continuation lines.
            let mut end = le;
            let mut j = i + 1;
            while j < lines.len() {
                let (cs, ce) = lines[j];
                let c = &header[cs..ce];
                if !c.is_empty() && (c[0] == b' ' || c[0] == b'\t') {
                    end = ce;
                    j += 1;
                } else {
                    break;
                }
            }
            let raw_field = &header[ls..end];
            let colon = raw_field
                .iter()
                .position(|b| *b == b':')
                .ok_or_else(|| malformed(format!("header line {} has no colon", i + 1)))?;
            // RFC 5322 §4.5 (obs-optional): white space may stand between the name and the
            // colon; the name is what comes before it.
            let name = std::str::from_utf8(&raw_field[..colon])
                .ok()
                .map(|n| n.trim_end_matches([' ', '\t']))
                .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_graphic() && b != b':'))
                .ok_or_else(|| malformed(format!("header line {} has a bad field name", i + 1)))?;
            let value = unfold(&raw_field[colon + 1..]);
            fields.push(Field {
                name,
                raw: raw_field,
                value,
            });
            i = j;
        }
        Ok(Entity {
            header,
            body,
            fields,
        })
    }

    /// The first field with this name (case-insensitive), unfolded.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|f| f.name.eq_ignore_ascii_case(name))
            .map(|f| f.value.as_str())
    }

    /// The Content-Type; `text/plain` when there is none (RFC 2045 §5.2).
    pub fn content_type(&self) -> Result<ContentType> {
        match self.field("Content-Type") {
            Some(v) => parse_content_type(v),
            None => Ok(ContentType {
                mime: "text/plain".into(),
                params: vec![("charset".into(), "us-ascii".into())],
            }),
        }
    }

    /// The Content-Transfer-Encoding, lower case; `7bit` when absent.
    pub fn transfer_encoding(&self) -> String {
        self.field("Content-Transfer-Encoding")
            .map(|v| v.trim().to_ascii_lowercase())
            .unwrap_or_else(|| "7bit".into())
    }

    /// The body with its transfer encoding undone.
    pub fn decoded_body(&self) -> Result<Cow<'a, [u8]>> {
        match self.transfer_encoding().as_str() {
            "base64" => Ok(Cow::Owned(base64_decode(self.body)?)),
            "7bit" | "8bit" | "binary" => Ok(Cow::Borrowed(self.body)),
            "quoted-printable" => Ok(Cow::Owned(qp_decode(self.body))),
            other => Err(SmimeError::Unsupported(format!(
                "Content-Transfer-Encoding {other}"
            ))),
        }
    }
}

/// The body parts of a multipart body, each exactly as received: from after the delimiter
/// line to before the line break that precedes the next delimiter (RFC 2046 §5.1.1).
pub fn multipart_parts<'a>(body: &'a [u8], boundary: &str) -> Result<Vec<&'a [u8]>> {
    let mut src = std::io::Cursor::new(body);
    let span = Span {
        start: 0,
        end: body.len() as u64,
    };
    Ok(stream::multipart_spans(&mut src, span, boundary)?
        .into_iter()
        .map(|s| &body[s.start as usize..s.end as usize])
        .collect())
}

/// The bytes with every bare LF turned into CRLF (the canonical form signatures cover).
pub fn canonical_crlf(data: &[u8]) -> Cow<'_, [u8]> {
    let bare = data
        .iter()
        .enumerate()
        .any(|(i, b)| *b == b'\n' && (i == 0 || data[i - 1] != b'\r'));
    if !bare {
        return Cow::Borrowed(data);
    }
    let mut out = Vec::with_capacity(data.len() + data.len() / 40);
    for (i, b) in data.iter().enumerate() {
        if *b == b'\n' && (i == 0 || data[i - 1] != b'\r') {
            out.push(b'\r');
        }
        out.push(*b);
    }
    Cow::Owned(out)
}

/// Splits a message for S/MIME wrapping: the top-level header fields that stay outside (raw,
/// in order, MIME-Version dropped) and the entity that is protected (the Content-* fields and
/// the body; `text/plain; charset=us-ascii` made explicit when there was no Content-Type).
pub fn split_content(entity: &Entity<'_>) -> (Vec<u8>, Vec<u8>) {
    let mut outer = Vec::new();
    let mut inner = Vec::new();
    let mut has_type = false;
    for f in &entity.fields {
        let name = f.name.to_ascii_lowercase();
        if name.starts_with("content-") {
            has_type |= name == "content-type";
            inner.extend_from_slice(f.raw);
        } else if name != "mime-version" {
            outer.extend_from_slice(f.raw);
        }
    }
    if !has_type {
        inner.splice(
            0..0,
            b"Content-Type: text/plain; charset=us-ascii\r\n"
                .iter()
                .copied(),
        );
    }
    inner.extend_from_slice(b"\r\n");
    inner.extend_from_slice(entity.body);
    (outer, inner)
}

/// Header block (with its terminating empty line) and body.
pub(crate) fn split_header(raw: &[u8]) -> (&[u8], &[u8]) {
    // An entity that starts with an empty line has no header fields.
    if raw.starts_with(b"\r\n") {
        return (&raw[..2], &raw[2..]);
    }
    if raw.starts_with(b"\n") {
        return (&raw[..1], &raw[1..]);
    }
    let mut i = 0;
    while let Some(p) = raw[i..].iter().position(|b| *b == b'\n') {
        let nl = i + p;
        let rest = &raw[nl + 1..];
        if rest.starts_with(b"\r\n") {
            return (&raw[..nl + 3], &raw[nl + 3..]);
        }
        if rest.starts_with(b"\n") {
            return (&raw[..nl + 2], &raw[nl + 2..]);
        }
        i = nl + 1;
    }
    (raw, &[])
}

/// (start, end) of each line, the end including its line ending.
pub(crate) fn line_spans(data: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = 0;
    for (i, b) in data.iter().enumerate() {
        if *b == b'\n' {
            out.push((start, i + 1));
            start = i + 1;
        }
    }
    if start < data.len() {
        out.push((start, data.len()));
    }
    out
}

fn trim_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn unfold(value: &[u8]) -> String {
    let text = String::from_utf8_lossy(value);
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c != '\r' && c != '\n' {
            out.push(c);
        }
    }
    out.trim().to_string()
}

/// Parses `type/subtype; name=value; name="quoted"` (comments in parentheses are skipped).
pub fn parse_content_type(value: &str) -> Result<ContentType> {
    let value = strip_comments(value);
    let mut parts = split_params(&value).into_iter();
    let mime = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
    let ok = mime
        .split_once('/')
        .is_some_and(|(t, s)| !t.is_empty() && !s.is_empty() && !s.contains('/'));
    if !ok {
        return Err(malformed(format!(
            "Content-Type {value:?} has no type/subtype"
        )));
    }
    let mut params = Vec::new();
    for p in parts {
        let p = p.trim();
        if p.is_empty() {
            continue;
        }
        let Some((name, v)) = p.split_once('=') else {
            continue; // tolerate stray tokens, as mail clients do
        };
        let v = v.trim();
        let v = if v.len() >= 2 && v.starts_with('"') && v.ends_with('"') {
            let inner = &v[1..v.len() - 1];
            let mut s = String::with_capacity(inner.len());
            let mut escaped = false;
            for c in inner.chars() {
                if escaped || c != '\\' {
                    s.push(c);
                    escaped = false;
                } else {
                    escaped = true;
                }
            }
            s
        } else {
            v.to_string()
        };
        params.push((name.trim().to_ascii_lowercase(), v));
    }
    Ok(ContentType { mime, params })
}

fn strip_comments(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let (mut depth, mut quoted, mut escaped) = (0usize, false, false);
    for c in v.chars() {
        if escaped {
            if depth == 0 {
                out.push(c);
            }
            escaped = false;
            continue;
        }
        match c {
            '\\' => {
                escaped = true;
                if depth == 0 {
                    out.push(c);
                }
            }
            '"' if depth == 0 => {
                quoted = !quoted;
                out.push(c);
            }
            '(' if !quoted => depth += 1,
            ')' if !quoted && depth > 0 => depth -= 1,
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}

/// Splits at semicolons outside quotes.
fn split_params(v: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let (mut quoted, mut escaped) = (false, false);
    for c in v.chars() {
        let cur = out.last_mut().expect("never empty");
        if escaped {
            cur.push(c);
            escaped = false;
            continue;
        }
        match c {
            '\\' if quoted => {
                cur.push(c);
                escaped = true;
            }
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            ';' if !quoted => out.push(String::new()),
            _ => cur.push(c),
        }
    }
    out
}

/// Decodes base64, ignoring line breaks and other white space; anything else outside the
/// alphabet is an error.
pub fn base64_decode(data: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(data.len() / 4 * 3);
    let mut dec = stream::B64Decoder::default();
    dec.push(data, &mut out)?;
    dec.finish(&mut out)?;
    Ok(out)
}

/// Encodes base64 in lines of 76 characters with CRLF, as RFC 2045 asks.
pub fn base64_encode(data: &[u8]) -> Vec<u8> {
    let out = Vec::with_capacity(data.len() * 4 / 3 + data.len() / 57 * 2 + 4);
    let mut enc = stream::B64Encoder::new(out);
    // Writing to memory cannot fail.
    let _ = enc.write_all(data);
    enc.finish().unwrap_or_default()
}

/// Decodes quoted-printable leniently (a bad escape is kept as written).
fn qp_decode(data: &[u8]) -> Vec<u8> {
    let mut dec = stream::QpDecoder::new(Vec::with_capacity(data.len()));
    let _ = dec.write_all(data);
    dec.finish().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_and_body_split_on_exact_bytes() {
        let msg = b"From: a@example.com\r\nSubject: one\r\n two\r\nContent-Type: text/plain\r\n\r\nbody\r\n";
        let e = Entity::parse(msg).unwrap();
        assert_eq!(e.fields.len(), 3);
        assert_eq!(e.field("subject"), Some("one two"));
        assert_eq!(e.fields[1].raw, b"Subject: one\r\n two\r\n");
        assert_eq!(e.body, b"body\r\n");
        assert_eq!(e.header.len() + e.body.len(), msg.len());
        let lf = Entity::parse(b"A: b\n\nx").unwrap();
        assert_eq!(lf.body, b"x");
        let none = Entity::parse(b"\r\nonly body").unwrap();
        assert!(none.fields.is_empty());
        assert_eq!(none.body, b"only body");
        assert!(Entity::parse(b" x: y\r\n\r\n").is_err());
        assert!(Entity::parse(b"no colon here\r\n\r\n").is_err());
    }

    #[test]
    fn content_types() {
        let ct = parse_content_type(
            "multipart/signed; protocol=\"application/pkcs7-signature\"; micalg=sha-256;\
             boundary=\"----=_a;b\" (comment)",
        )
        .unwrap();
        assert_eq!(ct.mime, "multipart/signed");
        assert_eq!(ct.param("PROTOCOL"), Some("application/pkcs7-signature"));
        assert_eq!(ct.param("boundary"), Some("----=_a;b"));
        assert_eq!(ct.param("micalg"), Some("sha-256"));
        assert!(parse_content_type("text").is_err());
        assert!(parse_content_type("").is_err());
    }

    #[test]
    fn base64_round_trip_and_errors() {
        for n in 0..200 {
            let data: Vec<u8> = (0..n).map(|i| (i * 7 + 3) as u8).collect();
            assert_eq!(base64_decode(&base64_encode(&data)).unwrap(), data);
        }
        assert!(
            base64_encode(&[0u8; 100])
                .split(|b| *b == b'\n')
                .all(|l| l.len() <= 77)
        );
        assert!(base64_decode(b"QUJD*").is_err());
        assert!(base64_decode(b"QQ==QQ").is_err());
        assert!(base64_decode(b"Q").is_err());
        assert_eq!(base64_decode(b"QUJD\r\nRA==\r\n").unwrap(), b"ABCD");
    }

    #[test]
    fn multipart_parts_are_exact() {
        let body = b"preamble\r\n--b\r\nA: 1\r\n\r\none\r\n--b\r\n\r\ntwo\r\n--b--\r\nepilogue";
        let parts = multipart_parts(body, "b").unwrap();
        assert_eq!(parts, vec![&b"A: 1\r\n\r\none"[..], &b"\r\ntwo"[..]]);
        assert!(multipart_parts(b"--b\r\nx\r\n", "b").is_err());
        let lf = multipart_parts(b"--b\nx\n--bb\n--b--\n", "b").unwrap();
        assert_eq!(lf, vec![&b"x\n--bb"[..]]);
        assert_eq!(&*canonical_crlf(b"a\nb\r\n"), b"a\r\nb\r\n");
    }

    #[test]
    fn quoted_printable() {
        assert_eq!(qp_decode(b"a=3Db=\r\nc=zz"), b"a=bc=zz");
    }
}
