//! Limits on a template's length and nesting, measured before anything recursive sees it.
//!
//! minijinja's parser, its code generator, its `undeclared_variables` and ferry's type checker
//! ([`crate::typecheck`]) recurse over a template's syntax tree, several stack frames a level.
//! A template some thousands of levels deep (`{{ 1+1+…+1 }}`, `((((…))))`, `not not …`,
//! `x | upper | upper …`, `a.a.a…`) overflows the thread's stack, which aborts the process:
//! no error, no unwinding, and `ferry serve` gone on a hot reload. So every template and
//! expression is first measured by [`check`], a linear scan of its bytes that recurses on
//! nothing, and refused when it is longer than [`MAX_TEMPLATE_BYTES`] or deeper than
//! [`MAX_DEPTH`].
//!
//! # How depth is counted
//!
//! The scan counts an upper bound of the syntax tree's depth from the tokens, conservatively:
//!
//! - A *group* is a `{{ … }}` or `{% … %}` tag, a bracket `( … )`, `[ … ]`, `{ … }` inside
//!   one, and a block statement's body (`if`, `for`, `with`, `macro`, `call`, `filter`,
//!   `block`, `autoescape`, and `set` without `=`, up to its `{% end… %}`). A group is one
//!   level deeper than the group it is in.
//! - Inside a group, every operator adds a level to the group: binary operators (`+ - * / //
//!   % ** ~ == != < <= > >=`, `and`, `or`, `in`, `is`, `if`, `else`), which minijinja chains
//!   left-deep, so `1+1+1` is as deep as it is long; unary `not` and `-`; a filter `|`; an
//!   attribute `.`; a call or subscript `(`/`[` that follows a value (chained postfix nodes
//!   wrap one another: `f()()()`, `x[0][0]`). Each `elif` adds a level to its `if` block
//!   (minijinja nests each in the one before).
//! - A group's depth is its own level, plus its operators, plus the depth of its deepest
//!   inner group. String literals, `{# comments #}` and `{% raw %}` bodies are skipped.
//!
//! Every operator of a group is counted on the way to its deepest inner group, wherever it
//! stands, so the count can only be higher than the tree's depth, never lower: `{{ x }}` and
//! the expression `x` are 1 level, `{{ a.b | upper }}` 3, `{{ f(x + 1) }}` 4.
//!
//! # The limits
//!
//! [`MAX_DEPTH`] is far above what an author writes (the shipped flows stay under 10) and far
//! below what overflows (see the constant). The length limit bounds what a template costs to
//! compile and scan. `ferry`'s runtime threads have 8 MiB of stack (`main.rs`), four times
//! what the limit was measured against.

/// The deepest template or expression accepted, in the levels counted above.
///
/// Measured in a debug build on a 2 MiB thread stack (tokio's default), loading a flow the
/// way `ferry validate` does, before this limit: the chains (`1+1…`, `a.a…`, `x|f|f…`,
/// `f()()…`, `not not…`, `- - …`, `is` tests, `if … else` chains) overflowed at 511 to 540
/// levels, an `elif` chain at 838; minijinja's own guard refused brackets past 150 levels.
/// 64 accepted levels take about a quarter of those 2 MiB.
pub const MAX_DEPTH: usize = 64;

/// The longest template or expression accepted, in bytes.
pub const MAX_TEMPLATE_BYTES: usize = 64 * 1024;

/// A template or expression over a limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    /// Longer than [`MAX_TEMPLATE_BYTES`].
    #[error("template is {len} bytes long; the limit is {limit} bytes")]
    TooLong {
        /// Its length in bytes.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// Deeper than [`MAX_DEPTH`].
    #[error("template expression nested {depth} levels deep; the limit is {limit}")]
    TooDeep {
        /// Its depth, counted as this module describes.
        depth: usize,
        /// The limit.
        limit: usize,
        /// The byte offset of the token that went over the limit.
        offset: usize,
    },
}

impl LimitError {
    /// The byte offset in the template where the problem is: the token that went over the
    /// depth limit, or the start of a template that is too long.
    pub fn offset(&self) -> usize {
        match self {
            LimitError::TooLong { .. } => 0,
            LimitError::TooDeep { offset, .. } => *offset,
        }
    }
}

/// Checks `source` (a template, or an expression when `expression` is true) against
/// [`MAX_TEMPLATE_BYTES`] and [`MAX_DEPTH`].
pub fn check(source: &str, expression: bool) -> Result<(), LimitError> {
    check_with(source, expression, MAX_DEPTH, MAX_TEMPLATE_BYTES)
}

