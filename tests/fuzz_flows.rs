//! A bounded fuzz of flow loading: the shipped flows, lookups and connections file mutated
//! (byte flips, truncations, duplicated and dropped lines, alias bombs, deep nesting) and
//! loaded with the library's own `load`. A case fails on a panic, on a load that takes more
//! than 20 s, or on an error diagnostic about the mutated file that has no line and column.
//! The cases come from a fixed seed, so a failure repeats; `FERRY_FUZZ_CASES` and
//! `FERRY_FUZZ_SEED` change them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ferry::compile::{Inputs, load};
use ferry::diag::Severity;

/// xorshift64*: deterministic and dependency-free.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % (n.max(1) as u64)).unwrap()
    }
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            yaml_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "yaml") {
            out.push(p);
        }
    }
}

/// One mutation of `text`; its name for the report.
fn mutate(rng: &mut Rng, text: &[u8]) -> (&'static str, Vec<u8>) {
    let mut bytes = text.to_vec();
    match rng.below(8) {
        0 | 1 => {
            for _ in 0..=rng.below(4) {
                let at = rng.below(bytes.len());
                let pick: &[u8] = b"\0\t\n\r :-[]{}&*!|>'\"#%@`\\,?\xff\xc3";
                bytes[at] = if rng.below(2) == 0 {
                    pick[rng.below(pick.len())]
                } else {
                    u8::try_from(rng.below(256)).unwrap()
                };
            }
            ("byte flips", bytes)
        }
        2 => {
            bytes.truncate(rng.below(bytes.len()));
            ("truncation", bytes)
        }
        3 | 4 => {
            let text = String::from_utf8_lossy(&bytes).into_owned();
            let mut lines: Vec<&str> = text.lines().collect();
            let i = rng.below(lines.len());
            if rng.below(3) == 0 {
                lines.remove(i);
                ("dropped line", lines.join("\n").into_bytes())
            } else {
                let line = lines[i];
                for _ in 0..=rng.below(3) {
                    lines.insert(i, line);
                }
                ("duplicated line", lines.join("\n").into_bytes())
            }
        }
        5 => {
            // a billion laughs, at the top or as a value
            let mut bomb = String::from(
                "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
            );
            let names = ["b", "c", "d", "e", "f", "g", "h", "i"];
            let mut prev = "a";
            for n in names {
                bomb.push_str(&format!(
                    "{n}: &{n} [{}]\n",
                    vec![format!("*{prev}"); 9].join(",")
                ));
                prev = n;
            }
            if rng.below(2) == 0 {
                ("alias bomb", bomb.into_bytes())
            } else {
                let mut out = bytes;
                out.extend_from_slice(b"\nbomb:\n");
                for l in bomb.lines() {
                    out.extend_from_slice(format!("  {l}\n").as_bytes());
                }
                ("alias bomb in a value", out)
            }
        }
        6 => {
            let depth = 1 + rng.below(50_000);
            let mut out = bytes;
            out.extend_from_slice(b"\ndeep: ");
            out.extend(std::iter::repeat_n(b'[', depth));
            out.extend(std::iter::repeat_n(b']', depth));
            out.push(b'\n');
            ("deep flow nesting", out)
        }
        _ => {
            let depth = 1 + rng.below(1_500);
            let mut out = bytes;
            out.extend_from_slice(b"\ndeep:\n");
            for i in 1..depth {
                out.extend(std::iter::repeat_n(b' ', i));
                out.extend_from_slice(b"- \n");
            }
            ("deep block nesting", out)
        }
    }
}

/// What a worker reports after each case: `Err` with the failure.
type Progress = Result<(), String>;

