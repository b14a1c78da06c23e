//! Reading a file the warden does not own, without blocking and with a size bound.
//!
//! This module owns the one way every config-like file is read (vassal files and their
//! includes, the Emperor's config, `warden.ini`, pidfiles): opened with `O_PATH` first
//! (no device driver's open runs, no FIFO waits for a writer) and checked with `fstat`
//! to be a regular file (a FIFO, a device such as `/dev/zero` — also through a symlink —
//! a directory or a socket is refused before anything is opened for reading); only then
//! is that same file opened for reading (`O_NONBLOCK|O_NOCTTY`) and read up to a bound (a
//! file larger than the bound, or one that grows past it while being read, is refused).
//! So a file planted in a vassal directory can neither stall a pass nor fill memory.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

use rustix::fs::{Mode, OFlags};

/// The largest vassal file, include, Emperor config or `warden.ini` read: 1 MiB. Real
/// ones are a few KiB.
pub(crate) const MAX_CONFIG: u64 = 1024 * 1024;

/// The largest pidfile read: a PID and a newline fit in 64 bytes many times over.
pub(crate) const MAX_PIDFILE: u64 = 64;

/// Opens `path` for reading: a file of the warden's own (a lock, the pauses) that someone
/// may have replaced. A symlink is not followed and a FIFO does not block; the caller
/// checks what it got.
pub(crate) fn open_own(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags((OFlags::NOFOLLOW | OFlags::NONBLOCK).bits().cast_signed())
        .open(path)
}

/// Why a file could not be read. `Display` says what is wrong and what to do; the
/// caller names the file.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// The path does not exist (or a symlink on it points nowhere).
    NotFound,
    /// Opening or reading failed otherwise (permissions, I/O).
    Io(std::io::Error),
    /// Not a regular file: what it is instead.
    NotRegular(&'static str),
    /// Larger than `max` bytes.
    TooLarge { max: u64 },
    /// On a kernel filesystem (procfs, sysfs, …): not configuration.
    Kernel(&'static str),
}

impl ReadError {
    #[must_use]
    pub(crate) fn is_not_found(&self) -> bool {
        matches!(self, ReadError::NotFound)
    }
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::NotFound => {
                f.write_str("it does not exist; restore it or remove what names it")
            }
            ReadError::Io(e) => write!(f, "cannot read it ({e}); fix its permissions"),
            ReadError::NotRegular(kind) => write!(
                f,
                "it is {kind}, not a regular file, so it was not read; replace it with a regular file or remove it"
            ),
            ReadError::Kernel(fs) => write!(
                f,
                "it is a file of the kernel's ({fs}), not configuration, so it was not read; \
                 name a regular file instead"
            ),
            ReadError::TooLarge { max } => write!(
                f,
                "it is larger than {} KiB, far more than any real config; it was not read: shrink it or remove it",
                max / 1024
            ),
        }
    }
}

fn kind_of(ft: std::fs::FileType) -> Option<&'static str> {
    if ft.is_file() {
        None
    } else if ft.is_dir() {
        Some("a directory")
    } else if ft.is_fifo() {
        Some("a FIFO (named pipe)")
    } else if ft.is_char_device() {
        Some("a character device")
    } else if ft.is_block_device() {
        Some("a block device")
    } else if ft.is_socket() {
        Some("a socket")
    } else {
        Some("not a regular file")
    }
}

/// Filesystems whose files are the kernel's, not anyone's configuration: procfs, sysfs,
/// debugfs, tracefs, securityfs, the cgroup filesystems, bpffs, configfs, devpts,
/// efivarfs and pstore (by their `statfs` magic numbers). Reading some has effects
/// (`/proc/kmsg` consumes the kernel's log).
const PSEUDO: [(i64, &str); 12] = [
    (0x9fa0, "procfs"),
    (0x6265_6572, "sysfs"),
    (0x6462_6720, "debugfs"),
    (0x7472_6163, "tracefs"),
    (0x7363_6673, "securityfs"),
    (0x0027_e0eb, "cgroupfs"),
    (0x6367_7270, "cgroup2"),
    (0xcafe_4a11, "bpffs"),
    (0x6265_6570, "configfs"),
    (0x1cd1, "devpts"),
    (0xde5e_81e4, "efivarfs"),
    (0x6165_676c, "pstore"),
];

/// Reads `path` (following symlinks, as uWSGI does) if it is a regular file of at most
/// `max` bytes.
pub(crate) fn read(path: &Path, max: u64) -> Result<Vec<u8>, ReadError> {
    read_as(path, max, false)
}

/// Like `read`, for a file read as configuration (a vassal file, an include, a pidfile,
/// an Emperor's ini): one on a kernel filesystem (procfs, sysfs, …) is refused.
pub(crate) fn read_config(path: &Path, max: u64) -> Result<Vec<u8>, ReadError> {
    read_as(path, max, true)
}

