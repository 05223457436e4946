//! `/api/v1` for CRLs, the built-in CA, correspondents' uploads and the metrics; the
//! operations here are also what the CRL and CA pages call.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{ConnectInfo, Multipart, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use super::api::{
    ApiError, ApiResult, Confirmation, blocking, changing, confirmed_change, read_upload, reading,
};
use super::auth::{Session, SignInError};
use super::{Peer, Web};
use crate::admin::{self, crl::CrlOverview};
use crate::smime::asn1::day;
use crate::spool;
use crate::store::CertInfo;

// ---- operations ----

pub async fn crl_overview(web: &Arc<Web>) -> ApiResult<CrlOverview> {
    let store = web.relay.store.clone();
    blocking(move || Ok(admin::crl::overview(store.as_ref(), spool::now())?)).await
}

pub async fn upload_crl(
    web: &Arc<Web>,
    s: &Session,
    name: String,
    bytes: Vec<u8>,
) -> ApiResult<admin::crl::CrlView> {
    let r = web.relay.clone();
    let actor = Web::actor(s);
    blocking(move || {
        let v = admin::crl::import(r.store.as_ref(), &actor, &name, &bytes)?;
        r.certs.revocation().reload();
        Ok(v)
    })
    .await
}

pub async fn remove_crl(web: &Arc<Web>, s: &Session, fp: String) -> ApiResult<Value> {
    let r = web.relay.clone();
    let actor = Web::actor(s);
    blocking(move || {
        let gone = admin::crl::remove(r.store.as_ref(), &actor, &fp)?;
        r.certs.revocation().reload();
        Ok(json!({ "removed": gone.fingerprint, "issuer": gone.issuer }))
    })
    .await
}

pub async fn refresh_crls(web: &Arc<Web>, s: &Session) -> ApiResult<Value> {
    let r = web.relay.clone();
    let actor = Web::actor(s);
    blocking(move || {
        let report = admin::crl::refresh(r.store.as_ref(), &actor, &r.config.revocation);
        r.certs.revocation().reload();
        Ok(json!({
            "updated": report.updated.iter()
                .map(|(u, i)| json!({ "url": u, "issuer": i })).collect::<Vec<_>>(),
            "unchanged": report.unchanged,
            "failed": report.failed.iter()
                .map(|(u, e)| json!({ "url": u, "error": e })).collect::<Vec<_>>(),
        }))
    })
    .await
}

/// The built-in CA's certificate, for clients to trust.
pub fn ca_info(web: &Web) -> ApiResult<(CertInfo, String)> {
    let der = web.relay.keys.ca_cert().ok_or_else(|| {
        ApiError::NotFound("the built-in CA is off ([ca] enabled = false)".into())
    })?;
    let info = CertInfo::parse(der)
        .ok_or_else(|| ApiError::Internal("the CA certificate does not parse".into()))?;
    let pem =
        crate::ca::pem("CERTIFICATE", &[der]).map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok((info, pem))
}

pub async fn issue(web: &Arc<Web>, s: &Session, address: String, renew: bool) -> ApiResult<Value> {
    let r = web.relay.clone();
    let actor = Web::actor(s);
    let c = blocking(move || Ok(r.issue_certificate(&actor, &address, renew)?)).await?;
    Ok(json!({
        "fingerprint": c.fingerprint,
        "addresses": c.addresses,
        "not_before": day(c.not_before),
        "not_after": day(c.not_after),
    }))
}

pub async fn upload_correspondents(
    web: &Arc<Web>,
    s: &Session,
    name: String,
    bytes: Vec<u8>,
) -> ApiResult<Value> {
    let store = web.relay.store.clone();
    let actor = Web::actor(s);
    let report = blocking(move || {
        Ok(admin::import_correspondents(
            store.as_ref(),
            &actor,
            &name,
            &bytes,
            spool::now(),
        )?)
    })
    .await?;
    Ok(super::api::report_json(&report))
}

