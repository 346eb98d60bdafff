//! Folders inside buckets, end to end: a flow run by the real `ferry` binary moves files
//! from a folder of an S3 bucket (s3s-fs) into a folder of an OCI bucket (the
//! signature-verifying OCI stand-in), then files them into other folders on both, listing by
//! a glob. Asserts the bytes and where every object ends up.

#![allow(clippy::unwrap_used)] // tests unwrap: a panic is the failure report

#[path = "support/oci_server.rs"]
mod oci_server;
#[path = "support/s3_server.rs"]
mod s3_server;

use std::process::Command;

const FLOW: &str = r#"
id: FOLDERS-MOVE
name: Move XML files between folders in buckets
version: "1.0"
trigger: { manual: true }
steps:
  - id: list
    list: { connection: s3, location: "inbox:in/2024", pattern: "*.xml" }
  - id: files
    for_each:
      items: steps.list.files
      as: file
      steps:
        - id: fetch
          fetch: { connection: s3, location: "inbox:in/2024", name: "{{ file.name }}" }
        - id: put
          invoke:
            put:
              connection: oci
              location: "NS/archive:incoming/2024"
              name: "{{ file.name }}"
              file: "{{ steps.fetch.path }}"
        - id: file_on_oci
          rename: { connection: oci, location: "NS/archive", from: "incoming/2024/{{ file.name }}", to: "filed/{{ file.name }}" }
        - id: done_on_s3
          rename: { connection: s3, location: "inbox", from: "in/2024/{{ file.name }}", to: "done/2024/{{ file.name }}" }
"#;

/// Every file under `dir`, as `relative/path` → bytes.
fn tree(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    fn walk(root: &std::path::Path, dir: &std::path::Path, out: &mut Vec<(String, Vec<u8>)>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                let rel = p.strip_prefix(root).unwrap().display().to_string();
                out.push((rel, std::fs::read(&p).unwrap()));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flow_moves_files_between_folders_in_s3_and_oci_buckets() {
    let s3 = s3_server::S3Server::start(&["inbox"]).await;
    let oci = oci_server::OciServer::start_with_test_key(2).await;
    std::fs::create_dir_all(oci.bucket_path("archive")).unwrap();
    let inbox = s3.bucket_dir("inbox");
    std::fs::create_dir_all(inbox.join("in/2024/deeper")).unwrap();
    let a: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
    std::fs::write(inbox.join("in/2024/a.xml"), &a).unwrap();
    std::fs::write(inbox.join("in/2024/b.xml"), b"<b/>").unwrap();
    std::fs::write(inbox.join("in/2024/c.csv"), b"not xml").unwrap();
    std::fs::write(inbox.join("in/2024/deeper/d.xml"), b"a subfolder").unwrap();
    std::fs::write(inbox.join("top.xml"), b"the bucket's top level").unwrap();

    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("flows")).unwrap();
    std::fs::create_dir_all(dir.path().join("lookups")).unwrap();
    std::fs::write(
        dir.path().join("flows/move.yaml"),
        FLOW.replace("NS/", &format!("{}/", oci_server::NAMESPACE)),
    )
    .unwrap();
    let s3_conn = serde_json::json!({
        "kind": "s3", "endpoint": s3.endpoint(), "region": "us-east-1",
        "access_key_id_env": "FOLDERS_S3_KEY", "secret_access_key_env": "FOLDERS_S3_SECRET",
        "allow_http": true, "path_style": true, "timeout_secs": 5,
    });
    let conns = serde_json::json!({ "connections": {
        "s3": s3_conn,
        "oci": oci_server::connection_spec(&oci.endpoint(), "test_key_pkcs1.pem"),
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
                .args(["run", "FOLDERS-MOVE", "--format", "json", "--data", "state"])
                .env("FOLDERS_S3_KEY", s3_server::ACCESS_KEY)
                .env("FOLDERS_S3_SECRET", s3_server::SECRET_KEY)
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
    assert_eq!(report["outcome"], "succeeded");
    let listed = &report["events"][0];
    assert_eq!(listed["event"], "listed");
    assert_eq!(listed["location"], "inbox:in/2024");
    assert_eq!(
        listed["count"], 2,
        "only the folder's *.xml files: {listed}"
    );

    // S3: the XML files moved from in/2024 to done/2024; the rest untouched
    let b = b"<b/>".to_vec();
    assert_eq!(
        tree(&inbox),
        vec![
            ("done/2024/a.xml".to_string(), a.clone()),
            ("done/2024/b.xml".to_string(), b.clone()),
            ("in/2024/c.csv".to_string(), b"not xml".to_vec()),
            ("in/2024/deeper/d.xml".to_string(), b"a subfolder".to_vec()),
            ("top.xml".to_string(), b"the bucket's top level".to_vec()),
        ]
    );
    // OCI: put into incoming/2024, then filed; byte-exact
    assert_eq!(
        tree(&oci.bucket_path("archive")),
        vec![
            ("filed/a.xml".to_string(), a),
            ("filed/b.xml".to_string(), b),
        ]
    );
}
