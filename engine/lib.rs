//! ferry — a declarative integration engine.
//!
//! Operators describe integration flows in YAML; ferry validates them against JSON Schemas
//! and runs them. A flow lists, fetches, transforms, invokes, renames and notifies, moving
//! files and messages between file servers, object storage and REST APIs, with lookups
//! (configuration tables, email lists, domain value maps) reached from templates. The engine
//! knows no flow: every flow, lookup and mapping is data.
//!
//! # Layout
//!
//! - [`yaml`] — YAML source files parsed with positions; [`diag`] — diagnostics.
//! - [`model`] — the raw serde model of flow, connection and lookup files (the schemas).
//! - [`compile`] — the one compiler used by `validate` and `run`: raw files → checked plans.
//! - [`template`] — minijinja templates and expressions; [`typecheck`] — their static
//!   typing (step output shapes, loop variables, filters, tests); [`lookups`] — lookup tables.
//! - [`steps`] — one file per step kind, one closed enum, one dispatch.
//! - [`run`] — the executor, run reports and events.
//! - [`schedule`] — cron schedules with time zones; [`serve`] — `ferry serve`: scheduler,
//!   HTTP API and triggers, monitoring page, hot reload, several instances.
//! - [`history`] — the run history store (SQLite embedded, or PostgreSQL shared by several
//!   processes), resubmits, run owners and fenced flow leases.
//! - [`connectors`] — local directories, FTP/FTPS, S3, OCI Object Storage, HTTP, mail (one
//!   closed enum per capability).
//! - [`standin`] — stand-ins for the proprietary DACS and DERMS APIs, for rehearsal and tests.
//! - [`check`] — `ferry check`, the connection test; [`testing`] — `ferry test`, flow tests
//!   as data run on the real engine against local stand-ins of every connection.
//! - [`demo`] — `ferry demo`: every shipped flow end to end on one machine; [`scaffold`] —
//!   `ferry new`: a flow and its test from a template.
//! - [`report`] — the run report and its events for people, as `ferry run`, `ferry demo` and
//!   `ferry runs show` print them.
//! - [`progress`] — progress bars of `ferry run` on a terminal.
//! - [`telemetry`] — logs (plain or JSON lines) and OpenTelemetry trace export.
//! - [`cli`] — the command line (the binary in `main.rs` only calls it); [`manual`] — its
//!   manual pages and shell completions; [`exit`] — the exit codes they share.

pub mod check;
pub mod cli;
pub mod compile;
pub mod connectors;
pub mod demo;
pub mod diag;
pub mod exit;
pub mod history;
pub mod lookups;
pub mod manual;
pub mod model;
pub mod progress;
pub mod report;
pub mod run;
pub mod scaffold;
pub mod schedule;
pub mod serve;
pub mod slot;
pub mod standin;
pub mod steps;
pub mod telemetry;
pub mod template;
pub mod testing;
pub mod typecheck;
pub mod yaml;
