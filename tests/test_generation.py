"""Generation against independent references.

- the logits processors against transformers' own (random logits, alone and combined);
- greedy and beam search against transformers' generate() on a GPT2LMHeadModel holding the same weights;
- beam search against brute-force enumeration of every continuation (GPT and encoder–decoder);
- the sampler against next_token_probs by a chi-square test; the same seed, the same tokens on every backend;
- the KV cache (per-row lengths, left padding, beam reordering) against recomputing everything.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from conftest import make_backend, rel_err

from llmscratch.generation import GenerationOptions, GPTDecoder, generate, next_token_probs, sample_next
from llmscratch.generation.search import Stopper, beam_search, translate_ids
from llmscratch.models import GPT, GPTConfig, ModelConfig, Seq2Seq
from llmscratch.util.errors import ConfigError

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
lp = pytest.importorskip("transformers.generation.logits_process")
transformers.logging.set_verbosity_error()


# ---- the processors ---------------------------------------------------------------------------------------


def hf_processors(opt: dict) -> list:
    """transformers' processors for the same options, in the order its generate() builds them."""
    out = []
    if opt.get("repetition_penalty", 1.0) != 1.0:
        out.append(lp.RepetitionPenaltyLogitsProcessor(opt["repetition_penalty"]))
    if opt.get("no_repeat_ngram_size"):
        out.append(lp.NoRepeatNGramLogitsProcessor(opt["no_repeat_ngram_size"]))
    if opt.get("temperature", 1.0) != 1.0:
        out.append(lp.TemperatureLogitsWarper(opt["temperature"]))
    if opt.get("top_k"):
        out.append(lp.TopKLogitsWarper(opt["top_k"]))
    if opt.get("top_p") is not None:
        out.append(lp.TopPLogitsWarper(opt["top_p"]))
    if opt.get("min_p") is not None:
        out.append(lp.MinPLogitsWarper(opt["min_p"]))
    return out


PROCESSOR_CASES = [
    dict(repetition_penalty=1.3),
    dict(repetition_penalty=0.7),
    dict(no_repeat_ngram_size=1),
    dict(no_repeat_ngram_size=2),
    dict(no_repeat_ngram_size=3),
    dict(temperature=0.6),
    dict(top_k=5),
    dict(top_p=0.8),
    dict(top_p=0.05),
    dict(min_p=0.1),
    dict(temperature=1.7, top_k=20, top_p=0.9, min_p=0.05),
    dict(repetition_penalty=1.2, no_repeat_ngram_size=2, temperature=0.8, top_k=12, top_p=0.7, min_p=0.02),
]