/// [`check`] with other limits.
pub fn check_with(
    source: &str,
    expression: bool,
    max_depth: usize,
    max_bytes: usize,
) -> Result<(), LimitError> {
    if source.len() > max_bytes {
        return Err(LimitError::TooLong {
            len: source.len(),
            limit: max_bytes,
        });
    }
    let (depth, over) = measure(source, expression, max_depth);
    match over {
        Some(offset) => Err(LimitError::TooDeep {
            depth,
            limit: max_depth,
            offset,
        }),
        None => Ok(()),
    }
}

/// The depth of `source`, counted as the module describes, and the offset of the first
/// token that took it over `limit`.
pub fn measure(source: &str, expression: bool, limit: usize) -> (usize, Option<usize>) {
    let mut m = Meter::new(limit, usize::from(expression));
    let b = source.as_bytes();
    if expression {
        let mut tag = Tag::default();
        m.code(b, 0, None, &mut tag);
    } else {
        m.template(b);
    }
    (m.max, m.over_at)
}

/// What kind of group a frame is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// The template's top level, or the whole of an expression.
    Root,
    /// A `{{ … }}` or `{% … %}` tag.
    Tag,
    /// A block statement's body, up to its `end…`.
    Block,
    /// A bracket.
    Bracket,
}

/// One open group.
#[derive(Debug)]
struct Frame {
    kind: Kind,
    /// The levels of the open groups around it (their own level and operators).
    prefix: usize,
    /// The depth already reached through the groups around it and their closed inner groups.
    around: usize,
    /// Its own level (1; 0 for a template's top level) plus its operators so far.
    levels: usize,
    /// The depth of its deepest closed inner group.
    inner: usize,
}

/// What a tag's code held, for the statement it is.
#[derive(Debug, Default)]
struct Tag {
    /// The first identifier (`if`, `endfor`, `set`).
    word: Option<(usize, usize)>,
    /// Whether an `=` stands outside any bracket (`{% set x = 1 %}`).
    assigns: bool,
}

/// Keeps the depth of the open groups as the scan goes: `depth()` is exact for the counting
/// rules in constant time, so the scan is linear.
#[derive(Debug)]
struct Meter {
    frames: Vec<Frame>,
    limit: usize,
    max: usize,
    over_at: Option<usize>,
}

impl Meter {
    fn new(limit: usize, root_level: usize) -> Meter {
        Meter {
            frames: vec![Frame {
                kind: Kind::Root,
                prefix: 0,
                around: 0,
                levels: root_level,
                inner: 0,
            }],
            limit,
            max: root_level,
            over_at: None,
        }
    }

    fn top(&mut self) -> &mut Frame {
        let last = self.frames.len() - 1;
        &mut self.frames[last]
    }

    fn top_kind(&self) -> Kind {
        self.frames.last().map_or(Kind::Root, |f| f.kind)
    }

    /// The depth of the deepest path through the open groups and their closed inner ones.
    fn depth(&self) -> usize {
        self.frames
            .last()
            .map_or(0, |f| f.around.max(f.prefix + f.levels + f.inner))
    }

    fn note(&mut self, at: usize) {
        let d = self.depth();
        self.max = self.max.max(d);
        if d > self.limit && self.over_at.is_none() {
            self.over_at = Some(at);
        }
    }

    fn open(&mut self, kind: Kind, at: usize) {
        let (prefix, around) = match self.frames.last() {
            Some(f) => (
                f.prefix + f.levels,
                f.around.max(f.prefix + f.levels + f.inner),
            ),
            None => (0, 0),
        };
        self.frames.push(Frame {
            kind,
            prefix,
            around,
            levels: 1,
            inner: 0,
        });
        self.note(at);
    }

    /// Closes the top group (never the root).
    fn close(&mut self) {
        if self.frames.len() < 2 {
            return;
        }
        if let Some(f) = self.frames.pop() {
            let depth = f.levels + f.inner;
            let top = self.top();
            top.inner = top.inner.max(depth);
        }
    }

    fn operator(&mut self, at: usize) {
        self.top().levels += 1;
        self.note(at);
    }

