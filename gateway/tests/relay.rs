//! The relay end to end: the `smimegw serve` binary on a loopback port, swaks as the SMTP
//! client, OpenSSL as the correspondent's S/MIME software, Maildirs (or a next hop) as the
//! destination.
#![allow(clippy::unwrap_used)]

mod common;
mod harness;

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::openssl;
use harness::*;

#[test]
fn outbound_is_signed_except_by_destination_archive_and_header() {
    let gw = Gateway::start("", "[policy]\narchive_bcc = \"archive@example.org\"\n");
    gw.send(&[
        "--from",
        "alice@example.com",
        "--to",
        "bob@example.net,taro@docomo.ne.jp,archive@example.org",
        "--header",
        "Subject: quarterly figures",
        "--body",
        "Numbers.\n.leading dot line\n",
    ]);
    let got = gw.maildir("outbox", 2);
    let signed: Vec<_> = got
        .iter()
        .filter(|(_, t)| t.contains("multipart/signed"))
        .collect();
    let plain: Vec<_> = got
        .iter()
        .filter(|(_, t)| !t.contains("multipart/signed"))
        .collect();
    assert_eq!((signed.len(), plain.len()), (1, 1), "{got:?}");
    let (path, text) = signed[0];
    assert!(
        text.starts_with("Delivered-To: bob@example.net\r\n"),
        "{text}"
    );
    let content = gw.verify(path, &[]);
    assert!(
        content.contains("Numbers.") && content.contains(".leading dot line"),
        "{content}"
    );
    // The carrier and the archive get it as sent, together.
    let (_, text) = plain[0];
    assert!(text.contains("Delivered-To: taro@docomo.ne.jp"), "{text}");
    assert!(text.contains("Delivered-To: archive@example.org"), "{text}");
    assert!(text.contains("Subject: quarterly figures"));

    // Mail that is already S/MIME signed is not signed again.
    std::fs::write(
        gw.dir.path().join("m.txt"),
        "Content-Type: text/plain\r\n\r\nsigned by the client\r\n",
    )
    .unwrap();
    outsider(gw.dir.path(), "client", "alice@example.com");
    openssl(
        &[
            "cms",
            "-sign",
            "-in",
            "m.txt",
            "-signer",
            "client.pem",
            "-inkey",
            "client.key",
            "-from",
            "alice@example.com",
            "-to",
            "carol@example.net",
            "-subject",
            "client-signed",
            "-out",
            "signed.eml",
        ],
        gw.dir.path(),
    );
    gw.send_file(
        "alice@example.com",
        "carol@example.net",
        &gw.dir.path().join("signed.eml"),
    );
    let got = gw.maildir("outbox", 3);
    let carol = got
        .iter()
        .find(|(_, t)| t.contains("Delivered-To: carol@"))
        .unwrap();
    assert_eq!(
        carol.1.matches("application/pkcs7-signature").count(),
        2,
        "signed once: {}",
        carol.1
    );
    // The envelope goes once the Maildir holds the message: wait for it, not race it.
    gw.wait_queue_empty();
}

