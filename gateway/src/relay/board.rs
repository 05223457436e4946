//! The appliance's board, driven by the gateway's health: every second the gateway checks
//! that its SMTP listener answers with a banner and that the token answers, and pets the
//! hardware watchdog only then ([`board::Board::poll`]). A gateway that hangs, or whose
//! token is gone, stops petting and the watchdog resets the machine. On an orderly shutdown
//! the watchdog is disarmed.
//!
//! Only the watchdog is configurable today (`[board] watchdog`); LEDs, tamper switch and
//! reset button are held by simulated pins until a GPIO backend is configured.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use board::sim::SimPin;
use board::{Board, Health, LinuxWatchdog, StatusLeds, Timing};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::Relay;

/// How long a probe may take before it counts as a failure.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// Until the first good probe, and at most this long, the gateway counts as booting (the
/// watchdog is petted).
const BOOT_GRACE: Duration = Duration::from_secs(60);

/// Runs until `stop` fires, then disarms the watchdog.
pub async fn run(relay: Arc<Relay>, path: PathBuf, mut stop: tokio::sync::watch::Receiver<bool>) {
    let opened = tokio::task::spawn_blocking({
        let path = path.clone();
        move || LinuxWatchdog::open(&path)
    })
    .await;
    let watchdog = match opened {
        Ok(Ok(w)) => w,
        Ok(Err(e)) => {
            tracing::error!(path = %path.display(), "watchdog: cannot open: {e}");
            return;
        }
        Err(e) => {
            tracing::error!("watchdog: {e}");
            return;
        }
    };
    tracing::info!(path = %path.display(), "watchdog armed: petted while SMTP and the token answer");
    let leds = StatusLeds::new(SimPin::new(false), SimPin::new(false), SimPin::new(false));
    // No switch and no button: the chassis closed (low), the button up (high).
    let mut board = Board::new(
        leds,
        SimPin::new(false),
        SimPin::new(true),
        watchdog,
        Timing::default(),
    );
    let started = Instant::now();
    let mut booting = true;
    let mut last = Health::default();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => break,
        }
        let smtp_accepting = probe_smtp(&relay).await;
        let token_reachable = probe_token(&relay).await;
        if booting && ((smtp_accepting && token_reachable) || started.elapsed() > BOOT_GRACE) {
            booting = false;
        }
        let health = Health {
            smtp_accepting,
            token_reachable,
            booting,
            updating: false,
        };
        let healthy = smtp_accepting && token_reachable;
        if health != last {
            if !booting && !healthy {
                tracing::error!(
                    smtp_accepting,
                    token_reachable,
                    "unhealthy: the watchdog is no longer petted"
                );
            } else if !booting {
                tracing::info!("healthy: the watchdog is petted");
            }
            last = health;
        }
        let now_ms = started.elapsed().as_millis() as u64;
        if let Err(e) = board.poll(now_ms, health) {
            tracing::warn!("board: {e}");
        }
    }
    match board.shutdown() {
        Ok(()) => tracing::info!("watchdog disarmed"),
        Err(e) => tracing::warn!("watchdog: cannot disarm: {e}"),
    }
}

/// A connection to our own first listener gets a 220 banner in time.
async fn probe_smtp(relay: &Relay) -> bool {
    let Some(mut addr) = relay.config.server.listen.first().copied() else {
        return false;
    };
    if addr.ip().is_unspecified() {
        addr = match addr {
            SocketAddr::V4(a) => SocketAddr::from((Ipv4Addr::LOCALHOST, a.port())),
            SocketAddr::V6(a) => SocketAddr::from((Ipv6Addr::LOCALHOST, a.port())),
        };
    }
    let probe = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        let mut buf = [0u8; 512];
        let mut got = 0;
        while !buf[..got].contains(&b'\n') && got < buf.len() {
            let n = s.read(&mut buf[got..]).await.ok()?;
            if n == 0 {
                return None;
            }
            got += n;
        }
        let _ = s.write_all(b"QUIT\r\n").await;
        Some(buf.starts_with(b"220"))
    };
    matches!(
        tokio::time::timeout(PROBE_TIMEOUT, probe).await,
        Ok(Some(true))
    )
}

/// The token answers an information request in time.
async fn probe_token(relay: &Relay) -> bool {
    let token = relay.keys.token().clone();
    let ask = tokio::task::spawn_blocking(move || token.info().is_ok());
    matches!(tokio::time::timeout(PROBE_TIMEOUT, ask).await, Ok(Ok(true)))
}
