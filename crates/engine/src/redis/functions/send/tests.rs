//! `send.rs`: each value where `send.lua` reads it, and the replies parsed.

use super::*;

fn signature(name: &str) -> &'static super::super::Signature {
    SIGNATURES
        .iter()
        .find(|s| s.name == name)
        .expect("a signature")
}

fn slot(key: &str) -> u16 {
    fred::util::redis_keyslot(key.as_bytes())
}

#[test]
fn send_calls_put_each_value_where_the_lua_names_it() {
    let req = SendRequest {
        from: "bob".into(),
        to: "alice".into(),
        body: "hi".into(),
        nonce: None,
        nonce_ttl_secs: 60,
        sent_at: "2026-01-01T00:00:00.000Z".into(),
        trace: None,
    };
    let two = [req.clone(), req.clone()];
    let (keys, args) = send_call(
        [(&two[0], false), (&two[1], true)].into_iter(),
        "n1",
        &Retention::default(),
        7,
    );
    let send = signature(SEND);
    send.check_call(&keys, &args, 2);
    assert_eq!(keys.len(), 2 * SEND_KEYS);
    assert_eq!(args.len(), BATCH_ARGS + 2 * SEND_ARGS);
    assert_eq!(send.arg(&args, "now_ms"), "7");
    let retention = Retention::default();
    assert_eq!(
        send.arg(&args, "convs_max"),
        retention.convs_max.to_string()
    );
    for m in 0..2 {
        let key = |name: &str| send.each_key(&keys, m, name);
        for (name, expected) in [
            ("msgs", keys::conv_msgs("bob", "alice")),
            ("meta", keys::conv_meta("bob", "alice")),
            ("from_inbox", keys::inbox("bob")),
            ("from_head", keys::inbox_head("bob")),
            ("from_convs", keys::convs("bob")),
            ("from_ch", keys::channel("bob")),
            ("from_pres", keys::presence("bob")),
            ("to_inbox", keys::inbox("alice")),
            ("to_head", keys::inbox_head("alice")),
            ("to_convs", keys::convs("alice")),
            ("to_ch", keys::channel("alice")),
        ] {
            assert_eq!(key(name), expected, "{name}");
        }
        // Each call touches the conversation's slot and each user's.
        assert_eq!(slot(key("msgs")), slot(key("meta")));
        for user in ["from", "to"] {
            let inbox = slot(key(&format!("{user}_inbox")));
            for k in ["head", "convs", "ch"] {
                assert_eq!(slot(key(&format!("{user}_{k}"))), inbox);
            }
        }
        assert_eq!(slot(key("from_pres")), slot(key("from_inbox")));
        let arg = |name: &str| send.each_arg(&args, m, name);
        assert_eq!(arg("conversation"), "dm:alice:bob");
        assert_eq!(
            (arg("from"), arg("to"), arg("body")),
            ("bob", "alice", "hi")
        );
        assert_eq!(arg("sent_at"), req.sent_at);
        assert_eq!((arg("nonce"), arg("nonce_ttl")), ("", "60"));
        assert_eq!(arg("tail"), message_tail(&req));
        assert_eq!(arg("trace"), "");
    }
    assert_eq!(send.each_arg(&args, 0, "node"), "", "not subscribed here");
    assert_eq!(send.each_arg(&args, 1, "node"), "n1", "the sender is local");
}

