//! A concurrent file loop's `concurrency` bounds the items at work, not the items waiting
//! for the run history to confirm their puts (issue 24, item 4): while the history holds
//! the first confirmation back, the loop's other files are put, no source is renamed before
//! its put is confirmed, and once the history answers, one write confirms the puts of more
//! files than the loop's concurrency. And a record loop whose records put at once inside a
//! loop item ends: its records never wait for a slot their own item holds. Real
//! directories; a journal the test holds shut.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry::compile::{Inputs, load};
use ferry::run::{Engine, Journal, JournalBatch, Outcome, RunOptions, RunStart};

const FILES: usize = 8;

/// A journal that writes nothing until the test opens it, and keeps how many side effects
/// each write confirmed.
#[derive(Debug)]
struct Held {
    open: tokio::sync::Semaphore,
    confirmed: Mutex<Vec<usize>>,
}

impl Journal for Held {
    fn write<'a>(
        &'a self,
        batch: &'a JournalBatch,
    ) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>> {
        Box::pin(async move {
            // taken and given back: every write waits until the test opens the journal
            drop(self.open.acquire().await.map_err(|e| e.to_string())?);
            self.confirmed.lock().unwrap().push(batch.confirmed.len());
            Ok(())
        })
    }
}

/// Connections `src` and `dst`, local directories under `d`, with `src/in` and `dst/out`.
fn directories(d: &Path) {
    std::fs::create_dir_all(d.join("flows")).unwrap();
    std::fs::create_dir_all(d.join("src/in")).unwrap();
    std::fs::create_dir_all(d.join("dst/out")).unwrap();
    std::fs::write(
        d.join("flows/connections.yaml"),
        format!(
            "connections:\n  src: {{ kind: local, root: \"{0}/src\" }}\n  dst: {{ kind: local, root: \"{0}/dst\" }}\n",
            d.display()
        ),
    )
    .unwrap();
}

