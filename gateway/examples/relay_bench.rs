//! Relay benchmark: messages a second through `smimegw serve`, signed with SoftHSM2.
//!
//! ```text
//! cargo run --release -p smimegw --example relay_bench [-- --messages N --clients C --size B --idle S]
//! ```
//!
//! In one run, on this machine:
//! - **raw**: the token's own rate: RSA-2048 PKCS#1 v1.5 signatures through PKCS#11 from as
//!   many threads as there are CPUs (what the token can give the relay at most);
//! - **baseline**: a signing relay built the usual way, a filter that runs `openssl cms -sign`
//!   as a process per message (as a Postfix pipe filter does), `C` at a time, key in a file;
//! - **relay**: `C` SMTP clients (default 16) each sending 4 KB messages over one session to
//!   the gateway, which spools them (fsync before 250), signs each (SoftHSM2, one sender per
//!   client) and delivers it to a local SMTP sink. Rate = messages / (first MAIL to last
//!   delivery); latency = from the 250 to the sink's receipt (p50, p99); the gateway's peak
//!   RSS.
//! - **idle**: `S` (default 1,000) concurrent idle SMTP sessions; the gateway's RSS with them.
//!
//! Goals (issue 4): relay ≥ 0.8 × raw and ≥ 5 × baseline.
//!
//! The gateway runs in a child process (this program again, with `--gateway CONFIG`), so its
//! memory is its own; the clients and the sink are threads of this process.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hsm::{Hash, KeyRef, PinSource, Pkcs11Options, Pkcs11Token, Pkcs11Uri, SignAlgorithm, Token};

const MODULE: &str = hsm::softhsm::MODULE;
const LABEL: &str = "bench";
const PIN: &str = "bench-pin";

