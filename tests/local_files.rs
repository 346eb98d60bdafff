//! Files fetched from a local directory (issue 24, item 4): the fetch holds the source open
//! instead of linking it into the run's spool, and a put to a local directory reads it
//! through that descriptor. What a flow sees must not change: the bytes fetched reach the
//! target even when the flow renames the source before the put; a step that reads the
//! fetched file by its path (a CSV loop) gets a real file; a put that fails leaves the
//! source unmarked, nothing under the target's name and no temporary file, and the next
//! run moves it. Through the real `ferry run`, on real directories.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Output, Stdio};

const HEAD: &str = "version: '1'\ntrigger: { manual: true }\n";

/// Connections `src` and `dst`, local directories under `dir`; `dst` makes no directory.
fn connections(dir: &Path) {
    std::fs::create_dir_all(dir.join("flows")).unwrap();
    std::fs::write(
        dir.join("flows/connections.yaml"),
        format!(
            "connections:\n  src: {{ kind: local, root: \"{0}/src\" }}\n  dst: {{ kind: local, root: \"{0}/dst\", create_dirs: false }}\n",
            dir.display()
        ),
    )
    .unwrap();
}

fn ferry(dir: &Path, args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(args)
        .current_dir(dir)
        .env("FERRY_STATE_DIR", dir.join("state"))
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

/// The files left in the runs' spool folders (none once a run ended).
fn spooled(dir: &Path) -> Vec<String> {
    let spool = dir.join("state/spool");
    if !spool.exists() {
        return Vec::new();
    }
    let mut out = Vec::new();
    for run in std::fs::read_dir(&spool).unwrap() {
        let run = run.unwrap().path();
        if run.is_dir() {
            out.extend(sorted(&run));
        } else {
            out.push(run.display().to_string());
        }
    }
    out
}

/// Each file is fetched, its source marked `Sent-` at once, then its CSV records counted
/// by a loop over the fetched file, then put twice (as itself and under a name giving the
/// count): every byte the fetch saw reaches the target, though the source's name is gone
/// by the time the puts and the loop read it. No temporary or spool file is left.
#[test]
fn a_fetched_file_moves_whole_after_its_source_was_renamed() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    connections(d);
    let flow = format!(
        "id: moves\nname: Moves\n{HEAD}steps:\n  - id: list\n    list: {{ connection: src, location: in, exclude_prefix: Sent- }}\n  - id: files\n    for_each:\n      items: steps.list.files\n      as: file\n      concurrency: 4\n      steps:\n        - id: fetch\n          fetch: {{ connection: src, location: in, name: \"{{{{ file.name }}}}\" }}\n        - id: mark\n          needs: [fetch]\n          rename: {{ connection: src, location: in, from: \"{{{{ file.name }}}}\", to: \"Sent-{{{{ file.name }}}}\" }}\n        - id: put\n          needs: [mark]\n          invoke:\n            put: {{ connection: dst, location: out, name: \"{{{{ file.name }}}}\", file: \"{{{{ steps.fetch.path }}}}\" }}\n        - id: rows\n          needs: [put]\n          for_each:\n            csv: {{ file: \"{{{{ steps.fetch.path }}}}\", columns: [id, text] }}\n            as: row\n            steps:\n              - id: row\n                transform: {{ fields: {{ id: \"{{{{ row.fields.id }}}}\" }} }}\n        - id: counted\n          invoke:\n            put: {{ connection: dst, location: out, name: \"{{{{ file.name }}}}.{{{{ steps.rows.count }}}}-rows\", file: \"{{{{ steps.fetch.path }}}}\" }}\n"
    );
    std::fs::write(d.join("flows/moves.yaml"), flow).unwrap();
    std::fs::create_dir_all(d.join("src/in")).unwrap();
    std::fs::create_dir_all(d.join("dst/out")).unwrap();
    let mut expected = Vec::new();
    for i in 0..12 {
        let body: String = (0..=i).map(|r| format!("{i}-{r},row {r}\n")).collect();
        let body = format!("id,text\n{body}");
        std::fs::write(d.join(format!("src/in/f{i:02}.csv")), &body).unwrap();
        expected.push((format!("f{i:02}.csv"), body, i + 1));
    }
    let o = ferry(d, &["run", "moves", "--flows", "flows"]);
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(o.status.code(), Some(0), "{all}");
    assert!(
        all.contains("outcome: succeeded — 24 file(s) moved, "),
        "{all}"
    );
    let mut names = Vec::new();
    for (name, body, rows) in &expected {
        assert_eq!(
            std::fs::read_to_string(d.join("dst/out").join(name)).unwrap(),
            *body,
            "{name}"
        );
        let counted = format!("{name}.{rows}-rows");
        assert_eq!(
            std::fs::read_to_string(d.join("dst/out").join(&counted)).unwrap(),
            *body,
            "{counted}"
        );
        names.push(name.clone());
        names.push(counted);
    }
    names.sort();
    assert_eq!(sorted(&d.join("dst/out")), names, "no temporary file left");
    let sent: Vec<String> = expected
        .iter()
        .map(|(n, _, _)| format!("Sent-{n}"))
        .collect();
    assert_eq!(sorted(&d.join("src/in")), sent);
    for (name, body, _) in &expected {
        assert_eq!(
            std::fs::read_to_string(d.join("src/in").join(format!("Sent-{name}"))).unwrap(),
            *body
        );
    }
    assert_eq!(spooled(d), Vec::<String>::new());
}

