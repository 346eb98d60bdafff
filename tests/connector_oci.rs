//! Tests for the OCI Object Storage connector (`ferry::connectors::oci`) against an
//! in-process stand-in of the native API (`support/oci_server.rs`) that verifies every
//! request's signature with the public key, as OCI does. The keys under
//! `tests/fixtures/oci/` are throwaway 2048-bit keys made for these tests.
#![allow(clippy::unwrap_used)]

#[path = "support/oci_server.rs"]
mod oci_server;

use std::time::{Duration, Instant};

use ferry::connectors::oci::RenameConditions;
use ferry::connectors::{ConnectionSpec, Connector, ConnectorError, CopySource, FileStore};
use oci_server::{FINGERPRINT, Failures, NAMESPACE, OciServer};
use serde_json::json;

const LOCATION: &str = "testns/inbox";

async fn server() -> OciServer {
    OciServer::start_with_test_key(2).await
}

fn spec_json(endpoint: &str, key: &str) -> serde_json::Value {
    oci_server::connection_spec(endpoint, key)
}

fn connect(spec: serde_json::Value) -> Result<FileStore, ConnectorError> {
    let spec: ConnectionSpec = serde_json::from_value(spec).unwrap();
    assert_eq!(spec.kind(), "oci");
    match spec.connect("os")? {
        Connector::Files(store) => Ok(store),
        other => panic!("expected a file store, got {other:?}"),
    }
}

fn store(server: &OciServer) -> FileStore {
    connect(spec_json(&server.endpoint(), "test_key_pkcs1.pem")).unwrap()
}

