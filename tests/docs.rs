//! The documentation cannot drift: every fenced block of `README.md` and `docs/*.md` is
//! checked by what it is, and every relative link resolves.
//!
//! - ```` ```sh ````: `bash -n` accepts it; every `ferry …` command in it (also after `env`,
//!   `VAR=value`, `sudo`, a pipe or `&&`, and `cargo run -- …`) parses with ferry's own
//!   command line; those that only read (`validate`, `test`, `graph`, `schema` without
//!   `--write`) and name no placeholder are run in a copy of the repository and must succeed.
//! - ```` ```sh run ````: the whole block runs with `bash -e` in an empty directory, `ferry` on
//!   the `PATH`, and must succeed.
//! - ```` ```yaml flow ````, ```` ```yaml lookup ````: the file is added to a copy of the
//!   shipped flows and lookups and `ferry validate` must accept it.
//!   ```` ```yaml connections ````: the connections, alone in a `connections.yaml`, validate.
//!   ```` ```yaml test ````: a flow test file, run by `ferry test` in a copy of the repository;
//!   it must pass. ```` ```yaml fragment ````: part of a file, parsed by ferry's YAML reader.
//!   A bare ```` ```yaml ```` is refused: say which of these it is.
//! - ```` ```mermaid ````: preceded by `<!-- ferry graph FLOW -->`, it is exactly what `ferry
//!   graph FLOW` prints for the shipped flows.
//! - ```` ```text ````: output shown as printed; the `ferry …` commands in it parse.
//!
//! Any other block kind fails, so that no example goes unchecked.

#![allow(clippy::unwrap_used)] // tests unwrap: a panic is the failure report

#[path = "support/project.rs"]
mod project;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use clap::Parser as _;
use project::{copy_dir, repo};

/// One fenced block of a Markdown file.
#[derive(Debug)]
struct Block {
    /// `README.md` or `docs/NAME.md`, and the line of its opening fence.
    at: String,
    /// The info string after the fence (`sh`, `yaml flow`, …).
    info: String,
    /// The lines between the fences.
    text: String,
    /// The last non-empty line before the fence.
    before: String,
}

/// README.md and every Markdown file under docs/, relative to the repository.
fn doc_files() -> Vec<String> {
    let mut files = vec!["README.md".to_string()];
    let mut docs: Vec<String> = std::fs::read_dir(repo().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".md"))
        .map(|n| format!("docs/{n}"))
        .collect();
    docs.sort();
    files.extend(docs);
    files
}

fn read(file: &str) -> String {
    std::fs::read_to_string(repo().join(file)).unwrap()
}

/// The fenced blocks of a file; an unclosed fence is a failure.
fn blocks(file: &str) -> Vec<Block> {
    let text = read(file);
    let mut out = Vec::new();
    let mut open: Option<(usize, String, String, Vec<&str>)> = None;
    let mut before = String::new();
    for (i, line) in text.lines().enumerate() {
        let fence = line.trim_start().starts_with("```");
        match open.take() {
            None if fence => {
                let info = line.trim_start().trim_start_matches('`').trim().to_string();
                open = Some((i + 1, info, before.clone(), Vec::new()));
            }
            None => {
                if !line.trim().is_empty() {
                    before = line.trim().to_string();
                }
            }
            Some((at, info, b, lines)) if fence && line.trim() == "```" => {
                out.push(Block {
                    at: format!("{file}:{at}"),
                    info,
                    text: lines.join("\n"),
                    before: b,
                });
                before.clear();
            }
            Some((at, info, b, mut lines)) => {
                lines.push(line);
                open = Some((at, info, b, lines));
            }
        }
    }
    if let Some((at, ..)) = open {
        panic!("{file}:{at}: a fence that is never closed");
    }
    out
}

fn all_blocks() -> Vec<Block> {
    doc_files().iter().flat_map(|f| blocks(f)).collect()
}

/// A word of a shell line, or an operator between commands.
#[derive(Debug, PartialEq)]
enum Tok {
    Word(String),
    Op,
}

