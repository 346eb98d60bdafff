//! End-to-end tests of the DACS/DERMS stand-ins over a real socket.
#![allow(clippy::unwrap_used)]

use ferry::standin::{FailurePlan, JournalEntry, StandIn, StandInConfig, StandInHandle};
use reqwest::StatusCode;
use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};

const SYNC: &str = "/rest/apis/cross/syncRequests/update";
const FORECASTS: &str = "/nms-drms/rest/v1/loadReductionForecasts";
const OUTCOME: &str = "/device-outcome-ack";

async fn start(config: StandInConfig) -> (StandIn, StandInHandle, reqwest::Client) {
    let stand_in = StandIn::new(config);
    let handle = stand_in.clone().spawn().await.unwrap();
    (stand_in, handle, reqwest::Client::new())
}

async fn post_json(
    client: &reqwest::Client,
    handle: &StandInHandle,
    path: &str,
    body: Value,
) -> (StatusCode, Value) {
    let response = client
        .post(handle.url(path))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap())
}

/// The `syncRequestId` of each sync request body the stand-in kept, in order.
fn accepted_ids(stand_in: &StandIn) -> Vec<Value> {
    stand_in
        .sync_requests()
        .iter()
        .map(|b| b["syncRequestId"].clone())
        .collect()
}

async fn get_json(client: &reqwest::Client, handle: &StandInHandle, path: &str) -> Value {
    let response = client.get(handle.url(path)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK, "GET {path}");
    response.json().await.unwrap()
}

