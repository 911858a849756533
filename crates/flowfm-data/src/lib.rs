//! flowfm-data (work in progress).
