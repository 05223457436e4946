//! The board's behaviour with simulated pins: the test plays the chassis, the button and the
//! eyes looking at the LEDs; time is given in milliseconds.
#![allow(clippy::unwrap_used)]

use board::sim::{SimPin, SimWatchdog};
use board::{Board, Debounced, Event, Health, Status, StatusLeds, Timing, Watchdog};

struct Rig {
    green: SimPin,
    amber: SimPin,
    red: SimPin,
    tamper: SimPin,
    button: SimPin,
    dog: SimWatchdog,
    board: Board<SimPin, SimPin, SimPin, SimPin, SimPin, SimWatchdog>,
}

fn rig() -> Rig {
    let (green, amber, red) = (SimPin::new(false), SimPin::new(false), SimPin::new(false));
    let tamper = SimPin::new(false); // closed chassis: low
    let button = SimPin::new(true); // released: pulled high
    let dog = SimWatchdog::default();
    let board = Board::new(
        StatusLeds::new(green.clone(), amber.clone(), red.clone()),
        tamper.clone(),
        button.clone(),
        dog.clone(),
        Timing::default(),
    );
    Rig {
        green,
        amber,
        red,
        tamper,
        button,
        dog,
        board,
    }
}

const UP: Health = Health {
    smtp_accepting: true,
    token_reachable: true,
    booting: false,
    updating: false,
};

impl Rig {
    fn leds(&self) -> (bool, bool, bool) {
        (self.green.level(), self.amber.level(), self.red.level())
    }
}

#[test]
fn leds_follow_the_status_and_blink_where_they_should() {
    let mut r = rig();
    let booting = Health {
        booting: true,
        ..Health::default()
    };
    r.board.poll(0, booting).unwrap();
    assert_eq!(r.leds(), (false, true, false), "booting: amber");
    r.board.poll(100, UP).unwrap();
    assert_eq!(r.leds(), (true, false, false), "ready: green");
    let token_down = Health {
        token_reachable: false,
        ..UP
    };
    r.board.poll(1000, token_down).unwrap();
    assert_eq!(
        r.leds(),
        (false, false, true),
        "token error: red blinks (on)"
    );
    r.board.poll(1500, token_down).unwrap();
    assert_eq!(
        r.leds(),
        (false, false, false),
        "token error: red blinks (off)"
    );
    let updating = Health {
        updating: true,
        ..UP
    };
    r.board.poll(2000, updating).unwrap();
    assert_eq!(r.leds(), (false, true, false));
    r.board.poll(2500, updating).unwrap();
    assert_eq!(r.leds(), (false, false, false), "update: amber blinks");
}

#[test]
fn the_watchdog_is_petted_only_while_healthy() {
    let mut r = rig();
    r.board
        .poll(
            0,
            Health {
                booting: true,
                ..Health::default()
            },
        )
        .unwrap();
    assert_eq!(r.dog.pets(), 1, "a slow start is not a hang");
    r.board.poll(100, UP).unwrap();
    assert_eq!(r.dog.pets(), 2);
    for h in [
        Health {
            smtp_accepting: false,
            ..UP
        },
        Health {
            token_reachable: false,
            ..UP
        },
    ] {
        r.board.poll(200, h).unwrap();
        assert_eq!(r.dog.pets(), 2, "{h:?}: not petted");
    }
    r.board.shutdown().unwrap();
    assert!(r.dog.disarmed());
}

#[test]
fn an_opened_chassis_is_reported_once_and_latched_and_the_watchdog_still_petted() {
    let mut r = rig();
    r.board.poll(0, UP).unwrap();
    // A bounce shorter than the settle time is nothing.
    r.tamper.drive(true);
    assert!(r.board.poll(10, UP).unwrap().is_empty());
    r.tamper.drive(false);
    assert!(r.board.poll(20, UP).unwrap().is_empty());
    assert!(!r.board.tampered());
    // Opened for real.
    r.tamper.drive(true);
    assert!(r.board.poll(100, UP).unwrap().is_empty());
    assert_eq!(r.board.poll(200, UP).unwrap(), vec![Event::Tamper]);
    assert_eq!(r.leds(), (false, true, true), "tamper: red and amber");
    let pets = r.dog.pets();
    // Closed again: still tampered until an administrator clears it; reported once.
    r.tamper.drive(false);
    for t in [300, 400, 500] {
        assert!(r.board.poll(t, UP).unwrap().is_empty());
    }
    assert!(r.board.tampered());
    assert_eq!(r.board.status(UP), Status::Tamper);
    assert_eq!(r.dog.pets(), pets + 3, "a tamper is no hang: still petted");
    r.board.clear_tamper();
    r.board.poll(600, UP).unwrap();
    assert_eq!(r.leds(), (true, false, false));
    assert!(!r.board.tampered());
}

