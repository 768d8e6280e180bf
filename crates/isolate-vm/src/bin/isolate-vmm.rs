//! The VMM process of isolate's VM mode (see the `isolate_vm` crate docs).

fn main() {
    std::process::exit(isolate_vm::vmm::main());
}
