//! The `vic` command line.

fn main() {
    println!("vic");
}
