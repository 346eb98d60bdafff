//! Templates never crash ferry. A template or expression some thousands of levels deep
//! overflowed the stack of the thread compiling it, which aborted the process (exit 134):
//! `ferry validate`, `ferry run`, and `ferry serve` on a hot reload, and again on its restart.
//! Now each is a `template-limit` diagnostic at the token that went over the limit: through
//! the compiler (`load`), the real `ferry validate` and `ferry run`, and a hot reload of the
//! real `ferry serve`, which refuses the change and stays up.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use ferry::compile::{Inputs, load};
use serde_json::{Value, json};
use support::Workspace;

const OP: (&str, &str) = ("op", "op-secret");

/// Each deep shape, 5,000 deep: the expression, its depth as the limit counts it, and the
/// byte offset in it of the token that went over 64 (see engine/template/limits.rs).
fn deep_shapes() -> Vec<(&'static str, String, usize, usize)> {
    let n = 5000;
    let r = |s: &str, k: usize| s.repeat(k);
    vec![
        ("sum", format!("1{}", r("+1", n)), n + 1, 1 + 2 * 63),
        (
            "concat",
            format!("'a'{}", r(" ~ 'a'", n)),
            n + 1,
            4 + 6 * 63,
        ),
        (
            "attributes",
            format!("run{}", r(".a", n)),
            n + 1,
            3 + 2 * 63,
        ),
        (
            "subscripts",
            format!("run{}", r("[0]", n)),
            n + 2,
            3 + 3 * 62,
        ),
        (
            "filters",
            format!("x{}", r(" | upper", n)),
            n + 1,
            2 + 8 * 63,
        ),
        ("calls", format!("range{}", r("()", n)), n + 2, 5 + 2 * 62),
        (
            "tests",
            format!("1{}", r(" is number", n)),
            n + 1,
            2 + 10 * 63,
        ),
        ("parens", format!("{}1{}", r("(", n), r(")", n)), n + 1, 63),
        ("lists", format!("{}1{}", r("[", n), r("]", n)), n + 1, 63),
        (
            "maps",
            format!("{}1{}", r("{'a': ", n), r("}", n)),
            n + 1,
            6 * 63,
        ),
        ("not", format!("{}true", r("not ", n)), n + 1, 4 * 63),
        ("minus", format!("{}1", r("- ", n)), n + 1, 2 * 63),
        (
            "negations",
            format!("{}1{}", r("-(", n), r(")", n)),
            2 * n + 1,
            63,
        ),
        (
            "ifelse",
            format!("1{}", r(" if 1 else 1", n)),
            2 * n + 1,
            1 + 12 * 31 + 6,
        ),
    ]
}

const HEAD: &str = "id: f\nname: F\nversion: '1'\ntrigger: { manual: true }\nsteps:\n";

/// The diagnostics of a project holding `flow` as flows/f.yaml, one line each, paths relative.
fn diagnostics_of(flow: &str) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let flows = dir.path().join("flows");
    std::fs::create_dir_all(&flows).unwrap();
    std::fs::write(flows.join("f.yaml"), flow).unwrap();
    std::fs::write(flows.join("connections.yaml"), "connections: {}\n").unwrap();
    let (project, diags) = load(&Inputs {
        paths: vec![flows],
        ..Default::default()
    });
    assert!(project.is_none(), "the project is refused");
    let prefix = format!("{}/", dir.path().display());
    diags
        .iter()
        .map(|d| d.one_line().replace(&prefix, ""))
        .collect()
}

const DEEP_HINT: &str =
    "(split it: name inner parts with `{% set %}`, or compute them in a `transform` step)";

