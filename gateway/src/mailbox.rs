//! Who a message says it is from, read strictly (RFC 5322 §3.4 and §3.6.2), for verdicts and
//! for choosing a signing key.
//!
//! A verdict "signed by X, pass" is only as good as the reader's agreement on X. Mail clients
//! and common parsers disagree on loose From fields (`From: <a@x> <b@y>`, `From: a@x <b@y>`,
//! two From fields, display names that look like another address), so anything that can be
//! read two ways is refused here with a [`FromProblem`], and the caller gives no pass.
//!
//! [`Address`] can only be made by this parser: a dot-atom local part and a domain of
//! letter-digit-hyphen labels, lower case. Its characters are safe to write into our own
//! header fields.

use std::fmt;

/// An email address that parsed strictly: `local@domain`, dot-atoms only, lower case.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Address(String);

impl Address {
    /// Parses a bare addr-spec (`local@domain`, no display name, no comments).
    pub fn parse(s: &str) -> Result<Address, FromProblem> {
        let mut p = Parser::new(s);
        let a = p.addr_spec()?;
        if p.pos != p.s.len() {
            return Err(FromProblem::Unparsable);
        }
        Ok(a)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a message's From cannot name one sender. The texts are fixed (they go into our
/// status fields): nothing from the message is repeated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FromProblem {
    Missing,
    Several,
    SeveralMailboxes,
    Unparsable,
    /// A quoted local part, a domain literal, an unusual character set: legal, but more
    /// than we judge.
    Unusual,
    /// The display name or a comment holds an address other than the mailbox's.
    LooksLikeAnotherAddress,
}

impl FromProblem {
    pub fn describe(self) -> &'static str {
        match self {
            FromProblem::Missing => "the message has no From field",
            FromProblem::Several => "the message has more than one From field",
            FromProblem::SeveralMailboxes => "the From field names more than one mailbox",
            FromProblem::Unparsable => "the From field does not parse as one mailbox",
            FromProblem::Unusual => "the From address uses syntax we do not judge",
            FromProblem::LooksLikeAnotherAddress => {
                "the From display name shows an address other than the sender's"
            }
        }
    }
}

impl fmt::Display for FromProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}

impl std::error::Error for FromProblem {}

/// The one sender of a message whose header fields are `fields` (name, unfolded value):
/// exactly one From field holding exactly one mailbox, read without ambiguity.
pub fn sender<'a>(
    fields: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<Address, FromProblem> {
    let mut found = None;
    for (name, value) in fields {
        if name
            .trim_end_matches([' ', '\t'])
            .eq_ignore_ascii_case("From")
        {
            if found.is_some() {
                return Err(FromProblem::Several);
            }
            found = Some(value);
        }
    }
    from_value(found.ok_or(FromProblem::Missing)?)
}

/// One From field's value (unfolded) as one mailbox.
pub fn from_value(value: &str) -> Result<Address, FromProblem> {
    let mut p = Parser::new(value);
    let mailbox = p.mailbox()?;
    p.cfws()?;
    if p.peek() == Some(b',') {
        return Err(FromProblem::SeveralMailboxes);
    }
    if p.pos != p.s.len() {
        return Err(FromProblem::Unparsable);
    }
    // Whatever a reader may take for an address must be this one.
    for text in p.shown.iter().chain(p.comments.iter()) {
        if !only_this_address(text, mailbox.as_str()) {
            return Err(FromProblem::LooksLikeAnotherAddress);
        }
    }
    Ok(mailbox)
}

/// Characters that read as an at sign.
fn is_at_like(c: char) -> bool {
    matches!(c, '@' | '\u{FF20}' | '\u{FE6B}' | '\u{E0040}')
}

/// Every address-like word in `text` is `address` (any case); look-alike at signs never are.
fn only_this_address(text: &str, address: &str) -> bool {
    if !text.chars().any(is_at_like) {
        return true;
    }
    if text.chars().any(|c| is_at_like(c) && c != '@') {
        return false;
    }
    text.split(|c: char| {
        c.is_whitespace() || matches!(c, '<' | '>' | '"' | '(' | ')' | ',' | ';' | '[' | ']')
    })
    .filter(|w| w.contains('@'))
    .all(|w| {
        w.trim_matches(|c: char| matches!(c, '.' | ':' | '\''))
            .eq_ignore_ascii_case(address)
    })
}

