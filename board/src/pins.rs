//! The pins a [`Board`](crate::Board) runs on, chosen at start by configuration:
//!
//! - [`Pins::gpio`]: lines of a GPIO chip through the Linux GPIO character device
//!   (`/dev/gpiochipN`, uAPI v2): the appliance's board;
//! - [`Pins::files`]: one file per pin in a directory (`1` or `0`), for targets without GPIO
//!   (QEMU): the gateway writes the LEDs' files, a tester writes `tamper` and `button`;
//! - [`Pins::simulated`]: in-memory pins, nothing connected (the chassis closed, the button
//!   up).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use embedded_hal::digital::{ErrorKind, ErrorType, InputPin, OutputPin};
use gpiocdev::line::Value;

use crate::sim::SimPin;

/// Which GPIO line (offset on the chip) does what.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lines {
    pub green: u32,
    pub amber: u32,
    pub red: u32,
    /// Active high: the switch opens with the chassis.
    pub tamper: u32,
    /// Active low: pressing pulls it to ground (the line is requested with a pull-up).
    pub button: u32,
}

impl Lines {
    fn outputs(&self) -> [u32; 3] {
        [self.green, self.amber, self.red]
    }

    fn all(&self) -> [u32; 5] {
        [self.green, self.amber, self.red, self.tamper, self.button]
    }
}

/// A pin of any backend.
#[derive(Debug, Clone)]
pub enum Pin {
    Sim(SimPin),
    File(FilePin),
    Gpio(GpioPin),
}

/// The five pins of the board.
#[derive(Debug)]
pub struct Pins {
    pub green: Pin,
    pub amber: Pin,
    pub red: Pin,
    pub tamper: Pin,
    pub button: Pin,
}

/// Why the pins could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("GPIO lines {lines:?} on {chip}: {reason}")]
    Gpio {
        chip: PathBuf,
        lines: Vec<u32>,
        reason: String,
    },
    #[error("GPIO lines: line {0} is given two jobs")]
    Duplicate(u32),
    #[error("board pins in {dir}: {reason}")]
    Files { dir: PathBuf, reason: String },
}

impl Pins {
    /// Nothing connected: the chassis closed (low), the button up (high).
    pub fn simulated() -> Pins {
        Pins {
            green: Pin::Sim(SimPin::new(false)),
            amber: Pin::Sim(SimPin::new(false)),
            red: Pin::Sim(SimPin::new(false)),
            tamper: Pin::Sim(SimPin::new(false)),
            button: Pin::Sim(SimPin::new(true)),
        }
    }

    /// One file per pin in `dir` (made if missing): `green`, `amber`, `red` written by the
    /// gateway; `tamper` and `button` read, created closed (`0`) and up (`1`) when absent.
    pub fn files(dir: &Path) -> Result<Pins, SetupError> {
        let err = |e: std::io::Error| SetupError::Files {
            dir: dir.to_path_buf(),
            reason: e.to_string(),
        };
        std::fs::create_dir_all(dir).map_err(err)?;
        for (name, level) in [("tamper", "0\n"), ("button", "1\n")] {
            let p = dir.join(name);
            if !p.exists() {
                std::fs::write(&p, level).map_err(err)?;
            }
        }
        let pin = |name: &str, default: bool| {
            Pin::File(FilePin {
                path: Arc::new(dir.join(name)),
                default,
            })
        };
        Ok(Pins {
            green: pin("green", false),
            amber: pin("amber", false),
            red: pin("red", false),
            tamper: pin("tamper", false),
            button: pin("button", true),
        })
    }

    /// Requests the lines on `chip` (e.g. `/dev/gpiochip0`) for the gateway alone: the LEDs
    /// as outputs (off), the tamper switch as an input, the button as an input with a pull-up.
    pub fn gpio(chip: &Path, lines: &Lines) -> Result<Pins, SetupError> {
        let all = lines.all();
        for (i, l) in all.iter().enumerate() {
            if all[..i].contains(l) {
                return Err(SetupError::Duplicate(*l));
            }
        }
        let err = |e: gpiocdev::Error| SetupError::Gpio {
            chip: chip.to_path_buf(),
            lines: all.to_vec(),
            reason: e.to_string(),
        };
        let req = gpiocdev::Request::builder()
            .on_chip(chip)
            .with_consumer("smimegw")
            .with_lines(&lines.outputs())
            .as_output(Value::Inactive)
            .with_line(lines.tamper)
            .as_input()
            .with_line(lines.button)
            .as_input()
            .with_bias(gpiocdev::line::Bias::PullUp)
            .request()
            .map_err(err)?;
        let req = Arc::new(req);
        let pin = |offset| {
            Pin::Gpio(GpioPin {
                req: req.clone(),
                offset,
            })
        };
        Ok(Pins {
            green: pin(lines.green),
            amber: pin(lines.amber),
            red: pin(lines.red),
            tamper: pin(lines.tamper),
            button: pin(lines.button),
        })
    }
}

/// A pin kept in a file: `1` high, `0` low; a missing or empty file reads as the default.
#[derive(Debug, Clone)]
pub struct FilePin {
    path: Arc<PathBuf>,
    default: bool,
}

impl FilePin {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// A line requested from a GPIO chip.
#[derive(Debug, Clone)]
pub struct GpioPin {
    req: Arc<gpiocdev::Request>,
    offset: u32,
}

/// A pin that could not be read or written.
#[derive(Debug)]
pub struct PinIoError(pub String);

impl embedded_hal::digital::Error for PinIoError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::Other
    }
}

impl ErrorType for Pin {
    type Error = PinIoError;
}

impl Pin {
    fn read(&mut self) -> Result<bool, PinIoError> {
        match self {
            Pin::Sim(p) => Ok(p.level()),
            Pin::File(p) => match std::fs::read(&*p.path) {
                Ok(b) => match b.iter().find(|c| !c.is_ascii_whitespace()) {
                    Some(b'1') => Ok(true),
                    Some(b'0') => Ok(false),
                    None => Ok(p.default),
                    Some(_) => Err(PinIoError(format!("{}: expected 0 or 1", p.path.display()))),
                },
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(p.default),
                Err(e) => Err(PinIoError(format!("{}: {e}", p.path.display()))),
            },
            Pin::Gpio(p) => match p.req.value(p.offset) {
                Ok(v) => Ok(v == Value::Active),
                Err(e) => Err(PinIoError(format!("line {}: {e}", p.offset))),
            },
        }
    }

    fn write(&mut self, high: bool) -> Result<(), PinIoError> {
        match self {
            Pin::Sim(p) => {
                p.drive(high);
                Ok(())
            }
            Pin::File(p) => std::fs::write(&*p.path, if high { "1\n" } else { "0\n" })
                .map_err(|e| PinIoError(format!("{}: {e}", p.path.display()))),
            Pin::Gpio(p) => {
                let v = if high { Value::Active } else { Value::Inactive };
                p.req
                    .set_value(p.offset, v)
                    .map_err(|e| PinIoError(format!("line {}: {e}", p.offset)))
            }
        }
    }
}

impl OutputPin for Pin {
    fn set_low(&mut self) -> Result<(), Self::Error> {
        self.write(false)
    }

    fn set_high(&mut self) -> Result<(), Self::Error> {
        self.write(true)
    }
}

impl InputPin for Pin {
    fn is_high(&mut self) -> Result<bool, Self::Error> {
        self.read()
    }

    fn is_low(&mut self) -> Result<bool, Self::Error> {
        self.read().map(|h| !h)
    }
}
