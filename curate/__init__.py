"""mend's curation: teacher, synthesis per cluster, verification, dedup, decontamination, review, export."""
