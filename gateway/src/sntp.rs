//! An SNTP client (RFC 4330, the client side of NTPv4, RFC 5905): one request, one answer,
//! the clock's offset from it. The appliance sets its clock with it at boot and every hour
//! (`smimegw sntp --set`), since its busybox has no NTP daemon. Signing times, certificate
//! validity and retry schedules all depend on the clock.
//!
//! The request's transmit timestamp is a random nonce (RFC 9109): an answer counts only when
//! its origin timestamp echoes it, so a spoofed or stale packet is ignored, not believed.

use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Seconds from 1900-01-01 (NTP era 0) to 1970-01-01.
const NTP_UNIX: u64 = 2_208_988_800;

/// What one server said.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The server as given, and the address that answered.
    pub server: String,
    pub addr: SocketAddr,
    /// Add this to the local clock to get the server's (seconds).
    pub offset: f64,
    /// Round trip, less the server's own processing (seconds).
    pub delay: f64,
    pub stratum: u8,
}

/// Why a server gave no usable time.
#[derive(Debug, thiserror::Error)]
pub enum SntpError {
    #[error("{server}: cannot resolve: {reason}")]
    Resolve { server: String, reason: String },
    #[error("{server}: no answer within {secs} s")]
    Timeout { server: String, secs: u64 },
    #[error("{server}: {reason}")]
    Network { server: String, reason: String },
    #[error("{server}: refuses to serve time (kiss-o'-death {code:?})")]
    Kiss { server: String, code: String },
    #[error("{server}: not synchronised itself")]
    Unsynchronised { server: String },
    #[error("{server}: {reason}")]
    Bad { server: String, reason: String },
}

/// `host`, `host:port`, `[v6]:port` or a bare IPv6 address; port 123 unless given.
fn addresses(server: &str) -> Result<Vec<SocketAddr>, SntpError> {
    let err = |reason: String| SntpError::Resolve {
        server: server.to_string(),
        reason,
    };
    if server.is_empty() {
        return Err(err("empty name".into()));
    }
    let with_port = if server.parse::<std::net::Ipv6Addr>().is_ok() {
        format!("[{server}]:123")
    } else if server.starts_with('[') || server.contains(':') {
        server.to_string()
    } else {
        format!("{server}:123")
    };
    let addrs: Vec<SocketAddr> = with_port
        .to_socket_addrs()
        .map_err(|e| err(e.to_string()))?
        .collect();
    if addrs.is_empty() {
        return Err(err("no address".into()));
    }
    Ok(addrs)
}

fn to_f64(ts: u64) -> f64 {
    // 32.32 fixed point from 1900; era 1 (from 2036) when the seconds wrapped.
    let secs = ts >> 32;
    let secs = if secs < 0x8000_0000 {
        secs + (1 << 32)
    } else {
        secs
    };
    (secs as f64 - NTP_UNIX as f64) + (ts & 0xffff_ffff) as f64 / 4_294_967_296.0
}

fn now_f64() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn be64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

/// Asks `server` once (each of its addresses in turn until one answers within `timeout`).
pub fn query(server: &str, timeout: Duration) -> Result<Sample, SntpError> {
    let mut last = None;
    for addr in addresses(server)? {
        match query_addr(server, addr, timeout) {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| SntpError::Timeout {
        server: server.to_string(),
        secs: timeout.as_secs(),
    }))
}

