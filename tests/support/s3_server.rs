//! A real S3 server for the S3 connector tests, embedded: `s3s-fs` (the S3 API over a
//! directory: `root/<bucket>/<key>`, multipart parts as `root/.upload_id-<id>.part-<n>`)
//! served by hyper on a free loopback port, with Signature V4 authentication against one
//! key pair. Tests may seed or inspect objects straight on disk.
#![allow(dead_code)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use tokio::task::{JoinHandle, JoinSet};

/// The access key ID the server accepts.
pub const ACCESS_KEY: &str = "ferry-test-access-key";
/// The secret key the server accepts.
pub const SECRET_KEY: &str = "ferry-test-secret-key";

/// A running server; stopped (listener and every open connection) on [`S3Server::stop`] or
/// drop.
pub struct S3Server {
    root: tempfile::TempDir,
    addr: SocketAddr,
    task: JoinHandle<()>,
    log: Arc<Mutex<Vec<Request>>>,
}

/// A request the server received (before authentication): what a test asserts about the
/// requests a connector sent, such as that a copy moved no body through the client.
#[derive(Debug, Clone)]
pub struct Request {
    /// `GET`, `PUT`, …
    pub method: String,
    /// The path, `/{bucket}/{key}` (percent-encoded as sent).
    pub path: String,
    /// The query, empty without one.
    pub query: String,
    /// The `x-amz-copy-source` header: a copy on the server.
    pub copy_source: Option<String>,
    /// The `Content-Length` header (0 without one).
    pub content_length: u64,
}

impl S3Server {
    /// Starts a server holding the given (empty) buckets.
    pub async fn start(buckets: &[&str]) -> S3Server {
        let root = tempfile::tempdir().unwrap();
        for bucket in buckets {
            std::fs::create_dir(root.path().join(bucket)).unwrap();
        }
        let fs = s3s_fs::FileSystem::new(root.path()).unwrap();
        let mut builder = s3s::service::S3ServiceBuilder::new(fs);
        builder.set_auth(s3s::auth::SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
        builder.set_route(ListUploads {
            root: root.path().to_path_buf(),
        });
        let service = builder.build();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let log: Arc<Mutex<Vec<Request>>> = Arc::default();
        let logged = Arc::clone(&log);
        let task = tokio::spawn(async move {
            // Dropping the set (when this task is aborted) aborts every connection.
            let mut connections = JoinSet::new();
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    continue;
                };
                // as production servers do: without it, a response written in two segments
                // waits for the client's delayed ACK (40 ms a request)
                let _ = socket.set_nodelay(true);
                let service = service.clone();
                let logged = Arc::clone(&logged);
                let service = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let header = |name: &str| {
                            req.headers()
                                .get(name)
                                .and_then(|v| v.to_str().ok())
                                .map(str::to_string)
                        };
                        let entry = Request {
                            method: req.method().to_string(),
                            path: req.uri().path().to_string(),
                            query: req.uri().query().unwrap_or_default().to_string(),
                            copy_source: header("x-amz-copy-source"),
                            content_length: header("content-length")
                                .and_then(|v| v.parse().ok())
                                .unwrap_or(0),
                        };
                        logged.lock().unwrap().push(entry);
                        hyper::service::Service::call(&service, req)
                    },
                );
                connections.spawn(async move {
                    let _ = ConnBuilder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(socket), service)
                        .await;
                });
                while connections.try_join_next().is_some() {}
            }
        });
        S3Server {
            root,
            addr,
            task,
            log,
        }
    }

    /// The requests received so far, in order.
    pub fn requests(&self) -> Vec<Request> {
        self.log.lock().unwrap().clone()
    }

    /// Forgets the requests received so far.
    pub fn clear_requests(&self) {
        self.log.lock().unwrap().clear();
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The directory holding a bucket's objects.
    pub fn bucket_dir(&self, bucket: &str) -> PathBuf {
        self.root.path().join(bucket)
    }

    /// The server's data directory.
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// Parts of unfinished multipart uploads still on the server.
    pub fn pending_parts(&self) -> Vec<String> {
        std::fs::read_dir(self.root.path())
            .unwrap()
            .filter_map(|e| e.unwrap().file_name().into_string().ok())
            .filter(|n| n.starts_with(".upload_id-"))
            .collect()
    }

    /// Stops the server: closes the listener and cuts every open connection, and returns
    /// once they are gone.
    /// The unfinished multipart uploads of `bucket`: (key, upload id), sorted.
    pub fn uploads(&self, bucket: &str) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = pending_uploads(self.root.path(), bucket)
            .into_iter()
            .map(|u| (u.key, u.id))
            .collect();
        out.sort();
        out
    }

    /// Makes the unfinished upload of `bucket/key` look started `age` ago.
    pub fn backdate_upload(&self, bucket: &str, key: &str, age: std::time::Duration) {
        for u in pending_uploads(self.root.path(), bucket) {
            if u.key == key {
                std::fs::File::options()
                    .write(true)
                    .open(&u.path)
                    .unwrap()
                    .set_modified(std::time::SystemTime::now() - age)
                    .unwrap();
            }
        }
    }

    pub async fn stop(&mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An unfinished multipart upload, as s3s-fs keeps it: a metadata file in the root named
/// `.bucket-{b64 bucket}.object-{b64 key}.upload-{id}.metadata.json`, written when the upload
/// is created and deleted when it is completed or aborted.
struct PendingUpload {
    key: String,
    id: String,
    path: PathBuf,
    initiated: std::time::SystemTime,
}

fn pending_uploads(root: &Path, bucket: &str) -> Vec<PendingUpload> {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let prefix = format!(".bucket-{}.object-", b64.encode(bucket));
    let mut out = Vec::new();
    for e in std::fs::read_dir(root).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name
            .strip_prefix(&prefix)
            .and_then(|r| r.strip_suffix(".metadata.json"))
        else {
            continue;
        };
        let Some((key, id)) = rest.split_once(".upload-") else {
            continue;
        };
        let key = String::from_utf8(b64.decode(key).unwrap()).unwrap();
        out.push(PendingUpload {
            key,
            id: id.to_string(),
            path: e.path(),
            initiated: e.metadata().unwrap().modified().unwrap(),
        });
    }
    out
}

