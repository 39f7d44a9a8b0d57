"""The closed vocabularies of the benchmark, each read from one data file; everything else derives from them."""