/// Deterministic pseudo-random bytes (xorshift), so a corrupted byte cannot hide.
fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[tokio::test]
async fn list_with_prefix_follows_next_start_with_across_pages() {
    let server = server().await;
    let dir = server.bucket("inbox");
    for (name, len) in [
        ("A_1.csv", 1),
        ("A_2.csv", 22),
        ("A_3.csv", 333),
        ("A_4.csv", 4),
        ("A_5.csv", 5),
        ("B_1.csv", 6),
    ] {
        std::fs::write(dir.join(name), vec![b'x'; len]).unwrap();
    }
    let entries = store(&server).list(LOCATION, "A_").await.unwrap();
    let got: Vec<(&str, u64)> = entries.iter().map(|e| (e.name.as_str(), e.size)).collect();
    assert_eq!(
        got,
        [
            ("A_1.csv", 1),
            ("A_2.csv", 22),
            ("A_3.csv", 333),
            ("A_4.csv", 4),
            ("A_5.csv", 5)
        ]
    );
    // Two per page: three signed, verified requests, the later ones starting where the
    // previous page said; sizes came because fields=name,size was asked for.
    let lists: Vec<_> = server
        .log()
        .into_iter()
        .filter(|l| l.method == "GET")
        .collect();
    assert_eq!(lists.len(), 3, "{lists:?}");
    assert!(
        lists
            .iter()
            .all(|l| l.status == 200 && l.signed == "date (request-target) host")
    );
    assert!(lists[0].target.contains("fields=name%2Csize"), "{lists:?}");
    assert!(lists[0].target.contains("delimiter=%2F"), "{lists:?}");
    assert!(lists[0].target.contains("prefix=A_") && !lists[0].target.contains("start="));
    assert!(lists[1].target.contains("start=A_3.csv"), "{lists:?}");
    assert!(lists[2].target.contains("start=A_5.csv"), "{lists:?}");

    // Without a prefix everything at the top of the bucket is listed; an empty bucket lists
    // nothing.
    assert_eq!(store(&server).list(LOCATION, "").await.unwrap().len(), 6);
    server.bucket("empty");
    assert!(
        store(&server)
            .list("testns/empty", "")
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn get_streams_the_exact_bytes() {
    let server = server().await;
    let data = bytes(5 * 1024 * 1024 + 7, 42);
    std::fs::write(server.bucket("inbox").join("big.bin"), &data).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("got.bin");
    let n = store(&server)
        .get(LOCATION, "big.bin", &dest)
        .await
        .unwrap();
    assert_eq!(n, data.len() as u64);
    assert!(
        std::fs::read(&dest).unwrap() == data,
        "downloaded bytes differ"
    );

    let err = store(&server)
        .get(LOCATION, "missing.bin", &dest)
        .await
        .unwrap_err();
    assert!(matches!(err, ConnectorError::NotFound(_)), "{err}");
    assert!(err.to_string().contains("ObjectNotFound"), "{err}");
}

#[tokio::test]
async fn a_download_cut_off_midway_is_retried_and_then_an_error_that_leaves_no_file() {
    let server = server().await;
    let data = bytes(3 * 1024 * 1024, 7);
    std::fs::write(server.bucket("inbox").join("big.bin"), &data).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("got.bin");

    // Cut once: the second attempt brings the exact bytes.
    server.cut_gets_after(1024 * 1024 + 5, 1);
    let n = store(&server)
        .get(LOCATION, "big.bin", &dest)
        .await
        .unwrap();
    assert_eq!(n, data.len() as u64);
    assert!(std::fs::read(&dest).unwrap() == data, "bytes differ");
    assert_eq!(server.log().iter().filter(|l| l.method == "GET").count(), 2);
    std::fs::remove_file(&dest).unwrap();

    // Cut on every attempt: an error after 1 + 3 retries, and no partial file.
    server.cut_gets_after(1024 * 1024 + 5, 4);
    let err = store(&server)
        .get(LOCATION, "big.bin", &dest)
        .await
        .unwrap_err();
    assert!(matches!(err, ConnectorError::Connect(_)), "{err:?}");
    assert!(
        err.to_string().ends_with("(gave up after 4 attempts)"),
        "{err}"
    );
    assert_eq!(server.log().iter().filter(|l| l.method == "GET").count(), 6);
    // How many bytes arrived before the cut depends on buffering; never more than were sent.
    let text = err.to_string();
    let got: u64 = text
        .split("the download broke off after ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{text}"));
    assert!(got <= 1024 * 1024 + 5, "{text}");
    assert!(!dest.exists(), "a partial download was left behind");
    // The next GET is whole.
    store(&server)
        .get(LOCATION, "big.bin", &dest)
        .await
        .unwrap();
    assert!(std::fs::read(&dest).unwrap() == data);
}

#[tokio::test]
async fn put_then_get_round_trips_with_encoded_names() {
    let server = server().await;
    let dir = server.bucket("inbox");
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src.bin");
    let data = bytes(3 * 1024 * 1024, 7);
    std::fs::write(&src, &data).unwrap();
    let s = store(&server);
    // Spaces, '+', '%', '?', '#' and non-ASCII must survive the per-segment encoding, and
    // the signature must cover the encoded target exactly as sent.
    let name = "Ré port+1 %20?#.csv";
    assert_eq!(
        s.put(LOCATION, name, &src).await.unwrap(),
        data.len() as u64
    );
    assert!(std::fs::read(dir.join(name)).unwrap() == data);
    let dest = tmp.path().join("back.bin");
    assert_eq!(
        s.get(LOCATION, name, &dest).await.unwrap(),
        data.len() as u64
    );
    assert!(std::fs::read(&dest).unwrap() == data);
    assert_eq!(s.list(LOCATION, "Ré").await.unwrap()[0].name, name);

    let put = server
        .log()
        .into_iter()
        .find(|l| l.method == "PUT")
        .unwrap();
    assert_eq!(
        put.target,
        "/n/testns/b/inbox/o/R%C3%A9%20port%2B1%20%2520%3F%23.csv"
    );
    // PutObject streams its body, so it signs the minimal set.
    assert_eq!(put.signed, "date (request-target) host");

    // An empty file is a valid object too.
    let empty = tmp.path().join("empty");
    std::fs::write(&empty, b"").unwrap();
    assert_eq!(s.put(LOCATION, "empty.csv", &empty).await.unwrap(), 0);
    assert_eq!(std::fs::read(dir.join("empty.csv")).unwrap().len(), 0);
}

#[tokio::test]
async fn a_failed_put_reports_the_error_and_leaves_no_object() {
    let server = server().await;
    let dir = server.bucket("inbox");
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src.bin");
    std::fs::write(&src, bytes(2 * 1024 * 1024, 3)).unwrap();
    // Failing on every attempt (1 + 3 retries).
    server.fail_puts_after(256 * 1024, 4);
    let err = store(&server)
        .put(LOCATION, "half.bin", &src)
        .await
        .unwrap_err();
    // Either the 500 answer arrives or the connection breaks while uploading.
    let text = err.to_string();
    assert!(
        text.contains("InternalServerError") || matches!(err, ConnectorError::Connect(_)),
        "{text}"
    );
    assert!(text.ends_with("(gave up after 4 attempts)"), "{text}");
    assert!(!dir.join("half.bin").exists());
    assert!(store(&server).list(LOCATION, "").await.unwrap().is_empty());
}

#[tokio::test]
async fn rename_posts_a_signed_json_body() {
    let server = server().await;
    let dir = server.bucket("inbox");
    std::fs::write(dir.join("A_1.csv"), b"one").unwrap();
    std::fs::write(dir.join("Sent-A_0.csv"), b"old").unwrap();
    let s = store(&server);
    s.rename(LOCATION, "A_1.csv", "Sent-A_1.csv").await.unwrap();
    assert!(!dir.join("A_1.csv").exists());
    assert_eq!(std::fs::read(dir.join("Sent-A_1.csv")).unwrap(), b"one");
    let post = server
        .log()
        .into_iter()
        .find(|l| l.method == "POST")
        .unwrap();
    assert_eq!(post.target, "/n/testns/b/inbox/actions/renameObject");
    assert_eq!(
        post.signed,
        "date (request-target) host content-length content-type x-content-sha256"
    );
    assert_eq!(post.status, 200);

    let err = s.rename(LOCATION, "A_1.csv", "x.csv").await.unwrap_err();
    assert!(matches!(err, ConnectorError::NotFound(_)), "{err}");
    assert!(err.to_string().contains("ObjectNotFound"), "{err}");

    // Conditional rename: refuse to overwrite an existing target.
    let FileStore::Oci(oci) = &s else {
        panic!("not an OCI store")
    };
    let no_overwrite = RenameConditions {
        new_if_none_match_etag: Some("*".into()),
        ..RenameConditions::default()
    };
    let err = oci
        .rename_with(LOCATION, "Sent-A_1.csv", "Sent-A_0.csv", &no_overwrite)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("IfNoneMatchFailed"), "{err}");
    assert_eq!(std::fs::read(dir.join("Sent-A_0.csv")).unwrap(), b"old");
    let head = oci.head(LOCATION, "Sent-A_1.csv").await.unwrap().unwrap();
    let if_match = RenameConditions {
        src_if_match_etag: head.etag.clone(),
        new_if_none_match_etag: Some("*".into()),
    };
    oci.rename_with(LOCATION, "Sent-A_1.csv", "Done-A_1.csv", &if_match)
        .await
        .unwrap();
    assert!(dir.join("Done-A_1.csv").exists());
}

