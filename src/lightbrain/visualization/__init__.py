"""Pictures of a run: training curves from metrics.jsonl and attention heatmaps from a checkpoint (PNG, Agg)."""

from lightbrain.visualization.attention import attention_from_input, attention_maps, draw_attention, plot_attention, token_labels
from lightbrain.visualization.plots import (MetricsError, draw_training_curves, new_figure, plot_training_curves,
                                            read_metrics, save_figure)

__all__ = ["MetricsError", "attention_from_input", "attention_maps", "draw_attention", "draw_training_curves",
           "new_figure", "plot_attention", "plot_training_curves", "read_metrics", "save_figure", "token_labels"]