#[test]
fn sender_without_certificate_is_refused_with_451() {
    let gw = Gateway::start("", "[ca]\nissue_on_first_use = false\n");
    let out = gw.swaks(&["--from", "alice@example.com", "--to", "bob@example.net"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("451 4.7.1 S/MIME certificate is not found"),
        "{text}"
    );
    // Mail that will not be signed is not held up: to a never-sign destination...
    gw.send(&["--from", "alice@example.com", "--to", "taro@docomo.ne.jp"]);
    // ... and inbound mail.
    gw.send(&["--from", "bob@example.net", "--to", "alice@example.com"]);
    gw.maildir("outbox", 1);
    gw.maildir("inbox", 1);
}

#[test]
fn external_clients_may_not_relay() {
    let gw = Gateway::start("internal_networks = [\"10.0.0.0/8\"]", "");
    let out = gw.swaks(&[
        "--from",
        "someone@example.net",
        "--to",
        "victim@example.org",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("554 5.7.1 Relay access denied"), "{text}");
    // Mail for our domain is welcome from anywhere.
    gw.send(&["--from", "someone@example.net", "--to", "alice@example.com"]);
    gw.maildir("inbox", 1);
}

#[test]
fn inbound_is_decrypted_verified_and_the_certificate_harvested_for_replies() {
    let dir = tempfile::tempdir().unwrap();
    // Bob is outside; his certificate is trusted (as a CA bundle would make it).
    trusted_outsider(dir.path(), "bob", "bob@example.net");
    let gw = Gateway::start_in(dir, "", "");
    let d = gw.dir.path();

    // Alice writes first: her certificate is issued, and Bob gets it in her signed mail.
    gw.mail("alice@example.com", "bob@example.net", "hello bob");
    let got = gw.maildir("outbox", 1);
    gw.verify(&got[0].0, &["-signer", "alice.pem", "-out", "/dev/null"]);

    // Bob answers signed and encrypted to Alice, with a forged status field.
    let enc = bob_signed_and_encrypted(d, "secret answer from bob", "re: hello");
    let mut msg = b"X-SMIME-Status: pass; forged\r\n".to_vec();
    msg.extend_from_slice(&enc);
    std::fs::write(d.join("reply.eml"), &msg).unwrap();
    gw.send_file("bob@example.net", "alice@example.com", &d.join("reply.eml"));
    let got = gw.maildir("inbox", 1);
    let text = &got[0].1;
    assert!(text.contains("secret answer from bob"), "{text}");
    assert!(!text.contains("forged"), "{text}");
    assert_eq!(
        header_value(text, "X-SMIME-Status"),
        Some("pass; decrypted; signed by bob@example.net"),
        "{text}"
    );
    assert!(
        text.contains("Authentication-Results: gw.example.com; smime=pass"),
        "{text}"
    );
    assert_eq!(header_value(text, "Subject"), Some("re: hello"));
    let held = held_for(&gw.data(), "bob@example.net");
    assert_eq!(held.len(), 1, "{held:?}");
    assert_eq!(
        held[0].source,
        "harvested from signed mail from bob@example.net"
    );

    // Now Alice's mail to Bob is encrypted (and signed), and Bob's OpenSSL opens it.
    gw.mail("alice@example.com", "bob@example.net", "for your eyes");
    let got = gw.maildir("outbox", 2);
    let (path, text) = got
        .iter()
        .find(|(_, t)| t.contains("enveloped-data"))
        .unwrap();
    assert!(!text.contains("for your eyes"));
    bob_decrypts(d, path, "dec.eml");
    assert!(
        gw.verify(Path::new("dec.eml"), &[])
            .contains("for your eyes")
    );
}

#[test]
fn required_encryption_without_a_certificate_bounces_and_the_subject_tag_forces_it() {
    let gw = Gateway::start(
        "",
        "[policy]\nencrypt_subject_tag = \"[secure]\"\n[policy.sender.\"ceo@example.com\"]\nencrypt = \"required\"\n",
    );
    gw.send(&[
        "--from",
        "ceo@example.com",
        "--to",
        "press@example.net",
        "--header",
        "Subject: merger",
    ]);
    gw.send(&[
        "--from",
        "alice@example.com",
        "--to",
        "bob@example.net",
        "--header",
        "Subject: [secure] salaries",
    ]);
    // Two bounces come back to the internal senders; nothing went out.
    let got = gw.maildir("inbox", 2);
    for (who, subject) in [
        ("ceo@example.com", "merger"),
        ("alice@example.com", "salaries"),
    ] {
        let (_, dsn) = got
            .iter()
            .find(|(_, t)| t.contains(&format!("Delivered-To: {who}")))
            .unwrap_or_else(|| panic!("no DSN for {who}: {got:?}"));
        assert!(
            dsn.contains("multipart/report; report-type=delivery-status"),
            "{dsn}"
        );
        assert!(dsn.contains("Action: failed"), "{dsn}");
        assert!(dsn.contains("Status: 5.7.1"), "{dsn}");
        assert!(dsn.contains("policy requires encryption"), "{dsn}");
        assert!(
            dsn.contains(subject),
            "the original's header fields are in the DSN: {dsn}"
        );
    }
    assert!(!gw.data().join("outbox/new").exists() || gw.maildir("outbox", 0).is_empty());
    gw.wait_queue_empty();
}

#[test]
fn next_hop_down_then_back() {
    let hop_port = free_port();
    let gw = Gateway::start(
        "",
        &format!("[delivery.outbound]\nnext_hop = \"127.0.0.1:{hop_port}\"\ntls = \"off\"\n"),
    );
    gw.mail("alice@example.com", "bob@example.net", "queued while down");
    // The message waits in the queue with the reason.
    let last = gw.wait_attempts(1);
    assert!(last.contains("cannot connect"), "{last}");
    // The next hop comes back: the retry delivers, signed.
    let (rx, connections) = sink_counting(TcpListener::bind(("127.0.0.1", hop_port)).unwrap());
    let msg = rx
        .recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| panic!("{}", gw.log()));
    assert!(
        msg.contains("multipart/signed") && msg.contains("queued while down"),
        "{msg}"
    );
    gw.wait_queue_empty();
    // The next messages reuse the open session (RSET, then MAIL): one connection for all.
    for body in ["second", "third"] {
        gw.mail("alice@example.com", "bob@example.net", body);
        let msg = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("{}", gw.log()));
        assert!(msg.contains(body), "{msg}");
    }
    assert_eq!(
        connections.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "the session to the next hop was reused"
    );
    gw.wait_queue_empty();
}

