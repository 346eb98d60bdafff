//! Durability by group: puts to one file system that are waiting at once share one sync.
//!
//! A put to a local directory has its bytes on disk before its name goes in place, and its
//! name on disk before it is confirmed. Syncing each file, then each directory, costs the
//! disk a flush apiece. Puts that run at once (a file loop's `concurrency`, deliveries in
//! parallel) instead wait together for one `syncfs` of their file system: one flush writes
//! all of their bytes, or all of their names. A put that finds nobody else waiting syncs its
//! own file or directory, as a put alone always did, so a lone put never waits for whatever
//! else the file system holds unwritten.
//!
//! The rule that makes a shared sync enough: a put waits for a sync that *started* after it
//! asked (its bytes were written before it asked), and is told of any failure of that sync or
//! of a later one before it returns.
//!
//! Only file systems whose `syncfs` is known to write everything to stable storage share
//! syncs: ext2/3/4, XFS, Btrfs, F2FS, ZFS, bcachefs, tmpfs, and overlayfs (which syncs its
//! upper layer). On any other (NFS, SMB, a FUSE mount such as `rclone mount` or s3fs, whose
//! `syncfs` need not reach the server) and on systems without `syncfs`, every put syncs its
//! own file and directory. A file system with shared syncs keeps one of its directories open
//! for the life of the process (`syncfs` names the file system by it).

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};

/// Makes durable what `own` syncs (one file's bytes, or one directory's names), written
/// before this call: by `own` when no other put on the file system of `dir` is waiting, else
/// by one sync of that whole file system shared with the others.
pub(super) fn sync(dir: &Path, own: impl FnOnce() -> io::Result<()>) -> io::Result<()> {
    match group_of(dir)? {
        Some(group) => group.sync(own),
        None => own(),
    }
}

/// The shared syncs of the file system holding `dir` ([`wait`] takes it): found where the
/// caller may block (a `stat`, and a `statfs` at the file system's first use).
pub(super) fn group(dir: &Path) -> io::Result<Syncs> {
    Ok(Syncs(group_of(dir)?))
}

/// The shared syncs of one file system, or none (see [`group`]).
#[derive(Clone)]
pub(super) struct Syncs(Option<Arc<Group>>);

/// [`sync`] for a task: waits for the shared sync without holding a thread. A sync this
/// call leads (or `own`, when nobody else waits) runs on a blocking thread, and finishes
/// even if the caller stops waiting for it.
pub(super) async fn wait(
    syncs: &Syncs,
    own: impl FnOnce() -> io::Result<()> + Send + 'static,
) -> io::Result<()> {
    match &syncs.0 {
        Some(group) => group.clone().wait(own).await,
        None => on_thread(own).await,
    }
}

/// Runs `f` on a blocking thread.
async fn on_thread(f: impl FnOnce() -> io::Result<()> + Send + 'static) -> io::Result<()> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(io::Error::other(e.to_string())))
}

/// The group of the file system holding `dir`, made at its first use; `None` where its
/// syncs are not shared (see the module's documentation).
#[cfg(target_os = "linux")]
fn group_of(dir: &Path) -> io::Result<Option<Arc<Group>>> {
    use std::os::unix::fs::MetadataExt;
    static GROUPS: OnceLock<Mutex<HashMap<u64, Option<Arc<Group>>>>> = OnceLock::new();
    let dev = std::fs::metadata(dir)?.dev();
    let groups = GROUPS.get_or_init(Default::default);
    let mut groups = groups.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(group) = groups.get(&dev) {
        return Ok(group.clone());
    }
    let kind: i128 = rustix::fs::statfs(dir)?.f_type.into();
    let group = if SHARED_SYNC.contains(&kind) {
        // a directory held open for the group's life: `syncfs` names the file system by
        // it, and reports the write errors on the file system since its previous call
        let fs = File::open(dir)?;
        Some(Arc::new(Group::new(Box::new(move || {
            rustix::fs::syncfs(&fs).map_err(io::Error::from)
        }))))
    } else {
        None
    };
    groups.insert(dev, group.clone());
    Ok(group)
}

