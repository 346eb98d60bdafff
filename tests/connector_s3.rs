//! The S3 file store against a real S3 server started by the test: `s3s-fs`, embedded (see
//! `support/s3_server.rs`), with Signature V4 authentication. A tiny stub (axum) stands in
//! for a hostile server whose listings no real server would produce.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/process.rs"]
mod process;
#[path = "support/s3_server.rs"]
mod s3_server;

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use ferry::connectors::s3::{S3Spec, S3Store};
use ferry::connectors::{
    Capability, ConnectionSpec, Connector, ConnectorError, CopySource, Entry, FileStore, Secret,
};
use process::rerun_with_env;
use s3_server::{ACCESS_KEY, S3Server, SECRET_KEY};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _, ReadBuf};

const MIB: usize = 1024 * 1024;

fn spec(endpoint: &str) -> S3Spec {
    S3Spec {
        endpoint: Some(endpoint.to_string()),
        region: "us-east-1".into(),
        access_key_id_env: "FERRY_TEST_S3_KEY".into(),
        secret_access_key_env: "FERRY_TEST_S3_SECRET".into(),
        path_style: true,
        allow_http: true,
        timeout_secs: Some(5),
        unsigned_payload: None,
        temp_max_age: None,
    }
}

fn s3_with_secret(endpoint: &str, secret: &str) -> S3Store {
    S3Store::with_secrets(
        &spec(endpoint),
        Secret::new(ACCESS_KEY.into()),
        Secret::new(secret.into()),
    )
    .unwrap()
}

fn s3(server: &S3Server) -> S3Store {
    s3_with_secret(&server.endpoint(), SECRET_KEY)
}

fn store(server: &S3Server) -> FileStore {
    FileStore::S3(s3(server))
}

/// `len` reproducible, incompressible-looking bytes.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn names(entries: &[Entry]) -> Vec<&str> {
    entries.iter().map(|e| e.name.as_str()).collect()
}

fn mib_per_s(bytes: usize, took: Duration) -> f64 {
    bytes as f64 / MIB as f64 / took.as_secs_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_and_get_are_byte_exact_small_and_multipart() {
    let server = S3Server::start(&["bkt"]).await;
    let s = store(&server);
    let dir = tempfile::tempdir().unwrap();

    // 20 MiB goes up as a multipart upload (three parts), exactly 8 MiB as one part, small
    // and empty files as one PutObject.
    for (name, len) in [
        ("big.bin", 20 * MIB),
        ("one-part.bin", 8 * MIB),
        ("small.csv", 11),
        ("empty.csv", 0),
    ] {
        let data = pattern(len, len as u64);
        let src = dir.path().join(format!("src-{name}"));
        std::fs::write(&src, &data).unwrap();

        let started = Instant::now();
        assert_eq!(s.put("ns/bkt", name, &src).await.unwrap(), len as u64);
        let put_took = started.elapsed();
        // What the server stored, read behind its back.
        assert!(
            std::fs::read(server.bucket_dir("bkt").join(name)).unwrap() == data,
            "{name}: stored bytes differ"
        );

        let dest = dir.path().join(format!("got-{name}"));
        let started = Instant::now();
        assert_eq!(s.get("bkt", name, &dest).await.unwrap(), len as u64);
        let get_took = started.elapsed();
        assert!(
            std::fs::read(&dest).unwrap() == data,
            "{name}: fetched bytes differ"
        );
        if len >= MIB {
            eprintln!(
                "figures: {name} ({} MiB) put {:.0} MiB/s ({} ms), get {:.0} MiB/s ({} ms)",
                len / MIB,
                mib_per_s(len, put_took),
                put_took.as_millis(),
                mib_per_s(len, get_took),
                get_took.as_millis()
            );
        }
    }
    assert!(
        server.pending_parts().is_empty(),
        "{:?}",
        server.pending_parts()
    );

    // Overwriting replaces the object.
    let src = dir.path().join("v2");
    std::fs::write(&src, b"second version").unwrap();
    s.put("bkt", "small.csv", &src).await.unwrap();
    let dest = dir.path().join("got-v2");
    s.get("bkt", "small.csv", &dest).await.unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), b"second version");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_filters_by_prefix_follows_pages_and_skips_subdirectories() {
    let server = S3Server::start(&["bkt"]).await;
    let dir = server.bucket_dir("bkt");
    // 1100 keys: more than one page (the server's pages hold 1000 keys).
    for i in 0..1100 {
        std::fs::write(dir.join(format!("p_{i:05}.csv")), format!("{i}")).unwrap();
    }
    std::fs::write(dir.join("q_1.csv"), b"q").unwrap();
    std::fs::create_dir(dir.join("sub")).unwrap();
    std::fs::write(dir.join("sub/inner.csv"), b"in a subdirectory").unwrap();
    std::fs::create_dir(dir.join("p_dir")).unwrap();
    std::fs::write(dir.join("p_dir/deep.csv"), b"deep").unwrap();
    let s = store(&server);

    let started = Instant::now();
    let listed = s.list("ns/bkt", "p_").await.unwrap();
    let took = started.elapsed();
    eprintln!(
        "figures: listed {} keys (2 pages) in {} ms",
        listed.len(),
        took.as_millis()
    );
    assert_eq!(listed.len(), 1100);
    assert_eq!(listed[0].name, "p_00000.csv");
    assert_eq!(listed[0].size, 1);
    assert_eq!(listed[1099].name, "p_01099.csv");
    assert_eq!(listed[1099].size, 4);
    assert!(listed.windows(2).all(|w| w[0].name < w[1].name));

    let all = s.list("bkt", "").await.unwrap();
    assert_eq!(all.len(), 1101);
    assert_eq!(all[1100].name, "q_1.csv");
    assert!(!names(&all).iter().any(|n| n.contains('/')));

    assert_eq!(names(&s.list("bkt", "q_").await.unwrap()), ["q_1.csv"]);
    assert!(s.list("bkt", "nothing-").await.unwrap().is_empty());
}

