//! OCI Object Storage through its native API, as a [`FileStore`](super::FileStore).
//!
//! A location is `namespace/bucket`, or `namespace/bucket:folder/sub` for a folder inside
//! the bucket: its files are the objects `folder/sub/…`, listed by their names relative to
//! the folder ([`super::split_folder`]); a file name may itself hold `/` between checked
//! segments ([`super::check_object_name`]). The store speaks the native REST API at
//! `https://objectstorage.{region}.oraclecloud.com` (or the spec's `endpoint`):
//!
//! - list: `GET /n/{ns}/b/{bucket}/o?fields=name,size&prefix=..&delimiter=/&start=..`,
//!   following `nextStartWith` page by page. With `delimiter=/`, objects inside
//!   "folders" (names containing `/`) are left out, as a local directory listing leaves out
//!   subdirectories; a name that still fails [`check_name`] is listed with a warning and
//!   left where it is by [`FileStore::list_checked`](super::FileStore::list_checked) (a
//!   `skipped` event), so the other files move.
//! - get: `GET /n/{ns}/b/{bucket}/o/{object}`, the body streamed chunk by chunk into the
//!   destination file (never held in memory).
//! - put: `PUT /n/{ns}/b/{bucket}/o/{object}`, the file streamed with its `Content-Length`.
//!   The put returns only after a 2xx answer. Object Storage commits a PutObject only once the
//!   whole announced body has arrived, atomically: an upload that fails or breaks off leaves
//!   no object under the name (and an older object of that name untouched), so no temporary
//!   name is needed.
//! - rename: `POST /n/{ns}/b/{bucket}/actions/renameObject` with
//!   `{"sourceName","newName"}` (optionally `srcObjIfMatchETag` / `newObjIfNoneMatchETag`,
//!   see [`OciStore::rename_with`]).
//! - [`OciStore::head`] and [`OciStore::delete`]: `HEAD` / `DELETE` on an object.
//! - check: `GET /n/` (GetNamespace), which needs no bucket: it proves the endpoint is
//!   reachable and the credentials are accepted, and names the tenancy's namespace.
//!
//! Object names and location segments are percent-encoded per path segment (everything but
//! `A-Z a-z 0-9 - . _ ~`). Every request is signed with [`super::oci_sign`] (Signature
//! Version 1). Errors carry OCI's `{"code","message"}` body as `Code: message`, with the
//! request and the `opc-request-id`: 401/403 become [`ConnectorError::Auth`], 404
//! [`ConnectorError::NotFound`], other statuses [`ConnectorError::Protocol`].
//!
//! `timeout_secs` bounds each wait: connecting, the answer to a request, each chunk of a
//! download, and any stall of an upload (a long transfer that keeps moving is never cut).
//!
//! Transient failures (no connection, a timeout, a download that breaks off, `429`, `5xx`)
//! are retried [`RETRIES`] times (as the S3 connector's client does), waiting 100 ms, 200 ms,
//! 400 ms (each with jitter, at most 2 s) in between, and no retry starts later than
//! `timeout_secs` after the first attempt (as the S3 connector); uploads are replayed from the local file,
//! opened afresh for each attempt. A `4xx` answer fails at once. An error after several
//! attempts says how many were made. A rename retried after an answer was lost may find its
//! source already renamed: that is reported as the source not being found.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::StreamExt as _;
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE, DATE, ETAG, HeaderValue};
use reqwest::{Body, Client, Method, Response, StatusCode, Url};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokio_util::io::ReaderStream;

use super::oci_sign::{self, BodyHeaders, RequestSigner, SigningInput};
use super::retry::{self, Backoff, Failure, Policy};
use super::{
    ConnectorError, CopySource, Entry, check_name, check_object_name, expand_env, folder_key,
    location_segments, split_folder,
};

/// Timeout when the spec gives none, in seconds.
const DEFAULT_TIMEOUT_SECS: u64 = 60;
/// Upper bound on the time spent establishing a connection (TCP + TLS).
const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Largest listing page or error body read into memory.
const MAX_SMALL_BODY: usize = 16 * 1024 * 1024;
/// Retries of a transiently failed request (so at most 4 attempts), as the S3 connector.
pub const RETRIES: u32 = 3;
/// Waits between attempts: 100 ms doubling, at most 2 s, with jitter (as the S3 connector).
const BACKOFF: Backoff = Backoff {
    first: Duration::from_millis(100),
    max: Duration::from_secs(2),
};

