//! `invoke`: call an operation — a REST `request`, a `put` of a spooled file to a file
//! connection, or a child `flow` with parameters.
//!
//! A request succeeds on 2xx. Statuses listed in `tolerate` count as handled (the output
//! says `suppressed: true`; a resent record that the target already holds, say). Any other
//! status fails the step with the status and the answer's message. `expect` adds a
//! condition on the answer (`response.json.ackType == 'SUCCESS'`). A put returns only once
//! the target holds the whole file under its final name.
//!
//! Requests and puts may `retry` transient failures (see [`super::retry`]); a retried
//! request is one `request` event with its `attempts`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::compile::{FlowCx, ValueTpl};
use crate::connectors::http::{HttpBody, HttpRequest, Part};
use crate::connectors::retry as backoff;
use crate::connectors::{Capability, ConnectorError, CopySource};
use crate::run::{ErrorKind, Event, Exec, Scope, StepError, StepResult};
use crate::template::Tpl;

use super::retry::{Retry, RetrySpec};

/// Configuration of an `invoke` step: exactly one of `request`, `put`, `flow`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InvokeStep {
    /// A REST request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<RequestSpec>,
    /// Put a local (spooled) file to a file connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub put: Option<PutSpec>,
    /// Identifier of a child flow to call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow: Option<String>,
    /// Parameters of the child flow; strings are templates.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub with: Map<String, Value>,
}

/// A REST request.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RequestSpec {
    /// Name of an HTTP connection.
    pub connection: String,
    /// HTTP method (default POST).
    #[serde(default = "post")]
    pub method: String,
    /// Template: path appended to the connection's base URL.
    pub path: String,
    /// Query parameters (templates).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub query: BTreeMap<String, String>,
    /// Headers (templates).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// A JSON body; strings in it are templates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json: Option<Value>,
    /// A file sent as the raw body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<FileBody>,
    /// A multipart/form-data body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multipart: Option<Vec<PartSpec>>,
    /// Statuses that count as handled rather than failed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerate: Vec<u16>,
    /// Expression over `response` (`{status, json, text}`) that must hold after a 2xx.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect: Option<String>,
    /// Retry transient failures: no answer, or a 429 / 5xx that is not tolerated (off by
    /// default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetrySpec>,
}

fn post() -> String {
    "POST".into()
}

/// A file sent as a raw request body.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileBody {
    /// Template: local path of the file.
    pub path: String,
    /// Content type (default `application/octet-stream`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
}

/// One part of a multipart body: `json`, `text` or `file`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PartSpec {
    /// The part's name.
    pub name: String,
    /// A JSON part; strings in it are templates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json: Option<Value>,
    /// A text part (template).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// A file part: template giving the local path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// Template: the file name sent with a file part.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_name: Option<String>,
    /// Content type of a file part (default `application/octet-stream`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
}

/// A put of a local file to a file connection.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PutSpec {
    /// Name of a file connection.
    pub connection: String,
    /// Template: the directory or `namespace/bucket`.
    pub location: String,
    /// Template: the target file name.
    pub name: String,
    /// Template: the local path of the file to put.
    pub file: String,
    /// Retry transient failures: the connection broke or timed out (off by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetrySpec>,
}

/// A compiled `invoke` step.
#[derive(Debug)]
pub enum InvokePlan {
    /// A REST request.
    Request(Box<RequestPlan>),
    /// A put.
    Put {
        /// Connection name.
        connection: String,
        /// Location template.
        location: Tpl,
        /// Name template.
        name: Tpl,
        /// Local path template.
        file: Tpl,
        /// Retries of transient failures.
        retry: Retry,
    },
    /// A child flow call.
    Flow {
        /// Child flow id.
        flow: String,
        /// Parameters.
        with: ValueTpl,
    },
    /// Did not compile (diagnostics were reported).
    Invalid,
}

/// A compiled request.
#[derive(Debug)]
pub struct RequestPlan {
    connection: String,
    method: String,
    path: Tpl,
    query: Vec<(String, Tpl)>,
    headers: Vec<(String, Tpl)>,
    body: BodyPlan,
    tolerate: Vec<u16>,
    expect: Option<String>,
    retry: Retry,
}

#[derive(Debug)]
enum BodyPlan {
    None,
    Json(ValueTpl),
    File(Tpl, String),
    Multipart(Vec<PartPlan>),
}

#[derive(Debug)]
enum PartPlan {
    Json(String, ValueTpl),
    Text(String, Tpl),
    File {
        name: String,
        path: Tpl,
        file_name: Option<Tpl>,
        content_type: String,
    },
}

