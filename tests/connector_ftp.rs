//! Tests for the FTP / FTPS file store (`ferry::connectors::ftp`) against a real FTP server
//! (libunftp over a temporary directory, embedded in the test, `support/ftp_server.rs`),
//! with explicit TLS from a throwaway CA, and against a scripted responder for hostile
//! listings and the exact command sequence.
#![allow(clippy::unwrap_used)]

#[path = "support/ftp_server.rs"]
mod ftp_server;
#[path = "support/process.rs"]
mod process;

use std::time::{Duration, Instant};

use ferry::connectors::ftp::{FtpSecurity, FtpSpec, FtpStore};
use ferry::connectors::{ConnectionSpec, Connector, ConnectorError, FileStore, Secret};
use ftp_server::{FakeFtp, FtpServer, PASSWORD, Script, TestPki, USER, binary_file};
use process::rerun_with_env;

fn spec(port: u16) -> FtpSpec {
    FtpSpec {
        host: "127.0.0.1".into(),
        port: Some(port),
        username: USER.into(),
        password_env: "FERRY_TEST_FTP_UNUSED_PW".into(),
        security: FtpSecurity::None,
        ca_file: None,
        timeout_secs: Some(5),
        passive: true,
        temp_max_age: None,
    }
}

fn store_with(spec: &FtpSpec, password: &str) -> FileStore {
    FileStore::Ftp(FtpStore::with_password(spec, Secret::new(password.into())).unwrap())
}

fn store(spec: &FtpSpec) -> FileStore {
    store_with(spec, PASSWORD)
}

fn names(entries: &[ferry::connectors::Entry]) -> Vec<&str> {
    entries.iter().map(|e| e.name.as_str()).collect()
}

/// A port nothing listens on.
async fn dead_port() -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().port()
}

#[tokio::test]
async fn list_get_put_rename_round_trip_is_byte_exact() {
    let server = FtpServer::start(None).await;
    std::fs::create_dir_all(server.path("in/A_subdir")).unwrap();
    std::fs::write(server.path("in/A_2.csv"), b"two\r\n").unwrap();
    std::fs::write(server.path("in/A_1.csv"), b"one\n").unwrap();
    std::fs::write(server.path("in/B_1.csv"), b"b").unwrap();
    std::fs::write(server.path("in/.ferry-tmp-x-A_9.csv"), b"partial").unwrap();
    let s = store(&spec(server.port));

    // Listing: prefix, sorted, sizes, no directories, no temporaries.
    let entries = s.list("/in", "A_").await.unwrap();
    assert_eq!(names(&entries), ["A_1.csv", "A_2.csv"]);
    assert_eq!(entries[0].size, 4);
    assert_eq!(entries[1].size, 5);
    assert_eq!(s.list("/in", "").await.unwrap().len(), 3);

    // Upload 3 MiB holding every byte value and CR/LF mixes; the server holds it exactly.
    let local = tempfile::tempdir().unwrap();
    let (src, bytes) = binary_file(local.path(), "src.bin", 3 * 1024 * 1024 + 17);
    let n = s.put("/in", "A_big.bin", &src).await.unwrap();
    assert_eq!(n, bytes.len() as u64);
    assert!(std::fs::read(server.path("in/A_big.bin")).unwrap() == bytes);
    assert!(
        !server
            .names("in")
            .iter()
            .any(|n| n.starts_with(".ferry-tmp-") && n.ends_with("A_big.bin")),
        "a temporary file was left behind: {:?}",
        server.names("in")
    );
    let listed = s.list("/in", "A_big").await.unwrap();
    assert_eq!(listed[0].size, bytes.len() as u64);

    // Download it back, and a file the server got by other means.
    let dest = local.path().join("back.bin");
    assert_eq!(
        s.get("/in", "A_big.bin", &dest).await.unwrap(),
        bytes.len() as u64
    );
    assert!(std::fs::read(&dest).unwrap() == bytes);
    let (_, seeded) = binary_file(&server.path("in"), "seeded.bin", 1024 * 1024);
    let dest2 = local.path().join("seeded.bin");
    s.get("in", "seeded.bin", &dest2).await.unwrap();
    assert!(std::fs::read(&dest2).unwrap() == seeded);

    // Replacing an existing file.
    std::fs::write(&src, b"new content\n").unwrap();
    s.put("/in", "A_2.csv", &src).await.unwrap();
    assert_eq!(
        std::fs::read(server.path("in/A_2.csv")).unwrap(),
        b"new content\n"
    );

    // Rename.
    s.rename("/in", "A_1.csv", "Sent-A_1.csv").await.unwrap();
    assert!(server.path("in/Sent-A_1.csv").exists());
    assert!(!server.path("in/A_1.csv").exists());

    // The login directory (empty location) is the server's root here.
    assert_eq!(names(&s.list("", "B_").await.unwrap()), Vec::<&str>::new());
    std::fs::write(server.path("top.txt"), b"t").unwrap();
    assert_eq!(names(&s.list("/", "top").await.unwrap()), ["top.txt"]);

    let said = s.check().await.unwrap();
    assert!(
        said.contains(&format!("127.0.0.1:{}", server.port)),
        "{said}"
    );
    assert!(said.contains("plain FTP"), "{said}");
}

