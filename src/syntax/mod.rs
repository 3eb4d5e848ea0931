//! The syntax layer: the pest grammar (`grammar/vi.pest`) turned into the AST.

pub mod ast;
mod error;
mod parser;
mod scan;

pub use error::ParseError;
pub use parser::{comments, is_keyword, parse, parse_errors, Comment, MAX_SYNTAX_ERRORS};
/// How deeply brackets may nest before the parser refuses the file (E001).
pub use scan::MAX_DEPTH as MAX_NESTING;