#[test]
fn holding_the_reset_button_requests_a_factory_reset_once() {
    let mut r = rig();
    r.button.drive(false); // pressed
    let mut events = Vec::new();
    for t in (0..=9_000).step_by(500) {
        events.extend(r.board.poll(t, UP).unwrap());
    }
    assert!(
        events.is_empty(),
        "a press shorter than 10 s is not a reset"
    );
    r.button.drive(true);
    r.board.poll(9_100, UP).unwrap();
    r.board.poll(9_200, UP).unwrap();
    // Pressed again and held for 10 s: one request.
    r.button.drive(false);
    for t in (10_000..=25_000).step_by(500) {
        events.extend(r.board.poll(t, UP).unwrap());
    }
    assert_eq!(events, vec![Event::FactoryResetRequested]);
}

#[test]
fn debouncing_needs_the_level_to_hold() {
    let pin = SimPin::new(false);
    let mut d = Debounced::new(pin.clone(), true, 50);
    assert!(!d.sample(0).unwrap());
    pin.drive(true);
    assert!(!d.sample(10).unwrap());
    assert!(!d.sample(40).unwrap());
    assert!(d.sample(60).unwrap());
    pin.drive(false);
    assert!(d.sample(70).unwrap());
    assert!(!d.sample(120).unwrap());
}

#[test]
fn the_linux_watchdog_writes_pets_and_the_magic_close() {
    // A regular file stands in for /dev/watchdog: what the driver would receive.
    let dir = std::env::temp_dir().join(format!("board-wd-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let dev = dir.join("watchdog");
    std::fs::write(&dev, b"").unwrap();
    let mut w = board::LinuxWatchdog::open(&dev).unwrap();
    w.pet().unwrap();
    w.pet().unwrap();
    w.disarm().unwrap();
    w.pet().unwrap(); // after the magic close: nothing more is written
    assert_eq!(std::fs::read(&dev).unwrap(), b"\0\0V");
    let e = board::LinuxWatchdog::open(&dir.join("missing")).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn file_pins_drive_a_board_a_tester_can_open_the_chassis_of() {
    use board::pins::Pins;
    let dir = std::env::temp_dir().join(format!("board-pins-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let p = Pins::files(&dir).unwrap();
    // Created closed and released.
    assert_eq!(std::fs::read_to_string(dir.join("tamper")).unwrap(), "0\n");
    assert_eq!(std::fs::read_to_string(dir.join("button")).unwrap(), "1\n");
    let dog = SimWatchdog::default();
    let mut b = Board::new(
        StatusLeds::new(p.green, p.amber, p.red),
        p.tamper,
        p.button,
        dog.clone(),
        Timing::default(),
    );
    let leds = || ["green", "amber", "red"].map(|n| std::fs::read_to_string(dir.join(n)).unwrap());
    assert!(b.poll(0, UP).unwrap().is_empty());
    assert_eq!(leds(), ["1\n", "0\n", "0\n"]);
    std::fs::write(dir.join("tamper"), "1").unwrap();
    assert!(b.poll(1000, UP).unwrap().is_empty());
    assert_eq!(b.poll(2000, UP).unwrap(), vec![Event::Tamper]);
    assert_eq!(leds(), ["0\n", "1\n", "1\n"]);
    // A file that says something else is an error naming it, not a guess.
    std::fs::write(dir.join("button"), "pressed").unwrap();
    let e = b.poll(3000, UP).unwrap_err();
    assert!(e.to_string().contains("button: expected 0 or 1"), "{e}");
    // A missing input file reads as its resting level.
    std::fs::remove_file(dir.join("button")).unwrap();
    assert!(b.poll(4000, UP).unwrap().is_empty());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn gpio_lines_are_checked_and_a_missing_chip_is_named() {
    use board::pins::{Lines, Pins};
    let lines = Lines {
        green: 1,
        amber: 2,
        red: 3,
        tamper: 3,
        button: 5,
    };
    let e = Pins::gpio(std::path::Path::new("/dev/gpiochip0"), &lines).unwrap_err();
    assert_eq!(e.to_string(), "GPIO lines: line 3 is given two jobs");
    let lines = Lines { tamper: 4, ..lines };
    let e = Pins::gpio(std::path::Path::new("/nonexistent/gpiochip9"), &lines).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.starts_with("GPIO lines [1, 2, 3, 4, 5] on /nonexistent/gpiochip9: "),
        "{msg}"
    );
}
