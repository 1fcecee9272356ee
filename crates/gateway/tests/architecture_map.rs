//! `docs/architecture.md` is a map that must not drift: every Redis function the
//! engine registers and every file of the bundled web client is named in it, and it
//! stays a map (short), not a second copy of the code.

use std::fs;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn map() -> String {
    fs::read_to_string(root().join("docs/architecture.md")).expect("docs/architecture.md")
}

/// The names of `redis.register_function('<name>', …)` in every Lua file.
fn registered_functions() -> Vec<String> {
    let dir = root().join("crates/engine/src/redis/scripts");
    let mut names = Vec::new();
    for entry in fs::read_dir(&dir).expect("scripts dir") {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "lua") {
            let text = fs::read_to_string(&path).unwrap();
            for rest in text.split("redis.register_function(").skip(1) {
                let quoted = rest.trim_start();
                let q = quoted.chars().next().expect("a name");
                assert!(q == '\'' || q == '"', "{}: {quoted:.40}", path.display());
                let name: String = quoted[1..].chars().take_while(|&c| c != q).collect();
                names.push(name);
            }
        }
    }
    names.sort();
    names
}

/// Whether `text` names `word` as a whole word (`chat_read` is not named by
/// `chat_read_marker`, nor `app.js` by `webapp.js`).
fn names(text: &str, word: &str) -> bool {
    let part = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    text.match_indices(word).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + word.len()..].chars().next();
        !before.is_some_and(part) && !after.is_some_and(part)
    })
}

#[test]
fn every_registered_lua_function_is_on_the_map() {
    let map = map();
    let functions = registered_functions();
    // The library registers a good number of functions; finding none means the
    // parsing above broke, not that the map is complete.
    assert!(functions.len() >= 15, "found only {functions:?}");
    let missing: Vec<_> = functions.iter().filter(|f| !names(&map, f)).collect();
    assert!(
        missing.is_empty(),
        "docs/architecture.md does not name these Redis functions: {missing:?}"
    );
}

#[test]
fn every_web_client_file_is_on_the_map() {
    let map = map();
    let dir = root().join("crates/gateway/src/web");
    let mut files: Vec<String> = fs::read_dir(&dir)
        .expect("web dir")
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".js"))
        .collect();
    files.sort();
    assert!(files.len() >= 5, "found only {files:?}");
    let missing: Vec<_> = files.iter().filter(|f| !names(&map, f)).collect();
    assert!(
        missing.is_empty(),
        "docs/architecture.md does not name these web client files: {missing:?}"
    );
}

#[test]
fn the_map_names_its_api_boundaries_and_stays_short() {
    let map = map();
    for boundary in ["chat-protocol", "chat-client"] {
        assert!(
            map.lines()
                .any(|l| l.contains(boundary) && l.contains("API boundary")),
            "the map should mark {boundary} as an API boundary"
        );
    }
    // Half of the 760 lines it had before it became a map.
    let lines = map.lines().count();
    assert!(lines <= 380, "docs/architecture.md has {lines} lines");
}
