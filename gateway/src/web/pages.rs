//! The web console's pages: plain HTML forms, no JavaScript. Each page reads through the
//! same operations as the API ([`super::api`]); each form carries the session's CSRF token
//! (the sign-in form a token of its own, in a cookie). A POST answers with the page and a
//! notice saying what was done or what was wrong.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, Form, Multipart, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};

use super::api::{self, ApiError, ApiResult, CertView};
use super::auth::{COOKIE, PRE_COOKIE, Role, Session, SignInError};
use super::{Peer, Web, cookie, session_cookie};
use crate::store::Kind;

/// HTML-escapes text.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font-family:sans-serif;margin:0;color:#222}\
nav{background:#234;padding:.5em 1em}nav a,nav button{color:#fff;margin-right:1em;\
text-decoration:none;background:none;border:0;font:inherit;cursor:pointer}\
main{padding:1em 2em;max-width:75em}table{border-collapse:collapse;margin:.5em 0}\
td,th{border:1px solid #ccc;padding:.25em .5em;text-align:left;vertical-align:top}\
.ok{background:#e6f4e6;border:1px solid #7a7;padding:.5em;margin:.5em 0}\
.err{background:#fbe9e9;border:1px solid #c77;padding:.5em;margin:.5em 0}\
.warn{background:#fff6dd;border:1px solid #cb6;padding:.5em;margin:.5em 0}\
textarea{width:100%;font-family:monospace}form.inline{display:inline}\
fieldset{margin:1em 0}code,pre{font-family:monospace}";

/// A notice above the page's content.
#[derive(Debug)]
pub enum Notice {
    None,
    Ok(String),
    Err(String),
}

fn layout(s: &Session, banner: &str, title: &str, notice: &Notice, body: &str) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>\
         <meta name=viewport content='width=device-width'>\
         <title>{t} - smimegw</title><style>{STYLE}</style></head><body><nav>\
         <a href='/'>Dashboard</a><a href='/certificates'>Certificates</a>\
         <a href='/trust'>Trust anchors</a><a href='/correspondents'>Correspondents</a><a href='/candidates'>Candidates</a>\
         <a href='/crls'>CRLs</a><a href='/ca'>CA</a>\
         <a href='/policy'>Policy</a><a href='/queue'>Queue</a><a href='/audit'>Audit log</a>\
         <a href='/password'>Password</a>\
         <form class=inline method=post action='/logout'><input type=hidden name=csrf value='{c}'>\
         <button type=submit id=signout>Sign out {u} ({r})</button></form></nav><main><h1>{t}</h1>",
        t = esc(title),
        c = esc(&s.csrf),
        u = esc(&s.user),
        r = s.role.as_str()
    );
    if !banner.is_empty() {
        let _ = write!(h, "<div class=warn id=banner>{}</div>", esc(banner));
    }
    match notice {
        Notice::None => {}
        Notice::Ok(m) => {
            let _ = write!(h, "<div class=ok id=notice>{}</div>", esc(m));
        }
        Notice::Err(m) => {
            let _ = write!(h, "<div class=err id=notice>{}</div>", esc(m));
        }
    }
    h.push_str(body);
    h.push_str("</main></body></html>");
    h
}

pub(super) fn csrf_field(s: &Session) -> String {
    format!("<input type=hidden name=csrf value='{}'>", esc(&s.csrf))
}

pub(super) fn page(web: &Web, s: &Session, title: &str, notice: Notice, body: &str) -> Response {
    let status = match notice {
        Notice::Err(_) => StatusCode::BAD_REQUEST,
        _ => StatusCode::OK,
    };
    (status, Html(layout(s, &web.banner(), title, &notice, body))).into_response()
}

/// The session, or the way to the sign-in page; a session that must change its password
/// is sent to the password page. (The `Err` is the answer itself, returned once per
/// request: its size does not matter.)
#[allow(clippy::result_large_err)]
pub(super) fn session_or_login(web: &Web, headers: &HeaderMap) -> Result<Session, Response> {
    let (_, s) = own_session(web, headers)?;
    if s.must_change {
        return Err(Redirect::to("/password").into_response());
    }
    Ok(s)
}

/// The session and its cookie id, also one that must change its password (the password
/// page), or the way to the sign-in page.
#[allow(clippy::result_large_err)]
fn own_session(web: &Web, headers: &HeaderMap) -> Result<(String, Session), Response> {
    web.session(headers)
        .ok_or_else(|| Redirect::to("/login").into_response())
}

/// For a form that changes something: the session, its CSRF token, an administrator.
#[allow(clippy::result_large_err)]
pub(super) fn change_allowed(
    web: &Web,
    headers: &HeaderMap,
    csrf: &str,
) -> Result<Session, Response> {
    let s = session_or_login(web, headers)?;
    if !super::auth::same(csrf, &s.csrf) {
        return Err((
            StatusCode::FORBIDDEN,
            Html(layout(
                &s,
                &web.banner(),
                "Refused",
                &Notice::Err("the form's CSRF token is missing or wrong; reload the page".into()),
                "",
            )),
        )
            .into_response());
    }
    if s.role != Role::Admin {
        return Err((
            StatusCode::FORBIDDEN,
            Html(layout(
                &s,
                &web.banner(),
                "Refused",
                &Notice::Err("auditors may look but not change anything".into()),
                "",
            )),
        )
            .into_response());
    }
    Ok(s)
}

/// A multipart form that changes something: the session (checked with the form's CSRF
/// token, an administrator) and the upload, or why the upload could not be read.
#[allow(clippy::result_large_err)]
pub(super) async fn upload_form(
    web: &Web,
    headers: &HeaderMap,
    mp: Multipart,
) -> Result<(Session, ApiResult<api::Upload>), Response> {
    match api::read_upload(mp).await {
        Ok(up) => {
            let csrf = up.fields.get("csrf").map_or("", String::as_str);
            Ok((change_allowed(web, headers, csrf)?, Ok(up)))
        }
        Err(e) => Ok((session_or_login(web, headers)?, Err(e))),
    }
}

/// What a confirmed removal form removes.
pub(super) enum Removal {
    Key,
    Trust,
    Crl,
    /// Not a removal: a candidate approved, with the same confirmation.
    ApproveCandidate,
    RejectCandidate,
}

/// A form that removes something for good: an administrator, the form's CSRF token and the
/// password typed again; then the removal of `fingerprint`.
#[allow(clippy::result_large_err)]
pub(super) async fn confirmed_removal(
    web: &Arc<Web>,
    peer: Peer,
    headers: &HeaderMap,
    f: &HashMap<String, String>,
    what: Removal,
) -> Result<(Session, ApiResult<serde_json::Value>), Response> {
    let field = |k: &str| f.get(k).cloned().unwrap_or_default();
    let s = change_allowed(web, headers, &field("csrf"))?;
    let r = match api::confirm(web, &s, field("password"), peer.ip()).await {
        Ok(()) => match what {
            Removal::Key => api::delete_key(web, &s, field("fingerprint")).await,
            Removal::Trust => api::remove_trust(web, &s, field("fingerprint")).await,
            Removal::Crl => super::pki::remove_crl(web, &s, field("fingerprint")).await,
            Removal::ApproveCandidate => {
                api::approve_candidate(web, &s, field("fingerprint")).await
            }
            Removal::RejectCandidate => api::reject_candidate(web, &s, field("fingerprint")).await,
        },
        Err(e) => Err(e),
    };
    Ok((s, r))
}

/// An admin's form to upload one file (`name=file`, its input and button ids from `id`).
pub(super) fn upload_fieldset(s: &Session, legend: &str, action: &str, id: &str) -> String {
    format!(
        "<fieldset><legend>{legend}</legend><form method=post action='{action}' \
         enctype='multipart/form-data'>{} <input type=file name=file id={id}file> \
         <button type=submit id={id}upload>Upload</button></form></fieldset>",
        csrf_field(s)
    )
}

/// An admin's form to remove something by fingerprint, with the password again.
pub(super) fn removal_fieldset(s: &Session, legend: &str, action: &str) -> String {
    confirmed_fieldset(s, legend, action, "Remove")
}

/// An admin's form to act on something by fingerprint, with the password again.
pub(super) fn confirmed_fieldset(s: &Session, legend: &str, action: &str, button: &str) -> String {
    format!(
        "<fieldset><legend>{legend}</legend><form method=post action='{action}'>{}\
         <label>Fingerprint <input name=fingerprint></label> <label>Your password \
         <input type=password name=password></label> <button type=submit>{button}</button>\
         </form></fieldset>",
        csrf_field(s)
    )
}

/// The file of an upload form, or the notice saying why there is none.
pub(super) fn uploaded_file(
    up: ApiResult<api::Upload>,
    missing: &str,
) -> Result<(String, Vec<u8>), Notice> {
    match up {
        Err(e) => Err(Notice::Err(e.message())),
        Ok(up) => match up.file {
            None => Err(Notice::Err(missing.into())),
            Some(f) => Ok((up.file_name, f)),
        },
    }
}

pub(super) fn outcome<T>(r: ApiResult<T>, ok: impl FnOnce(T) -> String) -> Notice {
    match r {
        Ok(v) => Notice::Ok(ok(v)),
        Err(e) => Notice::Err(e.message()),
    }
}

pub fn routes() -> Router<Arc<Web>> {
    Router::new()
        .merge(super::pki_pages::routes())
        .route("/login", get(login_form).post(login))
        .route("/logout", post(logout))
        .route("/", get(dashboard))
        .route("/certificates", get(certificates))
        .route("/certificates/upload", post(certificates_upload))
        .route("/certificates/delete", post(certificates_delete))
        .route("/certificates/{fp}", get(certificate))
        .route("/trust", get(trust))
        .route("/trust/upload", post(trust_upload))
        .route("/trust/remove", post(trust_remove))
        .route("/correspondents", get(correspondents))
        .route("/candidates", get(candidates))
        .route("/candidates/approve", post(candidates_approve))
        .route("/candidates/reject", post(candidates_reject))
        .route("/policy", get(policy))
        .route("/policy/stage", post(policy_stage))
        .route("/policy/apply", post(policy_apply))
        .route("/policy/discard", post(policy_discard))
        .route("/queue", get(queue))
        .route("/queue/retry", post(queue_retry))
        .route("/queue/delete", post(queue_delete))
        .route("/audit", get(audit))
        .route("/password", get(password_form).post(password))
}

// ---- sign-in ----

/// The sign-in page with a fresh form token (also set as its cookie), and `error` above it.
fn login_page(error: Option<&str>) -> Response {
    let token = match super::auth::token() {
        Ok(t) => t,
        Err(e) => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("no random token for the sign-in form: {e}"),
            )
                .into_response();
        }
    };
    let mut h = format!(
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>Sign in - smimegw\
         </title><style>{STYLE}</style></head><body><main><h1>smimegw: sign in</h1>"
    );
    if let Some(e) = error {
        let _ = write!(h, "<div class=err id=notice>{}</div>", esc(e));
    }
    let _ = write!(
        h,
        "<form method=post action='/login'><input type=hidden name=csrf value='{}'>\
         <p><label>User <input name=user id=user autocomplete=username required></label></p>\
         <p><label>Password <input type=password name=password id=password \
         autocomplete=current-password required></label></p>\
         <p><button type=submit id=signin>Sign in</button></p></form></main></body></html>",
        esc(&token)
    );
    let status = if error.is_some() {
        StatusCode::FORBIDDEN
    } else {
        StatusCode::OK
    };
    let mut res = (status, Html(h)).into_response();
    res.headers_mut()
        .insert(header::SET_COOKIE, session_cookie(PRE_COOKIE, &token));
    res
}

