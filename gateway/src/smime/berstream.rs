//! Reading BER from a stream: element headers one at a time, small elements whole (bounded),
//! and the big OCTET STRING contents of CMS (primitive or in chunks, definite or indefinite
//! length, as real clients write them) passed on piece by piece.

use std::io::Read;

use super::error::{Result, SmimeError};
use super::stream::CHUNK;

/// How deep constructed elements may nest.
const MAX_DEPTH: usize = 64;

/// An element's identifier and length.
#[derive(Debug, Clone)]
pub struct Header {
    /// The identifier octet: class (2 bits), constructed (1 bit), tag number (5 bits).
    pub id: u8,
    /// `None` for the indefinite form.
    pub len: Option<u64>,
    /// The header's own encoding.
    pub raw: Vec<u8>,
    /// The stream position where the contents start.
    pub contents_at: u64,
}

impl Header {
    pub fn constructed(&self) -> bool {
        self.id & 0x20 != 0
    }

    /// A universal element with tag number `n`.
    pub fn is(&self, n: u8) -> bool {
        self.id & 0xc0 == 0 && self.id & 0x1f == n
    }

    /// A context-specific element `[n]`.
    pub fn is_context(&self, n: u8) -> bool {
        self.id & 0xc0 == 0x80 && self.id & 0x1f == n
    }

    fn is_end_of_contents(&self) -> bool {
        self.id == 0 && self.len == Some(0)
    }

    /// Where a constructed element ends: a position (definite) or at its end-of-contents.
    pub fn frame(&self) -> Frame {
        Frame {
            end: self.len.map(|l| self.contents_at + l),
        }
    }
}

/// The extent of a constructed element being read.
#[derive(Debug, Clone, Copy)]
pub struct Frame {
    end: Option<u64>,
}

/// A BER reader over a byte stream.
pub struct BerReader<R: Read> {
    r: R,
    pos: u64,
}

fn malformed(what: impl std::fmt::Display, at: u64) -> SmimeError {
    SmimeError::Malformed(format!("CMS: {what} at byte {at}"))
}

impl<R: Read> std::fmt::Debug for BerReader<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BerReader(at {})", self.pos)
    }
}

impl<R: Read> BerReader<R> {
    pub fn new(r: R) -> Self {
        BerReader { r, pos: 0 }
    }

    pub fn pos(&self) -> u64 {
        self.pos
    }

    fn fill(&mut self, buf: &mut [u8], what: &str) -> Result<()> {
        let mut at = 0;
        while at < buf.len() {
            let n = self.r.read(&mut buf[at..])?;
            if n == 0 {
                return Err(malformed(format!("truncated: {what}"), self.pos));
            }
            at += n;
            self.pos += n as u64;
        }
        Ok(())
    }

    /// The next element's header.
    pub fn header(&mut self) -> Result<Header> {
        let start = self.pos;
        let mut b = [0u8; 2];
        self.fill(&mut b, "expected an element")?;
        let mut raw = b.to_vec();
        if b[0] & 0x1f == 0x1f {
            return Err(malformed("tag numbers above 30 are not supported", start));
        }
        let len = if b[1] == 0x80 {
            if b[0] & 0x20 == 0 {
                return Err(malformed("indefinite length on a primitive element", start));
            }
            None
        } else if b[1] & 0x80 == 0 {
            Some(u64::from(b[1]))
        } else {
            let n = (b[1] & 0x7f) as usize;
            if n > 8 {
                return Err(malformed("length field too long", start));
            }
            let mut l = [0u8; 8];
            self.fill(&mut l[..n], "length field")?;
            raw.extend_from_slice(&l[..n]);
            Some(l[..n].iter().fold(0u64, |a, x| (a << 8) | u64::from(*x)))
        };
        Ok(Header {
            id: b[0],
            len,
            raw,
            contents_at: self.pos,
        })
    }

