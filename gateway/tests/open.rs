//! Opening received messages layer by layer (what the relay does inbound) over every message
//! of the Thunderbird corpus. The expected layers are data
//! (gateway/tests/data/thunderbird-layers.tsv); that file is itself checked against the
//! corpus' own tables: the OpenSSL oracle for the outer layer and what it wraps, and the
//! Thunderbird test's text checks for the content reached.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::corpus;
use hsm::{AesOffload, KeyRef, Pin, SoftToken, Token};
use smimegw::smime::open::{Layer, open_message};
use smimegw::smime::{Recipient, SmimeError};

const TEXT_ALICE_BOB: &str = "This is a test message from Alice to Bob.";
const TEXT_FRAN: &str = "This is a test message to Fran.";

/// Our description of a layer: `enc(AES-128-CBC)`, `dsig(ok alice)`, `sig(bad alice)`.
fn describe(layer: &Layer) -> String {
    match layer {
        Layer::Encrypted(i) => format!("enc({})", i.cipher),
        Layer::Signed {
            detached, signers, ..
        } => {
            let who: Vec<String> = signers
                .iter()
                .map(|s| {
                    let name = s
                        .cert
                        .as_deref()
                        .and_then(|c| {
                            use der::Decode;
                            let c = x509_cert::Certificate::from_der(c).ok()?;
                            smimegw::smime::trust::addresses(&c).into_iter().next()
                        })
                        .map(|a| a.split('@').next().unwrap_or("").to_string())
                        .unwrap_or_else(|| "?".into());
                    format!("{} {name}", if s.valid { "ok" } else { "bad" })
                })
                .collect();
            format!(
                "{}({})",
                if *detached { "dsig" } else { "sig" },
                who.join(",")
            )
        }
    }
}

fn stop_reason(e: &SmimeError) -> &'static str {
    match e {
        SmimeError::NotRecipient(_) => "stop(not-for-us)",
        SmimeError::Decrypt => "stop(decrypt-failed)",
        _ => "stop(other)",
    }
}

struct Keys {
    token: SoftToken,
    certs: Vec<(String, Vec<u8>)>,
    _dir: tempfile::TempDir,
}

fn keys() -> Keys {
    let dir = tempfile::tempdir().unwrap();
    let token =
        SoftToken::create(&dir.path().join("t"), &Pin::new("test-passphrase".into())).unwrap();
    let mut certs = Vec::new();
    for (label, p12) in [
        ("bob", "smime/Bob.p12"),
        ("fran", "smime-interop/Fran.p12"),
        ("fran-ec", "smime-interop/Fran-ec.p12"),
    ] {
        let bytes = std::fs::read(corpus(&format!("thunderbird-smime/{p12}"))).unwrap();
        let bundle = hsm::read_pkcs12(&bytes, &Pin::new("nss".into())).unwrap();
        certs.push((label.to_string(), bundle.chain[0].clone()));
        token.import(label, &bundle).unwrap();
    }
    Keys {
        token,
        certs,
        _dir: dir,
    }
}

/// Every message file in the corpus.
fn messages() -> Vec<String> {
    let mut out = Vec::new();
    for sub in [
        "smime",
        "smime-manual",
        "smime-interop",
        "browser-smime-data",
    ] {
        let dir = corpus(&format!("thunderbird-smime/{sub}"));
        for e in std::fs::read_dir(&dir).unwrap() {
            let name = e.unwrap().file_name().into_string().unwrap();
            if name.ends_with(".eml") || name.ends_with(".env") {
                out.push(format!("{sub}/{name}"));
            }
        }
    }
    out.sort();
    out
}

/// The layers, how opening ended, and which known text the content reached holds.
fn open(keys: &Keys, file: &str) -> (String, String) {
    let mut msg = std::fs::read(corpus(&format!("thunderbird-smime/{file}"))).unwrap();
    if msg.first() == Some(&0x30) {
        // Raw CMS (DER) as NSS and OpenSSL wrote it: carried the way a mail client would.
        msg = [
            &b"Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m\r\nContent-Transfer-Encoding: base64\r\n\r\n"[..],
            &smimegw::smime::mime::base64_encode(&msg),
        ]
        .concat();
    }
    let recipients: Vec<Recipient<'_>> = keys
        .certs
        .iter()
        .map(|(label, cert)| Recipient {
            cert,
            token: &keys.token,
            key: KeyRef::label(label.as_str()),
            offload: AesOffload::Host,
        })
        .collect();
    match open_message(&msg, &recipients) {
        Ok((opened, content)) => {
            let mut parts: Vec<String> = opened.layers.iter().map(describe).collect();
            if let Some(e) = &opened.stopped {
                parts.push(stop_reason(e).into());
            }
            if parts.is_empty() {
                parts.push("plain".into());
            }
            let text = String::from_utf8_lossy(&content);
            let found = if text.contains(TEXT_ALICE_BOB) {
                "alice-bob"
            } else if text.contains(TEXT_FRAN) {
                "fran"
            } else {
                "-"
            };
            (parts.join(" > "), found.into())
        }
        Err(e) => (format!("error: {e}"), "-".into()),
    }
}