#[tokio::test]
async fn active_mode_transfers_too() {
    let server = FtpServer::start(None).await;
    std::fs::create_dir_all(server.path("out")).unwrap();
    let mut sp = spec(server.port);
    sp.passive = false;
    let s = store(&sp);
    let local = tempfile::tempdir().unwrap();
    let (src, bytes) = binary_file(local.path(), "a.bin", 200_000);
    s.put("/out", "a.bin", &src).await.unwrap();
    let dest = local.path().join("b.bin");
    s.get("/out", "a.bin", &dest).await.unwrap();
    assert!(std::fs::read(&dest).unwrap() == bytes);
    assert_eq!(names(&s.list("/out", "").await.unwrap()), ["a.bin"]);
}

#[tokio::test]
async fn a_failed_put_leaves_no_file_behind() {
    let server = FtpServer::start(None).await;
    // The final name is taken by a directory: the rename into place must fail.
    std::fs::create_dir_all(server.path("out/report.csv")).unwrap();
    let local = tempfile::tempdir().unwrap();
    let (src, _) = binary_file(local.path(), "r.csv", 10_000);
    let err = store(&spec(server.port))
        .put("/out", "report.csv", &src)
        .await
        .unwrap_err();
    assert!(matches!(err, ConnectorError::Protocol(_)), "{err}");
    assert!(err.to_string().contains("report.csv"), "{err}");
    assert_eq!(server.names("out"), ["report.csv"]);
    assert!(server.path("out/report.csv").is_dir());
}

#[tokio::test]
async fn a_wrong_password_is_an_auth_error_without_the_password() {
    let server = FtpServer::start(None).await;
    let err = store_with(&spec(server.port), "not-the-password")
        .list("/", "")
        .await
        .unwrap_err();
    assert!(matches!(err, ConnectorError::Auth(_)), "{err}");
    let msg = err.to_string();
    assert!(msg.contains(USER), "{msg}");
    assert!(msg.contains(&format!("127.0.0.1:{}", server.port)), "{msg}");
    assert!(!msg.contains("not-the-password"), "{msg}");
}

#[tokio::test]
async fn a_dead_server_is_a_connect_error_naming_host_and_port() {
    let port = dead_port().await;
    let err = store(&spec(port)).list("/", "").await.unwrap_err();
    assert!(matches!(err, ConnectorError::Connect(_)), "{err}");
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );
}

#[tokio::test]
async fn a_silent_server_times_out() {
    // Accepts connections but never greets.
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let keep = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((c, _)) = l.accept().await {
            held.push(c);
        }
    });
    let mut sp = spec(port);
    sp.timeout_secs = Some(1);
    let started = Instant::now();
    let err = store(&sp).list("/", "").await.unwrap_err();
    assert!(matches!(err, ConnectorError::Timeout(_)), "{err}");
    assert!(err.to_string().contains("greeting"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(4));
    keep.abort();
}

