//! Line editing for the console on a terminal: the terminal in raw mode while a command
//! line is typed ([`RawMode`], restored when dropped), and [`Editor`], a state machine fed
//! one byte at a time that keeps the line, says what to echo, walks the session's history
//! (Up/Down) and completes with Tab ([`complete`]: command words from a table of usage
//! patterns, file paths from the file system).
//!
//! The cursor stays at the end of the line: characters are added and erased there.
//! Keys: printable characters (UTF-8), Backspace/DEL/Ctrl-H, Ctrl-W (a word), Ctrl-U (the
//! line), Ctrl-C (abandon the line), Ctrl-D (on an empty line: end of input), Enter (CR or
//! LF; a CR LF pair is one Enter), Up/Down (history), Tab; other control characters and
//! escape sequences are ignored.

use std::io::{BufRead, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use rustix::termios::{self, LocalModes, OptionalActions, OutputModes, SpecialCodeIndex, Termios};

/// The longest line the editor takes (characters).
const MAX_LINE: usize = 4096;
/// Lines kept in the history.
const MAX_HISTORY: usize = 100;
/// Entries read from one directory when completing a path.
const MAX_DIR_ENTRIES: usize = 2000;
/// The width candidate lists are laid out in (within 80 columns).
const WIDTH: usize = 79;

/// The terminal in raw mode (no line discipline, no echo, no signals from Ctrl-C, no
/// output processing) for as long as this lives; the mode it had is put back when it is dropped, on every path out.
#[derive(Debug)]
pub struct RawMode {
    fd: OwnedFd,
    saved: Termios,
}

impl RawMode {
    /// Raw mode on the terminal `fd` (an error when it is no terminal).
    pub fn enter(fd: impl AsFd) -> std::io::Result<RawMode> {
        let fd = fd.as_fd().try_clone_to_owned()?;
        let mut saved = termios::tcgetattr(&fd)?;
        // A console that was killed while editing left the terminal raw: what we put back
        // is a line-mode terminal in any case (passwords and confirmations are read so).
        let line = LocalModes::ICANON | LocalModes::ECHO | LocalModes::ISIG | LocalModes::IEXTEN;
        if !saved.local_modes.contains(LocalModes::ICANON) {
            saved.local_modes |= line | LocalModes::ECHOE | LocalModes::ECHOK;
        }
        let mut raw = saved.clone();
        raw.local_modes.remove(line);
        // The editor writes CR LF itself.
        raw.output_modes.remove(OutputModes::OPOST);
        raw.special_codes[SpecialCodeIndex::VMIN] = 1;
        raw.special_codes[SpecialCodeIndex::VTIME] = 0;
        // Now, not after a flush: what was typed ahead stays to be read.
        termios::tcsetattr(&fd, OptionalActions::Now, &raw)?;
        Ok(RawMode { fd, saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(&self.fd, OptionalActions::Now, &self.saved);
    }
}

/// How a line ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Enter: the line.
    Line(String),
    /// Ctrl-C: the line is dropped.
    Abandoned,
    /// Ctrl-D on an empty line, or the end of input.
    Eof,
}

/// What Tab can put in place of the end of the line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Completion {
    /// Where (a byte offset in the line) the text being completed starts.
    pub start: usize,
    /// The candidates, sorted, without duplicates.
    pub candidates: Vec<Candidate>,
}

/// One way to complete.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Candidate {
    /// The text from [`Completion::start`] (a word, or a whole path).
    pub text: String,
    /// What a list of candidates shows (a path's last part).
    pub shown: String,
    /// A directory: completed with `/` (and no space after it).
    pub dir: bool,
}

/// What kind of word a usage pattern's token stands for.
#[derive(Debug, PartialEq, Eq)]
enum Token<'a> {
    /// Typed as it is (`status`, `[list]`).
    Word(&'a str),
    /// A file or folder, completed from the file system; it takes the rest of the line,
    /// spaces included (`PATH`).
    Path,
    /// Any command's first word (`COMMAND`).
    Command,
    /// Something only the administrator knows (`ID`, `ADDRESS/PREFIX`, `[N]`).
    Argument,
}

fn token(t: &str) -> Token<'_> {
    let t = t
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(t);
    match t {
        "PATH" => Token::Path,
        "COMMAND" => Token::Command,
        _ if !t.is_empty()
            && t.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') =>
        {
            Token::Word(t)
        }
        _ => Token::Argument,
    }
}

