//! Progress of long work on a terminal: `ferry run` on a TTY shows a bar per loop (items done
//! of total) and per transfer (bytes and rate). The executor reports through the
//! [`Progress`] trait object in [`crate::run::RunOptions::progress`] (none: nothing is
//! reported); [`TerminalProgress`] draws with indicatif on stderr.
//!
//! A fetch's bytes are read from the growing spool file (polled every 200 ms), so no
//! connector needs to know about progress; a put shows its size and finishes when the target
//! confirmed it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Reports progress; what a start returns is a [`Tick`], which finishes when dropped.
pub trait Progress: Send + Sync + std::fmt::Debug {
    /// A loop over `total` items (unknown for a CSV file read as it goes) starts.
    fn start_loop(&self, label: &str, total: Option<u64>) -> Box<dyn Tick>;
    /// A transfer of `total` bytes (unknown when none) starts; `spool` is the local file
    /// being written (a fetch) or read (a put).
    fn start_transfer(
        &self,
        label: &str,
        spool: &Path,
        total: Option<u64>,
        fetch: bool,
    ) -> Box<dyn Tick>;
}

/// One piece of work under way; dropping it finishes it.
pub trait Tick: Send + Sync {
    /// `n` more items (or bytes) are done.
    fn inc(&self, n: u64);
}

/// A tick that reports nothing.
#[derive(Debug)]
pub struct NoTick;

impl Tick for NoTick {
    fn inc(&self, _: u64) {}
}

/// Progress bars on stderr (indicatif); hidden when stderr is not a terminal.
#[derive(Debug, Clone)]
pub struct TerminalProgress {
    bars: indicatif::MultiProgress,
}

impl Default for TerminalProgress {
    fn default() -> Self {
        TerminalProgress {
            bars: indicatif::MultiProgress::with_draw_target(
                indicatif::ProgressDrawTarget::stderr_with_hz(10),
            ),
        }
    }
}

impl TerminalProgress {
    /// Bars on stderr.
    pub fn new() -> TerminalProgress {
        TerminalProgress::default()
    }
}

struct BarTick {
    bar: indicatif::ProgressBar,
    poll: Option<tokio::task::JoinHandle<()>>,
}

impl Tick for BarTick {
    fn inc(&self, n: u64) {
        self.bar.inc(n);
    }
}

impl Drop for BarTick {
    fn drop(&mut self) {
        if let Some(p) = self.poll.take() {
            p.abort();
        }
        self.bar.finish_and_clear();
    }
}

fn style(template: &str) -> indicatif::ProgressStyle {
    indicatif::ProgressStyle::with_template(template)
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
}

/// A bar of `total` steps drawn with `bounded`, or a spinner drawn with `unbounded` when the
/// total is unknown.
fn new_bar(total: Option<u64>, bounded: &str, unbounded: &str) -> indicatif::ProgressBar {
    match total {
        Some(n) => indicatif::ProgressBar::new(n).with_style(style(bounded)),
        None => indicatif::ProgressBar::no_length().with_style(style(unbounded)),
    }
}

impl Progress for TerminalProgress {
    fn start_loop(&self, label: &str, total: Option<u64>) -> Box<dyn Tick> {
        let bar = new_bar(
            total,
            "{prefix} [{bar:30}] {pos}/{len} ({per_sec}, eta {eta})",
            "{prefix} {spinner} {pos} done ({per_sec})",
        );
        let bar = self.bars.add(bar.with_prefix(label.to_string()));
        Box::new(BarTick { bar, poll: None })
    }

    fn start_transfer(
        &self,
        label: &str,
        spool: &Path,
        total: Option<u64>,
        fetch: bool,
    ) -> Box<dyn Tick> {
        let bar = new_bar(
            total,
            "{prefix} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec}, eta {eta})",
            "{prefix} {spinner} {bytes} ({bytes_per_sec})",
        );
        let bar = self.bars.add(bar.with_prefix(label.to_string()));
        let poll = fetch
            .then(|| tokio::runtime::Handle::try_current().ok())
            .flatten()
            .map(|rt| rt.spawn(watch(bar.clone(), spool.to_path_buf())));
        Box::new(BarTick { bar, poll })
    }
}

/// Follows the size of a file being written.
async fn watch(bar: indicatif::ProgressBar, path: PathBuf) {
    let mut every = tokio::time::interval(Duration::from_millis(200));
    loop {
        every.tick().await;
        if let Ok(m) = tokio::fs::metadata(&path).await {
            bar.set_position(m.len());
        }
    }
}

/// The progress reporter `ferry run` uses: bars when stderr is a terminal and the output is
/// for people, none otherwise.
pub fn for_terminal(human: bool) -> Option<Arc<dyn Progress>> {
    use std::io::IsTerminal as _;
    (human && std::io::stderr().is_terminal())
        .then(|| Arc::new(TerminalProgress::new()) as Arc<dyn Progress>)
}
