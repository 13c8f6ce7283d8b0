//! Bundle runtime (being written).
