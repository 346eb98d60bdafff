//! Local directories as a file server or object storage: the embedded default.
//!
//! A location is a relative path under the connection's root: `namespace/bucket` when the
//! directory plays object storage (`namespace/bucket:folder/sub` names a folder in it, as on
//! S3 and OCI: the directory `namespace/bucket/folder/sub`), `/some/dir` when it plays an FTP
//! directory. As in object storage, a name may hold `/` (`2024/report.csv`: a file in a
//! subdirectory, made on put). Puts write a
//! hidden temporary file beside the target and rename it into place, so the final name never
//! holds a partial file; listings skip those temporaries. The first put to a location deletes
//! temporaries there older than `temp_max_age` (see [`super::sweep`]).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::durable;
use super::sweep::{self, Sweeper, TMP_PREFIX};
use super::{ConnectorError, Entry, blocking, expand_env, location_segments, split_folder};

/// A local directory connection.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LocalSpec {
    /// The root directory; locations are paths below it. May use `${VAR:-default}`.
    pub root: String,
    /// Create a location's directory when a put needs it (default true). With false, a
    /// missing directory is an error, like a missing bucket.
    #[serde(default = "yes")]
    pub create_dirs: bool,
    /// Age after which a temporary file (`.ferry-tmp-*`) that an interrupted put left at a
    /// location is deleted, by the first put there (default `1h`, at least `1m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temp_max_age: Option<String>,
}

fn yes() -> bool {
    true
}

/// An opened local directory.
#[derive(Debug)]
pub struct LocalStore {
    root: PathBuf,
    create_dirs: bool,
    sweeper: Sweeper,
}

impl LocalStore {
    /// Opens the store; the root need not exist yet.
    pub fn new(spec: &LocalSpec) -> Result<Self, ConnectorError> {
        Ok(LocalStore {
            root: PathBuf::from(expand_env(&spec.root)?),
            create_dirs: spec.create_dirs,
            sweeper: Sweeper::new(spec.temp_max_age.as_deref())?,
        })
    }

    /// The same error naming paths under the root by their location (`ns/bucket/a.csv`),
    /// not by where the root is on this server.
    pub(super) fn scrub(&self, e: ConnectorError) -> ConnectorError {
        let root = self.root.display().to_string();
        if root.trim_end_matches('/').is_empty() {
            return e; // the root is `/`: paths are what they are
        }
        let under = format!("{}/", root.trim_end_matches('/'));
        e.naming(Path::new(&under), "")
            .naming(&self.root, "the connection's root directory")
    }

    /// The directory of a location.
    pub fn dir(&self, location: &str) -> Result<PathBuf, ConnectorError> {
        let (bucket, folder) = split_folder(location)?;
        let mut dir = self.root.clone();
        for seg in location_segments(bucket)? {
            dir.push(seg);
        }
        for seg in folder.iter().flat_map(|f| f.split('/')) {
            dir.push(seg);
        }
        Ok(dir)
    }

    pub(super) async fn list(
        &self,
        location: &str,
        prefix: &str,
    ) -> Result<Vec<Entry>, ConnectorError> {
        let dir = self.dir(location)?;
        let prefix = prefix.to_string();
        blocking(&dir.clone(), "list", move || list_dir(&dir, &prefix)).await
    }

    /// Makes `dest` (a spool path) hold the bytes of `location/name`: a hard link when both
    /// are on one file system (no bytes copied, no inode made), else a copy. Either way the
    /// source can then be renamed or deleted without touching `dest`. (A link shares the
    /// bytes: a writer that rewrites the source in place before the put changes what is put,
    /// as it would change what a copy taken a moment later holds.)
    pub(super) async fn get(
        &self,
        location: &str,
        name: &str,
        dest: &Path,
    ) -> Result<u64, ConnectorError> {
        let src = self.dir(location)?.join(name);
        let dest = dest.to_path_buf();
        blocking(&src.clone(), "read", move || link_or_copy(&src, &dest)).await
    }

    /// Opens `location/name` for a later put (see [`HeldFile`]): one open and one `fstat`,
    /// nothing written.
    pub(super) async fn open(
        &self,
        location: &str,
        name: &str,
    ) -> Result<HeldFile, ConnectorError> {
        let src = self.dir(location)?.join(name);
        blocking(&src.clone(), "read", move || HeldFile::open(src)).await
    }

