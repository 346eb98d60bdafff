//! Nothing left behind at targets (issue 9): the first put to a location deletes the
//! temporary files (`.ferry-tmp-*`) that interrupted puts left there longer ago than the
//! connection's `temp_max_age`, and keeps younger ones and everything else; a location is
//! swept once per connection; a sweep that fails never fails the put. Against a local
//! directory, a real FTP server (libunftp) and a real SFTP server (OpenSSH's sshd).
#![allow(clippy::unwrap_used)]

#[path = "support/ftp_server.rs"]
mod ftp_server;
#[path = "support/s3_server.rs"]
mod s3_server;
#[path = "support/sftp_server.rs"]
mod sftp_server;

use std::path::Path;
use std::time::{Duration, SystemTime};

use ferry::connectors::s3::{S3Spec, S3Store};
use ferry::connectors::{ConnectionSpec, Connector, FileStore, Secret};
use serde_json::json;

const STALE: &str = ".ferry-tmp-0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b-OLD.csv";
const FRESH: &str = ".ferry-tmp-0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5c-NEW.csv";
/// Not ferry's: never touched, however old.
const FOREIGN: &str = ".other-tool-tmp-OLD.csv";

fn connect(spec: serde_json::Value) -> FileStore {
    let spec: ConnectionSpec = serde_json::from_value(spec).unwrap();
    match spec.connect("target").unwrap() {
        Connector::Files(store) => store,
        other => panic!("not a file store: {other:?}"),
    }
}