#[test]
fn mutated_flows_load_without_panic_hang_or_unplaced_diagnostic() {
    let cases: usize = std::env::var("FERRY_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let seed: u64 = std::env::var("FERRY_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5EED_F00D);
    let started = Instant::now();
    let (tx, rx) = mpsc::channel::<Progress>();
    let workers = 2;
    for w in 0..workers {
        let tx = tx.clone();
        // the stack of a tokio thread, where serve loads flows
        std::thread::Builder::new()
            .stack_size(2 * 1024 * 1024)
            .spawn(move || worker(seed + w as u64, cases / workers, &tx))
            .unwrap();
    }
    drop(tx);
    let mut done = 0;
    loop {
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(Ok(())) => done += 1,
            Ok(Err(failure)) => panic!("{failure}"),
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                panic!("a load did not end within 20 s (after {done} cases)")
            }
        }
    }
    assert_eq!(done, cases / workers * workers, "every case ran");
    eprintln!("{done} cases in {:.1} s", started.elapsed().as_secs_f64());
}

/// Runs `cases` cases from `seed` on a copy of the shipped lookups and connections of its
/// own. Each case loads one flow (mutated, or the first shipped flow when a lookup or the
/// connections file is mutated) with the lookups and the connections: a whole project per
/// case would make a few thousand cases take minutes here.
fn worker(seed: u64, cases: usize, tx: &mpsc::Sender<Progress>) {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    copy_tree(&repo.join("lookups"), &dir.path().join("lookups"));
    let connections = dir.path().join("connections.yaml");
    std::fs::copy(repo.join("flows/connections.yaml"), &connections).unwrap();
    let one = dir.path().join("one");
    std::fs::create_dir_all(&one).unwrap();
    let inputs = Inputs {
        paths: vec![one.clone()],
        lookups: Some(dir.path().join("lookups")),
        connections: Some(connections.clone()),
    };
    let mut flows = Vec::new();
    yaml_files(&repo.join("flows"), &mut flows);
    flows.retain(|f| !f.ends_with("connections.yaml"));
    let mut others = vec![connections.clone()];
    yaml_files(&dir.path().join("lookups"), &mut others);
    let flow_texts: Vec<Vec<u8>> = flows.iter().map(|f| std::fs::read(f).unwrap()).collect();
    let other_texts: Vec<Vec<u8>> = others.iter().map(|f| std::fs::read(f).unwrap()).collect();
    let mut rng = Rng(seed);
    for case in 0..cases {
        // a flow three times in four, else a lookup or the connections file
        let (target, original, flow) = if rng.below(4) > 0 {
            let i = rng.below(flows.len());
            (
                one.join(flows[i].file_name().unwrap()),
                &flow_texts[i],
                flow_texts[i].clone(),
            )
        } else {
            let i = rng.below(others.len());
            (others[i].clone(), &other_texts[i], flow_texts[0].clone())
        };
        let (kind, bytes) = mutate(&mut rng, original);
        for e in std::fs::read_dir(&one).unwrap() {
            std::fs::remove_file(e.unwrap().path()).unwrap();
        }
        if target.starts_with(&one) {
            std::fs::write(&target, &bytes).unwrap();
        } else {
            std::fs::write(one.join("flow.yaml"), &flow).unwrap();
            std::fs::write(&target, &bytes).unwrap();
        }
        let what = || {
            format!(
                "case {case} (seed {seed}): {kind} of {}; the input is kept at {}",
                target.display(),
                keep(&target, &bytes).display()
            )
        };
        let result = match std::panic::catch_unwind(|| load(&inputs).1) {
            Err(_) => Err(format!("load panicked: {}", what())),
            Ok(diags) => match diags.iter().find(|d| {
                d.severity == Severity::Error
                    && d.file.as_deref() == Some(target.as_path())
                    && (d.line.is_none() || d.column.is_none())
            }) {
                Some(d) => Err(format!(
                    "a diagnostic without a position: {d:?}\n{}",
                    what()
                )),
                None => Ok(()),
            },
        };
        let failed = result.is_err();
        let _ = tx.send(result);
        if failed {
            return;
        }
        if !target.starts_with(&one) {
            std::fs::write(&target, original).unwrap();
        }
    }
}

/// Keeps a failing input where a person can find it.
fn keep(original: &Path, bytes: &[u8]) -> PathBuf {
    let out = std::env::temp_dir().join(format!(
        "ferry-fuzz-{}",
        original.file_name().unwrap().to_string_lossy()
    ));
    std::fs::write(&out, bytes).unwrap();
    out
}