    /// Writes `src` to a temporary name beside the target, syncs it, renames it into place
    /// and syncs the directory: the final name never holds a partial file, and the put is
    /// confirmed only once the bytes and the name are on disk. The write and the rename are
    /// a blocking task each; the syncs are waited for without a thread, and without the loop
    /// item's slot.
    pub(super) async fn put(
        &self,
        location: &str,
        name: &str,
        src: &Path,
    ) -> Result<u64, ConnectorError> {
        self.put_from(location, name, Source::Path(src.to_path_buf()))
            .await
    }

    /// [`LocalStore::put`] reading a file a fetch holds open: no spool file.
    pub(super) async fn put_held(
        &self,
        location: &str,
        name: &str,
        held: Arc<HeldFile>,
    ) -> Result<u64, ConnectorError> {
        self.put_from(location, name, Source::Held(held)).await
    }

    async fn put_from(
        &self,
        location: &str,
        name: &str,
        src: Source,
    ) -> Result<u64, ConnectorError> {
        let dir = self.dir(location)?;
        if self.sweeper.first_visit(location) {
            let create_dirs = self.create_dirs;
            let d = dir.clone();
            blocking(&dir, "create directory", move || make_dir(&d, create_dirs)).await?;
            sweep::report("local", location, self.sweep(&dir).await);
        }
        let target = dir.join(name);
        let base = name.rsplit('/').next().unwrap_or(name);
        let tmp_name = sweep::tmp_name(base);
        let create_dirs = self.create_dirs;
        let t = target.clone();
        let (to, tmp, parent, n, syncs) = blocking(&target, "write", move || {
            // the location's directory, and a subdirectory for a name with `/`: made when
            // the temporary file cannot be created for want of them
            let parent = t.parent().unwrap_or(&dir).to_path_buf();
            let tmp = parent.join(&tmp_name);
            let mut to = match create_new(&tmp) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    make_dir(&dir, create_dirs)?;
                    if parent != dir {
                        make_dir(&parent, create_dirs)?;
                    }
                    create_new(&tmp)
                }
                other => other,
            }
            .map_err(|e| super::io_error("write", &tmp, e))?;
            let written = src.copy_to(&mut to, &tmp).and_then(|n| {
                let syncs =
                    durable::group(&parent).map_err(|e| super::io_error("sync", &parent, e))?;
                Ok((n, syncs))
            });
            match written {
                Ok((n, syncs)) => Ok((to, tmp, parent, n, syncs)),
                Err(e) => {
                    drop(to);
                    let _ = std::fs::remove_file(&tmp);
                    Err(e)
                }
            }
        })
        .await?;
        // The syncs wait for the disk, by one sync of the file system shared with the puts
        // waiting at once (or the put's own, when alone), and without a thread; a loop item
        // waits for them without its slot, so each sync covers the puts of more items (see
        // [`crate::slot`]).
        crate::slot::idle(async {
            let placed = async {
                let t = tmp.clone();
                durable::wait(&syncs, move || to.sync_all())
                    .await
                    .map_err(|e| super::io_error("sync", &t, e))?;
                let (t, to) = (tmp.clone(), target.clone());
                blocking(&target, "rename into place", move || {
                    std::fs::rename(&t, &to)
                        .map_err(|e| super::io_error("rename into place", &to, e))
                })
                .await
            }
            .await;
            if let Err(e) = placed {
                let t = tmp.clone();
                let _ = blocking(&tmp, "remove", move || {
                    let _ = std::fs::remove_file(&t);
                    Ok(())
                })
                .await;
                return Err(e);
            }
            // the new name is an entry of the directory: on disk once the directory is
            let p = parent.clone();
            durable::wait(&syncs, move || sync_dir(&p))
                .await
                .map_err(|e| super::io_error("sync", &parent, e))?;
            Ok(n)
        })
        .await
    }

    /// Deletes the stale temporary files in `dir`; returns how many.
    async fn sweep(&self, dir: &Path) -> Result<usize, ConnectorError> {
        let mut rd = tokio::fs::read_dir(dir)
            .await
            .map_err(|e| super::io_error("list", dir, e))?;
        let mut deleted = 0;
        while let Some(entry) = rd
            .next_entry()
            .await
            .map_err(|e| super::io_error("list", dir, e))?
        {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if !name.starts_with(TMP_PREFIX) {
                continue;
            }
            let Ok(meta) = entry.metadata().await else {
                continue; // gone meanwhile
            };
            let Ok(modified) = meta.modified() else {
                continue;
            };
            if meta.is_file() && self.sweeper.is_stale(name, modified) {
                match tokio::fs::remove_file(entry.path()).await {
                    Ok(()) => deleted += 1,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        tracing::warn!(path = %entry.path().display(), error = %e, "could not delete a stale temporary file");
                    }
                }
            }
        }
        Ok(deleted)
    }

    pub(super) async fn rename(
        &self,
        location: &str,
        from: &str,
        to: &str,
    ) -> Result<(), ConnectorError> {
        let dir = self.dir(location)?;
        let (src, target) = (dir.join(from), dir.join(to));
        let create_dirs = self.create_dirs;
        blocking(&src.clone(), "rename", move || {
            let missing = || ConnectorError::NotFound(format!("file {}", src.display()));
            match std::fs::rename(&src, &target) {
                Ok(()) => Ok(()),
                // no source, or no directory for a new name with `/`
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    if !src.try_exists().unwrap_or(false) {
                        return Err(missing());
                    }
                    match target.parent() {
                        Some(parent) if parent != dir => {
                            make_dir(parent, create_dirs)?;
                            std::fs::rename(&src, &target)
                                .map_err(|e| super::io_error("rename", &src, e))
                        }
                        _ => Err(super::io_error("rename", &src, e)),
                    }
                }
                Err(e) => Err(super::io_error("rename", &src, e)),
            }
        })
        .await
    }

    pub(super) async fn check(&self) -> Result<String, ConnectorError> {
        match tokio::fs::metadata(&self.root).await {
            Ok(m) if m.is_dir() => Ok(format!("directory {} exists", self.root.display())),
            Ok(_) => Err(ConnectorError::Config(format!(
                "{} is not a directory",
                self.root.display()
            ))),
            Err(e) => Err(super::io_error("open", &self.root, e)),
        }
    }
}

