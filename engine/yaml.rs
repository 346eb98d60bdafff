//! YAML source documents with positions.
//!
//! ferry parses YAML with [`saphyr`] (YAML 1.2, maintained, keeps a span on every node) into a
//! [`serde_json::Value`] plus a table of where every node stands in the source. Schema
//! validation and deserialization work on the value; diagnostics map a JSON pointer back to a
//! line and column through [`SourceDoc::locate`]. Keeping positions outside the value lets the
//! typed model stay plain serde structs.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use saphyr::{MarkedYamlOwned, ScalarOwned, YamlDataOwned};
use serde_json::{Map, Number, Value};

/// A position in a source file: 1-based line, 1-based column (in characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct Pos {
    /// 1-based line number.
    pub line: usize,
    /// 1-based column number, counted in characters.
    pub column: usize,
}

/// Where one node of a document stands: its value, and its key when it is a mapping value.
#[derive(Debug, Clone, Copy)]
struct NodeSpan {
    value: Pos,
    key: Option<Pos>,
}

/// A line and column in 32 bits each (line 0: none), what [`Spans`] keeps per node.
#[derive(Debug, Clone, Copy, Default)]
struct SmallPos {
    line: u32,
    column: u32,
}

impl SmallPos {
    fn of(p: Pos) -> SmallPos {
        SmallPos {
            line: u32::try_from(p.line).unwrap_or(u32::MAX),
            column: u32::try_from(p.column).unwrap_or(u32::MAX),
        }
    }

    fn pos(self) -> Option<Pos> {
        (self.line > 0).then_some(Pos {
            line: self.line as usize,
            column: self.column as usize,
        })
    }
}

/// One node's pointer (a range of [`Spans::pointers`]) and positions.
#[derive(Debug, Clone, Copy)]
struct SpanEntry {
    start: u32,
    end: u32,
    value: SmallPos,
    key: SmallPos,
}

/// The position of every node by JSON pointer: the pointers in one string, the entries sorted
/// by pointer (about 24 bytes a node and its pointer's text, where a map of `String`s took
/// three times that).
#[derive(Debug, Clone, Default)]
struct Spans {
    pointers: String,
    entries: Vec<SpanEntry>,
}

impl Spans {
    fn key(&self, e: &SpanEntry) -> &str {
        self.pointers
            .get(e.start as usize..e.end as usize)
            .unwrap_or_default()
    }

    /// Records `pointer`'s positions; a tagged node's inner node (the same pointer, right
    /// after) replaces its tag's.
    fn push(&mut self, pointer: &str, value: Pos, key: Option<Pos>) {
        let (value, key) = (
            SmallPos::of(value),
            key.map(SmallPos::of).unwrap_or_default(),
        );
        if let Some(last) = self.entries.last_mut()
            && self.pointers.get(last.start as usize..last.end as usize) == Some(pointer)
        {
            (last.value, last.key) = (value, key);
            return;
        }
        let start = u32::try_from(self.pointers.len()).unwrap_or(u32::MAX);
        self.pointers.push_str(pointer);
        let end = u32::try_from(self.pointers.len()).unwrap_or(u32::MAX);
        self.entries.push(SpanEntry {
            start,
            end,
            value,
            key,
        });
    }

    /// Sorted for lookups, with no spare room.
    fn finish(mut self) -> Spans {
        let mut entries = std::mem::take(&mut self.entries);
        entries.sort_by(|a, b| self.key(a).cmp(self.key(b)));
        entries.shrink_to_fit();
        self.pointers.shrink_to_fit();
        Spans {
            pointers: self.pointers,
            entries,
        }
    }

    fn get(&self, pointer: &str) -> Option<NodeSpan> {
        let i = self
            .entries
            .binary_search_by(|e| self.key(e).cmp(pointer))
            .ok()?;
        let e = self.entries[i];
        Some(NodeSpan {
            value: e.value.pos()?,
            key: e.key.pos(),
        })
    }
}

/// Where a string value starts and how it is written: enough to place a character of the
/// value in the file ([`Anchor::locate`]) without keeping the document.
#[derive(Debug, Clone, Copy)]
pub struct Anchor {
    start: Pos,
    style: Style,
}

