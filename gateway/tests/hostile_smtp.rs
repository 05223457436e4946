//! Hostile clients against the running gateway (`smimegw serve`): password guessing, a
//! session that earns refusal after refusal, one client taking every session slot or
//! trickling a byte now and then, recipient syntax that a permissive server inside would
//! relay on; the data directory, spool and Maildirs open to other local users, settings that
//! refuse every message or a weak token passphrase; CRL downloads steered by certificates
//! nobody trusted, or towards loopback.
#![allow(clippy::unwrap_used)]

mod common;
mod harness;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::openssl;
use harness::web::{
    ADMIN_PASSWORD, Api, gateway, gen_crl, http_files, user_ca, user_ca_named, user_p12_with,
};
use harness::*;

/// Sends `bytes` in one go, then reads until the gateway closes the connection.
fn raw_session(port: u16, bytes: &[u8]) -> String {
    let mut conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    conn.write_all(bytes).unwrap();
    let mut out = String::new();
    let _ = conn.read_to_string(&mut out);
    out
}

/// An SMTP session in TLS (`openssl s_client -starttls smtp`): `script` is sent after the
/// handshake; what the gateway answered in TLS, until it closed the connection.
fn tls_session(port: u16, script: &str) -> String {
    let mut cmd = Command::new("openssl");
    // -quiet keeps reading after the end of stdin, until the gateway closes.
    cmd.args([
        "s_client",
        "-starttls",
        "smtp",
        "-connect",
        &format!("127.0.0.1:{port}"),
        "-quiet",
    ]);
    String::from_utf8_lossy(&piped(&mut cmd, script).stdout).into_owned()
}

