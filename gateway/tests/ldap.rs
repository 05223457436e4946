//! `smimegw::ldap` against a real OpenLDAP server: a private slapd (own configuration and
//! database in a temporary directory, on a free loopback port) with people whose certificate
//! is in `userCertificate;binary`, in a PKCS#7 `userSMIMECertificate`, or nowhere.

#![allow(clippy::unwrap_used)]

mod common;
mod harness;

use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use smimegw::ldap::{Directory, LdapError, LdapSettings};

const SLAPD: &str = "/usr/sbin/slapd";
const SLAPADD: &str = "/usr/sbin/slapadd";
const SCHEMA: &str = "/etc/ldap/schema";
const SUFFIX: &str = "dc=example,dc=org";
const ROOT_DN: &str = "cn=admin,dc=example,dc=org";
const ROOT_PW: &str = "root-secret-1234";

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A certificate for `address` (self-signed, P-256, SAN email), as PEM in `dir/NAME.pem`;
/// returns its DER.
fn certificate(dir: &Path, name: &str, address: &str) -> Vec<u8> {
    let pem = dir.join(format!("{name}.pem"));
    let der = dir.join(format!("{name}.der"));
    run(Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-days", "2", "-subj"])
        .arg(format!("/CN={name}"))
        .arg("-addext")
        .arg(format!("subjectAltName=email:{address}"))
        .arg("-keyout")
        .arg(dir.join(format!("{name}.key")))
        .arg("-out")
        .arg(&pem));
    run(Command::new("openssl")
        .args(["x509", "-outform", "DER", "-in"])
        .arg(&pem)
        .arg("-out")
        .arg(&der));
    std::fs::read(der).unwrap()
}

fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A private slapd, killed on drop.
struct Slapd {
    child: Option<Child>,
    port: u16,
}

