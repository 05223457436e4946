//! The web console's REST API (`/api/v1`) end to end: the `smimegw serve` binary with
//! `[web]` on, curl as the HTTPS client, OpenSSL making users' PKCS#12 files and checking
//! what the relay then signs and decrypts; and headless Chromium driving the pages.
#![allow(clippy::unwrap_used)]

mod common;
mod harness;

use std::time::Duration;

use harness::web::{ADMIN_PASSWORD, Api, gateway, user_ca, user_p12};
use serde_json::json;

fn form_file(path: &std::path::Path) -> String {
    format!("file=@{}", path.display())
}

#[test]
fn api_every_endpoint_with_authorisation() {
    let (gw, port) = gateway("");
    let d = gw.dir.path().to_path_buf();
    let mut api = Api::new(port);

    // The document is public and describes every endpoint.
    let doc = api.call("GET", "/api/v1/openapi.json", None, &[]);
    assert_eq!(doc.status, 200);
    assert_eq!(doc.json["openapi"], "3.1.0");
    let paths = doc.json["paths"].as_object().unwrap();
    for (method, path) in smimegw::web::openapi::endpoints() {
        assert!(
            paths[path][method].is_object(),
            "{method} {path} not described"
        );
    }

    // No session: 401 for reading and for changing.
    for (m, p) in [
        ("GET", "/api/v1/status"),
        ("GET", "/api/v1/certificates"),
        ("GET", "/api/v1/queue"),
        ("GET", "/api/v1/audit"),
        ("PUT", "/api/v1/policy/staged"),
        ("POST", "/api/v1/policy/apply"),
        ("DELETE", "/api/v1/trust/0123456789abcdef"),
    ] {
        let a = api.call(m, p, Some(&json!({ "text": "" , "password": "x"})), &[]);
        assert_eq!(a.status, 401, "{m} {p}: {}", a.text);
        assert_eq!(a.json["error"], "not signed in");
    }

    // Wrong password: 401; right: a session, a CSRF token, the cookie's attributes.
    assert_eq!(api.sign_in("admin", "not the password").status, 401);
    let me = api.sign_in("admin", ADMIN_PASSWORD);
    assert_eq!(me.status, 200, "{}", me.text);
    assert_eq!(me.json["role"], "admin");
    let cookie = me
        .headers
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie"))
        .unwrap()
        .to_string();
    for attr in ["Secure", "HttpOnly", "SameSite=Strict"] {
        assert!(cookie.contains(attr), "{cookie}");
    }
    assert!(
        me.headers
            .to_ascii_lowercase()
            .contains("content-security-policy")
    );
    assert_eq!(
        api.call("GET", "/api/v1/session", None, &[]).json["user"],
        "admin"
    );

    let st = api.call("GET", "/api/v1/status", None, &[]);
    assert_eq!(st.status, 200);
    assert_eq!(st.json["token"]["state"], "answering", "{}", st.text);
    assert!(st.json["token"]["mechanisms"].as_array().unwrap().len() > 2);
    assert_eq!(st.json["queue"], 0);

    // CSRF: a change without the token or with a wrong one is 403 and changes nothing.
    let auditor = json!({ "name": "audrey", "role": "auditor", "password": "auditor password" });
    let a = api.call_with_csrf("POST", "/api/v1/users", Some(&auditor), &[], "");
    assert_eq!(a.status, 403, "{}", a.text);
    assert!(a.json["error"].as_str().unwrap().contains("CSRF"));
    let a = api.call_with_csrf("POST", "/api/v1/users", Some(&auditor), &[], "bad");
    assert_eq!(a.status, 403);
    assert_eq!(
        api.call("POST", "/api/v1/users", Some(&auditor), &[])
            .status,
        200
    );

    // Users' keys: bad uploads are refused with the reason and change nothing.
    user_ca(&d);
    let good = user_p12(&d, "carol", Some("carol@example.com"), (-1, 30), "p12-pass");
    let expired = user_p12(&d, "old", Some("old@example.com"), (-30, -1), "p12-pass");
    let no_email = user_p12(&d, "noemail", None, (-1, 30), "p12-pass");
    common::openssl(
        &[
            "pkcs12",
            "-export",
            "-nokeys",
            "-in",
            "carol.pem",
            "-out",
            "certonly.p12",
            "-passout",
            "pass:p12-pass",
        ],
        &d,
    );
    std::fs::write(d.join("notes.txt"), "not a PKCS#12 at all\n").unwrap();
    std::fs::write(d.join("huge.p12"), vec![0x30u8; 2 << 20]).unwrap();
    let bad: [(&std::path::Path, &str, &str); 7] = [
        (&good, "wrong-pass", "wrong password"),
        (&d.join("notes.txt"), "p12-pass", "not a PKCS#12"),
        (
            &d.join("carol.pem"),
            "p12-pass",
            "certificate without its key",
        ),
        (&d.join("certonly.p12"), "p12-pass", "no private key"),
        (&expired, "p12-pass", "expired"),
        (&no_email, "p12-pass", "names no email address"),
        (&d.join("huge.p12"), "p12-pass", "too large"),
    ];
    for (file, pw, why) in bad {
        let a = api.call(
            "POST",
            "/api/v1/certificates",
            None,
            &[form_file(file), format!("password={pw}")],
        );
        assert_eq!(a.status, 400, "{}: {}", file.display(), a.text);
        let e = a.json["error"].as_str().unwrap_or_default();
        assert!(e.contains(why), "{}: want {why:?}: {e}", file.display());
    }
    assert_eq!(
        api.call("GET", "/api/v1/certificates?q=example.com", None, &[])
            .json
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["source"].as_str().unwrap().contains("PKCS#12"))
            .count(),
        0,
        "a bad upload changed something"
    );

    // A good one: the key into the token, listed with its PKCS#11 URI, and carol's mail is
    // signed with that certificate from now on.
    let up = api.call(
        "POST",
        "/api/v1/certificates",
        None,
        &[form_file(&good), "password=p12-pass".into()],
    );
    assert_eq!(up.status, 201, "{}", up.text);
    let fp1 = up.json["imported"].as_str().unwrap().to_string();
    assert!(
        up.json["key_uri"].as_str().unwrap().starts_with("pkcs11:"),
        "{}",
        up.text
    );
    let listed = api.call("GET", "/api/v1/certificates?q=carol", None, &[]);
    assert_eq!(listed.json.as_array().unwrap().len(), 1, "{}", listed.text);
    let one = api.call(
        "GET",
        &format!("/api/v1/certificates/{}", &fp1[..12]),
        None,
        &[],
    );
    assert_eq!(one.status, 200);
    assert!(
        one.json["pem"]
            .as_str()
            .unwrap()
            .contains("BEGIN CERTIFICATE")
    );
    assert_eq!(
        api.call("GET", "/api/v1/certificates/00000000", None, &[])
            .status,
        404
    );

    gw.mail(
        "carol@example.com",
        "bob@example.net",
        "signed with the uploaded key",
    );
    let got = gw.maildir("outbox", 1);
    common::openssl(
        &[
            "cms",
            "-verify",
            "-in",
            got[0].0.to_str().unwrap(),
            "-CAfile",
            "ca.pem",
            "-signer",
            "signer1.pem",
            "-out",
            "/dev/null",
        ],
        &d,
    );
    let signer1 = std::fs::read_to_string(d.join("signer1.pem")).unwrap();
    assert_eq!(
        signer1.trim(),
        std::fs::read_to_string(d.join("carol.pem")).unwrap().trim()
    );

    // Mail encrypted to that certificate decrypts; after a renewal it still does (old key
    // kept), while new mail is signed with the new certificate.
    let encrypt_to = |cert: &str, out: &str, text: &str| {
        std::fs::write(
            d.join("plain.txt"),
            format!(
                "From: bob@example.net\r\nTo: carol@example.com\r\nSubject: s\r\n\r\n{text}\r\n"
            ),
        )
        .unwrap();
        common::openssl(
            &[
                "cms",
                "-encrypt",
                "-aes256",
                "-in",
                "plain.txt",
                "-out",
                out,
                cert,
            ],
            &d,
        );
    };
    std::fs::copy(d.join("carol.pem"), d.join("carol-old.pem")).unwrap();
    encrypt_to("carol-old.pem", "to-old.eml", "for the first key");
    let renewed = user_p12(&d, "carol", Some("carol@example.com"), (-1, 60), "p12-pass");
    let up2 = api.call(
        "POST",
        "/api/v1/certificates",
        None,
        &[form_file(&renewed), "password=p12-pass".into()],
    );
    assert_eq!(up2.status, 201, "{}", up2.text);
    assert_eq!(up2.json["renews"][0], fp1.as_str());
    gw.send_file(
        "bob@example.net",
        "carol@example.com",
        &d.join("to-old.eml"),
    );
    let inbox = gw.maildir("inbox", 1);
    assert!(inbox[0].1.contains("for the first key"), "{}", inbox[0].1);
    gw.mail(
        "carol@example.com",
        "bob@example.net",
        "signed with the renewed key",
    );
    let got = gw.maildir("outbox", 2);
    for (i, (p, _)) in got.iter().enumerate() {
        common::openssl(
            &[
                "cms",
                "-verify",
                "-in",
                p.to_str().unwrap(),
                "-CAfile",
                "ca.pem",
                "-signer",
                &format!("s{i}.pem"),
                "-out",
                &format!("c{i}.txt"),
            ],
            &d,
        );
    }
    let renewed_pem = std::fs::read_to_string(d.join("carol.pem")).unwrap();
    let signed_by_new = (0..2).any(|i| {
        std::fs::read_to_string(d.join(format!("c{i}.txt")))
            .unwrap()
            .contains("renewed key")
            && std::fs::read_to_string(d.join(format!("s{i}.pem")))
                .unwrap()
                .trim()
                == renewed_pem.trim()
    });
    assert!(signed_by_new, "the renewed certificate does not sign");

    // Trust anchors: upload, list, remove with the password again.
    let t = api.call(
        "POST",
        "/api/v1/trust",
        None,
        &[form_file(&d.join("ca.pem"))],
    );
    assert_eq!(t.status, 201, "{}", t.text);
    let ca_fp = t.json["added"][0]["fingerprint"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        api.call("GET", "/api/v1/trust", None, &[])
            .json
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        api.call("GET", &format!("/api/v1/trust/{ca_fp}"), None, &[])
            .status,
        200
    );
    let wrong = api.call(
        "DELETE",
        &format!("/api/v1/trust/{ca_fp}"),
        Some(&json!({ "password": "guess" })),
        &[],
    );
    assert_eq!(wrong.status, 403, "{}", wrong.text);
    let removed = api.call(
        "DELETE",
        &format!("/api/v1/trust/{ca_fp}"),
        Some(&json!({ "password": ADMIN_PASSWORD })),
        &[],
    );
    assert_eq!(removed.status, 200, "{}", removed.text);
    assert_eq!(
        api.call("GET", "/api/v1/correspondents", None, &[]).status,
        200
    );
    assert_eq!(
        api.call("GET", "/api/v1/correspondents/abcdef01", None, &[])
            .status,
        404
    );

    // Policy: an invalid one is refused with the reason; a valid one is staged, changes
    // nothing until applied, then applies at once.
    let p = api.call(
        "PUT",
        "/api/v1/policy/staged",
        Some(&json!({ "text": "[policy]\nsign = \"sometimes\"\n" })),
        &[],
    );
    assert_eq!(p.status, 400);
    assert!(
        p.json["error"].as_str().unwrap().contains("sign"),
        "{}",
        p.text
    );
    let text = "[policy]\n[policy.domain.\"example.com\"]\nsign = \"never\"\nencrypt = \"never\"\n";
    let p = api.call(
        "PUT",
        "/api/v1/policy/staged",
        Some(&json!({ "text": text })),
        &[],
    );
    assert_eq!(p.status, 200, "{}", p.text);
    assert_eq!(p.json["staged"], text);
    assert_eq!(p.json["applied_from"], "configuration file");
    let p = api.call("POST", "/api/v1/policy/apply", None, &[]);
    assert_eq!(p.status, 200, "{}", p.text);
    assert_eq!(p.json["applied_from"], "console");
    assert!(p.json["staged"].is_null());
    gw.mail(
        "carol@example.com",
        "bob@example.net",
        "after the policy change",
    );
    let got = gw.maildir("outbox", 3);
    let plain = got
        .iter()
        .find(|m| m.1.contains("after the policy change"))
        .expect("sent as is");
    assert!(!plain.1.contains("multipart/signed"), "{}", plain.1);
    let p = api.call(
        "PUT",
        "/api/v1/policy/staged",
        Some(&json!({ "text": text })),
        &[],
    );
    assert_eq!(p.status, 200);
    assert_eq!(
        api.call("DELETE", "/api/v1/policy/staged", None, &[])
            .status,
        204
    );

    // Queue: empty; unknown ids are 404, what is not an id at all 400.
    assert_eq!(api.call("GET", "/api/v1/queue", None, &[]).json, json!([]));
    for (id, status) in [("0000000000000A", 404), ("nope", 400)] {
        assert_eq!(
            api.call("GET", &format!("/api/v1/queue/{id}"), None, &[])
                .status,
            status
        );
        assert_eq!(
            api.call("POST", &format!("/api/v1/queue/{id}/retry"), None, &[])
                .status,
            status
        );
        assert_eq!(
            api.call("DELETE", &format!("/api/v1/queue/{id}"), None, &[])
                .status,
            status
        );
    }

    // The auditor reads everything and changes nothing.
    let mut aud = Api::new(port);
    assert_eq!(
        aud.sign_in("audrey", "auditor password").json["role"],
        "auditor"
    );
    for p in [
        "/api/v1/status",
        "/api/v1/certificates",
        "/api/v1/trust",
        "/api/v1/policy",
        "/api/v1/queue",
        "/api/v1/audit",
    ] {
        assert_eq!(aud.call("GET", p, None, &[]).status, 200, "{p}");
    }
    for (m, p, body) in [
        (
            "PUT",
            "/api/v1/policy/staged",
            Some(json!({ "text": text })),
        ),
        ("POST", "/api/v1/policy/apply", None),
        ("POST", "/api/v1/users", Some(auditor.clone())),
        (
            "DELETE",
            &*format!("/api/v1/certificates/{fp1}"),
            Some(json!({ "password": "auditor password" })),
        ),
        ("DELETE", "/api/v1/queue/nope", None),
    ] {
        let a = aud.call(m, p, body.as_ref(), &[]);
        assert_eq!(a.status, 403, "{m} {p}: {}", a.text);
        assert!(
            a.json["error"].as_str().unwrap().contains("auditor"),
            "{}",
            a.text
        );
    }
    let a = aud.call(
        "POST",
        "/api/v1/certificates",
        None,
        &[form_file(&good), "password=p12-pass".into()],
    );
    assert_eq!(a.status, 403);

    // Deleting a key needs the password again.
    let a = api.call(
        "DELETE",
        &format!("/api/v1/certificates/{fp1}"),
        Some(&json!({ "password": "guess" })),
        &[],
    );
    assert_eq!(a.status, 403, "{}", a.text);
    let a = api.call(
        "DELETE",
        &format!("/api/v1/certificates/{fp1}"),
        Some(&json!({ "password": ADMIN_PASSWORD })),
        &[],
    );
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(
        api.call("GET", &format!("/api/v1/certificates/{fp1}"), None, &[])
            .status,
        404
    );

    // The audit log has every change, with who and from where.
    let log = api.call("GET", "/api/v1/audit?limit=100", None, &[]);
    let actions: Vec<String> = log
        .json
        .as_array()
        .unwrap()
        .iter()
        .map(|e| format!("{} {} {}", e["who"], e["origin"], e["action"]))
        .collect();
    for want in [
        "pkcs12 import",
        "key delete",
        "trust remove",
        "policy applied",
        "account set",
        "sign-in",
    ] {
        assert!(
            actions
                .iter()
                .any(|a| a.contains(want) && a.contains("web 127.0.0.1")),
            "{want} not in {actions:#?}"
        );
    }

    // Password change, then sign out: the session is gone.
    let a = api.call(
        "POST",
        "/api/v1/password",
        Some(&json!({ "old": ADMIN_PASSWORD, "new": "short" })),
        &[],
    );
    assert_eq!(a.status, 400);
    assert_eq!(
        api.call_with_csrf("DELETE", "/api/v1/session", None, &[], "")
            .status,
        403
    );
    assert_eq!(api.call("DELETE", "/api/v1/session", None, &[]).status, 204);
    assert_eq!(api.call("GET", "/api/v1/status", None, &[]).status, 401);

    // Throttling: after five wrong passwords even the right one is refused for a while.
    let mut guesser = Api::new(port);
    for _ in 0..4 {
        assert_eq!(guesser.sign_in("audrey", "guess").status, 401);
    }
    let locked = guesser.sign_in("audrey", "guess");
    assert_eq!(locked.status, 429, "{}", locked.text);
    let right = guesser.sign_in("audrey", "auditor password");
    assert_eq!(right.status, 429, "{}", right.text);
    assert!(right.headers.to_ascii_lowercase().contains("retry-after"));
}

