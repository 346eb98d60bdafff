//! Tests for the SFTP file store (`ferry::connectors::sftp`) against a real OpenSSH sshd
//! started by the test (`support/sftp_server.rs`): password and key logins, host key pinning,
//! a server that is down, hostile names in listings, cleanup after a failed put, and a
//! connection cut in the middle of an upload. The
//! behaviour all file stores share is in `tests/conformance.rs`.
#![allow(clippy::unwrap_used)]

#[path = "support/process.rs"]
mod process;
#[path = "support/proxy.rs"]
mod proxy;
#[path = "support/sftp_server.rs"]
mod sftp_server;

use ferry::connectors::sftp::{SftpSpec, SftpStore};
use ferry::connectors::{ConnectionSpec, Connector, ConnectorError, FileStore, Secret};
use process::rerun_with_env;
use sftp_server::{SftpServer, current_user, fingerprint, keygen, password_user};

fn connect(spec: serde_json::Value) -> FileStore {
    let spec: ConnectionSpec = serde_json::from_value(spec).unwrap();
    let Connector::Files(store) = spec.connect("dacs_sftp").unwrap() else {
        panic!("not a file store")
    };
    store
}

fn names(entries: &[ferry::connectors::Entry]) -> Vec<&str> {
    entries.iter().map(|e| e.name.as_str()).collect()
}

/// Password login, the password read from the environment variable `password_env` names:
/// the test runs itself again with the variable set.
#[tokio::test]
async fn password_login_reads_the_password_from_the_environment() {
    if let Ok(port) = std::env::var("FERRY_TEST_SFTP_PORT") {
        // The child run: the server and the account exist; only the variable holds the password.
        let location = std::env::var("FERRY_TEST_SFTP_LOCATION").unwrap();
        let store = connect(serde_json::json!({
            "kind": "sftp",
            "host": "127.0.0.1",
            "port": port.parse::<u16>().unwrap(),
            "username": sftp_server::PASSWORD_USER,
            "password_env": "FERRY_TEST_SFTP_PASSWORD",
            "known_hosts_file": std::env::var("FERRY_TEST_SFTP_KNOWN_HOSTS").unwrap(),
            "timeout_secs": 10,
        }));
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::write(&src, b"id,kwh\n1,2.5\n").unwrap();
        assert_eq!(store.put(&location, "IN_1.csv", &src).await.unwrap(), 13);
        let listed = store.list(&location, "IN_").await.unwrap();
        assert_eq!(names(&listed), ["IN_1.csv"]);
        let got = dir.path().join("got");
        store.get(&location, "IN_1.csv", &got).await.unwrap();
        assert_eq!(std::fs::read(&got).unwrap(), b"id,kwh\n1,2.5\n");
        return;
    }
    let Some(server) = SftpServer::start().await else {
        return;
    };
    let Some((user, password)) = password_user() else {
        return;
    };
    // A directory the account owns.
    let dir = server.path("pw");
    std::fs::create_dir(&dir).unwrap();
    let uid: u32 = std::process::Command::new("id")
        .args(["-u", user])
        .output()
        .map(|o| String::from_utf8(o.stdout).unwrap().trim().parse().unwrap())
        .unwrap();
    std::os::unix::fs::chown(&dir, Some(uid), None).unwrap();
    let port = server.port.to_string();
    let known_hosts = server.known_hosts.display().to_string();
    let location = server.location("pw");
    rerun_with_env(
        "password_login_reads_the_password_from_the_environment",
        &[
            ("FERRY_TEST_SFTP_PORT", &port),
            ("FERRY_TEST_SFTP_PASSWORD", &password),
            ("FERRY_TEST_SFTP_KNOWN_HOSTS", &known_hosts),
            ("FERRY_TEST_SFTP_LOCATION", &location),
        ],
    )
    .await;
    // The file is on the server, owned by the account that logged in.
    assert_eq!(
        std::fs::read(dir.join("IN_1.csv")).unwrap(),
        b"id,kwh\n1,2.5\n"
    );
    let owner =
        std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(dir.join("IN_1.csv")).unwrap());
    assert_eq!(owner, uid);
}

