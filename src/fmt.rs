//! `vic fmt`: print an AST back in one canonical layout, keeping comments.

use crate::syntax::{ast, Comment};

/// Format a parsed file; `comments` are those of the same source.
pub fn format_file(_file: &ast::File, _comments: &[Comment], _src: &str) -> String {
    String::new()
}
