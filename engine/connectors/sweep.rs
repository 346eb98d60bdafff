//! Sweeping ferry's own leftovers at the places it writes to.
//!
//! A put to a local directory, an FTP or an SFTP server writes a hidden temporary file
//! (`.ferry-tmp-<uuid>-<name>`, or `.ferry-tmp-<uuid>` when that would be over 255 bytes:
//! see [`tmp_name`]) and renames it into place; a put that is killed midway (the
//! process dies, the connection breaks for good) leaves that file behind. So the first put to
//! a location through a connection also deletes the temporary files there that are older than
//! the connection's `temp_max_age` (default [`DEFAULT_TEMP_MAX_AGE`]): at most once per
//! location for as long as the connection is open (one run for `ferry run`; for `ferry serve`,
//! until its flows are reloaded). The sweep is best effort: what it cannot list or delete is
//! logged as a warning, and the put goes on.
//!
//! The age protects puts under way in other processes: a temporary file that is being written
//! is younger than the age (its modification time moves with every write), and the minimum
//! age, [`MIN_TEMP_MAX_AGE`], is far above any connection's stall timeout.

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use super::ConnectorError;

/// Prefix of the temporary files puts write before renaming them into place (local, FTP,
/// SFTP alike, so each skips the others' leftovers in listings).
pub const TMP_PREFIX: &str = ".ferry-tmp-";
/// The longest file name the common file systems take, in bytes.
pub const MAX_NAME_BYTES: usize = 255;

/// The temporary name a put of `name` writes before renaming it into place:
/// `.ferry-tmp-<uuid>-<name>` when that fits in [`MAX_NAME_BYTES`], else `.ferry-tmp-<uuid>`
/// (47 bytes), so that any name the target takes can be put.
pub fn tmp_name(name: &str) -> String {
    let id = uuid::Uuid::now_v7();
    let full = format!("{TMP_PREFIX}{id}-{name}");
    if full.len() <= MAX_NAME_BYTES {
        full
    } else {
        format!("{TMP_PREFIX}{id}")
    }
}

/// `temp_max_age` when the connection does not say.
pub const DEFAULT_TEMP_MAX_AGE: Duration = Duration::from_secs(3600);
/// The shortest `temp_max_age` accepted.
pub const MIN_TEMP_MAX_AGE: Duration = Duration::from_secs(60);

/// Remembers which locations were swept, and how old a leftover must be.
#[derive(Debug)]
pub(crate) struct Sweeper {
    max_age: Duration,
    swept: Mutex<HashSet<String>>,
}

impl Sweeper {
    /// A sweeper for `temp_max_age` (a duration such as `1h`, `30m`; default 1 h).
    pub(crate) fn new(temp_max_age: Option<&str>) -> Result<Sweeper, ConnectorError> {
        let max_age = match temp_max_age {
            None => DEFAULT_TEMP_MAX_AGE,
            Some(text) => {
                let age = humantime::parse_duration(text.trim()).map_err(|e| {
                    ConnectorError::Config(format!(
                        "temp_max_age '{}' is not a duration ({e}); write e.g. 1h or 30m",
                        text.escape_debug()
                    ))
                })?;
                if age < MIN_TEMP_MAX_AGE {
                    return Err(ConnectorError::Config(format!(
                        "temp_max_age '{}' is shorter than 1 minute; a put under way elsewhere could lose its temporary file",
                        text.escape_debug()
                    )));
                }
                age
            }
        };
        Ok(Sweeper {
            max_age,
            swept: Mutex::new(HashSet::new()),
        })
    }

    /// True the first time it is asked about `location` (which is then taken as swept).
    pub(crate) fn first_visit(&self, location: &str) -> bool {
        self.swept
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(location.to_string())
    }

    /// Whether `name` is a temporary file of ferry's last modified longer ago than the age.
    pub(crate) fn is_stale(&self, name: &str, modified: SystemTime) -> bool {
        name.starts_with(TMP_PREFIX) && self.is_older(modified)
    }

