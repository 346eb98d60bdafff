//! `ferry test` output: for people (a diff of expected and actual per failed expectation),
//! JSON, and JUnit XML for CI.

use std::fmt::Write as _;

use super::CaseResult;

/// Output formats of `ferry test`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TestFormat {
    /// For people.
    Human,
    /// A JSON array of results.
    Json,
    /// JUnit XML, one test suite per test file.
    Junit,
}

/// Renders results.
pub fn render(results: &[CaseResult], format: TestFormat) -> String {
    match format {
        TestFormat::Human => human(results),
        TestFormat::Json => format!(
            "{}\n",
            serde_json::to_string_pretty(results).unwrap_or_else(|_| "[]".into())
        ),
        TestFormat::Junit => junit(results),
    }
}

fn human(results: &[CaseResult]) -> String {
    let mut out = String::new();
    for r in results {
        let mark = if r.passed { "ok  " } else { "FAIL" };
        let _ = writeln!(out, "{mark} {}: {}", r.file, r.name);
        for m in &r.mismatches {
            let _ = writeln!(out, "     {}:", m.what);
            for l in m.expected.lines() {
                let _ = writeln!(out, "       - {l}");
            }
            for l in m.actual.lines() {
                let _ = writeln!(out, "       + {l}");
            }
        }
    }
    let failed = results.iter().filter(|r| !r.passed).count();
    let _ = writeln!(
        out,
        "\n{} test(s), {} passed, {failed} failed{}",
        results.len(),
        results.len() - failed,
        if failed > 0 {
            " (- expected, + actual)"
        } else {
            ""
        }
    );
    out
}

fn xml(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_control() || matches!(c, '\n' | '\t'))
        .map(|c| match c {
            '&' => "&amp;".to_string(),
            '<' => "&lt;".to_string(),
            '>' => "&gt;".to_string(),
            '"' => "&quot;".to_string(),
            '\'' => "&apos;".to_string(),
            c => c.to_string(),
        })
        .collect()
}

fn junit(results: &[CaseResult]) -> String {
    let mut files: Vec<&str> = results.iter().map(|r| r.file.as_str()).collect();
    files.dedup();
    let total_failed = results.iter().filter(|r| !r.passed).count();
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuites name=\"ferry test\" tests=\"{}\" failures=\"{total_failed}\">",
        results.len()
    );
    for f in files {
        let cases: Vec<&CaseResult> = results.iter().filter(|r| r.file == f).collect();
        let failed = cases.iter().filter(|r| !r.passed).count();
        let time: f64 = cases.iter().map(|c| c.seconds).sum();
        let _ = writeln!(
            out,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failed}\" time=\"{time:.3}\">",
            xml(f),
            cases.len()
        );
        for c in cases {
            let _ = write!(
                out,
                "    <testcase classname=\"{}\" name=\"{}\" time=\"{:.3}\"",
                xml(&c.flow),
                xml(&c.name),
                c.seconds
            );
            if c.passed {
                out.push_str("/>\n");
                continue;
            }
            out.push_str(">\n");
            let first = c.mismatches.first().map(|m| m.what.as_str()).unwrap_or("");
            let mut body = String::new();
            for m in &c.mismatches {
                let _ = writeln!(body, "{}:\n- {}\n+ {}", m.what, m.expected, m.actual);
            }
            let _ = writeln!(
                out,
                "      <failure message=\"{} expectation(s) failed, first: {}\">{}</failure>",
                c.mismatches.len(),
                xml(first),
                xml(&body)
            );
            out.push_str("    </testcase>\n");
        }
        out.push_str("  </testsuite>\n");
    }
    out.push_str("</testsuites>\n");
    out
}
