//! The `flowfm` command line.

use mimalloc::MiMalloc;

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

fn main() {
    println!("flowfm {}", env!("CARGO_PKG_VERSION"));
}