#[tokio::test]
async fn head_and_delete() {
    let server = server().await;
    let dir = server.bucket("inbox");
    std::fs::write(dir.join("a.csv"), b"12345").unwrap();
    let s = store(&server);
    let FileStore::Oci(oci) = &s else {
        panic!("not an OCI store")
    };
    let head = oci.head(LOCATION, "a.csv").await.unwrap().unwrap();
    assert_eq!(head.size, 5);
    assert!(head.etag.is_some());
    assert_eq!(oci.head(LOCATION, "nope.csv").await.unwrap(), None);
    oci.delete(LOCATION, "a.csv").await.unwrap();
    assert!(!dir.join("a.csv").exists());
    let err = oci.delete(LOCATION, "a.csv").await.unwrap_err();
    assert!(matches!(err, ConnectorError::NotFound(_)), "{err}");
    assert!(oci.delete(LOCATION, "../a.csv").await.is_err());
    let log = server.log();
    assert!(log.iter().any(|l| l.method == "HEAD" && l.status == 200));
    assert!(log.iter().any(|l| l.method == "DELETE" && l.status == 204));
    assert!(log.iter().all(|l| l.signed == "date (request-target) host"));
}

#[tokio::test]
async fn a_wrong_key_is_not_authenticated() {
    let server = server().await;
    server.bucket("inbox");
    let s = connect(spec_json(&server.endpoint(), "wrong_key.pem")).unwrap();
    let err = s.list(LOCATION, "").await.unwrap_err();
    assert!(matches!(err, ConnectorError::Auth(_)), "{err}");
    let text = err.to_string();
    assert!(text.contains("NotAuthenticated"), "{text}");
    assert!(text.contains("opc-request-id test-"), "{text}");
    assert!(
        s.check()
            .await
            .unwrap_err()
            .to_string()
            .contains("NotAuthenticated")
    );
}