/// Hard-links the regular file `src` as `dest`, or copies it when it cannot be linked
/// (another file system, a file system without links, a symbolic link); returns its size.
fn link_or_copy(src: &Path, dest: &Path) -> Result<u64, ConnectorError> {
    let missing = |e: std::io::Error| {
        if e.kind() == std::io::ErrorKind::NotFound {
            ConnectorError::NotFound(format!("file {}", src.display()))
        } else {
            super::io_error("read", src, e)
        }
    };
    // `dest` is replaced, never written through: it may itself be a link to a source file
    remove_if_there(dest)?;
    if std::fs::hard_link(src, dest).is_ok() {
        // a link to a symbolic link would point elsewhere from the spool: copy those
        match std::fs::symlink_metadata(dest) {
            Ok(meta) if meta.is_file() => return Ok(meta.len()),
            _ => remove_if_there(dest)?,
        }
    }
    let mut from = std::fs::File::open(src).map_err(missing)?;
    let mut to = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dest)
        .map_err(|e| super::io_error("write", dest, e))?;
    std::io::copy(&mut from, &mut to).map_err(|e| super::io_error("copy", src, e))
}

/// Removes the file `path` if there is one.
fn remove_if_there(path: &Path) -> Result<(), ConnectorError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(super::io_error("replace", path, e)),
    }
}

/// What a put reads: a local file by its path, or a file a fetch holds open.
enum Source {
    Path(PathBuf),
    Held(Arc<HeldFile>),
}

impl Source {
    /// Copies the whole source into `to` (the new file `tmp`), by the kernel where it can
    /// (`copy_file_range`); returns the bytes copied.
    fn copy_to(&self, to: &mut std::fs::File, tmp: &Path) -> Result<u64, ConnectorError> {
        let copied = match self {
            Source::Path(src) => {
                let mut from =
                    std::fs::File::open(src).map_err(|e| super::source_error("read", src, e))?;
                std::io::copy(&mut from, to)
            }
            Source::Held(held) => held.copy_to(to),
        };
        copied.map_err(|e| super::io_error("write", tmp, e))
    }
}

