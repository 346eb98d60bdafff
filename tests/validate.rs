//! `ferry validate`: one test per kind of diagnostic, each asserting the exact
//! `file:line:column: path: message (hint)` the user sees.

#![allow(clippy::unwrap_used)] // tests unwrap: a panic is the failure report

use std::path::Path;

use ferry::compile::{Inputs, check, load};

const CONNECTIONS: &str = "connections:
  files: { kind: local, root: /tmp/x }
  api: { kind: http, base_url: http://127.0.0.1:1 }
  mail: { kind: outbox, dir: /tmp/x/outbox }
";

const LOOKUP: &str = "name: Cfg
columns: [key, value]
rows:
  - [sent.prefix, Sent-]
  - [target.pref, os]
  - [in.dir, /in]
";

const CHILD: &str = "id: child
name: Child
version: '1'
params:
  file: { description: a path }
  note: { description: optional, required: false }
steps:
  - id: put
    invoke:
      put: { connection: files, location: out, name: x, file: '{{ params.file }}' }
";

/// Writes a project with `flow` as flows/f.yaml and returns the diagnostics, one line each,
/// with the temp dir stripped from paths.
fn diagnostics_of(flow: &str) -> Vec<String> {
    diagnostics_with(flow, CONNECTIONS, LOOKUP)
}

fn diagnostics_with(flow: &str, connections: &str, lookup: &str) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("flows")).unwrap();
    std::fs::create_dir_all(root.join("lookups")).unwrap();
    std::fs::write(root.join("flows/connections.yaml"), connections).unwrap();
    std::fs::write(root.join("flows/child.yaml"), CHILD).unwrap();
    std::fs::write(root.join("flows/f.yaml"), flow).unwrap();
    std::fs::write(root.join("lookups/cfg.yaml"), lookup).unwrap();
    let inputs = Inputs {
        paths: vec![root.join("flows")],
        ..Default::default()
    };
    let (project, diags) = load(&inputs);
    assert_eq!(
        project.is_some(),
        diags.is_empty(),
        "a project exists exactly when there is no diagnostic"
    );
    let prefix = format!("{}/", root.display());
    let lines: Vec<String> = diags
        .iter()
        .map(|d| d.one_line().replace(&prefix, ""))
        .collect();
    // `ferry validate` compiles without keeping the plans (no expression compiled for
    // evaluation, no place noted): it says exactly what loading to run says
    let (checked, check_diags) = check(&inputs);
    let check_lines: Vec<String> = check_diags
        .iter()
        .map(|d| d.one_line().replace(&prefix, ""))
        .collect();
    assert_eq!(check_lines, lines, "validate and run disagree");
    assert_eq!(checked.is_some(), project.is_some());
    lines
}

fn flow(steps: &str) -> String {
    format!("id: f\nname: F\nversion: '1'\nlookups:\n  config: Cfg\nsteps:\n{steps}")
}

