//! flowfm-sampling (work in progress).
