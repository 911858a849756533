//! flowfm-ops (work in progress).
