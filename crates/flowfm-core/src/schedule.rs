//! Noise schedules (DDPM): owned by the objectives/sampling work, filled in there.
