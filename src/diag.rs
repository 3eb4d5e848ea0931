//! The project's one diagnostic type, its stable codes, and the texts `vic explain` prints.
//!
//! Every phase keeps its own error enum; each converts into [`Diagnostic`] in one
//! function, and `src/render.rs` prints diagnostics in one place.

use crate::span::Span;
use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// Stable diagnostic codes (LANGUAGE.md section 11).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Code {
    E001,
    E002,
    E003,
    E004,
    E005,
    E006,
    E007,
    E008,
    E009,
    E010,
    E011,
    E012,
    E013,
    E014,
    E015,
    E016,
    E017,
    W001,
    W002,
}

impl Code {
    pub const ALL: [Code; 19] = [
        Code::E001,
        Code::E002,
        Code::E003,
        Code::E004,
        Code::E005,
        Code::E006,
        Code::E007,
        Code::E008,
        Code::E009,
        Code::E010,
        Code::E011,
        Code::E012,
        Code::E013,
        Code::E014,
        Code::E015,
        Code::E016,
        Code::E017,
        Code::W001,
        Code::W002,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Code::E001 => "E001",
            Code::E002 => "E002",
            Code::E003 => "E003",
            Code::E004 => "E004",
            Code::E005 => "E005",
            Code::E006 => "E006",
            Code::E007 => "E007",
            Code::E008 => "E008",
            Code::E009 => "E009",
            Code::E010 => "E010",
            Code::E011 => "E011",
            Code::E012 => "E012",
            Code::E013 => "E013",
            Code::E014 => "E014",
            Code::E015 => "E015",
            Code::E016 => "E016",
            Code::E017 => "E017",
            Code::W001 => "W001",
            Code::W002 => "W002",
        }
    }

    pub fn parse(s: &str) -> Option<Code> {
        let up = s.trim().to_ascii_uppercase();
        Code::ALL.into_iter().find(|c| c.as_str() == up)
    }

    pub fn severity(self) -> Severity {
        match self {
            Code::W001 | Code::W002 => Severity::Warning,
            _ => Severity::Error,
        }
    }

    /// The short title shown in the diagnostic header.
    pub fn title(self) -> &'static str {
        match self {
            Code::E001 => "syntax error",
            Code::E002 => "unknown name",
            Code::E003 => "duplicate declaration",
            Code::E004 => "shape mismatch",
            Code::E005 => "domain mismatch",
            Code::E006 => "wrong arguments",
            Code::E007 => "latent not sampled exactly once in model",
            Code::E008 => "guide does not match model",
            Code::E009 => "data not observed correctly",
            Code::E010 => "used before definition",
            Code::E011 => "inference strategy cannot apply",
            Code::E012 => "invalid train setting",
            Code::E013 => "invalid meta or set",
            Code::E014 => "no closed-form posterior",
            Code::E015 => "invalid const",
            Code::E016 => "global latent depends on per-example values",
            Code::E017 => "cost beyond reason",
            Code::W001 => "unused declaration",
            Code::W002 => "unused network head",
        }
    }

    /// The long explanation `vic explain CODE` prints.
    pub fn explain(self) -> &'static str {
        crate::explain::text(self)
    }
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A secondary location with a note ("first declared here").
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Label {
    pub span: Span,
    pub message: String,
}

/// One finding about a spec: what, where, and how to fix it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Diagnostic {
    pub severity: Severity,
    pub code: Code,
    /// One plain sentence naming the thing.
    pub message: String,
    /// The offending text.
    pub span: Span,
    /// What to say under the primary caret (may be empty).
    pub label: String,
    pub secondary: Vec<Label>,
    /// What to write instead, where that helps.
    pub hint: Option<String>,
}

impl Diagnostic {
    pub fn new(code: Code, span: Span, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity: code.severity(),
            code,
            message: message.into(),
            span,
            label: String::new(),
            secondary: Vec::new(),
            hint: None,
        }
    }

    pub fn with_label(mut self, label: impl Into<String>) -> Self {
        self.label = label.into();
        self
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn with_secondary(mut self, span: Span, message: impl Into<String>) -> Self {
        self.secondary.push(Label {
            span,
            message: message.into(),
        });
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

/// Sort diagnostics by position, errors before warnings at the same place, and drop exact repeats.
pub fn sort_and_dedup(diags: &mut Vec<Diagnostic>) {
    diags.sort_by_key(|d| {
        let start = d.span.range().map(|r| r.start).unwrap_or(usize::MAX);
        (start, d.severity, d.code)
    });
    diags.dedup();
}
