//! How deep a value a template may build while it runs.
//!
//! A loop that wraps a namespace's value at each pass (`{% set ns.v = [ns.v] %}` over
//! `range(100000)`) builds a value 100,000 levels deep; rendering, serialising, comparing or
//! merely dropping it recurses once per level and overflowed the stack: `ferry run` aborted,
//! and so did `ferry serve`. The compiler's limits ([`super::limits`]) bound what a template
//! *says*, not what it builds, so the run bounds the values:
//!
//! - every `{% set … = expr %}` stores its value through [`BOUND`], which refuses a value
//!   nested more than [`MAX_VALUE_DEPTH`] levels (the only way a value outlives a loop pass
//!   is a namespace's attribute, set by such a statement; a chain of plain `set`s is bounded
//!   the same way);
//! - every value a template prints (`{{ … }}`) and every expression's value is checked the
//!   same way before it is written out or copied into the run;
//! - recursion (`recursive` loops, macros calling macros) stops at [`MAX_RECURSION`] levels,
//!   so what a recursive call builds in its arguments stays a few thousand levels deep at most,
//!   which every step of the run walks within its thread's stack.
//!
//! A value over the limit is a template error of the step, as any other: the run fails that
//! step (or that loop item) with the message, and the process goes on.

use minijinja::value::{ValueIter, ValueKind};
use minijinja::{Error, ErrorKind, Value};

/// The deepest value a template may build or print: lists and maps inside one another.
/// A JSON document ferry parses is at most 128 levels deep (serde_json's own limit).
pub const MAX_VALUE_DEPTH: usize = 256;

/// Lists and maps [`check`] looks at in one value before it gives up (a value built of
/// shared parts, `[v, v]` at each pass, holds 2^passes of them).
pub const MAX_VALUE_PARTS: usize = 1_000_000;

/// Recursion levels a template may use at run time (minijinja's default is 500): a
/// `recursive` loop or a macro calling itself. Blocks nested to the compiler's limit (64) run
/// within it.
pub const MAX_RECURSION: usize = 64;

/// The function every `{% set %}` stores its value through.
pub const BOUND: &str = "__ferry_bounded";

/// Whether a value holds others.
fn container(v: &Value) -> bool {
    matches!(
        v.kind(),
        ValueKind::Seq | ValueKind::Map | ValueKind::Iterable
    )
}

enum Frame {
    Seq(ValueIter),
    Map(Value, ValueIter, Option<Value>),
}

impl Frame {
    fn of(v: &Value) -> Option<Frame> {
        let it = v.try_iter().ok()?;
        Some(if v.kind() == ValueKind::Map {
            Frame::Map(v.clone(), it, None)
        } else {
            Frame::Seq(it)
        })
    }

    fn next(&mut self) -> Option<Value> {
        match self {
            Frame::Seq(it) => it.next(),
            Frame::Map(map, it, pending) => {
                if let Some(v) = pending.take() {
                    return Some(v);
                }
                let key = it.next()?;
                *pending = Some(map.get_item(&key).unwrap_or_default());
                Some(key)
            }
        }
    }
}

fn too_deep() -> Error {
    Error::new(
        ErrorKind::InvalidOperation,
        format!(
            "template value nested more than {MAX_VALUE_DEPTH} levels deep; the limit is {MAX_VALUE_DEPTH}"
        ),
    )
}

/// Checks that `v` is at most [`MAX_VALUE_DEPTH`] levels deep, without recursion.
pub fn check(v: &Value) -> Result<(), Error> {
    if !container(v) {
        return Ok(());
    }
    let mut stack: Vec<Frame> = Vec::new();
    stack.extend(Frame::of(v));
    let mut parts = 1usize;
    while let Some(top) = stack.last_mut() {
        let Some(item) = top.next() else {
            stack.pop();
            continue;
        };
        if !container(&item) {
            continue;
        }
        if stack.len() >= MAX_VALUE_DEPTH {
            return Err(too_deep());
        }
        parts += 1;
        if parts > MAX_VALUE_PARTS {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                format!(
                    "template value holds more than {MAX_VALUE_PARTS} lists and maps; the limit is {MAX_VALUE_PARTS}"
                ),
            ));
        }
        stack.extend(Frame::of(&item));
    }
    Ok(())
}

/// [`BOUND`]: the value, once [`check`]ed.
pub fn bounded(v: Value) -> Result<Value, Error> {
    check(&v)?;
    Ok(v)
}

/// A template's source rewritten by [`bound_sets`], and where the rewriting inserted text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bounded {
    /// The rewritten source.
    pub text: String,
    /// Maps offsets in `text` back to the source.
    pub map: OffsetMap,
}

/// The insertions of a rewriting, in order: each one's offset in the original source and its
/// length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetMap(Vec<(usize, usize)>);

impl OffsetMap {
    /// The offset in the original source of `offset` in the rewritten text (an offset inside
    /// inserted text maps to where it was inserted), so that an error minijinja places in
    /// the rewritten text is shown where the author wrote it.
    pub fn source_offset(&self, offset: usize) -> usize {
        let mut shift = 0;
        for &(at, len) in &self.0 {
            let start = at + shift;
            if offset < start {
                break;
            }
            if offset < start + len {
                return at;
            }
            shift += len;
        }
        offset.saturating_sub(shift)
    }
}

