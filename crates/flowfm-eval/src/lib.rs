//! flowfm-eval (work in progress).
