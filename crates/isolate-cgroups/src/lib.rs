//! isolate-cgroups (being written).