/// The literal words of a usage pattern (what completion offers): `keys import PATH`
/// gives `keys`, `import`.
pub fn literal_words(pattern: &str) -> impl Iterator<Item = &str> {
    pattern.split_whitespace().filter_map(|t| match token(t) {
        Token::Word(w) => Some(w),
        _ => None,
    })
}

/// The words of `line` with their byte offsets.
fn words(line: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in line.char_indices() {
        match (c.is_whitespace(), start) {
            (true, Some(s)) => {
                out.push((s, &line[s..i]));
                start = None;
            }
            (false, None) => start = Some(i),
            _ => {}
        }
    }
    if let Some(s) = start {
        out.push((s, &line[s..]));
    }
    out
}

/// The completions of `line` (the cursor at its end) by the usage `patterns` (literal
/// words in lower case, `[optional]` ones, `PATH`, `COMMAND`, other arguments in capitals);
/// `list_dir` gives a directory's entries (name, whether a directory).
pub fn complete(
    line: &str,
    patterns: &[&str],
    list_dir: &dyn Fn(&Path) -> Vec<(String, bool)>,
) -> Completion {
    let typed = words(line);
    let ends_in_space = line.chars().last().is_none_or(char::is_whitespace);
    // The words before the one being completed, and where that one starts.
    let (done, start) = if ends_in_space {
        (&typed[..], line.len())
    } else {
        match typed.split_last() {
            Some((last, before)) => (before, last.0),
            None => (&typed[..], line.len()),
        }
    };
    let partial = &line[start..];
    let mut found: Vec<Candidate> = Vec::new();
    let word = |w: &str| Candidate {
        text: w.to_string(),
        shown: w.to_string(),
        dir: false,
    };
    'patterns: for pattern in patterns {
        for (i, t) in pattern.split_whitespace().map(token).enumerate() {
            if t == Token::Path {
                // The path runs from here to the end of the line, spaces included.
                let from = done.get(i).map_or(start, |w| w.0);
                return Completion {
                    start: from,
                    candidates: complete_path(&line[from..], list_dir),
                };
            }
            if let Some((_, typed)) = done.get(i) {
                match t {
                    Token::Word(w) if w != *typed => continue 'patterns,
                    _ => continue,
                }
            }
            // The word being completed.
            match t {
                Token::Word(w) if w.starts_with(partial) => found.push(word(w)),
                Token::Command => found.extend(
                    patterns
                        .iter()
                        .filter_map(|p| literal_words(p).next())
                        .filter(|w| w.starts_with(partial))
                        .map(word),
                ),
                _ => {}
            }
            continue 'patterns;
        }
    }
    found.sort();
    found.dedup();
    Completion {
        start,
        candidates: found,
    }
}

/// The paths that start with `typed`: entries of its directory part that start with its
/// last part (hidden ones only when that starts with a dot).
fn complete_path(typed: &str, list_dir: &dyn Fn(&Path) -> Vec<(String, bool)>) -> Vec<Candidate> {
    let (dir, name) = match typed.rfind('/') {
        Some(i) => (&typed[..=i], &typed[i + 1..]),
        None => ("", typed),
    };
    let listed = if dir.is_empty() {
        list_dir(Path::new("."))
    } else {
        list_dir(Path::new(dir))
    };
    let mut out: Vec<Candidate> = listed
        .into_iter()
        .filter(|(n, _)| n.starts_with(name) && (name.starts_with('.') || !n.starts_with('.')))
        .map(|(n, is_dir)| {
            let slash = if is_dir { "/" } else { "" };
            Candidate {
                text: format!("{dir}{n}{slash}"),
                shown: format!("{n}{slash}"),
                dir: is_dir,
            }
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// A directory's entries (name, whether a directory, symbolic links followed), at most
/// [`MAX_DIR_ENTRIES`]; names that are not UTF-8 are left out. Unreadable: none.
pub fn list_dir(dir: &Path) -> Vec<(String, bool)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .take(MAX_DIR_ENTRIES)
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let is_dir = std::fs::metadata(e.path()).is_ok_and(|m| m.is_dir());
            Some((name, is_dir))
        })
        .collect()
}

