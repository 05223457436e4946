//! Streaming building blocks. Messages are read from a seekable [`Source`] (a spool file, or
//! bytes in memory) by byte range, and written through small adapters that transform as they
//! pass bytes on (CRLF canonicalisation, base64, quoted-printable, hashing), so memory stays
//! flat whatever the message size.

use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};

use super::error::{Result, SmimeError};
use super::mime;

/// Input that can be read by range: a file or a `Cursor` over bytes.
pub trait Source: Read + Seek {}
impl<T: Read + Seek + ?Sized> Source for T {}

/// The read and write chunk size.
pub const CHUNK: usize = 64 * 1024;

fn malformed(what: impl Into<String>) -> SmimeError {
    SmimeError::Malformed(what.into())
}

/// An error inside an adapter, carried through `io::Error` and recovered by
/// `From<io::Error> for SmimeError`.
pub(crate) fn io_error(e: SmimeError) -> io::Error {
    io::Error::other(e)
}

/// A byte range `[start, end)` of a source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub start: u64,
    pub end: u64,
}

impl Span {
    pub fn len(&self) -> u64 {
        self.end.saturating_sub(self.start)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The whole source.
pub fn whole(src: &mut dyn Source) -> Result<Span> {
    let end = src.seek(SeekFrom::End(0))?;
    Ok(Span { start: 0, end })
}

/// A buffered reader over a span of the source.
pub fn reader(src: &mut dyn Source, span: Span) -> Result<BufReader<io::Take<&mut dyn Source>>> {
    src.seek(SeekFrom::Start(span.start))?;
    Ok(BufReader::with_capacity(CHUNK, src.take(span.len())))
}

/// Copies a span to `out`.
pub fn copy_span(src: &mut dyn Source, span: Span, out: &mut dyn Write) -> Result<()> {
    let mut r = reader(src, span)?;
    io::copy(&mut r, out)?;
    Ok(())
}

/// Reads a span into memory, refusing spans over `limit` bytes (`what` names it).
pub fn read_span(src: &mut dyn Source, span: Span, limit: u64, what: &str) -> Result<Vec<u8>> {
    if span.len() > limit {
        return Err(malformed(format!(
            "{what} is {} bytes, more than the {limit} accepted",
            span.len()
        )));
    }
    let mut out = Vec::with_capacity(span.len() as usize);
    reader(src, span)?.read_to_end(&mut out)?;
    Ok(out)
}

/// The header block of the entity in `span` (read into memory, at most 1 MiB) and where its
/// body starts. Parse it with [`mime::Entity::parse`].
pub fn read_header(src: &mut dyn Source, span: Span) -> Result<(Vec<u8>, u64)> {
    let limit = (mime::MAX_HEADER as u64 + 4).min(span.len());
    let mut r = reader(src, span)?.take(limit);
    let mut buf = Vec::new();
    // Read in growing pieces until the empty line: headers are small, bodies may be huge.
    let mut want = 8 * 1024u64;
    let (hlen, found) = loop {
        let got = r.by_ref().take(want).read_to_end(&mut buf)? as u64;
        let (header, _) = mime::split_header(&buf);
        let found = header.ends_with(b"\n\n")
            || header.ends_with(b"\n\r\n")
            || header == b"\r\n"
            || header == b"\n";
        if found || got < want {
            break (header.len(), found);
        }
        want *= 2;
    };
    if !found && limit < span.len() {
        return Err(malformed("the header block is larger than 1 MiB"));
    }
    buf.truncate(hlen);
    Ok((buf, span.start + hlen as u64))
}

/// The body parts of the multipart body in `span`, as spans: from after each delimiter line
/// to before the line break that precedes the next delimiter (RFC 2046 §5.1.1). Lines are
/// scanned without being held in memory.
pub fn multipart_spans(src: &mut dyn Source, span: Span, boundary: &str) -> Result<Vec<Span>> {
    if boundary.is_empty() || boundary.len() > 70 {
        return Err(malformed(
            "multipart boundary is empty or longer than 70 characters",
        ));
    }
    let delimiter = format!("--{boundary}").into_bytes();
    // Enough of a line to tell a delimiter (with some trailing white space) from content.
    let keep = delimiter.len() + 2 + 256;
    let mut r = reader(src, span)?;
    let mut parts = Vec::new();
    let mut current: Option<u64> = None;
    let mut pos = span.start;
    let mut line_start = pos;
    let mut line: Vec<u8> = Vec::with_capacity(keep);
    let mut line_long = false;
    // Whether the line before the current one ended in CRLF (vs bare LF).
    let mut prev_crlf = false;
    let mut last_byte = 0u8;
    let mut closed = false;
    let mut on_line = |line: &[u8], long: bool, start: u64, end: u64, prev_crlf: bool| -> bool {
        // Returns true when the closing delimiter was seen.
        if long {
            return false;
        }
        let text = line.strip_suffix(b"\n").unwrap_or(line);
        let text = text.strip_suffix(b"\r").unwrap_or(text);
        if !text.starts_with(&delimiter) {
            return false;
        }
        let after = &text[delimiter.len()..];
        let is_close = after.starts_with(b"--");
        let trailing = if is_close { &after[2..] } else { after };
        if !trailing.iter().all(|b| *b == b' ' || *b == b'\t') {
            return false;
        }
        if let Some(s) = current.take() {
            let mut e = start;
            if e > s {
                e -= 1; // the LF
                if prev_crlf && e > s {
                    e -= 1;
                }
            }
            parts.push(Span {
                start: s,
                end: e.max(s),
            });
        }
        if is_close {
            return true;
        }
        current = Some(end);
        false
    };
    'fill: loop {
        let buf = r.fill_buf()?;
        if buf.is_empty() {
            break;
        }
        let n = buf.len();
        let mut i = 0;
        while i < n {
            let Some(p) = buf[i..].iter().position(|b| *b == b'\n') else {
                if !line_long && line.len() + (n - i) <= keep {
                    line.extend_from_slice(&buf[i..]);
                } else {
                    line_long = true;
                }
                break;
            };
            let j = i + p;
            if !line_long && line.len() + p < keep {
                line.extend_from_slice(&buf[i..=j]);
            } else {
                line_long = true;
            }
            let end = pos + (j + 1) as u64;
            if on_line(&line, line_long, line_start, end, prev_crlf) {
                closed = true;
                break 'fill;
            }
            let before = if j > 0 { buf[j - 1] } else { last_byte };
            prev_crlf = before == b'\r';
            line.clear();
            line_long = false;
            line_start = end;
            i = j + 1;
        }
        last_byte = buf[n - 1];
        pos += n as u64;
        r.consume(n);
    }
    if !closed && !line.is_empty() && !line_long {
        // A last line without a line ending.
        closed = on_line(&line, false, line_start, span.end, prev_crlf);
    }
    if !closed {
        return Err(malformed(format!(
            "multipart body: the closing delimiter --{boundary}-- is missing"
        )));
    }
    Ok(parts)
}

/// Turns every bare LF into CRLF on the way through (the canonical form signatures cover).
pub struct Crlf<W: Write> {
    inner: W,
    last_cr: bool,
}

impl<W: Write> Crlf<W> {
    pub fn new(inner: W) -> Self {
        Crlf {
            inner,
            last_cr: false,
        }
    }

