//! A bounded fuzz of flow loading: the shipped flows, lookups and connections file mutated
//! (byte flips, truncations, duplicated and dropped lines, alias bombs, deep nesting) and the
//! shipped flows' templates and expressions mutated (every construct nested deep, long
//! chains, deep blocks, unbalanced delimiters, random tokens spliced in, templates over the
//! length limit), each loaded with the library's own `load`. A case fails on a panic, on a
//! load that takes more than 20 s, on an error diagnostic about the mutated file that has no
//! line and column, and on the death of the process (a stack overflow aborts it).
//!
//! So that a stack overflow is a failing case and not the end of the harness, the cases run
//! in child processes (this same test, run again with `FERRY_FUZZ_CHILD` set), each on a
//! thread with the 2 MiB stack of a tokio worker (where `serve` reloads flows). A child that
//! dies names the case it was running; its input is kept, and the remaining cases go on in a
//! new child, so one run reports every crash it finds. Every crash found is kept as a
//! regression case in `tests/fixtures/fuzz/` (a flow file whose first line is `# expect:`
//! and a text one of its diagnostics must hold, or `no error`), loaded first.
//!
//! The cases come from a fixed seed, so a failure repeats; `FERRY_FUZZ_CASES` and
//! `FERRY_FUZZ_SEED` change them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ferry::compile::{Inputs, load};
use ferry::diag::Severity;

/// Set in a child process: what it runs (`cases SEED FROM COUNT` or `fixtures`).
const CHILD: &str = "FERRY_FUZZ_CHILD";
/// The longest one case may take.
const CASE_TIMEOUT: Duration = Duration::from_secs(20);
/// The stack of a tokio worker thread.
const STACK: usize = 2 * 1024 * 1024;

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

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
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

/// One mutation of a file's bytes; its name for the report.
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

/// A depth for a deep construct: mostly about the limit (64), else up to 600, else up to
/// 6,000 (where the stack overflowed).
fn depth(rng: &mut Rng) -> usize {
    match rng.below(10) {
        0..=4 => 58 + rng.below(14),
        5..=7 => 1 + rng.below(600),
        _ => 1 + rng.below(6000),
    }
}

/// An expression `n` deep of one construct, without quotes (it goes into quoted YAML).
fn deep_expression(rng: &mut Rng, n: usize) -> String {
    let r = |s: &str| s.repeat(n);
    match rng.below(16) {
        0 => format!("1{}", r("+1")),
        1 => format!("run.id{}", r(" ~ run.id")),
        2 => format!("true{}", r(" and false or true")),
        3 => format!("run{}", r(".a")),
        4 => format!("run.id{}", r(" | upper")),
        5 => format!("run{}", r("[0]")),
        6 => format!("range{}", r("()")),
        7 => format!("1{}", r(" is number")),
        8 => format!("{}1{}", r("("), r(")")),
        9 => format!("{}1{}", r("["), r("]")),
        10 => format!("{}1{}", r("{a: "), r("}")),
        11 => format!("{}true", r("not ")),
        12 => format!("{}1", r("- ")),
        13 => format!("{}1{}", r("-("), r(")")),
        14 => format!("1{}", r(" if 1 else 1")),
        _ => format!("{}1{}", r("f(x, "), r(")")),
    }
}

/// A template `n` blocks deep.
fn deep_blocks(rng: &mut Rng, n: usize) -> String {
    let (open, close) = *rng.pick(&[
        ("{% if 1 %}", "{% endif %}"),
        ("{% for i in [1] %}", "{% endfor %}"),
        ("{% with a = 1 %}", "{% endwith %}"),
        ("{% set a %}", "{% endset %}"),
        ("{% filter upper %}", "{% endfilter %}"),
        ("{% macro m() %}", "{% endmacro %}"),
    ]);
    if rng.below(4) == 0 {
        return format!("{{% if 0 %}}{}x{{% endif %}}", "{% elif 0 %}".repeat(n));
    }
    format!("{}{{{{ run.id }}}}{}", open.repeat(n), close.repeat(n))
}