#[derive(Debug, Clone, Copy)]
enum Style {
    /// The start's line is not in the text.
    Unknown,
    /// A block scalar (`|`, `>`); the indentation of the line after its start.
    Block(usize),
    /// A single- or double-quoted scalar.
    Quoted,
    /// A plain scalar (or a block scalar whose span starts at its content).
    Plain,
}

impl Anchor {
    /// Where the value starts.
    pub fn start(&self) -> Pos {
        self.start
    }

    /// Position of the character at byte `offset` of `value`, the string this anchor is
    /// the start of ([`SourceDoc::locate_in_value`]).
    pub fn locate(&self, value: &str, offset: usize) -> Pos {
        let start = self.start;
        let before = value.get(..offset).unwrap_or(value);
        let k = before.matches('\n').count();
        let col_in_line = before.rsplit('\n').next().unwrap_or("").chars().count();
        match self.style {
            Style::Unknown => start,
            Style::Block(indent) => Pos {
                line: start.line + 1 + k,
                column: indent + col_in_line + 1,
            },
            Style::Quoted if k == 0 => Pos {
                line: start.line,
                column: start.column + 1 + col_in_line,
            },
            Style::Quoted => start,
            Style::Plain if k == 0 => Pos {
                line: start.line,
                column: start.column + col_in_line,
            },
            Style::Plain => Pos {
                line: start.line + k,
                column: start.column + col_in_line,
            },
        }
    }
}

/// A loaded source file: its text, the parsed value and the position of every node.
#[derive(Debug, Clone)]
pub struct SourceDoc {
    /// The file's path as given by the user.
    pub path: PathBuf,
    /// The file's full text, kept to quote lines in diagnostics.
    pub text: Arc<str>,
    /// The document as JSON data.
    pub value: Value,
    spans: Spans,
    /// Where each line starts in `text`, found at the first [`SourceDoc::line_text`].
    line_starts: std::sync::OnceLock<Vec<usize>>,
}

/// A YAML syntax error with its position.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct SyntaxError {
    /// What the parser said.
    pub message: String,
    /// Where it said it.
    pub pos: Pos,
}

impl SourceDoc {
    /// Parses `text` (the contents of `path`) as a single YAML document.
    pub fn parse(path: &Path, text: &str) -> Result<SourceDoc, SyntaxError> {
        let docs = load_bounded(text)?;
        let mut spans = Spans::default();
        let value = match docs.len() {
            0 => Value::Null,
            1 => convert(&docs[0], &mut String::new(), None, &mut spans)?,
            _ => {
                return Err(SyntaxError {
                    message: "a file holds one YAML document; found several (`---`)".into(),
                    pos: docs
                        .get(1)
                        .map(span_pos)
                        .unwrap_or(Pos { line: 1, column: 1 }),
                });
            }
        };
        Ok(SourceDoc {
            path: path.to_path_buf(),
            text: Arc::from(text),
            value,
            spans: spans.finish(),
            line_starts: std::sync::OnceLock::new(),
        })
    }

    /// Reads and parses a file (of at most [`crate::compile::DEFAULT_MAX_FILE_BYTES`]).
    pub fn load(path: &Path) -> Result<SourceDoc, crate::diag::Diagnostic> {
        SourceDoc::load_limited(path, crate::compile::DEFAULT_MAX_FILE_BYTES)
    }

    /// Reads and parses a regular file of at most `max_bytes`.
    pub fn load_limited(path: &Path, max_bytes: u64) -> Result<SourceDoc, crate::diag::Diagnostic> {
        let text = read_limited(path, max_bytes)?;
        SourceDoc::parse(path, &text).map_err(|e| syntax_diagnostic(path, &text, &e))
    }

    /// Position of the node at `pointer` (a JSON pointer such as `/steps/2/list`). When the
    /// node does not exist, the nearest existing ancestor is used.
    pub fn locate(&self, pointer: &str) -> Pos {
        self.find(pointer)
            .map(|s| s.value)
            .unwrap_or(Pos { line: 1, column: 1 })
    }

