//! smimegw between two real Postfix instances, the way it is deployed:
//!
//! ```text
//!  swaks → Postfix "mail" (example.com's server) → smimegw → Postfix "mx" (the Internet,
//!          relayhost = smimegw)    ↑      STARTTLS required ↓    example.net's Maildir)
//!                                  └──── inbound ←── Postfix "mx" (transport for example.com)
//! ```
//! Outbound mail arrives at the Internet side signed and OpenSSL verifies it; Bob's encrypted
//! answer arrives at Alice's mailbox decrypted and verified; Alice's next mail to Bob is
//! encrypted to the certificate the gateway harvested.
#![allow(clippy::unwrap_used)]

mod common;
mod harness;

use harness::postfix::Postfix;
use harness::*;
use std::path::Path;

#[test]
fn postfix_upstream_and_downstream() {
    let gw_port = free_port();
    let mx_port = free_port();
    let mail_port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    outsider(&d, "bob", "bob@example.net");

    // The Internet side: delivers example.net, sends example.com to the gateway.
    let mx = Postfix::start_with_login(
        "mx",
        mx_port,
        &format!(
            "virtual_mailbox_domains = example.net\n\
             relay_domains = example.com\n\
             transport_maps = inline:{{ example.com=smtp:[127.0.0.1]:{gw_port} }}\n\
             smtp_tls_security_level = may\n\
             {}",
            Postfix::tls_lines(&d, "mx")
        ),
        Some(("smimegw", "hop-secret-42")),
    );
    // The gateway logs in at the Internet side (a smarthost that wants AUTH); the password
    // comes from a file, never from the configuration.
    std::fs::write(d.join("hop-password"), "hop-secret-42\n").unwrap();
    // The organisation's mail server: delivers example.com, relays the rest through the
    // gateway (over STARTTLS when offered).
    let mail = Postfix::start(
        "mail",
        mail_port,
        &format!(
            "virtual_mailbox_domains = example.com\n\
             relayhost = [127.0.0.1]:{gw_port}\n\
             smtp_tls_security_level = may\n"
        ),
    );
    let gw = Gateway::start_on(
        gw_port,
        dir,
        "",
        "first_retry = \"1s\"\nmax_retry = \"2s\"",
        &format!(
            "[delivery.outbound]\n\
             next_hop = \"127.0.0.1:{mx_port}\"\n\
             tls = \"required\"\n\
             ca_file = \"{}\"\n\
             auth_user = \"smimegw\"\n\
             auth_password = \"file:hop-password\"\n\
             [delivery.inbound]\n\
             next_hop = \"127.0.0.1:{mail_port}\"\n",
            d.join("mx-cert.pem").display()
        ),
    );
    let logs = || format!("{}\n{}\n--- gateway:\n{}", mail.log(), mx.log(), gw.log());
    let swaks = |port: u16, args: &[&str]| {
        let out = std::process::Command::new("swaks")
            .args(["--server", &format!("127.0.0.1:{port}"), "--timeout", "60"])
            .args(args)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success() && text.contains("<-  250 2.0.0 Ok: queued as"),
            "swaks {args:?}: {text}\n{}",
            logs()
        );
    };

    // Alice writes to Bob through her mail server.
    swaks(
        mail_port,
        &[
            "--from",
            "alice@example.com",
            "--to",
            "bob@example.net",
            "--header",
            "Subject: through postfix",
            "--body",
            "signed on the way out",
        ],
    );
    let got = wait_maildir(&mx.mailbox(), 1, logs);
    let (path, text) = &got[0];
    assert!(text.contains("multipart/signed"), "{text}");
    // The path it took: Postfix "mail", the gateway (over TLS), Postfix "mx" (over TLS).
    let received: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("Received: "))
        .collect();
    assert!(received.len() >= 3, "{received:?}");
    assert!(
        text.contains("by gw.example.com") && text.contains("by mail.test"),
        "{text}"
    );
    assert!(
        text.contains("by mx.test (Postfix) with ESMTPSA"),
        "the gateway used STARTTLS and logged in at the next hop: {text}"
    );
    assert!(
        mx.log()
            .contains("sasl_method=PLAIN, sasl_username=smimegw"),
        "{}",
        mx.log()
    );
    assert!(!gw.log().contains("hop-secret-42"));
    assert!(
        gw.verify(path, &["-signer", "alice.pem"])
            .contains("signed on the way out")
    );

    // Bob answers signed and encrypted, through the Internet side's Postfix.
    let g = gw.dir.path();
    let enc = bob_signed_and_encrypted(g, "the answer, for alice only", "re: through postfix");
    std::fs::write(g.join("reply.eml"), &enc).unwrap();
    swaks(
        mx_port,
        &[
            "--from",
            "bob@example.net",
            "--to",
            "alice@example.com",
            "--data",
            g.join("reply.eml").to_str().unwrap(),
        ],
    );
    let got = wait_maildir(&mail.mailbox(), 1, logs);
    let text = &got[0].1;
    assert!(text.contains("the answer, for alice only"), "{text}");
    assert_eq!(
        header_value(text, "X-SMIME-Status"),
        Some(
            "neutral; decrypted; signature valid but not trusted: \
             the certificate does not chain to a trusted CA"
        ),
        "{text}"
    );
    let held = held_for(&g.join("data"), "bob@example.net");
    assert_eq!(held.len(), 1);
    assert!(
        text.contains("by gw.example.com (smimegw) with ESMTPS"),
        "Postfix mx used STARTTLS to the gateway: {text}"
    );

    // Bob's certificate does not chain to a trusted CA: it is only a candidate until an
    // administrator who checked its fingerprint with Bob approves it.
    assert_eq!(held[0].kind, smimegw::store::Kind::Candidate);
    let pw = "correct horse battery";
    let fp = &held[0].info.fingerprint[..16];
    let out = console(
        &g.join("data"),
        &format!("{pw}\n{pw}\ncandidates approve {fp}\n{pw}\nlogout\n"),
    );
    assert!(out.contains("approved; now used to encrypt"), "{out}");

    // Alice's next mail to Bob is encrypted to the harvested certificate.
    swaks(
        mail_port,
        &[
            "--from",
            "alice@example.com",
            "--to",
            "bob@example.net",
            "--body",
            "now encrypted",
        ],
    );
    let got = wait_maildir(&mx.mailbox(), 2, logs);
    let (path, text) = got
        .iter()
        .find(|(_, t)| t.contains("enveloped-data"))
        .unwrap_or_else(|| panic!("no encrypted message: {got:?}"));
    assert!(!text.contains("now encrypted"));
    bob_decrypts(g, path, "dec.eml");
    assert!(
        gw.verify(Path::new("dec.eml"), &[])
            .contains("now encrypted")
    );
    gw.wait_queue_empty();
}
