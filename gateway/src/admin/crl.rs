//! CRLs, as administrators handle them: upload one (checked against its issuer's certificate
//! in the store before anything changes), remove one, fetch them all now, and see what is
//! held and how the last downloads went.

use super::{Actor, AdminError, record};
use crate::revocation::{self, Crl, CrlAdded, RefreshReport};
use crate::smime::asn1::day;
use crate::store::{CrlFetch, Store, StoredCrl};

/// The CRLs held and the distribution points the held certificates name (with the last
/// download from each).
#[derive(Debug, Clone, serde::Serialize)]
pub struct CrlOverview {
    pub crls: Vec<CrlView>,
    pub sources: Vec<SourceView>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct CrlView {
    pub issuer: String,
    pub fingerprint: String,
    pub this_update: String,
    /// Empty when the CRL names none.
    pub next_update: String,
    /// Past its nextUpdate: statuses under it are unknown.
    pub out_of_date: bool,
    pub number: Option<String>,
    pub revoked: u64,
    pub source: String,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct SourceView {
    pub url: String,
    /// Never tried yet: empty.
    pub last_attempt: String,
    pub error: Option<String>,
}

pub fn view(c: &StoredCrl, now: u64) -> CrlView {
    CrlView {
        issuer: c.issuer.clone(),
        fingerprint: c.fingerprint.clone(),
        this_update: day(c.this_update),
        next_update: c.next_update.map(day).unwrap_or_default(),
        out_of_date: c.next_update.is_some_and(|n| n <= now),
        number: c.number.clone(),
        revoked: c.revoked,
        source: c.source.clone(),
    }
}

/// What is held and where CRLs come from.
pub fn overview(store: &dyn Store, now: u64) -> Result<CrlOverview, AdminError> {
    let crls = store.crls()?.iter().map(|c| view(c, now)).collect();
    let fetches: Vec<CrlFetch> = store.crl_fetches()?;
    let sources = revocation::wanted_urls(store)
        .into_iter()
        .map(|url| {
            let f = fetches.iter().find(|f| f.url == url);
            SourceView {
                last_attempt: f.map(|f| day_time(f.at)).unwrap_or_default(),
                error: f.and_then(|f| f.error.clone()),
                url,
            }
        })
        .collect();
    Ok(CrlOverview { crls, sources })
}

/// How many CRLs held are past their nextUpdate at `now` (their certificates' status is
/// unknown): what the consoles warn of.
pub fn out_of_date(store: &dyn Store, now: u64) -> Result<usize, AdminError> {
    Ok(store
        .crls()?
        .iter()
        .filter(|c| c.next_update.is_some_and(|n| n <= now))
        .count())
}

fn day_time(t: u64) -> String {
    let (y, mo, d, h, mi, s) = crate::smime::asn1::civil(t);
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02} UTC")
}

/// Adds an uploaded CRL (DER or PEM). Refused, changing nothing, when it is not a CRL, its
/// issuer is not a trusted CA here, its signature does not verify, or a newer one is held.
pub fn import(
    store: &dyn Store,
    actor: &Actor,
    name: &str,
    bytes: &[u8],
) -> Result<CrlView, AdminError> {
    let refuse = |reason: String| AdminError::Refused {
        name: name.to_string(),
        reason,
    };
    let crl = Crl::parse(bytes).map_err(refuse)?;
    let source = format!("uploaded by {} ({})", actor.who, actor.origin);
    match revocation::add(store, &crl, &source, None).map_err(refuse)? {
        CrlAdded::New => {}
        CrlAdded::NotNewer => {
            return Err(refuse(format!(
                "a CRL from {} as new or newer is held already (issued {})",
                crl.issuer,
                day(crl.this_update)
            )));
        }
    }
    record(
        store,
        actor,
        "CRL added",
        format!(
            "{} ({} revoked, issued {}, fingerprint {})",
            crl.issuer,
            crl.revoked.len(),
            day(crl.this_update),
            &crl.fingerprint[..16]
        ),
    );
    let held = store
        .crls()?
        .into_iter()
        .find(|c| c.fingerprint == crl.fingerprint)
        .ok_or_else(|| refuse("it was not kept".into()))?;
    Ok(view(&held, crate::spool::now()))
}

/// Removes the CRL whose fingerprint starts with `prefix`.
pub fn remove(store: &dyn Store, actor: &Actor, prefix: &str) -> Result<StoredCrl, AdminError> {
    let gone = store.remove_crl(prefix)?;
    record(
        store,
        actor,
        "CRL removed",
        format!("{} (fingerprint {})", gone.issuer, &gone.fingerprint[..16]),
    );
    Ok(gone)
}

/// Fetches every CRL now (an administrator asked), with the running gateway's
/// `[revocation]` settings (the hosts and networks allowed, the timeout); the outcome is
/// audited.
pub fn refresh(
    store: &dyn Store,
    actor: &Actor,
    settings: &revocation::RevocationSettings,
) -> RefreshReport {
    let report = revocation::refresh(store, &revocation::FetchOptions::of(settings));
    audit_refresh(store, actor, report)
}

fn audit_refresh(store: &dyn Store, actor: &Actor, report: RefreshReport) -> RefreshReport {
    record(
        store,
        actor,
        "CRLs fetched",
        format!(
            "{} updated, {} unchanged, {} failed",
            report.updated.len(),
            report.unchanged.len(),
            report.failed.len()
        ),
    );
    report
}
