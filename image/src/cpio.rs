//! The root file system as a tree in memory, written as a `newc` cpio archive (what the
//! kernel unpacks as its initramfs).
//!
//! Everything that could differ between two builds of the same inputs is fixed: entries in
//! path order, owner root, inode numbers counted from 1, one modification time for all.

use std::collections::BTreeMap;
use std::io::{self, Write};

/// What a path is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Dir,
    File(Vec<u8>),
    Symlink(String),
    /// A character device (major, minor).
    CharDev(u32, u32),
}

/// A path in the tree with its permission bits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub mode: u32,
    pub node: Node,
}

/// A root file system: paths without the leading `/`.
#[derive(Debug, Default)]
pub struct Tree {
    entries: BTreeMap<String, Entry>,
}

impl Tree {
    pub fn new() -> Tree {
        Tree::default()
    }

    /// Adds `path` (its parent directories too, mode 0755). A path given twice keeps the
    /// last; a directory over a directory is no change.
    pub fn add(&mut self, path: &str, mode: u32, node: Node) {
        let path = path
            .trim_start_matches('/')
            .trim_end_matches('/')
            .to_string();
        if path.is_empty() {
            return;
        }
        if let Some((parent, _)) = path.rsplit_once('/')
            && !self.entries.contains_key(parent)
        {
            self.add(parent, 0o755, Node::Dir);
        }
        if node == Node::Dir
            && let Some(e) = self.entries.get_mut(&path)
            && e.node == Node::Dir
        {
            e.mode = mode;
            return;
        }
        self.entries.insert(path, Entry { mode, node });
    }

    pub fn get(&self, path: &str) -> Option<&Entry> {
        self.entries.get(path.trim_start_matches('/'))
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &Entry)> {
        self.entries.iter()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The archive, every entry stamped with `mtime` (seconds since the epoch).
    pub fn write_cpio(&self, mtime: u32, out: &mut impl Write) -> io::Result<()> {
        let mut w = Counting { inner: out, n: 0 };
        for (ino, (path, e)) in (1u32..).zip(&self.entries) {
            let (kind, nlink, data, rdev): (u32, u32, &[u8], (u32, u32)) = match &e.node {
                Node::Dir => (0o040000, 2, &[], (0, 0)),
                Node::File(d) => (0o100000, 1, d, (0, 0)),
                Node::Symlink(t) => (0o120000, 1, t.as_bytes(), (0, 0)),
                Node::CharDev(maj, min) => (0o020000, 1, &[], (*maj, *min)),
            };
            header(
                &mut w,
                ino,
                kind | (e.mode & 0o7777),
                nlink,
                mtime,
                data.len(),
                rdev,
                path,
            )?;
            w.write_all(data)?;
            pad(&mut w)?;
        }
        header(&mut w, 0, 0, 1, 0, 0, (0, 0), "TRAILER!!!")?;
        // The kernel reads whole blocks; a tidy end.
        while !w.n.is_multiple_of(512) {
            w.write_all(&[0])?;
        }
        Ok(())
    }
}

struct Counting<'a, W> {
    inner: &'a mut W,
    n: u64,
}

impl<W: Write> Write for Counting<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.n += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[allow(clippy::too_many_arguments)]
fn header<W: Write>(
    w: &mut Counting<'_, W>,
    ino: u32,
    mode: u32,
    nlink: u32,
    mtime: u32,
    size: usize,
    rdev: (u32, u32),
    name: &str,
) -> io::Result<()> {
    let size = u32::try_from(size)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, format!("{name}: over 4 GiB")))?;
    let fields = [
        ino,
        mode,
        0,
        0,
        nlink,
        mtime,
        size,
        0,
        0,
        rdev.0,
        rdev.1,
        name.len() as u32 + 1,
        0,
    ];
    let mut h = String::with_capacity(110);
    h.push_str("070701");
    for f in fields {
        h.push_str(&format!("{f:08X}"));
    }
    w.write_all(h.as_bytes())?;
    w.write_all(name.as_bytes())?;
    w.write_all(&[0])?;
    pad(w)
}

fn pad<W: Write>(w: &mut Counting<'_, W>) -> io::Result<()> {
    while !w.n.is_multiple_of(4) {
        w.write_all(&[0])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents_are_added_and_order_is_by_path() {
        let mut t = Tree::new();
        t.add("/usr/bin/x", 0o755, Node::File(b"#!".to_vec()));
        t.add("/bin", 0o755, Node::Dir);
        let paths: Vec<&str> = t.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(paths, ["bin", "usr", "usr/bin", "usr/bin/x"]);
    }

    #[test]
    fn archive_is_read_by_cpio() {
        let mut t = Tree::new();
        t.add("etc/hello", 0o644, Node::File(b"hello\n".to_vec()));
        t.add("bin/sh", 0o777, Node::Symlink("busybox".into()));
        t.add("dev/console", 0o600, Node::CharDev(5, 1));
        let mut a = Vec::new();
        t.write_cpio(0, &mut a).unwrap();
        assert_eq!(a.len() % 512, 0);
        let mut b = Vec::new();
        t.write_cpio(0, &mut b).unwrap();
        assert_eq!(a, b, "the same tree gives the same bytes");
        // GNU cpio lists what we wrote, with types and sizes.
        let mut child = std::process::Command::new("cpio")
            .args(["-t", "-v", "--quiet"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("cpio runs");
        child.stdin.take().unwrap().write_all(&a).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(
            text.contains("-rw-r--r--") && text.contains("etc/hello"),
            "{text}"
        );
        assert!(text.contains("bin/sh -> busybox"), "{text}");
        assert!(
            text.contains("crw-------") && text.contains("dev/console"),
            "{text}"
        );
    }
}