    pub fn into_inner(self) -> W {
        self.inner
    }
}

impl<W: Write> Write for Crlf<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut start = 0;
        for (i, &b) in buf.iter().enumerate() {
            if b == b'\n' {
                let prev_cr = if i == 0 {
                    self.last_cr
                } else {
                    buf[i - 1] == b'\r'
                };
                if !prev_cr {
                    self.inner.write_all(&buf[start..i])?;
                    self.inner.write_all(b"\r")?;
                    start = i;
                }
            }
        }
        self.inner.write_all(&buf[start..])?;
        if let Some(&b) = buf.last() {
            self.last_cr = b == b'\r';
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Base64 in lines of 76 characters with CRLF (RFC 2045). Call [`B64Encoder::finish`].
pub struct B64Encoder<W: Write> {
    inner: W,
    pending: [u8; 3],
    npending: usize,
    line: usize,
    out: Vec<u8>,
    any: bool,
}

impl<W: Write> B64Encoder<W> {
    pub fn new(inner: W) -> Self {
        B64Encoder {
            inner,
            pending: [0; 3],
            npending: 0,
            line: 0,
            out: Vec::with_capacity(CHUNK + CHUNK / 2),
            any: false,
        }
    }

    fn group(&mut self, b: [u8; 3], n: usize) {
        if self.line == 19 {
            self.out.extend_from_slice(b"\r\n");
            self.line = 0;
        }
        let v = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for k in 0..4 {
            if k <= n {
                self.out.push(ALPHABET[((v >> (18 - 6 * k)) & 63) as usize]);
            } else {
                self.out.push(b'=');
            }
        }
        self.line += 1;
    }

    /// Writes the last group and line break; returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        if self.npending > 0 {
            let mut b = [0u8; 3];
            b[..self.npending].copy_from_slice(&self.pending[..self.npending]);
            self.group(b, self.npending);
        }
        if self.any {
            self.out.extend_from_slice(b"\r\n");
        }
        self.inner.write_all(&self.out)?;
        Ok(self.inner)
    }
}

