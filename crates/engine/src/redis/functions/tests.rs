//! Each Rust module against its Lua file: every function a module names is registered
//! in its file and the other way round, and each registered function opens by naming
//! its `KEYS` and `ARGV` as locals, the same names in the same order as the module's
//! signature. No function reads `keys[…]` or `args[…]` anywhere else, and no helper
//! reads them at all, so a value is read by name or not at all.

use super::*;

/// Each module's Lua file and signatures, in library order (after `inbox.lua`).
const MODULES: [(&str, &str, &[Signature]); 4] = [
    ("send.lua", send::LUA, send::SIGNATURES),
    ("receipts.lua", receipts::LUA, receipts::SIGNATURES),
    ("presence.lua", presence::LUA, presence::SIGNATURES),
    ("rooms.lua", rooms::LUA, rooms::SIGNATURES),
];

const INBOX_LUA: &str = include_str!("../scripts/inbox.lua");

/// A registered function as its Lua opens it.
#[derive(Default, Debug)]
struct Opened {
    name: String,
    /// Named fixed keys and arguments (`local a, b = keys[1], keys[2]`): the Lua
    /// index and the name.
    keys: Vec<(usize, String)>,
    args: Vec<(usize, String)>,
    /// Named per-message ones (`local a = keys[k + 1]`): the offset and the name.
    each_keys: Vec<(usize, String)>,
    each_args: Vec<(usize, String)>,
    /// Lines that read `keys[…]` or `args[…]` other than to name them first.
    stray: Vec<String>,
}

/// `local a, b = keys[1], args[k + 2]`: each name with its table (`keys` or `args`),
/// whether it is per message (an offset from a loop variable) and its index.
fn naming(line: &str) -> Option<Vec<(String, &str, bool, usize)>> {
    let code = line.split("--").next()?.trim();
    let (names, values) = code.strip_prefix("local ")?.split_once(" = ")?;
    let names: Vec<&str> = names.split(", ").collect();
    let values: Vec<&str> = values.split(", ").collect();
    if names.len() != values.len() {
        return None;
    }
    names
        .iter()
        .zip(values)
        .map(|(name, value)| {
            let (table, rest) = value.split_once('[')?;
            if table != "keys" && table != "args" {
                return None;
            }
            let index = rest.strip_suffix(']')?;
            let (each, index) = match index.split_once(" + ") {
                Some((_, offset)) => (true, offset),
                None => (false, index),
            };
            Some((name.to_string(), table, each, index.parse().ok()?))
        })
        .collect()
}

/// Every registered function of a Lua file, and the lines outside them that read
/// `keys[…]` or `args[…]`.
fn registered(lua: &str) -> (Vec<Opened>, Vec<String>) {
    let reads = |line: &str| line.contains("keys[") || line.contains("args[");
    let (mut functions, mut outside) = (Vec::new(), Vec::new());
    let mut current: Option<Opened> = None;
    let mut opening = false;
    for line in lua.lines() {
        if let Some(rest) = line.strip_prefix("redis.register_function('") {
            let (name, rest) = rest.split_once('\'').expect("a quoted name");
            assert_eq!(rest, ", function(keys, args)", "{name}: its opening line");
            current = Some(Opened {
                name: name.to_string(),
                ..Opened::default()
            });
            opening = true;
            continue;
        }
        let Some(f) = current.as_mut() else {
            if reads(line) {
                outside.push(line.to_string());
            }
            continue;
        };
        if line == "end)" {
            functions.extend(current.take());
            continue;
        }
        if line.trim_start().starts_with("--") {
            continue; // a comment between the naming lines does not end them
        }
        match naming(line) {
            Some(named) => {
                for (name, table, each, index) in named {
                    let list = match (table, each) {
                        ("keys", false) => &mut f.keys,
                        ("args", false) => &mut f.args,
                        ("keys", true) => &mut f.each_keys,
                        _ => &mut f.each_args,
                    };
                    list.push((index, name));
                    if !each && !opening {
                        f.stray.push(format!("not on the first lines: {line}"));
                    }
                }
            }
            None => {
                opening = false;
                if reads(line) {
                    f.stray.push(line.to_string());
                }
            }
        }
    }
    assert!(current.is_none(), "a function left open");
    (functions, outside)
}