#[tokio::test]
async fn sync_request_accepted_then_duplicate_rejected_with_400() {
    let (stand_in, handle, client) = start(StandInConfig::default()).await;
    let body = json!({"syncRequestId": "SR-1", "status": "DONE"});

    let (status, answer) = post_json(&client, &handle, SYNC, body.clone()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        answer,
        json!({"status": "UPDATED", "syncRequestId": "SR-1"})
    );

    let (status, answer) = post_json(&client, &handle, SYNC, body.clone()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(answer, json!({"message": "duplicate sync request id SR-1"}));

    assert_eq!(stand_in.sync_requests(), vec![body]);
    handle.stop().await.unwrap();
}

#[tokio::test]
async fn sync_request_failure_plan_fails_third_call_only_and_does_not_record_it() {
    let (stand_in, handle, client) = start(StandInConfig::default()).await;
    stand_in.fail_sync_requests(FailurePlan {
        after: 2,
        status: 500,
        times: 1,
    });

    let mut statuses = Vec::new();
    for id in ["SR-1", "SR-2", "SR-3", "SR-3"] {
        let (status, _) = post_json(&client, &handle, SYNC, json!({"syncRequestId": id})).await;
        statuses.push(status.as_u16());
    }
    // The failed SR-3 was not accepted, so its resend succeeds.
    assert_eq!(statuses, [200, 200, 500, 200]);
    let ids = accepted_ids(&stand_in);
    assert_eq!(ids, [json!("SR-1"), json!("SR-2"), json!("SR-3")]);
}

#[tokio::test]
async fn sync_request_malformed_or_incomplete_body_is_400_with_message() {
    let (stand_in, handle, client) = start(StandInConfig::default()).await;

    let response = client
        .post(handle.url(SYNC))
        .header("content-type", "application/json")
        .body("{\"syncRequestId\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let answer: Value = response.json().await.unwrap();
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .starts_with("malformed JSON body"),
        "{answer}"
    );

    let (status, answer) = post_json(&client, &handle, SYNC, json!({"status": "DONE"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        answer,
        json!({"message": "missing required field syncRequestId"})
    );

    let (status, answer) = post_json(&client, &handle, SYNC, json!({"syncRequestId": 7})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(answer, json!({"message": "syncRequestId must be a string"}));

    let (status, _) = post_json(&client, &handle, SYNC, json!(["SR-1"])).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(stand_in.sync_requests().is_empty());
}

#[tokio::test]
async fn basic_auth_rejects_missing_and_wrong_credentials_and_accepts_right_ones() {
    let (stand_in, handle, client) =
        start(StandInConfig::with_basic_auth("ferry", "s3cret:x")).await;
    let body = json!({"syncRequestId": "SR-9"});

    let response = client
        .post(handle.url(SYNC))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        response.headers()["www-authenticate"],
        "Basic realm=\"stand-in\""
    );
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"message": "missing or wrong credentials"})
    );

    for (user, password) in [
        ("ferry", "wrong"),
        ("other", "s3cret:x"),
        ("ferry", "s3cret"),
    ] {
        let response = client
            .post(handle.url(SYNC))
            .basic_auth(user, Some(password))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{user}");
    }
    let response = client
        .post(handle.url(OUTCOME))
        .header("authorization", "Basic !!not-base64!!")
        .json(&json!({"ackType": "SUCCESS"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(stand_in.sync_requests().is_empty());

    let response = client
        .post(handle.url(SYNC))
        .basic_auth("ferry", Some("s3cret:x"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(stand_in.sync_requests(), vec![body]);

    // Admin endpoints and the health check never need credentials.
    let response = client.get(handle.url("/healthz")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.text().await.unwrap(), "ok");
    assert_eq!(
        get_json(&client, &handle, "/_standin/sync-requests")
            .await
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn forecast_multipart_upload_is_recorded_with_exact_bytes_and_configurable_ack() {
    let (stand_in, handle, client) = start(StandInConfig::default()).await;
    let csv = b"device,start,kw\nD-1,2025-01-01T00:00:00Z,1.5\n\xef\xbb\xbf\r\n".to_vec();

    let upload = |bytes: Vec<u8>, name: &'static str| {
        let part = Part::bytes(bytes)
            .file_name(name)
            .mime_str("text/csv")
            .unwrap();
        let form = Form::new().text("note", "ignored").part("file", part);
        client.post(handle.url(FORECASTS)).multipart(form).send()
    };

    let response = upload(csv.clone(), "forecast-2025-01-01.csv")
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["ackType"], "SUCCESS");
    assert_eq!(answer["forecastId"], "LRF-1");
    assert_eq!(answer["fileName"], "forecast-2025-01-01.csv");
    assert!(answer["message"].is_string());

    stand_in.set_forecast_ack("FAILURE");
    let answer: Value = upload(b"x".to_vec(), "second.csv")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["ackType"], "FAILURE");
    assert_eq!(answer["forecastId"], "LRF-2");

    let files = stand_in.forecasts();
    assert_eq!(files.len(), 2);
    assert_eq!(files[0].file_name, "forecast-2025-01-01.csv");
    assert_eq!(files[0].bytes, csv);
    assert_eq!(files[0].content_type.as_deref(), Some("text/csv"));
    assert_eq!(files[0].forecast_id, "LRF-1");
    assert_eq!(files[1].bytes, b"x");

    // A multipart body without a `file` part is rejected and not recorded.
    let form = Form::new().text("other", "value");
    let response = client
        .post(handle.url(FORECASTS))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["message"], "missing multipart part named `file`");
    assert_eq!(stand_in.forecasts().len(), 2);
}

#[tokio::test]
async fn forecast_raw_body_upload_uses_x_file_name() {
    let (stand_in, handle, client) = start(StandInConfig::default()).await;
    let bytes: Vec<u8> = (0..=255u8).cycle().take(300_000).collect();

    let response = client
        .post(handle.url(FORECASTS))
        .header("content-type", "application/octet-stream")
        .header("x-file-name", "raw.csv")
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["fileName"], "raw.csv");
    assert_eq!(answer["ackType"], "SUCCESS");

    let files = stand_in.forecasts();
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].file_name, "raw.csv");
    assert_eq!(files[0].bytes, bytes);
    assert_eq!(
        files[0].content_type.as_deref(),
        Some("application/octet-stream")
    );

    // Without a file name there is no file.
    let response = client
        .post(handle.url(FORECASTS))
        .header("content-type", "text/csv")
        .body("a,b\n")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(
        response.json::<Value>().await.unwrap()["message"]
            .as_str()
            .unwrap()
            .contains("X-File-Name")
    );
    assert_eq!(stand_in.forecasts().len(), 1);
}

