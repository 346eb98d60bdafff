//! S3-compatible object storage as a [`FileStore`](super::FileStore): AWS S3, MinIO, OCI's
//! S3 compatibility endpoint, anything that speaks the S3 API with Signature Version 4.
//!
//! The store goes through the `object_store` crate (one [`AmazonS3`] client per bucket,
//! built on first use and cached). A location is `bucket` or `namespace/bucket`: the last
//! segment names the bucket, and a namespace before it is ignored, because OCI's
//! compatibility endpoint carries the namespace in its host name
//! (`https://{namespace}.compat.objectstorage.{region}.oraclecloud.com`). `bucket:folder/sub`
//! (or `namespace/bucket:folder/sub`) names a folder inside the bucket: its files are the
//! objects `folder/sub/…`, listed by their names relative to the folder
//! ([`super::split_folder`]). Without `:` the files are the bucket's top-level objects. A
//! file name may itself hold `/` between checked segments ([`super::check_object_name`]).
//!
//! - list: `ListObjectsV2` with the prefix and `delimiter=/`, following continuation tokens
//!   page by page. Keys below a `/` ("subdirectories") come back as common prefixes and are
//!   skipped with a debug log, as a local directory listing skips subdirectories. Keys are
//!   untrusted: one with a `.`/`..` segment, a control character or a backslash is an error
//!   naming the key, and so is a key outside the requested prefix. A key that still contains
//!   a `/` (a server ignoring the delimiter, or a prefix containing `/`) is skipped.
//! - get: `GetObject`, the body streamed chunk by chunk into the destination file (never
//!   held in memory); a failed get removes the partial destination file.
//! - put: a file smaller than one part goes up as a single `PutObject`; a larger one as a
//!   multipart upload, read from disk in 1 MiB reads and sent in parts of at least 8 MiB,
//!   two parts in flight at most. S3 makes a multipart object visible only on
//!   `CompleteMultipartUpload`, so a put that fails (the source cannot be read, the server
//!   goes away, the size changes) leaves nothing under the final name, and the upload is
//!   aborted so its parts do not linger. If the put is cancelled (its future dropped) the
//!   abort is sent from a background task; if even that cannot reach the server, an
//!   incomplete upload remains, invisible, until a bucket lifecycle rule
//!   (`AbortIncompleteMultipartUpload`) removes it, or the first put to the bucket through a
//!   later connection (the next run) aborts it: that put lists the bucket's multipart uploads
//!   (`ListMultipartUploads`, signed like `check`, as `object_store` cannot list them) and
//!   aborts those of keys ferry could have written (top-level or in folders) started longer ago than
//!   `temp_max_age` (default 1 h). Best effort: a failure is a warning, and the put goes on.
//! - rename: `CopyObject` then `DeleteObject` — S3 has no rename. The copy is complete
//!   before the delete starts, so a failure never loses the object; but a crash (or a failed
//!   delete) between the two leaves it under both names. Ferry renames only after the target
//!   confirmed receipt, so the duplicate is harmless, and a rerun's list shows the old name
//!   again. `CopyObject` is limited to 5 GiB objects on AWS.
//! - check: a signed `ListBuckets` (`GET /` on the endpoint), which needs no bucket. A
//!   listing, or `AccessDenied` (the signature was verified but the key may not list
//!   buckets), proves the endpoint is reachable and the credentials are accepted.
//!
//! Payload signing: Signature V4 normally signs a SHA-256 of every request body, which for a
//! large upload means hashing every byte once more on the client (and on the server), and was
//! the main cost of ferry's uploads. With `unsigned_payload` the body is declared
//! `UNSIGNED-PAYLOAD` and only the headers are signed. It is on by default for https
//! endpoints (and AWS), where TLS already protects the body's integrity in transit and S3
//! still checks each part's MD5 ETag; it is off by default for plain http, where the signed
//! hash is the only thing binding the body to the signed request, so anyone on the path could
//! otherwise change the stored bytes undetected.
//!
//! Errors: a missing bucket or object is [`ConnectorError::NotFound`] naming it; 401/403
//! and S3's `InvalidAccessKeyId`, `SignatureDoesNotMatch`, `AccessDenied`, … are
//! [`ConnectorError::Auth`]; a refused or broken connection is [`ConnectorError::Connect`],
//! a stall [`ConnectorError::Timeout`]; anything else is [`ConnectorError::Protocol`] with the
//! service's `Code: Message`. Transient failures (connection refused, 5xx, throttling) are
//! retried 3 times with backoff before they are reported. The credentials are read from the
//! environment into [`Secret`]s and never logged.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::StreamExt as _;
use object_store::aws::{AmazonS3, AmazonS3Builder, AwsAuthorizer, AwsCredential};
use object_store::client::{HttpError, HttpErrorKind, HttpRequest, HttpRequestBody};
use object_store::list::{PaginatedListOptions, PaginatedListStore as _};
use object_store::multipart::MultipartStore as _;
use object_store::path::Path as Key;
use object_store::{
    BackoffConfig, ClientOptions, HeaderValue, ObjectStoreExt as _, PutPayload, RetryConfig,
    WriteMultipart,
};
use reqwest::Url;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt as _};

use super::sweep::{self, Sweeper};
use super::{
    ConnectorError, CopySource, Entry, Secret, check_object_name, expand_env, folder_key,
    location_segments, shorten, split_folder,
};

