//! Token benchmark: RSA sign and decrypt operations per second, per backend, 1 and 2 threads.
//!
//! ```text
//! cargo run --release -p hsm --example bench [-- --seconds S --rounds N]
//! ```
//!
//! Four ways to do the same private-key operation, measured in the same run:
//! - `host`: aws-lc-rs in process with a key in memory (the reference every ratio is against);
//! - `software`: the software token (`SoftToken`, aws-lc-rs under the `Token` interface);
//! - `pkcs11`: SoftHSM2 through `Pkcs11Token` (session pool, handle cache, implicit rejection);
//! - `direct`: SoftHSM2 called straight through cryptoki, one session per thread, same
//!   mechanisms (CKM_RSA_PKCS over a DigestInfo, CKM_RSA_PKCS decryption): what the module
//!   itself can do. The target is `pkcs11` ≥ 90% of `direct`.
//!
//! "sign" is a PKCS#1 v1.5 SHA-256 signature of a digest; "decrypt" is the key-transport step
//! of S/MIME decryption (a 32-byte content key under PKCS#1 v1.5; `unwrap_key` with the key
//! placed on the host). Needs SoftHSM2 (`apt-get install softhsm2`); a throwaway token is made
//! in a temporary directory.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aws_lc_rs::rsa::{KeySize, Pkcs1PrivateDecryptingKey, PrivateDecryptingKey};
use aws_lc_rs::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, ObjectClass};
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;
use hsm::{
    AesOffload, Hash, KeyRef, KeyTransport, Pin, PinSource, Pkcs11Options, Pkcs11Token,
    SignAlgorithm, SoftToken, Token,
};

const MODULE: &str = hsm::softhsm::MODULE;
const LABEL: &str = "bench";
const USER_PIN: &str = "bench-pin";
const SIZES: [usize; 2] = [2048, 3072];
const THREADS: [usize; 2] = [1, 2];

#[derive(Clone, Copy, PartialEq)]
enum Op {
    Sign,
    Decrypt,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Sign => "sign",
            Op::Decrypt => "decrypt",
        }
    }
}

/// One measured row.
struct Row {
    op: Op,
    bits: usize,
    threads: usize,
    host: f64,
    software: f64,
    pkcs11: f64,
    direct: f64,
}