    /// Scans a template: its text, and the code of its tags.
    fn template(&mut self, b: &[u8]) {
        let mut i = 0;
        while i + 1 < b.len() {
            if b[i] != b'{' {
                i += 1;
                continue;
            }
            match b[i + 1] {
                b'#' => i = find(b, i + 2, b"#}").map_or(b.len(), |e| e + 2),
                b'{' => {
                    self.open(Kind::Tag, i);
                    let mut tag = Tag::default();
                    i = self.code(b, skip_control(b, i + 2), Some(b"}}"), &mut tag);
                    self.close_tag();
                }
                b'%' => {
                    self.open(Kind::Tag, i);
                    let mut tag = Tag::default();
                    let at = i;
                    i = self.code(b, skip_control(b, i + 2), Some(b"%}"), &mut tag);
                    self.close_tag();
                    let word = tag.word.map_or(&b""[..], |(s, e)| &b[s..e]);
                    match word {
                        b"if" | b"for" | b"with" | b"macro" | b"call" | b"filter" | b"block"
                        | b"autoescape" => self.open(Kind::Block, at),
                        b"set" if !tag.assigns => self.open(Kind::Block, at),
                        b"elif" if self.top_kind() == Kind::Block => self.operator(at),
                        b"raw" => i = end_of_raw(b, i),
                        w if w.starts_with(b"end") && self.top_kind() == Kind::Block => {
                            self.close();
                        }
                        _ => {}
                    }
                }
                _ => i += 1,
            }
        }
    }

    /// Closes the brackets a tag left open (it ran to the end of the source) and the tag.
    fn close_tag(&mut self) {
        while self.top_kind() == Kind::Bracket {
            self.close();
        }
        if self.top_kind() == Kind::Tag {
            self.close();
        }
    }

    /// Scans code from `i` up to `end` (outside brackets; `None`: the end of the source);
    /// returns the offset after `end`.
    fn code(&mut self, b: &[u8], mut i: usize, end: Option<&[u8]>, tag: &mut Tag) -> usize {
        let base = self.frames.len();
        // whether the last token ended a value, so that `(` or `[` is a call or subscript
        let mut after_value = false;
        while i < b.len() {
            let c = b[i];
            if c.is_ascii_whitespace() {
                i += 1;
                continue;
            }
            if let Some(end) = end
                && self.frames.len() == base
            {
                if b[i..].starts_with(end) {
                    return i + end.len();
                }
                if (c == b'-' || c == b'+') && b[i + 1..].starts_with(end) {
                    return i + 1 + end.len();
                }
            }
            match c {
                b'\'' | b'"' => {
                    i = skip_string(b, i);
                    after_value = true;
                }
                b'(' | b'[' | b'{' => {
                    if after_value && c != b'{' {
                        self.operator(i);
                    }
                    self.open(Kind::Bracket, i);
                    i += 1;
                    after_value = false;
                }
                b')' | b']' | b'}' => {
                    if self.frames.len() > base {
                        self.close();
                    }
                    i += 1;
                    after_value = true;
                }
                b'0'..=b'9' => {
                    i = skip_number(b, i);
                    after_value = true;
                }
                _ if c == b'_' || c.is_ascii_alphabetic() || c >= 0x80 => {
                    let s = i;
                    while i < b.len()
                        && (b[i] == b'_' || b[i].is_ascii_alphanumeric() || b[i] >= 0x80)
                    {
                        i += 1;
                    }
                    // a statement's own word (`{% if`, `{% else %}`) is not an operator
                    let statement = tag.word.is_none() && end == Some(&b"%}"[..]);
                    if tag.word.is_none() {
                        tag.word = Some((s, i));
                    }
                    match &b[s..i] {
                        _ if statement => after_value = false,
                        b"not" | b"and" | b"or" | b"in" | b"is" | b"if" | b"else" => {
                            self.operator(s);
                            after_value = false;
                        }
                        _ => after_value = true,
                    }
                }
                b'=' if !b[i + 1..].starts_with(b"=") => {
                    if self.frames.len() == base {
                        tag.assigns = true;
                    }
                    i += 1;
                    after_value = false;
                }
                b'+' | b'-' | b'*' | b'/' | b'%' | b'~' | b'<' | b'>' | b'=' | b'!' | b'|'
                | b'.' => {
                    self.operator(i);
                    let two = matches!(
                        b.get(i..i + 2),
                        Some(b"//" | b"**" | b"==" | b"!=" | b"<=" | b">=")
                    );
                    i += if two { 2 } else { 1 };
                    after_value = false;
                }
                _ => {
                    // `,` `:` `?` and bytes minijinja refuses
                    i += 1;
                    after_value = false;
                }
            }
        }
        b.len()
    }
}

