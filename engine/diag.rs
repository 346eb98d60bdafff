//! Diagnostics: what is wrong, where, and what to do.
//!
//! Every problem `compile()` finds becomes a [`Diagnostic`] with a file, a line and column, a
//! path into the document (`steps[2].rename.to`) and, where one helps, a hint. They render
//! like a compiler's messages for people and as JSON for CI.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::yaml::{Pos, SourceDoc};

/// How bad a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The flow cannot run.
    Error,
    /// The flow runs, but probably not as meant.
    Warning,
}

/// One problem found in a flow, a lookup or a connections file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// A stable, kebab-case name of the kind of problem (`unknown-lookup-key`).
    pub code: String,
    /// The file the problem is in.
    pub file: Option<PathBuf>,
    /// 1-based line.
    pub line: Option<usize>,
    /// 1-based column.
    pub column: Option<usize>,
    /// Where in the document, e.g. `steps[2].rename.to`.
    pub path: Option<String>,
    /// What is wrong, quoting the user's input.
    pub message: String,
    /// What to do about it.
    pub hint: Option<String>,
    /// The offending source line, for rendering.
    #[serde(skip)]
    pub source_line: Option<String>,
}

impl Diagnostic {
    /// A new error with a code and message, not yet located.
    pub fn error(code: &str, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Error,
            code: code.to_string(),
            file: None,
            line: None,
            column: None,
            path: None,
            message: message.into(),
            hint: None,
            source_line: None,
        }
    }

    /// Names the file.
    pub fn in_file(mut self, file: &Path) -> Self {
        self.file = Some(file.to_path_buf());
        self
    }

    /// Sets line and column.
    pub fn at_pos(mut self, pos: Pos) -> Self {
        self.line = Some(pos.line);
        self.column = Some(pos.column);
        self
    }

    /// Locates the diagnostic at the value of `pointer` in `doc`, shifted by `offset`
    /// characters into that value's text (for a problem inside a template).
    pub fn at(self, doc: &SourceDoc, pointer: &str) -> Self {
        let pos = doc.locate(pointer);
        self.placed(doc, pointer, pos)
    }

    /// Locates the diagnostic at the key of the entry at `pointer`.
    pub fn at_key(self, doc: &SourceDoc, pointer: &str) -> Self {
        let pos = doc.locate_key(pointer);
        self.placed(doc, pointer, pos)
    }

    /// Locates the diagnostic at an explicit position in `doc`, with `pointer` as its path.
    pub fn placed(mut self, doc: &SourceDoc, pointer: &str, pos: Pos) -> Self {
        self.file = Some(doc.path.clone());
        self.path = Some(pointer_to_path(pointer));
        self.source_line = doc.line_text(pos.line).map(str::to_string);
        self.at_pos(pos)
    }

    /// Adds a hint.
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// `file:line:col` or as much of it as is known.
    pub fn location(&self) -> String {
        let mut s = self
            .file
            .as_ref()
            .map(|f| f.display().to_string())
            .unwrap_or_default();
        if let (Some(l), Some(c)) = (self.line, self.column) {
            let _ = write!(s, ":{l}:{c}");
        }
        s
    }

    /// The one-line form: `flows/a.yaml:14:9: steps[2].rename.to: message (hint)`.
    pub fn one_line(&self) -> String {
        let mut s = self.location();
        if !s.is_empty() {
            s.push_str(": ");
        }
        if let Some(p) = &self.path
            && !p.is_empty()
        {
            let _ = write!(s, "{p}: ");
        }
        s.push_str(&self.message);
        if let Some(h) = &self.hint {
            let _ = write!(s, " ({h})");
        }
        s
    }

    /// The compiler-style form, with the offending line and a caret.
    pub fn render(&self) -> String {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        let mut out = format!("{sev}[{}]: {}\n", self.code, self.message);
        let loc = self.location();
        if !loc.is_empty() {
            let _ = writeln!(out, "  --> {loc}");
        }
        if let (Some(line), Some(col), Some(text)) = (self.line, self.column, &self.source_line) {
            let num = line.to_string();
            let pad = " ".repeat(num.len());
            let _ = writeln!(out, "{pad} |");
            let _ = writeln!(out, "{num} | {text}");
            let caret_pad: String = text
                .chars()
                .take(col.saturating_sub(1))
                .map(|c| if c == '\t' { '\t' } else { ' ' })
                .collect();
            let _ = writeln!(out, "{pad} | {caret_pad}^");
        }
        if let Some(p) = &self.path
            && !p.is_empty()
        {
            let _ = writeln!(out, "  = at: {p}");
        }
        if let Some(h) = &self.hint {
            let _ = writeln!(out, "  = hint: {h}");
        }
        out
    }
}