#[tokio::test]
async fn missing_directories_and_files_are_not_found() {
    let server = FtpServer::start(None).await;
    std::fs::create_dir_all(server.path("in")).unwrap();
    let s = store(&spec(server.port));
    let local = tempfile::tempdir().unwrap();
    let (src, _) = binary_file(local.path(), "x.bin", 10);

    let err = s.list("/nowhere", "").await.unwrap_err();
    assert!(matches!(err, ConnectorError::NotFound(_)), "{err}");
    assert!(err.to_string().contains("/nowhere"), "{err}");

    let err = s.put("/nowhere", "x.bin", &src).await.unwrap_err();
    assert!(matches!(err, ConnectorError::NotFound(_)), "{err}");

    let dest = local.path().join("got");
    let err = s.get("/in", "missing.csv", &dest).await.unwrap_err();
    assert!(matches!(err, ConnectorError::NotFound(_)), "{err}");
    assert!(err.to_string().contains("missing.csv"), "{err}");
    assert!(!dest.exists(), "a failed get leaves no partial destination");

    let err = s.rename("/in", "missing.csv", "x.csv").await.unwrap_err();
    assert!(matches!(err, ConnectorError::NotFound(_)), "{err}");

    // Locations that climb out are refused before anything is sent.
    let err = s.list("/in/../..", "").await.unwrap_err();
    assert!(matches!(err, ConnectorError::Config(_)), "{err}");
}

#[tokio::test]
async fn a_real_server_listing_a_control_character_name_sets_it_apart() {
    let server = FtpServer::start(None).await;
    std::fs::create_dir_all(server.path("in")).unwrap();
    std::fs::write(server.path("in/ok.csv"), b"1").unwrap();
    std::fs::write(server.path("in/bad\u{1b}[31m.csv"), b"1").unwrap();
    let s = store(&spec(server.port));
    // the odd name is set apart with its reason, to be left where it is
    let (good, skipped) = s.list_checked("/in", "").await.unwrap();
    assert_eq!(names(&good), ["ok.csv"]);
    assert_eq!(
        skipped,
        [(
            "bad\u{1b}[31m.csv".to_string(),
            "it contains a control character".to_string()
        )]
    );
    assert_eq!(names(&s.list("/in", "").await.unwrap()), ["ok.csv"]);
    // Entries the caller did not ask for are not its business.
    assert_eq!(names(&s.list("/in", "ok").await.unwrap()), ["ok.csv"]);
}

#[tokio::test]
async fn hostile_names_from_a_scripted_server_are_set_apart_and_never_followed() {
    for (hostile, shown) in [
        ("../x.csv", "../x.csv"),
        ("/etc/passwd", "/etc/passwd"),
        ("sub/x.csv", "sub/x.csv"),
        ("a\\b.csv", "a\\\\b.csv"),
        ("..", ".."),
        ("x\u{7}.csv", "x\\u{7}.csv"),
    ] {
        let mlsd = format!(
            "type=cdir; /in\r\ntype=pdir; ..\r\ntype=file;size=3; ok.csv\r\ntype=file;size=3; {hostile}\r\n"
        );
        let fake = FakeFtp::start(Script {
            mlsd: Some(mlsd.into_bytes()),
            ..Script::default()
        })
        .await;
        let s = store(&spec(fake.addr.port()));
        let (good, skipped) = s.list_checked("/in", "").await.unwrap();
        assert_eq!(names(&good), ["ok.csv"], "{hostile:?}");
        assert_eq!(skipped.len(), 1, "{hostile:?}");
        assert_eq!(skipped[0].0, hostile);
        assert_eq!(skipped[0].0.escape_debug().to_string(), shown);
        let commands = fake.commands();
        assert!(
            !commands
                .iter()
                .any(|c| c.starts_with("RETR") || c.starts_with("SIZE") || c.contains("x.csv")),
            "{commands:?}"
        );
    }

    // The same through the NLST fallback.
    let fake = FakeFtp::start(Script {
        mlsd: None,
        nlst: b"ok.csv\r\n../../etc/shadow\r\n".to_vec(),
        ..Script::default()
    })
    .await;
    let (_, skipped) = store(&spec(fake.addr.port()))
        .list_checked("/in", "")
        .await
        .unwrap();
    assert_eq!(
        skipped,
        [(
            "../../etc/shadow".to_string(),
            "it contains a path separator".to_string()
        )]
    );
    assert!(
        !fake.commands().iter().any(|c| c.contains("shadow")),
        "{:?}",
        fake.commands()
    );
}

