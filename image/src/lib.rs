//! Builds the appliance's firmware image: a Debian kernel and a root file system (busybox,
//! the `smimegw` binary, the SoftHSM2 module, the shared libraries they need as the dynamic
//! loader finds them, the kernel modules the appliance uses, and the scripts in `rootfs/`),
//! packed as an xz-compressed initramfs, with a manifest of every file.
//!
//! The same inputs give the same image, byte for byte: the tree is written in path order
//! with one timestamp (`SOURCE_DATE_EPOCH`, else 0) and compressed single-threaded.

pub mod cpio;

use std::fmt;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::cpio::{Node, Tree};

/// Where Debian's SoftHSM2 puts its module (and where the image keeps it).
pub const SOFTHSM_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

/// Kernel modules the appliance loads at boot, in this order (their dependencies before
/// them): the virtio disk and network, ext4 for the data disk, the i6300esb watchdog, QEMU's
/// firmware configuration (the board key and first-boot settings), and crc32c, which ext4
/// asks the crypto API for by name (so it is no dependency in `modules.dep`).
pub const MODULES: &[&str] = &[
    "virtio_pci",
    "virtio_blk",
    "virtio_net",
    "crc32c_generic",
    "ext4",
    "i6300esb",
    "qemu_fw_cfg",
];

/// What to build from.
#[derive(Debug, Clone)]
pub struct Options {
    /// The `smimegw` binary to ship (stripped on the way in).
    pub binary: PathBuf,
    /// Output directory (`target/appliance` by default).
    pub out: PathBuf,
    /// Kernel version (`/boot/vmlinuz-VERSION`, `/lib/modules/VERSION`); default: the newest.
    pub kernel: Option<String>,
    /// The image's version string.
    pub version: String,
    /// Files copied into the tree as they are (the repository's `image/rootfs`).
    pub rootfs: PathBuf,
}

impl Options {
    /// Defaults for the repository: `rootfs/` beside this crate's manifest.
    pub fn new(binary: PathBuf, out: PathBuf) -> Options {
        Options {
            binary,
            out,
            kernel: None,
            version: env!("CARGO_PKG_VERSION").to_string(),
            rootfs: Path::new(env!("CARGO_MANIFEST_DIR")).join("rootfs"),
        }
    }
}

/// What was built.
#[derive(Debug, Clone)]
pub struct Report {
    pub dir: PathBuf,
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
    pub manifest: PathBuf,
    pub kernel_version: String,
    pub kernel_size: u64,
    pub initramfs_size: u64,
    /// The root file system before compression.
    pub tree_size: u64,
    pub files: usize,
    /// SHA-256 over the kernel and the initramfs.
    pub digest: String,
}

/// Why a build failed.
#[derive(Debug)]
pub struct Error(String);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

fn io_err(what: impl fmt::Display) -> impl FnOnce(std::io::Error) -> Error {
    move |e| Error(format!("{what}: {e}"))
}

