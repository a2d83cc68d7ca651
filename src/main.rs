fn main() { println!("qvoice {}", env!("CARGO_PKG_VERSION")); }
