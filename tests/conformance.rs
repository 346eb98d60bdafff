//! One conformance suite, run against every kind of file store: the local directory, FTP
//! (libunftp), SFTP (OpenSSH's sshd), S3 (s3s-fs) and OCI Object Storage (the
//! signature-verifying test server).
//! Whatever the kind, a flow sees the same behaviour. The object stores (local, S3, OCI) also
//! take folders: a location `bucket:folder/sub` and names holding `/` ([`folders`]).

#![allow(clippy::unwrap_used)] // tests unwrap: a panic is the failure report

#[path = "support/ftp_server.rs"]
mod ftp_server;
#[path = "support/oci_server.rs"]
mod oci_server;
#[path = "support/s3_server.rs"]
mod s3_server;
#[path = "support/sftp_server.rs"]
mod sftp_server;

use ferry::connectors::local::{LocalSpec, LocalStore};
use ferry::connectors::s3::{S3Spec, S3Store};
use ferry::connectors::{ConnectionSpec, Connector, ConnectorError, FileStore, Secret};

/// The behaviour every file store must have, at `location` (which exists and is empty).
async fn conformance(kind: &str, store: &FileStore, location: &str) {
    let dir = tempfile::tempdir().unwrap();
    let one = dir.path().join("one");
    let two = dir.path().join("two");
    let payload: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&one, &payload).unwrap();
    std::fs::write(&two, b"a,b\r\n1,2\n").unwrap();

    // put returns the size once the whole file is there
    assert_eq!(
        store.put(location, "IN_2.csv", &two).await.unwrap(),
        9,
        "{kind}"
    );
    assert_eq!(
        store.put(location, "IN_1.csv", &one).await.unwrap(),
        payload.len() as u64,
        "{kind}"
    );
    assert_eq!(
        store.put(location, "OTHER.csv", &two).await.unwrap(),
        9,
        "{kind}"
    );

    // list: the prefix filters, names are sorted, sizes are right
    let listed: Vec<(String, u64)> = store
        .list(location, "IN_")
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.name, e.size))
        .collect();
    assert_eq!(
        listed,
        vec![
            ("IN_1.csv".to_string(), payload.len() as u64),
            ("IN_2.csv".to_string(), 9)
        ],
        "{kind}"
    );

    // get is byte-exact
    let got = dir.path().join("got");
    assert_eq!(
        store.get(location, "IN_1.csv", &got).await.unwrap(),
        payload.len() as u64,
        "{kind}"
    );
    assert_eq!(std::fs::read(&got).unwrap(), payload, "{kind}");

    // a put over an existing name replaces it
    store.put(location, "IN_2.csv", &one).await.unwrap();
    store.get(location, "IN_2.csv", &got).await.unwrap();
    assert_eq!(std::fs::read(&got).unwrap(), payload, "{kind}: replaced");

    // rename: the new name holds the bytes, the old name is gone, the listing follows
    store
        .rename(location, "IN_1.csv", "Sent-IN_1.csv")
        .await
        .unwrap();
    let names: Vec<String> = store
        .list(location, "")
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, ["IN_2.csv", "OTHER.csv", "Sent-IN_1.csv"], "{kind}");
    store.get(location, "Sent-IN_1.csv", &got).await.unwrap();
    assert_eq!(std::fs::read(&got).unwrap(), payload, "{kind}: renamed");

    // a missing file is NotFound for get and rename
    let err = store.get(location, "nope.csv", &got).await.unwrap_err();
    assert!(
        matches!(err, ConnectorError::NotFound(_)),
        "{kind}: get missing: {err}"
    );
    let err = store
        .rename(location, "nope.csv", "x.csv")
        .await
        .unwrap_err();
    assert!(
        matches!(err, ConnectorError::NotFound(_)),
        "{kind}: rename missing: {err}"
    );

    // hostile names never reach the store (object stores take `/` between segments; file
    // servers take no `/` at all)
    let object_store = matches!(
        store,
        FileStore::Local(_) | FileStore::S3(_) | FileStore::Oci(_)
    );
    let mut hostile = vec![
        "../escape.csv",
        "x\n.csv",
        "..",
        "a//b.csv",
        "/a.csv",
        "a/../b.csv",
        "a/",
    ];
    if !object_store {
        hostile.push("a/b.csv");
    }
    for bad in hostile {
        let err = store.put(location, bad, &two).await.unwrap_err();
        assert!(
            matches!(err, ConnectorError::HostileName { .. }),
            "{kind}: {bad:?}: {err}"
        );
    }
    let names: Vec<String> = store
        .list(location, "")
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(
        names,
        ["IN_2.csv", "OTHER.csv", "Sent-IN_1.csv"],
        "{kind}: nothing else appeared"
    );
}