/// Sends one message over a fresh connection; true when the data got `250`.
fn send_one(port: u16, seq: usize) -> bool {
    let attempt = || -> std::io::Result<bool> {
        let conn = TcpStream::connect(("127.0.0.1", port))?;
        conn.set_read_timeout(Some(Duration::from_secs(30)))?;
        let mut w = conn.try_clone()?;
        let mut r = BufReader::new(conn);
        let mut reply = || -> std::io::Result<String> {
            let mut all = String::new();
            loop {
                let mut line = String::new();
                if r.read_line(&mut line)? == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                all.push_str(&line);
                if line.as_bytes().get(3) != Some(&b'-') {
                    return Ok(all);
                }
            }
        };
        if !reply()?.starts_with("220") {
            return Ok(false);
        }
        for cmd in [
            "EHLO crash-client\r\n".to_string(),
            "MAIL FROM:<alice@example.com>\r\n".into(),
            "RCPT TO:<bob@example.net>\r\n".into(),
            "DATA\r\n".into(),
        ] {
            w.write_all(cmd.as_bytes())?;
            let rep = reply()?;
            if !(rep.starts_with("250") || rep.starts_with("354")) {
                return Ok(false);
            }
        }
        w.write_all(
            format!(
                "From: alice@example.com\r\nTo: bob@example.net\r\nSubject: crash test\r\nX-Seq: {seq}\r\n\r\nmessage {seq}\r\n.\r\n"
            )
            .as_bytes(),
        )?;
        let rep = reply()?;
        let _ = w.write_all(b"QUIT\r\n");
        Ok(rep.starts_with("250"))
    };
    attempt().unwrap_or(false)
}

