//! The syntax layer: the pest grammar (`grammar/vi.pest`) turned into the AST.

pub mod ast;
mod parser;

pub use parser::{comments, parse, Comment, ParseError};