#[tokio::test]
async fn rename_copies_then_deletes() {
    let server = S3Server::start(&["bkt"]).await;
    let s = store(&server);
    let dir = tempfile::tempdir().unwrap();
    let data = pattern(100_000, 7);
    let src = dir.path().join("src");
    std::fs::write(&src, &data).unwrap();
    s.put("bkt", "A_1.csv", &src).await.unwrap();

    // Renaming onto itself is a no-op (copy-then-delete would lose the object).
    s.rename("bkt", "A_1.csv", "A_1.csv").await.unwrap();
    assert_eq!(names(&s.list("bkt", "").await.unwrap()), ["A_1.csv"]);

    s.rename("bkt", "A_1.csv", "Sent-A_1.csv").await.unwrap();

    assert_eq!(names(&s.list("bkt", "").await.unwrap()), ["Sent-A_1.csv"]);
    let dest = dir.path().join("got");
    s.get("bkt", "Sent-A_1.csv", &dest).await.unwrap();
    assert!(std::fs::read(&dest).unwrap() == data);
    let missing = dir.path().join("got-missing");
    let err = s.get("bkt", "A_1.csv", &missing).await.unwrap_err();
    assert!(matches!(err, ConnectorError::NotFound(_)), "{err}");
    assert!(!missing.exists(), "a failed get leaves no destination file");

    // Renaming what is not there names the source.
    let err = s
        .rename("bkt", "A_1.csv", "Sent-again.csv")
        .await
        .unwrap_err();
    let ConnectorError::NotFound(text) = &err else {
        panic!("expected NotFound, got {err:?}");
    };
    assert!(
        text.contains("'A_1.csv'") && text.contains("'bkt'"),
        "{text}"
    );
}

