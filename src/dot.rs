//! `vic compile --emit dot`: the model as a Graphviz graph.

use crate::ir::Program;

pub fn render(_program: &Program) -> String {
    todo!("H4")
}