fn main() {
    let arg = |name: &str, default: f64| {
        std::env::args()
            .skip_while(|a| a != name)
            .nth(1)
            .map(|s| s.parse::<f64>().expect("a number"))
            .unwrap_or(default)
    };
    let window = Duration::from_secs_f64(arg("--seconds", 1.0));
    let rounds = arg("--rounds", 3.0) as usize;
    assert!(
        Path::new(MODULE).exists(),
        "SoftHSM2 is not installed ({MODULE}): apt-get install softhsm2"
    );
    let dir = tempfile::tempdir().unwrap();
    init_softhsm(dir.path());
    let digest = Hash::Sha256.digest(b"benchmark");
    let di = digest_info_sha256(&digest);
    let cek = [7u8; 32];
    println!(
        "smimegw token benchmark: {rounds} rounds of {:.1} s per measurement (median shown), {} CPUs",
        window.as_secs_f64(),
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );

    let soft = SoftToken::create(
        &dir.path().join("soft"),
        &Pin::new("bench-passphrase".into()),
    )
    .unwrap();
    let token = Pkcs11Token::open(Pkcs11Options {
        module: MODULE.into(),
        token: Some(LABEL.into()),
        serial: None,
        pin: Some(PinSource::Value(zeroize::Zeroizing::new(USER_PIN.into()))),
        max_sessions: 8,
        allow_raw_rsa: false,
    })
    .unwrap();
    // The direct handle: the module is already initialised (process-wide) and the user
    // logged in (per application) by `token`, so those two calls may say so.
    let p11 = Pkcs11::new(MODULE).unwrap();
    let _ = p11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK));
    let slot = p11
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|s| {
            p11.get_token_info(*s)
                .is_ok_and(|i| i.label().trim_end() == LABEL)
        })
        .unwrap();
    let login = p11.open_ro_session(slot).unwrap();
    let _ = login.login(UserType::User, Some(&AuthPin::new(USER_PIN.into())));

    let mut rows = Vec::new();
    for bits in SIZES {
        let size = if bits == 2048 {
            KeySize::Rsa2048
        } else {
            KeySize::Rsa3072
        };
        let signer = RsaKeyPair::generate(size).unwrap();
        let decrypter = PrivateDecryptingKey::generate(size).unwrap();
        let host_blob = {
            use aws_lc_rs::encoding::{AsDer, PublicKeyX509Der};
            let spki: PublicKeyX509Der<'_> = decrypter.public_key().as_der().unwrap();
            hsm::public::encrypt_key(spki.as_ref(), &KeyTransport::RsaPkcs1, &cek).unwrap()
        };
        let label = format!("rsa-{bits}");
        let key = KeyRef::label(&label);
        soft.generate_rsa(&label, bits).unwrap();
        token.generate_rsa(&label, bits).unwrap();
        let soft_blob = blob_for(&soft, &key, &cek);
        let token_blob = blob_for(&token, &key, &cek);
        let find = |class| {
            login
                .find_objects(&[
                    Attribute::Class(class),
                    Attribute::Label(label.as_bytes().to_vec()),
                ])
                .unwrap()[0]
        };
        let private = find(ObjectClass::PRIVATE_KEY);

        for op in [Op::Sign, Op::Decrypt] {
            for threads in THREADS {
                let host = || match op {
                    Op::Sign => rate(threads, window, || {
                        let d = aws_lc_rs::digest::Digest::import_less_safe(
                            &digest,
                            &aws_lc_rs::digest::SHA256,
                        )
                        .unwrap();
                        let mut sig = vec![0u8; signer.public_modulus_len()];
                        signer.sign_digest(&RSA_PKCS1_SHA256, &d, &mut sig).unwrap();
                    }),
                    Op::Decrypt => rate(threads, window, || {
                        let k = Pkcs1PrivateDecryptingKey::new(decrypter.clone()).unwrap();
                        let mut out = vec![0u8; bits / 8];
                        let got = k.decrypt(&host_blob, &mut out).unwrap();
                        assert_eq!(got, cek);
                    }),
                };
                let direct = || {
                    rate_with(
                        threads,
                        window,
                        || p11.open_ro_session(slot).unwrap(),
                        |s| match op {
                            Op::Sign => {
                                let sig = s.sign(&Mechanism::RsaPkcs, private, &di).unwrap();
                                assert_eq!(sig.len(), bits / 8);
                            }
                            Op::Decrypt => {
                                let k = s.decrypt(&Mechanism::RsaPkcs, private, &token_blob);
                                assert_eq!(k.unwrap(), cek);
                            }
                        },
                    )
                };
                // Interleave the backends round by round, so drift in the machine's speed
                // touches them all alike.
                let mut samples: [Vec<f64>; 4] = Default::default();
                for _ in 0..rounds.max(1) {
                    samples[0].push(host());
                    samples[1].push(token_rate(
                        &soft, &key, op, threads, window, &digest, &soft_blob,
                    ));
                    samples[2].push(token_rate(
                        &token,
                        &key,
                        op,
                        threads,
                        window,
                        &digest,
                        &token_blob,
                    ));
                    samples[3].push(direct());
                }
                let [host, software, pkcs11, direct] = samples.map(median);
                rows.push(Row {
                    op,
                    bits,
                    threads,
                    host,
                    software,
                    pkcs11,
                    direct,
                });
                eprint!(".");
            }
        }
    }
    eprintln!();
    drop(login);
    drop(token); // finalises the module
    print_table(&rows);
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn init_softhsm(dir: &Path) {
    let conf = hsm::softhsm::init_dev_token(dir, LABEL, USER_PIN).unwrap();
    // SAFETY: set before any thread starts and before the module is loaded.
    #[allow(unsafe_code)]
    unsafe {
        std::env::set_var("SOFTHSM2_CONF", &conf);
    }
}