fn query_addr(server: &str, addr: SocketAddr, timeout: Duration) -> Result<Sample, SntpError> {
    let net = |e: std::io::Error| SntpError::Network {
        server: server.to_string(),
        reason: e.to_string(),
    };
    let bind: SocketAddr = if addr.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    }
    .parse()
    .map_err(|_| SntpError::Network {
        server: server.to_string(),
        reason: "no local address".into(),
    })?;
    let sock = UdpSocket::bind(bind).map_err(net)?;
    sock.connect(addr).map_err(net)?;
    let mut nonce = [0u8; 8];
    aws_lc_rs::rand::fill(&mut nonce).map_err(|_| SntpError::Network {
        server: server.to_string(),
        reason: "no random numbers".into(),
    })?;
    let mut req = [0u8; 48];
    req[0] = 0x23; // leap 0, version 4, mode 3 (client)
    req[40..48].copy_from_slice(&nonce);
    let t1 = now_f64();
    sock.send(&req).map_err(net)?;
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 512];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(SntpError::Timeout {
                server: server.to_string(),
                secs: timeout.as_secs(),
            });
        }
        sock.set_read_timeout(Some(left)).map_err(net)?;
        let n = match sock.recv(&mut buf) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            Err(e) => return Err(net(e)),
        };
        let t4 = now_f64();
        // Not an answer to this request: ignored (spoofed, late, or garbage).
        if n < 48 || buf[24..32] != nonce {
            continue;
        }
        return answer(server, addr, &buf[..n], t1, t4);
    }
}

/// Checks an answer to our request and computes the offset.
fn answer(server: &str, addr: SocketAddr, p: &[u8], t1: f64, t4: f64) -> Result<Sample, SntpError> {
    let bad = |reason: &str| SntpError::Bad {
        server: server.to_string(),
        reason: reason.to_string(),
    };
    let (leap, version, mode) = (p[0] >> 6, (p[0] >> 3) & 7, p[0] & 7);
    if mode != 4 {
        return Err(bad(&format!("answered in mode {mode}, not as a server")));
    }
    if !(3..=4).contains(&version) {
        return Err(bad(&format!("speaks NTP version {version}")));
    }
    let stratum = p[1];
    if stratum == 0 {
        let code = String::from_utf8_lossy(&p[12..16])
            .trim_end_matches('\0')
            .to_string();
        return Err(SntpError::Kiss {
            server: server.to_string(),
            code,
        });
    }
    if leap == 3 || stratum > 15 {
        return Err(SntpError::Unsynchronised {
            server: server.to_string(),
        });
    }
    let (rx, tx) = (be64(&p[32..40]), be64(&p[40..48]));
    if tx == 0 || rx == 0 {
        return Err(bad("answered without a time"));
    }
    let (t2, t3) = (to_f64(rx), to_f64(tx));
    let offset = ((t2 - t1) + (t3 - t4)) / 2.0;
    let delay = ((t4 - t1) - (t3 - t2)).max(0.0);
    Ok(Sample {
        server: server.to_string(),
        addr,
        offset,
        delay,
        stratum,
    })
}

/// Asks each server in turn; the first usable answer, or every server's reason.
pub fn first_answer(servers: &[String], timeout: Duration) -> Result<Sample, Vec<SntpError>> {
    let mut errors = Vec::new();
    for s in servers {
        match query(s, timeout) {
            Ok(sample) => return Ok(sample),
            Err(e) => errors.push(e),
        }
    }
    Err(errors)
}

/// A server's answer to `request` saying the time is `unix` (received and sent at once):
/// what test servers send.
pub fn server_reply(request: &[u8], unix: f64, stratum: u8) -> [u8; 48] {
    let mut p = [0u8; 48];
    p[0] = 0x24; // leap 0, version 4, mode 4 (server)
    p[1] = stratum;
    if let Some(nonce) = request.get(40..48) {
        p[24..32].copy_from_slice(nonce);
    }
    let t = timestamp(unix).to_be_bytes();
    p[32..40].copy_from_slice(&t);
    p[40..48].copy_from_slice(&t);
    p
}

