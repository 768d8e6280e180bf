//! The contract suite lives in tests/contract.rs; see README.md.
