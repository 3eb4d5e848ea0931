//! `vic lsp` driven as an editor drives it: JSON-RPC over standard input and output,
//! with `Content-Length` framing. Diagnostics arrive on open and on change, and hover,
//! go to definition, formatting and completion answer; shutdown and exit end it with 0.
#![allow(clippy::disallowed_methods, clippy::unwrap_used, clippy::expect_used)]

mod common;

use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, ChildStdout, Stdio};

struct Client {
    child: Child,
    input: ChildStdin,
    output: BufReader<ChildStdout>,
    next: i64,
}

impl Client {
    fn start() -> Client {
        let mut child = common::vic()
            .arg("lsp")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let input = child.stdin.take().unwrap();
        let output = BufReader::new(child.stdout.take().unwrap());
        Client {
            child,
            input,
            output,
            next: 1,
        }
    }

    fn send(&mut self, msg: Value) {
        let body = msg.to_string();
        write!(self.input, "Content-Length: {}\r\n\r\n{body}", body.len()).unwrap();
        self.input.flush().unwrap();
    }

    fn read(&mut self) -> Value {
        let mut len = 0usize;
        loop {
            let mut line = String::new();
            self.output.read_line(&mut line).unwrap();
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some(v) = line.strip_prefix("Content-Length: ") {
                len = v.parse().unwrap();
            }
        }
        let mut body = vec![0u8; len];
        self.output.read_exact(&mut body).unwrap();
        serde_json::from_slice(&body).unwrap()
    }

    /// A request's result (skipping notifications that arrive first).
    fn request(&mut self, method: &str, params: Value) -> Value {
        let id = self.next;
        self.next += 1;
        self.send(json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}));
        loop {
            let m = self.read();
            if m["id"] == id {
                return m["result"].clone();
            }
        }
    }

    fn notify(&mut self, method: &str, params: Value) {
        self.send(json!({"jsonrpc": "2.0", "method": method, "params": params}));
    }

    /// The next `publishDiagnostics` notification's diagnostics.
    fn diagnostics(&mut self) -> Vec<Value> {
        loop {
            let m = self.read();
            if m["method"] == "textDocument/publishDiagnostics" {
                return m["params"]["diagnostics"].as_array().unwrap().clone();
            }
        }
    }
}

const URI: &str = "file:///tmp/spec.vi";

const SPEC: &str = "const D = 4\ndata x : Real[D]\nlatent z : Real[2]\nnet enc(x: Real[D]) -> (loc: Real[2], scale: Positive[2]) = mlp(hidden = [3])\nnet dec(z: Real[2]) -> Real[D] = linear()\nmodel {\n  z ~ Normal(0, 1)\n  x ~ Normal(dec(z), 1)\n}\nguide {\n  let (m, s) = enc(x)\n  z ~ Normal(m, s)\n}\n";

fn position_of(text: &str, needle: &str) -> Value {
    let at = text.find(needle).unwrap();
    let line = text[..at].matches('\n').count();
    let col = at - text[..at].rfind('\n').map_or(0, |i| i + 1);
    json!({"line": line, "character": col})
}

#[test]
fn an_editor_gets_diagnostics_hover_definitions_formatting_and_completions() {
    let mut c = Client::start();
    let init = c.request("initialize", json!({"capabilities": {}, "processId": null}));
    assert_eq!(init["capabilities"]["hoverProvider"], true);
    assert_eq!(init["serverInfo"]["name"], "vic");
    c.notify("initialized", json!({}));

    // A typo: an unknown distribution, at its place, with the hint.
    let bad = SPEC.replace("Normal(m, s)", "Gaussian(m, s)");
    c.notify(
        "textDocument/didOpen",
        json!({"textDocument": {"uri": URI, "languageId": "vi", "version": 1, "text": bad}}),
    );
    let d = c.diagnostics();
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(d[0]["code"], "E002");
    assert_eq!(d[0]["range"]["start"], position_of(&bad, "Gaussian"));
    assert!(d[0]["message"]
        .as_str()
        .unwrap()
        .contains("did you mean `Normal`?"));
    // Fixed: no diagnostics.
    c.notify(
        "textDocument/didChange",
        json!({"textDocument": {"uri": URI, "version": 2}, "contentChanges": [{"text": SPEC}]}),
    );
    assert!(c.diagnostics().is_empty());

    let doc = json!({"uri": URI});
    let h = c.request(
        "textDocument/hover",
        json!({"textDocument": doc, "position": position_of(SPEC, "enc(x)\n")}),
    );
    let text = h["contents"]["value"].as_str().unwrap();
    assert!(
        text.contains("31 parameters") && text.contains("mlp"),
        "{text}"
    );
    let h = c.request(
        "textDocument/hover",
        json!({"textDocument": doc, "position": position_of(SPEC, "m, s)\n")}),
    );
    assert!(h["contents"]["value"]
        .as_str()
        .unwrap()
        .contains("let m : Real[2]"));

    let def = c.request(
        "textDocument/definition",
        json!({"textDocument": doc, "position": position_of(SPEC, "dec(z), 1)")}),
    );
    assert_eq!(def["range"]["start"], position_of(SPEC, "dec(z: Real"));

    let messy = "data x : Real[2]\nmodel {   x ~ Normal(0,1) }\n";
    c.notify(
        "textDocument/didChange",
        json!({"textDocument": {"uri": URI, "version": 3}, "contentChanges": [{"text": messy}]}),
    );
    let _ = c.diagnostics();
    let edits = c.request(
        "textDocument/formatting",
        json!({"textDocument": doc, "options": {"tabSize": 2, "insertSpaces": true}}),
    );
    assert_eq!(
        edits[0]["newText"],
        "data x : Real[2]\n\nmodel {\n  x ~ Normal(0, 1)\n}\n"
    );

    c.notify(
        "textDocument/didChange",
        json!({"textDocument": {"uri": URI, "version": 4}, "contentChanges": [{"text": SPEC}]}),
    );
    let _ = c.diagnostics();
    let items = c.request(
        "textDocument/completion",
        json!({"textDocument": doc, "position": position_of(SPEC, "z ~ Normal(m")}),
    );
    let labels: Vec<&str> = items
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["label"].as_str().unwrap())
        .collect();
    for want in ["m", "enc", "Normal", "Categorical", "softplus"] {
        assert!(labels.contains(&want), "{want} missing from {labels:?}");
    }

    assert_eq!(c.request("shutdown", Value::Null), Value::Null);
    c.notify("exit", Value::Null);
    let status = c.child.wait().unwrap();
    assert!(status.success());
}
