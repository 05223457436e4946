//! Policy changes, staged then applied: an administrator writes the `[policy]` tables (as
//! in the configuration file), the gateway checks them and keeps them staged; "apply" puts
//! them in force at once and whole (the seed's "reflect settings"). Invalid settings are
//! refused with the reason and change nothing. Both live in the store's settings:
//! `policy.staged`, and `policy.applied` (which the relay reads at start, over the file's).

use super::{Actor, AdminError, record};
use crate::config::Policy;
use crate::policy::{APPLIED as POLICY_APPLIED, STAGED as POLICY_STAGED};
use crate::store::Store;

/// The largest policy text accepted.
const MAX_POLICY: usize = 256 * 1024;

/// The policy as an administrator sees it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PolicyView {
    /// The text in force.
    pub applied: String,
    /// Where the text in force comes from: "configuration file" or "console".
    pub applied_from: &'static str,
    /// Staged, not yet in force.
    pub staged: Option<String>,
}

/// What is in force and what is staged. `file_text` is the configuration file's
/// `[policy]` tables.
pub fn view(store: &dyn Store, file_text: &str) -> Result<PolicyView, AdminError> {
    let (applied, applied_from) = match store.setting(POLICY_APPLIED)? {
        Some(t) => (t, "console"),
        None => (file_text.to_string(), "configuration file"),
    };
    Ok(PolicyView {
        applied,
        applied_from,
        staged: store.setting(POLICY_STAGED)?,
    })
}

fn check(text: &str) -> Result<Policy, AdminError> {
    let refuse = |reason: String| AdminError::Refused {
        name: "policy".into(),
        reason,
    };
    if text.len() > MAX_POLICY {
        return Err(refuse(format!(
            "{} bytes is too long (at most {MAX_POLICY})",
            text.len()
        )));
    }
    Policy::parse(text).map_err(refuse)
}

/// Checks and stages a policy; nothing changes in the relay until [`apply`].
pub fn stage(store: &dyn Store, actor: &Actor, text: &str) -> Result<(), AdminError> {
    let text = text.replace("\r\n", "\n");
    check(&text)?;
    store.set_setting(POLICY_STAGED, Some(&text))?;
    record(
        store,
        actor,
        "policy staged",
        format!("{} line(s)", text.lines().count()),
    );
    Ok(())
}

/// Drops the staged policy.
pub fn discard(store: &dyn Store, actor: &Actor) -> Result<bool, AdminError> {
    let had = store.setting(POLICY_STAGED)?.is_some();
    if had {
        store.set_setting(POLICY_STAGED, None)?;
        record(store, actor, "policy discarded", String::new());
    }
    Ok(had)
}

/// Makes the staged policy the one in force; returns it for the relay to swap in.
pub fn apply(store: &dyn Store, actor: &Actor) -> Result<Policy, AdminError> {
    let Some(text) = store.setting(POLICY_STAGED)? else {
        return Err(AdminError::Refused {
            name: "policy".into(),
            reason: "nothing is staged".into(),
        });
    };
    // Checked again: a stored text from an older version may no longer be valid.
    let policy = check(&text)?;
    store.set_setting(POLICY_APPLIED, Some(&text))?;
    store.set_setting(POLICY_STAGED, None)?;
    record(
        store,
        actor,
        "policy applied",
        format!("{} line(s)", text.lines().count()),
    );
    Ok(policy)
}