/// `ListMultipartUploads` (`GET /{bucket}?uploads`), which s3s-fs lacks, answered from its
/// pending uploads; the request's signature is verified by s3s before it gets here.
struct ListUploads {
    root: PathBuf,
}

#[async_trait::async_trait]
impl s3s::route::S3Route for ListUploads {
    fn is_match(
        &self,
        method: &axum::http::Method,
        uri: &axum::http::Uri,
        _: &axum::http::HeaderMap,
        _: &mut axum::http::Extensions,
    ) -> bool {
        method == axum::http::Method::GET
            && uri
                .query()
                .is_some_and(|q| q.split('&').any(|p| p == "uploads" || p == "uploads="))
            && uri.path().trim_matches('/').split('/').count() == 1
    }

    async fn call(
        &self,
        req: s3s::S3Request<s3s::Body>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::Body>> {
        let bucket = req.uri.path().trim_matches('/').to_string();
        let mut xml = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ListMultipartUploadsResult><Bucket>{bucket}</Bucket><IsTruncated>false</IsTruncated>"
        );
        for u in pending_uploads(&self.root, &bucket) {
            let initiated = chrono::DateTime::<chrono::Utc>::from(u.initiated)
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            xml.push_str(&format!(
                "<Upload><Key>{}</Key><UploadId>{}</UploadId><Initiated>{initiated}</Initiated></Upload>",
                u.key, u.id
            ));
        }
        xml.push_str("</ListMultipartUploadsResult>");
        let mut response = s3s::S3Response::new(s3s::Body::from(xml));
        response.headers.insert(
            axum::http::header::CONTENT_TYPE,
            axum::http::HeaderValue::from_static("application/xml"),
        );
        Ok(response)
    }
}