/// Where an escape sequence is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Escape {
    None,
    /// ESC seen.
    Start,
    /// ESC [ and parameter bytes: until a final byte.
    Csi,
    /// ESC O: one more byte.
    Ss3,
}

/// The line being typed, the history, and what is half-received (an escape sequence, a
/// UTF-8 character). Fed bytes by [`Editor::feed`]; echo goes to a buffer the caller
/// writes out.
#[derive(Debug)]
pub struct Editor {
    prompt: String,
    line: String,
    history: Vec<String>,
    /// Walking the history: the entry shown, and the line typed before.
    recalled: Option<usize>,
    draft: String,
    escape: Escape,
    /// The escape sequence's parameter bytes (the arrows have none, or a modifier).
    params: Vec<u8>,
    utf8: Vec<u8>,
    /// The last key was a Tab that left several candidates.
    tabbed: bool,
    /// The last byte was a CR (a LF right after it is part of the same Enter).
    after_cr: bool,
}

impl Default for Editor {
    fn default() -> Self {
        Editor::new()
    }
}

impl Editor {
    pub fn new() -> Editor {
        Editor {
            prompt: String::new(),
            line: String::new(),
            history: Vec::new(),
            recalled: None,
            draft: String::new(),
            escape: Escape::None,
            params: Vec::new(),
            utf8: Vec::new(),
            tabbed: false,
            after_cr: false,
        }
    }

    /// A new line after `prompt` (which the caller shows).
    pub fn begin(&mut self, prompt: &str) {
        self.prompt = prompt.to_string();
        self.line.clear();
        self.recalled = None;
        self.draft.clear();
        self.escape = Escape::None;
        self.params.clear();
        self.utf8.clear();
        self.tabbed = false;
    }

    /// One byte typed; what to show goes to `echo`. `Some` when the line is done.
    pub fn feed(
        &mut self,
        b: u8,
        echo: &mut Vec<u8>,
        complete: &dyn Fn(&str) -> Completion,
    ) -> Option<Outcome> {
        let after_cr = std::mem::replace(&mut self.after_cr, false);
        if self.escape != Escape::None {
            self.escape_byte(b, echo);
            return None;
        }
        if b >= 0x80 {
            self.utf8_byte(b, echo);
            return None;
        }
        // Anything else ends a broken UTF-8 sequence.
        self.utf8.clear();
        if b != b'\t' {
            self.tabbed = false;
        }
        match b {
            b'\r' | b'\n' => {
                if b == b'\n' && after_cr {
                    return None;
                }
                self.after_cr = b == b'\r';
                echo.extend_from_slice(b"\r\n");
                let line = std::mem::take(&mut self.line);
                if !line.trim().is_empty() && self.history.last() != Some(&line) {
                    if self.history.len() == MAX_HISTORY {
                        self.history.remove(0);
                    }
                    self.history.push(line.clone());
                }
                return Some(Outcome::Line(line));
            }
            0x03 => {
                echo.extend_from_slice(b"^C\r\n");
                self.line.clear();
                return Some(Outcome::Abandoned);
            }
            0x04 if self.line.is_empty() => return Some(Outcome::Eof),
            0x08 | 0x7f => {
                let keep = self.line.char_indices().last().map_or(0, |(i, _)| i);
                self.erase_to(keep, echo);
            }
            0x15 => self.erase_to(0, echo),
            0x17 => {
                let end = self.line.trim_end().len();
                let keep = self.line[..end]
                    .char_indices()
                    .rfind(|(_, c)| c.is_whitespace())
                    .map_or(0, |(i, c)| i + c.len_utf8());
                self.erase_to(keep, echo);
            }
            0x1b => {
                self.escape = Escape::Start;
                self.params.clear();
            }
            b'\t' => self.tab(echo, complete),
            0x20..=0x7e => self.insert(char::from(b), echo),
            _ => {}
        }
        None
    }