/// The offset after a tag opener's whitespace control (`{{-`, `{%+`).
fn skip_control(b: &[u8], i: usize) -> usize {
    match b.get(i) {
        Some(b'-' | b'+') => i + 1,
        _ => i,
    }
}

/// The first offset at or after `from` where `needle` starts.
fn find(b: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    b.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| from + p)
}

/// The offset after a string literal starting at `i` (its quote), or the end.
fn skip_string(b: &[u8], i: usize) -> usize {
    let q = b[i];
    let mut j = i + 1;
    while j < b.len() && b[j] != q {
        if b[j] == b'\\' {
            j += 1;
        }
        j += 1;
    }
    (j + 1).min(b.len())
}

/// The offset after a number starting at `i` (`12`, `1_000`, `1.5`, `2e3`).
fn skip_number(b: &[u8], i: usize) -> usize {
    let word = |mut j: usize| {
        while j < b.len() && (b[j] == b'_' || b[j].is_ascii_alphanumeric()) {
            j += 1;
        }
        j
    };
    let j = word(i);
    if b.get(j) == Some(&b'.') && b.get(j + 1).is_some_and(u8::is_ascii_digit) {
        word(j + 1)
    } else {
        j
    }
}

/// The offset after the `{% endraw %}` that ends a raw block whose body starts at `i`, or
/// the end.
fn end_of_raw(b: &[u8], mut i: usize) -> usize {
    while let Some(at) = find(b, i, b"{%") {
        let mut j = skip_control(b, at + 2);
        while j < b.len() && b[j].is_ascii_whitespace() {
            j += 1;
        }
        if b[j..].starts_with(b"endraw") {
            return find(b, j, b"%}").map_or(b.len(), |e| e + 2);
        }
        i = at + 2;
    }
    b.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn depth(src: &str, expression: bool) -> usize {
        measure(src, expression, usize::MAX).0
    }

    #[test]
    fn depth_counts_groups_and_operators() {
        assert_eq!(depth("x", true), 1);
        assert_eq!(depth("{{ x }}", false), 1);
        assert_eq!(depth("plain text, no tags", false), 0);
        assert_eq!(depth("{{ a.b | upper }}", false), 3);
        assert_eq!(depth("{{ f(x + 1) }}", false), 4);
        assert_eq!(depth("a + b + c", true), 3);
        // the operators of a group count on the way into its inner groups, wherever they are
        assert_eq!(depth("(((x))) + 1 + 1", true), 6);
        // sibling groups do not add up
        assert_eq!(depth("f((a), (b), (c))", true), 4);
        assert_eq!(depth("{{ x }}{{ y }}{{ (z) }}", false), 2);
        // a statement's word is not an operator; its block holds the tags up to its end
        assert_eq!(depth("{% if a %}{{ b }}{% endif %}", false), 2);
        assert_eq!(
            depth(
                "{% for f in fs %}{% if f %}{{ f.name }}{% endif %}{% endfor %}",
                false
            ),
            4
        );
        // each elif nests in the one before, and its condition in it
        assert_eq!(
            depth("{% if a %}{% elif b %}{% elif c %}x{% endif %}", false),
            4
        );
        assert_eq!(depth("{% set x = (1) %}{{ x }}", false), 2);
        assert_eq!(depth("{% set x %}{{ (y) }}{% endset %}", false), 3);
        // whitespace control is no operator (the `endif` tag is inside its block), a close
        // past the tag's opening is ignored
        assert_eq!(depth("{{- x -}}{%- if y -%}{%+ endif +%}", false), 2);
        assert_eq!(depth("{{ x ) ) }}", false), 1);
    }

    #[test]
    fn strings_comments_and_raw_blocks_are_skipped() {
        assert_eq!(depth("{{ '((((' ~ \"[[\\\"[[\" }}", false), 2);
        assert_eq!(depth("{# {{ (((( }} #}{{ x }}", false), 1);
        assert_eq!(
            depth("{% raw %}{{ ((((((((x)))))))) }}{% endraw %}{{ x }}", false),
            1
        );
        assert_eq!(depth("{%- raw -%}{{ ((( {%- endraw +%}{{ (x) }}", false), 2);
        // a number's point is no attribute; an integer attribute's is
        assert_eq!(depth("1.5 + 2e3", true), 2);
        assert_eq!(depth("x.0", true), 2);
    }

    /// Every shape that made the parser or a tree walker recurse, 5,000 deep: its depth and
    /// the offset of the token that went over the limit.
    #[test]
    fn every_deep_shape_is_refused_at_the_token_over_the_limit() {
        let n = 5000;
        let r = |s: &str, k: usize| s.repeat(k);
        // (expression, its depth, the offset where it went over 64)
        let cases: Vec<(String, usize, usize)> = vec![
            (format!("1{}", r("+1", n)), n + 1, 1 + 2 * 63),
            (format!("'a'{}", r(" ~ 'a'", n)), n + 1, 3 + 6 * 63 + 1),
            (format!("true{}", r(" and true", n)), n + 1, 4 + 9 * 63 + 1),
            (format!("run{}", r(".a", n)), n + 1, 3 + 2 * 63),
            // a subscript's bracket closes before the next: the chain, not the brackets, is deep
            (format!("run{}", r("[0]", n)), n + 2, 3 + 3 * 62),
            (format!("x{}", r(" | upper", n)), n + 1, 1 + 8 * 63 + 1),
            (format!("range{}", r("()", n)), n + 2, 5 + 2 * 62),
            (format!("1{}", r(" is number", n)), n + 1, 1 + 10 * 63 + 1),
            (format!("{}1{}", r("(", n), r(")", n)), n + 1, 63),
            (format!("{}1{}", r("[", n), r("]", n)), n + 1, 63),
            (format!("{}1{}", r("{'a': ", n), r("}", n)), n + 1, 6 * 63),
            (format!("{}true", r("not ", n)), n + 1, 4 * 63),
            (format!("{}1", r("- ", n)), n + 1, 2 * 63),
            (
                format!("{}1{}", r("-(", n), r(")", n)),
                2 * n + 1,
                2 * 31 + 1,
            ),
            (
                format!("1{}", r(" if 1 else 1", n)),
                2 * n + 1,
                1 + 12 * 31 + 6,
            ),
        ];
        for (src, d, at) in cases {
            let shape = &src[..20.min(src.len())];
            assert_eq!(
                check(&src, true),
                Err(LimitError::TooDeep {
                    depth: d,
                    limit: MAX_DEPTH,
                    offset: at
                }),
                "{shape}…"
            );
            // the same in a template, one level less deep (the tag is the expression's level)
            let tpl = format!("{{{{ {src} }}}}");
            assert_eq!(
                check(&tpl, false),
                Err(LimitError::TooDeep {
                    depth: d,
                    limit: MAX_DEPTH,
                    offset: at + 3
                }),
                "{{{{ {shape}…"
            );
        }
        // blocks, 3,000 deep (5,000 would be over the length limit): the 65th `if` tag is
        // 65 deep, the 63rd `elif` makes its block 64 deep and its condition 65
        let n = 3000;
        let blocks = format!("{}x{}", r("{% if 1 %}", n), r("{% endif %}", n));
        assert_eq!(
            check(&blocks, false),
            Err(LimitError::TooDeep {
                depth: n + 1,
                limit: MAX_DEPTH,
                offset: 10 * 64
            })
        );
        let elifs = format!("{{% if a %}}{}x{{% endif %}}", r("{% elif b %}", n));
        assert_eq!(
            check(&elifs, false),
            Err(LimitError::TooDeep {
                depth: n + 2,
                limit: MAX_DEPTH,
                offset: 10 + 12 * 62
            })
        );
    }

    #[test]
    fn at_the_limit_is_accepted_and_one_more_is_not() {
        let at = format!("1{}", "+1".repeat(MAX_DEPTH - 1));
        assert_eq!(check(&at, true), Ok(()));
        let over = format!("{at}+1");
        assert_eq!(
            check(&over, true),
            Err(LimitError::TooDeep {
                depth: MAX_DEPTH + 1,
                limit: MAX_DEPTH,
                offset: over.len() - 2
            })
        );
        assert_eq!(
            LimitError::TooDeep {
                depth: 5001,
                limit: 64,
                offset: 0
            }
            .to_string(),
            "template expression nested 5001 levels deep; the limit is 64"
        );
    }

    #[test]
    fn a_template_longer_than_the_limit_is_refused_before_it_is_scanned() {
        let long = "x".repeat(MAX_TEMPLATE_BYTES + 1);
        assert_eq!(
            check(&long, false),
            Err(LimitError::TooLong {
                len: MAX_TEMPLATE_BYTES + 1,
                limit: MAX_TEMPLATE_BYTES
            })
        );
        assert_eq!(check(&long[1..], false), Ok(()));
        assert_eq!(
            check(&long, false).map_err(|e| e.to_string()),
            Err("template is 65537 bytes long; the limit is 65536 bytes".to_string())
        );
    }
}