fn table(path: &Path) -> Vec<Vec<String>> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l.split('\t').map(str::to_string).collect())
        .collect()
}

#[test]
fn every_corpus_message_opens_to_the_expected_layers() {
    let keys = keys();
    let expected_path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/thunderbird-layers.tsv");
    if std::env::var_os("DUMP_LAYERS").is_some() {
        for file in messages() {
            let (layers, text) = open(&keys, &file);
            println!("{file}\t{layers}\t{text}");
        }
        return;
    }
    let expected: BTreeMap<String, (String, String)> = table(&expected_path)
        .into_iter()
        .skip(1)
        .map(|c| (c[0].clone(), (c[1].clone(), c[2].clone())))
        .collect();
    let files = messages();
    assert_eq!(
        files,
        expected.keys().cloned().collect::<Vec<_>>(),
        "the data file lists every corpus message"
    );
    let mut wrong = Vec::new();
    for file in &files {
        let got = open(&keys, file);
        if &got != expected.get(file).unwrap() {
            wrong.push(format!(
                "{file}: got {got:?}, expected {:?}",
                expected[file]
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// The data file agrees with the corpus' own tables: OpenSSL's verdict on the outer layer (and
/// what decryption reveals), and the Thunderbird test's text checks.
#[test]
fn the_expected_layers_agree_with_the_corpus_tables() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let expected: BTreeMap<String, (String, String)> =
        table(&dir.join("tests/data/thunderbird-layers.tsv"))
            .into_iter()
            .skip(1)
            .map(|c| (c[0].clone(), (c[1].clone(), c[2].clone())))
            .collect();
    let mut checked = 0;
    for row in table(&corpus("thunderbird-smime/OPENSSL_ORACLE.tsv"))
        .into_iter()
        .skip(1)
    {
        let (file, outer, verify, decrypt, inner) = (&row[0], &row[1], &row[2], &row[3], &row[4]);
        let (layers, _) = &expected[file];
        let first = layers.split(" > ").next().unwrap();
        let second = layers.split(" > ").nth(1).unwrap_or("");
        let ok = match (outer.as_str(), verify.as_str()) {
            ("multipart/signed", "ok") => first.starts_with("dsig(ok"),
            ("multipart/signed", "content-mismatch") => first.starts_with("dsig(bad"),
            ("multipart/signed", "fail: application/pgp-signature") => first == "plain",
            // Chain failures are trust, not this layer: the signature layer is there.
            ("multipart/signed", v) if v.starts_with("fail:") => first.starts_with("dsig("),
            ("pkcs7-mime;signed-data", "ok") => first.starts_with("sig(ok"),
            ("pkcs7-mime;signed-data", v) if v.starts_with("fail:") => first.starts_with("sig("),
            ("pkcs7-mime;enveloped-data", _) => {
                decrypt == "ok"
                    && first.starts_with("enc(")
                    && match inner.as_str() {
                        "multipart/signed" => second.starts_with("dsig("),
                        "application/pkcs7-mime;signed-data" => second.starts_with("sig("),
                        "text/plain" => second.is_empty(),
                        other => panic!("{file}: oracle inner type {other}"),
                    }
            }
            ("multipart/mixed" | "multipart/alternative", _) => first == "plain",
            other => panic!("{file}: oracle row {other:?}"),
        };
        assert!(
            ok,
            "{file}: data file says {layers:?}, OpenSSL oracle says {row:?}"
        );
        checked += 1;
    }
    for row in table(&corpus("thunderbird-smime/EXPECTED.tsv"))
        .into_iter()
        .skip(1)
    {
        let (file, check_text) = (&row[0], &row[7]);
        let (_, text) = &expected[file];
        let want = match check_text.as_str() {
            "gTextAliceBob" => "alice-bob",
            "gTextFran" => "fran",
            _ => continue,
        };
        assert_eq!(text, want, "{file}: Thunderbird's test shows the text");
        checked += 1;
    }
    assert!(checked >= 100, "{checked}");
}