/// `source` with the value of each `{% set target = expr %}` passed through [`BOUND`]
/// (`= BOUND((expr))`); `None` when it has no such statement or does not parse (minijinja
/// then reports the error on the source itself).
pub fn bound_sets(source: &str) -> Option<Bounded> {
    use minijinja::machinery::ast::Stmt;
    let ast =
        minijinja::machinery::parse(source, "<template>", Default::default(), Default::default())
            .ok()?;
    // (offset after the `=`, offset at the end of the expression), in source order
    let mut sets: Vec<(usize, usize)> = Vec::new();
    let mut todo: Vec<&Stmt<'_>> = vec![&ast];
    while let Some(stmt) = todo.pop() {
        match stmt {
            Stmt::Template(t) => todo.extend(t.children.iter()),
            Stmt::ForLoop(f) => todo.extend(f.body.iter().chain(f.else_body.iter())),
            Stmt::IfCond(c) => todo.extend(c.true_body.iter().chain(c.false_body.iter())),
            Stmt::WithBlock(w) => todo.extend(w.body.iter()),
            Stmt::SetBlock(s) => todo.extend(s.body.iter()),
            Stmt::AutoEscape(a) => todo.extend(a.body.iter()),
            Stmt::FilterBlock(f) => todo.extend(f.body.iter()),
            Stmt::Block(b) => todo.extend(b.body.iter()),
            Stmt::Macro(m) => todo.extend(m.body.iter()),
            Stmt::CallBlock(c) => todo.extend(c.macro_decl.body.iter()),
            Stmt::Set(s) => {
                // the statement's span is `set target = expr`: a target (names, `ns.attr`,
                // tuples of names) holds no `=`, so the first one is the assignment's
                let span = s.span();
                let (start, end) = (span.start_offset as usize, span.end_offset as usize);
                let eq = source.get(start..end)?.find('=')?;
                sets.push((start + eq + 1, end));
            }
            _ => {}
        }
    }
    if sets.is_empty() {
        return None;
    }
    sets.sort_unstable();
    let mut out = String::with_capacity(source.len() + sets.len() * (BOUND.len() + 4));
    let mut inserts = Vec::with_capacity(2 * sets.len());
    let mut at = 0;
    for (open, close) in sets {
        out.push_str(source.get(at..open)?);
        out.push_str(BOUND);
        out.push_str("((");
        out.push_str(source.get(open..close)?);
        out.push_str("))");
        inserts.push((open, BOUND.len() + 2));
        inserts.push((close, 2));
        at = close;
    }
    out.push_str(source.get(at..)?);
    Some(Bounded {
        text: out,
        map: OffsetMap(inserts),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_are_rewritten_around_their_whole_expression() {
        let b = |s: &str| bound_sets(s).unwrap().text;
        assert_eq!(
            b("{% set ns.v = [ns.v] %}"),
            "{% set ns.v =__ferry_bounded(( [ns.v])) %}"
        );
        assert_eq!(
            b("a{%- set x = a if b else c -%}b{% set y=f(1)[0].a%}"),
            "a{%- set x =__ferry_bounded(( a if b else c)) -%}b{% set y=__ferry_bounded((f(1)[0].a))%}"
        );
        assert_eq!(
            b("{% for i in x %}{% if i %}{% set a, b = 1, '=%}' %}{% endif %}{% endfor %}"),
            "{% for i in x %}{% if i %}{% set a, b =__ferry_bounded(( 1, '=%}')) %}{% endif %}{% endfor %}"
        );
        assert_eq!(bound_sets("{{ x }}"), None);
        assert_eq!(bound_sets("{% set x %}"), None);
    }

    /// An offset in the rewritten text maps back to where the author wrote it.
    #[test]
    fn offsets_map_back_to_the_source() {
        let source = "{% set a = 1 %}{% set b = [a] %}{{ b }}";
        let bounded = bound_sets(source).unwrap();
        for (i, _) in source.match_indices(['[', '{', '1']) {
            let rewritten = {
                // the same character in the rewritten text: count inserted bytes before it
                let before = &source[..i];
                let sets_before = before.matches('=').count();
                let closes_before = before.matches(" %}").count().min(sets_before);
                i + sets_before * (BOUND.len() + 2) + closes_before * 2
            };
            assert_eq!(
                bounded.text.as_bytes()[rewritten],
                source.as_bytes()[i],
                "{i}"
            );
            assert_eq!(bounded.map.source_offset(rewritten), i, "{i}");
        }
    }

    #[test]
    fn depth_is_measured_without_recursion() {
        let mut v = Value::from(1);
        for _ in 0..MAX_VALUE_DEPTH {
            v = Value::from(vec![v]);
        }
        assert!(check(&v).is_ok());
        let deeper = Value::from(vec![v.clone()]);
        assert_eq!(
            check(&deeper).unwrap_err().detail(),
            Some("template value nested more than 256 levels deep; the limit is 256")
        );
        // maps count, their keys and values both
        let mut m = Value::from(1);
        for _ in 0..=MAX_VALUE_DEPTH {
            m = Value::from_iter([("a", m)]);
        }
        assert!(check(&m).is_err());
        // a wide value is not a deep one
        let wide = Value::from(
            (0..100_000)
                .map(|i| Value::from(vec![i]))
                .collect::<Vec<_>>(),
        );
        assert!(check(&wide).is_ok());
        // a value of shared parts is refused once it holds too many
        let mut shared = Value::from(vec![1]);
        for _ in 0..30 {
            shared = Value::from(vec![shared.clone(), shared]);
        }
        assert!(
            check(&shared)
                .unwrap_err()
                .detail()
                .unwrap()
                .starts_with("template value holds more than 1000000 lists and maps")
        );
        // the deep values the test built drop within the test thread's stack
        drop((v, deeper, m));
    }
}
