//! The command line: argument parsing and the commands, as a library so tests can call it.
//!
//! Exit codes: 0 success (a run that succeeded or found no files), 1 invalid flows, 2 usage
//! or I/O error, 3 a run that failed or stopped part way.

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand, ValueEnum};

use crate::compile::{Inputs, Project, load};
use crate::diag::{Diagnostic, to_json};
use crate::history::{self, RunFilter, RunRequest, Store, Trigger};
use crate::run::{Engine, Outcome, RunOptions, RunReport, trigger_input};

/// Exit code: the flows are invalid.
pub const EXIT_INVALID: u8 = 1;
/// Exit code: usage or I/O error.
pub const EXIT_USAGE: u8 = 2;
/// Exit code: a run failed or stopped part way.
pub const EXIT_RUN_FAILED: u8 = 3;

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
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Where flows, lookups and connections come from.
#[derive(Debug, Clone, clap::Args)]
pub struct Sources {
    /// Flow directory.
    #[arg(long, default_value = "flows")]
    pub flows: PathBuf,
    /// Lookups directory (default: `lookups/` beside the flow directory).
    #[arg(long)]
    pub lookups: Option<PathBuf>,
    /// Connections file (default: `connections.yaml` in the flow directory).
    #[arg(long)]
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
        #[arg(long, value_enum, default_value_t = Format::Human)]
        format: Format,
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
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Human)]
        format: Format,
        /// With --dry-run: show the bodies of the requests and emails it would send.
        #[arg(long, short = 'v')]
        verbose: bool,
        /// Run history directory: the run is recorded there (a failure to record is a
        /// warning and never changes the run).
        #[arg(long, value_name = "DIR", default_value = history::DEFAULT_DATA_DIR)]
        data: PathBuf,
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
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Human, global = true)]
        format: Format,
        /// Run history directory.
        #[arg(long, value_name = "DIR", default_value = history::DEFAULT_DATA_DIR, global = true)]
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
        #[arg(long, value_name = "DIR", default_value = history::DEFAULT_DATA_DIR)]
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
        #[arg(long, value_name = "DIR", default_value = history::DEFAULT_DATA_DIR)]
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
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        /// Data directory: the embedded run history (SQLite) and kept trigger inputs.
        #[arg(long, value_name = "DIR", default_value = history::DEFAULT_DATA_DIR)]
        data: PathBuf,
        /// A PostgreSQL run history shared by several instances (`postgres://…`).
        #[arg(long, env = "FERRY_DATABASE_URL", hide_env_values = true)]
        database_url: Option<String>,
        /// This instance's id in run history and leases (default: host-pid-random).
        #[arg(long)]
        instance: Option<String>,
        /// On SIGTERM, how long runs under way may take before they are asked to stop at
        /// their next step (and again before they are recorded interrupted).
        #[arg(long, value_parser = history::text::parse_age, default_value = "30s")]
        grace: std::time::Duration,
        /// How long a flow's lease lasts unrenewed (a crashed instance's scheduled flows are
        /// taken over after it).
        #[arg(long, value_parser = history::text::parse_age, default_value = "30s")]
        lease: std::time::Duration,
        /// How often this instance heartbeats; an instance silent for six heartbeats is
        /// taken for dead and its runs are recorded interrupted (tests shorten it).
        #[arg(long, value_parser = history::text::parse_age, default_value = "5s", hide = true)]
        heartbeat: std::time::Duration,
        /// Purge runs older than this every hour (`30d`); default: keep until `ferry purge`.
        #[arg(long, value_parser = history::text::parse_age)]
        retention: Option<std::time::Duration>,
        /// Do not fire schedules (triggers and API only).
        #[arg(long)]
        no_schedules: bool,
        /// Do not watch the flow directory for changes.
        #[arg(long)]
        no_watch: bool,
    },
    /// Serve the DACS and DERMS stand-ins for rehearsing flows.
    StandIn {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:7878")]
        listen: String,
        /// Require Basic auth with this user (password from FERRY_STANDIN_PASSWORD).
        #[arg(long)]
        user: Option<String>,
    },
    /// Print or write the JSON Schemas of flow, connection and lookup files.
    Schema {
        /// Write `flow.schema.json`, `connections.schema.json`, `lookup.schema.json` here.
        #[arg(long)]
        write: Option<PathBuf>,
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
    },
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
            let (project, diags) = load(&Inputs {
                paths,
                lookups,
                connections,
            });
            let out = render_diags(&diags, format);
            print!("{out}");
            if format == Format::Human {
                match &project {
                    Some(p) => println!(
                        "ok: {} flows, {} lookups, {} connections",
                        p.flows.len(),
                        p.lookups.tables.len(),
                        p.connections.len()
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
            format,
            verbose,
            data,
        } => {
            let Some(project) = load_sources(&sources) else {
                return Ok(EXIT_INVALID);
            };
            let plan = project.flows.get(&flow).with_context(|| {
                format!(
                    "unknown flow '{flow}' (flows: {})",
                    project.flows.keys().cloned().collect::<Vec<_>>().join(", ")
                )
            })?;
            let parts = parse_inputs(&inputs)?;
            trigger_input(plan, &parts)?;
            let engine = Engine::new(
                project,
                RunOptions {
                    dry_run,
                    progress: crate::progress::for_terminal(format == Format::Human),
                    verbose,
                    ..Default::default()
                },
            );
            let store = match Store::open_sqlite(&data).await {
                Ok(s) => Some(s),
                Err(e) => {
                    eprintln!("warning: the run is not recorded: {e}");
                    None
                }
            };
            let request = RunRequest {
                parts,
                ..RunRequest::new(flow, Trigger::Manual)
            };
            let recorded = history::run_recorded(&engine, store.as_ref(), request).await?;
            finish_recorded(&recorded, store, format).await
        }
        Command::Runs {
            show,
            flow,
            outcome,
            since,
            limit,
            format,
            data,
            database_url,
        } => {
            let store = open_history(&data, database_url.as_deref()).await?;
            match show {
                Some(RunsCommand::Show { id }) => {
                    let id = resolve_run_id(&store, &id).await?;
                    let detail = store.get(&id).await?;
                    store.close().await;
                    let detail = detail.ok_or(history::HistoryError::UnknownRun(id))?;
                    match format {
                        Format::Json => println!("{}", serde_json::to_string_pretty(&detail)?),
                        Format::Human => print!("{}", history::text::run_detail(&detail)),
                    }
                }
                None => {
                    let filter = RunFilter {
                        flow,
                        outcome,
                        since,
                        limit: Some(limit),
                    };
                    let runs = store.list(&filter).await?;
                    store.close().await;
                    match format {
                        Format::Json => println!("{}", serde_json::to_string_pretty(&runs)?),
                        Format::Human => print!("{}", history::text::runs_table(&runs)),
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
        } => {
            let Some(project) = load_sources(&sources) else {
                return Ok(EXIT_INVALID);
            };
            let store = open_history(&data, database_url.as_deref()).await?;
            let engine = Engine::new(project, RunOptions::default());
            let id = resolve_run_id(&store, &id).await?;
            let recorded = history::resubmit(&engine, &store, &id).await?;
            if format == Format::Human {
                println!("resubmit of run {id}");
            }
            finish_recorded(&recorded, Some(store), format).await
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
        Command::StandIn { listen, user } => {
            let config = match user {
                Some(u) => {
                    let pw = std::env::var("FERRY_STANDIN_PASSWORD")
                        .context("--user needs the password in FERRY_STANDIN_PASSWORD")?;
                    crate::standin::StandInConfig::with_basic_auth(u, pw)
                }
                None => crate::standin::StandInConfig::default(),
            };
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
            let schemas = [
                ("flow.schema.json", crate::compile::flow_schema()),
                (
                    "connections.schema.json",
                    crate::compile::connections_schema(),
                ),
                ("lookup.schema.json", crate::compile::lookup_schema()),
            ];
            for (name, schema) in schemas {
                let text = format!("{}\n", serde_json::to_string_pretty(&schema)?);
                match &write {
                    Some(dir) => std::fs::write(dir.join(name), text)
                        .with_context(|| format!("writing {name}"))?,
                    None => print!("{text}"),
                }
            }
            Ok(0)
        }
        Command::Completions { shell } => {
            let shell = match shell {
                CompletionShell::Bash => clap_complete::Shell::Bash,
                CompletionShell::Zsh => clap_complete::Shell::Zsh,
                CompletionShell::Fish => clap_complete::Shell::Fish,
            };
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "ferry", &mut std::io::stdout());
            Ok(0)
        }
        Command::Man { dir } => {
            let cmd = <Cli as clap::CommandFactory>::command();
            match dir {
                Some(dir) => std::fs::create_dir_all(&dir)
                    .and_then(|()| clap_mangen::generate_to(cmd, &dir))
                    .with_context(|| format!("writing manual pages to {}", dir.display()))?,
                None => clap_mangen::Man::new(cmd).render(&mut std::io::stdout())?,
            }
            Ok(0)
        }
    }
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

/// Renders a run report for people.
pub fn render_report(r: &RunReport) -> String {
    let mut s = String::new();
    s.push_str(&format!(
        "{} {} (run {}){}\n",
        r.flow,
        r.flow_name,
        r.run_id,
        if r.dry_run { " — dry run" } else { "" }
    ));
    for e in &r.events {
        let line = render_event(e, r.dry_run);
        s.push_str("  ");
        s.push_str(&line);
        s.push('\n');
    }
    if r.dry_run {
        // what the run would do; nothing of it is counted as done
        s.push_str(&format!(
            "outcome: {} (dry run, nothing changed) — would move {} file(s), make {} rename(s), send {} email(s); requests not sent\n",
            r.outcome,
            r.files_to_move(),
            r.renames(),
            r.emails()
        ));
    } else {
        s.push_str(&format!(
        "outcome: {} — {} file(s) moved, {} record(s) sent, {} tolerated, {} rename(s), {} email(s)\n",
        r.outcome,
        r.files_moved(),
        r.requests_ok(),
        r.suppressed(),
        r.renames(),
        r.emails()
    ));
    }
    if let Some(e) = &r.error {
        s.push_str(&format!("error: step '{}': {}\n", e.step, e.message));
    }
    let unsent = r.emails_failed();
    if unsent > 0 {
        s.push_str(&format!(
            "warning: {unsent} email(s) could not be sent (see above); the outcome does not depend on them\n"
        ));
    }
    s
}

/// Renders one event of a run for people, as `ferry run` prints it (`dry_run`: what a dry
/// run would do).
pub fn render_event(e: &crate::run::Event, dry_run: bool) -> String {
    use crate::run::Event;
    let verb = if dry_run { "would" } else { "did" };
    match e {
        Event::Listed {
            connection,
            location,
            prefix,
            count,
        } => {
            format!("list    {connection}:{location} prefix '{prefix}': {count} file(s)")
        }
        Event::Fetched {
            connection,
            location,
            name,
            bytes,
        } => format!(
            "fetch   {connection}:{}/{name} ({bytes} bytes)",
            location.trim_end_matches('/')
        ),
        Event::Put {
            connection,
            location,
            name,
            bytes,
        } => format!(
            "put     {connection}:{}/{name} ({bytes} bytes) [{verb}]",
            location.trim_end_matches('/')
        ),
        Event::Renamed {
            connection,
            location,
            from,
            to,
        } => format!(
            "rename  {connection}:{}/{from} -> {to} [{verb}]",
            location.trim_end_matches('/')
        ),
        Event::Request {
            method,
            url,
            status,
            suppressed,
            rejected,
            ..
        } => format!(
            "request {method} {url} -> {}{}",
            status.map_or("not sent (dry run)".to_string(), |s| s.to_string()),
            if *suppressed {
                " (tolerated)"
            } else if *rejected {
                " (refused: the answer failed `expect`)"
            } else {
                ""
            }
        ),
        Event::Emailed { to, subject } => {
            format!("email   to {} \"{subject}\" [{verb}]", to.join(", "))
        }
        Event::EmailFailed {
            to,
            subject,
            message,
        } => format!(
            "WARNING email to {} \"{subject}\" was not sent: {message}",
            to.join(", ")
        ),
        Event::Body { of, text } => {
            let mut s = format!("body of {of}:");
            for line in text.lines() {
                s.push_str("\n    | ");
                s.push_str(line);
            }
            s
        }
        Event::Failed { step, message } => format!("FAILED  {step}: {message}"),
    }
}