#[tokio::test]
async fn names_with_spaces_and_symbols_keep_their_exact_key() {
    let server = S3Server::start(&["bkt"]).await;
    let s = store(&server);
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::write(&src, b"odd name").unwrap();
    let name = "Report #1 (50%) a+b=c & ü~'.csv";

    s.put("bkt", name, &src).await.unwrap();
    // Stored under exactly that key: no percent-encoding leaked into it.
    assert!(server.bucket_dir("bkt").join(name).is_file());
    assert_eq!(
        names(&s.list("bkt", "Report #1 (50%)").await.unwrap()),
        [name]
    );
    let got = dir.path().join("got");
    s.get("bkt", name, &got).await.unwrap();
    assert_eq!(std::fs::read(&got).unwrap(), b"odd name");
    let sent = format!("Sent-{name}");
    s.rename("bkt", name, &sent).await.unwrap();
    assert_eq!(names(&s.list("bkt", "").await.unwrap()), [sent.as_str()]);
}

#[tokio::test]
async fn a_wrong_secret_is_an_auth_error_that_never_shows_the_secret() {
    let server = S3Server::start(&["bkt"]).await;
    std::fs::write(server.bucket_dir("bkt").join("a.csv"), b"a").unwrap();
    let wrong = "not-the-secret-xyz";
    let s = FileStore::S3(s3_with_secret(&server.endpoint(), wrong));
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::write(&src, b"x").unwrap();

    let errors = [
        s.list("bkt", "").await.unwrap_err(),
        s.get("bkt", "a.csv", &dir.path().join("got"))
            .await
            .unwrap_err(),
        s.put("bkt", "b.csv", &src).await.unwrap_err(),
        s.rename("bkt", "a.csv", "c.csv").await.unwrap_err(),
        s.check().await.unwrap_err(),
    ];
    for err in errors {
        let text = err.to_string();
        assert!(matches!(err, ConnectorError::Auth(_)), "{err:?}");
        assert!(text.contains("SignatureDoesNotMatch"), "{text}");
        assert!(!text.contains(wrong), "the secret leaked: {text}");
    }
    assert!(!format!("{s:?}").contains(wrong));
    // Nothing changed on the server.
    assert!(server.bucket_dir("bkt").join("a.csv").exists());
    assert!(!server.bucket_dir("bkt").join("b.csv").exists());
}

#[tokio::test]
async fn check_proves_the_endpoint_accepts_the_credentials() {
    let server = S3Server::start(&["bkt", "other"]).await;
    let said = store(&server).check().await.unwrap();
    assert_eq!(
        said,
        format!(
            "S3 endpoint {} accepted the credentials; 2 bucket(s) visible",
            server.endpoint()
        )
    );
}

#[tokio::test]
async fn a_server_that_is_down_is_a_connect_error() {
    // A port that nothing listens on.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let s = FileStore::S3(s3_with_secret(&endpoint, SECRET_KEY));

    let started = Instant::now();
    let err = s.list("bkt", "").await.unwrap_err();
    let ConnectorError::Connect(text) = &err else {
        panic!("expected Connect, got {err:?}");
    };
    assert!(text.contains(&endpoint), "{text}");
    assert!(text.contains("refused"), "{text}");
    let err = s.check().await.unwrap_err();
    assert!(matches!(err, ConnectorError::Connect(_)), "{err:?}");
    // Three retries with backoff, not minutes.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_missing_bucket_or_object_is_not_found_naming_it() {
    let server = S3Server::start(&["bkt"]).await;
    let s = store(&server);
    let dir = tempfile::tempdir().unwrap();

    // (A put is left out: s3s-fs creates a missing bucket's directory where S3 answers
    // NoSuchBucket, which the list case covers.)
    for err in [
        s.list("ns/no-such-bucket", "").await.unwrap_err(),
        s.get("no-such-bucket", "a.csv", &dir.path().join("got"))
            .await
            .unwrap_err(),
    ] {
        let ConnectorError::NotFound(text) = &err else {
            panic!("expected NotFound, got {err:?}");
        };
        assert!(text.contains("'no-such-bucket'"), "{text}");
    }

    let err = s
        .get("bkt", "missing.csv", &dir.path().join("got"))
        .await
        .unwrap_err();
    let ConnectorError::NotFound(text) = &err else {
        panic!("expected NotFound, got {err:?}");
    };
    assert!(
        text.contains("object 'missing.csv' in bucket 'bkt'") && text.contains("NoSuchKey"),
        "{text}"
    );

    // Locations that cannot name a bucket never reach the server.
    for bad in ["", "a/b/c", "ns/../bkt", "bkt?x=1"] {
        let err = s.list(bad, "").await.unwrap_err();
        assert!(matches!(err, ConnectorError::Config(_)), "{bad:?}: {err:?}");
    }
}