/// The metrics in Prometheus' text format.
pub async fn metrics(web: &Arc<Web>) -> ApiResult<String> {
    use std::fmt::Write as _;
    use std::sync::atomic::Ordering::Relaxed;
    let r = web.relay.clone();
    let (queue, expiring, crls) = blocking(move || {
        let now = spool::now();
        let queue = r
            .spool
            .recover_list()
            .map_err(|e| ApiError::Internal(e.to_string()))?
            .len();
        let horizon = r.config.expiry_warnings.first().copied().unwrap_or(30);
        let ca = crate::relay::expiry::ca_subject(&r);
        // Every internal user's newest certificate, to give the days left of each.
        let expiring = admin::expiring(r.store.as_ref(), ca.as_deref(), now, 100 * 365)?;
        let crls = r
            .store
            .crls()
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        Ok((queue, (expiring, horizon), crls))
    })
    .await?;
    let st = &web.relay.stats;
    let mut m = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, rows: &[(String, String)]| {
        let _ = writeln!(
            m,
            "# HELP smimegw_{name} {help}\n# TYPE smimegw_{name} {kind}"
        );
        for (labels, value) in rows {
            let _ = writeln!(m, "smimegw_{name}{labels} {value}");
        }
    };
    metric(
        "messages_total",
        "counter",
        "Messages delivered since start, by what was done to them.",
        &[
            ("delivered", st.delivered.load(Relaxed)),
            ("signed", st.signed.load(Relaxed)),
            ("encrypted", st.encrypted.load(Relaxed)),
            ("decrypted", st.decrypted.load(Relaxed)),
            ("verified", st.verified.load(Relaxed)),
        ]
        .map(|(k, v)| (format!("{{treatment=\"{k}\"}}"), v.to_string())),
    );
    metric(
        "queue_messages",
        "gauge",
        "Messages waiting in the queue.",
        &[(String::new(), queue.to_string())],
    );
    let (certs, horizon) = expiring;
    let now = spool::now() as i64;
    metric(
        "certificate_expiry_days",
        "gauge",
        "Days until each internal user's newest certificate expires (negative: expired).",
        &certs
            .iter()
            .map(|e| {
                (
                    format!("{{address=\"{}\"}}", prom_escape(&e.address)),
                    ((e.not_after as i64 - now) / 86_400).to_string(),
                )
            })
            .collect::<Vec<_>>(),
    );
    metric(
        "certificates_expiring",
        "gauge",
        &format!("Internal users whose certificate expires within {horizon} days or has expired."),
        &[(
            String::new(),
            certs
                .iter()
                .filter(|e| e.days_left < horizon as i64)
                .count()
                .to_string(),
        )],
    );
    metric(
        "crl_next_update_seconds",
        "gauge",
        "Seconds until each held CRL's next update is due (negative: out of date).",
        &crls
            .iter()
            .filter_map(|c| {
                let n = c.next_update?;
                Some((
                    format!("{{issuer=\"{}\"}}", prom_escape(&c.issuer)),
                    (n as i64 - now).to_string(),
                ))
            })
            .collect::<Vec<_>>(),
    );
    metric(
        "tamper",
        "gauge",
        "1 while the chassis-open latch is set.",
        &[(
            String::new(),
            u8::from(web.relay.tamper.state().is_some()).to_string(),
        )],
    );
    Ok(m)
}

fn prom_escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

// ---- routes ----

pub fn routes() -> Router<Arc<Web>> {
    Router::new()
        .route("/api/v1/crls", get(get_crls).post(post_crl))
        .route("/api/v1/crls/refresh", post(post_refresh))
        .route("/api/v1/crls/{fp}", delete(del_crl))
        .route("/api/v1/ca", get(get_ca))
        .route("/api/v1/ca/certificate", get(get_ca_pem))
        .route("/api/v1/ca/issue", post(post_issue))
        .route("/api/v1/ca/renew", post(post_renew))
        .route("/api/v1/correspondents/upload", post(post_correspondents))
        .route("/api/v1/metrics", get(get_metrics))
}

