//! A small WebDriver client for the web console tests: Debian's headless Chromium driven
//! through `chromedriver`, spoken to in HTTP/1.1 over a loopback `TcpStream` (std and
//! `serde_json` only, nothing else from the harness).
//!
//! Test code: every failure panics, naming the command, the WebDriver error and the page
//! the browser was on. A browser dropped while its thread panics keeps its directory, with
//! a screenshot and the source of the page it showed and chromedriver's log, and says where.
//!
//! ```ignore
//! let b = Browser::start();
//! b.goto(&format!("https://127.0.0.1:{port}/"));
//! b.find("input[name=password]").send_keys("secret");
//! b.find("button[type=submit]").click();
//! b.wait_text("Signed in", Duration::from_secs(5));
//! b.find("input[type=file]").send_keys(p12.to_str().unwrap()); // an absolute path
//! ```

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The browser itself; `/usr/bin/chromium` is Debian's launcher script, which adds flags of
/// its own from /etc/chromium.d (and trips over `findmnt` in containers).
const CHROMIUM: [&str; 2] = ["/usr/lib/chromium/chromium", "/usr/bin/chromium"];
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// Chromium's flags: headless, as root in a container (no sandbox, a small /dev/shm), its
/// profile in a temporary directory, and the console's self-signed certificate accepted.
const CHROMIUM_ARGS: &[&str] = &[
    "--headless=new",
    "--no-sandbox",
    "--disable-dev-shm-usage",
    "--ignore-certificate-errors",
    "--disable-gpu",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-extensions",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--password-store=basic",
    "--window-size=1280,1024",
];

/// The key under which WebDriver hands out element references.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// How long one command may take; page loads are bounded by the session's own timeout.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);
const PAGE_LOAD_MS: u64 = 60_000;
const POLL: Duration = Duration::from_millis(100);

/// A WebDriver error, or a transport failure (`error` = "transport").
#[derive(Debug, Clone)]
pub struct WdError {
    pub error: String,
    pub message: String,
}

impl std::fmt::Display for WdError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.error, self.message)
    }
}

impl WdError {
    fn transport(message: String) -> WdError {
        WdError {
            error: "transport".into(),
            message,
        }
    }
}

/// One headless Chromium session behind its own chromedriver; both end on drop.
#[derive(Debug)]
pub struct Browser {
    driver: Child,
    port: u16,
    session: String,
    /// chromedriver's logs; kept, with a screenshot, when the test fails.
    dir: tempfile::TempDir,
    /// Chromium's profile.
    profile: tempfile::TempDir,
}

/// An element of the current page, found by a CSS selector (kept for the messages).
#[derive(Debug, Clone)]
pub struct Element<'b> {
    browser: &'b Browser,
    id: String,
    css: String,
}