/// Splits a shell line into words and command separators (`|`, `||`, `&&`, `;`, `&`),
/// dropping redirections with their targets and comments. Enough for documentation lines.
fn tokens(line: &str) -> Vec<Tok> {
    let chars: Vec<char> = line.chars().collect();
    let mut out = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut skip_next_word = false;
    let mut i = 0;
    let push = |word: &mut String, in_word: &mut bool, skip: &mut bool, out: &mut Vec<Tok>| {
        if *in_word {
            if *skip {
                *skip = false;
            } else {
                out.push(Tok::Word(std::mem::take(word)));
            }
            word.clear();
            *in_word = false;
        }
    };
    while i < chars.len() {
        let c = chars[i];
        match c {
            '\'' => {
                in_word = true;
                i += 1;
                while i < chars.len() && chars[i] != '\'' {
                    word.push(chars[i]);
                    i += 1;
                }
            }
            '"' => {
                in_word = true;
                i += 1;
                while i < chars.len() && chars[i] != '"' {
                    if chars[i] == '\\' && i + 1 < chars.len() {
                        i += 1;
                    }
                    word.push(chars[i]);
                    i += 1;
                }
            }
            '\\' if i + 1 < chars.len() => {
                in_word = true;
                word.push(chars[i + 1]);
                i += 1;
            }
            '#' if !in_word => break,
            ' ' | '\t' => push(&mut word, &mut in_word, &mut skip_next_word, &mut out),
            '|' | ';' | '&' => {
                push(&mut word, &mut in_word, &mut skip_next_word, &mut out);
                if chars.get(i + 1) == Some(&c) {
                    i += 1;
                }
                out.push(Tok::Op);
            }
            '>' | '<' => {
                // `2>` — the digits before belong to the redirection
                if in_word && word.chars().all(|d| d.is_ascii_digit()) {
                    word.clear();
                    in_word = false;
                } else {
                    push(&mut word, &mut in_word, &mut skip_next_word, &mut out);
                }
                if chars.get(i + 1) == Some(&'&') {
                    // `>&1`: the descriptor is the target
                    i += 2;
                    while i < chars.len() && chars[i].is_ascii_digit() {
                        i += 1;
                    }
                    continue;
                }
                while chars.get(i + 1) == Some(&'>') {
                    i += 1;
                }
                skip_next_word = true;
            }
            _ => {
                in_word = true;
                word.push(c);
            }
        }
        i += 1;
    }
    push(&mut word, &mut in_word, &mut skip_next_word, &mut out);
    out
}

/// The `ferry …` commands of a block, each as its argument list with `ferry` first, and the
/// line they start on.
fn ferry_commands(text: &str) -> Vec<(usize, Vec<String>)> {
    let mut logical: Vec<(usize, String)> = Vec::new();
    let mut pending: Option<(usize, String)> = None;
    for (i, line) in text.lines().enumerate() {
        let (n, mut acc) = pending.take().unwrap_or((i, String::new()));
        match line.strip_suffix('\\') {
            Some(part) => {
                acc.push_str(part);
                acc.push(' ');
                pending = Some((n, acc));
            }
            None => {
                acc.push_str(line);
                logical.push((n, acc));
            }
        }
    }
    logical.extend(pending);
    let mut out = Vec::new();
    for (n, line) in logical {
        let mut simple: Vec<String> = Vec::new();
        let mut toks = tokens(&line);
        toks.push(Tok::Op);
        for t in toks {
            match t {
                Tok::Word(w) => simple.push(w),
                Tok::Op => {
                    let words: Vec<String> = std::mem::take(&mut simple)
                        .into_iter()
                        .skip_while(|w| {
                            matches!(w.as_str(), "env" | "sudo" | "time" | "nohup" | "export")
                                || (w.contains('=')
                                    && !w.starts_with('-')
                                    && w.split('=').next().unwrap().chars().all(|c| {
                                        c.is_ascii_uppercase() || c == '_' || c.is_ascii_digit()
                                    }))
                        })
                        .collect();
                    if words.first().map(String::as_str) == Some("ferry") {
                        out.push((n, words));
                    } else if words.len() >= 3 && words[..3] == ["cargo", "run", "--"] {
                        let mut args = vec!["ferry".to_string()];
                        args.extend(words[3..].iter().cloned());
                        out.push((n, args));
                    }
                }
            }
        }
    }
    out
}

