//! DER writing: the few constructions the engine emits (RFC 5652 structures are built from
//! these). Reading is `hsm::ber`.

use hsm::ber::push_len;

/// A TLV with a one-byte tag.
pub fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + 6);
    out.push(tag);
    push_len(&mut out, content.len());
    out.extend_from_slice(content);
    out
}

/// SEQUENCE of already encoded elements.
pub fn seq(items: &[&[u8]]) -> Vec<u8> {
    tlv(0x30, &items.concat())
}

/// SET OF, sorted by encoding as DER requires (X.690 §11.6).
pub fn set_of(items: &[Vec<u8>]) -> Vec<u8> {
    let mut sorted: Vec<&Vec<u8>> = items.iter().collect();
    sorted.sort();
    let joined: Vec<u8> = sorted.into_iter().flatten().copied().collect();
    tlv(0x31, &joined)
}

/// OBJECT IDENTIFIER from its contents bytes.
pub fn oid(contents: &[u8]) -> Vec<u8> {
    tlv(0x06, contents)
}

pub fn octets(data: &[u8]) -> Vec<u8> {
    tlv(0x04, data)
}

pub fn null() -> Vec<u8> {
    vec![0x05, 0x00]
}

/// A small non-negative INTEGER.
pub fn uint(n: u64) -> Vec<u8> {
    let bytes = n.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count().min(7);
    let mut content = bytes[skip..].to_vec();
    if content[0] & 0x80 != 0 {
        content.insert(0, 0);
    }
    tlv(0x02, &content)
}

/// `[n]` EXPLICIT (constructed context tag around an element).
pub fn explicit(n: u8, inner: &[u8]) -> Vec<u8> {
    tlv(0xa0 | n, inner)
}

/// `[n]` IMPLICIT on a constructed element: replaces its tag, keeps its contents.
pub fn implicit_constructed(n: u8, element: &[u8]) -> Vec<u8> {
    let mut out = element.to_vec();
    if let Some(first) = out.first_mut() {
        *first = 0xa0 | n;
    }
    out
}

/// AlgorithmIdentifier with optional parameters.
pub fn algorithm(oid_contents: &[u8], params: Option<&[u8]>) -> Vec<u8> {
    match params {
        Some(p) => seq(&[&oid(oid_contents), p]),
        None => seq(&[&oid(oid_contents)]),
    }
}

/// A date as YYYY-MM-DD (UTC) of seconds since the Unix epoch.
pub fn day(unix: u64) -> String {
    let (y, m, d, ..) = civil(unix);
    format!("{y:04}-{m:02}-{d:02}")
}

/// The civil date and time (UTC, proleptic Gregorian) of seconds since the Unix epoch:
/// (year, month 1-12, day 1-31, hour, minute, second).
pub fn civil(unix: u64) -> (i64, u64, u64, u64, u64, u64) {
    let days = (unix / 86_400) as i64;
    let secs = unix % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u64;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u64;
    let y = if m <= 2 { y + 1 } else { y };
    (y, m, d, secs / 3600, secs % 3600 / 60, secs % 60)
}

/// UTCTime (years 1950-2049) or GeneralizedTime, from seconds since the Unix epoch.
pub fn time(unix: u64) -> Vec<u8> {
    let (y, m, d, h, mi, s) = civil(unix);
    if (1950..2050).contains(&y) {
        let text = format!("{:02}{m:02}{d:02}{h:02}{mi:02}{s:02}Z", y % 100);
        tlv(0x17, text.as_bytes())
    } else {
        let text = format!("{y:04}{m:02}{d:02}{h:02}{mi:02}{s:02}Z");
        tlv(0x18, text.as_bytes())
    }
}

/// The identifier and length octets of an element whose contents are written separately
/// (content that streams).
pub fn header(tag: u8, len: u64) -> Vec<u8> {
    let mut out = vec![tag];
    push_len(&mut out, len as usize);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings() {
        assert_eq!(uint(0), [0x02, 0x01, 0x00]);
        assert_eq!(uint(128), [0x02, 0x02, 0x00, 0x80]);
        assert_eq!(uint(65537), [0x02, 0x03, 0x01, 0x00, 0x01]);
        assert_eq!(
            set_of(&[vec![0x05, 0x00], vec![0x02, 0x01, 0x01]]),
            [0x31, 0x05, 0x02, 0x01, 0x01, 0x05, 0x00]
        );
        assert_eq!(time(1_780_272_000), tlv(0x17, b"260601000000Z"));
        assert_eq!(time(2_556_144_000), tlv(0x18, b"20510101000000Z"));
        assert_eq!(time(951_782_400), tlv(0x17, b"000229000000Z"));
        let long = tlv(0x04, &[0u8; 300]);
        assert_eq!(&long[..4], &[0x04, 0x82, 0x01, 0x2c]);
    }
}
