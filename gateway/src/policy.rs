//! The one place that decides what happens to a message on its way out, per recipient: sign
//! or not, encrypt never, if possible or always. Pure: the policy, who sends, to whom, the
//! header fields when known; no keys, no certificates, no I/O. The listener (at RCPT, to
//! refuse early when a required signature cannot be made), the pipeline (per recipient) and
//! the pipeline's handling of unparsable mail all ask it, so they cannot disagree.

use crate::config::{Encrypt, Policy, Sign};
use crate::store::Store;

/// The store setting holding the policy applied from a console (its `[policy]` text),
/// which is in force over the configuration file's.
pub const APPLIED: &str = "policy.applied";

/// The store setting holding the staged policy text.
pub const STAGED: &str = "policy.staged";

/// The policy in force, and where it comes from.
#[derive(Debug, Clone)]
pub struct InForce {
    pub policy: Policy,
    /// Applied from a console (the store), rather than the configuration file's.
    pub from_console: bool,
}

/// The policy in force: the one applied from a console, else `file` (the configuration
/// file's). `Err` when the store cannot be read or the applied text no longer reads: the
/// caller chooses (the relay starts on the file's, an apply is refused).
pub fn in_force(store: &dyn Store, file: &Policy) -> Result<InForce, String> {
    match store.setting(APPLIED).map_err(|e| e.to_string())? {
        Some(text) => Policy::parse(&text)
            .map(|policy| InForce {
                policy,
                from_console: true,
            })
            .map_err(|e| format!("the policy applied from the console does not read: {e}")),
        None => Ok(InForce {
            policy: file.clone(),
            from_console: false,
        }),
    }
}

/// Why a message goes out as it came.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AsReceived {
    /// The sender is not one of ours (mail relayed for an internal client).
    ExternalSender,
    /// The policy's archive address gets the message as received.
    ArchiveCopy,
}

/// The decision for one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Sign with the sender's key.
    pub sign: bool,
    /// Encrypt to the recipient's certificate: never, when one is known, or always (then a
    /// recipient without one fails).
    pub encrypt: Encrypt,
    /// Set when nothing is done at all, and why.
    pub as_received: Option<AsReceived>,
    /// The never-sign header rule that matched (its field name), when one did.
    pub header_exception: Option<String>,
}

impl Decision {
    fn as_received(why: AsReceived) -> Decision {
        Decision {
            sign: false,
            encrypt: Encrypt::Never,
            as_received: Some(why),
            header_exception: None,
        }
    }

    /// Whether policy protects this copy: it must not go out without what the decision
    /// asks (a message that cannot be processed fails rather than going out as received).
    pub fn protects(&self) -> bool {
        self.sign || self.encrypt == Encrypt::Required
    }
}

