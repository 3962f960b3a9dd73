"""Command-line entry points, presets, reports and performance benchmarks."""