async fn login_form() -> Response {
    login_page(None)
}

async fn login(
    State(web): State<Arc<Web>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    headers: HeaderMap,
    Form(f): Form<HashMap<String, String>>,
) -> Response {
    let field = |k: &str| f.get(k).cloned().unwrap_or_default();
    let pre = cookie(&headers, PRE_COOKIE).unwrap_or_default();
    if pre.is_empty() || !super::auth::same(&pre, &field("csrf")) {
        return login_page(Some(
            "the sign-in form expired or did not come from this console; try again",
        ));
    }
    let (w, user, pw, ip) = (web.clone(), field("user"), field("password"), peer.ip());
    let result = tokio::task::spawn_blocking(move || w.auth.sign_in(&user, &pw, &ip)).await;
    match result {
        Ok(Ok((id, s))) => {
            api::audited(&web, &s, "sign-in", "web console".into());
            let mut res = Redirect::to("/").into_response();
            let h = res.headers_mut();
            h.append(header::SET_COOKIE, session_cookie(COOKIE, &id));
            h.append(header::SET_COOKIE, session_cookie(PRE_COOKIE, ""));
            res
        }
        Ok(Err(SignInError::Wrong)) => {
            tracing::warn!(user = %field("user"), ip = %peer.ip(), "web console: failed sign-in");
            login_page(Some("wrong user name or password"))
        }
        Ok(Err(e)) => {
            let mut res = login_page(Some(&e.to_string()));
            match &e {
                SignInError::Locked(_) => *res.status_mut() = StatusCode::TOO_MANY_REQUESTS,
                SignInError::Accounts(a) if a.is_temporary() => {
                    *res.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                }
                _ => {}
            }
            res
        }
        Err(e) => login_page(Some(&e.to_string())),
    }
}

