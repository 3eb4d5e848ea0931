//! `vic lsp`: a language server over standard input and output. The protocol loop is
//! lsp-server's (rust-analyzer's crate) and the messages lsp-types'; what to answer comes
//! from `vic::ide`: diagnostics as the user types (full document sync), hover, go to
//! definition, formatting (`vic fmt`) and completion.

use lsp_server::{Connection, Message, Notification, Request, Response};
use lsp_types::notification::{
    DidChangeTextDocument, DidCloseTextDocument, DidOpenTextDocument, Notification as _,
    PublishDiagnostics,
};
use lsp_types::request::{Completion, Formatting, GotoDefinition, HoverRequest, Request as _};
use lsp_types::{
    CompletionItem, CompletionItemKind, CompletionOptions, CompletionParams, CompletionResponse,
    Diagnostic, DiagnosticRelatedInformation, DiagnosticSeverity, DocumentFormattingParams,
    GotoDefinitionParams, GotoDefinitionResponse, Hover, HoverContents, HoverParams,
    HoverProviderCapability, Location, MarkupContent, MarkupKind, NumberOrString, OneOf, Position,
    PublishDiagnosticsParams, Range, ServerCapabilities, TextDocumentPositionParams,
    TextDocumentSyncCapability, TextDocumentSyncKind, TextEdit, Uri,
};
use std::collections::HashMap;
use vic::ide::{self, LineIndex};
use vic::span::Span;

/// Serve until the client says `exit`; the exit status.
pub fn serve() -> u8 {
    let (connection, threads) = Connection::stdio();
    let caps = ServerCapabilities {
        text_document_sync: Some(TextDocumentSyncCapability::Kind(TextDocumentSyncKind::FULL)),
        hover_provider: Some(HoverProviderCapability::Simple(true)),
        definition_provider: Some(OneOf::Left(true)),
        document_formatting_provider: Some(OneOf::Left(true)),
        completion_provider: Some(CompletionOptions {
            trigger_characters: Some(vec!["@".into()]),
            ..CompletionOptions::default()
        }),
        ..ServerCapabilities::default()
    };
    let init = serde_json::json!({
        "capabilities": caps,
        "serverInfo": { "name": "vic", "version": env!("CARGO_PKG_VERSION") },
    });
    let Ok(id_and_params) = connection.initialize_start() else {
        eprintln!("vic lsp: the client did not initialize");
        return crate::USAGE;
    };
    if connection.initialize_finish(id_and_params.0, init).is_err() {
        eprintln!("vic lsp: the client did not initialize");
        return crate::USAGE;
    }
    let mut server = Server {
        docs: HashMap::new(),
        connection: &connection,
    };
    let status = server.run();
    drop(connection);
    let _ = threads.join();
    status
}

struct Server<'c> {
    /// Open documents, by URI: their text.
    docs: HashMap<String, String>,
    connection: &'c Connection,
}

fn range(src: &str, index: &LineIndex, span: Span) -> Range {
    let r = span.range().unwrap_or(0..0);
    let (l0, c0) = index.position(src, r.start);
    let (l1, c1) = index.position(src, r.end);
    Range::new(Position::new(l0, c0), Position::new(l1, c1))
}

