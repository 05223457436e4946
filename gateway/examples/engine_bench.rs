//! S/MIME engine benchmark.
//!
//! ```text
//! cargo run --release -p smimegw --example engine_bench [-- --seconds S --rounds N --mib M]
//! ```
//!
//! Two questions, each answered as a ratio to a reference measured in the same run:
//! - Small messages: how many 4 KB messages a second the engine signs (detached, SHA-256,
//!   RSA-2048 PKCS#1 v1.5) against how many raw signatures the same token makes. The engine
//!   should add almost nothing to the RSA cost (goal ≥ 0.9), for the software token and for
//!   SoftHSM2 through PKCS#11.
//! - A big message (100 MiB, a multipart with a base64 attachment): sign, verify, encrypt and
//!   decrypt throughput against in-process SHA-256 (signing is hashing) and AES (encryption
//!   is AES), and the peak resident memory of each (goal ≤ 32 MB). Each big operation runs in
//!   a child process of its own (this program again), so its peak memory is its own; files
//!   are read and written in a temporary directory, as the relay's spool would be.
//!
//! Needs SoftHSM2 (`apt-get install softhsm2`); a throwaway token is made in the temporary
//! directory. Keys and certificates are Alice's from ../shared/corpora/thunderbird-smime.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use hsm::{
    AesMode, AesOffload, CipherDirection, ContentKey, Hash, KeyRef, Pin, PinSource, Pkcs11Options,
    Pkcs11Token, SignAlgorithm, SoftToken, Token,
};
use smimegw::smime::encrypt::Cipher;
use smimegw::smime::sign::{Format, Signer};
use smimegw::smime::{self, Recipient};

const MODULE: &str = hsm::softhsm::MODULE;
const LABEL: &str = "alice";
const USER_PIN: &str = "bench-pin";
const MIB: f64 = 1024.0 * 1024.0;

fn corpus(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/corpora/thunderbird-smime")
        .join(path)
}

