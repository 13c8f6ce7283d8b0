//! Synthetic documents (being written).