/// Tokens spliced into templates at random.
const TOKENS: &[&str] = &[
    "(",
    ")",
    "[",
    "]",
    "{",
    "}",
    "{{",
    "}}",
    "{%",
    "%}",
    "{#",
    "#}",
    "'",
    "|",
    ".",
    ",",
    ":",
    "~",
    "+",
    "-",
    "*",
    "**",
    "//",
    "==",
    "!=",
    "<",
    ">=",
    "=",
    " not ",
    " and ",
    " or ",
    " in ",
    " is ",
    " if ",
    " else ",
    "elif",
    "endif",
    "endfor",
    "raw",
    "endraw",
    "loop",
    "range(",
    "namespace(",
    "none",
    "true",
    "0",
    "1.5",
    "1e9",
    "-1",
    "run",
    "steps",
    "x",
    "upper",
    "\\",
    "\u{e9}",
    "\u{1F600}",
    "\t",
    " ",
];

/// The byte ranges of the `{{ … }}` and `{% … %}` tags in `text`.
fn tags(text: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(at) = text[i..].find('{').map(|p| p + i) {
        let close = match text.as_bytes().get(at + 1) {
            Some(b'{') => "}}",
            Some(b'%') => "%}",
            _ => {
                i = at + 1;
                continue;
            }
        };
        match text[at + 2..].find(close) {
            Some(e) => {
                out.push((at, at + 2 + e + 2));
                i = at + 2 + e + 2;
            }
            None => break,
        }
    }
    out
}

/// The byte ranges of the values of `when:`, `items:` and `by:` (expressions) in `text`.
fn expression_values(text: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = 0;
    for line in text.split_inclusive('\n') {
        let body = line.trim_end_matches('\n');
        for key in ["when: ", "items: ", "by: "] {
            if let Some(k) = body.find(key)
                && body[..k].trim().is_empty()
            {
                out.push((start + k + key.len(), start + body.len()));
            }
        }
        start += line.len();
    }
    out
}

/// One mutation of a flow's templates or expressions; its name for the report.
fn mutate_templates(rng: &mut Rng, text: &[u8]) -> (&'static str, Vec<u8>) {
    let text = String::from_utf8_lossy(text).into_owned();
    let tags = tags(&text);
    let exprs = expression_values(&text);
    if tags.is_empty() {
        return mutate(rng, text.as_bytes());
    }
    let (s, e) = *rng.pick(&tags);
    let (kind, out) = match rng.below(8) {
        0 | 1 => {
            let n = depth(rng);
            let deep = deep_expression(rng, n);
            (
                "deep template expression",
                format!("{}{{{{ {deep} }}}}{}", &text[..s], &text[e..]),
            )
        }
        2 => {
            // a deep operand spliced into the expression there
            let n = depth(rng);
            let deep = deep_expression(rng, n);
            let inner = &text[s + 2..e - 2];
            let op = *rng.pick(&[" ~ ", " + ", " and ", " | default(", "["]);
            let close = match op {
                " | default(" => ")",
                "[" => "]",
                _ => "",
            };
            (
                "deep operand",
                format!(
                    "{}{}{inner}{op}{deep}{close}{}{}",
                    &text[..s],
                    &text[s..s + 2],
                    &text[e - 2..e],
                    &text[e..]
                ),
            )
        }
        3 => {
            let n = depth(rng);
            let blocks = deep_blocks(rng, n);
            (
                "deep blocks",
                format!("{}{blocks}{}", &text[..s], &text[e..]),
            )
        }
        4 if !exprs.is_empty() => {
            let (vs, ve) = *rng.pick(&exprs);
            let n = depth(rng);
            let deep = deep_expression(rng, n);
            (
                "deep expression field",
                format!("{}\"{deep}\"{}", &text[..vs], &text[ve..]),
            )
        }
        5 => {
            // unbalanced delimiters
            let mut tag = text[s..e].to_string();
            for _ in 0..=rng.below(5) {
                let d = *rng.pick(&["(", ")", "[", "]", "{", "}", "{{", "}}", "{%", "%}", "'"]);
                let at = char_boundary(&tag, rng.below(tag.len() + 1));
                tag.insert_str(at, d);
            }
            (
                "unbalanced delimiters",
                format!("{}{tag}{}", &text[..s], &text[e..]),
            )
        }
        6 => {
            let mut tag = text[s..e].to_string();
            for _ in 0..=rng.below(8) {
                let t = *rng.pick(TOKENS);
                let at = char_boundary(&tag, rng.below(tag.len() + 1));
                tag.insert_str(at, t);
            }
            (
                "spliced tokens",
                format!("{}{tag}{}", &text[..s], &text[e..]),
            )
        }
        _ => {
            // a template about the length limit (64 KiB)
            let len = 60 * 1024 + rng.below(10 * 1024);
            let filler = if rng.below(2) == 0 {
                "x".repeat(len)
            } else {
                "{{ run.id }}".repeat(len / 12)
            };
            (
                "long template",
                format!("{}{filler}{}", &text[..e], &text[e..]),
            )
        }
    };
    (kind, out.into_bytes())
}

