"""The per-example pipeline and one worker's stream of packed rows (numpy only, no torch)."""
