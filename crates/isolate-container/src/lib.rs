//! isolate-container (being written).