#[tokio::test]
async fn nlst_fallback_binary_mode_and_quit() {
    let fake = FakeFtp::start(Script {
        mlsd: None,
        nlst: b"b.csv\r\na.csv\nsubdir\r\n.\r\n..\r\nother.txt\r\n".to_vec(),
        sizes: [("a.csv".to_string(), 1), ("b.csv".to_string(), 22)]
            .into_iter()
            .collect(),
    })
    .await;
    let entries = store(&spec(fake.addr.port()))
        .list("/in/sub", "")
        .await
        .unwrap();
    assert_eq!(names(&entries), ["a.csv", "b.csv"]);
    assert_eq!(entries[1].size, 22);
    let commands = fake.commands();
    let pos = |c: &str| commands.iter().position(|x| x == c);
    assert_eq!(commands[0], format!("USER {USER}"));
    assert_eq!(commands[1], "PASS ***");
    assert_eq!(
        commands[2], "TYPE I",
        "binary mode right after login: {commands:?}"
    );
    assert!(
        pos("CWD /in/sub").unwrap() < pos("MLSD").unwrap(),
        "{commands:?}"
    );
    assert!(pos("MLSD").unwrap() < pos("NLST").unwrap(), "{commands:?}");
    assert_eq!(commands.last().unwrap(), "QUIT", "{commands:?}");
}

#[tokio::test]
async fn ftps_round_trip_with_a_custom_ca() {
    let pki = TestPki::new();
    let server = FtpServer::start(Some(&pki)).await;
    std::fs::create_dir_all(server.path("secure")).unwrap();
    let mut sp = spec(server.port);
    sp.security = FtpSecurity::ExplicitTls;
    sp.ca_file = Some(pki.ca_file.display().to_string());
    let s = store(&sp);

    let local = tempfile::tempdir().unwrap();
    let (src, bytes) = binary_file(local.path(), "s.bin", 2 * 1024 * 1024 + 3);
    s.put("/secure", "S_1.bin", &src).await.unwrap();
    assert!(std::fs::read(server.path("secure/S_1.bin")).unwrap() == bytes);
    let entries = s.list("/secure", "S_").await.unwrap();
    assert_eq!(names(&entries), ["S_1.bin"]);
    assert_eq!(entries[0].size, bytes.len() as u64);
    let dest = local.path().join("back.bin");
    s.get("/secure", "S_1.bin", &dest).await.unwrap();
    assert!(std::fs::read(&dest).unwrap() == bytes);
    s.rename("/secure", "S_1.bin", "Done-S_1.bin")
        .await
        .unwrap();
    assert_eq!(server.names("secure"), ["Done-S_1.bin"]);
    let said = s.check().await.unwrap();
    assert!(said.contains("explicit TLS"), "{said}");
}

#[tokio::test]
async fn ftps_refuses_a_server_it_does_not_trust() {
    let pki = TestPki::new();
    let server = FtpServer::start(Some(&pki)).await;
    let mut sp = spec(server.port);
    sp.security = FtpSecurity::ExplicitTls;
    // Another CA than the one that signed the server's certificate.
    let other = TestPki::new();
    sp.ca_file = Some(other.ca_file.display().to_string());
    let err = store(&sp).list("/", "").await.unwrap_err();
    assert!(matches!(err, ConnectorError::Connect(_)), "{err}");
    assert!(err.to_string().contains("TLS"), "{err}");
    assert!(
        err.to_string().to_lowercase().contains("certificate"),
        "{err}"
    );
}

#[tokio::test]
async fn ftps_against_a_plain_server_is_refused() {
    let pki = TestPki::new();
    let server = FtpServer::start(None).await;
    let mut sp = spec(server.port);
    sp.security = FtpSecurity::ExplicitTls;
    sp.ca_file = Some(pki.ca_file.display().to_string());
    let err = store(&sp).list("/", "").await.unwrap_err();
    assert!(matches!(err, ConnectorError::Protocol(_)), "{err}");
    assert!(err.to_string().contains("AUTH TLS"), "{err}");
}