#[tokio::test]
async fn a_key_with_a_control_character_in_a_real_listing_is_an_error() {
    let server = S3Server::start(&["bkt"]).await;
    std::fs::write(server.bucket_dir("bkt").join("fine.csv"), b"ok").unwrap();
    std::fs::write(server.bucket_dir("bkt").join("evil\nname.csv"), b"x").unwrap();
    let s = store(&server);

    let err = s.list("bkt", "").await.unwrap_err();
    let ConnectorError::HostileName { name, .. } = &err else {
        panic!("expected HostileName, got {err:?}");
    };
    assert_eq!(name, "evil\\nname.csv");
    // A prefix that leaves the key out is fine.
    assert_eq!(names(&s.list("bkt", "fine").await.unwrap()), ["fine.csv"]);
}

/// A stub answering `ListObjectsV2` with whatever keys a bucket name asks for — listings no
/// honest server produces.
async fn hostile_stub() -> String {
    async fn listing(axum::extract::Path(bucket): axum::extract::Path<String>) -> String {
        let (keys, token): (&[&str], Option<&str>) = match bucket.as_str() {
            "dotdot" => (&["A_1.csv", "a/../b"], None),
            "dot-segment" => (&["./A_1.csv"], None),
            "empty-segment" => (&["A_//x.csv"], None),
            "c1-control" => (&["A_\u{85}.csv"], None),
            "backslash" => (&["A_..\\evil.csv"], None),
            "outside" => (&["A_1.csv", "B_1.csv"], None),
            "no-delimiter" => (&["A_1.csv", "A_dir/deep.csv"], None),
            "same-token" => (&["A_1.csv"], Some("again")),
            _ => (&[], None),
        };
        let mut xml = String::from(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><ListBucketResult>\
             <IsTruncated>false</IsTruncated>",
        );
        for key in keys {
            xml.push_str(&format!(
                "<Contents><Key>{key}</Key><Size>1</Size>\
                 <LastModified>2024-01-01T00:00:00.000Z</LastModified></Contents>"
            ));
        }
        if let Some(token) = token {
            xml.push_str(&format!(
                "<NextContinuationToken>{token}</NextContinuationToken>"
            ));
        }
        xml.push_str("</ListBucketResult>");
        xml
    }
    let app = axum::Router::new().route("/{bucket}", axum::routing::get(listing));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    endpoint
}

#[tokio::test]
async fn hostile_keys_from_a_server_are_refused_by_name() {
    let endpoint = hostile_stub().await;
    let s = FileStore::S3(s3_with_secret(&endpoint, SECRET_KEY));

    // keys the S3 client refuses as paths fail the whole page, naming the key
    for (bucket, shown) in [
        ("dotdot", "a/../b"),
        ("dot-segment", "./A_1.csv"),
        ("empty-segment", "A_//x.csv"),
    ] {
        let err = s.list(bucket, "A_").await.unwrap_err();
        let ConnectorError::HostileName { name, .. } = &err else {
            panic!("{bucket}: expected HostileName, got {err:?}");
        };
        assert_eq!(name, shown, "{bucket}");
        assert!(err.to_string().contains(shown), "{err}");
    }

    // keys it takes but ferry refuses are set apart, to be left where they are
    for (bucket, key, reason) in [
        (
            "c1-control",
            "A_\u{85}.csv",
            "it contains a control character",
        ),
        (
            "backslash",
            "A_..\\evil.csv",
            "it contains a path separator",
        ),
    ] {
        let (good, skipped) = s.list_checked(bucket, "A_").await.unwrap();
        assert!(good.is_empty(), "{bucket}: {good:?}");
        assert_eq!(skipped, [(key.to_string(), reason.to_string())], "{bucket}");
    }

    let err = s.list("outside", "A_").await.unwrap_err();
    assert!(
        matches!(&err, ConnectorError::Protocol(t) if t.contains("'B_1.csv'")),
        "{err:?}"
    );
    // A server ignoring the delimiter: the key below a '/' is skipped, not returned.
    assert_eq!(
        names(&s.list("no-delimiter", "A_").await.unwrap()),
        ["A_1.csv"]
    );
    // A server handing out the same continuation token forever.
    let err = s.list("same-token", "A_").await.unwrap_err();
    assert!(
        matches!(&err, ConnectorError::Protocol(t) if t.contains("continuation token")),
        "{err:?}"
    );
}