/// Creates the new file `path` for writing.
fn create_new(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
}

/// Syncs directory `dir`: the names made in it (a rename into place) are then on disk.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// A local file a fetch opened, in place of a spool file: a put to a local directory reads
/// it through the open descriptor, so no link or copy is made in the spool and no spool
/// file removed afterwards. Like a link, the descriptor keeps the fetched bytes after the
/// source is renamed or deleted (and, like a link, sees a writer that rewrites the source in
/// place). Any other reader gets a real spool file first ([`HeldFile::materialize`]).
#[derive(Debug)]
pub struct HeldFile {
    /// What holds the bytes.
    held: Held,
    /// Where it was opened, or the path it stands for.
    source: PathBuf,
    /// Its size when opened.
    size: u64,
}

/// The bytes of a [`HeldFile`].
#[derive(Debug)]
enum Held {
    /// An open file; a put reads it from the start, one put at a time.
    Open(Mutex<std::fs::File>),
    /// Bytes in memory: a delivery's part, kept in the run history's database.
    Bytes(Arc<[u8]>),
}

impl HeldFile {
    fn open(src: PathBuf) -> Result<HeldFile, ConnectorError> {
        let file = std::fs::File::open(&src).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                ConnectorError::NotFound(format!("file {}", src.display()))
            } else {
                super::io_error("read", &src, e)
            }
        })?;
        let meta = file
            .metadata()
            .map_err(|e| super::io_error("read", &src, e))?;
        if !meta.is_file() {
            return Err(super::io_error(
                "read",
                &src,
                std::io::Error::other("not a regular file"),
            ));
        }
        Ok(HeldFile {
            held: Held::Open(Mutex::new(file)),
            source: src,
            size: meta.len(),
        })
    }

    /// `bytes` held in memory for the file `path`, which does not exist until a reader
    /// that needs a path has it made ([`HeldFile::materialize`]).
    pub fn from_bytes(path: PathBuf, bytes: Arc<[u8]>) -> HeldFile {
        HeldFile {
            size: bytes.len() as u64,
            held: Held::Bytes(bytes),
            source: path,
        }
    }

    /// The file's size when it was opened.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Copies the whole file, from its start, into `to`.
    fn copy_to(&self, to: &mut std::fs::File) -> std::io::Result<u64> {
        use std::io::{Seek as _, Write as _};
        match &self.held {
            Held::Open(file) => {
                let mut from = file.lock().unwrap_or_else(|p| p.into_inner());
                from.seek(std::io::SeekFrom::Start(0))?;
                std::io::copy(&mut *from, to)
            }
            Held::Bytes(bytes) => to.write_all(bytes).map(|()| self.size),
        }
    }

    /// Makes `dest` (a spool path, or the path held bytes stand for) hold the file's
    /// bytes, for a reader that needs a path: a hard link of the source when its path
    /// still names the opened file, else a copy through the descriptor; held bytes are
    /// written (their directory made). Returns the size. Blocking.
    pub fn materialize(&self, dest: &Path) -> Result<u64, ConnectorError> {
        use std::os::unix::fs::MetadataExt as _;
        remove_if_there(dest)?;
        let opened = match &self.held {
            Held::Open(file) => {
                let file = file.lock().unwrap_or_else(|p| p.into_inner());
                file.metadata()
                    .map_err(|e| super::io_error("read", &self.source, e))?
            }
            Held::Bytes(_) => {
                if let Some(dir) = dest.parent() {
                    std::fs::create_dir_all(dir)
                        .map_err(|e| super::io_error("create directory", dir, e))?;
                }
                let mut to = create_new(dest).map_err(|e| super::io_error("write", dest, e))?;
                return self
                    .copy_to(&mut to)
                    .map_err(|e| super::io_error("write", dest, e));
            }
        };
        if std::fs::hard_link(&self.source, dest).is_ok() {
            match std::fs::symlink_metadata(dest) {
                Ok(m) if m.is_file() && m.dev() == opened.dev() && m.ino() == opened.ino() => {
                    return Ok(m.len());
                }
                _ => remove_if_there(dest)?,
            }
        }
        let mut to = create_new(dest).map_err(|e| super::io_error("write", dest, e))?;
        self.copy_to(&mut to)
            .map_err(|e| super::io_error("copy", &self.source, e))
    }
}

