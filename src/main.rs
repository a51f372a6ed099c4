fn main() {
    std::process::exit(routemesh::cli::main());
}
