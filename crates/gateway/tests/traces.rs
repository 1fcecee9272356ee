//! Traces: with an OTLP endpoint configured, one send is one trace that crosses
//! nodes — the sender's node exports `chat.send`, the recipient's node exports
//! `chat.deliver` as its child (the context travels in the live payload). The
//! collector here is a real HTTP server decoding the OTLP protobuf the nodes export.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use common::*;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use prost::Message as _;

/// A span as the collector saw it.
#[derive(Debug, Clone)]
struct Seen {
    node: String,
    name: String,
    trace_id: Vec<u8>,
    span_id: Vec<u8>,
    parent_span_id: Vec<u8>,
}

type Spans = Arc<Mutex<Vec<Seen>>>;

async fn collect(State(spans): State<Spans>, body: Bytes) -> &'static str {
    let request = ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
    let mut spans = spans.lock().expect("lock");
    for resource in request.resource_spans {
        let node = resource
            .resource
            .iter()
            .flat_map(|r| r.attributes.iter())
            .find(|kv| kv.key == "service.instance.id")
            .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                Value::StringValue(s) => Some(s.clone()),
                _ => None,
            })
            .unwrap_or_default();
        for scope in resource.scope_spans {
            for span in scope.spans {
                spans.push(Seen {
                    node: node.clone(),
                    name: span.name,
                    trace_id: span.trace_id,
                    span_id: span.span_id,
                    parent_span_id: span.parent_span_id,
                });
            }
        }
    }
    ""
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_is_one_trace_across_nodes() {
    let spans: Spans = Arc::default();
    let app = axum::Router::new()
        .route("/v1/traces", post(collect))
        .with_state(spans.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });

    let env = [
        ("CHAT_TELEMETRY__OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ];
    let cluster = Cluster::start(Engine::Redis, 2, &env);
    let mut alice = guest(&cluster.url(0), "alice").await;
    let mut bob = guest(&cluster.url(1), "bob").await;
    let bob_id = bob.user_id().to_string();
    let m = alice.send(&bob_id, "traced").await.expect("send");
    assert_eq!(expect_message(&mut bob, "the traced message").await, m);

    let (send, deliver) = eventually(
        "chat.send on gw-a and its chat.deliver on gw-b",
        Duration::from_secs(20),
        || {
            let spans = spans.lock().expect("lock").clone();
            async move {
                let send = spans
                    .iter()
                    .find(|s| s.name == "chat.send" && s.node == "gw-a")?
                    .clone();
                let deliver = spans
                    .iter()
                    .find(|s| {
                        s.name == "chat.deliver" && s.node == "gw-b" && s.trace_id == send.trace_id
                    })?
                    .clone();
                Some((send, deliver))
            }
        },
    )
    .await;
    assert_eq!(send.trace_id.len(), 16);
    assert!(
        send.parent_span_id.is_empty(),
        "each send is a root span, not a child of the connection"
    );
    assert_eq!(
        deliver.parent_span_id, send.span_id,
        "delivery continues the send's span"
    );
}
