//! A name the target refuses does not stop a feed (issue 20, point 7). A listing of three
//! files whose middle one gets a name too long for the target's file system: the other two
//! are on the target with their bytes and their sources are marked as sent, the refused one
//! is left where it is with a `skipped` event giving the target's reason, and the run says
//! so (its outcome, its closing warning, its history). Before, the put failed the item and
//! the loop stopped there, or, with the put in a child flow, the child's failure failed the
//! run; the files after it waited behind it for ever.
//!
//! Real targets: a local directory, through the real `ferry run`, with the put in the
//! flow's own loop and in a child flow the loop calls.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Output, Stdio};

/// A good name, the refused one (250 bytes: the source takes it, the target's name adds 15
/// bytes and goes over 255), a good one, in listing order.
fn names() -> [String; 3] {
    let long = format!("b{}.csv", "l".repeat(245));
    assert_eq!(long.len(), 250);
    ["a.csv".to_string(), long, "c.csv".to_string()]
}

const CONNECTIONS: &str = "connections:\n  src: { kind: local, root: \"${ROOT}/src\" }\n  dst: { kind: local, root: \"${ROOT}/dst\" }\n";

const HEAD: &str = "version: '1'\ntrigger: { manual: true }\n";

/// The put, as the flow's own step or the child flow's.
const PUT: &str = "invoke:\n  put:\n    connection: dst\n    location: out\n    name: \"processed_{{ NAME }}.done\"\n    file: \"{{ FILE }}\"\n";

fn indent(text: &str, by: usize) -> String {
    text.lines()
        .map(|l| format!("{}{l}\n", " ".repeat(by)))
        .collect()
}

/// The flow `names`: list, then for each file fetch, put (here or in the child flow), mark
/// as sent.
fn flows(dir: &Path, in_child: bool) {
    let put = if in_child {
        "invoke:\n  flow: put_child\n  with: { name: \"{{ file.name }}\", file: \"{{ steps.fetch.path }}\" }\n".to_string()
    } else {
        PUT.replace("NAME", "file.name")
            .replace("FILE", "steps.fetch.path")
    };
    let flow = format!(
        "id: names\nname: Names\n{HEAD}steps:\n  - id: list\n    list: {{ connection: src, location: in }}\n  - id: files\n    for_each:\n      items: steps.list.files\n      as: file\n      steps:\n        - id: fetch\n          fetch: {{ connection: src, location: in, name: \"{{{{ file.name }}}}\" }}\n        - id: put\n{}        - id: mark\n          rename: {{ connection: src, location: in, from: \"{{{{ file.name }}}}\", to: \"Sent-{{{{ file.name }}}}\" }}\n",
        indent(&put, 10)
    );
    std::fs::create_dir_all(dir.join("flows")).unwrap();
    std::fs::write(dir.join("flows/names.yaml"), flow).unwrap();
    let child = format!(
        "id: put_child\nname: Put child\nversion: '1'\nparams:\n  name: {{ description: the file's name }}\n  file: {{ description: the spooled file }}\nsteps:\n  - id: put\n{}",
        indent(
            &PUT.replace("NAME", "params.name")
                .replace("FILE", "params.file"),
            4
        )
    );
    std::fs::write(dir.join("flows/put_child.yaml"), child).unwrap();
    std::fs::write(
        dir.join("flows/connections.yaml"),
        CONNECTIONS.replace("${ROOT}", &dir.display().to_string()),
    )
    .unwrap();
    std::fs::create_dir_all(dir.join("src/in")).unwrap();
    for (i, n) in names().iter().enumerate() {
        std::fs::write(dir.join("src/in").join(n), format!("bytes of file {i}\n")).unwrap();
    }
}

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

fn sorted(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn the_refused_name_is_skipped_and_the_others_move(in_child: bool) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    flows(d, in_child);
    let [a, long, c] = names();
    let o = ferry(d, &["run", "names", "--flows", "flows"]);
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    let all = format!("{stdout}{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(o.status.code(), Some(0), "{all}");

    // the good ones on the target with their bytes, their sources marked as sent
    assert_eq!(
        sorted(&d.join("dst/out")),
        vec![format!("processed_{a}.done"), format!("processed_{c}.done")],
        "{all}"
    );
    assert_eq!(
        std::fs::read_to_string(d.join("dst/out").join(format!("processed_{a}.done"))).unwrap(),
        "bytes of file 0\n"
    );
    assert_eq!(
        std::fs::read_to_string(d.join("dst/out").join(format!("processed_{c}.done"))).unwrap(),
        "bytes of file 2\n"
    );
    // the refused one left in place, untouched
    assert_eq!(
        sorted(&d.join("src/in")),
        vec![format!("Sent-{a}"), format!("Sent-{c}"), long.clone()],
        "{all}"
    );
    assert_eq!(
        std::fs::read_to_string(d.join("src/in").join(&long)).unwrap(),
        "bytes of file 1\n"
    );

    // the run says so: the skipped event with the target's reason, the outcome, the warning
    let reason = "connection 'dst' refuses the name: File name too long (os error 36)";
    assert!(
        stdout.contains(&format!(
            "  skip    dst:out/processed_{long}.done left where it is: {reason}\n"
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains("\noutcome: succeeded — 2 file(s) moved, "),
        "{stdout}"
    );
    assert!(
        stdout.ends_with(
            "warning: 1 file(s) left where they are (see above): 1 the target refuses its name\n"
        ),
        "{stdout}"
    );
    assert!(!stdout.contains("FAILED"), "{stdout}");

    // and so does its history
    let o = ferry(d, &["runs", "--format", "json"]);
    let runs: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!("{e}: {}", String::from_utf8_lossy(&o.stdout));
    });
    let text = runs.to_string();
    assert!(text.contains("\"succeeded\""), "{runs:#}");
}

#[test]
fn a_name_the_target_refuses_is_skipped_and_the_files_after_it_move() {
    the_refused_name_is_skipped_and_the_others_move(false);
}

#[test]
fn a_name_the_target_refuses_in_a_child_flow_is_skipped_by_its_caller() {
    the_refused_name_is_skipped_and_the_others_move(true);
}