impl InvokeStep {
    /// Checks the step.
    pub fn compile(&self, cx: &mut FlowCx<'_>, ptr: &str) -> InvokePlan {
        let count = [
            self.request.is_some(),
            self.put.is_some(),
            self.flow.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if count != 1 {
            cx.error_at_key(
                ptr,
                "invoke-shape",
                "an invoke needs exactly one of `request`, `put` or `flow`",
            );
            return InvokePlan::Invalid;
        }
        if let Some(r) = &self.request {
            return InvokePlan::Request(Box::new(r.compile(cx, &format!("{ptr}/request"))));
        }
        if let Some(p) = &self.put {
            let ptr = format!("{ptr}/put");
            return InvokePlan::Put {
                connection: cx.connection(
                    &format!("{ptr}/connection"),
                    &p.connection,
                    Capability::Files,
                ),
                location: cx.location(&format!("{ptr}/location"), &p.connection, &p.location),
                name: cx.template(&format!("{ptr}/name"), &p.name),
                file: cx.template(&format!("{ptr}/file"), &p.file),
                retry: p
                    .retry
                    .as_ref()
                    .map_or(Retry::NONE, |r| r.compile(cx, &format!("{ptr}/retry"))),
            };
        }
        let flow = self.flow.clone().unwrap_or_default();
        cx.child_flow(
            &format!("{ptr}/flow"),
            &flow,
            &self.with,
            &format!("{ptr}/with"),
        );
        InvokePlan::Flow {
            flow,
            with: cx.value(&format!("{ptr}/with"), &Value::Object(self.with.clone())),
        }
    }
}

impl RequestSpec {
    fn compile(&self, cx: &mut FlowCx<'_>, ptr: &str) -> RequestPlan {
        let method = self.method.to_ascii_uppercase();
        if !matches!(
            method.as_str(),
            "GET" | "POST" | "PUT" | "PATCH" | "DELETE" | "HEAD"
        ) {
            cx.error_at(
                &format!("{ptr}/method"),
                "bad-value",
                format!("unknown HTTP method '{}'", self.method),
                None,
            );
        }
        let bodies = [
            self.json.is_some(),
            self.file.is_some(),
            self.multipart.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if bodies > 1 {
            cx.error_at_key(
                ptr,
                "request-shape",
                "a request has at most one of `json`, `file`, `multipart`",
            );
        }
        let body = if let Some(j) = &self.json {
            BodyPlan::Json(cx.value(&format!("{ptr}/json"), j))
        } else if let Some(f) = &self.file {
            BodyPlan::File(
                cx.template(&format!("{ptr}/file/path"), &f.path),
                f.content_type
                    .clone()
                    .unwrap_or_else(|| "application/octet-stream".into()),
            )
        } else if let Some(parts) = &self.multipart {
            BodyPlan::Multipart(
                parts
                    .iter()
                    .enumerate()
                    .filter_map(|(i, p)| p.compile(cx, &format!("{ptr}/multipart/{i}")))
                    .collect(),
            )
        } else {
            BodyPlan::None
        };
        RequestPlan {
            connection: cx.connection(
                &format!("{ptr}/connection"),
                &self.connection,
                Capability::Http,
            ),
            method,
            path: cx.template(&format!("{ptr}/path"), &self.path),
            query: self
                .query
                .iter()
                .map(|(k, v)| (k.clone(), cx.template(&format!("{ptr}/query/{k}"), v)))
                .collect(),
            headers: self
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), cx.template(&format!("{ptr}/headers/{k}"), v)))
                .collect(),
            body,
            tolerate: self.tolerate.clone(),
            retry: self
                .retry
                .as_ref()
                .map_or(Retry::NONE, |r| r.compile(cx, &format!("{ptr}/retry"))),
            expect: self
                .expect
                .as_ref()
                .map(|e| cx.with_var("response", |cx| cx.expression(&format!("{ptr}/expect"), e))),
        }
    }
}

impl PartSpec {
    fn compile(&self, cx: &mut FlowCx<'_>, ptr: &str) -> Option<PartPlan> {
        match (&self.json, &self.text, &self.file) {
            (Some(j), None, None) => Some(PartPlan::Json(
                self.name.clone(),
                cx.value(&format!("{ptr}/json"), j),
            )),
            (None, Some(t), None) => Some(PartPlan::Text(
                self.name.clone(),
                cx.template(&format!("{ptr}/text"), t),
            )),
            (None, None, Some(f)) => Some(PartPlan::File {
                name: self.name.clone(),
                path: cx.template(&format!("{ptr}/file"), f),
                file_name: cx.opt_template(&format!("{ptr}/file_name"), self.file_name.as_deref()),
                content_type: self
                    .content_type
                    .clone()
                    .unwrap_or_else(|| "application/octet-stream".into()),
            }),
            _ => {
                cx.error_at_key(
                    ptr,
                    "part-shape",
                    "a multipart part needs exactly one of `json`, `text`, `file`",
                );
                None
            }
        }
    }
}