async fn logout(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    Form(f): Form<HashMap<String, String>>,
) -> Response {
    if let Some((id, s)) = web.session(&headers)
        && super::auth::same(f.get("csrf").map_or("", String::as_str), &s.csrf)
    {
        web.auth.sign_out(&id);
        api::audited(&web, &s, "sign-out", "web console".into());
    }
    let mut res = Redirect::to("/login").into_response();
    res.headers_mut()
        .insert(header::SET_COOKIE, session_cookie(COOKIE, ""));
    res
}

// ---- dashboard ----

async fn dashboard(State(web): State<Arc<Web>>, headers: HeaderMap) -> Response {
    let s = match session_or_login(&web, &headers) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let st = match api::status(&web).await {
        Ok(st) => st,
        Err(e) => return page(&web, &s, "Dashboard", Notice::Err(e.message()), ""),
    };
    let mut b = String::new();
    if let Some(t) = &st.tamper {
        let _ = write!(
            b,
            "<div class=err>TAMPER: {}: signing and decrypting are stopped until an \
             administrator clears it on the serial console.</div>",
            esc(t)
        );
    }
    for c in &st.expiring {
        let when = if c.days_left < 0 {
            format!("expired on {}", c.not_after)
        } else {
            format!("expires in {} day(s), on {}", c.days_left, c.not_after)
        };
        let _ = write!(
            b,
            "<div class=warn>The certificate of {} {when}: upload a renewed PKCS#12.</div>",
            esc(&c.addresses.join(", "))
        );
    }
    let token = |k: &str| st.token.get(k).and_then(|v| v.as_str()).unwrap_or("");
    let _ = write!(
        b,
        "<table id=status><tr><th>Version</th><td>{}</td></tr>\
         <tr><th>SMTP</th><td>{} ({})</td></tr>\
         <tr><th>Outbound next hop</th><td>{}</td></tr>\
         <tr><th>Inbound next hop</th><td>{}</td></tr>\
         <tr><th>Queue</th><td id=queue-size>{} message(s)</td></tr>\
         <tr><th>Since start</th><td>{} delivered: {} signed, {} encrypted, {} decrypted, \
         {} verified</td></tr>\
         <tr><th>Token</th><td>{} {} {} {}</td></tr>\
         <tr><th>Mechanisms</th><td><code>{}</code></td></tr></table>",
        esc(st.version),
        esc(&st.smtp_listen.join(", ")),
        esc(&st.hostname),
        esc(&st.outbound),
        esc(&st.inbound),
        st.queue,
        st.delivered,
        st.signed,
        st.encrypted,
        st.decrypted,
        st.verified,
        esc(token("state")),
        esc(token("label")),
        esc(token("model")),
        esc(token("error")),
        esc(&st.token["mechanisms"]
            .as_array()
            .map(|a| a
                .iter()
                .filter_map(|m| m.as_str())
                .collect::<Vec<_>>()
                .join("; "))
            .unwrap_or_default()),
    );
    page(&web, &s, "Dashboard", Notice::None, &b)
}