    /// The next child of the constructed element `parent`; `None` at its end (the
    /// end-of-contents of an indefinite element is consumed).
    pub fn next_child(&mut self, parent: Frame) -> Result<Option<Header>> {
        if let Some(end) = parent.end {
            if self.pos == end {
                return Ok(None);
            }
            if self.pos > end {
                return Err(malformed("an element runs past its parent", self.pos));
            }
        }
        let h = self.header()?;
        if h.is_end_of_contents() {
            if parent.end.is_some() {
                return Err(malformed(
                    "end-of-contents inside a definite length",
                    self.pos,
                ));
            }
            return Ok(None);
        }
        if let (Some(end), Some(len)) = (parent.end, h.len)
            && h.contents_at.saturating_add(len) > end
        {
            return Err(malformed("an element runs past its parent", h.contents_at));
        }
        Ok(Some(h))
    }

    /// The next child, which must be there (`what` names it).
    pub fn expect_child(&mut self, parent: Frame, what: &str) -> Result<Header> {
        self.next_child(parent)?
            .ok_or_else(|| malformed(format!("{what} is missing"), self.pos))
    }

    /// Reads the contents of the element whose header was just read and returns the whole
    /// encoding, header included; more than `limit` bytes is refused (`what` names it).
    pub fn element(&mut self, h: &Header, limit: u64, what: &str) -> Result<Vec<u8>> {
        let mut out = h.raw.clone();
        self.contents_into(h, limit, what, &mut out, 0)?;
        Ok(out)
    }

    fn contents_into(
        &mut self,
        h: &Header,
        limit: u64,
        what: &str,
        out: &mut Vec<u8>,
        depth: usize,
    ) -> Result<()> {
        if depth > MAX_DEPTH {
            return Err(malformed("nested too deeply", self.pos));
        }
        match h.len {
            Some(len) => {
                if out.len() as u64 + len > limit {
                    return Err(malformed(
                        format!("{what} is larger than the {limit} bytes accepted"),
                        h.contents_at,
                    ));
                }
                let at = out.len();
                out.resize(at + len as usize, 0);
                self.fill(&mut out[at..], "contents shorter than the length says")?;
            }
            None => loop {
                let c = self.header()?;
                out.extend_from_slice(&c.raw);
                if c.is_end_of_contents() {
                    break;
                }
                self.contents_into(&c, limit, what, out, depth + 1)?;
                if out.len() as u64 > limit {
                    return Err(malformed(
                        format!("{what} is larger than the {limit} bytes accepted"),
                        h.contents_at,
                    ));
                }
            },
        }
        Ok(())
    }

    /// Skips what is left of `parent`.
    pub fn skip_rest(&mut self, parent: Frame) -> Result<()> {
        while let Some(c) = self.next_child(parent)? {
            self.skip(&c, 0)?;
        }
        Ok(())
    }

    fn skip(&mut self, h: &Header, depth: usize) -> Result<()> {
        if depth > MAX_DEPTH {
            return Err(malformed("nested too deeply", self.pos));
        }
        match h.len {
            Some(len) => {
                let n = std::io::copy(&mut (&mut self.r).take(len), &mut std::io::sink())?;
                self.pos += n;
                if n < len {
                    return Err(malformed(
                        "truncated: contents shorter than the length says",
                        self.pos,
                    ));
                }
            }
            None => self.skip_rest(h.frame())?,
        }
        Ok(())
    }

    /// The start of a CMS ContentInfo (RFC 5652 §3): its header (the frame to finish reading
    /// later) and its content type (DER contents of the OID).
    pub fn content_info(&mut self) -> Result<(Header, Vec<u8>)> {
        let info = self.header()?;
        if !info.is(0x10) {
            return Err(malformed("ContentInfo is not a SEQUENCE", 0));
        }
        let kind = self.expect_child(info.frame(), "the CMS content type")?;
        let kind = self.element(&kind, 1024, "the CMS content type")?;
        let kind = hsm::ber::read_all(&kind)?.oid()?.to_vec();
        Ok((info, kind))
    }