impl<W: Write> Write for B64Encoder<W> {
    fn write(&mut self, mut buf: &[u8]) -> io::Result<usize> {
        let n = buf.len();
        if n > 0 {
            self.any = true;
        }
        while self.npending > 0 && self.npending < 3 && !buf.is_empty() {
            self.pending[self.npending] = buf[0];
            self.npending += 1;
            buf = &buf[1..];
        }
        match self.npending {
            0 => {}
            3 => {
                let p = self.pending;
                self.group(p, 3);
                self.npending = 0;
            }
            _ => return Ok(n), // still short of a group: buf is used up
        }
        let mut chunks = buf.chunks_exact(3);
        for c in &mut chunks {
            self.group([c[0], c[1], c[2]], 3);
            if self.out.len() >= CHUNK {
                self.inner.write_all(&self.out)?;
                self.out.clear();
            }
        }
        let rest = chunks.remainder();
        self.pending[..rest.len()].copy_from_slice(rest);
        self.npending = rest.len();
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.write_all(&self.out)?;
        self.out.clear();
        self.inner.flush()
    }
}

/// Incremental base64 decoding: white space is skipped, anything else outside the alphabet
/// is an error naming its offset.
#[derive(Debug, Default)]
pub struct B64Decoder {
    quad: [u8; 4],
    n: usize,
    padding: usize,
    offset: u64,
}

/// Sextet values; 64 white space, 65 padding, 255 invalid.
const B64_VALUES: [u8; 256] = {
    let mut t = [255u8; 256];
    let mut i = 0;
    while i < 64 {
        t[ALPHABET[i] as usize] = i as u8;
        i += 1;
    }
    t[b' ' as usize] = 64;
    t[b'\t' as usize] = 64;
    t[b'\r' as usize] = 64;
    t[b'\n' as usize] = 64;
    t[b'=' as usize] = 65;
    t
};