    /// Position of the *key* of the mapping entry at `pointer`, or of the value when it has
    /// no key (sequence items, the root).
    pub fn locate_key(&self, pointer: &str) -> Pos {
        self.find(pointer)
            .map(|s| s.key.unwrap_or(s.value))
            .unwrap_or(Pos { line: 1, column: 1 })
    }

    fn find(&self, pointer: &str) -> Option<NodeSpan> {
        let mut p = pointer;
        loop {
            if let Some(s) = self.spans.get(p) {
                return Some(s);
            }
            let cut = p.rfind('/')?;
            p = &p[..cut];
        }
    }

    /// Position of the character at byte `offset` of the string value at `pointer`, whose
    /// parsed text is `value`. Exact for single-line plain and quoted scalars and for block
    /// scalars (`|`, `>`); other multi-line forms fall back to the value's start.
    pub fn locate_in_value(&self, pointer: &str, value: &str, offset: usize) -> Pos {
        self.anchor(pointer).locate(value, offset)
    }

    /// Where the string value at `pointer` starts and how it is written: what
    /// [`SourceDoc::locate_in_value`] needs of the document.
    pub fn anchor(&self, pointer: &str) -> Anchor {
        let start = self.locate(pointer);
        let Some(line) = self.line_text(start.line) else {
            return Anchor {
                start,
                style: Style::Unknown,
            };
        };
        let style = match line.chars().nth(start.column.saturating_sub(1)) {
            Some('|') | Some('>') => Style::Block(
                self.line_text(start.line + 1)
                    .map(|l| l.chars().take_while(|c| *c == ' ').count())
                    .unwrap_or(0),
            ),
            Some('"') | Some('\'') => Style::Quoted,
            _ => Style::Plain,
        };
        Anchor { start, style }
    }

    /// The text of line `line` (1-based), without its line break.
    pub fn line_text(&self, line: usize) -> Option<&str> {
        let starts = self.line_starts.get_or_init(|| {
            std::iter::once(0)
                .chain(self.text.match_indices('\n').map(|(i, _)| i + 1))
                .collect()
        });
        let i = line.checked_sub(1)?;
        let start = *starts.get(i)?;
        if start >= self.text.len() {
            return None; // after the last line break (as `str::lines` has it)
        }
        Some(match starts.get(i + 1) {
            Some(next) => {
                let l = self.text.get(start..next - 1)?;
                l.strip_suffix('\r').unwrap_or(l)
            }
            None => self.text.get(start..)?,
        })
    }
}

/// The text of the regular file `path`, refused when it is larger than `max_bytes` (checked
/// before reading and while reading, so a file that grows meanwhile is refused too).
fn read_limited(path: &Path, max_bytes: u64) -> Result<String, crate::diag::Diagnostic> {
    use std::io::Read as _;
    let io = |e: std::io::Error| {
        crate::diag::Diagnostic::error("io", format!("cannot read {}: {e}", path.display()))
            .in_file(path)
    };
    let too_large = |size: String| {
        crate::diag::Diagnostic::error(
            "file-too-large",
            format!(
                "{} is {size}, over the limit of {} KiB for a flow, lookup or connections file",
                path.display(),
                max_bytes / 1024
            ),
        )
        .in_file(path)
        .at_pos(Pos { line: 1, column: 1 })
        .hint("split it, or raise the limit (`ferry serve --max-file-kib`)")
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    if !meta.is_file() {
        return Err(crate::diag::Diagnostic::error(
            "io",
            format!("{} is not a regular file", path.display()),
        )
        .in_file(path));
    }
    if meta.len() > max_bytes {
        return Err(too_large(format!("{} KiB", meta.len().div_ceil(1024))));
    }
    let file = std::fs::File::open(path).map_err(io)?;
    // room for the whole file at once (read_to_end probes an empty buffer in small reads)
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0).saturating_add(1));
    file.take(max_bytes.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > max_bytes {
        return Err(too_large("growing".into()));
    }
    utf8_text(path, bytes)
}

/// How deep sequences and mappings may nest in a ferry file (the shipped flows need 12).
pub const MAX_NESTING: usize = 64;

