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
        let o = ferry(dir.path(), &["new", template, id, "--name", "Acme flow"]);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        assert_eq!(
            text(&o),
            format!(
                "wrote flows/{file}.yaml\nwrote flows/tests/{file}.test.yaml\nnext: ferry validate flows && ferry test flows/tests/{file}.test.yaml\n"
            )
        );
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
