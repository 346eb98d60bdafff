//! The exit codes of the `ferry` binary: 0 success (a run that succeeded or found no files),
//! 1 invalid flows, 2 usage or I/O error, 3 a run that failed or stopped part way, 4 the flow
//! is running elsewhere (its lease is held) and `--wait` did not get it, 5 the flow is
//! paused. The command line returns them and the manual's EXIT STATUS lists them.

/// Exit code: the flows are invalid.
pub const EXIT_INVALID: u8 = 1;
/// Exit code: usage or I/O error.
pub const EXIT_USAGE: u8 = 2;
/// Exit code: a run failed or stopped part way.
pub const EXIT_RUN_FAILED: u8 = 3;
/// Exit code: the flow is running elsewhere (another process holds its lease) and `--wait`
/// did not get it.
pub const EXIT_BUSY: u8 = 4;
/// Exit code: the flow is paused (`ferry resume FLOW` starts it again).
pub const EXIT_PAUSED: u8 = 5;