/// Timeout when the spec gives none, in seconds.
const DEFAULT_TIMEOUT_SECS: u64 = 60;
/// Upper bound on the time spent establishing a connection (TCP + TLS).
const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Smallest part of a multipart upload (S3's minimum is 5 MiB); files below it go up in one
/// `PutObject`.
const MIN_PART: u64 = 8 * 1024 * 1024;
/// Largest part (S3's maximum is 5 GiB).
const MAX_PART: u64 = 5 * 1024 * 1024 * 1024;
/// Parts a multipart upload aims to stay under (S3 allows 10 000).
const TARGET_PARTS: u64 = 9_000;
/// Parts uploading at once; memory use is about `(UPLOAD_CONCURRENCY + 1) × part size`.
const UPLOAD_CONCURRENCY: usize = 2;
/// Size of one read from the source file.
const READ_CHUNK: usize = 1024 * 1024;
/// Retries of a transient failure (connection refused, 5xx, throttling).
const RETRIES: usize = 3;
/// Listing pages followed at most (1000 keys each: a billion keys).
const MAX_PAGES: usize = 1_000_000;
/// Largest `ListBuckets` answer read by `check`, and largest `ListMultipartUploads` page.
const MAX_CHECK_BODY: usize = 1024 * 1024;
/// `ListMultipartUploads` pages followed at most by a sweep (1000 uploads each).
const MAX_UPLOAD_PAGES: usize = 100;

/// An S3-compatible object storage connection, as written in a connections file. Locations
/// are `bucket` or `namespace/bucket` (the namespace is ignored: OCI's compatibility endpoint
/// carries it in the host name).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct S3Spec {
    /// Endpoint URL of the service, e.g. `http://127.0.0.1:9000` (MinIO) or
    /// `https://{namespace}.compat.objectstorage.{region}.oraclecloud.com` (OCI). Leave it out
    /// for AWS S3 (`https://s3.{region}.amazonaws.com`). May use `${VAR}` /
    /// `${VAR:-default}`. Must not contain credentials.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Region used for signing (and for the AWS endpoint), e.g. `eu-central-1`; MinIO
    /// usually wants `us-east-1`, OCI its region identifier such as `eu-frankfurt-1`. May use
    /// `${VAR}`.
    pub region: String,
    /// Name of the environment variable holding the access key ID.
    pub access_key_id_env: String,
    /// Name of the environment variable holding the secret access key.
    pub secret_access_key_env: String,
    /// Path-style requests, `{endpoint}/{bucket}/{key}` (default true), which MinIO and OCI's
    /// compatibility endpoint need. False sends virtual-hosted style, `{bucket}.{host}/{key}`.
    #[serde(default = "yes")]
    pub path_style: bool,
    /// Allow a plain `http://` endpoint (default false: HTTPS only). For local servers.
    #[serde(default)]
    pub allow_http: bool,
    /// Seconds a request may make no progress before it is abandoned (default 60): to
    /// connect (at most 15), to send one part (8 MiB or more) and get the answer, and each
    /// pause while a body is received. A long download that keeps moving is never cut off.
    #[serde(default)]
    pub timeout_secs: Option<u64>,
    /// Send request bodies as `UNSIGNED-PAYLOAD` rather than signing their SHA-256 (which
    /// hashes every uploaded byte). Default: true for https endpoints and AWS, where TLS
    /// protects the body in transit; false for http endpoints, where the signed hash is the
    /// body's only protection against modification on the way.
    #[serde(default)]
    pub unsigned_payload: Option<bool>,
    /// Age after which an unfinished multipart upload of a top-level key (one a killed put
    /// left) is aborted, by the first put to the bucket (default `1h`, at least `1m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temp_max_age: Option<String>,
}

fn yes() -> bool {
    true
}

/// An opened S3-compatible store: the settings plus one cached client per bucket.
pub struct S3Store {
    /// The endpoint, `None` for AWS.
    endpoint: Option<Url>,
    region: String,
    access_key_id: Secret,
    secret_access_key: Secret,
    path_style: bool,
    allow_http: bool,
    unsigned_payload: bool,
    timeout: Duration,
    clients: Mutex<HashMap<String, Arc<AmazonS3>>>,
    /// The client of requests `object_store` does not offer, built on first use.
    http: Mutex<Option<reqwest::Client>>,
    /// Largest object copied in one `CopyObject`, and the part size of larger copies.
    copy_part_limit: u64,
    sweeper: Sweeper,
}

