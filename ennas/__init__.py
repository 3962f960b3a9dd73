"""The shared core and EnNAS: data, distributed, engine, distillation, diversity, search, retraining."""