/// Builds the image into `opts.out`.
pub fn build(opts: &Options) -> Result<Report, Error> {
    let kver = match &opts.kernel {
        Some(v) => v.clone(),
        None => newest_kernel()?,
    };
    let kernel_src = PathBuf::from(format!("/boot/vmlinuz-{kver}"));
    let moddir = PathBuf::from(format!("/lib/modules/{kver}"));
    let mut tree = Tree::new();
    let mut sources: Vec<PathBuf> = vec![kernel_src.clone()];

    for d in [
        "dev", "proc", "sys", "run", "data", "mnt", "root", "etc", "bin", "sbin", "usr/bin",
        "usr/sbin",
    ] {
        tree.add(d, 0o755, Node::Dir);
    }
    tree.add("tmp", 0o1777, Node::Dir);
    tree.add("dev/console", 0o600, Node::CharDev(5, 1));
    tree.add("dev/null", 0o666, Node::CharDev(1, 3));
    tree.add("var", 0o777, Node::Symlink("run".into()));
    tree.add(
        "etc/resolv.conf",
        0o777,
        Node::Symlink("/run/resolv.conf".into()),
    );
    tree.add("etc/mtab", 0o777, Node::Symlink("/proc/mounts".into()));

    // busybox and its applets.
    let busybox = which("busybox")?;
    if elf_needs(&busybox)?.is_some() {
        return Err(Error(format!(
            "{} is linked dynamically; install busybox-static",
            busybox.display()
        )));
    }
    tree.add("bin/busybox", 0o755, Node::File(read(&busybox)?));
    sources.push(busybox.clone());
    let list = run(Command::new(&busybox).arg("--list-full"))?;
    for applet in list.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if applet == "bin/busybox" || applet == "linuxrc" {
            continue;
        }
        tree.add(applet, 0o777, Node::Symlink("/bin/busybox".into()));
    }
    // The kernel runs /init: busybox's init, reading /etc/inittab.
    tree.add("init", 0o777, Node::Symlink("/bin/busybox".into()));

    // The gateway, SoftHSM2, and the libraries the loader resolves for them.
    let stripped = strip(&opts.binary, &opts.out)?;
    tree.add("usr/bin/smimegw", 0o755, Node::File(read(&stripped)?));
    let _ = fs::remove_file(&stripped);
    sources.push(opts.binary.clone());
    let softhsm_util = which("softhsm2-util")?;
    tree.add(
        "usr/bin/softhsm2-util",
        0o755,
        Node::File(read(&softhsm_util)?),
    );
    tree.add(
        SOFTHSM_MODULE,
        0o644,
        Node::File(read(Path::new(SOFTHSM_MODULE))?),
    );
    sources.push(softhsm_util.clone());
    sources.push(PathBuf::from(SOFTHSM_MODULE));
    for elf in [&opts.binary, &softhsm_util, &PathBuf::from(SOFTHSM_MODULE)] {
        for lib in elf_needs(elf)?.unwrap_or_default() {
            if tree.get(&lib.to_string_lossy()).is_none() {
                // The file itself, where a symlink points (the loader opens the path it
                // searched; the real name does not matter).
                let data = read(&lib)?;
                tree.add(&lib.to_string_lossy(), 0o755, Node::File(data));
                sources.push(lib);
            }
        }
    }

    // Kernel modules, dependencies first.
    let order = module_order(&moddir, MODULES)?;
    let mut load = String::new();
    for rel in &order {
        let path = moddir.join(rel);
        tree.add(
            &format!("lib/modules/{kver}/{rel}"),
            0o644,
            Node::File(read(&path)?),
        );
        load.push_str(rel);
        load.push('\n');
        sources.push(path);
    }
    tree.add("etc/modules.load", 0o644, Node::File(load.into_bytes()));

    // The repository's scripts and settings.
    add_dir(&mut tree, &opts.rootfs, "")?;

    // Who we are.
    let release = format!(
        "NAME=\"smimegw appliance\"\nID=smimegw\nVERSION_ID={v}\nPRETTY_NAME=\"smimegw appliance {v}\"\n",
        v = opts.version
    );
    tree.add("etc/os-release", 0o644, Node::File(release.into_bytes()));
    tree.add(
        "etc/smimegw/version",
        0o644,
        Node::File(format!("{}\n", opts.version).into_bytes()),
    );
    let manifest = manifest(&tree, &kver, &opts.version, &sources)?;
    tree.add(
        "etc/smimegw/manifest",
        0o644,
        Node::File(manifest.clone().into_bytes()),
    );

    // Write: into a scratch directory, then renamed over the previous image.
    fs::create_dir_all(&opts.out).map_err(io_err(opts.out.display()))?;
    let scratch = opts.out.join(".building");
    let _ = fs::remove_dir_all(&scratch);
    fs::create_dir_all(&scratch).map_err(io_err(scratch.display()))?;
    let mtime = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .unwrap_or(0);
    let mut archive = Vec::new();
    tree.write_cpio(mtime, &mut archive)
        .map_err(io_err("writing the root file system"))?;
    let tree_size = archive.len() as u64;
    let initramfs = scratch.join("initramfs.img");
    xz(&archive, &initramfs)?;
    drop(archive);
    let kernel = scratch.join("vmlinuz");
    fs::copy(&kernel_src, &kernel).map_err(io_err(kernel_src.display()))?;
    fs::write(scratch.join("manifest.txt"), &manifest).map_err(io_err("manifest.txt"))?;
    // Each file read once: its own digest, and the image's over both.
    let (kernel_bytes, initramfs_bytes) = (read(&kernel)?, read(&initramfs)?);
    let mut h = Sha256::new();
    h.update(&kernel_bytes);
    h.update(&initramfs_bytes);
    let digest = hex(&h.finalize());
    fs::write(
        scratch.join("SHA256SUMS"),
        format!(
            "{}  vmlinuz\n{}  initramfs.img\n",
            hex(&Sha256::digest(&kernel_bytes)),
            hex(&Sha256::digest(&initramfs_bytes))
        ),
    )
    .map_err(io_err("SHA256SUMS"))?;
    for name in ["vmlinuz", "initramfs.img", "manifest.txt", "SHA256SUMS"] {
        fs::rename(scratch.join(name), opts.out.join(name)).map_err(io_err(name))?;
    }
    let _ = fs::remove_dir_all(&scratch);
    let size = |p: &Path| fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let report = Report {
        dir: opts.out.clone(),
        kernel: opts.out.join("vmlinuz"),
        initramfs: opts.out.join("initramfs.img"),
        manifest: opts.out.join("manifest.txt"),
        kernel_version: kver,
        kernel_size: size(&opts.out.join("vmlinuz")),
        initramfs_size: size(&opts.out.join("initramfs.img")),
        tree_size,
        files: tree.len(),
        digest,
    };
    Ok(report)
}