/// A put that fails (the target's directory is missing and the connection may not make
/// it) leaves the source where it was, unmarked and whole, nothing under the target's
/// name and no temporary file; the run fails and says why. Once the directory is there,
/// the next run moves the file.
#[test]
fn a_failed_put_loses_nothing_and_the_next_run_moves_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    connections(d);
    let flow = format!(
        "id: moves\nname: Moves\n{HEAD}steps:\n  - id: list\n    list: {{ connection: src, location: in, exclude_prefix: Sent- }}\n  - id: files\n    for_each:\n      items: steps.list.files\n      as: file\n      steps:\n        - id: fetch\n          fetch: {{ connection: src, location: in, name: \"{{{{ file.name }}}}\" }}\n        - id: put\n          invoke:\n            put: {{ connection: dst, location: out, name: \"{{{{ file.name }}}}\", file: \"{{{{ steps.fetch.path }}}}\" }}\n        - id: mark\n          rename: {{ connection: src, location: in, from: \"{{{{ file.name }}}}\", to: \"Sent-{{{{ file.name }}}}\" }}\n"
    );
    std::fs::write(d.join("flows/moves.yaml"), flow).unwrap();
    std::fs::create_dir_all(d.join("src/in")).unwrap();
    std::fs::create_dir_all(d.join("dst")).unwrap();
    std::fs::write(d.join("src/in/a.csv"), "the bytes of a\n").unwrap();

    let o = ferry(d, &["run", "moves", "--flows", "flows"]);
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert_ne!(o.status.code(), Some(0), "{all}");
    assert!(all.contains("not found: directory out"), "{all}");
    assert_eq!(sorted(&d.join("src/in")), ["a.csv"]);
    assert_eq!(
        std::fs::read_to_string(d.join("src/in/a.csv")).unwrap(),
        "the bytes of a\n"
    );
    assert_eq!(sorted(&d.join("dst")), Vec::<String>::new(), "{all}");
    assert_eq!(spooled(d), Vec::<String>::new());

    std::fs::create_dir_all(d.join("dst/out")).unwrap();
    let o = ferry(d, &["run", "moves", "--flows", "flows"]);
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(o.status.code(), Some(0), "{all}");
    assert_eq!(sorted(&d.join("dst/out")), ["a.csv"]);
    assert_eq!(
        std::fs::read_to_string(d.join("dst/out/a.csv")).unwrap(),
        "the bytes of a\n"
    );
    assert_eq!(sorted(&d.join("src/in")), ["Sent-a.csv"]);
}

/// A run's spool directory is made at the first file it spools: a run that spools nothing
/// needs none (with `<data>/spool` unusable, it still succeeds), and a fetch that cannot
/// make it fails, naming the directory, with the source left unmarked.
#[test]
fn the_spool_directory_is_made_only_for_a_file_to_spool() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    connections(d);
    std::fs::create_dir_all(d.join("src/in")).unwrap();
    std::fs::create_dir_all(d.join("dst/out")).unwrap();
    std::fs::write(d.join("src/in/a.csv"), "the bytes of a\n").unwrap();
    std::fs::write(
        d.join("flows/counts.yaml"),
        format!("id: counts\nname: Counts\n{HEAD}steps:\n  - id: list\n    list: {{ connection: src, location: in }}\n  - id: count\n    transform: {{ fields: {{ n: \"{{{{ steps.list.files | length }}}}\" }} }}\n"),
    )
    .unwrap();
    std::fs::write(
        d.join("flows/moves.yaml"),
        format!("id: moves\nname: Moves\n{HEAD}steps:\n  - id: list\n    list: {{ connection: src, location: in, exclude_prefix: Sent- }}\n  - id: files\n    for_each:\n      items: steps.list.files\n      as: file\n      steps:\n        - id: fetch\n          fetch: {{ connection: src, location: in, name: \"{{{{ file.name }}}}\" }}\n        - id: put\n          invoke:\n            put: {{ connection: dst, location: out, name: \"{{{{ file.name }}}}\", file: \"{{{{ steps.fetch.path }}}}\" }}\n        - id: mark\n          rename: {{ connection: src, location: in, from: \"{{{{ file.name }}}}\", to: \"Sent-{{{{ file.name }}}}\" }}\n"),
    )
    .unwrap();
    // the history's directory is there, its spool a file where the directory would be
    std::fs::create_dir_all(d.join("state")).unwrap();
    std::fs::write(d.join("state/spool"), "not a directory\n").unwrap();

    let o = ferry(d, &["run", "counts", "--flows", "flows"]);
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(o.status.code(), Some(0), "{all}");
    assert!(all.contains("outcome: succeeded"), "{all}");

    let o = ferry(d, &["run", "moves", "--flows", "flows"]);
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert_ne!(o.status.code(), Some(0), "{all}");
    let spool = d.join("state/spool");
    assert!(
        all.contains(&format!(
            "cannot create the run's spool directory {}/",
            spool.display()
        )),
        "{all}"
    );
    assert_eq!(sorted(&d.join("src/in")), ["a.csv"]);
    assert_eq!(sorted(&d.join("dst/out")), Vec::<String>::new());
}