    /// Whether `at` lies longer ago than the age.
    pub(crate) fn is_older(&self, at: SystemTime) -> bool {
        SystemTime::now()
            .duration_since(at)
            .is_ok_and(|age| age > self.max_age)
    }
}

/// Logs the outcome of a sweep: what was deleted (info) or why it stopped (warning).
pub(crate) fn report(kind: &str, location: &str, outcome: Result<usize, ConnectorError>) {
    match outcome {
        Ok(0) => {}
        Ok(n) => tracing::info!(
            kind,
            location,
            deleted = n,
            "deleted temporary files that interrupted puts left behind"
        ),
        Err(e) => tracing::warn!(kind, location, error = %e,
            "could not sweep the temporary files interrupted puts left behind; the put goes on"),
    }
}

/// Deletes the folders directly under `parent` whose names start with `prefix` and in which
/// nothing changed for longer than `max_age` (the newest modification time of the folder and
/// of its entries counts). For staging folders a killed process never cleaned up (`ferry
/// serve`'s `ferry-delivery-*`). Returns how many were deleted; a folder that cannot be
/// deleted is logged and skipped.
pub fn stale_dirs(parent: &Path, prefix: &str, max_age: Duration) -> std::io::Result<usize> {
    let mut deleted = 0;
    for entry in std::fs::read_dir(parent)? {
        let entry = entry?;
        let name = entry.file_name();
        if !name.to_str().is_some_and(|n| n.starts_with(prefix)) {
            continue;
        }
        let path = entry.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if !meta.is_dir() {
            continue;
        }
        let mut newest = meta.modified()?;
        if let Ok(inner) = std::fs::read_dir(&path) {
            for e in inner.flatten() {
                if let Ok(m) = e.metadata().and_then(|m| m.modified()) {
                    newest = newest.max(m);
                }
            }
        }
        let idle = SystemTime::now()
            .duration_since(newest)
            .unwrap_or(Duration::ZERO);
        if idle <= max_age {
            continue;
        }
        match std::fs::remove_dir_all(&path) {
            Ok(()) => deleted += 1,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "could not delete a stale staging folder");
            }
        }
    }
    Ok(deleted)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn ages_and_visits() {
        let s = Sweeper::new(None).unwrap();
        let old = SystemTime::now() - Duration::from_secs(7200);
        assert!(s.is_stale(".ferry-tmp-1-a.csv", old));
        assert!(!s.is_stale(".ferry-tmp-1-a.csv", SystemTime::now()));
        assert!(!s.is_stale("a.csv", old), "only ferry's own names");
        assert!(s.first_visit("/in"));
        assert!(!s.first_visit("/in"));
        assert!(s.first_visit("out"));

        let s = Sweeper::new(Some("3h")).unwrap();
        assert!(!s.is_stale(".ferry-tmp-1-a.csv", old));
        for bad in ["soon", "10s"] {
            assert!(Sweeper::new(Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn stale_staging_folders_go() {
        let parent = tempfile::tempdir().unwrap();
        let old = SystemTime::now() - Duration::from_secs(7200);
        let set = |p: &Path| {
            std::fs::File::open(p).unwrap().set_modified(old).unwrap();
        };
        // stale: the folder and its file untouched for 2 h
        let stale = parent.path().join("ferry-delivery-a");
        std::fs::create_dir(&stale).unwrap();
        std::fs::write(stale.join("part-0"), b"x").unwrap();
        set(&stale.join("part-0"));
        set(&stale);
        // old folder, but a file written a moment ago: still in use
        let busy = parent.path().join("ferry-delivery-b");
        std::fs::create_dir(&busy).unwrap();
        set(&busy);
        std::fs::write(busy.join("part-0"), b"x").unwrap();
        // not ours
        let other = parent.path().join("other");
        std::fs::create_dir(&other).unwrap();
        set(&other);
        assert_eq!(
            stale_dirs(parent.path(), "ferry-delivery-", DEFAULT_TEMP_MAX_AGE).unwrap(),
            1
        );
        assert!(!stale.exists());
        assert!(busy.exists() && other.exists());
    }
}