fn arg(name: &str, default: f64) -> f64 {
    std::env::args()
        .skip_while(|a| a != name)
        .nth(1)
        .map(|s| s.parse::<f64>().expect("a number"))
        .unwrap_or(default)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--child") {
        child(&args[2], Path::new(&args[3]));
        return;
    }
    let window = Duration::from_secs_f64(arg("--seconds", 1.0));
    let rounds = arg("--rounds", 3.0) as usize;
    let mib = arg("--mib", 100.0) as usize;
    assert!(
        Path::new(MODULE).exists(),
        "SoftHSM2 is not installed ({MODULE}): apt-get install softhsm2"
    );
    let dir = tempfile::tempdir().unwrap();
    let p12 = std::fs::read(corpus("smime/Alice.p12")).unwrap();
    let bundle = hsm::read_pkcs12(&p12, &Pin::new("nss".into())).unwrap();
    let cert = bundle.chain[0].clone();
    std::fs::write(dir.path().join("alice.der"), &cert).unwrap();
    let soft = SoftToken::create(
        &dir.path().join("soft"),
        &Pin::new("bench-passphrase".into()),
    )
    .unwrap();
    soft.import(LABEL, &bundle).unwrap();
    init_softhsm(dir.path());
    let p11 = Pkcs11Token::open(Pkcs11Options {
        module: MODULE.into(),
        token: Some("bench".into()),
        serial: None,
        pin: Some(PinSource::Value(zeroize::Zeroizing::new(USER_PIN.into()))),
        max_sessions: 4,
        allow_raw_rsa: false,
    })
    .unwrap();
    p11.import(LABEL, &bundle).unwrap();

    println!(
        "smimegw engine benchmark: {rounds} rounds of {:.1} s per measurement (median shown), {} CPUs",
        window.as_secs_f64(),
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!();
    println!("4 KB messages, detached SHA-256 RSA-2048 signatures, one thread");
    println!(
        "{:<12} {:>14} {:>16} {:>8}",
        "token", "raw signs/s", "messages/s", "ratio"
    );
    let message = small_message();
    let tokens: [(&str, &dyn Token); 2] = [("software", &soft), ("softhsm2", &p11)];
    for (name, token) in tokens {
        let key = KeyRef::label(LABEL);
        let digest = Hash::Sha256.digest(b"benchmark");
        let signer = Signer {
            cert: &cert,
            chain: &[],
            token,
            key: key.clone(),
            hash: Hash::Sha256,
            pss: false,
        };
        let prepared = signer.prepare().unwrap();
        let (mut raw, mut engine) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            raw.push(rate(window, || {
                token
                    .sign(&key, SignAlgorithm::RsaPkcs1(Hash::Sha256), &digest)
                    .unwrap();
            }));
            engine.push(rate(window, || {
                prepared
                    .sign_message(&message, Format::Detached, 1_780_272_000)
                    .unwrap();
            }));
        }
        let (raw, engine) = (median(raw), median(engine));
        println!(
            "{name:<12} {raw:>14.0} {engine:>16.0} {:>8.2}",
            engine / raw
        );
    }

    println!();
    let big = dir.path().join("big.eml");
    write_big_message(&big, mib);
    let size = std::fs::metadata(&big).unwrap().len() as f64 / MIB;
    println!(
        "a {size:.0} MiB message (multipart, base64 attachment), files on disk, one process each"
    );
    let (sha, gcm, cbc) = (
        median((0..rounds).map(|_| sha256_speed()).collect()),
        median((0..rounds).map(|_| aes_speed(true)).collect()),
        median((0..rounds).map(|_| aes_speed(false)).collect()),
    );
    println!(
        "references in process: SHA-256 {sha:.0} MiB/s, AES-256-GCM {gcm:.0} MiB/s, AES-256-CBC {cbc:.0} MiB/s"
    );
    println!(
        "{:<22} {:>10} {:>12} {:>8} {:>10}",
        "operation", "MiB/s", "reference", "ratio", "peak RSS"
    );
    let ops: [(&str, &str, f64); 8] = [
        ("sign", "SHA-256", sha),
        ("verify", "SHA-256", sha),
        ("sign-opaque", "SHA-256", sha),
        ("verify-opaque", "SHA-256", sha),
        ("encrypt-gcm", "AES-256-GCM", gcm),
        ("decrypt-gcm", "AES-256-GCM", gcm),
        ("encrypt-cbc", "AES-256-CBC", cbc),
        ("decrypt-cbc", "AES-256-CBC", cbc),
    ];
    let me = std::env::current_exe().unwrap();
    let mut worst_rss = 0u64;
    for (op, reference, speed) in ops {
        let mut secs = Vec::new();
        let mut rss = 0;
        for _ in 0..rounds {
            let out = Command::new(&me)
                .args(["--child", op])
                .arg(dir.path())
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{op}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let text = String::from_utf8(out.stdout).unwrap();
            let mut it = text.split_whitespace();
            secs.push(it.next().unwrap().parse::<f64>().unwrap());
            rss = rss.max(it.next().unwrap().parse::<u64>().unwrap());
        }
        let mibs = size / median(secs);
        worst_rss = worst_rss.max(rss);
        println!(
            "{op:<22} {mibs:>10.0} {reference:>12} {:>8.2} {:>7.1} MB",
            mibs / speed,
            rss as f64 / 1000.0
        );
    }
    println!();
    println!(
        "peak RSS over all big operations: {:.1} MB (goal ≤ 32 MB)",
        worst_rss as f64 / 1000.0
    );
}

/// One big operation, timed, in this process; prints seconds and peak RSS (kB).
fn child(op: &str, dir: &Path) {
    let soft = SoftToken::open(&dir.join("soft"), &Pin::new("bench-passphrase".into())).unwrap();
    let cert = std::fs::read(dir.join("alice.der")).unwrap();
    let open = |name: &str| File::open(dir.join(name)).unwrap();
    let create =
        |name: &str| BufWriter::with_capacity(1 << 16, File::create(dir.join(name)).unwrap());
    let signer = Signer {
        cert: &cert,
        chain: &[],
        token: &soft,
        key: KeyRef::label(LABEL),
        hash: Hash::Sha256,
        pss: false,
    };
    let me = Recipient {
        cert: &cert,
        token: &soft,
        key: KeyRef::label(LABEL),
        offload: AesOffload::Host,
    };
    // Peak RSS counts from here: the software token's first key use runs a memory-hard KDF
    // over its passphrase (once per process, as the relay opens its token once), which is not
    // the engine's memory. (Writing 5 to clear_refs resets VmHWM.)
    soft.sign(
        &KeyRef::label(LABEL),
        SignAlgorithm::RsaPkcs1(Hash::Sha256),
        &[0; 32],
    )
    .unwrap();
    std::fs::write("/proc/self/clear_refs", "5").unwrap();
    let start = Instant::now();
    match op {
        "sign" | "sign-opaque" => {
            let format = if op == "sign" {
                Format::Detached
            } else {
                Format::Opaque
            };
            let mut w = create(&format!("{op}.eml"));
            smime::sign::sign_stream(&mut open("big.eml"), &signer, format, 1_780_272_000, &mut w)
                .unwrap();
            w.flush().unwrap();
        }
        "verify" | "verify-opaque" => {
            let input = if op == "verify" {
                "sign.eml"
            } else {
                "sign-opaque.eml"
            };
            let mut w = create(&format!("{op}.out"));
            let v = smime::verify_stream(&mut open(input), &mut w).unwrap();
            w.flush().unwrap();
            assert!(v.signers.iter().all(|s| s.valid));
        }
        "encrypt-gcm" | "encrypt-cbc" => {
            let cipher = if op == "encrypt-gcm" {
                Cipher::Aes256Gcm
            } else {
                Cipher::Aes256Cbc
            };
            let mut w = create(&format!("{op}.eml"));
            smime::encrypt::encrypt_stream(
                &mut open("big.eml"),
                std::slice::from_ref(&cert),
                cipher,
                false,
                &mut w,
            )
            .unwrap();
            w.flush().unwrap();
        }
        "decrypt-gcm" | "decrypt-cbc" => {
            let input = op.replace("decrypt", "encrypt") + ".eml";
            let mut w = create(&format!("{op}.out"));
            smime::decrypt_stream(&mut open(&input), &me, &mut w).unwrap();
            w.flush().unwrap();
        }
        other => panic!("unknown operation {other}"),
    }
    let secs = start.elapsed().as_secs_f64();
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let hwm = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .unwrap_or("0");
    println!("{secs} {hwm}");
}

