//! Any bytes as an SMTP client's side of a session, delivered in pieces whose sizes come from
//! the input itself; decisions alternate between accept and reject. The server must never
//! panic, must answer in whole CRLF-terminated lines, and must hand over no more message
//! data than it was sent.
#![no_main]

use libfuzzer_sys::fuzz_target;
use smimegw::smtp::{Event, Reply, Server, ServerConfig};

fuzz_target!(|data: &[u8]| {
    let Some((&step, rest)) = data.split_first() else {
        return;
    };
    let step = usize::from(step % 64) + 1;
    let mut s = Server::new(ServerConfig {
        max_message_size: 4096,
        max_recipients: 5,
        max_line: 512,
        starttls: true,
        auth: true,
        ..ServerConfig::default()
    });
    let mut flip = false;
    let mut data_out = 0usize;
    for piece in rest.chunks(step) {
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
    assert!(data_out <= rest.len());
});
