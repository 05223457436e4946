//! The SMTP client protocol, sans I/O: a reply reader that takes bytes and returns complete
//! (multi-line) replies, the EHLO capabilities, the commands of a transaction, and the data
//! encoder (CRLF line ends, dot-stuffing, the final dot). The delivery task drives them
//! over TCP and TLS.

/// A reply from the server: its code and text lines (without the code).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub code: u16,
    pub lines: Vec<String>,
}

impl Response {
    pub fn is_positive(&self) -> bool {
        (200..400).contains(&self.code)
    }

    pub fn is_permanent(&self) -> bool {
        self.code >= 500
    }

    /// The reply on one line, as logs and DSNs show it: `550 5.1.1 no such user`.
    pub fn one_line(&self) -> String {
        format!("{} {}", self.code, self.lines.join(" / "))
    }
}

impl std::fmt::Display for Response {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.one_line())
    }
}

/// A malformed reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the server's reply is malformed: {0}")]
pub struct BadReply(pub String);

/// Longest reply line we accept, and most lines in one reply.
const MAX_REPLY_LINE: usize = 4096;
const MAX_REPLY_LINES: usize = 256;

/// Reads replies out of received bytes.
#[derive(Debug, Default)]
pub struct ReplyReader {
    buf: Vec<u8>,
    lines: Vec<String>,
    code: Option<u16>,
}

impl ReplyReader {
    pub fn receive(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Whether bytes are waiting that are not yet a whole reply.
    pub fn has_partial(&self) -> bool {
        !self.buf.is_empty() || !self.lines.is_empty()
    }

    /// The next complete reply, if one has arrived.
    pub fn next_reply(&mut self) -> Result<Option<Response>, BadReply> {
        loop {
            let Some(nl) = self.buf.iter().position(|&b| b == b'\n') else {
                if self.buf.len() > MAX_REPLY_LINE {
                    return Err(BadReply("a reply line is too long".into()));
                }
                return Ok(None);
            };
            let line: Vec<u8> = self.buf.drain(..=nl).collect();
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end_matches(['\r', '\n']);
            let b = line.as_bytes();
            if b.len() < 3 || !b[..3].iter().all(u8::is_ascii_digit) {
                return Err(BadReply(format!("{line:?} does not start with a code")));
            }
            let code: u16 = line[..3].parse().unwrap_or(0);
            if !(200..600).contains(&code) {
                return Err(BadReply(format!("{line:?}: no such reply code")));
            }
            if self.code.is_some_and(|c| c != code) {
                return Err(BadReply(format!(
                    "{line:?}: the code changes within a reply"
                )));
            }
            self.code = Some(code);
            let more = b.get(3) == Some(&b'-');
            if b.len() > 3 && !more && b[3] != b' ' {
                return Err(BadReply(format!("{line:?}: no space after the code")));
            }
            self.lines.push(line.get(4..).unwrap_or("").to_string());
            if self.lines.len() > MAX_REPLY_LINES {
                return Err(BadReply("a reply has too many lines".into()));
            }
            if !more {
                self.code = None;
                return Ok(Some(Response {
                    code,
                    lines: std::mem::take(&mut self.lines),
                }));
            }
        }
    }
}

/// What the server offers in its EHLO reply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    pub pipelining: bool,
    pub starttls: bool,
    pub eight_bit: bool,
    pub smtputf8: bool,
    pub dsn: bool,
    /// SIZE limit (0: none given).
    pub size: Option<u64>,
    pub auth: Vec<String>,
}

impl Capabilities {
    pub fn from_ehlo(r: &Response) -> Capabilities {
        let mut c = Capabilities::default();
        for line in r.lines.iter().skip(1) {
            let mut words = line.split_whitespace();
            let Some(kw) = words.next() else { continue };
            match kw.to_ascii_uppercase().as_str() {
                "PIPELINING" => c.pipelining = true,
                "STARTTLS" => c.starttls = true,
                "8BITMIME" => c.eight_bit = true,
                "SMTPUTF8" => c.smtputf8 = true,
                "DSN" => c.dsn = true,
                "SIZE" => c.size = Some(words.next().and_then(|n| n.parse().ok()).unwrap_or(0)),
                "AUTH" => c.auth = words.map(|w| w.to_ascii_uppercase()).collect(),
                _ => {}
            }
        }
        c
    }
}

/// A transaction to send: the reverse path, the recipients with their DSN parameters, and
/// what the message needs.
#[derive(Debug, Clone, Default)]
pub struct Transaction {
    pub from: String,
    /// (address, NOTIFY, ORCPT).
    pub recipients: Vec<(String, Option<String>, Option<String>)>,
    pub size: u64,
    pub eight_bit: bool,
    pub smtputf8: bool,
    pub ret_full: Option<bool>,
    pub envid: Option<String>,
}

impl Transaction {
    /// MAIL FROM with the parameters the server understands.
    pub fn mail_command(&self, caps: &Capabilities) -> String {
        let mut c = format!("MAIL FROM:<{}>", self.from);
        if caps.size.is_some() {
            c.push_str(&format!(" SIZE={}", self.size));
        }
        if self.eight_bit && caps.eight_bit {
            c.push_str(" BODY=8BITMIME");
        }
        if self.smtputf8 && caps.smtputf8 {
            c.push_str(" SMTPUTF8");
        }
        if caps.dsn {
            if let Some(full) = self.ret_full {
                c.push_str(if full { " RET=FULL" } else { " RET=HDRS" });
            }
            if let Some(e) = &self.envid {
                c.push_str(&format!(" ENVID={e}"));
            }
        }
        c.push_str("\r\n");
        c
    }