/// The line of a block's `n`th line (0-based) in its file.
fn line_of(block: &Block, n: usize) -> String {
    let (file, at) = block.at.rsplit_once(':').unwrap();
    format!("{file}:{}", at.parse::<usize>().unwrap() + 1 + n)
}

fn ferry() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ferry"));
    for (k, _) in std::env::vars() {
        if k.starts_with("FERRY_") {
            c.env_remove(k);
        }
    }
    c
}

fn shown(o: &Output) -> String {
    format!(
        "exit {:?}\n{}{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A copy of what the shipped project's commands read: flows, lookups, schemas, examples.
fn repo_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for d in ["flows", "lookups", "schemas", "examples"] {
        copy_dir(&repo().join(d), &dir.path().join(d));
    }
    dir
}

/// A placeholder a reader replaces (`FLOW`, `ID`, `01a2…`): the command is parsed, not run.
fn has_placeholder(args: &[String]) -> bool {
    args.iter().any(|a| {
        a.contains('…')
            || (a.len() >= 2
                && a.chars().all(|c| c.is_ascii_uppercase() || c == '_')
                && !a.starts_with('-'))
    })
}

/// Checks one command: it parses; a reading command without placeholders runs and succeeds.
/// Returns the problems, and whether the command ran.
fn check_command(at: &str, args: &[String], problems: &mut Vec<String>) -> bool {
    match ferry::cli::Cli::try_parse_from(args) {
        Ok(_) => {}
        Err(e)
            if matches!(
                e.kind(),
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion
            ) => {}
        Err(e) => {
            problems.push(format!("{at}: `{}` does not parse:\n{e}", args.join(" ")));
            return false;
        }
    }
    let sub = args.iter().skip(1).find(|a| !a.starts_with('-'));
    let reads = matches!(
        sub.map(String::as_str),
        Some("validate" | "test" | "graph" | "schema")
    );
    if !reads || has_placeholder(args) || args.iter().any(|a| a == "--write") {
        return false;
    }
    let dir = repo_copy();
    let o = ferry()
        .args(&args[1..])
        .current_dir(dir.path())
        .output()
        .unwrap();
    if !o.status.success() {
        problems.push(format!("{at}: `{}` failed: {}", args.join(" "), shown(&o)));
    }
    true
}

/// `ferry validate flows` in `dir`, which must succeed.
fn validate(dir: &Path, block: &Block, problems: &mut Vec<String>) {
    let o = ferry()
        .args(["validate", "flows"])
        .current_dir(dir)
        .output()
        .unwrap();
    if !o.status.success() {
        problems.push(format!(
            "{}: the {} does not validate: {}",
            block.at,
            block.info,
            shown(&o)
        ));
    }
}

/// Checks one block; returns what it did, for the summary.
fn check_block(i: usize, block: &Block, problems: &mut Vec<String>) -> &'static str {
    let words: Vec<&str> = block.info.split_whitespace().collect();
    match words.as_slice() {
        ["sh"] | ["sh", "run"] => {
            let o = Command::new("bash")
                .args(["-n", "-c", &block.text])
                .output()
                .unwrap();
            if !o.status.success() {
                problems.push(format!("{}: not valid shell: {}", block.at, shown(&o)));
            }
            let mut ran = false;
            for (n, args) in ferry_commands(&block.text) {
                let at = line_of(block, n);
                if words.len() == 2 {
                    // the block runs as a whole below; each command must still parse
                    if let Err(e) = ferry::cli::Cli::try_parse_from(&args) {
                        problems.push(format!("{at}: `{}` does not parse:\n{e}", args.join(" ")));
                    }
                } else {
                    ran |= check_command(&at, &args, problems);
                }
            }
            if words.len() == 2 {
                let dir = tempfile::tempdir().unwrap();
                let bin = Path::new(env!("CARGO_BIN_EXE_ferry")).parent().unwrap();
                let path = format!(
                    "{}:{}",
                    bin.display(),
                    std::env::var("PATH").unwrap_or_default()
                );
                let mut c = Command::new("bash");
                for (k, _) in std::env::vars() {
                    if k.starts_with("FERRY_") {
                        c.env_remove(k);
                    }
                }
                let o = c
                    .args(["-e", "-o", "pipefail", "-c", &block.text])
                    .env("PATH", path)
                    .current_dir(dir.path())
                    .output()
                    .unwrap();
                if !o.status.success() {
                    problems.push(format!("{}: the block failed: {}", block.at, shown(&o)));
                }
                "shell block run"
            } else if ran {
                "shell block, commands parsed, reading ones run"
            } else {
                "shell block, commands parsed"
            }
        }
        ["text"] => {
            for (n, args) in ferry_commands(&block.text) {
                if let Err(e) = ferry::cli::Cli::try_parse_from(&args) {
                    let at = line_of(block, n);
                    problems.push(format!("{at}: `{}` does not parse:\n{e}", args.join(" ")));
                }
            }
            "text"
        }
        ["yaml", "flow"] => {
            let dir = repo_copy();
            std::fs::write(
                dir.path().join(format!("flows/docs_example_{i}.yaml")),
                &block.text,
            )
            .unwrap();
            validate(dir.path(), block, problems);
            "flow validated"
        }
        ["yaml", "lookup"] => {
            let dir = repo_copy();
            std::fs::write(
                dir.path().join(format!("lookups/docs_example_{i}.yaml")),
                &block.text,
            )
            .unwrap();
            validate(dir.path(), block, problems);
            "lookup validated"
        }
        ["yaml", "connections"] => {
            let dir = tempfile::tempdir().unwrap();
            std::fs::create_dir_all(dir.path().join("flows")).unwrap();
            let indented: String = block.text.lines().map(|l| format!("  {l}\n")).collect();
            std::fs::write(
                dir.path().join("flows/connections.yaml"),
                format!("connections:\n{indented}"),
            )
            .unwrap();
            validate(dir.path(), block, problems);
            "connections validated"
        }
        ["yaml", "test"] => {
            let dir = repo_copy();
            let file = format!("flows/tests/docs_example_{i}.test.yaml");
            std::fs::write(dir.path().join(&file), &block.text).unwrap();
            let o = ferry()
                .args(["test", &file])
                .current_dir(dir.path())
                .output()
                .unwrap();
            let out = String::from_utf8_lossy(&o.stdout);
            if !o.status.success() || !out.contains(" 0 failed") {
                problems.push(format!("{}: the flow test fails: {}", block.at, shown(&o)));
            }
            "flow test run"
        }
        ["yaml", "fragment"] => {
            if let Err(e) = ferry::yaml::SourceDoc::parse(Path::new(&block.at), &block.text) {
                problems.push(format!("{}: not YAML: {e:?}", block.at));
            }
            "fragment parsed"
        }
        ["mermaid"] => {
            let flow = block
                .before
                .strip_prefix("<!-- ferry graph ")
                .and_then(|r| r.strip_suffix(" -->"));
            let Some(flow) = flow else {
                problems.push(format!(
                    "{}: a mermaid block must follow `<!-- ferry graph FLOW -->`",
                    block.at
                ));
                return "graph";
            };
            let o = ferry()
                .args(["graph", flow])
                .current_dir(repo())
                .output()
                .unwrap();
            let printed = String::from_utf8_lossy(&o.stdout);
            if !o.status.success() || printed.trim_end() != block.text.trim_end() {
                problems.push(format!(
                    "{}: not what `ferry graph {flow}` prints now:\n{}",
                    block.at,
                    shown(&o)
                ));
            }
            "graph compared"
        }
        _ => {
            problems.push(format!(
                "{}: a ```{} block: use sh, sh run, text, mermaid or yaml flow|lookup|connections|test|fragment",
                block.at, block.info
            ));
            "unknown"
        }
    }
}