#[test]
fn configuration_errors_are_clear() {
    let mut sp = spec(21);
    sp.ca_file = Some("/nonexistent/ca.pem".into());
    let err = FtpStore::with_password(&sp, Secret::new("x".into())).unwrap_err();
    assert!(err.to_string().contains("security is none"), "{err}");

    sp.security = FtpSecurity::ExplicitTls;
    let err = FtpStore::with_password(&sp, Secret::new("x".into())).unwrap_err();
    assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "not a certificate\n").unwrap();
    sp.ca_file = Some(empty.display().to_string());
    let err = FtpStore::with_password(&sp, Secret::new("x".into())).unwrap_err();
    assert!(err.to_string().contains("no PEM certificate"), "{err}");

    let mut sp = spec(21);
    sp.timeout_secs = Some(0);
    assert!(FtpStore::with_password(&sp, Secret::new("x".into())).is_err());

    // Line breaks would smuggle commands onto the control connection.
    let mut sp = spec(21);
    sp.username = "ferry\r\nDELE x".into();
    let err = FtpStore::with_password(&sp, Secret::new("x".into())).unwrap_err();
    assert!(err.to_string().contains("control character"), "{err}");
    let err = FtpStore::with_password(&spec(21), Secret::new("pw\nDELE x".into())).unwrap_err();
    assert!(err.to_string().contains("line break"), "{err}");
    assert!(!err.to_string().contains("DELE"), "{err}");

    // Through the connections-file model: kind `ftp`, the password from the environment.
    let conn: ConnectionSpec = serde_json::from_value(serde_json::json!({
        "kind": "ftp",
        "host": "${FERRY_TEST_FTP_UNSET_HOST:-127.0.0.1}",
        "username": "u",
        "password_env": "FERRY_TEST_FTP_UNSET_PW_41C7",
    }))
    .unwrap();
    assert_eq!(conn.kind(), "ftp");
    assert_eq!(conn.capability(), ferry::connectors::Capability::Files);
    let err = conn.connect("drop").unwrap_err();
    assert!(
        err.to_string().contains("FERRY_TEST_FTP_UNSET_PW_41C7"),
        "{err}"
    );
    let bad: Result<ConnectionSpec, _> = serde_json::from_value(serde_json::json!({
        "kind": "ftp", "host": "h", "username": "u", "password_env": "P", "passiv": true,
    }));
    assert!(bad.is_err());
}

/// Collects what the global tracing subscriber writes.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn the_password_never_reaches_the_logs_even_at_trace_level() {
    let captured = Captured::default();
    let writer = captured.clone();
    // Like the binary with FERRY_LOG=trace: `log` records (suppaftp's) are bridged in.
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("trace"))
        .with_writer(move || writer.clone())
        .try_init()
        .unwrap();
    let server = FtpServer::start(None).await;
    let s = store(&spec(server.port));
    s.list("/", "").await.unwrap();
    let wrong = "wrong-pw-1F3A";
    store_with(&spec(server.port), wrong)
        .list("/", "")
        .await
        .unwrap_err();
    let logs = String::from_utf8_lossy(&captured.0.lock().unwrap()).into_owned();
    assert!(logs.contains("suppaftp"), "the bridge works: {logs}");
    assert!(!logs.contains(PASSWORD), "{logs}");
    assert!(!logs.contains(wrong), "{logs}");
}

const PW_VAR: &str = "FERRY_TEST_FTP_PW_7E02";

#[tokio::test]
async fn a_connection_file_entry_reads_its_password_from_the_environment() {
    if std::env::var_os(PW_VAR).is_none() {
        rerun_with_env(
            "a_connection_file_entry_reads_its_password_from_the_environment",
            &[(PW_VAR, PASSWORD)],
        )
        .await;
        return;
    }
    let server = FtpServer::start(None).await;
    let conn: ConnectionSpec = serde_json::from_value(serde_json::json!({
        "kind": "ftp",
        "host": "127.0.0.1",
        "port": server.port,
        "username": USER,
        "password_env": PW_VAR,
    }))
    .unwrap();
    let Connector::Files(store) = conn.connect("drop").unwrap() else {
        panic!("an ftp connection is a file store");
    };
    assert!(!format!("{store:?}").contains(PASSWORD));
    // The store's futures can move between threads (steps may be spawned).
    let fut = store.check();
    assert_send(&fut);
    assert!(fut.await.unwrap().contains(USER));
}

fn assert_send<T: Send>(_: &T) {}
