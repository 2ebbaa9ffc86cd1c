//! The all-reduce sweep's settings and formulas (filled in by the torch-boundary work).
