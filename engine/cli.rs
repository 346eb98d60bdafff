//! The command line: argument parsing and the commands, as a library so tests can call it.
//!
//! Exit codes: 0 success (a run that succeeded or found no files), 1 invalid flows, 2 usage
//! or I/O error, 3 a run that failed or stopped part way, 4 the flow is running elsewhere
//! (its lease is held) and `--wait` did not get it, 5 the flow is paused.

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand, ValueEnum};

use crate::compile::{Inputs, Project, load};
use crate::diag::{Diagnostic, to_json};
use crate::history::{self, RunFilter, RunRequest, Store, Trigger};
use crate::run::{Engine, Outcome, RunOptions, trigger_input};

// The exit codes and the run report are the command line's too: its callers find them here.
pub use crate::exit::{EXIT_BUSY, EXIT_INVALID, EXIT_PAUSED, EXIT_RUN_FAILED, EXIT_USAGE};
pub use crate::report::{render_event, render_report};

/// The most worker threads `--workers` takes.
pub const MAX_WORKERS: u16 = 256;

/// How long the lease of a flow run from the command line lasts unrenewed.
const CLI_LEASE: std::time::Duration = std::time::Duration::from_secs(30);

/// ferry: a declarative integration engine.
#[derive(Debug, Parser)]
#[command(name = "ferry", version, about)]
pub struct Cli {
    /// Log as JSON lines on stderr (level from FERRY_LOG, default `warn`).
    #[arg(long, global = true)]
    pub log_json: bool,
    /// Export a trace span per run, step and child flow to this OpenTelemetry collector
    /// (OTLP/HTTP protobuf; a base URL gets `/v1/traces`).
    #[arg(
        long,
        global = true,
        env = "OTEL_EXPORTER_OTLP_ENDPOINT",
        value_name = "URL"
    )]
    pub otlp_endpoint: Option<String>,
    /// Threads that run flows and answer requests (default: one per CPU the process may use;
    /// 1 to 256). On a machine whose CPUs the peers share (a stand-in, a database), fewer
    /// threads wake each other less: see docs/performance.md, "Worker threads".
    #[arg(
        long,
        global = true,
        env = "FERRY_WORKERS",
        value_name = "N",
        value_parser = clap::value_parser!(u16).range(1..=MAX_WORKERS as i64)
    )]
    pub workers: Option<u16>,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Where flows, lookups and connections come from.
#[derive(Debug, Clone, clap::Args)]
pub struct Sources {
    /// Flow directory.
    #[arg(long, env = "FERRY_FLOWS", default_value = "flows")]
    pub flows: PathBuf,
    /// Lookups directory (default: `lookups/` beside the flow directory).
    #[arg(long, env = "FERRY_LOOKUPS")]
    pub lookups: Option<PathBuf>,
    /// Connections file (default: `connections.yaml` in the flow directory).
    #[arg(long, env = "FERRY_CONNECTIONS")]
    pub connections: Option<PathBuf>,
}

/// Output format of `validate` and `run`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// For people.
    Human,
    /// For machines.
    Json,
}

/// Output format of `validate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DiagFormat {
    /// For people.
    Human,
    /// For machines.
    Json,
    /// GitHub Actions workflow annotations (`::error file=…,line=…,col=…::…`).
    Github,
}