impl InvokePlan {
    /// Invokes. A put whose name the target refuses, inside a loop, is a `skipped` event
    /// and ends the loop item (the file is left where it is); so is a child flow's skip.
    pub async fn run(&self, ex: &Exec<'_>, scope: &mut Scope) -> Result<StepResult, StepError> {
        match self {
            InvokePlan::Request(r) => r.run(ex, scope).await,
            InvokePlan::Put {
                connection,
                location,
                name,
                file,
                retry,
            } => {
                let location = ex.render(location, scope)?;
                let name = ex.render(name, scope)?;
                let file = PathBuf::from(ex.render(file, scope)?);
                let store = ex.files(connection)?;
                // a fetch from an object store may have left the file there (see
                // `fetch`): the same service copies it on the server, others read it
                let deferred = ex.deferred_fetch(&file, false);
                let from = match &deferred {
                    Some(d) => Some(ex.files(&d.connection)?).filter(|f| store.copies_from(f)),
                    None => None,
                };
                let bytes = if ex.dry_run() {
                    // the name is checked as the real run would
                    store
                        .check_name(&name)
                        .map_err(|e| ex.connector_error(connection, e))?;
                    match &deferred {
                        Some(d) => d.size,
                        None => std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0),
                    }
                } else if let (Some(from), Some(d)) = (from, &deferred) {
                    let copy = backoff::run(connection, retry.policy(), |_| async {
                        store
                            .copy_from(
                                from,
                                CopySource {
                                    location: &d.location,
                                    name: &d.name,
                                    size: d.size,
                                    etag: d.etag.as_deref(),
                                },
                                &location,
                                &name,
                            )
                            .await
                            .map_err(backoff::Failure::classify)
                    })
                    .await;
                    copy.map(|(bytes, _)| bytes)
                        .map_err(|e| ex.connector_error(connection, e))?
                } else {
                    // a local file a fetch holds open is read through its descriptor
                    let held = super::fetch::held_for(ex, store, &file);
                    if held.is_none() {
                        super::fetch::materialize(ex, &file).await?;
                    }
                    let size = match &held {
                        Some(h) => Some(h.size()),
                        None => std::fs::metadata(&file).ok().map(|m| m.len()),
                    };
                    let tick = ex.transfer_progress(&name, &file, size, false);
                    let put = backoff::run(connection, retry.policy(), |_| async {
                        match &held {
                            Some(h) => store.put_held(&location, &name, &file, h.clone()).await,
                            None => store.put(&location, &name, &file).await,
                        }
                        .map_err(backoff::Failure::classify)
                    })
                    .await;
                    drop(tick);
                    match put {
                        Ok((bytes, _)) => bytes,
                        // a name the target refuses is refused for good: inside a loop its
                        // file is left where it is, and the next ones go on
                        Err(ConnectorError::NameRefused { reason }) if scope.in_loop() => {
                            let reason =
                                format!("connection '{connection}' refuses the name: {reason}");
                            tracing::warn!(%connection, %location, name = %name.escape_debug(), %reason,
                                "a file is left where it is: the target refuses its name");
                            ex.event(Event::Skipped {
                                connection: connection.clone(),
                                location,
                                name,
                                reason,
                            });
                            return Ok(StepResult::Skip);
                        }
                        Err(e) => return Err(ex.connector_error(connection, e)),
                    }
                };
                ex.event(Event::Put {
                    connection: connection.clone(),
                    location: location.clone(),
                    name: name.clone(),
                    bytes,
                });
                Ok(StepResult::Value(
                    json!({ "location": location, "name": name, "size": bytes }),
                ))
            }
            InvokePlan::Flow { flow, with } => {
                let params = match ex.eval_value(with, scope)? {
                    Value::Object(m) => m,
                    _ => Map::new(),
                };
                let step = scope.step().to_string();
                ex.call_flow(flow, params, scope, &step).await
            }
            InvokePlan::Invalid => Err(StepError::new(ErrorKind::Config, "invalid invoke step")),
        }
    }
}

