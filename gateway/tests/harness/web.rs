//! The web console under test: a gateway with `[web]` on a free loopback port, an
//! administrator account made beforehand, curl as the HTTPS client of the API tests, and
//! users' PKCS#12 files issued by a small OpenSSL CA.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::Value;

use super::{Gateway, free_port};
use crate::common::openssl;

pub const ADMIN_PASSWORD: &str = "correct horse battery";

/// A gateway with the web console on; `admin` / [`ADMIN_PASSWORD`] exists. `rest` is more
/// configuration after `[web]`.
pub fn gateway(rest: &str) -> (Gateway, u16) {
    let dir = tempfile::tempdir().unwrap();
    admin_account(&dir.path().join("data"));
    let web = free_port();
    let gw = Gateway::start_in(
        dir,
        "",
        &format!("[web]\nlisten = [\"127.0.0.1:{web}\"]\n{rest}"),
    );
    (gw, web)
}

/// `admin` / [`ADMIN_PASSWORD`] in the data directory `data` (made if need be).
pub fn admin_account(data: &Path) {
    std::fs::create_dir_all(data).unwrap();
    let mut admins = std::collections::BTreeMap::new();
    admins.insert(
        "admin".to_string(),
        smimegw::users::hash(ADMIN_PASSWORD).unwrap(),
    );
    smimegw::users::write_as(&data.join("admins"), &admins, smimegw::users::Names::Logins).unwrap();
}

/// A CA (`ca.pem`, `ca.key` in `dir`) for users' certificates.
pub fn user_ca(dir: &Path) {
    user_ca_named(dir, "/O=Example/CN=Example Users CA");
}

/// [`user_ca`] with another subject (`/CN=...`).
pub fn user_ca_named(dir: &Path, subject: &str) {
    openssl(
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "60",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-subj",
            subject,
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=keyCertSign,cRLSign",
        ],
        dir,
    );
    // `openssl ca` (OpenSSL 3.0's `x509 -req` cannot set a start date in the past).
    std::fs::write(
        dir.join("ca.cnf"),
        "[ca]\ndefault_ca = d\n[d]\ndatabase = index.txt\nnew_certs_dir = .\n\
         serial = serial\ndefault_md = sha256\npolicy = p\nunique_subject = no\n\
         crlnumber = crlnumber\ndefault_crl_days = 7\n\
         [p]\ncommonName = supplied\n",
    )
    .unwrap();
    std::fs::write(dir.join("index.txt"), "").unwrap();
    std::fs::write(dir.join("serial"), "1000\n").unwrap();
    std::fs::write(dir.join("crlnumber"), "01\n").unwrap();
}

/// A user's PKCS#12 (`NAME.p12`, password `password`) issued by [`user_ca`]'s CA, valid
/// from `days_from`..`days_to` days from now (negative: past), naming `address` when given.
pub fn user_p12(
    dir: &Path,
    name: &str,
    address: Option<&str>,
    days: (i64, i64),
    password: &str,
) -> PathBuf {
    user_p12_with(dir, name, address, days, password, "")
}

/// [`user_p12`] with more extension lines (OpenSSL's extfile syntax), e.g. a
/// `crlDistributionPoints`.
pub fn user_p12_with(
    dir: &Path,
    name: &str,
    address: Option<&str>,
    days: (i64, i64),
    password: &str,
    extra: &str,
) -> PathBuf {
    let ext = dir.join(format!("{name}.ext"));
    let mut e = String::from(
        "basicConstraints=critical,CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n\
         extendedKeyUsage=emailProtection\n",
    );
    e.push_str(extra);
    if let Some(a) = address {
        e.push_str(&format!("subjectAltName=email:{a}\n"));
    }
    std::fs::write(&ext, e).unwrap();
    let key = format!("{name}.key");
    let csr = format!("{name}.csr");
    let pem = format!("{name}.pem");
    openssl(
        &[
            "req",
            "-new",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            &format!("/CN={name}"),
        ],
        dir,
    );
    let day = |d: i64| {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
            + d * 86_400;
        // YYYYMMDDHHMMSSZ through date(1).
        let out = Command::new("date")
            .args(["-u", "-d", &format!("@{t}"), "+%Y%m%d%H%M%SZ"])
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    openssl(
        &[
            "ca",
            "-batch",
            "-config",
            "ca.cnf",
            "-cert",
            "ca.pem",
            "-keyfile",
            "ca.key",
            "-in",
            &csr,
            "-startdate",
            &day(days.0),
            "-enddate",
            &day(days.1),
            "-extfile",
            ext.to_str().unwrap(),
            "-notext",
            "-out",
            &pem,
        ],
        dir,
    );
    let p12 = format!("{name}.p12");
    openssl(
        &[
            "pkcs12",
            "-export",
            "-inkey",
            &key,
            "-in",
            &pem,
            "-certfile",
            "ca.pem",
            "-out",
            &p12,
            "-passout",
            &format!("pass:{password}"),
        ],
        dir,
    );
    dir.join(p12)
}

/// An HTTPS client of the API (curl, a cookie jar, the CSRF token after sign-in).
pub struct Api {
    pub base: String,
    jar: PathBuf,
    pub csrf: String,
    _dir: tempfile::TempDir,
}

/// What came back.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: String,
    pub json: Value,
    pub text: String,
}

