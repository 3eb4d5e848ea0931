//! The `train` and `meta` blocks: keys, value kinds and ranges, defaults (E012, E013).

use super::consts::Consts;
use crate::diag::Diagnostic;
use crate::ir::{MetaConfig, TrainConfig};
use crate::syntax::ast;

#[derive(Clone, Debug, PartialEq)]
pub enum ConfigError {}

impl From<ConfigError> for Diagnostic {
    fn from(e: ConfigError) -> Diagnostic {
        match e {}
    }
}

pub fn resolve(
    _file: &ast::File,
    _consts: &Consts,
) -> (TrainConfig, Option<MetaConfig>, Vec<ConfigError>) {
    todo!("H3")
}