// ---- certificates ----

fn cert_table(certs: &[CertView], link: Option<&str>) -> String {
    let mut b = String::from(
        "<table class=certs><tr><th>Name</th><th>Addresses</th><th>Valid until</th>\
         <th>Fingerprint</th><th>Source</th></tr>",
    );
    for c in certs {
        let fp = &c.fingerprint[..16];
        let name = match link {
            Some(base) => format!(
                "<a href='{base}/{}'>{}</a>",
                esc(&c.fingerprint),
                esc(&c.name)
            ),
            None => esc(&c.name),
        };
        let until = if c.days_left < 0 {
            format!("{} (expired)", c.not_after)
        } else if c.days_left < 30 {
            format!("{} ({} days left)", c.not_after, c.days_left)
        } else {
            c.not_after.clone()
        };
        let _ = write!(
            b,
            "<tr><td>{name}</td><td>{}</td><td>{}</td><td><code>{fp}</code></td><td>{}</td></tr>",
            esc(&c.addresses.join(", ")),
            esc(&until),
            esc(&c.source)
        );
    }
    b.push_str("</table>");
    if certs.is_empty() {
        b.push_str("<p>None.</p>");
    }
    b
}

fn search_form(action: &str, q: &str) -> String {
    format!(
        "<form method=get action='{action}'><input name=q value='{}' \
         placeholder='address, name or fingerprint'> <button type=submit>Search</button></form>",
        esc(q)
    )
}

async fn certificates_page(web: &Arc<Web>, s: &Session, q: &str, notice: Notice) -> Response {
    let list = api::list_certs(web, &[Kind::Internal], q).await;
    let mut b = search_form("/certificates", q);
    match list {
        Ok(l) => b.push_str(&cert_table(&l, Some("/certificates"))),
        Err(e) => b.push_str(&format!("<div class=err>{}</div>", esc(&e.message()))),
    }
    if s.role == Role::Admin {
        let _ = write!(
            b,
            "<fieldset><legend>Upload a user's PKCS#12 (new or renewal)</legend>\
             <form method=post action='/certificates/upload' enctype='multipart/form-data'>{}\
             <p><input type=file name=file id=p12file accept='.p12,.pfx'></p>\
             <p><label>Its password <input type=password name=password id=p12password \
             autocomplete=off></label></p><p><button type=submit id=upload>Upload</button> \
             The key goes into the token; the password is used once and not kept.</p>\
             </form></fieldset>",
            csrf_field(s)
        );
    }
    page(web, s, "Certificates", notice, &b)
}

