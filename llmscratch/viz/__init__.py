"""Pictures of what a model does, drawn with matplotlib (headless outside a notebook: the Agg backend; no
browser, no network).

Every function returns the matplotlib Figure and, given ``out``, also writes it as a PNG whose bytes depend
only on what is drawn (no timestamp, no software version in its metadata), atomically.

    attention_heatmap(probs, labels, ...)     one head: queries × keys, rows summing to 1
    attention_heads(maps, labels, ...)        every head of one layer, side by side
    attention_of_text(checkpoint, text)       every layer's maps and token labels (a GPT, an encoder, a translator)
    training_curves(history, ...)             train/val loss, learning rate and tokens/s from a run's history
    sinusoidal_encodings(T, C), rope_rotations(T, D)    positional encodings
    next_token_distribution(checkpoint, text, **options), probability_bars(probs, labels)
    embedding_projection(weights, labels)     the token embeddings at their two principal components
    bpe_merges(tokenizer)                     the merges in the order BPE learned them
"""

from .attention import TextAttention, attention_heads, attention_heatmap, attention_of_text, token_labels
from .curves import training_curves
from .positions import rope_rotations, sinusoidal_encodings
from .tokens import bpe_merges, embedding_projection, next_token_distribution, probability_bars

__all__ = [
    "TextAttention",
    "attention_heads",
    "attention_heatmap",
    "attention_of_text",
    "bpe_merges",
    "embedding_projection",
    "next_token_distribution",
    "probability_bars",
    "rope_rotations",
    "sinusoidal_encodings",
    "token_labels",
    "training_curves",
]