impl B64Decoder {
    pub fn push(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<()> {
        out.reserve(data.len() / 4 * 3 + 3);
        for (i, &b) in data.iter().enumerate() {
            let v = B64_VALUES[b as usize];
            if v < 64 && self.padding == 0 {
                self.quad[self.n] = v;
                self.n += 1;
                if self.n == 4 {
                    let q = self.quad;
                    out.extend_from_slice(&[
                        (q[0] << 2) | (q[1] >> 4),
                        (q[1] << 4) | (q[2] >> 2),
                        (q[2] << 6) | q[3],
                    ]);
                    self.n = 0;
                }
                continue;
            }
            let at = self.offset + i as u64;
            match v {
                64 => {}
                65 => {
                    if self.padding == 0 {
                        self.flush_partial(out);
                    }
                    self.padding += 1;
                }
                255 => {
                    return Err(malformed(format!(
                        "base64 body: byte 0x{b:02x} at offset {at} is not base64"
                    )));
                }
                _ => {
                    return Err(malformed(format!(
                        "base64 body: data after padding at offset {at}"
                    )));
                }
            }
        }
        self.offset += data.len() as u64;
        Ok(())
    }

    /// Emits the bytes of an incomplete final group (two or three characters).
    fn flush_partial(&mut self, out: &mut Vec<u8>) {
        let q = self.quad;
        match self.n {
            2 => out.push((q[0] << 2) | (q[1] >> 4)),
            3 => out.extend_from_slice(&[(q[0] << 2) | (q[1] >> 4), (q[1] << 4) | (q[2] >> 2)]),
            _ => return,
        }
        self.n = 0;
    }

    /// Ends the input: the final group without padding is decoded; one lone character is an
    /// error.
    pub fn finish(&mut self, out: &mut Vec<u8>) -> Result<()> {
        if self.n == 1 {
            return Err(malformed("base64 body: truncated (a lone final character)"));
        }
        self.flush_partial(out);
        Ok(())
    }
}

/// Reads base64 text from `inner` and yields the decoded bytes.
pub struct B64Reader<R: Read> {
    inner: R,
    dec: B64Decoder,
    buf: Vec<u8>,
    out: Vec<u8>,
    at: usize,
    done: bool,
}

impl<R: Read> B64Reader<R> {
    pub fn new(inner: R) -> Self {
        B64Reader {
            inner,
            dec: B64Decoder::default(),
            buf: vec![0; CHUNK],
            out: Vec::with_capacity(CHUNK),
            at: 0,
            done: false,
        }
    }
}

impl<R: Read> Read for B64Reader<R> {
    fn read(&mut self, dst: &mut [u8]) -> io::Result<usize> {
        while self.at == self.out.len() && !self.done {
            self.out.clear();
            self.at = 0;
            let n = self.inner.read(&mut self.buf)?;
            if n == 0 {
                self.done = true;
                self.dec.finish(&mut self.out).map_err(io_error)?;
            } else {
                self.dec
                    .push(&self.buf[..n], &mut self.out)
                    .map_err(io_error)?;
            }
        }
        let n = dst.len().min(self.out.len() - self.at);
        dst[..n].copy_from_slice(&self.out[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// Quoted-printable encoding for text (RFC 2045 §6.7): line breaks kept as CRLF, lines under
/// 76 characters, white space before a line break and every byte outside printable ASCII
/// escaped. Call [`QpEncoder::finish`].
pub struct QpEncoder<W: Write> {
    inner: W,
    width: usize,
    pending_ws: Option<u8>,
    pending_cr: bool,
    out: Vec<u8>,
}

impl<W: Write> QpEncoder<W> {
    pub fn new(inner: W) -> Self {
        QpEncoder {
            inner,
            width: 0,
            pending_ws: None,
            pending_cr: false,
            out: Vec::with_capacity(CHUNK + 1024),
        }
    }

    fn piece(&mut self, b: u8, literal: bool) {
        let len = if literal { 1 } else { 3 };
        if self.width + len > 75 {
            self.out.extend_from_slice(b"=\r\n");
            self.width = 0;
        }
        self.width += len;
        if literal {
            self.out.push(b);
        } else {
            const HEX: &[u8; 16] = b"0123456789ABCDEF";
            self.out
                .extend_from_slice(&[b'=', HEX[(b >> 4) as usize], HEX[(b & 15) as usize]]);
        }
    }

    /// Flushes held white space: escaped when it ends a line, literal otherwise.
    fn settle_ws(&mut self, at_line_end: bool) {
        if let Some(ws) = self.pending_ws.take() {
            self.piece(ws, !at_line_end);
        }
    }

    fn byte(&mut self, b: u8) {
        if self.pending_cr {
            self.pending_cr = false;
            if b == b'\n' {
                self.settle_ws(true);
                self.out.extend_from_slice(b"\r\n");
                self.width = 0;
                return;
            }
            self.settle_ws(false);
            self.piece(b'\r', false);
        }
        match b {
            b'\r' => self.pending_cr = true,
            b'\n' => {
                self.settle_ws(true);
                self.out.extend_from_slice(b"\r\n");
                self.width = 0;
            }
            b' ' | b'\t' => {
                self.settle_ws(false);
                self.pending_ws = Some(b);
            }
            _ => {
                self.settle_ws(false);
                let literal = (0x21..=0x7e).contains(&b) && b != b'=';
                self.piece(b, literal);
            }
        }
    }

    pub fn finish(mut self) -> io::Result<W> {
        if self.pending_cr {
            self.pending_cr = false;
            self.settle_ws(false);
            self.piece(b'\r', false);
        }
        self.settle_ws(true);
        self.inner.write_all(&self.out)?;
        Ok(self.inner)
    }
}

/// Quoted-printable decoding, lenient as mail readers are (a bad escape is kept as written).
pub struct QpDecoder<W: Write> {
    inner: W,
    /// Bytes of an escape not yet complete: "=", "=X", "=\r".
    held: Vec<u8>,
    out: Vec<u8>,
}

impl<W: Write> QpDecoder<W> {
    pub fn new(inner: W) -> Self {
        QpDecoder {
            inner,
            held: Vec::with_capacity(3),
            out: Vec::with_capacity(CHUNK),
        }
    }

    fn byte(&mut self, b: u8) {
        let hex = |c: u8| (c as char).to_digit(16);
        if self.held.is_empty() {
            if b == b'=' {
                self.held.push(b);
            } else {
                self.out.push(b);
            }
            return;
        }
        self.held.push(b);
        match self.held.as_slice() {
            [b'=', b'\n'] | [b'=', b'\r', b'\n'] => self.held.clear(), // soft line break
            [b'=', b'\r'] => {}
            [b'=', h] if hex(*h).is_some() => {}
            [b'=', h, l] if hex(*h).is_some() && hex(*l).is_some() => {
                let v = (hex(*h).unwrap_or(0) * 16 + hex(*l).unwrap_or(0)) as u8;
                self.out.push(v);
                self.held.clear();
            }
            _ => {
                // Not an escape: the "=" is literal; the bytes after it are read again.
                let held = std::mem::take(&mut self.held);
                self.out.push(b'=');
                for &c in &held[1..] {
                    self.byte(c);
                }
            }
        }
    }

    pub fn finish(mut self) -> io::Result<W> {
        let held = std::mem::take(&mut self.held);
        self.out.extend_from_slice(&held);
        self.inner.write_all(&self.out)?;
        Ok(self.inner)
    }
}

/// The byte-at-a-time coders write through an output buffer passed on in CHUNK pieces.
macro_rules! byte_coder_write {
    ($($t:ident),*) => {$(
        impl<W: Write> Write for $t<W> {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                for &b in buf {
                    self.byte(b);
                }
                if self.out.len() >= CHUNK {
                    self.inner.write_all(&self.out)?;
                    self.out.clear();
                }
                Ok(buf.len())
            }

            fn flush(&mut self) -> io::Result<()> {
                self.inner.write_all(&self.out)?;
                self.out.clear();
                self.inner.flush()
            }
        }
    )*};
}
byte_coder_write!(QpEncoder, QpDecoder);

/// Feeds everything written to several hashes at once.
#[derive(Debug, Default)]
pub struct Digests {
    hashers: Vec<hsm::Hasher>,
}

impl Digests {
    pub fn new(hashes: &[hsm::Hash]) -> Self {
        let mut hashers: Vec<hsm::Hasher> = Vec::new();
        for h in hashes {
            if !hashers.iter().any(|x| x.hash() == *h) {
                hashers.push(h.hasher());
            }
        }
        Digests { hashers }
    }

    /// Each hash and its value.
    pub fn finish(self) -> Vec<(hsm::Hash, Vec<u8>)> {
        self.hashers
            .into_iter()
            .map(|h| (h.hash(), h.finish()))
            .collect()
    }
}

impl Write for Digests {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        for h in &mut self.hashers {
            h.update(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Writes to two writers.
pub struct Tee<A: Write, B: Write>(pub A, pub B);

impl<A: Write, B: Write> Write for Tee<A, B> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write_all(buf)?;
        self.1.write_all(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()?;
        self.1.flush()
    }
}

/// Adapters print as their name (their buffers are not interesting).
macro_rules! debug_name {
    ($($t:ident<$g:ident: $b:path>),*) => {$(
        impl<$g: $b> std::fmt::Debug for $t<$g> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(stringify!($t))
            }
        }
    )*};
}
debug_name!(Crlf<W: Write>, B64Encoder<W: Write>, B64Reader<R: Read>, QpEncoder<W: Write>, QpDecoder<W: Write>);

impl<A: Write, B: Write> std::fmt::Debug for Tee<A, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tee")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn spans_of(body: &[u8], boundary: &str) -> Result<Vec<Vec<u8>>> {
        let mut c = Cursor::new(body.to_vec());
        let span = whole(&mut c)?;
        Ok(multipart_spans(&mut c, span, boundary)?
            .into_iter()
            .map(|s| body[s.start as usize..s.end as usize].to_vec())
            .collect())
    }

    #[test]
    fn multipart_spans_are_exact() {
        let body = b"preamble\r\n--b\r\nA: 1\r\n\r\none\r\n--b\r\n\r\ntwo\r\n--b--\r\nepilogue";
        assert_eq!(
            spans_of(body, "b").unwrap(),
            vec![b"A: 1\r\n\r\none".to_vec(), b"\r\ntwo".to_vec()]
        );
        assert!(spans_of(b"--b\r\nx\r\n", "b").is_err());
        assert_eq!(
            spans_of(b"--b\nx\n--bb\n--b--\n", "b").unwrap(),
            vec![b"x\n--bb".to_vec()]
        );
        assert_eq!(
            spans_of(b"--b\r\nx\r\n--b--", "b").unwrap(),
            vec![b"x".to_vec()]
        );
        // A long line (longer than the scanner keeps) ending in CRLF before the delimiter.
        let long = [
            b"--b\r\n".to_vec(),
            vec![b'a'; 300_000],
            b"\r\n--b--\r\n".to_vec(),
        ]
        .concat();
        assert_eq!(spans_of(&long, "b").unwrap(), vec![vec![b'a'; 300_000]]);
        let long_lf = [
            b"--b\n".to_vec(),
            vec![b'a'; 300_000],
            b"\r\r\n--b--\n".to_vec(),
        ]
        .concat();
        let mut want = vec![b'a'; 300_000];
        want.push(b'\r');
        assert_eq!(spans_of(&long_lf, "b").unwrap(), vec![want]);
    }

    #[test]
    fn crlf_across_writes() {
        let mut w = Crlf::new(Vec::new());
        w.write_all(b"a\r").unwrap();
        w.write_all(b"\nb\n").unwrap();
        w.write_all(b"\nc").unwrap();
        assert_eq!(w.into_inner(), b"a\r\nb\r\n\r\nc");
    }

    #[test]
    fn base64_streams_like_the_one_shot_codec() {
        for n in [0usize, 1, 2, 3, 56, 57, 58, 1000, 70_000] {
            let data: Vec<u8> = (0..n).map(|i| (i * 31 + 7) as u8).collect();
            let mut enc = B64Encoder::new(Vec::new());
            for piece in data.chunks(5) {
                enc.write_all(piece).unwrap();
            }
            let text = enc.finish().unwrap();
            assert_eq!(text, mime::base64_encode(&data), "{n}");
            assert!(text.split(|b| *b == b'\n').all(|l| l.len() <= 77));
            assert_eq!(text.len(), n.div_ceil(3) * 4 + n.div_ceil(57) * 2);
            let mut back = Vec::new();
            B64Reader::new(Cursor::new(&text))
                .read_to_end(&mut back)
                .unwrap();
            assert_eq!(back, data);
        }
        // RFC 4648 §10.
        for (plain, coded) in [
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foobar", "Zm9vYmFy"),
        ] {
            let mut enc = B64Encoder::new(Vec::new());
            for b in plain.bytes() {
                enc.write_all(&[b]).unwrap();
            }
            assert_eq!(enc.finish().unwrap(), format!("{coded}\r\n").as_bytes());
        }
        let mut back = Vec::new();
        let e = B64Reader::new(Cursor::new(b"QUJD*")).read_to_end(&mut back);
        assert!(SmimeError::from(e.unwrap_err()).is_malformed());
    }

    #[test]
    fn quoted_printable_round_trips() {
        let text = "Grüße aus Köln = fünf\r\ntrailing space \r\ntab\t\nbare\rcr\r".repeat(20)
            + &"x".repeat(200);
        let mut enc = QpEncoder::new(Vec::new());
        for piece in text.as_bytes().chunks(7) {
            enc.write_all(piece).unwrap();
        }
        let encoded = enc.finish().unwrap();
        assert!(encoded.iter().all(|b| *b < 0x80));
        assert!(encoded.split(|b| *b == b'\n').all(|l| l.len() <= 77));
        let mut dec = QpDecoder::new(Vec::new());
        for piece in encoded.chunks(3) {
            dec.write_all(piece).unwrap();
        }
        let back = dec.finish().unwrap();
        let want = text.replace("\t\n", "\t\r\n");
        assert_eq!(String::from_utf8(back).unwrap(), want);
        let mut dec = QpDecoder::new(Vec::new());
        dec.write_all(b"a=3Db=\r\nc=zz=").unwrap();
        assert_eq!(dec.finish().unwrap(), b"a=bc=zz=");
    }
}
