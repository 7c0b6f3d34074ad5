"""The loop: nightly, its report, the sweep and doctor; the one place that imports every floor."""
