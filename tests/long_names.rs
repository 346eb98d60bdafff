//! Any name the target takes moves (issue 20, point 7): ferry's temporary and spool names
//! add only a few bytes. A 250-byte name is put to a local directory, an FTP server
//! (libunftp) and an SFTP server (OpenSSH), byte for byte and without a temporary file left;
//! a 1,024-byte key (S3's and OCI's longest) to OCI (the signature-checking test server),
//! and to S3 (s3s-fs) whole, where the test server's own storage stops it (see below). A put's temporary name used to be the name plus 48 bytes: 'File name too
//! long' from 208 bytes on. A key S3 refuses (1,025 bytes: `KeyTooLongError`) is
//! [`ConnectorError::NameRefused`] with S3's reason, which a flow's loop turns into a
//! `skipped` event (tests/target_names.rs).

#![allow(clippy::unwrap_used)]

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

/// A 250-byte file name.
fn name_250() -> String {
    let n = format!("IN_{}.csv", "n".repeat(243));
    assert_eq!(n.len(), 250);
    n
}

/// A 1,024-byte object key: folders of 180 bytes (each a directory on the test servers'
/// disks, which take 255 bytes a name, s3s-fs's temporary names included) and a file name.
fn key_1024() -> String {
    let folder = "f".repeat(180);
    let head = format!("{folder}/{folder}/{folder}/{folder}/{folder}/");
    let key = format!("{head}{}.csv", "k".repeat(1024 - head.len() - 4));
    assert_eq!(key.len(), 1024);
    key
}

/// Puts `name` at `location`, reads it back, finds it listed.
async fn moves(kind: &str, store: &FileStore, location: &str, name: &str) {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let payload: Vec<u8> = (0..70_000u32).map(|i| (i * 13 % 251) as u8).collect();
    std::fs::write(&src, &payload).unwrap();
    assert_eq!(
        store.put(location, name, &src).await.unwrap(),
        payload.len() as u64,
        "{kind}"
    );
    let back = dir.path().join("back");
    assert_eq!(
        store.get(location, name, &back).await.unwrap(),
        payload.len() as u64,
        "{kind}"
    );
    assert!(std::fs::read(&back).unwrap() == payload, "{kind}");
}

fn no_temporaries(kind: &str, dir: &std::path::Path) {
    let left: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".ferry-tmp-"))
        .collect();
    assert!(left.is_empty(), "{kind}: {left:?}");
}

#[tokio::test]
async fn a_250_byte_name_moves_to_a_local_directory() {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("out")).unwrap();
    let store = FileStore::Local(
        LocalStore::new(&LocalSpec {
            root: root.path().display().to_string(),
            create_dirs: false,
            temp_max_age: None,
        })
        .unwrap(),
    );
    moves("local", &store, "out", &name_250()).await;
    assert!(root.path().join("out").join(name_250()).is_file());
    no_temporaries("local", &root.path().join("out"));
    // one byte past what the file system takes: refused, with its reason
    let src = root.path().join("src");
    std::fs::write(&src, b"x").unwrap();
    let e = store.put("out", &"n".repeat(256), &src).await.unwrap_err();
    assert!(
        matches!(&e, ConnectorError::NameRefused { reason } if reason == "File name too long (os error 36)"),
        "{e:?}"
    );
    no_temporaries("local", &root.path().join("out"));
}

#[tokio::test]
async fn a_250_byte_name_moves_to_an_ftp_server() {
    let server = ftp_server::FtpServer::start(None).await;
    std::fs::create_dir_all(server.path("in")).unwrap();
    let store = server.store(None);
    moves("ftp", &store, "/in", &name_250()).await;
    assert!(server.path("in").join(name_250()).is_file());
    // the test server (libunftp) answers a name over 255 bytes with `550`
    refuses_300_bytes("ftp", &store, "/in", "answered '550").await;
    no_temporaries("ftp", &server.path("in"));
    let names: Vec<_> = std::fs::read_dir(server.path("in")).unwrap().collect();
    assert_eq!(names.len(), 1, "{names:?}");
}