async fn certificates(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    match session_or_login(&web, &headers) {
        Ok(s) => {
            let q = q.get("q").cloned().unwrap_or_default();
            certificates_page(&web, &s, &q, Notice::None).await
        }
        Err(r) => r,
    }
}

async fn certificates_upload(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    mp: Multipart,
) -> Response {
    let (s, up) = match upload_form(&web, &headers, mp).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let up = match up {
        Ok(u) => u,
        Err(e) => return certificates_page(&web, &s, "", Notice::Err(e.message())).await,
    };
    let notice = match up
        .file
        .filter(|f| !f.is_empty() || !up.file_name.is_empty())
    {
        None => Notice::Err("choose a PKCS#12 file first".into()),
        Some(file) => {
            let pw = up.fields.get("password").cloned().unwrap_or_default();
            outcome(
                api::upload_p12(&web, &s, up.file_name.clone(), file, pw).await,
                |v| {
                    format!(
                        "Imported {} for {}; the key is in the token ({}).",
                        up.file_name,
                        v["addresses"]
                            .as_array()
                            .map(|a| a
                                .iter()
                                .filter_map(|x| x.as_str())
                                .collect::<Vec<_>>()
                                .join(", "))
                            .unwrap_or_default(),
                        v["key_uri"].as_str().unwrap_or("")
                    )
                },
            )
        }
    };
    certificates_page(&web, &s, "", notice).await
}

async fn certificates_delete(
    State(web): State<Arc<Web>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    headers: HeaderMap,
    Form(f): Form<HashMap<String, String>>,
) -> Response {
    let (s, r) = match confirmed_removal(&web, peer, &headers, &f, Removal::Key).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let notice = outcome(r, |v| {
        format!(
            "Deleted the key and certificate {}.",
            v["deleted"].as_str().unwrap_or("")
        )
    });
    certificates_page(&web, &s, "", notice).await
}

fn detail(c: &CertView) -> String {
    let mut b = String::from("<table id=detail>");
    let rows = [
        ("Subject", c.subject.clone()),
        ("Issuer", c.issuer.clone()),
        ("Serial", c.serial.clone()),
        ("Addresses", c.addresses.join(", ")),
        ("Valid", format!("{} to {}", c.not_before, c.not_after)),
        ("Can be encrypted to", c.can_encrypt.to_string()),
        ("SHA-256 fingerprint", c.fingerprint.clone()),
        (
            "Key (PKCS#11)",
            c.key_uri.clone().unwrap_or_else(|| "-".into()),
        ),
        ("Source", format!("{} ({})", c.source, c.added)),
    ];
    for (k, v) in rows {
        let _ = write!(b, "<tr><th>{k}</th><td>{}</td></tr>", esc(&v));
    }
    b.push_str("</table>");
    if let Some(pem) = &c.pem {
        let _ = write!(b, "<pre>{}</pre>", esc(pem));
    }
    b
}

async fn certificate(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    Path(fp): Path<String>,
) -> Response {
    let s = match session_or_login(&web, &headers) {
        Ok(s) => s,
        Err(r) => return r,
    };
    match api::one_cert(&web, &[Kind::Internal], &fp).await {
        Ok(c) => {
            let mut b = detail(&c);
            if s.role == Role::Admin {
                let _ = write!(
                    b,
                    "<fieldset><legend>Delete this key</legend><form method=post \
                     action='/certificates/delete'>{}<input type=hidden name=fingerprint \
                     value='{}'><p>Mail encrypted to this key can no longer be decrypted once \
                     it is deleted.</p><p><label>Your password <input type=password \
                     name=password required></label> <button type=submit id=delete>Delete\
                     </button></p></form></fieldset>",
                    csrf_field(&s),
                    esc(&c.fingerprint)
                );
            }
            page(
                &web,
                &s,
                &format!("Certificate: {}", c.name),
                Notice::None,
                &b,
            )
        }
        Err(e) => page(&web, &s, "Certificate", Notice::Err(e.message()), ""),
    }
}

// ---- trust anchors, correspondents ----

async fn trust_page(web: &Arc<Web>, s: &Session, notice: Notice) -> Response {
    let mut b = String::new();
    match api::list_certs(web, &[Kind::Anchor, Kind::Intermediate], "").await {
        Ok(l) => b.push_str(&cert_table(&l, None)),
        Err(e) => b.push_str(&format!("<div class=err>{}</div>", esc(&e.message()))),
    }
    if s.role == Role::Admin {
        b.push_str(&upload_fieldset(
            s,
            "Trust root or intermediate CA certificates",
            "/trust/upload",
            "trust",
        ));
        b.push_str(&removal_fieldset(s, "Stop trusting one", "/trust/remove"));
    }
    page(web, s, "Trust anchors", notice, &b)
}

