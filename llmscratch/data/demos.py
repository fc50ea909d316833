"""Demo tasks the project makes itself, deterministically, for the classifier and the translator.

numbers: English number words -> French number words, 0 … 999,999, by this project's own rules:
  English (British): "three hundred and seventy-one", "two thousand and five", "forty-two thousand three
  hundred and six"; tens and units joined by a hyphen ("seventy-one").
  French (traditional spelling, before the 1990 reform): hyphens only between tens and units below a
  hundred ("soixante-dix-sept", "vingt et un", "quatre-vingt-un"); "quatre-vingts" and "deux cents" take
  their s only at the very end of the number ("quatre-vingt mille", "deux cent mille", "deux cents");
  "mille" never does; "cent" and "mille" alone mean one hundred and one thousand.
  Training and test numbers are disjoint, drawn from one seeded generator.

speakers: which of the most frequent speakers of tinyshakespeare says a line. Each line of a speech is an
  example labelled with its speaker; whole speeches go to training or test (every tenth speech is a test
  speech), so no speech is split across the two. Baselines in the same run: the majority class and a
  bag-of-characters naive Bayes model.
"""

from __future__ import annotations

import csv
import io
import re
from collections import Counter
from pathlib import Path

import numpy as np

from ..util.atomic import atomic_write

EN_UNITS = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
]
EN_TENS = ["_", "_", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
FR_UNITS = [
    "zéro",
    "un",
    "deux",
    "trois",
    "quatre",
    "cinq",
    "six",
    "sept",
    "huit",
    "neuf",
    "dix",
    "onze",
    "douze",
    "treize",
    "quatorze",
    "quinze",
    "seize",
]
FR_TENS = {2: "vingt", 3: "trente", 4: "quarante", 5: "cinquante", 6: "soixante"}
MAX_NUMBER = 999_999


def english(n: int) -> str:
    """0 … 999,999 in English words ("three hundred and seventy-one")."""
    if not 0 <= n <= MAX_NUMBER:
        raise ValueError(f"number words cover 0 to {MAX_NUMBER:,}, got {n}")

    def below_100(m: int) -> str:
        if m < 20:
            return EN_UNITS[m]
        t, u = divmod(m, 10)
        return EN_TENS[t] + (f"-{EN_UNITS[u]}" if u else "")

    def below_1000(m: int) -> str:
        h, r = divmod(m, 100)
        if not h:
            return below_100(r)
        return f"{EN_UNITS[h]} hundred" + (f" and {below_100(r)}" if r else "")

    k, r = divmod(n, 1000)
    if not k:
        return below_1000(r)
    rest = "" if not r else (f" and {below_100(r)}" if r < 100 else f" {below_1000(r)}")
    return f"{below_1000(k)} thousand{rest}"


def french(n: int) -> str:
    """0 … 999,999 in French words ("trois cent soixante et onze")."""
    if not 0 <= n <= MAX_NUMBER:
        raise ValueError(f"number words cover 0 to {MAX_NUMBER:,}, got {n}")

    def below_100(m: int, final: bool) -> str:
        if m < 17:
            return FR_UNITS[m]
        if m < 20:
            return f"dix-{FR_UNITS[m - 10]}"
        if m < 70:
            t, u = divmod(m, 10)
            return FR_TENS[t] + ("" if not u else " et un" if u == 1 else f"-{FR_UNITS[u]}")
        if m < 80:
            return "soixante et onze" if m == 71 else f"soixante-{below_100(m - 60, final)}"
        if m == 80:
            return "quatre-vingts" if final else "quatre-vingt"
        return f"quatre-vingt-{below_100(m - 80, final)}"

    def below_1000(m: int, final: bool) -> str:
        h, r = divmod(m, 100)
        if not h:
            return below_100(r, final)
        head = "cent" if h == 1 else f"{FR_UNITS[h]} cent" + ("s" if not r and final else "")
        return head + (f" {below_100(r, final)}" if r else "")

    k, r = divmod(n, 1000)
    if not k:
        return below_1000(r, True)
    head = "mille" if k == 1 else f"{below_1000(k, False)} mille"
    return head + (f" {below_1000(r, True)}" if r else "")


def numbers_dataset(
    out_dir: str | Path, n_train: int = 20_000, n_test: int = 1_000, seed: int = 0
) -> tuple[Path, Path]:
    """Write numbers_train.tsv and numbers_test.tsv (english<TAB>french, disjoint numbers); -> their paths.
    Every number below 1000 is in training (the building blocks), the rest drawn at random."""
    rng = np.random.default_rng(seed)
    small = np.arange(1000)
    large = rng.choice(np.arange(1000, MAX_NUMBER + 1), size=n_train + n_test - 1000, replace=False)
    test, train = large[:n_test], np.concatenate([small, large[n_test:]])
    rng.shuffle(train)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = out / "numbers_train.tsv", out / "numbers_test.tsv"
    for path, numbers in zip(paths, (train, test), strict=True):
        atomic_write(path, "".join(f"{english(int(n))}\t{french(int(n))}\n" for n in numbers))
    return paths


SPEAKER = re.compile(r"^([A-Z][A-Za-z' ]+):$")


def speeches(text: str) -> list[tuple[str, list[str]]]:
    """tinyshakespeare -> [(speaker, lines of the speech)]: a speech is "NAME:" then lines up to a blank line."""
    out = []
    for block in text.split("\n\n"):
        lines = block.strip("\n").split("\n")
        m = SPEAKER.match(lines[0])
        if m and len(lines) > 1:
            out.append((m.group(1), [line for line in lines[1:] if line.strip()]))
    return out


def speakers_dataset(text: str, out_dir: str | Path, n_speakers: int = 4) -> tuple[Path, Path]:
    """Write speakers_train.csv and speakers_test.csv (text,label: the n_speakers with most lines); -> paths."""
    all_speeches = speeches(text)
    counts = Counter()
    for speaker, lines in all_speeches:
        counts[speaker] += len(lines)
    top = {s for s, _ in counts.most_common(n_speakers)}
    rows: tuple[list, list] = ([], [])
    for i, (speaker, lines) in enumerate(s for s in all_speeches if s[0] in top):
        rows[i % 10 == 9].extend((line, speaker) for line in lines)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = out / "speakers_train.csv", out / "speakers_test.csv"
    for path, part in zip(paths, rows, strict=True):
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["text", "label"])
        writer.writerows(part)
        atomic_write(path, buf.getvalue())
    return paths


