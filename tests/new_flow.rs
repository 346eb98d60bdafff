//! `ferry new`: each template gives a flow that validates and a test file that passes, in a
//! project with the shipped connections; nothing is overwritten.

#![allow(clippy::unwrap_used)] // tests unwrap: a panic is the failure report

#[path = "support/project.rs"]
mod project;

use std::path::Path;
use std::process::{Command, Output};

fn ferry(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn every_template_validates_and_its_test_passes() {
    let dir = tempfile::tempdir().unwrap();
    project::shipped_project(dir.path(), "http://127.0.0.1:9");
    for (template, id, file) in [
        (
            "file-transfer",
            "ACME.Orders-Transfer",
            "acme_orders_transfer",
        ),
        ("csv-to-rest", "acme_records", "acme_records"),
        ("rest-trigger", "acme.delivery", "acme_delivery"),
    ] {
        let first = !dir.path().join("schemas").exists();
        let o = ferry(dir.path(), &["new", template, id, "--name", "Acme flow"]);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        // the schemas the modelines point at, written once when the project lacks them
        let schemas = if first { "wrote schemas\n" } else { "" };
        assert_eq!(
            text(&o),
            format!(
                "wrote flows/{file}.yaml\nwrote flows/tests/{file}.test.yaml\n{schemas}next: ferry validate flows && ferry test flows/tests/{file}.test.yaml\n"
            )
        );
        assert!(dir.path().join("schemas/flow.schema.json").is_file());
        assert!(dir.path().join("schemas/test.schema.json").is_file());
        let flow = std::fs::read_to_string(dir.path().join(format!("flows/{file}.yaml"))).unwrap();
        assert!(
            flow.contains(&format!("id: {id}\nname: Acme flow\n")),
            "{flow}"
        );
        assert!(!flow.contains("__"), "{flow}");
        let o = ferry(dir.path(), &["validate", "flows"]);
        assert_eq!(o.status.code(), Some(0), "{template}: {}", text(&o));
        let test = format!("flows/tests/{file}.test.yaml");
        let o = ferry(dir.path(), &["test", &test]);
        assert_eq!(o.status.code(), Some(0), "{template}: {}", text(&o));
        assert!(text(&o).contains(" passed, 0 failed"), "{}", text(&o));
        // the same id again: refused, the files are kept
        let o = ferry(dir.path(), &["new", template, id]);
        assert_eq!(o.status.code(), Some(2));
        assert!(
            text(&o).contains(&format!(
                "flows/{file}.yaml exists already; nothing was written"
            )),
            "{}",
            text(&o)
        );
    }
    let o = ferry(dir.path(), &["new", "file-transfer", "a b"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o).contains("a flow id is letters, digits"),
        "{}",
        text(&o)
    );
}

/// `ferry new` in an empty directory used to fail with "cannot read flows/connections.yaml"
/// and no hint: it now names `ferry init`, which makes a project whose printed next commands
/// all work as printed.
#[test]
fn init_makes_a_project_whose_next_commands_work() {
    let dir = tempfile::tempdir().unwrap();
    let o = ferry(dir.path(), &["new", "file-transfer", "x"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stderr),
        "error: flows/connections.yaml not found: `ferry new` adds a flow to a project; `ferry init` makes one\n"
    );
    let o = ferry(dir.path(), &["init", "acme"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = String::from_utf8(o.stdout).unwrap();
    assert_eq!(
        out,
        "wrote acme/flows/connections.yaml\nwrote acme/lookups/emails.yaml\nwrote acme/schemas\n\
         wrote acme/flows/hello_transfer.yaml\nwrote acme/flows/tests/hello_transfer.test.yaml\n\
         wrote acme/ferry-data/files/inbox/data_1.csv\n\
         next:\n  cd acme\n  ferry validate\n  ferry test\n  ferry run hello-transfer\n"
    );
    let project = dir.path().join("acme");
    // every modeline points at a schema the project has
    for file in [
        "flows/connections.yaml",
        "lookups/emails.yaml",
        "flows/hello_transfer.yaml",
        "flows/tests/hello_transfer.test.yaml",
    ] {
        let text = std::fs::read_to_string(project.join(file)).unwrap();
        let schema = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# yaml-language-server: $schema="))
            .unwrap();
        let at = project.join(file).parent().unwrap().join(schema);
        assert!(at.is_file(), "{file}: {}", at.display());
    }
    // the next commands, as printed
    let mut cwd = dir.path().to_path_buf();
    let mut outputs = Vec::new();
    for line in out.split_once("next:\n").unwrap().1.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["cd", to] => cwd = cwd.join(to),
            ["ferry", args @ ..] => {
                let o = ferry(&cwd, args);
                assert_eq!(o.status.code(), Some(0), "{line}: {}", text(&o));
                outputs.push(text(&o));
            }
            _ => panic!("not a command: {line}"),
        }
    }
    assert_eq!(outputs.len(), 3);
    assert!(
        outputs[0].ends_with("ok: 1 flows, 1 lookups, 2 connections\n"),
        "{}",
        outputs[0]
    );
    assert!(outputs[1].contains("2 passed, 0 failed"), "{}", outputs[1]);
    assert!(
        outputs[2].contains("outcome: succeeded — 1 file(s) moved"),
        "{}",
        outputs[2]
    );
    let files = project.join("ferry-data/files");
    assert_eq!(
        std::fs::read_to_string(files.join("outbox/data_1.csv")).unwrap(),
        "id,name\n1,first\n"
    );
    assert!(files.join("inbox/Sent-data_1.csv").is_file());
    // the run emailed the lookup's address from the outbox connection
    let outbox = project.join("ferry-data/outbox");
    let mail = std::fs::read_dir(&outbox).unwrap().next().unwrap().unwrap();
    let mail = std::fs::read_to_string(mail.path()).unwrap();
    assert!(mail.contains("To: ops@example.com"), "{mail}");
    // a second init is refused, the project is kept
    let o = ferry(&project, &["init"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("flows exists already"), "{}", text(&o));
}
