//! The tests' WebDriver client (harness/webdriver.rs) against a small HTTP server of the
//! test's own: a form with text, password, select and file inputs posted as
//! multipart/form-data, the answer echoing what arrived, read back through the browser.
#![allow(clippy::unwrap_used)]

mod common;
mod harness;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use harness::webdriver::Browser;

const FORM: &str = r#"<!doctype html>
<html><head><title>Sign in</title></head><body>
<h1>Import a key</h1>
<form method="post" action="/upload" enctype="multipart/form-data">
<label>Name <input type="text" name="user" id="user" value="placeholder"></label>
<label>Password <input type="password" name="password" id="password"></label>
<select name="kind" id="kind">
<option value="sign">Signing key</option>
<option value="enc">Encryption key</option>
</select>
<input type="file" name="p12" id="p12">
<button type="submit" id="send">Upload</button>
</form>
</body></html>"#;

/// What a POST to /upload carried: the fields, and the files as (field, filename, bytes).
#[derive(Debug, Default)]
struct Received {
    fields: Vec<(String, String)>,
    files: Vec<(String, String, Vec<u8>)>,
}

impl Received {
    fn field(&self, name: &str) -> &str {
        self.fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    }
}

#[test]
fn fills_a_form_uploads_a_file_and_reads_the_answer() {
    let t0 = Instant::now();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || serve(listener, tx));
    let base = format!("http://127.0.0.1:{port}");

    // Binary content, CRLFs and NULs included, to see it arrive byte for byte.
    let dir = tempfile::tempdir().unwrap();
    let p12 = dir.path().join("alice.p12");
    let content: Vec<u8> = (0..=255u8).cycle().take(3000).collect();
    std::fs::write(&p12, &content).unwrap();

    let b = Browser::start();
    let started = t0.elapsed();

    b.goto(&format!("{base}/"));
    assert_eq!(b.title(), "Sign in");
    assert_eq!(b.url(), format!("{base}/"));
    assert!(b.source().contains(r#"enctype="multipart/form-data""#));
    assert!(b.text().contains("Import a key"), "{}", b.text());
    assert_eq!(b.find_all("form input").len(), 3);
    assert!(b.try_find("#missing").is_none());

    let user = b.find("#user");
    assert_eq!(user.value(), "placeholder");
    assert_eq!(user.attr("name").as_deref(), Some("user"));
    assert_eq!(user.attr("placeholder"), None);
    user.fill("alice@example.com");
    assert_eq!(user.value(), "alice@example.com");
    b.find("#password").send_keys("s3cret pass");
    let kind = b.find("form select");
    kind.select("Encryption key");
    assert_eq!(kind.value(), "enc");
    assert!(kind.find("option[value=enc]").is_selected());
    // An upload: the absolute path typed into the file input.
    let file = b.wait_for("input[type=file]", Duration::from_secs(5));
    file.send_keys(p12.to_str().unwrap());
    let name = b.execute("return arguments[0].files[0].name;", vec![file.json()]);
    assert_eq!(name, "alice.p12");

    b.find("#send").click();
    b.wait_text("bytes", Duration::from_secs(10));
    assert_eq!(b.url(), format!("{base}/upload"));
    assert_eq!(b.title(), "Uploaded");
    assert_eq!(b.find("#user").text(), "Hello, alice@example.com");
    assert_eq!(b.find("#file").text(), "alice.p12: 3000 bytes");
    assert_eq!(b.find("#kind").text(), "kind enc");
    assert_eq!(b.find("#password").text(), "a password of 11 characters");
    assert_eq!(b.cookie("session").as_deref(), Some("s1"));
    let got = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(got.field("user"), "alice@example.com");
    assert_eq!(got.field("password"), "s3cret pass");
    assert_eq!(got.field("kind"), "enc");
    assert_eq!(got.files.len(), 1);
    assert_eq!(
        (got.files[0].0.as_str(), got.files[0].1.as_str()),
        ("p12", "alice.p12")
    );
    assert!(got.files[0].2 == content, "the upload arrived altered");

    // A failure says what was looked for and on which page.
    let why = panic_message(|| {
        b.find("#missing");
    });
    assert!(why.contains("no such element"), "{why}");
    assert!(why.contains("`#missing`"), "{why}");
    assert!(why.contains(&format!("page: {base}/upload")), "{why}");
    let why = panic_message(|| {
        b.wait_text("never there", Duration::from_millis(300));
    });
    assert!(
        why.contains("never there") && why.contains("Hello, alice@example.com"),
        "{why}"
    );

    let shot = dir.path().join("page.png");
    b.screenshot(&shot);
    assert!(
        std::fs::read(&shot)
            .unwrap()
            .starts_with(b"\x89PNG\r\n\x1a\n")
    );

    b.back();
    assert_eq!(b.url(), format!("{base}/"));
    // A fresh form (back may restore the one filled in), submitted without its button and
    // without a file.
    b.goto(&format!("{base}/"));
    b.wait_for("#user", Duration::from_secs(5)).fill("bob");
    b.find("#user").submit();
    assert_eq!(b.find("#user").text(), "Hello, bob");
    assert_eq!(b.find("#file").text(), "no file");
    let got = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!((got.field("user"), got.field("kind")), ("bob", "sign"));

    b.delete_cookies();
    assert_eq!(b.cookie("session"), None);
    let closing = Instant::now();
    drop(b);
    eprintln!(
        "webdriver: Browser::start took {started:?}, closing it {:?}; the whole test {:?}",
        closing.elapsed(),
        t0.elapsed()
    );
}

/// The message of the panic `f` raises.
fn panic_message(f: impl FnOnce()) -> String {
    let e = catch_unwind(AssertUnwindSafe(f)).expect_err("no panic");
    e.downcast_ref::<String>()
        .cloned()
        .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

fn serve(listener: TcpListener, tx: mpsc::Sender<Received>) {
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        let tx = tx.clone();
        // A connection each: Chromium opens spare ones that may never carry a request.
        std::thread::spawn(move || {
            let _ = handle(conn, &tx);
        });
    }
}

fn handle(mut c: TcpStream, tx: &mpsc::Sender<Received>) -> std::io::Result<()> {
    c.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n", 0) {
            break i + 4;
        }
        let n = c.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut words = head.split_whitespace();
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let header = |name: &str| {
        head.lines().skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    };
    let len: usize = header("Content-Length")
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let mut body = buf.split_off(head_end);
    while body.len() < len {
        let n = c.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }

    let (status, cookie, page) = match (method, path) {
        ("GET", "/") => ("200 OK", "", FORM.to_string()),
        ("POST", "/upload") => {
            let ctype = header("Content-Type").unwrap_or_default();
            let boundary = ctype
                .split_once("boundary=")
                .map(|(_, b)| b.trim_matches('"').to_string())
                .unwrap_or_default();
            let got = multipart(&body, &boundary);
            let file = match got.files.first() {
                Some((_, name, bytes)) if !name.is_empty() => {
                    format!("{}: {} bytes", escape(name), bytes.len())
                }
                _ => "no file".to_string(),
            };
            let page = format!(
                "<!doctype html><html><head><title>Uploaded</title></head><body>\
                 <p id=\"user\">Hello, {}</p><p id=\"file\">{file}</p>\
                 <p id=\"kind\">kind {}</p><p id=\"password\">a password of {} characters</p>\
                 </body></html>",
                escape(got.field("user")),
                escape(got.field("kind")),
                got.field("password").chars().count(),
            );
            let _ = tx.send(got);
            (
                "200 OK",
                "Set-Cookie: session=s1; Path=/; HttpOnly; SameSite=Strict\r\n",
                page,
            )
        }
        _ => ("404 Not Found", "", "<p>not found</p>".to_string()),
    };
    write!(
        c,
        "HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\n\
         {cookie}Connection: close\r\n\r\n{page}",
        page.len()
    )?;
    c.flush()
}

