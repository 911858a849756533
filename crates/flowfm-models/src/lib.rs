//! flowfm-models (work in progress).
