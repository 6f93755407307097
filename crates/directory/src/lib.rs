//! directory (work in progress)
