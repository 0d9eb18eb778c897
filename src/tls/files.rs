//! Reading watched files safely, and telling cheaply whether they changed.
//!
//! Reloads run under the proxy's reload lock, which `POST /reload` and
//! SIGHUP wait for, so no read may block or run long:
//!
//! - only regular files are read: a FIFO, a device (`/dev/zero` behind a
//!   symlink), a socket or a directory at a watched path is refused by its
//!   type before anything is opened, and the opened handle is checked again
//!   (the path may have been switched in between); files are opened with
//!   `O_NONBLOCK`, so even a FIFO slipped in at that instant cannot block
//!   the `open`;
//! - sizes are capped ([`MAX_PEM_FILE`], [`MAX_CRL_FILE`]), by the size the
//!   file system reports before reading and by the bytes actually read;
//! - the poll does not read a file whose [`Stamp`] (device, inode, size,
//!   mtime, ctime) is the one it read last time ([`FileMemo`]): a large
//!   CRL is hashed when it changes, not every interval.
//!
//! Any write to a file changes its ctime, which no program can set back
//! (only the system clock can), and publishing by rename or symlink switch
//! changes the inode. So a rewrite that keeps the size and restores the
//! mtime (`cp -p`, `rsync -t`, `touch -r`) is still seen. A write within
//! the same clock tick as the poll's read cannot change the ctime the poll
//! saw, so a stamp only counts once its ctime is [`SETTLED`] in the past;
//! until then the file is read and hashed at every poll (as git treats a
//! "racily clean" index entry).

use std::collections::HashMap;
use std::fs::{File, Metadata};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::digest::Digest;
use super::{invalid, TlsLoadError};

/// Largest certificate, key, CA bundle or intermediate bundle read: a full
/// public root store is about 200 KiB, one certificate a few KiB.
pub const MAX_PEM_FILE: u64 = 1 << 20;

/// Largest CRL file read: about two million revoked serials in PEM. A CRL
/// that large is rare; a file larger than this is not a CRL to load on a
/// proxy's poll.
pub const MAX_CRL_FILE: u64 = 256 << 20;

/// How long after its last change (ctime) a file's stamp is trusted to
/// stand for its content. Far above any file system's timestamp
/// granularity.
pub const SETTLED: Duration = Duration::from_secs(2);

/// What the file system says about a file's content without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl Stamp {
    fn of(meta: &Metadata) -> Stamp {
        let ns = |s: i64, n: i64| i128::from(s) * 1_000_000_000 + i128::from(n);
        Stamp {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime_ns: ns(meta.mtime(), meta.mtime_nsec()),
            ctime_ns: ns(meta.ctime(), meta.ctime_nsec()),
        }
    }

    /// Whether the file last changed at least [`SETTLED`] before `now`.
    fn settled(&self, now: SystemTime) -> bool {
        let Ok(now) = now.duration_since(SystemTime::UNIX_EPOCH) else {
            return false;
        };
        let now_ns = now.as_nanos() as i128;
        self.ctime_ns <= now_ns - SETTLED.as_nanos() as i128
    }
}

/// What a file is, for an error message.
fn kind(meta: &Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    }
}

/// Refuses anything but a regular file of at most `cap` bytes.
fn check(path: &Path, meta: &Metadata, cap: u64) -> Result<Stamp, TlsLoadError> {
    if !meta.file_type().is_file() {
        return Err(invalid(
            path,
            format!(
                "is {}, not a regular file: only regular files are read",
                kind(meta)
            ),
        ));
    }
    if meta.len() > cap {
        return Err(too_large(path, meta.len(), cap));
    }
    Ok(Stamp::of(meta))
}

fn too_large(path: &Path, size: u64, cap: u64) -> TlsLoadError {
    invalid(
        path,
        format!("is {size} bytes, more than the {cap} bytes portcullis reads from such a file"),
    )
}

fn read_error(path: &Path, source: std::io::Error) -> TlsLoadError {
    TlsLoadError::Read {
        path: path.to_path_buf(),
        source,
    }
}

/// The stamp of the file at `path` (symlinks followed), refusing what
/// [`read`] would refuse, without opening it.
pub fn stamp(path: &Path, cap: u64) -> Result<Stamp, TlsLoadError> {
    let meta = std::fs::metadata(path).map_err(|e| read_error(path, e))?;
    check(path, &meta, cap)
}

/// Reads a regular file of at most `cap` bytes, with the stamp it had when
/// opened.
pub fn read(path: &Path, cap: u64) -> Result<(Vec<u8>, Stamp), TlsLoadError> {
    // Refused by type before opening: opening some devices has effects.
    stamp(path, cap)?;
    let file = File::options()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| read_error(path, e))?;
    let meta = file.metadata().map_err(|e| read_error(path, e))?;
    let stamp = check(path, &meta, cap)?;
    let mut data = Vec::with_capacity(meta.len() as usize);
    file.take(cap + 1)
        .read_to_end(&mut data)
        .map_err(|e| read_error(path, e))?;
    if data.len() as u64 > cap {
        return Err(too_large(path, data.len() as u64, cap));
    }
    Ok((data, stamp))
}

