//! `ferry check`: every connection is reached, and each failure says why.

#![allow(clippy::unwrap_used)] // tests unwrap: a panic is the failure report

#[path = "support/project.rs"]
mod project;

use std::path::Path;

use project::copy_dir;

use ferry::compile::{Inputs, load};

#[tokio::test]
async fn check_reaches_every_connection_and_location() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&repo.join("flows"), &dir.path().join("flows"));
    copy_dir(&repo.join("lookups"), &dir.path().join("lookups"));
    // the sample data has every source bucket but one: the enrollment ack bucket is missing
    copy_dir(&repo.join("examples/demo/data"), &dir.path().join("data"));
    std::fs::remove_dir_all(
        dir.path()
            .join("data/ouai-os/ouainamespace/OUAIEnrollAckFolder"),
    )
    .unwrap();
    let stand_in = ferry::standin::StandIn::default().spawn().await.unwrap();
    let conns = std::fs::read_to_string(repo.join("examples/demo/connections.yaml"))
        .unwrap()
        .replace("${DEMO_DIR}", &dir.path().display().to_string())
        .replace("${STANDIN_URL}", stand_in.base_url())
        // DERMS's API is down
        .replace(
            &format!("{}/nms-drms", stand_in.base_url()),
            "http://127.0.0.1:9/nms-drms",
        );
    std::fs::write(dir.path().join("flows/connections.yaml"), conns).unwrap();
    let (project, diags) = load(&Inputs {
        paths: vec![dir.path().join("flows")],
        ..Default::default()
    });
    assert!(diags.is_empty(), "{diags:?}");
    let rows = ferry::check::check(&project.unwrap()).await;
    let summary: Vec<(String, String, bool)> = rows
        .iter()
        .map(|r| (r.connection.clone(), r.target.clone(), r.ok))
        .collect();
    let expect = |c: &str, t: &str, ok: bool| (c.to_string(), t.to_string(), ok);
    assert_eq!(
        summary,
        vec![
            expect("dacs_ftp", "/sploutput/DACSEnv/enroll/", true),
            expect("dacs_os", "dacsnamespace/DACS_EnrollFolder", true),
            expect("dacs_rest", stand_in.base_url(), true),
            expect("drms_api", "http://127.0.0.1:9/nms-drms/rest/v1", false),
            expect("drms_rest", stand_in.base_url(), true),
            expect("mail", "", true),
            expect("ouai_os", "ouainamespace/OUAIEnrollAckFolder", false),
            expect("ouai_os", "ouainamespace/OUAIKwhAvoidFolder", true),
            expect("ouai_os", "ouainamespace/Ouai_LRFolder", true),
        ]
    );
    let ack = rows
        .iter()
        .find(|r| r.target == "ouainamespace/OUAIEnrollAckFolder")
        .unwrap();
    assert!(
        ack.detail.starts_with("not found: directory "),
        "{}",
        ack.detail
    );
    let api = rows.iter().find(|r| r.connection == "drms_api").unwrap();
    assert!(api.detail.contains("127.0.0.1:9"), "{}", api.detail);
    let table = ferry::check::render(&rows);
    assert!(table.contains("drms_api     http     FAILED"), "{table}");
}