/// An OCI Object Storage connection (native API, request signing), as written in a
/// connections file. Locations are `namespace/bucket`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OciSpec {
    /// Region identifier, e.g. `eu-frankfurt-1`; the endpoint is then
    /// `https://objectstorage.{region}.oraclecloud.com`. Needed unless `endpoint` is given.
    #[serde(default)]
    pub region: Option<String>,
    /// Endpoint URL overriding the one derived from `region`, e.g. a dedicated or private
    /// endpoint. May use `${VAR}` / `${VAR:-default}`.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Tenancy OCID (`ocid1.tenancy.oc1..…`). May use `${VAR}`.
    pub tenancy: String,
    /// User OCID (`ocid1.user.oc1..…`) owning the API key. May use `${VAR}`.
    pub user: String,
    /// Fingerprint of the API key as shown by the console (`12:34:…`). May use `${VAR}`.
    pub fingerprint: String,
    /// Path to the API private key, a PEM file (PKCS#1 `BEGIN RSA PRIVATE KEY` or PKCS#8
    /// `BEGIN PRIVATE KEY`), RSA 2048 bits or more as OCI requires (1024–2047-bit keys, such as
    /// Oracle's published test key, are signed with too, with a warning). May use `${VAR}`.
    pub key_file: String,
    /// Environment variable holding the key's passphrase. Passphrase-protected keys are not
    /// supported yet: such a key is refused with an error saying how to decrypt it.
    #[serde(default)]
    pub key_passphrase_env: Option<String>,
    /// Seconds any single wait may take: connecting, an answer, a download chunk, an upload
    /// stall (default 60). Long transfers that keep moving are not cut.
    #[serde(default)]
    pub timeout_secs: Option<u64>,
    /// PEM file of extra CA certificates to trust, in addition to the system's (private
    /// endpoints behind an inspecting proxy). May use `${VAR}`.
    #[serde(default)]
    pub ca_file: Option<String>,
}

/// What [`OciStore::head`] reports about an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectHead {
    /// Size in bytes.
    pub size: u64,
    /// The object's entity tag, when the server sent one.
    pub etag: Option<String>,
}

/// Conditions for [`OciStore::rename_with`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RenameConditions {
    /// Rename only if the source's ETag is this one (`srcObjIfMatchETag`).
    pub src_if_match_etag: Option<String>,
    /// Rename only if the target does not match this ETag; `*` means "only if the target
    /// does not exist" (`newObjIfNoneMatchETag`).
    pub new_if_none_match_etag: Option<String>,
}

/// An opened OCI Object Storage connection.
pub struct OciStore {
    name: String,
    endpoint: Url,
    /// The region (the spec's, or read from an `objectstorage.{region}.…` endpoint), which a
    /// copy on the server names as its destination; without one, no copy on the server.
    region: Option<String>,
    client: Client,
    signer: RequestSigner,
    timeout: Duration,
}

impl fmt::Debug for OciStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OciStore")
            .field("name", &self.name)
            .field("endpoint", &self.endpoint.as_str())
            .field("key_id", &self.signer.key_id())
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// A request body.
enum SendBody {
    /// No body.
    None,
    /// A JSON document whose headers are signed.
    Json(Vec<u8>),
    /// A file streamed from disk; only the minimal header set is signed.
    File { path: PathBuf, len: u64 },
}

/// One page of `ListObjects`.
#[derive(Deserialize)]
struct ListPage {
    #[serde(default)]
    objects: Vec<ListedObject>,
    #[serde(default, rename = "nextStartWith")]
    next_start_with: Option<String>,
}

#[derive(Deserialize)]
struct ListedObject {
    name: String,
    #[serde(default)]
    size: Option<u64>,
}

/// The body of `copyObject`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CopyBody<'a> {
    source_object_name: &'a str,
    #[serde(
        rename = "sourceObjectIfMatchETag",
        skip_serializing_if = "Option::is_none"
    )]
    source_object_if_match_etag: Option<&'a str>,
    destination_region: &'a str,
    destination_namespace: &'a str,
    destination_bucket: &'a str,
    destination_object_name: &'a str,
}

/// What a work request's status says (`GET /workRequests/{id}`).
#[derive(Deserialize)]
struct WorkRequest {
    status: String,
}

/// The body of `renameObject`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RenameBody<'a> {
    source_name: &'a str,
    new_name: &'a str,
    #[serde(rename = "srcObjIfMatchETag", skip_serializing_if = "Option::is_none")]
    src_obj_if_match_etag: Option<&'a str>,
    #[serde(
        rename = "newObjIfNoneMatchETag",
        skip_serializing_if = "Option::is_none"
    )]
    new_obj_if_none_match_etag: Option<&'a str>,
}