def baselines(train: list[tuple[str, str]], test: list[tuple[str, str]]) -> dict[str, float]:
    """Test accuracy of the majority class and of bag-of-characters multinomial naive Bayes (add-one smoothing)."""
    labels = sorted({y for _, y in train})
    majority = Counter(y for _, y in train).most_common(1)[0][0]
    chars = sorted({c for t, _ in train for c in t})
    index = {c: i for i, c in enumerate(chars)}

    def counts(text: str) -> np.ndarray:
        v = np.zeros(len(chars))
        for c in text:
            if c in index:
                v[index[c]] += 1
        return v

    X = np.stack([counts(t) for t, _ in train])
    y = np.array([labels.index(lab) for _, lab in train])
    log_prior = np.log(np.bincount(y, minlength=len(labels)) / len(y))
    per_class = np.stack([X[y == k].sum(0) + 1 for k in range(len(labels))])
    log_p = np.log(per_class / per_class.sum(1, keepdims=True))
    guess = np.argmax(np.stack([counts(t) for t, _ in test]) @ log_p.T + log_prior, axis=1)
    truth = np.array([labels.index(lab) for _, lab in test])
    return {
        "majority": float(np.mean([lab == majority for _, lab in test])),
        "bag_of_chars_naive_bayes": float(np.mean(guess == truth)),
    }


# ---- chat: pretrain -> supervised fine-tuning -> chat ------------------------------------------------------