    /// RCPT TO for each recipient.
    pub fn rcpt_commands(&self, caps: &Capabilities) -> Vec<String> {
        self.recipients
            .iter()
            .map(|(a, notify, orcpt)| {
                let mut c = format!("RCPT TO:<{a}>");
                if caps.dsn {
                    if let Some(n) = notify {
                        c.push_str(&format!(" NOTIFY={n}"));
                    }
                    if let Some(o) = orcpt {
                        c.push_str(&format!(" ORCPT={o}"));
                    }
                }
                c.push_str("\r\n");
                c
            })
            .collect()
    }
}

/// Encodes message data for DATA: line ends become CRLF (a bare LF or CR too), a line that
/// starts with a dot gets another, and `finish` ends the last line and adds the final dot.
#[derive(Debug)]
pub struct DataEncoder {
    at_line_start: bool,
    last_cr: bool,
}

impl Default for DataEncoder {
    fn default() -> Self {
        DataEncoder {
            at_line_start: true,
            last_cr: false,
        }
    }
}

impl DataEncoder {
    pub fn encode(&mut self, data: &[u8], out: &mut Vec<u8>) {
        out.reserve(data.len() + data.len() / 64);
        for &b in data {
            match b {
                b'\n' => {
                    if !self.last_cr {
                        out.push(b'\r');
                    }
                    out.push(b'\n');
                    self.at_line_start = true;
                    self.last_cr = false;
                    continue;
                }
                _ if self.last_cr => {
                    // A bare CR: end the line.
                    out.push(b'\n');
                    self.at_line_start = true;
                }
                _ => {}
            }
            if b == b'\r' {
                out.push(b'\r');
                self.last_cr = true;
                continue;
            }
            self.last_cr = false;
            if self.at_line_start && b == b'.' {
                out.push(b'.');
            }
            self.at_line_start = false;
            out.push(b);
        }
    }

    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if self.last_cr {
            out.push(b'\n');
        } else if !self.at_line_start {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
        *self = DataEncoder::default();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn replies_single_and_multi_line_in_pieces() {
        let mut r = ReplyReader::default();
        r.receive(b"250-mx.example.net hello\r\n250-PIPE");
        assert_eq!(r.next_reply().unwrap(), None);
        r.receive(b"LINING\r\n250-SIZE 1000\r\n250-STARTTLS\r\n250 DSN\r\n354 go\r\n");
        let ehlo = r.next_reply().unwrap().unwrap();
        assert_eq!(ehlo.code, 250);
        let caps = Capabilities::from_ehlo(&ehlo);
        assert!(caps.pipelining && caps.starttls && caps.dsn && !caps.eight_bit);
        assert_eq!(caps.size, Some(1000));
        assert_eq!(r.next_reply().unwrap().unwrap().code, 354);
        assert!(!r.has_partial());
    }

    #[test]
    fn malformed_replies_are_errors() {
        for bad in [
            &b"hello\r\n"[..],
            b"250-a\r\n251 b\r\n",
            b"999 no\r\n",
            b"250xyz\r\n",
        ] {
            let mut r = ReplyReader::default();
            r.receive(bad);
            let mut res = r.next_reply();
            if matches!(res, Ok(Some(_))) {
                res = r.next_reply();
            }
            assert!(res.is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        let mut r = ReplyReader::default();
        r.receive(&[b'2'; 5000]);
        assert!(r.next_reply().is_err());
    }

    #[test]
    fn data_is_stuffed_and_ends_with_crlf_dot() {
        let mut e = DataEncoder::default();
        let mut out = Vec::new();
        e.encode(b"Subject: x\n\n.hidden\r\n..two\r", &mut out);
        e.encode(b"\nlast", &mut out);
        e.finish(&mut out);
        assert_eq!(
            out,
            b"Subject: x\r\n\r\n..hidden\r\n...two\r\nlast\r\n.\r\n".to_vec()
        );
        let mut out = Vec::new();
        e.encode(b"a\r\n", &mut out);
        e.finish(&mut out);
        assert_eq!(out, b"a\r\n.\r\n".to_vec());
    }

    #[test]
    fn commands_carry_only_parameters_the_server_knows() {
        let t = Transaction {
            from: "a@example.com".into(),
            recipients: vec![("b@example.net".into(), Some("FAILURE".into()), None)],
            size: 42,
            eight_bit: true,
            smtputf8: false,
            ret_full: Some(false),
            envid: Some("x1".into()),
        };
        let none = Capabilities::default();
        assert_eq!(t.mail_command(&none), "MAIL FROM:<a@example.com>\r\n");
        assert_eq!(t.rcpt_commands(&none), vec!["RCPT TO:<b@example.net>\r\n"]);
        let all = Capabilities {
            dsn: true,
            eight_bit: true,
            size: Some(0),
            ..Default::default()
        };
        assert_eq!(
            t.mail_command(&all),
            "MAIL FROM:<a@example.com> SIZE=42 BODY=8BITMIME RET=HDRS ENVID=x1\r\n"
        );
        assert_eq!(
            t.rcpt_commands(&all),
            vec!["RCPT TO:<b@example.net> NOTIFY=FAILURE\r\n"]
        );
    }
}
