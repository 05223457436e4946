//! Revocation end to end: a correspondent's certificate from an OpenSSL CA names an HTTP CRL
//! distribution point (served by the test); the gateway trusts the CA, encrypts to the
//! correspondent and passes their signatures; the CA revokes the certificate, the gateway
//! fetches the CRL (through the API), and then neither encrypts to it nor trusts its
//! signatures. CRL uploads are checked (bad files refused, nothing changed). And, through
//! the library: an unknown status passes or fails as `[revocation] unknown` says, an
//! out-of-date CRL makes the status unknown.
#![allow(clippy::unwrap_used)]

mod common;
mod harness;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use common::openssl;
use harness::header_value;
use harness::web::{
    ADMIN_PASSWORD, Api, gateway, gen_crl, http_files, user_ca, user_ca_named, user_p12_with,
};
use serde_json::json;

/// Dave's signed mail to Alice, as his mail program writes it.
fn dave_signed(dir: &Path, text: &str) -> PathBuf {
    std::fs::write(
        dir.join("dave.txt"),
        format!("Content-Type: text/plain\r\n\r\n{text}\r\n"),
    )
    .unwrap();
    let out = openssl(
        &[
            "cms",
            "-sign",
            "-in",
            "dave.txt",
            "-signer",
            "dave.pem",
            "-inkey",
            "dave.key",
            "-from",
            "dave@example.net",
            "-to",
            "alice@example.com",
            "-subject",
            text,
        ],
        dir,
    );
    let p = dir.join(format!("{}.eml", text.replace(' ', "-")));
    std::fs::write(&p, out.stdout).unwrap();
    p
}

