//! BER to DER, for PKCS#12 files from NSS and Windows, which use indefinite lengths and
//! constructed OCTET STRINGs that a DER decoder refuses.
//!
//! Indefinite lengths become definite; a constructed OCTET STRING (or BIT STRING's cousin, not
//! needed here) becomes one primitive OCTET STRING. Everything else is copied. Depth and size
//! are bounded so hostile input cannot exhaust the stack.

use crate::error::{Error, Result};

const MAX_DEPTH: usize = 64;

/// Re-encodes one BER element (and everything in it) as DER.
pub(crate) fn to_der(input: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(input.len());
    let used = element(input, &mut out, 0)?;
    if used != input.len() {
        return Err(bad("trailing data after the outer element"));
    }
    Ok(out)
}

fn bad(what: &str) -> Error {
    Error::Pkcs12(format!(
        "the file is not a PKCS#12 archive or is damaged ({what})"
    ))
}

/// Reads an element at the start of `input`, appends its DER form to `out`, returns bytes used.
fn element(input: &[u8], out: &mut Vec<u8>, depth: usize) -> Result<usize> {
    if depth > MAX_DEPTH {
        return Err(bad("nested too deeply"));
    }
    let (tag, mut pos) = read_tag(input)?;
    let constructed = input[0] & 0x20 != 0;
    let first = *input.get(pos).ok_or_else(|| bad("truncated length"))?;
    pos += 1;
    let content_len: Option<usize> = if first == 0x80 {
        None
    } else if first & 0x80 == 0 {
        Some(first as usize)
    } else {
        let n = (first & 0x7f) as usize;
        if n > 4 {
            return Err(bad("length too large"));
        }
        let bytes = input
            .get(pos..pos + n)
            .ok_or_else(|| bad("truncated length"))?;
        pos += n;
        Some(bytes.iter().fold(0usize, |a, b| (a << 8) | *b as usize))
    };
    if !constructed {
        let len = content_len.ok_or_else(|| bad("indefinite length on a primitive"))?;
        let content = input
            .get(pos..pos + len)
            .ok_or_else(|| bad("truncated content"))?;
        out.extend_from_slice(&tag);
        push_len(out, len);
        out.extend_from_slice(content);
        return Ok(pos + len);
    }
    // Constructed: re-encode the children.
    let mut children = Vec::new();
    let end = match content_len {
        Some(len) => {
            let stop = pos
                .checked_add(len)
                .filter(|e| *e <= input.len())
                .ok_or_else(|| bad("truncated content"))?;
            while pos < stop {
                pos += element(&input[pos..stop], &mut children, depth + 1)?;
            }
            stop
        }
        None => loop {
            if input.get(pos..pos + 2) == Some(&[0, 0]) {
                break pos + 2;
            }
            if pos >= input.len() {
                return Err(bad("missing end-of-contents"));
            }
            pos += element(&input[pos..], &mut children, depth + 1)?;
        },
    };
    if tag == [0x24] {
        // Constructed OCTET STRING: concatenate the primitive pieces.
        let mut joined = Vec::new();
        let mut p = 0;
        while p < children.len() {
            let (t, hl) = read_tag(&children[p..])?;
            let (len, ll) = der_len(&children[p + hl..])?;
            if t != [0x04] {
                return Err(bad("constructed OCTET STRING holds something else"));
            }
            let start = p + hl + ll;
            joined.extend_from_slice(&children[start..start + len]);
            p = start + len;
        }
        out.push(0x04);
        push_len(out, joined.len());
        out.extend_from_slice(&joined);
    } else {
        out.extend_from_slice(&tag);
        push_len(out, children.len());
        out.extend_from_slice(&children);
    }
    Ok(end)
}

fn read_tag(input: &[u8]) -> Result<(Vec<u8>, usize)> {
    let first = *input.first().ok_or_else(|| bad("truncated tag"))?;
    if first & 0x1f != 0x1f {
        return Ok((vec![first], 1));
    }
    let mut i = 1;
    while input.get(i).ok_or_else(|| bad("truncated tag"))? & 0x80 != 0 {
        i += 1;
        if i > 5 {
            return Err(bad("tag too long"));
        }
    }
    Ok((input[..=i].to_vec(), i + 1))
}

fn der_len(input: &[u8]) -> Result<(usize, usize)> {
    let first = *input.first().ok_or_else(|| bad("truncated length"))?;
    if first & 0x80 == 0 {
        return Ok((first as usize, 1));
    }
    let n = (first & 0x7f) as usize;
    let bytes = input.get(1..1 + n).ok_or_else(|| bad("truncated length"))?;
    Ok((
        bytes.iter().fold(0usize, |a, b| (a << 8) | *b as usize),
        1 + n,
    ))
}

fn push_len(out: &mut Vec<u8>, len: usize) {
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
    }

    #[test]
    fn hostile_input_is_refused() {
        assert!(to_der(&[0x30, 0x80]).is_err());
        assert!(to_der(&[0x30, 0x85, 1, 1, 1, 1, 1]).is_err());
        assert!(to_der(&[0x04, 0x80, 0, 0]).is_err());
        let deep: Vec<u8> = std::iter::repeat_n([0x30u8, 0x80], 200).flatten().collect();
        assert!(to_der(&deep).is_err());
        assert!(to_der(&[]).is_err());
    }
}