async fn get_crls(State(web): State<Arc<Web>>, headers: HeaderMap) -> ApiResult<Json<CrlOverview>> {
    reading(&web, &headers)?;
    Ok(Json(crl_overview(&web).await?))
}

async fn post_crl(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    mp: Multipart,
) -> ApiResult<(StatusCode, Json<admin::crl::CrlView>)> {
    let s = changing(&web, &headers)?;
    let (name, file) = read_upload(mp).await?.required_file()?;
    Ok((
        StatusCode::CREATED,
        Json(upload_crl(&web, &s, name, file).await?),
    ))
}

async fn post_refresh(State(web): State<Arc<Web>>, headers: HeaderMap) -> ApiResult<Json<Value>> {
    let s = changing(&web, &headers)?;
    Ok(Json(refresh_crls(&web, &s).await?))
}

async fn del_crl(
    State(web): State<Arc<Web>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    headers: HeaderMap,
    Path(fp): Path<String>,
    Json(c): Json<Confirmation>,
) -> ApiResult<Json<Value>> {
    let s = confirmed_change(&web, &headers, c.password, peer.ip()).await?;
    Ok(Json(remove_crl(&web, &s, fp).await?))
}

async fn get_ca(State(web): State<Arc<Web>>, headers: HeaderMap) -> ApiResult<Json<Value>> {
    reading(&web, &headers)?;
    let (c, pem) = ca_info(&web)?;
    Ok(Json(json!({
        "subject": c.subject,
        "fingerprint": c.fingerprint,
        "not_before": day(c.not_before),
        "not_after": day(c.not_after),
        "pem": pem,
    })))
}

async fn get_ca_pem(State(web): State<Arc<Web>>, headers: HeaderMap) -> ApiResult<Response> {
    reading(&web, &headers)?;
    let (_, pem) = ca_info(&web)?;
    let mut res = pem.into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-pem-file"),
    );
    h.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment; filename=\"smimegw-ca.pem\""),
    );
    Ok(res)
}

#[derive(Deserialize)]
struct Address {
    address: String,
}

async fn issue_answer(
    web: &Arc<Web>,
    headers: &HeaderMap,
    a: Address,
    renew: bool,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let s = changing(web, headers)?;
    Ok((
        StatusCode::CREATED,
        Json(issue(web, &s, a.address, renew).await?),
    ))
}

async fn post_issue(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    Json(a): Json<Address>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    issue_answer(&web, &headers, a, false).await
}

async fn post_renew(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    Json(a): Json<Address>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    issue_answer(&web, &headers, a, true).await
}

async fn post_correspondents(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    mp: Multipart,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let s = changing(&web, &headers)?;
    let (name, file) = read_upload(mp).await?.required_file()?;
    Ok((
        StatusCode::CREATED,
        Json(upload_correspondents(&web, &s, name, file).await?),
    ))
}

/// A session, or HTTP Basic credentials of any account (a monitoring system's auditor).
async fn get_metrics(
    State(web): State<Arc<Web>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    if let Some((_, s)) = web.session(&headers) {
        if s.must_change {
            return Err(ApiError::Forbidden(super::api::MUST_CHANGE.into()));
        }
    } else {
        let basic = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Basic "))
            .and_then(|b| crate::smime::mime::base64_decode(b.trim().as_bytes()).ok())
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or(ApiError::Unauthorized)?;
        let (user, password) = basic.split_once(':').ok_or(ApiError::Unauthorized)?;
        let (w, user, password, ip) = (
            web.clone(),
            user.to_string(),
            zeroize::Zeroizing::new(password.to_string()),
            peer.ip(),
        );
        blocking(move || match w.auth.authenticate(&user, &password, &ip) {
            Ok(a) if a.must_change => Err(ApiError::Forbidden(super::api::MUST_CHANGE.into())),
            Ok(_) => Ok(()),
            Err(SignInError::Wrong) => Err(ApiError::WrongPassword),
            Err(e) => Err(e.into()),
        })
        .await?;
    }
    let mut res = metrics(&web).await?.into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    Ok(res)
}
