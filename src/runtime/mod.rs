//! Model runtime.