/// Like `read_config`, as UTF-8 text.
pub(crate) fn read_config_text(path: &Path, max: u64) -> Result<String, ReadError> {
    let bytes = read_config(path, max)?;
    String::from_utf8(bytes).map_err(|_| ReadError::NotRegular("not UTF-8 text"))
}

fn read_as(path: &Path, max: u64, config: bool) -> Result<Vec<u8>, ReadError> {
    let not_found = |e: rustix::io::Errno| {
        if e == rustix::io::Errno::NOENT {
            ReadError::NotFound
        } else {
            ReadError::Io(e.into())
        }
    };
    // First a descriptor that opens nothing (`O_PATH`: no device driver's open runs, no
    // FIFO waits), to see what the path is; then, for a regular file only, that same
    // file opened for reading through it.
    let pinned =
        rustix::fs::open(path, OFlags::PATH | OFlags::CLOEXEC, Mode::empty()).map_err(not_found)?;
    let st = rustix::fs::fstat(&pinned).map_err(|e| ReadError::Io(e.into()))?;
    {
        use rustix::fs::FileType as T;
        let kind = match T::from_raw_mode(st.st_mode) {
            T::RegularFile => None,
            T::Directory => Some("a directory"),
            T::Fifo => Some("a FIFO (named pipe)"),
            T::CharacterDevice => Some("a character device"),
            T::BlockDevice => Some("a block device"),
            T::Socket => Some("a socket"),
            _ => Some("not a regular file"),
        };
        if let Some(kind) = kind {
            return Err(ReadError::NotRegular(kind));
        }
    }
    if config {
        let fs = rustix::fs::fstatfs(&pinned).map_err(|e| ReadError::Io(e.into()))?;
        #[allow(clippy::useless_conversion)]
        let magic = i64::from(fs.f_type);
        if let Some((_, name)) = PSEUDO.iter().find(|(m, _)| *m == magic) {
            return Err(ReadError::Kernel(name));
        }
    }
    let flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
    let through = format!("/proc/self/fd/{}", rustix::fd::AsRawFd::as_raw_fd(&pinned));
    let fd = rustix::fs::open(through.as_str(), flags, Mode::empty()).map_err(not_found)?;
    let file = File::from(fd);
    let meta = file.metadata().map_err(ReadError::Io)?;
    if let Some(kind) = kind_of(meta.file_type()) {
        return Err(ReadError::NotRegular(kind));
    }
    if meta.len() > max {
        return Err(ReadError::TooLarge { max });
    }
    // `/proc` files say 0 and may hold more: the bound is on what is read, not on the
    // size `fstat` gave.
    let mut buf = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.take(max + 1)
        .read_to_end(&mut buf)
        .map_err(ReadError::Io)?;
    if buf.len() as u64 > max {
        return Err(ReadError::TooLarge { max });
    }
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kernel_file_is_not_read_as_configuration() {
        for p in [
            "/proc/self/status",
            "/sys/kernel/mm/transparent_hugepage/enabled",
        ] {
            let p = Path::new(p);
            if !p.exists() {
                continue;
            }
            assert!(
                read(p, 1 << 20).is_ok(),
                "{}: still read as data",
                p.display()
            );
            let e = read_config(p, 1 << 20).unwrap_err();
            assert!(matches!(e, ReadError::Kernel(_)), "{}: {e}", p.display());
            assert!(e.to_string().contains("not configuration"), "{e}");
        }
        let d = tempfile::tempdir().unwrap();
        let ok = d.path().join("a.ini");
        std::fs::write(&ok, "[uwsgi]\n").unwrap();
        assert!(read_config(&ok, 64).is_ok());
    }

    #[test]
    fn regular_file_within_the_bound_is_read() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a.ini");
        std::fs::write(&p, "[uwsgi]\n").unwrap();
        assert_eq!(read(&p, 64).unwrap(), b"[uwsgi]\n");
    }

    #[test]
    fn oversized_file_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("big.ini");
        std::fs::write(&p, vec![b'x'; 65]).unwrap();
        let e = read(&p, 64).unwrap_err();
        assert!(matches!(e, ReadError::TooLarge { max: 64 }), "{e}");
    }

    #[test]
    fn devices_fifos_and_directories_are_refused_without_blocking() {
        let d = tempfile::tempdir().unwrap();
        let link = d.path().join("zero.ini");
        std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
        let e = read(&link, MAX_CONFIG).unwrap_err();
        assert!(e.to_string().contains("a character device"), "{e}");
        let fifo = d.path().join("fifo.ini");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let e = read(&fifo, MAX_CONFIG).unwrap_err();
        assert!(e.to_string().contains("FIFO"), "{e}");
        let e = read(d.path(), MAX_CONFIG).unwrap_err();
        assert!(e.to_string().contains("a directory"), "{e}");
    }

    #[test]
    fn missing_file_is_not_found() {
        assert!(
            read(Path::new("/nonexistent/x.ini"), 64)
                .unwrap_err()
                .is_not_found()
        );
    }
}
