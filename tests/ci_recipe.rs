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

/// The recipe files, by name.
const RECIPES: [&str; 3] = ["github-actions.yml", "gitlab-ci.yml", "pre-commit"];

fn recipe(file: &str) -> String {
    std::fs::read_to_string(repo().join("examples/ci").join(file)).unwrap()
}

fn yaml(file: &str) -> serde_json::Value {
    ferry::yaml::SourceDoc::parse(Path::new(file), &recipe(file))
        .unwrap()
        .value
}

/// A recipe names no repository it cannot know: no URL at all, no `example.com`, no
/// `<placeholder>` (the GitHub and GitLab recipes used to install ferry from
/// `https://example.com/ferry.git` and `<ferry repository>`).
#[test]
fn the_recipes_hold_no_placeholder_url() {
    for file in RECIPES {
        let text = recipe(file);
        for (n, line) in text.lines().enumerate() {
            let placeholder = line.contains("://")
                || line.contains("example.com")
                || line.contains("example.org")
                || line.contains("your-")
                || (line.contains('<') && line.contains('>') && !line.contains("<hash"));
            assert!(!placeholder, "examples/ci/{file}:{}: {line}", n + 1);
        }
    }
}

/// The GitHub workflow compiles ferry only when its cached binary is missing: the cache
/// step keeps the binary `cargo install` writes, keyed on Cargo.lock and ferry's sources,
/// and every step that installs Rust or runs cargo is skipped on a cache hit.
#[test]
fn the_github_workflow_compiles_ferry_only_on_a_cache_miss() {
    let wf = yaml("github-actions.yml");
    let steps = wf["jobs"]["check"]["steps"].as_array().unwrap();
    let cache = steps
        .iter()
        .find(|s| {
            s["uses"]
                .as_str()
                .is_some_and(|u| u.starts_with("actions/cache@"))
        })
        .expect("no actions/cache step");
    let id = cache["id"].as_str().expect("the cache step has no id");
    assert_eq!(cache["with"]["path"], "~/.cargo/bin/ferry");
    let key = cache["with"]["key"].as_str().unwrap();
    assert!(key.contains("hashFiles('Cargo.lock'"), "{key}");
    assert!(key.contains("'engine/**'"), "{key}");
    let miss = format!("steps.{id}.outputs.cache-hit != 'true'");
    let mut builds = 0;
    for s in steps {
        let run = s["run"].as_str().unwrap_or_default();
        let uses = s["uses"].as_str().unwrap_or_default();
        if run.contains("cargo ") || uses.contains("rust-toolchain") {
            builds += 1;
            assert_eq!(s["if"].as_str(), Some(miss.as_str()), "{s}");
        }
    }
    assert_eq!(builds, 2, "the toolchain and `cargo install`");
    // the ferry commands run after the binary is there, unconditionally
    let first_ferry = steps
        .iter()
        .position(|s| s["run"].as_str().is_some_and(|r| r.starts_with("ferry ")))
        .unwrap();
    let cache_at = steps.iter().position(|s| s == cache).unwrap();
    assert!(cache_at < first_ferry);
}

/// The GitLab job's script, run as GitLab runs it (`sh -e`, the cache folder kept between
/// runs) with a `cargo` that records its calls: the first run installs ferry, a second run
/// on the same sources compiles nothing, and a change to ferry's sources installs it again.
#[test]
fn the_gitlab_job_compiles_ferry_once_per_source() {
    let job = &yaml("gitlab-ci.yml")["flows"];
    assert_eq!(
        job["cache"]["key"]["files"],
        serde_json::json!(["Cargo.lock"])
    );
    assert_eq!(job["cache"]["paths"], serde_json::json!([".ferry-bin/"]));
    let script: Vec<&str> = job["script"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    let script = script.join("\n");

    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("project");
    for d in ["flows", "lookups", "schemas", "examples"] {
        project::copy_dir(&repo().join(d), &root.join(d));
    }
    std::fs::create_dir_all(root.join("engine")).unwrap();
    for f in ["Cargo.lock", "Cargo.toml", "build.rs"] {
        std::fs::copy(repo().join(f), root.join(f)).unwrap();
    }
    std::fs::write(root.join("engine/lib.rs"), "// ferry\n").unwrap();
    let git = |args: &[&str]| {
        let o = Command::new("git")
            .args(args)
            .current_dir(&root)
            .output()
            .unwrap();
        assert!(o.status.success(), "git {args:?}: {o:?}");
    };
    git(&["init", "-q"]);
    git(&["add", "."]);
    // a cargo that logs its calls and "installs" the ferry under test where --root says
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let log = dir.path().join("cargo.log");
    let fake = format!(
        "#!/bin/sh\necho \"$*\" >> '{log}'\nwhile [ \"$1\" != --root ]; do shift; done\n\
         mkdir -p \"$2/bin\" && ln -s '{ferry}' \"$2/bin/ferry\"\n",
        log = log.display(),
        ferry = env!("CARGO_BIN_EXE_ferry"),
    );
    std::fs::write(bin.join("cargo"), fake).unwrap();
    std::fs::set_permissions(
        bin.join("cargo"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let run = || {
        let o = Command::new("sh")
            .args(["-e", "-c", &script])
            .env("PATH", &path)
            .env_remove("FERRY_FLOWS")
            .current_dir(&root)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        let xml = std::fs::read_to_string(root.join("ferry-tests.xml")).unwrap();
        assert!(xml.contains(" failures=\"0\""), "{xml}");
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .count()
    };
    assert_eq!(run(), 1, "the first run installs ferry");
    assert_eq!(
        run(),
        1,
        "a second run on the same sources compiles nothing"
    );
    std::fs::write(root.join("engine/lib.rs"), "// ferry, changed\n").unwrap();
    assert_eq!(run(), 2, "a change to ferry's sources installs it again");
    assert_eq!(
        std::fs::read_dir(root.join(".ferry-bin")).unwrap().count(),
        1,
        "the old binary is dropped"
    );
}