#[test]
fn a_valid_flow_has_no_diagnostics() {
    let f = flow(
        "  - id: list
    list: { connection: files, location: \"{{ config('in.dir') }}\" }
  - id: each
    for_each:
      items: steps.list.files
      as: file
      steps:
        - id: send
          invoke: { flow: child, with: { file: '{{ file.name }}' } }
",
    );
    assert_eq!(diagnostics_of(&f), Vec::<String>::new());
}

#[test]
fn yaml_syntax_error_has_position() {
    let d = diagnostics_of("id: f\nname: [unclosed\nversion: '1'\n");
    assert_eq!(d.len(), 1, "{d:?}");
    // the mistake is the `[` never closed on line 2, not line 3 where the parser stopped
    assert_eq!(
        d[0],
        "flows/f.yaml:2:7: invalid YAML: this `[` is not closed (close it with `]` on the same line; the parser stopped at line 3: illegal placement of ':' indicator)"
    );
}

#[test]
fn unknown_field_points_at_the_key_with_a_suggestion() {
    let f = flow("  - id: a\n    list: { connection: files, location: x, prefx: y }\n");
    assert_eq!(
        diagnostics_of(&f),
        ["flows/f.yaml:8:45: steps[0].list.prefx: unknown field 'prefx' (did you mean 'prefix'?)"]
    );
}

#[test]
fn missing_field_points_at_its_parent() {
    let f = flow("  - id: a\n    list: { location: x }\n");
    assert_eq!(
        diagnostics_of(&f),
        ["flows/f.yaml:8:5: steps[0].list: missing field 'connection'"]
    );
}

#[test]
fn wrong_type_is_reported_where_it_stands() {
    let f = flow(
        "  - id: a\n    invoke:\n      request: { connection: api, path: /x, tolerate: [four] }\n",
    );
    let d = diagnostics_of(&f);
    assert_eq!(
        d,
        [
            "flows/f.yaml:9:56: steps[0].invoke.request.tolerate[0]: \"four\" is not of type \"integer\""
        ]
    );
}

#[test]
fn duplicate_step_ids() {
    let f = flow(
        "  - id: a\n    end: { outcome: succeeded }\n  - id: a\n    end: { outcome: succeeded }\n",
    );
    assert_eq!(
        diagnostics_of(&f),
        ["flows/f.yaml:9:9: steps[1].id: step id 'a' is already used (line 7)"]
    );
}

#[test]
fn unknown_step_in_a_template_with_a_suggestion() {
    let f = flow(
        "  - id: listing\n    list: { connection: files, location: x }\n  - id: b\n    when: steps.listng.count > 0\n    end: { outcome: no_files }\n",
    );
    assert_eq!(
        diagnostics_of(&f),
        ["flows/f.yaml:10:17: steps[1].when: unknown step 'listng' (did you mean 'listing'?)"]
    );
}

#[test]
fn unknown_step_in_needs() {
    let f = flow("  - id: a\n    needs: [zzz]\n    end: { outcome: succeeded }\n");
    assert_eq!(
        diagnostics_of(&f),
        ["flows/f.yaml:8:13: steps[0].needs[0]: unknown step 'zzz'"]
    );
}

#[test]
fn dependency_cycle() {
    let f = flow(
        "  - id: a\n    needs: [b]\n    end: { outcome: succeeded }\n  - id: b\n    when: steps.a is defined\n    end: { outcome: succeeded }\n",
    );
    assert_eq!(
        diagnostics_of(&f),
        [
            "flows/f.yaml:7:9: steps[0].id: steps a → b depend on each other in a cycle (a step can only use the outputs of steps that run before it)"
        ]
    );
}

#[test]
fn steps_run_in_dependency_order_not_only_document_order() {
    // `b` reads `a`'s output although it comes first in the file: compile orders a before b.
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("flows")).unwrap();
    std::fs::create_dir_all(root.join("lookups")).unwrap();
    std::fs::write(root.join("flows/connections.yaml"), CONNECTIONS).unwrap();
    std::fs::write(root.join("lookups/cfg.yaml"), LOOKUP).unwrap();
    std::fs::write(
        root.join("flows/f.yaml"),
        flow("  - id: b\n    transform: { value: '{{ steps.a }}' }\n  - id: a\n    transform: { value: x }\n"),
    )
    .unwrap();
    let (project, diags) = load(&Inputs {
        paths: vec![root.join("flows")],
        ..Default::default()
    });
    assert!(diags.is_empty(), "{diags:?}");
    let project = project.unwrap();
    let order: Vec<&str> = project.flows["f"]
        .steps
        .steps
        .iter()
        .map(|s| s.id.as_str())
        .collect();
    assert_eq!(order, ["a", "b"]);
}

#[test]
fn a_step_must_do_exactly_one_thing() {
    let f = flow(
        "  - id: a\n  - id: b\n    end: { outcome: succeeded }\n    list: { connection: files, location: x }\n",
    );
    assert_eq!(
        diagnostics_of(&f),
        [
            "flows/f.yaml:7:9: steps[0].id: step 'a' does nothing (add one of: list, fetch, transform, invoke, rename, notify, for_each, route, end)",
            "flows/f.yaml:9:5: steps[1].end: step 'b' has several kinds (list, end); a step does one thing",
        ]
    );
}

#[test]
fn template_that_does_not_compile() {
    let f = flow("  - id: a\n    list: { connection: files, location: '{{ config(' }\n");
    let d = diagnostics_of(&f);
    assert_eq!(d.len(), 1, "{d:?}");
    assert!(
        d[0].starts_with(
            "flows/f.yaml:8:42: steps[0].list.location: template does not compile: syntax error"
        ),
        "{d:?}"
    );
}

#[test]
fn unknown_variable_with_a_suggestion() {
    let f = flow("  - id: a\n    list: { connection: files, location: '{{ rnu.id }}' }\n");
    assert_eq!(
        diagnostics_of(&f),
        ["flows/f.yaml:8:46: steps[0].list.location: unknown variable 'rnu' (did you mean 'run'?)"]
    );
}

