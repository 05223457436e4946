//! The pages for CRLs, the built-in CA and correspondents' uploads (the operations are in
//! [`super::pki`]).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, Form, Multipart, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::{get, post};

use super::auth::{Role, Session};
use super::pages::{
    Notice, Removal, change_allowed, confirmed_removal, correspondents_page, csrf_field, esc,
    outcome, page, removal_fieldset, session_or_login, upload_fieldset, upload_form, uploaded_file,
};
use super::{Peer, Web, pki};
use crate::smime::asn1::day;

pub fn routes() -> Router<Arc<Web>> {
    Router::new()
        .route("/crls", get(crls))
        .route("/crls/upload", post(crls_upload))
        .route("/crls/refresh", post(crls_refresh))
        .route("/crls/remove", post(crls_remove))
        .route("/ca", get(ca))
        .route("/ca/issue", post(ca_issue))
        .route("/correspondents/upload", post(correspondents_upload))
}

// ---- CRLs ----

async fn crls_page(web: &Arc<Web>, s: &Session, notice: Notice) -> Response {
    let mut b = String::new();
    let unknown = web.relay.config.revocation.unknown.as_str();
    let _ = write!(
        b,
        "<p>A certificate whose issuer has no current CRL here has an unknown revocation \
         status; this gateway is set to <b id=unknown>{unknown}</b> such certificates \
         (<code>[revocation] unknown</code>).</p>"
    );
    match pki::crl_overview(web).await {
        Ok(o) => {
            b.push_str(
                "<table id=crls><tr><th>Issuer</th><th>Issued</th><th>Next update</th>\
                 <th>Revoked</th><th>Fingerprint</th><th>Source</th></tr>",
            );
            for c in &o.crls {
                let next = if c.out_of_date {
                    format!("{} (out of date)", c.next_update)
                } else {
                    c.next_update.clone()
                };
                let _ = write!(
                    b,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td>\
                     <td>{}</td></tr>",
                    esc(&c.issuer),
                    esc(&c.this_update),
                    esc(&next),
                    c.revoked,
                    esc(&c.fingerprint[..16]),
                    esc(&c.source)
                );
            }
            b.push_str("</table>");
            if o.crls.is_empty() {
                b.push_str("<p>None held.</p>");
            }
            b.push_str(
                "<h2>Distribution points</h2><p>Named by the certificates held; fetched on \
                 schedule.</p><table id=sources><tr><th>URL</th><th>Last attempt</th>\
                 <th>Result</th></tr>",
            );
            for src in &o.sources {
                let _ = write!(
                    b,
                    "<tr><td><code>{}</code></td><td>{}</td><td>{}</td></tr>",
                    esc(&src.url),
                    esc(&src.last_attempt),
                    esc(src
                        .error
                        .as_deref()
                        .unwrap_or(if src.last_attempt.is_empty() {
                            "not tried yet"
                        } else {
                            "ok"
                        }))
                );
            }
            b.push_str("</table>");
        }
        Err(e) => {
            let _ = write!(b, "<div class=err>{}</div>", esc(&e.message()));
        }
    }
    if s.role == Role::Admin {
        b.push_str(&upload_fieldset(
            s,
            "Upload a CRL (DER or PEM)",
            "/crls/upload",
            "crl",
        ));
        let _ = write!(
            b,
            "<form method=post action='/crls/refresh'>{}<button type=submit id=crlrefresh>\
             Fetch all CRLs now</button></form>",
            csrf_field(s)
        );
        b.push_str(&removal_fieldset(s, "Remove a CRL", "/crls/remove"));
    }
    page(web, s, "CRLs", notice, &b)
}

async fn crls(State(web): State<Arc<Web>>, headers: HeaderMap) -> Response {
    match session_or_login(&web, &headers) {
        Ok(s) => crls_page(&web, &s, Notice::None).await,
        Err(r) => r,
    }
}

async fn crls_upload(State(web): State<Arc<Web>>, headers: HeaderMap, mp: Multipart) -> Response {
    let (s, up) = match upload_form(&web, &headers, mp).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let notice = match uploaded_file(up, "choose a CRL file first") {
        Err(n) => n,
        Ok((name, f)) => outcome(pki::upload_crl(&web, &s, name, f).await, |v| {
            format!(
                "CRL from {} added: {} revoked, next update {}.",
                v.issuer, v.revoked, v.next_update
            )
        }),
    };
    crls_page(&web, &s, notice).await
}

