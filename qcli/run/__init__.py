"""What really happens: loading, measurement, quality, checks, verify, compare, workers, the demo. torch inside
functions."""
