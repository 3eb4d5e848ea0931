//! The syntax layer: the pest grammar (`grammar/vi.pest`) turned into the AST.

pub mod ast;
mod error;
mod parser;
mod scan;

pub use error::ParseError;
pub use parser::{comments, is_keyword, parse, Comment};