impl Browser {
    /// Starts chromedriver on a free loopback port and opens a session.
    #[track_caller]
    pub fn start() -> Browser {
        let dir = tempfile::Builder::new()
            .prefix("webdriver-")
            .tempdir()
            .expect("webdriver: temporary directory");
        let profile = tempfile::Builder::new()
            .prefix("chromium-profile-")
            .tempdir()
            .expect("webdriver: temporary directory");
        let binary = CHROMIUM
            .iter()
            .find(|p| Path::new(p).exists())
            .unwrap_or_else(|| panic!("webdriver: no Chromium at {CHROMIUM:?}"));
        let (driver, port) = spawn_driver(dir.path());
        let mut b = Browser {
            driver,
            port,
            session: String::new(),
            dir,
            profile,
        };
        let mut args: Vec<String> = CHROMIUM_ARGS.iter().map(|a| a.to_string()).collect();
        args.push(format!("--user-data-dir={}", b.profile.path().display()));
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "acceptInsecureCerts": true,
            "pageLoadStrategy": "normal",
            "timeouts": {"implicit": 0, "pageLoad": PAGE_LOAD_MS, "script": 30_000},
            "goog:chromeOptions": {
                "binary": binary,
                "args": args,
                "prefs": {
                    "credentials_enable_service": false,
                    "profile.password_manager_enabled": false,
                    "profile.password_manager_leak_detection": false,
                },
            },
        }}});
        let v = match http(port, "POST", "/session", Some(&caps), COMMAND_TIMEOUT) {
            Ok(v) => v,
            Err(e) => panic!(
                "webdriver: new session failed: {e}\nchromedriver log {}:\n{}",
                b.log_path().display(),
                tail(&b.log_path(), 40)
            ),
        };
        b.session = v["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("webdriver: new session answered {v}"))
            .to_string();
        b
    }

    /// chromedriver's log (kept after a failed test).
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("chromedriver.log")
    }

    /// Sends a command of this session (`path` after `/session/{id}`, "" for the session
    /// itself), panicking on an error; the `value` of the answer.
    #[track_caller]
    pub fn command(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let what = format!("{method} {path}");
        self.cmd(&what, method, path, body)
    }

    /// As [`Browser::command`], the error returned.
    pub fn try_command(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, WdError> {
        let body = match (method, body) {
            ("POST", None) => Some(json!({})),
            (_, b) => b,
        };
        let path = format!("/session/{}{path}", self.session);
        http(self.port, method, &path, body.as_ref(), COMMAND_TIMEOUT)
    }

    #[track_caller]
    fn cmd(&self, what: &str, method: &str, path: &str, body: Option<Value>) -> Value {
        match self.try_command(method, path, body) {
            Ok(v) => v,
            Err(e) => self.fail(what, &e.to_string()),
        }
    }

    /// Panics saying what failed and where the browser was.
    #[track_caller]
    pub fn fail(&self, what: &str, why: &str) -> ! {
        let at = match self.try_command("GET", "/url", None) {
            Ok(Value::String(u)) => u,
            Ok(v) => v.to_string(),
            Err(e) => format!("(unknown: {e})"),
        };
        panic!("webdriver: {what}: {}\n  page: {at}", why.trim_end())
    }

    /// Opens `url` and waits for the page to load.
    #[track_caller]
    pub fn goto(&self, url: &str) {
        self.cmd(
            &format!("go to {url}"),
            "POST",
            "/url",
            Some(json!({"url": url})),
        );
    }

    /// The current page's URL.
    #[track_caller]
    pub fn url(&self) -> String {
        string(self.cmd("URL", "GET", "/url", None))
    }

    #[track_caller]
    pub fn title(&self) -> String {
        string(self.cmd("title", "GET", "/title", None))
    }

    /// The current DOM serialized (not the bytes the server sent).
    #[track_caller]
    pub fn source(&self) -> String {
        string(self.cmd("page source", "GET", "/source", None))
    }

    /// The page's text as rendered (`document.body.innerText`).
    #[track_caller]
    pub fn text(&self) -> String {
        match self.execute(
            "return document.body ? document.body.innerText : '';",
            vec![],
        ) {
            Value::String(s) => s,
            v => v.to_string(),
        }
    }

    pub fn back(&self) {
        self.cmd("back", "POST", "/back", None);
    }

    pub fn refresh(&self) {
        self.cmd("refresh", "POST", "/refresh", None);
    }

    /// The first element matching `css`.
    #[track_caller]
    pub fn find(&self, css: &str) -> Element<'_> {
        let v = self.cmd(
            &format!("find `{css}`"),
            "POST",
            "/element",
            Some(by_css(css)),
        );
        self.element(v, css)
    }

    /// The first element matching `css`, or None.
    #[track_caller]
    pub fn try_find(&self, css: &str) -> Option<Element<'_>> {
        match self.try_command("POST", "/element", Some(by_css(css))) {
            Ok(v) => Some(self.element(v, css)),
            Err(e) if e.error == "no such element" => None,
            Err(e) => self.fail(&format!("find `{css}`"), &e.to_string()),
        }
    }

    /// Every element matching `css`, in document order.
    #[track_caller]
    pub fn find_all(&self, css: &str) -> Vec<Element<'_>> {
        let v = self.cmd(
            &format!("find all `{css}`"),
            "POST",
            "/elements",
            Some(by_css(css)),
        );
        self.elements(v, css)
    }

    /// Polls `probe` until it gives a value, panicking after `timeout` with `what`.
    #[track_caller]
    pub fn wait<T>(
        &self,
        timeout: Duration,
        what: &str,
        mut probe: impl FnMut(&Browser) -> Option<T>,
    ) -> T {
        let end = Instant::now() + timeout;
        loop {
            if let Some(v) = probe(self) {
                return v;
            }
            if Instant::now() >= end {
                let text = self.text();
                self.fail(
                    &format!("waited {timeout:?} for {what}"),
                    &format!("timed out; the page reads:\n{}", excerpt(&text, 2000)),
                );
            }
            std::thread::sleep(POLL);
        }
    }

    /// Waits for an element matching `css`.
    #[track_caller]
    pub fn wait_for(&self, css: &str, timeout: Duration) -> Element<'_> {
        self.wait(timeout, &format!("`{css}`"), |_| self.try_find(css))
    }

    /// Waits until the page's rendered text contains `text`.
    #[track_caller]
    pub fn wait_text(&self, text: &str, timeout: Duration) {
        self.wait(timeout, &format!("the text {text:?}"), |b| {
            b.text().contains(text).then_some(())
        })
    }

    /// Waits until the URL contains `part`; the URL.
    #[track_caller]
    pub fn wait_url(&self, part: &str, timeout: Duration) -> String {
        self.wait(timeout, &format!("a URL with {part:?}"), |b| {
            Some(b.url()).filter(|u| u.contains(part))
        })
    }

    /// Runs `script` (a function body: `return ...`, its arguments in `arguments`) in the
    /// page; Elements go in as `Element::json()` and come back as the JSON WebDriver gives.
    #[track_caller]
    pub fn execute(&self, script: &str, args: Vec<Value>) -> Value {
        let body = json!({"script": script, "args": args});
        self.cmd(
            &format!("script {}", excerpt(script, 80)),
            "POST",
            "/execute/sync",
            Some(body),
        )
    }

    /// Saves a PNG of the viewport.
    #[track_caller]
    pub fn screenshot(&self, path: &Path) {
        let png = base64_decode(&string(self.cmd("screenshot", "GET", "/screenshot", None)));
        std::fs::write(path, png).unwrap_or_else(|e| panic!("webdriver: {}: {e}", path.display()));
    }

    /// The cookies of the current page's domain (WebDriver's cookie objects).
    #[track_caller]
    pub fn cookies(&self) -> Vec<Value> {
        match self.cmd("cookies", "GET", "/cookie", None) {
            Value::Array(a) => a,
            v => self.fail("cookies", &format!("unexpected answer {v}")),
        }
    }

    /// The value of the current domain's cookie `name` (HttpOnly ones included).
    #[track_caller]
    pub fn cookie(&self, name: &str) -> Option<String> {
        self.cookies()
            .into_iter()
            .find(|c| c["name"] == name)
            .map(|c| string(c["value"].clone()))
    }

    #[track_caller]
    pub fn delete_cookies(&self) {
        self.cmd("delete cookies", "DELETE", "/cookie", None);
    }

    /// The text of the open alert/confirm/prompt, if one is open.
    #[track_caller]
    pub fn alert_text(&self) -> Option<String> {
        match self.try_command("GET", "/alert/text", None) {
            Ok(v) => Some(string(v)),
            Err(e) if e.error == "no such alert" => None,
            Err(e) => self.fail("alert text", &e.to_string()),
        }
    }

    /// Accepts (OK) the open alert or confirm.
    #[track_caller]
    pub fn accept_alert(&self) {
        self.cmd("accept alert", "POST", "/alert/accept", None);
    }

    /// Dismisses (Cancel) the open alert or confirm.
    #[track_caller]
    pub fn dismiss_alert(&self) {
        self.cmd("dismiss alert", "POST", "/alert/dismiss", None);
    }

    #[track_caller]
    fn element(&self, v: Value, css: &str) -> Element<'_> {
        match v[ELEMENT_KEY].as_str() {
            Some(id) => Element {
                browser: self,
                id: id.to_string(),
                css: css.to_string(),
            },
            None => self.fail(&format!("find `{css}`"), &format!("not an element: {v}")),
        }
    }

    #[track_caller]
    fn elements(&self, v: Value, css: &str) -> Vec<Element<'_>> {
        match v {
            Value::Array(a) => a.into_iter().map(|e| self.element(e, css)).collect(),
            v => self.fail(
                &format!("find all `{css}`"),
                &format!("unexpected answer {v}"),
            ),
        }
    }

    /// Keeps the directory with a screenshot, the page source and chromedriver's log.
    fn keep_evidence(&mut self) {
        self.dir.disable_cleanup(true);
        let d = self.dir.path().to_path_buf();
        let url = self.try_command("GET", "/url", None).map(string);
        if let Ok(Value::String(png)) = self.try_command("GET", "/screenshot", None) {
            let _ = std::fs::write(d.join("failure.png"), base64_decode(&png));
        }
        if let Ok(Value::String(html)) = self.try_command("GET", "/source", None) {
            let _ = std::fs::write(d.join("failure.html"), html);
        }
        eprintln!(
            "webdriver: the browser was at {}; its screenshot, page source and chromedriver's \
             log are kept in {}",
            url.unwrap_or_else(|e| format!("(unknown: {e})")),
            d.display()
        );
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.keep_evidence();
        }
        if !self.session.is_empty() {
            let path = format!("/session/{}", self.session);
            let _ = http(self.port, "DELETE", &path, None, Duration::from_secs(20));
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl<'b> Element<'b> {
    /// The reference to pass to [`Browser::execute`].
    pub fn json(&self) -> Value {
        json!({ ELEMENT_KEY: self.id })
    }

    #[track_caller]
    fn cmd(&self, what: &str, method: &str, path: &str, body: Option<Value>) -> Value {
        let path = format!("/element/{}{path}", self.id);
        self.browser
            .cmd(&format!("{what} `{}`", self.css), method, &path, body)
    }

    /// Clicks it (scrolled into view); a click that starts a navigation waits for the load.
    #[track_caller]
    pub fn click(&self) {
        self.cmd("click", "POST", "/click", None);
    }

    /// Types `text` into it; for an `<input type=file>`, `text` is the absolute path of the
    /// file to upload (several: one per line, with `multiple`).
    #[track_caller]
    pub fn send_keys(&self, text: &str) {
        self.cmd("type into", "POST", "/value", Some(json!({"text": text})));
    }

    #[track_caller]
    pub fn clear(&self) {
        self.cmd("clear", "POST", "/clear", None);
    }

    /// Clears it and types `text`.
    #[track_caller]
    pub fn fill(&self, text: &str) {
        self.clear();
        self.send_keys(text);
    }

    /// Its rendered text.
    #[track_caller]
    pub fn text(&self) -> String {
        string(self.cmd("text of", "GET", "/text", None))
    }

    /// An HTML attribute, as written in the markup (None when absent).
    #[track_caller]
    pub fn attr(&self, name: &str) -> Option<String> {
        match self.cmd(
            &format!("attribute {name} of"),
            "GET",
            &format!("/attribute/{name}"),
            None,
        ) {
            Value::Null => None,
            v => Some(string(v)),
        }
    }

    /// A DOM property (`value`, `checked`, `selectedIndex`, ...).
    #[track_caller]
    pub fn prop(&self, name: &str) -> Value {
        self.cmd(
            &format!("property {name} of"),
            "GET",
            &format!("/property/{name}"),
            None,
        )
    }

    /// The current value of an input, textarea or select.
    #[track_caller]
    pub fn value(&self) -> String {
        string(self.prop("value"))
    }

    #[track_caller]
    pub fn tag(&self) -> String {
        string(self.cmd("tag of", "GET", "/name", None))
    }

    /// Checked (checkbox, radio) or selected (option).
    #[track_caller]
    pub fn is_selected(&self) -> bool {
        self.cmd("selected state of", "GET", "/selected", None) == true
    }

    #[track_caller]
    pub fn is_enabled(&self) -> bool {
        self.cmd("enabled state of", "GET", "/enabled", None) == true
    }

    #[track_caller]
    pub fn is_displayed(&self) -> bool {
        self.cmd("displayed state of", "GET", "/displayed", None) == true
    }

    /// The first descendant matching `css`.
    #[track_caller]
    pub fn find(&self, css: &str) -> Element<'b> {
        let v = self.cmd(
            &format!("find `{css}` in"),
            "POST",
            "/element",
            Some(by_css(css)),
        );
        self.browser.element(v, &format!("{} {css}", self.css))
    }

    /// Every descendant matching `css`.
    #[track_caller]
    pub fn find_all(&self, css: &str) -> Vec<Element<'b>> {
        let v = self.cmd(
            &format!("find all `{css}` in"),
            "POST",
            "/elements",
            Some(by_css(css)),
        );
        self.browser.elements(v, &format!("{} {css}", self.css))
    }

    /// Selects the `<option>` of this `<select>` whose text or value is `choice`.
    #[track_caller]
    pub fn select(&self, choice: &str) {
        let options = self.find_all("option");
        let mut seen = Vec::new();
        for o in &options {
            let (text, value) = (o.text(), o.value());
            if text.trim() == choice || value == choice {
                if !o.is_selected() {
                    o.click();
                }
                return;
            }
            seen.push(format!("{text:?} ({value:?})"));
        }
        self.browser.fail(
            &format!("select {choice:?} in `{}`", self.css),
            &format!("no such option; the options: {}", seen.join(", ")),
        )
    }

    /// Submits its form (or itself, a form) as a submit button would, and waits for the next
    /// page. Clicking the form's own button is the closer imitation of a user.
    #[track_caller]
    pub fn submit(&self) {
        let b = self.browser;
        let marker = format!("wd{}", nanos());
        let script = "window.__webdriver_page = arguments[1]; \
             const f = arguments[0].form || arguments[0]; \
             if (!f.requestSubmit) { return 'not in a form'; } \
             f.requestSubmit(); return null;";
        if let Value::String(why) = b.execute(script, vec![self.json(), json!(marker)]) {
            b.fail(&format!("submit `{}`", self.css), &why);
        }
        let probe =
            "return window.__webdriver_page === arguments[0] ? 'same' : document.readyState;";
        b.wait(
            Duration::from_secs(PAGE_LOAD_MS / 1000),
            &format!("the page after submitting `{}`", self.css),
            |b| match b.try_command(
                "POST",
                "/execute/sync",
                Some(json!({"script": probe, "args": [marker]})),
            ) {
                Ok(v) if v == "complete" => Some(()),
                _ => None,
            },
        );
    }
}