/// An NTP timestamp for `unix` seconds.
pub fn timestamp(unix: f64) -> u64 {
    let ntp = unix + NTP_UNIX as f64;
    let secs = ntp.floor();
    let frac = ((ntp - secs) * 4_294_967_296.0) as u64;
    ((secs as u64 & 0xffff_ffff) << 32) | (frac & 0xffff_ffff)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A server on loopback answering one request with `reply(request)`.
    fn server(reply: impl Fn(&[u8]) -> Vec<Vec<u8>> + Send + 'static) -> String {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = sock.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let mut buf = [0u8; 48];
            if let Ok((_, from)) = sock.recv_from(&mut buf) {
                for r in reply(&buf) {
                    let _ = sock.send_to(&r, from);
                }
            }
        });
        format!("127.0.0.1:{port}")
    }

    /// A server's answer to `req` saying the time is now + `skew` seconds.
    fn good(req: &[u8], skew: f64, first: u8, stratum: u8) -> Vec<u8> {
        let mut p = server_reply(req, now_f64() + skew, stratum).to_vec();
        p[0] = first;
        p
    }

    #[test]
    fn offset_from_a_server_an_hour_ahead() {
        let s = server(|req| vec![good(req, 3600.0, 0x24, 2)]);
        let sample = query(&s, Duration::from_secs(5)).unwrap();
        assert!((sample.offset - 3600.0).abs() < 1.0, "{sample:?}");
        assert_eq!(sample.stratum, 2);
        assert!(sample.delay < 1.0);
    }

    #[test]
    fn a_spoofed_answer_is_ignored_and_the_real_one_taken() {
        let s = server(|req| {
            let mut spoof = good(req, -86_400.0, 0x24, 1);
            spoof[24] ^= 0xff; // does not echo our nonce
            vec![spoof, vec![0x24; 20], good(req, 10.0, 0x24, 3)]
        });
        let sample = query(&s, Duration::from_secs(5)).unwrap();
        assert!((sample.offset - 10.0).abs() < 1.0, "{sample:?}");
    }

    #[test]
    fn refusals_are_named() {
        let s = server(|req| {
            let mut p = good(req, 0.0, 0x24, 0);
            p[12..16].copy_from_slice(b"RATE");
            vec![p]
        });
        let e = query(&s, Duration::from_secs(5)).unwrap_err();
        assert!(e.to_string().ends_with("kiss-o'-death \"RATE\")"), "{e}");
        let s = server(|req| vec![good(req, 0.0, 0xe4, 2)]);
        let e = query(&s, Duration::from_secs(5)).unwrap_err();
        assert!(e.to_string().ends_with("not synchronised itself"), "{e}");
        let s = server(|req| vec![good(req, 0.0, 0x23, 2)]);
        let e = query(&s, Duration::from_secs(5)).unwrap_err();
        assert!(e.to_string().contains("mode 3"), "{e}");
    }

    #[test]
    fn silence_times_out_and_the_next_server_answers() {
        let silent = server(|_| vec![]);
        let good_one = server(|req| vec![good(req, -5.0, 0x24, 2)]);
        let sample = first_answer(
            &[silent.clone(), String::new(), good_one],
            Duration::from_secs(1),
        )
        .unwrap();
        assert!((sample.offset + 5.0).abs() < 1.0, "{sample:?}");
        let silent = server(|_| vec![]);
        let errs =
            first_answer(&[silent.clone(), String::new()], Duration::from_secs(1)).unwrap_err();
        assert_eq!(
            errs[0].to_string(),
            format!("{silent}: no answer within 1 s")
        );
        assert_eq!(errs[1].to_string(), ": cannot resolve: empty name");
    }

    #[test]
    fn timestamps_round_trip_across_the_2036_era() {
        for unix in [0.5, 1_795_000_000.25, 2_085_978_496.0 + 10.0] {
            assert!((to_f64(timestamp(unix)) - unix).abs() < 1e-6, "{unix}");
        }
        assert_eq!(
            addresses("[::1]:1234").unwrap()[0],
            "[::1]:1234".parse().unwrap()
        );
        assert_eq!(addresses("::1").unwrap()[0].port(), 123);
        assert_eq!(addresses("127.0.0.1").unwrap()[0].port(), 123);
    }
}