    /// The `[0] EXPLICIT` content of the ContentInfo `info`, after [`Self::content_info`].
    pub fn content(&mut self, info: &Header) -> Result<Header> {
        let content = self.expect_child(info.frame(), "the CMS content")?;
        if !content.is_context(0) {
            return Err(malformed(
                "CMS ContentInfo content is not [0]",
                content.contents_at,
            ));
        }
        Ok(content)
    }

    /// Passes the contents of an OCTET STRING (or an implicitly tagged one) to `sink`, piece
    /// by piece: primitive, or constructed from OCTET STRING chunks at any depth.
    pub fn octets(&mut self, h: &Header, sink: &mut dyn FnMut(&[u8]) -> Result<()>) -> Result<()> {
        self.octets_at(h, sink, 0)
    }

    fn octets_at(
        &mut self,
        h: &Header,
        sink: &mut dyn FnMut(&[u8]) -> Result<()>,
        depth: usize,
    ) -> Result<()> {
        if depth > MAX_DEPTH {
            return Err(malformed("nested too deeply", self.pos));
        }
        if !h.constructed() {
            let mut left = h.len.unwrap_or(0);
            let mut buf = vec![0u8; CHUNK.min(left as usize)];
            while left > 0 {
                let n = CHUNK.min(left as usize);
                self.fill(&mut buf[..n], "contents shorter than the length says")?;
                sink(&buf[..n])?;
                left -= n as u64;
            }
            return Ok(());
        }
        let frame = h.frame();
        while let Some(c) = self.next_child(frame)? {
            if !c.is(4) {
                return Err(malformed(
                    "a constructed OCTET STRING holds something else",
                    c.contents_at,
                ));
            }
            self.octets_at(&c, sink, depth + 1)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(data: &[u8]) -> Result<Vec<u8>> {
        let mut r = BerReader::new(data);
        let h = r.header()?;
        let mut out = Vec::new();
        r.octets(&h, &mut |p| {
            out.extend_from_slice(p);
            Ok(())
        })?;
        Ok(out)
    }

    #[test]
    fn octet_strings_in_every_form() {
        assert_eq!(collect(&[4, 3, 1, 2, 3]).unwrap(), [1, 2, 3]);
        // Constructed, indefinite, with a nested constructed chunk.
        let ber = [0x24, 0x80, 4, 1, 9, 0x24, 0x80, 4, 2, 7, 8, 0, 0, 0, 0];
        assert_eq!(collect(&ber).unwrap(), [9, 7, 8]);
        // Constructed, definite.
        assert_eq!(collect(&[0x24, 6, 4, 1, 1, 4, 1, 2]).unwrap(), [1, 2]);
        assert!(collect(&[4, 5, 1]).is_err());
        assert!(collect(&[0x24, 0x80, 2, 1, 1, 0, 0]).is_err());
        assert!(collect(&[0x24, 0x80, 4, 1, 1]).is_err());
        assert!(collect(&[0x24, 3, 4, 5, 1, 2, 3, 4, 5]).is_err());
    }

    #[test]
    fn elements_are_bounded() {
        let ber = [0x30, 0x80, 2, 1, 5, 0x30, 0x80, 0, 0, 0, 0, 0xff];
        let mut r = BerReader::new(&ber[..]);
        let h = r.header().unwrap();
        assert_eq!(r.element(&h, 100, "x").unwrap(), &ber[..11]);
        let mut r = BerReader::new(&ber[..]);
        let h = r.header().unwrap();
        assert!(r.element(&h, 4, "x").is_err());
        let mut deep = [0x30, 0x80].repeat(100);
        deep.extend(vec![0; 200]);
        let mut r = BerReader::new(&deep[..]);
        let h = r.header().unwrap();
        assert!(r.element(&h, 1 << 20, "x").is_err());
    }
}
