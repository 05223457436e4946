//! A private Postfix instance for a test: its own configuration, queue and Maildir under a
//! temporary directory, one SMTP listener on 127.0.0.1, the master process in the foreground
//! as a child of the test (stopped when dropped). Needs root (Postfix's master does) and the
//! `postfix` package (tests/run installs it).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use std::net::TcpStream;

const MASTER: &str = "/usr/lib/postfix/sbin/master";

/// The services a relay-and-deliver Postfix needs; nothing chrooted.
const MASTER_CF: &str = "\
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
virtual   unix  -       n       n       -       -       virtual
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
";

pub struct Postfix {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub name: String,
    master: Child,
}

impl Postfix {
    /// Starts `name`.test on 127.0.0.1:`port`; `main` is appended to main.cf. Mail for its
    /// `virtual_mailbox_domains` lands in the Maildir [`Postfix::mailbox`].
    pub fn start(name: &str, port: u16, main: &str) -> Postfix {
        Self::start_with_login(name, port, main, None)
    }

    /// [`Postfix::start`], and with `login` (user, password) its SMTP server offers AUTH
    /// PLAIN/LOGIN (Cyrus SASL, over TLS only) for that one account.
    pub fn start_with_login(
        name: &str,
        port: u16,
        main: &str,
        login: Option<(&str, &str)>,
    ) -> Postfix {
        assert!(
            Path::new(MASTER).exists(),
            "Postfix is not installed: run tests/run, which installs postfix"
        );
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // Postfix's own user must reach its queue inside the test's directory.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
        for sub in ["conf", "queue", "data", "mail"] {
            std::fs::create_dir(d.join(sub)).unwrap();
        }
        // The virtual delivery agent writes as nobody.
        std::os::unix::fs::chown(d.join("mail"), Some(65534), Some(65534)).unwrap();
        let main_cf = format!(
            "compatibility_level = 3.6\n\
             queue_directory = {d}/queue\n\
             data_directory = {d}/data\n\
             meta_directory = /etc/postfix\n\
             mail_owner = postfix\n\
             setgid_group = postdrop\n\
             myhostname = {name}.test\n\
             mydomain = test\n\
             myorigin = $myhostname\n\
             mydestination =\n\
             alias_maps =\n\
             alias_database =\n\
             inet_interfaces = loopback-only\n\
             inet_protocols = ipv4\n\
             mynetworks = 127.0.0.0/8\n\
             smtp_dns_support_level = disabled\n\
             maillog_file = {d}/maillog\n\
             maillog_file_prefixes = {d}\n\
             biff = no\n\
             queue_run_delay = 1s\n\
             minimal_backoff_time = 1s\n\
             maximal_backoff_time = 2s\n\
             virtual_mailbox_base = {d}/mail\n\
             virtual_mailbox_maps = static:box/\n\
             virtual_uid_maps = static:65534\n\
             virtual_gid_maps = static:65534\n\
             {main}\n",
            d = d.display()
        );
        let sasl = login.map_or(String::new(), |(user, password)| {
            sasl_account(&d.join("conf"), name, user, password)
        });
        std::fs::write(d.join("conf/main.cf"), main_cf + &sasl).unwrap();
        std::fs::write(
            d.join("conf/master.cf"),
            format!("127.0.0.1:{port} inet n - n - - smtpd\n{MASTER_CF}"),
        )
        .unwrap();
        let conf = d.join("conf");
        let out = Command::new("postfix")
            .arg("-c")
            .arg(&conf)
            .arg("set-permissions")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "postfix set-permissions: {}{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(d.join("maillog")).unwrap_or_default()
        );
        let master = Command::new(MASTER)
            .arg("-c")
            .arg(&conf)
            .arg("-d")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(d.join("master.err")).unwrap())
            .spawn()
            .unwrap();
        let p = Postfix {
            dir,
            port,
            name: name.into(),
            master,
        };
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "Postfix {name} did not start: {}",
                p.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        p
    }

    /// Its Maildir (mail for `virtual_mailbox_domains`).
    pub fn mailbox(&self) -> PathBuf {
        self.dir.path().join("mail/box")
    }

    /// Its mail log and the master's standard error.
    pub fn log(&self) -> String {
        let d = self.dir.path();
        format!(
            "--- Postfix {} maillog:\n{}\n--- master:\n{}",
            self.name,
            std::fs::read_to_string(d.join("maillog")).unwrap_or_default(),
            std::fs::read_to_string(d.join("master.err")).unwrap_or_default()
        )
    }

    /// Makes a self-signed certificate for 127.0.0.1 in `dir` (`dir/NAME-cert.pem`, what a
    /// next hop's `ca_file` names) and returns the main.cf lines that offer STARTTLS with it.
    pub fn tls_lines(dir: &Path, name: &str) -> String {
        let key = dir.join(format!("{name}-key.pem"));
        let cert = dir.join(format!("{name}-cert.pem"));
        crate::common::openssl(
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-days",
                "30",
                "-keyout",
                key.to_str().unwrap(),
                "-out",
                cert.to_str().unwrap(),
                "-subj",
                &format!("/CN={name}.test"),
                "-addext",
                "subjectAltName=IP:127.0.0.1",
                "-addext",
                "basicConstraints=critical,CA:FALSE",
            ],
            dir,
        );
        format!(
            "smtpd_tls_security_level = may\n\
             smtpd_tls_chain_files = {}, {}\n\
             smtpd_tls_received_header = yes\n",
            key.display(),
            cert.display()
        )
    }
}

/// A Cyrus SASL database with one account (`user` in realm `NAME.test`) in `conf/sasl/`, where
/// Debian's Postfix reads its SASL configuration (whatever `cyrus_sasl_config_path` says);
/// returns the main.cf lines that offer AUTH with it, over TLS only.
fn sasl_account(conf: &Path, name: &str, user: &str, password: &str) -> String {
    let sasl = conf.join("sasl");
    std::fs::create_dir_all(&sasl).unwrap();
    let db = sasl.join("sasldb2");
    let mut child = Command::new("saslpasswd2")
        .args(["-p", "-c", "-f"])
        .arg(&db)
        .args(["-u", &format!("{name}.test"), user])
        .stdin(Stdio::piped())
        .spawn()
        .expect("saslpasswd2 runs (tests/run installs sasl2-bin)");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(password.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success());
    // smtpd runs as postfix and reads the database.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(
        sasl.join("smtpd.conf"),
        format!(
            "pwcheck_method: auxprop\nauxprop_plugin: sasldb\nsasldb_path: {}\nmech_list: PLAIN LOGIN\n",
            db.display()
        ),
    )
    .unwrap();
    format!(
        "smtpd_sasl_auth_enable = yes\n\
         smtpd_sasl_type = cyrus\n\
         smtpd_sasl_path = smtpd\n\
         smtpd_sasl_local_domain = {name}.test\n\
         smtpd_tls_auth_only = yes\n"
    )
}

impl Drop for Postfix {
    fn drop(&mut self) {
        // SIGTERM: the master stops its children and exits.
        let _ = Command::new("kill")
            .arg(self.master.id().to_string())
            .status();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.master.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.master.kill();
        let _ = self.master.wait();
    }
}