fn char_boundary(s: &str, mut at: usize) -> usize {
    while !s.is_char_boundary(at) {
        at -= 1;
    }
    at
}

/// The original files a case may mutate.
struct Corpus {
    flows: Vec<PathBuf>,
    flow_texts: Vec<Vec<u8>>,
    /// The connections file, then the lookups (relative to the repository).
    others: Vec<PathBuf>,
    other_texts: Vec<Vec<u8>>,
}

impl Corpus {
    fn new() -> Corpus {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut flows = Vec::new();
        yaml_files(&repo.join("flows"), &mut flows);
        flows.retain(|f| !f.ends_with("connections.yaml"));
        let mut others = vec![repo.join("flows/connections.yaml")];
        yaml_files(&repo.join("lookups"), &mut others);
        Corpus {
            flow_texts: flows.iter().map(|f| std::fs::read(f).unwrap()).collect(),
            other_texts: others.iter().map(|f| std::fs::read(f).unwrap()).collect(),
            flows,
            others,
        }
    }
}

/// One case: which file is replaced by what.
struct Case {
    /// A flow (its index), else a lookup or the connections file (its index in `others`).
    flow: Option<usize>,
    other: usize,
    kind: &'static str,
    bytes: Vec<u8>,
}

/// The cases of `seed`, in order.
fn cases(seed: u64, corpus: &Corpus) -> impl Iterator<Item = Case> + '_ {
    let mut rng = Rng(seed);
    std::iter::from_fn(move || {
        // a flow three times in four (its templates one time in two), else a lookup or the
        // connections file
        Some(if rng.below(4) > 0 {
            let i = rng.below(corpus.flows.len());
            let (kind, bytes) = if rng.below(2) == 0 {
                mutate_templates(&mut rng, &corpus.flow_texts[i])
            } else {
                mutate(&mut rng, &corpus.flow_texts[i])
            };
            Case {
                flow: Some(i),
                other: 0,
                kind,
                bytes,
            }
        } else {
            let i = rng.below(corpus.others.len());
            let (kind, bytes) = mutate(&mut rng, &corpus.other_texts[i]);
            Case {
                flow: None,
                other: i,
                kind,
                bytes,
            }
        })
    })
}

/// What marks a child's report in its output (libtest writes on the same lines).
const MARK: &str = "FERRY-FUZZ: ";

/// What a child reports, one line each: `start N`, `ok N`, `fail N WHAT`.
fn report(line: &str) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "\n{MARK}{}", line.replace('\n', "\\n")).unwrap();
    out.flush().unwrap();
}

/// A project of the shipped lookups and connections, and a directory for the flow of a case.
struct Project {
    _dir: tempfile::TempDir,
    one: PathBuf,
    /// The lookups and connections files of the copy, as `Corpus::others`.
    others: Vec<PathBuf>,
    inputs: Inputs,
}

impl Project {
    fn new() -> Project {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
        let dir = tempfile::tempdir().unwrap();
        copy_tree(&repo.join("lookups"), &dir.path().join("lookups"));
        let connections = dir.path().join("connections.yaml");
        std::fs::copy(repo.join("flows/connections.yaml"), &connections).unwrap();
        let one = dir.path().join("one");
        std::fs::create_dir_all(&one).unwrap();
        let mut others = vec![connections.clone()];
        yaml_files(&dir.path().join("lookups"), &mut others);
        Project {
            inputs: Inputs {
                paths: vec![one.clone()],
                lookups: Some(dir.path().join("lookups")),
                connections: Some(connections),
            },
            _dir: dir,
            one,
            others,
        }
    }

