//! A small BER reader, for the structures real software writes with indefinite lengths and
//! chunked (constructed) OCTET STRINGs: PKCS#12 files from NSS and Windows, and, later, CMS.
//!
//! It reads tag-length-value elements and hands out borrowed slices; nothing is copied except
//! when a chunked OCTET STRING is joined. Depth and lengths are bounded, so hostile input
//! cannot exhaust the stack, and every failure names what was wrong and where.
//! [`to_der`] re-encodes an element as DER for decoders that accept nothing else.

use std::borrow::Cow;

/// How deep constructed elements may nest.
const MAX_DEPTH: usize = 64;

/// Universal tags used by callers.
pub mod tag {
    pub const INTEGER: u8 = 0x02;
    pub const BIT_STRING: u8 = 0x03;
    pub const OCTET_STRING: u8 = 0x04;
    pub const NULL: u8 = 0x05;
    pub const OID: u8 = 0x06;
    pub const SEQUENCE: u8 = 0x10;
    pub const SET: u8 = 0x11;
    pub const BMP_STRING: u8 = 0x1e;
}

/// Tag classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Universal,
    Application,
    Context,
    Private,
}

/// Why BER input was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} at byte {offset}")]
pub struct BerError {
    /// What was wrong.
    pub what: &'static str,
    /// Where, counted from the start of the slice given to [`read`] (best effort for nested
    /// elements: offsets are relative to the enclosing element's contents).
    pub offset: usize,
}

fn err(what: &'static str, offset: usize) -> BerError {
    BerError { what, offset }
}

/// One element: its tag, and its contents as a slice of the input.
#[derive(Debug, Clone, Copy)]
pub struct Tlv<'a> {
    pub class: Class,
    pub constructed: bool,
    /// The tag number (below 31; higher tag numbers are refused).
    pub number: u8,
    /// The contents octets (for an indefinite length: up to, not including, the end-of-contents).
    pub body: &'a [u8],
    /// The whole encoding, header and end-of-contents included.
    pub raw: &'a [u8],
}

/// Reads one element from the start of `input`; returns it and the rest of the input.
pub fn read(input: &[u8]) -> Result<(Tlv<'_>, &[u8]), BerError> {
    read_at(input, 0)
}

/// Reads exactly one element: trailing bytes are an error.
pub fn read_all(input: &[u8]) -> Result<Tlv<'_>, BerError> {
    let (tlv, rest) = read(input)?;
    if !rest.is_empty() {
        return Err(err("trailing data after the element", tlv.raw.len()));
    }
    Ok(tlv)
}

fn read_at(input: &[u8], depth: usize) -> Result<(Tlv<'_>, &[u8]), BerError> {
    if depth > MAX_DEPTH {
        return Err(err("nested too deeply", 0));
    }
    let first = *input.first().ok_or(err("truncated: expected a tag", 0))?;
    let class = match first >> 6 {
        0 => Class::Universal,
        1 => Class::Application,
        2 => Class::Context,
        _ => Class::Private,
    };
    let constructed = first & 0x20 != 0;
    let number = first & 0x1f;
    if number == 0x1f {
        return Err(err("tag numbers above 30 are not supported", 0));
    }
    let len_byte = *input.get(1).ok_or(err("truncated: expected a length", 1))?;
    let mut pos = 2;
    let length = if len_byte == 0x80 {
        None
    } else if len_byte & 0x80 == 0 {
        Some(len_byte as usize)
    } else {
        let n = (len_byte & 0x7f) as usize;
        if n > 4 {
            return Err(err("length field too long", 1));
        }
        let bytes = input
            .get(2..2 + n)
            .ok_or(err("truncated: length field", 2))?;
        pos += n;
        Some(bytes.iter().fold(0usize, |a, b| (a << 8) | *b as usize))
    };
    match length {
        Some(len) => {
            let end = pos
                .checked_add(len)
                .filter(|e| *e <= input.len())
                .ok_or(err("truncated: contents shorter than the length says", pos))?;
            let tlv = Tlv {
                class,
                constructed,
                number,
                body: &input[pos..end],
                raw: &input[..end],
            };
            Ok((tlv, &input[end..]))
        }
        None => {
            if !constructed {
                return Err(err("indefinite length on a primitive element", 1));
            }
            // Walk the children to find the end-of-contents.
            let mut at = pos;
            loop {
                match input.get(at..at + 2) {
                    Some([0, 0]) => break,
                    Some(_) => {}
                    None => return Err(err("truncated: missing end-of-contents", at)),
                }
                let (child, _) = read_at(&input[at..], depth + 1).map_err(|e| BerError {
                    what: e.what,
                    offset: e.offset + at,
                })?;
                at += child.raw.len();
            }
            let tlv = Tlv {
                class,
                constructed,
                number,
                body: &input[pos..at],
                raw: &input[..at + 2],
            };
            Ok((tlv, &input[at + 2..]))
        }
    }
}