#[test]
fn send_replies_rebuild_new_messages_and_parse_duplicates() {
    let req = |nonce: &str| SendRequest {
        from: "bob".into(),
        to: "alice".into(),
        body: "hi \"there\"".into(),
        nonce: Some(nonce.into()),
        nonce_ttl_secs: 60,
        sent_at: "2026-01-01T00:00:00.000Z".into(),
        trace: None,
    };
    let (new, retry) = (req("n1"), req("n0"));
    let requests = [(&new, true), (&retry, true)];
    let stored = Message {
        id: "3-0".into(),
        conversation: "dm:alice:bob".into(),
        from: "bob".into(),
        to: "alice".into(),
        body: "earlier".into(),
        sent_at: "2025-12-31T00:00:00.000Z".into(),
        room: None,
    };
    let s = |t: &str| Value::String(t.into());
    let reply = Value::Array(vec![
        Value::Integer(0),
        s("5-1"),
        s("9-0"),
        s("8-0"),
        Value::Integer(1),
        s("3-0"),
        s("7 bob 2025-12-31T00:00:00.000Z earlier"),
        s(""),
    ]);
    let out = parse_send_reply(reply, &requests).unwrap();
    let expected = Message {
        id: "5-1".into(),
        body: new.body.clone(),
        sent_at: new.sent_at.clone(),
        ..stored.clone()
    };
    assert!(!out[0].duplicate);
    assert_eq!(out[0].message, expected);
    assert_eq!(
        out[0].sender_entry,
        Some((
            StreamId::parse("9-0").unwrap(),
            StreamId::parse("8-0").unwrap()
        ))
    );
    assert!(out[1].duplicate);
    assert_eq!(out[1].message, stored);
    assert_eq!(out[1].sender_entry, None);
    assert!(parse_send_reply(Value::Array(vec![]), &requests).is_err());
    // A duplicate whose original was trimmed: rebuilt from the retried request.
    let trimmed = Value::Array(vec![Value::Integer(1), s("3-0"), s(""), s("")]);
    let out = parse_send_reply(trimmed, &requests[1..]).unwrap();
    assert!(out[0].duplicate);
    assert_eq!(
        out[0].message,
        Message {
            id: "3-0".into(),
            body: retry.body.clone(),
            sent_at: retry.sent_at.clone(),
            ..stored.clone()
        }
    );
    let conv = Value::Array(vec![Value::Integer(0), s("4-0"), s("")]);
    let out = parse_conv_append_reply(conv, &new).unwrap();
    assert_eq!((out.duplicate, out.message.id.as_str()), (false, "4-0"));
    assert_eq!(out.message.body, new.body);
    assert!(parse_conv_append_reply(Value::Array(vec![]), &new).is_err());
}

#[test]
fn message_tail_is_the_protocol_json_after_the_id() {
    let req = SendRequest {
        from: "bob".into(),
        to: "alice".into(),
        body: "say \"hi\" \u{1f600}\n".into(),
        nonce: None,
        nonce_ttl_secs: 60,
        sent_at: "2026-01-01T00:00:00.000Z".into(),
        trace: None,
    };
    let message = Message {
        id: "1733212312000-3".into(),
        conversation: dm_conversation("bob", "alice"),
        from: "bob".into(),
        to: "alice".into(),
        body: req.body.clone(),
        sent_at: req.sent_at.clone(),
        room: None,
    };
    // What send.lua's message_from_tail builds.
    let built = format!(r#"{{"id":"{}"{}"#, message.id, message_tail(&req));
    assert_eq!(built, serde_json::to_string(&message).unwrap());
}

#[test]
fn cluster_calls_are_slot_local_and_named_as_the_lua_names_them() {
    let req = SendRequest {
        from: "bob".into(),
        to: "alice".into(),
        body: "hi".into(),
        nonce: Some("n".into()),
        nonce_ttl_secs: 60,
        sent_at: "2026-01-01T00:00:00.000Z".into(),
        trace: None,
    };
    let (keys, args) = conv_append_call(&req, &Retention::default(), 7);
    let append = signature(CONV_APPEND);
    append.check_call(&keys, &args, 0);
    assert!(keys.iter().all(|k| slot(k) == slot(&keys[0])));
    assert_eq!(append.key(&keys, "meta"), keys::conv_meta("bob", "alice"));
    assert_eq!(append.arg(&args, "now_ms"), "7");
    assert_eq!(append.arg(&args, "conversation"), "dm:alice:bob");
    assert_eq!(append.arg(&args, "nonce"), "n");
    assert_eq!(append.arg(&args, "tail"), message_tail(&req));
    let message = Message {
        id: "1-0".into(),
        conversation: "dm:alice:bob".into(),
        from: "bob".into(),
        to: "alice".into(),
        body: "hi".into(),
        sent_at: "t".into(),
        room: None,
    };
    let (keys, args) = InboxAppend {
        user: "bob",
        other: "alice",
        event: "{}",
        stored: Stored::Message {
            message: &message,
            sent: true,
        },
        window: 16,
        trace: None,
        node: Some("n1"),
    }
    .call(&Retention::default());
    let inbox = signature(INBOX_APPEND);
    inbox.check_call(&keys, &args, 0);
    assert!(keys.iter().all(|k| slot(k) == slot(&keys[0])));
    assert_eq!(inbox.key(&keys, "pres"), keys::presence("bob"));
    let arg = |name| inbox.arg(&args, name);
    assert_eq!(
        [arg("kind"), arg("ref"), arg("other"), arg("dir")],
        ["m", "1-0", "alice", ">"]
    );
    assert_eq!(
        (arg("body"), arg("sent_at"), arg("score")),
        ("hi", "t", "1")
    );
    let convs_max = Retention::default().convs_max.to_string();
    assert_eq!(arg("convs_max"), convs_max);
    assert_eq!(
        (arg("window"), arg("node"), arg("event")),
        ("16", "n1", "{}")
    );
}