#[tokio::test]
async fn a_wrong_password_is_an_authentication_error_that_hides_the_password() {
    let Some(server) = SftpServer::start().await else {
        return;
    };
    let Some((user, _)) = password_user() else {
        return;
    };
    let spec: SftpSpec = serde_json::from_value(serde_json::json!({
        "host": "127.0.0.1",
        "port": server.port,
        "username": user,
        "password_env": "FERRY_TEST_SFTP_UNUSED",
        "host_key_fingerprint": server.host_fingerprint,
        "timeout_secs": 10,
    }))
    .unwrap();
    let wrong = "not-the-password-4711";
    let store = FileStore::Sftp(
        SftpStore::with_secrets(&spec, Some(Secret::new(wrong.into())), None).unwrap(),
    );
    let err = store.list("/", "").await.unwrap_err();
    assert!(matches!(err, ConnectorError::Auth(_)), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "authentication failed: SFTP server 127.0.0.1:{} refused the login of user \
             'ferry-sftp-test' with password (from FERRY_TEST_SFTP_UNUSED) (check the user name \
             and the credential)",
            server.port
        )
    );
    assert!(!format!("{store:?}").contains(wrong));
}

#[tokio::test]
async fn key_logins_work_with_ed25519_and_rsa_keys() {
    let Some(server) = SftpServer::start().await else {
        return;
    };
    std::fs::create_dir(server.path("in")).unwrap();
    std::fs::write(server.path("in/A_1.csv"), b"one\n").unwrap();
    for key in [&server.client_key, &server.client_rsa_key] {
        let mut spec = server.key_spec();
        spec["key_file"] = key.display().to_string().into();
        let store = connect(spec);
        let listed = store.list(&server.location("in"), "A_").await.unwrap();
        assert_eq!(names(&listed), ["A_1.csv"], "{}", key.display());
        assert_eq!(listed[0].size, 4);
    }
    // check() says who logged in where.
    let said = connect(server.key_spec()).check().await.unwrap();
    let expected = format!(
        "logged in to 127.0.0.1:{} as '{}' over SFTP (host key pinned); login directory '",
        server.port,
        current_user()
    );
    assert!(said.starts_with(&expected), "{said}");
    // A key the server does not know is refused.
    let other = server.dir.path().join("other_key");
    keygen(&other, "ed25519");
    let mut spec = server.key_spec();
    spec["key_file"] = other.display().to_string().into();
    let err = connect(spec).list("/", "").await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "authentication failed: SFTP server 127.0.0.1:{} refused the login of user '{}' \
             with key '{}' (check the user name and the credential)",
            server.port,
            current_user(),
            other.display()
        )
    );
}

/// The host key is checked before anything is sent: an unknown key ends the session with an
/// error naming the fingerprint the server presented.
#[tokio::test]
async fn unknown_host_keys_are_refused_naming_the_fingerprint_seen() {
    let Some(server) = SftpServer::start().await else {
        return;
    };
    let other = server.dir.path().join("other_host_key");
    keygen(&other, "ed25519");
    let other_fp = fingerprint(&other.with_extension("pub"));
    let seen = format!("{} (ssh-ed25519)", server.host_fingerprint);
    let addr = format!("127.0.0.1:{}", server.port);

    // Pinned by fingerprint, another key expected.
    let mut spec = server.key_spec();
    spec["host_key_fingerprint"] = other_fp.clone().into();
    let err = connect(spec).list("/", "").await.unwrap_err();
    assert!(matches!(err, ConnectorError::Auth(_)), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "authentication failed: SFTP server {addr} presented host key {seen}, which does not \
             match host_key_fingerprint {other_fp}; nothing was sent to it (if the server's key \
             changed on purpose, update the connection's host key setting)"
        )
    );

    // A known_hosts file with another key for this host.
    let changed = server.dir.path().join("known_hosts_changed");
    let other_pub = std::fs::read_to_string(other.with_extension("pub")).unwrap();
    std::fs::write(&changed, format!("[127.0.0.1]:{} {other_pub}", server.port)).unwrap();
    let mut spec = server.key_spec();
    spec.as_object_mut().unwrap().remove("host_key_fingerprint");
    spec["known_hosts_file"] = changed.display().to_string().into();
    let err = connect(spec.clone()).list("/", "").await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "authentication failed: SFTP server {addr} presented host key {seen}, which differs \
             from the key on line 1 of known_hosts_file '{}' (the server's key changed, or \
             someone is in between); nothing was sent to it (if the server's key changed on \
             purpose, update the connection's host key setting)",
            changed.display()
        )
    );

    // A known_hosts file that does not list the host at all.
    let elsewhere = server.dir.path().join("known_hosts_elsewhere");
    std::fs::write(&elsewhere, format!("[127.0.0.1]:1 {other_pub}")).unwrap();
    spec["known_hosts_file"] = elsewhere.display().to_string().into();
    let err = connect(spec.clone()).list("/", "").await.unwrap_err();
    assert!(
        err.to_string().contains(&format!(
            "presented host key {seen}, which is not listed for this host in known_hosts_file '{}'",
            elsewhere.display()
        )),
        "{err}"
    );

    // The server's own known_hosts entry is accepted.
    spec["known_hosts_file"] = server.known_hosts.display().to_string().into();
    connect(spec).list("/", "").await.unwrap();
    // sshd saw exactly one login: the trusted one.
    let logins = server
        .log()
        .iter()
        .filter(|l| l.contains("Accepted") || l.contains("Failed"))
        .count();
    assert_eq!(logins, 1, "{:#?}", server.log());
}

