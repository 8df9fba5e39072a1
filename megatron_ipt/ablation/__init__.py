"""Ablations: arms at equal tokens -> pre-training over seeds -> evaluation -> statistics and report."""
