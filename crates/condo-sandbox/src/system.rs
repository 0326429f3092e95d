//! The host's system directories as a sandbox sees them: `/usr` read-only, and the top-level
//! links or directories (`/bin`, `/lib`...) that point into it.

use std::io;

use crate::{BindMount, Symlink};

const TOP_LEVEL: [&str; 5] = ["/bin", "/sbin", "/lib", "/lib64", "/lib32"];
/// Host files that programs need to run and that hold no secrets.
const ETC_FILES: [&str; 2] = ["/etc/ld.so.cache", "/etc/ssl/certs"];

/// Binds and links that give a sandbox the host's libraries and interpreters, read-only.
pub fn host_system_root() -> io::Result<(Vec<BindMount>, Vec<Symlink>)> {
    let mut binds = vec![BindMount::read_only("/usr", "/usr")];
    let mut links = Vec::new();
    for dir in TOP_LEVEL {
        let meta = match std::fs::symlink_metadata(dir) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        if meta.file_type().is_symlink() {
            links.push(Symlink {
                link: dir.into(),
                target: std::fs::read_link(dir)?,
            });
        } else if meta.is_dir() {
            binds.push(BindMount::read_only(dir, dir));
        }
    }
    for file in ETC_FILES {
        if std::fs::metadata(file).is_ok() {
            binds.push(BindMount::read_only(file, file));
        }
    }
    Ok((binds, links))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn usr_is_always_bound_read_only_and_links_are_relative_to_it() {
        let (binds, links) = host_system_root().unwrap();
        assert!(binds
            .iter()
            .any(|b| b.target == Path::new("/usr") && !b.writable));
        for l in links {
            assert!(l.link.is_absolute());
        }
    }
}
