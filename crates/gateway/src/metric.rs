//! Every metric a node exports (`/metrics`, Prometheus text): the names, used by the
//! code that records them, and [`register`], which describes each one and shows it
//! from the start, so a fresh node's first scrape lists them all (at zero).

/// Open WebSocket connections on this node (gauge).
pub const CONNECTIONS_OPEN: &str = "chat_connections_open";
/// Users with a pub/sub subscription from this node (gauge).
pub const PUBSUB_SUBSCRIPTIONS: &str = "chat_pubsub_subscriptions";
/// `hello` frames received (counter).
pub const HELLOS: &str = "chat_hello_total";
/// Successful sign-ins, by `kind` (counter).
pub const SIGN_INS: &str = "chat_sign_ins_total";
/// The `kind` label values of [`SIGN_INS`].
pub const SIGN_IN_KINDS: [&str; 3] = ["token", "session", "guest"];
/// Messages accepted from senders: socket and API (counter).
pub const MESSAGES_RECEIVED: &str = "chat_messages_received_total";
/// Message events written to sockets (counter).
pub const MESSAGES_DELIVERED: &str = "chat_messages_delivered_total";
/// Reconnections that replayed missed messages (counter).
pub const RECOVERY_REPLAYS: &str = "chat_recovery_replays_total";
/// Inbox reads that filled a gap in the live events (counter).
pub const GAP_READS: &str = "chat_gap_reads_total";
/// Presence counts dropped after a failed decrement (counter).
pub const PRESENCE_REPAIRS: &str = "chat_presence_repairs_total";
/// Requests refused by their budget, by `kind` (counter).
pub const RATE_LIMITED: &str = "chat_rate_limited_total";
/// Connections closed 4010 because their outbox was full (counter).
pub const SLOW_CONSUMER_CLOSES: &str = "chat_slow_consumer_closes_total";
/// Connections closed 4010 because a socket write did not complete within the ping
/// timeout (counter).
pub const WRITE_TIMEOUTS: &str = "chat_write_timeouts_total";
/// Connections closed 1013 because a gap in their live events could not be read from
/// the inbox (counter): the client resumes from its cursor.
pub const GAP_CLOSES: &str = "chat_gap_closes_total";
/// WebSocket upgrades refused by the admission caps, by `reason` (`per_ip`,
/// `before_hello`, `sign_in`) (counter).
pub const ADMISSION_REFUSALS: &str = "chat_admission_refusals_total";
/// WebSocket upgrades refused for their `Origin` (counter).
pub const ORIGIN_REFUSALS: &str = "chat_origin_refusals_total";
/// Engine calls that failed (counter).
pub const REDIS_ERRORS: &str = "chat_redis_errors_total";
/// Fetches of the identity provider's key set, by `outcome` (`ok`, `error`) (counter).
pub const JWKS_FETCHES: &str = "chat_jwks_fetches_total";
/// The `outcome` label values of [`JWKS_FETCHES`].
pub const JWKS_FETCH_OUTCOMES: [&str; 2] = ["ok", "error"];
/// Keys of the identity provider's key set this node holds (gauge); 0 while a
/// configured set has not been fetched.
pub const JWKS_KEYS: &str = "chat_jwks_keys";
/// Seconds from a `send` frame's arrival to its `ack` (histogram).
pub const SEND_ACK_SECONDS: &str = "chat_send_ack_seconds";
/// Seconds an engine call took, by `op` (histogram).
pub const REDIS_COMMAND_SECONDS: &str = "chat_redis_command_seconds";
/// The `op` label values of [`REDIS_COMMAND_SECONDS`].
pub const REDIS_COMMAND_OPS: [&str; 1] = ["send"];

/// The counters: name and help text.
pub const COUNTERS: [(&str, &str); 15] = [
    (HELLOS, "hello frames received"),
    (
        SIGN_INS,
        "Successful sign-ins, by kind (token, session, guest)",
    ),
    (
        MESSAGES_RECEIVED,
        "Messages accepted from senders (WebSocket and HTTP API)",
    ),
    (MESSAGES_DELIVERED, "Message events written to sockets"),
    (
        RECOVERY_REPLAYS,
        "Reconnections that replayed missed messages",
    ),
    (
        GAP_READS,
        "Inbox reads that filled a gap in the live events",
    ),
    (
        PRESENCE_REPAIRS,
        "Presence counts dropped after a failed decrement",
    ),
    (
        RATE_LIMITED,
        "Requests refused by the user's budget, by kind (send, typing, history, ...)",
    ),
    (
        SLOW_CONSUMER_CLOSES,
        "Connections closed 4010 because their outgoing queue was full",
    ),
    (
        ORIGIN_REFUSALS,
        "WebSocket upgrades refused for their Origin",
    ),
    (REDIS_ERRORS, "Engine (Redis) calls that failed"),
    (
        ADMISSION_REFUSALS,
        "WebSocket upgrades refused by the admission caps, by reason (per_ip, before_hello, sign_in)",
    ),
    (
        WRITE_TIMEOUTS,
        "Connections closed 4010 because a socket write did not complete within the ping timeout",
    ),
    (
        GAP_CLOSES,
        "Connections closed 1013 because a gap in their live events could not be filled",
    ),
    (
        JWKS_FETCHES,
        "Fetches of the identity provider's key set (auth.jwks_url), by outcome (ok, error)",
    ),
];

