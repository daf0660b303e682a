//! `tribute serve --otlp URL`: the binary exports its spans over OTLP/HTTP. A collector in
//! the test (a plain HTTP listener that decodes the protobuf bodies with the OpenTelemetry
//! protocol's own types) receives one trace per chat completion: the request span, the ask
//! under it and the stages under the ask, in order; the rest is exported when SIGTERM
//! stops the server.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;

use crate::{ingest_sample, tribute};

/// The engine's stages inside an ask, in the order they run.
const STAGES: [&str; 6] = [
    "retrieve",
    "prompt",
    "prefill",
    "decode",
    "attribute",
    "sign",
];

/// One exported batch: the service name of its resource, and its spans.
type Batch = (String, Vec<Span>);

/// Accepts OTLP/HTTP posts on a free port; each decoded body goes to the receiver.
fn collector() -> (String, mpsc::Receiver<Batch>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the collector");
    let url = format!(
        "http://{}/v1/traces",
        listener.local_addr().expect("collector address")
    );
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            if let Some(batches) = receive(stream) {
                for b in batches {
                    if tx.send(b).is_err() {
                        return;
                    }
                }
            }
        }
    });
    (url, rx)
}

/// Reads one HTTP request (keep-alive requests in turn), answers 200 and decodes each body.
fn receive(stream: TcpStream) -> Option<Vec<Batch>> {
    let mut out = Vec::new();
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut writer = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return Some(out);
        }
        assert!(line.starts_with("POST /v1/traces "), "OTLP request: {line}");
        let mut length = 0;
        loop {
            let mut header = String::new();
            reader.read_line(&mut header).ok()?;
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            let lower = header.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                length = v.trim().parse().expect("content length");
            }
            if let Some(v) = lower.strip_prefix("content-type:") {
                assert_eq!(
                    v.trim(),
                    "application/x-protobuf",
                    "OTLP/HTTP with protobuf"
                );
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).ok()?;
        writer
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n")
            .ok()?;
        let request = ExportTraceServiceRequest::decode(body.as_slice()).expect("an OTLP body");
        for rs in request.resource_spans {
            let service = rs
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                    AnyValue::StringValue(s) => Some(s.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            let spans = rs.scope_spans.into_iter().flat_map(|s| s.spans).collect();
            out.push((service, spans));
        }
    }
}

/// Starts `tribute serve` on a free port; returns the child and its address.
fn serve(config: &std::path::Path, otlp: &str) -> (Child, String) {
    let mut child = tribute()
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--otlp",
            otlp,
            "--config",
        ])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start tribute serve");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("tribute serve exited before listening")
            .expect("stderr line");
        if let Some(rest) = line.split("listening on http://").nth(1) {
            break rest.split_whitespace().next().expect("address").to_owned();
        }
    };
    // Keep draining stderr so the server never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    (child, addr)
}

/// One HTTP/1.1 request with request id `id` (`body`: a JSON POST); returns the status
/// line and the body.
fn http(addr: &str, id: &str, path: &str, body: Option<&serde_json::Value>) -> (String, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    let head = format!("host: {addr}\r\nx-request-id: {id}\r\nconnection: close\r\n");
    match body {
        Some(b) => {
            let b = b.to_string();
            write!(
                s,
                "POST {path} HTTP/1.1\r\n{head}content-type: application/json\r\n\
                 content-length: {}\r\n\r\n{b}",
                b.len()
            )
        }
        None => write!(s, "GET {path} HTTP/1.1\r\n{head}\r\n"),
    }
    .expect("send");
    let mut reply = String::new();
    s.read_to_string(&mut reply).expect("reply");
    let (head, body) = reply.split_once("\r\n\r\n").expect("an HTTP reply");
    (
        head.lines().next().unwrap_or_default().to_owned(),
        body.to_owned(),
    )
}

#[test]
fn serve_exports_each_request_as_one_trace_over_otlp() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kb = dir.path().join("kb");
    ingest_sample(&kb);
    let config = dir.path().join("tribute.toml");
    std::fs::write(&config, format!("index = {:?}\n", kb.display().to_string())).expect("config");
    let (url, batches) = collector();
    let (mut child, addr) = serve(&config, &url);

    let (_, models) = http(&addr, "otel-models", "/v1/models", None);
    let models: serde_json::Value = serde_json::from_str(&models).expect("models JSON");
    let model = models["data"][0]["id"].as_str().expect("the base model");
    let ask = serde_json::json!({
        "model": model,
        "max_tokens": 8,
        "messages": [{"role": "user", "content": "How long does a full charge take?"}],
    });
    let (status, body) = http(&addr, "otel-ask", "/v1/chat/completions", Some(&ask));
    assert!(status.contains(" 200 "), "{status}\n{body}");

    // SIGTERM: the server finishes, then the binary exports what is still buffered.
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let exit = child.wait().expect("tribute serve exits");
    assert!(exit.success(), "tribute serve: {exit}");

    let mut spans = Vec::new();
    while let Ok((service, batch)) = batches.recv_timeout(Duration::from_secs(5)) {
        assert_eq!(service, "tribute-server");
        spans.extend(batch);
    }
    let attr = |s: &Span, key: &str| {
        s.attributes.iter().find(|kv| kv.key == key).and_then(|kv| {
            match kv.value.as_ref()?.value.as_ref()? {
                AnyValue::StringValue(v) => Some(v.clone()),
                _ => None,
            }
        })
    };
    let request = |id: &str| {
        spans
            .iter()
            .find(|s| attr(s, "http.request_id").as_deref() == Some(id))
            .unwrap_or_else(|| panic!("the span of request {id} was exported"))
    };
    let listing = request("otel-models");
    assert_eq!(listing.name, "GET /v1/models");
    let request = request("otel-ask");
    assert_eq!(request.name, "POST /v1/chat/completions");
    assert_ne!(listing.trace_id, request.trace_id, "one trace per request");
    let ask = spans
        .iter()
        .find(|s| s.name == "ask" && s.parent_span_id == request.span_id)
        .expect("the ask span under the request");
    let mut stages: Vec<&Span> = spans
        .iter()
        .filter(|s| s.parent_span_id == ask.span_id)
        .collect();
    stages.sort_by_key(|s| s.start_time_unix_nano);
    let names: Vec<&str> = stages.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, STAGES);
    for s in std::iter::once(ask).chain(stages) {
        assert_eq!(s.trace_id, request.trace_id, "{}", s.name);
        assert!(s.end_time_unix_nano >= s.start_time_unix_nano, "{}", s.name);
    }
}

#[test]
fn an_otlp_url_that_is_not_one_is_refused_before_serving() {
    let o = crate::run(tribute().args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--otlp",
        "not a url",
        "--config",
        "missing.toml",
    ]));
    assert!(!o.status.success());
    let err = crate::stderr(&o);
    // Refused by the exporter, before the config is even read.
    assert!(
        err.contains("OpenTelemetry") && err.contains("'not a url'"),
        "{err}"
    );
    assert!(!err.contains("missing.toml"), "{err}");
}