/// Graph formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GraphFormat {
    /// Mermaid flowchart.
    Mermaid,
    /// Graphviz DOT.
    Dot,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check flows, lookups and connections; report every problem with its location.
    Validate {
        /// Flow files or directories (default: `flows`).
        paths: Vec<PathBuf>,
        /// Lookups directory (default: `lookups/` beside the first flow directory).
        #[arg(long)]
        lookups: Option<PathBuf>,
        /// Connections file (default: `connections.yaml` in the first flow directory).
        #[arg(long)]
        connections: Option<PathBuf>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = DiagFormat::Human)]
        format: DiagFormat,
    },
    /// Run one flow now.
    Run {
        /// The flow's identifier.
        flow: String,
        /// Sources.
        #[command(flatten)]
        sources: Sources,
        /// Show what would be listed, moved, called and renamed; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Trigger input part, `NAME=PATH` (for REST-triggered flows).
        #[arg(long = "input", value_name = "NAME=PATH")]
        inputs: Vec<String>,
        /// A parameter of a child flow run on its own, `NAME=VALUE` (child flows have no
        /// trigger: other flows call them).
        #[arg(long = "param", value_name = "NAME=VALUE")]
        params: Vec<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Human)]
        format: Format,
        /// With --dry-run: show the bodies of the requests and emails it would send.
        #[arg(long, short = 'v')]
        verbose: bool,
        /// Run history directory: the run is recorded there (a failure to record is a
        /// warning and never changes the run).
        #[arg(long, value_name = "DIR", env = "FERRY_STATE_DIR", default_value = history::DEFAULT_DATA_DIR)]
        data: PathBuf,
        /// A PostgreSQL run history (`postgres://…`) shared with `ferry serve` instances,
        /// instead of the one in --data.
        #[arg(long, env = "FERRY_DATABASE_URL", hide_env_values = true)]
        database_url: Option<String>,
        /// When another process runs the flow, wait up to this long for it (`10m`) instead
        /// of refusing.
        #[arg(long, value_name = "DURATION", value_parser = history::text::parse_age)]
        wait: Option<std::time::Duration>,
    },
    /// List recorded runs, newest first; `ferry runs show ID` shows one run.
    Runs {
        /// `show ID`: one run in detail.
        #[command(subcommand)]
        show: Option<RunsCommand>,
        /// Only runs of this flow.
        #[arg(long)]
        flow: Option<String>,
        /// Only runs with this outcome: running, succeeded, partial, failed, no_files,
        /// interrupted.
        #[arg(long)]
        outcome: Option<history::Outcome>,
        /// Only runs started since an RFC 3339 time or an age ago (`24h`, `7d`).
        #[arg(long, value_parser = history::text::parse_since)]
        since: Option<chrono::DateTime<chrono::Utc>>,
        /// At most this many runs.
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Only runs found by this text: a file name it listed, fetched, put, renamed,
        /// skipped or was delivered that contains it (case-insensitive), or a value its
        /// flow tracks (`track:`), a failed or tolerated record's number (`4711` or `#4711`)
        /// or key equal to it.
        #[arg(long, value_name = "TEXT")]
        search: Option<String>,
        /// Only runs listed after this run id (the `more:` cursor of the page before).
        #[arg(long, value_name = "RUN_ID")]
        before: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Human, global = true)]
        format: Format,
        /// Run history directory.
        #[arg(long, value_name = "DIR", env = "FERRY_STATE_DIR", default_value = history::DEFAULT_DATA_DIR, global = true)]
        data: PathBuf,
        /// A PostgreSQL run history (`postgres://…`) instead of the one in --data.
        #[arg(
            long,
            env = "FERRY_DATABASE_URL",
            hide_env_values = true,
            global = true
        )]
        database_url: Option<String>,
    },
    /// Run a recorded run again: the same flow with the kept trigger input, recorded with
    /// trigger `resubmit` and linked to the original.
    Resubmit {
        /// The run id.
        id: String,
        /// Sources.
        #[command(flatten)]
        sources: Sources,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Human)]
        format: Format,
        /// Run history directory.
        #[arg(long, value_name = "DIR", env = "FERRY_STATE_DIR", default_value = history::DEFAULT_DATA_DIR)]
        data: PathBuf,
        /// A PostgreSQL run history (`postgres://…`) instead of the one in --data.
        #[arg(long, env = "FERRY_DATABASE_URL", hide_env_values = true)]
        database_url: Option<String>,
        /// When another process runs the flow, wait up to this long for it (`10m`) instead
        /// of refusing.
        #[arg(long, value_name = "DURATION", value_parser = history::text::parse_age)]
        wait: Option<std::time::Duration>,
    },
    /// Pause a flow (OIC's "deactivate"): no run of it starts — scheduled ticks are recorded
    /// `paused`, its REST trigger answers 503, "run now" and resubmits are refused, flows
    /// calling it fail at the call — on every instance sharing the run history, until
    /// `ferry resume FLOW`.
    Pause {
        /// The flow's identifier.
        flow: String,
        /// Why (shown to operators with the pause).
        #[arg(long)]
        reason: Option<String>,
        /// Sources (the flow must be one of them).
        #[command(flatten)]
        sources: Sources,
        /// Run history directory.
        #[arg(long, value_name = "DIR", env = "FERRY_STATE_DIR", default_value = history::DEFAULT_DATA_DIR)]
        data: PathBuf,
        /// A PostgreSQL run history (`postgres://…`) instead of the one in --data.
        #[arg(long, env = "FERRY_DATABASE_URL", hide_env_values = true)]
        database_url: Option<String>,
    },
    /// Resume a paused flow: its next tick, delivery or "run now" runs (missed ticks are not
    /// caught up).
    Resume {
        /// The flow's identifier.
        flow: String,
        /// Sources (the flow must be one of them).
        #[command(flatten)]
        sources: Sources,
        /// Run history directory.
        #[arg(long, value_name = "DIR", env = "FERRY_STATE_DIR", default_value = history::DEFAULT_DATA_DIR)]
        data: PathBuf,
        /// A PostgreSQL run history (`postgres://…`) instead of the one in --data.
        #[arg(long, env = "FERRY_DATABASE_URL", hide_env_values = true)]
        database_url: Option<String>,
    },
    /// Delete finished runs that started more than an age ago, with their kept inputs.
    Purge {
        /// The age: `30d`, `12h`, `90m`.
        #[arg(long, value_parser = history::text::parse_age)]
        older_than: std::time::Duration,
        /// Run history directory.
        #[arg(long, value_name = "DIR", env = "FERRY_STATE_DIR", default_value = history::DEFAULT_DATA_DIR)]
        data: PathBuf,
        /// A PostgreSQL run history (`postgres://…`) instead of the one in --data.
        #[arg(long, env = "FERRY_DATABASE_URL", hide_env_values = true)]
        database_url: Option<String>,
    },
    /// Connect to every connection and reach what the flows use; print OK / FAILED.
    Check {
        /// Sources.
        #[command(flatten)]
        sources: Sources,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Human)]
        format: Format,
    },
    /// Print a flow's step graph.
    Graph {
        /// The flow's identifier.
        flow: String,
        /// Sources.
        #[command(flatten)]
        sources: Sources,
        /// Output format.
        #[arg(long, value_enum, default_value_t = GraphFormat::Mermaid)]
        format: GraphFormat,
    },
    /// Run every shipped flow end to end on local directories, an email outbox and the
    /// bundled DACS and DERMS stand-ins.
    Demo {
        /// A demo plan on disk (default: the plan embedded in the binary, unpacked into the
        /// demo directory with its flows, lookups and sample files).
        #[arg(long)]
        plan: Option<PathBuf>,
        /// Where the demo keeps its files.
        #[arg(long, default_value = "ferry-demo")]
        dir: PathBuf,
        /// Start from fresh sample files.
        #[arg(long)]
        reset: bool,
    },
    /// Run a flow directory: fire schedules, answer REST triggers, serve the API, metrics and
    /// the monitoring page, record every run; reload flows when they change.
    Serve {
        /// Sources.
        #[command(flatten)]
        sources: Sources,
        /// Address to listen on (a non-loopback address needs FERRY_OPERATOR_USER /
        /// FERRY_OPERATOR_PASSWORD).
        #[arg(long, env = "FERRY_LISTEN", default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        /// Data directory: the embedded run history (SQLite) and its kept trigger inputs;
        /// with --database-url, which keeps them in the database, this instance's copies.
        #[arg(
            long,
            env = "FERRY_STATE_DIR",
            value_name = "DIR",
            default_value = history::DEFAULT_DATA_DIR
        )]
        data: PathBuf,
        /// A PostgreSQL run history shared by several instances (`postgres://…`).
        #[arg(long, env = "FERRY_DATABASE_URL", hide_env_values = true)]
        database_url: Option<String>,
        /// This instance's id in run history and leases (default: host-pid-random).
        #[arg(
            long,
            env = "FERRY_INSTANCE",
            value_parser = clap::builder::NonEmptyStringValueParser::new()
        )]
        instance: Option<String>,
        /// On SIGTERM, how long runs under way may take before they are asked to stop at
        /// their next step (and again before they are recorded interrupted).
        #[arg(
            long,
            env = "FERRY_GRACE",
            value_parser = history::text::parse_age,
            default_value = "30s"
        )]
        grace: std::time::Duration,
        /// How long a flow's lease lasts unrenewed (a crashed instance's scheduled flows are
        /// taken over after it).
        #[arg(
            long,
            env = "FERRY_LEASE",
            value_parser = history::text::parse_age,
            default_value = "30s"
        )]
        lease: std::time::Duration,
        /// How often this instance heartbeats; an instance silent for six heartbeats is
        /// taken for dead and its runs are recorded interrupted (tests shorten it).
        #[arg(long, value_parser = history::text::parse_age, default_value = "5s", hide = true)]
        heartbeat: std::time::Duration,
        /// Purge runs older than this every hour (`30d`); default: keep until `ferry purge`.
        #[arg(long, env = "FERRY_RETENTION", value_parser = history::text::parse_age)]
        retention: Option<std::time::Duration>,
        /// Do not fire schedules (triggers and API only). From the environment, any value
        /// but an empty one, `0`, `false`, `no` or `off` sets it.
        #[arg(
            long,
            env = "FERRY_NO_SCHEDULES",
            action = clap::ArgAction::SetTrue,
            value_parser = clap::builder::FalseyValueParser::new()
        )]
        no_schedules: bool,
        /// Do not watch the flow directory for changes (from the environment as
        /// --no-schedules).
        #[arg(
            long,
            env = "FERRY_NO_WATCH",
            action = clap::ArgAction::SetTrue,
            value_parser = clap::builder::FalseyValueParser::new()
        )]
        no_watch: bool,
        /// Limits on requests, connections and flow files.
        #[command(flatten)]
        limits: crate::serve::limits::LimitArgs,
    },
    /// Serve the DACS and DERMS stand-ins for rehearsing flows.
    StandIn {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:7878")]
        listen: String,
        /// Require Basic auth with this user (password from FERRY_STANDIN_PASSWORD).
        #[arg(long)]
        user: Option<String>,
        /// How many of each kind of thing received (sync requests, forecast files, outcome
        /// acks, journal entries) to keep for inspection under /_standin/: the latest, the
        /// oldest dropped first (forecast files also at most 512 MiB in all).
        #[arg(long, env = "FERRY_STANDIN_KEEP", default_value_t = crate::standin::DEFAULT_KEEP)]
        keep: usize,
    },
    /// Print or write the JSON Schemas of flow, connection and lookup files.
    Schema {
        /// Write `flow.schema.json`, `connections.schema.json`, `lookup.schema.json`,
        /// `test.schema.json` here.
        #[arg(long)]
        write: Option<PathBuf>,
    },
    /// Start a project: connections on local directories, a lookup, the JSON Schemas, a flow
    /// and its test, which validate and pass at once.
    Init {
        /// The project directory (made if missing; default: the current one).
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
    /// Scaffold a flow and its test file from a template (in a project: `ferry init` makes
    /// one).
    New {
        /// The template.
        #[arg(value_enum)]
        template: crate::scaffold::Template,
        /// The new flow's id.
        id: String,
        /// Its human name (default: the id).
        #[arg(long)]
        name: Option<String>,
        /// The flow directory (its connections.yaml names the connections used).
        #[arg(long, default_value = "flows")]
        flows: PathBuf,
    },
    /// Run flow tests (`*.test.yaml`) on the real engine, without any server.
    Test {
        /// Test files, or directories searched for `*.test.yaml` (default: `flows`).
        paths: Vec<PathBuf>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = crate::testing::output::TestFormat::Human)]
        format: crate::testing::output::TestFormat,
        /// List the steps, `when` branches, route cases and failure steps no test reached.
        #[arg(long)]
        coverage: bool,
    },
    /// Print a shell completion script: `ferry completions bash > /etc/bash_completion.d/ferry`.
    Completions {
        /// The shell.
        shell: CompletionShell,
    },
    /// Print the manual page (roff): `ferry man | man -l -`; `--dir DIR` writes `ferry.1`
    /// and a page per command (`ferry-run.1`, …) there instead.
    Man {
        /// Write every page into this directory (made if missing).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Print the ids of the flows in the flow directory, one a line (for shell completion).
    #[command(hide = true)]
    ListFlows {
        /// Flow directory.
        #[arg(long, env = "FERRY_FLOWS", default_value = "flows")]
        flows: PathBuf,
    },
}

