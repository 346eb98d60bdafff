//! Copies on the server, end to end: a flow run by the real `ferry` binary fetches files
//! from one S3 bucket and puts them into another of the same service (a copy on the server:
//! no byte of them passes through ferry), into a third through a connection that names the
//! server differently (downloaded and uploaded, as between services), walks the other
//! file's CSV records (downloaded for that), and renames each source only after its puts. Asserts the
//! bytes on every target, the renamed sources and, from the server's request log, which
//! requests carried a body.

#![allow(clippy::unwrap_used)] // tests unwrap: a panic is the failure report

#[path = "support/s3_server.rs"]
mod s3_server;

use std::process::Command;

const FLOW: &str = r#"
id: SERVER-COPY
name: Copies on the server
version: "1.0"
trigger: { manual: true }
steps:
  - id: list
    list: { connection: source, location: "src", prefix: "A_" }
  - id: files
    for_each:
      items: steps.list.files
      as: file
      steps:
        - id: fetch
          fetch: { connection: source, location: "src", name: "{{ file.name }}" }
        - id: same_service
          invoke:
            put: { connection: target, location: "ns/dst:in", name: "{{ file.name }}", file: "{{ steps.fetch.path }}" }
        - id: rows
          when: "(file.name | extension) == '.csv'"
          for_each:
            csv: { file: "{{ steps.fetch.path }}" }
            as: record
            steps:
              - id: row
                transform: { fields: { id: "{{ record.fields.id }}" } }
        - id: elsewhere
          when: "(file.name | extension) == '.bin'"
          invoke:
            put: { connection: elsewhere, location: "other", name: "{{ file.name }}", file: "{{ steps.fetch.path }}" }
        - id: mark_sent
          rename: { connection: source, location: "src", from: "{{ file.name }}", to: "Sent-{{ file.name }}" }
"#;

