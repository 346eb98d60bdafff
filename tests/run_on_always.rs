//! `run_on: always` after `end`: an `end` ends its block (and the blocks around it), later
//! steps are skipped, but `run_on: always` steps still run, in every enclosing block.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use ferry::run::Outcome;
use pretty_assertions::assert_eq;
use support::Workspace;

const MAIL: &str = "connection: mail, from: a@example.com, to: b@example.com, body: x";

/// Adds flow `t` with `steps` to the workspace.
fn add_flow(ws: &Workspace, steps: &str) {
    let text =
        format!("id: t\nname: T\nversion: '1'\ntrigger: {{ manual: true }}\nsteps:\n{steps}");
    std::fs::write(ws.flows_dir().join("t.yaml"), text).unwrap();
}

fn subjects(ws: &Workspace) -> Vec<String> {
    ws.emails().into_iter().map(|e| e.subject).collect()
}

#[tokio::test]
async fn always_steps_run_after_an_end_on_the_no_file_path() {
    let ws = Workspace::new().await;
    ws.make_location("ouai-os", "ns/empty");
    add_flow(
        &ws,
        &format!(
            "  - id: list
    list: {{ connection: ouai_os, location: ns/empty }}
  - id: stop
    when: steps.list.count == 0
    end: {{ outcome: no_files }}
  - id: after
    notify: {{ {MAIL}, subject: after the end }}
  - id: on_failure
    run_on: failure
    notify: {{ {MAIL}, subject: on failure }}
  - id: always
    run_on: always
    notify: {{ {MAIL}, subject: \"always, {{{{ steps.list.count }}}} files\" }}
"
        ),
    );
    let report = ws.run("t").await;
    assert_eq!(report.outcome, Outcome::NoFiles, "{report:#?}");
    assert_eq!(subjects(&ws), ["always, 0 files"]);
}

#[tokio::test]
async fn an_end_in_a_loop_ends_the_enclosing_blocks_but_their_always_steps_run() {
    let ws = Workspace::new().await;
    add_flow(
        &ws,
        &format!(
            "  - id: each
    for_each:
      items: \"[1, 2]\"
      as: n
      steps:
        - id: stop
          end: {{ outcome: succeeded }}
        - id: inner_after
          notify: {{ {MAIL}, subject: \"inner after {{{{ n }}}}\" }}
        - id: inner_always
          run_on: always
          notify: {{ {MAIL}, subject: \"inner always {{{{ n }}}}\" }}
  - id: outer_after
    notify: {{ {MAIL}, subject: outer after }}
  - id: outer_always
    run_on: always
    notify: {{ {MAIL}, subject: outer always }}
"
        ),
    );
    let report = ws.run("t").await;
    assert_eq!(report.outcome, Outcome::Succeeded, "{report:#?}");
    let mut got = subjects(&ws);
    got.sort();
    // the loop stopped at its first item; no step that is not `always` ran after the end
    assert_eq!(got, ["inner always 1", "outer always"]);
}

#[tokio::test]
async fn without_an_end_success_steps_run_and_always_steps_too() {
    let ws = Workspace::new().await;
    ws.make_location("ouai-os", "ns/empty");
    add_flow(
        &ws,
        &format!(
            "  - id: list
    list: {{ connection: ouai_os, location: ns/empty }}
  - id: stop
    when: steps.list.count > 0
    end: {{ outcome: no_files }}
  - id: after
    notify: {{ {MAIL}, subject: after }}
  - id: always
    run_on: always
    notify: {{ {MAIL}, subject: always }}
"
        ),
    );
    let report = ws.run("t").await;
    assert_eq!(report.outcome, Outcome::Succeeded, "{report:#?}");
    let mut got = subjects(&ws);
    got.sort();
    assert_eq!(got, ["after", "always"]);
}
