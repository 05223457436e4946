//! PINs and passphrases: a secret type that never prints, and where to read one from.
//!
//! A PIN is read from a file (`file:/etc/smimegw/pin`), an environment variable
//! (`env:SMIMEGW_PIN`), given in a URI (`pin-value=`), or asked for on the terminal (`prompt`).
//! It is held in a [`Pin`], which zeroes its memory on drop and whose `Debug` prints `Pin(***)`.

use std::fmt;
use std::path::PathBuf;

use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// A PIN or passphrase. Never printed, zeroed on drop.
#[derive(Clone)]
pub struct Pin(Zeroizing<String>);

impl Pin {
    /// Wraps a PIN.
    pub fn new(pin: String) -> Self {
        Pin(Zeroizing::new(pin))
    }

    /// The PIN itself, for the one call that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pin(***)")
    }
}

/// Where a PIN comes from.
#[derive(Clone, PartialEq, Eq)]
pub enum PinSource {
    /// A file whose first line is the PIN (`file:/path`; a bare absolute path is accepted too).
    File(PathBuf),
    /// An environment variable (`env:NAME`).
    Env(String),
    /// The PIN itself (`pin-value=` in a URI). Avoid outside tests: it ends up in process lists.
    Value(Zeroizing<String>),
    /// Ask on the controlling terminal (`prompt`).
    Prompt,
}

impl fmt::Debug for PinSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PinSource::File(p) => write!(f, "File({})", p.display()),
            PinSource::Env(v) => write!(f, "Env({v})"),
            PinSource::Value(_) => f.write_str("Value(***)"),
            PinSource::Prompt => f.write_str("Prompt"),
        }
    }
}

impl PinSource {
    /// Parses `file:PATH`, `env:NAME`, `prompt`, or an absolute path.
    pub fn parse(s: &str) -> Result<Self> {
        if let Some(path) = s.strip_prefix("file:") {
            // RFC 8089 allows file:///abs/path; accept both that and file:/abs/path.
            let path = path.strip_prefix("//").unwrap_or(path);
            if path.is_empty() {
                return Err(Error::PinSource("empty file path in pin-source".into()));
            }
            Ok(PinSource::File(PathBuf::from(path)))
        } else if let Some(var) = s.strip_prefix("env:") {
            if var.is_empty() {
                return Err(Error::PinSource("empty variable name in pin-source".into()));
            }
            Ok(PinSource::Env(var.to_string()))
        } else if s == "prompt" {
            Ok(PinSource::Prompt)
        } else if s.starts_with('/') {
            Ok(PinSource::File(PathBuf::from(s)))
        } else {
            Err(Error::PinSource(format!(
                "unknown pin-source {s:?}: use file:PATH, env:NAME or prompt"
            )))
        }
    }

    /// Reads the PIN. `what` names it in the prompt ("PIN for token gw").
    pub fn read(&self, what: &str) -> Result<Pin> {
        match self {
            PinSource::File(path) => {
                let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
                    Error::PinSource(format!("cannot read PIN file {}: {e}", path.display()))
                })?);
                let line = text.lines().next().unwrap_or("");
                if line.is_empty() {
                    return Err(Error::PinSource(format!(
                        "PIN file {} is empty",
                        path.display()
                    )));
                }
                Ok(Pin::new(line.to_string()))
            }
            PinSource::Env(var) => match std::env::var(var) {
                Ok(v) if !v.is_empty() => Ok(Pin::new(v)),
                _ => Err(Error::PinSource(format!(
                    "environment variable {var} is not set"
                ))),
            },
            PinSource::Value(v) => Ok(Pin::new(v.to_string())),
            PinSource::Prompt => prompt(what),
        }
    }

    /// The form used in a PKCS#11 URI or a config file. A literal value is never printed.
    pub fn to_uri_value(&self) -> Option<String> {
        match self {
            PinSource::File(p) => Some(format!("file:{}", p.display())),
            PinSource::Env(v) => Some(format!("env:{v}")),
            PinSource::Prompt => Some("prompt".into()),
            PinSource::Value(_) => None,
        }
    }
}

fn prompt(what: &str) -> Result<Pin> {
    use std::io::{BufRead, IsTerminal, Write};
    // Read from the controlling terminal, with echo off, through /dev/tty.
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .map_err(|_| {
            Error::PinSource(format!(
                "{what} is needed but there is no terminal to ask on; give it with \
                 pin-source=file:PATH or env:NAME"
            ))
        })?;
    if !tty.is_terminal() {
        return Err(Error::PinSource("/dev/tty is not a terminal".into()));
    }
    let mut out = &tty;
    let _ = write!(out, "{what}: ");
    let _ = out.flush();
    let echo = EchoGuard::off(&tty);
    let mut line = Zeroizing::new(String::new());
    let r = std::io::BufReader::new(&tty).read_line(&mut line);
    drop(echo);
    let _ = writeln!(out);
    r.map_err(|e| Error::PinSource(format!("reading from the terminal: {e}")))?;
    let pin = line.trim_end_matches(['\r', '\n']);
    if pin.is_empty() {
        return Err(Error::PinSource("no PIN entered".into()));
    }
    Ok(Pin::new(pin.to_string()))
}

/// Turns terminal echo off for as long as it lives, using `stty` (no unsafe termios calls).
/// For passwords typed on a terminal: here and on the gateway's console.
#[derive(Debug)]
pub struct EchoGuard<'a> {
    tty: &'a std::fs::File,
    restored: bool,
}

impl<'a> EchoGuard<'a> {
    /// Echo off on `tty` (left alone when it is no terminal or `stty` fails).
    pub fn off(tty: &'a std::fs::File) -> Self {
        let ok = stty(tty, "-echo");
        EchoGuard { tty, restored: !ok }
    }
}

impl Drop for EchoGuard<'_> {
    fn drop(&mut self) {
        if !self.restored {
            stty(self.tty, "echo");
            self.restored = true;
        }
    }
}

fn stty(tty: &std::fs::File, arg: &str) -> bool {
    let Ok(stdin) = tty.try_clone() else {
        return false;
    };
    std::process::Command::new("stty")
        .arg(arg)
        .stdin(stdin)
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pin_never_prints() {
        let p = Pin::new("1234".into());
        assert_eq!(format!("{p:?}"), "Pin(***)");
        let s = PinSource::Value(Zeroizing::new("1234".into()));
        assert!(!format!("{s:?}").contains("1234"));
        assert_eq!(s.to_uri_value(), None);
    }

    #[test]
    fn sources_parse_and_read() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pin");
        std::fs::write(&f, "s3cret\nignored\n").unwrap();
        let src = PinSource::parse(&format!("file:{}", f.display())).unwrap();
        assert_eq!(src.read("PIN").unwrap().expose(), "s3cret");
        assert_eq!(
            PinSource::parse(&format!("file://{}", f.display())).unwrap(),
            src
        );
        assert_eq!(
            PinSource::parse("env:X").unwrap(),
            PinSource::Env("X".into())
        );
        assert!(PinSource::parse("bogus").is_err());
        let missing = PinSource::Env("SMIMEGW_TEST_SURELY_UNSET".into())
            .read("PIN")
            .unwrap_err();
        assert!(missing.to_string().contains("SMIMEGW_TEST_SURELY_UNSET"));
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "").unwrap();
        assert!(PinSource::File(empty).read("PIN").is_err());
    }
}