#[test]
fn loop_variables_are_known_inside_the_loop_only() {
    let f = flow(
        "  - id: l\n    for_each:\n      items: '[1, 2]'\n      as: file\n      steps:\n        - id: t\n          transform: { value: '{{ file }}' }\n  - id: after\n    transform: { value: '{{ file }}' }\n",
    );
    let d = diagnostics_of(&f);
    assert_eq!(d.len(), 1, "{d:?}");
    assert!(
        d[0].starts_with("flows/f.yaml:15:29: steps[1].transform.value: unknown variable 'file'"),
        "{d:?}"
    );
}

#[test]
fn unknown_function_with_a_suggestion() {
    let f =
        flow("  - id: a\n    list: { connection: files, location: \"{{ confg('in.dir') }}\" }\n");
    assert_eq!(
        diagnostics_of(&f),
        [
            "flows/f.yaml:8:46: steps[0].list.location: unknown function 'confg' (did you mean 'config'?)"
        ]
    );
}

#[test]
fn unknown_lookup_table() {
    let f = "id: f\nname: F\nversion: '1'\nlookups:\n  config: Cfgg\nsteps:\n  - id: a\n    end: { outcome: succeeded }\n";
    assert_eq!(
        diagnostics_of(f),
        ["flows/f.yaml:5:11: lookups.config: unknown lookup 'Cfgg' (did you mean 'Cfg'?)"]
    );
}

#[test]
fn unknown_lookup_key_in_a_template_points_at_the_key() {
    let f = flow(
        "  - id: a\n    rename: { connection: files, location: x, from: a, to: \"{{ config('sent.prefx') }}a\" }\n",
    );
    assert_eq!(
        diagnostics_of(&f),
        [
            "flows/f.yaml:8:72: steps[0].rename.to: unknown lookup key 'sent.prefx' in Cfg (did you mean 'sent.prefix'?)"
        ]
    );
}

#[test]
fn unknown_lookup_key_in_a_block_scalar() {
    let f = flow(
        "  - id: a\n    notify:\n      connection: mail\n      from: a@b.c\n      to: a@b.c\n      subject: s\n      body: |\n        line one\n        value {{ config('nope') }}\n",
    );
    assert_eq!(
        diagnostics_of(&f),
        ["flows/f.yaml:15:26: steps[0].notify.body: unknown lookup key 'nope' in Cfg"]
    );
}

#[test]
fn unknown_lookup_key_through_the_generic_lookup_function() {
    let f = flow("  - id: a\n    transform: { value: \"{{ lookup('Cfg', 'in.dri') }}\" }\n");
    assert_eq!(
        diagnostics_of(&f),
        [
            "flows/f.yaml:8:44: steps[0].transform.value: unknown lookup key 'in.dri' in Cfg (did you mean 'in.dir'?)"
        ]
    );
}

#[test]
fn unknown_connection_with_a_suggestion() {
    let f = flow("  - id: a\n    list: { connection: fils, location: x }\n");
    assert_eq!(
        diagnostics_of(&f),
        [
            "flows/f.yaml:8:25: steps[0].list.connection: unknown connection 'fils' (did you mean 'files'?)"
        ]
    );
}

#[test]
fn connection_of_the_wrong_kind() {
    let f = flow("  - id: a\n    list: { connection: api, location: x }\n");
    assert_eq!(
        diagnostics_of(&f),
        [
            "flows/f.yaml:8:25: steps[0].list.connection: connection 'api' is of kind http, this step needs a file (list/fetch/put/rename) connection"
        ]
    );
}

#[test]
fn unknown_child_flow() {
    let f = flow("  - id: a\n    invoke: { flow: chld, with: { file: x } }\n");
    assert_eq!(
        diagnostics_of(&f),
        ["flows/f.yaml:8:21: steps[0].invoke.flow: unknown flow 'chld' (did you mean 'child'?)"]
    );
}

#[test]
fn child_flow_parameters_are_checked() {
    let f = flow("  - id: a\n    invoke: { flow: child, with: { fil: x } }\n");
    assert_eq!(
        diagnostics_of(&f),
        [
            "flows/f.yaml:8:36: steps[0].invoke.with.fil: flow 'child' has no parameter 'fil' (did you mean 'file'?)",
            "flows/f.yaml:8:21: steps[0].invoke.flow: flow 'child' needs parameter 'file'",
        ]
    );
}

