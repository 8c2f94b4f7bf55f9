"""Reports from graded cells: leaderboards, HTML, heatmap, figures, redundancy, the sweep's report."""