#[test]
fn a_deep_template_is_a_diagnostic_at_the_token_over_the_limit() {
    for (shape, expr, depth, at) in deep_shapes() {
        // `    transform: { value: "` is 25 columns: the value's first byte is column 26
        let flow = format!("{HEAD}  - id: a\n    transform: {{ value: \"{{{{ {expr} }}}}\" }}\n");
        assert_eq!(
            diagnostics_of(&flow),
            [format!(
                "flows/f.yaml:7:{}: steps[0].transform.value: template expression nested {depth} levels deep; the limit is 64 {DEEP_HINT}",
                26 + 3 + at
            )],
            "{shape}"
        );
    }
}

#[test]
fn a_deep_expression_is_a_diagnostic_at_the_token_over_the_limit() {
    for (shape, expr, depth, at) in deep_shapes() {
        // `    when: "` is 11 columns
        let flow =
            format!("{HEAD}  - id: a\n    when: \"{expr}\"\n    end: {{ outcome: succeeded }}\n");
        assert_eq!(
            diagnostics_of(&flow),
            [format!(
                "flows/f.yaml:7:{}: steps[0].when: template expression nested {depth} levels deep; the limit is 64 {DEEP_HINT}",
                12 + at
            )],
            "{shape}"
        );
    }
}

#[test]
fn deep_blocks_in_a_block_scalar_are_placed_on_their_line() {
    // 2,000 nested `if`s, one a line, in a `|` scalar: the 65th is over
    let ifs: String = (0..2000).map(|_| "        {% if 1 %}\n").collect();
    let ends: String = (0..2000).map(|_| "        {% endif %}\n").collect();
    let flow = format!("{HEAD}  - id: a\n    transform:\n      value: |\n{ifs}{ends}");
    assert_eq!(
        diagnostics_of(&flow),
        [format!(
            "flows/f.yaml:{}:9: steps[0].transform.value: template expression nested 2001 levels deep; the limit is 64 {DEEP_HINT}",
            9 + 64
        )]
    );
}

#[test]
fn a_template_longer_than_the_limit_is_a_diagnostic_at_its_start() {
    let text = "x".repeat(64 * 1024 + 1);
    let flow = format!("{HEAD}  - id: a\n    transform: {{ value: \"{{{{ a }}}}{text}\" }}\n");
    assert_eq!(
        diagnostics_of(&flow),
        [
            "flows/f.yaml:7:26: steps[0].transform.value: template is 65544 bytes long; the limit is 65536 bytes (split it into smaller templates (a `transform` step can build the parts))"
        ]
    );
}

#[test]
fn templates_at_the_limit_still_compile() {
    // 64 levels of each kind, and the deepest mixes an author might write
    let sum = format!("1{}", "+1".repeat(63));
    let parens = format!("{}1{}", "(".repeat(63), ")".repeat(63));
    let flow = format!(
        "{HEAD}  - id: a\n    when: \"{sum} > 0\"\n    transform: {{ value: \"{{{{ {parens} }}}}\" }}\n  - id: b\n    transform: {{ value: \"{{{{ (steps.a | string | upper ~ run.id) if run.id is defined else 'x' }}}}\" }}\n"
    );
    // `{sum} > 0` is 65 deep: the comparison is one operator more
    assert_eq!(
        diagnostics_of(&flow),
        [format!(
            "flows/f.yaml:7:{}: steps[0].when: template expression nested 65 levels deep; the limit is 64 {DEEP_HINT}",
            12 + sum.len() + 1
        )]
    );
    let flow = flow.replace(" > 0", "");
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("flows")).unwrap();
    std::fs::write(dir.path().join("flows/f.yaml"), &flow).unwrap();
    std::fs::write(
        dir.path().join("flows/connections.yaml"),
        "connections: {}\n",
    )
    .unwrap();
    let (project, diags) = load(&Inputs {
        paths: vec![dir.path().join("flows")],
        ..Default::default()
    });
    assert!(diags.is_empty(), "{diags:?}");
    assert!(project.is_some());
}

