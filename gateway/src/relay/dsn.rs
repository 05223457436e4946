//! Delivery status notifications (RFC 3464): the report a sender gets when recipients fail
//! for good. A human-readable part with the reasons, a `message/delivery-status` part, and
//! the original's header fields (`text/rfc822-headers`; the whole message only with
//! RET=FULL).

use std::fs::File;
use std::io::{Read, Write};

use crate::smime::stream;
use crate::spool::Envelope;

/// An RFC 5322 date from seconds since the epoch (UTC).
pub fn rfc5322_date(unix: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (y, m, d, h, mi, s) = crate::smime::asn1::civil(unix);
    let weekday = (unix / 86_400) % 7;
    format!(
        "{}, {d} {} {y} {h:02}:{mi:02}:{s:02} +0000",
        DAYS[weekday as usize],
        MONTHS[(m - 1) as usize],
    )
}

/// The status code at the start of a reason ("5.7.1 ..."), or a default.
fn status_of(reason: &str, default: &'static str) -> String {
    let code = |w: &&str| {
        w.split('.').count() == 3
            && w.split('.').all(|p| p.parse::<u16>().is_ok())
            && (w.starts_with("4.") || w.starts_with("5."))
    };
    match reason.split_whitespace().find(code) {
        // A temporary code in a final failure (the queue lifetime ran out) becomes permanent.
        Some(c) => format!("5{}", &c[1..]),
        None => default.into(),
    }
}

/// Writes a DSN for `failed` (recipient address, reason) of the message `env` (spooled in
/// `original`) to `out`.
pub fn write_report(
    out: &mut dyn Write,
    hostname: &str,
    env: &Envelope,
    failed: &[(String, String)],
    original: &mut File,
    now: u64,
) -> std::io::Result<()> {
    let boundary = format!("=_smimegw_report_{}", env.id);
    write!(
        out,
        "From: Mail Delivery System <MAILER-DAEMON@{hostname}>\r\n\
         To: <{from}>\r\n\
         Subject: Undelivered Mail Returned to Sender\r\n\
         Date: {date}\r\n\
         Message-ID: <{id}.report@{hostname}>\r\n\
         Auto-Submitted: auto-replied\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: multipart/report; report-type=delivery-status;\r\n\
         \tboundary=\"{boundary}\"\r\n\
         \r\n\
         This is a delivery status notification (RFC 3464).\r\n\
         \r\n\
         --{boundary}\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\
         Content-Transfer-Encoding: 8bit\r\n\
         \r\n\
         This is the mail system at {hostname}.\r\n\
         \r\n\
         Your message could not be delivered to the recipients below.\r\n\
         \r\n",
        from = env.from,
        date = rfc5322_date(now),
        id = env.id,
    )?;
    for (addr, why) in failed {
        write!(out, "<{addr}>: {why}\r\n")?;
    }
    write!(
        out,
        "\r\n--{boundary}\r\n\
         Content-Type: message/delivery-status\r\n\
         \r\n\
         Reporting-MTA: dns; {hostname}\r\n\
         X-Smimegw-Queue-ID: {id}\r\n\
         Arrival-Date: {arrival}\r\n",
        id = env.id,
        arrival = rfc5322_date(env.received),
    )?;
    if let Some(e) = &env.envid {
        write!(out, "Original-Envelope-Id: {e}\r\n")?;
    }
    for (addr, why) in failed {
        let r = env.recipients.iter().find(|r| &r.address == addr);
        if let Some(o) = r.and_then(|r| r.orcpt.as_ref()) {
            write!(out, "\r\nOriginal-Recipient: {o}\r\n")?;
        } else {
            out.write_all(b"\r\n")?;
        }
        let one_line: String = why
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        write!(
            out,
            "Final-Recipient: rfc822; {addr}\r\n\
             Action: failed\r\n\
             Status: {status}\r\n\
             Diagnostic-Code: smtp; {one_line}\r\n\
             Last-Attempt-Date: {date}\r\n",
            status = status_of(why, "5.0.0"),
            date = rfc5322_date(now),
        )?;
    }
    let full = env.ret_full == Some(true);
    write!(
        out,
        "\r\n--{boundary}\r\nContent-Type: {}\r\n\r\n",
        if full {
            "message/rfc822"
        } else {
            "text/rfc822-headers"
        }
    )?;
    if full {
        let mut buf = Vec::new();
        original.read_to_end(&mut buf)?;
        out.write_all(&buf)?;
    } else {
        let span = stream::whole(original).map_err(std::io::Error::other)?;
        let (header, _) = stream::read_header(original, span).map_err(std::io::Error::other)?;
        out.write_all(&header)?;
    }
    write!(out, "\r\n--{boundary}--\r\n")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(rfc5322_date(0), "Thu, 1 Jan 1970 00:00:00 +0000");
        assert_eq!(
            rfc5322_date(1_795_000_000),
            "Wed, 18 Nov 2026 11:06:40 +0000"
        );
    }

    #[test]
    fn status_codes_from_reasons() {
        assert_eq!(status_of("5.7.1 policy requires", "5.0.0"), "5.7.1");
        assert_eq!(status_of("the next hop refused", "5.0.0"), "5.0.0");
        assert_eq!(
            status_of("refused: 550 5.1.1 no such user", "5.0.0"),
            "5.1.1"
        );
        assert_eq!(status_of("4.4.1 cannot connect", "5.0.0"), "5.4.1");
    }
}
