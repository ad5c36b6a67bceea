//! Pins the shape of every `--json` output of `backup-tool` (keys and value types, every
//! variant of array elements), as ripgrep pins its JSON printer: scripts depend on these.

use std::collections::BTreeSet;

use backup_tests::toolenv::scenario;
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
    let to = e.tmp.path().join("r");
    let to = to.to_str().unwrap();
    // A problem for check to report, in a copy-free way: an extra file in the mirror.
    std::fs::write(e.dist.join("mirror/stray"), b"x").unwrap();
    let cases: Vec<(Vec<&str>, i32, &str)> = vec![
        (
            vec!["list", "--detailed"],
            0,
            "{increments:[{bytes:int,changed:int,deleted:int,exclusive_bytes:int,files:int,name:str,new:int,time:str,timestamp:str}],mirror:{bytes:int,files:int,tracked:int,updated:str},without_metadata:[]}",
        ),
        (
            vec!["show", &s.incs[2]],
            0,
            "{files:[{category:str,hash:str,kind:str,mode:int,mtime_ns:int,op:str,path:str,size:int}],increment:{bytes:int,changed:int,deleted:int,exclusive_bytes:int,files:int,name:str,new:int,time:str,timestamp:str}}",
        ),
        (
            vec!["search", "--mask", "*.py"],
            0,
            "{count:int,hits:[{kind:str,location:{category:str,name:str,type:str},mtime_ns:int,op:str,path:str,size:int,status:str,stored:str}|{kind:str,location:{type:str},mtime_ns:int,path:str,size:int,status:str,stored:str,tracked:bool}]}",
        ),
        (
            vec!["log", "projects/b.pdf"],
            0,
            "{events:[{event:str,hash:str,held_by:str,increment:str,mtime_ns:int,size:int}|{event:str,increment:str}],mirror:null,path:str}",
        ),
        (
            vec!["log", "projects/a.py"],
            0,
            "{events:[{event:str,hash:str,held_by:str,increment:str,mtime_ns:int,size:int}],mirror:{mtime_ns:int,size:int,tracked:bool},path:str}",
        ),
        (
            vec!["diff", &s.incs[0], "mirror"],
            0,
            "{changes:[{change:str,path:str,size_after:int,size_before:int}|{change:str,path:str,size_after:int}|{change:str,path:str,size_before:int}],from:str,to:str}",
        ),
        (
            vec!["restore", "--at", &s.incs[1], "--to", to, "--dry-run"],
            0,
            "{at:str,dry_run:bool,owners_kept:bool,results:[{action:str,from:str,kind:str,path:str,size:int}],to:str}",
        ),
        (
            vec!["check", "--verify"],
            1,
            "{files_checked:int,files_verified:int,files_without_hash:int,increments:int,problems:[{kind:str,location:str,path:str}]}",
        ),
        (
            vec!["recreate"],
            0,
            "[{files:int,name:str,status:str}]",
        ),
        (
            vec!["delete", &s.incs[2], "--mask", "*", "--dry-run"],
            0,
            "{dry_run:bool,failed:[],increment:str,removed:[{category:str,path:str,size:int}]}",
        ),
        (
            vec!["prune", "--keep-last", "1", "--keep-monthly", "1", "--dry-run"],
            0,
            "{decisions:[{keep:bool,name:str,reasons:[]}|{keep:bool,name:str,reasons:[str]}],dry_run:bool,failed:[],removed:[str]}",
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