#[test]
fn revoked_correspondent_is_neither_encrypted_to_nor_trusted() {
    // Fetched only when the test asks (the schedule's first run, two seconds after start,
    // would race the removal below).
    let (gw, port) = gateway("[revocation]\nfetch = false\nallow_hosts = [\"127.0.0.1\"]\n");
    let d = gw.dir.path().to_path_buf();
    let (http, hits) = http_files(d.join("pub"));
    std::fs::create_dir_all(d.join("pub")).unwrap();
    user_ca(&d);
    user_p12_with(
        &d,
        "dave",
        Some("dave@example.net"),
        (-1, 30),
        "pw",
        &format!("crlDistributionPoints=URI:http://127.0.0.1:{http}/users.crl\n"),
    );
    let mut api = Api::new(port);
    assert_eq!(api.sign_in("admin", ADMIN_PASSWORD).status, 200);
    let form = |p: &Path| vec![format!("file=@{}", p.display())];

    // Trust the CA; Dave's certificate as a correspondent.
    let a = api.call("POST", "/api/v1/trust", None, &form(&d.join("ca.pem")));
    assert_eq!(a.status, 201, "{}", a.text);
    let a = api.call(
        "POST",
        "/api/v1/correspondents/upload",
        None,
        &form(&d.join("ca.pem")),
    );
    assert_eq!(a.status, 400, "{}", a.text);
    assert!(a.text.contains("is a CA certificate"), "{}", a.text);
    let a = api.call(
        "POST",
        "/api/v1/correspondents/upload",
        None,
        &form(&d.join("dave.pem")),
    );
    assert_eq!(a.status, 201, "{}", a.text);

    // The distribution point is listed; nothing is served there yet.
    let a = api.call("POST", "/api/v1/crls/refresh", None, &[]);
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(
        a.json["failed"][0]["error"], "HTTP 404 Not Found",
        "{}",
        a.text
    );
    let o = api.call("GET", "/api/v1/crls", None, &[]);
    let url = format!("http://127.0.0.1:{http}/users.crl");
    assert_eq!(o.json["sources"][0]["url"], url.as_str(), "{}", o.text);
    assert_eq!(o.json["sources"][0]["error"], "HTTP 404 Not Found");

    // Before revocation: encrypted to Dave, Dave's signature passes.
    gw.mail("alice@example.com", "dave@example.net", "before revocation");
    let got = gw.maildir("outbox", 1);
    assert!(got[0].1.contains("enveloped-data"), "{}", got[0].1);
    gw.send_file(
        "dave@example.net",
        "alice@example.com",
        &dave_signed(&d, "signed before"),
    );
    let got = gw.maildir("inbox", 1);
    assert_eq!(
        header_value(&got[0].1, "X-SMIME-Status"),
        Some("pass; signed by dave@example.net"),
        "{}",
        got[0].1
    );

    // The CA revokes Dave; the gateway fetches the CRL.
    openssl(
        &[
            "ca",
            "-config",
            "ca.cnf",
            "-cert",
            "ca.pem",
            "-keyfile",
            "ca.key",
            "-revoke",
            "dave.pem",
            "-crl_reason",
            "keyCompromise",
        ],
        &d,
    );
    gen_crl(&d, "pub/users.crl");
    let before = hits.load(Ordering::SeqCst);
    let a = api.call("POST", "/api/v1/crls/refresh", None, &[]);
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.json["updated"][0]["url"], url.as_str(), "{}", a.text);
    assert!(hits.load(Ordering::SeqCst) > before);
    let o = api.call("GET", "/api/v1/crls", None, &[]);
    assert_eq!(o.json["crls"][0]["revoked"], 1, "{}", o.text);
    assert_eq!(
        o.json["crls"][0]["issuer"], "CN=Example Users CA,O=Example",
        "{}",
        o.text
    );
    assert!(o.json["sources"][0]["error"].is_null(), "{}", o.text);
    // The same CRL again is nothing new.
    let a = api.call("POST", "/api/v1/crls/refresh", None, &[]);
    assert_eq!(a.json["unchanged"][0], url.as_str(), "{}", a.text);

    // After: signed only (not encrypted to the revoked certificate), and Dave's signature
    // is valid but not trusted, saying why.
    gw.mail("alice@example.com", "dave@example.net", "after revocation");
    let got = gw.maildir("outbox", 2);
    let after = got
        .iter()
        .find(|(_, t)| !t.contains("enveloped-data"))
        .unwrap();
    assert!(after.1.contains("after revocation"), "{}", after.1);
    assert!(
        after.1.contains("application/pkcs7-signature"),
        "{}",
        after.1
    );
    gw.send_file(
        "dave@example.net",
        "alice@example.com",
        &dave_signed(&d, "signed after"),
    );
    let got = gw.maildir("inbox", 2);
    let after = got
        .iter()
        .find(|(_, t)| t.contains("signed after"))
        .unwrap();
    let status = header_value(&after.1, "X-SMIME-Status").unwrap();
    assert!(
        status.starts_with(
            "neutral; signature valid but not trusted: the certificate was revoked on"
        ) && status.ends_with("(key compromise)"),
        "{status}"
    );
    let log = gw.log();
    assert!(
        log.contains("not encrypting to it: the certificate was revoked"),
        "{log}"
    );

    // The metrics show the CRL's freshness.
    let m = api.call("GET", "/api/v1/metrics", None, &[]);
    assert_eq!(m.status, 200);
    assert!(
        m.text
            .contains("smimegw_crl_next_update_seconds{issuer=\"CN=Example Users CA,O=Example\"}"),
        "{}",
        m.text
    );

    // Uploads: bad files are refused with the reason; nothing changes.
    openssl(
        &[
            "crl",
            "-in",
            "pub/users.crl",
            "-inform",
            "DER",
            "-out",
            "users.pem",
        ],
        &d,
    );
    let mut tampered = std::fs::read(d.join("pub/users.crl")).unwrap();
    let last = tampered.len() - 5;
    tampered[last] ^= 0x55;
    std::fs::write(d.join("tampered.crl"), tampered).unwrap();
    std::fs::write(d.join("notes.txt"), "hello\n").unwrap();
    // A CRL from a CA the gateway does not trust.
    let other = d.join("other");
    std::fs::create_dir_all(&other).unwrap();
    user_ca_named(&other, "/CN=Stranger CA");
    gen_crl(&other, "other.crl");
    // Named like the trusted CA but signed by another key.
    let imposter = d.join("imposter");
    std::fs::create_dir_all(&imposter).unwrap();
    user_ca(&imposter);
    gen_crl(&imposter, "imposter.crl");
    for (file, why) in [
        (d.join("notes.txt"), "not a CRL"),
        (d.join("dave.pem"), "a PEM CERTIFICATE, not a CRL"),
        (d.join("tampered.crl"), "signature does not verify"),
        (
            other.join("other.crl"),
            "its issuer, CN=Stranger CA, is not among the trusted CA",
        ),
        (
            imposter.join("imposter.crl"),
            "signature does not verify with CN=Example Users CA",
        ),
        (d.join("users.pem"), "as new or newer is held already"),
    ] {
        let a = api.call("POST", "/api/v1/crls", None, &form(&file));
        assert_eq!(a.status, 400, "{}: {}", file.display(), a.text);
        let e = a.json["error"].as_str().unwrap();
        assert!(e.contains(why), "{}: want {why:?}: {e}", file.display());
    }
    let o = api.call("GET", "/api/v1/crls", None, &[]);
    assert_eq!(o.json["crls"].as_array().unwrap().len(), 1, "{}", o.text);

    // Removal asks for the password; then the CRL is gone and Dave is encrypted to again
    // (an unknown status passes by default).
    let fp = o.json["crls"][0]["fingerprint"]
        .as_str()
        .unwrap()
        .to_string();
    let a = api.call(
        "DELETE",
        &format!("/api/v1/crls/{}", &fp[..16]),
        Some(&json!({ "password": "wrong" })),
        &[],
    );
    assert_eq!(a.status, 403, "{}", a.text);
    let a = api.call(
        "DELETE",
        &format!("/api/v1/crls/{}", &fp[..16]),
        Some(&json!({ "password": ADMIN_PASSWORD })),
        &[],
    );
    assert_eq!(a.status, 200, "{}", a.text);
    // The PEM form of the same CRL uploads now.
    let a = api.call("POST", "/api/v1/crls", None, &form(&d.join("users.pem")));
    assert_eq!(a.status, 201, "{}", a.text);
    assert_eq!(a.json["revoked"], 1);
    let audit = api.call("GET", "/api/v1/audit", None, &[]).text;
    for what in [
        "CRL added",
        "CRL removed",
        "CRLs fetched",
        "correspondent import",
    ] {
        assert!(audit.contains(what), "{what}: {audit}");
    }
}