/// Shells `ferry completions` writes scripts for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CompletionShell {
    /// Bash.
    Bash,
    /// Zsh.
    Zsh,
    /// Fish.
    Fish,
}

/// The subcommands of `ferry runs`.
#[derive(Debug, Subcommand)]
pub enum RunsCommand {
    /// One run in detail: kept input, files, records, emails, error and events.
    Show {
        /// The run id.
        id: String,
        /// Which records to print: failed (default), tolerated, or all the requests that
        /// are rows (a record loop's accepted records are its range).
        #[arg(long, value_enum, default_value_t = RecordsChoice::Failed)]
        records: RecordsChoice,
        /// Records per page (1 to 1000).
        #[arg(long, default_value_t = history::PAGE, value_parser = clap::value_parser!(u32).range(1..=i64::from(history::MAX_PAGE)))]
        limit: u32,
        /// Print the records after this event (the cursor `more:` gives).
        #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(i64).range(0..))]
        after: i64,
        /// Print a page of the run's events instead (`--status` picks which, `--after` and
        /// `--limit` page through them).
        #[arg(long)]
        events: bool,
        /// With --events: all (default), failed, tolerated, files, requests or emails.
        #[arg(long, requires = "events", value_parser = parse_event_filter)]
        status: Option<history::EventFilter>,
    },
}

