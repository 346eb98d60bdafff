//! The s3 kind's `unsigned_payload` option, seen on the wire: a recording TCP proxy in front
//! of the S3 test server (s3s-fs, which checks every Signature V4) shows which
//! `x-amz-content-sha256` each request carried, and the object must land byte for byte.
#![allow(clippy::unwrap_used)]

#[path = "support/s3_server.rs"]
mod s3_server;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use ferry::connectors::s3::{S3Spec, S3Store};
use ferry::connectors::{FileStore, Secret};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A proxy to `upstream` that keeps everything clients send.
async fn recording_proxy(upstream: SocketAddr) -> (SocketAddr, Arc<Mutex<Vec<u8>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let sent = Arc::new(Mutex::new(Vec::new()));
    let record = sent.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let record = record.clone();
            tokio::spawn(async move {
                let server = TcpStream::connect(upstream).await.unwrap();
                let (mut client_rx, mut client_tx) = client.into_split();
                let (mut server_rx, mut server_tx) = server.into_split();
                let up = async {
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        let n = client_rx.read(&mut buf).await.unwrap_or(0);
                        if n == 0 {
                            let _ = server_tx.shutdown().await;
                            return;
                        }
                        record.lock().unwrap().extend_from_slice(&buf[..n]);
                        if server_tx.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                };
                let down = async {
                    let _ = tokio::io::copy(&mut server_rx, &mut client_tx).await;
                };
                tokio::join!(up, down);
            });
        }
    });
    (addr, sent)
}

/// The `x-amz-content-sha256` values of the requests in `sent`.
fn payload_hashes(sent: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(sent);
    text.split("\r\n")
        .filter_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("x-amz-content-sha256")
                .then(|| value.trim().to_string())
        })
        .collect()
}

async fn put_through_proxy(unsigned_payload: Option<bool>) -> Vec<String> {
    let server = s3_server::S3Server::start(&["bucket"]).await;
    let (proxy, sent) = recording_proxy(server.addr()).await;
    let spec = S3Spec {
        endpoint: Some(format!("http://{proxy}")),
        region: "us-east-1".into(),
        access_key_id_env: "FERRY_TEST_UNUSED".into(),
        secret_access_key_env: "FERRY_TEST_UNUSED".into(),
        path_style: true,
        allow_http: true,
        timeout_secs: Some(10),
        unsigned_payload,
        temp_max_age: None,
    };
    let store = FileStore::S3(
        S3Store::with_secrets(
            &spec,
            Secret::new(s3_server::ACCESS_KEY.into()),
            Secret::new(s3_server::SECRET_KEY.into()),
        )
        .unwrap(),
    );
    // 9 MiB: a multipart upload of two parts, plus a small single PutObject.
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big");
    let payload: Vec<u8> = (0..9 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&big, &payload).unwrap();
    let small = dir.path().join("small");
    std::fs::write(&small, b"a,b\n1,2\n").unwrap();
    store.put("bucket", "BIG.bin", &big).await.unwrap();
    store.put("bucket", "small.csv", &small).await.unwrap();
    // The server verified every signature and holds the exact bytes.
    assert_eq!(
        std::fs::read(server.bucket_dir("bucket").join("BIG.bin")).unwrap(),
        payload
    );
    assert_eq!(
        std::fs::read(server.bucket_dir("bucket").join("small.csv")).unwrap(),
        b"a,b\n1,2\n"
    );
    let hashes = payload_hashes(&sent.lock().unwrap());
    // create, two parts, complete, and the small put at least
    assert!(hashes.len() >= 5, "{hashes:?}");
    hashes
}

/// SHA-256 of the empty body, which Signature V4 signs for bodiless requests.
const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

#[tokio::test]
async fn unsigned_payload_sends_bodies_unsigned() {
    let hashes = put_through_proxy(Some(true)).await;
    assert!(hashes.iter().all(|h| h == "UNSIGNED-PAYLOAD"), "{hashes:?}");
}

/// Plain http endpoints sign bodies by default: there the hash is the body's only protection.
#[tokio::test]
async fn http_endpoints_sign_bodies_by_default() {
    let hashes = put_through_proxy(None).await;
    assert!(
        !hashes.iter().any(|h| h == "UNSIGNED-PAYLOAD"),
        "{hashes:?}"
    );
    let bodies: Vec<&String> = hashes.iter().filter(|h| *h != EMPTY_SHA256).collect();
    // the two parts, the completion XML and the small file: real digests, 64 hex digits
    assert!(bodies.len() >= 4, "{hashes:?}");
    assert!(
        bodies
            .iter()
            .all(|h| h.len() == 64 && h.chars().all(|c| c.is_ascii_hexdigit())),
        "{hashes:?}"
    );
}