fn arg(name: &str, default: usize) -> usize {
    std::env::args()
        .skip_while(|a| a != name)
        .nth(1)
        .map(|s| s.parse().expect("a number"))
        .unwrap_or(default)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("--gateway") => return gateway(Path::new(&args[2])),
        Some("--raw-sign") => return raw_sign(args[2].parse().unwrap(), args[3].parse().unwrap()),
        _ => {}
    }
    let messages = arg("--messages", 4000);
    let clients = arg("--clients", 16);
    let size = arg("--size", 4096);
    let idle = arg("--idle", 1000);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert!(
        Path::new(MODULE).exists(),
        "SoftHSM2 is not installed ({MODULE}): apt-get install softhsm2"
    );
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let conf = hsm::softhsm::init_dev_token(&d.join("softhsm"), LABEL, PIN).unwrap();
    println!(
        "smimegw relay benchmark: {messages} messages of {size} bytes from {clients} clients, {cpus} CPUs"
    );

    // raw: the token's sign rate.
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--raw-sign", "3", &cpus.to_string()])
        .env("SOFTHSM2_CONF", &conf)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let raw: f64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();

    // baseline: openssl cms -sign per message.
    let baseline = baseline(d, clients, size, Duration::from_secs(5));

    // The sink and the gateway.
    let sink = Sink::start();
    let port = free_port();
    let config = d.join("smimegw.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"data\"\n\
             [server]\n\
             hostname = \"gw.bench\"\n\
             listen = [\"127.0.0.1:{port}\"]\n\
             internal_domains = [\"example.com\"]\n\
             max_sessions = {}\n\
             max_sessions_per_client = {}\n\
             [token]\n\
             uri = \"pkcs11:token={LABEL}?module-path={MODULE}\"\n\
             pin = \"env:BENCH_PIN\"\n\
             [delivery.outbound]\n\
             next_hop = \"127.0.0.1:{}\"\n\
             tls = \"off\"\n",
            idle + 100,
            // Every client of the benchmark is 127.0.0.1.
            idle + 100,
            sink.port
        ),
    )
    .unwrap();
    let mut gw = Command::new(std::env::current_exe().unwrap())
        .arg("--gateway")
        .arg(&config)
        .env("SOFTHSM2_CONF", &conf)
        .env("BENCH_PIN", PIN)
        .env(
            "RUST_LOG",
            std::env::var("BENCH_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the gateway did not start"
        );
        assert!(gw.try_wait().unwrap().is_none(), "the gateway exited");
        std::thread::sleep(Duration::from_millis(50));
    }

    // Warm-up: each sender's certificate is issued on first use (key generation in the token).
    let senders: Vec<String> = (0..clients)
        .map(|i| format!("user{i}@example.com"))
        .collect();
    run_clients(port, &senders, 1, size, 1_000_000);
    sink.wait_for(clients, Duration::from_secs(120));
    sink.clear();

    // relay: the measurement.
    let per_client = messages.div_ceil(clients);
    let total = per_client * clients;
    let cpu0 = cpu_seconds(gw.id());
    let t0 = Instant::now();
    let accepted = run_clients(port, &senders, per_client, size, 0);
    let accept_time = t0.elapsed();
    sink.wait_for(total, Duration::from_secs(600));
    let elapsed = t0.elapsed();
    let cpu = cpu_seconds(gw.id()) - cpu0;
    let relay = total as f64 / elapsed.as_secs_f64();
    let arrived = sink.arrivals();
    let mut latency: Vec<f64> = accepted
        .iter()
        .filter_map(|(seq, at)| {
            arrived
                .get(seq)
                .map(|t| t.duration_since(*at).as_secs_f64())
        })
        .collect();
    assert_eq!(latency.len(), total, "every message arrives once");
    latency.sort_by(f64::total_cmp);
    let pct = |p: f64| latency[((latency.len() as f64 * p) as usize).min(latency.len() - 1)];
    let signed = sink.signed.load(Ordering::Relaxed);
    assert_eq!(signed as usize, total, "every message arrives signed");
    let peak_rss = proc_kib(gw.id(), "VmHWM");

    // idle: sessions that only hold the line.
    let rss_before = proc_kib(gw.id(), "VmRSS");
    let mut held = Vec::with_capacity(idle);
    for _ in 0..idle {
        let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let mut banner = [0u8; 64];
        let n = c.read(&mut banner).unwrap();
        assert!(
            banner[..n].starts_with(b"220"),
            "{:?}",
            String::from_utf8_lossy(&banner[..n])
        );
        held.push(c);
    }
    std::thread::sleep(Duration::from_millis(500));
    let rss_idle = proc_kib(gw.id(), "VmRSS");
    drop(held);
    stop(&mut gw);

    println!();
    println!("{:<44} {:>12}", "measure", "value");
    println!(
        "{:<44} {:>12.0}",
        format!("raw: token RSA-2048 signatures/s ({cpus} threads)"),
        raw
    );
    println!(
        "{:<44} {:>12.0}",
        format!("baseline: openssl cms -sign processes/s ({clients} at a time)"),
        baseline
    );
    println!(
        "{:<44} {:>12.0}",
        "relay: messages/s, 250 to delivered", relay
    );
    println!(
        "{:<44} {:>12.0}",
        "  accepted/s (SMTP in, spooled)",
        total as f64 / accept_time.as_secs_f64()
    );
    println!(
        "{:<44} {:>9.1} ms",
        "  latency 250 -> delivery p50",
        pct(0.50) * 1e3
    );
    println!(
        "{:<44} {:>9.1} ms",
        "  latency 250 -> delivery p99",
        pct(0.99) * 1e3
    );
    println!(
        "{:<44} {:>9.1} MB",
        "  gateway peak RSS",
        peak_rss as f64 / 1024.0
    );
    println!(
        "{:<44} {:>9.2} ms",
        "  gateway CPU per message",
        cpu / total as f64 * 1e3
    );
    println!(
        "{:<44} {:>10.0} %",
        "  gateway CPU use (of one CPU)",
        cpu / elapsed.as_secs_f64() * 100.0
    );
    println!(
        "{:<44} {:>9.1} MB",
        format!("idle: gateway RSS with {idle} sessions"),
        rss_idle as f64 / 1024.0
    );
    println!(
        "{:<44} {:>9.1} KB",
        "  per idle session",
        (rss_idle.saturating_sub(rss_before)) as f64 / idle as f64
    );
    println!();
    println!("relay / raw      = {:.2}  (goal >= 0.8)", relay / raw);
    println!("relay / baseline = {:.1}  (goal >= 5)", relay / baseline);
}

/// `--gateway CONFIG`: the relay in this process until stdin closes.
fn gateway(config: &Path) {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let config = smimegw::config::Config::load(config, None).unwrap();
    let smimegw::config::TokenConfig::Pkcs11 { uri, .. } = &config.token else {
        panic!("the benchmark uses SoftHSM2");
    };
    let mut opts = Pkcs11Options::from_uri(&Pkcs11Uri::parse(uri).unwrap()).unwrap();
    opts.pin = Some(PinSource::Env("BENCH_PIN".into()));
    let token: Arc<dyn Token> = Arc::new(Pkcs11Token::open(opts).unwrap());
    let relay = Arc::new(smimegw::relay::Relay::open(config, token).unwrap());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(relay.run(async {
        let _ = tokio::task::spawn_blocking(|| {
            let mut sink = Vec::new();
            let _ = std::io::stdin().read_to_end(&mut sink);
        })
        .await;
    }))
    .unwrap();
}

