//! `/api/v1`: JSON over the administration core. A session comes from `POST
//! /api/v1/session` (the cookie); every changing call also carries the session's CSRF token
//! in `X-CSRF-Token`. No session: 401; an auditor changing something or a bad CSRF token:
//! 403; too many wrong passwords: 429 with `Retry-After`. The operations here are also what
//! the HTML pages call.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{ConnectInfo, Multipart, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::auth::{COOKIE, Role, Session, SignInError};
use super::{Peer, Web, session_cookie};
use crate::admin::{self, AdminError};
use crate::smime::asn1::day;
use crate::spool;
use crate::store::{Kind, Stored};

/// An answer other than success: its status and a message naming what was wrong.
#[derive(Debug)]
pub enum ApiError {
    Unauthorized,
    WrongPassword,
    Forbidden(String),
    BadRequest(String),
    NotFound(String),
    Conflict(String),
    Locked(u64),
    Unavailable(String),
    Internal(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized | ApiError::WrongPassword => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Locked(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn message(&self) -> String {
        match self {
            ApiError::Unauthorized => "not signed in".into(),
            ApiError::WrongPassword => "wrong user name or password".into(),
            ApiError::Locked(s) => format!("too many failed sign-ins; try again in {s} s"),
            ApiError::Forbidden(m)
            | ApiError::BadRequest(m)
            | ApiError::NotFound(m)
            | ApiError::Conflict(m)
            | ApiError::Unavailable(m)
            | ApiError::Internal(m) => m.clone(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut res = (self.status(), Json(json!({ "error": self.message() }))).into_response();
        if let ApiError::Locked(s) = self
            && let Ok(v) = HeaderValue::from_str(&s.to_string())
        {
            res.headers_mut().insert(header::RETRY_AFTER, v);
        }
        res
    }
}

impl From<AdminError> for ApiError {
    fn from(e: AdminError) -> Self {
        use crate::store::StoreError;
        match e {
            AdminError::Refused { .. } => ApiError::BadRequest(e.to_string()),
            AdminError::Store(StoreError::NoMatch(_)) => ApiError::NotFound(e.to_string()),
            AdminError::Store(StoreError::Ambiguous { .. }) => ApiError::BadRequest(e.to_string()),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<SignInError> for ApiError {
    fn from(e: SignInError) -> Self {
        match e {
            SignInError::Wrong => ApiError::Forbidden("wrong password".into()),
            SignInError::Locked(s) => ApiError::Locked(s),
            SignInError::Accounts(e) if e.is_temporary() => ApiError::Unavailable(e.to_string()),
            SignInError::Accounts(e) => ApiError::Internal(e.to_string()),
            SignInError::Random(e) => ApiError::Unavailable(e.to_string()),
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// Runs blocking work (SQLite, the token, Argon2) off the async threads.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> ApiResult<T> + Send + 'static,
) -> ApiResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
}

/// Refusal of a session that signed in with an expired (one-time) password.
pub const MUST_CHANGE: &str = "the password is a one-time password: change it first (POST /api/v1/password with \
     \"old\" and \"new\"); nothing else is allowed until then";

/// The signed-in session; for a change also an administrator and the CSRF token `csrf`.
/// A session that must change its password is refused (403) here.
pub fn check(web: &Web, headers: &HeaderMap, change: Option<&str>) -> ApiResult<Session> {
    let (_, s) = web.session(headers).ok_or(ApiError::Unauthorized)?;
    if s.must_change {
        return Err(ApiError::Forbidden(MUST_CHANGE.into()));
    }
    if let Some(csrf) = change {
        if !super::auth::same(csrf, &s.csrf) {
            return Err(ApiError::Forbidden(
                "missing or wrong CSRF token (X-CSRF-Token)".into(),
            ));
        }
        if s.role != Role::Admin {
            return Err(ApiError::Forbidden(
                "auditors may look but not change anything".into(),
            ));
        }
    }
    Ok(s)
}

fn csrf_header(headers: &HeaderMap) -> &str {
    headers
        .get("x-csrf-token")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

pub(super) fn changing(web: &Web, headers: &HeaderMap) -> ApiResult<Session> {
    check(web, headers, Some(csrf_header(headers)))
}

pub(super) fn reading(web: &Web, headers: &HeaderMap) -> ApiResult<Session> {
    check(web, headers, None)
}

/// The signed-in session and its cookie id, also one that must change its password (who
/// am I, sign out, change the password), with its CSRF token checked when `csrf`.
fn own_session(web: &Web, headers: &HeaderMap, csrf: bool) -> ApiResult<(String, Session)> {
    let (id, s) = web.session(headers).ok_or(ApiError::Unauthorized)?;
    if csrf && !super::auth::same(csrf_header(headers), &s.csrf) {
        return Err(ApiError::Forbidden(
            "missing or wrong CSRF token (X-CSRF-Token)".into(),
        ));
    }
    Ok((id, s))
}

// ---- views ----

/// A certificate as the consoles show it.
#[derive(Debug, Serialize)]
pub struct CertView {
    pub fingerprint: String,
    pub kind: &'static str,
    pub name: String,
    pub subject: String,
    pub issuer: String,
    pub serial: String,
    pub addresses: Vec<String>,
    pub not_before: String,
    pub not_after: String,
    /// Negative when expired.
    pub days_left: i64,
    pub can_encrypt: bool,
    pub key_uri: Option<String>,
    pub source: String,
    pub added: String,
    /// PEM, on the detail view only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pem: Option<String>,
}

pub fn cert_view(s: &Stored, now: u64, pem: bool) -> CertView {
    let i = &s.info;
    CertView {
        fingerprint: i.fingerprint.clone(),
        kind: s.kind.as_str(),
        name: i.short_name(),
        subject: i.subject.clone(),
        issuer: i.issuer.clone(),
        serial: i.serial.clone(),
        addresses: i.addresses.clone(),
        not_before: day(i.not_before),
        not_after: day(i.not_after),
        days_left: (i.not_after as i64 - now as i64).div_euclid(86_400),
        can_encrypt: i.can_encrypt,
        key_uri: s.key.clone(),
        source: s.source.clone(),
        added: day(s.added),
        pem: pem.then(|| crate::ca::pem("CERTIFICATE", &[&i.der]).unwrap_or_default()),
    }
}

fn matches(s: &Stored, q: &str) -> bool {
    let q = q.trim().to_ascii_lowercase();
    q.is_empty()
        || s.info.addresses.iter().any(|a| a.contains(&q))
        || s.info.subject.to_ascii_lowercase().contains(&q)
        || s.info.fingerprint.starts_with(&q)
}

/// The certificates of `kinds` matching a search (address, subject or fingerprint).
pub async fn list_certs(
    web: &Arc<Web>,
    kinds: &'static [Kind],
    q: &str,
) -> ApiResult<Vec<CertView>> {
    let store = web.relay.store.clone();
    let q = q.to_string();
    blocking(move || {
        let now = spool::now();
        Ok(store
            .list(kinds)
            .map_err(|e| ApiError::Internal(e.to_string()))?
            .iter()
            .filter(|s| matches(s, &q))
            .map(|s| cert_view(s, now, false))
            .collect())
    })
    .await
}

/// One certificate of `kinds` by fingerprint (or its first 8+ hex digits).
pub async fn one_cert(web: &Arc<Web>, kinds: &'static [Kind], fp: &str) -> ApiResult<CertView> {
    let store = web.relay.store.clone();
    let fp = fp.trim().to_ascii_lowercase();
    blocking(move || {
        let found: Vec<Stored> = store
            .list(kinds)
            .map_err(|e| ApiError::Internal(e.to_string()))?
            .into_iter()
            .filter(|s| fp.len() >= 8 && s.info.fingerprint.starts_with(&fp))
            .collect();
        match found.as_slice() {
            [one] => Ok(cert_view(one, spool::now(), true)),
            [] => Err(ApiError::NotFound(format!(
                "no certificate's fingerprint starts with {fp:?}"
            ))),
            _ => Err(ApiError::BadRequest(format!(
                "{fp:?} matches several certificates; give more of the fingerprint"
            ))),
        }
    })
    .await
}

#[derive(Debug, Serialize)]
pub struct StatusView {
    pub version: &'static str,
    pub uptime_seconds: u64,
    pub smtp_listen: Vec<String>,
    pub hostname: String,
    pub outbound: String,
    pub inbound: String,
    pub queue: usize,
    pub signed: u64,
    pub encrypted: u64,
    pub decrypted: u64,
    pub verified: u64,
    pub delivered: u64,
    pub token: Value,
    pub tamper: Option<String>,
    /// Internal users' newest certificates that expire within the first warning (`[ca]
    /// expiry_warnings`, 30 days) or have expired.
    pub expiring: Vec<CertView>,
}

pub async fn status(web: &Arc<Web>) -> ApiResult<StatusView> {
    use std::sync::atomic::Ordering::Relaxed;
    let r = web.relay.clone();
    let (queue, expiring) = blocking(move || {
        let now = spool::now();
        let queue = r
            .spool
            .recover_list()
            .map_err(|e| ApiError::Internal(e.to_string()))?
            .len();
        let within = r.config.expiry_warnings.first().copied().unwrap_or(30);
        let ca = crate::relay::expiry::ca_subject(&r);
        let soon = admin::expiring(r.store.as_ref(), ca.as_deref(), now, within)?;
        let expiring = r
            .store
            .list(&[Kind::Internal])
            .map_err(|e| ApiError::Internal(e.to_string()))?
            .iter()
            .filter(|s| soon.iter().any(|e| e.fingerprint == s.info.fingerprint))
            .map(|s| cert_view(s, now, false))
            .collect();
        Ok((queue, expiring))
    })
    .await?;
    let token = web.relay.keys.token().clone();
    let answer = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        tokio::task::spawn_blocking(move || {
            let info = token.info()?;
            let caps = token.capabilities()?;
            Ok::<_, hsm::Error>((info, caps))
        }),
    )
    .await;
    let token = match answer {
        Ok(Ok(Ok((i, c)))) => json!({
            "state": "answering",
            "label": i.label,
            "backend": i.backend.to_string(),
            "model": i.model,
            "mechanisms": c.mechanisms.iter().filter(|m| m.supported)
                .map(|m| format!("{} ({})", m.name, m.detail)).collect::<Vec<_>>(),
        }),
        Ok(Ok(Err(e))) => json!({ "state": "not answering", "error": e.to_string() }),
        _ => json!({ "state": "not answering", "error": "no reply within 5 s" }),
    };
    let r = &web.relay;
    let c = &r.config;
    let st = &r.stats;
    Ok(StatusView {
        version: env!("CARGO_PKG_VERSION"),
        uptime_seconds: r.started.elapsed().map(|d| d.as_secs()).unwrap_or(0),
        smtp_listen: c.server.listen.iter().map(|a| a.to_string()).collect(),
        hostname: c.server.hostname.clone(),
        outbound: c.outbound.to_string(),
        inbound: c.inbound.to_string(),
        queue,
        signed: st.signed.load(Relaxed),
        encrypted: st.encrypted.load(Relaxed),
        decrypted: st.decrypted.load(Relaxed),
        verified: st.verified.load(Relaxed),
        delivered: st.delivered.load(Relaxed),
        token,
        tamper: r.tamper.state(),
        expiring,
    })
}

/// Imports a user's PKCS#12 (key into the token).
pub async fn upload_p12(
    web: &Arc<Web>,
    s: &Session,
    name: String,
    bytes: Vec<u8>,
    password: String,
) -> ApiResult<Value> {
    let r = web.relay.clone();
    let actor = Web::actor(s);
    let done = blocking(move || {
        let password = hsm::Pin::new(password);
        Ok(r.import_key(&actor, &name, &bytes, &password)?)
    })
    .await?;
    Ok(json!({
        "imported": done.cert.fingerprint,
        "addresses": done.cert.addresses,
        "not_after": day(done.cert.not_after),
        "key_uri": done.uri,
        "renews": done.replaces.iter().map(|c| c.fingerprint.clone()).collect::<Vec<_>>(),
        "chain": done.chain.iter().map(crate::store::CertInfo::short_name).collect::<Vec<_>>(),
    }))
}

/// Checks the signed-in user's password again (deletions).
pub async fn confirm(web: &Arc<Web>, s: &Session, password: String, ip: String) -> ApiResult<()> {
    let w = web.clone();
    let s = s.clone();
    blocking(move || match w.auth.confirm(&s, &password, &ip)? {
        true => Ok(()),
        false => Err(ApiError::Forbidden(
            "password confirmation failed: that is not your password".into(),
        )),
    })
    .await
}

/// A changing request that also carries the caller's password again (removals, approvals):
/// its session once both hold.
pub async fn confirmed_change(
    web: &Arc<Web>,
    headers: &HeaderMap,
    password: String,
    ip: String,
) -> ApiResult<Session> {
    let s = changing(web, headers)?;
    confirm(web, &s, password, ip).await?;
    Ok(s)
}

pub async fn delete_key(web: &Arc<Web>, s: &Session, fp: String) -> ApiResult<Value> {
    let r = web.relay.clone();
    let actor = Web::actor(s);
    let gone = blocking(move || {
        Ok(admin::keys::delete_key(
            r.store.as_ref(),
            &r.keys,
            &actor,
            &fp,
        )?)
    })
    .await?;
    Ok(json!({ "deleted": gone.info.fingerprint, "addresses": gone.info.addresses }))
}

pub async fn upload_trust(
    web: &Arc<Web>,
    s: &Session,
    name: String,
    bytes: Vec<u8>,
) -> ApiResult<Value> {
    let store = web.relay.store.clone();
    let actor = Web::actor(s);
    let report = blocking(move || {
        Ok(admin::import_trust(
            store.as_ref(),
            &actor,
            &name,
            &bytes,
            spool::now(),
        )?)
    })
    .await?;
    Ok(report_json(&report))
}

/// What an import added (kind, name, addresses, fingerprint) and found held already.
pub fn report_json(report: &admin::ImportReport) -> Value {
    json!({
        "added": report.added.iter().map(|(k, c)| json!({
            "kind": k.as_str(), "name": c.short_name(), "addresses": c.addresses,
            "fingerprint": c.fingerprint,
        })).collect::<Vec<_>>(),
        "known": report.known.iter().map(|c| c.fingerprint.clone()).collect::<Vec<_>>(),
    })
}

pub async fn remove_trust(web: &Arc<Web>, s: &Session, fp: String) -> ApiResult<Value> {
    let store = web.relay.store.clone();
    let actor = Web::actor(s);
    let gone = blocking(move || Ok(admin::remove_trust(store.as_ref(), &actor, &fp)?)).await?;
    Ok(json!({ "removed": gone.info.fingerprint, "kind": gone.kind.as_str() }))
}

/// Approves a candidate certificate: it becomes a correspondent's, used to encrypt.
pub async fn approve_candidate(web: &Arc<Web>, s: &Session, fp: String) -> ApiResult<Value> {
    let store = web.relay.store.clone();
    let actor = Web::actor(s);
    let done = blocking(move || Ok(admin::approve_candidate(store.as_ref(), &actor, &fp)?)).await?;
    Ok(json!({ "approved": done.info.fingerprint, "addresses": done.info.addresses }))
}

/// Removes a candidate certificate.
pub async fn reject_candidate(web: &Arc<Web>, s: &Session, fp: String) -> ApiResult<Value> {
    let store = web.relay.store.clone();
    let actor = Web::actor(s);
    let gone = blocking(move || Ok(admin::reject_candidate(store.as_ref(), &actor, &fp)?)).await?;
    Ok(json!({ "removed": gone.info.fingerprint, "kind": gone.kind.as_str() }))
}

pub async fn policy_view(web: &Arc<Web>) -> ApiResult<admin::policy::PolicyView> {
    let r = web.relay.clone();
    blocking(move || {
        Ok(admin::policy::view(
            r.store.as_ref(),
            &r.config.policy_text,
        )?)
    })
    .await
}

pub async fn policy_stage(web: &Arc<Web>, s: &Session, text: String) -> ApiResult<()> {
    let store = web.relay.store.clone();
    let actor = Web::actor(s);
    blocking(move || Ok(admin::policy::stage(store.as_ref(), &actor, &text)?)).await
}

pub async fn policy_discard(web: &Arc<Web>, s: &Session) -> ApiResult<bool> {
    let store = web.relay.store.clone();
    let actor = Web::actor(s);
    blocking(move || Ok(admin::policy::discard(store.as_ref(), &actor)?)).await
}

pub async fn policy_apply(web: &Arc<Web>, s: &Session) -> ApiResult<()> {
    let r = web.relay.clone();
    let actor = Web::actor(s);
    blocking(move || {
        let p = admin::policy::apply(r.store.as_ref(), &actor)?;
        r.set_policy(p);
        Ok(())
    })
    .await
}

pub async fn queue_list(web: &Arc<Web>) -> ApiResult<Vec<spool::Envelope>> {
    let r = web.relay.clone();
    blocking(move || {
        r.spool
            .recover_list()
            .map_err(|e| ApiError::Internal(e.to_string()))
    })
    .await
}

pub fn audited(web: &Web, s: &Session, action: &str, detail: String) {
    admin::record(web.relay.store.as_ref(), &Web::actor(s), action, detail);
}

/// A queue id from a request, or a 400 saying it is not one (before anything looks for it).
pub fn queue_id(text: &str) -> ApiResult<spool::QueueId> {
    spool::QueueId::parse(text).map_err(|e| ApiError::BadRequest(e.to_string()))
}

pub async fn queue_retry(web: &Arc<Web>, s: &Session, id: &spool::QueueId) -> ApiResult<()> {
    web.relay
        .spool
        .read(id)
        .map_err(|_| ApiError::NotFound(format!("no queued message {id}")))?;
    web.relay.queue.schedule(id.as_str(), 0);
    audited(web, s, "queue retry", id.to_string());
    Ok(())
}

pub async fn queue_delete(web: &Arc<Web>, s: &Session, id: &spool::QueueId) -> ApiResult<()> {
    crate::relay::control::delete_queued(&web.relay, id)
        .await
        .map_err(|e| {
            if e.starts_with("no queued") {
                ApiError::NotFound(e)
            } else {
                ApiError::Conflict(e)
            }
        })?;
    audited(web, s, "queue delete", id.to_string());
    Ok(())
}

pub async fn audit_log(web: &Arc<Web>, limit: usize) -> ApiResult<Vec<Value>> {
    let store = web.relay.store.clone();
    blocking(move || {
        Ok(store
            .audit_log(limit.clamp(1, 10_000))
            .map_err(|e| ApiError::Internal(e.to_string()))?
            .into_iter()
            .map(|e| {
                json!({
                    "at": crate::relay::dsn::rfc5322_date(e.at),
                    "at_unix": e.at,
                    "who": e.who, "origin": e.origin, "action": e.action, "detail": e.detail,
                })
            })
            .collect())
    })
    .await
}

/// A multipart upload: the file's name and bytes, and the other fields.
#[derive(Debug, Default)]
pub struct Upload {
    pub file_name: String,
    pub file: Option<Vec<u8>>,
    pub fields: std::collections::HashMap<String, String>,
}

impl Upload {
    /// The file's name and bytes; a 400 naming the field when there is none.
    pub fn required_file(self) -> ApiResult<(String, Vec<u8>)> {
        let file = self
            .file
            .ok_or_else(|| ApiError::BadRequest("no file in the upload (field \"file\")".into()))?;
        Ok((self.file_name, file))
    }
}

pub async fn read_upload(mut mp: Multipart) -> ApiResult<Upload> {
    let bad = |e: axum::extract::multipart::MultipartError| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::BadRequest(format!(
                "the upload is too large (at most {} bytes)",
                admin::MAX_UPLOAD
            ))
        } else {
            ApiError::BadRequest(format!("the upload is not readable form data: {e}"))
        }
    };
    let mut up = Upload::default();
    while let Some(field) = mp.next_field().await.map_err(bad)? {
        let name = field.name().unwrap_or_default().to_string();
        if name == "file" {
            up.file_name = field.file_name().unwrap_or("upload").to_string();
            up.file = Some(field.bytes().await.map_err(bad)?.to_vec());
        } else {
            up.fields.insert(name, field.text().await.map_err(bad)?);
        }
    }
    Ok(up)
}

// ---- routes ----

pub fn routes() -> Router<Arc<Web>> {
    Router::new()
        .route("/api/v1/openapi.json", get(openapi))
        .route(
            "/api/v1/session",
            post(sign_in).get(whoami).delete(sign_out),
        )
        .route("/api/v1/password", post(password))
        .route("/api/v1/users", post(add_user))
        .route("/api/v1/status", get(get_status))
        .route("/api/v1/certificates", get(get_certs).post(post_cert))
        .route("/api/v1/certificates/{fp}", get(get_cert).delete(del_cert))
        .route("/api/v1/trust", get(get_trust).post(post_trust))
        .route("/api/v1/trust/{fp}", get(get_trust_one).delete(del_trust))
        .route("/api/v1/correspondents", get(get_correspondents))
        .route("/api/v1/correspondents/{fp}", get(get_correspondent))
        .route("/api/v1/candidates", get(get_candidates))
        .route("/api/v1/candidates/{fp}", delete(del_candidate))
        .route("/api/v1/candidates/{fp}/approve", post(post_approve))
        .route("/api/v1/policy", get(get_policy))
        .route("/api/v1/policy/staged", put(put_staged).delete(del_staged))
        .route("/api/v1/policy/apply", post(post_apply))
        .route("/api/v1/queue", get(get_queue))
        .route("/api/v1/queue/{id}", get(get_queued).delete(del_queued))
        .route("/api/v1/queue/{id}/retry", post(post_retry))
        .route("/api/v1/audit", get(get_audit))
}

async fn openapi() -> Json<Value> {
    Json(super::openapi::document())
}

#[derive(Deserialize)]
struct Credentials {
    user: String,
    password: String,
}

async fn sign_in(
    State(web): State<Arc<Web>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    Json(c): Json<Credentials>,
) -> ApiResult<Response> {
    let w = web.clone();
    let ip = peer.ip();
    let (id, s) = blocking(move || match w.auth.sign_in(&c.user, &c.password, &ip) {
        Ok(x) => Ok(x),
        Err(SignInError::Wrong) => {
            tracing::warn!(user = %c.user, %ip, "web console: failed sign-in");
            Err(ApiError::WrongPassword)
        }
        Err(e) => Err(e.into()),
    })
    .await?;
    audited(&web, &s, "sign-in", "web console (API)".into());
    let mut res = Json(session_json(&s)).into_response();
    res.headers_mut()
        .insert(header::SET_COOKIE, session_cookie(COOKIE, &id));
    Ok(res)
}

/// What the API says of a session: who, the role, the CSRF token, and whether the
/// password must be changed before anything else.
fn session_json(s: &Session) -> Value {
    json!({
        "user": s.user, "role": s.role, "csrf": s.csrf,
        "must_change_password": s.must_change,
    })
}

async fn whoami(State(web): State<Arc<Web>>, headers: HeaderMap) -> ApiResult<Json<Value>> {
    let (_, s) = own_session(&web, &headers, false)?;
    Ok(Json(session_json(&s)))
}

async fn sign_out(State(web): State<Arc<Web>>, headers: HeaderMap) -> ApiResult<Response> {
    let (id, _) = own_session(&web, &headers, true)?;
    web.auth.sign_out(&id);
    let mut res = StatusCode::NO_CONTENT.into_response();
    res.headers_mut()
        .insert(header::SET_COOKIE, session_cookie(COOKIE, ""));
    Ok(res)
}

#[derive(Deserialize)]
struct PasswordChange {
    old: String,
    new: String,
}

async fn password(
    State(web): State<Arc<Web>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    headers: HeaderMap,
    Json(p): Json<PasswordChange>,
) -> ApiResult<Json<Value>> {
    // Auditors change their own password too, and so does a session that must: only the
    // session and CSRF are checked.
    let (id, s) = own_session(&web, &headers, true)?;
    let (w, s2, ip) = (web.clone(), s.clone(), peer.ip());
    blocking(move || {
        w.auth
            .change_password(&id, &s2, &p.old, &p.new, &ip)
            .map_err(ApiError::BadRequest)
    })
    .await?;
    audited(&web, &s, "password changed", String::new());
    Ok(Json(json!({ "changed": true })))
}

#[derive(Deserialize)]
struct NewUser {
    name: String,
    role: String,
    password: String,
}

async fn add_user(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    Json(u): Json<NewUser>,
) -> ApiResult<Json<Value>> {
    let s = changing(&web, &headers)?;
    let role = Role::parse(&u.role)
        .ok_or_else(|| ApiError::BadRequest(format!("role {:?}: admin or auditor", u.role)))?;
    let w = web.clone();
    let name = blocking(move || {
        w.auth
            .set_account(&u.name, role, &u.password)
            .map_err(ApiError::BadRequest)
    })
    .await?;
    audited(
        &web,
        &s,
        "account set",
        format!("{name} ({})", role.as_str()),
    );
    Ok(Json(json!({ "name": name, "role": role })))
}

async fn get_status(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
) -> ApiResult<Json<StatusView>> {
    reading(&web, &headers)?;
    Ok(Json(status(&web).await?))
}

#[derive(Deserialize, Default)]
struct Search {
    #[serde(default)]
    q: String,
}

async fn get_certs(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    Query(q): Query<Search>,
) -> ApiResult<Json<Vec<CertView>>> {
    reading(&web, &headers)?;
    Ok(Json(list_certs(&web, &[Kind::Internal], &q.q).await?))
}

async fn get_cert(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    Path(fp): Path<String>,
) -> ApiResult<Json<CertView>> {
    reading(&web, &headers)?;
    Ok(Json(one_cert(&web, &[Kind::Internal], &fp).await?))
}

async fn post_cert(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    mp: Multipart,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let s = changing(&web, &headers)?;
    let mut up = read_upload(mp).await?;
    let password = up.fields.remove("password").unwrap_or_default();
    let (name, file) = up.required_file()?;
    Ok((
        StatusCode::CREATED,
        Json(upload_p12(&web, &s, name, file, password).await?),
    ))
}

/// A removal's body: the administrator's password again.
#[derive(Deserialize)]
pub(super) struct Confirmation {
    pub password: String,
}

async fn del_cert(
    State(web): State<Arc<Web>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    headers: HeaderMap,
    Path(fp): Path<String>,
    Json(c): Json<Confirmation>,
) -> ApiResult<Json<Value>> {
    let s = confirmed_change(&web, &headers, c.password, peer.ip()).await?;
    Ok(Json(delete_key(&web, &s, fp).await?))
}

async fn get_trust(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    Query(q): Query<Search>,
) -> ApiResult<Json<Vec<CertView>>> {
    reading(&web, &headers)?;
    Ok(Json(
        list_certs(&web, &[Kind::Anchor, Kind::Intermediate], &q.q).await?,
    ))
}

async fn get_trust_one(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    Path(fp): Path<String>,
) -> ApiResult<Json<CertView>> {
    reading(&web, &headers)?;
    Ok(Json(
        one_cert(&web, &[Kind::Anchor, Kind::Intermediate], &fp).await?,
    ))
}

async fn post_trust(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    mp: Multipart,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let s = changing(&web, &headers)?;
    let (name, file) = read_upload(mp).await?.required_file()?;
    Ok((
        StatusCode::CREATED,
        Json(upload_trust(&web, &s, name, file).await?),
    ))
}

async fn del_trust(
    State(web): State<Arc<Web>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    headers: HeaderMap,
    Path(fp): Path<String>,
    Json(c): Json<Confirmation>,
) -> ApiResult<Json<Value>> {
    let s = confirmed_change(&web, &headers, c.password, peer.ip()).await?;
    Ok(Json(remove_trust(&web, &s, fp).await?))
}

async fn get_correspondents(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    Query(q): Query<Search>,
) -> ApiResult<Json<Vec<CertView>>> {
    reading(&web, &headers)?;
    Ok(Json(list_certs(&web, &[Kind::External], &q.q).await?))
}

async fn get_candidates(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    Query(q): Query<Search>,
) -> ApiResult<Json<Vec<CertView>>> {
    reading(&web, &headers)?;
    Ok(Json(list_certs(&web, &[Kind::Candidate], &q.q).await?))
}

async fn post_approve(
    State(web): State<Arc<Web>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    headers: HeaderMap,
    Path(fp): Path<String>,
    Json(c): Json<Confirmation>,
) -> ApiResult<Json<Value>> {
    let s = confirmed_change(&web, &headers, c.password, peer.ip()).await?;
    Ok(Json(approve_candidate(&web, &s, fp).await?))
}

async fn del_candidate(
    State(web): State<Arc<Web>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    headers: HeaderMap,
    Path(fp): Path<String>,
    Json(c): Json<Confirmation>,
) -> ApiResult<Json<Value>> {
    let s = confirmed_change(&web, &headers, c.password, peer.ip()).await?;
    Ok(Json(reject_candidate(&web, &s, fp).await?))
}

async fn get_correspondent(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    Path(fp): Path<String>,
) -> ApiResult<Json<CertView>> {
    reading(&web, &headers)?;
    Ok(Json(one_cert(&web, &[Kind::External], &fp).await?))
}

async fn get_policy(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
) -> ApiResult<Json<admin::policy::PolicyView>> {
    reading(&web, &headers)?;
    Ok(Json(policy_view(&web).await?))
}

#[derive(Deserialize)]
struct PolicyText {
    text: String,
}

async fn put_staged(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    Json(p): Json<PolicyText>,
) -> ApiResult<Json<admin::policy::PolicyView>> {
    let s = changing(&web, &headers)?;
    policy_stage(&web, &s, p.text).await?;
    Ok(Json(policy_view(&web).await?))
}

async fn del_staged(State(web): State<Arc<Web>>, headers: HeaderMap) -> ApiResult<StatusCode> {
    let s = changing(&web, &headers)?;
    policy_discard(&web, &s).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn post_apply(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
) -> ApiResult<Json<admin::policy::PolicyView>> {
    let s = changing(&web, &headers)?;
    policy_apply(&web, &s).await?;
    Ok(Json(policy_view(&web).await?))
}

async fn get_queue(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
) -> ApiResult<Json<Vec<spool::Envelope>>> {
    reading(&web, &headers)?;
    Ok(Json(queue_list(&web).await?))
}

async fn get_queued(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Json<spool::Envelope>> {
    reading(&web, &headers)?;
    let id = queue_id(&id)?;
    web.relay
        .spool
        .read(&id)
        .map(Json)
        .map_err(|_| ApiError::NotFound(format!("no queued message {id}")))
}

async fn post_retry(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let s = changing(&web, &headers)?;
    let id = queue_id(&id)?;
    queue_retry(&web, &s, &id).await?;
    Ok(Json(json!({ "due": id.as_str() })))
}

async fn del_queued(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let s = changing(&web, &headers)?;
    let id = queue_id(&id)?;
    queue_delete(&web, &s, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct Limit {
    limit: Option<usize>,
}

async fn get_audit(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    Query(l): Query<Limit>,
) -> ApiResult<Json<Vec<Value>>> {
    reading(&web, &headers)?;
    Ok(Json(audit_log(&web, l.limit.unwrap_or(100)).await?))
}
