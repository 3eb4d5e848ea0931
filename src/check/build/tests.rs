//! Tests of `build`.