/// A lookup-only location is rendered by the compiler (for `ferry check`): a loop in it that
/// nested a value 50,000 deep aborted `ferry validate` (134) when the value was dropped, and
/// nested `range(100000)` loops never ended. Both now stop on the compiler's fuel; the flow
/// loads, on a thread with a tokio worker's 2 MiB stack, within seconds.
#[test]
fn a_loop_in_a_lookup_only_location_neither_aborts_nor_hangs_the_compiler() {
    let nest = "{% set ns = namespace(v=1) %}{% for i in range(50000) %}{% set ns.v = [ns.v] %}{% endfor %}{{ ns.v | length }}";
    let spin = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}x";
    let flow = format!(
        "{HEAD}  - id: a\n    list: {{ connection: files, location: \"{nest}\" }}\n  - id: b\n    list: {{ connection: files, location: \"{spin}\" }}\n"
    );
    let dir = tempfile::tempdir().unwrap();
    let flows = dir.path().join("flows");
    std::fs::create_dir_all(&flows).unwrap();
    std::fs::write(flows.join("f.yaml"), &flow).unwrap();
    std::fs::write(
        flows.join("connections.yaml"),
        format!(
            "connections:\n  files: {{ kind: local, root: {} }}\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let started = Instant::now();
    let (project, diags) = std::thread::Builder::new()
        .stack_size(2 * 1024 * 1024)
        .spawn(move || {
            load(&Inputs {
                paths: vec![flows],
                ..Default::default()
            })
        })
        .unwrap()
        .join()
        .unwrap();
    assert!(diags.is_empty(), "{diags:?}");
    assert!(project.is_some());
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn the_shipped_flows_are_far_below_the_depth_limit() {
    // each shipped flow file measured whole as one template (deeper than any of its
    // templates): the deepest is a few levels
    let mut deepest = 0;
    let mut files = Vec::new();
    yaml_files(&support::repo().join("flows"), &mut files);
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        deepest = deepest.max(ferry::template::limits::measure(&text, false, usize::MAX).0);
    }
    assert!(
        (2..=10).contains(&deepest),
        "deepest shipped template: {deepest}"
    );
}

fn yaml_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            yaml_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "yaml") {
            out.push(p);
        }
    }
}

/// A flow 5,000 levels deep in a `when`, as the attacker's 10 KB file.
fn deep_flow() -> String {
    format!(
        "id: deep\nname: Deep\nversion: '1'\ntrigger: {{ manual: true }}\nsteps:\n  - id: a\n    when: \"1{}\"\n    end: {{ outcome: succeeded }}\n",
        "+1".repeat(5000)
    )
}

const DEEP_AT: &str = "flows/deep.yaml:7:139";
const DEEP_MESSAGE: &str = "template expression nested 5001 levels deep; the limit is 64";

fn ferry(dir: &Path, args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(args)
        .current_dir(dir)
        .env("FERRY_DATA", dir.join("state"))
        .env_remove("FERRY_LOG")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[tokio::test]
async fn ferry_validate_and_run_report_a_deep_expression_and_exit_1() {
    let ws = Workspace::new().await;
    std::fs::write(ws.flows_dir().join("deep.yaml"), deep_flow()).unwrap();
    let connections = ws.connections_path().display().to_string();
    let o = ferry(
        ws.path(),
        &["validate", "flows/deep.yaml", "--connections", &connections],
    );
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        o.status.code(),
        Some(1),
        "{stdout}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        stdout.starts_with(&format!(
            "error[template-limit]: {DEEP_MESSAGE}\n  --> {DEEP_AT}\n"
        )),
        "{}",
        &stdout[..stdout.len().min(300)]
    );
    assert!(stdout.contains("  = at: steps[0].when\n"));

    let o = ferry(
        ws.path(),
        &[
            "run",
            "deep",
            "--flows",
            "flows",
            "--connections",
            &connections,
        ],
    );
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(o.status.code(), Some(1), "{}", &out[..out.len().min(300)]);
    assert!(
        out.contains(DEEP_AT) && out.contains(DEEP_MESSAGE),
        "{}",
        &out[..out.len().min(300)]
    );
}