fn is_atext(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&b) || b >= 0x80
}

struct Parser<'a> {
    s: &'a [u8],
    pos: usize,
    /// Decoded display-name text.
    shown: Vec<String>,
    /// Comment text.
    comments: Vec<String>,
}

impl<'a> Parser<'a> {
    fn new(s: &'a str) -> Parser<'a> {
        Parser {
            s: s.as_bytes(),
            pos: 0,
            shown: Vec::new(),
            comments: Vec::new(),
        }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn fws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\r' | b'\n')) {
            self.pos += 1;
        }
    }

    /// Folding white space and comments (nested, with quoted pairs).
    fn cfws(&mut self) -> Result<(), FromProblem> {
        loop {
            self.fws();
            if self.peek() != Some(b'(') {
                return Ok(());
            }
            let mut depth = 0usize;
            let mut text = Vec::new();
            loop {
                let Some(b) = self.peek() else {
                    return Err(FromProblem::Unparsable);
                };
                self.pos += 1;
                match b {
                    b'(' => {
                        depth += 1;
                        if depth > 8 {
                            return Err(FromProblem::Unparsable);
                        }
                    }
                    b')' => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    b'\\' => {
                        let Some(q) = self.peek() else {
                            return Err(FromProblem::Unparsable);
                        };
                        self.pos += 1;
                        text.push(q);
                    }
                    _ => text.push(b),
                }
            }
            self.comments
                .push(decode_words(&String::from_utf8_lossy(&text))?);
        }
    }

    fn atom(&mut self) -> Option<&'a str> {
        let start = self.pos;
        while self.peek().is_some_and(is_atext) {
            self.pos += 1;
        }
        (self.pos > start).then(|| std::str::from_utf8(&self.s[start..self.pos]).unwrap_or(""))
    }

    fn quoted_string(&mut self) -> Result<String, FromProblem> {
        debug_assert_eq!(self.peek(), Some(b'"'));
        self.pos += 1;
        let mut out = Vec::new();
        loop {
            let Some(b) = self.peek() else {
                return Err(FromProblem::Unparsable);
            };
            self.pos += 1;
            match b {
                b'"' => break,
                b'\\' => {
                    let Some(q) = self.peek() else {
                        return Err(FromProblem::Unparsable);
                    };
                    self.pos += 1;
                    out.push(q);
                }
                b'\r' | b'\n' => {}
                _ => out.push(b),
            }
        }
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    /// dot-atom, lower case; `None` when there is none here.
    fn dot_atom(&mut self) -> Result<Option<String>, FromProblem> {
        let Some(first) = self.atom() else {
            return Ok(None);
        };
        let mut out = first.to_string();
        while self.peek() == Some(b'.') {
            self.pos += 1;
            let Some(next) = self.atom() else {
                return Err(FromProblem::Unparsable);
            };
            out.push('.');
            out.push_str(next);
        }
        Ok(Some(out))
    }

    fn addr_spec(&mut self) -> Result<Address, FromProblem> {
        if self.peek() == Some(b'"') {
            return Err(FromProblem::Unusual);
        }
        let local = self.dot_atom()?.ok_or(FromProblem::Unparsable)?;
        if self.peek() != Some(b'@') {
            return Err(FromProblem::Unparsable);
        }
        self.pos += 1;
        if self.peek() == Some(b'[') {
            return Err(FromProblem::Unusual);
        }
        let domain = self.dot_atom()?.ok_or(FromProblem::Unparsable)?;
        if !local.is_ascii() || !domain.is_ascii() {
            return Err(FromProblem::Unusual);
        }
        let labels_ok = domain.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        });
        if !labels_ok || !domain.contains('.') && domain != "localhost" || local.len() > 64 {
            return Err(FromProblem::Unparsable);
        }
        Ok(Address(format!(
            "{}@{}",
            local.to_ascii_lowercase(),
            domain.to_ascii_lowercase()
        )))
    }

    /// mailbox = name-addr / addr-spec, with CFWS around.
    fn mailbox(&mut self) -> Result<Address, FromProblem> {
        self.cfws()?;
        // addr-spec alone: an atom followed by '@' or '.'.
        let start = self.pos;
        if self.peek().is_some_and(is_atext) {
            let _ = self.dot_atom();
            if self.peek() == Some(b'@') {
                self.pos = start;
                let a = self.addr_spec()?;
                self.cfws()?;
                return Ok(a);
            }
            self.pos = start;
        }
        // name-addr: a phrase of atoms and quoted strings (and obsolete dots), then <addr>.
        let mut shown = String::new();
        loop {
            self.cfws()?;
            match self.peek() {
                Some(b'"') => {
                    let q = self.quoted_string()?;
                    shown.push_str(&q);
                    shown.push(' ');
                }
                Some(b'.') => {
                    self.pos += 1;
                    shown.push('.');
                }
                Some(b) if is_atext(b) => {
                    let w = self.atom().unwrap_or("");
                    shown.push_str(w);
                    shown.push(' ');
                }
                _ => break,
            }
        }
        if self.peek() == Some(b'@') {
            // A quoted local part ("a b"@x): legal, unusual.
            return Err(FromProblem::Unusual);
        }
        if self.peek() != Some(b'<') {
            return Err(FromProblem::Unparsable);
        }
        self.pos += 1;
        self.cfws()?;
        if self.peek() == Some(b'@') {
            // An obsolete source route: nobody's business to judge.
            return Err(FromProblem::Unusual);
        }
        let a = self.addr_spec()?;
        self.cfws()?;
        if self.peek() != Some(b'>') {
            return Err(FromProblem::Unparsable);
        }
        self.pos += 1;
        self.shown.push(decode_words(&shown)?);
        self.cfws()?;
        Ok(a)
    }
}

