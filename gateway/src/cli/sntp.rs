//! `smimegw sntp [--set] SERVER...`: asks NTP servers for the time (the first that answers)
//! and prints the local clock's offset; with `--set`, sets the clock (the appliance's boot
//! and its hourly job run it so; setting needs root).

use std::io::Write;
use std::time::Duration;

use clap::Args;
use smimegw::sntp;

use crate::error::CliError;

#[derive(Debug, Args)]
pub struct SntpArgs {
    /// NTP servers, tried in order: host, host:port or [v6]:port (port 123 by default).
    /// Commas separate several in one argument too.
    #[arg(required = true, value_name = "SERVER")]
    servers: Vec<String>,
    /// Set the system clock from the answer.
    #[arg(long)]
    set: bool,
    /// How long to wait for each server, in seconds.
    #[arg(long, default_value_t = 5, value_name = "SECONDS")]
    timeout: u64,
}

pub fn run(args: SntpArgs, out: &mut dyn Write) -> Result<(), CliError> {
    let servers: Vec<String> = args
        .servers
        .iter()
        .flat_map(|s| s.split(','))
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    let sample = sntp::first_answer(&servers, Duration::from_secs(args.timeout.max(1))).map_err(
        |errors| {
            let all: Vec<String> = errors.iter().map(ToString::to_string).collect();
            CliError::Gateway(format!("no NTP server answered: {}", all.join("; ")))
        },
    )?;
    writeln!(
        out,
        "{} ({}): offset {:+.3} s, round trip {:.0} ms, stratum {}",
        sample.server,
        sample.addr,
        sample.offset,
        sample.delay * 1000.0,
        sample.stratum
    )?;
    if args.set {
        set_clock(sample.offset)?;
        writeln!(out, "clock set")?;
    }
    Ok(())
}

/// Steps the real-time clock by `offset` seconds.
fn set_clock(offset: f64) -> Result<(), CliError> {
    use rustix::time::{ClockId, Timespec, clock_gettime, clock_settime};
    let now = clock_gettime(ClockId::Realtime);
    let nanos =
        now.tv_sec as i128 * 1_000_000_000 + now.tv_nsec as i128 + (offset * 1e9).round() as i128;
    let when = Timespec {
        tv_sec: nanos.div_euclid(1_000_000_000) as i64,
        tv_nsec: nanos.rem_euclid(1_000_000_000) as i64,
    };
    clock_settime(ClockId::Realtime, when)
        .map_err(|e| CliError::Gateway(format!("cannot set the clock: {e}")))
}
