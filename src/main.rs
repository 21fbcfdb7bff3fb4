//! The `shoal` binary: parse arguments, set up logging, hand over to the library.

fn main() {
    std::process::exit(shoal::cli::main());
}