/// The documents of `text`, parsed once. A document nested deeper than [`MAX_NESTING`] is
/// refused with the position of the first node too deep, and no tree is built past it
/// (building, converting and dropping a tree recurse once per level); a syntax error or
/// a duplicate key before that node is reported as such.
fn load_bounded(text: &str) -> Result<Vec<MarkedYamlOwned>, SyntaxError> {
    use saphyr_parser::{Event, Parser, Span, SpannedEventReceiver};

    /// Hands the parser's events to saphyr's loader until one opens a level too deep.
    struct Bounded<'input> {
        loader: saphyr::YamlLoader<'input, MarkedYamlOwned>,
        depth: usize,
        too_deep: Option<Pos>,
    }

    impl<'input> SpannedEventReceiver<'input> for Bounded<'input> {
        fn on_event(&mut self, ev: Event<'input>, span: Span) {
            if self.too_deep.is_some() {
                return;
            }
            match ev {
                Event::SequenceStart(..) | Event::MappingStart(..) => {
                    self.depth += 1;
                    if self.depth > MAX_NESTING {
                        self.too_deep = Some(Pos {
                            line: span.start.line(),
                            column: span.start.col() + 1,
                        });
                        return;
                    }
                }
                Event::SequenceEnd | Event::MappingEnd => {
                    self.depth = self.depth.saturating_sub(1);
                }
                _ => {}
            }
            self.loader.on_event(ev, span);
        }
    }

    let syntax = |e: &saphyr::ScanError| SyntaxError {
        message: e.info().to_string(),
        pos: Pos {
            line: e.marker().line(),
            column: e.marker().col() + 1,
        },
    };
    let mut bounded = Bounded {
        loader: saphyr::YamlLoader::default(),
        depth: 0,
        too_deep: None,
    };
    // the events one by one: `Parser::load` descends once per level, which a deep
    // document would take past the stack before a level is counted
    for event in Parser::new_from_str(text) {
        let (event, span) = event.map_err(|e| syntax(&e))?;
        bounded.on_event(event, span);
        if let Some(e) = bounded.loader.error() {
            return Err(syntax(e));
        }
        if let Some(pos) = bounded.too_deep {
            return Err(SyntaxError {
                message: format!("nested deeper than {MAX_NESTING} levels"),
                pos,
            });
        }
    }
    Ok(bounded.loader.into_documents())
}

/// The text of a file, or a diagnostic at the first byte that is not UTF-8.
pub fn utf8_text(path: &Path, bytes: Vec<u8>) -> Result<String, crate::diag::Diagnostic> {
    String::from_utf8(bytes).map_err(|e| {
        let bytes = e.as_bytes();
        let at = e.utf8_error().valid_up_to();
        let before = String::from_utf8_lossy(&bytes[..at]);
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        let end = bytes[at..]
            .iter()
            .position(|b| *b == b'\n')
            .map_or(bytes.len(), |i| at + i);
        let mut d = crate::diag::Diagnostic::error(
            "encoding",
            format!("not valid UTF-8: byte 0x{:02x} at offset {at}", bytes[at]),
        )
        .in_file(path)
        .at_pos(Pos { line, column })
        .hint("save the file as UTF-8 (a Latin-1 or Windows-1252 character is the usual cause)");
        d.source_line = Some(String::from_utf8_lossy(&bytes[line_start..end]).into_owned());
        d
    })
}

