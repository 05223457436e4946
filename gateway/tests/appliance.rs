//! The appliance, end to end: build the image from this build's `smimegw`, boot it under
//! QEMU with `qemu/run` (KVM when usable, else TCG), and use it as an admin and a mail
//! client would: the serial console (first sign-in, status, queue), mail in through the
//! forwarded SMTP port, out to a sink on this host, signed (checked by OpenSSL against the
//! appliance's CA); then a reboot that keeps queue, key, settings and logs and sets the
//! clock from an NTP server on this host, a killed gateway that init restarts, an opened
//! chassis (QEMU's board pins are files) that stops signing until the console clears it,
//! and a hung gateway that the watchdog answers with a reset.
//!
//! The guest's second serial port carries a root shell (`DEBUG_SHELL`), used to look
//! inside (the CA certificate, the gateway's process).

#![allow(clippy::unwrap_used)]

mod common;
mod harness;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::openssl;
use harness::{free_port, sink};

/// What the appliance's boot prints on the console when it is done.
const BOOTED: &str = "smimegw: appliance ";

/// QEMU and what it printed on the serial console.
struct Machine {
    child: Child,
    serial: Arc<Mutex<Vec<u8>>>,
    stdin: std::process::ChildStdin,
    shell_path: PathBuf,
    smtp_port: u16,
    /// The host port forwarded to the guest's web console (8443).
    https_port: u16,
    /// Serial output before this offset has been looked at.
    seen: usize,
}

impl Drop for Machine {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Machine {
    fn boot(image: &Path, dir: &Path, config: &Path, smtp_port: u16) -> Machine {
        let shell_path = dir.join("debug.sock");
        let https_port = free_port();
        let qemu_run = Path::new(env!("CARGO_MANIFEST_DIR")).join("../qemu/run");
        let mut child = Command::new(qemu_run)
            .env("IMAGE_DIR", image)
            .env("DATA_DISK", dir.join("data.img"))
            .env("CONFIG", config)
            .env("SMTP_PORT", smtp_port.to_string())
            .env("HTTPS_PORT", https_port.to_string())
            .env("DEBUG_SHELL", &shell_path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("qemu/run starts");
        let serial = Arc::new(Mutex::new(Vec::new()));
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let serial = serial.clone();
            std::thread::spawn(move || {
                let mut stream = stream;
                let mut buf = [0u8; 4096];
                while let Ok(n) = stream.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    serial.lock().unwrap().extend_from_slice(&buf[..n]);
                }
            });
        }
        let stdin = child.stdin.take().unwrap();
        Machine {
            child,
            serial,
            stdin,
            shell_path,
            smtp_port,
            https_port,
            seen: 0,
        }
    }

    fn output(&self) -> String {
        String::from_utf8_lossy(&self.serial.lock().unwrap()).into_owned()
    }

    /// Waits for `needle` on the serial console after what was seen so far; returns what
    /// came before it.
    fn expect(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            {
                let out = self.serial.lock().unwrap();
                let text = String::from_utf8_lossy(&out[self.seen.min(out.len())..]).into_owned();
                if let Some(i) = text.find(needle) {
                    self.seen += text[..i + needle.len()].len();
                    return text[..i].to_string();
                }
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "QEMU ended ({status}) waiting for {needle:?}:\n{}",
                    self.output()
                );
            }
            assert!(
                Instant::now() < deadline,
                "no {needle:?} on the serial console within {timeout:?}:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Types a line on the serial console.
    fn type_line(&mut self, line: &str) {
        self.stdin
            .write_all(format!("{line}\r").as_bytes())
            .unwrap();
        self.stdin.flush().unwrap();
    }

    /// Runs a command in the guest's debug shell; its output.
    fn shell(&self, cmd: &str) -> String {
        let mut s = UnixStream::connect(&self.shell_path).expect("debug shell socket");
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        // Markers the shell computes, so neither an echo of the line nor a prompt is taken
        // for output.
        s.write_all(format!("echo __BEGIN$((6*7))__; {cmd}; echo __DONE$((6*7))__\n").as_bytes())
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            if let Ok(n) = s.read(&mut buf) {
                out.extend_from_slice(&buf[..n]);
            }
            let text = String::from_utf8_lossy(&out);
            if let (Some(b), Some(e)) = (text.find("__BEGIN42__"), text.find("__DONE42__")) {
                return text[b + 11..e.max(b + 11)]
                    .trim_start_matches(['\r', '\n'])
                    .replace('\r', "");
            }
            assert!(
                Instant::now() < deadline,
                "debug shell: no answer to {cmd:?}: {text}"
            );
        }
    }