    fn escape_byte(&mut self, b: u8, echo: &mut Vec<u8>) {
        match (self.escape, b) {
            (Escape::Start, b'[') => self.escape = Escape::Csi,
            (Escape::Start, b'O') => self.escape = Escape::Ss3,
            (Escape::Start, 0x1b) => {}
            (Escape::Csi, 0x20..=0x3f) => {
                if self.params.len() < 16 {
                    self.params.push(b);
                }
            }
            (Escape::Csi | Escape::Ss3, b'A' | b'B') => {
                self.escape = Escape::None;
                // Plain arrows only (a modifier like ESC [ 1 ; 5 A is something else).
                if self.params.is_empty() {
                    self.tabbed = false;
                    self.recall(b == b'A', echo);
                }
            }
            // A final byte ends any other sequence; ESC and another key is Alt-key.
            _ => self.escape = Escape::None,
        }
    }

    fn utf8_byte(&mut self, b: u8, echo: &mut Vec<u8>) {
        self.tabbed = false;
        self.utf8.push(b);
        match std::str::from_utf8(&self.utf8) {
            Ok(s) => {
                let c = s.chars().next().unwrap_or(char::REPLACEMENT_CHARACTER);
                self.utf8.clear();
                if !c.is_control() {
                    self.insert(c, echo);
                }
            }
            // Not finished yet (at most 4 bytes), or not UTF-8: dropped.
            Err(e) if e.error_len().is_none() && self.utf8.len() < 4 => {}
            Err(_) => self.utf8.clear(),
        }
    }

    /// Erases the line back to `keep` bytes (a character boundary).
    fn erase_to(&mut self, keep: usize, echo: &mut Vec<u8>) {
        while self.line.len() > keep && self.line.pop().is_some() {
            echo.extend_from_slice(b"\x08 \x08");
        }
    }

    fn insert(&mut self, c: char, echo: &mut Vec<u8>) {
        if self.line.chars().count() >= MAX_LINE {
            echo.push(0x07);
            return;
        }
        self.line.push(c);
        let mut buf = [0u8; 4];
        echo.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
    }

    /// Shows `new` in place of the line (the prompt written again).
    fn replace(&mut self, new: String, echo: &mut Vec<u8>) {
        match new.strip_prefix(self.line.as_str()) {
            Some(more) => echo.extend_from_slice(more.as_bytes()),
            None => {
                echo.push(b'\r');
                echo.extend_from_slice(self.prompt.as_bytes());
                echo.extend_from_slice(new.as_bytes());
                echo.extend_from_slice(b"\x1b[K");
            }
        }
        self.line = new;
    }

    /// Up (`back`) or Down through the history.
    fn recall(&mut self, back: bool, echo: &mut Vec<u8>) {
        let n = self.history.len();
        let next = match (self.recalled, back) {
            (None, true) if n > 0 => {
                self.draft = self.line.clone();
                Some(n - 1)
            }
            (Some(i), true) => Some(i.saturating_sub(1)),
            (Some(i), false) if i + 1 < n => Some(i + 1),
            (Some(_), false) => {
                self.recalled = None;
                let draft = std::mem::take(&mut self.draft);
                self.replace(draft, echo);
                return;
            }
            _ => {
                echo.push(0x07);
                return;
            }
        };
        if let Some(i) = next {
            self.recalled = Some(i);
            let text = self.history.get(i).cloned().unwrap_or_default();
            self.replace(text, echo);
        }
    }

    fn tab(&mut self, echo: &mut Vec<u8>, complete: &dyn Fn(&str) -> Completion) {
        let c = complete(&self.line);
        let start = c.start.min(self.line.len());
        let head = self.line.get(..start).unwrap_or("").to_string();
        let typed = self.line.get(start..).unwrap_or("").to_string();
        match c.candidates.as_slice() {
            [] => echo.push(0x07),
            [one] => {
                let end = if one.dir { "" } else { " " };
                self.replace(format!("{head}{}{end}", one.text), echo);
                self.tabbed = false;
            }
            several => {
                let prefix = common_prefix(several.iter().map(|c| c.text.as_str()));
                if prefix.len() > typed.len() && prefix.starts_with(typed.as_str()) {
                    self.replace(format!("{head}{prefix}"), echo);
                } else if self.tabbed {
                    echo.extend_from_slice(b"\r\n");
                    let shown: Vec<&str> = several.iter().map(|c| c.shown.as_str()).collect();
                    echo.extend_from_slice(columns(&shown, WIDTH).as_bytes());
                    echo.extend_from_slice(self.prompt.as_bytes());
                    echo.extend_from_slice(self.line.as_bytes());
                } else {
                    echo.push(0x07);
                }
                self.tabbed = true;
            }
        }
    }