impl fmt::Debug for S3Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Store")
            .field("endpoint", &self.shown_endpoint())
            .field("region", &self.region)
            .field("path_style", &self.path_style)
            .field("unsigned_payload", &self.unsigned_payload)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl S3Store {
    /// Opens the store, reading the credentials from the environment variables the spec
    /// names. Does not touch the network.
    pub fn new(spec: &S3Spec) -> Result<Self, ConnectorError> {
        let key_id = Secret::from_env(&spec.access_key_id_env)
            .map_err(|e| in_spec(&format!("access_key_id_env: {}", config_text(e))))?;
        let secret = Secret::from_env(&spec.secret_access_key_env)
            .map_err(|e| in_spec(&format!("secret_access_key_env: {}", config_text(e))))?;
        Self::with_secrets(spec, key_id, secret)
    }

    /// Opens the store with credentials given directly rather than through the environment
    /// (tests, secrets read from files). The spec's `*_env` fields are ignored.
    pub fn with_secrets(
        spec: &S3Spec,
        access_key_id: Secret,
        secret_access_key: Secret,
    ) -> Result<Self, ConnectorError> {
        let endpoint = match &spec.endpoint {
            Some(e) => Some(parse_endpoint(
                &expand_env(e).map_err(|e| in_spec(&config_text(e)))?,
                spec.allow_http,
            )?),
            None => None,
        };
        let region = expand_env(&spec.region).map_err(|e| in_spec(&config_text(e)))?;
        if region.is_empty()
            || !region
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(in_spec(&format!(
                "region '{}' must be a region identifier such as eu-central-1",
                region.escape_debug()
            )));
        }
        if access_key_id.expose().is_empty() || secret_access_key.expose().is_empty() {
            return Err(in_spec(
                "the access key ID and the secret key must not be empty",
            ));
        }
        let secs = spec.timeout_secs.unwrap_or(DEFAULT_TIMEOUT_SECS);
        if secs == 0 {
            return Err(in_spec("timeout_secs must be at least 1"));
        }
        let sweeper =
            Sweeper::new(spec.temp_max_age.as_deref()).map_err(|e| in_spec(&config_text(e)))?;
        let https = endpoint.as_ref().is_none_or(|url| url.scheme() == "https");
        let unsigned_payload = spec.unsigned_payload.unwrap_or(https);
        if unsigned_payload && !https {
            tracing::warn!(endpoint = %endpoint.as_ref().map_or("", Url::as_str), "S3 bodies are sent unsigned over plain http (unsigned_payload: true): nothing protects them against modification in transit");
        }
        Ok(S3Store {
            endpoint,
            region,
            access_key_id,
            secret_access_key,
            path_style: spec.path_style,
            allow_http: spec.allow_http,
            unsigned_payload,
            timeout: Duration::from_secs(secs),
            clients: Mutex::new(HashMap::new()),
            http: Mutex::new(None),
            copy_part_limit: MAX_PART,
            sweeper,
        })
    }

    /// Sets the largest object copied on the server in one `CopyObject` (5 GiB, S3's limit,
    /// by default), which is also the part size of a larger copy's `UploadPartCopy`s (S3
    /// wants parts of at least 5 MiB): lets a test cover multipart copies with small objects.
    pub fn with_copy_part_limit(mut self, bytes: u64) -> Self {
        self.copy_part_limit = bytes.max(1);
        self
    }

    /// The endpoint as shown in messages (never holds credentials: those are refused).
    fn shown_endpoint(&self) -> String {
        match &self.endpoint {
            Some(url) => url.as_str().trim_end_matches('/').to_string(),
            None => format!("https://s3.{}.amazonaws.com", self.region),
        }
    }

    /// The bucket a location names, and its client (built on first use).
    fn client(&self, location: &str) -> Result<(String, Arc<AmazonS3>), ConnectorError> {
        let bucket = bucket_of(location)?;
        let mut clients = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(client) = clients.get(bucket) {
            return Ok((bucket.to_string(), Arc::clone(client)));
        }
        let client = Arc::new(self.build_client(bucket)?);
        clients.insert(bucket.to_string(), Arc::clone(&client));
        Ok((bucket.to_string(), client))
    }

    fn build_client(&self, bucket: &str) -> Result<AmazonS3, ConnectorError> {
        let options = ClientOptions::new()
            .with_allow_http(self.allow_http)
            .with_user_agent(HeaderValue::from_static(concat!(
                "ferry/",
                env!("CARGO_PKG_VERSION")
            )))
            .with_connect_timeout(self.timeout.min(MAX_CONNECT_TIMEOUT))
            // The read timeout covers sending a request and waiting for its answer, then each
            // pause in a body; an overall timeout would cut off long transfers.
            .with_read_timeout(self.timeout)
            .with_timeout_disabled();
        let retry = RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(2),
                base: 2.0,
            },
            max_retries: RETRIES,
            retry_timeout: self.timeout,
        };
        let mut builder = AmazonS3Builder::new()
            .with_region(&self.region)
            .with_bucket_name(bucket)
            .with_access_key_id(self.access_key_id.expose())
            .with_secret_access_key(self.secret_access_key.expose())
            .with_virtual_hosted_style_request(!self.path_style)
            .with_unsigned_payload(self.unsigned_payload)
            .with_client_options(options)
            .with_retry(retry);
        if let Some(endpoint) = self.client_endpoint(bucket)? {
            builder = builder.with_endpoint(endpoint);
        }
        builder.build().map_err(|e| {
            in_spec(&format!(
                "cannot set up the client for bucket '{bucket}': {e}"
            ))
        })
    }

    /// The endpoint handed to `object_store` for a bucket (`None`: AWS, derived from the
    /// region). Path style uses the endpoint as it is; virtual-hosted style puts the bucket in
    /// front of the host, as `object_store` expects a virtual-hosted endpoint to name it.
    fn client_endpoint(&self, bucket: &str) -> Result<Option<String>, ConnectorError> {
        let Some(endpoint) = &self.endpoint else {
            return Ok(None);
        };
        if self.path_style {
            return Ok(Some(endpoint.as_str().trim_end_matches('/').to_string()));
        }
        let host = endpoint.host_str().unwrap_or_default();
        if endpoint.domain().is_none() {
            return Err(in_spec(&format!(
                "virtual-hosted requests (path_style: false) need a host name, not '{host}'; \
                 set path_style: true"
            )));
        }
        let mut url = endpoint.clone();
        url.set_host(Some(&format!("{bucket}.{host}")))
            .map_err(|e| in_spec(&format!("bucket '{bucket}' does not make a host name: {e}")))?;
        Ok(Some(url.as_str().trim_end_matches('/').to_string()))
    }

    pub(super) async fn list(
        &self,
        location: &str,
        prefix: &str,
    ) -> Result<Vec<Entry>, ConnectorError> {
        let (bucket, client) = self.client(location)?;
        let what = Target::Bucket(&bucket);
        let (_, folder) = split_folder(location)?;
        // the folder's objects: keys under `folder/`, named relative to it
        let base = folder.map(|f| format!("{f}/")).unwrap_or_default();
        let full_prefix = format!("{base}{prefix}");
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let options = PaginatedListOptions {
                delimiter: Some("/".into()),
                page_token: token.clone(),
                ..Default::default()
            };
            let page = client
                .list_paginated((!full_prefix.is_empty()).then_some(&full_prefix), options)
                .await
                .map_err(|e| self.error("list", &what, e))?;
            for dir in &page.result.common_prefixes {
                tracing::debug!(bucket, key_prefix = %dir.as_ref().escape_debug(), "skipping a \"subdirectory\" of the listing");
            }
            for object in page.result.objects {
                let full = object.location.as_ref();
                let Some(key) = full.strip_prefix(base.as_str()) else {
                    return Err(ConnectorError::Protocol(format!(
                        "S3 list of bucket '{bucket}': the server listed '{}', which is not in \
                         the folder '{}'",
                        full.escape_debug(),
                        base.escape_debug()
                    )));
                };
                if listed_name(&bucket, key, prefix)? {
                    out.push(Entry {
                        name: key.to_string(),
                        size: object.size,
                    });
                }
            }
            match page.page_token {
                Some(next) if token.as_deref() == Some(next.as_str()) => {
                    return Err(ConnectorError::Protocol(format!(
                        "S3 list of bucket '{bucket}' at {}: the server repeated the \
                         continuation token",
                        self.shown_endpoint()
                    )));
                }
                Some(next) => token = Some(next),
                None => return Ok(out),
            }
        }
        Err(ConnectorError::Protocol(format!(
            "S3 list of bucket '{bucket}' at {}: more than {MAX_PAGES} pages",
            self.shown_endpoint()
        )))
    }

    /// Downloads `location/name` into `dest`, streamed, in one GET. (Parallel ranged GETs
    /// would be faster against AWS, but a server that hashes the object for each GET's ETag,
    /// as s3s-fs does for objects it did not write, pays for the whole object per range.)
    pub(super) async fn get(
        &self,
        location: &str,
        name: &str,
        dest: &Path,
    ) -> Result<u64, ConnectorError> {
        let (bucket, client) = self.client(location)?;
        let what = Target::Object(&bucket, name);
        let key = key(location, name)?;
        let result = client
            .get(&key)
            .await
            .map_err(|e| self.error("get", &what, e))?;
        let expected = result.meta.size;
        let chunks = result
            .into_stream()
            .map(|chunk| chunk.map_err(|e| self.error("get", &what, e)));
        super::spool::receive(dest, chunks, |n| {
            if n == expected {
                Ok(())
            } else {
                Err(ConnectorError::Protocol(format!(
                    "S3 get {what}: received {n} bytes of {expected}"
                )))
            }
        })
        .await
    }

    pub(super) async fn put(
        &self,
        location: &str,
        name: &str,
        src: &Path,
    ) -> Result<u64, ConnectorError> {
        let file = tokio::fs::File::open(src)
            .await
            .map_err(|e| super::io_error("open", src, e))?;
        let size = file
            .metadata()
            .await
            .map_err(|e| super::io_error("stat", src, e))?
            .len();
        self.put_reader(location, name, file, size)
            .await
            .map_err(|e| match e {
                // Name the source file rather than "the source".
                ConnectorError::Io { op, source, .. } => super::io_error(op, src, source),
                other => other,
            })
    }

    /// The bucket and client of a put or copy of `name` to `location`; the first write to a
    /// bucket aborts its stale multipart uploads first.
    async fn writing_client(
        &self,
        location: &str,
        name: &str,
    ) -> Result<(String, Arc<AmazonS3>), ConnectorError> {
        check_object_name(name)?;
        let (bucket, client) = self.client(location)?;
        if self.sweeper.first_visit(&bucket) {
            sweep::report(
                "s3",
                location,
                self.abort_stale_uploads(&bucket, &client).await,
            );
        }
        Ok((bucket, client))
    }

    /// Stores the `size` bytes `reader` yields as `location/name`: one `PutObject` below
    /// 8 MiB, a multipart upload above. Returns only once the object is complete under its
    /// final name. A reader that fails, ends early or yields more than `size` bytes fails the
    /// put, the multipart upload is aborted, and nothing appears under the name (an older
    /// object of that name is left untouched).
    pub async fn put_reader<R>(
        &self,
        location: &str,
        name: &str,
        mut reader: R,
        size: u64,
    ) -> Result<u64, ConnectorError>
    where
        R: AsyncRead + Unpin + Send,
    {
        let (bucket, client) = self.writing_client(location, name).await?;
        let what = Target::Object(&bucket, name);
        let key = key(location, name)?;
        let part = part_size(size);
        if size < part {
            // Small: read it whole (less than one part) and send it in one request.
            let mut body = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
            (&mut reader)
                .take(size + 1)
                .read_to_end(&mut body)
                .await
                .map_err(source_error)?;
            check_length(body.len() as u64, size)?;
            client
                .put(&key, PutPayload::from(body))
                .await
                .map_err(|e| self.error("put", &what, e))?;
            return Ok(size);
        }

        let upload = client
            .put_multipart(&key)
            .await
            .map_err(|e| self.error("put", &what, e))?;
        let chunk = usize::try_from(part).unwrap_or(usize::MAX);
        let mut writer = AbortOnDrop(Some(WriteMultipart::new_with_chunk_size(upload, chunk)));
        let sent = async {
            let mut buf = vec![0u8; READ_CHUNK];
            let mut total: u64 = 0;
            loop {
                let w = writer.get()?;
                w.wait_for_capacity(UPLOAD_CONCURRENCY)
                    .await
                    .map_err(|e| self.error("put", &what, e))?;
                let n = reader.read(&mut buf).await.map_err(source_error)?;
                if n == 0 {
                    break;
                }
                total += n as u64;
                if total > size {
                    break;
                }
                w.write(&buf[..n]);
            }
            check_length(total, size)
        }
        .await;
        match sent {
            Ok(()) => {
                let w = writer.take()?;
                // `finish` aborts the upload itself when a part or the completion fails.
                w.finish().await.map_err(|e| self.error("put", &what, e))?;
                Ok(size)
            }
            Err(e) => {
                let w = writer.take()?;
                if let Err(abort) = w.abort().await {
                    tracing::warn!(bucket, key = %name.escape_debug(), error = %abort, "could not abort the failed multipart upload; its parts stay until a lifecycle rule removes them (no object was created)");
                }
                Err(e)
            }
        }
    }

    pub(super) async fn rename(
        &self,
        location: &str,
        from: &str,
        to: &str,
    ) -> Result<(), ConnectorError> {
        let (bucket, client) = self.client(location)?;
        if from == to {
            // Copy-then-delete onto itself would delete the only copy.
            return Ok(());
        }
        let source = Target::Object(&bucket, from);
        client
            .copy(&key(location, from)?, &key(location, to)?)
            .await
            .map_err(|e| self.error("rename (copy)", &source, e))?;
        client.delete(&key(location, from)?).await.map_err(|e| {
            let e = self.error("rename (delete)", &source, e);
            tracing::warn!(bucket, from = %from.escape_debug(), to = %to.escape_debug(), error = %e, "the copy succeeded but the original could not be deleted: the object now exists under both names");
            e
        })
    }

    /// Sends a signed `GET url` (outside `object_store`, for calls it does not offer) and
    /// returns the status and at most [`MAX_CHECK_BODY`] bytes of the answer, as text.
    async fn signed_get(
        &self,
        url: Url,
        what: &str,
    ) -> Result<(reqwest::StatusCode, String), ConnectorError> {
        self.signed_request(reqwest::Method::GET, url, &[], what)
            .await
    }

    /// Sends a signed request without a body (outside `object_store`, for calls it does not
    /// offer: listing multipart uploads, copies between buckets), `headers` signed with it,
    /// and returns the status and at most [`MAX_CHECK_BODY`] bytes of the answer, as text.
    async fn signed_request(
        &self,
        method: reqwest::Method,
        url: Url,
        headers: &[(&'static str, String)],
        what: &str,
    ) -> Result<(reqwest::StatusCode, String), ConnectorError> {
        let credential = AwsCredential {
            key_id: self.access_key_id.expose().to_string(),
            secret_key: self.secret_access_key.expose().to_string(),
            token: None,
        };
        let mut request = HttpRequest::new(HttpRequestBody::empty());
        *request.uri_mut() = url
            .as_str()
            .parse()
            .map_err(|e| in_spec(&format!("'{}': {e}", self.shown_endpoint())))?;
        *request.method_mut() = method.clone();
        for (name, value) in headers {
            let value = HeaderValue::from_str(value)
                .map_err(|e| ConnectorError::Protocol(format!("{what}: header {name}: {e}")))?;
            request.headers_mut().insert(*name, value);
        }
        AwsAuthorizer::new(&credential, "s3", &self.region)
            .with_sign_payload(!self.unsigned_payload)
            .try_authorize(&mut request, None)
            .map_err(|e| in_spec(&format!("cannot sign a request: {e}")))?;
        let client = self.http_client()?;
        let response = client
            .request(method, url)
            .headers(request.headers().clone())
            .send()
            .await
            .map_err(|e| transport_error(what, &e))?;
        let status = response.status();
        let mut body = Vec::new();
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| transport_error(what, &e))?;
            body.extend_from_slice(&chunk);
            if body.len() > MAX_CHECK_BODY {
                break;
            }
        }
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }

    /// The HTTP client of [`S3Store::signed_request`] (built on first use, then shared, so
    /// its connections are kept).
    fn http_client(&self) -> Result<reqwest::Client, ConnectorError> {
        let mut slot = self.http.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(client) = slot.as_ref() {
            return Ok(client.clone());
        }
        let client = reqwest::Client::builder()
            .user_agent(concat!("ferry/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(self.timeout.min(MAX_CONNECT_TIMEOUT))
            .timeout(self.timeout)
            .build()
            .map_err(|e| in_spec(&format!("cannot set up the HTTP client: {e}")))?;
        *slot = Some(client.clone());
        Ok(client)
    }

    /// Whether `other` reaches the same service (endpoint, region, addressing) with the same
    /// credentials: then an object of one can be copied into the other on the server.
    pub(super) fn same_service(&self, other: &S3Store) -> bool {
        self.endpoint == other.endpoint
            && self.region == other.region
            && self.path_style == other.path_style
            && self.access_key_id.expose() == other.access_key_id.expose()
            && self.secret_access_key.expose() == other.secret_access_key.expose()
    }

    /// The size and entity tag of `location/name` (`HeadObject`), without its body.
    pub(super) async fn head(
        &self,
        location: &str,
        name: &str,
    ) -> Result<(u64, Option<String>), ConnectorError> {
        let (bucket, client) = self.client(location)?;
        let meta = client
            .head(&key(location, name)?)
            .await
            .map_err(|e| self.error("get", &Target::Object(&bucket, name), e))?;
        Ok((meta.size, meta.e_tag))
    }

    /// Copies the `size` bytes of `source` (an object of this service, with entity tag
    /// `etag` when known) to `location/name` on the server, without the body passing
    /// through ferry: one `CopyObject` up to 5 GiB, above that a multipart upload whose
    /// parts are `UploadPartCopy`s of ranges of the source. Like a put, it returns only once
    /// the object is complete under its final name (S3 shows a copy, and a multipart upload,
    /// only when it is whole); a failed multipart copy is aborted. The copy is conditional on
    /// the source's entity tag: a source changed since it was fetched fails the copy.
    pub(super) async fn copy_from(
        &self,
        source: CopySource<'_>,
        location: &str,
        name: &str,
    ) -> Result<u64, ConnectorError> {
        let (bucket, client) = self.writing_client(location, name).await?;
        let CopySource {
            location: src_location,
            name: src_name,
            size,
            etag,
        } = source;
        let src_bucket = bucket_of(src_location)?;
        let src_key = key(src_location, src_name)?;
        let target = key(location, name)?;
        let what = format!(
            "S3 copy of {} to {} at {}",
            Target::Object(src_bucket, src_name),
            Target::Object(&bucket, name),
            self.shown_endpoint()
        );
        let mut headers = vec![(
            "x-amz-copy-source",
            format!("/{src_bucket}/{}", encode_key(src_key.as_ref())),
        )];
        if let Some(etag) = etag {
            headers.push(("x-amz-copy-source-if-match", etag.to_string()));
        }
        let url = self.object_url(&bucket, target.as_ref())?;
        if size <= self.copy_part_limit {
            let (status, text) = self
                .signed_request(reqwest::Method::PUT, url, &headers, &what)
                .await?;
            return copy_answer(&what, status, &text, "CopyObjectResult").map(|_| size);
        }
        let upload = client
            .create_multipart(&target)
            .await
            .map_err(|e| self.error("copy", &Target::Object(&bucket, name), e))?;
        let copied = async {
            let part = self.copy_part_limit.max(1);
            let mut parts = Vec::new();
            let mut start = 0u64;
            while start < size {
                let end = (start + part).min(size) - 1;
                let mut url = url.clone();
                url.query_pairs_mut()
                    .append_pair("partNumber", &(parts.len() + 1).to_string())
                    .append_pair("uploadId", &upload);
                let mut part_headers = headers.clone();
                part_headers.push(("x-amz-copy-source-range", format!("bytes={start}-{end}")));
                let (status, text) = self
                    .signed_request(reqwest::Method::PUT, url, &part_headers, &what)
                    .await?;
                let etag = copy_answer(&what, status, &text, "CopyPartResult")?;
                parts.push(object_store::multipart::PartId { content_id: etag });
                start = end + 1;
            }
            client
                .complete_multipart(&target, &upload, parts)
                .await
                .map_err(|e| self.error("copy", &Target::Object(&bucket, name), e))?;
            Ok(size)
        }
        .await;
        if copied.is_err()
            && let Err(abort) = client.abort_multipart(&target, &upload).await
        {
            tracing::warn!(bucket, key = %name.escape_debug(), error = %abort, "could not abort the failed multipart copy; its parts stay until a lifecycle rule removes them (no object was created)");
        }
        copied
    }

    /// The URL of object `key` of `bucket`, each segment of the key percent-encoded.
    fn object_url(&self, bucket: &str, key: &str) -> Result<Url, ConnectorError> {
        let base = self.bucket_url(bucket)?;
        let text = format!(
            "{}/{}",
            base.as_str().trim_end_matches('/'),
            encode_key(key)
        );
        Url::parse(&text).map_err(|e| in_spec(&format!("bucket '{bucket}': {e}")))
    }

    /// The URL of `bucket` itself (path style or virtual-hosted, as the objects' URLs).
    fn bucket_url(&self, bucket: &str) -> Result<Url, ConnectorError> {
        let text = match (&self.endpoint, self.path_style) {
            (Some(endpoint), true) => {
                format!("{}/{bucket}", endpoint.as_str().trim_end_matches('/'))
            }
            (Some(_), false) => format!(
                "{}/",
                self.client_endpoint(bucket)?
                    .unwrap_or_default()
                    .trim_end_matches('/')
            ),
            (None, true) => format!("https://s3.{}.amazonaws.com/{bucket}", self.region),
            (None, false) => format!("https://{bucket}.s3.{}.amazonaws.com/", self.region),
        };
        Url::parse(&text).map_err(|e| in_spec(&format!("bucket '{bucket}': {e}")))
    }

    /// Aborts the unfinished multipart uploads of `bucket`'s top-level keys (the files of a
    /// location) started longer ago than `temp_max_age`; returns how many.
    async fn abort_stale_uploads(
        &self,
        bucket: &str,
        client: &AmazonS3,
    ) -> Result<usize, ConnectorError> {
        let what = format!("listing the multipart uploads of bucket '{bucket}'");
        let mut markers: Option<(String, String)> = None;
        let mut aborted = 0;
        for _ in 0..MAX_UPLOAD_PAGES {
            let mut url = self.bucket_url(bucket)?;
            {
                let mut query = url.query_pairs_mut();
                query.append_key_only("uploads");
                if let Some((key, id)) = &markers {
                    query.append_pair("key-marker", key);
                    query.append_pair("upload-id-marker", id);
                }
            }
            let (status, text) = self.signed_get(url, &what).await?;
            if !status.is_success() {
                let detail = service_message(&text).unwrap_or_else(|| status.to_string());
                return Err(ConnectorError::Protocol(format!("{what}: {detail}")));
            }
            for upload in text.split("<Upload>").skip(1) {
                let (Some(name), Some(id), Some(initiated)) = (
                    xml_text(upload, "Key"),
                    xml_text(upload, "UploadId"),
                    xml_text(upload, "Initiated"),
                ) else {
                    continue;
                };
                if check_object_name(&name).is_err() {
                    continue; // a name ferry never writes (`..`, an empty segment, controls)
                }
                let Ok(initiated) = chrono::DateTime::parse_from_rfc3339(&initiated) else {
                    continue;
                };
                if !self
                    .sweeper
                    .is_older(std::time::SystemTime::from(initiated))
                {
                    continue;
                }
                match client.abort_multipart(&key(bucket, &name)?, &id).await {
                    Ok(()) => aborted += 1,
                    Err(e) => {
                        let e = self.error("abort", &Target::Object(bucket, &name), e);
                        tracing::warn!(bucket, key = %name.escape_debug(), error = %e, "could not abort a stale multipart upload");
                    }
                }
            }
            match (
                xml_tag(&text, "IsTruncated").as_deref(),
                xml_text(&text, "NextKeyMarker"),
                xml_text(&text, "NextUploadIdMarker"),
            ) {
                (Some("true"), Some(key), Some(id)) => markers = Some((key, id)),
                _ => break,
            }
        }
        Ok(aborted)
    }

    pub(super) async fn check(&self) -> Result<String, ConnectorError> {
        let shown = self.shown_endpoint();
        let url = match &self.endpoint {
            Some(url) => url.clone(),
            None => Url::parse(&format!("{shown}/")).map_err(|e| in_spec(&e.to_string()))?,
        };
        let (status, text) = self
            .signed_get(url, &format!("S3 check at {shown}"))
            .await?;
        if status.is_success() {
            let buckets = text.matches("<Bucket>").count();
            return Ok(format!(
                "S3 endpoint {shown} accepted the credentials; {buckets} bucket(s) visible"
            ));
        }
        let code = xml_tag(&text, "Code").unwrap_or_default();
        if code == "AccessDenied" {
            return Ok(format!(
                "S3 endpoint {shown} accepted the credentials (they may not list buckets, \
                 which ferry does not need)"
            ));
        }
        let detail = service_message(&text).unwrap_or_else(|| status.to_string());
        let message = format!("S3 check at {shown}: {detail}");
        Err(if is_auth(&code, Some(status.as_u16())) {
            ConnectorError::Auth(message)
        } else {
            ConnectorError::Protocol(message)
        })
    }

    /// Turns an `object_store` error into a [`ConnectorError`] naming the operation, the
    /// bucket and the object.
    fn error(&self, op: &str, what: &Target<'_>, e: object_store::Error) -> ConnectorError {
        use object_store::path::Error as PathError;
        let shown = self.shown_endpoint();
        // A listed key that `object_store` refused as a path: `..`, `.`, an ASCII control
        // character or `//`. The whole page fails (it cannot be skipped like other names
        // ferry refuses), so the listing is an error naming the key.
        if let object_store::Error::InvalidPath {
            source: PathError::BadSegment { path, .. } | PathError::EmptySegment { path },
        } = &e
        {
            let reason = if path.split('/').any(|s| s == "." || s == "..") {
                "the server listed a key with a '.' or '..' segment"
            } else if path.chars().any(char::is_control) {
                "the server listed a key with a control character"
            } else {
                "the server listed a key with an empty segment ('//')"
            };
            return ConnectorError::HostileName {
                name: path.escape_debug().to_string(),
                reason,
            };
        }
        let text = e.to_string();
        if let Some(http) = find_source::<HttpError>(&e) {
            let detail = source_chain(http);
            match http.kind() {
                HttpErrorKind::Timeout => {
                    return ConnectorError::Timeout(format!(
                        "S3 {op} {what} at {shown}: no progress for {} s: {detail}",
                        self.timeout.as_secs()
                    ));
                }
                HttpErrorKind::Connect => {
                    return ConnectorError::Connect(format!(
                        "S3 {op} {what}: cannot connect to {shown}: {detail}"
                    ));
                }
                HttpErrorKind::Request | HttpErrorKind::Interrupted => {
                    return ConnectorError::Connect(format!(
                        "S3 {op} {what} at {shown}: the connection broke: {detail}"
                    ));
                }
                _ => {}
            }
        }
        let code = xml_tag(&text, "Code").unwrap_or_default();
        let status = status_of(&text);
        let detail = service_message(&text).unwrap_or_else(|| shorten(&text));
        let not_found = matches!(e, object_store::Error::NotFound { .. })
            || code == "NoSuchKey"
            || code == "NoSuchBucket";
        if code == "NoSuchBucket" || (not_found && matches!(what, Target::Bucket(_))) {
            return ConnectorError::NotFound(format!(
                "S3 bucket '{}' at {shown} ({op}: {detail})",
                what.bucket()
            ));
        }
        if not_found {
            return ConnectorError::NotFound(format!("S3 {what} at {shown} ({op}: {detail})"));
        }
        if code.is_empty() && matches!(status, Some(301 | 307)) {
            return ConnectorError::Protocol(format!(
                "S3 {op} {what} at {shown}: redirected ({detail}); the bucket is probably in \
                 another region than '{}' (check region and path_style)",
                self.region
            ));
        }
        let auth = is_auth(&code, status)
            || matches!(
                e,
                object_store::Error::PermissionDenied { .. }
                    | object_store::Error::Unauthenticated { .. }
            );
        let message = format!("S3 {op} {what} at {shown}: {detail}");
        if auth {
            ConnectorError::Auth(message)
        } else {
            ConnectorError::Protocol(message)
        }
    }
}

/// What an operation was about, for messages.
enum Target<'a> {
    Bucket(&'a str),
    Object(&'a str, &'a str),
}

impl Target<'_> {
    fn bucket(&self) -> &str {
        match self {
            Target::Bucket(b) | Target::Object(b, _) => b,
        }
    }
}