/// What to do with mail from `sender` (an internal address or not: `sender_internal`) to
/// `recipient`. `header` is the message's header fields (name, unfolded value) when known
/// (not yet at RCPT: no header exception applies then); `tagged`: the subject carried the
/// encryption tag, which forces encryption.
pub fn decide<'h>(
    policy: &Policy,
    sender: &str,
    sender_internal: bool,
    recipient: &str,
    header: Option<&[(&'h str, &'h str)]>,
    tagged: bool,
) -> Decision {
    if !sender_internal {
        return Decision::as_received(AsReceived::ExternalSender);
    }
    if policy
        .archive_bcc
        .as_deref()
        .is_some_and(|a| a.eq_ignore_ascii_case(recipient))
    {
        return Decision::as_received(AsReceived::ArchiveCopy);
    }
    let rules = policy.rules_for(sender);
    let header_exception = header.and_then(|fields| {
        policy
            .never_sign_headers
            .iter()
            .find(|h| {
                fields
                    .iter()
                    .any(|(n, v)| n.eq_ignore_ascii_case(&h.name) && h.pattern.is_match(v))
            })
            .map(|h| h.name.clone())
    });
    Decision {
        sign: rules.sign == Sign::Always
            && !policy.never_sign_to(recipient)
            && header_exception.is_none(),
        encrypt: if tagged {
            Encrypt::Required
        } else {
            rules.encrypt
        },
        as_received: None,
        header_exception,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(text: &str) -> Policy {
        Policy::parse(text).unwrap_or_else(|e| panic!("{e}"))
    }

    const POLICY: &str = r#"
[policy]
archive_bcc = "archive@example.org"
never_sign_to = ["@lists\\.example\\.net$"]
never_sign_headers = [{ name = "X-No-Sign", pattern = "^yes$" }]
[policy.domain."legal.example.com"]
encrypt = "required"
[policy.sender."intern@example.com"]
sign = "never"
[policy.sender."boss@legal.example.com"]
encrypt = "never"
"#;

    /// (sender, internal, recipient, header, tagged) → (sign, encrypt, as received).
    #[test]
    fn the_decision_table() {
        use AsReceived::*;
        use Encrypt::*;
        let p = policy(POLICY);
        let no_sign = [("X-No-Sign", "yes")];
        let other = [("X-No-Sign", "no"), ("Subject", "hi")];
        type Row<'a> = (
            &'a str,
            bool,
            &'a str,
            Option<&'a [(&'a str, &'a str)]>,
            bool,
            (bool, Encrypt, Option<AsReceived>),
        );
        let table: &[Row<'_>] = &[
            // The defaults: sign always, encrypt if possible.
            (
                "alice@example.com",
                true,
                "bob@example.net",
                None,
                false,
                (true, IfPossible, None),
            ),
            (
                "alice@example.com",
                true,
                "bob@example.net",
                Some(&other),
                false,
                (true, IfPossible, None),
            ),
            // The sender's rules, the domain's, the sender's over the domain's.
            (
                "intern@example.com",
                true,
                "bob@example.net",
                None,
                false,
                (false, IfPossible, None),
            ),
            (
                "eve@legal.example.com",
                true,
                "bob@example.net",
                None,
                false,
                (true, Required, None),
            ),
            (
                "boss@legal.example.com",
                true,
                "bob@example.net",
                None,
                false,
                (true, Never, None),
            ),
            // Destination and header exceptions: not signed; encryption still as the rules say.
            (
                "alice@example.com",
                true,
                "x@lists.example.net",
                None,
                false,
                (false, IfPossible, None),
            ),
            (
                "alice@example.com",
                true,
                "bob@example.net",
                Some(&no_sign),
                false,
                (false, IfPossible, None),
            ),
            // Already S/MIME (the default header rule is replaced here by the policy's own).
            // The subject tag forces encryption, whatever the rules.
            (
                "boss@legal.example.com",
                true,
                "bob@example.net",
                None,
                true,
                (true, Required, None),
            ),
            (
                "intern@example.com",
                true,
                "bob@example.net",
                None,
                true,
                (false, Required, None),
            ),
            // The archive copy and external senders: as received, even when tagged.
            (
                "alice@example.com",
                true,
                "Archive@Example.org",
                None,
                true,
                (false, Never, Some(ArchiveCopy)),
            ),
            (
                "bob@example.net",
                false,
                "carol@example.org",
                None,
                false,
                (false, Never, Some(ExternalSender)),
            ),
        ];
        for (i, (sender, internal, rcpt, header, tagged, want)) in table.iter().enumerate() {
            let d = decide(&p, sender, *internal, rcpt, *header, *tagged);
            assert_eq!((d.sign, d.encrypt, d.as_received), *want, "row {i}: {d:?}");
        }
        let d = decide(
            &p,
            "alice@example.com",
            true,
            "bob@example.net",
            Some(&no_sign),
            false,
        );
        assert_eq!(d.header_exception.as_deref(), Some("X-No-Sign"));
    }

    #[test]
    fn already_smime_mail_is_not_signed_again_by_default() {
        let p = policy("[policy]\n");
        let h = [(
            "Content-Type",
            "multipart/signed; protocol=\"application/pkcs7-signature\"",
        )];
        let d = decide(
            &p,
            "alice@example.com",
            true,
            "bob@example.net",
            Some(&h),
            false,
        );
        assert!(!d.sign && d.header_exception.as_deref() == Some("Content-Type"));
        // The Japanese carriers are never signed to by default.
        let d = decide(&p, "alice@example.com", true, "x@docomo.ne.jp", None, false);
        assert!(!d.sign);
    }

    #[test]
    fn the_policy_in_force_is_the_consoles_else_the_files() {
        use crate::store::SqliteStore;
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let store =
            SqliteStore::open(&dir.path().join("store.sqlite")).unwrap_or_else(|e| panic!("{e}"));
        let file = policy("[policy]\nsign = \"never\"\n");
        let f = in_force(&store, &file).unwrap_or_else(|e| panic!("{e}"));
        assert!(!f.from_console && f.policy.default.sign == Sign::Never);
        store
            .set_setting(APPLIED, Some("[policy]\nsign = \"always\"\n"))
            .unwrap_or_else(|e| panic!("{e}"));
        let f = in_force(&store, &file).unwrap_or_else(|e| panic!("{e}"));
        assert!(f.from_console && f.policy.default.sign == Sign::Always);
        store
            .set_setting(APPLIED, Some("[policy]\nsign = \"maybe\"\n"))
            .unwrap_or_else(|e| panic!("{e}"));
        let e = in_force(&store, &file).unwrap_err();
        assert!(e.contains("does not read"), "{e}");
    }

    #[test]
    fn what_policy_protects() {
        let p = policy(POLICY);
        let protects = |s: &str, r: &str| decide(&p, s, true, r, None, false).protects();
        assert!(protects("alice@example.com", "bob@example.net"));
        assert!(!protects("alice@example.com", "archive@example.org"));
        assert!(!protects("intern@example.com", "bob@example.net"));
        assert!(protects("intern@legal.example.com", "x@lists.example.net"));
    }
}
