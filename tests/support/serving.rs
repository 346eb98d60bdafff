//! `ferry serve` in the test's own process, over a [`Workspace`]: its options, a start on a
//! free port, requests as a user, and a stop that waits for the server to end. A test crate
//! takes it with `#[path = "support/serving.rs"] mod serving;` beside `mod support;`.

#![allow(dead_code)] // each test crate uses part of it
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use ferry::compile::Inputs;
use ferry::connectors::Secret;
use ferry::serve::{Role, ServeOptions, User, Users, serve};
use serde_json::{Value, json};

use crate::support::Workspace;

/// The event-outcome flow, its REST trigger's path and the name of its sample file.
pub const EVENT_OUTCOME: &str = "OUTL-BA-DRMS_OUAI_EVT_OUTC_TRNFR";
pub const TRIGGER_PATH: &str =
    "/ic/api/integration/v1/flows/rest/OUTL-BA-DRMS_OUAI_EVT_OUTC_TRNFR/1.0/eventOutcome";
pub const OUTCOME_FILE: &str = "event_outcome.4011.20221213.csv";

/// The operator the servers know (name, password).
pub const OP: (&str, &str) = ("op", "op-secret");

/// A running server.
pub struct Serving {
    pub addr: SocketAddr,
    pub stop: Option<tokio::sync::oneshot::Sender<()>>,
    pub task: tokio::task::JoinHandle<Result<(), ferry::serve::ServeError>>,
    pub http: reqwest::Client,
}

impl Serving {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn get(&self, path: &str, who: Option<(&str, &str)>) -> (u16, Value) {
        self.send(self.http.get(self.url(path)), who).await
    }

    /// `GET path` without credentials: the body as text.
    pub async fn text(&self, path: &str) -> String {
        self.http
            .get(self.url(path))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub async fn post(&self, path: &str, who: Option<(&str, &str)>, body: Value) -> (u16, Value) {
        self.send(self.http.post(self.url(path)).json(&body), who)
            .await
    }

    /// Sends `req` as `who`; the status and the body (JSON, else the text as a string).
    pub async fn send(
        &self,
        mut req: reqwest::RequestBuilder,
        who: Option<(&str, &str)>,
    ) -> (u16, Value) {
        if let Some((u, p)) = who {
            req = req.basic_auth(u, Some(p));
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// Waits until run `id` has ended; returns its detail.
    pub async fn wait_run(&self, id: &str) -> Value {
        for _ in 0..200 {
            let (status, run) = self.get(&format!("/api/v1/runs/{id}"), Some(OP)).await;
            assert_eq!(status, 200, "{run}");
            if run["outcome"] != json!("running") {
                return run;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("run {id} did not end");
    }

    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        tokio::time::timeout(Duration::from_secs(20), self.task)
            .await
            .expect("serve stops")
            .unwrap()
            .unwrap();
    }
}

/// The operator [`OP`] alone.
pub fn operator() -> Users {
    Users::new(vec![User::new(
        OP.0,
        Secret::new(OP.1.into()),
        Role::Operator,
    )])
}

/// Options of a server over `ws` that knows `users`. The event-outcome flow loses its own
/// trigger credentials (serve refuses to start without them, and the test process cannot
/// set them): the trigger then takes the operator's.
pub fn options(ws: &Workspace, users: Users) -> ServeOptions {
    without_trigger_credentials(ws);
    ServeOptions {
        inputs: Inputs {
            paths: vec![ws.flows_dir()],
            lookups: Some(ws.lookups_dir()),
            connections: Some(ws.connections_path()),
        },
        data_dir: ws.path().join("state"),
        database_url: None,
        listen: "127.0.0.1:0".parse().unwrap(),
        instance: Some("test-instance".into()),
        grace: Duration::from_secs(5),
        schedules: false,
        watch: false,
        lease_ttl: Duration::from_secs(30),
        heartbeat: Duration::from_secs(5),
        retention: None,
        spool_dir: Some(ws.spool_dir()),
        users,
        limits: ferry::serve::Limits::default(),
        max_file_bytes: ferry::compile::DEFAULT_MAX_FILE_BYTES,
    }
}

/// Starts a server with `opts`; returns once it listens.
pub async fn start(opts: ServeOptions) -> Serving {
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (addr_tx, addr_rx) = tokio::sync::oneshot::channel::<SocketAddr>();
    let task = tokio::spawn(serve(
        opts,
        async move {
            let _ = stop_rx.await;
        },
        move |a| {
            let _ = addr_tx.send(a);
        },
    ));
    let addr = addr_rx.await.expect("serve listens");
    Serving {
        addr,
        stop: Some(stop_tx),
        task,
        http: reqwest::Client::new(),
    }
}

/// The workspace's event-outcome flow without its own credentials (the test process
/// cannot set environment variables): the trigger then takes the operator's.
pub fn without_trigger_credentials(ws: &Workspace) {
    let path = ws.flows_dir().join("event_outcome.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let Some(start) = text.find("    basic_auth:") else {
        return;
    };
    let end = text[start..].find("    max_body_mib").unwrap() + start;
    let mut out = text.clone();
    out.replace_range(start..end, "");
    std::fs::write(&path, out).unwrap();
}