impl fmt::Display for Target<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Bucket(b) => write!(f, "bucket '{b}'"),
            Target::Object(b, k) => write!(f, "object '{}' in bucket '{b}'", k.escape_debug()),
        }
    }
}

/// Aborts a multipart upload that is dropped before it was finished or aborted (a
/// cancelled put), from a background task.
struct AbortOnDrop(Option<WriteMultipart>);

impl AbortOnDrop {
    fn get(&mut self) -> Result<&mut WriteMultipart, ConnectorError> {
        self.0.as_mut().ok_or_else(finished)
    }

    fn take(&mut self) -> Result<WriteMultipart, ConnectorError> {
        self.0.take().ok_or_else(finished)
    }
}

fn finished() -> ConnectorError {
    ConnectorError::Protocol("internal: the multipart upload was already finished".into())
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(upload) = self.0.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(async move {
                if let Err(e) = upload.abort().await {
                    tracing::warn!(error = %e, "could not abort a cancelled multipart upload; its parts stay until a lifecycle rule removes them (no object was created)");
                }
            });
        }
    }
}

/// Checks the answer to a `CopyObject` or `UploadPartCopy` (which may be a 200 carrying an
/// error: S3 answers before the copy ends) and returns the copy's entity tag.
fn copy_answer(
    what: &str,
    status: reqwest::StatusCode,
    text: &str,
    result: &str,
) -> Result<String, ConnectorError> {
    if status.is_success()
        && text.contains(&format!("<{result}"))
        && let Some(etag) = xml_text(text, "ETag")
    {
        return Ok(etag);
    }
    let code = xml_tag(text, "Code").unwrap_or_default();
    let detail = service_message(text).unwrap_or_else(|| status.to_string());
    let message = format!("{what}: {detail}");
    Err(match code.as_str() {
        "NoSuchKey" | "NoSuchBucket" => ConnectorError::NotFound(message),
        "PreconditionFailed" => ConnectorError::Protocol(format!(
            "{message} (the source changed since it was fetched)"
        )),
        _ if is_auth(&code, Some(status.as_u16())) => ConnectorError::Auth(message),
        _ => ConnectorError::Protocol(message),
    })
}