#[tokio::test]
async fn a_server_that_is_down_is_a_connection_error() {
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let spec: SftpSpec = serde_json::from_value(serde_json::json!({
        "host": "127.0.0.1",
        "port": dead,
        "username": "u",
        "password_env": "FERRY_TEST_SFTP_UNUSED",
        "host_key_fingerprint": "SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s",
        "timeout_secs": 5,
    }))
    .unwrap();
    let store = FileStore::Sftp(
        SftpStore::with_secrets(&spec, Some(Secret::new("pw".into())), None).unwrap(),
    );
    let err = store.list("/in", "").await.unwrap_err();
    assert!(matches!(err, ConnectorError::Connect(_)), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "connection failed: cannot reach SFTP server 127.0.0.1:{dead}: Connection refused (os error 111)"
        )
    );
}

/// Names in a listing come from the server: one that holds a control character or a
/// backslash is set apart with its reason (left where it is); the others list.
#[tokio::test]
async fn hostile_names_in_a_listing_are_set_apart() {
    let Some(server) = SftpServer::start().await else {
        return;
    };
    std::fs::create_dir(server.path("in")).unwrap();
    std::fs::write(server.path("in/IN_ok.csv"), b"ok").unwrap();
    std::fs::write(server.path("in/IN_evil\u{1b}[2J.csv"), b"x").unwrap();
    std::fs::write(server.path("in/B_a\\b.csv"), b"x").unwrap();
    std::fs::write(server.path("in/C_1.csv"), b"c").unwrap();
    let store = connect(server.key_spec());
    let location = server.location("in");

    let (good, skipped) = store.list_checked(&location, "IN_").await.unwrap();
    assert_eq!(names(&good), ["IN_ok.csv"]);
    assert_eq!(
        skipped,
        [(
            "IN_evil\u{1b}[2J.csv".to_string(),
            "it contains a control character".to_string()
        )]
    );
    let (good, skipped) = store.list_checked(&location, "B_").await.unwrap();
    assert!(good.is_empty());
    assert_eq!(
        skipped,
        [(
            "B_a\\b.csv".to_string(),
            "it contains a path separator".to_string()
        )]
    );
    let listed = store.list(&location, "C_").await.unwrap();
    assert_eq!(names(&listed), ["C_1.csv"]);
}

#[tokio::test]
async fn missing_directories_and_files_are_not_found() {
    let Some(server) = SftpServer::start().await else {
        return;
    };
    std::fs::create_dir(server.path("in")).unwrap();
    let store = connect(server.key_spec());
    let missing = server.location("nope");
    let addr = format!("127.0.0.1:{}", server.port);
    let err = store.list(&missing, "").await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("not found: directory '{missing}' on SFTP server {addr}")
    );
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::write(&src, b"x").unwrap();
    let err = store.put(&missing, "A.csv", &src).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("not found: directory '{missing}' on SFTP server {addr}")
    );
    let in_dir = server.location("in");
    let err = store
        .get(&in_dir, "gone.csv", &dir.path().join("got"))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("not found: file 'gone.csv' in '{in_dir}' on SFTP server {addr}")
    );
    assert!(!dir.path().join("got").exists(), "no partial download");
}