/// A YAML syntax error as a diagnostic with the source line, a caret and a hint. The parser
/// often notices a mistake only on a later line (an unclosed `{`, `[` or quote) or just
/// before it (a tab); the position is moved to the mistake where it can be found.
pub fn syntax_diagnostic(path: &Path, text: &str, e: &SyntaxError) -> crate::diag::Diagnostic {
    let lines: Vec<&str> = text.lines().collect();
    let mut pos = e.pos;
    let mut message = format!("invalid YAML: {}", e.message);
    let mut hint = None;
    if let Some((opener, at)) = unclosed_flow(&lines, pos.line)
        && at.line < pos.line
    {
        message = format!("invalid YAML: this `{opener}` is not closed");
        hint = Some(format!(
            "close it with `{}` on the same line; the parser stopped at line {}: {}",
            if opener == '{' { '}' } else { ']' },
            pos.line,
            e.message
        ));
        pos = at;
    } else if e.message.contains("tab") {
        let from = pos.line.max(1);
        if let Some((i, col)) = (from..=from + 1).find_map(|l| {
            let text = lines.get(l - 1)?;
            let lead: String = text.chars().take_while(|c| c.is_whitespace()).collect();
            lead.find('\t').map(|c| (l, lead[..c].chars().count() + 1))
        }) {
            pos = Pos {
                line: i,
                column: col,
            };
        }
        hint = Some("indent with spaces: YAML does not allow tabs in indentation".into());
    } else if e.message.contains("quoted scalar") {
        hint = Some("a quoted string is not closed: add the closing quote".into());
    } else if e.message.contains("indentation") || e.message.contains("expected key") {
        let indent = |l: usize| {
            lines
                .get(l.wrapping_sub(1))
                .map(|t| t.chars().take_while(|c| *c == ' ').count())
        };
        hint = Some(
            match (indent(pos.line.saturating_sub(1)), indent(pos.line)) {
                (Some(prev), Some(here)) => format!(
                    "check this line's indentation: it is indented {here} spaces, the line above {prev}; fields of one map line up"
                ),
                _ => "check the indentation: fields of one map line up".into(),
            },
        );
    } else if e.message.contains("mapping values are not allowed") {
        hint = Some("a value containing `: ` must be quoted".into());
    }
    let mut d = crate::diag::Diagnostic::error("syntax", message)
        .in_file(path)
        .at_pos(pos);
    d.source_line = lines.get(pos.line.wrapping_sub(1)).map(|s| s.to_string());
    d.hint = hint;
    d
}

/// The innermost `{` or `[` still open at the start of line `upto` (outside quotes and
/// comments), with its position.
fn unclosed_flow(lines: &[&str], upto: usize) -> Option<(char, Pos)> {
    let mut stack: Vec<(char, Pos)> = Vec::new();
    for (i, line) in lines.iter().enumerate().take(upto.saturating_sub(1)) {
        let mut quote: Option<char> = None;
        let mut prev = ' ';
        for (col, c) in line.chars().enumerate() {
            match quote {
                Some(q) if c == q => quote = None,
                Some(_) => {}
                None => match c {
                    '#' if prev == ' ' || prev == '\t' => break,
                    '"' | '\'' if matches!(prev, ' ' | '[' | '{' | ',' | ':') => quote = Some(c),
                    '{' | '[' => stack.push((
                        c,
                        Pos {
                            line: i + 1,
                            column: col + 1,
                        },
                    )),
                    '}' | ']' => {
                        stack.pop();
                    }
                    _ => {}
                },
            }
            prev = c;
        }
    }
    stack.pop()
}

/// Escapes one JSON-pointer segment (RFC 6901).
pub fn escape_segment(s: &str) -> String {
    s.replace('~', "~0").replace('/', "~1")
}

fn span_pos(node: &MarkedYamlOwned) -> Pos {
    Pos {
        line: node.span.start.line(),
        column: node.span.start.col() + 1,
    }
}

fn convert(
    node: &MarkedYamlOwned,
    pointer: &mut String,
    key: Option<Pos>,
    spans: &mut Spans,
) -> Result<Value, SyntaxError> {
    let here = span_pos(node);
    spans.push(pointer, here, key);
    let value = match &node.data {
        YamlDataOwned::Value(scalar) => scalar_value(scalar),
        YamlDataOwned::Representation(text, _, _) => Value::String(text.clone()),
        YamlDataOwned::Sequence(items) => {
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                let len = pointer.len();
                {
                    use std::fmt::Write as _;
                    let _ = write!(pointer, "/{i}");
                }
                out.push(convert(item, pointer, None, spans)?);
                pointer.truncate(len);
            }
            Value::Array(out)
        }
        YamlDataOwned::Mapping(map) => {
            let mut out = Map::new();
            for (k, v) in map {
                let name = match &k.data {
                    YamlDataOwned::Value(ScalarOwned::String(s)) => s.clone(),
                    YamlDataOwned::Value(other) => match scalar_value(other) {
                        Value::String(s) => s,
                        other => other.to_string(),
                    },
                    YamlDataOwned::Representation(s, _, _) => s.clone(),
                    _ => {
                        return Err(SyntaxError {
                            message: "mapping keys must be plain scalars".into(),
                            pos: span_pos(k),
                        });
                    }
                };
                let len = pointer.len();
                pointer.push('/');
                pointer.push_str(&escape_segment(&name));
                let value = convert(v, pointer, Some(span_pos(k)), spans)?;
                pointer.truncate(len);
                out.insert(name, value);
            }
            Value::Object(out)
        }
        YamlDataOwned::Tagged(_, inner) => convert(inner, pointer, key, spans)?,
        YamlDataOwned::Alias(_) => {
            return Err(SyntaxError {
                message: "YAML aliases are not supported in ferry files; repeat the value".into(),
                pos: here,
            });
        }
        YamlDataOwned::BadValue => {
            return Err(SyntaxError {
                message: "unreadable value".into(),
                pos: here,
            });
        }
    };
    Ok(value)
}

