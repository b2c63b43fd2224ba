"""arrowmesh benchmarks: each path against the transports people use instead, in one run."""
