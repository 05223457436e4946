//! The header of an inbound message as we deliver it: our verdict fields first, then the
//! outer fields the sender wrote (From, To, Subject, Date, Received...), then, when a layer
//! was opened, the opened entity's Content-* fields only.
//!
//! What holds whatever the input (the property test at the bottom drives it with hostile
//! headers):
//! - `Authentication-Results` and `X-SMIME-Status` appear exactly once each, and they are
//!   ours: fields of those names that came from outside, at the top or inside the opened
//!   entity, are removed, with their continuation lines.
//! - Exactly one `From`: further From fields are renamed `X-Original-From`, a missing one is
//!   supplied from the envelope.
//! - Only Content-* fields of an opened entity reach the top: a sender cannot make a From,
//!   a Subject or a verdict appear by putting it inside the encryption or the signature.
//! - Lines that are no header field (no colon, a bad name, a continuation with nothing to
//!   continue, NUL or a bare CR) are dropped, never passed on for a reader to guess at.
//! - Verdict texts come from the fixed vocabulary of [`Verdict`]; the only variable parts are
//!   [`crate::mailbox::Address`]es (which only a strict parser makes), dates and names we wrote,
//!   all passed through [`safe_text`].

use crate::mailbox::Address;

/// RFC 7281 §3 results of the `smime` method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmimeResult {
    /// Neither signed nor (usefully) protected.
    None,
    Pass,
    Fail,
    /// Signed, but the signer is not trusted or cannot be tied to the From address.
    Neutral,
    /// Refused by local policy.
    Policy,
    /// Could not be processed now.
    TempError,
    /// Could not be processed (malformed, unsupported, not for us).
    PermError,
}

impl SmimeResult {
    pub fn as_str(self) -> &'static str {
        match self {
            SmimeResult::None => "none",
            SmimeResult::Pass => "pass",
            SmimeResult::Fail => "fail",
            SmimeResult::Neutral => "neutral",
            SmimeResult::Policy => "policy",
            SmimeResult::TempError => "temperror",
            SmimeResult::PermError => "permerror",
        }
    }
}

/// What we say about a message: a result and a sentence of our own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub result: SmimeResult,
    detail: String,
}

impl Verdict {
    /// `detail` is built by the caller from fixed phrases, addresses and our dates; it is
    /// filtered once more here.
    pub fn new(result: SmimeResult, detail: &str) -> Verdict {
        Verdict {
            result,
            detail: safe_text(detail),
        }
    }

    pub fn detail(&self) -> &str {
        &self.detail
    }

    /// "pass; decrypted; signed by x@y" as the log and the queue show it.
    pub fn summary(&self) -> String {
        if self.detail.is_empty() {
            self.result.as_str().to_string()
        } else {
            format!("{}; {}", self.result.as_str(), self.detail)
        }
    }

    /// Our two status fields.
    pub fn fields(&self, hostname: &str) -> Vec<u8> {
        let host = safe_text(hostname).replace([' ', ';', '(', ')'], "");
        let comment = if self.detail.is_empty() {
            String::new()
        } else {
            format!(" ({})", self.detail.replace(['(', ')'], ""))
        };
        format!(
            "Authentication-Results: {host}; smime={}{comment}\r\nX-SMIME-Status: {}\r\n",
            self.result.as_str(),
            self.summary()
        )
        .into_bytes()
    }
}

/// Our texts are ASCII words and punctuation; anything else (control characters, CR/LF,
/// quotes, backslashes, non-ASCII) becomes `?`, and a very long text is cut.
pub fn safe_text(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || " .,:;@_+-/=()[]<>'#&%!*?".contains(c) {
                c
            } else {
                '?'
            }
        })
        .take(300)
        .collect();
    // Parentheses are ours to balance (the Authentication-Results comment).
    let opens = out.matches('(').count();
    let closes = out.matches(')').count();
    if opens != closes {
        out = out.replace(['(', ')'], "");
    }
    out.trim().to_string()
}

