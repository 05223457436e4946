//! Any bytes as an SMTP client's side of a session, delivered in pieces whose sizes come from
//! the input itself; decisions alternate between accept and reject. The server must never
//! panic, must answer in whole CRLF-terminated lines, and must hand over no more message
//! data than it was sent (twice that when bare LFs are normalised to CRLF).
#![no_main]

use libfuzzer_sys::fuzz_target;
use smimegw::smtp::{BareLineEnds, Event, Reply, Server, ServerConfig};

fuzz_target!(|data: &[u8]| {
    let Some((&step, rest)) = data.split_first() else {
        return;
    };
    let step_size = usize::from(step % 64) + 1;
    // Bare line ends normalised grow the data by at most one byte per LF.
    let (bare_line_ends, growth) = if step & 0x80 != 0 {
        (BareLineEnds::Normalize, 2)
    } else {
        (BareLineEnds::Reject, 1)
    };
    let mut s = Server::new(ServerConfig {
        max_message_size: 4096,
        max_recipients: 5,
        max_line: 512,
        starttls: true,
        auth: true,
        bare_line_ends,
        max_header_size: 1024,
        max_hops: 3,
        ..ServerConfig::default()
    });
    let mut flip = false;
    let mut data_out = 0usize;
    for piece in rest.chunks(step_size) {
        s.receive(piece);
        while let Some(e) = s.next_event() {
            match e {
                Event::Mail { .. } | Event::Rcpt { .. } | Event::DataEnd | Event::Auth { .. } => {
                    flip = !flip;
                    if flip {
                        s.accept("Ok");
                    } else {
                        s.reject(Reply::new(450, "4.2.0", "Try later"));
                    }
                }
                Event::StartTls => s.tls_started(),
                Event::Data(d) => data_out += d.len(),
                _ => {}
            }
        }
        let out = s.take_output();
        assert!(out.is_empty() || out.ends_with(b"\r\n"));
    }
    assert!(data_out <= growth * rest.len());
});
