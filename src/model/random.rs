//! placeholder: random-weight models for benchmarks