/// A multipart/form-data body's parts.
fn multipart(body: &[u8], boundary: &str) -> Received {
    let delim = format!("\r\n--{boundary}").into_bytes();
    let mut got = Received::default();
    // The first delimiter has no CRLF before it; lend it one.
    let body = [b"\r\n".as_slice(), body].concat();
    let mut at = match find(&body, &delim, 0) {
        Some(i) => i + delim.len(),
        None => return got,
    };
    while !body[at..].starts_with(b"--") {
        let Some(end) = find(&body, &delim, at) else {
            break;
        };
        let part = body[at..end]
            .strip_prefix(b"\r\n")
            .unwrap_or(&body[at..end]);
        let split = find(part, b"\r\n\r\n", 0).unwrap_or(part.len());
        let headers = String::from_utf8_lossy(&part[..split]).into_owned();
        let content = part.get(split + 4..).unwrap_or_default().to_vec();
        let param = |key: &str| {
            headers
                .lines()
                .find(|l| l.to_ascii_lowercase().starts_with("content-disposition:"))
                .and_then(|l| {
                    l.split(';').find_map(|p| {
                        let (k, v) = p.trim().split_once('=')?;
                        (k == key).then(|| v.trim_matches('"').to_string())
                    })
                })
        };
        let name = param("name").unwrap_or_default();
        match param("filename") {
            Some(filename) => got.files.push((name, filename, content)),
            None => got
                .fields
                .push((name, String::from_utf8_lossy(&content).into_owned())),
        }
        at = end + delim.len();
    }
    got
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    hay.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|i| i + from)
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