/// The file systems (`statfs`'s `f_type`) whose `syncfs` writes all of their data and
/// metadata to stable storage: ext2/3/4, XFS, Btrfs, F2FS, ZFS, bcachefs, tmpfs (nothing to
/// write, as for its `fsync`) and overlayfs (it syncs its upper file system).
#[cfg(target_os = "linux")]
const SHARED_SYNC: [i128; 8] = [
    0xEF53,      // ext2, ext3, ext4
    0x5846_5342, // XFS
    0x9123_683E, // Btrfs
    0xF2F5_2010, // F2FS
    0x2FC1_2FC1, // ZFS
    0xCA45_1A4E, // bcachefs
    0x0102_1994, // tmpfs
    0x794C_7630, // overlayfs
];

#[cfg(not(target_os = "linux"))]
fn group_of(_dir: &Path) -> io::Result<Option<Arc<Group>>> {
    Ok(None)
}

/// The sync of a whole file system.
type FsSync = Box<dyn Fn() -> io::Result<()> + Send + Sync>;

/// The puts waiting to be made durable on one file system, and its syncs: one at a time,
/// each covering every put that asked before it started.
struct Group {
    fs_sync: FsSync,
    state: Mutex<State>,
    /// Wakes the threads waiting in [`Group::sync`].
    done: Condvar,
    /// The number of the last sync finished, for the tasks waiting in [`Group::wait`].
    finished: tokio::sync::watch::Sender<u64>,
}

#[derive(Default)]
struct State {
    /// The number of the last sync started (the first is 1).
    started: u64,
    /// The number of the last sync finished.
    finished: u64,
    /// The puts waiting for the next sync (number `started + 1`).
    waiting: usize,
    /// The last sync that failed, with its error.
    failed: Option<(u64, io::ErrorKind, String)>,
}

impl State {
    /// Whether a sync is running now.
    fn running(&self) -> bool {
        self.started > self.finished
    }
}