fn stop(gw: &mut Child) {
    drop(gw.stdin.take());
    let start = Instant::now();
    while gw.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(10) {
            let _ = gw.kill();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `--raw-sign SECONDS THREADS`: prints signatures a second.
fn raw_sign(seconds: u64, threads: usize) {
    let mut opts = Pkcs11Options::from_uri(
        &Pkcs11Uri::parse(&format!("pkcs11:token={LABEL}?module-path={MODULE}")).unwrap(),
    )
    .unwrap();
    opts.pin = Some(PinSource::Value(zeroize::Zeroizing::new(PIN.into())));
    let token = Arc::new(Pkcs11Token::open(opts).unwrap());
    token.generate_rsa("raw-bench", 2048).unwrap();
    let digest = Hash::Sha256.digest(b"benchmark");
    let count = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + Duration::from_secs(seconds);
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (token, count, digest) = (token.clone(), count.clone(), digest.clone());
            std::thread::spawn(move || {
                let key = KeyRef::label("raw-bench");
                while Instant::now() < until {
                    token
                        .sign(&key, SignAlgorithm::RsaPkcs1(Hash::Sha256), &digest)
                        .unwrap();
                    count.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let t0 = Instant::now();
    for w in workers {
        w.join().unwrap();
    }
    let _ = token.delete("raw-bench");
    println!(
        "{}",
        count.load(Ordering::Relaxed) as f64 / t0.elapsed().as_secs_f64()
    );
}

fn message(from: &str, seq: u64, size: usize) -> Vec<u8> {
    let mut m = format!(
        "From: <{from}>\r\nTo: <bob@example.net>\r\nSubject: benchmark {seq}\r\n\
         Message-ID: <{seq}@bench>\r\nX-Bench-Seq: {seq}\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=us-ascii\r\n\r\n"
    )
    .into_bytes();
    let line = b"The quick brown fox jumps over the lazy dog; pack my box with five dozen.\r\n";
    while m.len() + line.len() <= size {
        m.extend_from_slice(line);
    }
    m
}

fn baseline(dir: &Path, workers: usize, size: usize, window: Duration) -> f64 {
    let status = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=user0/emailAddress=user0@example.com",
            "-keyout",
            "base.key",
            "-out",
            "base.pem",
        ])
        .current_dir(dir)
        .stderr(Stdio::null())
        .status()
        .expect("openssl runs");
    assert!(status.success());
    std::fs::write(dir.join("base.eml"), message("user0@example.com", 0, size)).unwrap();
    let count = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let until = t0 + window;
    let threads: Vec<_> = (0..workers)
        .map(|_| {
            let (count, dir) = (count.clone(), dir.to_path_buf());
            std::thread::spawn(move || {
                while Instant::now() < until {
                    // As a pipe filter: the message on stdin, the signed one on stdout.
                    let mut child = Command::new("openssl")
                        .args(["cms", "-sign", "-signer", "base.pem", "-inkey", "base.key"])
                        .current_dir(&dir)
                        .stdin(Stdio::piped())
                        .stdout(Stdio::piped())
                        .spawn()
                        .unwrap();
                    let input = std::fs::read(dir.join("base.eml")).unwrap();
                    child.stdin.take().unwrap().write_all(&input).unwrap();
                    let out = child.wait_with_output().unwrap();
                    assert!(out.status.success() && !out.stdout.is_empty());
                    count.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    count.load(Ordering::Relaxed) as f64 / t0.elapsed().as_secs_f64()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// User + system CPU time of a process so far.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // After the command name in parentheses: state is field 3; utime 14, stime 15.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    ticks / 100.0
}

fn proc_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Reads one SMTP reply; returns its code.
fn reply(r: &mut BufReader<TcpStream>) -> u16 {
    let mut line = String::new();
    loop {
        line.clear();
        r.read_line(&mut line).unwrap();
        assert!(line.len() >= 4, "connection closed: {line:?}");
        if line.as_bytes()[3] == b' ' {
            return line[..3].parse().unwrap();
        }
    }
}

/// Each sender sends `n` messages over one session; returns (sequence, time of the 250).
fn run_clients(
    port: u16,
    senders: &[String],
    n: usize,
    size: usize,
    seq0: u64,
) -> Vec<(u64, Instant)> {
    let accepted = Arc::new(Mutex::new(Vec::new()));
    let threads: Vec<_> = senders
        .iter()
        .enumerate()
        .map(|(i, from)| {
            let (from, accepted) = (from.clone(), accepted.clone());
            std::thread::spawn(move || {
                let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
                stream.set_nodelay(true).unwrap();
                let mut w = stream.try_clone().unwrap();
                let mut r = BufReader::new(stream);
                assert_eq!(reply(&mut r), 220);
                w.write_all(b"EHLO bench\r\n").unwrap();
                assert_eq!(reply(&mut r), 250);
                let mut mine = Vec::with_capacity(n);
                for k in 0..n {
                    let seq = seq0 + (i * n + k) as u64;
                    // PIPELINING: the envelope and DATA in one write.
                    w.write_all(
                        format!("MAIL FROM:<{from}>\r\nRCPT TO:<bob@example.net>\r\nDATA\r\n")
                            .as_bytes(),
                    )
                    .unwrap();
                    assert_eq!(reply(&mut r), 250);
                    assert_eq!(reply(&mut r), 250, "RCPT for {from}");
                    assert_eq!(reply(&mut r), 354);
                    let mut data = message(&from, seq, size);
                    data.extend_from_slice(b".\r\n");
                    w.write_all(&data).unwrap();
                    assert_eq!(reply(&mut r), 250);
                    mine.push((seq, Instant::now()));
                }
                w.write_all(b"QUIT\r\n").unwrap();
                let _ = reply(&mut r);
                accepted.lock().unwrap().extend(mine);
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    Arc::try_unwrap(accepted).unwrap().into_inner().unwrap()
}

/// A local SMTP sink: records when each message (by X-Bench-Seq) arrived and whether it was
/// signed.
struct Sink {
    port: u16,
    arrived: Arc<Mutex<HashMap<u64, Instant>>>,
    signed: Arc<AtomicU64>,
}

impl Sink {
    fn start() -> Sink {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let arrived = Arc::new(Mutex::new(HashMap::new()));
        let signed = Arc::new(AtomicU64::new(0));
        let (a, s) = (arrived.clone(), signed.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let (a, s) = (a.clone(), s.clone());
                std::thread::spawn(move || sink_session(conn, &a, &s));
            }
        });
        Sink {
            port,
            arrived,
            signed,
        }
    }

    fn wait_for(&self, n: usize, limit: Duration) {
        let start = Instant::now();
        while self.arrived.lock().unwrap().len() < n {
            assert!(
                start.elapsed() < limit,
                "only {} of {n} messages arrived",
                self.arrived.lock().unwrap().len()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn clear(&self) {
        self.arrived.lock().unwrap().clear();
        self.signed.store(0, Ordering::Relaxed);
    }

    fn arrivals(&self) -> HashMap<u64, Instant> {
        self.arrived.lock().unwrap().clone()
    }
}

fn sink_session(conn: TcpStream, arrived: &Mutex<HashMap<u64, Instant>>, signed: &AtomicU64) {
    // Pipelined commands get one small reply each: without this, Nagle holds the second
    // until the client's delayed ACK (40 ms).
    conn.set_nodelay(true).unwrap();
    let mut w = conn.try_clone().unwrap();
    let mut r = BufReader::new(conn);
    let _ = w.write_all(b"220 sink ESMTP\r\n");
    let mut line = Vec::new();
    loop {
        line.clear();
        if r.read_until(b'\n', &mut line).unwrap_or(0) == 0 {
            return;
        }
        let verb = line
            .get(..4)
            .map(|v| v.to_ascii_uppercase())
            .unwrap_or_default();
        let answer: &[u8] = match &verb[..] {
            b"EHLO" => b"250-sink\r\n250-PIPELINING\r\n250 8BITMIME\r\n",
            b"DATA" => {
                let _ = w.write_all(b"354 go on\r\n");
                let mut seq = None;
                let mut is_signed = false;
                loop {
                    line.clear();
                    if r.read_until(b'\n', &mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    if line == b".\r\n" {
                        break;
                    }
                    if seq.is_none()
                        && let Some(v) = line.strip_prefix(b"X-Bench-Seq: ")
                    {
                        seq = std::str::from_utf8(v)
                            .ok()
                            .and_then(|s| s.trim().parse().ok());
                    }
                    if line.starts_with(b"Content-Type: multipart/signed") {
                        is_signed = true;
                    }
                }
                if let Some(seq) = seq {
                    arrived.lock().unwrap().insert(seq, Instant::now());
                    if is_signed {
                        signed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                b"250 2.0.0 Ok\r\n"
            }
            b"QUIT" => {
                let _ = w.write_all(b"221 bye\r\n");
                return;
            }
            _ => b"250 2.0.0 Ok\r\n",
        };
        if w.write_all(answer).is_err() {
            return;
        }
    }
}