/// `ferry serve` over `ws`, on a free loopback port, with the operator's credentials; the
/// child and its address once it listens.
async fn serve(ws: &Workspace) -> (tokio::process::Child, String, std::path::PathBuf) {
    let log = ws.path().join("serve.log");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
        .arg("serve")
        .args(["--listen", "127.0.0.1:0", "--no-schedules"])
        .args(ws.project_args())
        .env("FERRY_OPERATOR_USER", OP.0)
        .env("FERRY_OPERATOR_PASSWORD", OP.1)
        .env("FERRY_DERMS_TRIGGER_USER", "derms")
        .env("FERRY_DERMS_TRIGGER_PASSWORD", "derms-secret")
        .env("FERRY_LOG", "ferry=info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(rest) = text.split("listening on http://").nth(1) {
            let addr = rest.split_whitespace().next().unwrap().to_string();
            return (child, addr, log);
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("ferry serve exited ({status}) before listening:\n{text}");
        }
        assert!(
            Instant::now() < deadline,
            "ferry serve did not listen:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn ferry_serve_refuses_a_deep_flow_on_reload_and_stays_up() {
    let ws = Workspace::new().await;
    let (mut child, addr, _log) = serve(&ws).await;
    let http = reqwest::Client::new();
    let status = || async {
        let r = http
            .get(format!("http://{addr}/api/v1/status"))
            .basic_auth(OP.0, Some(OP.1))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.json::<Value>().await.unwrap()
    };
    assert_eq!(status().await["generation"], json!(1));

    // a shipped flow file (one no other flow invokes) replaced by a 5,000-deep expression
    let target = ws.flows_dir().join("load_forecast.yaml");
    assert!(target.exists());
    std::fs::write(&target, deep_flow()).unwrap();
    let mut failure = Value::Null;
    for _ in 0..200 {
        failure = status().await["reload_failure"].clone();
        if !failure.is_null() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let lines = failure["diagnostics"].as_array().expect("a reload failure");
    assert_eq!(lines.len(), 1, "{failure:#}");
    let first = lines[0].as_str().unwrap();
    let at = format!("{}:7:139: steps[0].when: {DEEP_MESSAGE}", target.display());
    assert!(first.starts_with(&at), "{first}");

    // still up: the old flows answer, and so do the probes
    assert!(child.try_wait().unwrap().is_none(), "ferry serve exited");
    assert_eq!(status().await["generation"], json!(1));
    let health = http
        .get(format!("http://{addr}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);

    // and a restart over the same files exits 1 with the diagnostic (was 134, in a loop)
    child.kill().await.unwrap();
    let o = tokio::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
        .arg("serve")
        .args(["--listen", "127.0.0.1:0", "--no-schedules"])
        .args(ws.project_args())
        .env("FERRY_OPERATOR_USER", OP.0)
        .env("FERRY_OPERATOR_PASSWORD", OP.1)
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(o.status.code(), Some(1), "{}", &out[..out.len().min(500)]);
    assert!(out.contains(DEEP_MESSAGE), "{}", &out[..out.len().min(500)]);
}

/// A flow whose second step builds a value 90,000 levels deep while the run renders its
/// prefix (the template reads a step's output, so only the run evaluates it). Rendering,
/// serialising or dropping that value overflowed the stack: `ferry run`, `ferry test` and
/// `ferry serve` aborted (134).
const DEEP_VALUE_FLOW: &str = r#"id: deep_value
name: Deep value
version: '1'
trigger: { manual: true }
steps:
  - id: list
    list: { connection: dacs_os, location: in }
  - id: deep
    list:
      connection: dacs_os
      location: in
      prefix: "{% set ns = namespace(v=[]) %}{% for i in range(90000 + steps.list.count) %}{% set ns.v = [ns.v] %}{% endfor %}{{ ns.v }}"
"#;

const DEEP_VALUE: &str = "template value nested more than 256 levels deep; the limit is 256";

#[tokio::test]
async fn ferry_run_reports_a_value_nested_without_bound_as_a_template_error() {
    let ws = Workspace::new().await;
    std::fs::write(ws.flows_dir().join("deep_value.yaml"), DEEP_VALUE_FLOW).unwrap();
    std::fs::create_dir_all(ws.path().join("data/dacs-os/in")).unwrap();
    let connections = ws.connections_path().display().to_string();
    let o = ferry(
        ws.path(),
        &["validate", "flows", "--connections", &connections],
    );
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    let o = ferry(
        ws.path(),
        &[
            "run",
            "deep_value",
            "--flows",
            "flows",
            "--connections",
            &connections,
        ],
    );
    let stdout = String::from_utf8_lossy(&o.stdout);
    // a failed run (3), not an abort (134)
    assert_eq!(
        o.status.code(),
        Some(3),
        "{stdout}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        // placed where the author wrote the value that grew too deep (the `{% set %}`'s
        // expression), although ferry compiled a rewritten `{% set %}`
        stdout.contains(&format!(
            "error: step 'deep': flows/deep_value.yaml:12:105: `[ns.v]`: invalid operation: {DEEP_VALUE}\n"
        )),
        "{stdout}"
    );
}

#[test]
fn ferry_test_reports_a_value_nested_without_bound_as_the_run_s_error() {
    let dir = tempfile::tempdir().unwrap();
    support::copy_tree(&support::repo().join("flows"), &dir.path().join("flows"));
    support::copy_tree(
        &support::repo().join("lookups"),
        &dir.path().join("lookups"),
    );
    std::fs::write(dir.path().join("flows/deep_value.yaml"), DEEP_VALUE_FLOW).unwrap();
    std::fs::write(
        dir.path().join("flows/tests/deep_value.test.yaml"),
        format!(
            "flow: deep_value\ntests:\n  - name: the deep value fails its step\n    files:\n      dacs_os:\n        in:\n          a.csv: {{ text: \"a\\n\" }}\n    expect:\n      outcome: failed\n      error: {{ step: deep, message_contains: \"{DEEP_VALUE}\" }}\n"
        ),
    )
    .unwrap();
    let o = ferry(dir.path(), &["test", "flows/tests/deep_value.test.yaml"]);
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(
        out.contains("ok   flows/tests/deep_value.test.yaml: the deep value fails its step\n"),
        "{out}"
    );
}

#[tokio::test]
async fn ferry_serve_fails_the_run_of_a_value_nested_without_bound_and_stays_up() {
    let ws = Workspace::new().await;
    std::fs::write(ws.flows_dir().join("deep_value.yaml"), DEEP_VALUE_FLOW).unwrap();
    std::fs::create_dir_all(ws.path().join("data/dacs-os/in")).unwrap();
    let (mut child, addr, _log) = serve(&ws).await;
    let http = reqwest::Client::new();
    let r = http
        .post(format!("http://{addr}/api/v1/flows/deep_value/runs"))
        .basic_auth(OP.0, Some(OP.1))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let id = r.json::<Value>().await.unwrap()["run_id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut run = Value::Null;
    for _ in 0..400 {
        run = http
            .get(format!("http://{addr}/api/v1/runs/{id}"))
            .basic_auth(OP.0, Some(OP.1))
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap();
        if run["outcome"] != json!("running") {
            break;
        }
        assert!(child.try_wait().unwrap().is_none(), "ferry serve exited");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(run["outcome"], json!("failed"), "{run:#}");
    assert!(run.to_string().contains(DEEP_VALUE), "{run:#}");
    // still up
    assert!(child.try_wait().unwrap().is_none(), "ferry serve exited");
    let health = http
        .get(format!("http://{addr}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
}