@pytest.mark.parametrize("options", PROCESSOR_CASES, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
def test_next_token_probs_equal_transformers_processors(options):
    rng = np.random.default_rng(0)
    B, V = 6, 40
    logits = rng.normal(0, 3, (B, V))
    previous = rng.integers(0, 12, (B, 9))  # a small alphabet, so n-grams repeat
    ours = next_token_probs(logits, previous, **options)
    scores = torch.tensor(logits)
    for proc in hf_processors(options):
        scores = proc(torch.tensor(previous), scores)
    ref = torch.softmax(scores, dim=-1).numpy()
    assert np.array_equal(ours > 0, ref > 0)  # the same tokens kept
    assert np.max(np.abs(ours - ref)) <= 1e-12


def test_greedy_probs_and_ragged_history():
    logits = np.array([[0.1, 2.0, 1.9], [3.0, 0.0, -1.0]])
    p = next_token_probs(logits, [[1], [0, 0, 2]], temperature=0, repetition_penalty=2.0)
    assert p.tolist() == [[0, 0, 1], [1, 0, 0]]  # 2.0/2 < 1.9; row 2: 3.0/2 still the best
    assert sample_next(logits, np.random.default_rng(0), temperature=0).tolist() == [1, 0]


def test_sampler_matches_next_token_probs_chi_square():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(5)
    logits = rng.normal(0, 1.5, (1, 30))
    for options in [dict(), dict(temperature=0.7, top_k=10), dict(top_p=0.6), dict(min_p=0.2, temperature=1.3)]:
        p = next_token_probs(logits, **options)[0]
        n = 40000
        draws = sample_next(np.repeat(logits, n, 0), np.random.default_rng(11), **options)
        counts = np.bincount(draws, minlength=30)
        kept = p > 0
        assert counts[~kept].sum() == 0  # a filtered token is never drawn
        assert stats.chisquare(counts[kept], n * p[kept]).pvalue > 1e-3, options


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(top_p=0.0), "top_p must be in \\(0, 1\\]"),
        (dict(top_p=1.5), "top_p must be in"),
        (dict(min_p=-0.1), "min_p must be in \\[0, 1\\]"),
        (dict(min_p=1.1), "min_p must be in"),
        (dict(temperature=-1), "temperature must be >= 0"),
        (dict(num_beams=0), "num_beams must be >= 1"),
        (dict(repetition_penalty=0), "repetition_penalty must be > 0"),
        (dict(repetition_penalty=-2.0), "repetition_penalty must be > 0"),
        (dict(top_k=-3), "top_k must be >= 1"),
        (dict(no_repeat_ngram_size=-1), "no_repeat_ngram_size must be >= 0"),
        (dict(early_stopping="sometimes"), "early_stopping must be"),
        (dict(num_beams=4, top_p=0.9), "beam search .* is deterministic; top_p"),
        (dict(num_beams=4, temperature=0.7), "temperature only apply to sampling"),
        (dict(tempreature=0.5), "unknown generation option 'tempreature' \\(did you mean 'temperature'\\?\\)"),
        (dict(temperature=float("nan")), "temperature must be a finite number"),
    ],
)
def test_bad_options_are_one_line_errors(options, message):
    with pytest.raises(ConfigError, match=message) as e:
        GenerationOptions.of(**options)
    assert "\n" not in str(e.value)


# ---- searches against transformers' generate() -----------------------------------------------------------

V = 23


@pytest.fixture(scope="module")
def gpt2_pair():
    """(transformers GPT2LMHeadModel, our GPT) with the same random weights, spread so that the search has
    clear winners (GPT-2's initial weights give nearly uniform logits)."""
    hf_cfg = transformers.GPT2Config(
        vocab_size=V,
        n_positions=32,
        n_embd=16,
        n_layer=2,
        n_head=2,
        activation_function="gelu_new",
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        layer_norm_epsilon=1e-5,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
    )
    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(hf_cfg).to(torch.float64).eval()
    with torch.no_grad():
        for p in hf.parameters():
            if p.ndim == 2:
                p.normal_(0, 1.5 / np.sqrt(p.shape[0]))
    cfg = GPTConfig(vocab_size=V, block_size=32, n_layer=2, n_head=2, n_embd=16, bias=True)
    bk = make_backend("numpy", "float64")
    names = set(GPT(cfg).params)
    params = {n: bk.from_numpy(t.detach().numpy().copy()) for n, t in hf.state_dict().items() if n in names}
    return hf, GPT(cfg, bk, params=params)


SEARCH_CASES = [
    dict(num_beams=1),
    dict(num_beams=1, repetition_penalty=1.5, no_repeat_ngram_size=2),
    dict(num_beams=2),
    dict(num_beams=3, length_penalty=0.5, eos_token_id=7),
    dict(num_beams=4, length_penalty=2.0, early_stopping=True, eos_token_id=7),
    dict(num_beams=4, length_penalty=-1.0, early_stopping="never", eos_token_id=7),
    dict(num_beams=3, early_stopping="never", eos_token_id=[7, 8]),
    dict(num_beams=5, eos_token_id=2),
    dict(num_beams=2, length_penalty=0.0, early_stopping=True, eos_token_id=9),
    dict(num_beams=3, repetition_penalty=1.3, no_repeat_ngram_size=3, eos_token_id=7),
]