impl OciStore {
    /// Opens the store: expands `${VAR}`, derives the endpoint, reads and parses the key
    /// file, and builds the HTTP client. Does not touch the network.
    pub fn new(name: &str, spec: &OciSpec) -> Result<Self, ConnectorError> {
        let ctx = |msg: String| ConnectorError::Config(format!("connection '{name}': {msg}"));
        let in_ctx = |e: ConnectorError| match e {
            ConnectorError::Config(msg) => ctx(msg),
            other => other,
        };

        let endpoint = match (&spec.endpoint, &spec.region) {
            (Some(endpoint), _) => expand_env(endpoint).map_err(in_ctx)?,
            (None, Some(region)) => {
                let region = region.trim();
                if region.is_empty()
                    || !region
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                {
                    return Err(ctx(format!(
                        "region '{}' is not a region identifier like 'eu-frankfurt-1'",
                        region.escape_debug()
                    )));
                }
                format!("https://objectstorage.{region}.oraclecloud.com")
            }
            (None, None) => {
                return Err(ctx(
                    "give either region (e.g. 'eu-frankfurt-1') or endpoint".to_string(),
                ));
            }
        };
        let endpoint = parse_endpoint(&endpoint).map_err(ctx)?;

        let field = |label: &str, value: &str| -> Result<String, ConnectorError> {
            let value = expand_env(value).map_err(in_ctx)?;
            let value = value.trim().to_string();
            if value.is_empty() || value.chars().any(|c| c.is_control() || c == '"') {
                return Err(ctx(format!(
                    "{label} is empty or holds forbidden characters"
                )));
            }
            Ok(value)
        };
        let key_id = oci_sign::key_id(
            &field("tenancy", &spec.tenancy)?,
            &field("user", &spec.user)?,
            &field("fingerprint", &spec.fingerprint)?,
        );
        let key_file = expand_env(&spec.key_file).map_err(in_ctx)?;
        let signer = RequestSigner::from_key_file(key_id, Path::new(&key_file)).map_err(in_ctx)?;
        if let Some(var) = &spec.key_passphrase_env {
            tracing::warn!(connection = %name, variable = %var,
                "key_passphrase_env is set but the key is not encrypted; ignoring it");
        }

        let secs = spec.timeout_secs.unwrap_or(DEFAULT_TIMEOUT_SECS);
        if secs == 0 {
            return Err(ctx("timeout_secs must be at least 1".to_string()));
        }
        let timeout = Duration::from_secs(secs);

        // No overall timeout: transfers of any size are bounded by stall timeouts instead.
        // No redirects: a redirected request would carry a signature for another target.
        let mut builder = Client::builder()
            .user_agent(concat!("ferry/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(timeout.min(MAX_CONNECT_TIMEOUT))
            .redirect(reqwest::redirect::Policy::none());
        if let Some(ca_file) = &spec.ca_file {
            let path = expand_env(ca_file).map_err(in_ctx)?;
            let certs = super::http::load_ca_certificates(Path::new(&path)).map_err(in_ctx)?;
            builder = builder.tls_certs_merge(certs);
        }
        let client = builder.build().map_err(|e| {
            ctx(format!(
                "cannot set up the HTTP client: {}",
                super::http::error_chain(&e)
            ))
        })?;

        let region = spec
            .region
            .as_deref()
            .map(|r| r.trim().to_string())
            .filter(|r| !r.is_empty())
            .or_else(|| {
                let host = endpoint.host_str()?;
                let rest = host.strip_prefix("objectstorage.")?;
                Some(rest.split('.').next()?.to_string())
            });
        Ok(OciStore {
            name: name.to_string(),
            endpoint,
            region,
            client,
            signer,
            timeout,
        })
    }

    /// The endpoint, e.g. `https://objectstorage.eu-frankfurt-1.oraclecloud.com/`.
    pub fn endpoint(&self) -> &str {
        self.endpoint.as_str()
    }

    pub(super) async fn list(
        &self,
        location: &str,
        prefix: &str,
    ) -> Result<Vec<Entry>, ConnectorError> {
        let (ns, bucket) = split_location(location)?;
        let (_, folder) = split_folder(location)?;
        // the folder's objects: names under `folder/`, given relative to it
        let base = folder.map(|f| format!("{f}/")).unwrap_or_default();
        let mut out = Vec::new();
        let mut start: Option<String> = None;
        loop {
            let mut query = format!(
                "fields=name%2Csize&delimiter=%2F&prefix={}",
                encode_component(&format!("{base}{prefix}"))
            );
            if let Some(start) = &start {
                query.push_str("&start=");
                query.push_str(&encode_component(start));
            }
            let url = self.url(&format!(
                "n/{}/b/{}/o?{query}",
                encode_component(ns),
                encode_component(bucket)
            ))?;
            let shown = shown_url(&Method::GET, &url);
            let bytes = self.small(Method::GET, url, SendBody::None).await?;
            let page: ListPage = serde_json::from_slice(&bytes).map_err(|e| {
                ConnectorError::Protocol(format!("{shown}: the listing is not valid JSON: {e}"))
            })?;
            for mut object in page.objects {
                let Some(relative) = object.name.strip_prefix(base.as_str()) else {
                    return Err(ConnectorError::Protocol(format!(
                        "the listing of {location} returned object '{}', which is not in the \
                         folder '{}'",
                        object.name.escape_debug(),
                        base.escape_debug()
                    )));
                };
                object.name = relative.to_string();
                if !object.name.starts_with(prefix) {
                    continue;
                }
                if let Err(refused) = check_name(&object.name) {
                    // listed, and left where it is by FileStore::list_checked
                    tracing::warn!(
                        location,
                        "the listing holds an object ferry will not handle: {refused}"
                    );
                }
                let Some(size) = object.size else {
                    return Err(ConnectorError::Protocol(format!(
                        "{shown}: the listing gives no size for object '{}'",
                        object.name.escape_debug()
                    )));
                };
                out.push(Entry {
                    name: object.name,
                    size,
                });
            }
            match page.next_start_with {
                Some(next) if !next.is_empty() => {
                    if start.as_deref().is_some_and(|s| next.as_str() <= s) {
                        return Err(ConnectorError::Protocol(format!(
                            "{shown}: nextStartWith '{}' does not advance the listing",
                            next.escape_debug()
                        )));
                    }
                    start = Some(next);
                }
                _ => break,
            }
        }
        Ok(out)
    }

    pub(super) async fn get(
        &self,
        location: &str,
        name: &str,
        dest: &Path,
    ) -> Result<u64, ConnectorError> {
        let url = self.object_url(location, name)?;
        retry::run(&self.name, self.retry_policy(), |_| {
            self.get_once(&url, dest)
        })
        .await
        .map(|(copied, _)| copied)
    }

    /// One attempt of [`get`](Self::get); a failed attempt removes the partial file.
    async fn get_once(&self, url: &Url, dest: &Path) -> Result<u64, Failure> {
        let response = self.attempt(&Method::GET, url, &SendBody::None).await?;
        let shown = shown_url(&Method::GET, response.url());
        if !response.status().is_success() {
            return Err(Failure::Permanent(self.error(response, &shown).await));
        }
        let expected = header_u64(&response, CONTENT_LENGTH);
        let timeout = self.timeout;
        let at = shown.clone();
        let chunks =
            futures_util::stream::unfold((response, 0u64), move |(mut response, copied)| {
                let shown = at.clone();
                async move {
                    let chunk = match tokio::time::timeout(timeout, response.chunk()).await {
                        Err(_) => Err(ConnectorError::Timeout(format!(
                            "{shown}: the download stalled for {} s after {copied} bytes",
                            timeout.as_secs()
                        ))),
                        Ok(Err(e)) => Err(ConnectorError::Connect(format!(
                            "{shown}: the download broke off after {copied} bytes: {}",
                            super::http::error_chain(&e)
                        ))),
                        Ok(Ok(None)) => return None,
                        Ok(Ok(Some(chunk))) => Ok(chunk),
                    };
                    let copied = copied + chunk.as_ref().map_or(0, |c| c.len() as u64);
                    Some((chunk, (response, copied)))
                }
            });
        super::spool::receive(dest, chunks, |copied| match expected {
            Some(expected) if expected != copied => Err(ConnectorError::Protocol(format!(
                "{shown}: received {copied} bytes but Content-Length announced {expected}"
            ))),
            _ => Ok(()),
        })
        .await
        .map_err(Failure::classify)
    }

    pub(super) async fn put(
        &self,
        location: &str,
        name: &str,
        src: &Path,
    ) -> Result<u64, ConnectorError> {
        let url = self.object_url(location, name)?;
        let len = tokio::fs::metadata(src)
            .await
            .map_err(|e| super::source_error("stat", src, e))?
            .len();
        let body = SendBody::File {
            path: src.to_path_buf(),
            len,
        };
        let response = self.request(Method::PUT, url, body).await?;
        let shown = shown_url(&Method::PUT, response.url());
        if !response.status().is_success() {
            return Err(self.error(response, &shown).await);
        }
        Ok(len)
    }

    pub(super) async fn rename(
        &self,
        location: &str,
        from: &str,
        to: &str,
    ) -> Result<(), ConnectorError> {
        self.rename_inner(location, from, to, &RenameConditions::default())
            .await
    }

    pub(super) async fn check(&self) -> Result<String, ConnectorError> {
        let namespace = self.namespace().await?;
        Ok(format!(
            "OCI Object Storage at {} accepted the key {}; namespace '{namespace}'",
            self.endpoint,
            self.signer.key_id()
        ))
    }

    /// The tenancy's Object Storage namespace (`GET /n/`).
    pub async fn namespace(&self) -> Result<String, ConnectorError> {
        let url = self.url("n/")?;
        let shown = shown_url(&Method::GET, &url);
        let bytes = self.small(Method::GET, url, SendBody::None).await?;
        serde_json::from_slice::<String>(&bytes).map_err(|e| {
            ConnectorError::Protocol(format!(
                "{shown}: the answer is not a JSON string naming the namespace: {e}"
            ))
        })
    }

    /// Size and ETag of `location/name` (`HEAD`), or `None` when no such object exists.
    pub async fn head(
        &self,
        location: &str,
        name: &str,
    ) -> Result<Option<ObjectHead>, ConnectorError> {
        check_object_name(name)?;
        let url = self.object_url(location, name)?;
        let response = self.request(Method::HEAD, url, SendBody::None).await?;
        let shown = shown_url(&Method::HEAD, response.url());
        if response.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !response.status().is_success() {
            return Err(self.error(response, &shown).await);
        }
        let size = header_u64(&response, CONTENT_LENGTH).ok_or_else(|| {
            ConnectorError::Protocol(format!("{shown}: the answer has no Content-Length"))
        })?;
        let etag = response
            .headers()
            .get(ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        Ok(Some(ObjectHead { size, etag }))
    }

    /// Whether `other` is the same service (endpoint and region) signing with the same key:
    /// then it can copy objects of one into the other on the server.
    pub(super) fn same_service(&self, other: &OciStore) -> bool {
        self.region.is_some()
            && self.region == other.region
            && self.endpoint == other.endpoint
            && self.signer.key_id() == other.signer.key_id()
    }

    /// Copies `source` (an object of this service; a source changed since its entity tag was
    /// read fails the copy) to `location/name` on the server: `copyObject`, then its work request followed until it ends. OCI shows the
    /// copy under its name only once it is whole; this returns once the work request
    /// completed.
    pub(super) async fn copy_from(
        &self,
        source: CopySource<'_>,
        location: &str,
        name: &str,
    ) -> Result<u64, ConnectorError> {
        check_object_name(name)?;
        check_object_name(source.name)?;
        let region = self.region.as_deref().ok_or_else(|| {
            ConnectorError::Config(format!(
                "connection '{}': a copy on the server needs the region",
                self.name
            ))
        })?;
        let (src_ns, src_bucket) = split_location(source.location)?;
        let (_, src_folder) = split_folder(source.location)?;
        let (ns, bucket) = split_location(location)?;
        let (_, folder) = split_folder(location)?;
        let url = self.url(&format!(
            "n/{}/b/{}/actions/copyObject",
            encode_component(src_ns),
            encode_component(src_bucket)
        ))?;
        let body = serde_json::to_vec(&CopyBody {
            source_object_name: &folder_key(src_folder, source.name),
            source_object_if_match_etag: source.etag,
            destination_region: region,
            destination_namespace: ns,
            destination_bucket: bucket,
            destination_object_name: &folder_key(folder, name),
        })
        .map_err(|e| ConnectorError::Config(format!("cannot write the copy request: {e}")))?;
        let response = self
            .request(Method::POST, url, SendBody::Json(body))
            .await?;
        let shown = shown_url(&Method::POST, response.url());
        if !response.status().is_success() {
            return Err(self.error(response, &shown).await);
        }
        let id = response
            .headers()
            .get("opc-work-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .ok_or_else(|| {
                ConnectorError::Protocol(format!("{shown}: the answer names no work request"))
            })?;
        let status_url = self.url(&format!("workRequests/{}", encode_component(&id)))?;
        let mut wait = BACKOFF.first;
        loop {
            let bytes = self
                .small(Method::GET, status_url.clone(), SendBody::None)
                .await?;
            let work: WorkRequest = serde_json::from_slice(&bytes).map_err(|e| {
                ConnectorError::Protocol(format!(
                    "{shown}: work request {id}: the answer is not a work request: {e}"
                ))
            })?;
            // the other statuses (accepted, in progress, canceling) mean: not ended yet
            match work.status.as_str() {
                "COMPLETED" => return Ok(source.size),
                other @ ("FAILED" | "CANCELED") => {
                    return Err(ConnectorError::Protocol(format!(
                        "{shown}: the copy of '{}' to '{}' ended {other} (work request {id})",
                        source.name.escape_debug(),
                        name.escape_debug()
                    )));
                }
                _ => {}
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(BACKOFF.max);
        }
    }

    /// Deletes `location/name` (`DELETE`); a missing object is [`ConnectorError::NotFound`].
    pub async fn delete(&self, location: &str, name: &str) -> Result<(), ConnectorError> {
        check_object_name(name)?;
        let url = self.object_url(location, name)?;
        let response = self.request(Method::DELETE, url, SendBody::None).await?;
        let shown = shown_url(&Method::DELETE, response.url());
        if !response.status().is_success() {
            return Err(self.error(response, &shown).await);
        }
        Ok(())
    }

    /// Renames `location/from` to `location/to` under `conditions` (a failed condition is
    /// OCI's 412 answer, a [`ConnectorError::Protocol`] naming the code).
    pub async fn rename_with(
        &self,
        location: &str,
        from: &str,
        to: &str,
        conditions: &RenameConditions,
    ) -> Result<(), ConnectorError> {
        check_object_name(from)?;
        check_object_name(to)?;
        self.rename_inner(location, from, to, conditions).await
    }

    async fn rename_inner(
        &self,
        location: &str,
        from: &str,
        to: &str,
        conditions: &RenameConditions,
    ) -> Result<(), ConnectorError> {
        let (ns, bucket) = split_location(location)?;
        let url = self.url(&format!(
            "n/{}/b/{}/actions/renameObject",
            encode_component(ns),
            encode_component(bucket)
        ))?;
        let (_, folder) = split_folder(location)?;
        let (from, to) = (folder_key(folder, from), folder_key(folder, to));
        let body = serde_json::to_vec(&RenameBody {
            source_name: &from,
            new_name: &to,
            src_obj_if_match_etag: conditions.src_if_match_etag.as_deref(),
            new_obj_if_none_match_etag: conditions.new_if_none_match_etag.as_deref(),
        })
        .map_err(|e| ConnectorError::Config(format!("cannot write the rename request: {e}")))?;
        let response = self
            .request(Method::POST, url, SendBody::Json(body))
            .await?;
        let shown = shown_url(&Method::POST, response.url());
        if !response.status().is_success() {
            return Err(self.error(response, &shown).await);
        }
        Ok(())
    }

    /// The endpoint joined with `path_and_query` (already encoded).
    fn url(&self, path_and_query: &str) -> Result<Url, ConnectorError> {
        let base = self.endpoint.as_str().trim_end_matches('/');
        Url::parse(&format!("{base}/{path_and_query}")).map_err(|e| {
            ConnectorError::Config(format!(
                "'{}' does not make a valid URL: {e}",
                path_and_query.escape_debug()
            ))
        })
    }

    /// The URL of object `name` at `location`.
    fn object_url(&self, location: &str, name: &str) -> Result<Url, ConnectorError> {
        let (ns, bucket) = split_location(location)?;
        let (_, folder) = split_folder(location)?;
        self.url(&format!(
            "n/{}/b/{}/o/{}",
            encode_component(ns),
            encode_component(bucket),
            encode_component(&folder_key(folder, name))
        ))
    }

    /// [`RETRIES`] retries with [`BACKOFF`], none starting later than `timeout_secs` after
    /// the first attempt (as `object_store`'s `retry_timeout`, which the S3 connector sets
    /// to its timeout too).
    fn retry_policy(&self) -> Policy {
        Policy {
            retries: RETRIES,
            backoff: BACKOFF,
            within: Some(self.timeout),
        }
    }

    /// Sends a request with retries ([`RETRIES`]); any status but a transient one (429,
    /// 5xx) is Ok, for the caller to judge. Err when no answer came, or only transient
    /// ones, after the last attempt.
    async fn request(
        &self,
        method: Method,
        url: Url,
        body: SendBody,
    ) -> Result<Response, ConnectorError> {
        retry::run(&self.name, self.retry_policy(), |_| {
            self.attempt(&method, &url, &body)
        })
        .await
        .map(|(response, _)| response)
    }

    /// Sends a request with retries and reads its small answer (a listing, a namespace);
    /// an answer that breaks off is retried too.
    async fn small(
        &self,
        method: Method,
        url: Url,
        body: SendBody,
    ) -> Result<Vec<u8>, ConnectorError> {
        retry::run(&self.name, self.retry_policy(), |_| async {
            let response = self.attempt(&method, &url, &body).await?;
            let shown = shown_url(&method, response.url());
            self.read_small(response, &shown)
                .await
                .map_err(Failure::classify)
        })
        .await
        .map(|(bytes, _)| bytes)
    }

    /// One attempt: sends the request once; a transient answer (429, 5xx) or failure is a
    /// [`Failure::Transient`] naming the status.
    async fn attempt(
        &self,
        method: &Method,
        url: &Url,
        body: &SendBody,
    ) -> Result<Response, Failure> {
        let response = self
            .send(method.clone(), url.clone(), body)
            .await
            .map_err(Failure::classify)?;
        if retry::is_transient_status(response.status().as_u16()) {
            let shown = shown_url(method, response.url());
            return Err(Failure::Transient(self.error(response, &shown).await));
        }
        Ok(response)
    }

    /// Signs and sends a request once; any HTTP status is Ok. Err only when no answer came.
    /// A file body is opened afresh, so an attempt can be replayed.
    async fn send(
        &self,
        method: Method,
        url: Url,
        body: &SendBody,
    ) -> Result<Response, ConnectorError> {
        let shown = shown_url(&method, &url);
        let date = oci_sign::http_date(chrono::Utc::now());
        let body_headers = match body {
            SendBody::Json(bytes) => Some(BodyHeaders::json(bytes)),
            SendBody::None | SendBody::File { .. } => None,
        };
        let input = SigningInput::for_url(method.as_str(), &url, &date, body_headers.clone());
        let authorization = self.signer.authorization(&input)?;
        let mut authorization = HeaderValue::from_str(&authorization).map_err(|_| {
            ConnectorError::Config("the key id makes an invalid Authorization header".into())
        })?;
        authorization.set_sensitive(true);

        let mut builder = self
            .client
            .request(method, url)
            .header(DATE, &date)
            .header(reqwest::header::AUTHORIZATION, authorization);
        // Upload progress, so a moving upload is not mistaken for a stalled one.
        let progress = Arc::new(Progress::default());
        let started = tokio::time::Instant::now();
        let uploading = matches!(body, SendBody::File { .. });
        builder = match body {
            SendBody::None => builder,
            SendBody::Json(bytes) => {
                let headers = body_headers.unwrap_or_else(|| BodyHeaders::json(bytes));
                builder
                    .header(CONTENT_TYPE, headers.content_type)
                    .header(CONTENT_LENGTH, headers.content_length)
                    .header("x-content-sha256", headers.content_sha256)
                    .body(bytes.clone())
            }
            SendBody::File { path, len } => {
                let file = tokio::fs::File::open(path)
                    .await
                    .map_err(|e| super::source_error("open", path, e))?;
                let watch = Arc::clone(&progress);
                let stream = ReaderStream::new(file).inspect(move |_| watch.touch(started));
                builder
                    .header(CONTENT_TYPE, "application/octet-stream")
                    .header(CONTENT_LENGTH, *len)
                    .body(Body::wrap_stream(stream))
            }
        };

        tracing::debug!(connection = %self.name, request = %shown, "sending OCI request");
        let send = builder.send();
        tokio::pin!(send);
        loop {
            let deadline = started + progress.since_start() + self.timeout;
            tokio::select! {
                result = &mut send => {
                    return result.map_err(|e| self.map_error(&shown, &e));
                }
                () = tokio::time::sleep_until(deadline) => {
                    if started + progress.since_start() + self.timeout <= tokio::time::Instant::now() {
                        let what = if uploading {
                            "neither upload progress nor an answer"
                        } else {
                            "no answer"
                        };
                        return Err(ConnectorError::Timeout(format!(
                            "{shown}: {what} within {} s",
                            self.timeout.as_secs()
                        )));
                    }
                }
            }
        }
    }

    /// Reads a small body (a listing, a namespace) after checking the status.
    async fn read_small(
        &self,
        mut response: Response,
        shown: &str,
    ) -> Result<Vec<u8>, ConnectorError> {
        if !response.status().is_success() {
            return Err(self.error(response, shown).await);
        }
        let mut bytes = Vec::new();
        loop {
            match tokio::time::timeout(self.timeout, response.chunk()).await {
                Err(_) => {
                    return Err(ConnectorError::Timeout(format!(
                        "{shown}: the answer stalled for {} s",
                        self.timeout.as_secs()
                    )));
                }
                Ok(Err(e)) => return Err(self.map_error(shown, &e)),
                Ok(Ok(None)) => break,
                Ok(Ok(Some(chunk))) => {
                    if bytes.len() + chunk.len() > MAX_SMALL_BODY {
                        return Err(ConnectorError::Protocol(format!(
                            "{shown}: the answer is larger than {MAX_SMALL_BODY} bytes"
                        )));
                    }
                    bytes.extend_from_slice(&chunk);
                }
            }
        }
        Ok(bytes)
    }

    /// Turns an error answer into the error saying what OCI said.
    async fn error(&self, response: Response, shown: &str) -> ConnectorError {
        let status = response.status();
        let request_id = response
            .headers()
            .get("opc-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let bytes = match tokio::time::timeout(self.timeout, response.bytes()).await {
            Ok(Ok(b)) if b.len() <= MAX_SMALL_BODY => b.to_vec(),
            _ => Vec::new(),
        };
        let text = describe_error_body(status, &bytes);
        let mut message = format!("{text} ({shown}: HTTP {}", status.as_u16());
        if let Some(id) = request_id {
            message.push_str(", opc-request-id ");
            message.push_str(&id.escape_debug().to_string());
        }
        message.push(')');
        match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => ConnectorError::Auth(message),
            StatusCode::NOT_FOUND => ConnectorError::NotFound(message),
            _ => ConnectorError::Protocol(message),
        }
    }

    /// Maps a failed exchange to the error saying what happened.
    fn map_error(&self, shown: &str, e: &reqwest::Error) -> ConnectorError {
        let detail = super::http::error_chain(e);
        if e.is_timeout() {
            ConnectorError::Timeout(format!(
                "{shown}: no answer within {} s ({detail})",
                self.timeout.as_secs()
            ))
        } else if e.is_connect() {
            ConnectorError::Connect(format!("{shown}: cannot connect: {detail}"))
        } else if e.is_body() || e.is_decode() {
            ConnectorError::Connect(format!("{shown}: the body broke off: {detail}"))
        } else {
            ConnectorError::Connect(format!("{shown}: {detail}"))
        }
    }
}

/// When the upload last moved, as milliseconds since the request started.
#[derive(Default)]
struct Progress(AtomicU64);

impl Progress {
    fn touch(&self, started: tokio::time::Instant) {
        let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.0.fetch_max(ms, Ordering::Relaxed);
    }

    fn since_start(&self) -> Duration {
        Duration::from_millis(self.0.load(Ordering::Relaxed))
    }
}

/// Checks an endpoint URL: http(s), no credentials, no query.
fn parse_endpoint(endpoint: &str) -> Result<Url, String> {
    let url = Url::parse(endpoint.trim()).map_err(|e| {
        format!(
            "endpoint '{}' is not a valid URL: {e}",
            endpoint.escape_debug()
        )
    })?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(format!(
            "endpoint must start with https:// (or http://), not {}://",
            url.scheme()
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("endpoint must not contain credentials; OCI requests are signed".into());
    }
    if url.query().is_some() || url.fragment().is_some() || url.host_str().is_none() {
        return Err(format!(
            "endpoint '{}' must be a plain base URL (no query or fragment)",
            endpoint.escape_debug()
        ));
    }
    Ok(url)
}

/// Splits `namespace/bucket` (maybe followed by `:folder`).
fn split_location(location: &str) -> Result<(&str, &str), ConnectorError> {
    let (location, _) = split_folder(location)?;
    match location_segments(location)?.as_slice() {
        [ns, bucket] => Ok((ns, bucket)),
        _ => Err(ConnectorError::Config(format!(
            "OCI Object Storage location '{}' must be 'namespace/bucket'",
            location.escape_debug()
        ))),
    }
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// Percent-encodes everything except `A-Z a-z 0-9 - . _ ~`, for one path segment or one
/// query value.
pub fn encode_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xF)]));
        }
    }
    out
}