#[test]
fn every_block_of_the_docs_is_run_validated_or_parsed() {
    let blocks = all_blocks();
    let mut problems = Vec::new();
    let mut summary: std::collections::BTreeMap<&str, usize> = Default::default();
    for (i, b) in blocks.iter().enumerate() {
        *summary.entry(check_block(i, b, &mut problems)).or_default() += 1;
    }
    let commands: usize = blocks
        .iter()
        .filter(|b| b.info.starts_with("sh") || b.info == "text")
        .map(|b| ferry_commands(&b.text).len())
        .sum();
    println!(
        "{} blocks checked ({commands} ferry commands parsed): {summary:?}",
        blocks.len()
    );
    assert!(blocks.len() >= 25, "{} blocks", blocks.len());
    assert!(problems.is_empty(), "\n{}", problems.join("\n\n"));
}

/// GitHub's anchor of a heading: lower case, punctuation dropped, spaces as hyphens.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The anchors of a Markdown file's headings (outside fenced blocks).
fn anchors(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced || !line.starts_with('#') {
            continue;
        }
        let s = slug(line.trim_start_matches('#'));
        let n = out
            .iter()
            .filter(|a| **a == s || a.starts_with(&format!("{s}-")))
            .count();
        out.push(if n == 0 { s } else { format!("{s}-{n}") });
    }
    out
}