@pytest.mark.parametrize("options", SEARCH_CASES, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
def test_greedy_and_beam_search_equal_transformers_generate(gpt2_pair, options):
    hf, ours = gpt2_pair
    prompts = [[3, 1, 4, 1, 5], [9, 2, 6]]  # different lengths: left padding with an attention mask
    ids, pad = np.zeros((2, 5), dtype=np.int64), np.array([0, 2])
    for b, p in enumerate(prompts):
        ids[b, pad[b] :] = p
    mask = (np.arange(5)[None, :] >= pad[:, None]).astype(np.int64)
    ref = hf.generate(
        torch.tensor(ids),
        attention_mask=torch.tensor(mask),
        max_new_tokens=12,
        do_sample=False,
        pad_token_id=0,
        **options,
    ).numpy()
    mine = generate(ours, prompts, 12, temperature=0, pad_token_id=0, **options)
    assert mine.shape == ref.shape
    eos = set(GenerationOptions.of(**options).eos_ids)
    for a, b in zip(mine[:, 5:].tolist(), ref[:, 5:].tolist(), strict=True):  # up to each row's EOS: what
        end = next((i + 1 for i, t in enumerate(b) if t in eos), len(b))  # follows is padding, whose value
        assert a[:end] == b[:end]  # transformers' beam search takes from the EOS


def test_beam_search_with_one_beam_is_greedy(gpt2_pair):
    _, ours = gpt2_pair
    opt = GenerationOptions(temperature=0, num_beams=1, eos_token_id=7)
    beams = beam_search(GPTDecoder(ours), [[3, 1, 4]], 10, opt, Stopper(opt, None))
    assert [3, 1, 4, *beams[0]] == generate(ours, [3, 1, 4], 10, temperature=0, eos_token_id=7)[0].tolist()[
        : 3 + len(beams[0])
    ]


def best_by_enumeration(logprob_of, n: int, vocab: int, eos: int, length_penalty: float) -> list[int]:
    """The continuation of at most n tokens (ending at EOS, or n long) with the best length-penalised score."""
    best, best_score = None, -np.inf
    for length in range(1, n + 1):
        for seq in itertools.product(range(vocab), repeat=length):
            if eos in seq[:-1] or (length < n and seq[-1] != eos):
                continue
            score = sum(logprob_of(list(seq[:t]))[seq[t]] for t in range(length)) / length**length_penalty
            if score > best_score:
                best, best_score = list(seq), score
    return best


def log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max()
    return z - np.log(np.exp(z).sum())


@pytest.mark.parametrize("length_penalty", [0.0, 1.0, 2.0])
def test_beam_search_equals_brute_force_gpt(length_penalty):
    """With as many beams as continuations nothing is pruned, so beam search must find the best of all."""
    bk = make_backend("numpy", "float64")
    model = GPT(GPTConfig(vocab_size=3, block_size=8, n_layer=1, n_head=2, n_embd=8), bk, seed=3)
    prompt, n, eos = [0, 1], 3, 2

    def logprob_of(seq):
        return log_softmax(bk.to_numpy(model.forward(np.array([prompt + seq]))[0])[0, -1])

    want = best_by_enumeration(logprob_of, n, 3, eos, length_penalty)
    got = generate(
        model,
        prompt,
        n,
        temperature=0,
        num_beams=27,
        eos_token_id=eos,
        early_stopping="never",
        length_penalty=length_penalty,
        pad_token_id=-1,
    )[0, 2:]
    assert [t for t in got.tolist() if t != -1] == want


def test_beam_search_equals_brute_force_seq2seq():
    bk = make_backend("numpy", "float64")
    cfg = ModelConfig(kind="seq2seq", vocab_size=5, block_size=8, n_layer=1, n_head=2, n_embd=8, src_vocab_size=6)
    model = Seq2Seq(cfg, bk, seed=2)
    src, bos, eos, n = [1, 4, 2], 3, 4, 3

    def logprob_of(seq):
        return log_softmax(bk.to_numpy(model.forward(np.array([src]), np.array([[bos, *seq]]))[0])[0, -1])

    want = best_by_enumeration(logprob_of, n, 5, eos, 1.0)
    got = translate_ids(model, [src], bos, eos, pad_id=0, max_new_tokens=n, num_beams=125, early_stopping="never")
    assert got[0] == (want[:-1] if want[-1] == eos else want)


# ---- the cache -------------------------------------------------------------------------------------------

CACHE_CASES = [
    dict(),
    dict(pos="sinusoidal"),
    dict(pos="rope", n_kv_head=1, norm="rmsnorm"),
    dict(pos="rope", n_kv_head=2),
]


@pytest.mark.parametrize("options", CACHE_CASES, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "learned")
def test_cached_logits_equal_uncached_for_left_padded_rows(bk64, options):
    cfg = GPTConfig(vocab_size=17, block_size=12, n_layer=2, n_head=4, n_embd=16, **options)
    model = GPT(cfg, bk64, seed=3)
    model.training = False
    rows = [[1, 5, 5, 2, 9, 3], [4, 4], [7, 1, 0, 11]]
    more = np.array([[3, 8, 1], [2, 2, 6], [0, 13, 5]])
    decoder = GPTDecoder(model)
    got = [decoder.prefill(rows)]
    for t in range(3):
        got.append(decoder.step(more[:, t]))
    for b, row in enumerate(rows):  # each row alone, uncached, no padding
        full = bk64.to_numpy(model.forward(np.array([row + more[b].tolist()]))[0])[0]
        want = full[len(row) - 1 :]
        assert rel_err(np.stack([g[b] for g in got]), want) <= 1e-10
    # the same batch, uncached, left-padded with a key mask
    ids = np.zeros((3, 6), dtype=np.int64)
    mask = np.zeros((3, 6), dtype=bool)
    for b, row in enumerate(rows):
        ids[b, 6 - len(row) :], mask[b, 6 - len(row) :] = row, True
    padded = bk64.to_numpy(model.forward(ids, key_mask=mask)[0])[:, -1]
    assert rel_err(padded, got[0]) <= 1e-10


def test_reordered_cache_follows_its_beams(bk64):
    cfg = GPTConfig(vocab_size=17, block_size=12, n_layer=2, n_head=2, n_embd=16, pos="rope")
    model = GPT(cfg, bk64, seed=5)
    rows = [[1, 2, 3], [4, 5, 6], [7, 8, 9]]
    decoder = GPTDecoder(model)
    decoder.prefill(rows)
    decoder.reorder(np.array([2, 2, 0]))  # beam 0 and 1 continue row 2, beam 2 continues row 0
    got = decoder.step(np.array([10, 11, 12]))
    for b, (src, tok) in enumerate([(2, 10), (2, 11), (0, 12)]):
        want = bk64.to_numpy(model.forward(np.array([rows[src] + [tok]]))[0])[0, -1]
        assert rel_err(got[b], want) <= 1e-10


def greedy_without_cache(model: GPT, ids: list[int], n: int) -> list[int]:
    """The obvious way: rerun the last block_size tokens for every new token."""
    out = list(ids)
    for _ in range(n):
        logits, _ = model.forward(np.array([out[-model.config.block_size :]]))
        out.append(int(np.argmax(model.bk.to_numpy(logits)[0, -1])))
    return out


@pytest.mark.parametrize("options", CACHE_CASES[:3], ids=["learned", "sinusoidal", "rope-gqa"])
def test_the_window_slides_past_the_context(bk64, options):
    cfg = GPTConfig(vocab_size=17, block_size=10, n_layer=2, n_head=2, n_embd=16, **options)
    model = GPT(cfg, bk64, seed=3)
    prompt = [1, 5, 5, 2]
    assert generate(model, prompt, 14, temperature=0)[0].tolist() == greedy_without_cache(model, prompt, 14)
    long_prompt = list(range(11)) * 2  # longer than the context: only its last block_size tokens count
    assert generate(model, long_prompt, 3, temperature=0)[0].tolist() == greedy_without_cache(model, long_prompt, 3)


def test_batched_rows_equal_rows_alone_and_stop_independently():
    cfg = GPTConfig(vocab_size=11, block_size=16, n_layer=1, n_head=2, n_embd=8)
    model = GPT(cfg, make_backend("numpy", "float64"), seed=1)
    rows = [[1, 2, 3], [4], [5, 6]]
    alone = [generate(model, r, 6, temperature=0.9, seed=0)[0].tolist() for r in rows[:1]]
    batch = generate(model, rows, 6, temperature=0, eos_token_id=3, pad_token_id=-1)
    for b, r in enumerate(rows):
        solo = generate(model, r, 6, temperature=0, eos_token_id=3, pad_token_id=-1)[0].tolist()
        assert [t for t in batch[b].tolist() if t != -1] == solo[:] and -1 not in solo[: len(r)]
    assert alone[0][:3] == [1, 2, 3]
    with pytest.raises(ConfigError, match="at least one token"):
        generate(model, [], 3)
    with pytest.raises(ConfigError, match="max_new_tokens must be"):
        generate(model, [1], -1)


def test_seeded_sampling_is_reproducible_and_restores_training():
    cfg = GPTConfig(vocab_size=30, block_size=16, n_layer=1, n_head=2, n_embd=8, dropout=0.5)
    model = GPT(cfg, make_backend("numpy"))
    a = generate(model, [1], 12, seed=7)
    assert np.array_equal(a, generate(model, [1], 12, seed=7))
    assert not np.array_equal(a, generate(model, [1], 12, seed=8))
    assert model.training  # generation runs in eval mode (no dropout) and puts training mode back


def test_every_backend_samples_the_same_tokens(backend_id):
    cfg = GPTConfig(vocab_size=13, block_size=8, n_layer=2, n_head=2, n_embd=16, pos="rope")
    options = dict(temperature=0.9, top_p=0.9, repetition_penalty=1.2, seed=3)
    ours = generate(GPT(cfg, make_backend(backend_id, "float64"), seed=1), [[3, 1], [2]], 12, **options)
    ref = generate(GPT(cfg, make_backend("numpy", "float64"), seed=1), [[3, 1], [2]], 12, **options)
    assert ours.tolist() == ref.tolist()


@pytest.mark.parametrize("kernel", ["flash", "sdpa"])
def test_cached_generation_with_every_kernel(kernel):
    """The cache hands the kernel strided views with more keys than queries (S > T) and, for left-padded
    rows, a key mask: every kernel must give the reference's tokens."""
    bk = make_backend("torch" if kernel == "sdpa" else "numpy", "float64")
    out = []
    for name in ("naive", kernel):
        cfg = GPTConfig(vocab_size=17, block_size=12, n_layer=2, n_head=4, n_kv_head=2, n_embd=16, pos="rope")
        out.append(generate(GPT(cfg, bk, seed=4, attention=name), [[2, 7, 7], [5]], 15, temperature=0).tolist())
    assert out[0] == out[1]


@pytest.mark.parametrize("pos", ["learned", "sinusoidal", "rope"])
def test_left_padded_batch_gradients_equal_finite_differences(pos):
    """Per-row positions (left padding) in the backward pass too: every parameter, by central differences."""
    bk = make_backend("numpy", "float64")
    model = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=8, pos=pos), bk, seed=2)
    idx = np.array([[0, 0, 3, 4, 5, 6], [1, 2, 3, 4, 5, 6]])
    mask = np.array([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]], dtype=bool)
    targets = np.where(mask, np.roll(idx, -1, axis=1), -100)

    def loss() -> float:
        return float(model.forward(idx, targets, key_mask=mask)[1])

    loss()
    grads = {n: bk.to_numpy(g) for n, g in model.backward().items()}
    rng = np.random.default_rng(0)
    for name, p in model.params.items():
        for flat in rng.choice(p.size, size=min(4, p.size), replace=False):
            i = np.unravel_index(flat, p.shape)
            old = p[i]
            p[i] = old + 1e-6
            up = loss()
            p[i] = old - 1e-6
            down = loss()
            p[i] = old
            assert abs((up - down) / 2e-6 - grads[name][i]) <= 1e-6 * max(1.0, abs(grads[name][i])), name


def test_the_cache_holds_the_prompt_and_new_tokens_not_the_whole_context():
    """A model with a long context (Llama 3's is 131072) gets a cache of prompt + max_new_tokens slots; the
    tokens are those of greedy decoding by full forwards."""
    from llmscratch.generation.search import search

    model = GPT(GPTConfig(vocab_size=13, block_size=4096, n_layer=1, n_head=2, n_embd=8, pos="rope"), seed=2)
    decoder = GPTDecoder(model, max_new_tokens=5)
    new = search(decoder, [[1, 2, 3], [4, 5]], 5, GenerationOptions.of(temperature=0))
    assert decoder.cache.k[0].shape[2] == 3 + 5
    for prompt, got in zip([[1, 2, 3], [4, 5]], new, strict=True):
        ids = list(prompt)
        for _ in range(5):
            ids.append(int(np.argmax(np.asarray(model.forward(np.array([ids]))[0])[0, -1])))
        assert got == ids[len(prompt) :]
