//! isolate-vm (being written).
