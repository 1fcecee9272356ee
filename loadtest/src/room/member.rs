//! One member of the `room` scenario: signs in, joins its room, reports ready, then
//! sends its share of the room's messages on schedule while it reads every frame,
//! recording which room messages it received, in what order, and each one's latency
//! from its intended time. Stops when told to, or when the server closes.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use chat_protocol::{ClientFrame, ServerFrame};
use futures_util::StreamExt;
use tokio::sync::{oneshot, watch};
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::net::{self, Ws};
use crate::record::{self, now_us, Counters, SharedRecorder};

use super::{Go, MemberOutcome, MemberSpec};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// The frames a member acts on during the run, read loosely: a room `message` frame
/// carries no connection `cursor` (which [`ServerFrame::Message`] requires).
#[derive(serde::Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Incoming {
    Ack {
        #[serde(default, rename = "ref")]
        reference: Option<String>,
        message: chat_protocol::Message,
    },
    Error {
        #[serde(default, rename = "ref")]
        reference: Option<String>,
        #[serde(default)]
        code: String,
    },
    Message {
        message: chat_protocol::Message,
    },
    #[serde(other)]
    Other,
}

/// The ordering key of a stream id `ms-seq`.
fn id_key(id: &str) -> (u64, u64) {
    let (a, b) = id.split_once('-').unwrap_or((id, "0"));
    (a.parse().unwrap_or(0), b.parse().unwrap_or(0))
}

fn body(room: u64, k: u64, intended_us: u64) -> String {
    format!("lr {room} {k} {intended_us}")
}

fn parse_body(body: &str) -> Option<(u64, u64, u64)> {
    let mut p = body.split(' ');
    (p.next()? == "lr").then_some(())?;
    Some((
        p.next()?.parse().ok()?,
        p.next()?.parse().ok()?,
        p.next()?.parse().ok()?,
    ))
}

