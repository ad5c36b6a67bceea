//! Pins the shape of every `--json` output of `backup-tool` (keys and value types, every
//! variant of array elements), as ripgrep pins its JSON printer: scripts depend on these.

use std::collections::BTreeSet;

use backup_tests::scenario;
use serde_json::Value;

/// `{key:shape,...}` with sorted keys; arrays as the set of their elements' shapes.
fn shape(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(_) => "bool".into(),
        Value::Number(n) if n.is_f64() => "float".into(),
        Value::Number(_) => "int".into(),
        Value::String(_) => "str".into(),
        Value::Array(a) => {
            let set: BTreeSet<String> = a.iter().map(shape).collect();
            format!("[{}]", set.into_iter().collect::<Vec<_>>().join("|"))
        }
        Value::Object(m) => format!(
            "{{{}}}",
            m.iter()
                .map(|(k, v)| format!("{k}:{}", shape(v)))
                .collect::<Vec<_>>()
                .join(",")
        ),
    }
}

#[test]
fn json_shapes_are_stable() {
    let s = scenario();
    let e = &s.env;
    let to = e.dir.path().join("r");
    let to = to.to_str().unwrap();
    // The first command imports the run's state into the index (until `backup` writes the
    // index itself) and says so in "notes"; the documents below are those of a backup whose
    // index is current, so "notes" is empty.
    e.tool_json(&["list"], 0);
    // A problem for check to report, in a copy-free way: an extra file in the mirror.
    std::fs::write(e.dist.join("mirror/stray"), b"x").unwrap();
    let cases: Vec<(Vec<&str>, i32, &str)> = vec![
        (
            vec!["list", "--detailed"],
            0,
            "{increments:[{bytes:int,changed:int,deleted:int,exclusive_bytes:int,files:int,name:str,new:int,time:str,time_source:str,timestamp:str}],mirror:{bytes:int,files:int,tracked:int,updated:str},notes:[],schema:int,without_metadata:[]}",
        ),
        (
            vec!["show", &s.incs[2]],
            0,
            "{files:[{category:str,hash:str,kind:str,mode:int,mtime_ns:int,op:str,path:str,size:int}],increment:{bytes:int,changed:int,deleted:int,exclusive_bytes:int,files:int,name:str,new:int,time:str,time_source:str,timestamp:str},notes:[],schema:int}",
        ),
        (
            vec!["search", "--mask", "*.py"],
            0,
            "{count:int,hits:[{kind:str,location:{category:str,name:str,type:str},mtime_ns:int,op:str,path:str,size:int,status:str,stored:str}|{kind:str,location:{type:str},mtime_ns:int,path:str,size:int,status:str,stored:str,tracked:bool}],notes:[],schema:int}",
        ),
        (
            vec!["log", "projects/b.pdf"],
            0,
            "{events:[{event:str,hash:str,held_by:str,increment:str,mtime_ns:int,size:int}|{event:str,increment:str}],mirror:null,notes:[],path:str,schema:int}",
        ),
        (
            vec!["log", "projects/a.py"],
            0,
            "{events:[{event:str,hash:str,held_by:str,increment:str,mtime_ns:int,size:int}],mirror:{mtime_ns:int,size:int,tracked:bool},notes:[],path:str,schema:int}",
        ),
        (
            vec!["diff", &s.incs[0], "mirror"],
            0,
            "{changes:[{change:str,path:str,size_after:int,size_before:int}|{change:str,path:str,size_after:int}|{change:str,path:str,size_before:int}],from:str,notes:[],schema:int,to:str}",
        ),
        (
            vec!["restore", "--at", &s.incs[1], "--to", to, "--dry-run"],
            0,
            "{at:str,dry_run:bool,notes:[],owners_kept:bool,results:[{action:str,from:str,kind:str,path:str,size:int}],schema:int,to:str}",
        ),
        (
            vec!["check", "--verify"],
            1,
            "{files_checked:int,files_verified:int,files_without_hash:int,increments:int,notes:[],problems:[{kind:str,location:str,path:str}],schema:int}",
        ),
        (
            vec!["recreate"],
            0,
            "{increments:[{files:int,name:str,status:str}],notes:[],schema:int}",
        ),
        (
            vec!["delete", &s.incs[2], "--mask", "*", "--dry-run"],
            0,
            "{dry_run:bool,failed:[],increment:str,notes:[],removed:[{category:str,path:str,size:int}],schema:int}",
        ),
        (
            vec!["prune", "--keep-last", "1", "--keep-monthly", "1", "--dry-run"],
            0,
            "{decisions:[{keep:bool,name:str,reasons:[],time:str}|{keep:bool,name:str,reasons:[str],time:str}],dry_run:bool,failed:[],notes:[],policy:str,removed:[str],schema:int}",
        ),
    ];
    let mut wrong = Vec::new();
    for (args, code, want) in cases {
        let got = shape(&e.tool_json(&args, code));
        if got != want {
            wrong.push(format!("{args:?}\n  want {want}\n  got  {got}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "JSON shapes changed:\n{}",
        wrong.join("\n")
    );
}

/// The documents of `backup` (run, dry run, --check-config, --explain, init) and the error
/// document both binaries print for a refused or failed command under `--json`.
#[test]
fn backup_and_error_shapes_are_stable() {
    use backup_tests::{bin, TestEnv};
    let env = TestEnv::new();
    env.config(serde_json::json!({"track_dirs": ["docs"], "retention": {"keep_last": 1}}));
    env.write("docs/a.txt", b"a");
    let run = |args: &[&str], code: i32| -> Value {
        let out = env.backup(args);
        assert_eq!(
            out.status.code(),
            Some(code),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{args:?}: {e}"))
    };
    let summary = "copied:int,copied_bytes:int,deleted:int,disk_full:bool,dry_run:bool,errors:[],exit:int,increment:str,link_fallback:bool,new:int,notes:[],";
    let cases: Vec<(Value, String)> = vec![
        (
            run(&["--json", "-n"], 0),
            format!("{{changed:int,{summary}plan:{{copies:[{{action:str,path:str,size:int,tracked:bool}}],deletes:[]}},prune:null,recovered:bool,removed:int,repaired:int,schema:int,selected:int,status:str,unchanged:int,warnings:int}}"),
        ),
        (
            run(&["--json", "--prune"], 0),
            format!("{{changed:int,{summary}plan:null,prune:{{decisions:[{{keep:bool,name:str,reasons:[str],time:str}}],dry_run:bool,failed:[],policy:str,removed:[]}},recovered:bool,removed:int,repaired:int,schema:int,selected:int,status:str,unchanged:int,warnings:int}}"),
        ),
        (
            run(&["--json", "--check-config"], 0),
            "{config:str,directory_priority:str,dist:str,dist_exists:bool,exclude_dirs:[],exclude_files:[],hooks:{after:[],before:[],on_error:[],timeout:int},include_dirs:[],include_files:[],max_workers:int,preserved_dirs:[],retention:str,schema:int,src:str,track_dirs:[str],track_files:[]}".into(),
        ),
        (
            run(&["--json", "--explain", "docs/a.txt"], 0),
            "{paths:[{decided_by:{dir:str,key:str,pattern:str},excluded_by:null,exists:bool,overruled:[],path:str,selected:bool,tracked:bool}],schema:int}".into(),
        ),
        (
            run(&["--json", "init"], 2),
            "{error:str,exit:int,schema:int,status:str}".into(),
        ),
        (
            {
                let out = std::process::Command::new(bin("backup-tool"))
                    .args(["/nonexistent", "list", "--json"])
                    .output()
                    .unwrap();
                serde_json::from_slice(&out.stdout).unwrap()
            },
            "{error:str,exit:int,schema:int,status:str}".into(),
        ),
    ];
    let mut wrong = Vec::new();
    for (doc, want) in cases {
        let got = shape(&doc);
        if got != want {
            wrong.push(format!("  want {want}\n  got  {got}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "JSON shapes changed:\n{}",
        wrong.join("\n")
    );
}