    /// Reads a line from `input` (a terminal in raw mode) after `prompt`, echoing to `out`;
    /// bytes after the line stay in `input` for whoever reads next.
    pub fn read_line(
        &mut self,
        prompt: &str,
        input: &mut dyn BufRead,
        out: &mut dyn Write,
        complete: &dyn Fn(&str) -> Completion,
    ) -> std::io::Result<Outcome> {
        self.begin(prompt);
        out.write_all(prompt.as_bytes())?;
        out.flush()?;
        let mut echo = Vec::new();
        loop {
            let buf = match input.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if buf.is_empty() {
                return Ok(Outcome::Eof);
            }
            let mut used = buf.len();
            let mut done = None;
            for (i, &b) in buf.iter().enumerate() {
                if let Some(o) = self.feed(b, &mut echo, complete) {
                    used = i + 1;
                    done = Some(o);
                    break;
                }
            }
            input.consume(used);
            out.write_all(&echo)?;
            out.flush()?;
            echo.clear();
            if let Some(o) = done {
                return Ok(o);
            }
        }
    }
}

/// The longest common prefix (whole characters).
fn common_prefix<'a>(mut all: impl Iterator<Item = &'a str>) -> String {
    let Some(mut prefix) = all.next() else {
        return String::new();
    };
    for s in all {
        let same = prefix
            .char_indices()
            .zip(s.chars())
            .take_while(|((_, a), b)| a == b)
            .last()
            .map_or(0, |((i, a), _)| i + a.len_utf8());
        prefix = prefix.get(..same).unwrap_or("");
    }
    prefix.to_string()
}