impl Slapd {
    /// Writes `slapd.conf` in `dir`, loads `ldif` with slapadd (before the server runs: no
    /// password on a command line, no port to race for) and starts slapd on a free loopback
    /// port, in the foreground (`-d 0`), as the user running the test (no `-u`/`-g`).
    fn start(dir: &Path, ldif: &str) -> Slapd {
        for tool in [SLAPD, SLAPADD] {
            assert!(
                Path::new(tool).exists(),
                "{tool} is missing: this test needs OpenLDAP's server; install it with \
                 `apt-get install slapd ldap-utils`"
            );
        }
        let db = dir.join("db");
        std::fs::create_dir_all(&db).unwrap();
        let conf = dir.join("slapd.conf");
        std::fs::write(
            &conf,
            format!(
                "include {SCHEMA}/core.schema\n\
                 include {SCHEMA}/cosine.schema\n\
                 include {SCHEMA}/inetorgperson.schema\n\
                 pidfile {dir}/slapd.pid\n\
                 argsfile {dir}/slapd.args\n\
                 modulepath /usr/lib/ldap\n\
                 moduleload back_mdb\n\
                 database mdb\n\
                 maxsize 10485760\n\
                 suffix \"{SUFFIX}\"\n\
                 rootdn \"{ROOT_DN}\"\n\
                 rootpw {ROOT_PW}\n\
                 directory {db}\n\
                 access to * by * read\n",
                dir = dir.display(),
                db = db.display(),
            ),
        )
        .unwrap();
        let data = dir.join("data.ldif");
        std::fs::write(&data, ldif).unwrap();
        run(Command::new(SLAPADD)
            .arg("-f")
            .arg(&conf)
            .arg("-l")
            .arg(&data));

        // The port is free when chosen but may be taken before slapd binds it: try again.
        for _ in 0..5 {
            let port = harness::free_port();
            let log = std::fs::File::create(dir.join("slapd.log")).unwrap();
            let mut child = Command::new(SLAPD)
                .arg("-f")
                .arg(&conf)
                .arg("-h")
                .arg(format!("ldap://127.0.0.1:{port}/"))
                .args(["-d", "0"])
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("{SLAPD}: {e}"));
            let deadline = Instant::now() + Duration::from_secs(15);
            loop {
                if let Some(status) = child.try_wait().unwrap() {
                    let log = std::fs::read_to_string(dir.join("slapd.log")).unwrap_or_default();
                    if log.contains("Address already in use") {
                        break;
                    }
                    panic!("slapd ended at start ({status}):\n{log}");
                }
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Slapd {
                        child: Some(child),
                        port,
                    };
                }
                assert!(
                    Instant::now() < deadline,
                    "slapd did not listen within 15 s"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        panic!("slapd found no free port in 5 tries");
    }

    fn url(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.port)
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The suffix's own entry, first in every LDIF.
fn base_entry() -> String {
    format!(
        "dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\ndc: example\no: Example\n"
    )
}

/// A person `uid` with `mail`, and `attribute` (DER, base64 in the LDIF) when given.
fn person(uid: &str, mail: &str, attribute: Option<(&str, &[u8])>) -> String {
    let mut e = format!(
        "\ndn: uid={uid},{SUFFIX}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: {uid}\nsn: {uid}\n\
         mail: {mail}\n"
    );
    if let Some((name, der)) = attribute {
        e.push_str(&format!("{name}:: {}\n", base64(der)));
    }
    e
}

fn settings(url: &str) -> LdapSettings {
    LdapSettings {
        url: url.to_string(),
        base: SUFFIX.to_string(),
        bind_dn: None,
        bind_password: None,
        timeout: Duration::from_secs(3),
        cache_ttl: Duration::from_secs(3600),
        negative_ttl: Duration::from_secs(600),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_from_slapd() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let carol = certificate(dir, "carol", "carol@example.org");
    let dave = certificate(dir, "dave", "dave@example.org");
    let dave_p7 = dir.join("dave.p7");
    run(Command::new("openssl")
        .args(["crl2pkcs7", "-nocrl", "-outform", "DER", "-certfile"])
        .arg(dir.join("dave.pem"))
        .arg("-out")
        .arg(&dave_p7));
    let dave_p7 = std::fs::read(dave_p7).unwrap();
    let erin = certificate(dir, "erin", "erin@example.org");
    let ldif = base_entry()
        + &person(
            "carol",
            "carol@example.org",
            Some(("userCertificate;binary", &carol)),
        )
        + &person(
            "dave",
            "dave@example.org",
            Some(("userSMIMECertificate", &dave_p7)),
        )
        + &person(
            "erin",
            "erin@example.org",
            Some(("userCertificate;binary", &erin)),
        )
        + &person("frank", "frank@example.org", None);
    let mut slapd = Slapd::start(dir, &ldif);
    let directory = Directory::new(settings(&slapd.url()));

    // userCertificate;binary, and userSMIMECertificate's PKCS#7 opened.
    assert_eq!(
        directory.lookup("carol@example.org").await.unwrap(),
        vec![carol.clone()]
    );
    assert_eq!(
        directory.lookup("dave@example.org").await.unwrap(),
        vec![dave.clone()]
    );
    // Addresses compare without case.
    assert_eq!(
        directory.lookup("Erin@EXAMPLE.org").await.unwrap(),
        vec![erin.clone()]
    );
    // No entry, and an entry without a certificate: nothing.
    assert!(
        directory
            .lookup("nobody@example.org")
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        directory
            .lookup("frank@example.org")
            .await
            .unwrap()
            .is_empty()
    );
    // Filter injection: the address is one value, not filter syntax.
    for hostile in [
        "x)(mail=*",
        "*",
        "*)(|(mail=*",
        "carol@example.org)(mail=*",
        "\\2a",
    ] {
        assert!(
            directory.lookup(hostile).await.unwrap().is_empty(),
            "{hostile:?} found something"
        );
    }

    // A simple bind: the right password works, a wrong one is refused (not temporary).
    let mut bound = settings(&slapd.url());
    bound.bind_dn = Some(ROOT_DN.into());
    bound.bind_password = Some(ROOT_PW.into());
    let with_bind = Directory::new(bound.clone());
    assert_eq!(
        with_bind.lookup("carol@example.org").await.unwrap(),
        vec![carol.clone()]
    );
    bound.bind_password = Some("wrong".into());
    let e = Directory::new(bound)
        .lookup("carol@example.org")
        .await
        .unwrap_err();
    assert!(
        matches!(e, LdapError::BindRefused { code: 49, .. }),
        "{e:?}"
    );
    assert!(!e.is_temporary());
    let text = e.to_string();
    assert!(text.contains("refused the bind as cn=admin"), "{text}");
    assert!(!text.contains("wrong"), "{text}");
    // A base that is not there: the search fails, and that needs fixing, not waiting.
    let mut elsewhere = settings(&slapd.url());
    elsewhere.base = "dc=elsewhere,dc=org".into();
    let e = Directory::new(elsewhere)
        .lookup("carol@example.org")
        .await
        .unwrap_err();
    assert!(
        matches!(e, LdapError::Search { code: Some(32), .. }),
        "{e:?}"
    );
    assert!(!e.is_temporary());

    // The directory goes away: answers had are still given, hits and misses alike...
    slapd.stop();
    assert_eq!(
        directory.lookup("carol@example.org").await.unwrap(),
        vec![carol]
    );
    assert_eq!(
        directory.lookup("DAVE@example.org").await.unwrap(),
        vec![dave]
    );
    assert!(
        directory
            .lookup("nobody@example.org")
            .await
            .unwrap()
            .is_empty()
    );
    // ...and a new address is a temporary error, soon, and not remembered.
    let started = Instant::now();
    let e = directory.lookup("grace@example.org").await.unwrap_err();
    assert!(e.is_temporary(), "{e}");
    assert!(matches!(e, LdapError::Connect { .. }), "{e:?}");
    assert!(
        e.to_string()
            .starts_with("cannot connect to LDAP server ldap://127.0.0.1:")
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(directory.lookup("grace@example.org").await.is_err());
}

/// A server that accepts the connection and never answers: the look-up ends at the timeout.
#[tokio::test]
async fn silent_server_times_out() {
    let listener = TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut s = settings(&format!("ldap://127.0.0.1:{port}"));
    s.timeout = Duration::from_secs(1);
    let directory = Directory::new(s);
    let started = Instant::now();
    let e = directory.lookup("carol@example.org").await.unwrap_err();
    let took = started.elapsed();
    assert!(matches!(e, LdapError::Timeout { .. }), "{e:?}");
    assert!(e.is_temporary());
    assert_eq!(
        e.to_string(),
        format!("LDAP look-up at ldap://127.0.0.1:{port} timed out after 1 s")
    );
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "{took:?}"
    );
    drop(listener);
}

/// The relay asks the directory when the store has no certificate for a recipient, and
/// encrypts to what it finds (the "LDAP test": a real slapd, a user entry carrying
/// an RSA certificate, the relay encrypts to that user; OpenSSL decrypts with the user's key).
#[test]
fn the_relay_encrypts_to_a_user_found_in_the_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    harness::outsider(dir, "frank", "frank@example.org");
    run(Command::new("openssl")
        .args(["x509", "-outform", "DER", "-in"])
        .arg(dir.join("frank.pem"))
        .arg("-out")
        .arg(dir.join("frank.der")));
    let frank = std::fs::read(dir.join("frank.der")).unwrap();
    let ldif = base_entry()
        + &person(
            "frank",
            "frank@example.org",
            Some(("userCertificate;binary", &frank)),
        );
    let ldap_dir = dir.join("ldap");
    std::fs::create_dir_all(&ldap_dir).unwrap();
    let slapd = Slapd::start(&ldap_dir, &ldif);
    let gw = harness::Gateway::start(
        "",
        &format!(
            "[ldap]\nurl = \"ldap://127.0.0.1:{}/\"\nbase = \"{SUFFIX}\"\ntimeout = \"5s\"\n",
            slapd.port
        ),
    );
    gw.mail(
        "alice@example.com",
        "frank@example.org",
        "for frank's eyes only",
    );
    let got = gw.maildir("outbox", 1);
    let (path, text) = &got[0];
    let ct = harness::header_value(text, "Content-Type").unwrap_or_default();
    assert!(
        ct.contains("application/pkcs7-mime") && ct.contains("enveloped-data"),
        "{ct}"
    );
    assert!(
        !text.contains("for frank's eyes only"),
        "sent in clear:\n{text}"
    );
    common::openssl(
        &[
            "cms",
            "-decrypt",
            "-in",
            path.to_str().unwrap(),
            "-recip",
            "frank.pem",
            "-inkey",
            "frank.key",
            "-out",
            "opened.eml",
        ],
        dir,
    );
    let opened = std::fs::read_to_string(dir.join("opened.eml")).unwrap();
    assert!(opened.contains("multipart/signed"), "{opened}");
    assert!(opened.contains("for frank's eyes only"), "{opened}");
    assert!(
        gw.log().contains("certificate found in the directory"),
        "{}",
        gw.log()
    );
}