/// Text with RFC 2047 encoded words decoded, as a reader would see it.
fn decode_words(text: &str) -> Result<String, FromProblem> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find("=?") {
        out.push_str(&rest[..at]);
        let word = &rest[at..];
        match decode_word(word)? {
            Some((decoded, used)) => {
                out.push_str(&decoded);
                rest = &word[used..];
            }
            None => {
                out.push_str("=?");
                rest = &word[2..];
            }
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// One `=?charset?enc?text?=` at the start of `w`: the text and the length used.
fn decode_word(w: &str) -> Result<Option<(String, usize)>, FromProblem> {
    let inner = &w[2..];
    let mut parts = inner.splitn(3, '?');
    let (Some(charset), Some(enc), Some(tail)) = (parts.next(), parts.next(), parts.next()) else {
        return Ok(None);
    };
    let Some(end) = tail.find("?=") else {
        return Ok(None);
    };
    let data = &tail[..end];
    let used = 2 + charset.len() + 1 + enc.len() + 1 + end + 2;
    let charset = charset.split('*').next().unwrap_or("").to_ascii_lowercase();
    let bytes = match enc {
        "B" | "b" => crate::smime::mime::base64_decode(data.as_bytes())
            .map_err(|_| FromProblem::Unparsable)?,
        "Q" | "q" => q_decode(data),
        _ => return Ok(None),
    };
    let text = if charset.starts_with("iso-2022") {
        iso2022_ascii_parts(&bytes)
    } else if charset == "us-ascii"
        || charset == "utf-8"
        || charset.starts_with("iso-8859-")
        || charset.starts_with("windows-125")
        || charset.starts_with("koi8-")
        || matches!(
            charset.as_str(),
            "gb2312" | "gbk" | "gb18030" | "big5" | "shift_jis" | "euc-jp" | "euc-kr" | "tis-620"
        )
    {
        String::from_utf8_lossy(&bytes).into_owned()
    } else {
        // UTF-7, UTF-16 and the like can hide an at sign from a byte scan.
        return Err(FromProblem::Unusual);
    };
    Ok(Some((text, used)))
}

fn q_decode(data: &str) -> Vec<u8> {
    let b = data.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'_' => out.push(b' '),
            b'=' => {
                let hex = b
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok());
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => out.push(b'='),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    out
}

/// The single-byte (ASCII or JIS-Roman) stretches of ISO-2022 text; two-byte stretches, whose
/// bytes may be 0x40 without meaning `@`, become a placeholder.
fn iso2022_ascii_parts(bytes: &[u8]) -> String {
    let mut out = String::new();
    let mut two_byte = false;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == 0x1b {
            let seq = &bytes[i + 1..bytes.len().min(i + 4)];
            if seq.first() == Some(&b'$') {
                two_byte = true;
                i += if seq.get(1) == Some(&b'(') { 4 } else { 3 };
            } else {
                two_byte = false;
                i += 3;
            }
            continue;
        }
        if two_byte {
            out.push('\u{FFFD}');
        } else {
            out.push(bytes[i] as char);
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(v: &str) -> String {
        from_value(v).unwrap_or_else(|e| panic!("{v:?}: {e}")).0
    }

    #[test]
    fn plain_forms_parse() {
        assert_eq!(ok("alice@example.com"), "alice@example.com");
        assert_eq!(ok("Alice <Alice@Example.COM>"), "alice@example.com");
        assert_eq!(
            ok("\"Doe, Alice\" <alice@example.com>"),
            "alice@example.com"
        );
        assert_eq!(ok("alice@example.com (Alice)"), "alice@example.com");
        assert_eq!(ok("A. Doe <a.doe@example.com>"), "a.doe@example.com");
        assert_eq!(
            ok("\"alice@example.com\" <alice@example.com>"),
            "alice@example.com"
        );
        assert_eq!(
            ok("=?UTF-8?Q?J=C3=B6rg?= <joerg@example.de>"),
            "joerg@example.de"
        );
        assert_eq!(
            ok("=?ISO-2022-JP?B?GyRCJDMkcyQLJEEkTxsoQg==?= <taro@example.jp>"),
            "taro@example.jp"
        );
    }

    #[test]
    fn ambiguous_forms_are_refused() {
        use FromProblem::*;
        let cases = [
            ("<ceo@partner.test> <mallory@evil.test>", Unparsable),
            ("ceo@partner.test <mallory@evil.test>", Unparsable),
            (
                "\"ceo@partner.test\" <mallory@evil.test>",
                LooksLikeAnotherAddress,
            ),
            (
                "=?utf-8?q?ceo=40partner.test?= <mallory@evil.test>",
                LooksLikeAnotherAddress,
            ),
            (
                "=?utf-8?b?Y2VvQHBhcnRuZXIudGVzdA==?= <mallory@evil.test>",
                LooksLikeAnotherAddress,
            ),
            (
                "\"ceo\u{FF20}partner.test\" <mallory@evil.test>",
                LooksLikeAnotherAddress,
            ),
            (
                "mallory@evil.test (ceo@partner.test)",
                LooksLikeAnotherAddress,
            ),
            ("a@x.test, b@y.test", SeveralMailboxes),
            ("\"odd local\"@x.test", Unusual),
            ("a@[127.0.0.1]", Unusual),
            ("=?utf-7?q?ceo+AEA-partner.test?= <m@evil.test>", Unusual),
            ("", Unparsable),
            ("Alice", Unparsable),
            ("<a@x.test", Unparsable),
            ("a@x..test", Unparsable),
            ("a@-x.test", Unparsable),
        ];
        for (v, want) in cases {
            assert_eq!(from_value(v), Err(want), "{v:?}");
        }
    }

    #[test]
    fn exactly_one_from_field() {
        let two = [("From", "a@x.test"), ("From", "b@y.test")];
        assert_eq!(sender(two), Err(FromProblem::Several));
        assert_eq!(sender([("To", "a@x.test")]), Err(FromProblem::Missing));
        assert_eq!(
            sender([("from ", "a@x.test")]).map(|a| a.0),
            Ok("a@x.test".to_string())
        );
    }

    #[test]
    fn hostile_bytes_never_panic() {
        for v in [
            "(",
            "((((((((((a",
            "\"",
            "=?",
            "=?a?b?",
            "<@a:b@c.d>",
            "\u{0}@\u{0}",
            "a@b.c (\\",
        ] {
            let _ = from_value(v);
        }
    }
}
