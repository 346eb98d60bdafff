//! Request handlers of the stand-in endpoints, and their JSON error type.

use axum::Json;
use axum::body::Body;
use axum::extract::{FromRequest, Multipart, Request, State};
use axum::http::header::{CONTENT_TYPE, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{
    Endpoint, FailurePlan, MAX_FORECAST_BYTES, MAX_KEPT_FORECAST_BYTES, ReceivedFile, StandIn,
    keep_latest,
};

/// Largest JSON body accepted by the JSON endpoints (sync requests, outcome acks,
/// admin), in bytes.
const MAX_JSON_BYTES: usize = 2 * 1024 * 1024;
/// Header carrying the file name of a raw (non-multipart) forecast upload.
const FILE_NAME_HEADER: &str = "x-file-name";
/// Name of the multipart part carrying the forecast file.
const FILE_PART: &str = "file";
/// Realm announced with 401 answers.
const REALM: &str = "Basic realm=\"stand-in\"";

/// An error answer: `status` with JSON body `{"message": ...}`.
#[derive(Debug)]
pub(super) struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub(super) fn unauthorised() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "missing or wrong credentials")
    }

    fn injected(status: StatusCode) -> Self {
        Self::new(
            status,
            format!("stand-in injected failure (status {})", status.as_u16()),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(json!({ "message": self.message }))).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(WWW_AUTHENTICATE, HeaderValue::from_static(REALM));
        }
        response
    }
}

/// Reads a whole body of at most `limit` bytes (413 beyond that).
async fn read_body(body: Body, limit: usize) -> Result<Vec<u8>, ApiError> {
    let mut stream = body.into_data_stream();
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk
            .map_err(|err| ApiError::bad_request(format!("could not read request body: {err}")))?;
        if bytes.len().saturating_add(chunk.len()) > limit {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body larger than {limit} bytes"),
            ));
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

/// Reads the body as a JSON object.
async fn read_json_object(body: Body) -> Result<Map<String, Value>, ApiError> {
    json_object(&read_body(body, MAX_JSON_BYTES).await?)
}

/// A body as a JSON object.
fn json_object(bytes: &[u8]) -> Result<Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::bad_request("request body must be a JSON object")),
        Err(err) => Err(ApiError::bad_request(format!("malformed JSON body: {err}"))),
    }
}

/// Reads and discards a body (so the client sees the answer rather than a reset
/// connection), giving up after the largest accepted upload.
async fn drain(body: Body) {
    let mut stream = body.into_data_stream();
    let mut seen = 0usize;
    while let Some(Ok(chunk)) = stream.next().await {
        seen = seen.saturating_add(chunk.len());
        if seen > MAX_FORECAST_BYTES {
            break;
        }
    }
}

/// `POST /rest/apis/cross/syncRequests/update` — the DACS sync request update.
pub(super) async fn sync_request_update(
    State(stand_in): State<StandIn>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    if let Some(status) = stand_in.injected_failure(Endpoint::SyncRequests) {
        drain(body).await;
        return Err(ApiError::injected(status));
    }
    let bytes = read_body(body, MAX_JSON_BYTES).await?;
    let request = json_object(&bytes)?;
    let id = match request.get("syncRequestId") {
        Some(Value::String(id)) if !id.trim().is_empty() => id.clone(),
        Some(Value::String(_)) => {
            return Err(ApiError::bad_request("syncRequestId must not be empty"));
        }
        Some(_) => return Err(ApiError::bad_request("syncRequestId must be a string")),
        None => {
            return Err(ApiError::bad_request(
                "missing required field syncRequestId",
            ));
        }
    };
    if let Some(status) = stand_in.failing_sync_id(&id)
        && let Ok(status) = StatusCode::from_u16(status)
    {
        return Err(ApiError::injected(status));
    }
    let mut state = stand_in.state();
    if !state.accepted_sync_ids.insert(id.clone()) {
        return Err(ApiError::bad_request(format!(
            "duplicate sync request id {id}"
        )));
    }
    // kept as received, as a store would keep it: not as a tree of values (which took
    // about 2 KiB a request: 2.2 GiB after a million)
    let keep = stand_in.config.keep;
    keep_latest(&mut state.sync_requests, bytes.into_boxed_slice(), keep);
    Ok(Json(json!({ "status": "UPDATED", "syncRequestId": id })))
}

