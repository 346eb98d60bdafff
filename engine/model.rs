//! The raw model: what flow, connection and lookup files say, as serde types.
//!
//! These structs are the single source of the JSON Schemas in `schemas/` (generated with
//! schemars; doc comments become descriptions). They carry no positions: positions live in
//! [`crate::yaml::SourceDoc`], and [`crate::compile`] turns these raw values into a checked
//! plan. Every string documented as a *template* may use minijinja syntax (`{{ … }}`) over
//! the run context; every *expression* is minijinja expression syntax without braces.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A flow: an integration that lists, fetches, transforms, invokes, renames and notifies.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawFlow {
    /// Editor hint (`$schema`); ignored by ferry.
    #[serde(rename = "$schema", default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    /// Unique identifier of the flow (`ferry run ID`).
    #[schemars(regex(pattern = r"^[A-Za-z0-9_.\-]+$"))]
    pub id: String,
    /// Human name, used in emails and reports.
    pub name: String,
    /// Version of the flow, e.g. `01.00.0000`.
    pub version: String,
    /// What the flow does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// How the flow is started.
    #[serde(default)]
    pub trigger: Trigger,
    /// Lookup tables this flow uses, by the template function name that reaches them:
    /// `config: MyConfigTable` makes `config('key')` return the value of `key`.
    #[serde(default)]
    pub lookups: BTreeMap<String, String>,
    /// Parameters a caller passes (child flows): name → description.
    #[serde(default)]
    pub params: BTreeMap<String, Param>,
    /// Up to three values a run is found by (`ferry runs --search`, the monitoring page's
    /// search box; OIC's tracking fields): name → a template over the trigger input and
    /// the parameters, evaluated when the run starts, e.g.
    /// `eventId: "{{ input.metadata.eventId }}"`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 3))]
    pub track: BTreeMap<String, String>,
    /// The steps, run in document order as far as their dependencies allow.
    pub steps: Vec<RawStep>,
    /// Error handler hook: a child flow called once when the run fails, with `error` in its
    /// context.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_error: Option<FlowCall>,
}

/// A parameter of a flow.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Param {
    /// What the parameter means.
    #[serde(default)]
    pub description: String,
    /// Whether a caller must pass it.
    #[serde(default = "yes")]
    pub required: bool,
}

fn yes() -> bool {
    true
}

/// How a flow is started. A flow with no trigger can only be called by another flow.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Trigger {
    /// Run on a schedule (by `ferry serve`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Schedule>,
    /// Allow `ferry run` and "run now".
    #[serde(default)]
    pub manual: bool,
    /// Start on an HTTP request (by `ferry serve`; `ferry run --input` supplies the parts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rest: Option<RestTrigger>,
}

/// A cron schedule.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    /// Cron expression, seconds optional (`0 */15 * * * *` or `*/15 * * * *`).
    pub cron: String,
    /// IANA time zone the expression is read in; UTC when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
}

/// An HTTP trigger: a request whose parts become `input.<part>`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RestTrigger {
    /// HTTP method.
    #[serde(default = "post")]
    pub method: String,
    /// Request path, e.g. `/ic/api/integration/v1/flows/rest/MY_FLOW/1.0/event`.
    pub path: String,
    /// The parts of a multipart/form-data request, by part name.
    pub parts: BTreeMap<String, PartSpec>,
    /// HTTP Basic credentials a caller must present, read from the environment of
    /// `ferry serve` (names of variables, never the secrets). Without it the trigger takes
    /// the server's own API credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basic_auth: Option<BasicAuthEnv>,
    /// Largest request body accepted, in MiB (413 above it).
    #[serde(default = "default_max_body_mib")]
    #[schemars(range(min = 1, max = 4096))]
    pub max_body_mib: u64,
}

fn default_max_body_mib() -> u64 {
    64
}

/// HTTP Basic credentials, by environment variable names.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BasicAuthEnv {
    /// Variable holding the user name.
    pub username_env: String,
    /// Variable holding the password.
    pub password_env: String,
}

fn post() -> String {
    "POST".into()
}

/// One expected part of a trigger request.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PartSpec {
    /// `json` parts are parsed (`input.<part>` is the value); `file` parts are spooled
    /// (`input.<part>` is `{path, name, size}`).
    pub kind: PartKind,
    /// Whether the part must be present.
    #[serde(default = "yes")]
    pub required: bool,
}

/// The kind of a trigger part.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PartKind {
    /// A JSON document.
    Json,
    /// A file attachment.
    File,
}

/// One step. Exactly one of the kind keys (`list`, `fetch`, `transform`, `invoke`,
/// `rename`, `notify`, `for_each`, `route`, `end`) must be present.
// Each kind is boxed (the doc comment above is the schema's description): a step holds one,
// and unboxed the absent ones took 1.4 KB a step, while every flow of a directory is held in
// this form until all are read.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawStep {
    /// Identifier, unique in the flow; later templates reach the step's output as
    /// `steps.<id>`.
    #[schemars(regex(pattern = r"^[A-Za-z_][A-Za-z0-9_]*$"))]
    pub id: String,
    /// What the step is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Steps that must run before this one, besides those its templates refer to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub needs: Vec<String>,
    /// Expression: the step runs only when it is true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
    /// Whether the step runs after an earlier step of its block failed.
    #[serde(default)]
    pub run_on: RunOn,
    /// List a location.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub list: Option<Box<crate::steps::list::ListStep>>,
    /// Fetch a file into the run's spool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fetch: Option<Box<crate::steps::fetch::FetchStep>>,
    /// Build a value (JSON) from templates and field maps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transform: Option<Box<crate::steps::transform::TransformStep>>,
    /// Call a REST operation, put a file, or call a child flow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invoke: Option<Box<crate::steps::invoke::InvokeStep>>,
    /// Rename a file at its location.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rename: Option<Box<crate::steps::rename::RenameStep>>,
    /// Send an email.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<Box<crate::steps::notify::NotifyStep>>,
    /// Run nested steps for each item of a list or each record of a CSV file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub for_each: Option<Box<crate::steps::for_each::ForEachStep>>,
    /// Run the steps of the case an expression's value names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<Box<crate::steps::route::RouteStep>>,
    /// End the flow with an outcome.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<crate::steps::end::EndStep>,
}

/// When a step runs with respect to earlier failures in its block.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RunOn {
    /// Only while nothing failed (the default).
    #[default]
    Success,
    /// Only after a step failed; `error` describes the failure.
    Failure,
    /// In both cases.
    Always,
}

/// A call of another flow.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FlowCall {
    /// Identifier of the flow to call.
    pub flow: String,
    /// Parameters, by name; string values are templates.
    #[serde(default)]
    pub with: Map<String, Value>,
}

/// A connections file: the endpoints of one environment.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawConnections {
    /// Editor hint (`$schema`); ignored by ferry.
    #[serde(rename = "$schema", default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    /// Connections by the name flows use. String values may use `${VAR}` or
    /// `${VAR:-default}` to read the environment.
    pub connections: BTreeMap<String, crate::connectors::ConnectionSpec>,
}

/// A lookup table: rows of columns, keyed by the first column.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawLookup {
    /// Editor hint (`$schema`); ignored by ferry.
    #[serde(rename = "$schema", default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    /// Name flows use to reach the table.
    pub name: String,
    /// What the table holds.
    #[serde(default)]
    pub description: String,
    /// Column names; the first column is the key. A domain value map has one column per
    /// system.
    #[schemars(length(min = 2))]
    pub columns: Vec<String>,
    /// The rows; each has one string per column.
    pub rows: Vec<Vec<String>>,
}