/// A source whose reads fail.
struct FailingRead;

impl AsyncRead for FailingRead {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        _: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Poll::Ready(Err(io::Error::other("the source disk went away")))
    }
}

/// Waits until the server holds a finished part of a multipart upload.
async fn first_part_landed(server: &S3Server) {
    let started = Instant::now();
    while server.pending_parts().is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "no part arrived"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_whose_source_fails_midway_is_aborted_and_leaves_the_old_object() {
    let server = S3Server::start(&["bkt"]).await;
    let s = s3(&server);
    let files = FileStore::S3(s3(&server));
    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join("old");
    std::fs::write(&old, b"the previous version").unwrap();
    files.put("bkt", "big.bin", &old).await.unwrap();

    // 8 MiB (one full part) arrive, then — once that part is on the server — the source
    // fails, 12 MiB short of the 20 announced.
    let (mut tx, rx) = tokio::io::duplex(MIB);
    let feed = async {
        tx.write_all(&pattern(8 * MIB, 1)).await.unwrap();
        first_part_landed(&server).await;
        drop(tx);
    };
    let (put, ()) = tokio::join!(
        s.put_reader("bkt", "big.bin", rx.chain(FailingRead), 20 * MIB as u64),
        feed
    );
    let err = put.unwrap_err();
    assert!(matches!(err, ConnectorError::Io { .. }), "{err:?}");
    assert!(
        err.to_string().contains("the source disk went away"),
        "{err}"
    );

    // The upload was aborted (its parts are gone) and the old object is untouched.
    assert!(
        server.pending_parts().is_empty(),
        "{:?}",
        server.pending_parts()
    );
    let got = dir.path().join("got");
    files.get("bkt", "big.bin", &got).await.unwrap();
    assert_eq!(std::fs::read(&got).unwrap(), b"the previous version");

    // A source shorter than announced fails the same way, leaving no object.
    let short = std::io::Cursor::new(pattern(9 * MIB, 2));
    let err = s
        .put_reader("bkt", "short.bin", short, 10 * MIB as u64)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("ended after 9437184 of 10485760 bytes"),
        "{err}"
    );
    assert!(!server.bucket_dir("bkt").join("short.bin").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_cut_off_by_the_server_dying_leaves_no_object() {
    let mut server = S3Server::start(&["bkt"]).await;
    let s = s3(&server);
    let bucket_dir = server.bucket_dir("bkt");

    let (mut tx, rx) = tokio::io::duplex(MIB);
    let started = Instant::now();
    let feed = async {
        tx.write_all(&pattern(8 * MIB, 3)).await.unwrap();
        first_part_landed(&server).await;
        server.stop().await;
        // The rest: the put gives up part-way and stops reading.
        let _ = tx.write_all(&pattern(12 * MIB, 4)).await;
        drop(tx);
    };
    let (put, ()) = tokio::join!(s.put_reader("bkt", "big.bin", rx, 20 * MIB as u64), feed);
    let err = put.unwrap_err();
    assert!(matches!(err, ConnectorError::Connect(_)), "{err:?}");
    assert!(!bucket_dir.join("big.bin").exists());
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_connection_reads_its_secrets_from_the_environment() {
    const TEST: &str = "an_s3_connection_reads_its_secrets_from_the_environment";
    let Ok(endpoint) = std::env::var("FERRY_TEST_S3_ENDPOINT") else {
        // Parent: serve, and let a child with the variables set do the work.
        let server = S3Server::start(&["bkt"]).await;
        rerun_with_env(
            TEST,
            &[
                ("FERRY_TEST_S3_ENDPOINT", &server.endpoint()),
                ("FERRY_TEST_S3_KEY", ACCESS_KEY),
                ("FERRY_TEST_S3_SECRET", SECRET_KEY),
            ],
        )
        .await;
        assert_eq!(
            std::fs::read(server.bucket_dir("bkt").join("from-child.txt")).unwrap(),
            b"hello from the child"
        );

        // Without the variables, connecting fails and names the variable.
        let conn: ConnectionSpec = serde_json::from_value(serde_json::json!({
            "kind": "s3", "region": "us-east-1",
            "access_key_id_env": "FERRY_TEST_S3_UNSET_KEY",
            "secret_access_key_env": "FERRY_TEST_S3_UNSET_SECRET",
        }))
        .unwrap();
        let err = conn.connect("store").unwrap_err();
        assert!(
            matches!(&err, ConnectorError::Config(t) if t.contains("FERRY_TEST_S3_UNSET_KEY")),
            "{err:?}"
        );
        return;
    };

    // Child: the connection as a connections file would have it.
    let conn: ConnectionSpec = serde_json::from_value(serde_json::json!({
        "kind": "s3",
        "endpoint": "${FERRY_TEST_S3_ENDPOINT}",
        "region": "${FERRY_TEST_S3_REGION:-us-east-1}",
        "access_key_id_env": "FERRY_TEST_S3_KEY",
        "secret_access_key_env": "FERRY_TEST_S3_SECRET",
        "allow_http": true,
        "timeout_secs": 5,
    }))
    .unwrap();
    assert_eq!(conn.kind(), "s3");
    assert_eq!(conn.capability(), Capability::Files);
    let Connector::Files(files @ FileStore::S3(_)) = conn.connect("store").unwrap() else {
        panic!("an s3 connection is a file store");
    };
    assert!(!format!("{files:?}").contains(SECRET_KEY));
    let said = files.check().await.unwrap();
    assert!(said.contains(&endpoint), "{said}");
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::write(&src, b"hello from the child").unwrap();
    files.put("bkt", "from-child.txt", &src).await.unwrap();
    assert_eq!(
        files.list("bkt", "from-").await.unwrap(),
        [Entry {
            name: "from-child.txt".into(),
            size: 20
        }]
    );
    let got = dir.path().join("got");
    files.get("bkt", "from-child.txt", &got).await.unwrap();
    assert_eq!(std::fs::read(&got).unwrap(), b"hello from the child");
    // Hostile names never leave the process.
    let err = files.put("bkt", "../escape", &src).await.unwrap_err();
    assert!(matches!(err, ConnectorError::HostileName { .. }), "{err:?}");
}

/// The requests that carried an object's body through the client: a GET of an object, or a
/// PUT with a body that is not a copy on the server.
fn body_requests(server: &S3Server) -> Vec<String> {
    server
        .requests()
        .iter()
        .filter(|r| {
            let object = r.path.trim_matches('/').contains('/');
            (r.method == "GET" && object)
                || (r.method == "PUT" && r.copy_source.is_none() && r.content_length > 0)
        })
        .map(|r| format!("{} {}?{}", r.method, r.path, r.query))
        .collect()
}

#[tokio::test]
async fn a_put_from_the_same_service_is_a_copy_on_the_server() {
    let server = S3Server::start(&["src", "dst"]).await;
    let from = store(&server);
    let to = store(&server);
    let dir = tempfile::tempdir().unwrap();
    let data = pattern(300_000, 11);
    let local = dir.path().join("local");
    std::fs::write(&local, &data).unwrap();
    from.put("src", "A 1+x.csv", &local).await.unwrap();
    server.clear_requests();

    assert!(to.copies_from(&from));
    let (size, etag) = from.head("src", "A 1+x.csv").await.unwrap().unwrap();
    assert_eq!(size, data.len() as u64);
    let copied = to
        .copy_from(
            &from,
            CopySource {
                location: "src",
                name: "A 1+x.csv",
                size,
                etag: etag.as_deref(),
            },
            "ns/dst:in/2024",
            "A 1+x.csv",
        )
        .await
        .unwrap();
    assert_eq!(copied, data.len() as u64);
    assert!(std::fs::read(server.bucket_dir("dst").join("in/2024/A 1+x.csv")).unwrap() == data);
    assert!(std::fs::read(server.bucket_dir("src").join("A 1+x.csv")).unwrap() == data);
    assert_eq!(body_requests(&server), Vec::<String>::new());
    let copies: Vec<_> = server
        .requests()
        .into_iter()
        .filter_map(|r| r.copy_source.map(|c| (r.method, r.path, c)))
        .collect();
    assert_eq!(
        copies,
        [(
            "PUT".to_string(),
            "/dst/in/2024/A%201%2Bx.csv".to_string(),
            "/src/A%201%2Bx.csv".to_string()
        )]
    );

    // The copy is conditional on the tag seen at the fetch: a changed source fails it and
    // creates nothing.
    std::fs::write(&local, pattern(1000, 12)).unwrap();
    from.put("src", "A 1+x.csv", &local).await.unwrap();
    let err = to
        .copy_from(
            &from,
            CopySource {
                location: "src",
                name: "A 1+x.csv",
                size,
                etag: etag.as_deref(),
            },
            "dst",
            "B.csv",
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("changed since it was fetched"),
        "{err}"
    );
    assert!(!server.bucket_dir("dst").join("B.csv").exists());

    // Another service (here: the same server under another name) or other credentials: no
    // copy on the server.
    let other_host = FileStore::S3(s3(&server).with_copy_part_limit(1));
    assert!(to.copies_from(&other_host), "only the copy limit differs");
    let renamed = FileStore::S3(s3_with_secret(
        &server.endpoint().replace("127.0.0.1", "localhost"),
        SECRET_KEY,
    ));
    assert!(!to.copies_from(&renamed));
    let wrong = FileStore::S3(s3_with_secret(&server.endpoint(), "another secret"));
    assert!(!to.copies_from(&wrong));
}

#[tokio::test]
async fn a_copy_above_the_part_limit_goes_in_upload_part_copies() {
    let server = S3Server::start(&["src", "dst"]).await;
    let from = store(&server);
    let to = FileStore::S3(s3(&server).with_copy_part_limit(5 * MIB as u64));
    let dir = tempfile::tempdir().unwrap();
    let data = pattern(12 * MIB + 3, 21);
    let local = dir.path().join("local");
    std::fs::write(&local, &data).unwrap();
    from.put("src", "big.bin", &local).await.unwrap();
    server.clear_requests();

    let (size, etag) = from.head("src", "big.bin").await.unwrap().unwrap();
    to.copy_from(
        &from,
        CopySource {
            location: "src",
            name: "big.bin",
            size,
            etag: etag.as_deref(),
        },
        "dst",
        "big.bin",
    )
    .await
    .unwrap();
    assert!(std::fs::read(server.bucket_dir("dst").join("big.bin")).unwrap() == data);
    assert_eq!(body_requests(&server), Vec::<String>::new());
    let parts = server
        .requests()
        .iter()
        .filter(|r| r.copy_source.is_some() && r.query.contains("partNumber="))
        .count();
    assert_eq!(parts, 3, "{:?}", server.requests());
    assert!(server.uploads("dst").is_empty(), "the upload was completed");

    // A source gone meanwhile: the multipart copy is aborted and leaves nothing.
    std::fs::remove_file(server.bucket_dir("src").join("big.bin")).unwrap();
    let err = to
        .copy_from(
            &from,
            CopySource {
                location: "src",
                name: "big.bin",
                size,
                etag: None,
            },
            "dst",
            "gone.bin",
        )
        .await
        .unwrap_err();
    assert!(matches!(err, ConnectorError::NotFound(_)), "{err}");
    assert!(!server.bucket_dir("dst").join("gone.bin").exists());
    assert!(server.uploads("dst").is_empty(), "the upload was aborted");
}