/// Header fields that only this gateway writes.
fn is_status_field(name: &[u8]) -> bool {
    name.eq_ignore_ascii_case(b"X-SMIME-Status")
        || name.eq_ignore_ascii_case(b"Authentication-Results")
}

/// One header field as found by [`fields`]: its name (`None` for a line that is no field)
/// and its lines as received.
#[derive(Debug, Clone, Copy)]
struct RawField<'a> {
    name: Option<&'a [u8]>,
    raw: &'a [u8],
}

/// The header fields of a header block, read leniently: never fails, whatever the bytes.
/// Reading stops at the first empty line.
fn fields(header: &[u8]) -> Vec<RawField<'_>> {
    // (name, start, end) of each field while reading; continuation lines move `end`.
    let mut found: Vec<(Option<&[u8]>, usize, usize)> = Vec::new();
    let mut pos = 0;
    // Whether the last line belongs to a field (so a folded line continues it).
    let mut open = false;
    while pos < header.len() {
        let end = header[pos..]
            .iter()
            .position(|&b| b == b'\n')
            .map(|i| pos + i + 1)
            .unwrap_or(header.len());
        let line = &header[pos..end];
        let text = line.strip_suffix(b"\n").unwrap_or(line);
        let text = text.strip_suffix(b"\r").unwrap_or(text);
        if text.is_empty() {
            break;
        }
        if text[0] == b' ' || text[0] == b'\t' {
            match found.last_mut() {
                Some(last) if open => last.2 = end,
                _ => found.push((None, pos, end)),
            }
            pos = end;
            continue;
        }
        let name = text.iter().position(|&b| b == b':').and_then(|colon| {
            let n = &text[..colon];
            let len = n
                .iter()
                .rposition(|&b| b != b' ' && b != b'\t')
                .map_or(0, |i| i + 1);
            let n = &n[..len];
            (!n.is_empty() && n.iter().all(|&b| b.is_ascii_graphic() && b != b':')).then_some(n)
        });
        open = name.is_some();
        found.push((name, pos, end));
        pos = end;
    }
    found
        .into_iter()
        .map(|(name, start, end)| RawField {
            name,
            raw: &header[start..end],
        })
        .collect()
}

/// The lines of `raw`, each without its line end, or `None` when one holds a NUL or a bare CR
/// (which some readers take for a line end).
fn clean_lines(raw: &[u8]) -> Option<Vec<&[u8]>> {
    let raw = raw.strip_suffix(b"\n").unwrap_or(raw);
    let mut lines = Vec::new();
    for (i, line) in raw.split(|&b| b == b'\n').enumerate() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.contains(&0) || line.contains(&b'\r') {
            return None;
        }
        // A folded line of white space alone ends the header for some readers.
        if i > 0 && line.iter().all(|&b| b == b' ' || b == b'\t') {
            return None;
        }
        lines.push(line);
    }
    Some(lines)
}

fn write_field(out: &mut Vec<u8>, raw: &[u8]) {
    if let Some(lines) = clean_lines(raw) {
        for l in lines {
            out.extend_from_slice(l);
            out.extend_from_slice(b"\r\n");
        }
    }
}

fn is_content_field(name: &[u8]) -> bool {
    name.len() > 8 && name[..8].eq_ignore_ascii_case(b"content-")
}

