//! The CI recipe in `examples/ci/` works as written: every `ferry` command in the GitHub
//! Actions workflow, the GitLab CI job and the pre-commit hook succeeds on the shipped
//! flows, and `ferry validate --format github` prints workflow annotations.

#![allow(clippy::unwrap_used)] // tests unwrap: a panic is the failure report

#[path = "support/project.rs"]
mod project;

use std::path::Path;
use std::process::{Command, Output};

use pretty_assertions::assert_eq;
use project::repo;

fn ferry(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

/// The `ferry …` commands of a recipe file, as argument lists (up to a redirection).
fn commands(file: &str) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(repo().join("examples/ci").join(file)).unwrap();
    text.lines()
        .map(|l| {
            l.trim()
                .trim_start_matches("- run:")
                .trim_start_matches("- ")
                .trim()
        })
        .filter(|l| l.starts_with("ferry "))
        .map(|l| {
            l.split_whitespace()
                .skip(1)
                .take_while(|w| *w != ">")
                .map(str::to_string)
                .collect()
        })
        .collect()
}

#[test]
fn every_ferry_command_of_the_recipes_passes_on_the_shipped_flows() {
    let all: Vec<(String, Vec<Vec<String>>)> =
        ["github-actions.yml", "gitlab-ci.yml", "pre-commit"]
            .iter()
            .map(|f| (f.to_string(), commands(f)))
            .collect();
    let shown: Vec<(String, Vec<String>)> = all
        .iter()
        .map(|(f, cs)| (f.clone(), cs.iter().map(|c| c.join(" ")).collect()))
        .collect();
    assert_eq!(
        shown,
        [
            (
                "github-actions.yml".to_string(),
                vec![
                    "validate --format github flows".to_string(),
                    "test --format junit flows".to_string()
                ]
            ),
            (
                "gitlab-ci.yml".to_string(),
                vec![
                    "validate flows".to_string(),
                    "test --format junit flows".to_string()
                ]
            ),
            (
                "pre-commit".to_string(),
                vec!["validate flows".to_string(), "test flows".to_string()]
            ),
        ]
    );
    for (file, cs) in &all {
        for c in cs {
            let args: Vec<&str> = c.iter().map(String::as_str).collect();
            let o = ferry(&repo(), &args);
            assert_eq!(
                o.status.code(),
                Some(0),
                "{file}: ferry {}: {}{}",
                c.join(" "),
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
            if c.contains(&"junit".to_string()) {
                let xml = String::from_utf8_lossy(&o.stdout);
                assert!(xml.starts_with("<?xml"), "{xml}");
                assert!(xml.contains(" failures=\"0\""), "{xml}");
            }
        }
    }
}

#[test]
fn validate_format_github_prints_one_annotation_per_problem() {
    let dir = tempfile::tempdir().unwrap();
    project::shipped_project(dir.path(), "http://127.0.0.1:9");
    let f = dir.path().join("flows/enrollment_os.yaml");
    let text = std::fs::read_to_string(&f).unwrap().replacen(
        "    when: \"steps.list.count == 0\"",
        "    when: \"steps.list.cont == 0\"",
        1,
    );
    std::fs::write(&f, text).unwrap();
    let o = ferry(dir.path(), &["validate", "--format", "github", "flows"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "::error file=flows/enrollment_os.yaml,line=38,col=23,title=unknown-attribute::steps[2].when: `steps.list` has no attribute 'cont' (did you mean 'count'?)\n"
    );
    // valid flows: no output at all, exit 0
    std::fs::write(
        &f,
        std::fs::read_to_string(repo().join("flows/enrollment_os.yaml")).unwrap(),
    )
    .unwrap();
    let o = ferry(dir.path(), &["validate", "--format", "github", "flows"]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "");
}