impl RequestPlan {
    /// Sends `req`, again after a transient failure as `retry` allows: no answer, or a 429 /
    /// 5xx that is not tolerated. Returns the last outcome and the attempts made.
    async fn send(
        &self,
        conn: &crate::connectors::http::HttpConnector,
        req: HttpRequest,
    ) -> (
        Result<crate::connectors::http::HttpResponse, crate::connectors::ConnectorError>,
        u32,
    ) {
        let policy = self.retry.policy();
        let mut req = req;
        let mut attempts: u32 = 1;
        loop {
            let last = attempts > policy.retries;
            // The request is cloned only while another attempt may follow.
            let this = if last {
                std::mem::replace(&mut req, HttpRequest::new("GET", ""))
            } else {
                req.clone()
            };
            let result = conn.send(this).await;
            let transient = match &result {
                Ok(r) => {
                    backoff::is_transient_status(r.status) && !self.tolerate.contains(&r.status)
                }
                Err(e) => backoff::is_transient_error(e),
            };
            if !transient || last {
                return (result, attempts);
            }
            let wait = policy.backoff.delay(attempts);
            match &result {
                Ok(r) => {
                    tracing::warn!(connection = %self.connection, attempt = attempts, status = r.status,
                    wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX), "transient answer; retrying")
                }
                Err(e) => {
                    tracing::warn!(connection = %self.connection, attempt = attempts, error = %e,
                    wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX), "transient failure; retrying")
                }
            }
            tokio::time::sleep(wait).await;
            attempts += 1;
        }
    }

    async fn run(&self, ex: &Exec<'_>, scope: &mut Scope) -> Result<StepResult, StepError> {
        let path = ex.render(&self.path, scope)?;
        let mut query = Vec::new();
        for (k, t) in &self.query {
            query.push((k.clone(), ex.render(t, scope)?));
        }
        let mut headers = Vec::new();
        for (k, t) in &self.headers {
            headers.push((k.clone(), ex.render(t, scope)?));
        }
        let body = match &self.body {
            BodyPlan::None => HttpBody::None,
            // a body that is one expression (`"{{ steps.x }}"`) is written from the template
            // value straight to bytes: no JSON tree is built and dropped for each request
            BodyPlan::Json(v @ ValueTpl::Tpl(Tpl::Expr(src))) => {
                match serde_json::to_vec(&ex.eval_expression_value(src, scope)?) {
                    Ok(bytes) => HttpBody::JsonBytes(bytes),
                    // the message names the value's place, as evaluating it to JSON does
                    Err(_) => HttpBody::Json(ex.eval_value(v, scope)?),
                }
            }
            BodyPlan::Json(v) => HttpBody::Json(ex.eval_value(v, scope)?),
            BodyPlan::File(p, ct) => {
                let path = PathBuf::from(ex.render(p, scope)?);
                super::fetch::materialize(ex, &path).await?;
                HttpBody::File {
                    path,
                    content_type: ct.clone(),
                }
            }
            BodyPlan::Multipart(parts) => {
                let mut out = Vec::new();
                for p in parts {
                    out.push(match p {
                        PartPlan::Json(name, v) => Part::Json {
                            name: name.clone(),
                            value: ex.eval_value(v, scope)?,
                        },
                        PartPlan::Text(name, t) => Part::Text {
                            name: name.clone(),
                            value: ex.render(t, scope)?,
                        },
                        PartPlan::File {
                            name,
                            path,
                            file_name,
                            content_type,
                        } => {
                            let path = PathBuf::from(ex.render(path, scope)?);
                            super::fetch::materialize(ex, &path).await?;
                            let file_name = match file_name {
                                Some(t) => ex.render(t, scope)?,
                                None => path
                                    .file_name()
                                    .map(|n| n.to_string_lossy().into_owned())
                                    .unwrap_or_default(),
                            };
                            Part::File {
                                name: name.clone(),
                                path,
                                file_name,
                                content_type: content_type.clone(),
                            }
                        }
                    });
                }
                HttpBody::Multipart(out)
            }
        };
        let conn = ex.http(&self.connection)?;
        let url = format!("{}{}", conn.base_url().trim_end_matches('/'), path);
        if ex.dry_run() {
            ex.show_body(format!("request {} {url}", self.method), || {
                body_text(&body)
            });
            ex.event(Event::Request {
                connection: self.connection.clone(),
                method: self.method.clone(),
                url,
                status: None,
                suppressed: false,
                record: scope.record(),
                message: None,
                attempts: 1,
                rejected: false,
                key: None,
            });
            return Ok(StepResult::Value(
                json!({ "status": null, "json": null, "text": "", "suppressed": false, "dry_run": true }),
            ));
        }
        let req = HttpRequest {
            method: self.method.clone(),
            path,
            query,
            headers,
            body,
        };
        let (response, attempts) = self.send(conn, req).await;
        let response = response.map_err(|e| {
            ex.connector_error(&self.connection, backoff::after_attempts(e, attempts))
        })?;
        let status = response.status;
        let suppressed = self.tolerate.contains(&status);
        // what a message says of the answer, when one may be needed: the body moves into
        // the output
        let message = if !(200..300).contains(&status) || self.expect.is_some() {
            response.message()
        } else {
            String::new()
        };
        // a 2xx taken as it is inside a record loop (no `expect`): its output is built as a
        // template value, not as JSON converted afterwards (a record's request is neither
        // confirmed nor resumed from, so no JSON of it is kept)
        let as_template =
            scope.record().is_some() && self.expect.is_none() && (200..300).contains(&status);
        let (out, template_out) = if as_template {
            let template_out = minijinja::Value::from_iter([
                ("status", minijinja::Value::from(status)),
                (
                    "json",
                    response
                        .json
                        .as_ref()
                        .map_or(minijinja::Value::from(()), minijinja::Value::from_serialize),
                ),
                ("text", minijinja::Value::from(response.text)),
                ("suppressed", minijinja::Value::from(suppressed)),
            ]);
            (Value::Null, Some(template_out))
        } else {
            let out = json!({
                "status": status,
                "json": response.json,
                "text": response.text,
                "suppressed": suppressed,
            });
            (out, None)
        };
        // a 2xx whose answer fails `expect` is recorded as a refused record, not a sent one
        let expected = match (&self.expect, suppressed, (200..300).contains(&status)) {
            (Some(expect), false, true) => {
                scope.set_var("response", &out);
                let ok = ex.eval_bool(expect, scope);
                scope.remove_var("response");
                Some((expect, ok))
            }
            _ => None,
        };
        let rejected = matches!(expected, Some((_, Ok(false))));
        let refused = rejected || suppressed || !(200..300).contains(&status);
        ex.event(Event::Request {
            connection: self.connection.clone(),
            method: self.method.clone(),
            url: url.clone(),
            status: Some(status),
            suppressed,
            record: scope.record(),
            message: (!(200..300).contains(&status)).then(|| message.clone()),
            attempts,
            rejected,
            // a refused record is found by its key (`ferry runs --search`)
            key: refused
                .then(|| scope.record_key().map(str::to_string))
                .flatten(),
        });
        if !(200..300).contains(&status) && !suppressed {
            let mut e = StepError::new(
                ErrorKind::Http,
                format!("{} {url} answered HTTP {status}: {message}", self.method,),
            );
            e.status = Some(status);
            e.output = Some(minijinja::Value::from_serialize(&out));
            return Err(e);
        }
        if let Some((expect, ok)) = expected
            && !ok?
        {
            let mut e = StepError::new(
                ErrorKind::Expectation,
                format!(
                    "{} {url}: the answer does not satisfy `{}`: {message}",
                    self.method,
                    expect.trim(),
                ),
            );
            e.status = Some(status);
            e.output = Some(minijinja::Value::from_serialize(&out));
            return Err(e);
        }
        Ok(match template_out {
            Some(v) => StepResult::Output(v),
            None => StepResult::Value(out),
        })
    }
}

