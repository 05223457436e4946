//! Any bytes as a next hop's replies, in pieces whose sizes come from the input: the reply
//! reader must never panic, must keep its limits (codes 200-599, at most 256 lines of a
//! reply) and must stop at the first malformed line; what it returns is used the way the
//! delivery uses it (capabilities from EHLO, one-line summaries, the MAIL and RCPT commands).
#![no_main]

use libfuzzer_sys::fuzz_target;
use smimegw::smtp::client::{Capabilities, ReplyReader, Transaction};

fuzz_target!(|data: &[u8]| {
    let Some((&step, rest)) = data.split_first() else {
        return;
    };
    let step = usize::from(step % 32) + 1;
    let mut reader = ReplyReader::default();
    let tx = Transaction {
        from: "alice@example.com".into(),
        recipients: vec![("bob@example.net".into(), Some("FAILURE".into()), None)],
        size: 4096,
        eight_bit: true,
        smtputf8: false,
        ret_full: Some(true),
        envid: Some("x".into()),
    };
    'feed: for piece in rest.chunks(step) {
        reader.receive(piece);
        loop {
            match reader.next_reply() {
                Ok(Some(r)) => {
                    assert!((200..600).contains(&r.code));
                    assert!(!r.lines.is_empty() && r.lines.len() <= 256);
                    let caps = Capabilities::from_ehlo(&r);
                    let _ = (r.one_line(), r.is_permanent());
                    assert!(tx.mail_command(&caps).ends_with("\r\n"));
                    for c in tx.rcpt_commands(&caps) {
                        assert!(c.ends_with("\r\n"));
                    }
                }
                Ok(None) => break,
                Err(_) => break 'feed,
            }
        }
    }
});
