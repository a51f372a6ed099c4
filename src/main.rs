fn main() {
    routemesh::memory::tune();
    std::process::exit(routemesh::cli::main());
}
