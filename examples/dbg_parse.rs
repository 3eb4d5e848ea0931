fn main() {
    let src = std::env::args().nth(1).unwrap_or_default();
    match vic::syntax::parse(&src) {
        Ok(f) => println!("{f:#?}"),
        Err(e) => {
            let d = vic::diag::Diagnostic::from(e);
            println!("{} {:?} hint={:?}", d.message, d.span, d.hint);
        }
    }
}
