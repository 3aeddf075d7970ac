//! Files that hold or guard private keys, in directories others may be able to write: made new
//! under a name nobody can guess, never through a link, readable by portvakt's user alone, and
//! checked to still be the file portvakt made before it is renamed into place.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

/// A new file beside `path` (`.<name>.<random>.tmp`), created exclusively (`O_EXCL`, so a file or
/// link planted at that name is never opened), without following links, mode 0600 set on the
/// open file whatever the umask.
pub fn create_beside(path: &Path) -> io::Result<(File, PathBuf)> {
    let dir = parent(path);
    let name = path
        .file_name()
        .map_or_else(|| "keyset".into(), |n| n.to_string_lossy().into_owned());
    let mut random = [0u8; 12];
    aws_lc_rs::rand::fill(&mut random).map_err(|_| io::Error::other("no random bytes"))?;
    let random: String = random.iter().map(|b| format!("{b:02x}")).collect();
    let tmp = dir.join(format!(".{name}.{random}.tmp"));
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(0o600)
        .open(&tmp)?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    Ok((file, tmp))
}

/// Renames `tmp` (written through `file`) over `path`, once the name still leads to that very
/// file: a regular file of one link, owned by portvakt's user. Then syncs the directory.
pub fn rename_into_place(file: &File, tmp: &Path, path: &Path) -> io::Result<()> {
    let open = file.metadata()?;
    let named = std::fs::symlink_metadata(tmp)?;
    let same = named.file_type().is_file()
        && named.dev() == open.dev()
        && named.ino() == open.ino()
        && named.nlink() == 1
        && named.uid() == own_uid()?;
    if !same {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} is no longer the file portvakt wrote (replaced, linked or owned by another user): the keyset was not written",
                tmp.display()
            ),
        ));
    }
    std::fs::rename(tmp, path)?;
    File::open(parent(path))?.sync_all()
}

/// Opens (creating it if need be) a lock file, never through a link, and refuses one that another
/// user owns or that is not a plain file: a lock planted by someone else could stall renewal.
pub fn open_lock(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(0o600)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.file_type().is_file() || meta.uid() != own_uid()? {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} is not a plain file of portvakt's user: remove it, or make the directory writable by portvakt's user alone",
                path.display()
            ),
        ));
    }
    Ok(file)
}

/// The user portvakt runs as: the owner of its own `/proc` entry (no unsafe `geteuid` call).
fn own_uid() -> io::Result<u32> {
    Ok(std::fs::metadata("/proc/self")?.uid())
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::io::Write as _;

    fn dir(name: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("portvakt-private-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_temporary_file_is_new_private_and_unguessable() {
        let d = dir("tmp");
        let path = d.join("keyset.json");
        let (mut a, tmp_a) = create_beside(&path).unwrap();
        let (_, tmp_b) = create_beside(&path).unwrap();
        assert_ne!(tmp_a, tmp_b);
        assert_eq!(a.metadata().unwrap().permissions().mode() & 0o777, 0o600);
        a.write_all(b"{}").unwrap();
        rename_into_place(&a, &tmp_a, &path).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"{}");
    }

    #[test]
    fn a_temporary_name_swapped_for_a_link_is_not_renamed() {
        let d = dir("swap");
        let path = d.join("keyset.json");
        let (file, tmp) = create_beside(&path).unwrap();
        std::fs::remove_file(&tmp).unwrap();
        std::os::unix::fs::symlink(d.join("elsewhere"), &tmp).unwrap();
        let refused = rename_into_place(&file, &tmp, &path).unwrap_err();
        assert_eq!(refused.kind(), io::ErrorKind::PermissionDenied);
        assert!(!path.exists());
    }

    #[test]
    fn a_lock_file_that_is_a_link_is_refused() {
        let d = dir("lock");
        let target = d.join("target");
        std::fs::write(&target, b"").unwrap();
        let lock = d.join("keyset.json.lock");
        std::os::unix::fs::symlink(&target, &lock).unwrap();
        assert!(open_lock(&lock).is_err());
        std::fs::remove_file(&lock).unwrap();
        assert!(open_lock(&lock).is_ok());
        assert!(!std::fs::symlink_metadata(&target)
            .unwrap()
            .file_type()
            .is_symlink());
    }

    #[test]
    fn a_lock_file_of_another_user_is_refused() {
        let d = dir("foreign");
        let lock = d.join("keyset.json.lock");
        std::fs::write(&lock, b"").unwrap();
        // Only root may give a file away; elsewhere the planted file is this user's own.
        if std::os::unix::fs::chown(&lock, Some(12345), Some(12345)).is_err() {
            return;
        }
        let refused = open_lock(&lock).unwrap_err();
        assert!(
            refused
                .to_string()
                .contains("not a plain file of portvakt's user"),
            "{refused}"
        );
    }
}
