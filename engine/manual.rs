//! `ferry man` and `ferry completions`: the manual pages `clap_mangen` renders from the
//! command line's definition, with the sections it cannot know (EXIT STATUS, ENVIRONMENT,
//! FILES, EXAMPLES), and the shell scripts `clap_complete` writes, with bash completing the
//! flow ids of the flow directory where a command takes one (`ferry run <TAB>`), through the
//! hidden `ferry list-flows`.
//!
//! The exit codes come from [`crate::exit`]'s constants and the variables from the options'
//! `env` names, so the pages follow the code.

use std::io::Write as _;
use std::path::Path;

use crate::exit::{EXIT_BUSY, EXIT_INVALID, EXIT_PAUSED, EXIT_RUN_FAILED, EXIT_USAGE};

/// The commands whose first positional argument is a flow id.
pub const FLOW_ID_COMMANDS: [&str; 4] = ["run", "graph", "pause", "resume"];

/// Variables read outside the options, by the commands (top-level names) that read them.
const OTHER_ENV: [(&str, &[&str], &str); 8] = [
    (
        "FERRY_LOG",
        &[],
        "What is logged on stderr: a tracing filter such as `info` or `ferry::run=info` (default: `warn`, `info` for serve).",
    ),
    (
        "FERRY_OPERATOR_USER",
        &["serve"],
        "The API user who may read and act (run now, resubmit, pause); with FERRY_OPERATOR_PASSWORD or FERRY_OPERATOR_PASSWORD_FILE.",
    ),
    (
        "FERRY_OPERATOR_PASSWORD",
        &["serve"],
        "The operator's password (or FERRY_OPERATOR_PASSWORD_FILE, a file holding it).",
    ),
    (
        "FERRY_VIEWER_USER",
        &["serve"],
        "The API user who may only read; with FERRY_VIEWER_PASSWORD or FERRY_VIEWER_PASSWORD_FILE.",
    ),
    (
        "FERRY_VIEWER_PASSWORD",
        &["serve"],
        "The viewer's password (or FERRY_VIEWER_PASSWORD_FILE).",
    ),
    (
        "FERRY_ENV_FILE",
        &["serve"],
        "The environment file the service's settings come from, named in messages about them (the unit sets it).",
    ),
    (
        "FERRY_DATA",
        &["run", "serve", "check", "resubmit", "init"],
        "Read by the connections files `ferry init` writes and ferry ships: the root of their local directories and outbox (default: ./ferry-data).",
    ),
    (
        "FERRY_STANDIN_PASSWORD",
        &["stand-in"],
        "The password of --user.",
    ),
];

/// Examples by command path (`""` for `ferry` itself): a comment and a command line each.
const EXAMPLES: [(&str, &[(&str, &str)]); 17] = [
    (
        "",
        &[
            (
                "Start a project, check it, test it, run its flow",
                "ferry init acme && cd acme && ferry validate && ferry test && ferry run hello-transfer",
            ),
            (
                "Serve the flow directory: schedules, REST triggers, API, metrics",
                "ferry serve --flows flows --listen 127.0.0.1:8080",
            ),
            (
                "What failed since yesterday",
                "ferry runs --outcome failed --since 24h",
            ),
        ],
    ),
    ("init", &[("A project in ./acme", "ferry init acme")]),
    (
        "validate",
        &[
            ("Every flow of the flow directory", "ferry validate"),
            (
                "In a GitHub workflow",
                "ferry validate flows --format github",
            ),
        ],
    ),
    (
        "run",
        &[
            (
                "What a run would do, changing nothing",
                "ferry run FLOW_ID --dry-run --verbose",
            ),
            (
                "A REST-triggered flow with its parts from files",
                "ferry run FLOW_ID --input message=msg.json --input file=data.csv",
            ),
            (
                "Wait for a run of it elsewhere to end",
                "ferry run FLOW_ID --wait 10m",
            ),
        ],
    ),
    (
        "test",
        &[(
            "Every flow test, as JUnit",
            "ferry test flows --format junit > junit.xml",
        )],
    ),
    (
        "new",
        &[(
            "A flow sending CSV records to a REST connection",
            "ferry new csv-to-rest acme_records",
        )],
    ),
    (
        "graph",
        &[(
            "The step graph as an image",
            "ferry graph FLOW_ID --format dot | dot -Tsvg > flow.svg",
        )],
    ),
    ("check", &[("Reach every connection", "ferry check")]),
    (
        "runs",
        &[
            (
                "The runs of one flow that failed today",
                "ferry runs --flow FLOW_ID --outcome failed --since 24h",
            ),
            ("Which run handled a file", "ferry runs --search data_1.csv"),
        ],
    ),
    (
        "runs show",
        &[(
            "One run's failed records, by a prefix of its id",
            "ferry runs show 01a2",
        )],
    ),
    (
        "resubmit",
        &[(
            "Run a failed run again with its kept input",
            "ferry resubmit 01a2",
        )],
    ),
    (
        "pause",
        &[(
            "Stop a flow for maintenance",
            "ferry pause FLOW_ID --reason \"DACS maintenance\"",
        )],
    ),
    ("resume", &[("Start it again", "ferry resume FLOW_ID")]),
    (
        "purge",
        &[("Keep 30 days of runs", "ferry purge --older-than 30d")],
    ),
    (
        "serve",
        &[
            (
                "Listen for other hosts, with API users",
                "FERRY_OPERATOR_USER=ops FERRY_OPERATOR_PASSWORD=secret ferry serve --listen 0.0.0.0:8080 --allowed-hosts ferry.example.com",
            ),
            (
                "Keep 30 days, export traces",
                "ferry serve --retention 30d --otlp-endpoint http://127.0.0.1:4318",
            ),
        ],
    ),
    (
        "completions",
        &[(
            "Bash completion for this user",
            "ferry completions bash > ~/.local/share/bash-completion/completions/ferry",
        )],
    ),
    (
        "man",
        &[(
            "Read the manual; write every page",
            "ferry man | man -l - ; ferry man --dir /usr/local/share/man/man1",
        )],
    ),
];

