//! The targets, grouped by what they read.

pub mod bundle;
pub mod configs;
pub mod images;
pub mod pages;
pub mod serve;
pub mod tensors;
pub mod tokenizer;
pub mod train_data;
