//! The `ferry` binary: parse arguments, set up logging and trace export, call [`ferry::cli::main`], map the
//! result to an exit code.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;

/// mimalloc, not glibc's malloc: a run allocates and frees small values for every record
/// from several threads, where glibc's arenas took a sixth of a flow's CPU (lock waits and
/// consolidation); see docs/performance.md, "Many files and many records".
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The stack of every runtime thread, workers and blocking pool alike (tokio's default is
/// 2 MiB). What recurses on a flow's text is bounded well within 2 MiB: YAML nesting and
/// template nesting are refused past 64 levels, and the deepest accepted template takes
/// about a quarter of 2 MiB in a debug build (measured: the template shapes overflowed 2 MiB
/// at 511 to 540 levels). Four times that is margin for what no limit bounds, such as a value
/// a template nests at run time; it costs address space, not memory, until it is used.
const THREAD_STACK: usize = 8 * 1024 * 1024;

fn main() -> ExitCode {
    // parsed before the runtime starts: `--workers` sizes it
    let cli = ferry::cli::Cli::parse();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all().thread_stack_size(THREAD_STACK);
    if let Some(n) = cli.workers {
        runtime.worker_threads(usize::from(n));
    }
    match runtime.build() {
        Ok(rt) => rt.block_on(run(cli)),
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            ExitCode::from(ferry::cli::EXIT_USAGE)
        }
    }
}

async fn run(cli: ferry::cli::Cli) -> ExitCode {
    // a server logs what it does; a command line tool only what went wrong
    let default = match cli.command {
        ferry::cli::Command::Serve { .. } => "info",
        _ => "warn",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("FERRY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let telemetry = match ferry::telemetry::init(
        filter,
        cli.log_json,
        std::io::stderr().is_terminal(),
        cli.otlp_endpoint.as_deref(),
    ) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(ferry::cli::EXIT_USAGE);
        }
    };
    // the command runs as a task on the runtime's workers, not on this thread: a request's
    // answer then wakes the run on the worker that read it, without a thread switch
    let code = match tokio::spawn(ferry::cli::main(cli)).await {
        Ok(Ok(code)) => code,
        Ok(Err(e)) => {
            eprintln!("error: {e:#}");
            ferry::cli::EXIT_USAGE
        }
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => {
            eprintln!("error: {e}");
            ferry::cli::EXIT_USAGE
        }
    };
    // the spans still queued go out before the process ends
    tokio::task::spawn_blocking(move || telemetry.shutdown())
        .await
        .ok();
    ExitCode::from(code)
}