fn scalar_value(s: &ScalarOwned) -> Value {
    match s {
        ScalarOwned::Null => Value::Null,
        ScalarOwned::Boolean(b) => Value::Bool(*b),
        ScalarOwned::Integer(i) => Value::Number((*i).into()),
        ScalarOwned::FloatingPoint(f) => Number::from_f64(f.into_inner())
            .map(Value::Number)
            .unwrap_or(Value::Null),
        ScalarOwned::String(s) => Value::String(s.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_of_values_and_keys() {
        let text = "id: a\nsteps:\n  - id: one\n    list: {connection: x}\n";
        let doc = SourceDoc::parse(Path::new("f.yaml"), text).unwrap();
        assert_eq!(doc.locate("/steps/0/id"), Pos { line: 3, column: 9 });
        assert_eq!(doc.locate_key("/steps/0/list"), Pos { line: 4, column: 5 });
        assert_eq!(
            doc.locate("/steps/0/list/connection"),
            Pos {
                line: 4,
                column: 24
            }
        );
        // a missing node falls back to its nearest ancestor
        assert_eq!(
            doc.locate("/steps/0/list/prefix"),
            Pos {
                line: 4,
                column: 11
            }
        );
    }

    #[test]
    fn yaml_1_2_keeps_on_and_yes_as_strings() {
        let doc = SourceDoc::parse(Path::new("f.yaml"), "a: on\nb: yes\nc: true\n").unwrap();
        assert_eq!(doc.value["a"], Value::String("on".into()));
        assert_eq!(doc.value["b"], Value::String("yes".into()));
        assert_eq!(doc.value["c"], Value::Bool(true));
    }

    #[test]
    fn syntax_error_has_position() {
        let err = SourceDoc::parse(Path::new("f.yaml"), "a: [1, 2\nb: 3\n").unwrap_err();
        assert!(err.pos.line >= 1);
    }

    #[test]
    fn deep_nesting_is_refused_with_its_position() {
        let deep = format!("a: {}{}\n", "[".repeat(100), "]".repeat(100));
        let err = SourceDoc::parse(Path::new("f.yaml"), &deep).unwrap_err();
        assert_eq!(err.message, "nested deeper than 64 levels");
        assert_eq!(
            err.pos,
            Pos {
                line: 1,
                column: 67
            }
        );
        let ok = format!("a: {}{}\n", "[".repeat(60), "]".repeat(60));
        assert!(SourceDoc::parse(Path::new("f.yaml"), &ok).is_ok());
    }

    #[test]
    fn line_text_is_what_lines_gives() {
        for text in [
            "",
            "a",
            "a\n",
            "a\r\nb\r\n",
            "a\n\nb",
            "x: 1\ny: 2\r",
            "\n\n",
        ] {
            let doc = SourceDoc::parse(Path::new("f.yaml"), text).unwrap();
            for n in 0usize..6 {
                let want = n.checked_sub(1).and_then(|i| text.lines().nth(i));
                assert_eq!(doc.line_text(n), want, "{text:?} line {n}");
            }
        }
    }

    #[test]
    fn duplicate_keys_are_rejected() {
        let err = SourceDoc::parse(Path::new("f.yaml"), "a: 1\na: 2\n").unwrap_err();
        assert!(err.message.contains("duplicate"), "{}", err.message);
        assert_eq!(err.pos.line, 2);
    }
}