QUESTIONS = {
    "add": ["What is {a} plus {b}?", "Add {a} and {b}.", "{a} + {b} = ?"],
    "reverse": ["Reverse the word {w}.", "Spell {w} backwards.", "What is {w} reversed?"],
    "upper": ["Write {w} in capitals.", "Uppercase {w}.", "What is {w} in upper case?"],
}


def chat_items(seed: int = 0) -> dict[str, list[tuple[str, ...]]]:
    """The demo's facts: additions of two numbers below 50 and made-up words (3 to 6 letters)."""
    rng = np.random.default_rng(seed)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    words = sorted({"".join(rng.choice(letters, size=int(rng.integers(3, 7)))) for _ in range(700)})
    return {
        "add": [(str(a), str(b)) for a in range(50) for b in range(50)],
        "reverse": [(w,) for w in words],
        "upper": [(w,) for w in words],
    }


def answer(skill: str, item: tuple[str, ...]) -> str:
    if skill == "add":
        return str(int(item[0]) + int(item[1]))
    return item[0][::-1] if skill == "reverse" else item[0].upper()


def question(skill: str, item: tuple[str, ...], rng: np.random.Generator) -> str:
    template = QUESTIONS[skill][int(rng.integers(len(QUESTIONS[skill])))]
    return template.format(a=item[0], b=item[-1], w=item[0])


def chat_dataset(out_dir: str | Path, seed: int = 0) -> tuple[Path, Path, Path]:
    """Write chat_pretrain.txt (every fact twice, as a question and its answer on one line, shuffled: plain
    text, no chat template), chat_sft.jsonl (a conversation for each of 90% of the items) and
    chat_test.jsonl (one for each of the other 10%: never seen in fine-tuning, but their facts are in the
    pretraining text); -> their paths."""
    import json

    rng = np.random.default_rng(seed)
    lines, sft, test = [], [], []
    for skill, items in chat_items(seed).items():
        order = rng.permutation(len(items))
        n_test = len(items) // 10
        for rank, i in enumerate(order):
            item = items[i]
            lines += [f"{question(skill, item, rng)} {answer(skill, item)}" for _ in range(2)]
            asked = question(skill, item, rng)
            messages = [{"role": "user", "content": asked}, {"role": "assistant", "content": answer(skill, item)}]
            (test if rank < n_test else sft).append(json.dumps({"messages": messages}))
    rng.shuffle(lines)
    sft = [sft[i] for i in rng.permutation(len(sft))]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = out / "chat_pretrain.txt", out / "chat_sft.jsonl", out / "chat_test.jsonl"
    for path, rows in zip(paths, (lines, sft, test), strict=True):
        atomic_write(path, "\n".join(rows) + "\n")
    return paths


# ---- arithmetic: pretrain -> sft -> dpo -> rl, each scored on held-out problems -----------------------------

NAMES = ("Ann", "Bob", "Cid", "Dee", "Eve", "Fay")
THINGS = ("apples", "pens", "cards", "shells", "coins", "stamps")
PROBLEMS = {
    "+": [
        "{name} has {a} {thing} and gets {b} more. How many {thing} does {name} have?",
        "There are {a} {thing} on a table and {b} more are added. How many {thing} are there now?",
        "{name} buys {a} {thing}, then {b} more. How many {thing} is that?",
    ],
    "-": [
        "{name} has {a} {thing} and gives away {b}. How many {thing} are left?",
        "There are {a} {thing} on a table and {b} are taken. How many {thing} remain?",
        "{name} had {a} {thing} and lost {b}. How many {thing} does {name} have now?",
    ],
}
ARITHMETIC_MAX = 10  # operands below this


def word_problem(a: int, op: str, b: int, rng: np.random.Generator) -> str:
    template = PROBLEMS[op][int(rng.integers(len(PROBLEMS[op])))]
    name, thing = NAMES[int(rng.integers(len(NAMES)))], THINGS[int(rng.integers(len(THINGS)))]
    return template.format(a=a, b=b, name=name, thing=thing)