/// An object key as it goes into a URL path or `x-amz-copy-source`: each segment
/// percent-encoded as OCI's names are ([`super::oci::encode_component`]), the `/` between
/// them kept.
fn encode_key(key: &str) -> String {
    key.split('/')
        .map(super::oci::encode_component)
        .collect::<Vec<_>>()
        .join("/")
}

/// The part size for a file of `size` bytes: at least [`MIN_PART`], more for files so big
/// that they would need over [`TARGET_PARTS`] parts; whole MiB.
fn part_size(size: u64) -> u64 {
    const MIB: u64 = 1024 * 1024;
    let needed = size.div_ceil(TARGET_PARTS).div_ceil(MIB) * MIB;
    needed.clamp(MIN_PART, MAX_PART)
}

fn check_length(read: u64, size: u64) -> Result<(), ConnectorError> {
    if read == size {
        return Ok(());
    }
    let what = if read < size {
        format!("the source ended after {read} of {size} bytes")
    } else {
        format!("the source holds more than the {size} bytes announced")
    };
    Err(ConnectorError::Io {
        op: "read",
        target: "the source".into(),
        source: std::io::Error::new(std::io::ErrorKind::UnexpectedEof, what),
    })
}

fn source_error(e: std::io::Error) -> ConnectorError {
    ConnectorError::Io {
        op: "read",
        target: "the source".into(),
        source: e,
    }
}