    /// The gateway's process id in the guest ("" when none runs); the console is an
    /// `smimegw` process too.
    fn gateway_pid(&self) -> String {
        self.shell("ps -o pid,args | awk '/[s]mimegw serve/ {print $1}'")
            .trim()
            .to_string()
    }

    /// Sends the gateway in the guest `signal`; waits until init has started a new one and
    /// it answers.
    fn restart_gateway(&self, signal: &str) {
        let pid = self.gateway_pid();
        assert!(!pid.is_empty(), "the gateway runs");
        self.shell(&format!("kill {signal} {pid}"));
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let now = self.gateway_pid();
            if !now.is_empty() && now != pid {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the gateway was not restarted:\n{}",
                self.shell("tail -n 20 /data/log/messages")
            );
            std::thread::sleep(Duration::from_millis(500));
        }
        self.wait_smtp(Duration::from_secs(60));
    }

    /// Waits until the gateway in the guest answers with its banner; how long that took.
    fn wait_smtp(&self, timeout: Duration) -> Duration {
        let start = Instant::now();
        loop {
            if banner(self.smtp_port) {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < timeout,
                "no SMTP banner within {timeout:?}:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    fn swaks(&self, from: &str, to: &str, body: &str) -> String {
        let out = Command::new("swaks")
            .args(["--server", &format!("127.0.0.1:{}", self.smtp_port)])
            .args(["--from", from, "--to", to, "--body", body])
            .args(["--header", "Subject: from the appliance test"])
            .output()
            .expect("swaks runs");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "swaks: {text}{}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.shell("tail -n 20 /data/log/messages")
        );
        text
    }
}

/// An SNTP server on this host (UDP, loopback) whose clock runs `skew` seconds ahead; the
/// guest reaches it at 10.0.2.2. Returns its port.
fn ntp_server(skew: f64) -> u16 {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = sock.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut req = [0u8; 48];
        while let Ok((n, from)) = sock.recv_from(&mut req) {
            if n < 48 {
                continue;
            }
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs_f64();
            let p = smimegw::sntp::server_reply(&req, now + skew, 2);
            let _ = sock.send_to(&p, from);
        }
    });
    port
}

/// A 220 greeting on the forwarded port (QEMU accepts the connection itself; only the
/// guest's gateway sends the banner).
fn banner(port: u16) -> bool {
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let mut buf = [0u8; 256];
    let ok = matches!(s.read(&mut buf), Ok(n) if n >= 3 && &buf[..3] == b"220");
    let _ = s.write_all(b"QUIT\r\n");
    ok
}

/// `openssl cms -verify` of a message against a CA file; OpenSSL's verdict and the
/// signer's certificate (PEM).
fn verify(dir: &Path, message: &str, ca: &Path, name: &str) -> (String, String) {
    let msg = dir.join(format!("{name}.eml"));
    std::fs::write(&msg, message.replace("\r\n", "\n")).unwrap();
    let signer = dir.join(format!("{name}.signer.pem"));
    let out = openssl(
        &[
            "cms",
            "-verify",
            "-in",
            msg.to_str().unwrap(),
            "-CAfile",
            ca.to_str().unwrap(),
            "-signer",
            signer.to_str().unwrap(),
            "-out",
            "/dev/null",
        ],
        dir,
    );
    (
        String::from_utf8_lossy(&out.stderr).into_owned(),
        std::fs::read_to_string(&signer).unwrap_or_default(),
    )
}