def near_miss(right: int, a: int, op: str, b: int, rng: np.random.Generator) -> int:
    """A plausible wrong answer: off by one or two, or the other operation's result."""
    other = a - b if op == "+" else a + b
    choices = [right + d for d in (-2, -1, 1, 2) if right + d >= 0] + (
        [other] if other not in (right,) and other >= 0 else []
    )
    return int(choices[int(rng.integers(len(choices)))])


def fresh_problem(a: int, op: str, b: int, used: set[str], rng: np.random.Generator) -> list[dict[str, str]]:
    """The user's message of a wording of (a, op, b) not in ``used`` (which it joins)."""
    while (problem := word_problem(a, op, b, rng)) in used:
        pass
    used.add(problem)
    return [{"role": "user", "content": problem}]


def arithmetic_dataset(out_dir: str | Path, seed: int = 0, noise: float = 0.4) -> dict[str, Path]:
    """The ladder's files: the facts a + b and a − b (operands below ARITHMETIC_MAX), each asked as word
    problems in many wordings (templates, names, things):
        arithmetic_pretrain.txt   "Q: <problem> A: <answer>" lines, every fact three times, a ``noise`` share of
                                  the answers near misses: text as found, mostly right
        arithmetic_sft.jsonl      a conversation with the right answer for a third of the facts
        arithmetic_prefs.jsonl    for every fact: {"prompt": [the user's message], "chosen": the right answer,
                                  "rejected": a near miss}
        arithmetic_rl.jsonl       for every fact: {"prompt": [the user's message], "answer"}
        arithmetic_test.jsonl     the other two thirds of the facts, each in a wording that no other file has,
                                  as the RL file: what the stages after pretraining learned about the facts
                                  that fine-tuning never showed
        arithmetic_test_text.jsonl  the same as plain text prompts "Q: <problem> A:", for the pretrained model
    -> name -> path."""
    import json

    rng = np.random.default_rng(seed)
    facts = [(a, "+", b) for a in range(ARITHMETIC_MAX) for b in range(ARITHMETIC_MAX)]
    facts += [(a, "-", b) for a in range(ARITHMETIC_MAX) for b in range(a + 1)]
    rows: dict[str, list[str]] = {k: [] for k in ("pretrain", "sft", "prefs", "rl", "test", "test_text")}
    for rank, i in enumerate(rng.permutation(len(facts))):
        a, op, b = facts[int(i)]
        right = a + b if op == "+" else a - b
        problems = set()
        for _ in range(3):
            problem = word_problem(a, op, b, rng)
            problems.add(problem)
            said = near_miss(right, a, op, b, rng) if rng.random() < noise else right
            rows["pretrain"].append(f"Q: {problem} A: {said}")

        if rank % 3 == 0:
            asked = fresh_problem(a, op, b, problems, rng)
            rows["sft"].append(json.dumps({"messages": [*asked, {"role": "assistant", "content": str(right)}]}))
        else:
            test = fresh_problem(a, op, b, problems, rng)
            rows["test"].append(json.dumps({"prompt": test, "answer": str(right)}))
            rows["test_text"].append(json.dumps({"prompt": f"Q: {test[0]['content']} A:", "answer": str(right)}))
        wrong = near_miss(right, a, op, b, rng)
        asked = fresh_problem(a, op, b, problems, rng)
        rows["prefs"].append(json.dumps({"prompt": asked, "chosen": str(right), "rejected": str(wrong)}))
        rows["rl"].append(json.dumps({"prompt": fresh_problem(a, op, b, problems, rng), "answer": str(right)}))
    rng.shuffle(rows["pretrain"])
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, lines in rows.items():
        paths[name] = out / f"arithmetic_{name}.{'txt' if name == 'pretrain' else 'jsonl'}"
        atomic_write(paths[name], "\n".join(lines) + "\n")
    return paths