#[test]
fn crash_test_nothing_acknowledged_is_lost() {
    const MESSAGES: usize = 500;
    let hop = TcpListener::bind("127.0.0.1:0").unwrap();
    let hop_port = hop.local_addr().unwrap().port();
    let rx = sink(hop);
    let mut gw = Gateway::start(
        "",
        &format!("[delivery.outbound]\nnext_hop = \"127.0.0.1:{hop_port}\"\ntls = \"off\"\n"),
    );
    let port = gw.port;
    // Two clients send; a message not acknowledged is sent again later, as MTAs do.
    let acked = std::sync::Arc::new(std::sync::Mutex::new(std::collections::BTreeSet::new()));
    let clients: Vec<_> = (0..2)
        .map(|c| {
            let acked = acked.clone();
            std::thread::spawn(move || {
                let mut todo: Vec<usize> = (c..MESSAGES).step_by(2).collect();
                let mut failures = 0;
                while let Some(seq) = todo.first().copied() {
                    if send_one(port, seq) {
                        acked.lock().unwrap().insert(seq);
                        todo.remove(0);
                    } else {
                        failures += 1;
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    assert!(failures < 5000, "the gateway never came back");
                }
            })
        })
        .collect();
    // Kill the gateway several times while they send.
    let mut kills = 0;
    while kills < 5 {
        std::thread::sleep(Duration::from_millis(700));
        if acked.lock().unwrap().len() >= MESSAGES {
            break;
        }
        gw.crash_and_restart();
        kills += 1;
    }
    for c in clients {
        c.join().unwrap();
    }
    assert!(
        kills >= 3,
        "the clients finished before 3 crashes: make the test send more"
    );
    // Everything acknowledged arrives (signed), some perhaps twice.
    let acked = acked.lock().unwrap().clone();
    assert_eq!(acked.len(), MESSAGES);
    let mut received: std::collections::BTreeMap<usize, usize> = Default::default();
    let start = Instant::now();
    while received.len() < acked.len() {
        let Ok(msg) = rx.recv_timeout(Duration::from_secs(60)) else {
            let missing: Vec<_> = acked
                .iter()
                .filter(|s| !received.contains_key(s))
                .take(10)
                .collect();
            panic!(
                "missing after {:?}: {missing:?} of {}\n{}",
                start.elapsed(),
                acked.len() - received.len(),
                gw.log()
            );
        };
        assert!(msg.contains("multipart/signed"), "sent unsigned: {msg}");
        let seq: usize = header_value(&msg, "X-Seq").unwrap().parse().unwrap();
        *received.entry(seq).or_default() += 1;
    }
    let duplicates: usize = received.values().map(|n| n - 1).sum();
    eprintln!(
        "crash test: {MESSAGES} acknowledged, {kills} SIGKILLs, all delivered, {duplicates} duplicates"
    );
}

fn queue_cmd(gw: &Gateway, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_smimegw"))
        .arg("queue")
        .args(args)
        .args(["--config", "smimegw.toml"])
        .current_dir(gw.dir.path())
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn queue_command_lists_shows_retries_and_deletes() {
    let hop = TcpListener::bind("127.0.0.1:0").unwrap();
    let hop_port = hop.local_addr().unwrap().port();
    drop(hop);
    let gw = Gateway::start_full(
        tempfile::tempdir().unwrap(),
        "",
        "first_retry = \"1h\"",
        &format!("[delivery.outbound]\nnext_hop = \"127.0.0.1:{hop_port}\"\ntls = \"off\"\n"),
    );
    gw.mail("alice@example.com", "bob@example.net", "one");
    gw.mail("alice@example.com", "carol@example.net", "two");
    gw.wait_until("two first attempts", || {
        gw.queued()
            .iter()
            .filter(|e| e["attempts"].as_u64() >= Some(1))
            .count()
            >= 2
    });
    let (ok, list) = queue_cmd(&gw, &["list"]);
    assert!(ok, "{list}");
    assert!(list.contains("2 message(s) queued"), "{list}");
    assert!(list.contains("cannot connect to the next hop"), "{list}");
    let ids: Vec<String> = gw
        .queued()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();
    let (ok, show) = queue_cmd(&gw, &["show", &ids[0]]);
    assert!(ok, "{show}");
    assert!(show.contains("from:       <alice@example.com>"), "{show}");
    assert!(show.contains("pending: 4.4.1 cannot connect"), "{show}");

    let (ok, text) = queue_cmd(&gw, &["delete", "NOSUCHID"]);
    assert!(!ok && text.contains("no queued message NOSUCHID"), "{text}");
    let carol = gw
        .queued()
        .into_iter()
        .find(|e| e["recipients"][0]["address"] == "carol@example.net")
        .unwrap();
    let (ok, text) = queue_cmd(&gw, &["delete", carol["id"].as_str().unwrap()]);
    assert!(ok, "{text}");
    assert_eq!(gw.queued().len(), 1);

    // The next hop is back; the next try is an hour away, `retry` makes it now.
    let rx = sink(TcpListener::bind(("127.0.0.1", hop_port)).unwrap());
    assert!(
        rx.recv_timeout(Duration::from_secs(2)).is_err(),
        "delivered before the retry"
    );
    let (ok, text) = queue_cmd(&gw, &["retry"]);
    assert!(ok, "{text}");
    let msg = rx.recv_timeout(Duration::from_secs(30)).unwrap();
    assert!(
        msg.contains("one") && msg.contains("multipart/signed"),
        "{msg}"
    );
    assert!(
        rx.recv_timeout(Duration::from_secs(1)).is_err(),
        "the deleted message went out"
    );
    gw.wait_queue_empty();
    let (ok, list) = queue_cmd(&gw, &["list"]);
    assert!(ok && list.contains("0 message(s) queued"), "{list}");
}

/// Sends raw bytes in one session and returns everything the gateway answered.
fn raw_session(port: u16, bytes: &[u8]) -> String {
    let mut conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    conn.write_all(bytes).unwrap();
    let _ = conn.shutdown(std::net::Shutdown::Write);
    let mut out = String::new();
    let _ = std::io::Read::read_to_string(&mut conn, &mut out);
    out
}

#[test]
fn malformed_smtp_gets_clear_replies_and_harms_no_one_else() {
    let gw = Gateway::start("", "");
    let mut long = b"EHLO ".to_vec();
    long.extend(std::iter::repeat_n(b'a', 10_000));
    long.extend_from_slice(b"\r\nNOOP\r\nQUIT\r\n");
    let got = raw_session(gw.port, &long);
    eprintln!("long: {got}");
    assert!(got.contains("500 5.5.6 Line too long"), "{got}");
    assert!(
        got.contains("221"),
        "the session goes on after the long line: {got}"
    );

    let got = raw_session(
        gw.port,
        b"EHLO x\r\nMAIL FROM:<a\0b@example.com>\r\nNOOP\r\nQUIT\r\n",
    );
    eprintln!("nul: {got}");
    assert!(got.contains("221"), "{got}");
    assert!(
        !got.contains("250 2.1.0"),
        "a NUL in a command is refused: {got}"
    );

    // SMTP smuggling: a bare-LF end of data followed by a second transaction.
    let got = raw_session(
        gw.port,
        b"HELO x\r\nMAIL FROM:<bob@example.net>\r\nRCPT TO:<alice@example.com>\r\nDATA\r\n\
          Subject: cover\r\n\r\ncover\n.\nMAIL FROM:<ceo@example.com>\r\nRCPT TO:<alice@example.com>\r\n\
          DATA\r\nSubject: smuggled\r\n\r\nsmuggled\r\n.\r\nQUIT\r\n",
    );
    eprintln!("smuggling: {got}");
    assert!(
        got.contains("554 5.5.2 Message refused: bare <LF> in message data"),
        "{got}"
    );
    assert!(!got.contains("queued as"), "{got}");
    assert!(!got.contains("221"), "the session is closed: {got}");

    // One session: NUL in data, a header bomb, a mail loop, then a good message; each
    // refused message is named, the session goes on.
    let to_data = "MAIL FROM:<bob@example.net>\r\nRCPT TO:<alice@example.com>\r\nDATA\r\n";
    let mut session = format!("EHLO x\r\n{to_data}Subject: nul\r\n\r\nnul \0 byte\r\n.\r\n");
    session.push_str(to_data);
    for i in 0..40_000 {
        session.push_str(&format!("X-Bomb-{i}: bbbbbbbbbbbbbbbbbbbb\r\n"));
    }
    session.push_str("\r\nbomb\r\n.\r\n");
    session.push_str(to_data);
    for i in 0..51 {
        session.push_str(&format!("Received: from hop{i} by hop{}\r\n", i + 1));
    }
    session.push_str("\r\nloop\r\n.\r\n");
    session.push_str(to_data);
    session.push_str("Subject: good\r\n\r\ngood after the bad ones\r\n.\r\nQUIT\r\n");
    let got = raw_session(gw.port, session.as_bytes());
    eprintln!("refusals: {got}");
    for reply in [
        "554 5.6.0 Message refused: a NUL byte in message data",
        "552 5.3.4 Message header section exceeds the limit of 1048576 bytes",
        "554 5.4.6 Too many hops: more than 50 Received: fields",
        "250 2.0.0 Ok: queued as",
        "221",
    ] {
        assert!(got.contains(reply), "{reply:?} missing: {got}");
    }
    assert_eq!(got.matches("queued as").count(), 1, "{got}");

    let got = raw_session(
        gw.port,
        b"\xff\xfe garbage\r\nDATA\r\nRCPT TO:<x@example.com>\r\nQUIT\r\n",
    );
    eprintln!("garbage: {got}");
    assert!(got.contains("221"), "{got}");

    // Others are unaffected.
    gw.mail("bob@example.net", "alice@example.com", "still here");
    let got = gw.maildir("inbox", 2);
    gw.wait_queue_empty();
    assert_eq!(
        gw.maildir("inbox", 2).len(),
        2,
        "only the two good messages arrive"
    );
    assert!(got.iter().any(|(_, t)| t.contains("still here")));
    assert!(
        got.iter()
            .any(|(_, t)| t.contains("good after the bad ones"))
    );
    assert!(
        !got.iter()
            .any(|(_, t)| t.contains("smuggled") || t.contains("cover") || t.contains("bomb")),
        "nothing refused was delivered"
    );
}

#[test]
fn token_unavailable_keeps_mail_queued_and_nothing_goes_out_unsigned() {
    common::softhsm_conf(); // SoftHSM2 is installed (or the test says how to get it)
    let dir = tempfile::tempdir().unwrap();
    let hsm_dir = dir.path().join("softhsm");
    hsm::softhsm::init_dev_token(&hsm_dir, "gw-faults", "test-passphrase").unwrap();
    let gw = Gateway::start_in(
        dir,
        "",
        &format!(
            "[token]\nuri = \"pkcs11:token=gw-faults?module-path={}\"\npin = \"env:SMIMEGW_PIN\"\n",
            hsm::softhsm::MODULE
        ),
    );
    gw.mail(
        "alice@example.com",
        "bob@example.net",
        "before the token went away",
    );
    let got = gw.maildir("outbox", 1);
    gw.verify(&got[0].0, &[]);

    // The token goes away (SoftHSM2's token directory vanishes, as a network HSM would).
    let tokens = hsm_dir.join("tokens");
    let away = hsm_dir.join("tokens-away");
    std::fs::rename(&tokens, &away).unwrap();
    std::fs::create_dir(&tokens).unwrap();

    // A known sender's mail is accepted and waits, with the reason.
    gw.mail(
        "alice@example.com",
        "bob@example.net",
        "while the token is away",
    );
    let last = gw.wait_attempts(2);
    assert!(
        last.starts_with("4.") && last.contains("unavailable"),
        "{last}"
    );
    // A sender whose certificate the CA has yet to make: accepted (the queue issues it,
    // outside the SMTP dialogue), and it waits too.
    gw.mail("carol@example.com", "bob@example.net", "new sender");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        gw.maildir("outbox", 1).len(),
        1,
        "nothing went out while the token was away"
    );

    // The token comes back: the queued messages go out, signed (Carol's with the
    // certificate issued now).
    std::fs::remove_dir(&tokens).unwrap();
    std::fs::rename(&away, &tokens).unwrap();
    let got = gw.maildir("outbox", 3);
    gw.wait_queue_empty();
    for body in ["while the token is away", "new sender"] {
        let (path, _) = got.iter().find(|(_, t)| t.contains(body)).unwrap();
        assert!(gw.verify(path, &[]).contains(body));
    }
    // Signing works for new senders again too.
    gw.mail("carol@example.com", "bob@example.net", "carol again");
    gw.maildir("outbox", 4);
}

#[test]
fn remote_users_authenticate_over_tls_and_send_only_as_themselves() {
    let dir = tempfile::tempdir().unwrap();
    let users = |args: &[&str], stdin: &str| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_smimegw"))
            .arg("users")
            .args(["--file", dir.path().join("users").to_str().unwrap()])
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // The command may refuse its arguments before it reads stdin.
        let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
        let out = child.wait_with_output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (ok, text) = users(
        &["add", "Alice@example.com", "--password-stdin"],
        "correct horse\n",
    );
    assert!(ok && text.contains("alice@example.com: added"), "{text}");
    let (ok, _) = users(
        &["add", "mallory@example.com", "--password-stdin"],
        "m4llory\n",
    );
    assert!(ok);
    let stored = std::fs::read_to_string(dir.path().join("users")).unwrap();
    assert!(!stored.contains("correct horse") && stored.contains("alice@example.com:$argon2id$"));
    let (ok, text) = users(&["add", "not-an-address", "--password-stdin"], "x\n");
    assert!(!ok && text.contains("is not a user name"), "{text}");

    // Loopback is not an internal network here: this client is "outside".
    let gw = Gateway::start_in(
        dir,
        "internal_networks = [\"10.0.0.0/8\"]\nauth_users = \"users\"",
        "",
    );
    let send = |extra: &[&str]| {
        let mut args = vec!["--to", "bob@example.net", "--body", "from the road"];
        args.extend_from_slice(extra);
        String::from_utf8_lossy(&gw.swaks(&args).stdout).into_owned()
    };
    let text = send(&["--from", "alice@example.com"]);
    assert!(text.contains("<** 554 5.7.1 Relay access denied"), "{text}");
    // AUTH is offered over TLS only.
    let text = send(&["--from", "alice@example.com", "--quit-after", "EHLO"]);
    assert!(!text.contains("AUTH"), "{text}");
    let text = send(&[
        "--from",
        "alice@example.com",
        "--tls",
        "--quit-after",
        "EHLO",
    ]);
    assert!(text.contains("250 AUTH PLAIN LOGIN"), "{text}");
    // A wrong password, then the right one.
    let auth = |user: &'static str, password: &'static str, from: &'static str| {
        send(&[
            "--from",
            from,
            "--tls",
            "--auth",
            "LOGIN",
            "--auth-user",
            user,
            "--auth-password",
            password,
        ])
    };
    let text = auth("alice@example.com", "wrong horse", "alice@example.com");
    assert!(
        text.contains("* 535 5.7.8 Authentication credentials invalid"),
        "{text}"
    );
    let text = auth("alice@example.com", "correct horse", "alice@example.com");
    assert!(text.contains("queued as"), "{text}");
    // An account sends as itself only: the gateway signs as the sender.
    let text = auth("mallory@example.com", "m4llory", "ceo@example.com");
    assert!(
        text.contains(
            "* 553 5.7.1 Sender address <ceo@example.com> is not owned by user mallory@example.com"
        ),
        "{text}"
    );
    let got = gw.maildir("outbox", 1);
    assert!(got[0].1.contains("with ESMTPSA"), "{}", got[0].1);
    gw.verify(&got[0].0, &[]);
    // A removed account stops working without a restart.
    let out = Command::new(env!("CARGO_BIN_EXE_smimegw"))
        .args([
            "users",
            "--config",
            "smimegw.toml",
            "remove",
            "alice@example.com",
        ])
        .current_dir(gw.dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = auth("alice@example.com", "correct horse", "alice@example.com");
    assert!(
        text.contains("* 535 5.7.8 Authentication credentials invalid"),
        "{text}"
    );
    gw.wait_queue_empty();
    assert_eq!(gw.maildir("outbox", 1).len(), 1);
    let log = gw.log();
    assert!(
        !log.contains("correct horse") && !log.contains("m4llory"),
        "{log}"
    );
    assert!(log.contains("authentication failed"), "{log}");
}

/// What `openssl cms -cmsout -print` says about a message (its CMS structure).
fn cms_print(path: &Path, dir: &Path) -> String {
    String::from_utf8_lossy(
        &openssl(
            &["cms", "-cmsout", "-print", "-in", path.to_str().unwrap()],
            dir,
        )
        .stdout,
    )
    .into_owned()
}

#[test]
fn policy_by_domain_and_sender_chooses_signing_encryption_format_and_algorithms() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Bob's certificate is known (harvested earlier).
    // Its path validates (it is its own trust anchor here): harvested certificates are used
    // to encrypt only then.
    trusted_outsider(d, "bob", "bob@example.net");
    std::fs::create_dir_all(d.join("data/certs")).unwrap();
    openssl(
        &[
            "x509",
            "-in",
            "bob.pem",
            "-outform",
            "DER",
            "-out",
            "data/certs/bob@example.net.der",
        ],
        d,
    );
    let gw = Gateway::start_in(
        dir,
        "",
        "[policy]\n\
         format = \"detached\"\n\
         [policy.domain.\"example.com\"]\n\
         format = \"opaque\"\n\
         hash = \"sha512\"\n\
         [policy.sender.\"intern@example.com\"]\n\
         sign = \"never\"\n\
         [policy.sender.\"legal@example.com\"]\n\
         encrypt = \"never\"\n\
         [policy.sender.\"ops@example.com\"]\n\
         format = \"detached\"\n\
         hash = \"sha384\"\n\
         cipher = \"aes-128-gcm\"\n",
    );
    // The file harvested before the store existed was moved into it.
    assert!(
        gw.data()
            .join("certs.imported/bob@example.net.der")
            .exists()
    );
    assert_eq!(held_for(&gw.data(), "bob@example.net").len(), 1);
    let d = gw.dir.path();
    for (from, to) in [
        ("alice@example.com", "carol@example.org"),
        ("intern@example.com", "carol@example.org"),
        ("legal@example.com", "bob@example.net"),
        ("ops@example.com", "bob@example.net"),
    ] {
        gw.send(&[
            "--from",
            from,
            "--to",
            to,
            "--header",
            &format!("Subject: from {from}"),
            "--body",
            &format!("body from {from}"),
        ]);
    }
    let got = gw.maildir("outbox", 4);
    gw.wait_queue_empty();
    let find = |from: &str| {
        got.iter()
            .find(|(_, t)| t.contains(&format!("Subject: from {from}")))
            .unwrap_or_else(|| panic!("nothing from {from}: {got:?}"))
    };
    let verify = |path: &Path| gw.verify(path, &[]);

    // The domain's rules: opaque, SHA-512.
    let (path, text) = find("alice@example.com");
    assert!(
        text.contains("application/pkcs7-mime") && text.contains("smime-type=signed-data"),
        "{text}"
    );
    assert!(
        !text.contains("body from alice"),
        "opaque: the content is inside"
    );
    assert!(verify(path).contains("body from alice@example.com"));
    assert!(cms_print(path, d).contains("sha512"));

    // A sender who never signs.
    let (_, text) = find("intern@example.com");
    assert!(
        !text.contains("pkcs7") && text.contains("body from intern@example.com"),
        "{text}"
    );

    // A sender who never encrypts, to a recipient with a known certificate: signed only.
    let (path, text) = find("legal@example.com");
    assert!(!text.contains("enveloped-data"), "{text}");
    assert!(verify(path).contains("body from legal@example.com"));

    // A sender with AES-128-GCM, detached SHA-384: encrypted to Bob (if-possible, the
    // default), and inside, a detached signature.
    let (path, text) = find("ops@example.com");
    assert!(text.contains("smime-type=authEnveloped-data"), "{text}");
    assert!(
        cms_print(path, d).contains("aes-128-gcm"),
        "{}",
        cms_print(path, d)
    );
    bob_decrypts(d, path, "ops.eml");
    let inner = std::fs::read_to_string(d.join("ops.eml")).unwrap();
    assert!(
        inner.contains("multipart/signed") && inner.contains("micalg=sha-384"),
        "{inner}"
    );
    assert!(verify(&d.join("ops.eml")).contains("body from ops@example.com"));
}