/// `items` in columns (down, then across) within `width`, each line ended by CR LF; an
/// item wider than the width is cut.
pub fn columns(items: &[&str], width: usize) -> String {
    let cut = |s: &str| -> String {
        if s.chars().count() > width {
            let mut t: String = s.chars().take(width.saturating_sub(1)).collect();
            t.push('~');
            t
        } else {
            s.to_string()
        }
    };
    let items: Vec<String> = items.iter().map(|s| cut(s)).collect();
    let widest = items.iter().map(|s| s.chars().count()).max().unwrap_or(0);
    let cols = ((width + 2) / (widest + 2)).max(1);
    let rows = items.len().div_ceil(cols);
    let mut out = String::new();
    for r in 0..rows {
        let mut line = String::new();
        for c in 0..cols {
            let Some(item) = items.get(c * rows + r) else {
                break;
            };
            if c > 0 {
                line.push_str("  ");
            }
            line.push_str(&format!("{item:<widest$}"));
        }
        out.push_str(line.trim_end());
        out.push_str("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const PATTERNS: &[&str] = &[
        "status",
        "keys [ADDRESS]",
        "keys import PATH",
        "keys delete FINGERPRINT",
        "queue [list]",
        "queue show ID",
        "queue retry [ID]",
        "trust import PATH",
        "help [COMMAND]",
    ];

    fn fake_fs(dir: &Path) -> Vec<(String, bool)> {
        let entries: &[(&str, bool)] = match dir.to_str().unwrap() {
            "." => &[
                ("root.pem", false),
                ("root.key", false),
                ("SSL Certificates", true),
                (".hidden", false),
                ("notes.txt", false),
            ],
            "SSL Certificates/" => &[("ca.test", false), ("carol@example.net", false)],
            "/etc/" => &[("ssl", true), ("passwd", false)],
            _ => &[],
        };
        entries.iter().map(|(n, d)| (n.to_string(), *d)).collect()
    }

    fn texts(line: &str) -> (usize, Vec<String>) {
        let c = complete(line, PATTERNS, &fake_fs);
        (c.start, c.candidates.into_iter().map(|c| c.text).collect())
    }

    #[test]
    fn completes_command_words() {
        assert_eq!(texts("sta"), (0, vec!["status".to_string()]));
        assert_eq!(texts("").1, ["help", "keys", "queue", "status", "trust"]);
        assert_eq!(texts("  q"), (2, vec!["queue".to_string()]));
        assert_eq!(texts("queue ").1, ["list", "retry", "show"]);
        assert_eq!(texts("queue r"), (6, vec!["retry".to_string()]));
        assert_eq!(texts("keys ").1, ["delete", "import"]);
        assert_eq!(texts("keys  im").1, ["import"]);
        assert_eq!(texts("help q").1, ["queue"]);
        // Arguments only the administrator knows, and words past the pattern: nothing.
        assert!(texts("queue show ").1.is_empty());
        assert!(texts("status now").1.is_empty());
        assert!(texts("frob").1.is_empty());
        assert!(texts("keys delete abc ").1.is_empty());
    }

    #[test]
    fn completes_paths_with_spaces_and_folders() {
        assert_eq!(texts("trust import r").1, ["root.key", "root.pem"]);
        assert_eq!(texts("trust import r").0, 13);
        assert_eq!(texts("trust import root.p").1, ["root.pem"]);
        assert_eq!(texts("keys import S").1, ["SSL Certificates/"]);
        // The path runs to the end of the line, spaces and all.
        assert_eq!(
            texts("trust import SSL Certificates/c"),
            (
                13,
                vec![
                    "SSL Certificates/ca.test".to_string(),
                    "SSL Certificates/carol@example.net".to_string()
                ]
            )
        );
        assert_eq!(texts("trust import /etc/s").1, ["/etc/ssl/"]);
        // Hidden files only when asked for.
        assert!(!texts("trust import ").1.contains(&".hidden".to_string()));
        assert_eq!(texts("trust import .").1, [".hidden"]);
        let c = complete("trust import SSL Certificates/", PATTERNS, &fake_fs);
        assert_eq!(c.candidates[0].shown, "ca.test");
        assert!(
            complete("keys import ", PATTERNS, &fake_fs)
                .candidates
                .iter()
                .any(|c| c.dir && c.text == "SSL Certificates/")
        );
    }

    /// Types `input` into an editor (history from `before`); the outcome and the echo.
    fn typed(before: &[&str], input: &[u8]) -> (Option<Outcome>, String) {
        let mut e = Editor::new();
        let mut echo = Vec::new();
        let c = |l: &str| complete(l, PATTERNS, &fake_fs);
        for line in before {
            e.begin("> ");
            for b in line.bytes().chain([b'\r']) {
                e.feed(b, &mut echo, &c);
            }
        }
        echo.clear();
        e.begin("> ");
        let mut done = None;
        for &b in input {
            if let Some(o) = e.feed(b, &mut echo, &c) {
                done = Some(o);
                break;
            }
        }
        (done, String::from_utf8(echo).unwrap())
    }

    fn line(s: &str) -> Option<Outcome> {
        Some(Outcome::Line(s.into()))
    }

    #[test]
    fn typing_erasing_and_ending_lines() {
        assert_eq!(
            typed(&[], b"status\r"),
            (line("status"), "status\r\n".into())
        );
        assert_eq!(typed(&[], b"status\n").0, line("status"));
        assert_eq!(
            typed(&[], b"statx\x7f\x08tus\r"),
            (line("status"), "statx\x08 \x08\x08 \x08tus\r\n".into())
        );
        assert_eq!(typed(&[], b"queue show\x15st\r").0, line("st"));
        assert_eq!(
            typed(&[], b"queue show x\x17\x17\x17keys\r").0,
            line("keys")
        );
        assert_eq!(
            typed(&[], b"reboot\x03"),
            (Some(Outcome::Abandoned), "reboot^C\r\n".into())
        );
        assert_eq!(typed(&[], b"\x04").0, Some(Outcome::Eof));
        // Ctrl-D on a line that has something: nothing.
        assert_eq!(typed(&[], b"st\x04\r").0, line("st"));
        // Other control characters and escape sequences are ignored.
        assert_eq!(
            typed(&[], b"a\x01\x1b[C\x1b[1;5D\x1bOH\x1b[3~\x1bxb\r"),
            (line("ab"), "ab\r\n".into())
        );
        // UTF-8 whole; a broken sequence is dropped.
        assert_eq!(typed(&[], "caf\u{e9}\r".as_bytes()).0, line("caf\u{e9}"));
        assert_eq!(typed(&[], b"a\xc3b\xff\r").0, line("ab"));
        assert_eq!(typed(&[], "\u{e9}\x7f\r".as_bytes()).0, line(""));
    }

    #[test]
    fn cr_lf_is_one_enter() {
        let mut e = Editor::new();
        let mut echo = Vec::new();
        let c = |l: &str| complete(l, PATTERNS, &fake_fs);
        e.begin("> ");
        let got: Vec<_> = b"a\r\nb\r"
            .iter()
            .filter_map(|&b| e.feed(b, &mut echo, &c))
            .collect();
        assert_eq!(got, [Outcome::Line("a".into()), Outcome::Line("b".into())]);
    }

    #[test]
    fn history_up_and_down() {
        let before = ["status", "queue", "queue"];
        assert_eq!(typed(&before, b"\x1b[A\r").0, line("queue"));
        // Repeats are kept once.
        assert_eq!(typed(&before, b"\x1b[A\x1b[A\r").0, line("status"));
        assert_eq!(typed(&before, b"\x1b[A\x1b[A\x1b[A\r").0, line("status"));
        // Down past the newest gives back what was typed.
        assert_eq!(typed(&before, b"ke\x1b[A\x1b[B\r").0, line("ke"));
        assert_eq!(typed(&before, b"\x1bOA\x1bOA\x1bOB\r").0, line("queue"));
        let (_, echo) = typed(&before, b"\x1b[A");
        assert_eq!(echo, "queue");
        let (_, echo) = typed(&before, b"keys\x1b[A");
        assert_eq!(echo, "keys\r> queue\x1b[K");
        // Nothing to go to: a bell.
        assert_eq!(typed(&[], b"\x1b[A\r"), (line(""), "\x07\r\n".into()));
        // A recalled line can be edited.
        assert_eq!(
            typed(&before, b"\x1b[A\x7f\x7f\x7f\x7f\x7feys\r").0,
            line("eys")
        );
    }

    #[test]
    fn tab_completes_then_lists() {
        let (o, echo) = typed(&[], b"sta\t\r");
        assert_eq!(o, line("status "));
        assert_eq!(echo, "status \r\n");
        assert_eq!(typed(&[], b"queue r\t\r").0, line("queue retry "));
        assert_eq!(
            typed(&[], b"trust import S\t\r").0,
            line("trust import SSL Certificates/")
        );
        // Several: the common prefix, a bell, then the list and the line again.
        let (o, echo) = typed(&[], b"trust import r\t\t\r");
        assert_eq!(o, line("trust import root."));
        assert_eq!(
            echo,
            "trust import root.\r\nroot.key  root.pem\r\n> trust import root.\r\n"
        );
        let (_, echo) = typed(&[], b"queue \t\t");
        assert_eq!(echo, "queue \x07\r\nlist   retry  show\r\n> queue ");
        // No candidate: a bell.
        assert_eq!(
            typed(&[], b"frob\t\r"),
            (line("frob"), "frob\x07\r\n".into())
        );
    }

    #[test]
    fn reads_lines_and_leaves_the_rest() {
        let mut e = Editor::new();
        let mut input: &[u8] = b"statx\x7fus\rsecret\n";
        let mut out = Vec::new();
        let c = |l: &str| complete(l, PATTERNS, &fake_fs);
        let o = e.read_line("smimegw> ", &mut input, &mut out, &c).unwrap();
        assert_eq!(o, Outcome::Line("status".into()));
        assert_eq!(out, b"smimegw> statx\x08 \x08us\r\n");
        // Typed ahead: not echoed, not taken.
        assert_eq!(input, b"secret\n");
        let mut empty: &[u8] = b"";
        assert_eq!(
            e.read_line("> ", &mut empty, &mut out, &c).unwrap(),
            Outcome::Eof
        );
    }

    #[test]
    fn columns_fit() {
        let names: Vec<String> = (0..30).map(|i| format!("file-{i:02}.pem")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let text = columns(&refs, WIDTH);
        for l in text.split("\r\n") {
            assert!(l.chars().count() <= WIDTH, "{l:?}");
        }
        assert!(text.starts_with("file-00.pem  file-05.pem"), "{text}");
        let long = "x".repeat(100);
        assert_eq!(columns(&[&long], 10), format!("{}~\r\n", "x".repeat(9)));
        assert_eq!(common_prefix(["root.pem", "root.key"].into_iter()), "root.");
        assert_eq!(common_prefix(["caf\u{e9}", "caf\u{e8}"].into_iter()), "caf");
        assert_eq!(common_prefix(["ab", "a"].into_iter()), "a");
    }
}