/// Decides whether a listed key becomes an entry: `Ok(true)` for a plain name,
/// `Ok(false)` for a key below a `/` (skipped), an error for a hostile key.
fn listed_name(bucket: &str, key: &str, prefix: &str) -> Result<bool, ConnectorError> {
    if !key.starts_with(prefix) {
        return Err(ConnectorError::Protocol(format!(
            "S3 list of bucket '{bucket}': the server listed '{}', which does not start with \
             the prefix '{}'",
            key.escape_debug(),
            prefix.escape_debug()
        )));
    }
    if key.split('/').any(|s| s == "." || s == "..") || key.chars().any(char::is_control) {
        // listed, and left where it is by FileStore::list_checked
        return Ok(true);
    }
    if key.contains('/') {
        tracing::debug!(bucket, key = %key.escape_debug(), "skipping a key in a \"subdirectory\"");
        return Ok(false);
    }
    Ok(true)
}

/// The bucket of a location: `bucket` or `namespace/bucket`, maybe followed by `:folder`.
fn bucket_of(location: &str) -> Result<&str, ConnectorError> {
    let (location, _) = split_folder(location)?;
    let segments = location_segments(location)?;
    let bucket = match segments.as_slice() {
        [bucket] | [_, bucket] => *bucket,
        _ => {
            return Err(ConnectorError::Config(format!(
                "S3 location '{}' must be 'bucket' or 'namespace/bucket'",
                location.escape_debug()
            )));
        }
    };
    if bucket.len() > 255
        || !bucket
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(ConnectorError::Config(format!(
            "S3 location '{}': a bucket name has at most 255 letters, digits, '-', '_' and '.'",
            location.escape_debug()
        )));
    }
    Ok(bucket)
}