/// Folders inside a bucket, on an object store whose `location` (a bucket) exists and is
/// empty: the whole suite inside a folder, names with `/`, listings relative to the folder,
/// a move between folders.
async fn folders(kind: &str, store: &FileStore, location: &str) {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::write(&src, b"<x/>").unwrap();
    let got = dir.path().join("got");
    let names = |listing: Vec<ferry::connectors::Entry>| -> Vec<String> {
        listing.into_iter().map(|e| e.name).collect()
    };

    // the whole suite inside a folder two levels down
    let folder = format!("{location}:in/2024");
    conformance(kind, store, &folder).await;
    // ... whose objects are the bucket's `in/2024/…`
    assert_eq!(
        store.get(location, "in/2024/IN_2.csv", &got).await.unwrap(),
        300_000,
        "{kind}"
    );
    // a name with `/` at the bucket lands in the folder, listed relative to it
    store.put(location, "in/A.xml", &src).await.unwrap();
    store
        .put(&format!("{location}:in"), "B.xml", &src)
        .await
        .unwrap();
    assert_eq!(
        names(store.list(&format!("{location}:in/"), "").await.unwrap()),
        ["A.xml", "B.xml"],
        "{kind}: the folder lists its own files, not its subfolder's"
    );
    assert_eq!(
        names(store.list(&format!("{location}:in"), "B").await.unwrap()),
        ["B.xml"],
        "{kind}: the prefix is relative to the folder"
    );
    assert!(
        names(store.list(location, "").await.unwrap()).is_empty(),
        "{kind}: the bucket's top level holds no file"
    );
    // a move between folders is a rename of names with `/`
    store
        .rename(location, "in/A.xml", "done/A.xml")
        .await
        .unwrap();
    assert_eq!(
        names(store.list(&format!("{location}:done"), "").await.unwrap()),
        ["A.xml"],
        "{kind}"
    );
    store
        .get(&format!("{location}:done"), "A.xml", &got)
        .await
        .unwrap();
    assert_eq!(std::fs::read(&got).unwrap(), b"<x/>", "{kind}");
    assert_eq!(
        names(store.list(&format!("{location}:in"), "").await.unwrap()),
        ["B.xml"],
        "{kind}"
    );
    // a folder that climbs out is refused before any request
    for bad in [":../x", ":a//b", ":a/./b"] {
        let err = store
            .list(&format!("{location}{bad}"), "")
            .await
            .unwrap_err();
        assert!(
            matches!(err, ConnectorError::Config(_)),
            "{kind}: {bad}: {err}"
        );
    }
}

#[tokio::test]
async fn local_directories_conform() {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("ns/bucket")).unwrap();
    let store = FileStore::Local(
        LocalStore::new(&LocalSpec {
            root: root.path().display().to_string(),
            create_dirs: false,
            temp_max_age: None,
        })
        .unwrap(),
    );
    conformance("local", &store, "ns/bucket").await;
}

#[tokio::test]
async fn local_directories_have_folders() {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("ns/bucket")).unwrap();
    let store = FileStore::Local(
        LocalStore::new(&LocalSpec {
            root: root.path().display().to_string(),
            create_dirs: true,
            temp_max_age: None,
        })
        .unwrap(),
    );
    folders("local", &store, "ns/bucket").await;
    assert!(root.path().join("ns/bucket/done/A.xml").is_file());
}

#[tokio::test]
async fn ftp_servers_conform() {
    let server = ftp_server::FtpServer::start(None).await;
    std::fs::create_dir_all(server.path("in")).unwrap();
    let store = server.store(None);
    conformance("ftp", &store, "/in").await;
}

#[tokio::test]
async fn sftp_servers_conform() {
    let Some(server) = sftp_server::SftpServer::start().await else {
        return;
    };
    std::fs::create_dir_all(server.path("in")).unwrap();
    let spec: ConnectionSpec = serde_json::from_value(server.key_spec()).unwrap();
    let Connector::Files(store) = spec.connect("dacs_sftp").unwrap() else {
        panic!("not a file store")
    };
    conformance("sftp", &store, &server.location("in")).await;
    // Nothing but the files the suite left: no temporary uploads.
    assert_eq!(
        server.names("in"),
        ["IN_2.csv", "OTHER.csv", "Sent-IN_1.csv"]
    );
}

#[tokio::test]
async fn s3_object_storage_conforms() {
    let server = s3_server::S3Server::start(&["bucket"]).await;
    let spec = S3Spec {
        endpoint: Some(server.endpoint()),
        region: "us-east-1".into(),
        access_key_id_env: "FERRY_TEST_UNUSED".into(),
        secret_access_key_env: "FERRY_TEST_UNUSED".into(),
        path_style: true,
        allow_http: true,
        timeout_secs: Some(10),
        unsigned_payload: None,
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
    conformance("s3", &store, "ns/bucket").await;
}

#[tokio::test]
async fn s3_object_storage_has_folders() {
    let server = s3_server::S3Server::start(&["bucket"]).await;
    let spec = S3Spec {
        endpoint: Some(server.endpoint()),
        region: "us-east-1".into(),
        access_key_id_env: "FERRY_TEST_UNUSED".into(),
        secret_access_key_env: "FERRY_TEST_UNUSED".into(),
        path_style: true,
        allow_http: true,
        timeout_secs: Some(10),
        unsigned_payload: None,
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
    folders("s3", &store, "bucket").await;
}

#[tokio::test]
async fn oci_object_storage_conforms() {
    let server = oci_server::OciServer::start_with_test_key(2).await;
    std::fs::create_dir_all(server.bucket_path("bucket")).unwrap();
    let spec: ConnectionSpec = serde_json::from_value(oci_server::connection_spec(
        &server.endpoint(),
        "test_key_pkcs1.pem",
    ))
    .unwrap();
    let Connector::Files(store) = spec.connect("os").unwrap() else {
        panic!("not a file store")
    };
    conformance("oci", &store, &format!("{}/bucket", oci_server::NAMESPACE)).await;
}

#[tokio::test]
async fn oci_object_storage_has_folders() {
    let server = oci_server::OciServer::start_with_test_key(2).await;
    std::fs::create_dir_all(server.bucket_path("bucket")).unwrap();
    let spec: ConnectionSpec = serde_json::from_value(oci_server::connection_spec(
        &server.endpoint(),
        "test_key_pkcs1.pem",
    ))
    .unwrap();
    let Connector::Files(store) = spec.connect("os").unwrap() else {
        panic!("not a file store")
    };
    folders("oci", &store, &format!("{}/bucket", oci_server::NAMESPACE)).await;
    assert!(server.bucket_path("bucket").join("done/A.xml").is_file());
}