/// The places whose files' content a diagnostic may quote, resolved through symbolic links:
/// each flow path (a directory, or the directory of a flow file), the lookups directory, and
/// the connections file when one is named (`--connections`; one found in the flow directory
/// is inside it already). A file in them that is a link is followed to see whether it lands
/// back inside.
pub fn content_roots(
    paths: &[PathBuf],
    lookups: Option<&Path>,
    connections: Option<&Path>,
) -> Vec<PathBuf> {
    let dir_of = |p: &Path| -> Option<PathBuf> {
        if p.is_dir() {
            p.canonicalize().ok()
        } else {
            let parent = p.parent().filter(|d| !d.as_os_str().is_empty());
            parent.unwrap_or(Path::new(".")).canonicalize().ok()
        }
    };
    paths
        .iter()
        .map(PathBuf::as_path)
        .chain(lookups)
        .filter_map(dir_of)
        .chain(connections.and_then(|c| c.canonicalize().ok()))
        .collect()
}

impl Diagnostic {
    /// Whether the file this diagnostic is about resolves (through links) outside `roots`.
    pub fn outside(&self, roots: &[PathBuf]) -> bool {
        self.file
            .as_ref()
            .and_then(|f| f.canonicalize().ok())
            .is_some_and(|f| !roots.iter().any(|r| f.starts_with(r)))
    }

    /// This diagnostic with nothing of its file's content: its file, line, column, code and
    /// severity, and a message saying why the rest is not shown (the message, the path into
    /// the document, the hint and the source line may all quote the file).
    pub fn content_hidden(&self) -> Diagnostic {
        Diagnostic {
            message: format!(
                "this file resolves outside the flow, lookup and connections directories and does not load ({}); its content is not shown",
                self.code
            ),
            path: None,
            hint: None,
            source_line: None,
            ..self.clone()
        }
    }
}

/// Replaces each diagnostic about a file outside `roots` ([`content_roots`]) by its
/// [`Diagnostic::content_hidden`] form: a `.yaml` link to `/etc/passwd` is named, with the
/// place of the problem, but nothing of its content is quoted.
pub fn hide_outside_content(diags: &mut [Diagnostic], roots: &[PathBuf]) {
    for d in diags.iter_mut() {
        if d.outside(roots) {
            *d = d.content_hidden();
        }
    }
}

/// `/steps/2/rename/to` → `steps[2].rename.to`.
pub fn pointer_to_path(pointer: &str) -> String {
    let mut out = String::new();
    for seg in pointer.split('/').skip(1) {
        let seg = seg.replace("~1", "/").replace("~0", "~");
        if !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_digit()) {
            let _ = write!(out, "[{seg}]");
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(&seg);
        }
    }
    out
}

/// The closest of `candidates` to `word`, when close enough to be a likely typo.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    let max_edits = (word.chars().count() / 4).max(1);
    let mut best: Option<(usize, f64, &str)> = None;
    for c in candidates {
        let edits = strsim::damerau_levenshtein(word, c);
        let score = strsim::jaro_winkler(word, c);
        if edits > max_edits && score < 0.85 {
            continue;
        }
        if best.is_none_or(|(e, s, _)| edits < e || (edits == e && score > s)) {
            best = Some((edits, score, c));
        }
    }
    best.map(|(_, _, c)| format!("did you mean '{c}'?"))
}

