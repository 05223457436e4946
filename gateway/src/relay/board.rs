//! The appliance's board, driven by the gateway's health: every second the gateway checks
//! that its SMTP listener answers with a banner and that the token answers, and pets the
//! hardware watchdog only then ([`board::Board::poll`]). A gateway that hangs, or whose
//! token is gone, stops petting and the watchdog resets the machine. On an orderly shutdown
//! the watchdog is disarmed.
//!
//! The LEDs, the tamper switch and the reset button are GPIO lines (`[board] gpio_chip`,
//! `gpio_lines`), files (`pin_dir`, for QEMU) or nothing. An opened chassis trips the
//! [`Tamper`](super::tamper::Tamper) latch: logged out of the token, signing and decrypting
//! stopped, mail kept queued; the latch is cleared from the console. The reset button held
//! ten seconds asks for a factory reset, which the console confirms.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use board::pins::{Pin, Pins};
use board::{Board, Event, Health, LinuxWatchdog, StatusLeds, Timing};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::Relay;
use crate::config::BoardPins;

/// How long a probe may take before it counts as a failure.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// Until the first good probe, and at most this long, the gateway counts as booting (the
/// watchdog is petted).
const BOOT_GRACE: Duration = Duration::from_secs(60);

/// Opens what `[board]` names; errors are logged and leave that part out.
async fn open(relay: &Relay) -> (Pins, Option<LinuxWatchdog>) {
    let cfg = relay.config.board.clone();
    let opened = tokio::task::spawn_blocking(move || {
        let pins = match &cfg.pins {
            BoardPins::None => Ok(Pins::simulated()),
            BoardPins::Files(dir) => Pins::files(dir),
            BoardPins::Gpio { chip, lines } => Pins::gpio(chip, lines),
        };
        let pins = pins.unwrap_or_else(|e| {
            tracing::error!("board: {e}; running without LEDs, tamper switch and button");
            Pins::simulated()
        });
        let watchdog = cfg
            .watchdog
            .as_ref()
            .and_then(|path| match LinuxWatchdog::open(path) {
                Ok(w) => {
                    tracing::info!(
                        path = %path.display(),
                        "watchdog armed: petted while SMTP and the token answer"
                    );
                    Some(w)
                }
                Err(e) => {
                    tracing::error!(path = %path.display(), "watchdog: cannot open: {e}");
                    None
                }
            });
        (pins, watchdog)
    })
    .await;
    opened.unwrap_or_else(|e| {
        tracing::error!("board: {e}");
        (Pins::simulated(), None)
    })
}

/// Runs until `stop` fires, then disarms the watchdog.
pub async fn run(relay: Arc<Relay>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let (pins, watchdog) = open(&relay).await;
    let leds: StatusLeds<Pin, Pin, Pin> = StatusLeds::new(pins.green, pins.amber, pins.red);
    let mut board = Board::new(leds, pins.tamper, pins.button, watchdog, Timing::default());
    let started = Instant::now();
    let mut booting = true;
    let mut last = Health::default();
    let mut last_error = String::new();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut health = Health {
        booting: true,
        ..Health::default()
    };
    let mut probed = None::<Instant>;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => break,
        }
        // The inputs are sampled four times a second (debouncing, the button's hold time);
        // the probes run once a second.
        if probed.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
            probed = Some(Instant::now());
            let smtp_accepting = probe_smtp(&relay).await;
            let token_reachable = probe_token(&relay).await;
            if booting && ((smtp_accepting && token_reachable) || started.elapsed() > BOOT_GRACE) {
                booting = false;
            }
            health = Health {
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
        }
        // The latch lives in the relay (and on disk): the board shows it and follows a clear.
        match (relay.tamper.is_tripped(), board.tampered()) {
            (true, false) => board.mark_tampered(),
            (false, true) => board.clear_tamper(),
            _ => {}
        }
        let now_ms = started.elapsed().as_millis() as u64;
        match board.poll(now_ms, health) {
            Ok(events) => {
                last_error.clear();
                for e in events {
                    act(&relay, e).await;
                }
            }
            Err(e) => {
                let e = e.to_string();
                if e != last_error {
                    tracing::warn!("board: {e}");
                    last_error = e;
                }
            }
        }
    }
    match board.shutdown() {
        Ok(()) => tracing::info!("board stopped (watchdog disarmed)"),
        Err(e) => tracing::warn!("watchdog: cannot disarm: {e}"),
    }
}

async fn act(relay: &Arc<Relay>, event: Event) {
    match event {
        Event::Tamper => {
            let r = relay.clone();
            let done = tokio::task::spawn_blocking(move || {
                let tripped = r.tamper.trip("the chassis was opened");
                // Logged out whatever the latch file did: the keys stop now.
                let logout = r.keys.token().logout();
                (tripped, logout)
            })
            .await;
            match done {
                Ok((tripped, logout)) => {
                    if let Err(e) = tripped {
                        tracing::error!("tamper: cannot record the latch on disk: {e}");
                    }
                    if let Err(e) = logout {
                        tracing::error!("tamper: logging out of the token: {e}");
                    }
                    tracing::error!(
                        "TAMPER: the chassis was opened; logged out of the token, signing and \
                         decrypting stopped, mail stays queued until an administrator clears \
                         it (console: tamper clear)"
                    );
                }
                Err(e) => tracing::error!("tamper: {e}"),
            }
        }
        Event::FactoryResetRequested => tracing::warn!(
            "the reset button was held: sign in on the console and run factory-reset to \
             confirm the factory reset"
        ),
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
