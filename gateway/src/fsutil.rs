//! Small file-system helpers shared by the settings and account files.

use std::io::Write;
use std::path::Path;

/// Replaces `path` with `data`: a new file beside it (`mode`), synced, renamed over it, the
/// directory synced. A crash leaves the old contents or the new, never a mix.
pub fn replace_file(path: &Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("new");
    // A leftover from a crash is made anew, so `mode` holds (it applies on creation only).
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(d) = path.parent().filter(|p| !p.as_os_str().is_empty())
        && let Ok(d) = std::fs::File::open(d)
    {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p)
            .map(|m| m.permissions().mode() & 0o777)
            .unwrap_or(0)
    }

    #[test]
    fn a_replaced_file_has_the_mode_asked_whatever_was_there() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let key = dir.path().join("key.pem");
        // An old key readable by all, and a crash's leftover beside it.
        for p in [&key, &key.with_extension("new")] {
            std::fs::write(p, b"old").unwrap_or_else(|e| panic!("{e}"));
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o644))
                .unwrap_or_else(|e| panic!("{e}"));
        }
        replace_file(&key, b"new secret", 0o600).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            std::fs::read(&key).ok().as_deref(),
            Some(&b"new secret"[..])
        );
        assert_eq!(mode(&key), 0o600);
        assert!(!key.with_extension("new").exists());
    }
}