#[test]
fn an_opened_chassis_stops_signing_and_decrypting_until_cleared_and_mail_waits() {
    common::softhsm_conf();
    let dir = tempfile::tempdir().unwrap();
    let hsm_dir = dir.path().join("softhsm");
    hsm::softhsm::init_dev_token(&hsm_dir, "gw-tamper", "test-passphrase").unwrap();
    trusted_outsider(dir.path(), "bob", "bob@example.net");
    let mut gw = Gateway::start_in(
        dir,
        "",
        &format!(
            "[token]\nuri = \"pkcs11:token=gw-tamper?module-path={}\"\npin = \"env:SMIMEGW_PIN\"\n\
             [board]\npin_dir = \"pins\"\n",
            hsm::softhsm::MODULE
        ),
    );
    let d = gw.dir.path().to_path_buf();
    let pins = d.join("pins");
    let leds = || {
        ["green", "amber", "red"].map(|n| {
            std::fs::read_to_string(pins.join(n))
                .unwrap_or_default()
                .trim()
                .to_string()
        })
    };
    gw.wait_until("the ready LED", || leds() == ["1", "0", "0"]);
    gw.mail("alice@example.com", "bob@example.net", "before the tamper");
    let got = gw.maildir("outbox", 1);
    gw.verify(&got[0].0, &["-signer", "alice.pem", "-out", "/dev/null"]);

    // The chassis is opened.
    std::fs::write(pins.join("tamper"), "1\n").unwrap();
    gw.wait_until("the tamper LEDs", || leds() == ["0", "1", "1"]);
    // The LEDs change as the switch is read; the latch and the log-out follow at once.
    gw.wait_until("the latch on disk and the alert", || {
        gw.data().join("tamper").exists() && gw.log().contains("TAMPER: the chassis was opened")
    });
    assert!(gw.log().contains("logged out of the token"), "{}", gw.log());

    // Outbound mail is accepted and waits: not signed, not sent unsigned.
    gw.mail("alice@example.com", "bob@example.net", "during the tamper");
    let last = gw.wait_attempts(1);
    assert!(
        last.starts_with("4.7.1") && last.contains("the chassis was opened"),
        "{last}"
    );
    // Inbound encrypted mail waits too: not decrypted.
    let enc = bob_signed_and_encrypted(&d, "secret from bob", "re: tamper");
    std::fs::write(d.join("reply.eml"), &enc).unwrap();
    gw.send_file("bob@example.net", "alice@example.com", &d.join("reply.eml"));
    gw.wait_until("both messages deferred", || {
        let q = gw.queued();
        q.len() == 2 && q.iter().all(|e| e["attempts"].as_u64() >= Some(1))
    });

    // Closing the chassis and pulling the power clears nothing.
    std::fs::write(pins.join("tamper"), "0\n").unwrap();
    gw.crash_and_restart();
    gw.wait_until("the tamper LEDs after the restart", || {
        leds() == ["0", "1", "1"]
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(gw.queued().len(), 2);
    assert_eq!(gw.maildir("outbox", 1).len(), 1, "nothing went out");
    assert!(!gw.data().join("inbox/new").exists() || gw.maildir("inbox", 0).is_empty());

    // Logged out (at start, after reading the certificates) and not logged in again since.
    let log = gw.log();
    let after = &log[log.rfind("logged out of the token").unwrap()..];
    assert!(
        !after.contains("PKCS#11 token opened"),
        "logged in again while tampered:\n{after}"
    );

    // An administrator inspects the machine and clears it on the console.
    let out = console(
        &gw.data(),
        "correct horse battery\ncorrect horse battery\n\
         status\n\
         tamper\n\
         tamper clear\nwrong password\n\
         tamper clear\ncorrect horse battery\n\
         logout\n",
    );
    for want in [
        "tamper:     the chassis was opened at ",
        "SIGNING AND DECRYPTING STOPPED",
        "signing and decrypting are stopped; mail waits in the queue",
        "That is not your password; tamper not cleared.",
        "signing and decrypting resume, the queue is retried",
    ] {
        assert!(out.contains(want), "no {want:?} in:\n{out}");
    }
    assert!(!gw.data().join("tamper").exists());
    gw.wait_until("the ready LED again", || leds() == ["1", "0", "0"]);
    let got = gw.maildir("outbox", 2);
    let (path, _) = got
        .iter()
        .find(|(_, t)| !t.contains("before the tamper"))
        .unwrap();
    assert!(gw.verify(path, &[]).contains("during the tamper"));
    let got = gw.maildir("inbox", 1);
    assert!(got[0].1.contains("secret from bob"), "{}", got[0].1);
    gw.wait_queue_empty();
}

#[test]
fn unparsable_mail_to_the_archive_goes_as_received_and_fails_where_it_would_be_signed() {
    let gw = Gateway::start("", "[policy]\narchive_bcc = \"archive@example.org\"\n");
    // A header line without a colon: the message cannot be signed.
    let path = gw.dir.path().join("broken.eml");
    std::fs::write(
        &path,
        "From: alice@example.com\r\nSubject: broken\r\nthis line has no colon\r\n\r\nbody\r\n",
    )
    .unwrap();
    gw.send(&[
        "--from",
        "alice@example.com",
        "--to",
        "bob@example.net,archive@example.org",
        "--data",
        path.to_str().unwrap(),
    ]);
    // The archive copy goes out as received; Bob's copy, which policy signs, fails with the
    // reason and Alice hears of it.
    let out = gw.maildir("outbox", 1);
    assert!(out[0].1.contains("this line has no colon"), "{}", out[0].1);
    let dsn = gw.maildir("inbox", 1);
    assert!(
        dsn[0].1.contains("5.6.0") && dsn[0].1.contains("bob@example.net"),
        "{}",
        dsn[0].1
    );
    gw.wait_queue_empty();
    assert_eq!(gw.maildir("outbox", 1).len(), 1);
}
