"""Studies built on the benchmark: the CNA paper's reproduction, circuit statistics and the
bench. The only floor of the core that may name a method or metric."""
