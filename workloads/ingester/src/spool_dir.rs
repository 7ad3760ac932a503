//! The directory large uploads are spooled to, cleaned at start.
//!
//! Each ingester process spools into its own subdirectory named after its process id and the
//! process's start time (`<pid>-<start ticks>-<random>`). At start every subdirectory whose
//! process is no longer running is removed: what an ingester killed while spooling left behind.
//! The start time tells a dead process from a new one that got the same pid (a restarted
//! container is always pid 1); several ingesters in one process (tests) share a prefix and
//! are all live. Linux only (`/proc`), which is where the archive runs.

use std::path::{Path, PathBuf};

/// This process's identity as `<pid>-<start ticks>`.
fn process_tag(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may contain spaces; fields after it are
    // plain. Start time is field 22, the 20th after the closing parenthesis.
    let after = stat.rsplit_once(')')?.1;
    let start = after.split_whitespace().nth(19)?;
    Some(format!("{pid}-{start}"))
}

fn is_live(entry_name: &str) -> bool {
    let mut parts = entry_name.splitn(3, '-');
    let (Some(pid), Some(start)) = (parts.next(), parts.next()) else {
        return false;
    };
    pid.parse::<u32>()
        .ok()
        .and_then(process_tag)
        .is_some_and(|tag| tag == format!("{pid}-{start}"))
}

#[derive(Debug, Clone)]
pub struct SpoolDir {
    path: PathBuf,
}

impl SpoolDir {
    /// Removes what dead ingesters left under `base` and creates this instance's directory.
    /// Returns the directory and how many stale entries were removed.
    pub fn open(base: &Path) -> std::io::Result<(SpoolDir, usize)> {
        std::fs::create_dir_all(base)?;
        let mut removed = 0;
        for entry in std::fs::read_dir(base)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if is_live(&name) {
                continue;
            }
            let path = entry.path();
            let gone = if entry.file_type()?.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            match gone {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        let tag =
            process_tag(std::process::id()).unwrap_or_else(|| format!("{}-0", std::process::id()));
        let path = base.join(format!("{tag}-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&path)?;
        Ok((SpoolDir { path }, removed))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_spools_are_removed_and_live_ones_kept() {
        let base = tempfile::tempdir().expect("tempdir");
        // Left by a process that no longer runs (a pid that cannot exist), and a stray file.
        let stale = base.path().join("4194305-12345-abc");
        std::fs::create_dir_all(&stale).expect("mkdir");
        std::fs::write(stale.join("upload.tmp"), b"half a file").expect("write");
        std::fs::write(base.path().join("stray.tmp"), b"x").expect("write");
        // Our own pid with another start time: an earlier process with the same pid.
        let reused = base.path().join(format!("{}-1-old", std::process::id()));
        std::fs::create_dir_all(&reused).expect("mkdir");

        let (first, removed) = SpoolDir::open(base.path()).expect("open");
        assert_eq!(removed, 3);
        assert!(!stale.exists() && !reused.exists());
        assert!(first.path().is_dir());
        std::fs::write(first.path().join("in-flight.tmp"), b"busy").expect("write");

        // A second instance in the same live process leaves the first one's spool alone.
        let (second, removed) = SpoolDir::open(base.path()).expect("open");
        assert_eq!(removed, 0);
        assert!(first.path().join("in-flight.tmp").exists());
        assert_ne!(first.path(), second.path());
    }
}
