//! Expiry warnings: once at start and then daily, internal users' certificates that expire
//! within the configured days (`[ca] expiry_warnings`, default 30 and 7) are logged, as a
//! warning at the first threshold and an error at the last one and after expiry. The
//! consoles show the same list as a banner ([`crate::admin::expiring`]); the metrics carry
//! the days left.

use std::sync::Arc;
use std::time::Duration;

use super::Relay;
use crate::smime::asn1::day;

const EVERY: Duration = Duration::from_secs(86_400);

/// The subject of the built-in CA, if there is one.
pub fn ca_subject(relay: &Relay) -> Option<String> {
    relay
        .keys
        .ca_cert()
        .and_then(crate::store::CertInfo::parse)
        .map(|c| c.subject)
}

/// Logs the warnings now, then every day.
pub async fn watch(relay: Arc<Relay>) {
    loop {
        let r = relay.clone();
        let _ = tokio::task::spawn_blocking(move || warn(&r, crate::spool::now())).await;
        tokio::time::sleep(EVERY).await;
    }
}

/// One round of warnings; how many certificates were warned of.
pub fn warn(relay: &Relay, now: u64) -> usize {
    let thresholds = &relay.config.expiry_warnings;
    let (Some(first), Some(last)) = (thresholds.first(), thresholds.last()) else {
        return 0;
    };
    let list = match crate::admin::expiring(
        relay.store.as_ref(),
        ca_subject(relay).as_deref(),
        now,
        *first,
    ) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("expiry check: {e}");
            return 0;
        }
    };
    for e in &list {
        let what = if e.built_in {
            "the built-in CA renews it at the next message"
        } else {
            "upload its renewal (PKCS#12) before then"
        };
        let fp = &e.fingerprint[..16];
        if e.days_left < 0 {
            tracing::error!(address = %e.address, fingerprint = %fp,
                "certificate EXPIRED on {}; {what}", day(e.not_after));
        } else if e.days_left <= *last as i64 {
            tracing::error!(address = %e.address, fingerprint = %fp,
                "certificate expires in {} day(s), on {}; {what}", e.days_left, day(e.not_after));
        } else {
            tracing::warn!(address = %e.address, fingerprint = %fp,
                "certificate expires in {} day(s), on {}; {what}", e.days_left, day(e.not_after));
        }
    }
    list.len()
}
