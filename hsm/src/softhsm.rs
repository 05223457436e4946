//! A throwaway SoftHSM2 token in a directory of its own, for tests and benchmarks (and for
//! trying the PKCS#11 path on a development machine).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{Error, Result};

/// Where Debian installs the SoftHSM2 module.
pub const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

/// Writes a SoftHSM2 configuration that keeps its tokens under `dir/tokens` and initialises
/// a token labelled `label` in the first free slot, with user PIN `user_pin` (SO PIN "0000").
/// Returns the configuration file, for `SOFTHSM2_CONF` (which SoftHSM2 reads once, when the
/// module is initialised). The PINs pass on `softhsm2-util`'s command line: development
/// tokens only.
pub fn init_dev_token(dir: &Path, label: &str, user_pin: &str) -> Result<PathBuf> {
    if !Path::new(MODULE).exists() {
        return Err(Error::Module {
            path: MODULE.into(),
            reason: "SoftHSM2 is not installed (apt-get install softhsm2)".into(),
        });
    }
    let tokens = dir.join("tokens");
    std::fs::create_dir_all(&tokens).map_err(|e| Error::storage(&tokens, e))?;
    let conf = dir.join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            tokens.display()
        ),
    )
    .map_err(|e| Error::storage(&conf, e))?;
    let out = Command::new("softhsm2-util")
        .env("SOFTHSM2_CONF", &conf)
        .args(["--init-token", "--free", "--label", label])
        .args(["--so-pin", "0000", "--pin", user_pin])
        .output()
        .map_err(|e| Error::storage("softhsm2-util", e))?;
    if !out.status.success() {
        return Err(Error::storage(
            "softhsm2-util",
            format!(
                "--init-token failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ));
    }
    Ok(conf)
}