/// Text for roff: backslashes and hyphens escaped, no line taken for a request.
fn roff_text(s: &str) -> String {
    let s = s.replace('\\', "\\e").replace('-', "\\-");
    s.lines()
        .map(|l| {
            if l.starts_with('.') || l.starts_with('\'') {
                format!("\\&{l}")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A `.TP` item: a bold tag and its text.
fn item(out: &mut String, tag: &str, text: &str) {
    out.push_str(&format!(
        ".TP\n\\fB{}\\fR\n{}\n",
        roff_text(tag),
        roff_text(text)
    ));
}

/// The variables a command (and, for `ferry` itself, every command) reads, with their help.
fn environment(cmd: &clap::Command, top: &str, all: bool, out: &mut Vec<(String, String)>) {
    for arg in cmd.get_arguments() {
        if let Some(env) = arg.get_env() {
            let name = env.to_string_lossy().into_owned();
            if !out.iter().any(|(n, _)| *n == name) {
                let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
                let flag = arg
                    .get_long()
                    .map(|l| format!(" (--{l})"))
                    .unwrap_or_default();
                out.push((name, format!("{help}{flag}")));
            }
        }
    }
    if all {
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            environment(sub, top, true, out);
        }
    }
    for (name, commands, help) in OTHER_ENV {
        if (all || commands.is_empty() || commands.contains(&top))
            && !out.iter().any(|(n, _)| n == name)
        {
            out.push((name.to_string(), help.to_string()));
        }
    }
}

/// The sections clap_mangen does not render, for the page of `cmd` at `path` (`[]` for
/// `ferry`, `["runs", "show"]` for `ferry runs show`).
fn extra_sections(cmd: &clap::Command, path: &[String]) -> String {
    let mut out = String::from(".SH \"EXIT STATUS\"\n");
    for (code, what) in [
        (
            0,
            "Success: the flows are valid, the run succeeded or found no files, the tests passed.",
        ),
        (
            EXIT_INVALID,
            "Invalid flows, lookups or connections (nothing ran), or a flow test failed.",
        ),
        (
            EXIT_USAGE,
            "A usage or I/O error: a bad option, an unreadable file, an unreachable run history.",
        ),
        (
            EXIT_RUN_FAILED,
            "A run failed or stopped part way (outcome failed or partial).",
        ),
        (
            EXIT_BUSY,
            "The flow is running in another process (its lease is held) and --wait did not get it.",
        ),
        (
            EXIT_PAUSED,
            "The flow is paused (ferry resume FLOW starts it again).",
        ),
    ] {
        item(&mut out, &code.to_string(), what);
    }
    let top = path.first().map_or("", String::as_str);
    let mut env = Vec::new();
    environment(cmd, top, path.is_empty(), &mut env);
    env.sort();
    out.push_str(".SH ENVIRONMENT\n");
    for (name, help) in &env {
        item(&mut out, name, help);
    }
    out.push_str(".SH FILES\n");
    for (file, what) in [
        (
            "flows/",
            "The flow directory (--flows, FERRY_FLOWS): flow files, child flows, flow tests under tests/.",
        ),
        (
            "flows/connections.yaml",
            "The connections (--connections, FERRY_CONNECTIONS).",
        ),
        (
            "lookups/",
            "The lookup tables, beside the flow directory (--lookups, FERRY_LOOKUPS).",
        ),
        (
            "schemas/",
            "The JSON Schemas the files' yaml-language-server lines point at (ferry schema --write schemas).",
        ),
        (
            crate::history::DEFAULT_DATA_DIR,
            "The run history, an SQLite database, and kept trigger inputs (--data, FERRY_STATE_DIR).",
        ),
        (
            "/etc/ferry/ferry.env",
            "The service's settings and secrets, when installed from the package.",
        ),
    ] {
        item(&mut out, file, what);
    }
    let key = path.join(" ");
    if let Some((_, examples)) = EXAMPLES.iter().find(|(k, _)| *k == key) {
        out.push_str(".SH EXAMPLES\n");
        for (what, line) in *examples {
            out.push_str(&format!(
                ".PP\n{}\n.PP\n.RS 4\n\\fB{}\\fR\n.RE\n",
                roff_text(what),
                roff_text(line)
            ));
        }
    }
    out
}

/// The manual page of `cmd` (built) at `path`, as roff.
fn page(cmd: clap::Command, path: &[String]) -> std::io::Result<Vec<u8>> {
    let extra = extra_sections(&cmd, path);
    let mut out = Vec::new();
    clap_mangen::Man::new(cmd).render(&mut out)?;
    out.write_all(extra.as_bytes())?;
    Ok(out)
}

/// The page of `ferry` itself.
pub fn main_page(cmd: clap::Command) -> std::io::Result<Vec<u8>> {
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    page(cmd, &[])
}

/// Writes `ferry.1` and a page per command (`ferry-run.1`, `ferry-runs-show.1`, …) into
/// `dir`, as `clap_mangen::generate_to` names them.
pub fn write_pages(cmd: clap::Command, dir: &Path) -> std::io::Result<()> {
    fn each(cmd: clap::Command, path: Vec<String>, dir: &Path) -> std::io::Result<()> {
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()).cloned() {
            let mut p = path.clone();
            p.push(sub.get_name().to_string());
            each(sub, p, dir)?;
        }
        let file = dir.join(clap_mangen::Man::new(cmd.clone()).get_filename());
        std::fs::write(file, page(cmd, &path)?)
    }
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    each(cmd, Vec::new(), dir)
}

/// The bash script: clap_complete's, then a wrapper that completes a flow id (from `ferry
/// list-flows`, with the `--flows` given on the line) as the first argument of the
/// [`FLOW_ID_COMMANDS`], and leaves the rest to clap_complete's function.
pub fn bash(cmd: &mut clap::Command) -> Vec<u8> {
    let mut out = Vec::new();
    clap_complete::generate(clap_complete::Shell::Bash, cmd, "ferry", &mut out);
    // the options of those commands that take a value: their value is not the flow id
    let mut valued: Vec<String> = Vec::new();
    for sub in cmd
        .get_subcommands()
        .filter(|s| FLOW_ID_COMMANDS.contains(&s.get_name()))
    {
        for arg in sub.get_arguments().filter(|a| !a.is_positional()) {
            if arg.get_action().takes_values() {
                valued.extend(arg.get_long().map(|l| format!("--{l}")));
                valued.extend(arg.get_short().map(|s| format!("-{s}")));
            }
        }
    }
    valued.sort();
    valued.dedup();
    let script = format!(
        r#"
# flow ids: `ferry {commands} <TAB>` completes the ids of the flow directory
_ferry_flow_ids() {{
    local cur="${{COMP_WORDS[COMP_CWORD]}}" i word flows="" positional=0 skip=0
    case "${{COMP_WORDS[1]}}" in
        {alternatives}) ;;
        *) _ferry "$@"; return ;;
    esac
    for (( i = 2; i < COMP_CWORD; i++ )); do
        word="${{COMP_WORDS[i]}}"
        if (( skip )); then skip=0; continue; fi
        case "$word" in
            --flows) flows="${{COMP_WORDS[i+1]}}"; skip=1 ;;
            --flows=*) flows="${{word#--flows=}}" ;;
            {valued}) skip=1 ;;
            -*) ;;
            *) positional=$((positional + 1)) ;;
        esac
    done
    if (( positional > 0 )) || [[ "$cur" == -* ]] || (( skip )); then
        _ferry "$@"
        return
    fi
    local ids
    if [[ -n "$flows" ]]; then
        ids="$("${{COMP_WORDS[0]}}" list-flows --flows "$flows" 2>/dev/null)"
    else
        ids="$("${{COMP_WORDS[0]}}" list-flows 2>/dev/null)"
    fi
    COMPREPLY=( $(compgen -W "$ids" -- "$cur") )
}}
complete -F _ferry_flow_ids -o bashdefault -o default ferry
"#,
        commands = FLOW_ID_COMMANDS.join("|"),
        alternatives = FLOW_ID_COMMANDS.join("|"),
        valued = if valued.is_empty() {
            "--".to_string()
        } else {
            valued.join("|")
        },
    );
    out.extend_from_slice(script.as_bytes());
    out
}

/// The ids of the flows under `dir` (files with an `id` and `steps`), sorted; files that
/// cannot be read or parsed are passed over.
pub fn flow_ids(dir: &Path) -> Vec<String> {
    fn walk(dir: &Path, depth: usize, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.filter_map(Result::ok) {
            let p = e.path();
            let Ok(t) = e.file_type() else { continue };
            if t.is_dir() && depth < 16 {
                walk(&p, depth + 1, out);
            } else if t.is_file()
                && p.extension().is_some_and(|x| x == "yaml" || x == "yml")
                && let Ok(doc) = crate::yaml::SourceDoc::load(&p)
                && doc.value.get("steps").is_some()
                && let Some(id) = doc.value.get("id").and_then(|v| v.as_str())
            {
                out.push(id.to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, 0, &mut out);
    out.sort();
    out.dedup();
    out
}
