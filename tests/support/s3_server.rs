//! A real S3 server for the S3 connector tests, embedded: `s3s-fs` (the S3 API over a
//! directory: `root/<bucket>/<key>`, multipart parts as `root/.upload_id-<id>.part-<n>`)
//! served by hyper on a free loopback port, with Signature V4 authentication against one
//! key pair. Tests may seed or inspect objects straight on disk.
#![allow(dead_code)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

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
        let service = builder.build();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            // Dropping the set (when this task is aborted) aborts every connection.
            let mut connections = JoinSet::new();
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    continue;
                };
                let service = service.clone();
                connections.spawn(async move {
                    let _ = ConnBuilder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(socket), service)
                        .await;
                });
                while connections.try_join_next().is_some() {}
            }
        });
        S3Server { root, addr, task }
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