/// The targets of a Markdown file's inline links, outside fenced blocks and code spans.
fn links(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut fenced = false;
    for (n, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        // drop code spans: a `](…)` inside one is not a link
        let plain: String = line
            .split('`')
            .enumerate()
            .filter(|(i, _)| i % 2 == 0)
            .map(|(_, s)| s)
            .collect::<Vec<_>>()
            .join("``");
        let mut rest = plain.as_str();
        while let Some(i) = rest.find("](") {
            let after = &rest[i + 2..];
            let end = after.find(')').unwrap_or(after.len());
            out.push((n + 1, after[..end].to_string()));
            rest = &after[end..];
        }
    }
    out
}

#[test]
fn every_relative_link_and_anchor_of_the_docs_resolves() {
    let mut problems = Vec::new();
    let mut checked = 0;
    for file in doc_files() {
        let text = read(&file);
        let dir = Path::new(&file).parent().unwrap().to_path_buf();
        for (line, target) in links(&text) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            checked += 1;
            let (path, anchor) = match target.split_once('#') {
                Some((p, a)) => (p, Some(a)),
                None => (target.as_str(), None),
            };
            let resolved: PathBuf = if path.is_empty() {
                PathBuf::from(&file)
            } else {
                dir.join(path)
            };
            let full = repo().join(&resolved);
            if !full.exists() {
                problems.push(format!(
                    "{file}:{line}: `{target}`: no {}",
                    resolved.display()
                ));
                continue;
            }
            if let Some(anchor) = anchor {
                let target_text = std::fs::read_to_string(&full).unwrap_or_default();
                if !anchors(&target_text).iter().any(|a| a == anchor) {
                    problems.push(format!(
                        "{file}:{line}: `{target}`: {} has no heading #{anchor} (it has: {})",
                        resolved.display(),
                        anchors(&target_text).join(", ")
                    ));
                }
            }
        }
    }
    assert!(checked >= 30, "{checked} links");
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

