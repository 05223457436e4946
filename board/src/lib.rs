//! The appliance's own hardware, written against embedded-hal 1.0 digital pins so the same
//! logic drives real GPIO lines and simulated ones:
//!
//! - [`StatusLeds`]: three LEDs (green, amber, red) showing a [`Status`]: booting, ready,
//!   token error, tamper, update;
//! - [`Debounced`] inputs for the chassis tamper switch and the front-panel reset button;
//! - [`Watchdog`]: the hardware watchdog (`/dev/watchdog` on Linux: [`LinuxWatchdog`]);
//! - [`Board`]: all of them together. The gateway calls [`Board::poll`] a few times a second
//!   with its [`Health`]; the board updates the LEDs, pets the watchdog only while the gateway
//!   is healthy (SMTP accepting and token reachable), and reports [`Event`]s: a
//!   tamper (latched until an administrator clears it: the gateway then logs out of the token
//!   and stops signing and decrypting, keeping mail queued) and a factory-reset request (the
//!   button held; the console asks for confirmation).
//!
//! Time is passed in (milliseconds from any origin), so everything is testable without
//! sleeping; [`sim`] has pins and a watchdog for tests, [`pins`] the backends the gateway
//! chooses from (GPIO character device, files, simulated).

pub mod pins;
pub mod sim;

use embedded_hal::digital::{InputPin, OutputPin};

/// What the LEDs show, most urgent first when several apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// The chassis was opened: red on, amber on.
    Tamper,
    /// The key token cannot be reached: red blinking.
    TokenError,
    /// A firmware update runs: amber blinking.
    Update,
    /// Starting: amber on.
    Booting,
    /// Relaying mail: green on.
    Ready,
}

/// Blink half-period in milliseconds.
const BLINK_MS: u64 = 500;

/// Green, amber and red LEDs.
#[derive(Debug)]
pub struct StatusLeds<G, A, R> {
    green: G,
    amber: A,
    red: R,
}

impl<G: OutputPin, A: OutputPin, R: OutputPin> StatusLeds<G, A, R> {
    pub fn new(green: G, amber: A, red: R) -> Self {
        StatusLeds { green, amber, red }
    }

    /// Sets the LEDs for `status` at time `now_ms` (blinking follows the time).
    pub fn show(&mut self, status: Status, now_ms: u64) -> Result<(), PinError> {
        let blink_on = (now_ms / BLINK_MS).is_multiple_of(2);
        let (g, a, r) = match status {
            Status::Ready => (true, false, false),
            Status::Booting => (false, true, false),
            Status::Update => (false, blink_on, false),
            Status::TokenError => (false, false, blink_on),
            Status::Tamper => (false, true, true),
        };
        set(&mut self.green, g)?;
        set(&mut self.amber, a)?;
        set(&mut self.red, r)
    }
}

fn set<P: OutputPin>(p: &mut P, on: bool) -> Result<(), PinError> {
    if on { p.set_high() } else { p.set_low() }.map_err(|e| PinError(format!("{e:?}")))
}

/// A pin that could not be read or set (the backend's error, as text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinError(pub String);

impl std::fmt::Display for PinError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GPIO: {}", self.0)
    }
}

impl std::error::Error for PinError {}

/// An input that counts as changed only once it has held its new level for `settle_ms`
/// (switch contacts bounce).
#[derive(Debug)]
pub struct Debounced<P> {
    pin: P,
    /// The level that means "active" (pressed, open).
    active_high: bool,
    settle_ms: u64,
    stable: bool,
    candidate: Option<(bool, u64)>,
}

impl<P: InputPin> Debounced<P> {
    pub fn new(pin: P, active_high: bool, settle_ms: u64) -> Self {
        Debounced {
            pin,
            active_high,
            settle_ms,
            stable: false,
            candidate: None,
        }
    }

    /// Samples the pin; returns whether the input is active (after debouncing).
    pub fn sample(&mut self, now_ms: u64) -> Result<bool, PinError> {
        let high = self.pin.is_high().map_err(|e| PinError(format!("{e:?}")))?;
        let active = high == self.active_high;
        if active == self.stable {
            self.candidate = None;
        } else {
            match self.candidate {
                Some((level, since)) if level == active => {
                    if now_ms.saturating_sub(since) >= self.settle_ms {
                        self.stable = active;
                        self.candidate = None;
                    }
                }
                _ => self.candidate = Some((active, now_ms)),
            }
        }
        Ok(self.stable)
    }
}

/// The hardware watchdog: reset the machine unless petted in time.
pub trait Watchdog {
    fn pet(&mut self) -> std::io::Result<()>;
    /// Stops it, where the driver allows (an orderly shutdown).
    fn disarm(&mut self) -> std::io::Result<()>;
}

/// No watchdog (a board without one, or not configured).
impl<W: Watchdog> Watchdog for Option<W> {
    fn pet(&mut self) -> std::io::Result<()> {
        self.as_mut().map_or(Ok(()), W::pet)
    }

    fn disarm(&mut self) -> std::io::Result<()> {
        self.as_mut().map_or(Ok(()), W::disarm)
    }
}

/// Linux's watchdog device (`/dev/watchdog`): any write pets it; writing `V` before closing
/// stops it (the "magic close"), otherwise closing leaves it running.
#[derive(Debug)]
pub struct LinuxWatchdog {
    file: Option<std::fs::File>,
}