/// The first reply line on a new connection.
fn greeting(c: &mut TcpStream) -> String {
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = [0u8; 512];
    let n = c.read(&mut buf).unwrap_or(0);
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

/// `PLAIN` response `\0alice@example.com\0guess`.
const WRONG_PLAIN: &str = "AGFsaWNlQGV4YW1wbGUuY29tAGd1ZXNz";

#[test]
fn password_guessing_is_cut_off_per_session_and_locked_out_per_client() {
    let dir = tempfile::tempdir().unwrap();
    let mut users = BTreeMap::new();
    users.insert(
        "alice@example.com".to_string(),
        smimegw::users::hash("correct horse").unwrap(),
    );
    users.insert(
        "carol@example.com".to_string(),
        smimegw::users::hash("battery staple").unwrap(),
    );
    smimegw::users::write(&dir.path().join("users"), &users).unwrap();
    // Loopback is outside here.
    let gw = Gateway::start_in(
        dir,
        "internal_networks = [\"10.0.0.0/8\"]\nauth_users = \"users\"\n\
         max_auth_failures_per_client = 5\nauth_lockout = \"6s\"",
        "",
    );
    // Four guesses pipelined in one session: three are checked, then 421 and the
    // connection is closed (no 221 to the QUIT).
    let script = format!(
        "EHLO x\r\n{}QUIT\r\n",
        format!("AUTH PLAIN {WRONG_PLAIN}\r\n").repeat(4)
    );
    let got = tls_session(gw.port, &script);
    eprintln!("guesses: {got}");
    assert_eq!(got.matches("535 5.7.8").count(), 3, "{got}");
    assert!(
        got.contains("421 4.7.0 Too many failed authentications, closing"),
        "{got}"
    );
    assert!(!got.contains("221"), "{got}");

    // More sessions from the same address: the fifth failure locks it out.
    let auth = |password: &str| gw.swaks_auth("alice@example.com", password, &[]);
    for _ in 0..2 {
        let text = auth("guess");
        assert!(text.contains("535 5.7.8"), "{text}");
    }
    let locked_at = Instant::now();
    // Even the right password is refused now, and not checked.
    let text = auth("correct horse");
    assert!(
        text.contains("454 4.7.0 Too many failed authentications from your address"),
        "{text}"
    );
    assert!(!text.contains("queued as"), "{text}");
    assert!(
        gw.log()
            .contains("authentication refused: too many failures from this client"),
        "{}",
        gw.log()
    );
    // Until the lockout is over. (Alice's account stays locked from this address for a
    // minute longer: five failures for one account from one address, throttle.rs; another
    // account from here is no longer refused.)
    std::thread::sleep(Duration::from_secs(7).saturating_sub(locked_at.elapsed()));
    let text = gw.swaks_auth("carol@example.com", "battery staple", &[]);
    assert!(text.contains("queued as"), "{text}");
    let text = auth("correct horse");
    assert!(text.contains("454 4.7.0"), "{text}");
}

#[test]
fn every_refusal_counts_toward_max_errors_and_closes_the_session() {
    // An outside client probing for an open relay: each RCPT is refused (554), and after
    // max_errors of them the session is closed.
    let gw = Gateway::start("internal_networks = [\"10.0.0.0/8\"]\nmax_errors = 5", "");
    let mut s = "EHLO x\r\nMAIL FROM:<probe@example.net>\r\n".to_string();
    for i in 0..8 {
        s.push_str(&format!("RCPT TO:<victim{i}@example.org>\r\n"));
    }
    s.push_str("QUIT\r\n");
    let got = raw_session(gw.port, s.as_bytes());
    eprintln!("probe: {got}");
    assert_eq!(
        got.matches("554 5.7.1 Relay access denied").count(),
        5,
        "{got}"
    );
    assert!(got.contains("421 4.7.0 Too many errors, closing"), "{got}");
    assert!(!got.contains("221"), "{got}");
}

/// Connects to `port` from the loopback address `from` (another client).
fn connect_from(from: &str, port: u16) -> TcpStream {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let s = rt.block_on(async {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.bind(format!("{from}:0").parse().unwrap()).unwrap();
        sock.connect(format!("127.0.0.1:{port}").parse().unwrap())
            .await
            .unwrap()
    });
    let s = s.into_std().unwrap();
    s.set_nonblocking(false).unwrap();
    s
}

#[test]
fn one_client_cannot_hold_every_session_slot() {
    let gw = Gateway::start("max_sessions = 6\nmax_sessions_per_client = 2", "");
    // The harness's readiness probe has gone.
    std::thread::sleep(Duration::from_millis(500));
    let connect = || TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
    let mut a = connect();
    assert!(greeting(&mut a).starts_with("220 "));
    let mut b = connect();
    assert!(greeting(&mut b).starts_with("220 "));
    let mut c = connect();
    let g = greeting(&mut c);
    assert!(
        g.starts_with("421 4.7.0 Too many connections from your address"),
        "{g}"
    );
    // Another client is not affected.
    let mut other = connect_from("127.0.0.2", gw.port);
    assert!(greeting(&mut other).starts_with("220 "));
    // A session that ends gives its slot back.
    a.write_all(b"QUIT\r\n").unwrap();
    let mut rest = String::new();
    let _ = a.read_to_string(&mut rest);
    let start = Instant::now();
    loop {
        let mut d = connect();
        let g = greeting(&mut d);
        if g.starts_with("220 ") {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "{g}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(gw.log().contains("too many sessions from this client"));
}

#[test]
fn a_trickling_client_is_cut_off_at_the_session_time_limit() {
    let gw = Gateway::start("idle_timeout = \"2s\"\nmax_session_time = \"4s\"", "");
    let mut c = TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
    assert!(greeting(&mut c).starts_with("220 "));
    let start = Instant::now();
    c.set_read_timeout(Some(Duration::from_millis(700)))
        .unwrap();
    // A byte well within the idle timeout, again and again: never idle, never done.
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    loop {
        let _ = c.write_all(b"N");
        match c.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "still connected after {:?}: {}",
            start.elapsed(),
            String::from_utf8_lossy(&got)
        );
    }
    let got = String::from_utf8_lossy(&got);
    assert!(
        got.contains("421 4.4.2 Session time limit exceeded"),
        "{got}"
    );
    assert!(
        start.elapsed() >= Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn recipient_syntax_a_server_inside_would_relay_is_refused_from_outside() {
    let gw = Gateway::start("internal_networks = [\"10.0.0.0/8\"]", "");
    let tricks = [
        "user%evil.example@example.com",
        "evil.example!user@example.com",
        "\"user@evil.example\"@example.com",
        "user@evil.example@example.com",
        "@evil.example:user@example.com",
        "@a.example,@b.example:user@example.com",
    ];
    let mut s = "EHLO x\r\nMAIL FROM:<someone@example.net>\r\n".to_string();
    for t in tricks {
        s.push_str(&format!("RCPT TO:<{t}>\r\n"));
    }
    s.push_str("RCPT TO:<alice@example.com>\r\nDATA\r\nSubject: hi\r\n\r\nhello\r\n.\r\nQUIT\r\n");
    let got = raw_session(gw.port, s.as_bytes());
    eprintln!("tricks: {got}");
    assert_eq!(
        got.matches("550 5.1.3 Recipient address syntax not accepted")
            .count(),
        tricks.len(),
        "{got}"
    );
    assert!(got.contains("queued as") && got.contains("221"), "{got}");
    let m = gw.maildir("inbox", 1);
    gw.wait_queue_empty();
    assert_eq!(gw.maildir("inbox", 1).len(), 1);
    assert!(
        m[0].1.contains("Delivered-To: alice@example.com"),
        "{}",
        m[0].1
    );
    assert!(!m[0].1.contains("evil"), "{}", m[0].1);
}

#[test]
fn the_data_directory_spool_and_maildirs_are_private() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    // Inbound goes to a next hop that is down: the message stays in the spool.
    let down = free_port();
    let gw = Gateway::start_in(
        dir,
        "",
        &format!("[delivery.inbound]\nnext_hop = \"127.0.0.1:{down}\"\ntls = \"off\"\n"),
    );
    assert_eq!(mode(&data), 0o700);
    assert!(gw.log().contains("made it 0700"), "{}", gw.log());
    gw.mail("bob@example.net", "alice@example.com", "stored decrypted");
    gw.wait_attempts(1);
    let spool = data.join("spool");
    for d in ["", "queue", "tmp", "free"] {
        assert_eq!(mode(&spool.join(d)), 0o700, "spool/{d}");
    }
    let files: Vec<PathBuf> = std::fs::read_dir(spool.join("queue"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(files.len() >= 2, "{files:?}");
    for f in files {
        assert_eq!(mode(&f), 0o600, "{}", f.display());
    }
    // Outbound into the Maildir.
    gw.mail("alice@example.com", "bob@example.net", "to the outbox");
    let got = gw.maildir("outbox", 1);
    assert_eq!(mode(&got[0].0), 0o600, "{}", got[0].0.display());
    for d in ["new", "cur", "tmp"] {
        assert_eq!(mode(&data.join("outbox").join(d)), 0o700, "outbox/{d}");
    }
}

/// Runs `smimegw serve` on a configuration with `server_extra` in `[server]` and the token
/// passphrase `pin`; it must exit. Its error output, and the directory.
fn serve_fails(server_extra: &str, pin: &str) -> (String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    std::fs::write(
        dir.path().join("smimegw.toml"),
        format!(
            "data_dir = \"data\"\n[server]\nlisten = [\"127.0.0.1:{port}\"]\n\
             internal_domains = [\"example.com\"]\n{server_extra}\n"
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_smimegw"))
        .args(["serve", "--config", "smimegw.toml"])
        .current_dir(dir.path())
        .env("SMIMEGW_PIN", pin)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            let out = child.wait_with_output().unwrap();
            assert!(!out.status.success());
            return (String::from_utf8_lossy(&out.stderr).into_owned(), dir);
        }
        if TcpStream::connect(("127.0.0.1", port)).is_ok()
            || start.elapsed() > Duration::from_secs(30)
        {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "the gateway started ({server_extra:?}, passphrase {pin:?}): {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn settings_that_refuse_every_message_or_weaken_the_token_do_not_start() {
    // SIZE 0 would be announced as "no limit", and every message refused.
    for (extra, why) in [
        (
            "max_message_size = \"0\"",
            "server.max_message_size: 0 bytes is too small",
        ),
        (
            "max_message_size = \"1k\"",
            "server.max_message_size: 1024 bytes is too small",
        ),
    ] {
        let (err, _) = serve_fails(extra, "test-passphrase");
        assert!(err.contains(why), "{extra}: {err}");
    }
    // A new software token under a 4-character passphrase is not made.
    let (err, dir) = serve_fails("", "1234");
    assert!(
        err.contains("passphrase must be at least 8 characters (this one has 4)"),
        "{err}"
    );
    assert!(!dir.path().join("data/token/token.check").exists());
    assert!(
        !err.contains("1234"),
        "the passphrase is never printed: {err}"
    );
}

/// Eve, an outsider with a self-signed certificate naming `crl_url`, signs mail to Alice.
fn eve_signed(dir: &Path, crl_url: &str) -> PathBuf {
    openssl(
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "30",
            "-keyout",
            "eve.key",
            "-out",
            "eve.pem",
            "-subj",
            "/CN=eve",
            "-addext",
            "subjectAltName=email:eve@example.net",
            "-addext",
            "keyUsage=digitalSignature,keyEncipherment",
            "-addext",
            "basicConstraints=critical,CA:FALSE",
            "-addext",
            &format!("crlDistributionPoints=URI:{crl_url}"),
        ],
        dir,
    );
    std::fs::write(
        dir.join("eve.txt"),
        "Content-Type: text/plain\r\n\r\nhello from eve\r\n",
    )
    .unwrap();
    let out = openssl(
        &[
            "cms",
            "-sign",
            "-in",
            "eve.txt",
            "-signer",
            "eve.pem",
            "-inkey",
            "eve.key",
            "-from",
            "eve@example.net",
            "-to",
            "alice@example.com",
            "-subject",
            "signed by eve",
        ],
        dir,
    );
    let p = dir.join("eve.eml");
    std::fs::write(&p, out.stdout).unwrap();
    p
}

/// The web API, signed in as the administrator.
fn admin(port: u16) -> Api {
    let mut api = Api::new(port);
    assert_eq!(api.sign_in("admin", ADMIN_PASSWORD).status, 200);
    api
}

fn upload(api: &Api, path: &str, file: &Path) {
    let a = api.call("POST", path, None, &[format!("file=@{}", file.display())]);
    assert_eq!(a.status, 201, "{path} {}: {}", file.display(), a.text);
}

#[test]
fn crl_distribution_points_of_untrusted_certificates_are_never_fetched() {
    // Loopback is allowed here: only the trust rule keeps the trap quiet.
    let (mut gw, port) = gateway("[revocation]\nallow_hosts = [\"127.0.0.1\"]\n");
    let d = gw.dir.path().to_path_buf();
    std::fs::create_dir_all(d.join("pub")).unwrap();
    let (good, good_hits) = http_files(d.join("pub"));
    let (trap, trap_hits) = http_files(d.join("nothing"));
    let api = admin(port);

    // Trusted: the users' CA, and Dave, whom it certified.
    user_ca(&d);
    let good_url = format!("http://127.0.0.1:{good}/users.crl");
    user_p12_with(
        &d,
        "dave",
        Some("dave@example.net"),
        (-1, 30),
        "pw",
        &format!("crlDistributionPoints=URI:{good_url}\n"),
    );
    gen_crl(&d, "pub/users.crl");
    upload(&api, "/api/v1/trust", &d.join("ca.pem"));
    upload(&api, "/api/v1/correspondents/upload", &d.join("dave.pem"));
    // Untrusted: a correspondent from a CA nobody trusts, one from a CA named like the
    // trusted one (another key), and Eve's self-signed certificate harvested from her mail.
    let stranger = d.join("stranger");
    std::fs::create_dir_all(&stranger).unwrap();
    user_ca_named(&stranger, "/CN=Stranger CA");
    user_p12_with(
        &stranger,
        "mallory",
        Some("mallory@example.net"),
        (-1, 30),
        "pw",
        &format!("crlDistributionPoints=URI:http://127.0.0.1:{trap}/stranger.crl\n"),
    );
    upload(
        &api,
        "/api/v1/correspondents/upload",
        &stranger.join("mallory.pem"),
    );
    let imposter = d.join("imposter");
    std::fs::create_dir_all(&imposter).unwrap();
    user_ca(&imposter);
    user_p12_with(
        &imposter,
        "trudy",
        Some("trudy@example.net"),
        (-1, 30),
        "pw",
        &format!("crlDistributionPoints=URI:http://127.0.0.1:{trap}/imposter.crl\n"),
    );
    upload(
        &api,
        "/api/v1/correspondents/upload",
        &imposter.join("trudy.pem"),
    );
    let eve = eve_signed(&d, &format!("http://127.0.0.1:{trap}/harvested.crl"));
    gw.send_file("eve@example.net", "alice@example.com", &eve);
    gw.maildir("inbox", 1);
    assert!(!held_for(&gw.data(), "eve@example.net").is_empty());

    // Fetch now: the trusted distribution point only.
    let a = api.call("POST", "/api/v1/crls/refresh", None, &[]);
    assert_eq!(a.status, 200, "{}", a.text);
    assert!(
        a.json["failed"].as_array().unwrap().is_empty(),
        "{}",
        a.text
    );
    let fetched = a.json["updated"][0]["url"] == good_url.as_str()
        || a.json["unchanged"][0] == good_url.as_str();
    assert!(fetched, "{}", a.text);
    assert!(good_hits.load(Ordering::SeqCst) >= 1);
    assert_eq!(
        trap_hits.load(Ordering::SeqCst),
        0,
        "the trap was contacted"
    );
    let o = api.call("GET", "/api/v1/crls", None, &[]);
    assert_eq!(o.json["sources"].as_array().unwrap().len(), 1, "{}", o.text);
    assert_eq!(o.json["sources"][0]["url"], good_url.as_str(), "{}", o.text);

    // At start (the schedule's first run), the same.
    let before = good_hits.load(Ordering::SeqCst);
    gw.crash_and_restart();
    gw.wait_until("the refresh at start", || {
        good_hits.load(Ordering::SeqCst) > before
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        trap_hits.load(Ordering::SeqCst),
        0,
        "the trap was contacted"
    );
}

#[test]
fn a_loopback_distribution_point_is_refused_without_the_allow_key() {
    let (gw, port) = gateway("[revocation]\nfetch = false\n");
    let d = gw.dir.path().to_path_buf();
    let (trap, trap_hits) = http_files(d.join("nothing"));
    let api = admin(port);
    user_ca(&d);
    let url = format!("http://127.0.0.1:{trap}/users.crl");
    user_p12_with(
        &d,
        "dave",
        Some("dave@example.net"),
        (-1, 30),
        "pw",
        &format!("crlDistributionPoints=URI:{url}\n"),
    );
    upload(&api, "/api/v1/trust", &d.join("ca.pem"));
    upload(&api, "/api/v1/correspondents/upload", &d.join("dave.pem"));
    let a = api.call("POST", "/api/v1/crls/refresh", None, &[]);
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.json["failed"][0]["url"], url.as_str(), "{}", a.text);
    let e = a.json["failed"][0]["error"].as_str().unwrap();
    assert!(
        e.starts_with("127.0.0.1 is 127.0.0.1, a loopback address: not fetched from")
            && e.contains("allow_hosts"),
        "{e}"
    );
    // Recorded for the consoles.
    let o = api.call("GET", "/api/v1/crls", None, &[]);
    assert_eq!(o.json["sources"][0]["error"], e, "{}", o.text);
    assert_eq!(
        trap_hits.load(Ordering::SeqCst),
        0,
        "the trap was contacted"
    );
}