pub(super) async fn member_task(
    spec: MemberSpec,
    ready: oneshot::Sender<Option<u32>>,
    go_rx: oneshot::Receiver<Go>,
    counters: Arc<Counters>,
    room_acked: Arc<Vec<AtomicU64>>,
    recorder: Arc<std::sync::OnceLock<SharedRecorder>>,
    mut stop: watch::Receiver<bool>,
) -> MemberOutcome {
    let mut out = MemberOutcome {
        room: spec.room,
        ..Default::default()
    };
    let signin = async {
        let mut ws = net::open(&spec.target, spec.source).await?;
        let w = net::hello(
            &mut ws,
            net::guest_hello(spec.username.clone()),
            CONNECT_TIMEOUT,
        )
        .await?;
        net::send(
            &mut ws,
            &ClientFrame::Join {
                reference: Some("j".into()),
                room: spec.room_id.clone(),
                name: None,
            },
        )
        .await?;
        // Wait for `joined` (member events of earlier joiners may come first).
        loop {
            match ws.next().await {
                Some(Ok(WsMessage::Text(t))) => match serde_json::from_str::<ServerFrame>(&t) {
                    Ok(ServerFrame::Joined { .. }) => break,
                    Ok(ServerFrame::Error { code, message, .. }) => {
                        bail!("join refused: {code:?}: {message}")
                    }
                    _ => {}
                },
                Some(Ok(_)) => {}
                _ => bail!("connection ended before joined"),
            }
        }
        anyhow::Ok((ws, w))
    };
    let (mut ws, welcome): (Ws, net::Welcome) =
        match tokio::time::timeout(CONNECT_TIMEOUT * 2, signin).await {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => {
                Counters::inc(&counters.connect_failures);
                out.connect_error = Some(format!("{e:#}"));
                let _ = ready.send(None);
                return out;
            }
            Err(_) => {
                Counters::inc(&counters.connect_failures);
                out.connect_error = Some("connect + hello + join timed out".into());
                let _ = ready.send(None);
                return out;
            }
        };
    Counters::inc(&counters.connected);
    out.connected = true;
    out.node = Some(welcome.node.clone());
    let _ = ready.send(Some(welcome.send_per_second));

    // Until `go`, keep reading (other members' `member` events) so nothing backs up.
    let mut go_rx = go_rx;
    let go = loop {
        tokio::select! {
            g = &mut go_rx => match g { Ok(g) => break g, Err(_) => return out },
            msg = ws.next() => match msg {
                Some(Ok(_)) => {}
                _ => { out.disconnected = true; return out; }
            },
        }
    };
    let Some(rec) = recorder.get().cloned() else {
        return out;
    };
    let far = go.start + Duration::from_secs(86_400);
    let mut next = 0usize;
    let mut last_id: Option<(u64, u64)> = None;
    let mut inflight = 0u64;
    let mut intended: BTreeMap<u64, u64> = BTreeMap::new();
    let mut reported_done = go.sends.is_empty();
    if reported_done {
        Counters::inc(&counters.senders_done);
    }
    loop {
        let due = go.sends.get(next).map_or(far, |&k| {
            go.start + go.offset + go.interval.mul_f64(k as f64)
        });
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            _ = tokio::time::sleep_until(due), if next < go.sends.len() => {
                let k = go.sends[next];
                next += 1;
                let intended_us = go.start_us + (go.offset + go.interval.mul_f64(k as f64)).as_micros() as u64;
                intended.insert(k, intended_us);
                out.sent += 1;
                inflight += 1;
                Counters::inc(&counters.sent);
                let frame = ClientFrame::RoomSend {
                    reference: Some(format!("s{k}")),
                    room: spec.room_id.clone(),
                    body: body(spec.room, k, intended_us),
                    nonce: Some(format!("{}-{k}", spec.nonce_prefix)),
                };
                if net::send(&mut ws, &frame).await.is_err() {
                    out.disconnected = true;
                    break;
                }
            }
            msg = ws.next() => {
                let text = match msg {
                    Some(Ok(WsMessage::Text(t))) => t,
                    Some(Ok(_)) => continue,
                    _ => { out.disconnected = true; break; }
                };
                let now = now_us();
                match serde_json::from_str::<Incoming>(&text) {
                    Ok(Incoming::Ack { reference, message }) => {
                        let Some(k) = reference.as_deref().and_then(|r| r.strip_prefix('s')).and_then(|r| r.parse().ok()) else { continue };
                        if out.acked.insert(k, message.id).is_none() {
                            Counters::inc(&counters.acked);
                            Counters::inc(&room_acked[spec.room as usize]);
                            inflight = inflight.saturating_sub(1);
                            if let Some(&i) = intended.get(&k) {
                                record::record_ack(&rec, i, now);
                            }
                        }
                    }
                    Ok(Incoming::Error { reference, code })
                        if reference.as_deref().is_some_and(|r| r.starts_with('s')) =>
                    {
                        *out.errors.entry(code).or_default() += 1;
                        Counters::inc(&counters.errors);
                        inflight = inflight.saturating_sub(1);
                    }
                    Ok(Incoming::Message { message }) => {
                        if message.room.as_deref() != Some(spec.room_id.as_str()) { continue }
                        let Some((_, k, intended_us)) = parse_body(&message.body) else { continue };
                        let key = id_key(&message.id);
                        if out.received.contains_key(&k) {
                            out.duplicated += 1;
                            continue;
                        }
                        if last_id.is_some_and(|l| key <= l) {
                            out.out_of_order += 1;
                        }
                        last_id = Some(last_id.map_or(key, |l| l.max(key)));
                        out.received.insert(k, message.id);
                        Counters::inc(&counters.received);
                        record::record_delivery(&rec, intended_us, now);
                    }
                    _ => {}
                }
            }
        }
        if !reported_done && next >= go.sends.len() && inflight == 0 {
            reported_done = true;
            Counters::inc(&counters.senders_done);
        }
    }
    let _ = ws.close(None).await;
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_and_ids() {
        assert_eq!(parse_body(&body(3, 17, 99)), Some((3, 17, 99)));
        assert_eq!(parse_body("lt 1 2"), None);
        assert!(id_key("10-2") < id_key("10-10"));
        assert!(id_key("9-5") < id_key("10-0"));
    }
}