#[tokio::test]
async fn a_250_byte_name_moves_to_an_sftp_server() {
    let Some(server) = sftp_server::SftpServer::start().await else {
        return;
    };
    std::fs::create_dir_all(server.path("in")).unwrap();
    let spec: ConnectionSpec = serde_json::from_value(server.key_spec()).unwrap();
    let Connector::Files(store) = spec.connect("dacs_sftp").unwrap() else {
        panic!("not a file store")
    };
    moves("sftp", &store, &server.location("in"), &name_250()).await;
    assert_eq!(server.names("in"), [name_250()]);
    // OpenSSH answers a rename to a name over 255 bytes with `BadMessage`: for a name no
    // file system takes, a refused name (a `skipped` event in a loop); no temporary file is left
    refuses_300_bytes("sftp", &store, &server.location("in"), "(BadMessage)").await;
    assert_eq!(server.names("in"), [name_250()]);
}

/// A put of a 300-byte name — longer than any POSIX file system takes — is a refused name
/// whose reason is the server's own answer (`answer`) and says how long the name was.
async fn refuses_300_bytes(kind: &str, store: &FileStore, location: &str, answer: &str) {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::write(&src, b"x").unwrap();
    match store.put(location, &"n".repeat(300), &src).await {
        Err(ConnectorError::NameRefused { reason }) => {
            assert!(reason.contains(answer), "{kind}: {reason}");
            assert!(
                reason.ends_with("(a name of 300 bytes: a file system takes at most 255)"),
                "{kind}: {reason}"
            );
        }
        other => panic!("{kind}: {other:?}"),
    }
}

fn s3_store(server: &s3_server::S3Server) -> FileStore {
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
    FileStore::S3(
        S3Store::with_secrets(
            &spec,
            Secret::new(s3_server::ACCESS_KEY.into()),
            Secret::new(s3_server::SECRET_KEY.into()),
        )
        .unwrap(),
    )
}

/// S3: a 1,024-byte key reaches the server whole and passes S3's own check of the key
/// (s3s refuses keys over 1,024 bytes as S3 does); the test server then cannot store it, as
/// s3s-fs names a metadata file after the whole key (`InternalError`, not a refusal of the
/// name). A 150-byte key moves. A 1,025-byte key is S3's `KeyTooLongError`: a refused name.
#[tokio::test]
async fn s3_keys_reach_the_server_whole_and_a_key_over_1024_bytes_is_a_refused_name() {
    let server = s3_server::S3Server::start(&["bucket"]).await;
    let store = s3_store(&server);
    let key_150 = format!("{}/{}.csv", "f".repeat(100), "k".repeat(45));
    assert_eq!(key_150.len(), 150);
    moves("s3", &store, "bucket", &key_150).await;
    assert!(server.bucket_dir("bucket").join(&key_150).is_file());
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::write(&src, b"x").unwrap();
    let e = store.put("bucket", &key_1024(), &src).await.unwrap_err();
    match &e {
        ConnectorError::Protocol(text) => assert!(text.ends_with(": InternalError"), "{text}"),
        other => panic!("not the test server's storage error: {other:?}"),
    }
    let longer = format!("{}x", key_1024());
    let e = store.put("bucket", &longer, &src).await.unwrap_err();
    match &e {
        ConnectorError::NameRefused { reason } => {
            assert!(reason.contains("KeyTooLongError"), "{reason}")
        }
        other => panic!("not a refused name: {other:?}"),
    }
}

#[tokio::test]
async fn a_1024_byte_key_moves_to_oci_object_storage() {
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
    let location = format!("{}/bucket", oci_server::NAMESPACE);
    moves("oci", &store, &location, &key_1024()).await;
    assert!(server.bucket_path("bucket").join(key_1024()).is_file());
}
