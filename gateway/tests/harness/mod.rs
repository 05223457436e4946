//! The gateway under test: `smimegw serve` on a loopback port with a configuration written
//! by the test, driven by swaks; helpers shared by the relay and Postfix tests.
#![allow(dead_code)]

pub mod postfix;
pub mod web;
pub mod webdriver;

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::openssl;

/// A free port for a listener, below the kernel's ephemeral range (32768 and up), so the
/// outgoing connections of other tests running meanwhile cannot take it before it is bound.
pub fn free_port() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    loop {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos(),
        );
        let port = 20_000 + (h.finish() % 12_000) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Runs `smimegw serve` on `dir/smimegw.toml`, its log appended to `dir/gateway.log`.
pub fn spawn(dir: &Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("gateway.log"))
        .unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_smimegw"));
    // A test that puts the keys in SoftHSM2 gives the gateway its own token directory.
    let softhsm = dir.join("softhsm/softhsm2.conf");
    if softhsm.exists() {
        cmd.env("SOFTHSM2_CONF", softhsm);
    }
    cmd.args(["serve", "--config", "smimegw.toml"])
        .current_dir(dir)
        .env("SMIMEGW_PIN", "test-passphrase")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

pub struct Gateway {
    pub child: Child,
    pub dir: tempfile::TempDir,
    pub port: u16,
}