impl Group {
    fn new(fs_sync: FsSync) -> Group {
        Group {
            fs_sync,
            state: Mutex::new(State::default()),
            done: Condvar::new(),
            finished: tokio::sync::watch::Sender::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for a sync that starts after this call and returns its outcome (or a later
    /// failure's): leads it when none is running, by `own` when nobody else waits for it.
    fn sync(&self, own: impl FnOnce() -> io::Result<()>) -> io::Result<()> {
        let mut st = self.lock();
        let need = st.started + 1;
        st.waiting += 1;
        loop {
            if st.finished >= need {
                return outcome(&st, need);
            }
            if !st.running() {
                let alone = self.lead(&mut st, need);
                drop(st);
                let result = if alone { own() } else { (self.fs_sync)() };
                self.finish(need, &result);
                return result;
            }
            st = self.done.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// [`Group::sync`] for a task: a sync it leads runs on a blocking thread and is finished
    /// there, so a caller that stops waiting stalls nobody.
    async fn wait(
        self: Arc<Self>,
        own: impl FnOnce() -> io::Result<()> + Send + 'static,
    ) -> io::Result<()> {
        // subscribed before the state is read: a sync finishing after it wakes this task
        let mut finished = self.finished.subscribe();
        let need = {
            let mut st = self.lock();
            st.waiting += 1;
            st.started + 1
        };
        loop {
            // `Some(alone)`: this task leads sync `need`
            let leads = {
                let mut st = self.lock();
                if st.finished >= need {
                    return outcome(&st, need);
                }
                (!st.running()).then(|| self.lead(&mut st, need))
            };
            if let Some(alone) = leads {
                let group = self.clone();
                return on_thread(move || {
                    let result = if alone { own() } else { (group.fs_sync)() };
                    group.finish(need, &result);
                    result
                })
                .await;
            }
            // the sender lives as long as the group this task holds
            let _ = finished.changed().await;
        }
    }

    /// Makes the caller the leader of sync `need` (none runs, and none after `need - 1`
    /// has); returns whether it is alone, so that its own sync is enough.
    fn lead(&self, st: &mut State, need: u64) -> bool {
        let alone = st.waiting == 1;
        st.waiting = 0;
        st.started = need;
        alone
    }

    /// Records the outcome of sync `need` and wakes everyone waiting.
    fn finish(&self, need: u64, result: &io::Result<()>) {
        let mut st = self.lock();
        st.finished = need;
        if let Err(e) = result {
            st.failed = Some((need, e.kind(), e.to_string()));
        }
        drop(st);
        self.done.notify_all();
        self.finished.send_replace(need);
    }
}

/// The outcome of sync `need` for a caller that waited for it: its failure or a later one's.
fn outcome(st: &State, need: u64) -> io::Result<()> {
    match &st.failed {
        Some((n, kind, e)) if *n >= need => Err(io::Error::new(*kind, e.clone())),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::mpsc;
    use std::thread::{self, JoinHandle};
    use std::time::Duration;

    /// A sync that waits for the test's word: `true` succeeds, `false` fails.
    #[derive(Clone)]
    struct Gate(Arc<Mutex<mpsc::Receiver<bool>>>);

    impl Gate {
        fn pass(&self) -> io::Result<()> {
            match self.0.lock().unwrap().recv() {
                Ok(false) => Err(io::Error::other("the disk failed")),
                _ => Ok(()),
            }
        }
    }

    /// A group whose file system syncs are counted and wait at the gate; the gate's sender.
    fn gated() -> (Arc<Group>, Arc<AtomicUsize>, Gate, mpsc::Sender<bool>) {
        let (word, gate) = mpsc::channel();
        let gate = Gate(Arc::new(Mutex::new(gate)));
        let count = Arc::new(AtomicUsize::new(0));
        let (c, g) = (count.clone(), gate.clone());
        let group = Group::new(Box::new(move || {
            c.fetch_add(1, Ordering::SeqCst);
            g.pass()
        }));
        (Arc::new(group), count, gate, word)
    }

    /// Waits (up to 10 s) until `what` holds of the group's state.
    fn until(group: &Group, what: impl Fn(&State) -> bool) {
        for _ in 0..10_000 {
            if what(&group.lock()) {
                return;
            }
            thread::sleep(Duration::from_millis(1));
        }
        panic!("the group never reached the awaited state");
    }

    /// `n` puts asking at once whose own syncs are counted in `own`.
    fn puts(
        group: &Arc<Group>,
        n: usize,
        own: &Arc<AtomicUsize>,
    ) -> Vec<JoinHandle<io::Result<()>>> {
        (0..n)
            .map(|_| {
                let (g, o) = (group.clone(), own.clone());
                thread::spawn(move || {
                    g.sync(|| {
                        o.fetch_add(1, Ordering::SeqCst);
                        Ok(())
                    })
                })
            })
            .collect()
    }

    /// A put alone syncs its own, and holds the group while it does.
    fn lone_put(group: &Arc<Group>, gate: &Gate) -> JoinHandle<io::Result<()>> {
        let (g, gate) = (group.clone(), gate.clone());
        let lone = thread::spawn(move || g.sync(|| gate.pass()));
        until(group, |st| st.running());
        lone
    }

    /// Seven puts that ask while a sync runs share the next one: one file system sync for
    /// the seven, none of them syncing its own, and none returning before it finished.
    #[test]
    fn puts_waiting_together_share_one_sync() {
        let (group, fs_syncs, gate, word) = gated();
        let own = Arc::new(AtomicUsize::new(0));
        let lone = lone_put(&group, &gate);
        let seven = puts(&group, 7, &own);
        until(&group, |st| st.waiting == 7);
        word.send(true).unwrap();
        lone.join().unwrap().unwrap();
        until(&group, |st| st.running() && st.started == 2);
        assert!(
            seven.iter().all(|t| !t.is_finished()),
            "none is durable before its sync"
        );
        word.send(true).unwrap();
        for t in seven {
            t.join().unwrap().unwrap();
        }
        // the lone put synced its own, the seven shared the file system's
        assert_eq!(fs_syncs.load(Ordering::SeqCst), 1);
        assert_eq!(own.load(Ordering::SeqCst), 0);
    }

    /// Tasks share syncs as threads do, and with them: a thread's lone put holds the group,
    /// seven tasks and one thread asking meanwhile share the next file system sync; none
    /// returns before its sync, its failure fails them all, and a task asking alone
    /// afterwards syncs its own.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tasks_waiting_together_share_one_sync() {
        let (group, fs_syncs, gate, word) = gated();
        let own = Arc::new(AtomicUsize::new(0));
        let task = |own: &Arc<AtomicUsize>| {
            let o = own.clone();
            tokio::spawn(group.clone().wait(move || {
                o.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }))
        };
        let lone = lone_put(&group, &gate);
        let seven: Vec<_> = (0..7).map(|_| task(&own)).collect();
        let thread = puts(&group, 1, &own);
        until(&group, |st| st.waiting == 8);
        word.send(true).unwrap();
        lone.join().unwrap().unwrap();
        until(&group, |st| st.running() && st.started == 2);
        assert!(
            seven.iter().all(|t| !t.is_finished()),
            "none is durable before its sync"
        );
        word.send(false).unwrap();
        for t in seven {
            let e = t.await.unwrap().unwrap_err();
            assert_eq!(e.to_string(), "the disk failed");
        }
        for t in thread {
            let e = t.join().unwrap().unwrap_err();
            assert_eq!(e.to_string(), "the disk failed");
        }
        assert_eq!(fs_syncs.load(Ordering::SeqCst), 1);
        assert_eq!(own.load(Ordering::SeqCst), 0);
        task(&own).await.unwrap().unwrap();
        assert_eq!(own.load(Ordering::SeqCst), 1, "alone, it synced its own");
    }

    /// A failed sync fails every put that waited for it; a put asking after it is told the
    /// outcome of its own sync.
    #[test]
    fn a_failed_sync_fails_each_put_that_waited_for_it() {
        let (group, fs_syncs, gate, word) = gated();
        let own = Arc::new(AtomicUsize::new(0));
        let lone = lone_put(&group, &gate);
        let three = puts(&group, 3, &own);
        until(&group, |st| st.waiting == 3);
        word.send(true).unwrap();
        lone.join().unwrap().unwrap();
        until(&group, |st| st.running() && st.started == 2);
        word.send(false).unwrap();
        for t in three {
            let e = t.join().unwrap().unwrap_err();
            assert_eq!(e.to_string(), "the disk failed");
        }
        assert_eq!(fs_syncs.load(Ordering::SeqCst), 1);
        let later = puts(&group, 1, &own);
        for t in later {
            t.join().unwrap().unwrap();
        }
        assert_eq!(own.load(Ordering::SeqCst), 1, "alone, it synced its own");
    }

    /// Syncs are shared on the file systems whose `syncfs` is known to be durable (tmpfs
    /// here), not on others (procfs here; NFS or a FUSE mount in production): there each
    /// put syncs its own.
    #[cfg(target_os = "linux")]
    #[test]
    fn only_known_file_systems_share_syncs() {
        assert!(group_of(Path::new("/proc")).unwrap().is_none());
        if std::fs::metadata("/dev/shm").is_ok_and(|m| m.is_dir()) {
            assert!(group_of(Path::new("/dev/shm")).unwrap().is_some());
        }
    }

    /// On this machine's file systems: files written by threads at once are synced, each
    /// call returning once its file is on disk (by its own sync or the group's).
    #[test]
    fn files_put_at_once_are_synced() {
        let dir = tempfile::tempdir().unwrap();
        let ts: Vec<_> = (0..8)
            .map(|i| {
                let path = dir.path().join(format!("f{i}"));
                let d = dir.path().to_path_buf();
                thread::spawn(move || {
                    let f = File::create(&path).unwrap();
                    std::io::Write::write_all(&mut &f, b"bytes").unwrap();
                    sync(&d, || f.sync_all())
                })
            })
            .collect();
        for t in ts {
            t.join().unwrap().unwrap();
        }
        for i in 0..8 {
            assert_eq!(
                std::fs::read(dir.path().join(format!("f{i}"))).unwrap(),
                b"bytes"
            );
        }
    }
}