#[test]
fn route_value_that_no_case_handles() {
    let lookup = LOOKUP.replace("[target.pref, os]", "[target.pref, sftp]");
    let f = flow(
        "  - id: r\n    route:\n      by: config('target.pref')\n      cases:\n        os: [{ id: a, end: { outcome: succeeded } }]\n        ftp: [{ id: b, end: { outcome: succeeded } }]\n",
    );
    assert_eq!(
        diagnostics_with(&f, CONNECTIONS, &lookup),
        [
            "flows/f.yaml:9:11: steps[0].route.by: `config('target.pref')` is 'sftp', which no case handles (expected one of: ftp, os; the value is set at lookups/cfg.yaml:5:6)"
        ]
    );
}

#[test]
fn lookup_rows_must_match_the_columns_and_keys_be_unique() {
    let lookup = format!("{LOOKUP}  - [in.dir, /again]\n  - [short]\n");
    let f = flow("  - id: a\n    end: { outcome: succeeded }\n");
    assert_eq!(
        diagnostics_with(&f, CONNECTIONS, &lookup),
        [
            "lookups/cfg.yaml:7:6: rows[3][0]: key 'in.dir' appears twice",
            "lookups/cfg.yaml:8:5: rows[4]: row has 1 values, the table has 2 columns (key, value)",
        ]
    );
}

#[test]
fn unknown_connection_kind() {
    let conns = format!("{CONNECTIONS}  ftp2: {{ kind: ftpx, host: h }}\n");
    let f = flow("  - id: a\n    end: { outcome: succeeded }\n");
    let d = diagnostics_with(&f, &conns, LOOKUP);
    assert_eq!(d.len(), 1, "{d:?}");
    assert!(d[0].starts_with("flows/connections.yaml:5:17: connections.ftp2.kind: unknown kind \"ftpx\" (expected one of: "), "{d:?}");
}

#[test]
fn duplicate_flow_ids() {
    let f = CHILD.to_string();
    let d = diagnostics_of(&f);
    assert_eq!(d.len(), 1, "{d:?}");
    assert!(
        d[0].starts_with("flows/f.yaml:1:5: id: flow id 'child' is also defined in "),
        "{d:?}"
    );
}

#[test]
fn every_problem_is_reported_not_only_the_first() {
    let f = flow(
        "  - id: a\n    list: { connection: fils, location: \"{{ config('nope') }}\" }\n  - id: b\n    when: steps.zz is defined\n    end: { outcome: succeeded }\n",
    );
    assert_eq!(diagnostics_of(&f).len(), 3);
}

#[test]
fn the_shipped_flows_validate() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let (project, diags) = load(&Inputs {
        paths: vec![root.join("flows")],
        ..Default::default()
    });
    assert!(diags.is_empty(), "{diags:#?}");
    let project = project.unwrap();
    for id in [
        "OUTL-BA-DACS_OUAI_FTP_ENROLL",
        "OUTL-BA-DACS_OUAI_OS_ENROLL",
        "OUTL-BA-OUAI_DACS_OS_ENROLL_ACK",
        "OUTL-BA-DRMS_OUAI_EVT_OUTC_TRNFR",
        "OUTL-BA-OUAI_DACS_KWHAVD_OS_TRF",
        "OUTL-BA-OUAI_OS_LR_FORECAST",
        "OUTL-BA-OUAI_DACS_DRMS_ERR_HNDLR",
    ] {
        assert!(project.flows.contains_key(id), "missing flow {id}");
    }
    assert_eq!(project.flows.len(), 10);
}

fn triggered(trigger: &str) -> String {
    format!(
        "id: f\nname: F\nversion: '1'\ntrigger:\n{trigger}steps:\n  - id: done\n    end: {{ outcome: succeeded }}\n"
    )
}

#[test]
fn a_cron_expression_that_does_not_parse() {
    let d = diagnostics_of(&triggered("  schedule: { cron: \"0 61 * * *\" }\n"));
    assert_eq!(
        d,
        [
            "flows/f.yaml:5:21: trigger.schedule.cron: invalid cron expression '0 61 * * *': Component error: Number out of bounds."
        ]
    );
}

#[test]
fn an_unknown_time_zone_with_a_suggestion() {
    let d = diagnostics_of(&triggered(
        "  schedule:\n    cron: \"0 */15 * * * *\"\n    timezone: America/Chicgo\n",
    ));
    assert_eq!(
        d,
        [
            "flows/f.yaml:7:15: trigger.schedule.timezone: unknown time zone 'America/Chicgo' (an IANA name such as Europe/Amsterdam or UTC) (did you mean 'America/Chicago'?)"
        ]
    );
}

