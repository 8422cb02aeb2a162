fn main() {
    std::process::exit(sealfs::cli::main());
}