/// Panics unless `named` is `expected`'s names at indices 1, 2, … in order.
fn same_names(function: &str, what: &str, named: &[(usize, String)], expected: &str) {
    let lua: Vec<&str> = named.iter().map(|(_, n)| n.as_str()).collect();
    let rust: Vec<&str> = expected.split_whitespace().collect();
    assert_eq!(lua, rust, "{function}: {what} named in Lua and in Rust");
    let indices: Vec<usize> = named.iter().map(|(i, _)| *i).collect();
    let expected: Vec<usize> = (1..=rust.len()).collect();
    assert_eq!(indices, expected, "{function}: {what} read in order");
}

#[test]
fn library_is_the_lua_files_in_order() {
    let mut expected = format!("#!lua name=chat\n{INBOX_LUA}");
    for (_, lua, _) in MODULES {
        expected.push('\n');
        expected.push_str(lua);
    }
    assert_eq!(LIBRARY, expected);
    assert_eq!(LIBRARY.matches("#!lua").count(), 1, "one library");
}

#[test]
fn inbox_lua_registers_nothing_and_reads_no_keys_or_args() {
    let (functions, outside) = registered(INBOX_LUA);
    assert!(functions.is_empty(), "{functions:?}");
    assert!(outside.is_empty(), "{outside:?}");
}

#[test]
fn each_module_names_what_its_lua_file_registers() {
    let mut all = Vec::new();
    for (file, lua, signatures) in MODULES {
        let (functions, _) = registered(lua);
        let mut lua_names: Vec<&str> = functions.iter().map(|f| f.name.as_str()).collect();
        let mut rust_names: Vec<&str> = signatures.iter().map(|s| s.name).collect();
        lua_names.sort_unstable();
        rust_names.sort_unstable();
        assert_eq!(
            lua_names, rust_names,
            "{file}: registered in Lua / named in Rust"
        );
        all.extend(functions.iter().map(|f| f.name.clone()));
    }
    let count = all.len();
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), count, "a function registered twice");
}

#[test]
fn each_function_opens_by_naming_its_keys_and_args_as_its_module_does() {
    for (file, lua, signatures) in MODULES {
        let (functions, outside) = registered(lua);
        assert!(
            outside.is_empty(),
            "{file}: read outside a function: {outside:?}"
        );
        for f in &functions {
            let sig = signatures.iter().find(|s| s.name == f.name).unwrap();
            assert!(f.stray.is_empty(), "{}: {:?}", f.name, f.stray);
            same_names(&f.name, "KEYS", &f.keys, sig.keys);
            same_names(&f.name, "ARGV", &f.args, sig.args);
            same_names(&f.name, "KEYS per message", &f.each_keys, sig.each_keys);
            same_names(&f.name, "ARGV per message", &f.each_args, sig.each_args);
        }
    }
}

#[test]
fn the_checks_catch_a_positional_read() {
    let lua = "redis.register_function('f', function(keys, args)\n  \
               local a, b = keys[1], keys[2]\n  \
               local n = args[1] -- why\n  \
               redis.call('SET', a, args[2])\n\
               end)\n";
    let (functions, outside) = registered(lua);
    assert!(outside.is_empty());
    let f = &functions[0];
    assert_eq!(f.keys, [(1, "a".to_string()), (2, "b".to_string())]);
    assert_eq!(f.args, [(1, "n".to_string())]);
    assert_eq!(f.stray, ["  redis.call('SET', a, args[2])"]);
    assert_eq!(
        naming("    local msgs, meta = keys[k + 1], keys[k + 2]").unwrap()[1],
        ("meta".to_string(), "keys", true, 2)
    );
}