/// Renders all diagnostics as a JSON array.
pub fn to_json(diags: &[Diagnostic]) -> String {
    serde_json::to_string_pretty(diags).unwrap_or_else(|_| "[]".into())
}

/// Renders diagnostics as GitHub Actions workflow commands, one per line
/// (`::error file=flows/a.yaml,line=14,col=9,title=unknown-lookup-key::steps[2].rename.to: …`),
/// which GitHub shows as annotations on the pull request's lines.
pub fn to_github(diags: &[Diagnostic]) -> String {
    fn data(s: &str) -> String {
        s.replace('%', "%25")
            .replace('\r', "%0D")
            .replace('\n', "%0A")
    }
    fn property(s: &str) -> String {
        data(s).replace(':', "%3A").replace(',', "%2C")
    }
    let mut out = String::new();
    for d in diags {
        let level = match d.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        let mut props = Vec::new();
        if let Some(f) = &d.file {
            props.push(format!("file={}", property(&f.display().to_string())));
        }
        if let Some(l) = d.line {
            props.push(format!("line={l}"));
        }
        if let Some(c) = d.column {
            props.push(format!("col={c}"));
        }
        props.push(format!("title={}", property(&d.code)));
        let mut message = String::new();
        if let Some(p) = d.path.as_deref().filter(|p| !p.is_empty()) {
            let _ = write!(message, "{p}: ");
        }
        message.push_str(&d.message);
        if let Some(h) = &d.hint {
            let _ = write!(message, " ({h})");
        }
        let _ = writeln!(out, "::{level} {}::{}", props.join(","), data(&message));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointer_renders_as_dotted_path() {
        assert_eq!(pointer_to_path("/steps/2/rename/to"), "steps[2].rename.to");
        assert_eq!(pointer_to_path(""), "");
        assert_eq!(pointer_to_path("/lookups/a~1b"), "lookups.a/b");
    }

    #[test]
    fn github_annotations_escape_their_properties_and_data() {
        let doc = SourceDoc::parse(Path::new("flows/a,b.yaml"), "a:\n  b: oops\n").unwrap();
        let d = Diagnostic::error("x-y", "bad: 100%\nreally")
            .at(&doc, "/a/b")
            .hint("fix it");
        assert_eq!(
            to_github(&[
                d,
                Diagnostic::error("no-connections", "no connections file")
            ]),
            "::error file=flows/a%2Cb.yaml,line=2,col=6,title=x-y::a.b: bad: 100%25%0Areally (fix it)\n\
             ::error title=no-connections::no connections file\n"
        );
    }

    #[test]
    fn suggestion_for_typo() {
        let keys = ["sent.prefixtag.fileuploaded", "notify.on.error"];
        assert_eq!(
            did_you_mean("sent.prefixtag.uploaded", keys).as_deref(),
            Some("did you mean 'sent.prefixtag.fileuploaded'?")
        );
        assert_eq!(did_you_mean("zzz", keys), None);
    }

    #[test]
    fn render_has_caret_under_column() {
        let doc = SourceDoc::parse(Path::new("f.yaml"), "a:\n  b: oops\n").unwrap();
        let d = Diagnostic::error("x", "bad")
            .at(&doc, "/a/b")
            .hint("fix it");
        assert_eq!(d.one_line(), "f.yaml:2:6: a.b: bad (fix it)");
        assert_eq!(
            d.render(),
            "error[x]: bad\n  --> f.yaml:2:6\n  |\n2 |   b: oops\n  |      ^\n  = at: a.b\n  = hint: fix it\n"
        );
    }
}
