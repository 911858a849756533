//! flowfm-objectives (work in progress).