#[test]
fn unknown_status_fails_open_or_closed_as_set_and_stale_crls_are_unknown() {
    use smimegw::revocation::{Revocation, RevocationSettings, Status, UnknownStatus};
    use smimegw::store::{CertInfo, Kind, SqliteStore, Store};

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    user_ca(d);
    user_p12_with(d, "erin", Some("erin@example.net"), (-1, 30), "pw", "");
    let pem_der = |name: &str| {
        let out = openssl(&["x509", "-in", name, "-outform", "DER"], d);
        CertInfo::parse(&out.stdout).unwrap()
    };
    let (ca, erin) = (pem_der("ca.pem"), pem_der("erin.pem"));
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&d.join("store.sqlite")).unwrap());
    store.add(Kind::Anchor, &ca, "test").unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let with = |unknown| {
        Revocation::new(
            store.clone(),
            RevocationSettings {
                unknown,
                ..Default::default()
            },
        )
    };

    // No CRL: unknown; allowed or refused as set.
    assert!(matches!(
        with(UnknownStatus::Allow).status(&erin, now),
        Status::Unknown(_)
    ));
    assert_eq!(with(UnknownStatus::Allow).check(&erin, now), Ok(()));
    let e = with(UnknownStatus::Refuse).check(&erin, now).unwrap_err();
    assert!(
        e.starts_with("revocation status unknown: no CRL from CN=Example Users CA"),
        "{e}"
    );

    // An out-of-date CRL (its next update passed): unknown too.
    openssl(
        &[
            "ca",
            "-gencrl",
            "-config",
            "ca.cnf",
            "-cert",
            "ca.pem",
            "-keyfile",
            "ca.key",
            "-crl_lastupdate",
            "20200101000000Z",
            "-crl_nextupdate",
            "20200108000000Z",
            "-out",
            "old.pem",
        ],
        d,
    );
    let old = smimegw::revocation::Crl::parse(&std::fs::read(d.join("old.pem")).unwrap()).unwrap();
    old.verify(&ca).unwrap();
    assert!(old.verify(&erin).is_err());
    smimegw::revocation::add(store.as_ref(), &old, "test", None).unwrap();
    let e = with(UnknownStatus::Refuse).check(&erin, now).unwrap_err();
    assert!(
        e.contains("out of date (next update was due 2020-01-08)"),
        "{e}"
    );
    assert_eq!(with(UnknownStatus::Allow).check(&erin, now), Ok(()));

    // A current CRL that does not list it: good, under either setting.
    gen_crl(d, "now.crl");
    let cur = smimegw::revocation::Crl::parse(&std::fs::read(d.join("now.crl")).unwrap()).unwrap();
    smimegw::revocation::add(store.as_ref(), &cur, "test", None).unwrap();
    assert_eq!(with(UnknownStatus::Refuse).status(&erin, now), Status::Good);
    // An older one does not replace it.
    assert_eq!(
        smimegw::revocation::add(store.as_ref(), &old, "test", None),
        Ok(smimegw::revocation::CrlAdded::NotNewer)
    );
}
