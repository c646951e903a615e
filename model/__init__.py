"""The science: models, masking, schedules, decoding and FID maths. No file or parameter I/O."""
