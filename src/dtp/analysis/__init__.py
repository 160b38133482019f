"""The paper's statistics and pictures: heatmaps, success curves, attention analysis."""