/// Writes `name` in `dir`, last modified `age` ago.
fn leave(dir: &Path, name: &str, age: Duration) {
    let path = dir.join(name);
    std::fs::write(&path, b"partial upload").unwrap();
    let file = std::fs::File::options().write(true).open(&path).unwrap();
    file.set_modified(SystemTime::now() - age).unwrap();
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

const TWO_HOURS: Duration = Duration::from_secs(2 * 3600);

/// The common scenario: `dir` is where `location` lands on disk; `open(temp_max_age)` opens
/// a new connection.
async fn stale_temporaries_go_and_fresh_ones_stay(
    open: impl Fn(Option<&str>) -> FileStore,
    dir: &Path,
    location: &str,
) {
    std::fs::create_dir_all(dir).unwrap();
    leave(dir, STALE, TWO_HOURS);
    leave(dir, FRESH, Duration::from_secs(60));
    leave(dir, FOREIGN, TWO_HOURS);
    let src_dir = tempfile::tempdir().unwrap();
    let src = src_dir.path().join("src.csv");
    std::fs::write(&src, b"a,b\n1,2\n").unwrap();

    let store = open(None);
    store.put(location, "A_1.csv", &src).await.unwrap();
    assert_eq!(names(dir), [FRESH, FOREIGN, "A_1.csv"]);
    assert_eq!(std::fs::read(dir.join("A_1.csv")).unwrap(), b"a,b\n1,2\n");

    // Swept once per location and connection: a leftover that turns up later stays until
    // the next connection (the next run) puts there.
    leave(dir, STALE, TWO_HOURS);
    store.put(location, "A_2.csv", &src).await.unwrap();
    assert!(dir.join(STALE).exists(), "swept twice");
    open(None).put(location, "A_3.csv", &src).await.unwrap();
    assert!(
        !dir.join(STALE).exists(),
        "the next connection did not sweep"
    );

    // A longer temp_max_age keeps a 2-hour-old leftover.
    leave(dir, STALE, TWO_HOURS);
    open(Some("3h"))
        .put(location, "A_4.csv", &src)
        .await
        .unwrap();
    assert!(dir.join(STALE).exists(), "younger than temp_max_age");
}

#[tokio::test]
async fn a_local_put_sweeps_stale_temporaries() {
    let root = tempfile::tempdir().unwrap();
    let open = |age: Option<&str>| {
        connect(json!({
            "kind": "local",
            "root": root.path().display().to_string(),
            "temp_max_age": age,
        }))
    };
    stale_temporaries_go_and_fresh_ones_stay(open, &root.path().join("ns/out"), "ns/out").await;
}

#[tokio::test]
async fn an_ftp_put_sweeps_stale_temporaries() {
    let server = ftp_server::FtpServer::start(None).await;
    let open = |age: Option<&str>| server.store(age);
    stale_temporaries_go_and_fresh_ones_stay(open, &server.path("out"), "/out").await;
}

#[tokio::test]
async fn an_sftp_put_sweeps_stale_temporaries() {
    let Some(server) = sftp_server::SftpServer::start().await else {
        return;
    };
    let dir = server.path("out");
    let location = server.location("out");
    let open = |age: Option<&str>| {
        let mut spec = server.key_spec();
        spec["temp_max_age"] = json!(age);
        connect(spec)
    };
    stale_temporaries_go_and_fresh_ones_stay(open, &dir, &location).await;
}

#[tokio::test]
async fn an_s3_put_aborts_stale_multipart_uploads_of_keys_it_could_have_written() {
    use object_store::multipart::MultipartStore as _;
    let server = s3_server::S3Server::start(&["bucket"]).await;
    // Unfinished uploads, as a killed put leaves them, made with object_store directly.
    let raw = object_store::aws::AmazonS3Builder::new()
        .with_endpoint(server.endpoint())
        .with_allow_http(true)
        .with_bucket_name("bucket")
        .with_region("us-east-1")
        .with_access_key_id(s3_server::ACCESS_KEY)
        .with_secret_access_key(s3_server::SECRET_KEY)
        .build()
        .unwrap();
    for key in ["OLD.csv", "NEW.csv", "dir/OLD.csv", "dir/NEW.csv"] {
        raw.create_multipart(&object_store::path::Path::from(key))
            .await
            .unwrap();
    }
    server.backdate_upload("bucket", "OLD.csv", TWO_HOURS);
    server.backdate_upload("bucket", "dir/OLD.csv", TWO_HOURS);
    assert_eq!(server.uploads("bucket").len(), 4);

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
    let src_dir = tempfile::tempdir().unwrap();
    let src = src_dir.path().join("src.csv");
    std::fs::write(&src, b"a,b\n").unwrap();
    store.put("ns/bucket", "A_1.csv", &src).await.unwrap();
    assert_eq!(
        std::fs::read(server.bucket_dir("bucket").join("A_1.csv")).unwrap(),
        b"a,b\n"
    );
    // The stale uploads are aborted, top-level and in a folder (a put to `bucket:dir` writes
    // `dir/…` keys); the fresh ones stay.
    let left: Vec<String> = server
        .uploads("bucket")
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(left, ["NEW.csv", "dir/NEW.csv"]);
}

#[tokio::test]
async fn a_sweep_that_fails_does_not_fail_the_put() {
    // The location cannot be listed (no read permission), but written to and renamed in.
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("out");
    std::fs::create_dir_all(&dir).unwrap();
    leave(&dir, STALE, TWO_HOURS);
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o300)).unwrap();
    if std::fs::read_dir(&dir).is_ok() {
        // Running as root: permissions do not stop us; nothing to test here.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        eprintln!("skipped: directory permissions do not apply to this user");
        return;
    }
    let src = root.path().join("src.csv");
    std::fs::write(&src, b"x").unwrap();
    let store = connect(json!({ "kind": "local", "root": root.path().display().to_string() }));
    let put = store.put("out", "A_1.csv", &src).await;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    put.unwrap();
    assert_eq!(std::fs::read(dir.join("A_1.csv")).unwrap(), b"x");
    assert!(dir.join(STALE).exists());
}

#[test]
fn temp_max_age_is_checked() {
    let root = tempfile::tempdir().unwrap();
    for (age, needle) in [
        ("soon", "temp_max_age 'soon' is not a duration"),
        ("5s", "temp_max_age '5s' is shorter than 1 minute"),
    ] {
        let spec: ConnectionSpec = serde_json::from_value(json!({
            "kind": "local",
            "root": root.path().display().to_string(),
            "temp_max_age": age,
        }))
        .unwrap();
        let err = spec.connect("target").unwrap_err().to_string();
        assert!(err.contains(needle), "{err}");
    }
}