#[tokio::test(flavor = "multi_thread")]
async fn a_put_to_the_same_service_copies_on_the_server_and_other_readers_download() {
    let s3 = s3_server::S3Server::start(&["src", "dst", "other"]).await;
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let csv = b"id,name\n1,one\n2,two\n".to_vec();
    std::fs::write(s3.bucket_dir("src").join("A_big.bin"), &big).unwrap();
    std::fs::write(s3.bucket_dir("src").join("A_rows.csv"), &csv).unwrap();

    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("flows")).unwrap();
    std::fs::create_dir_all(dir.path().join("lookups")).unwrap();
    std::fs::write(dir.path().join("flows/copy.yaml"), FLOW).unwrap();
    let conn = |endpoint: String| {
        serde_json::json!({
            "kind": "s3", "endpoint": endpoint, "region": "us-east-1",
            "access_key_id_env": "COPY_S3_KEY", "secret_access_key_env": "COPY_S3_SECRET",
            "allow_http": true, "timeout_secs": 5,
        })
    };
    let conns = serde_json::json!({ "connections": {
        "source": conn(s3.endpoint()),
        "target": conn(s3.endpoint()),
        "elsewhere": conn(s3.endpoint().replace("127.0.0.1", "localhost")),
    }});
    std::fs::write(
        dir.path().join("flows/connections.yaml"),
        serde_json::to_string_pretty(&conns).unwrap(),
    )
    .unwrap();

    let out = tokio::task::spawn_blocking({
        let dir = dir.path().to_path_buf();
        move || {
            Command::new(env!("CARGO_BIN_EXE_ferry"))
                .args(["run", "SERVER-COPY", "--format", "json", "--data", "state"])
                .env("COPY_S3_KEY", s3_server::ACCESS_KEY)
                .env("COPY_S3_SECRET", s3_server::SECRET_KEY)
                .current_dir(dir)
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["outcome"], "succeeded", "{stdout}");

    // the bytes on the targets, the sources renamed
    assert!(std::fs::read(s3.bucket_dir("other").join("A_big.bin")).unwrap() == big);
    assert!(!s3.bucket_dir("other").join("A_rows.csv").exists());
    for (name, bytes) in [("A_big.bin", &big), ("A_rows.csv", &csv)] {
        assert!(std::fs::read(s3.bucket_dir("dst").join("in").join(name)).unwrap() == *bytes);
        assert!(!s3.bucket_dir("src").join(name).exists());
        assert!(
            std::fs::read(s3.bucket_dir("src").join(format!("Sent-{name}"))).unwrap() == *bytes
        );
    }

    // who carried a body: each source was downloaded once (the binary for the put
    // elsewhere, the CSV for its records), never uploaded to `dst`, which got copies
    let requests = s3.requests();
    let gets: Vec<&str> = requests
        .iter()
        .filter(|r| r.method == "GET" && r.path.starts_with("/src/"))
        .map(|r| r.path.as_str())
        .collect();
    assert_eq!(gets.len(), 2, "{requests:?}");
    assert!(gets.contains(&"/src/A_big.bin") && gets.contains(&"/src/A_rows.csv"));
    let to_dst: Vec<_> = requests
        .iter()
        .filter(|r| r.path.starts_with("/dst/"))
        .collect();
    assert!(!to_dst.is_empty());
    assert!(
        to_dst
            .iter()
            .all(|r| r.method == "PUT" && r.copy_source.is_some() && r.content_length == 0),
        "{to_dst:?}"
    );
    assert!(
        requests
            .iter()
            .any(|r| r.method == "PUT" && r.path == "/other/A_big.bin" && r.content_length > 0),
        "the put to another service uploads: {requests:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_put_elsewhere_nothing_is_downloaded() {
    let s3 = s3_server::S3Server::start(&["src", "dst", "other"]).await;
    let big: Vec<u8> = (0..2_000_000u32).map(|i| (i * 13 % 241) as u8).collect();
    std::fs::write(s3.bucket_dir("src").join("A_big.bin"), &big).unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("flows")).unwrap();
    std::fs::create_dir_all(dir.path().join("lookups")).unwrap();
    // the same flow with only the put to the same service and the rename
    let flow: String = FLOW.split("        - id: rows").next().unwrap().to_string()
        + "        - id: mark_sent\n          rename: { connection: source, location: \"src\", from: \"{{ file.name }}\", to: \"Sent-{{ file.name }}\" }\n";
    std::fs::write(dir.path().join("flows/copy.yaml"), flow).unwrap();
    let conn = serde_json::json!({
        "kind": "s3", "endpoint": s3.endpoint(), "region": "us-east-1",
        "access_key_id_env": "COPY_S3_KEY", "secret_access_key_env": "COPY_S3_SECRET",
        "allow_http": true, "timeout_secs": 5,
    });
    let conns = serde_json::json!({ "connections": {
        "source": conn.clone(), "target": conn.clone(), "elsewhere": conn,
    }});
    std::fs::write(
        dir.path().join("flows/connections.yaml"),
        serde_json::to_string_pretty(&conns).unwrap(),
    )
    .unwrap();
    let out = tokio::task::spawn_blocking({
        let dir = dir.path().to_path_buf();
        move || {
            Command::new(env!("CARGO_BIN_EXE_ferry"))
                .args(["run", "SERVER-COPY", "--format", "json", "--data", "state"])
                .env("COPY_S3_KEY", s3_server::ACCESS_KEY)
                .env("COPY_S3_SECRET", s3_server::SECRET_KEY)
                .current_dir(dir)
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(std::fs::read(s3.bucket_dir("dst").join("in/A_big.bin")).unwrap() == big);
    assert!(s3.bucket_dir("src").join("Sent-A_big.bin").is_file());
    let requests = s3.requests();
    assert!(
        !requests
            .iter()
            .any(|r| r.method == "GET" && r.path.starts_with("/src/A_big")),
        "no download: {requests:?}"
    );
    assert!(
        !requests
            .iter()
            .any(|r| r.method == "PUT" && r.copy_source.is_none() && r.content_length > 0),
        "no upload: {requests:?}"
    );
}