#[tokio::test]
async fn a_missing_bucket_is_bucket_not_found() {
    let server = server().await;
    let s = store(&server);
    let err = s.list("testns/nosuchbucket", "").await.unwrap_err();
    assert!(matches!(err, ConnectorError::NotFound(_)), "{err}");
    let text = err.to_string();
    assert!(text.contains("BucketNotFound"), "{text}");
    assert!(text.contains("nosuchbucket"), "{text}");
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("x");
    std::fs::write(&src, b"x").unwrap();
    let err = s
        .put("testns/nosuchbucket", "x.csv", &src)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("BucketNotFound"), "{err}");
}

#[tokio::test]
async fn a_server_that_is_down_is_a_connect_error() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let s = connect(spec_json(
        &format!("http://127.0.0.1:{port}"),
        "test_key_pkcs1.pem",
    ))
    .unwrap();
    let err = s.list(LOCATION, "").await.unwrap_err();
    assert!(matches!(err, ConnectorError::Connect(_)), "{err}");
    assert!(err.to_string().contains("cannot connect"), "{err}");
}

#[tokio::test]
async fn a_silent_server_times_out() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let mut spec = spec_json(&format!("http://{addr}"), "test_key_pkcs1.pem");
    spec["timeout_secs"] = json!(1);
    let s = connect(spec).unwrap();
    let started = Instant::now();
    let err = s.list(LOCATION, "").await.unwrap_err();
    assert!(matches!(err, ConnectorError::Timeout(_)), "{err}");
    assert!(started.elapsed() < Duration::from_secs(3));

    // An upload the peer stops reading stalls once the socket buffers are full.
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("big.bin");
    std::fs::write(&src, vec![0u8; 32 * 1024 * 1024]).unwrap();
    let started = Instant::now();
    let err = s.put(LOCATION, "big.bin", &src).await.unwrap_err();
    assert!(matches!(err, ConnectorError::Timeout(_)), "{err}");
    assert!(err.to_string().contains("upload progress"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(4));
    hold.abort();
}

#[tokio::test]
async fn hostile_names_in_a_listing_are_set_apart() {
    for hostile in ["../../etc/passwd", "x\nSent-y.csv", "..", "dir/../../z"] {
        let server = server().await;
        std::fs::write(server.bucket("inbox").join("ok.csv"), b"1").unwrap();
        server.inject_listing_name(hostile);
        let (good, skipped) = store(&server).list_checked(LOCATION, "").await.unwrap();
        let good: Vec<&str> = good.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(good, ["ok.csv"], "{hostile:?}");
        assert_eq!(skipped.len(), 1, "{hostile:?}: {skipped:?}");
        assert_eq!(skipped[0].0, hostile);
    }
}

#[tokio::test]
async fn a_pkcs8_key_works_too_and_check_names_the_namespace() {
    let server = server().await;
    std::fs::write(server.bucket("inbox").join("a.csv"), b"1").unwrap();
    let s = connect(spec_json(&server.endpoint(), "test_key_pkcs8.pem")).unwrap();
    assert_eq!(s.list(LOCATION, "").await.unwrap().len(), 1);
    let checked = s.check().await.unwrap();
    assert!(
        checked.contains(&format!("namespace '{NAMESPACE}'")),
        "{checked}"
    );
    assert!(checked.contains(FINGERPRINT), "{checked}");
}