/// The README stays a front door: short, its first commands the whole set-up (the demo on
/// the embedded default, then the tests as CI runs them), a table of contents naming every
/// page of docs/, and the Rust version Cargo.toml requires.
#[test]
fn the_readme_is_a_front_door() {
    let readme = read("README.md");
    assert!(
        readme.lines().count() <= 250,
        "README.md has {} lines",
        readme.lines().count()
    );
    let first = &blocks("README.md")[0];
    assert_eq!(first.info, "sh", "{}", first.at);
    let commands: Vec<&str> = first
        .text
        .lines()
        .map(|l| l.split('#').next().unwrap().trim())
        .collect();
    assert_eq!(
        commands,
        ["cargo run -- demo", "bash .ci/run"],
        "{}",
        first.at
    );
    // .ci/run runs exactly the README's test command
    let ci = read(".ci/run");
    assert!(
        ci.lines().any(|l| l.trim() == "cargo test --locked"),
        ".ci/run does not run `cargo test --locked`"
    );
    assert!(
        blocks("README.md")
            .iter()
            .any(|b| b.text.lines().any(|l| l.starts_with("cargo test --locked"))),
        "the README shows no `cargo test --locked`"
    );
    // every page of docs/ is in the README's table of contents
    for page in doc_files().iter().skip(1) {
        assert!(
            readme.contains(&format!("]({page})")),
            "README.md does not link {page}"
        );
    }
    // the package's install steps are the same in the README and in docs/operating.md
    // (packaging/test-package.sh runs the README's copy line)
    let install = |file: &str| {
        blocks(file)
            .into_iter()
            .find(|b| b.text.starts_with("sudo dpkg -i "))
            .map(|b| b.text)
            .unwrap_or_else(|| panic!("{file}: no `sudo dpkg -i` block"))
    };
    assert_eq!(install("README.md"), install("docs/operating.md"));
    // the Rust version it names is Cargo.toml's
    let cargo = read("Cargo.toml");
    let version = cargo
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = \""))
        .and_then(|v| v.strip_suffix('"'))
        .unwrap();
    assert!(
        readme.contains(&format!("Rust {version} or later")),
        "the README does not name Rust {version}"
    );
}

/// The quick start's first command, `cargo run -- demo`, works as the README says: the demo
/// runs every shipped flow from the binary's embedded default, from any directory.
#[test]
fn the_quick_starts_demo_runs_from_an_empty_directory() {
    let dir = tempfile::tempdir().unwrap();
    let o = ferry()
        .args(["demo", "--dir", "ferry-demo"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", shown(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    // the commands it ends with are those getting-started.md shows (their ids, paths and
    // passwords aside): the same subcommands with the same options
    let shape = |text: &str| -> Vec<String> {
        ferry_commands(text)
            .into_iter()
            .map(|(_, args)| {
                args.iter()
                    .enumerate()
                    .filter(|(i, a)| *i == 1 || a.starts_with("--") || (*i == 2 && *a == "show"))
                    .map(|(_, a)| a.as_str())
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect()
    };
    let printed = out
        .split("\nnext:\n")
        .nth(1)
        .unwrap_or_else(|| panic!("{out}"));
    let shown = blocks("docs/getting-started.md")
        .into_iter()
        .find(|b| b.info == "text" && b.text.starts_with("next:"))
        .unwrap();
    assert_eq!(shape(printed), shape(&shown.text), "{printed}");
    assert!(shape(printed).len() >= 3, "{printed}");
    assert!(dir.path().join("ferry-demo/state").is_dir());
    assert!(
        std::fs::read_dir(dir.path().join("ferry-demo/outbox"))
            .unwrap()
            .count()
            > 0,
        "no email in the demo's outbox"
    );
}

/// The block splitter sees through what documentation lines do.
#[test]
fn ferry_commands_are_found_after_env_pipes_and_continuations() {
    let text = "export FERRY_LOG=ferry::run=info\n\
                FOO=1 ferry --log-json run FLOW 2>&1 >/dev/null | jq -c 'select(.a == \"b\")'\n\
                env A=b ferry serve --flows /tmp/x \\\n  --data /tmp/y\n\
                cargo run -- demo     # the demo\n\
                ferry validate flows && ferry test flows\n\
                ferry stand-in --listen 127.0.0.1:7878 &   # stand-ins";
    let found: Vec<String> = ferry_commands(text)
        .into_iter()
        .map(|(n, a)| format!("{n}: {}", a.join(" ")))
        .collect();
    assert_eq!(
        found,
        [
            "1: ferry --log-json run FLOW",
            "2: ferry serve --flows /tmp/x --data /tmp/y",
            "4: ferry demo",
            "5: ferry validate flows",
            "5: ferry test flows",
            "6: ferry stand-in --listen 127.0.0.1:7878",
        ]
    );
    // a flag ferry does not have does not parse
    let mut problems = Vec::new();
    check_command(
        "here",
        &["ferry".into(), "validate".into(), "--no-such-flag".into()],
        &mut problems,
    );
    assert_eq!(problems.len(), 1, "{problems:?}");
}