/// `METHOD url` without the query (it may carry names), for messages.
fn shown_url(method: &Method, url: &Url) -> String {
    let mut shown = url.clone();
    shown.set_query(None);
    shown.set_fragment(None);
    format!("{method} {shown}")
}

fn header_u64(response: &Response, name: reqwest::header::HeaderName) -> Option<u64> {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// `Code: message` from OCI's `{"code","message"}` error body, or the body text, or the
/// status when the body is empty (HEAD answers have none).
fn describe_error_body(status: StatusCode, bytes: &[u8]) -> String {
    #[derive(Deserialize)]
    struct OciError {
        #[serde(default)]
        code: Option<String>,
        #[serde(default)]
        message: Option<String>,
    }
    if let Ok(err) = serde_json::from_slice::<OciError>(bytes) {
        match (err.code, err.message) {
            (Some(code), Some(message)) => return format!("{code}: {}", message.trim()),
            (Some(code), None) => return code,
            (None, Some(message)) => return message.trim().to_string(),
            (None, None) => {}
        }
    }
    let text = String::from_utf8_lossy(bytes);
    if text.trim().is_empty() {
        status
            .canonical_reason()
            .unwrap_or("error with an empty body")
            .to_string()
    } else {
        super::shorten(&text)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn names_are_encoded_per_segment() {
        assert_eq!(encode_component("A_1 b+c.csv"), "A_1%20b%2Bc.csv");
        assert_eq!(encode_component("é/?#%"), "%C3%A9%2F%3F%23%25");
        assert_eq!(encode_component("a-b~c"), "a-b~c");
    }

    #[test]
    fn locations_are_namespace_and_bucket() {
        assert_eq!(split_location("/ns/bk/").unwrap(), ("ns", "bk"));
        for bad in ["ns", "ns/bk/dir", "", "ns/.."] {
            assert!(split_location(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn error_bodies_become_code_and_message() {
        assert_eq!(
            describe_error_body(
                StatusCode::NOT_FOUND,
                br#"{"code":"BucketNotFound","message":"Either the bucket does not exist"}"#
            ),
            "BucketNotFound: Either the bucket does not exist"
        );
        assert_eq!(describe_error_body(StatusCode::NOT_FOUND, b""), "Not Found");
        assert_eq!(
            describe_error_body(StatusCode::BAD_GATEWAY, b"oops"),
            "oops"
        );
    }

    #[test]
    fn endpoints_are_checked() {
        assert!(parse_endpoint("https://objectstorage.eu-frankfurt-1.oraclecloud.com").is_ok());
        assert!(parse_endpoint("ftp://x").is_err());
        assert!(parse_endpoint("https://u:p@x").is_err());
        assert!(parse_endpoint("https://x/?a=b").is_err());
    }

    #[test]
    fn spec_rejects_unknown_fields() {
        let err = serde_json::from_str::<OciSpec>(
            r#"{"tenancy":"t","user":"u","fingerprint":"f","key_file":"k","bucket":"b"}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
    }
}