impl Server<'_> {
    fn run(&mut self) -> u8 {
        for msg in &self.connection.receiver {
            match msg {
                Message::Request(req) => {
                    match self.connection.handle_shutdown(&req) {
                        Ok(true) => return crate::OK,
                        Ok(false) => {}
                        Err(_) => return crate::FAILED,
                    }
                    let resp = self.request(req);
                    if self
                        .connection
                        .sender
                        .send(Message::Response(resp))
                        .is_err()
                    {
                        return crate::FAILED;
                    }
                }
                Message::Notification(n) => self.notification(n),
                Message::Response(_) => {}
            }
        }
        crate::OK
    }

    fn send(&self, method: &str, params: impl serde::Serialize) {
        let n = Notification::new(method.to_string(), params);
        let _ = self.connection.sender.send(Message::Notification(n));
    }

    fn notification(&mut self, n: Notification) {
        match n.method.as_str() {
            DidOpenTextDocument::METHOD => {
                if let Ok(p) =
                    serde_json::from_value::<lsp_types::DidOpenTextDocumentParams>(n.params)
                {
                    let uri = p.text_document.uri;
                    self.docs.insert(uri.to_string(), p.text_document.text);
                    self.publish(&uri);
                }
            }
            DidChangeTextDocument::METHOD => {
                if let Ok(p) =
                    serde_json::from_value::<lsp_types::DidChangeTextDocumentParams>(n.params)
                {
                    // Full sync: the last change holds the whole text.
                    if let Some(c) = p.content_changes.into_iter().last() {
                        let uri = p.text_document.uri;
                        self.docs.insert(uri.to_string(), c.text);
                        self.publish(&uri);
                    }
                }
            }
            DidCloseTextDocument::METHOD => {
                if let Ok(p) =
                    serde_json::from_value::<lsp_types::DidCloseTextDocumentParams>(n.params)
                {
                    self.docs.remove(&p.text_document.uri.to_string());
                    self.send(
                        PublishDiagnostics::METHOD,
                        PublishDiagnosticsParams::new(p.text_document.uri, Vec::new(), None),
                    );
                }
            }
            _ => {}
        }
    }

    /// Check a document and send its diagnostics.
    fn publish(&self, uri: &Uri) {
        let Some(src) = self.docs.get(&uri.to_string()) else {
            return;
        };
        let index = LineIndex::new(src);
        let diags: Vec<Diagnostic> = ide::diagnostics(src)
            .into_iter()
            .map(|d| {
                let mut message = d.message.clone();
                if let Some(h) = &d.hint {
                    message.push_str(&format!("\nhint: {h}"));
                }
                let related: Vec<DiagnosticRelatedInformation> = d
                    .secondary
                    .iter()
                    .filter(|l| l.span.range().is_some())
                    .map(|l| DiagnosticRelatedInformation {
                        location: Location::new(uri.clone(), range(src, &index, l.span)),
                        message: l.message.clone(),
                    })
                    .collect();
                Diagnostic {
                    range: range(src, &index, d.span),
                    severity: Some(if d.is_error() {
                        DiagnosticSeverity::ERROR
                    } else {
                        DiagnosticSeverity::WARNING
                    }),
                    code: Some(NumberOrString::String(d.code.as_str().to_string())),
                    source: Some("vic".into()),
                    message,
                    related_information: (!related.is_empty()).then_some(related),
                    ..Diagnostic::default()
                }
            })
            .collect();
        self.send(
            PublishDiagnostics::METHOD,
            PublishDiagnosticsParams::new(uri.clone(), diags, None),
        );
    }

    fn doc(&self, uri: &Uri) -> Option<&String> {
        self.docs.get(&uri.to_string())
    }

    /// The open document at a request's position: its text, line index and byte offset.
    fn at(&self, tp: &TextDocumentPositionParams) -> Option<(&String, LineIndex, usize)> {
        let src = self.doc(&tp.text_document.uri)?;
        let index = LineIndex::new(src);
        let at = index.offset(src, tp.position.line, tp.position.character);
        Some((src, index, at))
    }

    fn request(&self, req: Request) -> Response {
        let id = req.id.clone();
        let result = match req.method.as_str() {
            HoverRequest::METHOD => serde_json::from_value::<HoverParams>(req.params)
                .ok()
                .and_then(|p| {
                    let (src, index, at) = self.at(&p.text_document_position_params)?;
                    let h = ide::hover(src, at)?;
                    Some(Hover {
                        contents: HoverContents::Markup(MarkupContent {
                            kind: MarkupKind::Markdown,
                            value: h.markdown,
                        }),
                        range: Some(range(src, &index, h.span)),
                    })
                })
                .map(|h| serde_json::to_value(h).unwrap_or_default()),
            GotoDefinition::METHOD => serde_json::from_value::<GotoDefinitionParams>(req.params)
                .ok()
                .and_then(|p| {
                    let tp = &p.text_document_position_params;
                    let (src, index, at) = self.at(tp)?;
                    let span = ide::definition(src, at)?;
                    Some(GotoDefinitionResponse::Scalar(Location::new(
                        tp.text_document.uri.clone(),
                        range(src, &index, span),
                    )))
                })
                .map(|r| serde_json::to_value(r).unwrap_or_default()),
            Formatting::METHOD => serde_json::from_value::<DocumentFormattingParams>(req.params)
                .ok()
                .and_then(|p| {
                    let src = self.doc(&p.text_document.uri)?;
                    let formatted = ide::format(src)?;
                    let index = LineIndex::new(src);
                    let whole = range(src, &index, Span::new(0, src.len()));
                    Some(vec![TextEdit::new(whole, formatted)])
                })
                .map(|r| serde_json::to_value(r).unwrap_or_default()),
            Completion::METHOD => serde_json::from_value::<CompletionParams>(req.params)
                .ok()
                .and_then(|p| {
                    let (src, _, at) = self.at(&p.text_document_position)?;
                    let items: Vec<CompletionItem> = ide::completions(src, at)
                        .into_iter()
                        .map(|c| CompletionItem {
                            label: c.label,
                            kind: Some(match c.kind {
                                ide::CompletionKind::Variable => CompletionItemKind::VARIABLE,
                                ide::CompletionKind::Network => CompletionItemKind::CLASS,
                                ide::CompletionKind::Constant => CompletionItemKind::CONSTANT,
                                ide::CompletionKind::Distribution => CompletionItemKind::STRUCT,
                                ide::CompletionKind::Function => CompletionItemKind::FUNCTION,
                                ide::CompletionKind::Key => CompletionItemKind::PROPERTY,
                                ide::CompletionKind::Strategy => CompletionItemKind::KEYWORD,
                            }),
                            detail: (!c.detail.is_empty()).then_some(c.detail),
                            ..CompletionItem::default()
                        })
                        .collect();
                    Some(CompletionResponse::Array(items))
                })
                .map(|r| serde_json::to_value(r).unwrap_or_default()),
            _ => {
                return Response::new_err(
                    id,
                    lsp_server::ErrorCode::MethodNotFound as i32,
                    format!("vic lsp does not answer `{}`", req.method),
                )
            }
        };
        Response::new_ok(id, result.unwrap_or(serde_json::Value::Null))
    }
}