async fn trust(State(web): State<Arc<Web>>, headers: HeaderMap) -> Response {
    match session_or_login(&web, &headers) {
        Ok(s) => trust_page(&web, &s, Notice::None).await,
        Err(r) => r,
    }
}

async fn trust_upload(State(web): State<Arc<Web>>, headers: HeaderMap, mp: Multipart) -> Response {
    let (s, up) = match upload_form(&web, &headers, mp).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let notice = match uploaded_file(up, "choose a certificate file first") {
        Err(n) => n,
        Ok((name, f)) => outcome(api::upload_trust(&web, &s, name.clone(), f).await, |v| {
            format!(
                "{name}: {} added, {} held already.",
                v["added"].as_array().map_or(0, Vec::len),
                v["known"].as_array().map_or(0, Vec::len)
            )
        }),
    };
    trust_page(&web, &s, notice).await
}

async fn trust_remove(
    State(web): State<Arc<Web>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    headers: HeaderMap,
    Form(f): Form<HashMap<String, String>>,
) -> Response {
    let (s, r) = match confirmed_removal(&web, peer, &headers, &f, Removal::Trust).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let notice = outcome(r, |v| {
        format!(
            "No longer trusted: {}.",
            v["removed"].as_str().unwrap_or("")
        )
    });
    trust_page(&web, &s, notice).await
}

async fn correspondents(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let s = match session_or_login(&web, &headers) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let q = q.get("q").cloned().unwrap_or_default();
    correspondents_page(&web, &s, &q, Notice::None).await
}

pub(super) async fn correspondents_page(
    web: &Arc<Web>,
    s: &Session,
    q: &str,
    notice: Notice,
) -> Response {
    let mut b = search_form("/correspondents", q);
    match api::list_certs(web, &[Kind::External], q).await {
        Ok(l) => b.push_str(&cert_table(&l, None)),
        Err(e) => b.push_str(&format!("<div class=err>{}</div>", esc(&e.message()))),
    }
    if s.role == Role::Admin {
        b.push_str(&upload_fieldset(
            s,
            "Import correspondents' certificates (PEM or DER)",
            "/correspondents/upload",
            "corr",
        ));
    }
    page(web, s, "Correspondents", notice, &b)
}

async fn candidates_page(web: &Arc<Web>, s: &Session, notice: Notice) -> Response {
    let mut b = String::from(
        "<p>Certificates that came with signed mail whose signer is not trusted (no path to a \
         trust anchor). They are never used to encrypt. Approve one only after checking its \
         fingerprint with its owner.</p>",
    );
    match api::list_certs(web, &[Kind::Candidate], "").await {
        Ok(l) => b.push_str(&cert_table(&l, None)),
        Err(e) => b.push_str(&format!("<div class=err>{}</div>", esc(&e.message()))),
    }
    if s.role == Role::Admin {
        b.push_str(&confirmed_fieldset(
            s,
            "Approve one (it becomes a correspondent's certificate)",
            "/candidates/approve",
            "Approve",
        ));
        b.push_str(&removal_fieldset(s, "Reject one", "/candidates/reject"));
    }
    page(web, s, "Candidates", notice, &b)
}

async fn candidates(State(web): State<Arc<Web>>, headers: HeaderMap) -> Response {
    match session_or_login(&web, &headers) {
        Ok(s) => candidates_page(&web, &s, Notice::None).await,
        Err(r) => r,
    }
}

async fn candidates_approve(
    State(web): State<Arc<Web>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    headers: HeaderMap,
    Form(f): Form<HashMap<String, String>>,
) -> Response {
    let (s, r) = match confirmed_removal(&web, peer, &headers, &f, Removal::ApproveCandidate).await
    {
        Ok(x) => x,
        Err(r) => return r,
    };
    let notice = outcome(r, |v| {
        format!(
            "Approved: {}; mail to it is encrypted from now on.",
            v["approved"].as_str().unwrap_or("")
        )
    });
    candidates_page(&web, &s, notice).await
}

async fn candidates_reject(
    State(web): State<Arc<Web>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    headers: HeaderMap,
    Form(f): Form<HashMap<String, String>>,
) -> Response {
    let (s, r) = match confirmed_removal(&web, peer, &headers, &f, Removal::RejectCandidate).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let notice = outcome(r, |v| {
        format!("Removed: {}.", v["removed"].as_str().unwrap_or(""))
    });
    candidates_page(&web, &s, notice).await
}

// ---- policy ----