fn read(path: &Path) -> Result<Vec<u8>, Error> {
    fs::read(path).map_err(io_err(path.display()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn run(cmd: &mut Command) -> Result<String, Error> {
    let out = cmd
        .output()
        .map_err(io_err(format!("{:?}", cmd.get_program())))?;
    if !out.status.success() {
        return Err(Error(format!(
            "{:?} failed: {}",
            cmd.get_program(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    String::from_utf8(out.stdout).map_err(|_| Error(format!("{:?}: not UTF-8", cmd.get_program())))
}

fn which(name: &str) -> Result<PathBuf, Error> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| Error(format!("{name} is not installed")))
}

/// The newest kernel that has both its image and its modules.
fn newest_kernel() -> Result<String, Error> {
    let mut versions: Vec<String> = fs::read_dir("/boot")
        .map_err(io_err("/boot"))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_prefix("vmlinuz-"))
                .map(str::to_string)
        })
        .filter(|v| Path::new(&format!("/lib/modules/{v}/modules.dep")).is_file())
        .collect();
    versions.sort_by_key(|v| version_key(v));
    versions
        .pop()
        .ok_or_else(|| Error("no kernel in /boot: install linux-image-amd64".into()))
}

fn version_key(v: &str) -> Vec<u64> {
    v.split(|c: char| !c.is_ascii_digit())
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// The shared libraries (and the loader) an ELF file needs, as the dynamic loader resolves
/// them; `None` for a static executable.
fn elf_needs(elf: &Path) -> Result<Option<Vec<PathBuf>>, Error> {
    if !is_dynamic(&read(elf)?) {
        // (The loader's --list crashes on a static executable.)
        return Ok(None);
    }
    let loader = Path::new("/lib64/ld-linux-x86-64.so.2");
    let out = Command::new(loader)
        .arg("--list")
        .arg(elf)
        .output()
        .map_err(io_err(loader.display()))?;
    if !out.status.success() {
        let msg = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        if msg.contains("not a dynamic executable") {
            return Ok(None);
        }
        return Err(Error(format!(
            "the loader cannot resolve {}: {}",
            elf.display(),
            msg.trim()
        )));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut libs = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux... (0x...)"
        let target = match line.split_once("=>") {
            Some((_, rest)) => rest.trim(),
            None => line,
        };
        if target.starts_with("not found") {
            return Err(Error(format!("{}: {line}", elf.display())));
        }
        let path = target.split(" (").next().unwrap_or("").trim();
        if path.starts_with('/') {
            libs.push(PathBuf::from(path));
        }
    }
    Ok(Some(libs))
}

/// Whether an ELF64 file has a dynamic section (links shared libraries).
fn is_dynamic(elf: &[u8]) -> bool {
    const PT_DYNAMIC: u32 = 2;
    let u16_at = |o: usize| {
        elf.get(o..o + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize)
    };
    let u64_at = |o: usize| {
        elf.get(o..o + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
    };
    if !elf.starts_with(b"\x7fELF\x02\x01") {
        return false;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return false;
    };
    (0..phnum).any(|i| {
        let at = phoff as usize + i * phentsize;
        elf.get(at..at + 4)
            .is_some_and(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) == PT_DYNAMIC)
    })
}

/// Module files (relative to the modules directory) for `names` and their dependencies,
/// each after what it depends on.
fn module_order(moddir: &Path, names: &[&str]) -> Result<Vec<String>, Error> {
    let dep_file = moddir.join("modules.dep");
    let text = fs::read_to_string(&dep_file).map_err(io_err(dep_file.display()))?;
    let deps: std::collections::HashMap<String, (String, Vec<String>)> = text
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(file, rest)| {
            let name = module_name(file);
            (
                name,
                (
                    file.to_string(),
                    rest.split_whitespace().map(str::to_string).collect(),
                ),
            )
        })
        .collect();
    let builtin = fs::read_to_string(moddir.join("modules.builtin")).unwrap_or_default();
    let builtin: std::collections::HashSet<String> = builtin.lines().map(module_name).collect();
    let mut order = Vec::new();
    fn visit(
        file: &str,
        deps: &std::collections::HashMap<String, (String, Vec<String>)>,
        order: &mut Vec<String>,
    ) {
        if order.iter().any(|f| f == file) {
            return;
        }
        if let Some((_, ds)) = deps.get(&module_name(file)) {
            // modules.dep lists each module's full closure, nearest last.
            for d in ds.iter().rev() {
                visit(d, deps, order);
            }
        }
        order.push(file.to_string());
    }
    for name in names {
        let key = name.replace('-', "_");
        match deps.get(&key) {
            Some((file, _)) => visit(file, &deps, &mut order),
            None if builtin.contains(&key) => {}
            None => {
                return Err(Error(format!(
                    "kernel module {name} is neither in {} nor built in",
                    dep_file.display()
                )));
            }
        }
    }
    Ok(order)
}

fn module_name(file: &str) -> String {
    let base = file.rsplit('/').next().unwrap_or(file);
    let base = base.split(".ko").next().unwrap_or(base);
    base.replace('-', "_")
}

/// Copies `dir` into the tree under `prefix`, in name order; executables keep 0755.
fn add_dir(tree: &mut Tree, dir: &Path, prefix: &str) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt;
    let mut names: Vec<_> = fs::read_dir(dir)
        .map_err(io_err(dir.display()))?
        .filter_map(|e| e.ok())
        .collect();
    names.sort_by_key(|e| e.file_name());
    for e in names {
        let name = e.file_name().to_string_lossy().to_string();
        let path = format!("{prefix}/{name}");
        let meta = fs::symlink_metadata(e.path()).map_err(io_err(e.path().display()))?;
        if meta.is_dir() {
            tree.add(&path, 0o755, Node::Dir);
            add_dir(tree, &e.path(), &path)?;
        } else if meta.file_type().is_symlink() {
            let t = fs::read_link(e.path()).map_err(io_err(e.path().display()))?;
            tree.add(&path, 0o777, Node::Symlink(t.to_string_lossy().to_string()));
        } else {
            let mode = if meta.permissions().mode() & 0o111 != 0 {
                0o755
            } else {
                0o644
            };
            tree.add(&path, mode, Node::File(read(&e.path())?));
        }
    }
    Ok(())
}

/// `strip --strip-all` into a scratch file (a debug build's symbols are most of its size).
fn strip(binary: &Path, scratch_dir: &Path) -> Result<PathBuf, Error> {
    fs::create_dir_all(scratch_dir).map_err(io_err(scratch_dir.display()))?;
    let out = scratch_dir.join(".smimegw.stripped");
    match Command::new("strip")
        .arg("--strip-all")
        .arg("-o")
        .arg(&out)
        .arg(binary)
        .status()
    {
        Ok(s) if s.success() => Ok(out),
        _ => {
            fs::copy(binary, &out).map_err(io_err(binary.display()))?;
            Ok(out)
        }
    }
}

fn xz(data: &[u8], out: &Path) -> Result<(), Error> {
    // The kernel's unxz checks CRC32 only; one thread so the output does not depend on the
    // machine.
    let file = fs::File::create(out).map_err(io_err(out.display()))?;
    let mut child = Command::new("xz")
        .args(["--format=xz", "--check=crc32", "-T1", "-6", "-c"])
        .stdin(std::process::Stdio::piped())
        .stdout(file)
        .spawn()
        .map_err(io_err("xz"))?;
    let mut stdin = child
        .stdin
        .take()
        .ok_or_else(|| Error("xz: no stdin".into()))?;
    stdin.write_all(data).map_err(io_err("xz"))?;
    drop(stdin);
    let status = child.wait().map_err(io_err("xz"))?;
    if !status.success() {
        return Err(Error(format!("xz failed: {status}")));
    }
    Ok(())
}

/// The manifest: the image's version, its kernel, the Debian packages the files came from,
/// and every file with its mode, size and SHA-256.
fn manifest(tree: &Tree, kver: &str, version: &str, sources: &[PathBuf]) -> Result<String, Error> {
    let mut m = String::new();
    m.push_str(&format!("smimegw appliance {version}\nkernel {kver}\n\n"));
    m.push_str("# Debian packages\n");
    for p in packages(sources) {
        m.push_str(&p);
        m.push('\n');
    }
    m.push_str("\n# files: mode size sha256 path (symlinks: -> target)\n");
    for (path, e) in tree.iter() {
        let line = match &e.node {
            Node::Dir => format!("d{:04o} - - /{path}", e.mode),
            Node::File(d) => format!(
                "f{:04o} {} {} /{path}",
                e.mode,
                d.len(),
                hex(&Sha256::digest(d))
            ),
            Node::Symlink(t) => format!("l0777 - - /{path} -> {t}"),
            Node::CharDev(a, b) => format!("c{:04o} {a},{b} - /{path}", e.mode),
        };
        m.push_str(&line);
        m.push('\n');
    }
    Ok(m)
}

/// "package version" for the packages that own `files` (by `dpkg -S`), sorted; files no
/// package owns (the smimegw binary) are left out.
fn packages(files: &[PathBuf]) -> Vec<String> {
    let mut names = std::collections::BTreeSet::new();
    for f in files {
        // dpkg knows the paths it installed; a merged /usr shows /lib as /usr/lib or not.
        let real = fs::canonicalize(f).unwrap_or_else(|_| f.clone());
        let unmerged = |p: &Path| p.strip_prefix("/usr").ok().map(|r| Path::new("/").join(r));
        let candidates = [
            Some(f.clone()),
            Some(real.clone()),
            unmerged(f),
            unmerged(&real),
        ];
        for c in candidates.into_iter().flatten() {
            if let Ok(out) = run(Command::new("dpkg").arg("-S").arg(&c)) {
                if let Some((pkgs, _)) = out.lines().next().and_then(|l| l.split_once(": ")) {
                    for p in pkgs.split(", ") {
                        names.insert(p.trim().to_string());
                    }
                }
                break;
            }
        }
    }
    names
        .into_iter()
        .map(|n| {
            let v = run(Command::new("dpkg-query").args(["-W", "-f=${Version}", &n]))
                .unwrap_or_else(|_| "?".into());
            format!("{n} {v}")
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_names_and_versions() {
        assert_eq!(module_name("kernel/fs/ext4/ext4.ko"), "ext4");
        assert_eq!(
            module_name("kernel/crypto/crc32c_generic.ko.xz"),
            "crc32c_generic"
        );
        assert_eq!(module_name("kernel/x/virtio-pci.ko"), "virtio_pci");
        assert!(version_key("6.1.0-56-amd64") > version_key("6.1.0-9-amd64"));
    }

    #[test]
    fn static_and_dynamic_elf() {
        let busybox = which("busybox").unwrap();
        assert!(!is_dynamic(&read(&busybox).unwrap()), "busybox-static");
        assert!(is_dynamic(
            &read(Path::new("/lib64/ld-linux-x86-64.so.2")).unwrap()
        ));
        let ls = elf_needs(&which("ls").unwrap()).unwrap().unwrap();
        assert!(ls.iter().any(|l| l.ends_with("libc.so.6")), "{ls:?}");
        assert!(!is_dynamic(b"#!/bin/sh\n"));
    }

    #[test]
    fn modules_come_after_their_dependencies() {
        let dir = std::env::temp_dir().join(format!("image-mods-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        fs::write(
            dir.join("modules.dep"),
            "kernel/fs/ext4/ext4.ko: kernel/lib/crc16.ko kernel/fs/mbcache.ko kernel/fs/jbd2/jbd2.ko\n\
             kernel/fs/jbd2/jbd2.ko:\nkernel/fs/mbcache.ko:\nkernel/lib/crc16.ko:\n",
        )
        .unwrap();
        fs::write(
            dir.join("modules.builtin"),
            "kernel/drivers/tty/serial/8250.ko\n",
        )
        .unwrap();
        let order = module_order(&dir, &["ext4", "8250"]).unwrap();
        assert_eq!(
            order.last().map(String::as_str),
            Some("kernel/fs/ext4/ext4.ko")
        );
        assert_eq!(order.len(), 4);
        let err = module_order(&dir, &["nosuch"]).unwrap_err();
        assert!(err.to_string().contains("nosuch"), "{err}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
