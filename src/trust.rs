//! Whose word a vassal file is, and what that word may make root do.
//!
//! The warden runs as root, and a vassal file may belong to an app user (tyrant setups,
//! or a vassal directory an app user can write). A path the file names (`pidfile`,
//! `touch-chain-reload`) or a symlink it is is trusted only for what the file's owner
//! could do anyway: read a pidfile that owner could have written, touch a file that
//! owner could touch. This module owns that rule. It reads `/etc/passwd` and
//! `/etc/group` for group membership; it decides nothing else.

use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// True when the user `uid` could write a file of owner `file_uid`, group `file_gid` and
/// `mode`: root, its owner, or a user its group or world write bits let in.
#[must_use]
pub(crate) fn may_write(uid: u32, file_uid: u32, file_gid: u32, mode: u32) -> bool {
    uid == 0
        || file_uid == uid
        || mode & 0o002 != 0
        || (mode & 0o020 != 0 && in_group(uid, file_gid))
}

/// True when the user `uid` could read the file `m` describes (by its mode bits; root
/// always).
#[must_use]
pub(crate) fn may_read(uid: u32, m: &Metadata) -> bool {
    uid == 0
        || (m.uid() == uid && m.mode() & 0o400 != 0)
        || m.mode() & 0o004 != 0
        || (m.mode() & 0o040 != 0 && in_group(uid, m.gid()))
}

/// Checks that `path`, named by a vassal file owned by `owner`, is a regular file that
/// owner could write. The error says whose file it is and why it is not used.
pub(crate) fn named_file(owner: u32, path: &Path) -> Result<Metadata, String> {
    let m = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if !m.is_file() {
        return Err(format!("{} is not a regular file", path.display()));
    }
    if !may_write(owner, m.uid(), m.gid(), m.mode()) {
        return Err(format!(
            "{} belongs to uid {} and uid {owner}, who owns the vassal file, could not write it: \
             the warden does not use it on that file's word",
            path.display(),
            m.uid()
        ));
    }
    Ok(m)
}

/// Whose word a vassal file is: the owner of the link when it is a symlink a user other
/// than root made, else the owner of the content. A link of root's to a tenant's file
/// speaks for the tenant, and a tenant's link to root's file speaks for the tenant too.
#[must_use]
pub(crate) fn authority(path: &Path) -> Option<u32> {
    let link = std::fs::symlink_metadata(path).ok()?.uid();
    if link != 0 {
        return Some(link);
    }
    Some(std::fs::metadata(path).ok()?.uid())
}

/// The most of `/etc/passwd` or `/etc/group` read: far beyond any real host's.
const ACCOUNTS_MAX: u64 = 16 << 20;

/// What identifies one version of an accounts file: its inode, size and mtime.
type Stamp = (u64, u64, u64, i64, i64);

/// The accounts files last read, with their stamps: they are read again only when they
/// change (a pass may ask about group membership for every vassal).
static ACCOUNTS: std::sync::Mutex<Vec<(&'static str, Stamp, std::sync::Arc<str>)>> =
    std::sync::Mutex::new(Vec::new());

fn read_accounts(path: &'static str) -> std::sync::Arc<str> {
    use std::io::Read;
    let Ok(f) = std::fs::File::open(path) else {
        return "".into();
    };
    let stamp = f
        .metadata()
        .map(|m| (m.dev(), m.ino(), m.size(), m.mtime(), m.mtime_nsec()))
        .ok();
    let mut cache = ACCOUNTS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(stamp) = stamp
        && let Some((_, _, text)) = cache.iter().find(|(p, s, _)| *p == path && *s == stamp)
    {
        return text.clone();
    }
    let mut text = String::new();
    let _ = f.take(ACCOUNTS_MAX).read_to_string(&mut text);
    let text: std::sync::Arc<str> = text.into();
    cache.retain(|(p, ..)| *p != path);
    if let Some(stamp) = stamp {
        cache.push((path, stamp, text.clone()));
    }
    text
}

/// The name of the account `uid` in `/etc/passwd`, when it has one there.
#[must_use]
pub(crate) fn user_name(uid: u32) -> Option<String> {
    read_accounts("/etc/passwd").lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 3 && f[2].parse() == Ok(uid)).then(|| f[0].to_owned())
    })
}

/// True when `uid` is in group `gid`: as its primary group (`/etc/passwd`) or as a
/// listed member (`/etc/group`). Users only a directory service knows are not found,
/// which errs on the side of not trusting.
fn in_group(uid: u32, gid: u32) -> bool {
    let passwd = read_accounts("/etc/passwd");
    let Some((name, primary)) = passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 4 && f[2].parse() == Ok(uid)).then(|| (f[0].to_owned(), f[3].parse().ok()))
    }) else {
        return false;
    };
    primary == Some(gid) || member_of(&read_accounts("/etc/group"), &name, gid)
}

fn member_of(group: &str, name: &str, gid: u32) -> bool {
    group.lines().any(|l| {
        let f: Vec<&str> = l.split(':').collect();
        f.len() >= 4 && f[2].parse() == Ok(gid) && f[3].split(',').any(|m| m == name)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn group_members_are_read_from_the_group_file() {
        let group = "root:x:0:\nadm:x:4:syslog,alice\nwww-data:x:33:\n";
        assert!(member_of(group, "alice", 4));
        assert!(!member_of(group, "alice", 33));
        assert!(!member_of(group, "ali", 4));
    }

    #[test]
    fn only_what_the_owner_could_write_is_trusted() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("f");
        std::fs::write(&f, "1").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        // Root's file: root may, nobody may not.
        assert!(named_file(0, &f).is_ok());
        let e = named_file(65534, &f).unwrap_err();
        assert!(e.contains("uid 65534, who owns the vassal file"), "{e}");
        // World-writable: anyone could have written it.
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o666)).unwrap();
        assert!(named_file(65534, &f).is_ok());
        // Not a regular file.
        assert!(
            named_file(0, d.path())
                .unwrap_err()
                .contains("not a regular file")
        );
    }
}
