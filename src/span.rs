//! Source spans: where in a `.vi` file a node came from, or that the compiler invented it.

use serde::{Deserialize, Serialize};

/// A byte range in the source text, or a marker for nodes the compiler made up
/// (defaults filled in, desugared forms), which have no text to point at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum Span {
    /// Bytes `start..end` of the file.
    Src(u32, u32),
    /// Invented by the compiler.
    #[default]
    Artificial,
}

impl Span {
    pub fn new(start: usize, end: usize) -> Span {
        Span::Src(start as u32, end as u32)
    }

    /// The byte range, if the node came from the text.
    pub fn range(self) -> Option<std::ops::Range<usize>> {
        match self {
            Span::Src(s, e) => Some(s as usize..e as usize),
            Span::Artificial => None,
        }
    }

    /// The smallest span covering both (an artificial side is ignored).
    pub fn to(self, other: Span) -> Span {
        match (self, other) {
            (Span::Src(a, b), Span::Src(c, d)) => Span::Src(a.min(c), b.max(d)),
            (Span::Artificial, s) | (s, Span::Artificial) => s,
        }
    }

    pub fn is_artificial(self) -> bool {
        matches!(self, Span::Artificial)
    }
}