    /// Loads `flow` (named `name`) with the lookups and connections; `None` when the load is
    /// right, else what is wrong. `target` is the file whose diagnostics must have a place.
    fn check(
        &self,
        name: &str,
        flow: &[u8],
        target: &Path,
        expect: Option<&str>,
    ) -> Option<String> {
        for e in std::fs::read_dir(&self.one).unwrap() {
            std::fs::remove_file(e.unwrap().path()).unwrap();
        }
        std::fs::write(self.one.join(name), flow).unwrap();
        let diags = match std::panic::catch_unwind(|| load(&self.inputs).1) {
            Err(_) => return Some("load panicked".into()),
            Ok(d) => d,
        };
        if let Some(d) = diags.iter().find(|d| {
            d.severity == Severity::Error
                && d.file.as_deref() == Some(target)
                && (d.line.is_none() || d.column.is_none())
        }) {
            return Some(format!("a diagnostic without a position: {d:?}"));
        }
        if expect == Some("no error") {
            let errors: Vec<String> = diags
                .iter()
                .filter(|d| d.severity == Severity::Error)
                .map(|d| d.one_line())
                .collect();
            return (!errors.is_empty()).then(|| format!("errors: {errors:?}"));
        }
        if let Some(text) = expect
            && !diags.iter().any(|d| d.one_line().contains(text))
        {
            let got: Vec<String> = diags.iter().map(|d| d.one_line()).collect();
            return Some(format!("no diagnostic holds {text:?}: {got:?}"));
        }
        None
    }
}

/// The child: runs `spec` on a thread with a tokio worker's stack.
fn child(spec: &str) {
    let spec = spec.to_string();
    std::thread::Builder::new()
        .stack_size(STACK)
        .spawn(move || {
            let words: Vec<&str> = spec.split(' ').collect();
            match words.as_slice() {
                ["fixtures", from] => child_fixtures(from.parse().unwrap()),
                ["cases", seed, from, count] => child_cases(
                    seed.parse().unwrap(),
                    from.parse().unwrap(),
                    count.parse().unwrap(),
                ),
                _ => panic!("{CHILD}={spec}?"),
            }
        })
        .unwrap()
        .join()
        .unwrap();
}

fn child_cases(seed: u64, from: usize, count: usize) {
    let corpus = Corpus::new();
    let project = Project::new();
    for (n, case) in cases(seed, &corpus).enumerate().skip(from).take(count) {
        report(&format!("start {n}"));
        let result = match case.flow {
            Some(i) => {
                let name = corpus.flows[i]
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                project.check(&name, &case.bytes, &project.one.join(&name), None)
            }
            None => {
                let target = &project.others[case.other];
                std::fs::write(target, &case.bytes).unwrap();
                let r = project.check("flow.yaml", &corpus.flow_texts[0], target, None);
                std::fs::write(target, &corpus.other_texts[case.other]).unwrap();
                r
            }
        };
        match result {
            None => report(&format!("ok {n}")),
            Some(what) => report(&format!("fail {n} {what}")),
        }
    }
}

/// The regression cases: each file of `tests/fixtures/fuzz/`, loaded as a flow.
fn fixtures() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fuzz");
    let mut out = Vec::new();
    yaml_files(&dir, &mut out);
    out
}

fn child_fixtures(from: usize) {
    let project = Project::new();
    for (n, path) in fixtures().iter().enumerate().skip(from) {
        report(&format!("start {n}"));
        let text = std::fs::read(path).unwrap();
        let expect = String::from_utf8_lossy(&text)
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect: "))
            .map(str::to_string);
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let result = match &expect {
            None => Some("no `# expect:` first line".to_string()),
            Some(e) => project.check(&name, &text, &project.one.join(&name), Some(e)),
        };
        match result {
            None => report(&format!("ok {n}")),
            Some(what) => report(&format!("fail {n} {what}")),
        }
    }
}

