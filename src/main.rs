//! The `botwire` binary: a thin shell over [`botwire::cli`].
#![forbid(unsafe_code)]

/// mimalloc: the HTTP and JSON work of the delivery path allocates a lot of
/// small short-lived buffers, and this allocator does that with measurably
/// less CPU than the system one (see docs/DELIVERY.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    botwire::cli::main()
}