#[tokio::test]
async fn forecast_upload_failure_plan_answers_status_without_recording() {
    let (stand_in, handle, client) = start(StandInConfig::default()).await;
    stand_in.fail_forecast_uploads(FailurePlan {
        after: 0,
        status: 503,
        times: 1,
    });
    let send = || {
        client
            .post(handle.url(FORECASTS))
            .header("x-file-name", "f.csv")
            .body(vec![b'9'; 100_000])
            .send()
    };
    assert_eq!(
        send().await.unwrap().status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(send().await.unwrap().status(), StatusCode::OK);
    assert_eq!(stand_in.forecasts().len(), 1);
}

#[tokio::test]
async fn outcome_ack_recorded_and_bad_ack_type_rejected() {
    let (stand_in, handle, client) = start(StandInConfig::default()).await;
    let ack = json!({"ackType": "SUCCESS", "forecastId": "LRF-1", "devices": ["D-1"]});

    let (status, answer) = post_json(&client, &handle, OUTCOME, ack.clone()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer, json!({"received": true}));
    let (status, _) = post_json(&client, &handle, OUTCOME, json!({"ackType": "FAILURE"})).await;
    assert_eq!(status, StatusCode::OK);

    for bad in [
        json!({"ackType": "MAYBE"}),
        json!({"ackType": 1}),
        json!({}),
    ] {
        let (status, answer) = post_json(&client, &handle, OUTCOME, bad.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
        assert!(
            answer["message"].as_str().unwrap().contains("ackType"),
            "{answer}"
        );
    }

    stand_in.fail_outcome_acks(FailurePlan::always(401));
    let response = client
        .post(handle.url(OUTCOME))
        .json(&ack)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(response.headers().contains_key("www-authenticate"));

    assert_eq!(
        stand_in.outcome_acks(),
        vec![ack, json!({"ackType": "FAILURE"})]
    );
}

#[tokio::test]
async fn admin_endpoints_inspect_configure_and_reset() {
    let (stand_in, handle, client) = start(StandInConfig::default()).await;

    // Configure over HTTP.
    let (status, answer) = post_json(
        &client,
        &handle,
        "/_standin/fail",
        json!({"endpoint": "sync-requests", "after": 1, "status": 503, "times": 1}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let (status, _) = post_json(
        &client,
        &handle,
        "/_standin/forecast-ack",
        json!({"ackType": "FAILURE"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = post_json(
        &client,
        &handle,
        "/_standin/fail",
        json!({"endpoint": "nope", "status": 500}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = post_json(
        &client,
        &handle,
        "/_standin/fail",
        json!({"endpoint": "forecasts", "status": 200}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let (s1, _) = post_json(&client, &handle, SYNC, json!({"syncRequestId": "A"})).await;
    let (s2, _) = post_json(&client, &handle, SYNC, json!({"syncRequestId": "B"})).await;
    assert_eq!((s1.as_u16(), s2.as_u16()), (200, 503));
    let upload = client
        .post(handle.url(FORECASTS))
        .header("x-file-name", "f.csv")
        .body("a,b\n1,2\n")
        .send()
        .await
        .unwrap();
    assert_eq!(upload.json::<Value>().await.unwrap()["ackType"], "FAILURE");
    post_json(&client, &handle, OUTCOME, json!({"ackType": "SUCCESS"})).await;
    let unknown = client.get(handle.url("/nowhere")).send().await.unwrap();
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);

    // Inspect over HTTP.
    assert_eq!(
        get_json(&client, &handle, "/_standin/sync-requests").await,
        json!([{"syncRequestId": "A"}])
    );
    assert_eq!(
        get_json(&client, &handle, "/_standin/forecasts").await,
        json!([{"forecastId": "LRF-1", "fileName": "f.csv", "size": 8, "contentType": null}])
    );
    assert_eq!(
        get_json(&client, &handle, "/_standin/outcome-acks").await,
        json!([{"ackType": "SUCCESS"}])
    );
    let journal = get_json(&client, &handle, "/_standin/journal").await;
    let expected = [
        ("POST", SYNC, 200),
        ("POST", SYNC, 503),
        ("POST", FORECASTS, 200),
        ("POST", OUTCOME, 200),
        ("GET", "/nowhere", 404),
    ];
    let expected_entries: Vec<JournalEntry> = expected
        .iter()
        .map(|&(method, path, status)| JournalEntry {
            method: method.into(),
            path: path.into(),
            status,
        })
        .collect();
    assert_eq!(stand_in.journal(), expected_entries);
    assert_eq!(journal, serde_json::to_value(&expected_entries).unwrap());

    // Reset over HTTP forgets everything, including the configured ack.
    let response = client
        .post(handle.url("/_standin/reset"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(stand_in.sync_requests().is_empty());
    assert!(stand_in.forecasts().is_empty());
    assert!(stand_in.outcome_acks().is_empty());
    assert!(stand_in.journal().is_empty());
    let (status, _) = post_json(&client, &handle, SYNC, json!({"syncRequestId": "A"})).await;
    assert_eq!(status, StatusCode::OK, "accepted ids are forgotten too");
    let upload = client
        .post(handle.url(FORECASTS))
        .header("x-file-name", "g.csv")
        .body("x")
        .send()
        .await
        .unwrap();
    let answer: Value = upload.json().await.unwrap();
    assert_eq!(
        (answer["ackType"].as_str(), answer["forecastId"].as_str()),
        (Some("SUCCESS"), Some("LRF-1"))
    );
}

#[tokio::test]
async fn handle_stops_server() {
    let (_stand_in, handle, client) = start(StandInConfig::default()).await;
    let url = handle.url("/healthz");
    assert!(handle.base_url().starts_with("http://127.0.0.1:"));
    assert_eq!(
        client.get(&url).send().await.unwrap().status(),
        StatusCode::OK
    );
    handle.stop().await.unwrap();
    assert!(reqwest::Client::new().get(&url).send().await.is_err());
}

#[tokio::test]
async fn only_the_latest_are_kept_for_inspection_and_every_accepted_id_stays_a_duplicate() {
    let config = StandInConfig {
        keep: 3,
        ..StandInConfig::default()
    };
    let (stand_in, handle, client) = start(config).await;
    for i in 1..=5 {
        let (status, _) = post_json(
            &client,
            &handle,
            SYNC,
            json!({"syncRequestId": format!("SR-{i}")}),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
    }
    // the oldest body is no longer kept, but its id still is: a repeat is refused
    let (status, answer) =
        post_json(&client, &handle, SYNC, json!({"syncRequestId": "SR-1"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(answer, json!({"message": "duplicate sync request id SR-1"}));
    let ids = accepted_ids(&stand_in);
    assert_eq!(ids, [json!("SR-3"), json!("SR-4"), json!("SR-5")]);
    let over_http = get_json(&client, &handle, "/_standin/sync-requests").await;
    assert_eq!(over_http.as_array().map(Vec::len), Some(3));
    // the journal keeps the last three requests: SR-4, SR-5 and the refused repeat
    let statuses: Vec<u16> = stand_in.journal().iter().map(|e| e.status).collect();
    assert_eq!(statuses, [200, 200, 400]);
    for (i, name) in ["a.csv", "b.csv", "c.csv", "d.csv"].iter().enumerate() {
        let response = client
            .post(handle.url(FORECASTS))
            .header("X-File-Name", *name)
            .body(vec![b'0' + i as u8; 10])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    let names: Vec<String> = stand_in
        .forecasts()
        .into_iter()
        .map(|f| f.file_name)
        .collect();
    assert_eq!(names, ["b.csv", "c.csv", "d.csv"]);
    handle.stop().await.unwrap();
}
