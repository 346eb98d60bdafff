//! What an operator reaches for after the quick start: shell completions, the manual page,
//! the demo run from anywhere (and the commands it prints), run id prefixes.

#![allow(clippy::unwrap_used)] // tests unwrap: a panic is the failure report

use std::path::Path;
use std::process::{Command, Output};

fn ferry(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn bash_completion_parses_and_completes_the_commands() {
    let dir = tempfile::tempdir().unwrap();
    let o = ferry(dir.path(), &["completions", "bash"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let script = dir.path().join("ferry.bash");
    std::fs::write(&script, &o.stdout).unwrap();
    let n = Command::new("bash")
        .arg("-n")
        .arg(&script)
        .output()
        .unwrap();
    assert!(
        n.status.success(),
        "bash -n: {}",
        String::from_utf8_lossy(&n.stderr)
    );
    // bash itself completes `ferry r` with the script loaded
    let probe = format!(
        "source {}; COMP_WORDS=(ferry r); COMP_CWORD=1; COMP_LINE='ferry r'; COMP_POINT=7; \
         _ferry ferry r ferry; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        script.display()
    );
    let c = Command::new("bash").arg("-c").arg(&probe).output().unwrap();
    assert!(c.status.success(), "{}", String::from_utf8_lossy(&c.stderr));
    let mut words: Vec<String> = String::from_utf8_lossy(&c.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    words.sort();
    assert_eq!(words, ["resubmit", "resume", "run", "runs"]);
    let text = stdout(&o);
    for sub in [
        "validate",
        "run",
        "runs",
        "serve",
        "demo",
        "completions",
        "man",
    ] {
        assert!(text.contains(sub), "the bash script misses '{sub}'");
    }
}

#[test]
fn zsh_and_fish_completions_name_the_commands() {
    let dir = tempfile::tempdir().unwrap();
    let zsh = ferry(dir.path(), &["completions", "zsh"]);
    assert_eq!(zsh.status.code(), Some(0));
    assert!(stdout(&zsh).starts_with("#compdef ferry"));
    assert!(stdout(&zsh).contains("'resubmit:"));
    let fish = ferry(dir.path(), &["completions", "fish"]);
    assert_eq!(fish.status.code(), Some(0));
    assert!(stdout(&fish).contains("complete -c ferry"));
    assert!(stdout(&fish).contains("-a \"serve\""));
    let bad = ferry(dir.path(), &["completions", "tcsh"]);
    assert_eq!(bad.status.code(), Some(2));
}

#[test]
fn man_prints_a_roff_page_and_writes_one_per_command() {
    let dir = tempfile::tempdir().unwrap();
    let o = ferry(dir.path(), &["man"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let page = stdout(&o);
    assert!(page.starts_with(".ie"), "{}", &page[..page.len().min(200)]);
    assert!(page.contains(".TH ferry 1"), "{page}");
    assert!(page.contains("ferry\\-serve(1)"), "{page}");
    let o = ferry(dir.path(), &["man", "--dir", "pages"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let serve = std::fs::read_to_string(dir.path().join("pages/ferry-serve.1")).unwrap();
    assert!(serve.contains(".TH ferry-serve 1"), "{serve}");
    assert!(serve.contains("\\-\\-listen"), "{serve}");
    assert!(dir.path().join("pages/ferry.1").exists());
    assert!(dir.path().join("pages/ferry-runs-show.1").exists());
}

/// The man pages used to stop at the options: an operator could not find the exit codes,
/// the variables or an example. Every page now has EXIT STATUS (the codes of `cli.rs`),
/// ENVIRONMENT (its options' variables and the others it reads), FILES, and EXAMPLES.
#[test]
fn man_pages_have_exit_status_environment_files_and_examples() {
    let dir = tempfile::tempdir().unwrap();
    let o = ferry(dir.path(), &["man"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let page = stdout(&o);
    for section in [
        ".SH \"EXIT STATUS\"\n",
        ".SH ENVIRONMENT\n",
        ".SH FILES\n",
        ".SH EXAMPLES\n",
    ] {
        assert!(page.contains(section), "{section} in {page}");
    }
    for (code, what) in [
        (ferry::cli::EXIT_INVALID, "Invalid flows"),
        (ferry::cli::EXIT_USAGE, "A usage or I/O error"),
        (
            ferry::cli::EXIT_RUN_FAILED,
            "A run failed or stopped part way",
        ),
        (
            ferry::cli::EXIT_BUSY,
            "The flow is running in another process",
        ),
        (ferry::cli::EXIT_PAUSED, "The flow is paused"),
    ] {
        assert!(
            page.contains(&format!(".TP\n\\fB{code}\\fR\n{what}")),
            "exit {code} in {page}"
        );
    }
    // ferry(1) lists every variable of every command
    for var in [
        "FERRY_FLOWS",
        "FERRY_STATE_DIR",
        "FERRY_LISTEN",
        "FERRY_LOG",
        "FERRY_OPERATOR_USER",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    ] {
        assert!(page.contains(&format!("\\fB{var}\\fR")), "{var} in {page}");
    }
    let o = ferry(dir.path(), &["man", "--dir", "pages"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let read = |name: &str| std::fs::read_to_string(dir.path().join("pages").join(name)).unwrap();
    let serve = read("ferry-serve.1");
    assert!(serve.contains(".SH ENVIRONMENT\n"), "{serve}");
    for var in [
        "FERRY_LISTEN",
        "FERRY_OPERATOR_USER",
        "FERRY_RETENTION",
        "FERRY_LOG",
    ] {
        assert!(
            serve.contains(&format!("\\fB{var}\\fR")),
            "{var} in {serve}"
        );
    }
    let run = read("ferry-run.1");
    assert!(
        run.contains(".SH EXAMPLES\n")
            && run.contains("\\fBferry run FLOW_ID \\-\\-dry\\-run \\-\\-verbose\\fR"),
        "{run}"
    );
    // a page about the flows names no server's variables
    assert!(!run.contains("FERRY_LISTEN"), "{run}");
    assert!(read("ferry-runs-show.1").contains(".SH \"EXIT STATUS\"\n"));
    // the hidden command has no page
    assert!(!dir.path().join("pages/ferry-list-flows.1").exists());
}

/// `ferry run <TAB>` completed nothing: bash now offers the ids of the flow directory (the
/// one given with --flows too) for the commands that take a flow id, and only there.
#[test]
fn bash_completes_flow_ids_of_the_flow_directory() {
    let dir = tempfile::tempdir().unwrap();
    let flow = |id: &str| {
        format!(
            "id: {id}\nname: n\nversion: \"1\"\ntrigger: {{ manual: true }}\nsteps:\n  - id: x\n    end: {{ outcome: succeeded }}\n"
        )
    };
    for (d, file, id) in [
        ("flows", "a.yaml", "ACME.orders"),
        ("flows/common", "b.yaml", "acme_child"),
        ("other", "c.yaml", "OTHER_FLOW"),
    ] {
        std::fs::create_dir_all(dir.path().join(d)).unwrap();
        std::fs::write(dir.path().join(d).join(file), flow(id)).unwrap();
    }
    std::fs::write(
        dir.path().join("flows/connections.yaml"),
        "connections: {}\n",
    )
    .unwrap();
    std::fs::create_dir_all(dir.path().join("flows/tests")).unwrap();
    std::fs::write(
        dir.path().join("flows/tests/a.test.yaml"),
        "flow: ACME.orders\ntests: []\n",
    )
    .unwrap();
    let o = ferry(dir.path(), &["completions", "bash"]);
    let script = dir.path().join("ferry.bash");
    std::fs::write(&script, &o.stdout).unwrap();
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_ferry")).parent().unwrap();
    let complete = |words: &[&str]| -> Vec<String> {
        let line = words.join(" ");
        let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
        let probe = format!(
            "source {}; complete -p ferry; COMP_WORDS=({}); COMP_CWORD={}; COMP_LINE='{line}'; \
             COMP_POINT={}; _ferry_flow_ids ferry '{}' '{}'; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            script.display(),
            quoted.join(" "),
            words.len() - 1,
            line.len(),
            words[words.len() - 1],
            words[words.len() - 2],
        );
        let c = Command::new("bash")
            .arg("-c")
            .arg(&probe)
            .env(
                "PATH",
                format!(
                    "{}:{}",
                    bin_dir.display(),
                    std::env::var("PATH").unwrap_or_default()
                ),
            )
            .env_remove("FERRY_FLOWS")
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(c.status.success(), "{}", String::from_utf8_lossy(&c.stderr));
        let out = String::from_utf8_lossy(&c.stdout).into_owned();
        let mut lines = out.lines();
        // the wrapper is what bash calls for ferry
        assert!(
            lines.next().unwrap().contains("-F _ferry_flow_ids"),
            "{out}"
        );
        let mut words: Vec<String> = lines
            .map(str::to_string)
            .filter(|w| !w.is_empty())
            .collect();
        words.sort();
        words
    };
    assert_eq!(
        complete(&["ferry", "run", ""]),
        ["ACME.orders", "acme_child"]
    );
    assert_eq!(complete(&["ferry", "run", "AC"]), ["ACME.orders"]);
    assert_eq!(
        complete(&["ferry", "graph", "--format", "dot", "acme"]),
        ["acme_child"]
    );
    assert_eq!(
        complete(&["ferry", "pause", "--flows", "other", ""]),
        ["OTHER_FLOW"]
    );
    // not a flow id: commands, a second argument, another command's argument
    assert_eq!(
        complete(&["ferry", "r"]),
        ["resubmit", "resume", "run", "runs"]
    );
    assert!(!complete(&["ferry", "run", "ACME.orders", ""]).contains(&"acme_child".to_string()));
    assert!(!complete(&["ferry", "runs", "show", ""]).contains(&"acme_child".to_string()));
    let o = ferry(dir.path(), &["list-flows"]);
    assert_eq!(stdout(&o), "ACME.orders\nacme_child\n");
}

/// Runs a command line as `ferry demo` printed it, with this build's `ferry` first on PATH.
fn printed(dir: &Path, line: &str) -> Output {
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_ferry")).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    Command::new("bash")
        .arg("-c")
        .arg(line)
        .env("PATH", path)
        .current_dir(dir)
        .output()
        .unwrap()
}

#[test]
fn demo_runs_from_any_directory_and_its_next_commands_work_as_printed() {
    let dir = tempfile::tempdir().unwrap();
    let o = ferry(dir.path(), &["demo"]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{}", stderr(&o));
    let demo = dir.path().canonicalize().unwrap().join("ferry-demo");
    // the embedded plan, flows, lookups and sample files were unpacked there
    assert!(demo.join("flows/connections.yaml").exists());
    assert!(demo.join("lookups").read_dir().unwrap().count() >= 4);
    assert_eq!(demo.join("outbox").read_dir().unwrap().count(), 6, "{out}");
    let next: Vec<&str> = out
        .split("\nnext:\n")
        .nth(1)
        .unwrap_or_else(|| panic!("no next commands:\n{out}"))
        .lines()
        .map(str::trim)
        .collect();
    assert_eq!(next.len(), 4, "{next:?}");
    let state = demo.join("state");
    assert_eq!(next[0], format!("ferry runs --data {}", state.display()));

    // ferry runs: the demo's six runs
    let runs = printed(dir.path(), next[0]);
    assert_eq!(runs.status.code(), Some(0), "{}", stderr(&runs));
    let table = stdout(&runs);
    assert_eq!(table.lines().count(), 7, "{table}");
    assert_eq!(table.matches(" succeeded ").count(), 6, "{table}");

    // ferry runs show <prefix>: the last run, named by a unique prefix of its id
    let prefix = next[1]
        .strip_prefix("ferry runs show ")
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .to_string();
    assert!(prefix.len() < 36, "{prefix}");
    let show = printed(dir.path(), next[1]);
    assert_eq!(show.status.code(), Some(0), "{}", stderr(&show));
    let detail = stdout(&show);
    let last_line = table.lines().nth(1).unwrap();
    let full_id = last_line.split(' ').next().unwrap();
    assert!(full_id.starts_with(&prefix));
    assert!(detail.starts_with(&format!("run {full_id}\n")), "{detail}");
    assert!(detail.contains("  outcome    succeeded\n"), "{detail}");

    // an ambiguous prefix lists the candidates
    let state_arg = state.display().to_string();
    let amb = ferry(
        dir.path(),
        &["runs", "show", &full_id[..4], "--data", &state_arg],
    );
    assert_eq!(amb.status.code(), Some(2));
    let err = stderr(&amb);
    assert!(
        err.contains(&format!("run id prefix '{}' is ambiguous", &full_id[..4])),
        "{err}"
    );
    for line in table.lines().skip(1) {
        let id = line.split(' ').next().unwrap();
        assert!(err.contains(&format!("\n  {id}")), "{id} not listed: {err}");
    }
    let unknown = ferry(dir.path(), &["runs", "show", "ffff", "--data", &state_arg]);
    assert_eq!(unknown.status.code(), Some(2));
    assert!(stderr(&unknown).contains("ffff"), "{}", stderr(&unknown));

    // ferry resubmit <prefix>: the object-store enrollment run again; its file was sent, so
    // the new run finds none
    let enroll = table
        .lines()
        .find(|l| l.contains(" OUTL-BA-DACS_OUAI_OS_ENROLL "))
        .unwrap();
    let enroll_id = enroll.split(' ').next().unwrap();
    let mut short = String::new();
    for len in 8..36 {
        let p = &enroll_id[..len];
        if table.lines().skip(1).filter(|l| l.starts_with(p)).count() == 1 {
            short = p.to_string();
            break;
        }
    }
    let flows = demo.join("flows").display().to_string();
    let conns = demo.join("connections.yaml").display().to_string();
    let re = ferry(
        dir.path(),
        &[
            "resubmit",
            &short,
            "--flows",
            &flows,
            "--connections",
            &conns,
            "--data",
            &state_arg,
        ],
    );
    assert_eq!(re.status.code(), Some(0), "{}{}", stdout(&re), stderr(&re));
    assert!(
        stdout(&re).starts_with(&format!("resubmit of run {enroll_id}\n")),
        "{}",
        stdout(&re)
    );
    assert!(stdout(&re).contains("outcome: no_files"), "{}", stdout(&re));

    // the stand-in line names the address the connections point at
    let conn_text = std::fs::read_to_string(&conns).unwrap();
    let standin = next[2]
        .strip_prefix("ferry stand-in --listen ")
        .unwrap()
        .split(' ')
        .next()
        .unwrap();
    assert!(
        conn_text.contains(&format!("http://{standin}")),
        "{conn_text}"
    );

    // ferry serve …: serves the demo's flows and runs (on a free port instead of 8080)
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_ferry")).parent().unwrap();
    let mut serve = Command::new("bash")
        .arg("-c")
        .arg(format!("exec {} --listen 127.0.0.1:0", next[3]))
        .env("PATH", format!("{}:/usr/bin:/bin", bin_dir.display()))
        .current_dir(dir.path())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(serve.stderr.take().unwrap()));
    let addr = loop {
        let line = lines.next().expect("serve ended before listening").unwrap();
        if let Some(rest) = line.strip_prefix("ferry serve listening on http://") {
            break rest.split(' ').next().unwrap().to_string();
        }
    };
    let body = http_get(&addr, "/api/v1/runs");
    serve.kill().unwrap();
    serve.wait().unwrap();
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["runs"].as_array().unwrap().len(), 7, "{body}");
    assert_eq!(v["runs"][0]["trigger"], "resubmit", "{body}");
}

/// A plain HTTP/1.0 GET; the body.
fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    assert!(
        text.starts_with("HTTP/1.0 200") || text.starts_with("HTTP/1.1 200"),
        "{text}"
    );
    text.split("\r\n\r\n").nth(1).unwrap().to_string()
}

/// A flow copying two files between local folders, with a loop and transfers.
fn copy_project(dir: &Path) {
    std::fs::create_dir_all(dir.join("flows")).unwrap();
    std::fs::create_dir_all(dir.join("lookups")).unwrap();
    std::fs::create_dir_all(dir.join("data/in")).unwrap();
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(dir.join("data/in/a.bin"), big).unwrap();
    std::fs::write(dir.join("data/in/b.bin"), b"hi").unwrap();
    std::fs::write(
        dir.join("flows/copy.yaml"),
        r#"
id: COPY
name: Copy files
version: "1"
trigger: { manual: true }
steps:
  - id: list
    list: { connection: box, location: "in", pattern: "*.bin" }
  - id: files
    for_each:
      items: steps.list.files
      as: file
      steps:
        - id: fetch
          fetch: { connection: box, location: "in", name: "{{ file.name }}" }
        - id: put
          invoke: { put: { connection: box, location: "out", name: "{{ file.name }}", file: "{{ steps.fetch.path }}" } }
"#,
    )
    .unwrap();
    std::fs::write(
        dir.join("flows/connections.yaml"),
        format!(
            "connections:\n  box: {{ kind: local, root: \"{}\" }}\n",
            dir.join("data").display()
        ),
    )
    .unwrap();
}

/// Runs `ferry ARGS` on a pseudo-terminal (util-linux `script`); everything it drew.
fn on_a_tty(dir: &Path, args: &str) -> String {
    let o = Command::new("script")
        .args([
            "-qec",
            &format!("{} {args}", env!("CARGO_BIN_EXE_ferry")),
            "/dev/null",
        ])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn run_shows_progress_on_a_terminal_only() {
    let dir = tempfile::tempdir().unwrap();
    copy_project(dir.path());
    // a terminal: the loop's bar (items done of total) is drawn, then cleared
    let tty = on_a_tty(dir.path(), "run COPY --data state");
    assert!(tty.contains("file ["), "{tty}");
    assert!(tty.contains("/2 ("), "{tty}");
    assert!(
        tty.contains("outcome: succeeded — 2 file(s) moved"),
        "{tty}"
    );
    assert_eq!(
        std::fs::read(dir.path().join("data/out/a.bin"))
            .unwrap()
            .len(),
        3_000_000
    );
    // --format json on a terminal: no bar
    let json = on_a_tty(dir.path(), "run COPY --data state --format json");
    assert!(!json.contains("file ["), "{json}");
    assert!(json.contains("\"outcome\": \"succeeded\""), "{json}");
    // not a terminal: stderr stays empty
    let o = ferry(dir.path(), &["run", "COPY", "--data", "state"]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    assert_eq!(stderr(&o), "");
}

#[test]
fn a_dry_run_says_what_it_would_move_and_counts_nothing_as_moved() {
    let dir = tempfile::tempdir().unwrap();
    copy_project(dir.path());
    let o = ferry(dir.path(), &["run", "COPY", "--dry-run", "--data", "state"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("  put     box:out/a.bin (3000000 bytes) [would]\n"),
        "{out}"
    );
    assert!(
        out.ends_with(
            "outcome: succeeded (dry run, nothing changed) — would move 2 file(s), make 0 rename(s), send 0 email(s); requests not sent\n"
        ),
        "{out}"
    );
    assert!(!dir.path().join("data/out").exists());
    // the history counts no file moved
    let runs = ferry(dir.path(), &["runs", "--data", "state", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&runs.stdout).unwrap();
    assert_eq!(v[0]["files"], 0, "{v}");
    assert_eq!(v[0]["dry_run"], true, "{v}");
}

#[test]
fn check_names_every_missing_environment_variable_of_a_connection() {
    let dir = tempfile::tempdir().unwrap();
    copy_project(dir.path());
    let conns = dir.path().join("flows/connections.yaml");
    let mut text = std::fs::read_to_string(&conns).unwrap();
    text.push_str(
        "  dacs: { kind: ftp, host: \"${OPERATOR_T_FTP_HOST}\", username: \"${OPERATOR_T_FTP_USER:-u}\", password_env: OPERATOR_T_FTP_PASSWORD }\n",
    );
    std::fs::write(&conns, text).unwrap();
    let o = ferry(dir.path(), &["check", "--format", "json"]);
    assert_eq!(o.status.code(), Some(3), "{}{}", stdout(&o), stderr(&o));
    let rows: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let dacs = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["connection"] == "dacs")
        .unwrap();
    assert_eq!(
        dacs["detail"],
        "environment variables not set: OPERATOR_T_FTP_HOST, OPERATOR_T_FTP_PASSWORD"
    );
}

/// Copies a directory tree.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

#[tokio::test]
async fn a_failure_ack_is_not_counted_as_a_record_sent() {
    let dir = tempfile::tempdir().unwrap();
    let plan = ferry::demo::unpack(dir.path()).unwrap();
    let demo = plan.parent().unwrap();
    copy_tree(&demo.join("data"), &dir.path().join("data"));
    let stand_in = ferry::standin::StandIn::default().spawn().await.unwrap();
    // DERMS takes the upload (HTTP 200) but acknowledges it with FAILURE
    stand_in.stand_in().set_forecast_ack("FAILURE");
    let conns = std::fs::read_to_string(demo.join("connections.yaml"))
        .unwrap()
        .replace("${DEMO_DIR}", &dir.path().display().to_string())
        .replace("${STANDIN_URL}", stand_in.base_url());
    std::fs::write(dir.path().join("connections.yaml"), conns).unwrap();
    let (project, diags) = ferry::compile::load(&ferry::compile::Inputs {
        paths: vec![dir.path().join("flows")],
        lookups: Some(dir.path().join("lookups")),
        connections: Some(dir.path().join("connections.yaml")),
    });
    assert!(diags.is_empty(), "{diags:?}");
    let engine = ferry::run::Engine::new(
        std::sync::Arc::new(project.unwrap()),
        ferry::run::RunOptions::default(),
    );
    let report = engine
        .run("OUTL-BA-OUAI_OS_LR_FORECAST", serde_json::Map::new())
        .await
        .unwrap();
    assert_eq!(
        stand_in.stand_in().forecasts().len(),
        1,
        "the upload reached DERMS"
    );
    assert_eq!(report.outcome, ferry::run::Outcome::Failed);
    assert_eq!(report.requests_ok(), 0);
    let text = ferry::cli::render_report(&report);
    assert!(
        text.contains(" -> 200 (refused: the answer failed `expect`)\n"),
        "{text}"
    );
    assert!(
        text.contains("— 0 file(s) moved, 0 record(s) sent,"),
        "{text}"
    );
    let records = ferry::history::record_outcomes(&report);
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].outcome, ferry::history::RecordStatus::Failed);
}

#[test]
fn a_verbose_dry_run_shows_request_and_email_bodies() {
    let dir = tempfile::tempdir().unwrap();
    let plan = ferry::demo::unpack(dir.path()).unwrap();
    let demo = plan.parent().unwrap();
    copy_tree(&demo.join("data"), &dir.path().join("data"));
    let conns = std::fs::read_to_string(demo.join("connections.yaml"))
        .unwrap()
        .replace("${DEMO_DIR}", &dir.path().display().to_string())
        .replace("${STANDIN_URL}", "http://127.0.0.1:9");
    std::fs::write(dir.path().join("connections.yaml"), conns).unwrap();
    let csv_dir = dir.path().join("data/ouai-os/ouainamespace/Ouai_LRFolder");
    let csv_name = std::fs::read_dir(&csv_dir)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .file_name();
    let csv = std::fs::read_to_string(csv_dir.join(&csv_name)).unwrap();
    let args = [
        "run",
        "OUTL-BA-OUAI_OS_LR_FORECAST",
        "--dry-run",
        "--connections",
        "connections.yaml",
        "--data",
        "state",
    ];
    let quiet = ferry(dir.path(), &args);
    assert_eq!(
        quiet.status.code(),
        Some(0),
        "{}{}",
        stdout(&quiet),
        stderr(&quiet)
    );
    assert!(!stdout(&quiet).contains("body of"), "{}", stdout(&quiet));
    let mut verbose_args = args.to_vec();
    verbose_args.push("--verbose");
    let o = ferry(dir.path(), &verbose_args);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{}", stderr(&o));
    assert!(
        out.contains(
            "  body of request POST http://127.0.0.1:9/nms-drms/rest/v1/loadReductionForecasts:\n"
        ),
        "{out}"
    );
    // every line of the forecast file is shown as the body would carry it
    for line in csv.lines() {
        assert!(out.contains(&format!("\n    | {line}")), "{line}: {out}");
    }
    assert!(out.contains("  body of email \""), "{out}");
    // nothing was sent or moved
    assert!(csv_dir.join(&csv_name).exists());
    assert!(!dir.path().join("outbox").exists());
}
