"""Generation for the GPT and the encoder–decoder: greedy, sampling, beam search, stop strings, streaming.

ids = llmscratch.generate(model, prompt_ids, 100, temperature=0.8, top_p=0.95, seed=1)   # NumPy, prompt first
p = next_token_probs(logits, previous_ids, top_k=50)        # the exact distribution sample_next draws from
text = sample_text(model, tokenizer, "ROMEO:", 200, stop_strings=["\\n\\n"])
for piece in stream_text(model, tokenizer, "ROMEO:"): print(piece, end="")
"""

from .decoders import GPTDecoder, Seq2SeqDecoder
from .options import GenerationOptions
from .processors import next_token_probs, sample_next
from .search import generate, search
from .text import TextStream, sample_text, stream_text

__all__ = [
    "GPTDecoder",
    "GenerationOptions",
    "Seq2SeqDecoder",
    "TextStream",
    "generate",
    "next_token_probs",
    "sample_next",
    "sample_text",
    "search",
    "stream_text",
]