/// `POST /nms-drms/rest/v1/loadReductionForecasts` — the DERMS forecast upload.
///
/// Takes a multipart body whose `file` part carries the file (with a file name),
/// or any other body as the raw file, named by the `X-File-Name` header.
pub(super) async fn forecast_upload(
    State(stand_in): State<StandIn>,
    req: Request,
) -> Result<Json<Value>, ApiError> {
    if let Some(status) = stand_in.injected_failure(Endpoint::Forecasts) {
        drain(req.into_body()).await;
        return Err(ApiError::injected(status));
    }
    let header_name = file_name_header(req.headers())?;
    let (file_name, bytes, content_type) = if is_multipart(req.headers()) {
        let multipart = Multipart::from_request(req, &())
            .await
            .map_err(|rejection| ApiError::bad_request(rejection.body_text()))?;
        read_file_part(multipart, header_name).await?
    } else {
        let Some(file_name) = header_name else {
            return Err(ApiError::bad_request(
                "expected multipart/form-data with a `file` part, \
                 or a raw body with the file name in header X-File-Name",
            ));
        };
        let content_type = header_string(req.headers(), CONTENT_TYPE.as_str());
        let bytes = read_body(req.into_body(), MAX_FORECAST_BYTES).await?;
        (file_name, bytes, content_type)
    };

    let mut state = stand_in.state();
    state.forecast_counter += 1;
    let forecast_id = format!("LRF-{}", state.forecast_counter);
    let ack_type = state.forecast_ack.clone();
    let message = format!("forecast file {file_name} received ({} bytes)", bytes.len());
    let file = ReceivedFile {
        forecast_id: forecast_id.clone(),
        file_name: file_name.clone(),
        bytes,
        content_type,
    };
    state.keep_forecast(file, stand_in.config.keep, MAX_KEPT_FORECAST_BYTES);
    Ok(Json(json!({
        "ackType": ack_type,
        "forecastId": forecast_id,
        "fileName": file_name,
        "message": message,
    })))
}

fn is_multipart(headers: &HeaderMap) -> bool {
    header_string(headers, CONTENT_TYPE.as_str()).is_some_and(|ct| {
        ct.trim_start()
            .to_ascii_lowercase()
            .starts_with("multipart/form-data")
    })
}

fn header_string(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
}

/// The `X-File-Name` header, if present and non-empty.
fn file_name_header(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get(FILE_NAME_HEADER) else {
        return Ok(None);
    };
    let name = value
        .to_str()
        .map_err(|_| ApiError::bad_request("X-File-Name must be visible ASCII"))?
        .trim();
    if name.is_empty() {
        return Err(ApiError::bad_request("X-File-Name must not be empty"));
    }
    Ok(Some(name.to_owned()))
}

/// Finds the `file` part and reads it; other parts are skipped unread.
async fn read_file_part(
    mut multipart: Multipart,
    fallback_name: Option<String>,
) -> Result<(String, Vec<u8>, Option<String>), ApiError> {
    let multipart_error = |err: axum::extract::multipart::MultipartError| {
        ApiError::new(err.status(), err.body_text())
    };
    while let Some(mut field) = multipart.next_field().await.map_err(multipart_error)? {
        if field.name() != Some(FILE_PART) {
            continue;
        }
        let file_name = field
            .file_name()
            .map(str::to_owned)
            .filter(|name| !name.trim().is_empty())
            .or(fallback_name)
            .ok_or_else(|| {
                ApiError::bad_request(
                    "the `file` part has no file name (and no X-File-Name header)",
                )
            })?;
        let content_type = field.content_type().map(str::to_owned);
        let mut bytes = Vec::new();
        while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
            bytes.extend_from_slice(&chunk);
        }
        return Ok((file_name, bytes, content_type));
    }
    Err(ApiError::bad_request("missing multipart part named `file`"))
}

/// `POST /device-outcome-ack` — the DERMS deviceOutcomeAck.
pub(super) async fn outcome_ack(
    State(stand_in): State<StandIn>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    if let Some(status) = stand_in.injected_failure(Endpoint::OutcomeAcks) {
        drain(body).await;
        return Err(ApiError::injected(status));
    }
    let ack = read_json_object(body).await?;
    match ack.get("ackType") {
        Some(Value::String(kind)) if kind == "SUCCESS" || kind == "FAILURE" => {}
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "ackType must be \"SUCCESS\" or \"FAILURE\", got {other}"
            )));
        }
        None => return Err(ApiError::bad_request("missing required field ackType")),
    }
    let keep = stand_in.config.keep;
    keep_latest(&mut stand_in.state().outcome_acks, Value::Object(ack), keep);
    Ok(Json(json!({ "received": true })))
}