#[test]
fn browser_signs_in_uploads_a_pkcs12_and_applies_a_policy() {
    let (gw, port) = gateway("");
    let d = gw.dir.path().to_path_buf();
    user_ca(&d);
    let p12 = user_p12(&d, "dora", Some("dora@example.com"), (-1, 30), "p12-pass");
    let b = harness::webdriver::Browser::start();
    let base = format!("https://127.0.0.1:{port}");
    let t = Duration::from_secs(20);

    b.goto(&format!("{base}/certificates"));
    b.wait_url("/login", t);
    b.find("#user").fill("admin");
    b.find("#password").fill("wrong password!");
    b.find("#signin").click();
    b.wait_text("wrong user name or password", t);
    b.find("#user").fill("admin");
    b.find("#password").fill(ADMIN_PASSWORD);
    b.find("#signin").click();
    b.wait_text("Dashboard", t);
    assert!(b.text().contains("answering"), "{}", b.text());

    b.goto(&format!("{base}/certificates"));
    b.find("#p12file").send_keys(p12.to_str().unwrap());
    b.find("#p12password").fill("p12-pass");
    b.find("#upload").click();
    b.wait_text("the key is in the token", t);
    assert!(b.text().contains("dora@example.com"), "{}", b.text());
    b.goto(&format!("{base}/certificates?q=dora"));
    assert!(b.find("table.certs").text().contains("dora@example.com"));

    b.goto(&format!("{base}/policy"));
    let text =
        "[policy]\nencrypt = \"never\"\n[policy.sender.\"dora@example.com\"]\nsign = \"never\"\n";
    b.find("#policytext").fill("[policy]\nsign = \"maybe\"\n");
    b.find("#stage").click();
    let notice = b.wait_for("#notice", t).text();
    assert!(
        notice.contains("policy.sign") || notice.contains("sign"),
        "{notice}"
    );
    assert!(
        b.try_find("#staged").is_none(),
        "an invalid policy was staged"
    );
    b.find("#policytext").fill(text);
    b.find("#stage").click();
    b.wait_text("Checked and staged", t);
    assert!(b.find("#staged").text().contains("dora@example.com"));
    b.find("#apply").click();
    b.wait_text("Applied", t);
    assert!(b.find("#applied").text().contains("dora@example.com"));
    assert!(b.text().contains("from the console"), "{}", b.text());

    // In force: dora's mail goes unsigned now.
    gw.mail(
        "dora@example.com",
        "bob@example.net",
        "after the browser's policy",
    );
    let got = gw.maildir("outbox", 1);
    assert!(!got[0].1.contains("multipart/signed"), "{}", got[0].1);

    b.goto(&format!("{base}/audit"));
    let audit = b.find("#audit").text();
    assert!(
        audit.contains("pkcs12 import") && audit.contains("policy applied"),
        "{audit}"
    );
    b.find("#signout").click();
    b.wait_url("/login", t);
}