async fn policy_page(web: &Arc<Web>, s: &Session, notice: Notice, draft: Option<&str>) -> Response {
    let v = match api::policy_view(web).await {
        Ok(v) => v,
        Err(e) => return page(web, s, "Policy", Notice::Err(e.message()), ""),
    };
    let mut b = String::new();
    let _ = write!(
        b,
        "<h2>In force (from the {})</h2><pre id=applied>{}</pre>",
        v.applied_from,
        esc(&v.applied)
    );
    match &v.staged {
        Some(t) => {
            let _ = write!(
                b,
                "<h2>Staged, not yet in force</h2><pre id=staged>{}</pre>",
                esc(t)
            );
            if s.role == Role::Admin {
                let _ = write!(
                    b,
                    "<form class=inline method=post action='/policy/apply'>{c}<button \
                     type=submit id=apply>Apply</button></form> \
                     <form class=inline method=post action='/policy/discard'>{c}<button \
                     type=submit id=discard>Discard</button></form>",
                    c = csrf_field(s)
                );
            }
        }
        None => b.push_str("<p id=staged-none>Nothing staged.</p>"),
    }
    if s.role == Role::Admin {
        let text = draft
            .map(str::to_string)
            .or(v.staged.clone())
            .unwrap_or(v.applied.clone());
        let _ = write!(
            b,
            "<h2>Edit</h2><p>The <code>[policy]</code> tables as in the configuration file: \
             <code>sign</code>, <code>encrypt</code>, <code>format</code>, <code>hash</code>, \
             <code>cipher</code>; <code>[policy.domain.\"example.com\"]</code> and \
             <code>[policy.sender.\"ceo@example.com\"]</code> overrides; \
             <code>never_sign_to</code> (patterns), <code>never_sign_headers</code>, \
             <code>archive_bcc</code>, <code>encrypt_subject_tag</code>. Staging checks them; \
             nothing changes until Apply.</p>\
             <form method=post action='/policy/stage'>{}<textarea name=text id=policytext \
             rows=16>{}</textarea><p><button type=submit id=stage>Check and stage</button></p>\
             </form>",
            csrf_field(s),
            esc(&text)
        );
    }
    page(web, s, "Policy", notice, &b)
}

async fn policy(State(web): State<Arc<Web>>, headers: HeaderMap) -> Response {
    match session_or_login(&web, &headers) {
        Ok(s) => policy_page(&web, &s, Notice::None, None).await,
        Err(r) => r,
    }
}

async fn policy_stage(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    Form(f): Form<HashMap<String, String>>,
) -> Response {
    let field = |k: &str| f.get(k).cloned().unwrap_or_default();
    let s = match change_allowed(&web, &headers, &field("csrf")) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let text = field("text");
    match api::policy_stage(&web, &s, text.clone()).await {
        Ok(()) => {
            let n = Notice::Ok("Checked and staged; Apply puts it in force.".into());
            policy_page(&web, &s, n, None).await
        }
        // The draft stays in the editor to be fixed.
        Err(e) => policy_page(&web, &s, Notice::Err(e.message()), Some(&text)).await,
    }
}

async fn policy_apply(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    Form(f): Form<HashMap<String, String>>,
) -> Response {
    let s = match change_allowed(&web, &headers, f.get("csrf").map_or("", String::as_str)) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let n = outcome(api::policy_apply(&web, &s).await, |()| {
        "Applied: the new policy is in force.".into()
    });
    policy_page(&web, &s, n, None).await
}

async fn policy_discard(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    Form(f): Form<HashMap<String, String>>,
) -> Response {
    let s = match change_allowed(&web, &headers, f.get("csrf").map_or("", String::as_str)) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let n = outcome(api::policy_discard(&web, &s).await, |_| {
        "The staged policy was discarded.".into()
    });
    policy_page(&web, &s, n, None).await
}

// ---- queue, audit, password ----

async fn queue_page(web: &Arc<Web>, s: &Session, notice: Notice) -> Response {
    let envs = match api::queue_list(web).await {
        Ok(e) => e,
        Err(e) => return page(web, s, "Queue", Notice::Err(e.message()), ""),
    };
    let now = crate::spool::now();
    let mut b = format!(
        "<p id=queue-count>{} message(s) queued.</p><table id=queue><tr><th>Id</th>\
         <th>From</th><th>To</th><th>Age</th><th>Attempts</th><th>Last error</th><th></th></tr>",
        envs.len()
    );
    for e in &envs {
        let last = e
            .recipients
            .iter()
            .find_map(|r| match &r.status {
                crate::spool::Status::Pending { last: Some(l) } => Some(l.clone()),
                _ => None,
            })
            .unwrap_or_default();
        let to: Vec<&str> = e.pending().map(|r| r.address.as_str()).collect();
        let actions = if s.role == Role::Admin {
            format!(
                "<form class=inline method=post action='/queue/retry'>{c}<input type=hidden \
                 name=id value='{id}'><button type=submit>Retry</button></form> \
                 <form class=inline method=post action='/queue/delete'>{c}<input type=hidden \
                 name=id value='{id}'><button type=submit>Delete</button></form>",
                c = csrf_field(s),
                id = esc(&e.id)
            )
        } else {
            String::new()
        };
        let _ = write!(
            b,
            "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{} s</td><td>{}</td>\
             <td>{}</td><td>{actions}</td></tr>",
            esc(&e.id),
            esc(&e.from),
            esc(&to.join(", ")),
            now.saturating_sub(e.received),
            e.attempts,
            esc(&last)
        );
    }
    b.push_str("</table>");
    page(web, s, "Queue", notice, &b)
}