/// The files of a CRL setting: the file itself, or a directory's `*.pem` /
/// `*.crl` entries sorted by name (so loading order is stable). Entries
/// are not filtered by type: one that is not a regular file is refused
/// when read.
pub fn crl_files(path: &Path) -> Result<Vec<PathBuf>, TlsLoadError> {
    // metadata follows symlinks: a symlinked directory is a directory.
    let meta = std::fs::metadata(path).map_err(|e| read_error(path, e))?;
    if !meta.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut v = Vec::new();
    for entry in std::fs::read_dir(path).map_err(|e| read_error(path, e))? {
        let p = entry.map_err(|e| read_error(path, e))?.path();
        if p.extension().is_some_and(|e| e == "pem" || e == "crl") {
            v.push(p);
        }
    }
    v.sort();
    Ok(v)
}

/// What the poll remembers of the files it read: per path, the stamp and
/// the digest of the content read under it. Only settled stamps are kept.
#[derive(Debug, Default)]
pub struct FileMemo {
    files: HashMap<PathBuf, (Stamp, Digest)>,
}

impl FileMemo {
    /// The digest of the file at `path` as it is now: remembered when its
    /// stamp is the one remembered, else read and hashed. `next` collects
    /// what to remember for the next poll.
    pub(super) fn digest(
        &self,
        path: &Path,
        cap: u64,
        next: &mut FileMemo,
    ) -> Result<Digest, TlsLoadError> {
        self.digest_at(path, cap, next, SystemTime::now())
    }

    fn digest_at(
        &self,
        path: &Path,
        cap: u64,
        next: &mut FileMemo,
        now: SystemTime,
    ) -> Result<Digest, TlsLoadError> {
        let stamp = stamp(path, cap)?;
        if let Some((s, d)) = self.files.get(path) {
            if *s == stamp && stamp.settled(now) {
                next.files.insert(path.to_path_buf(), (stamp, *d));
                return Ok(*d);
            }
        }
        let (data, stamp) = read(path, cap)?;
        let d = Digest::of(&data);
        next.remember(path, stamp, d, now);
        Ok(d)
    }

    /// Keeps `digest` for `path` if its stamp is settled at `now`.
    pub(super) fn remember(&mut self, path: &Path, stamp: Stamp, digest: Digest, now: SystemTime) {
        if stamp.settled(now) {
            self.files.insert(path.to_path_buf(), (stamp, digest));
        }
    }

    /// How many files are remembered.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_what_is_not_a_regular_file_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("crl.pem");
        let status = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("mkfifo");
        assert!(status.success());
        let e = read(&fifo, MAX_CRL_FILE).unwrap_err().to_string();
        assert!(e.contains("is a FIFO, not a regular file"), "{e}");

        let zero = dir.path().join("zero.pem");
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        let e = read(&zero, MAX_CRL_FILE).unwrap_err().to_string();
        assert!(e.contains("is a character device"), "{e}");

        let e = read(dir.path(), MAX_PEM_FILE).unwrap_err().to_string();
        assert!(e.contains("is a directory"), "{e}");
    }

    #[test]
    fn refuses_files_over_the_cap_by_their_size() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big.pem");
        let f = File::create(&big).unwrap();
        f.set_len(MAX_PEM_FILE + 1).unwrap();
        let e = read(&big, MAX_PEM_FILE).unwrap_err().to_string();
        assert!(e.contains("is 1048577 bytes, more than the 1048576"), "{e}");
        f.set_len(MAX_PEM_FILE).unwrap();
        assert_eq!(
            read(&big, MAX_PEM_FILE).unwrap().0.len() as u64,
            MAX_PEM_FILE
        );
    }

    #[test]
    fn the_memo_skips_settled_unchanged_files_and_sees_rewrites() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "one").unwrap();
        let (_, first) = read(&path, MAX_PEM_FILE).unwrap();
        // A file changed just now is not settled: it is read every time.
        assert!(!first.settled(SystemTime::now()));
        let later = SystemTime::now() + SETTLED + Duration::from_secs(1);
        assert!(first.settled(later));

        // Remembered with a made-up digest: an unchanged, settled stamp is
        // trusted without reading the file, which the made-up digest shows;
        // an unsettled one is read.
        let mut memo = FileMemo::default();
        let made_up = Digest::of(b"remembered");
        memo.remember(&path, first, made_up, later);
        let mut next = FileMemo::default();
        let at_later = memo.digest_at(&path, MAX_PEM_FILE, &mut next, later);
        assert_eq!(at_later.unwrap(), made_up);
        assert_eq!(next.len(), 1, "kept for the next poll");
        let mut next = FileMemo::default();
        let now = memo.digest_at(&path, MAX_PEM_FILE, &mut next, SystemTime::now());
        assert_eq!(now.unwrap(), Digest::of(b"one"));
        assert!(next.is_empty(), "an unsettled stamp is not remembered");

        // Rewritten in place with the same size and the old mtime put back:
        // the ctime moves on (rewrite until the clock has ticked), so the
        // stamp differs and the new content is read.
        let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
        loop {
            std::fs::write(&path, "two").unwrap();
            let f = File::options().write(true).open(&path).unwrap();
            f.set_modified(mtime).unwrap();
            if stamp(&path, MAX_PEM_FILE).unwrap() != first {
                break;
            }
            std::thread::yield_now();
        }
        let rewritten = stamp(&path, MAX_PEM_FILE).unwrap();
        assert_eq!(
            (rewritten.ino, rewritten.size, rewritten.mtime_ns),
            (first.ino, first.size, first.mtime_ns),
            "only the ctime tells"
        );
        let mut next = FileMemo::default();
        let seen = memo.digest_at(&path, MAX_PEM_FILE, &mut next, later);
        assert_eq!(seen.unwrap(), Digest::of(b"two"));
    }
}
