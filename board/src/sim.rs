//! Simulated hardware: pins whose level is shared with the code that plays the outside world
//! (a test pressing the button, opening the chassis, looking at the LEDs), and a watchdog
//! that counts pets. Used by the tests and when the gateway runs without a board (QEMU).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use embedded_hal::digital::{ErrorType, InputPin, OutputPin};

/// One line, shared: clone it to keep a handle on the level.
#[derive(Debug, Clone, Default)]
pub struct SimPin(Arc<AtomicBool>);

impl SimPin {
    pub fn new(high: bool) -> SimPin {
        SimPin(Arc::new(AtomicBool::new(high)))
    }

    /// The outside world drives the line.
    pub fn drive(&self, high: bool) {
        self.0.store(high, Ordering::SeqCst);
    }

    /// The line's level.
    pub fn level(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

impl ErrorType for SimPin {
    type Error = core::convert::Infallible;
}

impl OutputPin for SimPin {
    fn set_low(&mut self) -> Result<(), Self::Error> {
        self.drive(false);
        Ok(())
    }

    fn set_high(&mut self) -> Result<(), Self::Error> {
        self.drive(true);
        Ok(())
    }
}

impl InputPin for SimPin {
    fn is_high(&mut self) -> Result<bool, Self::Error> {
        Ok(self.level())
    }

    fn is_low(&mut self) -> Result<bool, Self::Error> {
        Ok(!self.level())
    }
}

/// A watchdog that counts pets; clone it to read the count.
#[derive(Debug, Clone, Default)]
pub struct SimWatchdog {
    pets: Arc<AtomicU64>,
    disarmed: Arc<AtomicBool>,
}

impl SimWatchdog {
    pub fn pets(&self) -> u64 {
        self.pets.load(Ordering::SeqCst)
    }

    pub fn disarmed(&self) -> bool {
        self.disarmed.load(Ordering::SeqCst)
    }
}

impl super::Watchdog for SimWatchdog {
    fn pet(&mut self) -> std::io::Result<()> {
        self.pets.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn disarm(&mut self) -> std::io::Result<()> {
        self.disarmed.store(true, Ordering::SeqCst);
        Ok(())
    }
}