impl Gateway {
    /// Starts the gateway with `server_extra` lines in `[server]` and `rest` after it.
    pub fn start(server_extra: &str, rest: &str) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(dir, server_extra, rest)
    }

    pub fn start_in(dir: tempfile::TempDir, server_extra: &str, rest: &str) -> Gateway {
        Self::start_full(
            dir,
            server_extra,
            "first_retry = \"1s\"\nmax_retry = \"2s\"",
            rest,
        )
    }

    pub fn start_full(
        dir: tempfile::TempDir,
        server_extra: &str,
        queue: &str,
        rest: &str,
    ) -> Gateway {
        Self::start_on(free_port(), dir, server_extra, queue, rest)
    }

    /// Starts the gateway on a port chosen by the caller (peers configured before it need it).
    pub fn start_on(
        port: u16,
        dir: tempfile::TempDir,
        server_extra: &str,
        queue: &str,
        rest: &str,
    ) -> Gateway {
        Self::try_start(port, dir, server_extra, queue, rest)
            .unwrap_or_else(|(_, log)| panic!("the gateway did not start: {log}"))
    }

    /// Starts it; when it exits instead of listening, the directory back and its log.
    fn try_start(
        port: u16,
        dir: tempfile::TempDir,
        server_extra: &str,
        queue: &str,
        rest: &str,
    ) -> Result<Gateway, (tempfile::TempDir, String)> {
        let config = format!(
            "data_dir = \"data\"\n\
             [server]\n\
             hostname = \"gw.example.com\"\n\
             listen = [\"127.0.0.1:{port}\"]\n\
             internal_domains = [\"example.com\"]\n\
             {server_extra}\n\
             [queue]\n\
             {queue}\n\
             {rest}\n"
        );
        std::fs::write(dir.path().join("smimegw.toml"), config).unwrap();
        let child = spawn(dir.path());
        let mut g = Gateway { child, dir, port };
        match g.wait_ready() {
            Ok(()) => Ok(g),
            Err(log) => {
                let _ = g.child.wait();
                // Out of the Gateway without running its Drop on a dead child twice.
                let dir = std::mem::replace(&mut g.dir, tempfile::tempdir().unwrap());
                Err((dir, log))
            }
        }
    }

    /// Kills the gateway with SIGKILL (no chance to clean up) and starts it again on the
    /// same configuration and data.
    pub fn crash_and_restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Left behind by the killed one; the new one makes its own once it listens.
        let _ = std::fs::remove_file(self.data().join("control.sock"));
        self.child = spawn(self.dir.path());
        self.wait_listening();
    }

    pub fn wait_listening(&mut self) {
        if let Err(log) = self.wait_ready() {
            panic!("the gateway did not start: {log}");
        }
    }

    /// Waits until this gateway (not another on the same port) listens: the port answers
    /// and its control socket is there. Err(log) when it exited first.
    fn wait_ready(&mut self) -> Result<(), String> {
        let start = Instant::now();
        let control = self.data().join("control.sock");
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("exited ({status}): {}", self.log()));
            }
            if control.exists() && TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return Ok(());
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "the gateway did not start: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("gateway.log")).unwrap_or_default()
    }

    /// swaks to the gateway with `args`; returns its output (it may fail: callers check).
    pub fn swaks(&self, args: &[&str]) -> Output {
        Command::new("swaks")
            .args([
                "--server",
                &format!("127.0.0.1:{}", self.port),
                "--timeout",
                "60",
            ])
            .args(args)
            .output()
            .expect("swaks runs (tests/run installs it)")
    }

    /// swaks over STARTTLS with AUTH PLAIN as `user`, envelope from `user` to
    /// `bob@example.net`, with `extra` arguments; its output.
    pub fn swaks_auth(&self, user: &str, password: &str, extra: &[&str]) -> String {
        let mut args = vec![
            "--from",
            user,
            "--to",
            "bob@example.net",
            "--tls",
            "--auth",
            "PLAIN",
            "--auth-user",
            user,
            "--auth-password",
            password,
        ];
        args.extend_from_slice(extra);
        String::from_utf8_lossy(&self.swaks(&args).stdout).into_owned()
    }

    /// Sends and expects `250` to the data.
    pub fn send(&self, args: &[&str]) -> String {
        let out = self.swaks(args);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success() && text.contains("<-  250 2.0.0 Ok: queued as"),
            "swaks {args:?}: {text}\n{}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        text
    }

    /// Sends the message in the file `path` from `from` to `to` and expects `250` to the data.
    pub fn send_file(&self, from: &str, to: &str, path: &Path) -> String {
        self.send(&["--from", from, "--to", to, "--data", path.to_str().unwrap()])
    }

    /// Sends a message with `body` from `from` to `to` and expects `250` to the data.
    pub fn mail(&self, from: &str, to: &str, body: &str) -> String {
        self.send(&["--from", from, "--to", to, "--body", body])
    }

    /// Waits until the Maildir `DATA/which/new` holds `n` messages; returns them in order.
    pub fn maildir(&self, which: &str, n: usize) -> Vec<(PathBuf, String)> {
        wait_maildir(&self.data().join(which), n, || self.log())
    }

    /// Waits (30 s at most) until `cond` holds; the failure shows `what` and the log.
    pub fn wait_until(&self, what: &str, mut cond: impl FnMut() -> bool) {
        let start = Instant::now();
        while !cond() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "waited 30 s for {what}; queue: {:?}\nlog:\n{}",
                self.queued(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `openssl cms -verify` of `message` (relative paths from the gateway's directory)
    /// against the gateway's CA, with `extra` arguments; the content it verified.
    pub fn verify(&self, message: &Path, extra: &[&str]) -> String {
        let ca = self.data().join("ca.pem");
        let mut args = vec![
            "cms",
            "-verify",
            "-in",
            message.to_str().unwrap(),
            "-CAfile",
            ca.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        String::from_utf8_lossy(&openssl(&args, self.dir.path()).stdout).into_owned()
    }

    /// Waits until the one queued message has had `n` delivery attempts; returns its first
    /// recipient's last error.
    pub fn wait_attempts(&self, n: u64) -> String {
        self.wait_until(&format!("{n} delivery attempts"), || {
            let q = self.queued();
            q.len() == 1 && q[0]["attempts"].as_u64().unwrap_or(0) >= n
        });
        self.queued()[0]["recipients"][0]["status"]["last"]
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    /// Waits until the queue is empty.
    pub fn wait_queue_empty(&self) {
        self.wait_until("an empty queue", || self.queued().is_empty());
    }

    /// Envelopes in the queue.
    pub fn queued(&self) -> Vec<serde_json::Value> {
        let dir = self.data().join("spool/queue");
        std::fs::read_dir(dir)
            .map(|d| {
                d.flatten()
                    .filter(|e| e.path().extension().is_some_and(|x| x == "env"))
                    .map(|e| serde_json::from_slice(&std::fs::read(e.path()).unwrap()).unwrap())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A correspondent outside: a self-signed S/MIME certificate made by OpenSSL.
pub fn outsider(dir: &Path, name: &str, address: &str) {
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
            &format!("{name}.key"),
            "-out",
            &format!("{name}.pem"),
            "-subj",
            &format!("/CN={name}"),
            "-addext",
            &format!("subjectAltName=email:{address}"),
            "-addext",
            "extendedKeyUsage=emailProtection",
            "-addext",
            "keyUsage=digitalSignature,keyEncipherment",
            "-addext",
            "basicConstraints=critical,CA:FALSE",
        ],
        dir,
    );
}

pub fn header_value<'a>(msg: &'a str, name: &str) -> Option<&'a str> {
    msg.lines()
        .take_while(|l| !l.is_empty() && *l != "\r")
        .find(|l| {
            l.len() > name.len()
                && l[..name.len()].eq_ignore_ascii_case(name)
                && l.as_bytes()[name.len()] == b':'
        })
        .map(|l| l[name.len() + 1..].trim())
}

/// Waits (60 s at most) until the Maildir `dir` holds `n` messages in `new/`; returns them in
/// order. A failure shows `log()`.
pub fn wait_maildir(dir: &Path, n: usize, log: impl Fn() -> String) -> Vec<(PathBuf, String)> {
    let dir = dir.join("new");
    let start = Instant::now();
    loop {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        if files.len() >= n {
            files.sort();
            return files
                .into_iter()
                .map(|p| {
                    let t = String::from_utf8_lossy(&std::fs::read(&p).unwrap()).into_owned();
                    (p, t)
                })
                .collect();
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{} has {} of {n} messages; log:\n{}",
            dir.display(),
            files.len(),
            log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What Bob's mail program sends Alice: `text` signed with `bob.pem`/`bob.key`, then
/// encrypted (AES-256-CBC) to `alice.pem`, all files in `dir`; OpenSSL makes it.
pub fn bob_signed_and_encrypted(dir: &Path, text: &str, subject: &str) -> Vec<u8> {
    std::fs::write(
        dir.join("reply.txt"),
        format!("Content-Type: text/plain\r\n\r\n{text}\r\n"),
    )
    .unwrap();
    openssl(
        &[
            "cms",
            "-sign",
            "-in",
            "reply.txt",
            "-signer",
            "bob.pem",
            "-inkey",
            "bob.key",
            "-out",
            "reply.signed",
        ],
        dir,
    );
    openssl(
        &[
            "cms",
            "-encrypt",
            "-aes-256-cbc",
            "-in",
            "reply.signed",
            "-from",
            "bob@example.net",
            "-to",
            "alice@example.com",
            "-subject",
            subject,
            "alice.pem",
        ],
        dir,
    )
    .stdout
}

/// Bob's mail program opens `message` with `bob.pem`/`bob.key` (in `dir`) into `dir/out`.
pub fn bob_decrypts(dir: &Path, message: &Path, out: &str) {
    openssl(
        &[
            "cms",
            "-decrypt",
            "-in",
            message.to_str().unwrap(),
            "-recip",
            "bob.pem",
            "-inkey",
            "bob.key",
            "-out",
            out,
        ],
        dir,
    );
}

/// A minimal SMTP sink (the next hop) that accepts everything and hands back each message.
pub fn sink(listener: TcpListener) -> std::sync::mpsc::Receiver<String> {
    sink_counting(listener).0
}

/// A next hop that also counts the connections made to it.
pub fn sink_counting(
    listener: TcpListener,
) -> (
    std::sync::mpsc::Receiver<String>,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    let (tx, rx) = std::sync::mpsc::channel();
    let connections = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = connections.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut w = conn.try_clone().unwrap();
                let mut r = BufReader::new(conn);
                w.write_all(b"220 sink ESMTP\r\n").unwrap();
                let mut data = String::new();
                let mut in_data = false;
                let mut line = String::new();
                while r.read_line(&mut line).unwrap_or(0) > 0 {
                    if in_data {
                        if line == ".\r\n" {
                            in_data = false;
                            w.write_all(b"250 2.0.0 sunk\r\n").unwrap();
                            let _ = tx.send(std::mem::take(&mut data));
                        } else {
                            data.push_str(&line);
                        }
                    } else {
                        let cmd = line.to_ascii_uppercase();
                        let reply: &[u8] = if cmd.starts_with("EHLO") {
                            b"250-sink\r\n250 PIPELINING\r\n"
                        } else if cmd.starts_with("DATA") {
                            in_data = true;
                            b"354 go\r\n"
                        } else if cmd.starts_with("QUIT") {
                            let _ = w.write_all(b"221 bye\r\n");
                            return;
                        } else {
                            b"250 ok\r\n"
                        };
                        w.write_all(reply).unwrap();
                    }
                    line.clear();
                }
            });
        }
    });
    (rx, connections)
}

/// The correspondents' certificates the gateway with data directory `data` holds for
/// `address` (its certificate store).
pub fn held_for(data: &Path, address: &str) -> Vec<smimegw::store::Stored> {
    use smimegw::store::Store;
    smimegw::store::SqliteStore::open(&data.join("store.sqlite"))
        .unwrap()
        .for_address(address)
        .unwrap()
}

/// `smimegw console` on the data directory `data` (network settings in `data/network.conf`,
/// reboots a no-op) with `input` typed through a pipe; everything it printed.
pub fn console(data: &Path, input: &str) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_smimegw"));
    cmd.args(["console", "--data"])
        .arg(data)
        .arg("--network")
        .arg(data.join("network.conf"))
        .args(["--reboot-command", "true"]);
    let out = piped(&mut cmd, input);
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// Runs `cmd` with `input` on its standard input; what it printed. (A command may exit
/// before it reads its input: that is no error here.)
pub fn piped(cmd: &mut Command, input: &str) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _ = child.stdin.take().unwrap().write_all(input.as_bytes());
    child.wait_with_output().unwrap()
}

/// An outsider (`outsider`) whose certificate the gateway in `dir` trusts (a file in its
/// `data/trust`).
pub fn trusted_outsider(dir: &Path, name: &str, address: &str) {
    outsider(dir, name, address);
    std::fs::create_dir_all(dir.join("data/trust")).unwrap();
    std::fs::copy(
        dir.join(format!("{name}.pem")),
        dir.join(format!("data/trust/{name}.pem")),
    )
    .unwrap();
}