impl<'a> Tlv<'a> {
    /// Is this a universal element with tag number `n`?
    pub fn is(&self, n: u8) -> bool {
        self.class == Class::Universal && self.number == n
    }

    /// Is this the context-specific tag `[n]`?
    pub fn is_context(&self, n: u8) -> bool {
        self.class == Class::Context && self.number == n
    }

    /// Checks the element is the universal type `n` and returns it.
    pub fn expect(self, n: u8, what: &'static str) -> Result<Self, BerError> {
        if self.is(n) {
            Ok(self)
        } else {
            Err(err(what, 0))
        }
    }

    /// The child elements of a constructed element.
    pub fn children(&self) -> Children<'a> {
        Children {
            rest: if self.constructed { self.body } else { &[] },
            failed: false,
        }
    }

    /// The children, collected; fails on the first malformed child.
    pub fn items(&self) -> Result<Vec<Tlv<'a>>, BerError> {
        if !self.constructed {
            return Err(err("expected a constructed element", 0));
        }
        self.children().collect()
    }

    /// The only child of an explicitly tagged element.
    pub fn inner(&self) -> Result<Tlv<'a>, BerError> {
        if !self.constructed {
            return Err(err("expected an explicitly tagged element", 0));
        }
        read_all(self.body)
    }

    /// The value of an OCTET STRING (or an implicitly tagged one): the body of a primitive
    /// encoding, or the chunks of a constructed one joined.
    pub fn octets(&self) -> Result<Cow<'a, [u8]>, BerError> {
        if !self.constructed {
            return Ok(Cow::Borrowed(self.body));
        }
        let mut joined = Vec::new();
        self.join_into(&mut joined, 0)?;
        Ok(Cow::Owned(joined))
    }

    fn join_into(&self, out: &mut Vec<u8>, depth: usize) -> Result<(), BerError> {
        if depth > MAX_DEPTH {
            return Err(err("nested too deeply", 0));
        }
        for piece in self.children() {
            let piece = piece?;
            if !piece.is(tag::OCTET_STRING) {
                return Err(err("a chunked OCTET STRING holds something else", 0));
            }
            if piece.constructed {
                piece.join_into(out, depth + 1)?;
            } else {
                out.extend_from_slice(piece.body);
            }
        }
        Ok(())
    }

    /// The contents of an OBJECT IDENTIFIER, for comparison with [`oid`] constants.
    pub fn oid(&self) -> Result<&'a [u8], BerError> {
        if !self.is(tag::OID) || self.constructed || self.body.is_empty() {
            return Err(err("expected an OBJECT IDENTIFIER", 0));
        }
        Ok(self.body)
    }

    /// A non-negative INTEGER that fits in a u64.
    pub fn uint(&self) -> Result<u64, BerError> {
        if !self.is(tag::INTEGER) || self.constructed || self.body.is_empty() {
            return Err(err("expected an INTEGER", 0));
        }
        if self.body[0] & 0x80 != 0 {
            return Err(err("expected a non-negative INTEGER", 0));
        }
        let digits = match self.body {
            [0, rest @ ..] => rest,
            b => b,
        };
        if digits.len() > 8 {
            return Err(err("INTEGER too large", 0));
        }
        Ok(digits.iter().fold(0u64, |a, b| (a << 8) | *b as u64))
    }
}

