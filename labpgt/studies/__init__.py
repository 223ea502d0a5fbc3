"""Training studies: presets (what to train), runner (search, final seeds, summary), Ray and
Ray Tune engines, and the report (markdown table, figure)."""
