//! A record loop's transform and request body: what the target receives (its keys in the
//! order of a template map: sorted), whether the transform's values are all plain (strings, numbers,
//! booleans, none: built as template values) or not (a list: built through JSON), and the
//! same values seen by a later step's templates.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use ferry::run::Outcome;
use support::Workspace;

const FLOW: &str = r#"id: RECORD-VALUES
name: Record values
version: "1"
trigger: { manual: true }
steps:
  - id: list
    list: { connection: dacs_os, location: in }
  - id: files
    for_each:
      items: steps.list.files
      as: file
      steps:
        - id: fetch
          fetch: { connection: dacs_os, location: in, name: "{{ file.name }}" }
        - id: records
          for_each:
            csv: { file: "{{ steps.fetch.path }}" }
            as: record
            concurrency: 4
            steps:
              - id: plain
                transform:
                  fields:
                    syncRequestId: "{{ record.fields.id }}"
                    count: "{{ record.fields.n | int }}"
                    half: "{{ (record.fields.n | int) / 2 }}"
                    first: "{{ record.number == 1 }}"
                    nothing: "{{ none }}"
                    fixed: OUAI
                    label: "id {{ record.fields.id }}"
                    nested:
                      n: 7
                      on: true
                      id: "{{ record.fields.id }}"
              - id: listed
                transform:
                  fields:
                    syncRequestId: "L-{{ record.fields.id }}"
                    both: "{{ [record.fields.id, steps.plain.count + 1] }}"
                    count: "{{ steps.plain.count * 10 }}"
              - id: send_plain
                invoke:
                  request:
                    connection: dacs_rest
                    path: /rest/apis/cross/syncRequests/update
                    json: "{{ steps.plain }}"
              - id: send_listed
                invoke:
                  request:
                    connection: dacs_rest
                    path: /rest/apis/cross/syncRequests/update
                    json: "{{ steps.listed }}"
"#;

#[tokio::test]
async fn a_record_loop_sends_each_transform_field_with_its_type() {
    let ws = Workspace::new().await;
    std::fs::write(ws.flows_dir().join("record_values.yaml"), FLOW).unwrap();
    let dir = ws.make_location("dacs-os", "in");
    std::fs::write(dir.join("a.csv"), "id,n\nA,3\nB,10\nC,-4\n").unwrap();
    let report = ws.run("RECORD-VALUES").await;
    assert_eq!(report.outcome, Outcome::Succeeded, "{report:?}");
    let mut got: Vec<String> = ws
        .standin
        .sync_requests()
        .iter()
        .map(|v| serde_json::to_string(v).unwrap())
        .collect();
    // four records at once: sorted, not in the order they arrived
    got.sort();
    assert_eq!(
        got,
        [
            r#"{"both":["A",4],"count":30,"syncRequestId":"L-A"}"#,
            r#"{"both":["B",11],"count":100,"syncRequestId":"L-B"}"#,
            r#"{"both":["C",-3],"count":-40,"syncRequestId":"L-C"}"#,
            r#"{"count":-4,"first":false,"fixed":"OUAI","half":-2.0,"label":"id C","nested":{"id":"C","n":7,"on":true},"nothing":null,"syncRequestId":"C"}"#,
            r#"{"count":10,"first":false,"fixed":"OUAI","half":5.0,"label":"id B","nested":{"id":"B","n":7,"on":true},"nothing":null,"syncRequestId":"B"}"#,
            r#"{"count":3,"first":true,"fixed":"OUAI","half":1.5,"label":"id A","nested":{"id":"A","n":7,"on":true},"nothing":null,"syncRequestId":"A"}"#,
        ]
    );
}