/// The header block we deliver (ending with its empty line): `ours` (the verdict fields),
/// the outer fields, and, when `opened` is given, `MIME-Version` and the opened entity's
/// Content-* fields in place of the outer ones. `envelope_from` supplies a missing From.
pub fn compose(ours: &[u8], outer: &[u8], opened: Option<&[u8]>, envelope_from: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(ours.len() + outer.len() + 256);
    out.extend_from_slice(ours);
    let mut from_seen = false;
    for f in fields(outer) {
        let Some(name) = f.name else { continue };
        if is_status_field(name) {
            continue;
        }
        if opened.is_some()
            && (is_content_field(name) || name.eq_ignore_ascii_case(b"MIME-Version"))
        {
            continue;
        }
        if name.eq_ignore_ascii_case(b"From") {
            if from_seen {
                let colon = f.raw.iter().position(|&b| b == b':').unwrap_or(0);
                let mut renamed = b"X-Original-From".to_vec();
                renamed.extend_from_slice(&f.raw[colon..]);
                write_field(&mut out, &renamed);
                continue;
            }
            let before = out.len();
            write_field(&mut out, f.raw);
            from_seen = out.len() > before;
            continue;
        }
        write_field(&mut out, f.raw);
    }
    if !from_seen {
        let who = Address::parse(envelope_from)
            .map(|a| a.to_string())
            .unwrap_or_else(|_| "unknown-sender@invalid".into());
        out.extend_from_slice(format!("From: <{who}>\r\n").as_bytes());
    }
    if let Some(inner) = opened {
        out.extend_from_slice(b"MIME-Version: 1.0\r\n");
        for f in fields(inner) {
            if f.name.is_some_and(is_content_field) {
                write_field(&mut out, f.raw);
            }
        }
    }
    out.extend_from_slice(b"\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smime::mime::Entity;

    fn ours() -> Vec<u8> {
        Verdict::new(SmimeResult::None, "decrypted; not signed").fields("gw.example.com")
    }

    /// Counts the fields of `name` in a composed header, as a strict parser reads it.
    fn count(header: &[u8], name: &str) -> usize {
        let e = Entity::parse(header).unwrap_or_else(|e| {
            panic!("{e}: {}", String::from_utf8_lossy(header));
        });
        e.fields
            .iter()
            .filter(|f| f.name.eq_ignore_ascii_case(name))
            .count()
    }

    #[test]
    fn inner_fields_other_than_content_never_reach_the_top() {
        let outer = b"From: a@x.test\r\nContent-Type: application/pkcs7-mime\r\n\r\n";
        let inner = b"X-SMIME-Status: pass; signed by ceo@partner.test\r\n\
            Authentication-Results: gw; smime=pass\r\nFrom: ceo@partner.test\r\n\
            Content-Type: text/plain\r\n\r\n";
        let h = compose(&ours(), outer, Some(inner), "a@x.test");
        let text = String::from_utf8_lossy(&h);
        assert!(!text.contains("ceo@partner.test"), "{text}");
        assert_eq!(count(&h, "From"), 1);
        assert_eq!(count(&h, "X-SMIME-Status"), 1);
        assert!(text.contains("Content-Type: text/plain"), "{text}");
        assert!(!text.contains("pkcs7"), "{text}");
    }

    #[test]
    fn obsolete_and_broken_lines() {
        let outer = b" X-SMIME-Status: pass\r\nX-SMIME-Status : pass\r\n\tcontinued\r\n\
            From: a@x.test\r\nFrom: b@y.test\r\nno colon here\r\nSubject: hi\r\n\r\n";
        let h = compose(&ours(), outer, None, "a@x.test");
        let text = String::from_utf8_lossy(&h);
        assert_eq!(count(&h, "X-SMIME-Status"), 1, "{text}");
        assert_eq!(count(&h, "From"), 1, "{text}");
        assert_eq!(count(&h, "X-Original-From"), 1, "{text}");
        assert!(
            !text.contains("continued") && !text.contains("no colon"),
            "{text}"
        );
        assert!(text.contains("Subject: hi"), "{text}");
    }

    #[test]
    fn verdict_text_is_filtered() {
        let v = Verdict::new(SmimeResult::Fail, "x\r\nX-SMIME-Status: pass (");
        assert!(!v.detail().contains('\r') && !v.detail().contains('('));
        let f = v.fields("gw");
        assert_eq!(f.iter().filter(|&&b| b == b'\n').count(), 2);
    }

    /// A small deterministic generator (xorshift), so the property test needs no crate.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn pick<'a>(&mut self, items: &[&'a [u8]]) -> &'a [u8] {
            items[(self.next() % items.len() as u64) as usize]
        }
    }

    fn hostile_header(rng: &mut Rng) -> Vec<u8> {
        const NAMES: &[&[u8]] = &[
            b"From",
            b"from",
            b"FROM ",
            b"X-SMIME-Status",
            b"x-smime-status\t",
            b"Authentication-Results",
            b"AUTHENTICATION-RESULTS  ",
            b"Subject",
            b"Content-Type",
            b"content-transfer-encoding",
            b"MIME-Version",
            b"To",
            b"X-SMIME-Status\x00",
            b"Sender",
            b"Received",
            b"",
            b" From",
            b"\tX-SMIME-Status",
        ];
        const VALUES: &[&[u8]] = &[
            b" pass; signed by ceo@partner.test",
            b" ceo@partner.test",
            b" <ceo@x.test> <m@evil.test>",
            b" text/plain",
            b" x\r\n continued: pass",
            b" a\rX-SMIME-Status: pass",
            b"",
            b" \xff\xfe",
            b" gw; smime=pass",
            b" 1.0\r\n\tX-SMIME-Status: pass",
        ];
        const SEPS: &[&[u8]] = &[b":", b" :", b"", b"::"];
        const ENDS: &[&[u8]] = &[b"\r\n", b"\n", b"\r\n", b"\r\n"];
        let mut h = Vec::new();
        for _ in 0..(rng.next() % 12) {
            h.extend_from_slice(rng.pick(NAMES));
            h.extend_from_slice(rng.pick(SEPS));
            h.extend_from_slice(rng.pick(VALUES));
            h.extend_from_slice(rng.pick(ENDS));
            if rng.next().is_multiple_of(7) {
                // Arbitrary bytes.
                for _ in 0..(rng.next() % 40) {
                    h.push((rng.next() % 256) as u8);
                }
                h.extend_from_slice(b"\r\n");
            }
        }
        h.extend_from_slice(b"\r\n");
        h
    }

    #[test]
    fn property_one_of_each_status_field_ours_and_one_from() {
        let mut rng = Rng(0x5eed_1234_abcd_0001);
        let verdicts = [
            Verdict::new(SmimeResult::Pass, "signed by bob@example.net"),
            Verdict::new(SmimeResult::None, ""),
            Verdict::new(SmimeResult::PermError, "the message could not be opened"),
        ];
        for i in 0..20_000 {
            let outer = hostile_header(&mut rng);
            let inner = hostile_header(&mut rng);
            let v = &verdicts[i % verdicts.len()];
            let ours = v.fields("gw.example.com");
            let opened = rng.next().is_multiple_of(2).then_some(inner.as_slice());
            let h = compose(&ours, &outer, opened, "sender@example.net");
            let e = Entity::parse(&h).unwrap_or_else(|e| panic!("case {i}: {e}: {h:?}"));
            let values = |name: &str| -> Vec<String> {
                e.fields
                    .iter()
                    .filter(|f| f.name.eq_ignore_ascii_case(name))
                    .map(|f| f.value.clone())
                    .collect()
            };
            assert_eq!(
                values("X-SMIME-Status"),
                vec![v.summary()],
                "case {i}: {h:?}"
            );
            assert_eq!(values("Authentication-Results").len(), 1, "case {i}: {h:?}");
            assert!(values("Authentication-Results")[0].starts_with("gw.example.com; smime="));
            assert_eq!(values("From").len(), 1, "case {i}: {h:?}");
            // Nothing but well-formed lines.
            assert!(
                !h.windows(2).any(|w| w[0] == b'\r' && w[1] != b'\n'),
                "case {i}"
            );
            assert!(!h.contains(&0), "case {i}");
        }
    }
}
