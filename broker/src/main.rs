//! `kairos`: the broker (`kairos serve`) and its admin CLI in one binary.
fn main() {
    std::process::exit(kairos_broker::cli::main());
}