async fn queue(State(web): State<Arc<Web>>, headers: HeaderMap) -> Response {
    match session_or_login(&web, &headers) {
        Ok(s) => queue_page(&web, &s, Notice::None).await,
        Err(r) => r,
    }
}

async fn queue_retry(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    Form(f): Form<HashMap<String, String>>,
) -> Response {
    let field = |k: &str| f.get(k).cloned().unwrap_or_default();
    let s = match change_allowed(&web, &headers, &field("csrf")) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let n = match api::queue_id(&field("id")) {
        Ok(id) => outcome(api::queue_retry(&web, &s, &id).await, |()| {
            format!("{id} is due now.")
        }),
        Err(e) => Notice::Err(e.message()),
    };
    queue_page(&web, &s, n).await
}

async fn queue_delete(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    Form(f): Form<HashMap<String, String>>,
) -> Response {
    let field = |k: &str| f.get(k).cloned().unwrap_or_default();
    let s = match change_allowed(&web, &headers, &field("csrf")) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let n = match api::queue_id(&field("id")) {
        Ok(id) => outcome(api::queue_delete(&web, &s, &id).await, |()| {
            format!("{id} deleted.")
        }),
        Err(e) => Notice::Err(e.message()),
    };
    queue_page(&web, &s, n).await
}

async fn audit(State(web): State<Arc<Web>>, headers: HeaderMap) -> Response {
    let s = match session_or_login(&web, &headers) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let log = match api::audit_log(&web, 200).await {
        Ok(l) => l,
        Err(e) => return page(&web, &s, "Audit log", Notice::Err(e.message()), ""),
    };
    let mut b = String::from(
        "<table id=audit><tr><th>When</th><th>Who</th><th>From</th><th>What</th><th>Detail</th></tr>",
    );
    for e in &log {
        let f = |k: &str| esc(e[k].as_str().unwrap_or(""));
        let _ = write!(
            b,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            f("at"),
            f("who"),
            f("origin"),
            f("action"),
            f("detail")
        );
    }
    b.push_str("</table>");
    page(&web, &s, "Audit log", Notice::None, &b)
}

fn password_body(s: &Session) -> String {
    format!(
        "<form method=post action='/password'>{}<p><label>Current password <input \
         type=password name=old autocomplete=current-password required></label></p><p><label>\
         New password <input type=password name=new autocomplete=new-password required \
         minlength={m}></label> (at least {m} characters)</p><p><button type=submit>Change\
         </button></p></form>",
        csrf_field(s),
        m = crate::users::MIN_ADMIN_PASSWORD
    )
}

/// What the password page says to a session that must change its password.
const MUST_CHANGE_NOTICE: &str =
    "You signed in with a one-time password: choose your own before anything else.";

async fn password_form(State(web): State<Arc<Web>>, headers: HeaderMap) -> Response {
    match own_session(&web, &headers) {
        Ok((_, s)) => {
            let notice = if s.must_change {
                Notice::Err(MUST_CHANGE_NOTICE.into())
            } else {
                Notice::None
            };
            let mut res = page(&web, &s, "Change your password", notice, &password_body(&s));
            *res.status_mut() = StatusCode::OK;
            res
        }
        Err(r) => r,
    }
}

async fn password(
    State(web): State<Arc<Web>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    headers: HeaderMap,
    Form(f): Form<HashMap<String, String>>,
) -> Response {
    let field = |k: &str| f.get(k).cloned().unwrap_or_default();
    let (id, s) = match own_session(&web, &headers) {
        Ok(x) => x,
        Err(r) => return r,
    };
    if !super::auth::same(&field("csrf"), &s.csrf) {
        return page(
            &web,
            &s,
            "Change your password",
            Notice::Err("the form's CSRF token is missing or wrong; reload the page".into()),
            &password_body(&s),
        );
    }
    let (w, s2, old, new, ip) = (
        web.clone(),
        s.clone(),
        field("old"),
        field("new"),
        peer.ip(),
    );
    let r: ApiResult<()> = api::blocking(move || {
        w.auth
            .change_password(&id, &s2, &old, &new, &ip)
            .map_err(ApiError::BadRequest)
    })
    .await;
    if r.is_ok() {
        api::audited(&web, &s, "password changed", String::new());
    }
    let n = outcome(r, |()| "Your password was changed.".into());
    page(&web, &s, "Change your password", n, &password_body(&s))
}