/// The records `ferry runs show` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RecordsChoice {
    /// Failed requests and step failures.
    Failed,
    /// Requests whose failing answer was tolerated.
    Tolerated,
    /// Every request that is a row.
    All,
}

impl RecordsChoice {
    fn filter(self) -> history::EventFilter {
        match self {
            RecordsChoice::Failed => history::EventFilter::Failed,
            RecordsChoice::Tolerated => history::EventFilter::Tolerated,
            RecordsChoice::All => history::EventFilter::Requests,
        }
    }

    fn name(self) -> &'static str {
        match self {
            RecordsChoice::Failed => "failed",
            RecordsChoice::Tolerated => "tolerated",
            RecordsChoice::All => "all",
        }
    }
}

/// Parses arguments, runs the command, returns the exit code.
pub async fn main(cli: Cli) -> anyhow::Result<u8> {
    match cli.command {
        Command::Validate {
            paths,
            lookups,
            connections,
            format,
        } => {
            let paths = if paths.is_empty() {
                vec![PathBuf::from("flows")]
            } else {
                paths
            };
            // the checks of `load`, keeping no compiled flow
            let (project, diags) = crate::compile::check(&Inputs {
                paths,
                lookups,
                connections,
            });
            let out = match format {
                DiagFormat::Human => render_diags(&diags, Format::Human),
                DiagFormat::Json => render_diags(&diags, Format::Json),
                DiagFormat::Github => crate::diag::to_github(&diags),
            };
            print!("{out}");
            if format == DiagFormat::Human {
                match &project {
                    Some(p) => println!(
                        "ok: {} flows, {} lookups, {} connections",
                        p.flows, p.lookups, p.connections
                    ),
                    None => eprintln!("{} problem(s) found", diags.len()),
                }
            }
            Ok(if project.is_some() {
                0
            } else if diags.iter().all(|d| d.code == "io") {
                EXIT_USAGE
            } else {
                EXIT_INVALID
            })
        }
        Command::Run {
            flow,
            sources,
            dry_run,
            inputs,
            params,
            format,
            verbose,
            data,
            database_url,
            wait,
        } => {
            let Some(project) = load_sources(&sources) else {
                return Ok(EXIT_INVALID);
            };
            let plan = project.flows.get(&flow).cloned().with_context(|| {
                format!(
                    "unknown flow '{flow}' (flows: {})",
                    project.flows.keys().cloned().collect::<Vec<_>>().join(", ")
                )
            })?;
            let parts = parse_inputs(&inputs)?;
            trigger_input(&plan, &parts)?;
            let params = child_params(&plan, &params)?;
            let store = match &database_url {
                // a shared history is how the run keeps clear of the instances' runs
                Some(url) => Some(Store::open_postgres(url, &data).await?),
                None => match Store::open_sqlite(&data).await {
                    Ok(s) => Some(s),
                    Err(e) => {
                        eprintln!("warning: the run is not recorded: {e}");
                        None
                    }
                },
            };
            if let Some(store) = &store
                && !dry_run
                && let Some(code) = paused_exit(store, &flow).await?
            {
                store.close().await;
                return Ok(code);
            }
            let owned = match &store {
                Some(store) => match own_flow(store, &plan, !dry_run, wait).await? {
                    Ok(owned) => Some(owned),
                    Err(busy) => {
                        eprintln!("error: {busy}");
                        store.close().await;
                        return Ok(EXIT_BUSY);
                    }
                },
                None => None,
            };
            let engine = Engine::new(
                project,
                RunOptions {
                    dry_run,
                    spool_dir: spool_of(store.as_ref()).await,
                    fence: owned.as_ref().and_then(Owned::fence),
                    params,
                    progress: crate::progress::for_terminal(format == Format::Human),
                    verbose,
                    ..Default::default()
                },
            );
            let request = RunRequest {
                parts,
                ..RunRequest::new(flow, Trigger::Manual)
            };
            let recorded =
                history::run_recorded(&engine, owned.as_ref().map(|o| &o.store), request).await;
            if let Some(owned) = owned {
                owned.release().await;
            }
            finish_recorded(&recorded?, store, format).await
        }
        Command::Runs {
            show,
            flow,
            outcome,
            since,
            limit,
            search,
            before,
            format,
            data,
            database_url,
        } => {
            let store = open_history(&data, database_url.as_deref()).await?;
            match show {
                Some(RunsCommand::Show {
                    id,
                    records,
                    limit,
                    after,
                    events,
                    status,
                }) => {
                    let id = match resolve_run_id(&store, &id).await {
                        Ok(id) => id,
                        Err(e) => {
                            store.close().await;
                            return Err(e);
                        }
                    };
                    if events {
                        let filter = status.unwrap_or_default();
                        let page = store.events_page(&id, filter, after, limit).await;
                        store.close().await;
                        let page = page?;
                        match format {
                            Format::Json => println!("{}", serde_json::to_string_pretty(&page)?),
                            Format::Human => print!(
                                "{}",
                                history::text::events_page(&id, filter, &page, after, limit)
                            ),
                        }
                        return Ok(0);
                    }
                    let Some(detail) = store.get(&id).await? else {
                        store.close().await;
                        return Err(history::HistoryError::UnknownRun(id).into());
                    };
                    let page = store
                        .events_page(&id, records.filter(), after, limit)
                        .await?;
                    let loops = store.loop_summaries(&detail.summary, &detail.loops).await?;
                    store.close().await;
                    match format {
                        Format::Json => {
                            let mut v = serde_json::to_value(&detail)?;
                            if let Some(o) = v.as_object_mut() {
                                o.insert("loop_summaries".into(), serde_json::to_value(&loops)?);
                                o.insert(
                                    "records_page".into(),
                                    serde_json::json!({
                                        "filter": records.name(),
                                        "after": after,
                                        "events": page.events,
                                        "next": page.next,
                                    }),
                                );
                            }
                            println!("{}", serde_json::to_string_pretty(&v)?);
                        }
                        Format::Human => print!(
                            "{}",
                            history::text::run_detail(
                                &detail,
                                &loops,
                                &history::text::RecordsShown {
                                    filter: records.name(),
                                    page: &page,
                                    after,
                                    limit,
                                }
                            )
                        ),
                    }
                }
                None => {
                    let before = match before {
                        Some(b) => Some(resolve_run_id(&store, &b).await?),
                        None => None,
                    };
                    let filter = RunFilter {
                        flow,
                        outcome,
                        since,
                        limit: Some(limit),
                        search: search.map(|s| history::check_search(&s)).transpose()?,
                        before,
                    };
                    let runs = store.list(&filter).await?;
                    store.close().await;
                    let more = (runs.len() == limit as usize)
                        .then(|| runs.last().map(|r| r.id.clone()))
                        .flatten();
                    match format {
                        Format::Json => println!("{}", serde_json::to_string_pretty(&runs)?),
                        Format::Human => {
                            print!("{}", history::text::runs_table(&runs));
                            if let Some(id) = more {
                                println!("more: --before {id}");
                            }
                        }
                    }
                }
            }
            Ok(0)
        }
        Command::Resubmit {
            id,
            sources,
            format,
            data,
            database_url,
            wait,
        } => {
            let Some(project) = load_sources(&sources) else {
                return Ok(EXIT_INVALID);
            };
            // opening the history records runs of stopped processes interrupted: resubmittable
            let store = open_history(&data, database_url.as_deref()).await?;
            let id = resolve_run_id(&store, &id).await?;
            let request = history::resubmit_request(&store, &id).await?;
            let plan = project.flows.get(&request.flow).cloned().with_context(|| {
                format!(
                    "run {id} is of flow '{}', which is not in the flows",
                    request.flow
                )
            })?;
            if let Some(code) = paused_exit(&store, &plan.id).await? {
                store.close().await;
                return Ok(code);
            }
            let owned = match own_flow(&store, &plan, true, wait).await? {
                Ok(owned) => owned,
                Err(busy) => {
                    eprintln!("error: {busy}");
                    store.close().await;
                    return Ok(EXIT_BUSY);
                }
            };
            let engine = Engine::new(
                project,
                RunOptions {
                    spool_dir: spool_of(Some(&owned.store)).await,
                    fence: owned.fence(),
                    ..Default::default()
                },
            );
            let recorded = history::run_recorded(&engine, Some(&owned.store), request).await;
            owned.release().await;
            let recorded = recorded?;
            if format == Format::Human {
                println!("resubmit of run {id}");
            }
            finish_recorded(&recorded, Some(store), format).await
        }
        Command::Pause {
            flow,
            reason,
            sources,
            data,
            database_url,
        } => {
            let Some(store) = flow_history(&sources, &flow, &data, database_url.as_deref()).await?
            else {
                return Ok(EXIT_INVALID);
            };
            let p = store
                .pause_flow(&flow, &cli_user(), reason.as_deref())
                .await?;
            store.close().await;
            println!(
                "flow {flow} paused by {} at {}{}",
                p.paused_by,
                p.paused_at,
                p.reason.map(|r| format!(": {r}")).unwrap_or_default()
            );
            Ok(0)
        }
        Command::Resume {
            flow,
            sources,
            data,
            database_url,
        } => {
            let Some(store) = flow_history(&sources, &flow, &data, database_url.as_deref()).await?
            else {
                return Ok(EXIT_INVALID);
            };
            let ended = store.resume_flow(&flow).await?;
            store.close().await;
            match ended {
                Some(p) => println!(
                    "flow {flow} resumed (paused by {} at {})",
                    p.paused_by, p.paused_at
                ),
                None => println!("flow {flow} was not paused"),
            }
            Ok(0)
        }
        Command::Purge {
            older_than,
            data,
            database_url,
        } => {
            let store = open_history(&data, database_url.as_deref()).await?;
            let age = chrono::Duration::from_std(older_than).context("the age is too long")?;
            let cutoff = chrono::Utc::now()
                .checked_sub_signed(age)
                .context("the age is too long")?;
            let purged = store.purge(cutoff).await?;
            store.purge_ticks(cutoff).await?;
            store.close().await;
            println!(
                "purged {purged} run(s) that started before {}",
                cutoff.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            );
            Ok(0)
        }
        Command::Check { sources, format } => {
            let Some(project) = load_sources(&sources) else {
                return Ok(EXIT_INVALID);
            };
            let rows = crate::check::check(&project).await;
            match format {
                Format::Json => println!("{}", serde_json::to_string_pretty(&rows)?),
                Format::Human => print!("{}", crate::check::render(&rows)),
            }
            Ok(if rows.iter().all(|r| r.ok) {
                0
            } else {
                EXIT_RUN_FAILED
            })
        }
        Command::Graph {
            flow,
            sources,
            format,
        } => {
            let Some(project) = load_sources(&sources) else {
                return Ok(EXIT_INVALID);
            };
            let plan = project
                .flows
                .get(&flow)
                .with_context(|| format!("unknown flow '{flow}'"))?;
            print!("{}", crate::demo::graph(plan, format == GraphFormat::Dot));
            Ok(0)
        }
        Command::Demo { plan, dir, reset } => {
            let mut out = std::io::stdout();
            let ok = crate::demo::run(plan.as_deref(), &dir, reset, &mut out).await?;
            out.flush()?;
            Ok(if ok { 0 } else { EXIT_RUN_FAILED })
        }
        Command::Serve {
            sources,
            listen,
            data,
            database_url,
            instance,
            grace,
            lease,
            heartbeat,
            retention,
            no_schedules,
            no_watch,
            limits,
        } => {
            let users = crate::serve::Users::from_env()?;
            let opts = crate::serve::ServeOptions {
                inputs: Inputs {
                    paths: vec![sources.flows.clone()],
                    lookups: sources.lookups.clone(),
                    connections: sources.connections.clone(),
                },
                data_dir: data,
                database_url,
                listen,
                instance,
                grace,
                schedules: !no_schedules,
                watch: !no_watch,
                lease_ttl: lease,
                heartbeat,
                retention,
                spool_dir: None,
                users,
                max_file_bytes: limits.max_file_bytes(),
                limits: limits.limits(),
            };
            let result = crate::serve::serve(opts, crate::serve::shutdown_signal(), |addr| {
                eprintln!(
                    "ferry serve listening on http://{addr} (monitoring page: http://{addr}/ui)"
                );
            })
            .await;
            match result {
                Ok(()) => Ok(0),
                Err(crate::serve::ServeError::Invalid(text)) => {
                    eprint!("{text}");
                    Ok(EXIT_INVALID)
                }
                Err(e) => Err(e.into()),
            }
        }
        Command::StandIn { listen, user, keep } => {
            let mut config = match user {
                Some(u) => {
                    let pw = std::env::var("FERRY_STANDIN_PASSWORD")
                        .context("--user needs the password in FERRY_STANDIN_PASSWORD")?;
                    crate::standin::StandInConfig::with_basic_auth(u, pw)
                }
                None => crate::standin::StandInConfig::default(),
            };
            config.keep = keep;
            let listener = tokio::net::TcpListener::bind(&listen)
                .await
                .with_context(|| format!("cannot listen on {listen}"))?;
            eprintln!(
                "DACS and DERMS stand-ins listening on http://{}",
                listener.local_addr()?
            );
            crate::standin::StandIn::new(config)
                .serve(listener, async {
                    let _ = tokio::signal::ctrl_c().await;
                })
                .await?;
            Ok(0)
        }
        Command::Schema { write } => {
            for (name, schema) in crate::scaffold::schemas() {
                let text = format!("{}\n", serde_json::to_string_pretty(&schema)?);
                match &write {
                    Some(dir) => std::fs::write(dir.join(name), text)
                        .with_context(|| format!("writing {name}"))?,
                    None => print!("{text}"),
                }
            }
            Ok(0)
        }
        Command::Init { dir } => {
            let written = crate::scaffold::init(&dir)?;
            let here = dir == std::path::Path::new(".");
            for p in &written {
                let shown = if here { p.clone() } else { dir.join(p) };
                println!("wrote {}", shown.display());
            }
            println!("next:");
            if !here {
                println!("  cd {}", dir.display());
            }
            let (id, _) = crate::scaffold::INIT_FLOW;
            println!("  ferry validate");
            println!("  ferry test");
            println!("  ferry run {id}");
            Ok(0)
        }
        Command::New {
            template,
            id,
            name,
            flows,
        } => {
            let (flow, test) = crate::scaffold::new_flow(&flows, template, &id, name.as_deref())?;
            println!("wrote {}", flow.display());
            println!("wrote {}", test.display());
            if let Some(schemas) = crate::scaffold::schemas_beside(&flows)? {
                println!("wrote {}", schemas.display());
            }
            println!(
                "next: ferry validate {} && ferry test {}",
                flows.display(),
                test.display()
            );
            Ok(0)
        }
        Command::Test {
            paths,
            format,
            coverage,
        } => {
            let paths = if paths.is_empty() {
                vec![PathBuf::from("flows")]
            } else {
                paths
            };
            crate::testing::cli(&paths, format, coverage).await
        }
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            let shell = match shell {
                CompletionShell::Bash => {
                    std::io::stdout().write_all(&crate::manual::bash(&mut cmd))?;
                    return Ok(0);
                }
                CompletionShell::Zsh => clap_complete::Shell::Zsh,
                CompletionShell::Fish => clap_complete::Shell::Fish,
            };
            clap_complete::generate(shell, &mut cmd, "ferry", &mut std::io::stdout());
            Ok(0)
        }
        Command::Man { dir } => {
            let cmd = <Cli as clap::CommandFactory>::command();
            match dir {
                Some(dir) => std::fs::create_dir_all(&dir)
                    .and_then(|()| crate::manual::write_pages(cmd, &dir))
                    .with_context(|| format!("writing manual pages to {}", dir.display()))?,
                None => std::io::stdout().write_all(&crate::manual::main_page(cmd)?)?,
            }
            Ok(0)
        }
        Command::ListFlows { flows } => {
            for id in crate::manual::flow_ids(&flows) {
                println!("{id}");
            }
            Ok(0)
        }
    }
}