/// A put whose final rename fails (the name is taken by a directory) leaves no temporary
/// file behind and the directory untouched.
#[tokio::test]
async fn a_failed_put_removes_its_temporary_file() {
    let Some(server) = SftpServer::start().await else {
        return;
    };
    std::fs::create_dir_all(server.path("in/TAKEN.csv")).unwrap();
    let store = connect(server.key_spec());
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::write(&src, vec![7u8; 1_000_000]).unwrap();
    let err = store
        .put(&server.location("in"), "TAKEN.csv", &src)
        .await
        .unwrap_err();
    assert!(matches!(err, ConnectorError::Protocol(_)), "{err:?}");
    assert!(
        err.to_string()
            .starts_with(&format!("SFTP server 127.0.0.1:{} answered", server.port)),
        "{err}"
    );
    assert_eq!(server.names("in"), ["TAKEN.csv"]);
    assert!(server.path("in/TAKEN.csv").is_dir());
}

/// The line to the server is cut (by a proxy, after 3 MiB went up) while an 8 MiB file is
/// uploading: the put fails as a connection error, and nothing appears under the final name
/// (at most the hidden temporary file the upload was writing, which listings skip).
#[tokio::test]
async fn a_connection_cut_midway_through_a_put_leaves_nothing_under_the_final_name() {
    let Some(server) = SftpServer::start().await else {
        return;
    };
    std::fs::create_dir_all(server.path("in")).unwrap();
    let upstream = format!("127.0.0.1:{}", server.port).parse().unwrap();
    let proxy = proxy::CutProxy::start(upstream, 3 * 1024 * 1024).await;
    let mut spec = server.key_spec();
    spec["port"] = proxy.addr.port().into();
    let store = connect(spec);
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::write(&src, vec![9u8; 8 * 1024 * 1024]).unwrap();

    let err = store
        .put(&server.location("in"), "BIG.csv", &src)
        .await
        .unwrap_err();
    assert!(proxy.was_cut());
    assert!(
        matches!(err, ConnectorError::Connect(_) | ConnectorError::Timeout(_)),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("SFTP server 127.0.0.1:") && text.contains("'BIG.csv'"),
        "{text}"
    );
    assert!(!server.path("in/BIG.csv").exists());
    for name in server.names("in") {
        assert!(name.starts_with(".ferry-tmp-"), "{name}");
    }
    // A listing through a new connection shows nothing.
    let direct = connect(server.key_spec());
    assert!(
        direct
            .list(&server.location("in"), "")
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn configuration_errors_are_clear() {
    let err = |json: serde_json::Value| {
        let spec: SftpSpec = serde_json::from_value(json).unwrap();
        SftpStore::with_secrets(&spec, Some(Secret::new("pw".into())), None)
            .unwrap_err()
            .to_string()
    };
    assert_eq!(
        err(serde_json::json!({
            "host": "h", "username": "u", "key_file": "/nonexistent/key",
            "host_key_fingerprint": "SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s",
        })),
        "configuration: sftp: key_file '/nonexistent/key' cannot be read: No such file or directory (os error 2)"
    );
    assert_eq!(
        err(serde_json::json!({
            "host": "h", "username": "u", "password_env": "P",
            "known_hosts_file": "/nonexistent/known_hosts",
        })),
        "configuration: sftp: known_hosts_file '/nonexistent/known_hosts' cannot be read: No such file or directory (os error 2)"
    );
    // A passphrase-protected key without its passphrase.
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("locked");
    std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "secret-phrase", "-f"])
        .arg(&key)
        .output()
        .unwrap();
    let said = err(serde_json::json!({
        "host": "h", "username": "u", "key_file": key.display().to_string(),
        "host_key_fingerprint": "SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s",
    }));
    assert!(said.contains("set key_passphrase_env"), "{said}");
    // With it, the key loads.
    let spec: SftpSpec = serde_json::from_value(serde_json::json!({
        "host": "h", "username": "u", "key_file": key.display().to_string(),
        "host_key_fingerprint": "SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s",
    }))
    .unwrap();
    let store =
        SftpStore::with_secrets(&spec, None, Some(Secret::new("secret-phrase".into()))).unwrap();
    assert!(!format!("{store:?}").contains("secret-phrase"));
}

/// The shipped SFTP example connection file validates with the shipped flows, its `dacs_ftp`
/// being of the sftp kind.
#[test]
fn the_sftp_example_connection_file_validates_with_the_shipped_flows() {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let (project, diags) = ferry::compile::load(&ferry::compile::Inputs {
        paths: vec![root.join("flows")],
        connections: Some(root.join("examples/connections/sftp-s3.yaml")),
        ..Default::default()
    });
    assert!(diags.is_empty(), "{diags:#?}");
    let project = project.unwrap();
    assert_eq!(project.connections["dacs_ftp"].kind(), "sftp");
}