/// Makes directory `dir` when missing and `create_dirs` allows it (else a missing directory
/// is [`ConnectorError::NotFound`], like a missing bucket).
fn make_dir(dir: &Path, create_dirs: bool) -> Result<(), ConnectorError> {
    if dir.try_exists().unwrap_or(false) {
        return Ok(());
    }
    if !create_dirs {
        return Err(ConnectorError::NotFound(format!(
            "directory {}",
            dir.display()
        )));
    }
    std::fs::create_dir_all(dir).map_err(|e| super::io_error("create directory", dir, e))
}

/// The files of `dir` whose names start with `prefix`, ferry's temporaries left out.
fn list_dir(dir: &Path, prefix: &str) -> Result<Vec<Entry>, ConnectorError> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ConnectorError::NotFound(format!(
                "directory {}",
                dir.display()
            )));
        }
        Err(source) => return Err(super::io_error("list", dir, source)),
    };
    let mut out = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| super::io_error("list", dir, e))?;
        let Ok(name) = entry.file_name().into_string() else {
            tracing::warn!(dir = %dir.display(), "skipping a file whose name is not UTF-8");
            continue;
        };
        if name.starts_with(TMP_PREFIX) || !name.starts_with(prefix) {
            continue;
        }
        let meta = match entry.metadata() {
            Ok(meta) => meta,
            // deleted between the listing and its stat: not there any more
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(super::io_error("stat", &entry.path(), e)),
        };
        if meta.is_file() {
            out.push(Entry {
                name,
                size: meta.len(),
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connectors::FileStore;

    fn store(root: &Path) -> FileStore {
        FileStore::Local(
            LocalStore::new(&LocalSpec {
                root: root.display().to_string(),
                create_dirs: true,
                temp_max_age: None,
            })
            .unwrap(),
        )
    }

    #[tokio::test]
    async fn put_list_get_rename_round_trip() {
        let root = tempfile::tempdir().unwrap();
        let s = store(root.path());
        let src = root.path().join("src.bin");
        std::fs::write(&src, b"hello bytes").unwrap();
        s.put("ns/bucket", "A_2.csv", &src).await.unwrap();
        s.put("ns/bucket", "A_1.csv", &src).await.unwrap();
        s.put("ns/bucket", "B_1.csv", &src).await.unwrap();
        let names: Vec<_> = s
            .list("ns/bucket", "A_")
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert_eq!(names, ["A_1.csv", "A_2.csv"]);
        let dest = root.path().join("got");
        assert_eq!(s.get("ns/bucket", "A_1.csv", &dest).await.unwrap(), 11);
        assert_eq!(std::fs::read(&dest).unwrap(), b"hello bytes");
        s.rename("ns/bucket", "A_1.csv", "Sent-A_1.csv")
            .await
            .unwrap();
        assert!(root.path().join("ns/bucket/Sent-A_1.csv").exists());
        assert!(!root.path().join("ns/bucket/A_1.csv").exists());
    }

    /// A 250-byte name moves (its temporary name once was 48 bytes longer, over 255); a
    /// name over what the file system takes is refused with the file system's reason, and
    /// no server path.
    #[tokio::test]
    async fn any_name_the_file_system_takes_is_put() {
        let root = tempfile::tempdir().unwrap();
        let s = store(root.path());
        let src = root.path().join("src.bin");
        std::fs::write(&src, b"long").unwrap();
        let name = format!("{}.csv", "n".repeat(246));
        assert_eq!(name.len(), 250);
        assert_eq!(s.put("ns/bucket", &name, &src).await.unwrap(), 4);
        assert_eq!(
            std::fs::read(root.path().join("ns/bucket").join(&name)).unwrap(),
            b"long"
        );
        let too_long = "n".repeat(256);
        let e = s.put("ns/bucket", &too_long, &src).await.unwrap_err();
        let text = e.to_string();
        assert_eq!(
            text,
            "the target refuses the name: File name too long (os error 36)"
        );
        assert!(!text.contains(&root.path().display().to_string()), "{text}");
    }

    #[tokio::test]
    async fn a_fetched_file_outlives_its_source() {
        let root = tempfile::tempdir().unwrap();
        let s = store(root.path());
        let dir = root.path().join("ns/bucket");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("A.csv"), b"the bytes").unwrap();
        let spool = root.path().join("spool");
        std::fs::create_dir(&spool).unwrap();
        let got = spool.join("000001-A.csv");
        assert_eq!(s.get("ns/bucket", "A.csv", &got).await.unwrap(), 9);
        // renamed, then deleted: the spool still holds the fetched bytes
        s.rename("ns/bucket", "A.csv", "Sent-A.csv").await.unwrap();
        std::fs::remove_file(dir.join("Sent-A.csv")).unwrap();
        assert_eq!(std::fs::read(&got).unwrap(), b"the bytes");
        // fetching another file into the same path replaces the link, never writes through
        // it into the first source
        std::fs::write(dir.join("B.csv"), b"other").unwrap();
        std::fs::write(dir.join("C.csv"), b"third bytes").unwrap();
        let twice = spool.join("twice");
        s.get("ns/bucket", "B.csv", &twice).await.unwrap();
        s.get("ns/bucket", "C.csv", &twice).await.unwrap();
        assert_eq!(std::fs::read(dir.join("B.csv")).unwrap(), b"other");
        assert_eq!(std::fs::read(&twice).unwrap(), b"third bytes");
        // a symbolic link is fetched as the bytes it points to, not as a link
        std::fs::write(root.path().join("elsewhere.csv"), b"linked").unwrap();
        std::os::unix::fs::symlink("../../elsewhere.csv", dir.join("L.csv")).unwrap();
        let got = spool.join("000002-L.csv");
        assert_eq!(s.get("ns/bucket", "L.csv", &got).await.unwrap(), 6);
        assert!(std::fs::symlink_metadata(&got).unwrap().is_file());
        assert_eq!(std::fs::read(&got).unwrap(), b"linked");
        // a missing source is NotFound, and leaves nothing in the spool
        let err = s
            .get("ns/bucket", "gone.csv", &spool.join("000003-gone.csv"))
            .await
            .unwrap_err();
        assert!(matches!(err, ConnectorError::NotFound(_)), "{err}");
        assert!(!spool.join("000003-gone.csv").exists());
    }

    /// A file held open by a fetch is put through its descriptor: the bytes it held when
    /// opened reach the target (synced, under the final name, no temporary left) even after
    /// its source was renamed away, a retried put sends them whole again, and nothing is
    /// written in the spool.
    #[tokio::test]
    async fn a_held_file_is_put_after_its_source_moved() {
        let root = tempfile::tempdir().unwrap();
        let s = store(root.path());
        let dir = root.path().join("ns/in");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("A.csv"), b"held bytes").unwrap();
        let held = Arc::new(s.open_held("ns/in", "A.csv").await.unwrap().unwrap());
        assert_eq!(held.size(), 10);
        s.rename("ns/in", "A.csv", "Sent-A.csv").await.unwrap();
        std::fs::remove_file(dir.join("Sent-A.csv")).unwrap();
        let spool = root.path().join("spool-A.csv");
        for _ in 0..2 {
            let n = s
                .put_held("ns/out", "A.csv", &spool, held.clone())
                .await
                .unwrap();
            assert_eq!(n, 10);
            assert_eq!(
                std::fs::read(root.path().join("ns/out/A.csv")).unwrap(),
                b"held bytes"
            );
        }
        let names: Vec<_> = std::fs::read_dir(root.path().join("ns/out"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, ["A.csv"]);
        assert!(!spool.exists());
        // a missing source is NotFound, a directory is refused
        let gone = s.open_held("ns/in", "gone.csv").await.unwrap().unwrap_err();
        assert!(matches!(gone, ConnectorError::NotFound(_)), "{gone}");
        std::fs::create_dir(dir.join("sub.csv")).unwrap();
        let not_file = s.open_held("ns/in", "sub.csv").await.unwrap().unwrap_err();
        assert_eq!(
            not_file.to_string(),
            "read ns/in/sub.csv: not a regular file"
        );
        // other kinds of store hold nothing
        assert!(s.reads_held());
    }

    /// A reader that needs a path gets a spool file: a link of the source while its path
    /// still names the held file, a copy of the held bytes once the path names another file
    /// or nothing.
    #[tokio::test]
    async fn a_held_file_becomes_a_spool_file_when_read_by_path() {
        use std::os::unix::fs::MetadataExt as _;
        let root = tempfile::tempdir().unwrap();
        let s = store(root.path());
        let dir = root.path().join("ns/in");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("A.csv"), b"first").unwrap();
        std::fs::write(dir.join("B.csv"), b"second").unwrap();
        let a = s.open_held("ns/in", "A.csv").await.unwrap().unwrap();
        let b = s.open_held("ns/in", "B.csv").await.unwrap().unwrap();
        let spool = root.path().join("spool");
        std::fs::create_dir(&spool).unwrap();
        // A's path still names it: a link, the same inode
        assert_eq!(a.materialize(&spool.join("a")).unwrap(), 5);
        assert_eq!(
            std::fs::metadata(spool.join("a")).unwrap().ino(),
            std::fs::metadata(dir.join("A.csv")).unwrap().ino()
        );
        // B's path now names another file: the held bytes are copied, not the new file's
        std::fs::remove_file(dir.join("B.csv")).unwrap();
        std::fs::write(dir.join("B.csv"), b"replaced").unwrap();
        assert_eq!(b.materialize(&spool.join("b")).unwrap(), 6);
        assert_eq!(std::fs::read(spool.join("b")).unwrap(), b"second");
        assert_ne!(
            std::fs::metadata(spool.join("b")).unwrap().ino(),
            std::fs::metadata(dir.join("B.csv")).unwrap().ino()
        );
        // and once its path names nothing
        std::fs::remove_file(dir.join("A.csv")).unwrap();
        let a2 = root.path().join("spool/a2");
        assert_eq!(a.materialize(&a2).unwrap(), 5);
        assert_eq!(std::fs::read(&a2).unwrap(), b"first");
    }

    /// A put makes the directories it needs (the location's, and a subdirectory for a name
    /// with `/`), and a rename to a name in a new subdirectory makes it too.
    #[tokio::test]
    async fn puts_and_renames_make_missing_directories() {
        let root = tempfile::tempdir().unwrap();
        let s = store(root.path());
        let src = root.path().join("src.bin");
        std::fs::write(&src, b"x").unwrap();
        s.put("ns/b", "a.csv", &src).await.unwrap();
        // the location's directory deleted after the first put: made again
        std::fs::remove_dir_all(root.path().join("ns/b")).unwrap();
        s.put("ns/b", "2024/06/a.csv", &src).await.unwrap();
        assert_eq!(
            std::fs::read(root.path().join("ns/b/2024/06/a.csv")).unwrap(),
            b"x"
        );
        s.rename("ns/b", "2024/06/a.csv", "done/2024/a.csv")
            .await
            .unwrap();
        assert!(root.path().join("ns/b/done/2024/a.csv").exists());
        let gone = s
            .rename("ns/b", "2024/06/a.csv", "x.csv")
            .await
            .unwrap_err();
        assert!(matches!(gone, ConnectorError::NotFound(_)), "{gone}");
        // without create_dirs, a missing directory is NotFound and nothing is made
        let strict = FileStore::Local(
            LocalStore::new(&LocalSpec {
                root: root.path().display().to_string(),
                create_dirs: false,
                temp_max_age: None,
            })
            .unwrap(),
        );
        let e = strict.put("ns/none", "a.csv", &src).await.unwrap_err();
        assert!(matches!(e, ConnectorError::NotFound(_)), "{e}");
        assert!(!root.path().join("ns/none").exists());
    }

    #[tokio::test]
    async fn missing_directory_is_not_found() {
        let root = tempfile::tempdir().unwrap();
        let err = store(root.path()).list("nowhere", "").await.unwrap_err();
        assert!(matches!(err, ConnectorError::NotFound(_)), "{err}");
    }

    #[tokio::test]
    async fn hostile_names_never_touch_the_disk() {
        let root = tempfile::tempdir().unwrap();
        let s = store(root.path());
        let src = root.path().join("src.bin");
        std::fs::write(&src, b"x").unwrap();
        let err = s.put("ns", "../escape.csv", &src).await.unwrap_err();
        assert!(matches!(err, ConnectorError::HostileName { .. }), "{err}");
        assert!(!root.path().join("escape.csv").exists());
        assert!(s.list("../..", "").await.is_err());
    }
}
