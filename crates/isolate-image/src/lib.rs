//! isolate-image (being written).