/// Starts chromedriver on a free port; a port taken meanwhile means another try.
fn spawn_driver(dir: &Path) -> (Child, u16) {
    let log = dir.join("chromedriver.log");
    let mut last = String::new();
    for _ in 0..5 {
        let port = free_port();
        let out = std::fs::File::create(dir.join("chromedriver.out")).expect("webdriver: log file");
        let err = out.try_clone().expect("webdriver: log file");
        let mut child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("webdriver: cannot run {CHROMEDRIVER}: {e}"));
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                last = format!(
                    "chromedriver on port {port} exited ({status}):\n{}{}",
                    tail(&dir.join("chromedriver.out"), 20),
                    tail(&log, 20)
                );
                break;
            }
            if let Ok(v) = http(port, "GET", "/status", None, Duration::from_secs(5))
                && v["ready"] == true
            {
                return (child, port);
            }
            if Instant::now() >= end {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "webdriver: chromedriver on port {port} not ready in 20 s:\n{}",
                    tail(&log, 40)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    panic!("webdriver: {last}")
}

/// A free loopback port below the ephemeral range (as the harness's `free_port`).
fn free_port() -> u16 {
    loop {
        let port = 20_000 + (nanos() % 12_000) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

fn nanos() -> u128 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    u128::from(h.finish())
}

fn by_css(css: &str) -> Value {
    json!({"using": "css selector", "value": css})
}

fn string(v: Value) -> String {
    match v {
        Value::String(s) => s,
        Value::Null => String::new(),
        v => v.to_string(),
    }
}

fn excerpt(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}

fn tail(path: &Path, lines: usize) -> String {
    let s = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = s.lines().collect();
    let mut out = all[all.len().saturating_sub(lines)..].join("\n");
    out.push('\n');
    out
}

/// `read`, again when a signal interrupted it (EINTR).
fn read_some(s: &mut TcpStream, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        match s.read(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// One WebDriver request, on a connection of its own: the answer's `value`, or its error.
fn http(
    port: u16,
    method: &str,
    path: &str,
    body: Option<&Value>,
    timeout: Duration,
) -> Result<Value, WdError> {
    let io = |e: std::io::Error| WdError::transport(format!("{method} {path}: {e}"));
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(io)?;
    s.set_read_timeout(Some(timeout)).map_err(io)?;
    s.set_write_timeout(Some(timeout)).map_err(io)?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: application/json\r\n\
         Connection: close\r\n"
    )
    .into_bytes();
    if let Some(body) = body {
        let body = serde_json::to_vec(body).expect("webdriver: JSON");
        req.extend_from_slice(
            format!(
                "Content-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        );
        req.extend_from_slice(&body);
    } else {
        req.extend_from_slice(b"\r\n");
    }
    s.write_all(&req).map_err(io)?;

    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = read_some(&mut s, &mut chunk).map_err(io)?;
        if n == 0 {
            return Err(WdError::transport(format!(
                "{method} {path}: connection closed without an answer"
            )));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            WdError::transport(format!("{method} {path}: bad status line in {head:?}"))
        })?;
    let header = |name: &str| {
        head.lines().skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    };
    if header("Transfer-Encoding").is_some_and(|t| t.to_ascii_lowercase().contains("chunked")) {
        return Err(WdError::transport(format!(
            "{method} {path}: chunked answer (unsupported)"
        )));
    }
    let mut body = buf.split_off(head_end);
    match header("Content-Length").and_then(|n| n.parse::<usize>().ok()) {
        Some(len) => {
            while body.len() < len {
                let n = read_some(&mut s, &mut chunk).map_err(io)?;
                if n == 0 {
                    return Err(WdError::transport(format!(
                        "{method} {path}: answer cut short"
                    )));
                }
                body.extend_from_slice(&chunk[..n]);
            }
            body.truncate(len);
        }
        None => {
            s.read_to_end(&mut body).map_err(io)?;
        }
    }
    let v: Value = serde_json::from_slice(&body).map_err(|e| {
        WdError::transport(format!(
            "{method} {path}: HTTP {status}, not JSON ({e}): {}",
            excerpt(&String::from_utf8_lossy(&body), 500)
        ))
    })?;
    let mut value = match v {
        Value::Object(mut m) => m.remove("value").unwrap_or(Value::Null),
        v => v,
    };
    if status == 200 {
        // A new session's answer is its `value` too: {sessionId, capabilities}.
        return Ok(value);
    }
    let mut field = |k: &str| match value.get_mut(k).map(Value::take) {
        Some(Value::String(s)) => s,
        Some(v) => v.to_string(),
        None => String::new(),
    };
    let error = field("error");
    // chromedriver repeats the error in the message and adds the browser's version.
    let message = field("message");
    let message = message
        .strip_prefix(&format!("{error}: "))
        .unwrap_or(&message);
    let message = message
        .lines()
        .filter(|l| !l.trim_start().starts_with("(Session info:"))
        .collect::<Vec<_>>()
        .join("\n");
    Err(WdError {
        error: if error.is_empty() {
            format!("HTTP {status}")
        } else {
            error
        },
        message,
    })
}

/// Standard base64 (screenshots).
fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' | b'-' => Some(62),
        b'/' | b'_' => Some(63),
        _ => None,
    };
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0u32);
    for v in s.bytes().filter_map(val) {
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}