/// A request body as a verbose dry run shows it: JSON pretty-printed, a file's text (or its
/// size when it is not UTF-8), each part of a form.
fn body_text(body: &crate::connectors::http::HttpBody) -> String {
    use crate::connectors::http::{HttpBody, Part};
    let file = |path: &std::path::Path| match std::fs::read(path) {
        Ok(bytes) => match String::from_utf8(bytes) {
            Ok(text) => text,
            Err(e) => format!("({} bytes, not text)", e.into_bytes().len()),
        },
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    };
    let pretty = |v: &Value| serde_json::to_string_pretty(v).unwrap_or_default();
    match body {
        HttpBody::None => "(no body)".to_string(),
        HttpBody::Json(v) => pretty(v),
        HttpBody::JsonBytes(bytes) => match serde_json::from_slice::<Value>(bytes) {
            Ok(v) => pretty(&v),
            Err(_) => String::from_utf8_lossy(bytes).into_owned(),
        },
        HttpBody::File { path, content_type } => format!("{content_type}:\n{}", file(path)),
        HttpBody::Multipart(parts) => parts
            .iter()
            .map(|p| match p {
                Part::Json { name, value } => {
                    format!("part {name} (application/json):\n{}", pretty(value))
                }
                Part::Text { name, value } => format!("part {name}:\n{value}"),
                Part::File {
                    name,
                    path,
                    file_name,
                    ..
                } => {
                    format!("part {name} (file {file_name}):\n{}", file(path))
                }
            })
            .collect::<Vec<_>>()
            .join("\n"),
    }
}