/// Fallback for unknown paths.
pub(super) async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("no stand-in endpoint for {method} {}", uri.path()),
    )
}

/// `GET /_standin/journal`.
pub(super) async fn admin_journal(State(stand_in): State<StandIn>) -> Json<Value> {
    Json(json!(stand_in.journal()))
}

/// `GET /_standin/sync-requests`.
pub(super) async fn admin_sync_requests(State(stand_in): State<StandIn>) -> Json<Value> {
    Json(Value::Array(stand_in.sync_requests()))
}

/// `GET /_standin/forecasts` — names and sizes, not contents.
pub(super) async fn admin_forecasts(State(stand_in): State<StandIn>) -> Json<Value> {
    let state = stand_in.state();
    let files: Vec<Value> = state
        .forecasts
        .iter()
        .map(|file| {
            json!({
                "forecastId": file.forecast_id,
                "fileName": file.file_name,
                "size": file.bytes.len(),
                "contentType": file.content_type,
            })
        })
        .collect();
    Json(Value::Array(files))
}

/// `GET /_standin/outcome-acks`.
pub(super) async fn admin_outcome_acks(State(stand_in): State<StandIn>) -> Json<Value> {
    Json(Value::Array(stand_in.outcome_acks()))
}

/// `POST /_standin/reset`.
pub(super) async fn admin_reset(State(stand_in): State<StandIn>) -> Json<Value> {
    stand_in.reset();
    Json(json!({ "reset": true }))
}

/// How many calls `POST /_standin/fail` should fail: a count or `"forever"`.
#[derive(Deserialize)]
#[serde(untagged)]
enum Times {
    Count(usize),
    Word(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FailRequest {
    endpoint: String,
    #[serde(default)]
    after: usize,
    #[serde(default = "default_fail_status")]
    status: u16,
    times: Option<Times>,
}

fn default_fail_status() -> u16 {
    500
}

/// `POST /_standin/fail` — `{"endpoint", "after", "status", "times"}`; `after`
/// defaults to 0, `status` to 500, `times` to 1 (`"forever"` never stops, 0 clears).
pub(super) async fn admin_fail(
    State(stand_in): State<StandIn>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let request = read_json_object(body).await?;
    let request: FailRequest = serde_json::from_value(Value::Object(request))
        .map_err(|err| ApiError::bad_request(format!("invalid failure plan: {err}")))?;
    let endpoint = Endpoint::parse(&request.endpoint).ok_or_else(|| {
        ApiError::bad_request(format!(
            "unknown endpoint {:?}: expected \"sync-requests\", \"forecasts\" or \"outcome-acks\"",
            request.endpoint
        ))
    })?;
    if !(400..=599).contains(&request.status) {
        return Err(ApiError::bad_request(format!(
            "status must be a 4xx or 5xx code, got {}",
            request.status
        )));
    }
    let times = match request.times {
        None => 1,
        Some(Times::Count(n)) => n,
        Some(Times::Word(word)) if word == "forever" => usize::MAX,
        Some(Times::Word(word)) => {
            return Err(ApiError::bad_request(format!(
                "times must be a number or \"forever\", got {word:?}"
            )));
        }
    };
    let plan = FailurePlan {
        after: request.after,
        status: request.status,
        times,
    };
    stand_in.set_plan(endpoint, plan);
    let times_json = if times == usize::MAX {
        json!("forever")
    } else {
        json!(times)
    };
    Ok(Json(json!({
        "endpoint": request.endpoint,
        "after": plan.after,
        "status": plan.status,
        "times": times_json,
    })))
}

/// `POST /_standin/forecast-ack` — `{"ackType": "..."}`.
pub(super) async fn admin_forecast_ack(
    State(stand_in): State<StandIn>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let request = read_json_object(body).await?;
    let ack_type = match request.get("ackType") {
        Some(Value::String(ack)) if !ack.trim().is_empty() => ack.clone(),
        _ => return Err(ApiError::bad_request("ackType must be a non-empty string")),
    };
    stand_in.set_forecast_ack(&ack_type);
    Ok(Json(json!({ "ackType": ack_type })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn read_body_enforces_limit() {
        let ok = read_body(Body::from("12345"), 5).await;
        assert_eq!(ok.ok().as_deref(), Some(&b"12345"[..]));
        let too_big = read_body(Body::from("123456"), 5).await;
        assert_eq!(
            too_big.err().map(|e| e.status),
            Some(StatusCode::PAYLOAD_TOO_LARGE)
        );
    }
}