#[test]
fn a_rest_trigger_path_must_be_plain_and_its_method_post_or_put() {
    let d = diagnostics_of(&triggered(
        "  rest:\n    method: GET\n    path: /a/{id}/b\n    parts: { message: { kind: json } }\n",
    ));
    assert_eq!(
        d,
        [
            "flows/f.yaml:6:13: trigger.rest.method: a REST trigger takes POST or PUT, not 'GET'",
            "flows/f.yaml:7:11: trigger.rest.path: a REST trigger path has no patterns, queries or escapes: '/a/{id}/b'",
        ]
    );
}

#[test]
fn two_flows_on_one_trigger_path() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("flows")).unwrap();
    std::fs::write(root.join("flows/connections.yaml"), CONNECTIONS).unwrap();
    let rest = "  rest:\n    path: /hooks/x\n    parts: { file: { kind: file } }\n";
    std::fs::write(
        root.join("flows/a.yaml"),
        triggered(rest).replace("id: f", "id: a"),
    )
    .unwrap();
    std::fs::write(
        root.join("flows/b.yaml"),
        triggered(rest).replace("id: f", "id: b"),
    )
    .unwrap();
    let (project, diags) = load(&Inputs {
        paths: vec![root.join("flows")],
        ..Default::default()
    });
    assert!(project.is_none());
    let prefix = format!("{}/", root.display());
    let lines: Vec<String> = diags
        .iter()
        .map(|d| d.one_line().replace(&prefix, ""))
        .collect();
    assert_eq!(
        lines,
        ["flows/b.yaml:6:11: trigger.rest.path: flow 'a' already answers POST /hooks/x"]
    );
}

/// A loop's `concurrency` above its REST connection's `max_concurrency` changed nothing and
/// said nothing: it is now a warning at the `concurrency` line and column with both numbers
/// (the flow stays valid: `ferry validate` exits 0 and prints the warning).
#[test]
fn concurrency_above_the_connections_max_concurrency_is_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("flows")).unwrap();
    std::fs::write(
        root.join("flows/connections.yaml"),
        "connections:\n  files: { kind: local, root: /tmp/x }\n  \
         api: { kind: http, base_url: http://127.0.0.1:1, max_concurrency: 4 }\n  \
         other: { kind: http, base_url: http://127.0.0.1:2 }\n",
    )
    .unwrap();
    let f = "id: f\nname: F\nversion: '1'\nsteps:\n  \
             - id: list\n    list: { connection: files, location: in }\n  \
             - id: each\n    for_each:\n      items: steps.list.files\n      as: file\n      \
             concurrency: 16\n      steps:\n        \
             - id: send\n          invoke:\n            request: { connection: api, method: POST, path: /a }\n        \
             - id: also\n          invoke:\n            request: { connection: other, method: POST, path: /b }\n  \
             - id: fits\n    for_each:\n      items: steps.list.files\n      as: file\n      \
             concurrency: 4\n      steps:\n        \
             - id: send_again\n          invoke:\n            request: { connection: api, method: POST, path: /a }\n";
    std::fs::write(root.join("flows/f.yaml"), f).unwrap();
    let (project, diags) = load(&Inputs {
        paths: vec![root.join("flows")],
        ..Default::default()
    });
    assert!(
        project.is_some(),
        "a warning leaves the flow valid: {diags:#?}"
    );
    let prefix = format!("{}/", root.display());
    let lines: Vec<String> = diags
        .iter()
        .map(|d| d.one_line().replace(&prefix, ""))
        .collect();
    assert_eq!(
        lines,
        [
            "flows/f.yaml:11:20: steps[1].for_each.concurrency: concurrency 16 is above the max_concurrency 4 of connection 'api': at most 4 of its requests run at once (raise max_concurrency of 'api' in the connections file, or set concurrency to 4)",
            "flows/f.yaml:11:20: steps[1].for_each.concurrency: concurrency 16 is above the max_concurrency 8 of connection 'other': at most 8 of its requests run at once (raise max_concurrency of 'other' in the connections file, or set concurrency to 8)",
        ]
    );
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["validate", "flows"])
        .current_dir(root)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(
        out.contains("warning") && out.contains("concurrency 16 is above the max_concurrency 4"),
        "{out}"
    );
}