/// A command's hold on the run history: this process registered as the owner of the runs
/// it starts (heartbeating), and the lease of the flow it runs.
struct Owned {
    store: Store,
    heartbeat: tokio_util::sync::CancellationToken,
    lease: Option<history::HeldLease>,
}

impl Owned {
    fn fence(&self) -> Option<Arc<dyn crate::run::Fence>> {
        self.lease.as_ref().map(history::HeldLease::fence)
    }

    /// Gives the lease up and deregisters the process.
    async fn release(self) {
        if let Some(lease) = self.lease {
            lease.release().await;
        }
        self.heartbeat.cancel();
        if let Err(e) = self.store.deregister().await {
            eprintln!("warning: run history: {e}");
        }
    }
}

/// Registers this process as the owner of the runs it starts and, when `exclusive`, takes
/// the lease of `plan`'s flow as `ferry serve` does (a REST-triggered flow's runs go side by
/// side and take none), waiting up to `wait` while another process holds it. `Err`: who
/// holds it, as a message.
async fn own_flow(
    store: &Store,
    plan: &crate::compile::FlowPlan,
    exclusive: bool,
    wait: Option<std::time::Duration>,
) -> anyhow::Result<Result<Owned, String>> {
    let instance = format!("cli-{}-{}", history::host_name(), std::process::id());
    let store = store
        .register(&instance, history::DEFAULT_HEARTBEAT)
        .await?;
    let heartbeat = store.keep_alive(history::DEFAULT_HEARTBEAT);
    let mut owned = Owned {
        store,
        heartbeat,
        lease: None,
    };
    if !exclusive || plan.trigger.rest.is_some() {
        return Ok(Ok(owned));
    }
    let name = history::flow_lease(&plan.id);
    let held = match wait {
        Some(w) => owned.store.acquire_lease_within(&name, CLI_LEASE, w).await,
        None => owned.store.acquire_lease(&name, CLI_LEASE).await,
    };
    let held = match held {
        Ok(h) => h,
        Err(e) => {
            owned.release().await;
            return Err(e.into());
        }
    };
    if let Some(held) = held {
        owned.lease = Some(held);
        return Ok(Ok(owned));
    }
    let holder = owned
        .store
        .lease_holder(&name)
        .await
        .ok()
        .flatten()
        .map_or_else(
            || "another ferry process".to_string(),
            |h| format!("instance {h}"),
        );
    owned.release().await;
    Ok(Err(match wait {
        Some(w) => format!(
            "flow '{}' is still running after waiting {}: its lease is held by {holder}",
            plan.id,
            humantime::format_duration(w)
        ),
        None => format!(
            "flow '{}' is already running: its lease is held by {holder}; wait for it with --wait DURATION",
            plan.id
        ),
    }))
}