#[tokio::test]
async fn configuration_errors_are_clear() {
    let text = |spec: serde_json::Value| connect(spec).unwrap_err().to_string();
    let endpoint = "http://127.0.0.1:9";

    let encrypted = text(spec_json(endpoint, "encrypted_key.pem"));
    assert!(encrypted.contains("passphrase-protected"), "{encrypted}");
    assert!(encrypted.contains("connection 'os'"), "{encrypted}");

    let missing = text(spec_json(endpoint, "no_such_key.pem"));
    assert!(missing.contains("cannot be read"), "{missing}");

    let mut no_endpoint = spec_json(endpoint, "test_key_pkcs1.pem");
    no_endpoint.as_object_mut().unwrap().remove("endpoint");
    assert!(text(no_endpoint.clone()).contains("region"));
    no_endpoint["region"] = json!("eu-frankfurt-1");
    let FileStore::Oci(oci) = connect(no_endpoint.clone()).unwrap() else {
        panic!("not an OCI store")
    };
    assert_eq!(
        oci.endpoint(),
        "https://objectstorage.eu-frankfurt-1.oraclecloud.com/"
    );
    no_endpoint["region"] = json!("eu frankfurt/1");
    assert!(text(no_endpoint).contains("region"));

    let mut env_endpoint = spec_json(
        "${FERRY_TEST_OCI_UNSET:-http://127.0.0.1:9}",
        "test_key_pkcs1.pem",
    );
    let FileStore::Oci(oci) = connect(env_endpoint.clone()).unwrap() else {
        panic!("not an OCI store")
    };
    assert_eq!(oci.endpoint(), "http://127.0.0.1:9/");
    env_endpoint["bucket"] = json!("x");
    let spec = serde_json::from_value::<ConnectionSpec>(env_endpoint);
    assert!(spec.is_err(), "unknown fields are refused");

    // Locations are namespace/bucket.
    let s = connect(spec_json(endpoint, "test_key_pkcs1.pem")).unwrap();
    for bad in ["testns", "testns/inbox/sub", "testns/.."] {
        let err = s.list(bad, "").await.unwrap_err();
        assert!(matches!(err, ConnectorError::Config(_)), "{bad}: {err}");
    }

    // Debug output names the key id, never the key.
    let shown = format!("{s:?}");
    assert!(
        shown.contains(FINGERPRINT) && !shown.contains("MII"),
        "{shown}"
    );
}

#[tokio::test]
async fn a_put_and_a_get_succeed_through_503s_with_the_exact_bytes() {
    let server = server().await;
    let dir = server.bucket("inbox");
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src.bin");
    let data = bytes(3 * 1024 * 1024 + 11, 99);
    std::fs::write(&src, &data).unwrap();
    let s = store(&server);

    // The upload is replayed from the spool file for each attempt.
    server.inject(Failures::Next { n: 2, status: 503 });
    assert_eq!(
        s.put(LOCATION, "r.bin", &src).await.unwrap(),
        data.len() as u64
    );
    assert!(
        std::fs::read(dir.join("r.bin")).unwrap() == data,
        "bytes differ"
    );
    let puts: Vec<u16> = server
        .log()
        .iter()
        .filter(|l| l.method == "PUT")
        .map(|l| l.status)
        .collect();
    assert_eq!(puts, [503, 503, 200]);

    server.inject(Failures::Next { n: 3, status: 503 });
    let dest = tmp.path().join("back.bin");
    assert_eq!(
        s.get(LOCATION, "r.bin", &dest).await.unwrap(),
        data.len() as u64
    );
    assert!(std::fs::read(&dest).unwrap() == data, "bytes differ");
    let gets: Vec<u16> = server
        .log()
        .iter()
        .filter(|l| l.method == "GET")
        .map(|l| l.status)
        .collect();
    assert_eq!(gets, [503, 503, 503, 200]);

    // 429 (throttling) is transient too; listings and renames retry as well.
    server.inject(Failures::Next { n: 1, status: 429 });
    assert_eq!(s.list(LOCATION, "r.").await.unwrap().len(), 1);
    server.inject(Failures::Next { n: 1, status: 502 });
    s.rename(LOCATION, "r.bin", "Sent-r.bin").await.unwrap();
    assert!(std::fs::read(dir.join("Sent-r.bin")).unwrap() == data);
}

#[tokio::test]
async fn eight_files_with_every_third_request_failing_move_in_one_pass() {
    let server = server().await;
    let dir = server.bucket("inbox");
    let tmp = tempfile::tempdir().unwrap();
    let s = store(&server);
    server.inject(Failures::EveryKth {
        k: 3,
        status: 503,
        seen: 0,
    });
    for i in 0..8u64 {
        let src = tmp.path().join(format!("f{i}"));
        let data = bytes(64 * 1024 + i as usize, i + 1);
        std::fs::write(&src, &data).unwrap();
        s.put(LOCATION, &format!("F_{i}.csv"), &src).await.unwrap();
        let back = tmp.path().join(format!("b{i}"));
        s.get(LOCATION, &format!("F_{i}.csv"), &back).await.unwrap();
        assert!(std::fs::read(&back).unwrap() == data, "file {i} differs");
        s.rename(LOCATION, &format!("F_{i}.csv"), &format!("Sent-F_{i}.csv"))
            .await
            .unwrap();
    }
    assert_eq!(s.list(LOCATION, "Sent-").await.unwrap().len(), 8);
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 8);
    let failed = server.log().iter().filter(|l| l.status == 503).count();
    assert!(failed >= 8, "only {failed} requests failed");
}