/// The fingerprint OpenSSL gives a PEM certificate file, as the API writes them.
fn sha256_of(dir: &std::path::Path, pem: &str) -> String {
    let out = common::openssl(
        &["x509", "-in", pem, "-noout", "-fingerprint", "-sha256"],
        dir,
    );
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .rsplit('=')
        .next()
        .unwrap()
        .replace(':', "")
        .to_ascii_lowercase()
}

#[test]
fn built_in_ca_issues_renews_exports_and_expiry_is_warned_of() {
    let (mut gw, port) = gateway("");
    let d = gw.dir.path().to_path_buf();
    let mut api = Api::new(port);
    assert_eq!(api.sign_in("admin", ADMIN_PASSWORD).status, 200);

    // The CA certificate, for clients: details and a PEM download that OpenSSL reads.
    let ca = api.call("GET", "/api/v1/ca", None, &[]);
    assert_eq!(ca.status, 200, "{}", ca.text);
    let pem = api.call("GET", "/api/v1/ca/certificate", None, &[]);
    assert!(pem.headers.contains("smimegw-ca.pem"), "{}", pem.headers);
    std::fs::write(d.join("exported-ca.pem"), &pem.text).unwrap();
    assert_eq!(sha256_of(&d, "exported-ca.pem"), ca.json["fingerprint"]);

    // Issue: refused for a bad or outside address; then issued, listed with its key.
    for (address, why) in [
        ("not an address", "not an email address"),
        ("eve@elsewhere.org", "not in an internal domain"),
    ] {
        let a = api.call(
            "POST",
            "/api/v1/ca/issue",
            Some(&json!({ "address": address })),
            &[],
        );
        assert_eq!(a.status, 400, "{}", a.text);
        assert!(a.text.contains(why), "{}", a.text);
    }
    let first = api.call(
        "POST",
        "/api/v1/ca/issue",
        Some(&json!({ "address": "Dan@example.com" })),
        &[],
    );
    assert_eq!(first.status, 201, "{}", first.text);
    assert_eq!(first.json["addresses"][0], "dan@example.com");
    let again = api.call(
        "POST",
        "/api/v1/ca/issue",
        Some(&json!({ "address": "dan@example.com" })),
        &[],
    );
    assert_eq!(again.status, 400);
    assert!(again.text.contains("renew it instead"), "{}", again.text);
    let listed = api.call("GET", "/api/v1/certificates?q=dan@example.com", None, &[]);
    assert_eq!(
        listed.json[0]["fingerprint"], first.json["fingerprint"],
        "{}",
        listed.text
    );
    assert!(
        listed.json[0]["key_uri"]
            .as_str()
            .unwrap()
            .starts_with("pkcs11:")
    );

    // Renew (certificates are dated to the second: a new one must start later).
    std::thread::sleep(Duration::from_millis(1100));
    let renewed = api.call(
        "POST",
        "/api/v1/ca/renew",
        Some(&json!({ "address": "dan@example.com" })),
        &[],
    );
    assert_eq!(renewed.status, 201, "{}", renewed.text);
    assert_ne!(renewed.json["fingerprint"], first.json["fingerprint"]);
    // Dan's mail is signed with the renewed certificate.
    gw.mail("dan@example.com", "someone@example.net", "after renewal");
    let got = gw.maildir("outbox", 1);
    gw.verify(
        &got[0].0,
        &["-signer", "dan-signer.pem", "-out", "/dev/null"],
    );
    assert_eq!(sha256_of(&d, "dan-signer.pem"), renewed.json["fingerprint"]);

    // A user whose certificate expires in 10 days: a banner on every page, the status,
    // the metrics (also with HTTP Basic credentials), and the log after a restart.
    user_ca(&d);
    let soon = user_p12(&d, "soon", Some("soon@example.com"), (-1, 10), "p12-pass");
    let a = api.call(
        "POST",
        "/api/v1/certificates",
        None,
        &[form_file(&soon), "password=p12-pass".into()],
    );
    assert_eq!(a.status, 201, "{}", a.text);
    let st = api.call("GET", "/api/v1/status", None, &[]);
    let expiring: Vec<&str> = st.json["expiring"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["addresses"][0].as_str().unwrap())
        .collect();
    assert_eq!(expiring, ["soon@example.com"], "{}", st.text);
    let metrics = std::process::Command::new("curl")
        .args(["-sk", "-u", &format!("admin:{ADMIN_PASSWORD}")])
        .arg(format!("https://127.0.0.1:{port}/api/v1/metrics"))
        .output()
        .unwrap();
    let m = String::from_utf8_lossy(&metrics.stdout);
    // 10 days less the seconds since it was issued: 9 or (within the second) 10.
    assert!(
        ["9", "10"].iter().any(|n| m.contains(&format!(
            "smimegw_certificate_expiry_days{{address=\"soon@example.com\"}} {n}\n"
        ))),
        "{m}"
    );
    assert!(m.contains("smimegw_certificates_expiring 1"), "{m}");
    assert!(
        m.contains("smimegw_messages_total{treatment=\"signed\"} 1"),
        "{m}"
    );
    let denied = std::process::Command::new("curl")
        .args([
            "-sk",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-u",
            "admin:wrong",
        ])
        .arg(format!("https://127.0.0.1:{port}/api/v1/metrics"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&denied.stdout), "401");

    gw.crash_and_restart();
    let mut api = Api::new(port);
    assert_eq!(api.sign_in("admin", ADMIN_PASSWORD).status, 200);
    let page = api.call("GET", "/trust", None, &[]);
    assert!(
        page.text.contains(
            "1 internal user certificate(s) expire within 30 days; first: soon@example.com"
        ),
        "{}",
        page.text
    );
    gw.wait_until("the expiry warning", || {
        let log = gw.log();
        log.contains("soon@example.com")
            && (log.contains("certificate expires in 9 day(s)")
                || log.contains("certificate expires in 10 day(s)"))
    });
}
