"""Baseline methods (SPOS, Cream, DNA), each a method object plugged into the shared engine."""
