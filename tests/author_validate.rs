//! What `ferry validate` told an author too late or not at all (issue 22, item 1 and the
//! compile-time half of item 2): a literal lookup column, a literal regular expression, a
//! stray field beside a missing one, an unknown enum value, and `error.*` read where no step
//! can have failed. Each at its exact `file:line:column`.

#![allow(clippy::unwrap_used)] // tests unwrap: a panic is the failure report

use ferry::compile::{Inputs, load};
use pretty_assertions::assert_eq;

const CONNECTIONS: &str = "connections:
  files: { kind: local, root: /tmp/x }
  mail: { kind: outbox, dir: /tmp/x/outbox }
";

const STATUS: &str = "name: Status
columns: [OUT, IN, description]
rows:
  - [ACCEPTED, D1AK, accepted]
  - [REJECTED, D1RJ, rejected]
";

const EMAILS: &str = "name: Emails
columns: [recipient, addresses]
rows:
  - [to, ops@example.com]
";

/// The diagnostics of a project holding `flow` (flows/f.yaml) and `connections`, one line
/// each, with the temp dir stripped from paths.
fn diagnostics(flow: &str, connections: &str) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("flows")).unwrap();
    std::fs::create_dir_all(root.join("lookups")).unwrap();
    std::fs::write(root.join("flows/connections.yaml"), connections).unwrap();
    std::fs::write(root.join("flows/f.yaml"), flow).unwrap();
    std::fs::write(root.join("lookups/status.yaml"), STATUS).unwrap();
    std::fs::write(root.join("lookups/emails.yaml"), EMAILS).unwrap();
    let (_, diags) = load(&Inputs {
        paths: vec![root.join("flows")],
        ..Default::default()
    });
    let prefix = format!("{}/", root.display());
    diags
        .iter()
        .map(|d| d.one_line().replace(&prefix, ""))
        .collect()
}

fn flow(steps: &str) -> String {
    format!(
        "id: f\nname: F\nversion: '1'\ntrigger: {{ manual: true }}\nlookups:\n  status: Status\n  email: Emails\nsteps:\n{steps}"
    )
}

/// `status(x, 'DASC')` (for `DACS`) passed validate and failed at run time: a literal
/// column is one of the lookup's, through its alias and through `lookup()`.
#[test]
fn a_literal_lookup_column_is_one_of_the_lookups_columns() {
    let f = flow(
        "  - id: list
    list: { connection: files, location: in }
  - id: t
    transform:
      fields:
        ok: \"{{ status('ACCEPTED', 'IN') }}\"
        alias: \"{{ status(steps.list.count | string, 'INN') }}\"
        table: \"{{ lookup('Status', 'ACCEPTED', 'descriptoin') }}\"
        other: \"{{ lookup('Status', 'ACCEPTED', 'zzzzzzzz') }}\"
",
    );
    assert_eq!(
        diagnostics(&f, CONNECTIONS),
        [
            "flows/f.yaml:15:55: steps[1].transform.fields.alias: lookup Status has no column 'INN' (did you mean 'IN'?)",
            "flows/f.yaml:16:50: steps[1].transform.fields.table: lookup Status has no column 'descriptoin' (did you mean 'description'?)",
            "flows/f.yaml:17:50: steps[1].transform.fields.other: lookup Status has no column 'zzzzzzzz' (columns of Status: OUT, IN, description)",
        ]
    );
}

/// `regex_replace('([', 'x')` failed only at run time: a literal pattern is compiled by
/// validate, with the regex crate's reason, in templates and expressions.
#[test]
fn a_literal_regex_is_compiled_at_validate() {
    let f = flow(
        "  - id: list
    list: { connection: files, location: in }
  - id: each
    for_each:
      items: steps.list.files
      as: file
      steps:
        - id: mark
          when: \"file.name | regex_capture('x{2,1}')\"
          rename: { connection: files, location: in, from: \"{{ file.name }}\", to: \"{{ file.name | regex_replace('([', 'x') }}\" }
",
    );
    assert_eq!(
        diagnostics(&f, CONNECTIONS),
        [
            "flows/f.yaml:17:45: steps[1].for_each.steps[0].when: regex_capture: invalid regular expression 'x{2,1}': invalid repetition count range, the start must be <= the end (the pattern is Rust regex syntax (https://docs.rs/regex/#syntax))",
            "flows/f.yaml:18:114: steps[1].for_each.steps[0].rename.to: regex_replace: invalid regular expression '([': unclosed character class (the pattern is Rust regex syntax (https://docs.rs/regex/#syntax))",
        ]
    );
}

/// `base_uri:` for `base_url:` reported the missing field and not the stray one.
#[test]
fn a_stray_field_is_reported_beside_the_missing_one() {
    let connections = format!("{CONNECTIONS}  api:\n    kind: http\n    base_uri: http://x\n");
    let f = flow("  - id: list\n    list: { connection: files, location: in }\n");
    assert_eq!(
        diagnostics(&f, &connections),
        [
            "flows/connections.yaml:4:3: connections.api: missing field 'base_url'",
            "flows/connections.yaml:6:5: connections.api.base_uri: unknown field 'base_uri' (did you mean 'base_url'?)",
        ]
    );
}

/// `run_on: allways` and `end: { outcome: done }` said "unknown kind null".
#[test]
fn an_unknown_enum_value_names_the_value_and_the_field() {
    let f = flow(
        "  - id: list
    list: { connection: files, location: in }
  - id: stop
    end: { outcome: done }
  - id: mail
    run_on: allways
    notify: { connection: mail, from: a@b.c, to: a@b.c, subject: s, body: b }
",
    );
    assert_eq!(
        diagnostics(&f, CONNECTIONS),
        [
            "flows/f.yaml:12:21: steps[1].end.outcome: unknown value 'done' for `outcome` (expected one of: no_files, succeeded)",
            "flows/f.yaml:14:13: steps[2].run_on: unknown value 'allways' for `run_on` (expected one of: success, failure, always) (did you mean 'always'?)",
        ]
    );
}

/// `{% if error is defined %}{{ error.message }}{% endif %}` in a step that runs only while
/// nothing failed never shows anything: reading `error.*` there is a diagnostic; in a step
/// that runs on failure (or always), or in a nested step of one, it is not.
#[test]
fn error_read_where_no_step_can_have_failed() {
    let f = flow(
        "  - id: list
    list: { connection: files, location: in }
  - id: summary
    notify:
      connection: mail
      from: a@b.c
      to: \"{{ email('to') }}\"
      subject: s
      body: |
        done.
        {% if error is defined %}failed: {{ error.message }}{% endif %}
  - id: on_fail
    run_on: failure
    notify: { connection: mail, from: a@b.c, to: a@b.c, subject: \"{{ error.step }}\", body: \"{{ error.message }}\" }
  - id: always
    run_on: always
    when: \"error is defined\"
    notify: { connection: mail, from: a@b.c, to: a@b.c, subject: s, body: \"{{ error.message }}\" }
  - id: each
    run_on: failure
    for_each:
      items: steps.list.files
      as: file
      steps:
        - id: inner
          notify: { connection: mail, from: a@b.c, to: a@b.c, subject: s, body: \"{{ error.kind }}\" }
",
    );
    assert_eq!(
        diagnostics(&f, CONNECTIONS),
        [
            "flows/f.yaml:19:51: steps[1].notify.body: `error` is undefined here: step 'summary' runs only while no step has failed (run_on: success) (read it in a step with `run_on: failure`, or `run_on: always` behind `error is defined`)",
        ]
    );
}
