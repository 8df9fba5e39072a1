"""Ablations: Vanilla / Mix / IPT arms at equal tokens, trained over seeds, evaluated, compared with intervals."""
