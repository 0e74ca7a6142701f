"""Network architectures as plain specs; each engine builds them layer for layer."""
