"""complete_cache_visualizer: request selection, analysis, figures, stats text and the HTML dashboard."""