#[tokio::test]
async fn a_4xx_is_not_retried() {
    let server = server().await;
    server.bucket("inbox");
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("x");
    std::fs::write(&src, b"x").unwrap();
    let s = store(&server);

    server.inject(Failures::Next { n: 1, status: 400 });
    let err = s.put(LOCATION, "x.csv", &src).await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains("HTTP 400"), "{text}");
    assert!(!text.contains("attempts"), "{text}");
    assert_eq!(server.log().len(), 1);

    let dest = tmp.path().join("y");
    let err = s.get(LOCATION, "missing.csv", &dest).await.unwrap_err();
    assert!(matches!(err, ConnectorError::NotFound(_)), "{err}");
    assert_eq!(server.log().len(), 2, "a 404 was retried");
}

#[tokio::test]
async fn after_the_retry_budget_the_error_names_the_status_and_the_attempts() {
    let server = server().await;
    let dir = server.bucket("inbox");
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("x");
    std::fs::write(&src, b"payload").unwrap();
    let s = store(&server);
    server.inject(Failures::Next {
        n: 100,
        status: 503,
    });
    let err = s.put(LOCATION, "x.csv", &src).await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains("HTTP 503"), "{text}");
    assert!(text.contains("ServiceUnavailable"), "{text}");
    assert!(text.ends_with("(gave up after 4 attempts)"), "{text}");
    assert_eq!(server.log().len(), 4);
    assert!(!dir.join("x.csv").exists());
}

#[tokio::test]
async fn a_put_from_the_same_region_and_key_is_a_copy_object_work_request() {
    let server = server().await;
    let inbox = server.bucket("inbox");
    let archive = server.bucket("archive");
    let data = bytes(200_000, 5);
    std::fs::write(inbox.join("A 1.csv"), &data).unwrap();
    let mut with_region = spec_json(&server.endpoint(), "test_key_pkcs1.pem");
    with_region["region"] = json!("test-region-1");
    let from = connect(with_region.clone()).unwrap();
    let to = connect(with_region).unwrap();
    assert!(to.copies_from(&from));
    // without a region (only an endpoint that names none) there is no copy on the server
    assert!(!store(&server).copies_from(&from));

    let (size, etag) = from.head(LOCATION, "A 1.csv").await.unwrap().unwrap();
    assert_eq!(size, data.len() as u64);
    to.copy_from(
        &from,
        CopySource {
            location: LOCATION,
            name: "A 1.csv",
            size,
            etag: etag.as_deref(),
        },
        "testns/archive:in/2024",
        "A 1.csv",
    )
    .await
    .unwrap();
    assert_eq!(
        std::fs::read(archive.join("in/2024/A 1.csv")).unwrap(),
        data
    );
    assert_eq!(std::fs::read(inbox.join("A 1.csv")).unwrap(), data);
    let log = server.log();
    // no body moved: no GET or PUT of an object, one signed copyObject, and the work
    // request followed until it completed (it says IN_PROGRESS first)
    assert!(
        !log.iter()
            .any(|l| (l.method == "GET" || l.method == "PUT") && l.target.contains("/o/")),
        "{log:?}"
    );
    let copy = log.iter().find(|l| l.method == "POST").unwrap();
    assert_eq!(copy.target, "/n/testns/b/inbox/actions/copyObject");
    assert_eq!(copy.status, 202);
    assert_eq!(
        copy.signed,
        "date (request-target) host content-length content-type x-content-sha256"
    );
    let polls = log
        .iter()
        .filter(|l| l.target.starts_with("/workRequests/"))
        .count();
    assert_eq!(polls, 2, "{log:?}");

    // a source changed since its tag was read: the copy fails and creates nothing
    std::fs::write(inbox.join("A 1.csv"), b"changed").unwrap();
    let err = to
        .copy_from(
            &from,
            CopySource {
                location: LOCATION,
                name: "A 1.csv",
                size,
                etag: etag.as_deref(),
            },
            "testns/archive",
            "B.csv",
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("IfMatchFailed"), "{err}");
    assert!(!archive.join("B.csv").exists());
}