impl Api {
    pub fn new(port: u16) -> Api {
        let d = tempfile::tempdir().unwrap();
        Api {
            base: format!("https://127.0.0.1:{port}"),
            jar: d.path().join("cookies"),
            csrf: String::new(),
            _dir: d,
        }
    }

    /// One request; `body` is JSON, or with `form` a multipart form (`-F` arguments).
    pub fn call(&self, method: &str, path: &str, body: Option<&Value>, form: &[String]) -> Answer {
        self.call_with_csrf(method, path, body, form, &self.csrf.clone())
    }

    pub fn call_with_csrf(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        form: &[String],
        csrf: &str,
    ) -> Answer {
        let headers = self._dir.path().join("headers");
        let mut cmd = Command::new("curl");
        cmd.args(["-sk", "-X", method, "-b"])
            .arg(&self.jar)
            .arg("-c")
            .arg(&self.jar)
            .arg("-D")
            .arg(&headers)
            .args(["-w", "\n%{http_code}"]);
        if !csrf.is_empty() {
            cmd.args(["-H", &format!("X-CSRF-Token: {csrf}")]);
        }
        if let Some(b) = body {
            cmd.args(["-H", "Content-Type: application/json", "--data-binary"])
                .arg(b.to_string());
        }
        for f in form {
            cmd.arg("-F").arg(f);
        }
        cmd.arg(format!("{}{path}", self.base));
        let out = cmd.output().expect("curl runs (tests/run installs it)");
        let all = String::from_utf8_lossy(&out.stdout).into_owned();
        let (text, code) = all.rsplit_once('\n').unwrap_or(("", "0"));
        Answer {
            status: code.trim().parse().unwrap_or(0),
            headers: std::fs::read_to_string(&headers).unwrap_or_default(),
            json: serde_json::from_str(text).unwrap_or(Value::Null),
            text: text.to_string(),
        }
    }

    pub fn sign_in(&mut self, user: &str, password: &str) -> Answer {
        let a = self.call(
            "POST",
            "/api/v1/session",
            Some(&serde_json::json!({ "user": user, "password": password })),
            &[],
        );
        if a.status == 200 {
            self.csrf = a.json["csrf"].as_str().unwrap().to_string();
        }
        a
    }
}

/// Serves the files of `dir` over HTTP/1.0 on a free loopback port; counts requests.
pub fn http_files(dir: PathBuf) -> (u16, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { continue };
            h.fetch_add(1, Ordering::SeqCst);
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                match c.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                }
            }
            let text = String::from_utf8_lossy(&req);
            let path = text
                .split(' ')
                .nth(1)
                .unwrap_or("/")
                .trim_start_matches('/');
            let answer = match std::fs::read(dir.join(path)) {
                Ok(body) => {
                    let mut a = format!(
                        "HTTP/1.0 200 OK\r\nContent-Type: application/pkix-crl\r\n\
                         Content-Length: {}\r\n\r\n",
                        body.len()
                    )
                    .into_bytes();
                    a.extend_from_slice(&body);
                    a
                }
                Err(_) => b"HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_vec(),
            };
            let _ = c.write_all(&answer);
        }
    });
    (port, hits)
}

/// The CA's CRL now, DER, as `name` in `dir`.
pub fn gen_crl(dir: &Path, name: &str) {
    openssl(
        &[
            "ca", "-gencrl", "-config", "ca.cnf", "-cert", "ca.pem", "-keyfile", "ca.key", "-out",
            "crl.pem",
        ],
        dir,
    );
    openssl(
        &["crl", "-in", "crl.pem", "-outform", "DER", "-out", name],
        dir,
    );
}