async fn crls_refresh(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    Form(f): Form<HashMap<String, String>>,
) -> Response {
    let s = match change_allowed(&web, &headers, f.get("csrf").map_or("", String::as_str)) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let notice = outcome(pki::refresh_crls(&web, &s).await, |v| {
        let n = |k: &str| v[k].as_array().map_or(0, Vec::len);
        format!(
            "Fetched: {} updated, {} unchanged, {} failed.",
            n("updated"),
            n("unchanged"),
            n("failed")
        )
    });
    crls_page(&web, &s, notice).await
}

async fn crls_remove(
    State(web): State<Arc<Web>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    headers: HeaderMap,
    Form(f): Form<HashMap<String, String>>,
) -> Response {
    let (s, r) = match confirmed_removal(&web, peer, &headers, &f, Removal::Crl).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let notice = outcome(r, |v| {
        format!("CRL from {} removed.", v["issuer"].as_str().unwrap_or(""))
    });
    crls_page(&web, &s, notice).await
}

// ---- the built-in CA ----

async fn ca_page(web: &Arc<Web>, s: &Session, notice: Notice) -> Response {
    let mut b = String::new();
    match pki::ca_info(web) {
        Ok((c, pem)) => {
            let _ = write!(
                b,
                "<table id=ca><tr><th>Subject</th><td>{}</td></tr>\
                 <tr><th>Valid</th><td>{} to {}</td></tr>\
                 <tr><th>SHA-256 fingerprint</th><td><code>{}</code></td></tr></table>\
                 <p>Mail clients that should trust this gateway's users' signatures import \
                 this certificate: <a id=capem href='/api/v1/ca/certificate'>download \
                 smimegw-ca.pem</a>.</p><pre>{}</pre>",
                esc(&c.subject),
                day(c.not_before),
                day(c.not_after),
                esc(&c.fingerprint),
                esc(&pem)
            );
            if s.role == Role::Admin {
                let _ = write!(
                    b,
                    "<fieldset><legend>Issue or renew an internal user's certificate</legend>\
                     <form method=post action='/ca/issue'>{}<label>Address <input name=address \
                     id=caaddress></label> <label><input type=checkbox name=renew value=1 \
                     id=carenew> renew (a certificate is held)</label> <button type=submit \
                     id=caissue>Issue</button></form></fieldset>",
                    csrf_field(s)
                );
            }
        }
        Err(e) => {
            let _ = write!(b, "<div class=err>{}</div>", esc(&e.message()));
        }
    }
    page(web, s, "Built-in CA", notice, &b)
}

async fn ca(State(web): State<Arc<Web>>, headers: HeaderMap) -> Response {
    match session_or_login(&web, &headers) {
        Ok(s) => ca_page(&web, &s, Notice::None).await,
        Err(r) => r,
    }
}

async fn ca_issue(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    Form(f): Form<HashMap<String, String>>,
) -> Response {
    let s = match change_allowed(&web, &headers, f.get("csrf").map_or("", String::as_str)) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let address = f.get("address").cloned().unwrap_or_default();
    let renew = f.contains_key("renew");
    let notice = outcome(pki::issue(&web, &s, address.clone(), renew).await, |v| {
        format!(
            "Issued to {}: valid until {}, fingerprint {}.",
            address.trim(),
            v["not_after"].as_str().unwrap_or(""),
            v["fingerprint"]
                .as_str()
                .and_then(|f| f.get(..16))
                .unwrap_or("")
        )
    });
    ca_page(&web, &s, notice).await
}

// ---- correspondents ----

async fn correspondents_upload(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    mp: Multipart,
) -> Response {
    let (s, up) = match upload_form(&web, &headers, mp).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let notice = match uploaded_file(up, "choose a certificate file first") {
        Err(n) => n,
        Ok((name, f)) => outcome(
            pki::upload_correspondents(&web, &s, name.clone(), f).await,
            |v| {
                format!(
                    "{name}: {} added, {} held already.",
                    v["added"].as_array().map_or(0, Vec::len),
                    v["known"].as_array().map_or(0, Vec::len)
                )
            },
        ),
    };
    correspondents_page(&web, &s, "", notice).await
}
