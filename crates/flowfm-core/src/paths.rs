//! Probability paths (flow matching): owned by the objectives/sampling work, filled in there.