/// A PKCS#1 v1.5 blob holding `cek`, for the token's key.
fn blob_for(token: &dyn Token, key: &KeyRef, cek: &[u8]) -> Vec<u8> {
    let spki = token.public_key(key).unwrap();
    hsm::public::encrypt_key(&spki, &KeyTransport::RsaPkcs1, cek).unwrap()
}

fn token_rate(
    token: &dyn Token,
    key: &KeyRef,
    op: Op,
    threads: usize,
    window: Duration,
    digest: &[u8],
    blob: &[u8],
) -> f64 {
    rate(threads, window, || match op {
        Op::Sign => {
            token
                .sign(key, SignAlgorithm::RsaPkcs1(Hash::Sha256), digest)
                .unwrap();
        }
        Op::Decrypt => {
            let k = token
                .unwrap_key(key, &KeyTransport::RsaPkcs1, blob, 32, AesOffload::Host)
                .unwrap();
            assert_eq!(k.len(), 32);
        }
    })
}

/// Operations per second of `op` run by `threads` threads for `window`.
fn rate(threads: usize, window: Duration, op: impl Fn() + Sync) -> f64 {
    rate_with(threads, window, || (), |_| op())
}

/// Like [`rate`], with per-thread state made by `setup` (a session, say).
fn rate_with<S>(
    threads: usize,
    window: Duration,
    setup: impl Fn() -> S + Sync,
    op: impl Fn(&mut S) + Sync,
) -> f64 {
    let count = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let start = std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                let mut state = setup();
                op(&mut state); // warm-up: key load, handle cache, session
                while !stop.load(Ordering::Relaxed) {
                    op(&mut state);
                    count.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        // Count from a little after start so that warm-ups are not in the window.
        std::thread::sleep(Duration::from_millis(100));
        let begin = (Instant::now(), count.load(Ordering::Relaxed));
        std::thread::sleep(window);
        let end = (Instant::now(), count.load(Ordering::Relaxed));
        stop.store(true, Ordering::Relaxed);
        (begin, end)
    });
    let ((t0, c0), (t1, c1)) = start;
    (c1 - c0) as f64 / (t1 - t0).as_secs_f64()
}

fn digest_info_sha256(digest: &[u8]) -> Vec<u8> {
    let mut di = vec![
        0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01,
        0x05, 0x00, 0x04, 0x20,
    ];
    di.extend_from_slice(digest);
    di
}

fn print_table(rows: &[Row]) {
    println!();
    println!(
        "{:<8} {:>5} {:>7} | {:>9} | {:>9} {:>6} | {:>9} {:>6} | {:>9} {:>6} | {:>13}",
        "op",
        "bits",
        "threads",
        "host/s",
        "software",
        "×host",
        "pkcs11",
        "×host",
        "direct",
        "×host",
        "pkcs11÷direct"
    );
    let mut worst: f64 = f64::INFINITY;
    for r in rows {
        let vs_direct = r.pkcs11 / r.direct;
        worst = worst.min(vs_direct);
        println!(
            "{:<8} {:>5} {:>7} | {:>9.0} | {:>9.0} {:>6.2} | {:>9.0} {:>6.2} | {:>9.0} {:>6.2} | {:>12.0}%",
            r.op.name(),
            r.bits,
            r.threads,
            r.host,
            r.software,
            r.software / r.host,
            r.pkcs11,
            r.pkcs11 / r.host,
            r.direct,
            r.direct / r.host,
            vs_direct * 100.0
        );
    }
    println!();
    println!(
        "PKCS#11 path vs SoftHSM2 called directly: worst {:.0}% (target ≥ 90%): {}",
        worst * 100.0,
        if worst >= 0.90 { "met" } else { "NOT met" }
    );
}