impl LinuxWatchdog {
    /// Opens (and so starts) the watchdog device.
    pub fn open(path: &std::path::Path) -> std::io::Result<LinuxWatchdog> {
        let file = std::fs::OpenOptions::new().write(true).open(path)?;
        Ok(LinuxWatchdog { file: Some(file) })
    }
}

impl Watchdog for LinuxWatchdog {
    fn pet(&mut self) -> std::io::Result<()> {
        use std::io::Write;
        match &mut self.file {
            Some(f) => f.write_all(b"\0").and_then(|()| f.flush()),
            None => Ok(()),
        }
    }

    fn disarm(&mut self) -> std::io::Result<()> {
        use std::io::Write;
        if let Some(mut f) = self.file.take() {
            f.write_all(b"V")?;
            f.flush()?;
        }
        Ok(())
    }
}

/// What the gateway reports about itself at each poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Health {
    /// The SMTP listener accepts connections.
    pub smtp_accepting: bool,
    /// The key token answers.
    pub token_reachable: bool,
    /// Still starting.
    pub booting: bool,
    /// A firmware update runs.
    pub updating: bool,
}

/// What the gateway must act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The chassis was opened: log out of the token, stop signing and decrypting, alert,
    /// keep mail queued. Reported once; the tamper state stays until [`Board::clear_tamper`].
    Tamper,
    /// The reset button was held long enough: ask for confirmation, then factory reset.
    FactoryResetRequested,
}

/// How the board's inputs behave.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Contact bounce settles within this.
    pub settle_ms: u64,
    /// The reset button held this long requests a factory reset.
    pub reset_hold_ms: u64,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            settle_ms: 50,
            reset_hold_ms: 10_000,
        }
    }
}

/// The LEDs, inputs and watchdog together.
#[derive(Debug)]
pub struct Board<G, A, R, T, B, W> {
    leds: StatusLeds<G, A, R>,
    tamper: Debounced<T>,
    button: Debounced<B>,
    watchdog: W,
    timing: Timing,
    tampered: bool,
    pressed_since: Option<u64>,
    reset_requested: bool,
}

impl<G, A, R, T, B, W> Board<G, A, R, T, B, W>
where
    G: OutputPin,
    A: OutputPin,
    R: OutputPin,
    T: InputPin,
    B: InputPin,
    W: Watchdog,
{
    /// `tamper` is active high (the switch opens with the chassis), `button` active low
    /// (pressed pulls it to ground), as on the appliance's board.
    pub fn new(
        leds: StatusLeds<G, A, R>,
        tamper: T,
        button: B,
        watchdog: W,
        timing: Timing,
    ) -> Self {
        Board {
            leds,
            tamper: Debounced::new(tamper, true, timing.settle_ms),
            button: Debounced::new(button, false, timing.settle_ms),
            watchdog,
            timing,
            tampered: false,
            pressed_since: None,
            reset_requested: false,
        }
    }

    /// One round: read the inputs, show the status, pet the watchdog when healthy.
    pub fn poll(&mut self, now_ms: u64, health: Health) -> Result<Vec<Event>, PinError> {
        let mut events = Vec::new();
        if self.tamper.sample(now_ms)? && !self.tampered {
            self.tampered = true;
            events.push(Event::Tamper);
        }
        if self.button.sample(now_ms)? {
            let since = *self.pressed_since.get_or_insert(now_ms);
            if !self.reset_requested && now_ms.saturating_sub(since) >= self.timing.reset_hold_ms {
                self.reset_requested = true;
                events.push(Event::FactoryResetRequested);
            }
        } else {
            self.pressed_since = None;
            self.reset_requested = false;
        }
        self.leds.show(self.status(health), now_ms)?;
        if self.healthy(health) {
            // A pet that fails is a sick machine too: the watchdog will act.
            let _ = self.watchdog.pet();
        }
        Ok(events)
    }

    /// What the LEDs show for `health` now.
    pub fn status(&self, health: Health) -> Status {
        if self.tampered {
            Status::Tamper
        } else if !health.booting && !health.token_reachable {
            Status::TokenError
        } else if health.updating {
            Status::Update
        } else if health.booting {
            Status::Booting
        } else {
            Status::Ready
        }
    }

    /// Whether the watchdog is petted: up, accepting mail, token reachable. While booting it
    /// is petted too, so a slow start does not reset the machine. A tamper does not stop the
    /// petting: the gateway has stopped signing and decrypting on purpose and keeps mail
    /// queued; resetting would only loop while the chassis stays open.
    pub fn healthy(&self, health: Health) -> bool {
        health.booting || (health.smtp_accepting && health.token_reachable)
    }

    pub fn tampered(&self) -> bool {
        self.tampered
    }

    /// A tamper latched before this start (the gateway keeps the latch on its data disk):
    /// shown at once, no new [`Event::Tamper`].
    pub fn mark_tampered(&mut self) {
        self.tampered = true;
    }

    /// An administrator inspected the chassis: signing and decrypting may resume (after the
    /// token PIN is given again). A switch still open trips it again at the next poll.
    pub fn clear_tamper(&mut self) {
        self.tampered = false;
    }

    /// An orderly shutdown: stop the watchdog.
    pub fn shutdown(&mut self) -> std::io::Result<()> {
        self.watchdog.disarm()
    }
}