/// The gauges: name and help text.
pub const GAUGES: [(&str, &str); 3] = [
    (CONNECTIONS_OPEN, "Open WebSocket connections on this node"),
    (
        PUBSUB_SUBSCRIPTIONS,
        "Users with a pub/sub subscription from this node",
    ),
    (
        JWKS_KEYS,
        "Keys of the identity provider's key set held by this node (0: none fetched)",
    ),
];

/// The histograms: name and help text.
pub const HISTOGRAMS: [(&str, &str); 2] = [
    (
        SEND_ACK_SECONDS,
        "Seconds from a send frame's arrival to its ack",
    ),
    (REDIS_COMMAND_SECONDS, "Seconds an engine call took, by op"),
];

/// Describes every metric and registers it at zero, so it is listed before it first
/// moves. Idempotent (adds zero); call once the recorder is installed.
pub fn register() {
    for (name, help) in COUNTERS {
        metrics::describe_counter!(name, help);
        if name == SIGN_INS {
            for kind in SIGN_IN_KINDS {
                metrics::counter!(name, "kind" => kind).increment(0);
            }
        } else if name == ADMISSION_REFUSALS {
            for reason in crate::admission::Refusal::ALL {
                metrics::counter!(name, "reason" => reason.as_str()).increment(0);
            }
        } else if name == JWKS_FETCHES {
            for outcome in JWKS_FETCH_OUTCOMES {
                metrics::counter!(name, "outcome" => outcome).increment(0);
            }
        } else if name == RATE_LIMITED {
            for kind in crate::limits::Kind::ALL {
                metrics::counter!(name, "kind" => kind.as_str()).increment(0);
            }
        } else {
            metrics::counter!(name).increment(0);
        }
    }
    for (name, help) in GAUGES {
        metrics::describe_gauge!(name, help);
        metrics::gauge!(name).increment(0.0);
    }
    for (name, help) in HISTOGRAMS {
        metrics::describe_histogram!(name, metrics::Unit::Seconds, help);
        // A registered histogram is exported (as an empty summary) before any sample.
        if name == REDIS_COMMAND_SECONDS {
            for op in REDIS_COMMAND_OPS {
                let _ = metrics::histogram!(name, "op" => op);
            }
        } else {
            let _ = metrics::histogram!(name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_lists_every_metric_with_its_help() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, register);
        let text = handle.render();
        for (name, help) in COUNTERS.iter().chain(&GAUGES).chain(&HISTOGRAMS) {
            assert!(
                text.contains(&format!("# HELP {name} {help}\n")),
                "{name} described:\n{text}"
            );
        }
        for (name, _) in COUNTERS.iter().chain(&GAUGES) {
            let zero = text
                .lines()
                .filter(|l| {
                    l.starts_with(&format!("{name} ")) || l.starts_with(&format!("{name}{{"))
                })
                .all(|l| l.ends_with(" 0"));
            assert!(
                zero && text.contains(&format!("\n{name}")),
                "{name} at 0:\n{text}"
            );
        }
        for kind in SIGN_IN_KINDS {
            assert!(
                text.contains(&format!("{SIGN_INS}{{kind=\"{kind}\"}} 0\n")),
                "{text}"
            );
        }
        for (name, _) in HISTOGRAMS {
            assert!(text.contains(&format!("# TYPE {name} summary\n")), "{text}");
        }
        assert!(
            text.contains(&format!("{REDIS_COMMAND_SECONDS}_count{{op=\"send\"}} 0\n")),
            "{text}"
        );
        assert!(
            text.contains(&format!("{SEND_ACK_SECONDS}_count 0\n")),
            "{text}"
        );
        // Registering again (a second state in one process) moves nothing.
        metrics::with_local_recorder(&recorder, || {
            metrics::counter!(HELLOS).increment(2);
            metrics::gauge!(CONNECTIONS_OPEN).increment(1.0);
            register();
        });
        let text = handle.render();
        assert!(text.contains(&format!("\n{HELLOS} 2\n")), "{text}");
        assert!(
            text.contains(&format!("\n{CONNECTIONS_OPEN} 1\n")),
            "{text}"
        );
    }
}
