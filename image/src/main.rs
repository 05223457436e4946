//! `cargo run -p image -- build`: builds the smimegw gateway in release mode and the
//! appliance image from it, into `target/appliance/`.

use std::path::PathBuf;
use std::process::{Command, ExitCode};

const USAGE: &str =
    "usage: image build [--binary PATH] [--out DIR] [--kernel VERSION] [--version V]

Builds the firmware image (kernel, initramfs, manifest) into DIR (default target/appliance).
Without --binary, runs `cargo build --release -p smimegw` first and ships that binary.";

fn main() -> ExitCode {
    match run(std::env::args().skip(1).collect()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("image: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(args: Vec<String>) -> Result<(), String> {
    let mut it = args.into_iter();
    match it.next().as_deref() {
        Some("build") => {}
        Some("-h" | "--help") => {
            println!("{USAGE}");
            return Ok(());
        }
        _ => return Err(USAGE.to_string()),
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let mut binary = None;
    let mut out = target.join("appliance");
    let mut kernel = None;
    let mut version = None;
    while let Some(a) = it.next() {
        let mut value = || it.next().ok_or(format!("{a} needs a value\n{USAGE}"));
        match a.as_str() {
            "--binary" => binary = Some(PathBuf::from(value()?)),
            "--out" => out = PathBuf::from(value()?),
            "--kernel" => kernel = Some(value()?),
            "--version" => version = Some(value()?),
            _ => return Err(format!("unknown argument {a}\n{USAGE}")),
        }
    }
    let binary = match binary {
        Some(b) => b,
        None => {
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let status = Command::new(cargo)
                .args(["build", "--release", "-p", "smimegw", "--bin", "smimegw"])
                .current_dir(&root)
                .status()
                .map_err(|e| format!("cargo: {e}"))?;
            if !status.success() {
                return Err("building smimegw failed".into());
            }
            target.join("release/smimegw")
        }
    };
    let mut opts = image::Options::new(binary, out);
    opts.kernel = kernel;
    if let Some(v) = version {
        opts.version = v;
    } else if let Some(rev) = git_revision(&root) {
        opts.version = format!("{}+{rev}", opts.version);
    }
    let started = std::time::Instant::now();
    let r = image::build(&opts).map_err(|e| e.to_string())?;
    let mib = |n: u64| n as f64 / (1024.0 * 1024.0);
    println!("smimegw appliance {} in {}", opts.version, r.dir.display());
    println!(
        "  kernel     {} ({:.1} MiB)",
        r.kernel_version,
        mib(r.kernel_size)
    );
    println!(
        "  initramfs  {:.1} MiB xz ({:.1} MiB unpacked, {} entries)",
        mib(r.initramfs_size),
        mib(r.tree_size),
        r.files
    );
    println!(
        "  image size {:.1} MiB compressed (goal: under 64 MiB)",
        mib(r.kernel_size + r.initramfs_size)
    );
    println!("  sha256     {}", r.digest);
    println!("  manifest   {}", r.manifest.display());
    println!("  built in   {:.1} s", started.elapsed().as_secs_f64());
    println!("Boot it: qemu/run");
    Ok(())
}

/// The commit the image is built from, `-dirty` with uncommitted changes.
fn git_revision(root: &std::path::Path) -> Option<String> {
    let out = Command::new("git")
        .args(["describe", "--always", "--dirty", "--abbrev=12"])
        .current_dir(root)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}