#[test]
fn appliance_boots_relays_signed_mail_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let image_dir = dir.path().join("image");

    // Build the image from this build's gateway; the same inputs give the same image.
    let opts = image::Options::new(env!("CARGO_BIN_EXE_smimegw").into(), image_dir.clone());
    let report = image::build(&opts).expect("image builds");
    let mib = |n: u64| n as f64 / 1048576.0;
    println!(
        "image: {:.1} MiB compressed (kernel {:.1} MiB, initramfs {:.1} MiB; goal: under 64 MiB)",
        mib(report.kernel_size + report.initramfs_size),
        mib(report.kernel_size),
        mib(report.initramfs_size)
    );
    let again = image::build(&image::Options::new(
        env!("CARGO_BIN_EXE_smimegw").into(),
        dir.path().join("image2"),
    ))
    .expect("image builds again");
    assert_eq!(
        report.digest, again.digest,
        "a rebuild gives the same image"
    );
    let manifest = std::fs::read_to_string(&report.manifest).unwrap();
    for want in [
        "/usr/bin/smimegw",
        "/usr/lib/softhsm/libsofthsm2.so",
        "softhsm2 ",
        "busybox-static ",
    ] {
        assert!(
            manifest.contains(want),
            "manifest lacks {want}:\n{manifest}"
        );
    }

    // The next hop on this host; the guest reaches it as 10.0.2.2.
    let hop_port = free_port();
    let hop = std::net::TcpListener::bind(("127.0.0.1", hop_port)).unwrap();
    let config = dir.path().join("first-boot.toml");
    let template =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../qemu/smimegw.toml"))
            .unwrap();
    std::fs::write(
        &config,
        template.replace("@NEXT_HOP_PORT@", &hop_port.to_string()),
    )
    .unwrap();

    let smtp_port = free_port();
    let started = Instant::now();
    let mut m = Machine::boot(&image_dir, dir.path(), &config, smtp_port);
    let to_banner = started.elapsed() + m.wait_smtp(Duration::from_secs(120));
    let accel = if m.output().contains("qemu/run: kvm") {
        "KVM"
    } else {
        "TCG"
    };
    println!(
        "boot: {:.1} s from QEMU start to the SMTP banner ({accel}; goal: under {} s)",
        to_banner.as_secs_f64(),
        if accel == "KVM" { 10 } else { 30 }
    );
    m.expect(
        "first boot: settings provisioned by the host",
        Duration::from_secs(5),
    );

    // The serial console: the first sign-in chooses the admin password.
    m.expect("No administrator exists yet", Duration::from_secs(60));
    m.expect("New password:", Duration::from_secs(10));
    m.type_line("short");
    m.expect("Too short", Duration::from_secs(10));
    m.type_line("correct horse battery");
    m.expect("Again:", Duration::from_secs(10));
    m.type_line("correct horse battery");
    m.expect("Signed in as admin", Duration::from_secs(30));
    m.expect("smimegw> ", Duration::from_secs(10));
    m.type_line("status");
    let status = m.expect("smimegw> ", Duration::from_secs(30));
    assert!(
        status.contains("token:") && status.contains("answering"),
        "{status}"
    );
    assert!(status.contains("watchdog:   /dev/watchdog"), "{status}");
    assert!(
        status.contains(&format!("outbound:   SMTP 10.0.2.2:{hop_port}")),
        "{status}"
    );
    assert!(
        !status.contains("correct horse"),
        "the password is never shown"
    );

    // The web console, through QEMU's forwarded port: the serial console's administrator
    // signs in to the API and sees the token answering.
    let jar = dir.path().join("cookies");
    let curl = |args: &[&str]| {
        let out = Command::new("curl")
            .args(["-sk", "--max-time", "30", "-b"])
            .arg(&jar)
            .arg("-c")
            .arg(&jar)
            .args(args)
            .output()
            .expect("curl runs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let web = format!("https://127.0.0.1:{}", m.https_port);
    let me = curl(&[
        "-H",
        "Content-Type: application/json",
        "--data-binary",
        r#"{"user":"admin","password":"correct horse battery"}"#,
        &format!("{web}/api/v1/session"),
    ]);
    assert!(me.contains(r#""role":"admin""#), "web sign-in: {me}");
    let st = curl(&[&format!("{web}/api/v1/status")]);
    assert!(st.contains(r#""state":"answering""#), "{st}");

    // Mail through the appliance: out to the sink, signed by a key in the guest's token.
    let ca = dir.path().join("appliance-ca.pem");
    let rx = sink(hop);
    m.swaks("alice@example.com", "bob@example.net", "signed inside QEMU");
    let first = rx
        .recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| {
            panic!(
                "nothing delivered:\n{}",
                m.shell("tail -n 30 /data/log/messages")
            )
        });
    assert!(first.contains("multipart/signed"), "{first}");
    std::fs::write(&ca, m.shell("cat /data/smimegw/ca.pem")).unwrap();
    let (verdict, signer) = verify(dir.path(), &first, &ca, "first");
    assert!(verdict.contains("Verification successful"), "{verdict}");

    // The image is read-only; the data disk is not.
    let ro = m.shell("touch /etc/x 2>&1; touch /data/x && echo data-writable; rm -f /data/x");
    assert!(
        ro.contains("Read-only file system") && ro.contains("data-writable"),
        "{ro}"
    );

    // Supervision: a killed gateway is started again.
    m.restart_gateway("-9");

    // Persistence: a message waits in the queue while the next hop is down, and a reboot
    // keeps it, the key and the settings.
    // (The gateway is sent to a closed port meanwhile; the sink stays.)
    let hop_port2 = hop_port;
    m.shell(&format!(
        "sed -i 's/10.0.2.2:{hop_port2}/10.0.2.2:9/' /data/etc/smimegw.toml"
    ));
    m.restart_gateway("-TERM");
    m.swaks(
        "alice@example.com",
        "carol@example.net",
        "queued over a reboot",
    );
    m.type_line("queue");
    let queue = m.expect("smimegw> ", Duration::from_secs(30));
    assert!(queue.contains("1 message(s) queued"), "{queue}");
    m.shell(&format!(
        "sed -i 's/10.0.2.2:9/10.0.2.2:{hop_port2}/' /data/etc/smimegw.toml"
    ));
    // The clock: an NTP server on this host an hour ahead, applied at the next boot.
    let ntp_port = ntp_server(3600.0);
    m.type_line(&format!("network ntp 10.0.2.2:{ntp_port}"));
    m.expect("smimegw> ", Duration::from_secs(10));
    m.type_line("reboot");
    m.expect("Type yes:", Duration::from_secs(10));
    m.type_line("yes");
    let rebooting = m.expect(BOOTED, Duration::from_secs(120));
    assert!(
        !rebooting.contains("first boot"),
        "the second boot is no first boot:\n{rebooting}"
    );
    assert!(
        rebooting.contains(&format!("smimegw: clock: 10.0.2.2:{ntp_port} ("))
            && rebooting.contains("offset +3")
            && rebooting.contains("clock set"),
        "the clock was not set by NTP:\n{rebooting}"
    );
    m.wait_smtp(Duration::from_secs(120));
    m.expect("login: ", Duration::from_secs(60));
    m.type_line("admin");
    m.expect("Password:", Duration::from_secs(10));
    m.type_line("correct horse battery");
    m.expect("Signed in as admin", Duration::from_secs(30));
    m.expect("smimegw> ", Duration::from_secs(10));
    m.type_line("queue retry");
    m.expect("due now", Duration::from_secs(30));
    m.expect("smimegw> ", Duration::from_secs(10));
    let second = rx
        .recv_timeout(Duration::from_secs(180))
        .unwrap_or_else(|_| {
            panic!(
                "the queued message was lost:\n{}",
                m.shell("tail -n 30 /data/log/messages")
            )
        });
    assert!(second.contains("queued over a reboot"), "{second}");
    let (verdict, signer2) = verify(dir.path(), &second, &ca, "second");
    assert!(verdict.contains("Verification successful"), "{verdict}");
    assert_eq!(
        signer, signer2,
        "the same key and certificate after the reboot"
    );
    let guest: f64 = m.shell("date +%s").trim().parse().unwrap();
    let host = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        (guest - host - 3600.0).abs() < 60.0,
        "guest clock {guest}, host {host}: not an hour ahead"
    );
    // The logs of both boots are on the data disk, the first sign-in among them.
    let log = m.shell("cat /data/log/messages");
    assert_eq!(log.matches("smimegw-boot: appliance").count(), 2, "{log}");
    assert!(log.contains("administrator password set"), "{log}");

    // The chassis is opened: signing stops, mail waits, the console clears it.
    m.shell("echo 1 > /run/smimegw/board/tamper");
    let start = Instant::now();
    while m
        .shell("cat /run/smimegw/board/amber /run/smimegw/board/red")
        .split_whitespace()
        .ne(["1", "1"])
    {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no tamper LEDs:\n{}",
            m.shell("tail -n 20 /data/log/messages")
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    m.swaks("alice@example.com", "dave@example.net", "held by a tamper");
    m.type_line("tamper");
    let tamper = m.expect("smimegw> ", Duration::from_secs(30));
    assert!(tamper.contains("the chassis was opened at"), "{tamper}");
    assert!(
        rx.recv_timeout(Duration::from_secs(5)).is_err(),
        "mail went out while tampered"
    );
    m.shell("echo 0 > /run/smimegw/board/tamper");
    m.type_line("tamper clear");
    m.expect("Your password:", Duration::from_secs(10));
    m.type_line("correct horse battery");
    m.expect("signing and decrypting resume", Duration::from_secs(30));
    let third = rx
        .recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| {
            panic!(
                "nothing delivered after the tamper was cleared:\n{}",
                m.shell("tail -n 30 /data/log/messages")
            )
        });
    assert!(third.contains("held by a tamper"), "{third}");
    let (verdict, _) = verify(dir.path(), &third, &ca, "third");
    assert!(verdict.contains("Verification successful"), "{verdict}");

    // A hung gateway: the watchdog resets the machine.
    let boots = m.output().matches(BOOTED).count();
    m.shell(&format!("kill -STOP {}", m.gateway_pid()));
    let hung = Instant::now();
    m.expect(BOOTED, Duration::from_secs(120));
    println!(
        "watchdog: reset {:.0} s after the gateway hung",
        hung.elapsed().as_secs_f64()
    );
    assert_eq!(m.output().matches(BOOTED).count(), boots + 1);
    m.wait_smtp(Duration::from_secs(120));
}