/// Iterator over the children of a constructed element.
#[derive(Debug)]
pub struct Children<'a> {
    rest: &'a [u8],
    failed: bool,
}

impl<'a> Iterator for Children<'a> {
    type Item = Result<Tlv<'a>, BerError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() || self.failed {
            return None;
        }
        match read(self.rest) {
            Ok((tlv, rest)) => {
                self.rest = rest;
                Some(Ok(tlv))
            }
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

/// Re-encodes one BER element (and everything in it) as DER: definite lengths, chunked
/// OCTET STRINGs joined. SET OF ordering is left as found.
pub fn to_der(input: &[u8]) -> Result<Vec<u8>, BerError> {
    let tlv = read_all(input)?;
    let mut out = Vec::with_capacity(input.len());
    encode(&tlv, &mut out, 0)?;
    Ok(out)
}

fn encode(tlv: &Tlv<'_>, out: &mut Vec<u8>, depth: usize) -> Result<(), BerError> {
    if depth > MAX_DEPTH {
        return Err(err("nested too deeply", 0));
    }
    let identifier = tlv.raw[0];
    if !tlv.constructed {
        out.push(identifier);
        push_len(out, tlv.body.len());
        out.extend_from_slice(tlv.body);
        return Ok(());
    }
    if tlv.is(tag::OCTET_STRING) {
        let joined = tlv.octets()?;
        out.push(tag::OCTET_STRING);
        push_len(out, joined.len());
        out.extend_from_slice(&joined);
        return Ok(());
    }
    let mut children = Vec::with_capacity(tlv.body.len());
    for child in tlv.children() {
        encode(&child?, &mut children, depth + 1)?;
    }
    out.push(identifier);
    push_len(out, children.len());
    out.extend_from_slice(&children);
    Ok(())
}

/// Appends a DER length.
pub fn push_len(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indefinite_and_constructed_become_der() {
        // SEQUENCE (indefinite) { OCTET STRING constructed (indefinite) { "ab", "c" }, INTEGER 5 }
        let ber = [
            0x30, 0x80, 0x24, 0x80, 0x04, 0x02, b'a', b'b', 0x04, 0x01, b'c', 0, 0, 0x02, 0x01, 5,
            0, 0,
        ];
        assert_eq!(
            to_der(&ber).unwrap(),
            [0x30, 0x08, 0x04, 0x03, b'a', b'b', b'c', 0x02, 0x01, 5]
        );
        let seq = read_all(&ber).unwrap();
        let items = seq.items().unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(&*items[0].octets().unwrap(), b"abc");
        assert_eq!(items[1].uint().unwrap(), 5);
    }

    #[test]
    fn definite_lengths_and_context_tags() {
        // [0] EXPLICIT { OID 1.2.3 }, then trailing byte
        let der = [0xa0, 0x04, 0x06, 0x02, 0x2a, 0x03, 0xff];
        let (tlv, rest) = read(&der).unwrap();
        assert!(tlv.is_context(0));
        assert_eq!(tlv.inner().unwrap().oid().unwrap(), &[0x2a, 0x03]);
        assert_eq!(rest, &[0xff]);
        assert!(read_all(&der).is_err());
    }

    #[test]
    fn hostile_input_is_refused() {
        assert!(to_der(&[0x30, 0x80]).is_err());
        assert!(to_der(&[0x30, 0x85, 1, 1, 1, 1, 1]).is_err());
        assert!(to_der(&[0x04, 0x80, 0, 0]).is_err());
        let deep: Vec<u8> = std::iter::repeat_n([0x30u8, 0x80], 200).flatten().collect();
        assert!(to_der(&deep).is_err());
        assert!(to_der(&[]).is_err());
        assert!(to_der(&[0x30, 0x05, 0x02]).is_err());
        assert!(to_der(&[0x24, 0x03, 0x02, 0x01, 0x00]).is_err());
        assert!(read_all(&[0x02, 0x00]).unwrap().uint().is_err());
        assert!(read_all(&[0x02, 0x01, 0x80]).unwrap().uint().is_err());
    }
}
