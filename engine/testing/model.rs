//! The test file format (`flows/tests/*.test.yaml`, schema `schemas/test.schema.json`).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A file of flow tests.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TestFile {
    /// Editor schema reference.
    #[serde(rename = "$schema", default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    /// The flow the tests run, unless a test names another.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow: Option<String>,
    /// The tests, run in order, each on a fresh copy of the project.
    pub tests: Vec<TestCase>,
}

/// `connection → location → file name → content`.
pub type Fixtures = BTreeMap<String, BTreeMap<String, BTreeMap<String, Content>>>;

/// One test: fixtures, a run of the flow, expectations.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TestCase {
    /// What the test shows.
    pub name: String,
    /// The flow to run (default: the file's `flow`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow: Option<String>,
    /// Parameters, for a child flow run on its own.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub params: Map<String, Value>,
    /// The frozen clock: what `now()` answers (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub now: Option<String>,
    /// Lookup overrides: table → key → value (a string sets the first value column; a map
    /// sets columns by name). A key the table lacks is added.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub lookups: BTreeMap<String, BTreeMap<String, Value>>,
    /// Files present before the run: connection → location → name → content.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub files: Fixtures,
    /// Trigger input parts of a REST-triggered flow.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub input: BTreeMap<String, InputPart>,
    /// What REST endpoints answer. A request no stub matches is answered 404.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stubs: Vec<Stub>,
    /// What the run must have done.
    pub expect: Expect,
}

/// The content of a file: `text`, `json` or `from` (a path relative to the test file).
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Content {
    /// The file's text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// A JSON document, written as JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json: Option<Value>,
    /// A file whose bytes to use, relative to the test file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// A directory in place of the file: a put of this name fails (a target that refuses a
    /// file).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub directory: bool,
}

/// A trigger input part.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InputPart {
    /// Its text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// A JSON document.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json: Option<Value>,
    /// A file whose bytes to send, relative to the test file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// The delivered file name (default: the `from` file's name, else the part's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// A REST stub: requests it matches get its answers, one per request, the last repeated.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Stub {
    /// Only requests on this connection (default: any).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<String>,
    /// HTTP method.
    #[serde(default = "post")]
    pub method: String,
    /// The request path, as the flow writes it (below the connection's base URL).
    pub path: String,
    /// Only requests whose JSON body contains this (a subset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json: Option<Value>,
    /// The answers in order; the last one repeats (default: one `200 {}`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub answers: Vec<Answer>,
}

fn post() -> String {
    "POST".into()
}

/// One answer of a stub.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Answer {
    /// HTTP status (default 200).
    #[serde(default = "ok")]
    pub status: u16,
    /// A JSON body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json: Option<Value>,
    /// A text body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

fn ok() -> u16 {
    200
}

/// What the run must have done. Lists (`renames`, `requests`, `emails`) are exact: the
/// same number, in order.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// `succeeded`, `no_files`, `partial`, `failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    /// The run's error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorExpect>,
    /// Files after the run: connection → location → name → what it holds.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub files: BTreeMap<String, BTreeMap<String, BTreeMap<String, FileExpect>>>,
    /// Exactly the file names at a location after the run: connection → location → names.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub listing: BTreeMap<String, BTreeMap<String, Vec<String>>>,
    /// The renames, in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renames: Option<Vec<RenameExpect>>,
    /// The REST requests sent, in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<Vec<RequestExpect>>,
    /// The emails sent, in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub emails: Option<Vec<EmailExpect>>,
    /// The run report's counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<ReportExpect>,
}

/// The run's error.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ErrorExpect {
    /// The step that failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// Text the message contains.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_contains: Option<String>,
}

/// A file after the run.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileExpect {
    /// Its exact text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// The same bytes as this file (relative to the test file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub same_as: Option<String>,
    /// The SHA-256 of its bytes (hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Texts it contains.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub contains: Vec<String>,
    /// The file must not exist.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub absent: bool,
}

/// A rename.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RenameExpect {
    /// Old name.
    pub from: String,
    /// New name.
    pub to: String,
    /// The connection (default: any).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<String>,
}

/// A REST request.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RequestExpect {
    /// The connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<String>,
    /// HTTP method.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Path below the connection's base URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// A subset of its JSON body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json: Option<Value>,
    /// Texts its body contains (a multipart upload's file, for instance).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub body_contains: Vec<String>,
    /// Headers it carries (names case-insensitive).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
}

/// An email.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EmailExpect {
    /// Exactly these recipients.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<Vec<String>>,
    /// The sender.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Exactly this subject.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// Texts the subject contains.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subject_contains: Vec<String>,
    /// Texts the body contains.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub body_contains: Vec<String>,
}

/// The run report's counts.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReportExpect {
    /// Files put to a target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files_moved: Option<usize>,
    /// Renames.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renames: Option<usize>,
    /// REST requests answered 2xx.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_ok: Option<usize>,
    /// REST requests whose status was tolerated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suppressed: Option<usize>,
    /// Emails sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub emails: Option<usize>,
}