/// Prints a recorded run's report and recording warnings, closes the store, and gives the
/// run's exit code.
async fn finish_recorded(
    recorded: &history::Recorded,
    store: Option<Store>,
    format: Format,
) -> anyhow::Result<u8> {
    for w in &recorded.warnings {
        eprintln!("warning: run history: {w}");
    }
    if let Some(store) = store {
        store.close().await;
    }
    let report = &recorded.report;
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(report)?),
        Format::Human => print!("{}", render_report(report)),
    }
    Ok(match report.outcome {
        Outcome::Succeeded | Outcome::NoFiles => 0,
        Outcome::Partial | Outcome::Failed => EXIT_RUN_FAILED,
    })
}

/// The run id `id` names: itself when recorded, else the one run whose id starts with it
/// (an ambiguous prefix is an error that lists the candidates).
async fn resolve_run_id(store: &Store, id: &str) -> anyhow::Result<String> {
    const SHOWN: u32 = 10;
    if store.get(id).await?.is_some() {
        return Ok(id.to_string());
    }
    let mut ids = store.ids_starting_with(id, SHOWN + 1).await?;
    match ids.len() {
        0 => Err(history::HistoryError::UnknownRun(id.to_string()).into()),
        1 => Ok(ids.remove(0)),
        n => {
            let more = if n > SHOWN as usize { "\n  …" } else { "" };
            ids.truncate(SHOWN as usize);
            bail!(
                "run id prefix '{id}' is ambiguous; it matches:\n  {}{more}",
                ids.join("\n  ")
            )
        }
    }
}