/// The object key of a checked file name in the location's folder, kept verbatim (no
/// percent-encoding).
fn key(location: &str, name: &str) -> Result<Key, ConnectorError> {
    check_object_name(name)?;
    let (_, folder) = split_folder(location)?;
    Key::parse(folder_key(folder, name)).map_err(|_| ConnectorError::HostileName {
        name: name.escape_debug().to_string(),
        reason: "it is not a valid object key",
    })
}

fn parse_endpoint(endpoint: &str, allow_http: bool) -> Result<Url, ConnectorError> {
    let url = Url::parse(endpoint).map_err(|e| {
        in_spec(&format!(
            "endpoint '{}' is not a URL: {e}",
            endpoint.escape_debug()
        ))
    })?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(in_spec(
            "endpoint must not contain credentials (use access_key_id_env / secret_access_key_env)",
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(in_spec("endpoint must not have a query or a fragment"));
    }
    match url.scheme() {
        "https" => {}
        "http" if allow_http => {}
        "http" => {
            return Err(in_spec(&format!(
                "endpoint '{url}' is plain http; set allow_http: true to allow it"
            )));
        }
        other => {
            return Err(in_spec(&format!(
                "endpoint scheme '{other}' is neither https nor http"
            )));
        }
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(in_spec(&format!("endpoint '{url}' has no host")));
    }
    Ok(url)
}

fn in_spec(detail: &str) -> ConnectorError {
    ConnectorError::Config(format!("s3 connection: {detail}"))
}

/// The text of a configuration error without its "configuration: " prefix.
fn config_text(e: ConnectorError) -> String {
    match e {
        ConnectorError::Config(s) => s,
        other => other.to_string(),
    }
}

/// S3 error codes that mean the credentials were refused.
fn is_auth(code: &str, status: Option<u16>) -> bool {
    matches!(
        code,
        "AccessDenied"
            | "InvalidAccessKeyId"
            | "SignatureDoesNotMatch"
            | "ExpiredToken"
            | "InvalidToken"
            | "TokenRefreshRequired"
            | "AuthorizationHeaderMalformed"
            | "InvalidSecurity"
            | "AccountProblem"
            | "NotSignedUp"
            | "Unauthorized"
            | "Forbidden"
    ) || (code.is_empty() && matches!(status, Some(401 | 403)))
}

/// The HTTP status in an `object_store` error text ("...status code: 404 Not Found: ...").
fn status_of(text: &str) -> Option<u16> {
    let at = text.find("status code: ")? + "status code: ".len();
    text.get(at..at + 3)?.parse().ok()
}

/// `Code: Message` from an S3 XML error body inside `text`, if there is one.
fn service_message(text: &str) -> Option<String> {
    let code = xml_tag(text, "Code")?;
    Some(match xml_tag(text, "Message") {
        Some(message) if !message.is_empty() => format!("{code}: {message}"),
        _ => code,
    })
}

/// The unescaped text of the first `<tag>…</tag>` in `text`, shortened for messages.
fn xml_tag(text: &str, tag: &str) -> Option<String> {
    xml_text(text, tag).map(|t| shorten(&t))
}

/// The unescaped text of the first `<tag>…</tag>` in `text`, whole.
fn xml_text(text: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let start = text.find(&open)? + open.len();
    let end = start + text[start..].find(&format!("</{tag}>"))?;
    let raw = &text[start..end];
    Some(
        raw.replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&apos;", "'")
            .replace("&amp;", "&"),
    )
}

/// The first error of type `T` in `e`'s source chain.
fn find_source<'a, T: std::error::Error + 'static>(
    e: &'a (dyn std::error::Error + 'static),
) -> Option<&'a T> {
    let mut current = Some(e);
    while let Some(err) = current {
        if let Some(found) = err.downcast_ref::<T>() {
            return Some(found);
        }
        current = err.source();
    }
    None
}

/// An error and its causes, without repeats.
fn source_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut current = Some(e);
    while let Some(err) = current {
        let text = err.to_string();
        // hyper-util's "client error (Connect)" only repeats what its cause says.
        let wrapper = text.starts_with("client error (") && err.source().is_some();
        if !wrapper && !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        current = err.source();
    }
    parts.join(": ")
}

