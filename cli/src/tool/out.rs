//! Shared output of the `backup-tool` commands: JSON, sizes, dates, escaped paths, colour
//! (on a terminal only, never with `NO_COLOR` set).

use std::io::{IsTerminal, Write};

use backup_core::RelPath;
use chrono::{Local, TimeZone};

pub struct Out {
    pub w: std::io::BufWriter<std::io::StdoutLock<'static>>,
    color: bool,
    /// What the command says once about the index it opened: `"notes"` of every JSON
    /// document (`--json`; otherwise they went to stderr).
    notes: Vec<serde_json::Value>,
    /// Items written so far into a streamed JSON array ([`Out::json_begin`]).
    items: u64,
}

impl Default for Out {
    fn default() -> Self {
        Out::new()
    }
}

impl Out {
    pub fn new() -> Out {
        let stdout = std::io::stdout();
        let color =
            stdout.is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
        Out {
            w: std::io::BufWriter::new(stdout.lock()),
            color,
            notes: Vec::new(),
            items: 0,
        }
    }

    /// Output carrying the notes about the opened index: printed once on stderr now, or, with
    /// `json`, kept for the document's `"notes"`.
    pub fn with_notes(notes: &[backup_core::index::IndexNote], json: bool) -> Out {
        let mut o = Out::new();
        for n in notes {
            if json {
                let mut v = serde_json::to_value(n).unwrap_or_default();
                if let serde_json::Value::Object(m) = &mut v {
                    m.insert("message".into(), n.to_string().into());
                }
                o.notes.push(v);
            } else {
                eprintln!("backup-tool: note: {n}");
            }
        }
        o
    }

    /// The head of a JSON document: `{"schema": .., "notes": [..]` and the fields of `head`
    /// (an object), without the closing brace.
    fn json_head<T: serde::Serialize>(&mut self, head: &T) -> anyhow::Result<()> {
        let mut v = serde_json::to_value(head)?;
        let serde_json::Value::Object(m) = &mut v else {
            anyhow::bail!("a JSON document must be an object");
        };
        m.insert("schema".into(), crate::JSON_SCHEMA.into());
        m.insert("notes".into(), std::mem::take(&mut self.notes).into());
        let text = serde_json::to_string_pretty(&v)?;
        // Everything but the closing brace, so more fields can follow.
        let open = text.trim_end().trim_end_matches('}').trim_end();
        self.w.write_all(open.as_bytes())?;
        Ok(())
    }

    /// Starts a JSON document whose array `key` is streamed item by item
    /// ([`Out::json_item`]), after the fields of `head`: memory stays that of one item.
    pub fn json_begin<T: serde::Serialize>(&mut self, head: &T, key: &str) -> anyhow::Result<()> {
        self.json_head(head)?;
        write!(self.w, ",\n  {}: [", serde_json::to_string(key)?)?;
        self.items = 0;
        Ok(())
    }

    pub fn json_item<T: serde::Serialize>(&mut self, item: &T) -> anyhow::Result<()> {
        self.w.write_all(if self.items == 0 {
            b"\n    "
        } else {
            b",\n    "
        })?;
        serde_json::to_writer(&mut self.w, item)?;
        self.items += 1;
        Ok(())
    }

    /// Closes the streamed array, then the fields of `tail` (an object) and the document.
    pub fn json_end<T: serde::Serialize>(&mut self, tail: &T) -> anyhow::Result<()> {
        self.w
            .write_all(if self.items == 0 { b"]" } else { b"\n  ]" })?;
        if let serde_json::Value::Object(m) = serde_json::to_value(tail)? {
            for (k, v) in m {
                write!(
                    self.w,
                    ",\n  {}: {}",
                    serde_json::to_string(&k)?,
                    serde_json::to_string(&v)?
                )?;
            }
        }
        self.w.write_all(b"\n}\n")?;
        Ok(())
    }

    /// `text` in an ANSI colour (`"1"` bold, `"32"` green, ...) when colour is on.
    pub fn paint(&self, code: &str, text: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }

    /// Writes `value` as a JSON document with its `"schema"` version added (every document is
    /// an object).
    pub fn json<T: serde::Serialize>(&mut self, value: &T) -> anyhow::Result<()> {
        let mut v = serde_json::to_value(value)?;
        if let serde_json::Value::Object(m) = &mut v {
            m.insert("schema".into(), crate::JSON_SCHEMA.into());
            m.insert("notes".into(), std::mem::take(&mut self.notes).into());
        }
        serde_json::to_writer_pretty(&mut self.w, &v)?;
        writeln!(self.w)?;
        Ok(())
    }

    pub fn status(&self, status: &str) -> String {
        let code = match status {
            "deleted" | "failed" => "31",
            "tracked" | "new" | "restored" | "added" => "32",
            "changed" | "mirror" => "36",
            _ => "0",
        };
        self.paint(code, status)
    }
}

pub fn size(n: u64) -> String {
    humansize::format_size(n, humansize::BINARY)
}

pub fn date_ns(ns: i64) -> String {
    Local
        .timestamp_opt(
            ns.div_euclid(1_000_000_000),
            ns.rem_euclid(1_000_000_000) as u32,
        )
        .single()
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| "?".into())
}

/// A path for a terminal: lossy for non-UTF-8, control characters (newlines) escaped so
/// every entry stays on one line.
pub fn show(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

pub fn rel(p: &RelPath) -> String {
    show(&p.display())
}

/// Folder part of a path for grouping (`""` for the top).
pub fn dir_of(p: &RelPath) -> String {
    p.parent()
        .map(|d| format!("{}/", rel(&d)))
        .unwrap_or_default()
}

pub fn name_of(p: &RelPath) -> String {
    show(&String::from_utf8_lossy(p.file_name()))
}