/// Loads the project, or prints why it is invalid (an invalid project is never run).
/// The run history: PostgreSQL at `url`, else the SQLite store in `data` (which must
/// exist).
/// `--status` of `ferry runs show --events`.
fn parse_event_filter(s: &str) -> Result<history::EventFilter, String> {
    s.parse()
}

/// Who runs this command, for the record (a pause's `paused_by`): `cli:` and the login.
fn cli_user() -> String {
    let login = ["USER", "LOGNAME"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|u| !u.is_empty()))
        .unwrap_or_else(|| "unknown".into());
    format!("cli:{login}")
}

/// The run history (in `data`, made if missing, or at `url`) for a command on `flow`, which
/// must be one of the flows `sources` load (`ferry pause`, `ferry resume`); `None` when the
/// flows do not load (their diagnostics printed).
async fn flow_history(
    sources: &Sources,
    flow: &str,
    data: &std::path::Path,
    url: Option<&str>,
) -> anyhow::Result<Option<Store>> {
    let Some(project) = load_sources(sources) else {
        return Ok(None);
    };
    if !project.flows.contains_key(flow) {
        let hint = crate::diag::did_you_mean(flow, project.flows.keys().map(String::as_str))
            .map(|h| format!(" ({h})"))
            .unwrap_or_default();
        anyhow::bail!("unknown flow '{flow}'{hint}")
    }
    Ok(Some(match url {
        Some(url) => Store::open_postgres(url, data).await?,
        None => Store::open_sqlite(data).await?,
    }))
}