fn transport_error(shown: &str, e: &reqwest::Error) -> ConnectorError {
    let detail = source_chain(e);
    if e.is_timeout() {
        ConnectorError::Timeout(format!("{shown}: {detail}"))
    } else if e.is_connect() {
        ConnectorError::Connect(format!("{shown}: cannot connect: {detail}"))
    } else {
        ConnectorError::Connect(format!("{shown}: {detail}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connectors::check_name;

    #[test]
    fn locations_name_a_bucket() {
        assert_eq!(bucket_of("reports").unwrap(), "reports");
        assert_eq!(bucket_of("/my-ns/reports/").unwrap(), "reports");
        assert_eq!(bucket_of("ns/Bucket_2.x").unwrap(), "Bucket_2.x");
        for bad in ["", "a/b/c", "ns/../b", "b?x", "b%2F", "b#", "b\nx"] {
            assert!(bucket_of(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn listed_keys_are_checked() {
        assert!(listed_name("b", "A_1.csv", "A_").unwrap());
        assert!(!listed_name("b", "A_/x.csv", "A_").unwrap());
        // names ferry refuses are listed, to be set apart by FileStore::list_checked
        for hostile in ["a/../b", "..", "./x", "x\u{85}y", "x\ty", "back\\slash"] {
            assert!(listed_name("b", hostile, "").unwrap(), "{hostile:?}");
            assert!(check_name(hostile).is_err(), "{hostile:?}");
        }
        let err = listed_name("b", "B_1.csv", "A_").unwrap_err();
        assert!(matches!(err, ConnectorError::Protocol(_)), "{err}");
    }

    #[test]
    fn parts_grow_only_for_huge_files() {
        assert_eq!(part_size(0), MIN_PART);
        assert_eq!(part_size(20 << 20), MIN_PART);
        assert_eq!(part_size(70_000 << 20), MIN_PART);
        let huge = 1u64 << 40; // 1 TiB
        let part = part_size(huge);
        assert!(huge.div_ceil(part) <= TARGET_PARTS, "{part}");
        assert_eq!(part % (1 << 20), 0);
        assert_eq!(part_size(u64::MAX), MAX_PART);
    }

    #[test]
    fn service_errors_are_read_from_the_xml() {
        let text = "Generic S3 error: Error performing GET http://h/b?list-type=2 in 1ms - \
                    Server returned non-2xx status code: 403 Forbidden: <?xml version=\"1.0\"?>\
                    <Error><Code>SignatureDoesNotMatch</Code><Message>a &amp; b</Message></Error>";
        assert_eq!(
            service_message(text).unwrap(),
            "SignatureDoesNotMatch: a & b"
        );
        assert_eq!(status_of(text), Some(403));
        assert!(is_auth("SignatureDoesNotMatch", Some(403)));
        assert!(is_auth("", Some(401)));
        assert!(!is_auth("NoSuchKey", Some(404)));
        assert_eq!(service_message("no xml here"), None);
    }

    #[test]
    fn endpoints_are_checked() {
        assert!(parse_endpoint("http://127.0.0.1:9000", true).is_ok());
        assert!(parse_endpoint("http://127.0.0.1:9000", false).is_err());
        assert!(parse_endpoint("https://u:p@host", false).is_err());
        assert!(parse_endpoint("ftp://host", true).is_err());
        assert!(parse_endpoint("https://host/?x=1", false).is_err());
        assert!(parse_endpoint("not a url", false).is_err());
    }

    #[test]
    fn spec_defaults_and_unknown_fields() {
        let spec: S3Spec = serde_json::from_str(
            r#"{"region":"us-east-1","access_key_id_env":"K","secret_access_key_env":"S"}"#,
        )
        .unwrap();
        assert!(spec.path_style);
        assert!(!spec.allow_http);
        assert_eq!(spec.endpoint, None);
        serde_json::from_str::<S3Spec>(
            r#"{"region":"r","access_key_id_env":"K","secret_access_key_env":"S","bucket":"b"}"#,
        )
        .unwrap_err();
    }

    #[test]
    fn payloads_are_unsigned_by_default_only_over_https() {
        let unsigned = |endpoint: Option<&str>, set: Option<bool>| {
            let spec = S3Spec {
                endpoint: endpoint.map(str::to_string),
                region: "eu-central-1".into(),
                access_key_id_env: "K".into(),
                secret_access_key_env: "S".into(),
                path_style: true,
                allow_http: true,
                timeout_secs: None,
                unsigned_payload: set,
                temp_max_age: None,
            };
            S3Store::with_secrets(&spec, Secret::new("k".into()), Secret::new("s".into()))
                .unwrap()
                .unsigned_payload
        };
        assert!(unsigned(None, None), "AWS");
        assert!(unsigned(Some("https://ns.compat.example.com"), None));
        assert!(!unsigned(Some("http://127.0.0.1:9000"), None));
        assert!(unsigned(Some("http://127.0.0.1:9000"), Some(true)));
        assert!(!unsigned(
            Some("https://ns.compat.example.com"),
            Some(false)
        ));
    }

    #[test]
    fn virtual_hosted_endpoints_name_the_bucket() {
        let store = |endpoint: Option<&str>, path_style: bool| {
            let spec = S3Spec {
                endpoint: endpoint.map(str::to_string),
                region: "eu-central-1".into(),
                access_key_id_env: "K".into(),
                secret_access_key_env: "S".into(),
                path_style,
                allow_http: true,
                timeout_secs: None,
                unsigned_payload: None,
                temp_max_age: None,
            };
            S3Store::with_secrets(&spec, Secret::new("k".into()), Secret::new("s".into())).unwrap()
        };
        let minio = Some("http://minio.local:9000/");
        assert_eq!(
            store(minio, true).client_endpoint("b").unwrap().as_deref(),
            Some("http://minio.local:9000")
        );
        assert_eq!(
            store(minio, false).client_endpoint("b").unwrap().as_deref(),
            Some("http://b.minio.local:9000")
        );
        assert!(
            store(Some("http://127.0.0.1:9000"), false)
                .client_endpoint("b")
                .is_err()
        );
        assert_eq!(store(None, false).client_endpoint("b").unwrap(), None);
        // Building the clients works for each style.
        for path_style in [true, false] {
            store(minio, path_style).client("ns/b").unwrap();
            store(None, path_style).client("b").unwrap();
        }
    }

    #[test]
    fn debug_never_shows_the_secrets() {
        let spec: S3Spec = serde_json::from_str(
            r#"{"region":"us-east-1","access_key_id_env":"K","secret_access_key_env":"S"}"#,
        )
        .unwrap();
        let store = S3Store::with_secrets(
            &spec,
            Secret::new("AKIDVISIBLE".into()),
            Secret::new("hunter2".into()),
        )
        .unwrap();
        let shown = format!("{store:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("AKIDVISIBLE"),
            "{shown}"
        );
        assert!(
            shown.contains("https://s3.us-east-1.amazonaws.com"),
            "{shown}"
        );
    }
}