/// Runs `spec` in child processes from case `from` up to `to`, a new child after each one
/// that dies; returns the cases run and the failures, each described by `describe`.
fn supervise(
    spec: impl Fn(usize) -> String,
    from: usize,
    to: usize,
    describe: &dyn Fn(usize) -> String,
) -> (usize, Vec<String>) {
    let mut failures = Vec::new();
    let mut done = 0;
    let mut next = from;
    while next < to {
        let mut child: Child = Command::new(std::env::current_exe().unwrap())
            .args([
                "mutated_flows_load_without_panic_hang_or_unplaced_diagnostic",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD, spec(next))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, rx) = mpsc::channel::<String>();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                if tx.send(line.unwrap_or_default()).is_err() {
                    break;
                }
            }
        });
        let stderr = child.stderr.take().unwrap();
        let errors = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut BufReader::new(stderr), &mut s);
            s
        });
        let mut current = None;
        let mut hung = false;
        loop {
            match rx.recv_timeout(CASE_TIMEOUT) {
                Ok(line) => {
                    let Some(at) = line.find(MARK) else { continue };
                    let mut words = line[at + MARK.len()..].splitn(3, ' ');
                    let (tag, n) = (words.next(), words.next().and_then(|n| n.parse().ok()));
                    match (tag, n) {
                        (Some("start"), Some(n)) => current = Some(n),
                        (Some("ok"), Some(n)) => {
                            done += 1;
                            next = n + 1;
                            current = None;
                        }
                        (Some("fail"), Some(n)) => {
                            done += 1;
                            next = n + 1;
                            current = None;
                            let what = words.next().unwrap_or("").replace("\\n", "\n");
                            failures.push(format!("{what}\n{}", describe(n)));
                        }
                        _ => {}
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    hung = true;
                    let _ = child.kill();
                    break;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        let status = child.wait().unwrap();
        let stderr = errors.join().unwrap_or_default();
        match current {
            Some(n) => {
                done += 1;
                next = n + 1;
                let how = if hung {
                    format!("did not end within {} s", CASE_TIMEOUT.as_secs())
                } else {
                    let last = stderr.lines().rev().take(3).collect::<Vec<_>>();
                    format!("killed the process ({status}): {last:?}")
                };
                failures.push(format!("the load {how}\n{}", describe(n)));
            }
            None if next < to => {
                panic!("the child stopped before case {next} ({status}):\n{stderr}")
            }
            None => {}
        }
    }
    (done, failures)
}

/// Keeps a failing input where a person can find it.
fn keep(name: &str, bytes: &[u8]) -> PathBuf {
    let out = std::env::temp_dir().join(format!("ferry-fuzz-{name}"));
    std::fs::write(&out, bytes).unwrap();
    out
}

#[test]
fn mutated_flows_load_without_panic_hang_or_unplaced_diagnostic() {
    if let Ok(spec) = std::env::var(CHILD) {
        child(&spec);
        return;
    }
    let count: usize = std::env::var("FERRY_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4000);
    let seed: u64 = std::env::var("FERRY_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5EED_F00D);
    let started = Instant::now();

    // the crashes found before, each a regression case
    let fixtures = fixtures();
    assert!(
        !fixtures.is_empty(),
        "tests/fixtures/fuzz holds the regression cases"
    );
    let (n, mut failures) = supervise(|from| format!("fixtures {from}"), 0, fixtures.len(), &|n| {
        format!("regression case {}", fixtures[n].display())
    });
    assert_eq!(n, fixtures.len(), "every regression case ran");

    // two workers, each a child process at a time, each with its own seed
    let workers = 2;
    let per = count / workers;
    let handles: Vec<_> = (0..workers)
        .map(|w| {
            let seed = seed + w as u64;
            std::thread::spawn(move || {
                let corpus = Corpus::new();
                let describe = |n: usize| {
                    let case = cases(seed, &corpus).nth(n).unwrap();
                    let file = match case.flow {
                        Some(i) => corpus.flows[i].clone(),
                        None => corpus.others[case.other].clone(),
                    };
                    let name = file.file_name().unwrap().to_string_lossy();
                    format!(
                        "case {n} (seed {seed}): {} of {}; the input is kept at {}",
                        case.kind,
                        file.display(),
                        keep(&format!("{seed}-{n}-{name}"), &case.bytes).display()
                    )
                };
                supervise(
                    |from| format!("cases {seed} {from} {}", per - from),
                    0,
                    per,
                    &describe,
                )
            })
        })
        .collect();
    let mut done = 0;
    for h in handles {
        let (n, f) = h.join().unwrap();
        done += n;
        failures.extend(f);
    }
    eprintln!(
        "{} regression cases and {done} cases in {:.1} s; {} failed",
        fixtures.len(),
        started.elapsed().as_secs_f64(),
        failures.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    assert_eq!(done, per * workers, "every case ran");
}