/// An engine over the flows in `d/flows`, asserting they load without a diagnostic.
fn engine(d: &Path) -> Engine {
    let (project, diags) = load(&Inputs {
        paths: vec![d.join("flows")],
        lookups: None,
        connections: Some(d.join("flows/connections.yaml")),
    });
    assert!(diags.is_empty(), "{diags:?}");
    Engine::new(
        Arc::new(project.unwrap()),
        RunOptions {
            spool_dir: Some(d.join("spool")),
            ..RunOptions::default()
        },
    )
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn items_waiting_for_their_confirmation_leave_their_slots_to_the_next() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    directories(d);
    std::fs::write(
        d.join("flows/moves.yaml"),
        "id: moves\nname: Moves\nversion: '1'\ntrigger: { manual: true }\nsteps:\n  - id: list\n    list: { connection: src, location: in, exclude_prefix: Sent- }\n  - id: files\n    for_each:\n      items: steps.list.files\n      as: file\n      concurrency: 2\n      steps:\n        - id: fetch\n          fetch: { connection: src, location: in, name: \"{{ file.name }}\" }\n        - id: put\n          invoke:\n            put: { connection: dst, location: out, name: \"{{ file.name }}\", file: \"{{ steps.fetch.path }}\" }\n        - id: mark\n          needs: [put]\n          rename: { connection: src, location: in, from: \"{{ file.name }}\", to: \"Sent-{{ file.name }}\" }\n",
    )
    .unwrap();
    let sources: Vec<String> = (0..FILES).map(|i| format!("f{i}.csv")).collect();
    for (i, name) in sources.iter().enumerate() {
        std::fs::write(d.join("src/in").join(name), format!("id\n{i}\n")).unwrap();
    }
    let engine = engine(d);
    let journal = Arc::new(Held {
        open: tokio::sync::Semaphore::new(0),
        confirmed: Mutex::default(),
    });
    let run = {
        let journal: Arc<dyn Journal> = journal.clone();
        tokio::spawn(async move {
            engine
                .start(RunStart {
                    flow: "moves".into(),
                    run_id: ferry::run::new_run_id(),
                    journal: Some(journal),
                    ..RunStart::default()
                })
                .await
        })
    };

    // with the history shut, all of the files are put by a loop of two slots: an item
    // waiting for its put's confirmation left its slot to the next
    let mut put = Vec::new();
    for _ in 0..2_000 {
        put = names(&d.join("dst/out"));
        // (a put under way shows its temporary file)
        if put == sources {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        put, sources,
        "the puts done while the first confirmation waits"
    );
    // and no source is renamed before its put is confirmed
    assert_eq!(names(&d.join("src/in")), sources);

    journal.open.add_permits(1_000);
    let report = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the run ends once the history answers")
        .unwrap()
        .unwrap();
    assert_eq!(report.outcome, Outcome::Succeeded, "{report:#?}");
    let marked: Vec<String> = sources.iter().map(|n| format!("Sent-{n}")).collect();
    assert_eq!(names(&d.join("src/in")), marked);
    for (i, name) in sources.iter().enumerate() {
        assert_eq!(
            std::fs::read_to_string(d.join("dst/out").join(name)).unwrap(),
            format!("id\n{i}\n")
        );
    }
    // the puts of the files that waited were confirmed together: more than two in a write
    let written = journal.confirmed.lock().unwrap().clone();
    assert!(
        written.iter().any(|&n| n > 2),
        "confirmations per journal write: {written:?}"
    );
    assert_eq!(
        written.iter().sum::<usize>(),
        2 * FILES,
        "a put and a rename confirmed per file: {written:?}"
    );
}

/// The records of a file, 4 at once inside a list loop's item, each put to a local directory:
/// their syncs' waits share the item's one slot and never wait for it from each other, so
/// the run ends with every record's file put.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_putting_at_once_inside_a_loop_item_all_end() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    directories(d);
    for concurrency in [1, 2] {
        std::fs::write(
            d.join("flows/rows.yaml"),
            format!("id: rows\nname: Rows\nversion: '1'\ntrigger: {{ manual: true }}\nsteps:\n  - id: list\n    list: {{ connection: src, location: in }}\n  - id: files\n    for_each:\n      items: steps.list.files\n      as: file\n      concurrency: {concurrency}\n      steps:\n        - id: fetch\n          fetch: {{ connection: src, location: in, name: \"{{{{ file.name }}}}\" }}\n        - id: rows\n          for_each:\n            csv: {{ file: \"{{{{ steps.fetch.path }}}}\", columns: [id] }}\n            as: row\n            concurrency: 4\n            steps:\n              - id: put\n                invoke:\n                  put: {{ connection: dst, location: out, name: \"{{{{ file.name }}}}-{{{{ row.number }}}}\", file: \"{{{{ steps.fetch.path }}}}\" }}\n"),
        )
        .unwrap();
        let body: String = (1..=40).map(|i| format!("{i}\n")).collect();
        for f in ["a.csv", "b.csv"] {
            std::fs::write(d.join("src/in").join(f), format!("id\n{body}")).unwrap();
        }
        let engine = engine(d);
        let report = tokio::time::timeout(
            Duration::from_secs(60),
            engine.run("rows", Default::default()),
        )
        .await
        .unwrap_or_else(|_| panic!("concurrency {concurrency}: the run never ended"))
        .unwrap();
        assert_eq!(report.outcome, Outcome::Succeeded, "{report:#?}");
        let mut expected: Vec<String> = ["a.csv", "b.csv"]
            .iter()
            .flat_map(|f| (1..=40).map(move |i| format!("{f}-{i}")))
            .collect();
        expected.sort();
        assert_eq!(
            names(&d.join("dst/out")),
            expected,
            "concurrency {concurrency}"
        );
        std::fs::remove_dir_all(d.join("dst/out")).unwrap();
        std::fs::create_dir_all(d.join("dst/out")).unwrap();
    }
}