fn small_message() -> Vec<u8> {
    let mut m = b"From: Alice <alice@example.com>\r\nTo: bob@example.com\r\nSubject: benchmark\r\n\
                  Date: Mon, 1 Jun 2026 00:00:00 +0000\r\nMessage-ID: <bench@example.com>\r\n\
                  Content-Type: text/plain; charset=us-ascii\r\n\r\n"
        .to_vec();
    while m.len() < 4096 {
        m.extend_from_slice(b"The quick brown fox jumps over the lazy dog, again and again.\r\n");
    }
    m
}

fn write_big_message(path: &Path, mib: usize) {
    let mut f = BufWriter::new(File::create(path).unwrap());
    f.write_all(
        b"From: Alice <alice@example.com>\r\nTo: bob@example.com\r\nSubject: big\r\n\
          MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n\
          --b\r\nContent-Type: text/plain\r\n\r\nAttached.\r\n\
          --b\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n",
    )
    .unwrap();
    let block: Vec<u8> = (0..57 * 1024).map(|i| (i * 131 % 251) as u8).collect();
    let text = smime::mime::base64_encode(&block);
    let mut n = 0;
    while n < mib << 20 {
        f.write_all(&text).unwrap();
        n += text.len();
    }
    f.write_all(b"\r\n--b--\r\n").unwrap();
    f.flush().unwrap();
}

/// Operations per second of `op` for `window`.
fn rate(window: Duration, mut op: impl FnMut()) -> f64 {
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < window {
        op();
        n += 1;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// SHA-256 over 256 MiB in 64 KiB pieces, MiB/s.
fn sha256_speed() -> f64 {
    let block = vec![0x5au8; 1 << 16];
    let start = Instant::now();
    let mut h = Hash::Sha256.hasher();
    for _ in 0..4096 {
        h.update(&block);
    }
    std::hint::black_box(h.finish());
    256.0 / start.elapsed().as_secs_f64()
}

/// AES-256 (GCM or CBC) encryption over 256 MiB in 64 KiB pieces on the host, MiB/s.
fn aes_speed(gcm: bool) -> f64 {
    let key = ContentKey::host(&[7u8; 32]).unwrap();
    let mode = if gcm {
        AesMode::Gcm {
            nonce: vec![1; 12],
            aad: Vec::new(),
            tag_len: 16,
        }
    } else {
        AesMode::Cbc { iv: [1; 16] }
    };
    let mut stream = key.cipher(CipherDirection::Encrypt, &mode).unwrap();
    let block = vec![0x5au8; 1 << 16];
    let mut out = Vec::with_capacity(block.len() + 32);
    let start = Instant::now();
    for _ in 0..4096 {
        out.clear();
        stream.update(&block, &mut out).unwrap();
        std::hint::black_box(&out);
    }
    out.clear();
    stream.finish(None, &mut out).unwrap();
    256.0 / start.elapsed().as_secs_f64()
}

fn init_softhsm(dir: &Path) {
    let conf = hsm::softhsm::init_dev_token(dir, "bench", USER_PIN).unwrap();
    // SAFETY: set before any thread starts and before the module is loaded.
    #[allow(unsafe_code)]
    unsafe {
        std::env::set_var("SOFTHSM2_CONF", &conf);
    }
}