/// Refuses a run of a paused flow: prints why and gives [`EXIT_PAUSED`].
async fn paused_exit(store: &Store, flow: &str) -> anyhow::Result<Option<u8>> {
    match store.pause_of(flow).await? {
        Some(p) => {
            eprintln!("error: {p}");
            Ok(Some(EXIT_PAUSED))
        }
        None => Ok(None),
    }
}

async fn open_history(data: &std::path::Path, url: Option<&str>) -> anyhow::Result<Store> {
    Ok(match url {
        Some(url) => Store::open_postgres(url, data).await?,
        None => Store::open_sqlite_existing(data).await?,
    })
}

fn load_sources(s: &Sources) -> Option<Arc<Project>> {
    let (project, diags) = load(&Inputs {
        paths: vec![s.flows.clone()],
        lookups: s.lookups.clone(),
        connections: s.connections.clone(),
    });
    if project.is_none() {
        eprint!("{}", render_diags(&diags, Format::Human));
    }
    project.map(Arc::new)
}

/// The spool of runs recorded in `store`, swept of what runs that no longer run left
/// there (and of their copies of inputs kept in the database,
/// [`Store::sweep_input_copies`]): `<data>/spool` for the embedded history; `ferry-spool` in
/// the system's temporary directory for a shared one.
/// Without a store, none: a run spools in the temporary directory.
async fn spool_of(store: Option<&Store>) -> Option<PathBuf> {
    let store = store?;
    let dir = if store.is_sqlite() {
        store.spool_dir()
    } else {
        std::env::temp_dir().join("ferry-spool")
    };
    if let Err(e) = store.sweep_spool_in(&dir).await {
        eprintln!("warning: cannot sweep the spool: {e}");
    }
    if let Err(e) = store.sweep_input_copies().await {
        eprintln!("warning: cannot sweep the copies of kept inputs: {e}");
    }
    Some(dir)
}

/// The `--param NAME=VALUE` of a run. A flow without a trigger is a child flow: run on its
/// own it needs its required parameters, and only a flow with parameters takes any.
fn child_params(
    plan: &crate::compile::FlowPlan,
    params: &[String],
) -> anyhow::Result<serde_json::Map<String, serde_json::Value>> {
    let mut out = serde_json::Map::new();
    for p in params {
        let Some((name, value)) = p.split_once('=') else {
            bail!("--param takes NAME=VALUE, got '{p}'")
        };
        if !plan.params.contains_key(name) {
            let takes: Vec<_> = plan.params.keys().cloned().collect();
            bail!(
                "flow '{}' has no parameter '{name}' ({})",
                plan.id,
                if takes.is_empty() {
                    "it takes none".to_string()
                } else {
                    format!("it takes: {}", takes.join(", "))
                }
            )
        }
        out.insert(
            name.to_string(),
            serde_json::Value::String(value.to_string()),
        );
    }
    let t = &plan.trigger;
    let child = t.schedule.is_none() && !t.manual && t.rest.is_none();
    let missing: Vec<&str> = plan
        .params
        .iter()
        .filter(|(k, p)| p.required && !out.contains_key(*k))
        .map(|(k, _)| k.as_str())
        .collect();
    if child && !missing.is_empty() {
        let example: Vec<String> = missing.iter().map(|k| format!("--param {k}=…")).collect();
        bail!(
            "flow '{}' is a child flow (other flows call it; it has no trigger): run it on its own with its parameters: ferry run {} {}",
            plan.id,
            plan.id,
            example.join(" ")
        )
    }
    Ok(out)
}

fn parse_inputs(inputs: &[String]) -> anyhow::Result<Vec<(String, PathBuf, Option<String>)>> {
    let mut out = Vec::new();
    for i in inputs {
        let Some((name, path)) = i.split_once('=') else {
            bail!("--input takes NAME=PATH, got '{i}'")
        };
        out.push((name.to_string(), PathBuf::from(path), None));
    }
    Ok(out)
}

/// Renders diagnostics in the chosen format.
pub fn render_diags(diags: &[Diagnostic], format: Format) -> String {
    match format {
        Format::Json => format!("{}\n", to_json(diags)),
        Format::Human => diags.iter().map(|d| format!("{}\n", d.render())).collect(),
    }
}
